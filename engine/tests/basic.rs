use picocache_engine::{Limits, Options, Store};
use std::time::Duration;

fn opts() -> Options {
    Options::default().background_compaction(false)
}

#[test]
fn put_get_remove_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        let ns = s.namespace("a", Limits::default()).unwrap();
        assert!(ns.put(b"k1", b"v1").unwrap());
        assert!(ns.put(b"k2", b"v2").unwrap());
        assert_eq!(ns.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
        assert!(ns.remove(b"k2").unwrap());
        assert!(!ns.remove(b"k2").unwrap());
        assert_eq!(ns.get(b"k2").unwrap(), None);
        ns.put(b"k1", b"v1b").unwrap();
        let st = ns.stats().unwrap();
        assert_eq!((st.entries, st.hits, st.misses), (1, 1, 1));
    }
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("a", Limits::default()).unwrap();
    assert_eq!(ns.get(b"k1").unwrap().as_deref(), Some(&b"v1b"[..]));
    assert_eq!(ns.get(b"k2").unwrap(), None);
    assert!(s.verify().unwrap().is_ok(), "{:?}", s.verify().unwrap());
}

#[test]
fn rebuild_from_log_keeps_values() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        let ns = s.namespace("a", Limits::maxsize(Some(1000))).unwrap();
        for i in 0..3000u32 {
            ns.put(&i.to_le_bytes(), &(i * 7).to_le_bytes()).unwrap();
        }
        ns.remove(&2999u32.to_le_bytes()).unwrap();
        let b = s.namespace("b", Limits::default()).unwrap();
        b.put(b"x", b"y").unwrap();
        b.clear().unwrap();
        b.put(b"z", b"w").unwrap();
    }
    std::fs::remove_file(dir.path().join("index")).unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("a", Limits::maxsize(Some(1000))).unwrap();
    assert_eq!(ns.stats().unwrap().entries, 1000);
    for i in 1999..2999u32 {
        assert_eq!(
            ns.get(&i.to_le_bytes()).unwrap(),
            Some((i * 7).to_le_bytes().to_vec()),
            "{i}"
        );
    }
    assert_eq!(ns.get(&2999u32.to_le_bytes()).unwrap(), None);
    let b = s.namespace("b", Limits::default()).unwrap();
    assert_eq!(b.get(b"x").unwrap(), None);
    assert_eq!(b.get(b"z").unwrap(), Some(b"w".to_vec()));
    let r = s.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn ttl_expires() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s
        .namespace(
            "t",
            Limits {
                ttl: Some(Duration::from_millis(50)),
                ..Limits::default()
            },
        )
        .unwrap();
    ns.put(b"k", b"v").unwrap();
    ns.put_with_ttl(b"long", b"v", Some(Duration::from_secs(100)))
        .unwrap();
    assert!(ns.get(b"k").unwrap().is_some());
    std::thread::sleep(Duration::from_millis(80));
    assert!(ns.get(b"k").unwrap().is_none());
    assert!(ns.get(b"long").unwrap().is_some());
    assert!(!ns.remove(b"k").unwrap(), "an expired entry was not there");
    assert!(ns.remove(b"long").unwrap());
    assert_eq!(ns.stats().unwrap().entries, 0);
}

/// A reader never sees a namespace over its `maxsize`, not even between a
/// put and its eviction: room is made before the new entry is published.
#[test]
fn readers_never_see_more_than_maxsize() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("m", Limits::maxsize(Some(8))).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let watcher = sc.spawn(|| {
            let mut seen = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen = seen.max(ns.stats().unwrap().entries);
            }
            seen
        });
        for i in 0..20_000u32 {
            ns.put(&i.to_le_bytes(), b"v").unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(watcher.join().unwrap(), 8);
    });
}

#[test]
fn compaction_reclaims_space() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts().segment_size(1 << 16)).unwrap();
    let ns = s.namespace("c", Limits::default()).unwrap();
    for round in 0..5u32 {
        for i in 0..2000u32 {
            ns.put(&i.to_le_bytes(), &[round as u8; 100]).unwrap();
        }
    }
    let before = s.stats().unwrap();
    s.compact().unwrap();
    let after = s.stats().unwrap();
    assert!(
        after.log_bytes < before.log_bytes / 3,
        "{before:?} {after:?}"
    );
    assert_eq!(after.dead_bytes, 0, "{after:?}");
    for i in 0..2000u32 {
        assert_eq!(ns.get(&i.to_le_bytes()).unwrap(), Some(vec![4u8; 100]));
    }
    assert!(s.verify().unwrap().is_ok());
    drop(s);
    std::fs::remove_file(dir.path().join("index")).unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("c", Limits::default()).unwrap();
    for i in 0..2000u32 {
        assert_eq!(ns.get(&i.to_le_bytes()).unwrap(), Some(vec![4u8; 100]));
    }
}

