//! Tests of the base builder and reader: every key read back with its exact
//! value and fields, absent keys absent (against a `BTreeMap` model, and a
//! proptest), carries within `reach`, keys colliding in one bucket, heap
//! cells, LRU sections, bad input to the builder, failed writes, and every
//! single-byte flip and truncation of a small base (a miss, the right value
//! or `Error::Corrupted`; never a wrong value, never a panic).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::build::{BaseBuilder, BaseParams, BuildReport, NewCell, Sizing};
use super::Base;
use crate::error::Error;
use crate::format::v2::{
    base_file_name, bucket_offset, home_of, DirHead, LruSection, NsRow, BASE_HEADER_LEN, MAX_REACH,
};
use crate::hash::key_hash;
use crate::io::{FaultIo, Io, RealIo};

/// (ns, key)
type Key = (u16, Vec<u8>);
/// (value, expiry, LRU ordinal)
type Val = (Vec<u8>, Option<u64>, Option<u32>);
type Model = BTreeMap<Key, Val>;
/// A generated entry: ns, key, value, expiry.
type Gen = (u16, Vec<u8>, Vec<u8>, Option<u64>);

fn rows() -> Vec<NsRow> {
    [1u16, 2, 3]
        .iter()
        .map(|&id| NsRow {
            id,
            name: format!("ns{id}").into_bytes(),
            maxsize: u64::MAX,
            max_bytes: u64::MAX,
            ..Default::default()
        })
        .collect()
}

/// The model's entries in key-hash order.
fn sorted(m: &Model) -> Vec<(&Key, &Val)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by_key(|((ns, k), _)| key_hash(*ns as u32, k));
    v
}

/// Builds the model's base as `dir/base-00000001` through `io`, with LRU
/// sections `lru`, and `sizing` (default: the model's own).
fn build_with(
    io: &dyn Io,
    dir: &Path,
    m: &Model,
    lru: &[(u16, u32)],
    sizing: Option<Sizing>,
) -> crate::Result<(PathBuf, BuildReport)> {
    let path = dir.join(base_file_name(1));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let mut s = Sizing::default();
    for ((_, k), (v, x, e)) in m {
        s.add(k.len(), v.len(), e.is_some(), x.is_some());
    }
    let params = BaseParams {
        id: 1,
        base_seq: 77,
        absorbed: 3,
        upgraded_from: 0,
    };
    let mut b = BaseBuilder::new(io, &file, params, sizing.unwrap_or(s), rows(), lru)?;
    for ((ns, k), (v, x, e)) in sorted(m) {
        b.push(NewCell {
            ns: *ns,
            key: k,
            value: v,
            expiry_ms: *x,
            entry: *e,
        })?;
    }
    Ok((path, b.finish()?))
}

fn build(dir: &Path, m: &Model) -> (Base, BuildReport) {
    let (path, r) = build_with(&RealIo, dir, m, &[], None).unwrap();
    (Base::open(&path, Some(1)).unwrap(), r)
}

/// Every key of `m` reads back exactly (value, expiry, ordinal), inside
/// `home ..= home + reach`; `absent` keys are misses.
fn check(base: &Base, m: &Model, absent: &[(u16, Vec<u8>)]) {
    let mut buf = Vec::new();
    let homes = base.header().homes;
    for ((ns, k), (v, x, e)) in m {
        let f = base
            .get(*ns, k, &mut buf)
            .unwrap_or_else(|| panic!("key {k:?} of ns {ns} missing"));
        assert_eq!(&buf[f.value.clone()], &v[..]);
        assert_eq!((f.expiry_ms, f.entry), (*x, *e));
        let home = home_of(key_hash(*ns as u32, k), homes);
        let mut d = [0u8; 4];
        base.map.copy_out(bucket_offset(home) as usize, &mut d);
        let reach = DirHead::parse(&d).reach;
        assert!(reach <= MAX_REACH);
        assert!(
            (home..=home + reach).contains(&f.bucket),
            "cell in {} outside {home} + {reach}",
            f.bucket
        );
    }
    for (ns, k) in absent {
        if !m.contains_key(&(*ns, k.clone())) {
            assert_eq!(base.get(*ns, k, &mut buf), None, "absent {k:?} found");
        }
    }
}

fn key_of(i: u64) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

