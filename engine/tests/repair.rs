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

/// The outside test's case: 4 KiB of damage in the index body (the
/// namespace table, then the buckets and entries) while a process has the
/// store open and keeps writing. No wrong value at any point; `repair`
/// leaves a store that verifies, with one entry per key.
#[test]
fn index_damaged_while_in_use_is_repaired() {
    for region in ["namespace table", "buckets", "entries"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        let ns = store.namespace("r", Limits::default()).unwrap();
        for k in 0u32..300 {
            ns.put(&k.to_le_bytes(), &value(k)).unwrap();
        }
        let index = dir.path().join("index");
        let len = std::fs::metadata(&index).unwrap().len();
        // FORMAT.md: a 4 KiB header, 1,024 namespace rows of 384 bytes,
        // 4,096 segment rows of 40 bytes, then B buckets of 16 bytes and
        // 3B/4 entries of 48 bytes (52 bytes per bucket in all).
        let buckets_at = 4096 + 1024 * 384 + 4096 * 40;
        let off = match region {
            "namespace table" => 4096,
            "buckets" => buckets_at,
            _ => buckets_at + 16 * ((len - buckets_at) / 52),
        };
        damage(&index, off, 4096);
        let mut wrong = 0;
        let mut errors = 0;
        for round in 0..30u32 {
            for k in 0u32..300 {
                match ns.get(&k.to_le_bytes()) {
                    Ok(Some(v)) if v != value(k) => wrong += 1,
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
                if (k + round) % 10 == 0 && ns.put(&k.to_le_bytes(), &value(k)).is_err() {
                    errors += 1;
                }
            }
        }
        assert_eq!(wrong, 0, "{region}: wrong values");
        let rep = store.repair().unwrap();
        assert!(
            rep.problems_after.is_empty(),
            "{region}: {:?}",
            rep.problems_after
        );
        let ns = store.namespace("r", Limits::default()).unwrap();
        for k in 0u32..300 {
            assert_eq!(
                ns.get(&k.to_le_bytes()).unwrap(),
                Some(value(k)),
                "{region}: {k}"
            );
        }
        let names = store.namespace_names().unwrap();
        assert_eq!(
            store.stats().unwrap().entries,
            300,
            "{region}: one entry per key; namespaces {names:?}"
        );
        println!(
            "{region}: 4 KiB damaged in use; 18,000 gets and 900 puts after it: no wrong \
             value, {errors} errors; repair found {} problems, none after; 300 keys, 300 entries",
            rep.problems_before.len()
        );
    }
}

/// A second repair that finds another stray file under the name of one an
/// earlier repair moved aside keeps both (session 24): the newcomer takes
/// `NAME.1`, never the earlier file's place.
#[test]
fn a_second_repair_keeps_what_the_first_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let stray = dir.path().join("seg-00000077.log");
    let mut moved = Vec::new();
    for bytes in [&b"first stray"[..], b"second stray", b"third stray"] {
        std::fs::write(&stray, bytes).unwrap();
        let rep = store.repair().unwrap();
        assert!(rep.problems_after.is_empty(), "{:?}", rep.problems_after);
        moved.extend(rep.moved_aside);
    }
    println!("moved aside: {moved:?}");
    let aside = dir.path().join("damaged");
    let names = [
        "seg-00000077.log",
        "seg-00000077.log.1",
        "seg-00000077.log.2",
    ];
    assert_eq!(moved, names.map(|n| aside.join(n)));
    for (name, bytes) in names
        .iter()
        .zip(["first stray", "second stray", "third stray"])
    {
        assert_eq!(std::fs::read(aside.join(name)).unwrap(), bytes.as_bytes());
    }
}