#[test]
fn lease_excludes_threads() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("l", Limits::default()).unwrap();
    let l1 = ns.lease(b"k", Duration::from_millis(10)).unwrap();
    assert!(l1.is_some());
    let ns2 = ns.clone();
    let t = std::thread::spawn(move || {
        ns2.lease(b"k", Duration::from_millis(50))
            .unwrap()
            .is_some()
    });
    assert!(!t.join().unwrap());
    assert!(ns
        .lease(b"other", Duration::from_millis(10))
        .unwrap()
        .is_some());
    drop(l1);
    assert!(ns.lease(b"k", Duration::from_millis(10)).unwrap().is_some());
}

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A lease moved to another thread still excludes the thread that took
/// it (whose holder still holds its byte), while that thread's other keys
/// are granted; dropped on the other thread it is released, and the first
/// thread gets it again.
#[test]
fn a_moved_lease_excludes_its_first_thread_until_dropped_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("l", Limits::default()).unwrap();
    let lease = ns.lease(b"k", Duration::ZERO).unwrap().unwrap();
    let (give, take) = std::sync::mpsc::channel();
    let (drop_tx, drop_rx) = std::sync::mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let l: picocache_engine::Lease = take.recv().unwrap();
        drop_rx.recv().unwrap();
        drop(l);
        dropped_tx.send(()).unwrap();
    });
    give.send(lease).unwrap();
    assert!(ns.lease(b"k", Duration::from_millis(20)).unwrap().is_none());
    let other = ns.lease(b"other", Duration::ZERO).unwrap();
    assert!(other.is_some(), "another key of the first thread");
    drop_tx.send(()).unwrap();
    dropped_rx.recv().unwrap();
    assert!(ns.lease(b"k", Duration::ZERO).unwrap().is_some());
    t.join().unwrap();
}

/// Leases one thread holds at once share one descriptor (a recursion 500
/// levels deep held 500, and a low `ulimit -n` failed the user's own
/// `open`), still exclude other threads, and the thread itself: a key it
/// holds is refused to it again (its lease may have moved to another
/// thread; adversarial round 25), and stays locked until released.
#[test]
fn nested_leases_of_one_thread_share_a_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("l", Limits::default()).unwrap();
    let _warm = ns.lease(b"warm", Duration::from_millis(10)).unwrap();
    let before = open_fds();
    let held: Vec<_> = (0..300u32)
        .map(|i| {
            ns.lease(&i.to_le_bytes(), Duration::from_millis(10))
                .unwrap()
                .unwrap()
        })
        .collect();
    let during = open_fds();
    assert!(during <= before + 2, "{before} descriptors, then {during}");
    let other = |k: u32| {
        let ns = ns.clone();
        std::thread::spawn(move || {
            ns.lease(&k.to_le_bytes(), Duration::from_millis(30))
                .unwrap()
                .is_some()
        })
        .join()
        .unwrap()
    };
    assert!(!other(7), "another thread waits for a held key");
    // The same key again in this thread: refused while held.
    let again = ns
        .lease(&7u32.to_le_bytes(), Duration::from_millis(10))
        .unwrap();
    assert!(
        again.is_none(),
        "this thread's own held lease granted again"
    );
    assert!(!other(7), "still held by the first lease");
    drop(held);
    assert!(other(7), "free once released");
    assert!(other(8));
    assert!(ns
        .lease(&7u32.to_le_bytes(), Duration::ZERO)
        .unwrap()
        .is_some());
}

#[test]
fn durable_group_commit_from_many_threads() {
    use picocache_engine::Durability;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts().durability(Durability::PowerLoss)).unwrap();
    let ns = s.namespace("d", Limits::default()).unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    ns.put(&(t * 1000 + i).to_le_bytes(), &i.to_le_bytes())
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(ns);
    drop(s);
    // Simulate a reboot: the index is not trusted, the log must hold everything.
    let mut o = opts();
    o = o.boot_id(12345);
    let s = Store::open(dir.path(), o).unwrap();
    let ns = s.namespace("d", Limits::default()).unwrap();
    for t in 0..4u32 {
        for i in 0..50u32 {
            assert_eq!(
                ns.get(&(t * 1000 + i).to_le_bytes()).unwrap(),
                Some(i.to_le_bytes().to_vec())
            );
        }
    }
}

