//! `Store::repair` (issue 12, item E): a store whose files another program
//! damaged is repaired: what is readable stays, with the right values; the
//! damage leaves the files; `verify` is clean afterwards.

use std::path::Path;
use std::process::Command;

use picocache_engine::{Limits, Options, Store};

fn opts() -> Options {
    Options::default()
        .segment_size(64 << 10)
        .background_compaction(false)
}

fn value(k: u32) -> Vec<u8> {
    let mut v = format!("value of {k}:").into_bytes();
    v.resize(300, b'.');
    v
}

/// Overwrites `len` bytes of `file` at `off` with 0x5a, from another process
/// (`dd conv=notrunc`).
fn damage(file: &Path, off: u64, len: u64) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {len} /dev/zero | tr '\\000' 'Z' | dd of='{}' bs=1 seek={off} conv=notrunc status=none",
            file.display()
        ))
        .status()
        .unwrap()
        .success();
    assert!(ok, "dd failed");
}

#[test]
fn repair_removes_damage_and_keeps_what_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let ns = store.namespace("r", Limits::default()).unwrap();
    for k in 0u32..1000 {
        ns.put(&k.to_le_bytes(), &value(k)).unwrap();
    }
    store.sync().unwrap();
    drop(ns);
    drop(store);
    // Damage: the middle of the first segment, the index header, and a
    // stray file named like a segment.
    let seg = dir.path().join("seg-00000001.log");
    damage(&seg, 20_000, 700);
    damage(&dir.path().join("index"), 0, 16);
    std::fs::write(dir.path().join("seg-000000ff.log"), b"not a segment").unwrap();

    let store = Store::open(dir.path(), opts()).unwrap();
    let before = store.verify().unwrap();
    assert!(!before.is_ok());
    let rep = store.repair().unwrap();
    println!(
        "repair: {} problems before ({:?}), moved aside {:?}, {} segment(s) rewritten, \
         problems after: {:?}",
        rep.problems_before.len(),
        rep.problems_before,
        rep.moved_aside,
        rep.segments_rewritten,
        rep.problems_after
    );
    assert!(rep.problems_after.is_empty(), "{:?}", rep.problems_after);
    assert_eq!(rep.moved_aside.len(), 1);
    assert!(dir.path().join("damaged/seg-000000ff.log").exists());
    assert!(rep.segments_rewritten >= 1);
    assert!(store.verify().unwrap().is_ok());
    let ns = store.namespace("r", Limits::default()).unwrap();
    let mut lost = 0;
    for k in 0u32..1000 {
        match ns.get(&k.to_le_bytes()).unwrap() {
            Some(v) => assert_eq!(v, value(k), "key {k}"),
            None => lost += 1,
        }
    }
    println!("{lost} of 1000 keys lost to 700 damaged bytes");
    assert!((1..=4).contains(&lost), "{lost} keys lost");
    // The damage is gone from the files: a rebuild from the log finds the
    // same keys.
    store.rebuild_index().unwrap();
    assert!(store.verify().unwrap().is_ok());
    assert_eq!(store.stats().unwrap().entries, 1000 - lost);
}
