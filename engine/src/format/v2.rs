//! Format version 2, the base file (FORMAT.md, "Version 2", "Base file"):
//! its constants, and the encoders and decoders of the base header, bucket
//! directories, cells, heap records and the namespace and LRU sections.
//! Log version 2's segment headers and records are
//! [`crate::format::v2::record`].
//!
//! ```text
//! base file: header (4096) | S buckets of 4096 | heap | namespaces | LRU sections
//!
//! bucket: n u8 | reach u8 | end u16 | fp[n] | off[n] (u16) | cells, packed
//! cell:   sum u32 | flags u8 | klen u8 | vlen u16 | ns u16 | [entry u32] | [expiry u64] | key | value
//!         (a HEAP cell holds, in place of key and value: heap offset u64, klen u32, vlen u32)
//! heap record: sum u32 | key | value
//! ```
//!
//! Every decoder here takes untrusted bytes and returns `None` (or a
//! [`HeaderFault`](crate::format::v2::HeaderFault)) for anything the
//! format does not allow; none panics.

// Wired into the store by build step 4 (index version 3 and the lookup).
#![cfg_attr(not(test), allow(dead_code))]

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::MAX_NAME_LEN;

/// Magic bytes at the start of a base file.
pub const BASE_MAGIC: [u8; 8] = *b"PICOBAS\0";
/// The base format version this build reads and writes.
pub const BASE_VERSION: u32 = 2;
/// Size of the base header.
pub const BASE_HEADER_LEN: usize = 4096;
/// Size of one bucket (one page).
pub const BUCKET_LEN: usize = 4096;
/// A bucket's fixed directory header: `n`, `reach`, `end`.
pub const DIR_HDR: usize = 4;
/// Directory bytes per cell: its fingerprint (1) and offset (2).
pub const SLOT_LEN: usize = 3;
/// The most cells one bucket holds (the dead word has 64 bits).
pub const MAX_CELLS: usize = 64;
/// The longest carry: a home's cells lie in `home ..= home + MAX_REACH`.
pub const MAX_REACH: u64 = 255;
/// The most buckets a base stores (a location is `bucket << 6 | slot` in a
/// u32, and `Located` keeps 26 bits for the bucket).
pub const MAX_BUCKETS: u64 = 1 << 26;
/// Size of a cell's fixed header: sum, flags, klen, vlen, ns.
pub const CELL_HDR: usize = 10;
/// The largest inline cell (a quarter of a bucket); larger entries are
/// `HEAP` cells.
pub const INLINE_MAX: usize = 1024;
/// The longest key an inline cell holds (`klen` is one byte).
pub const INLINE_KEY_MAX: usize = 255;
/// The bytes a `HEAP` cell holds in place of key and value: heap offset
/// (u64), key length and value length (u32 each).
pub const HEAP_REF_LEN: usize = 16;
/// Size of a heap record's header (its sum).
pub const HEAP_REC_HDR: usize = 4;
/// The builder sizes the home buckets so that cells and directory slots
/// take this percentage of the bucket bytes after the directory header
/// (and at most this percentage of [`MAX_CELLS`] cells per bucket).
pub const FILL_PERCENT: u64 = 90;
/// A lookup prefetches the home bucket's lines from this many bytes before
/// a cell's predicted place ...
pub const PREFETCH_BEFORE: usize = 256;
/// ... to this many bytes after it.
pub const PREFETCH_AFTER: usize = 384;
/// The seed of every version-2 checksum (records, cells, heap records,
/// sections, the base header): "PICORECK".
pub const SUM_SEED: u64 = 0x5049_434f_5245_434b;
/// Prefix of a base being written by a merge (`base.tmp.<pid>.<random>`).
pub const BASE_TMP_PREFIX: &str = "base.tmp.";

