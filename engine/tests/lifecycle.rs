//! Namespaces' last use and their removal (FORMAT.md, "Last use" and
//! "Removing a namespace").

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use picocache_engine::format::{self, nsr};
use picocache_engine::{Limits, Options, Store};

const T0: u64 = 1_700_000_000;

/// Options with a test clock for last-use times, starting at `T0`.
fn opts() -> (Options, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(T0));
    let mut o = Options::default().background_compaction(false);
    o = o.last_use_clock(clock.clone());
    (o, clock)
}

fn last_used(s: &Store, name: &str) -> Option<u64> {
    s.stats()
        .unwrap()
        .namespaces
        .into_iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no namespace {name}"))
        .last_used
}

fn names(s: &Store) -> Vec<String> {
    let mut v: Vec<String> = s
        .stats()
        .unwrap()
        .namespaces
        .into_iter()
        .map(|n| n.name)
        .collect();
    v.sort();
    v
}

/// Byte offset of a namespace row's last-use word in the index file.
fn last_used_offset(row: u64) -> u64 {
    format::IDX_HEADER_LEN as u64 + row * format::NS_ROW_LEN as u64 + nsr::LAST_USED as u64
}

fn write_index_word(dir: &Path, off: u64, v: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("index"))
        .unwrap();
    f.write_all_at(&v.to_le_bytes(), off).unwrap();
}

#[test]
fn open_and_put_record_the_last_use_and_it_survives_reopen_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let (o, clock) = opts();
    {
        let s = Store::open(dir.path(), o.clone()).unwrap();
        let ns = s.namespace("a", Limits::maxsize(Some(10))).unwrap();
        assert_eq!(last_used(&s, "a"), Some(T0), "created = used");
        clock.store(T0 + 100, Ordering::Relaxed);
        ns.put(b"k", b"v").unwrap();
        assert_eq!(last_used(&s, "a"), Some(T0 + 100), "a put is a use");
        clock.store(T0 + 150, Ordering::Relaxed);
        ns.put_batch(&[(b"k2", b"v2")]).unwrap();
        assert_eq!(last_used(&s, "a"), Some(T0 + 150), "a batch is a use");
        // Opening it again in this process (the handle cache path) is a use.
        clock.store(T0 + 200, Ordering::Relaxed);
        s.namespace("a", Limits::maxsize(Some(10))).unwrap();
        assert_eq!(last_used(&s, "a"), Some(T0 + 200));
        // Inspection is not a use.
        clock.store(T0 + 300, Ordering::Relaxed);
        let e = s.existing_namespace("a").unwrap().unwrap();
        e.stats().unwrap();
        e.keys().unwrap();
        assert_eq!(last_used(&s, "a"), Some(T0 + 200));
    }
    clock.store(T0 + 400, Ordering::Relaxed);
    let s = Store::open(dir.path(), o.clone()).unwrap();
    assert_eq!(
        last_used(&s, "a"),
        Some(T0 + 200),
        "persisted, and opening the store is not a use"
    );
    s.rebuild_index().unwrap();
    assert_eq!(
        last_used(&s, "a"),
        Some(T0 + 200),
        "kept by a rebuild from the log"
    );
    // Another process opening it.
    clock.store(T0 + 500, Ordering::Relaxed);
    let s2 = Store::open(dir.path(), o).unwrap();
    s2.namespace("a", Limits::maxsize(Some(10))).unwrap();
    assert_eq!(last_used(&s, "a"), Some(T0 + 500));
}

#[test]
fn lookups_update_the_last_use_coarsely() {
    let dir = tempfile::tempdir().unwrap();
    let (o, clock) = opts();
    let s = Store::open(dir.path(), o).unwrap();
    let ns = s.namespace("f", Limits::default()).unwrap();
    ns.put(b"k", b"v").unwrap();
    let g = format::LAST_USE_GRANULARITY_SECS;
    // Within the granularity, hits and misses leave the row alone.
    clock.store(T0 + g, Ordering::Relaxed);
    assert!(ns.get(b"k").unwrap().is_some());
    assert!(ns.get(b"nope").unwrap().is_none());
    assert_eq!(last_used(&s, "f"), Some(T0));
    // Beyond it, a hit records the use.
    clock.store(T0 + g + 1, Ordering::Relaxed);
    assert!(ns.get(b"k").unwrap().is_some());
    assert_eq!(last_used(&s, "f"), Some(T0 + g + 1));
    // So does the in-process tier's hit path...
    let at = ns.get_located(b"k", |_, at| at).unwrap().unwrap();
    clock.store(T0 + 3 * g, Ordering::Relaxed);
    assert!(ns.hit_located(ns.key_hash(b"k"), &at).unwrap());
    assert_eq!(last_used(&s, "f"), Some(T0 + 3 * g));
    // ... and a miss.
    clock.store(T0 + 5 * g, Ordering::Relaxed);
    assert!(ns.get(b"nope").unwrap().is_none());
    assert_eq!(last_used(&s, "f"), Some(T0 + 5 * g));
    // A peek is not a use; the time never goes back.
    clock.store(T0 + 7 * g, Ordering::Relaxed);
    ns.peek_located(b"k", |_, _| ()).unwrap();
    assert_eq!(last_used(&s, "f"), Some(T0 + 5 * g));
    clock.store(T0, Ordering::Relaxed);
    ns.put(b"k", b"v2").unwrap();
    assert_eq!(last_used(&s, "f"), Some(T0 + 5 * g));
}

