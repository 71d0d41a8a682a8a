//! What this build, the last of log version 1, does when it meets log
//! version 2 (FORMAT.md, "Step 2 in detail"): the facts the version-2
//! design relies on (refusals that write nothing) and the two hazards it
//! must avoid (a trusted index reads past a segment header; a trusted
//! version-1 index lets writes into a store an upgrade is converting).
//!
//! The version-2 bytes come from `format::v2::record`'s encoders. Once the
//! build writes log version 2 (build step 2), these cases are about the
//! previous build and must run against it (its engine as a renamed
//! dev-dependency), not against the new one.

use std::os::unix::fs::FileExt;
use std::path::Path;

use picocache_engine::format::v2::record as r2;
use picocache_engine::format::{self, hdr, kind, v1};
use picocache_engine::{Error, Limits, Options, Store};

fn opts() -> Options {
    Options::default().background_compaction(false)
}

/// A store with namespace "n" and the given puts, synced clean.
fn v1_store(dir: &Path, puts: &[(&[u8], &[u8])]) {
    let s = Store::open(dir, opts()).unwrap();
    let ns = s.namespace("n", Limits::default()).unwrap();
    for (k, v) in puts {
        ns.put(k, v).unwrap();
    }
    s.sync().unwrap();
}

/// The intact version-1 records of a segment image: (offset, header).
fn v1_records(seg: &[u8]) -> Vec<(usize, v1::RecordHeader)> {
    let mut out = Vec::new();
    let mut off = format::SEG_HEADER_LEN as usize;
    while off + v1::REC_HEADER_LEN <= seg.len() {
        let hb: [u8; v1::REC_HEADER_LEN] = seg[off..off + v1::REC_HEADER_LEN].try_into().unwrap();
        match v1::RecordHeader::parse(&hb) {
            Some(h)
                if off + h.body_len() <= seg.len()
                    && v1::record_crc_ok(&h, &seg[off..off + h.body_len()]) =>
            {
                out.push((off, h));
                off += h.size() as usize;
            }
            _ => off += 8,
        }
    }
    out
}

/// A version-2 segment image: the header, then `records`, zeros to 4 KiB.
fn v2_segment(id: u32, seq_base: u64, records: &[(u8, u64, &[u8], &[u8])]) -> Vec<u8> {
    let mut seg = r2::encode_segment_header(id, seq_base).to_vec();
    for &(k, seq, key, value) in records {
        r2::encode_record(&mut seg, k, 0, seq_base, seq, 0, key, value);
    }
    seg.resize(4096, 0);
    seg
}

/// Rewrites the index file's version (and its header crc).
fn set_index_version(dir: &Path, version: u32) {
    let path = dir.join("index");
    let mut idx = std::fs::read(&path).unwrap();
    idx[8..12].copy_from_slice(&version.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&idx[0..12]);
    h.update(&idx[16..64]);
    let crc = h.finalize();
    idx[12..16].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, idx).unwrap();
}

fn set_index_word(dir: &Path, at: usize, v: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("index"))
        .unwrap();
    f.write_at(&v.to_le_bytes(), at as u64).unwrap();
}

fn index_word(dir: &Path, at: usize) -> u64 {
    let idx = std::fs::read(dir.join("index")).unwrap();
    u64::from_le_bytes(idx[at..at + 8].try_into().unwrap())
}

fn is_version_2(r: &Result<Store, Error>) -> bool {
    matches!(r, Err(Error::Version { got: 2, .. }))
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_version_2_segment_without_an_index_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let limits = format::encode_limits(u64::MAX, u64::MAX, 0);
    let seg = v2_segment(
        1,
        1,
        &[
            (kind::NAMESPACE, 1, b"n", &limits),
            (kind::PUT, 2, b"a", b"1"),
        ],
    );
    let path = dir.path().join("seg-00000001.log");
    std::fs::write(&path, &seg).unwrap();
    let r = Store::open(dir.path(), opts());
    println!("open: {:?}", r.as_ref().err());
    assert!(is_version_2(&r));
    assert_eq!(std::fs::read(&path).unwrap(), seg, "segment untouched");
    assert_eq!(file_names(dir.path()), ["lock", "seg-00000001.log"]);
}

