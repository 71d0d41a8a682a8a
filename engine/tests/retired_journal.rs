//! A handle that still holds an index retired by a rebuild must not let that
//! index's stale compaction journal into a later rebuild.
//!
//! 1. Handle A opens the store and keeps its index X mapped.
//! 2. A child compactor is SIGKILLed inside a chunk (blocked in the write of
//!    its copies): X says `MUTATING`, with a chunk in progress whose copies
//!    start at `dest`.
//! 3. Handle B opens: it rebuilds (X was mid-mutation) into Y, carrying the
//!    journal over without the chunk, retires X (whose `STATE` and journal
//!    words stay as they were), and puts new keys, written from `dest` on.
//! 4. Y then cannot be trusted either: another writer is SIGKILLed
//!    mid-put (Y says `MUTATING`), or the index file is deleted.
//! 5. A's next operation finds X retired and Y unusable, and rebuilds.
//!
//! Before the fix that rebuild took X as the index it replaces, accepted
//! X's journal (same boot, `MUTATING`, a sane `dest`) and discarded and
//! zeroed every record at or after `dest`: B's keys were lost.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use picocache_engine::format::hdr;
use picocache_engine::{Io, Limits, Options, RealIo, Store};

const ENV_DIR: &str = "PICOCACHE_RETIRED_JOURNAL_DIR";
const ENV_MODE: &str = "PICOCACHE_RETIRED_JOURNAL_MODE";

/// Bit 63 of `CMP_DONE`: a compaction chunk is in progress.
const CHUNK_IN_PROGRESS: u64 = 1 << 63;

/// Real I/O, except that once armed a write to a file not named `*.tmp`
/// (a segment) says so on stdout and hangs (until the parent kills us).
#[derive(Debug, Default)]
struct HangingWrite {
    armed: AtomicBool,
}

impl Io for HangingWrite {
    fn write_at(&self, f: &File, b: &[u8], o: u64) -> std::io::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            let p =
                std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap_or_default();
            if !p.to_string_lossy().ends_with(".tmp") {
                let mut out = std::io::stdout().lock();
                writeln!(out, "IN_WRITE {} at {o}", p.display()).unwrap();
                out.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
        }
        RealIo.write_at(f, b, o)
    }
    fn read_at(&self, f: &File, b: &mut [u8], o: u64) -> std::io::Result<()> {
        RealIo.read_at(f, b, o)
    }
    fn sync(&self, f: &File) -> std::io::Result<()> {
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
        .boot_id(0x5eed)
}

/// The child: a writer that hangs in its first segment write after arming,
/// inside a compaction chunk (`compact`) or a put (`put`).
#[test]
fn retired_journal_child() {
    let (Ok(dir), Ok(mode)) = (std::env::var(ENV_DIR), std::env::var(ENV_MODE)) else {
        return;
    };
    let io = Arc::new(HangingWrite::default());
    let store = Store::open(&dir, opts().io(io.clone())).unwrap();
    let ns = store.existing_namespace("a").unwrap().unwrap();
    io.armed.store(true, Ordering::SeqCst);
    match mode.as_str() {
        "compact" => store.compact().unwrap(),
        _ => {
            ns.put(b"doomed", b"x").unwrap();
        }
    }
    unreachable!("the write did not hang");
}

/// Runs the child in `mode` until it hangs in a write, then SIGKILLs it.
fn kill_child_in_write(dir: &Path, mode: &str) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            "retired_journal_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(|l| l.ok())
        .find(|l| l.contains("IN_WRITE"));
    println!("{mode} child: {line:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.is_some(), "the {mode} child never reached its write");
}

fn index_words(dir: &Path) -> (u64, u64, u64, u64) {
    let b = std::fs::read(dir.join("index")).unwrap();
    let word = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    (
        word(hdr::STATE),
        word(hdr::CMP_VICTIM),
        word(hdr::CMP_DONE),
        word(hdr::CMP_DEST),
    )
}

/// Steps 1 to 3; returns handle A (holding the retired index) and the keys
/// B put after its rebuild.
fn setup(dir: &Path) -> (Store, Vec<Vec<u8>>) {
    let a = Store::open(dir, opts()).unwrap();
    let ns = a.namespace("a", Limits::default()).unwrap();
    for k in 0u32..300 {
        ns.put(&k.to_le_bytes(), &[b'v'; 200]).unwrap();
    }
    for k in 0u32..100 {
        ns.put(&k.to_le_bytes(), &[b'w'; 200]).unwrap(); // dead bytes in the oldest segments
    }
    a.sync().unwrap();

    kill_child_in_write(dir, "compact");
    let (state, victim, done, dest) = index_words(dir);
    println!(
        "after the compactor's kill: state {state} victim {victim} done {done:#x} dest {dest:#x}"
    );
    assert!(
        state & 1 != 0 && victim != 0 && done & CHUNK_IN_PROGRESS != 0,
        "the compactor was not killed inside a chunk"
    );

    let b = Store::open(dir, opts()).unwrap();
    let nsb = b.existing_namespace("a").unwrap().unwrap();
    let new: Vec<Vec<u8>> = (0u32..20).map(|i| format!("new{i}").into_bytes()).collect();
    for k in &new {
        assert!(nsb.put(k, b"after the rebuild").unwrap());
    }
    drop(nsb);
    drop(b);
    let (state, victim, done, dest) = index_words(dir);
    println!("after B: state {state} victim {victim} done {done:#x} dest {dest:#x}");
    (a, new)
}

/// Step 5 and the checks: every key B put is still there, seen from A.
fn check(a: &Store, new: &[Vec<u8>]) {
    let ns = a.existing_namespace("a").unwrap().unwrap();
    let lost: Vec<String> = new
        .iter()
        .filter(|k| ns.get(k).unwrap().as_deref() != Some(&b"after the rebuild"[..]))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    println!("keys put after the first rebuild, lost: {lost:?}");
    assert!(lost.is_empty(), "lost: {lost:?}");
    for k in 0u32..300 {
        let want: &[u8] = if k < 100 { &[b'w'; 200] } else { &[b'v'; 200] };
        assert_eq!(ns.get(&k.to_le_bytes()).unwrap().as_deref(), Some(want));
    }
    a.compact().unwrap();
    let rep = a.verify().unwrap();
    assert!(rep.is_ok(), "verify: {:?}", rep.problems);
    assert_eq!(
        ns.get(&new[0]).unwrap().as_deref(),
        Some(&b"after the rebuild"[..])
    );
}

#[test]
fn stale_journal_of_a_retired_index_after_a_killed_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, new) = setup(dir.path());
    kill_child_in_write(dir.path(), "put");
    let (state, ..) = index_words(dir.path());
    assert!(state & 1 != 0, "the current index is not mid-mutation");
    check(&a, &new);
}

#[test]
fn stale_journal_of_a_retired_index_after_the_index_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, new) = setup(dir.path());
    std::fs::remove_file(dir.path().join("index")).unwrap();
    check(&a, &new);
}
