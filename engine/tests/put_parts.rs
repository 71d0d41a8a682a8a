//! `Namespace::put_parts` (issue 18): a value given in parts is stored as the
//! record of the joined value: read back, kept across a reopen and an index
//! rebuild from the log, compacted, counted in the byte limit, for odd
//! sizes (no part, empty parts, one part, many, sizes that are not multiples
//! of 8, a value larger than a segment).

use picocache_engine::{Limits, Options, Store};

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn cases() -> Vec<(String, Vec<Vec<u8>>)> {
    let big = pattern(3 << 20, 7);
    vec![
        ("no part".into(), vec![]),
        ("one empty part".into(), vec![vec![]]),
        ("empty parts".into(), vec![vec![], vec![], vec![]]),
        ("one byte".into(), vec![vec![42]]),
        ("one part".into(), vec![pattern(1001, 1)]),
        (
            "seal head then value".into(),
            vec![pattern(21, 2), pattern(65_536 + 3, 3)],
        ),
        (
            "many odd parts".into(),
            (0..100).map(|i| pattern(i * 13 % 17, i as u8)).collect(),
        ),
        (
            "larger than a segment".into(),
            vec![big[..5].to_vec(), big[5..].to_vec(), vec![9; 3]],
        ),
    ]
}

#[test]
fn parts_read_back_as_the_joined_value_and_survive_reopen_rebuild_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options::default().segment_size(1 << 20);
    let all = cases();
    {
        let store = Store::open(dir.path(), opts()).unwrap();
        let ns = store.namespace("f", Limits::default()).unwrap();
        for (name, parts) in &all {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            assert!(
                ns.put_parts(name.as_bytes(), &refs, None).unwrap(),
                "{name}"
            );
            assert_eq!(
                ns.get(name.as_bytes()).unwrap().unwrap(),
                parts.concat(),
                "{name}"
            );
        }
        // An overwrite by parts replaces a plain put, and the reverse.
        ns.put(b"over", b"plain").unwrap();
        ns.put_parts(b"over", &[b"by ", b"parts"], None).unwrap();
        assert_eq!(ns.get(b"over").unwrap().unwrap(), b"by parts");
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }
    let store = Store::open(dir.path(), opts()).unwrap();
    let ns = store.namespace("f", Limits::default()).unwrap();
    let check = |ns: &picocache_engine::Namespace| {
        for (name, parts) in &all {
            assert_eq!(
                ns.get(name.as_bytes()).unwrap().unwrap(),
                parts.concat(),
                "{name}"
            );
        }
        assert_eq!(ns.get(b"over").unwrap().unwrap(), b"by parts");
    };
    check(&ns);
    store.rebuild_index().unwrap();
    check(&ns);
    store.compact().unwrap();
    check(&ns);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn parts_obey_the_limits_and_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    // A record over max_bytes is not stored; maxsize 0 stores nothing.
    let small = store
        .namespace(
            "small",
            Limits {
                max_bytes: Some(256),
                ..Limits::default()
            },
        )
        .unwrap();
    let v = pattern(300, 4);
    assert!(!small
        .put_parts(b"k", &[&v[..100], &v[100..]], None)
        .unwrap());
    assert!(small.get(b"k").unwrap().is_none());
    assert!(small
        .put_parts(b"k", &[&v[..10], &v[10..20]], None)
        .unwrap());
    assert_eq!(small.get(b"k").unwrap().unwrap(), &v[..20]);
    assert_eq!(small.stats().unwrap().entries, 1);
    let none = store
        .namespace(
            "none",
            Limits {
                maxsize: Some(0),
                ..Limits::default()
            },
        )
        .unwrap();
    assert!(!none.put_parts(b"k", &[b"v"], None).unwrap());
    // A TTL given to the put.
    let ns = store.namespace("ttl", Limits::default()).unwrap();
    ns.put_parts(
        b"k",
        &[b"a", b"b"],
        Some(std::time::Duration::from_millis(30)),
    )
    .unwrap();
    assert_eq!(ns.get(b"k").unwrap().unwrap(), b"ab");
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert!(ns.get(b"k").unwrap().is_none());
}

#[test]
fn a_key_or_value_too_large_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let ns = store.namespace("f", Limits::default()).unwrap();
    let key = vec![0u8; (1 << 20) + 1];
    assert!(ns.put_parts(&key, &[b"v"], None).is_err());
    let half = vec![0u8; 1 << 29];
    let err = ns.put_parts(b"k", &[&half, &half, b"x"], None).unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    assert!(ns.get(b"k").unwrap().is_none());
}