/// Base header field offsets.
pub mod bh {
    /// Magic (8 bytes).
    pub const MAGIC: usize = 0;
    /// Base version (u32).
    pub const VERSION: usize = 8;
    /// Checksum of the header (u32), see [`super::BaseHeader::encode`].
    pub const SUM: usize = 12;
    /// Base id (u64).
    pub const ID: usize = 16;
    /// `base_seq` (u64).
    pub const BASE_SEQ: usize = 24;
    /// `absorbed`: the highest segment id reflected here (u64).
    pub const ABSORBED: usize = 32;
    /// `homes`: home buckets `H` (u64).
    pub const HOMES: usize = 40;
    /// `stored`: buckets stored `S` (u64).
    pub const STORED: usize = 48;
    /// Cells (u64).
    pub const CELLS: usize = 56;
    /// Heap offset (u64).
    pub const HEAP_OFF: usize = 64;
    /// Heap length (u64).
    pub const HEAP_LEN: usize = 72;
    /// Namespace section offset (u64).
    pub const NS_OFF: usize = 80;
    /// Namespace section length (u64).
    pub const NS_LEN: usize = 88;
    /// LRU sections offset (u64).
    pub const LRU_OFF: usize = 96;
    /// Cells listed in the LRU sections (u64).
    pub const LRU_CELLS: usize = 104;
    /// Expected file length (u64).
    pub const FILE_LEN: usize = 112;
    /// 1 if written by the upgrade from version 1 (u32).
    pub const UPGRADED_FROM: usize = 120;
    /// Bucket length, 4096 (u32).
    pub const BUCKET_LEN: usize = 124;
    /// Where a home bucket's own cells begin, on average (u32).
    pub const PRED_FIRST: usize = 128;
    /// Bytes of a home bucket's own cells, on average (u32).
    pub const PRED_SPAN: usize = 132;
    /// End of the fields; the rest of the header is zero.
    pub const END: usize = 136;
}

/// Cell flag bits.
pub mod cf {
    /// An `entry` (u32 LRU ordinal) follows the fixed header.
    pub const ENTRY: u8 = 1;
    /// An `expiry` (u64 Unix ms) follows.
    pub const EXPIRY: u8 = 2;
    /// Key and value are in the heap.
    pub const HEAP: u8 = 4;
    /// Every defined bit.
    pub const ALL: u8 = ENTRY | EXPIRY | HEAP;
}

/// The version-2 checksum: the low 32 bits of seeded xxh3.
#[inline]
pub fn sum32(b: &[u8]) -> u32 {
    xxh3_64_with_seed(b, SUM_SEED) as u32
}

/// The home bucket of key hash `h` among `homes` (multiply-shift).
#[inline]
pub fn home_of(h: u64, homes: u64) -> u64 {
    ((h as u128 * homes as u128) >> 64) as u64
}

/// The fingerprint of key hash `h`.
#[inline]
pub fn fingerprint(h: u64) -> u8 {
    h as u8
}

/// The file offset of stored bucket `b`.
#[inline]
pub fn bucket_offset(b: u64) -> u64 {
    BASE_HEADER_LEN as u64 + b * BUCKET_LEN as u64
}

/// A base cell's location in the LRU sections: `bucket << 6 | slot`.
#[inline]
pub fn cell_loc(bucket: u64, slot: usize) -> u32 {
    (bucket << 6 | slot as u64) as u32
}

/// File name of base `id`.
pub fn base_file_name(id: u64) -> String {
    format!("base-{id:08x}")
}

/// Parses a base file name.
pub fn parse_base_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("base-")?;
    if hex.len() != 8 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn le16(b: &[u8], at: usize) -> usize {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]) as usize)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

// ---------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------

/// The fields of a base header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BaseHeader {
    /// Base id.
    pub id: u64,
    /// Every record with `seq <= base_seq` is reflected in this base.
    pub base_seq: u64,
    /// The highest segment id whose records are all reflected here.
    pub absorbed: u64,
    /// Home buckets `H`.
    pub homes: u64,
    /// Buckets stored `S >= H`.
    pub stored: u64,
    /// Cells.
    pub cells: u64,
    /// Heap offset and length.
    pub heap_off: u64,
    /// Heap length.
    pub heap_len: u64,
    /// Namespace section offset.
    pub ns_off: u64,
    /// Namespace section length.
    pub ns_len: u64,
    /// LRU sections offset (they run to `file_len`).
    pub lru_off: u64,
    /// Cells listed in the LRU sections.
    pub lru_cells: u64,
    /// Expected file length.
    pub file_len: u64,
    /// 1 if written by the upgrade from version 1.
    pub upgraded_from: u32,
    /// Where a home bucket's own cells begin, on average.
    pub pred_first: u32,
    /// Bytes of a home bucket's own cells, on average.
    pub pred_span: u32,
}

/// Why a base header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFault {
    /// Not a valid base header: what is wrong, and the offset of the field.
    Bad(&'static str, usize),
    /// A base of another version.
    Version(u32),
}

