//! A store's directory and files are private to their owner whatever the
//! umask (0700/0600), or shared with the group when asked (0770/0660); an
//! existing store's directory decides for the files any process creates in it.
//!
//! One test in its own binary: the umask is process-wide.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use picocache_engine::{Limits, Options, Store};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Opens a store at `dir` under `umask`, writes, compacts and grows it so
/// every kind of file exists, and returns (directory mode, file modes).
fn make(dir: &Path, umask: u32, group: bool) -> (u32, Vec<(String, u32)>) {
    let old = unsafe_umask(umask);
    let store = Store::open(
        dir,
        Options::default()
            .background_compaction(false)
            .segment_size(4096)
            .group_access(group),
    )
    .unwrap();
    let ns = store.namespace("p", Limits::default()).unwrap();
    for i in 0..2000u32 {
        ns.put(&i.to_le_bytes(), &[7u8; 64]).unwrap();
    }
    let _lease = ns.lease(b"k", std::time::Duration::ZERO).unwrap();
    store.compact().unwrap();
    store.rebuild_index().unwrap();
    unsafe_umask(old);
    let mut files: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                mode(&e.path()),
            )
        })
        .collect();
    files.sort();
    (mode(dir), files)
}

#[allow(unsafe_code)]
fn unsafe_umask(mask: u32) -> u32 {
    // SAFETY: umask(2) has no memory effects; it swaps the process's file
    // creation mask, which this binary's single test owns.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

#[test]
fn store_permissions_follow_the_option_not_the_umask() {
    let tmp = tempfile::tempdir().unwrap();

    // Private by default, even under umask 002 (group-writable otherwise).
    let private = tmp.path().join("a/b/private");
    let (d, files) = make(&private, 0o002, false);
    assert_eq!(d, 0o700, "directory");
    assert!(files.len() >= 4, "{files:?}");
    for (name, m) in &files {
        assert_eq!(*m, 0o600, "{name}");
    }

    // Shared with the group, even under umask 077 (private otherwise).
    let shared = tmp.path().join("shared");
    let (d, files) = make(&shared, 0o077, true);
    assert_eq!(d, 0o770, "directory");
    for (name, m) in &files {
        assert_eq!(*m, 0o660, "{name}");
    }

    // A process that did not ask for sharing keeps a shared store shared:
    // the files it creates (segments, a rebuilt index) follow the directory.
    let (d, files) = make(&shared, 0o022, false);
    assert_eq!(d, 0o770);
    for (name, m) in &files {
        assert_eq!(*m, 0o660, "{name}");
    }
    // And one that asks for sharing does not open up a private store.
    let (d, files) = make(&private, 0o000, true);
    assert_eq!(d, 0o700);
    for (name, m) in &files {
        assert_eq!(*m, 0o600, "{name}");
    }
}
