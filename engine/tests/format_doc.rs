//! Holds the code to FORMAT.md: the constants block, and the bytes a real
//! store writes at the documented offsets.

use std::collections::HashMap;

use picocache_engine::format::{self, ent, hdr, nsr, segr};
use picocache_engine::{Limits, Options, Store};

fn doc_constants() -> HashMap<String, String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../FORMAT.md")).unwrap();
    let block = doc
        .split("```layout\n")
        .nth(1)
        .expect("FORMAT.md has a layout block");
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
        ("REC_HEADER_LEN", format::REC_HEADER_LEN as u64),
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
    let r2 = r + format::record_size(6, 24) as usize;
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
        (r2 + format::record_size(3, 5) as usize) as u64
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