impl BaseHeader {
    /// Encodes the header. Its checksum is [`sum32`] of the 4096 bytes with
    /// the checksum field (bytes 12..16) taken as zeros.
    pub fn encode(&self) -> [u8; BASE_HEADER_LEN] {
        let mut b = [0u8; BASE_HEADER_LEN];
        b[bh::MAGIC..bh::MAGIC + 8].copy_from_slice(&BASE_MAGIC);
        b[bh::VERSION..bh::VERSION + 4].copy_from_slice(&BASE_VERSION.to_le_bytes());
        let words = [
            (bh::ID, self.id),
            (bh::BASE_SEQ, self.base_seq),
            (bh::ABSORBED, self.absorbed),
            (bh::HOMES, self.homes),
            (bh::STORED, self.stored),
            (bh::CELLS, self.cells),
            (bh::HEAP_OFF, self.heap_off),
            (bh::HEAP_LEN, self.heap_len),
            (bh::NS_OFF, self.ns_off),
            (bh::NS_LEN, self.ns_len),
            (bh::LRU_OFF, self.lru_off),
            (bh::LRU_CELLS, self.lru_cells),
            (bh::FILE_LEN, self.file_len),
        ];
        for (at, v) in words {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let halves = [
            (bh::UPGRADED_FROM, self.upgraded_from),
            (bh::BUCKET_LEN, BUCKET_LEN as u32),
            (bh::PRED_FIRST, self.pred_first),
            (bh::PRED_SPAN, self.pred_span),
        ];
        for (at, v) in halves {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        let sum = sum32(&b);
        b[bh::SUM..bh::SUM + 4].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Checks and decodes a header: magic, checksum, version, zeros, and
    /// the layout (every region where the header's own fields put it, no
    /// arithmetic overflow). Not checked here: the id against the file
    /// name, and the file's length against `file_len`.
    pub fn check(b: &[u8; BASE_HEADER_LEN]) -> Result<BaseHeader, HeaderFault> {
        use HeaderFault::Bad;
        if b[..8] != BASE_MAGIC {
            return Err(Bad("bad base magic", bh::MAGIC));
        }
        let mut z = *b;
        z[bh::SUM..bh::SUM + 4].fill(0);
        if sum32(&z) != le32(b, bh::SUM) {
            return Err(Bad("bad base header checksum", bh::SUM));
        }
        let v = le32(b, bh::VERSION);
        if v != BASE_VERSION {
            return Err(HeaderFault::Version(v));
        }
        if b[bh::END..].iter().any(|&x| x != 0) {
            return Err(Bad("nonzero reserved header bytes", bh::END));
        }
        let h = BaseHeader {
            id: le64(b, bh::ID),
            base_seq: le64(b, bh::BASE_SEQ),
            absorbed: le64(b, bh::ABSORBED),
            homes: le64(b, bh::HOMES),
            stored: le64(b, bh::STORED),
            cells: le64(b, bh::CELLS),
            heap_off: le64(b, bh::HEAP_OFF),
            heap_len: le64(b, bh::HEAP_LEN),
            ns_off: le64(b, bh::NS_OFF),
            ns_len: le64(b, bh::NS_LEN),
            lru_off: le64(b, bh::LRU_OFF),
            lru_cells: le64(b, bh::LRU_CELLS),
            file_len: le64(b, bh::FILE_LEN),
            upgraded_from: le32(b, bh::UPGRADED_FROM),
            pred_first: le32(b, bh::PRED_FIRST),
            pred_span: le32(b, bh::PRED_SPAN),
        };
        if le32(b, bh::BUCKET_LEN) != BUCKET_LEN as u32 {
            return Err(Bad("bucket length is not 4096", bh::BUCKET_LEN));
        }
        if h.homes == 0 || h.stored < h.homes || h.stored > MAX_BUCKETS {
            return Err(Bad("bad bucket counts", bh::HOMES));
        }
        if h.stored.saturating_sub(h.homes) > MAX_REACH {
            return Err(Bad("more carry buckets than a reach allows", bh::STORED));
        }
        if h.cells > h.stored * MAX_CELLS as u64 || h.lru_cells > h.cells {
            return Err(Bad("bad cell counts", bh::CELLS));
        }
        if h.upgraded_from > 1 {
            return Err(Bad("bad upgraded_from", bh::UPGRADED_FROM));
        }
        if h.pred_first as usize > BUCKET_LEN || h.pred_span as usize > BUCKET_LEN {
            return Err(Bad("bad prediction", bh::PRED_FIRST));
        }
        let layout = [
            (bh::HEAP_OFF, Some(bucket_offset(h.stored)), h.heap_off),
            (bh::NS_OFF, h.heap_off.checked_add(h.heap_len), h.ns_off),
            (bh::LRU_OFF, h.ns_off.checked_add(h.ns_len), h.lru_off),
        ];
        for (at, want, got) in layout {
            if want != Some(got) {
                return Err(Bad("a region is not where the layout puts it", at));
            }
        }
        if h.file_len < h.lru_off {
            return Err(Bad(
                "file length before the end of the sections",
                bh::FILE_LEN,
            ));
        }
        Ok(h)
    }
}

mod cell;
pub mod record;
mod sections;
pub use cell::*;
pub use sections::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_checks() {
        let h = BaseHeader {
            id: 3,
            base_seq: 99,
            absorbed: 7,
            homes: 10,
            stored: 12,
            cells: 300,
            heap_off: bucket_offset(12),
            heap_len: 20,
            ns_off: bucket_offset(12) + 20,
            ns_len: 8,
            lru_off: bucket_offset(12) + 28,
            lru_cells: 0,
            file_len: bucket_offset(12) + 36,
            upgraded_from: 0,
            pred_first: 94,
            pred_span: 3000,
        };
        let b = h.encode();
        assert_eq!(BaseHeader::check(&b), Ok(h));
        for at in 0..BASE_HEADER_LEN {
            let mut c = b;
            c[at] ^= 0x10;
            assert!(BaseHeader::check(&c).is_err(), "flip at {at} accepted");
        }
        let bad = BaseHeader { homes: 13, ..h };
        assert!(BaseHeader::check(&bad.encode()).is_err());
        let bad = BaseHeader { ns_off: 1, ..h };
        assert!(BaseHeader::check(&bad.encode()).is_err());
        assert_eq!(parse_base_file_name(&base_file_name(0x2a)), Some(0x2a));
        assert_eq!(parse_base_file_name("base-xyz"), None);
    }

    #[test]
    fn cell_roundtrip() {
        let mut v = Vec::new();
        encode_cell(&mut v, 5, Some(9), Some(1234), b"key", b"value", None);
        assert_eq!(v.len(), cell_len(3, 5, true, true));
        assert_eq!(cell_len_from_head(&v), Some(v.len()));
        let c = decode_cell(&v).unwrap();
        assert_eq!((c.ns, c.entry, c.expiry_ms), (5, Some(9), Some(1234)));
        assert_eq!(
            c.body,
            CellBody::Inline {
                key: b"key",
                value: b"value"
            }
        );
        for at in 0..v.len() {
            let mut d = v.clone();
            d[at] ^= 1;
            assert!(decode_cell(&d).is_none(), "flip at {at} accepted");
        }
        let big = vec![7u8; 2000];
        assert!(!is_inline(3, big.len(), false, false));
        let mut h = Vec::new();
        encode_cell(&mut h, 1, None, None, b"key", &big, Some(40));
        assert_eq!(h.len(), cell_len(3, big.len(), false, false));
        let c = decode_cell(&h).unwrap();
        assert_eq!(
            c.body,
            CellBody::Heap {
                off: 40,
                klen: 3,
                vlen: 2000
            }
        );
        let mut r = Vec::new();
        encode_heap_record(&mut r, b"key", &big);
        assert_eq!(r.len(), heap_record_len(3, 2000));
        assert_eq!(decode_heap_record(&r, 3), Some((&b"key"[..], &big[..])));
        r[10] ^= 1;
        assert_eq!(decode_heap_record(&r, 3), None);
    }

    #[test]
    fn fingerprints_match_exactly() {
        let fps: Vec<u8> = (0..64).map(|i| (i * 37 % 256) as u8).collect();
        for fp in 0..=255u8 {
            let want = fps
                .iter()
                .enumerate()
                .filter(|(_, &f)| f == fp)
                .fold(0u64, |a, (i, _)| a | 1 << i);
            assert_eq!(fp_matches(&fps, fp), want);
            assert_eq!(fp_matches(&[0, 1, fp, 1, 0], fp) & 0b100, 0b100);
        }
        // A false positive of the zero-byte test: 0x01 above a match of 0x00.
        assert_eq!(fp_matches(&[0x00, 0x01], 0x00), 0b01);
    }

    #[test]
    fn sections_roundtrip() {
        let rows = vec![
            NsRow {
                id: 1,
                name: b"a".to_vec(),
                maxsize: u64::MAX,
                ..Default::default()
            },
            NsRow {
                id: 7,
                name: Vec::new(),
                clear_seq: 44,
                ..Default::default()
            },
        ];
        let b = encode_ns_section(&rows);
        assert_eq!(decode_ns_section(&b), Some(rows));
        let mut c = b.clone();
        c[9] ^= 1;
        assert_eq!(decode_ns_section(&c), None);
        let s = vec![
            LruSection {
                ns: 1,
                locs: vec![cell_loc(3, 2), 5],
            },
            LruSection {
                ns: 2,
                locs: vec![],
            },
        ];
        let b = encode_lru_sections(&s);
        assert_eq!(b.len() as u64, lru_len(2, 2));
        assert_eq!(decode_lru_sections(&b, 2), Some(s));
        assert_eq!(decode_lru_sections(&b, 3), None);
        assert_eq!(decode_lru_sections(&b[..b.len() - 1], 2), None);
    }
}
