//! Log version 2 (`format::v2::record`): segment headers with `seq_base`
//! and compact records (FORMAT.md, "Segment files, log version 2").
//! Encoders, the parser, and the scan that resynchronises byte by byte
//! after damage. Version 1's records are [`crate::format::v1`].
//!
//! Not yet written by the store: build step 2 of format version 2 wires it
//! into the log and the writer (until then only the tests use it).
#![cfg_attr(not(test), allow(dead_code))]

use crate::format::{kind, MAX_KEY_LEN, MAX_VALUE_LEN, SEG_HEADER_LEN, SEG_MAGIC};
use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

/// The log version of segments that hold version-2 records.
pub const LOG_VERSION: u32 = 2;
/// Where a version-2 segment header keeps `seq_base` (u64; bytes 16..24,
/// zero in a version-1 header).
pub const SEQ_BASE_AT: usize = 16;
/// The seed of a record's checksum: `xxh3_64_with_seed(bytes 4..end, seed)`,
/// low 32 bits. The seed of every version-2 checksum, [`super::SUM_SEED`].
pub const REC_SEED: u64 = super::SUM_SEED;
/// The high nibble every record's `kind` byte carries.
pub const KIND_MARK: u8 = 0xA0;
/// `kind` bit: the record has an expiry.
pub const HAS_EXPIRY: u8 = 0x08;
/// The fixed part of a header: checksum, kind, namespace.
pub const REC_FIXED: usize = 7;
/// The longest header: the fixed part, `klen` (3), `vlen` (5), `seq - base`
/// (10), expiry (10).
pub const REC_MAX_HEADER: usize = REC_FIXED + 3 + 5 + 10 + 10;
/// The shortest record: a fixed part and one byte for each of `klen`, `vlen`
/// and `seq - base`.
pub const REC_MIN_LEN: usize = REC_FIXED + 3;