/// An index it does not trust (another index version, or an active offset
/// that is not a multiple of 8) makes it rebuild, and the rebuild meets
/// the version-2 header.
#[test]
fn an_untrusted_index_over_a_version_2_segment_is_refused() {
    for case in ["index version 3", "unaligned active offset"] {
        let dir = tempfile::tempdir().unwrap();
        v1_store(dir.path(), &[(b"a", b"1")]);
        let path = dir.path().join("seg-00000001.log");
        let mut seg = std::fs::read(&path).unwrap();
        seg[..64].copy_from_slice(&r2::encode_segment_header(1, 0));
        std::fs::write(&path, &seg).unwrap();
        if case == "index version 3" {
            set_index_version(dir.path(), 3);
        } else {
            let off = index_word(dir.path(), hdr::ACTIVE_OFF);
            set_index_word(dir.path(), hdr::ACTIVE_OFF, off + 3);
        }
        let before = std::fs::read(dir.path().join("index")).unwrap();
        let r = Store::open(dir.path(), opts());
        println!("{case}: {:?}", r.as_ref().err());
        assert!(is_version_2(&r), "{case}");
        let after = std::fs::read(dir.path().join("index")).unwrap();
        assert_eq!(after, before, "{case}: index untouched");
        assert_eq!(std::fs::read(&path).unwrap(), seg, "{case}");
    }
}

/// A process that has the store open, when another replaces the index by
/// one of version 3 (retiring its own) and adds a version-2 segment.
#[test]
fn a_live_handle_whose_index_is_replaced_by_version_3_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let ns = s.namespace("n", Limits::default()).unwrap();
    ns.put(b"a", b"1").unwrap();
    s.sync().unwrap();
    let seg = v2_segment(2, 10, &[(kind::PUT, 10, b"a", b"9")]);
    let seg_path = dir.path().join("seg-00000002.log");
    std::fs::write(&seg_path, &seg).unwrap();
    let new_index = dir.path().join("index.new");
    std::fs::copy(dir.path().join("index"), &new_index).unwrap();
    set_index_word(dir.path(), hdr::RETIRED, 1);
    std::fs::rename(&new_index, dir.path().join("index")).unwrap();
    set_index_version(dir.path(), 3);
    let got = ns.get(b"a");
    let put = ns.put(b"b", b"2");
    println!("get: {got:?}, put: {put:?}");
    assert!(matches!(got, Err(Error::Version { got: 2, .. })));
    assert!(matches!(put, Err(Error::Version { got: 2, .. })));
    assert_eq!(std::fs::read(&seg_path).unwrap(), seg, "segment untouched");
}

