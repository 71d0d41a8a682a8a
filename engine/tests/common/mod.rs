//! What the full-disk tests share: a real small filesystem (a tmpfs mounted
//! for the test; we run as root in CI) and how full it is.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

use picocache_engine::Error;

/// A tmpfs of some KiB mounted on a temporary directory; unmounted on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB, or says on stdout that `what` was NOT
    /// tested (not root, or no mount permission) and returns None.
    pub fn mount(kib: u64, what: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!(
                "SKIPPED: cannot mount a tmpfs (not root, or no mount permission): \
                 {what} was NOT tested"
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    /// The store's directory on the filesystem.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Whether `e` says the filesystem is full.
pub fn is_full(e: &Error) -> bool {
    match e {
        Error::Io(e) => e.raw_os_error() == Some(libc::ENOSPC),
        _ => false,
    }
}

/// Free bytes of the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
