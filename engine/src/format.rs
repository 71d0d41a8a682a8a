//! On-disk layout. `FORMAT.md` at the repository root is the specification;
//! this module mirrors it and a test holds the two together.
//!
//! This module holds what both log versions share: the segment header and
//! file names, record kinds, limits, the namespace limits' encoding, and
//! the index layout (index version 2). Each log version's records are in
//! their own module:
//!
//! ```text
//! format.rs             shared: segment header, kinds, limits, index layout
//! format/v1.rs          log version 1's records (40-byte header, crc32)
//! format/v2.rs          format version 2's base file (cells, buckets, sections)
//! format/v2/record.rs   log version 2's segment header and records (not yet written)
//!
//! store directory/
//!   lock           empty; flock(LOCK_EX) serializes writers
//!   leases         empty; OFD byte-range locks, one byte per key hash
//!   index          the mmapped hash index (a rebuildable cache of the log)
//!   seg-XXXXXXXX.log  log segments, XXXXXXXX = segment id in hex
//!
//! segment header (64 bytes)
//! 0      8 magic "PICOSEG\0"
//! 8      4 version (the log version of the segment's records)
//! 12     4 segment id
//! 16    44 zero (log version 2: 16..24 seq_base)
//! 60     4 crc32 of bytes 0..60
//! ```

/// Log version 1's records: the header, its parser and the encoders.
pub mod v1;

/// Magic bytes at the start of every segment.
pub const SEG_MAGIC: [u8; 8] = *b"PICOSEG\0";
/// Magic bytes at the start of the index file.
pub const INDEX_MAGIC: [u8; 8] = *b"PICOIDX\0";
/// The log format version this build reads and writes (version 1's records,
/// [`v1`]).
pub const SEG_VERSION: u32 = v1::LOG_VERSION;
/// The index format version this build reads and writes. An index of another
/// version is not an error: it is rebuilt from the log.
pub const INDEX_VERSION: u32 = 2;

/// Size of a segment header.
pub const SEG_HEADER_LEN: u64 = 64;
/// Default maximum size of one segment.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// The smallest segment size a small filesystem imposes (segments are at
/// most a sixty-fourth of their filesystem, not below this).
pub const MIN_SEGMENT_SIZE: u64 = 64 << 10;
/// The largest `reserve` file (a sixty-fourth of the filesystem, at most
/// this), deleted to make room when the filesystem is full.
pub const MAX_RESERVE: u64 = 256 << 10;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 1 << 20;
/// Largest value accepted.
pub const MAX_VALUE_LEN: usize = 1 << 30;
/// Longest namespace name, in bytes.
pub const MAX_NAME_LEN: usize = 232;

/// Format version 2's base file (FORMAT.md, "Version 2"): constants,
/// encoders and decoders; and log version 2's records ([`v2::record`]).
/// Not yet written or read by the store.
pub mod v2;

/// Record kinds.
pub mod kind {
    /// A key's value.
    pub const PUT: u8 = 1;
    /// A key's removal.
    pub const REMOVE: u8 = 2;
    /// The removal of every key of a namespace written before it.
    pub const CLEAR: u8 = 3;
    /// A namespace definition: key = name, value = limits (24 bytes); or,
    /// with an empty value, the namespace's removal.
    pub const NAMESPACE: u8 = 4;
}

