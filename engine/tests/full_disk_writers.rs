//! Several processes fill a small real filesystem (a 16 MiB tmpfs mounted
//! for the test; we run as root in CI) and the store recovers by itself
//! (issue 12, item 4). Before the fix, four writers filled the disk within
//! seconds and, once the reserve file was gone, no process could cache
//! again: every segment held a live entry or two, and compacting one needed
//! room for its copies. Now a write that finds the disk full evicts the
//! oldest segment when compaction cannot free anything (FORMAT.md, "Full
//! disk"): caching resumes in every writer, without a `clear`, no value is
//! ever wrong, and `verify` passes.
//!
//! Where `mount` is not allowed the test says so on stdout and checks
//! nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_bytes, is_full, Tmpfs};
use picocache_engine::{Limits, Options, Store};

const CHILD_ENV: &str = "PICOCACHE_FULL_DISK_WRITER_DIR";
const WRITERS: usize = 4;
const KEYS: u64 = 400;
const SECS: u64 = 10;

/// Bytes allocated to the store's files.
fn store_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// The value of key `k` (it names its key, so a value served for another
/// key is caught); 1 to 1.4 KB, as in the LocalCache test.
fn value(k: u64) -> Vec<u8> {
    let mut v = format!("value of {k}/").into_bytes();
    v.resize(1000 + k as usize, (k % 251) as u8);
    v
}

fn limits() -> Limits {
    Limits::maxsize(Some(50))
}

/// One writer: random gets and puts for `SECS` seconds, as fast as it can.
/// Prints `WRONG` and exits 3 on a wrong value; at the end prints what it
/// did, split into the first and the second half of its run.
#[test]
fn full_disk_writer_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("PICOCACHE_FULL_DISK_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(&dir, Options::default()).unwrap();
    let ns = store.namespace("w", limits()).unwrap();
    println!("READY");
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let start = Instant::now();
    // [half] -> (puts that succeeded, puts that failed with ENOSPC, hits)
    let mut n = [(0u64, 0u64, 0u64); 2];
    while start.elapsed() < Duration::from_secs(SECS) {
        let half = usize::from(start.elapsed() >= Duration::from_secs(SECS / 2));
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = x % KEYS;
        match ns.get(&k.to_le_bytes()) {
            Ok(Some(v)) if v == value(k) => n[half].2 += 1,
            Ok(Some(_)) => {
                println!("WRONG value for key {k}");
                std::process::exit(3);
            }
            Ok(None) => {}
            Err(e) => panic!("get {k}: {e}"),
        }
        match ns.put(&k.to_le_bytes(), &value(k)) {
            Ok(_) => n[half].0 += 1,
            Err(e) if is_full(&e) => n[half].1 += 1,
            Err(e) => panic!("put {k}: {e}"),
        }
    }
    println!(
        "STATS {} {} {} {} {} {}",
        n[0].0, n[0].1, n[0].2, n[1].0, n[1].1, n[1].2
    );
}

#[test]
fn several_writers_fill_the_disk_and_caching_resumes() {
    let Some(fs) = Tmpfs::mount(16 << 10, "the full-disk behaviour with several writers") else {
        return;
    };
    let dir = fs.path();
    // Created first, so that every writer opens an existing store.
    drop(Store::open(&dir, Options::default()).unwrap());
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..WRITERS)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "full_disk_writer_child_entry",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &dir)
                .env("PICOCACHE_FULL_DISK_SEED", (i + 1).to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    // The lowest free space seen while they run: the disk does fill.
    let mut min_free = u64::MAX;
    let start = Instant::now();
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        min_free = min_free.min(free_bytes(fs.dir.path()));
        assert!(
            start.elapsed() < Duration::from_secs(SECS * 6),
            "writers hang"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut totals = [0u64; 6];
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("WRONG"), "writer {i}: {text}");
        assert!(out.status.success(), "writer {i}: {:?}: {text}", out.status);
        let stats = BufReader::new(text.as_bytes())
            .lines()
            .map_while(|l| l.ok())
            .find_map(|l| l.strip_prefix("STATS ").map(str::to_owned))
            .unwrap_or_else(|| panic!("writer {i} printed no STATS: {text}"));
        let n: Vec<u64> = stats.split(' ').map(|s| s.parse().unwrap()).collect();
        println!(
            "writer {i}: first {} s: {} puts, {} ENOSPC, {} hits; last {} s: {} puts, {} ENOSPC, {} hits",
            SECS / 2,
            n[0],
            n[1],
            n[2],
            SECS / 2,
            n[3],
            n[4],
            n[5]
        );
        // Caching goes on in every writer, to the end.
        assert!(
            n[3] > 100,
            "writer {i} stored {} values in its last {} s",
            n[3],
            SECS / 2
        );
        for (t, v) in totals.iter_mut().zip(&n) {
            *t += v;
        }
    }
    let fs_bytes = 16u64 << 20;
    let after = store_bytes(&dir);
    println!(
        "{WRITERS} writers, {SECS} s: {} puts, {} ENOSPC, {} hits; lowest free space {min_free} bytes; \
         store {after} bytes on a {fs_bytes}-byte filesystem",
        totals[0] + totals[3],
        totals[1] + totals[4],
        totals[2] + totals[5]
    );
    assert!(
        min_free < 1 << 20,
        "the disk never filled ({min_free} bytes free at the lowest)"
    );
    assert!(after <= fs_bytes, "{after} bytes");

    // A lone process afterwards: caching works without a clear, every value
    // is right, verify passes, and a compaction shrinks the store.
    let store = Store::open(&dir, Options::default().background_compaction(false)).unwrap();
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    let ns = store.namespace("w", limits()).unwrap();
    let fresh = store.namespace("fresh", Limits::default()).unwrap();
    for k in 0..KEYS {
        if let Some(v) = ns.get(&k.to_le_bytes()).unwrap() {
            assert_eq!(v, value(k), "key {k}");
        }
        ns.put(&k.to_le_bytes(), &value(k)).unwrap();
        let fk = k + 1_000_000;
        fresh.put(&fk.to_le_bytes(), &value(k)).unwrap();
    }
    for k in KEYS - 50..KEYS {
        assert_eq!(ns.get(&k.to_le_bytes()).unwrap(), Some(value(k)), "key {k}");
    }
    for k in 0..KEYS {
        let fk = k + 1_000_000;
        assert_eq!(fresh.get(&fk.to_le_bytes()).unwrap(), Some(value(k)));
    }
    store.compact().unwrap();
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    let compacted = store_bytes(&dir);
    println!(
        "a lone process then stored {} values, all read back; after compact() the store is {compacted} bytes",
        2 * KEYS
    );
    assert!(compacted <= 4 << 20, "{compacted} bytes after compact()");
    drop(ns);
    drop(fresh);
    drop(store);
    // An index rebuilt from the log agrees.
    std::fs::remove_file(dir.join("index")).unwrap();
    let store = Store::open(&dir, Options::default().background_compaction(false)).unwrap();
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    let fresh = store.namespace("fresh", Limits::default()).unwrap();
    for k in 0..KEYS {
        let fk = k + 1_000_000;
        assert_eq!(fresh.get(&fk.to_le_bytes()).unwrap(), Some(value(k)));
    }
    let ns = store.namespace("w", limits()).unwrap();
    for k in 0..KEYS {
        if let Some(v) = ns.get(&k.to_le_bytes()).unwrap() {
            assert_eq!(v, value(k), "key {k} after the rebuild");
        }
    }
}