/// Hazard: a trusted index of version 2 is used without reading any segment
/// header. Reads of version-2 records miss (never a wrong value); writes go
/// into the version-2 segment as version-1 records, which a version-2 scan
/// does not see: a removal it made would be undone.
#[test]
fn hazard_a_trusted_version_2_index_is_used_past_a_version_2_header() {
    let dir = tempfile::tempdir().unwrap();
    v1_store(dir.path(), &[(b"a", b"1"), (b"b", b"2")]);
    let path = dir.path().join("seg-00000001.log");
    let mut seg = std::fs::read(&path).unwrap();
    seg[..64].copy_from_slice(&r2::encode_segment_header(1, 0));
    std::fs::write(&path, &seg).unwrap();
    {
        // The header alone: never consulted.
        let s = Store::open(dir.path(), opts()).expect("opens");
        let ns = s.namespace("n", Limits::default()).unwrap();
        assert_eq!(ns.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    }
    // The records in version 2 at the same offsets, as a build writing log
    // version 2 under index version 2 would leave them.
    for (off, h) in v1_records(&seg) {
        let body = seg[off..off + h.body_len()].to_vec();
        let (key, value) = body[v1::REC_HEADER_LEN..].split_at(h.klen as usize);
        let mut v = Vec::new();
        r2::encode_record(
            &mut v,
            h.kind,
            h.ns as u16,
            0,
            h.seq,
            h.expire_ms,
            key,
            value,
        );
        seg[off..off + h.size() as usize].fill(0);
        seg[off..off + v.len()].copy_from_slice(&v);
    }
    std::fs::write(&path, &seg).unwrap();
    let end_before = index_word(dir.path(), hdr::ACTIVE_OFF) as usize;
    {
        let s = Store::open(dir.path(), opts()).expect("opens");
        let ns = s.namespace("n", Limits::default()).unwrap();
        assert_eq!(ns.get(b"a").unwrap(), None, "a miss, not a wrong value");
        assert_eq!(ns.get(b"b").unwrap(), None);
        ns.remove(b"b").unwrap();
        assert!(ns.put(b"c", b"3").unwrap());
        s.sync().unwrap();
        assert_eq!(ns.get(b"c").unwrap().as_deref(), Some(&b"3"[..]));
    }
    let seg = std::fs::read(&path).unwrap();
    let appended: Vec<_> = v1_records(&seg)
        .iter()
        .map(|(off, h)| (*off, h.kind))
        .collect();
    println!("version-1 records appended: {appended:?}");
    assert_eq!(
        appended,
        [(end_before, kind::REMOVE), (end_before + 48, kind::PUT)],
        "a REMOVE of b and a PUT of c, as version-1 records"
    );
    let (found, _) = r2::scan(&seg[64..], 0);
    let keys: Vec<_> = found.iter().map(|(_, r)| (r.kind, r.key)).collect();
    println!("a version-2 scan finds: {keys:?}");
    assert_eq!(
        keys,
        [
            (kind::NAMESPACE, &b"n"[..]),
            (kind::PUT, &b"a"[..]),
            (kind::PUT, &b"b"[..])
        ],
        "b's removal and c are invisible to version 2"
    );
}

/// Hazard: an upgrade killed after it created the version-2 segment (point
/// B) but before it replaced the version-1 index. A trusted version-1 index
/// opens, ignores the base and the version-2 segment, and takes writes that
/// the resumed upgrade would drop (its segments are at most `absorbed`).
#[test]
fn hazard_a_trusted_version_1_index_ignores_an_unfinished_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    v1_store(dir.path(), &[(b"a", b"1")]);
    let seg = v2_segment(2, 10, &[]);
    let seg_path = dir.path().join("seg-00000002.log");
    std::fs::write(&seg_path, &seg).unwrap();
    std::fs::write(dir.path().join("base-00000001"), b"PICOBAS\0").unwrap();
    {
        let s = Store::open(dir.path(), opts()).expect("opens without error");
        let ns = s.namespace("n", Limits::default()).unwrap();
        assert_eq!(ns.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(ns.remove(b"a").unwrap());
        assert!(ns.put(b"b", b"2").unwrap());
        s.sync().unwrap();
    }
    assert_eq!(std::fs::read(&seg_path).unwrap(), seg);
    let seg1 = std::fs::read(dir.path().join("seg-00000001.log")).unwrap();
    let kinds: Vec<_> = v1_records(&seg1).iter().map(|(_, h)| h.kind).collect();
    assert_eq!(
        kinds,
        [kind::NAMESPACE, kind::PUT, kind::REMOVE, kind::PUT],
        "the removal and the put went to segment 1, below the upgrade's absorbed"
    );
}

/// The fix for the hazard above: with `retired` set in the version-1 index
/// before the version-2 segment exists, this build rebuilds: it opens the
/// store as version 1 while there is no version-2 segment, and refuses it
/// once there is one.
#[test]
fn a_retired_version_1_index_makes_it_refuse_once_a_version_2_segment_exists() {
    for with_v2_segment in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        v1_store(dir.path(), &[(b"a", b"1")]);
        set_index_word(dir.path(), hdr::RETIRED, 1);
        std::fs::write(dir.path().join("base-00000001"), b"PICOBAS\0").unwrap();
        if with_v2_segment {
            let seg = v2_segment(2, 10, &[]);
            std::fs::write(dir.path().join("seg-00000002.log"), seg).unwrap();
        }
        let r = Store::open(dir.path(), opts());
        println!(
            "version-2 segment {with_v2_segment}: {:?}",
            r.as_ref().err()
        );
        if with_v2_segment {
            assert!(is_version_2(&r));
        } else {
            let s = r.expect("a version-1 store again");
            let ns = s.namespace("n", Limits::default()).unwrap();
            assert_eq!(ns.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        }
    }
}
