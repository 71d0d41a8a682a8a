//! `Namespace::put_located` and `put_parts_located` (issue 16): the token a
//! put returns is the one a peek of the key returns afterwards, confirmed by
//! `hit_located` and by a `Watch`, and stale once the record is no longer
//! the key's live entry (overwrite, removal, clear, eviction, expiry,
//! compaction, rebuild). `None` exactly where `put` answers false.

use std::time::{Duration, Instant};

use picocache_engine::{Limits, Located, Namespace, Options, Store};

fn opts() -> Options {
    Options::default().background_compaction(false)
}

fn peek(ns: &Namespace, key: &[u8]) -> Option<(Vec<u8>, Located)> {
    ns.peek_located(key, |v, at| (v.to_vec(), at)).unwrap()
}

fn hit(ns: &Namespace, key: &[u8], at: &Located) -> bool {
    ns.hit_located(ns.key_hash(key), at).unwrap()
}

#[test]
fn the_token_of_a_put_is_the_peeks_and_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("a", Limits::default()).unwrap();

    let at = ns.put_located(b"k", b"v1", None).unwrap().unwrap();
    assert_eq!(peek(&ns, b"k"), Some((b"v1".to_vec(), at)));
    let parts = ns
        .put_parts_located(b"p", &[b"head:", b"", b"value"], None)
        .unwrap()
        .unwrap();
    assert_eq!(peek(&ns, b"p"), Some((b"head:value".to_vec(), parts)));
    // An overwrite returns the new record's token, also the peek's.
    let at2 = ns.put_located(b"p", b"plain", None).unwrap().unwrap();
    assert_ne!(at2, parts);
    assert_eq!(peek(&ns, b"p"), Some((b"plain".to_vec(), at2)));
    assert!(!hit(&ns, b"p", &parts));

    // Confirmed (and counted as a hit) by hit_located and by a watch; the
    // put and the peeks counted nothing.
    assert_eq!(ns.stats().unwrap().hits, 0);
    assert!(hit(&ns, b"k", &at));
    let watch = ns.watch().unwrap();
    assert!(watch.hit(&at));
    assert!(watch.hit(&at2));
    assert_eq!(ns.stats().unwrap().hits, 3);
    assert_eq!(ns.stats().unwrap().misses, 0);

    // A put on the current index keeps an older watch confirming it.
    let at3 = ns.put_located(b"n", b"new", None).unwrap().unwrap();
    assert!(watch.current());
    assert!(watch.hit(&at3));

    // Index growth (a copy into a larger file, same lineage) keeps it.
    for i in 0..5000u32 {
        ns.put(&i.to_le_bytes(), &[7; 50]).unwrap();
    }
    assert!(hit(&ns, b"k", &at), "index growth keeps locations");
    assert!(ns.watch().unwrap().hit(&at));
    assert_eq!(peek(&ns, b"k").unwrap().1, at);
}

#[test]
fn the_token_goes_stale_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts().segment_size(64 << 10)).unwrap();
    let ns = s.namespace("a", Limits::default()).unwrap();
    let stale = |key: &[u8], at: &Located| {
        let watch = ns.watch().unwrap();
        !hit(&ns, key, at) && !watch.hit(at)
    };

    // Overwrite, by a plain put and by parts.
    let at = ns.put_located(b"k", b"v1", None).unwrap().unwrap();
    ns.put(b"k", b"v2").unwrap();
    assert!(stale(b"k", &at));
    let at = ns.put_located(b"k", b"v3", None).unwrap().unwrap();
    ns.put_parts(b"k", &[b"v", b"4"], None).unwrap();
    assert!(stale(b"k", &at));
    // Removal.
    let at = ns.put_located(b"k", b"v5", None).unwrap().unwrap();
    assert!(ns.remove(b"k").unwrap());
    assert!(stale(b"k", &at));
    // Clear.
    let at = ns.put_parts_located(b"k", &[b"v6"], None).unwrap().unwrap();
    ns.clear().unwrap();
    assert!(stale(b"k", &at));
    // A put of the same value again is a new record.
    let at = ns.put_located(b"k", b"same", None).unwrap().unwrap();
    let again = ns.put_located(b"k", b"same", None).unwrap().unwrap();
    assert!(stale(b"k", &at));
    assert!(hit(&ns, b"k", &again));

    // Eviction.
    let small = s.namespace("small", Limits::maxsize(Some(2))).unwrap();
    let at = small.put_located(b"x", b"1", None).unwrap().unwrap();
    small.put(b"y", b"2").unwrap();
    small.put(b"z", b"3").unwrap();
    assert!(small.get(b"x").unwrap().is_none());
    assert!(!hit(&small, b"x", &at) && !small.watch().unwrap().hit(&at));

    // Compaction: a token of a record it moved no longer confirms; the
    // value reads back the same, under a new token.
    let at = ns.put_located(b"c", b"moved", None).unwrap().unwrap();
    for i in 0..5000u32 {
        ns.put(&i.to_le_bytes(), &[1; 50]).unwrap();
    }
    for i in 0..5000u32 {
        ns.remove(&i.to_le_bytes()).unwrap();
    }
    s.compact().unwrap();
    let (v, now) = peek(&ns, b"c").unwrap();
    assert_eq!(v, b"moved");
    assert_ne!(now, at, "compaction moved the record");
    assert!(stale(b"c", &at));
    assert!(hit(&ns, b"c", &now));

    // A rebuild from the log starts a new lineage.
    let at = ns.put_located(b"r", b"rebuilt", None).unwrap().unwrap();
    s.rebuild_index().unwrap();
    assert!(stale(b"r", &at));
    assert_eq!(peek(&ns, b"r").unwrap().0, b"rebuilt");
}