#[test]
fn an_index_without_last_use_reads_unknown_and_counts_from_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (o, clock) = opts();
    let s = Store::open(dir.path(), o.clone()).unwrap();
    s.namespace("old", Limits::default()).unwrap();
    s.sync().unwrap();
    // What an earlier build left in the row: zero.
    write_index_word(dir.path(), last_used_offset(0), 0);
    assert_eq!(last_used(&s, "old"), None, "unknown");
    drop(s);
    clock.store(T0 + 1000, Ordering::Relaxed);
    let s = Store::open(dir.path(), o).unwrap();
    assert_eq!(last_used(&s, "old"), Some(T0 + 1000));
    // Unknown is never "unused".
    write_index_word(dir.path(), last_used_offset(0), 0);
    assert!(s.unused_namespaces(Duration::ZERO).unwrap().is_empty());
    assert!(s
        .remove_unused_namespaces(Duration::ZERO)
        .unwrap()
        .is_empty());
    assert_eq!(names(&s), ["old"]);
}

#[test]
fn remove_namespace_while_another_handle_has_the_store_open() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _clock) = opts();
    let s1 = Store::open(dir.path(), o.clone()).unwrap();
    let s2 = Store::open(dir.path(), o.clone()).unwrap();
    let a = s1.namespace("a", Limits::maxsize(Some(100))).unwrap();
    let b = s1.namespace("b", Limits::default()).unwrap();
    for i in 0..20u32 {
        a.put(&i.to_le_bytes(), b"a-value").unwrap();
        b.put(&i.to_le_bytes(), b"b-value").unwrap();
    }
    let a2 = s2.namespace("a", Limits::maxsize(Some(100))).unwrap();
    assert_eq!(
        a2.get(&1u32.to_le_bytes()).unwrap().as_deref(),
        Some(&b"a-value"[..])
    );

    let gone = s1.remove_namespace("a").unwrap().expect("removed");
    assert_eq!((gone.name.as_str(), gone.entries), ("a", 20));
    assert_eq!(s1.remove_namespace("a").unwrap(), None, "already gone");
    for s in [&s1, &s2] {
        assert_eq!(names(s), ["b"]);
        assert_eq!(s.namespace_names().unwrap(), ["b"]);
        assert!(s.existing_namespace("a").unwrap().is_none());
        assert_eq!(s.stats().unwrap().entries, 20);
    }
    for i in 0..20u32 {
        assert_eq!(
            b.get(&i.to_le_bytes()).unwrap().as_deref(),
            Some(&b"b-value"[..])
        );
    }

    // A new namespace takes the free row; the stale handles on "a" in the
    // other store never read, write, clear or list it.
    let c = s1.namespace("c", Limits::default()).unwrap();
    c.put(b"mine", b"c-value").unwrap();
    a2.put(&1u32.to_le_bytes(), b"a-again").unwrap();
    assert_eq!(c.get(&1u32.to_le_bytes()).unwrap(), None);
    a.clear().unwrap();
    assert_eq!(c.get(b"mine").unwrap().as_deref(), Some(&b"c-value"[..]));
    assert_eq!(c.keys().unwrap().len(), 1);
    // "a" is in use again: defined anew, empty, with the handle's limits.
    assert_eq!(
        a2.get(&1u32.to_le_bytes()).unwrap(),
        None,
        "cleared through a"
    );
    a2.put(&2u32.to_le_bytes(), b"a-again").unwrap();
    assert_eq!(
        a2.get(&3u32.to_le_bytes()).unwrap(),
        None,
        "old entries are gone"
    );
    let st = a2.stats().unwrap();
    assert_eq!((st.entries, st.limits.maxsize), (1, Some(100)));
    assert_eq!(names(&s1), ["a", "b", "c"]);
    assert!(
        s1.verify().unwrap().is_ok(),
        "{:?}",
        s1.verify().unwrap().problems
    );
}

