//! A segment truncated by another program while a process has it mapped
//! (issue 12, item E): reads of the pages past the new end must be misses,
//! not a SIGBUS that kills the process. The reader runs in a child process,
//! so a SIGBUS shows as the child's death, not the test harness's. The same
//! for the index: a process whose index is cut finds every key (rebuilt
//! from the log) and keeps writing.

use std::process::Command;

use picocache_engine::{Limits, Options, Store};

const CHILD_ENV: &str = "PICOCACHE_TRUNCATED_CHILD_DIR";
const KEYS: u32 = 2000;

fn value(k: u32) -> Vec<u8> {
    let mut v = format!("value of {k}:").into_bytes();
    v.resize(1000, b'.');
    v
}

/// The reader. Runs only when re-executed by
/// `a_segment_truncated_by_another_program_is_a_miss_not_a_sigbus`.
#[test]
fn truncated_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(&dir, Options::default().background_compaction(false)).unwrap();
    let ns = store.namespace("t", Limits::default()).unwrap();
    for k in 0..KEYS {
        ns.put(&k.to_le_bytes(), &value(k)).unwrap();
    }
    // Every key read once: the segment is mapped and its length known.
    for k in 0..KEYS {
        assert_eq!(ns.get(&k.to_le_bytes()).unwrap(), Some(value(k)));
    }
    // Another program cuts the segment to 64 KiB.
    let seg = std::path::Path::new(&dir).join("seg-00000001.log");
    let ok = Command::new("truncate")
        .args(["-s", "65536"])
        .arg(&seg)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (mut hits, mut misses) = (0, 0);
    for k in 0..KEYS {
        match ns.get(&k.to_le_bytes()).unwrap() {
            Some(v) => {
                assert_eq!(v, value(k), "key {k}");
                hits += 1;
            }
            None => misses += 1,
        }
    }
    let rep = store.verify().unwrap();
    assert!(!rep.is_ok(), "verify did not notice the truncation");
    println!(
        "CHILD OK: {hits} hits, {misses} misses after the cut; verify: {} problem(s)",
        rep.problems.len()
    );
}

#[test]
fn a_segment_truncated_by_another_program_is_a_miss_not_a_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "truncated_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD OK"),
        "the reader died ({:?}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().find(|l| l.contains("CHILD OK")).unwrap();
    println!("{line}");
    // The first 64 KiB held about 60 records of ~1 KB.
    let hits: u32 = line
        .split("CHILD OK: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=70).contains(&hits), "{hits} hits");
    // The store is repaired: what remains readable stays.
    let store = Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
    let rep = store.repair().unwrap();
    assert!(rep.problems_after.is_empty(), "{:?}", rep.problems_after);
    let ns = store.namespace("t", Limits::default()).unwrap();
    let left = (0..KEYS)
        .filter(|k| ns.get(&k.to_le_bytes()).unwrap().is_some())
        .count();
    assert_eq!(left as u32, hits);
}

const INDEX_CHILD_ENV: &str = "PICOCACHE_TRUNCATED_INDEX_CHILD";

/// The process whose index is cut. Runs only when re-executed by
/// `an_index_truncated_by_another_program_is_rebuilt_not_a_sigbus`, with
/// `dir:length` in its environment.
#[test]
fn truncated_index_child_entry() {
    let Ok(arg) = std::env::var(INDEX_CHILD_ENV) else {
        return;
    };
    let (dir, cut) = arg.rsplit_once(':').unwrap();
    let store = Store::open(dir, Options::default().background_compaction(false)).unwrap();
    let ns = store.namespace("t", Limits::default()).unwrap();
    for k in 0..KEYS {
        ns.put(&k.to_le_bytes(), &value(k)).unwrap();
    }
    for k in 0..KEYS {
        assert_eq!(ns.get(&k.to_le_bytes()).unwrap(), Some(value(k)));
    }
    let index = std::path::Path::new(dir).join("index");
    let before = std::fs::metadata(&index).unwrap().len();
    // Another program cuts the mapped index.
    let ok = Command::new("truncate")
        .args(["-s", cut])
        .arg(&index)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // Every key is still found (the index is rebuilt from the log), with
    // its own value; writes go on.
    let mut hits = 0;
    for k in 0..KEYS {
        let got = ns.get(&k.to_le_bytes()).unwrap();
        if let Some(v) = got {
            assert_eq!(v, value(k), "key {k}");
            hits += 1;
        }
    }
    for k in KEYS..KEYS + 100 {
        ns.put(&k.to_le_bytes(), &value(k)).unwrap();
        assert_eq!(ns.get(&k.to_le_bytes()).unwrap(), Some(value(k)));
    }
    let rep = store.verify().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    let after = std::fs::metadata(&index).unwrap().len();
    println!(
        "CHILD OK: {hits} of {KEYS} keys found after the cut of the {before}-byte index \
         to {cut} bytes (now {after}); 100 more puts; verify clean"
    );
}

#[test]
fn an_index_truncated_by_another_program_is_rebuilt_not_a_sigbus() {
    for cut in ["0", "4096", "65536"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "truncated_index_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INDEX_CHILD_ENV, format!("{}:{cut}", dir.path().display()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("CHILD OK"),
            "cut to {cut}: the process died ({:?}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout.lines().find(|l| l.contains("CHILD OK")).unwrap();
        println!("{line}");
        assert!(
            line.contains(&format!("CHILD OK: {KEYS} of {KEYS}")),
            "{line}"
        );
        // Another process opens it afterwards: every key, verify clean.
        let store =
            Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
        let ns = store.namespace("t", Limits::default()).unwrap();
        for k in 0..KEYS + 100 {
            assert_eq!(ns.get(&k.to_le_bytes()).unwrap(), Some(value(k)), "key {k}");
        }
        assert!(store.verify().unwrap().is_ok());
    }
}