#[test]
fn frequent_compaction_keeps_segment_count_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts().segment_size(64 << 10)).unwrap();
    let ns = s.namespace("c", Limits::maxsize(Some(150))).unwrap();
    for i in 0..3000u32 {
        ns.put(&(i % 200).to_le_bytes(), &[i as u8; 100]).unwrap();
        if i % 50 == 0 {
            s.compact().unwrap();
            let st = s.stats().unwrap();
            assert!(st.segments < 20, "after {i} puts: {st:?}");
        }
    }
}

/// Evictions leave dead PUTs that compaction turns into tombstones while an
/// older PUT of the key may survive elsewhere; once no segment can hold one,
/// the tombstones go. A churning LRU namespace beside long-lived entries
/// (which keep their segment's oldest data alive) must not grow the log
/// without bound, and evicted keys must not come back after a rebuild.
#[test]
fn tombstones_do_not_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts().segment_size(1 << 16)).unwrap();
    let hot = s.namespace("hot", Limits::default()).unwrap();
    for i in 0..50u32 {
        hot.put(&i.to_le_bytes(), &[7u8; 64]).unwrap();
    }
    let lru = s.namespace("lru", Limits::maxsize(Some(16))).unwrap();
    let mut max_records = 0;
    for round in 0..6u32 {
        for i in 0..5000u32 {
            // Each key is written twice (an older PUT), then evicted.
            let k = (round * 5000 + i).to_le_bytes();
            lru.put(&k, &[1u8; 80]).unwrap();
            lru.put(&k, &[2u8; 80]).unwrap();
        }
        s.compact().unwrap();
        s.compact().unwrap();
        let rep = s.verify().unwrap();
        assert!(rep.is_ok(), "{rep:?}");
        max_records = max_records.max(rep.records);
    }
    // 30,000 evicted keys; what remains is the live entries, the records
    // of the active segment and a bounded number of tombstones.
    let rep = s.verify().unwrap();
    println!(
        "{} records after compaction, at most {max_records}",
        rep.records
    );
    assert!(
        rep.records < 3000,
        "{} records after compaction (at most {max_records} seen)",
        rep.records
    );
    s.rebuild_index().unwrap();
    for round in 0..6u32 {
        for i in 0..5000u32 {
            let k = (round * 5000 + i).to_le_bytes();
            if let Some(v) = lru.get(&k).unwrap() {
                assert_eq!(
                    v,
                    vec![2u8; 80],
                    "an evicted key came back with an older value"
                );
            }
        }
    }
    for i in 0..50u32 {
        assert_eq!(hot.get(&i.to_le_bytes()).unwrap(), Some(vec![7u8; 64]));
    }
}