#[test]
fn reads_back_every_key_and_misses_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::new();
    for i in 0..3000u64 {
        let vlen = match i % 7 {
            0 => 0,
            1 => 2000, // a heap cell
            _ => (i % 300) as usize,
        };
        let exp = (i % 5 == 0).then_some(1_700_000_000_000 + i);
        m.insert(
            (1 + (i % 2) as u16, key_of(i)),
            (vec![i as u8; vlen], exp, None),
        );
    }
    m.insert((3, vec![b'k'; 300]), (b"long key".to_vec(), None, None)); // heap
    m.insert((3, Vec::new()), (b"empty key".to_vec(), None, None));
    let (base, r) = build(dir.path(), &m);
    let absent: Vec<_> = (0..3000u64)
        .map(|i| (2 - (i % 2) as u16, key_of(i)))
        .chain((5000..6000).map(|i| (1, key_of(i))))
        .collect();
    check(&base, &m, &absent);
    let h = base.header();
    assert_eq!((h.id, h.base_seq, h.absorbed, h.cells), (1, 77, 3, 3002));
    assert!(h.heap_len > 0 && r.displaced > 0);
    let ns = base.namespaces().unwrap();
    assert_eq!(ns.iter().map(|r| r.entries).sum::<u64>(), 3002);
    assert_eq!(ns[2].entries, 2);
    assert!(base.lru_sections().unwrap().is_empty());
    let len = std::fs::metadata(dir.path().join(base_file_name(1)))
        .unwrap()
        .len();
    assert_eq!(len, h.file_len);
}

#[test]
fn an_empty_base_misses_and_a_base_is_shared_across_threads() {
    fn shared<T: Send + Sync>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let (base, r) = build(dir.path(), &Model::new());
    shared(&base);
    assert_eq!((r.header.homes, r.header.stored, r.header.cells), (1, 1, 0));
    assert_eq!(base.get(1, b"k", &mut Vec::new()), None);
    assert_eq!(base.namespaces().unwrap().len(), 3);
}

#[test]
fn open_checks_the_id_and_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::new();
    m.insert((1, b"k".to_vec()), (b"v".to_vec(), None, None));
    let (path, _) = build_with(&RealIo, dir.path(), &m, &[], None).unwrap();
    let r = Base::open(&path, Some(2));
    assert!(
        matches!(r, Err(Error::Corrupted { offset: 16, .. })),
        "{r:?}"
    );
    let mut h = std::fs::read(&path).unwrap()[..BASE_HEADER_LEN].to_vec();
    h[8] = 3;
    h[12..16].fill(0);
    let sum = crate::format::v2::sum32(&h);
    h[12..16].copy_from_slice(&sum.to_le_bytes());
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&h, 0)
        .unwrap();
    let r = Base::open(&path, Some(1));
    assert!(
        matches!(
            r,
            Err(Error::Version {
                expected: 2,
                got: 3,
                ..
            })
        ),
        "{r:?}"
    );
}

/// `n` keys of ns 1 (values of `vlen` bytes) whose home is bucket 0 among
/// the homes the builder sizes for `n + extra` such entries.
fn colliding(n: usize, extra: usize, vlen: usize) -> (Model, u64) {
    let mut s = Sizing::default();
    for _ in 0..n + extra {
        s.add(12, vlen, false, false);
    }
    let homes = s.homes();
    let mut m = Model::new();
    let mut i = 0u64;
    while m.len() < n {
        let k = key_of(i);
        if home_of(key_hash(1, &k), homes) == 0 {
            m.insert((1, k), (vec![7; vlen], None, None));
        }
        i += 1;
    }
    (m, homes)
}

#[test]
fn many_keys_colliding_in_one_bucket_are_carried_within_reach() {
    let dir = tempfile::tempdir().unwrap();
    // 300 entries of 129 bytes in home 0: about ten buckets' worth.
    let (mut m, homes) = colliding(300, 0, 100);
    assert!(homes > 5);
    let (base, r) = build(dir.path(), &m);
    assert_eq!(base.header().homes, homes);
    assert!(r.longest_carry >= 8, "{r:?}");
    check(&base, &m, &[(1, key_of(1 << 40))]);
    // Small cells: the 64-cell limit, not the bytes, carries them.
    let (small, _) = colliding(500, 0, 0);
    let (base, r) = build(dir.path(), &small);
    assert!(r.longest_carry >= 7, "{r:?}");
    check(&base, &small, &[]);
    // Both, with homes sized for all: the two groups meet in bucket 0.
    m.extend(small);
    let (base, _) = build(dir.path(), &m);
    check(&base, &m, &[]);
}

#[test]
fn a_carry_beyond_255_buckets_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::new();
    for i in 0..20_000u64 {
        m.insert((1, key_of(i)), (Vec::new(), None, None));
    }
    let lie = Sizing {
        cells: 1,
        slot_bytes: 10,
    };
    let r = build_with(&RealIo, dir.path(), &m, &[], Some(lie));
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}

