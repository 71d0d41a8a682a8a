//! A writer killed with SIGKILL in the middle of a mutation on a disk full
//! of the store's own dead segments (issue 12, item 4, the last gap): the
//! index must be rebuilt from the log, and its new file did not fit, so the
//! store could not even be opened by a writer until space was freed by
//! other means. Now the rebuild deletes the reserve, then evicts the oldest
//! segments (copying their `NAMESPACE` and `CLEAR` records in force first)
//! until the new index fits (FORMAT.md, "Full disk").
//!
//! A real small filesystem: a tmpfs mounted for the test (we run as root in
//! CI). Where `mount` is not allowed the tests say so on stdout and check
//! nothing.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{free_bytes, Tmpfs};
use picocache_engine::format::{hdr, STATE_MUTATING};
use picocache_engine::{Io, Limits, Options, RealIo, Store};

const CHILD_ENV: &str = "PICOCACHE_FULL_DISK_REBUILD_DIR";
/// The filesystem: 8 MiB, so segments and the reserve are 128 KiB each and
/// the smallest index (about 610 KiB) is worth several segments.
const FS_KIB: u64 = 8 << 10;
/// The index needs this much room; the test leaves less free, reserve
/// included.
const INDEX_BYTES: u64 = 600 << 10;

/// The value of key `k` in namespace `ns` (it names both, so a value served
/// for another key or namespace is caught).
fn value(ns: &str, k: u64) -> Vec<u8> {
    let mut v = format!("{ns}: value of {k}/").into_bytes();
    v.resize(1000 + (k % 200) as usize, (k % 251) as u8);
    v
}

fn opts() -> Options {
    Options::default().background_compaction(false)
}

/// The real I/O, except that once `stop` is set the next write returns and
/// then parks the thread for good, announcing it on stdout: the writer is
/// then inside a mutation (its records written, the index not yet updated,
/// `MUTATING` set), where the parent kills it.
#[derive(Debug)]
struct StopAfterWrite {
    stop: Arc<AtomicBool>,
}

impl Io for StopAfterWrite {
    fn write_at(&self, file: &File, buf: &[u8], off: u64) -> std::io::Result<()> {
        RealIo.write_at(file, buf, off)?;
        if self.stop.load(Ordering::SeqCst) {
            println!("MUTATING");
            loop {
                std::thread::park();
            }
        }
        Ok(())
    }
    fn read_at(&self, file: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        RealIo.read_at(file, buf, off)
    }
    fn sync(&self, file: &File) -> std::io::Result<()> {
        RealIo.sync(file)
    }
    fn allocate(&self, file: &File, off: u64, len: u64) -> std::io::Result<()> {
        RealIo.allocate(file, off, len)
    }
}

/// The writer the parent kills: opens the store, then puts one value and
/// stops inside that put.
#[test]
fn full_disk_rebuild_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let io = Arc::new(StopAfterWrite { stop: stop.clone() });
    let store = Store::open(&dir, opts().io(io)).unwrap();
    let ns = store.namespace("w", Limits::maxsize(Some(20))).unwrap();
    stop.store(true, Ordering::SeqCst);
    ns.put(&u64::MAX.to_le_bytes(), &value("w", u64::MAX))
        .unwrap();
    println!("NOT STOPPED");
}

/// Whether the index says a writer is (or died) in the middle of a
/// mutation.
fn mutating(dir: &Path) -> bool {
    let b = std::fs::read(dir.join("index")).unwrap();
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[hdr::STATE..hdr::STATE + 8]);
    u64::from_le_bytes(w) & STATE_MUTATING != 0
}