#[test]
fn a_removal_survives_rebuild_and_compaction_reclaims_its_space() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _clock) = opts();
    let o = o.segment_size(64 << 10);
    let s = Store::open(dir.path(), o.clone()).unwrap();
    let other = Store::open(dir.path(), o.clone()).unwrap();
    let a = s.namespace("a", Limits::default()).unwrap();
    let b = s.namespace("b", Limits::default()).unwrap();
    let big = vec![7u8; 300];
    for i in 0..2000u32 {
        a.put(&i.to_le_bytes(), &big).unwrap();
    }
    for i in 0..50u32 {
        b.put(&i.to_le_bytes(), b"kept").unwrap();
    }
    let before = s.stats().unwrap().log_bytes;
    s.remove_namespace("a").unwrap().unwrap();
    let st = s.stats().unwrap();
    assert!(st.dead_bytes >= 2000 * 300, "{st:?}");
    other.compact().unwrap();
    let after = s.stats().unwrap();
    assert!(
        after.log_bytes < before / 10,
        "log {before} -> {} bytes",
        after.log_bytes
    );
    assert_eq!(names(&s), ["b"]);
    // A namespace that takes the row never sees the old records, whatever
    // the log still holds, and the removal is in the log.
    let c = s.namespace("c", Limits::default()).unwrap();
    for check in 0..3 {
        match check {
            0 => s.rebuild_index().unwrap(),
            1 => other.compact().unwrap(),
            _ => s.rebuild_index().unwrap(),
        }
        assert_eq!(names(&s), ["b", "c"], "after step {check}");
        assert_eq!(c.get(&1u32.to_le_bytes()).unwrap(), None);
        assert_eq!(s.stats().unwrap().entries, 50);
        for i in 0..50u32 {
            assert_eq!(
                b.get(&i.to_le_bytes()).unwrap().as_deref(),
                Some(&b"kept"[..])
            );
        }
    }
    drop((a, b, c, s, other));
    let s = Store::open(dir.path(), o).unwrap();
    s.rebuild_index().unwrap();
    assert_eq!(names(&s), ["b", "c"]);
    assert!(
        s.verify().unwrap().is_ok(),
        "{:?}",
        s.verify().unwrap().problems
    );
}

#[test]
fn a_removal_without_a_new_namespace_survives_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _clock) = opts();
    let s = Store::open(dir.path(), o.clone()).unwrap();
    let a = s.namespace("a", Limits::default()).unwrap();
    a.put(b"k", b"v").unwrap();
    s.namespace("b", Limits::default())
        .unwrap()
        .put(b"k", b"w")
        .unwrap();
    s.remove_namespace("a").unwrap().unwrap();
    s.rebuild_index().unwrap();
    assert_eq!(names(&s), ["b"]);
    s.compact().unwrap();
    s.rebuild_index().unwrap();
    assert_eq!(names(&s), ["b"]);
    // Defined again later, it is empty.
    let a = s.namespace("a", Limits::default()).unwrap();
    s.rebuild_index().unwrap();
    assert_eq!(a.get(b"k").unwrap(), None);
    assert_eq!(names(&s), ["a", "b"]);
}

#[test]
fn remove_unused_namespaces_goes_by_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let (o, clock) = opts();
    let s = Store::open(dir.path(), o).unwrap();
    let day = 86_400;
    s.namespace("old", Limits::default())
        .unwrap()
        .put(b"k", b"v")
        .unwrap();
    clock.store(T0 + 20 * day, Ordering::Relaxed);
    let recent = s.namespace("recent", Limits::default()).unwrap();
    recent.put(b"k", b"v").unwrap();
    clock.store(T0 + 40 * day, Ordering::Relaxed);
    let month = Duration::from_secs(30 * day);
    let listed: Vec<String> = s
        .unused_namespaces(month)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(listed, ["old"]);
    assert_eq!(names(&s), ["old", "recent"], "listing removes nothing");
    let removed = s.remove_unused_namespaces(month).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!((removed[0].name.as_str(), removed[0].entries), ("old", 1));
    assert_eq!(removed[0].last_used, Some(T0));
    assert_eq!(names(&s), ["recent"]);
    assert_eq!(recent.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}