#[test]
fn lru_sections_locate_their_cells() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::new();
    for i in 0..500u64 {
        let (ns, e) = if i < 200 {
            (1, Some(i as u32))
        } else if i < 300 {
            (2, Some(i as u32))
        } else {
            (3, None)
        };
        m.insert((ns, key_of(i)), (vec![1; 50], None, e));
    }
    let (path, _) = build_with(&RealIo, dir.path(), &m, &[(1, 200), (2, 100)], None).unwrap();
    let base = Base::open(&path, Some(1)).unwrap();
    check(&base, &m, &[]);
    let s = base.lru_sections().unwrap();
    assert_eq!((s.len(), s[0].ns, s[1].ns), (2, 1, 2));
    assert_eq!((s[0].locs.len(), s[1].locs.len()), (200, 100));
    let mut buf = Vec::new();
    for ((ns, k), (_, _, e)) in &m {
        let f = base.get(*ns, k, &mut buf).unwrap();
        if let Some(e) = e {
            let loc = [&s[0].locs[..], &s[1].locs[..]].concat()[*e as usize];
            assert_eq!(loc, (f.bucket << 6 | f.slot as u64) as u32);
        }
    }
    assert_eq!(base.header().lru_cells, 300);
}

#[test]
fn the_builder_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let f = File::create(dir.path().join("x")).unwrap();
    let p = BaseParams::default();
    let s = Sizing {
        cells: 2,
        slot_bytes: 100,
    };
    let new =
        |lru: &'static [(u16, u32)]| BaseBuilder::new(&RealIo, &f, p, s, rows(), lru).unwrap();
    let cell = |ns, key, entry| NewCell {
        ns,
        key,
        value: b"v",
        expiry_ms: None,
        entry,
    };
    let (a, b) = (b"a".as_slice(), b"b".as_slice());
    let (lo, hi) = if key_hash(1, a) < key_hash(1, b) {
        (a, b)
    } else {
        (b, a)
    };
    let mut bl = new(&[]);
    bl.push(cell(1, hi, None)).unwrap();
    assert!(bl.push(cell(1, lo, None)).is_err(), "out of order");
    assert!(
        new(&[]).push(cell(9, a, None)).is_err(),
        "unknown namespace"
    );
    assert!(
        new(&[]).push(cell(1, a, Some(0))).is_err(),
        "ordinal past the sections"
    );
    assert!(
        new(&[(2, 1)]).push(cell(1, a, Some(0))).is_err(),
        "another namespace's ordinal"
    );
    let mut bl = new(&[(1, 2)]);
    bl.push(cell(1, lo, Some(1))).unwrap();
    assert!(bl.push(cell(1, hi, Some(1))).is_err(), "repeated ordinal");
    let mut bl = new(&[(1, 2)]);
    bl.push(cell(1, a, Some(1))).unwrap();
    assert!(bl.finish().is_err(), "an ordinal without a cell");
}

#[test]
fn a_failed_write_fails_the_build_and_the_header_comes_last() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = colliding(400, 2000, 100);
    let io = FaultIo::new(None);
    build_with(&io, dir.path(), &m, &[], None).unwrap();
    let ops = io.ops();
    assert!(ops >= 4, "{ops} writes");
    for k in 0..ops {
        let io = FaultIo::new(Some(k));
        let r = build_with(&io, dir.path(), &m, &[], None);
        assert!(matches!(r, Err(Error::Io(_))), "countdown {k}: {r:?}");
        let r = Base::open(&dir.path().join(base_file_name(1)), Some(1));
        assert!(
            matches!(r, Err(Error::Corrupted { .. })),
            "countdown {k}: {r:?}"
        );
    }
}

/// A small base with carries, a heap cell, expiries and an LRU section.
fn small_model() -> Model {
    let (mut m, _) = colliding(40, 30, 60);
    for i in 0..30u64 {
        let e = (i < 10).then_some(i as u32);
        let x = (i % 3 == 0).then_some(i);
        m.insert((2, key_of(i)), (vec![i as u8; (i * 7) as usize], x, e));
    }
    m.insert((3, b"big".to_vec()), (vec![9; 1500], None, None));
    m
}