/// Rounds up to a multiple of 8.
pub const fn align8(n: u64) -> u64 {
    (n + 7) & !7
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

/// Encodes a segment header of log version [`SEG_VERSION`], the one this
/// build writes (a version-2 header is
/// [`v2::record::encode_segment_header`]).
pub fn encode_segment_header(id: u32) -> [u8; SEG_HEADER_LEN as usize] {
    let mut b = [0u8; SEG_HEADER_LEN as usize];
    b[0..8].copy_from_slice(&SEG_MAGIC);
    b[8..12].copy_from_slice(&SEG_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

/// What a segment header says.
#[derive(Debug, PartialEq, Eq)]
pub enum SegHeaderCheck {
    /// Valid, with this id.
    Ok(u32),
    /// Not a segment (bad magic or crc).
    Bad(&'static str),
    /// A segment of another format version.
    Version(u32),
}

/// Validates a segment header: any log version other than [`SEG_VERSION`]
/// is [`SegHeaderCheck::Version`].
pub fn check_segment_header(b: &[u8; SEG_HEADER_LEN as usize]) -> SegHeaderCheck {
    if b[0..8] != SEG_MAGIC {
        return SegHeaderCheck::Bad("bad segment magic");
    }
    if crc32fast::hash(&b[..60]) != le32(b, 60) {
        return SegHeaderCheck::Bad("bad segment header checksum");
    }
    let v = le32(b, 8);
    if v != SEG_VERSION {
        return SegHeaderCheck::Version(v);
    }
    SegHeaderCheck::Ok(le32(b, 12))
}

/// Namespace limits as stored in a NAMESPACE record's value (24 bytes).
pub fn encode_limits(maxsize: u64, max_bytes: u64, ttl_ms: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[0..8].copy_from_slice(&maxsize.to_le_bytes());
    b[8..16].copy_from_slice(&max_bytes.to_le_bytes());
    b[16..24].copy_from_slice(&ttl_ms.to_le_bytes());
    b
}

/// Decodes [`encode_limits`]; `None` if the value is not 24 bytes.
pub fn decode_limits(b: &[u8]) -> Option<(u64, u64, u64)> {
    if b.len() != 24 {
        return None;
    }
    Some((le64(b, 0), le64(b, 8), le64(b, 16)))
}

/// File name of segment `id`.
pub fn segment_file_name(id: u32) -> String {
    format!("seg-{id:08x}.log")
}

/// Parses a segment file name.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

// ---------------------------------------------------------------------------
// Index file layout
// ---------------------------------------------------------------------------

/// Index header size (one page).
pub const IDX_HEADER_LEN: usize = 4096;
/// Namespace rows in the index.
pub const MAX_NAMESPACES: usize = 1024;
/// Size of one namespace row.
pub const NS_ROW_LEN: usize = 384;
/// Segment rows in the index.
pub const MAX_SEGMENTS: usize = 4096;
/// Size of one segment row.
pub const SEG_ROW_LEN: usize = 40;
/// Size of one bucket: a word `tag << 32 | entry + 1`, then the entry's
/// location (so a lookup reaches the record without touching the entry).
pub const BUCKET_LEN: usize = 16;
/// Size of one entry.
pub const ENTRY_LEN: usize = 48;
/// Smallest bucket count.
pub const MIN_BUCKETS: u64 = 1024;

/// Index header field offsets.
pub mod hdr {
    /// Magic (8 bytes).
    pub const MAGIC: usize = 0;
    /// Format version (u32).
    pub const VERSION: usize = 8;
    /// crc32 of bytes 0..12 and 16..64 (u32).
    pub const CRC: usize = 12;
    /// Index generation (u64): a random identity of the index lineage, new
    /// when the index is built from the log, kept when it is copied into a
    /// larger file (record locations stay valid within one lineage).
    pub const GENERATION: usize = 16;
    /// Bucket count (u64, a power of two).
    pub const BUCKETS: usize = 24;
    /// Entry capacity (u64).
    pub const ENTRIES: usize = 32;
    /// Expected file length (u64).
    pub const FILE_LEN: usize = 40;
    /// Start of the dynamic words (all 8-byte atomics).
    pub const DYNAMIC: usize = 64;
    /// 1 once a newer index file replaced this one.
    pub const RETIRED: usize = 64;
    /// State bits: 1 = a writer is mid-mutation, 2 = synced clean.
    pub const STATE: usize = 72;
    /// Boot id of the last writer (two words).
    pub const BOOT_ID: usize = 80;
    /// Next sequence number.
    pub const NEXT_SEQ: usize = 96;
    /// Id of the segment being appended to.
    pub const ACTIVE_SEG: usize = 104;
    /// Append offset in the active segment.
    pub const ACTIVE_OFF: usize = 112;
    /// Next segment id to allocate.
    pub const NEXT_SEG_ID: usize = 120;
    /// Live entries, all namespaces.
    pub const ENTRY_COUNT: usize = 128;
    /// Head of the free entry list (entry + 1, 0 = empty).
    pub const FREE_HEAD: usize = 136;
    /// Entries `0..hwm` have been handed out at least once.
    pub const ENTRY_HWM: usize = 144;
    /// Namespace rows in use.
    pub const NS_COUNT: usize = 152;
    /// Bumped whenever a segment is retired.
    pub const EPOCH: usize = 160;
    /// Compactions completed.
    pub const COMPACTIONS: usize = 168;
    /// Compaction journal: the segment being compacted (0 = none).
    pub const CMP_VICTIM: usize = 176;
    /// Compaction journal: the victim's records before this offset have been
    /// dealt with (copied or dropped) by completed chunks.
    pub const CMP_DONE: usize = 184;
    /// Compaction journal: while a chunk is being copied, the log location
    /// (`segment id << 32 | offset`) where its copies begin; 0 otherwise.
    pub const CMP_DEST: usize = 192;
    /// End of the dynamic words.
    pub const DYNAMIC_END: usize = 200;
}

/// State bit: a writer is between the start and the end of a mutation.
pub const STATE_MUTATING: u64 = 1;
/// State bit: the index and log were synced with no mutation since.
pub const STATE_CLEAN_SYNCED: u64 = 2;

/// Namespace row field offsets.
pub mod nsr {
    /// Name length (0 = free row).
    pub const NAME_LEN: usize = 0;
    /// Entry limit (u64::MAX = none).
    pub const MAXSIZE: usize = 8;
    /// Byte limit (u64::MAX = none).
    pub const MAX_BYTES: usize = 16;
    /// Default TTL in ms (0 = none).
    pub const TTL_MS: usize = 24;
    /// Live entries.
    pub const ENTRIES: usize = 32;
    /// Live record bytes.
    pub const LIVE_BYTES: usize = 40;
    /// Evictions since the last clear.
    pub const EVICTIONS: usize = 48;
    /// Sequence number of the last CLEAR.
    pub const CLEAR_SEQ: usize = 56;
    /// LRU head (most recent; entry + 1).
    pub const LRU_HEAD: usize = 64;
    /// LRU tail (least recent; entry + 1).
    pub const LRU_TAIL: usize = 72;
    /// xxh3 of the name.
    pub const NAME_HASH: usize = 80;
    /// Sequence number of the NAMESPACE record in force.
    pub const DEF_SEQ: usize = 88;
    /// Earliest expiry (unix ms) of the namespace's entries as the last
    /// sweep or rebuild found it, lowered by every put with an expiry; 0 =
    /// none. Sweeps of expired entries run only once it has passed. (A put
    /// racing a chunked background sweep can leave it later than the truth;
    /// that only delays the sweep: an expired entry is a miss regardless.)
    pub const NEXT_EXPIRY: usize = 96;
    /// When the last expiry sweep of the namespace ran (unix ms).
    pub const LAST_SWEEP: usize = 104;
    /// When the namespace was last used (unix seconds; 0 = unknown): opened
    /// by a process, written, or looked up. Raised with `fetch_max` by any
    /// process; a lookup raises it only when it is more than
    /// [`super::LAST_USE_GRANULARITY_SECS`] behind. These bytes were zero in every
    /// row of earlier builds, so an older index reads as "unknown".
    pub const LAST_USED: usize = 112;
    /// Stored entries that failed a check of the layer above the engine
    /// (picocache's seal; atomic, counted by any process, reset by a clear).
    /// These bytes were zero in every row of earlier builds.
    pub const REJECTED: usize = 120;
    /// Use clock (atomic; stamps come from here).
    pub const CLOCK: usize = 128;
    /// Hits (atomic).
    pub const HITS: usize = 136;
    /// Misses (atomic).
    pub const MISSES: usize = 144;
    /// Name bytes (up to MAX_NAME_LEN).
    pub const NAME: usize = 152;
}

/// A lookup updates a namespace's last use only when the stored time is more
/// than this many seconds old, so hits do not write to the row.
pub const LAST_USE_GRANULARITY_SECS: u64 = 60;

/// Segment row field offsets.
pub mod segr {
    /// Segment id (0 = free row).
    pub const ID: usize = 0;
    /// 1 = active, 2 = sealed.
    pub const STATE: usize = 8;
    /// Bytes of records written (header included).
    pub const TOTAL: usize = 16;
    /// Bytes of records no longer live.
    pub const DEAD: usize = 24;
    /// Lowest sequence number of any PUT record in the segment (0 = none).
    /// Compaction keeps a tombstone only while some other segment may hold
    /// an older PUT that it shadows.
    pub const MIN_PUT: usize = 32;
}

/// Entry field offsets.
pub mod ent {
    /// Location: segment id << 32 | offset (0 = free).
    pub const LOC: usize = 0;
    /// Full 64-bit key hash.
    pub const HASH: usize = 8;
    /// Last use stamp (atomic, bumped by hits in any process).
    pub const STAMP: usize = 16;
    /// Stamp at which the entry took its place in the LRU list.
    pub const LIST_STAMP: usize = 24;
    /// prev + 1 (low 32 bits), next + 1 (high 32 bits).
    pub const LINKS: usize = 32;
    /// namespace id (low 32 bits), record size (high 32 bits).
    pub const NS_SIZE: usize = 40;
}

/// Byte offsets of the index's regions for a given bucket count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLayout {
    /// Bucket count.
    pub buckets: u64,
    /// Entry capacity.
    pub entries: u64,
    /// Namespace table offset.
    pub ns_off: usize,
    /// Segment table offset.
    pub seg_off: usize,
    /// Bucket array offset.
    pub bucket_off: usize,
    /// Entry array offset.
    pub entry_off: usize,
    /// Total file length.
    pub file_len: usize,
}

impl IndexLayout {
    /// The layout for `buckets` buckets (a power of two, at least
    /// [`MIN_BUCKETS`]); the entry capacity is 3/4 of it.
    pub fn new(buckets: u64) -> Option<IndexLayout> {
        if !buckets.is_power_of_two() || !(MIN_BUCKETS..=(1 << 31)).contains(&buckets) {
            return None;
        }
        let entries = buckets / 4 * 3;
        let ns_off = IDX_HEADER_LEN;
        let seg_off = ns_off + MAX_NAMESPACES * NS_ROW_LEN;
        let bucket_off = seg_off + MAX_SEGMENTS * SEG_ROW_LEN;
        let entry_off = bucket_off + buckets as usize * BUCKET_LEN;
        let file_len = entry_off + entries as usize * ENTRY_LEN;
        Some(IndexLayout {
            buckets,
            entries,
            ns_off,
            seg_off,
            bucket_off,
            entry_off,
            file_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_roundtrip() {
        let b = encode_segment_header(0x1234);
        assert_eq!(check_segment_header(&b), SegHeaderCheck::Ok(0x1234));
        let mut c = b;
        c[20] = 1;
        assert!(matches!(check_segment_header(&c), SegHeaderCheck::Bad(_)));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(0x1234)),
            Some(0x1234)
        );
        assert_eq!(parse_segment_file_name("seg-xyz.log"), None);
    }
}