#[test]
fn a_writer_killed_mid_mutation_on_a_full_disk_is_recovered_from() {
    let Some(fs) = Tmpfs::mount(FS_KIB, "a rebuild on a full disk") else {
        return;
    };
    let dir = fs.path();
    let mut last = 0u64;
    {
        let store = Store::open(&dir, opts()).unwrap();
        // Defined first: its NAMESPACE record lies in the oldest segment,
        // which the recovery evicts; it must stay defined.
        let keep = store.namespace("keep", Limits::default()).unwrap();
        for k in 0..5u64 {
            keep.put(&k.to_le_bytes(), &value("keep", k)).unwrap();
        }
        // Distinct keys in a namespace of 20 entries: the segments fill with
        // dead records until the new index no longer fits, even with the
        // reserve.
        let w = store.namespace("w", Limits::maxsize(Some(20))).unwrap();
        while free_bytes(fs.dir.path()) + (128 << 10) >= INDEX_BYTES {
            for _ in 0..50 {
                w.put(&last.to_le_bytes(), &value("w", last)).unwrap();
                last += 1;
            }
            assert!(last < 100_000, "the disk never filled");
        }
    }
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("seg-")
        })
        .count();
    let oldest = dir.join("seg-00000001.log");
    assert!(oldest.exists());
    let free = free_bytes(fs.dir.path());
    println!("{last} puts of about 1 KB; {segments} segments; {free} bytes free");

    // A writer stopped inside a put, killed with SIGKILL.
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            "full_disk_rebuild_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // A watchdog: a child that never stops is killed, and the test fails
    // (the read below sees the end of its output) instead of hanging.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(120));
        let _ = Command::new("kill").args(["-9", &pid]).status();
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the writer ended");
        // libtest prints "test full_disk_rebuild_child_entry ... " first, on
        // the same line.
        if line.trim_end().ends_with("MUTATING") {
            break;
        }
        assert!(!line.contains("NOT STOPPED"), "{line}");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(mutating(&dir), "the killed writer left no mutation behind");
    let free = free_bytes(fs.dir.path());
    let reserve = std::fs::metadata(dir.join("reserve")).map_or(0, |m| m.len());
    println!("killed mid-mutation; {free} bytes free, reserve {reserve} bytes");
    assert!(
        free + reserve < INDEX_BYTES,
        "{free} + {reserve} bytes: a new index fits"
    );

    // The next writer opens the store (before the fix: ENOSPC), and it is
    // sound: verify passes, every value read is right.
    let store = Store::open(&dir, opts()).unwrap();
    assert!(!mutating(&dir));
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    assert!(!oldest.exists(), "the oldest segment was not evicted");
    let left = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("seg-")
        })
        .count();
    println!(
        "the next writer opened: {} segments evicted, {} bytes free",
        segments - left,
        free_bytes(fs.dir.path())
    );
    // The namespace defined in the evicted segment is still defined.
    let names = store.namespace_names().unwrap();
    assert!(names.iter().any(|n| n == "keep"), "{names:?}");
    let keep = store.namespace("keep", Limits::default()).unwrap();
    let w = store.namespace("w", Limits::maxsize(Some(20))).unwrap();
    for k in 0..5u64 {
        if let Some(v) = keep.get(&k.to_le_bytes()).unwrap() {
            assert_eq!(v, value("keep", k), "keep {k}");
        }
    }
    let mut hits = 0;
    for k in (0..last).chain([u64::MAX]) {
        if let Some(v) = w.get(&k.to_le_bytes()).unwrap() {
            assert_eq!(v, value("w", k), "w {k}");
            hits += 1;
        }
    }
    // The newest entries lie in the newest segments, which stay.
    assert!(hits >= 10, "only {hits} entries of w left");

    // Caching resumes, on the full disk, without any other help.
    let fresh = store
        .namespace("fresh", Limits::maxsize(Some(100)))
        .unwrap();
    for k in 0..2_000u64 {
        fresh.put(&k.to_le_bytes(), &value("fresh", k)).unwrap();
        w.put(&(k + 1_000_000).to_le_bytes(), &value("w", k + 1_000_000))
            .unwrap();
        keep.put(&(k % 5).to_le_bytes(), &value("keep", k % 5))
            .unwrap();
    }
    for k in 1_900..2_000u64 {
        assert_eq!(
            fresh.get(&k.to_le_bytes()).unwrap(),
            Some(value("fresh", k))
        );
    }
    for k in 0..5u64 {
        assert_eq!(keep.get(&k.to_le_bytes()).unwrap(), Some(value("keep", k)));
    }
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    drop((keep, w, fresh, store));

    // An index rebuilt from the log agrees.
    std::fs::remove_file(dir.join("index")).unwrap();
    let store = Store::open(&dir, opts()).unwrap();
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    let keep = store.namespace("keep", Limits::default()).unwrap();
    for k in 0..5u64 {
        assert_eq!(keep.get(&k.to_le_bytes()).unwrap(), Some(value("keep", k)));
    }
    let fresh = store
        .namespace("fresh", Limits::maxsize(Some(100)))
        .unwrap();
    for k in 1_900..2_000u64 {
        assert_eq!(
            fresh.get(&k.to_le_bytes()).unwrap(),
            Some(value("fresh", k))
        );
    }
}
