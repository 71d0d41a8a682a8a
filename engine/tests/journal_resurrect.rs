//! A compaction killed after its (only) chunk committed and before the
//! victim's unlink (here: blocked in `retire_segment`'s sync), with a key
//! evicted by LRU whose PUT in the victim the chunk dropped without a
//! tombstone (no older PUT elsewhere). The next open rebuilds (`MUTATING`)
//! and carries the compaction journal over (`done` = the victim's end).
//! Before the fix the rebuild took that PUT back as an entry pointing into
//! the victim, and the resumed compaction (which skips records before
//! `done`) unlinked the victim under it: `verify` then found an entry
//! pointing at a missing record. Found by
//! `compaction_kill.rs::killed_compactions_leave_nothing_behind` failing
//! about once in 86 runs (FORMAT.md, "Recovery").

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use picocache_engine::format::hdr;
use picocache_engine::{Io, Limits, Options, RealIo, Store};

const ENV: &str = "PICOCACHE_RESURRECT_DIR";

#[derive(Debug, Default)]
struct HangingSync {
    armed: AtomicBool,
}

impl Io for HangingSync {
    fn write_at(&self, f: &File, b: &[u8], o: u64) -> std::io::Result<()> {
        RealIo.write_at(f, b, o)
    }
    fn read_at(&self, f: &File, b: &mut [u8], o: u64) -> std::io::Result<()> {
        RealIo.read_at(f, b, o)
    }
    fn sync(&self, f: &File) -> std::io::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            let p =
                std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap_or_default();
            if !p.to_string_lossy().ends_with(".tmp") {
                let mut out = std::io::stdout().lock();
                writeln!(out, "IN_SYNC {}", p.display()).unwrap();
                out.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
        }
        RealIo.sync(f)
    }
    fn allocate(&self, f: &File, off: u64, len: u64) -> std::io::Result<()> {
        RealIo.allocate(f, off, len)
    }
}

fn opts() -> Options {
    Options::default()
        .segment_size(32 << 10)
        .background_compaction(false)
}

#[test]
fn resurrect_child() {
    let Ok(dir) = std::env::var(ENV) else {
        return;
    };
    let io = Arc::new(HangingSync::default());
    let store = Store::open(&dir, opts().io(io.clone())).unwrap();
    let ns = store.namespace("a", Limits::maxsize(Some(4))).unwrap();
    for k in 0u8..5 {
        ns.put(&[k], &[b'v'; 200]).unwrap(); // key 0 is evicted (LRU)
    }
    ns.remove(&[1]).unwrap(); // 3 entries: below maxsize
    io.armed.store(true, Ordering::SeqCst);
    store.compact().unwrap(); // blocks in retire_segment's sync_log
    unreachable!();
}

#[test]
fn evicted_key_comes_back_into_a_retired_segment() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            "resurrect_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(|l| l.ok())
        .find(|l| l.contains("IN_SYNC"));
    println!("child: {line:?}");
    assert!(
        line.is_some(),
        "the child never reached the compaction's sync"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let b = std::fs::read(dir.path().join("index")).unwrap();
    let word = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    println!(
        "after the kill: state {} victim {} done {:#x} dest {:#x}",
        word(hdr::STATE),
        word(hdr::CMP_VICTIM),
        word(hdr::CMP_DONE),
        word(hdr::CMP_DEST)
    );
    let store = Store::open(dir.path(), opts()).unwrap();
    let ns = store.existing_namespace("a").unwrap().unwrap();
    println!(
        "key 0 after the rebuild: {:?}",
        ns.get(&[0]).unwrap().map(|v| v.len())
    );
    store.compact().unwrap();
    let rep = store.verify().unwrap();
    println!("verify: {:?}", rep.problems);
    assert!(rep.is_ok(), "verify: {:?}", rep.problems);
}