#[test]
fn a_token_with_a_ttl_stops_confirming_at_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let limits = Limits {
        ttl: Some(Duration::from_millis(300)),
        ..Limits::default()
    };
    let ns = s.namespace("ttl", limits).unwrap();
    let watch = ns.watch().unwrap();
    // The namespace's default TTL, an explicit one, and by parts.
    let t0 = Instant::now();
    let dflt = ns.put_located(b"d", b"1", None).unwrap().unwrap();
    let expl = ns
        .put_located(b"e", b"2", Some(Duration::from_millis(300)))
        .unwrap()
        .unwrap();
    let parts = ns
        .put_parts_located(b"p", &[b"3"], Some(Duration::from_millis(300)))
        .unwrap()
        .unwrap();
    let longer = ns
        .put_located(b"l", b"4", Some(Duration::from_secs(3600)))
        .unwrap()
        .unwrap();
    for (k, at) in [(&b"d"[..], &dflt), (b"e", &expl), (b"p", &parts)] {
        assert_eq!(peek(&ns, k).unwrap().1, *at);
        if t0.elapsed() < Duration::from_millis(250) {
            assert!(hit(&ns, k, at) && watch.hit(at), "live before its TTL");
        }
    }
    std::thread::sleep(Duration::from_millis(400));
    for (k, at) in [(&b"d"[..], &dflt), (b"e", &expl), (b"p", &parts)] {
        assert!(!hit(&ns, k, at) && !watch.hit(at), "expired");
        assert!(peek(&ns, k).is_none());
    }
    assert!(hit(&ns, b"l", &longer) && watch.hit(&longer));
}

#[test]
fn none_where_put_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    // maxsize 0: nothing is stored.
    let zero = s.namespace("zero", Limits::maxsize(Some(0))).unwrap();
    assert_eq!(zero.put_located(b"k", b"v", None).unwrap(), None);
    assert_eq!(zero.put_parts_located(b"k", &[b"v"], None).unwrap(), None);
    assert!(!zero.put(b"k", b"v").unwrap());
    assert!(peek(&zero, b"k").is_none());
    // A record larger than max_bytes is not stored; a smaller one is.
    let limits = Limits {
        max_bytes: Some(256),
        ..Limits::default()
    };
    let bytes = s.namespace("bytes", limits).unwrap();
    assert_eq!(bytes.put_located(b"k", &[0; 1000], None).unwrap(), None);
    assert_eq!(
        bytes
            .put_parts_located(b"k", &[&[0; 500], &[0; 500]], None)
            .unwrap(),
        None
    );
    assert!(!bytes.put_with_ttl(b"k", &[0; 1000], None).unwrap());
    assert!(peek(&bytes, b"k").is_none());
    let at = bytes.put_located(b"k", b"small", None).unwrap().unwrap();
    assert_eq!(peek(&bytes, b"k").unwrap().1, at);
    // An oversized overwrite stores nothing and leaves the old record live.
    assert_eq!(bytes.put_located(b"k", &[0; 1000], None).unwrap(), None);
    assert!(hit(&bytes, b"k", &at));
    // Keys and values over the engine's limits are errors, as for put.
    assert!(bytes
        .put_located(&vec![0; (1 << 20) + 1], b"v", None)
        .is_err());
}