/// Opens the damaged base at `path` and uses it: every lookup is a miss or
/// the right answer, sections are right or `Corrupted`.
fn use_damaged(path: &Path, m: &Model, rows_ok: &[NsRow], lru_ok: &[LruSection]) -> usize {
    let base = match Base::open(path, Some(1)) {
        Ok(b) => b,
        Err(Error::Corrupted { .. } | Error::Version { .. }) => return 0,
        Err(e) => panic!("unexpected error {e}"),
    };
    let mut buf = Vec::new();
    let mut hits = 0;
    for ((ns, k), (v, x, e)) in m {
        if let Some(f) = base.get(*ns, k, &mut buf) {
            assert_eq!(
                (&buf[f.value.clone()], f.expiry_ms, f.entry),
                (&v[..], *x, *e)
            );
            hits += 1;
        }
        assert_eq!(
            base.get(*ns, &[k.as_slice(), b"?"].concat(), &mut buf),
            None
        );
    }
    match base.namespaces() {
        Ok(r) => assert_eq!(r, rows_ok),
        Err(e) => assert!(matches!(e, Error::Corrupted { .. }), "{e}"),
    }
    match base.lru_sections() {
        Ok(s) => assert_eq!(s, lru_ok),
        Err(e) => assert!(matches!(e, Error::Corrupted { .. }), "{e}"),
    }
    hits
}

#[test]
fn every_flip_and_truncation_is_a_miss_the_right_value_or_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model();
    let (path, r) = build_with(&RealIo, dir.path(), &m, &[(2, 10)], None).unwrap();
    assert!(r.displaced > 0 && r.header.heap_len > 0, "{r:?}");
    let bytes = std::fs::read(&path).unwrap();
    let fresh = Base::open(&path, Some(1)).unwrap();
    let (rows_ok, lru_ok) = (fresh.namespaces().unwrap(), fresh.lru_sections().unwrap());
    assert_eq!(lru_ok[0].locs.len(), 10);
    drop(fresh);
    assert_eq!(use_damaged(&path, &m, &rows_ok, &lru_ok), m.len());
    let f = File::options().write(true).open(&path).unwrap();
    let mut partial = 0;
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0xff] {
            f.write_all_at(&[bytes[at] ^ flip], at as u64).unwrap();
            let hits = use_damaged(&path, &m, &rows_ok, &lru_ok);
            partial += (hits > 0 && hits < m.len()) as usize;
            f.write_all_at(&bytes[at..at + 1], at as u64).unwrap();
        }
    }
    assert!(partial > 0, "no flip cost only some cells");
    for len in 0..bytes.len() as u64 {
        f.set_len(len).unwrap();
        let r = Base::open(&path, Some(1));
        assert!(
            matches!(r, Err(Error::Corrupted { .. })),
            "length {len}: {r:?}"
        );
        f.set_len(bytes.len() as u64).unwrap();
        f.write_all_at(&bytes, 0).unwrap();
    }
    // Truncated by another program while mapped: lost pages read as zeros.
    for len in (0..bytes.len() as u64).step_by(BASE_HEADER_LEN) {
        let base = Base::open(&path, Some(1)).unwrap();
        f.set_len(len).unwrap();
        let mut buf = Vec::new();
        for ((ns, k), (v, _, _)) in &m {
            if let Some(found) = base.get(*ns, k, &mut buf) {
                assert_eq!(&buf[found.value], &v[..]);
            }
        }
        drop(base);
        f.set_len(bytes.len() as u64).unwrap();
        f.write_all_at(&bytes, 0).unwrap();
    }
}

fn entries() -> impl Strategy<Value = Vec<Gen>> {
    let key = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..24),
        1 => proptest::collection::vec(any::<u8>(), 250..300),
    ];
    let value = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..40),
        2 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => proptest::collection::vec(any::<u8>(), 900..1300),
    ];
    proptest::collection::vec(
        (1u16..=3, key, value, proptest::option::of(any::<u64>())),
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// `squeeze` > 1 sizes the base for a fraction of its cells: fewer
    /// homes, long carries.
    #[test]
    fn a_built_base_matches_its_model(es in entries(), probes in proptest::collection::vec(
        (1u16..=3, proptest::collection::vec(any::<u8>(), 0..24)), 0..100), squeeze in 1u64..6) {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Model::new();
        for (ns, k, v, x) in es {
            m.insert((ns, k), (v, x, None));
        }
        let mut s = Sizing::default();
        for ((_, k), (v, x, _)) in &m {
            s.add(k.len(), v.len(), false, x.is_some());
        }
        let s = Sizing { cells: s.cells / squeeze, slot_bytes: s.slot_bytes / squeeze };
        let (path, r) = build_with(&RealIo, dir.path(), &m, &[], Some(s)).unwrap();
        let base = Base::open(&path, Some(1)).unwrap();
        prop_assert_eq!(r.header.cells, m.len() as u64);
        prop_assert_eq!(r.header.homes, s.homes());
        check(&base, &m, &probes);
    }
}
