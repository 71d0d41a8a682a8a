//! Holds the code to FORMAT.md: the constants block, and the bytes a real
//! store writes at the documented offsets.

use std::collections::HashMap;

use picocache_engine::format::v1;
use picocache_engine::format::{self, ent, hdr, nsr, segr};
use picocache_engine::{Limits, Options, Store};

fn doc_constants() -> HashMap<String, String> {
    doc_block("layout")
}

fn doc_block(tag: &str) -> HashMap<String, String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../FORMAT.md")).unwrap();
    let block = doc
        .split(&format!("```{tag}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("FORMAT.md has a {tag} block"));
    let block = block.split("```").next().unwrap();
    block
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn constants_match_the_document() {
    let d = doc_constants();
    let num = |k: &str| -> u64 {
        d.get(k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        d["SEG_MAGIC"].replace("\\0", "\0").as_bytes(),
        &format::SEG_MAGIC
    );
    assert_eq!(
        d["INDEX_MAGIC"].replace("\\0", "\0").as_bytes(),
        &format::INDEX_MAGIC
    );
    let code: &[(&str, u64)] = &[
        ("SEG_VERSION", format::SEG_VERSION as u64),
        ("INDEX_VERSION", format::INDEX_VERSION as u64),
        ("SEG_HEADER_LEN", format::SEG_HEADER_LEN),
        ("REC_HEADER_LEN", v1::REC_HEADER_LEN as u64),
        ("IDX_HEADER_LEN", format::IDX_HEADER_LEN as u64),
        ("NS_ROW_LEN", format::NS_ROW_LEN as u64),
        ("MAX_NAMESPACES", format::MAX_NAMESPACES as u64),
        ("SEG_ROW_LEN", format::SEG_ROW_LEN as u64),
        ("MAX_SEGMENTS", format::MAX_SEGMENTS as u64),
        ("BUCKET_LEN", format::BUCKET_LEN as u64),
        ("ENTRY_LEN", format::ENTRY_LEN as u64),
        ("MIN_BUCKETS", format::MIN_BUCKETS),
        ("MAX_NAME_LEN", format::MAX_NAME_LEN as u64),
        ("DEFAULT_SEGMENT_SIZE", format::DEFAULT_SEGMENT_SIZE),
        ("MIN_SEGMENT_SIZE", format::MIN_SEGMENT_SIZE),
        ("MAX_RESERVE", format::MAX_RESERVE),
        (
            "LAST_USE_GRANULARITY_SECS",
            format::LAST_USE_GRANULARITY_SECS,
        ),
        ("hdr.RETIRED", hdr::RETIRED as u64),
        ("hdr.STATE", hdr::STATE as u64),
        ("hdr.BOOT_ID", hdr::BOOT_ID as u64),
        ("hdr.NEXT_SEQ", hdr::NEXT_SEQ as u64),
        ("hdr.ACTIVE_SEG", hdr::ACTIVE_SEG as u64),
        ("hdr.ACTIVE_OFF", hdr::ACTIVE_OFF as u64),
        ("hdr.NEXT_SEG_ID", hdr::NEXT_SEG_ID as u64),
        ("hdr.ENTRY_COUNT", hdr::ENTRY_COUNT as u64),
        ("hdr.FREE_HEAD", hdr::FREE_HEAD as u64),
        ("hdr.ENTRY_HWM", hdr::ENTRY_HWM as u64),
        ("hdr.NS_COUNT", hdr::NS_COUNT as u64),
        ("hdr.EPOCH", hdr::EPOCH as u64),
        ("hdr.COMPACTIONS", hdr::COMPACTIONS as u64),
        ("hdr.CMP_VICTIM", hdr::CMP_VICTIM as u64),
        ("hdr.CMP_DONE", hdr::CMP_DONE as u64),
        ("hdr.CMP_DEST", hdr::CMP_DEST as u64),
        ("nsr.MAXSIZE", nsr::MAXSIZE as u64),
        ("nsr.MAX_BYTES", nsr::MAX_BYTES as u64),
        ("nsr.TTL_MS", nsr::TTL_MS as u64),
        ("nsr.ENTRIES", nsr::ENTRIES as u64),
        ("nsr.LIVE_BYTES", nsr::LIVE_BYTES as u64),
        ("nsr.EVICTIONS", nsr::EVICTIONS as u64),
        ("nsr.CLEAR_SEQ", nsr::CLEAR_SEQ as u64),
        ("nsr.LRU_HEAD", nsr::LRU_HEAD as u64),
        ("nsr.LRU_TAIL", nsr::LRU_TAIL as u64),
        ("nsr.NAME_HASH", nsr::NAME_HASH as u64),
        ("nsr.DEF_SEQ", nsr::DEF_SEQ as u64),
        ("nsr.NEXT_EXPIRY", nsr::NEXT_EXPIRY as u64),
        ("nsr.LAST_SWEEP", nsr::LAST_SWEEP as u64),
        ("nsr.LAST_USED", nsr::LAST_USED as u64),
        ("nsr.CLOCK", nsr::CLOCK as u64),
        ("nsr.HITS", nsr::HITS as u64),
        ("nsr.MISSES", nsr::MISSES as u64),
        ("nsr.NAME", nsr::NAME as u64),
        ("segr.STATE", segr::STATE as u64),
        ("segr.TOTAL", segr::TOTAL as u64),
        ("segr.DEAD", segr::DEAD as u64),
        ("segr.MIN_PUT", segr::MIN_PUT as u64),
        ("ent.HASH", ent::HASH as u64),
        ("ent.STAMP", ent::STAMP as u64),
        ("ent.LIST_STAMP", ent::LIST_STAMP as u64),
        ("ent.LINKS", ent::LINKS as u64),
        ("ent.NS_SIZE", ent::NS_SIZE as u64),
    ];
    for (k, v) in code {
        assert_eq!(num(k), *v, "FORMAT.md says {k} = {}, the code {v}", num(k));
    }
    assert_eq!(
        format::NS_ROW_LEN,
        nsr::NAME + format::MAX_NAME_LEN,
        "name fills the row"
    );
    let l = format::IndexLayout::new(1024).unwrap();
    assert_eq!(l.ns_off, 4096);
    assert_eq!(l.seg_off, 4096 + 1024 * 384);
    assert_eq!(l.bucket_off, l.seg_off + 4096 * 40);
    assert_eq!(l.entry_off, l.bucket_off + 1024 * 16);
    assert_eq!(l.entries, 768);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The golden bytes: what a store writes for one namespace and one put.
#[test]
fn a_real_store_has_the_documented_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Options::default().background_compaction(false)).unwrap();
    let ns = s.namespace("golden", Limits::maxsize(Some(5))).unwrap();
    ns.put(b"key", b"value").unwrap();
    s.sync().unwrap();
    let seg = std::fs::read(dir.path().join("seg-00000001.log")).unwrap();
    assert_eq!(&seg[0..8], b"PICOSEG\0");
    assert_eq!(u32_at(&seg, 8), 1, "log version");
    assert_eq!(u32_at(&seg, 12), 1, "segment id");
    assert_eq!(u32_at(&seg, 60), crc32fast::hash(&seg[0..60]));
    // First record: the namespace definition.
    let r = 64;
    assert_eq!(seg[r + 4], 4, "NAMESPACE kind");
    assert_eq!(u32_at(&seg, r + 12), 6, "klen");
    assert_eq!(u32_at(&seg, r + 16), 24, "vlen");
    assert_eq!(&seg[r + 20..r + 24], b"PCRK");
    assert_eq!(&seg[r + 40..r + 46], b"golden");
    assert_eq!(u64_at(&seg, r + 46), 5, "maxsize");
    assert_eq!(u64_at(&seg, r + 54), u64::MAX, "max_bytes");
    assert_eq!(
        u32_at(&seg, r),
        crc32fast::hash(&seg[r + 4..r + 40 + 6 + 24])
    );
    // Second record: the put, 8-aligned after the first.
    let r2 = r + v1::record_size(6, 24) as usize;
    assert_eq!(seg[r2 + 4], 1, "PUT kind");
    assert_eq!(
        u32_at(&seg, r2 + 8),
        u32_at(&seg, r + 8),
        "same namespace id"
    );
    assert!(
        u64_at(&seg, r2 + 24) > u64_at(&seg, r + 24),
        "seq increases"
    );
    assert_eq!(u64_at(&seg, r2 + 32), 0, "no expiry");
    assert_eq!(&seg[r2 + 40..r2 + 48], b"keyvalue");
    assert_eq!(u32_at(&seg, r2), crc32fast::hash(&seg[r2 + 4..r2 + 48]));
    assert!(
        seg[r2 + 48..].iter().all(|&b| b == 0),
        "unused space is zero"
    );

    let idx = std::fs::read(dir.path().join("index")).unwrap();
    assert_eq!(&idx[0..8], b"PICOIDX\0");
    assert_eq!(u32_at(&idx, 8), 2, "index version");
    let mut h = crc32fast::Hasher::new();
    h.update(&idx[0..12]);
    h.update(&idx[16..64]);
    assert_eq!(u32_at(&idx, 12), h.finalize());
    let buckets = u64_at(&idx, 24);
    let l = format::IndexLayout::new(buckets).unwrap();
    assert_eq!(u64_at(&idx, 40), l.file_len as u64);
    assert_eq!(u64_at(&idx, hdr::STATE), 2, "synced clean");
    assert_eq!(u64_at(&idx, hdr::ENTRY_COUNT), 1);
    assert_eq!(u64_at(&idx, hdr::ACTIVE_SEG), 1);
    assert_eq!(
        u64_at(&idx, hdr::ACTIVE_OFF),
        (r2 + v1::record_size(3, 5) as usize) as u64
    );
    let row = l.ns_off + u32_at(&seg, r + 8) as usize * format::NS_ROW_LEN;
    assert_eq!(u64_at(&idx, row), 6, "name length");
    assert_eq!(&idx[row + nsr::NAME..row + nsr::NAME + 6], b"golden");
    assert_eq!(u64_at(&idx, row + nsr::MAXSIZE), 5);
    assert_eq!(u64_at(&idx, row + nsr::ENTRIES), 1);
    let e = u64_at(&idx, row + nsr::LRU_HEAD) as usize;
    let ent_off = l.entry_off + e * format::ENTRY_LEN;
    assert_eq!(
        u64_at(&idx, ent_off),
        (1u64 << 32) | r2 as u64,
        "entry location"
    );
    let seg_row = l.seg_off + format::SEG_ROW_LEN;
    assert_eq!(u64_at(&idx, seg_row), 1, "segment 1 in row 1");
    assert_eq!(u64_at(&idx, seg_row + segr::STATE), 1, "active");
    assert_eq!(
        u64_at(&idx, seg_row + segr::MIN_PUT),
        u64_at(&seg, r2 + 24),
        "lowest PUT seq of the segment"
    );
}

#[test]
fn version_2_constants_match_the_document() {
    use format::v2::{self, bh, cf};
    let d = doc_block("layout-v2");
    assert_eq!(
        d["BASE_MAGIC"].replace("\\0", "\0").as_bytes(),
        &v2::BASE_MAGIC
    );
    let code: &[(&str, u64)] = &[
        ("BASE_VERSION", v2::BASE_VERSION as u64),
        ("BASE_HEADER_LEN", v2::BASE_HEADER_LEN as u64),
        ("BUCKET_LEN", v2::BUCKET_LEN as u64),
        ("DIR_HDR", v2::DIR_HDR as u64),
        ("SLOT_LEN", v2::SLOT_LEN as u64),
        ("MAX_CELLS", v2::MAX_CELLS as u64),
        ("MAX_REACH", v2::MAX_REACH),
        ("MAX_BUCKETS", v2::MAX_BUCKETS),
        ("CELL_HDR", v2::CELL_HDR as u64),
        ("INLINE_MAX", v2::INLINE_MAX as u64),
        ("INLINE_KEY_MAX", v2::INLINE_KEY_MAX as u64),
        ("HEAP_REF_LEN", v2::HEAP_REF_LEN as u64),
        ("HEAP_REC_HDR", v2::HEAP_REC_HDR as u64),
        ("FILL_PERCENT", v2::FILL_PERCENT),
        ("PREFETCH_BEFORE", v2::PREFETCH_BEFORE as u64),
        ("PREFETCH_AFTER", v2::PREFETCH_AFTER as u64),
        ("SUM_SEED", v2::SUM_SEED),
        ("bh.ID", bh::ID as u64),
        ("bh.BASE_SEQ", bh::BASE_SEQ as u64),
        ("bh.ABSORBED", bh::ABSORBED as u64),
        ("bh.HOMES", bh::HOMES as u64),
        ("bh.STORED", bh::STORED as u64),
        ("bh.CELLS", bh::CELLS as u64),
        ("bh.HEAP_OFF", bh::HEAP_OFF as u64),
        ("bh.HEAP_LEN", bh::HEAP_LEN as u64),
        ("bh.NS_OFF", bh::NS_OFF as u64),
        ("bh.NS_LEN", bh::NS_LEN as u64),
        ("bh.LRU_OFF", bh::LRU_OFF as u64),
        ("bh.LRU_CELLS", bh::LRU_CELLS as u64),
        ("bh.FILE_LEN", bh::FILE_LEN as u64),
        ("bh.UPGRADED_FROM", bh::UPGRADED_FROM as u64),
        ("bh.BUCKET_LEN", bh::BUCKET_LEN as u64),
        ("bh.PRED_FIRST", bh::PRED_FIRST as u64),
        ("bh.PRED_SPAN", bh::PRED_SPAN as u64),
        ("cf.ENTRY", cf::ENTRY as u64),
        ("cf.EXPIRY", cf::EXPIRY as u64),
        ("cf.HEAP", cf::HEAP as u64),
    ];
    for (k, v) in code {
        let doc: u64 = d
            .get(*k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .parse()
            .unwrap();
        assert_eq!(doc, *v, "FORMAT.md says {k} = {doc}, the code {v}");
    }
    assert_eq!(d.len(), code.len() + 1, "every documented constant checked");
}

/// The golden bytes of a base: one namespace, an inline cell and a heap
/// cell with an LRU ordinal and an expiry, built by the engine's builder.
#[test]
fn a_built_base_has_the_documented_bytes() {
    use picocache_engine::base::build::{BaseBuilder, BaseParams, NewCell, Sizing};
    use picocache_engine::format::v2::NsRow;
    use picocache_engine::RealIo;
    let sum = |b: &[u8]| xxhash_rust::xxh3::xxh3_64_with_seed(b, 0x5049_434f_5245_434b) as u32;
    let hash = |k: &[u8]| xxhash_rust::xxh3::xxh3_64_with_seed(k, 1 ^ 0x9e37_79b9_7f4a_7c15);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base-00000005");
    let file = std::fs::File::create(&path).unwrap();
    let big = vec![7u8; 2000];
    let mut cells = [
        (b"key".as_slice(), b"value".as_slice(), None, None),
        (b"big".as_slice(), &big[..], Some(1234u64), Some(0u32)),
    ];
    cells.sort_by_key(|c| hash(c.0));
    let mut sizing = Sizing::default();
    for c in &cells {
        sizing.add(c.0.len(), c.1.len(), c.3.is_some(), c.2.is_some());
    }
    let row = NsRow {
        id: 1,
        name: b"golden".to_vec(),
        maxsize: 5,
        max_bytes: u64::MAX,
        ..Default::default()
    };
    let params = BaseParams {
        id: 5,
        base_seq: 42,
        absorbed: 3,
        upgraded_from: 0,
    };
    let mut b = BaseBuilder::new(&RealIo, &file, params, sizing, vec![row], &[(1, 1)]).unwrap();
    for (key, value, expiry_ms, entry) in cells {
        b.push(NewCell {
            ns: 1,
            key,
            value,
            expiry_ms,
            entry,
        })
        .unwrap();
    }
    b.finish().unwrap();
    let f = std::fs::read(&path).unwrap();
    assert_eq!(&f[0..8], b"PICOBAS\0");
    assert_eq!(u32_at(&f, 8), 2, "base version");
    let mut hd = f[..4096].to_vec();
    hd[12..16].fill(0);
    assert_eq!(u32_at(&f, 12), sum(&hd), "header checksum");
    let w = |at: usize| u64_at(&f, at);
    assert_eq!((w(16), w(24), w(32)), (5, 42, 3), "id, base_seq, absorbed");
    assert_eq!((w(40), w(48), w(56)), (1, 1, 2), "homes, stored, cells");
    assert_eq!(w(64), 8192, "heap after the one bucket");
    assert_eq!(w(72), 4 + 3 + 2000, "one heap record");
    assert_eq!(w(80), 8192 + w(72), "namespaces after the heap");
    assert_eq!(w(96), w(80) + w(88), "LRU sections after the namespaces");
    assert_eq!((w(104), w(112)), (1, f.len() as u64), "lru_cells, file_len");
    assert_eq!((u32_at(&f, 120), u32_at(&f, 124)), (0, 4096));
    assert!(f[136..4096].iter().all(|&b| b == 0));
    // The bucket: two cells, in fingerprint order.
    let bk = &f[4096..8192];
    assert_eq!((bk[0], bk[1]), (2, 0), "n, reach");
    let mut fps: Vec<(u8, &[u8])> =
        vec![(hash(b"key") as u8, b"key"), (hash(b"big") as u8, b"big")];
    fps.sort_by_key(|c| c.0);
    assert_eq!((bk[4], bk[5]), (fps[0].0, fps[1].0), "fingerprints");
    let off = |i: usize| u16::from_le_bytes([bk[6 + 2 * i], bk[7 + 2 * i]]) as usize;
    assert_eq!(off(0), 4 + 3 * 2, "cells after the directory");
    let slot = |k: &[u8]| fps.iter().position(|c| c.1 == k).unwrap();
    let c = off(slot(b"key"));
    assert_eq!(
        &bk[c + 4..c + 10],
        &[0, 3, 5, 0, 1, 0],
        "flags, klen, vlen, ns"
    );
    assert_eq!(&bk[c + 10..c + 18], b"keyvalue");
    assert_eq!(u32_at(bk, c), sum(&bk[c + 4..c + 18]));
    let c = off(slot(b"big"));
    assert_eq!(
        &bk[c + 4..c + 10],
        &[1 | 2 | 4, 0, 16, 0, 1, 0],
        "ENTRY|EXPIRY|HEAP"
    );
    assert_eq!(u32_at(bk, c + 10), 0, "LRU ordinal");
    assert_eq!(u64_at(bk, c + 14), 1234, "expiry");
    assert_eq!(u64_at(bk, c + 22), 0, "heap offset, from heap_off");
    assert_eq!((u32_at(bk, c + 30), u32_at(bk, c + 34)), (3, 2000));
    assert_eq!(u32_at(bk, c), sum(&bk[c + 4..c + 38]));
    let end = u16::from_le_bytes([bk[2], bk[3]]) as usize;
    assert_eq!(end, 10 + 18 + 38, "end of the last cell");
    let h = 8192;
    assert_eq!(&f[h + 4..h + 7], b"big");
    assert_eq!(u32_at(&f, h), sum(&f[h + 4..h + 2007]));
    // The namespace section and the LRU sections.
    let n = w(80) as usize;
    assert_eq!(u32_at(&f, n), sum(&f[n + 4..n + w(88) as usize]));
    assert_eq!(u32_at(&f, n + 4), 1, "one row");
    assert_eq!(&f[n + 8..n + 17], b"\x01\x00\x06golden");
    assert_eq!((u64_at(&f, n + 17), u64_at(&f, n + 25)), (5, u64::MAX));
    assert_eq!(
        (u64_at(&f, n + 57), u64_at(&f, n + 65)),
        (2, 2011),
        "entries, bytes"
    );
    let l = w(96) as usize;
    assert_eq!(u32_at(&f, l), sum(&f[l + 4..]));
    assert_eq!(&f[l + 4..l + 14], &[1, 0, 0, 0, 1, 0, 1, 0, 0, 0]);
    assert_eq!(
        u32_at(&f, l + 14),
        slot(b"big") as u32,
        "bucket 0 << 6 | slot"
    );
}

#[test]
fn log_version_2_constants_match_the_document() {
    use format::v2::record as r2;
    let d = doc_block("layout-log-v2");
    let code: &[(&str, u64)] = &[
        ("LOG_VERSION", r2::LOG_VERSION as u64),
        ("SEQ_BASE_AT", r2::SEQ_BASE_AT as u64),
        ("REC_SEED", r2::REC_SEED),
        ("KIND_MARK", r2::KIND_MARK as u64),
        ("HAS_EXPIRY", r2::HAS_EXPIRY as u64),
        ("REC_FIXED", r2::REC_FIXED as u64),
        ("REC_MAX_HEADER", r2::REC_MAX_HEADER as u64),
        ("REC_MIN_LEN", r2::REC_MIN_LEN as u64),
    ];
    for (k, v) in code {
        let doc: u64 = d
            .get(*k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .parse()
            .unwrap();
        assert_eq!(doc, *v, "FORMAT.md says {k} = {doc}, the code {v}");
    }
    assert_eq!(d.len(), code.len(), "every documented constant checked");
    assert_eq!(v1::LOG_VERSION, format::SEG_VERSION, "this build writes v1");
}

/// The golden bytes of log version 2: a segment header and four records,
/// as the encoders write them, against FORMAT.md's `golden-log-v2` block
/// (hex) and field by field against the layout, with the checksums
/// computed here (xxh3 with the documented seed, crc32 for the header).
#[test]
fn log_version_2_records_have_the_documented_bytes() {
    use format::v2::record::{self as r2, Parsed};
    let sum = |b: &[u8]| xxhash_rust::xxh3::xxh3_64_with_seed(b, 0x5049_434f_5245_434b) as u32;
    let base = 1000;
    let expiry = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let limits = format::encode_limits(5, u64::MAX, 0);
    let big = [b'v'; 200];
    let mut recs: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |name, kind, seq, exp, key: &[u8], value: &[u8]| {
        let mut v = Vec::new();
        r2::encode_record(&mut v, kind, 1, base, seq, exp, key, value);
        recs.push((name, v));
    };
    add(
        "NAMESPACE",
        format::kind::NAMESPACE,
        1000,
        0,
        b"golden",
        &limits,
    );
    add("PUT", format::kind::PUT, 1001, expiry, b"key", b"value");
    add("REMOVE", format::kind::REMOVE, 998, 0, b"old", b"");
    add("PUT_200", format::kind::PUT, 1130, 0, b"k2", &big);
    let header = r2::encode_segment_header(1, base);

    // Against the document, byte for byte.
    let d = doc_block("golden-log-v2");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let doc = |k: &str| -> String {
        d.get(k)
            .unwrap_or_else(|| panic!("golden-log-v2 has no {k}"))
            .split_whitespace()
            .map(|t| match t.split_once('*') {
                Some((byte, n)) => byte.repeat(n.parse().unwrap()),
                None => t.to_string(),
            })
            .collect()
    };
    let mut mismatch = Vec::new();
    if doc("header") != hex(&header) {
        mismatch.push(format!("header = {}", hex(&header)));
    }
    for (name, v) in &recs {
        if doc(name) != hex(v) {
            mismatch.push(format!("{name} = {}", hex(v)));
        }
    }
    assert!(
        mismatch.is_empty(),
        "FORMAT.md's golden-log-v2 differs from the encoders:\n{}",
        mismatch.join("\n")
    );
    assert_eq!(d.len(), recs.len() + 1, "every golden line checked");

    // The header: version 1's with version 2 and seq_base at 16..24.
    assert_eq!(&header[0..8], b"PICOSEG\0");
    assert_eq!(u32_at(&header, 8), 2, "log version");
    assert_eq!(u32_at(&header, 12), 1, "segment id");
    assert_eq!(u64_at(&header, 16), base, "seq_base");
    assert!(header[24..60].iter().all(|&b| b == 0));
    assert_eq!(u32_at(&header, 60), crc32fast::hash(&header[0..60]));

    // Each record: sum, kind (mark 0xA0 | HAS_EXPIRY 0x08 | kind), ns u16,
    // then LEB128 klen, vlen, zigzag(seq - seq_base), [expiry], key, value.
    // (name, the bytes from the kind to the key, key, value)
    type Fields<'a> = (&'a str, &'a [u8], &'a [u8], &'a [u8]);
    let fields: [Fields; 4] = [
        ("NAMESPACE", &[0xA4, 1, 0, 6, 24, 0], b"golden", &limits),
        (
            "PUT",
            // zigzag(+1) = 2; expiry 1767225600000 in 6 LEB128 bytes.
            &[0xA9, 1, 0, 3, 5, 2, 0x80, 0xD0, 0xEA, 0xB6, 0xB7, 0x33],
            b"key",
            b"value",
        ),
        ("REMOVE", &[0xA2, 1, 0, 3, 0, 3], b"old", b""), // zigzag(-2) = 3
        // vlen 200 = c8 01; zigzag(+130) = 260 = 84 02.
        (
            "PUT_200",
            &[0xA1, 1, 0, 2, 0xC8, 0x01, 0x84, 0x02],
            b"k2",
            &big,
        ),
    ];
    let mut log = header.to_vec();
    for ((name, v), (fname, head, key, value)) in recs.iter().zip(fields) {
        assert_eq!(*name, fname);
        let h = 4 + head.len();
        assert_eq!(&v[4..h], head, "{name}: kind, ns, varints");
        assert_eq!(&v[h..h + key.len()], key, "{name}: key");
        assert_eq!(&v[h + key.len()..], value, "{name}: value, no padding");
        assert_eq!(u32_at(v, 0), sum(&v[4..]), "{name}: sum of bytes 4..end");
        log.extend_from_slice(v);
    }
    assert_eq!(
        recs.iter().map(|r| r.1.len()).collect::<Vec<_>>(),
        [40, 24, 13, 214],
        "record lengths: byte-aligned, unpadded"
    );
    // The expiry's bytes are its LEB128.
    let mut e = Vec::new();
    let mut x: u64 = expiry;
    while x >= 0x80 {
        e.push(x as u8 | 0x80);
        x >>= 7;
    }
    e.push(x as u8);
    assert_eq!(e, [0x80, 0xD0, 0xEA, 0xB6, 0xB7, 0x33]);

    // The parser and the scan read the records back, seq made absolute.
    let (id, sb) = r2::check_segment_header(&header).unwrap();
    assert_eq!((id, sb), (1, base));
    let body = &log[format::SEG_HEADER_LEN as usize..];
    let (found, end) = r2::scan(body, sb);
    assert_eq!(end, body.len());
    let got: Vec<_> = found
        .iter()
        .map(|(off, r)| (*off, r.kind, r.ns, r.seq, r.expire_ms, r.key))
        .collect();
    assert_eq!(
        got,
        [
            (0, 4, 1, 1000, 0, &b"golden"[..]),
            (40, 1, 1, 1001, expiry, &b"key"[..]),
            (64, 2, 1, 998, 0, &b"old"[..]),
            (77, 1, 1, 1130, 0, &b"k2"[..]),
        ]
    );
    let Parsed::Record(ns) = r2::parse_record(body, sb) else {
        panic!("the first record parses")
    };
    assert_eq!(format::decode_limits(ns.value), Some((5, u64::MAX, 0)));
    // A version-1 reader refuses the header: another log version.
    assert_eq!(
        format::check_segment_header(&header),
        format::SegHeaderCheck::Version(2)
    );
}