/// Expired entries are swept: `stats` stops counting them, they make room
/// before a live entry is evicted, and compaction reclaims their records.
#[test]
fn expired_entries_are_swept_and_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts().segment_size(1 << 16)).unwrap();
    let short = Limits {
        ttl: Some(Duration::from_millis(100)),
        ..Limits::default()
    };
    let t = s.namespace("t", short).unwrap();
    let keep = s.namespace("keep", Limits::default()).unwrap();
    for i in 0..3000u32 {
        t.put(&i.to_le_bytes(), &[1u8; 100]).unwrap();
        keep.put(&i.to_le_bytes(), &[2u8; 20]).unwrap();
    }
    t.put_with_ttl(b"long", b"v", Some(Duration::from_secs(3600)))
        .unwrap();
    // Every short entry has expired 100 ms after the last put.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(t.stats().unwrap().entries, 1, "expired entries not counted");
    let before = s.stats().unwrap();
    // The first pass leaves tombstones for the expired keys while older
    // segments still hold old PUTs; the second collects them.
    s.compact().unwrap();
    s.compact().unwrap();
    let after = s.stats().unwrap();
    assert!(
        after.log_bytes < before.log_bytes / 2,
        "expired records reclaimed: {before:?} -> {after:?}"
    );
    assert_eq!(t.get(b"long").unwrap().as_deref(), Some(&b"v"[..]));
    for i in 0..3000u32 {
        assert_eq!(t.get(&i.to_le_bytes()).unwrap(), None);
        assert_eq!(keep.get(&i.to_le_bytes()).unwrap(), Some(vec![2u8; 20]));
    }
    assert!(s.verify().unwrap().is_ok());

    // An expired entry makes room; the live one stays.
    let m = s.namespace("room", Limits::maxsize(Some(2))).unwrap();
    m.put(b"live", b"1").unwrap();
    m.put_with_ttl(b"gone", b"2", Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    m.put(b"new", b"3").unwrap();
    assert_eq!(m.get(b"live").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(m.get(b"new").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(m.stats().unwrap().evictions, 0, "nothing live evicted");
}

/// `hit_located` answers true exactly while the key's live record is the one
/// the lookup found: through index growth (same lineage), never after an
/// overwrite, removal, eviction, clear, expiry, compaction or rebuild.
#[test]
fn located_tokens_follow_the_live_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts().segment_size(64 << 10)).unwrap();
    let ns = s.namespace("a", Limits::maxsize(Some(100_000))).unwrap();
    let loc = |k: &[u8]| ns.get_located(k, |v, at| (v.to_vec(), at)).unwrap();
    let hit = |k: &[u8], at| ns.hit_located(ns.key_hash(k), at).unwrap();

    ns.put(b"k", b"v1").unwrap();
    let (v, at) = loc(b"k").unwrap();
    assert_eq!(v, b"v1");
    let hits = ns.stats().unwrap().hits;
    assert!(hit(b"k", &at));
    assert_eq!(ns.stats().unwrap().hits, hits + 1, "a located hit counts");
    // Another key's hash never validates the token.
    assert!(!hit(b"other", &at));
    // A peek counts nothing and gives the same token.
    let (_, at2) = ns
        .peek_located(b"k", |v, at| (v.to_vec(), at))
        .unwrap()
        .unwrap();
    assert_eq!(at, at2);
    assert_eq!(ns.stats().unwrap().hits, hits + 1);

    // Index growth: thousands of new keys; the token stays good.
    for i in 0..5000u32 {
        ns.put(&i.to_le_bytes(), &[7; 50]).unwrap();
    }
    assert!(hit(b"k", &at), "index growth keeps locations");

    // Overwrite.
    ns.put(b"k", b"v2").unwrap();
    assert!(!hit(b"k", &at));
    let (v, at) = loc(b"k").unwrap();
    assert_eq!(v, b"v2");
    // Remove.
    ns.remove(b"k").unwrap();
    assert!(!hit(b"k", &at));
    // Clear.
    ns.put(b"k", b"v3").unwrap();
    let (_, at) = loc(b"k").unwrap();
    ns.clear().unwrap();
    assert!(!hit(b"k", &at));

    // Eviction.
    let small = s.namespace("small", Limits::maxsize(Some(2))).unwrap();
    small.put(b"x", b"1").unwrap();
    let at = small.get_located(b"x", |_, at| at).unwrap().unwrap();
    small.put(b"y", b"2").unwrap();
    small.put(b"z", b"3").unwrap();
    assert!(!small.hit_located(small.key_hash(b"x"), &at).unwrap());

    // Expiry.
    let ttl = s
        .namespace(
            "ttl",
            Limits {
                ttl: Some(Duration::from_millis(50)),
                ..Limits::default()
            },
        )
        .unwrap();
    ttl.put(b"t", b"1").unwrap();
    let at = ttl.get_located(b"t", |_, at| at).unwrap().unwrap();
    assert!(ttl.hit_located(ttl.key_hash(b"t"), &at).unwrap());
    std::thread::sleep(Duration::from_millis(80));
    assert!(!ttl.hit_located(ttl.key_hash(b"t"), &at).unwrap());

    // Compaction moves the record: the token is stale, the value unchanged.
    ns.put(b"c", b"moved").unwrap();
    let (_, at) = loc(b"c").unwrap();
    for i in 0..5000u32 {
        ns.remove(&i.to_le_bytes()).unwrap();
    }
    for i in 0..2000u32 {
        ns.put(&(i + 10_000).to_le_bytes(), &[1; 50]).unwrap();
    }
    s.compact().unwrap();
    if !hit(b"c", &at) {
        assert_eq!(loc(b"c").unwrap().0, b"moved");
    }
    let (_, at) = loc(b"c").unwrap();
    assert!(hit(b"c", &at));
    // A rebuild from the log starts a new lineage.
    s.rebuild_index().unwrap();
    assert!(!hit(b"c", &at));
    assert_eq!(loc(b"c").unwrap().0, b"moved");
}