/// Encodes a version-2 segment header: version 1's with version 2 and
/// `seq_base` (bytes 16..24).
pub fn encode_segment_header(id: u32, seq_base: u64) -> [u8; SEG_HEADER_LEN as usize] {
    let mut b = [0u8; SEG_HEADER_LEN as usize];
    b[0..8].copy_from_slice(&SEG_MAGIC);
    b[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&id.to_le_bytes());
    b[SEQ_BASE_AT..SEQ_BASE_AT + 8].copy_from_slice(&seq_base.to_le_bytes());
    let crc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The id and `seq_base` of a valid version-2 segment header; None for any
/// other bytes (a bad magic or checksum, another version).
pub fn check_segment_header(b: &[u8; SEG_HEADER_LEN as usize]) -> Option<(u32, u64)> {
    let word = |r: std::ops::Range<usize>| b[r].iter().rev().fold(0u64, |a, &x| a << 8 | x as u64);
    let ok = b[0..8] == SEG_MAGIC
        && crc32fast::hash(&b[..60]) == word(60..64) as u32
        && word(8..12) == LOG_VERSION as u64;
    ok.then(|| (word(12..16) as u32, word(SEQ_BASE_AT..SEQ_BASE_AT + 8)))
}

/// One version-2 record, as parsed (borrowing its key and value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// One of [`kind`].
    pub kind: u8,
    /// The namespace row.
    pub ns: u16,
    /// The sequence number (absolute: `seq_base` added back).
    pub seq: u64,
    /// Expiry in Unix milliseconds, 0 for none.
    pub expire_ms: u64,
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// The record's length in the log (header, key and value; no padding).
    pub len: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an LEB128 of at most `max` bytes at `*at`: None if the bytes end
/// first, the encoding is longer than `max` or not minimal, or overflows.
fn get_varint(b: &[u8], at: &mut usize, max: usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..max {
        let x = *b.get(*at + i)?;
        let part = (x & 0x7f) as u64;
        if i == 9 && part > 1 {
            return None;
        }
        v |= part << (7 * i);
        if x & 0x80 == 0 {
            if i > 0 && x == 0 {
                return None; // not minimal
            }
            *at += i + 1;
            return Some(v);
        }
    }
    None
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

/// Appends a record's header and key to `out`, for a value of `vlen` bytes;
/// its checksum is left zero (see [`encode_record`]).
fn head(
    out: &mut Vec<u8>,
    kind: u8,
    ns: u16,
    seq_delta: i64,
    expire_ms: u64,
    key: &[u8],
    vlen: usize,
) {
    out.extend_from_slice(&[0; 4]);
    let flags = if expire_ms != 0 { HAS_EXPIRY } else { 0 };
    out.push(KIND_MARK | flags | kind);
    out.extend_from_slice(&ns.to_le_bytes());
    put_varint(out, key.len() as u64);
    put_varint(out, vlen as u64);
    put_varint(out, zigzag(seq_delta));
    if expire_ms != 0 {
        put_varint(out, expire_ms);
    }
    out.extend_from_slice(key);
}

/// Appends a version-2 record to `out`, in a segment whose `seq_base` is
/// `seq_base`. The key and value must be within [`MAX_KEY_LEN`] and
/// [`MAX_VALUE_LEN`] (the writer checks them before).
#[allow(clippy::too_many_arguments)]
pub fn encode_record(
    out: &mut Vec<u8>,
    kind: u8,
    ns: u16,
    seq_base: u64,
    seq: u64,
    expire_ms: u64,
    key: &[u8],
    value: &[u8],
) {
    let start = out.len();
    head(
        out,
        kind,
        ns,
        seq.wrapping_sub(seq_base) as i64,
        expire_ms,
        key,
        value.len(),
    );
    out.extend_from_slice(value);
    let sum = xxh3_64_with_seed(&out[start + 4..], REC_SEED) as u32;
    out[start..start + 4].copy_from_slice(&sum.to_le_bytes());
}

/// Appends the header and key of a record whose value is the concatenation
/// of `parts` (not copied): the record is these bytes, then the parts. The
/// checksum covers the parts as [`encode_record`]'s covers its value.
#[allow(clippy::too_many_arguments)]
pub fn encode_record_head(
    out: &mut Vec<u8>,
    kind: u8,
    ns: u16,
    seq_base: u64,
    seq: u64,
    expire_ms: u64,
    key: &[u8],
    parts: &[&[u8]],
) {
    let start = out.len();
    let vlen = parts.iter().map(|p| p.len()).sum();
    head(
        out,
        kind,
        ns,
        seq.wrapping_sub(seq_base) as i64,
        expire_ms,
        key,
        vlen,
    );
    let mut h = Xxh3::with_seed(REC_SEED);
    h.update(&out[start + 4..]);
    for p in parts {
        h.update(p);
    }
    let sum = h.digest() as u32;
    out[start..start + 4].copy_from_slice(&sum.to_le_bytes());
}

/// What the bytes at an offset of a log hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole record whose checksum holds.
    Record(Record<'a>),
    /// A header that could begin a record, whose record runs past the end of
    /// the bytes given (a torn last write, or a longer read is needed).
    Short,
    /// Not a record: zeros (unwritten), damage, or the middle of a record.
    Bad,
}

/// Parses the record at the start of `b`, in a segment whose `seq_base` is
/// `seq_base`. Every byte is checked before it is trusted: the kind and its
/// mark, the lengths against the limits (before anything is allocated), the
/// checksum over the whole record.
pub fn parse_record(b: &[u8], seq_base: u64) -> Parsed<'_> {
    let Some(&k) = b.get(4) else {
        return if b.iter().all(|&x| x == 0) {
            Parsed::Bad
        } else {
            Parsed::Short
        };
    };
    let kind_bits = k & 0x07;
    if k & 0xF0 != KIND_MARK || !(kind::PUT..=kind::NAMESPACE).contains(&kind_bits) {
        return Parsed::Bad;
    }
    if b.len() < REC_FIXED {
        return Parsed::Short;
    }
    let ns = u16::from_le_bytes([b[5], b[6]]);
    let mut at = REC_FIXED;
    let short_or_bad = |at: usize, max: usize| {
        // A varint cut by the end of the bytes, not a bad one.
        if b.len() < at + max && b[at..].iter().all(|&x| x & 0x80 != 0) {
            Parsed::Short
        } else {
            Parsed::Bad
        }
    };
    let Some(klen) = get_varint(b, &mut at, 3) else {
        return short_or_bad(at, 3);
    };
    let Some(vlen) = get_varint(b, &mut at, 5) else {
        return short_or_bad(at, 5);
    };
    if klen as usize > MAX_KEY_LEN || vlen as usize > MAX_VALUE_LEN {
        return Parsed::Bad;
    }
    let Some(dz) = get_varint(b, &mut at, 10) else {
        return short_or_bad(at, 10);
    };
    let expire_ms = if k & HAS_EXPIRY != 0 {
        match get_varint(b, &mut at, 10) {
            Some(0) => return Parsed::Bad, // an expiry of 0 is written as none
            Some(e) => e,
            None => return short_or_bad(at, 10),
        }
    } else {
        0
    };
    let len = at + klen as usize + vlen as usize;
    if b.len() < len {
        return Parsed::Short;
    }
    let sum = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if xxh3_64_with_seed(&b[4..len], REC_SEED) as u32 != sum {
        return Parsed::Bad;
    }
    let key = &b[at..at + klen as usize];
    Parsed::Record(Record {
        kind: kind_bits,
        ns,
        seq: seq_base.wrapping_add(unzigzag(dz) as u64),
        expire_ms,
        key,
        value: &b[at + klen as usize..len],
        len,
    })
}

/// The records of a log's bytes `b` (from the first byte after the segment
/// header), with their offsets in `b`: a record is taken where one parses,
/// and after bytes that are not one the scan tries every next byte offset
/// (version 1 tried every eighth). Zeros are skipped the same way, so a
/// record written after a hole is still found. Returns the records and the
/// offset just past the last one (where an append would go).
pub fn scan(b: &[u8], seq_base: u64) -> (Vec<(usize, Record<'_>)>, usize) {
    let mut out = Vec::new();
    let (mut at, mut end) = (0, 0);
    while at + REC_MIN_LEN <= b.len() {
        match parse_record(&b[at..], seq_base) {
            Parsed::Record(r) => {
                out.push((at, r));
                at += r.len;
                end = at;
            }
            Parsed::Short | Parsed::Bad => {
                // A record's first nonzero byte is its checksum's or, at the
                // latest, its kind (offset 4): across a run of zeros the
                // next record starts at most 4 bytes before its end.
                let zeros = b[at..].iter().take_while(|&&x| x == 0).count();
                at += zeros.saturating_sub(4).max(1);
            }
        }
    }
    (out, end)
}

#[cfg(test)]
mod tests;
