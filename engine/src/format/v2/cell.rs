//! Version-2 cells, heap records and bucket directories (FORMAT.md,
//! "Bucket", "Cell").

use super::{
    cf, le16, le32, le64, sum32, BUCKET_LEN, CELL_HDR, DIR_HDR, HEAP_REC_HDR, HEAP_REF_LEN,
    INLINE_KEY_MAX, INLINE_MAX, MAX_CELLS, SLOT_LEN,
};
use crate::format::{MAX_KEY_LEN, MAX_VALUE_LEN};

// ---------------------------------------------------------------------------
// Cells and heap records
// ---------------------------------------------------------------------------

/// Bytes of the optional fields for these flags.
#[inline]
pub fn extra_len(flags: u8) -> usize {
    (if flags & cf::ENTRY != 0 { 4 } else { 0 }) + (if flags & cf::EXPIRY != 0 { 8 } else { 0 })
}

/// Whether an entry with these lengths and optional fields is an inline
/// cell (else a `HEAP` cell).
pub fn is_inline(klen: usize, vlen: usize, entry: bool, expiry: bool) -> bool {
    let flags = if entry { cf::ENTRY } else { 0 } | if expiry { cf::EXPIRY } else { 0 };
    klen <= INLINE_KEY_MAX && CELL_HDR + extra_len(flags) + klen + vlen <= INLINE_MAX
}

/// The bytes the entry's cell takes in its bucket (without its directory
/// slot), inline or `HEAP`.
pub fn cell_len(klen: usize, vlen: usize, entry: bool, expiry: bool) -> usize {
    let flags = if entry { cf::ENTRY } else { 0 } | if expiry { cf::EXPIRY } else { 0 };
    if is_inline(klen, vlen, entry, expiry) {
        CELL_HDR + extra_len(flags) + klen + vlen
    } else {
        CELL_HDR + extra_len(flags) + HEAP_REF_LEN
    }
}

/// The length of a heap record for these lengths.
pub fn heap_record_len(klen: usize, vlen: usize) -> usize {
    HEAP_REC_HDR + klen + vlen
}

/// What a cell holds in place of its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellBody<'a> {
    /// Key and value inline.
    Inline {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Key and value in the heap record at `off` (from the heap's start).
    Heap {
        /// Offset of the heap record from `heap_off`.
        off: u64,
        /// Key length.
        klen: u32,
        /// Value length.
        vlen: u32,
    },
}

/// A decoded, checked cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell<'a> {
    /// The namespace row.
    pub ns: u16,
    /// The LRU ordinal (with `ENTRY`).
    pub entry: Option<u32>,
    /// Unix ms (with `EXPIRY`).
    pub expiry_ms: Option<u64>,
    /// Key and value, or their heap reference.
    pub body: CellBody<'a>,
}

/// Appends a cell. With `heap_off` = `Some(off)` the cell is a `HEAP`
/// cell referring to a heap record of `key` and `value` at `off` (from the
/// heap's start); otherwise key and value are inline (the caller checked
/// [`is_inline`]).
pub fn encode_cell(
    out: &mut Vec<u8>,
    ns: u16,
    entry: Option<u32>,
    expiry_ms: Option<u64>,
    key: &[u8],
    value: &[u8],
    heap_off: Option<u64>,
) {
    let start = out.len();
    let mut flags = 0;
    if entry.is_some() {
        flags |= cf::ENTRY;
    }
    if expiry_ms.is_some() {
        flags |= cf::EXPIRY;
    }
    let (klen, vlen) = match heap_off {
        Some(_) => {
            flags |= cf::HEAP;
            (0u8, HEAP_REF_LEN as u16)
        }
        None => (key.len() as u8, value.len() as u16),
    };
    out.extend_from_slice(&[0, 0, 0, 0, flags, klen]);
    out.extend_from_slice(&vlen.to_le_bytes());
    out.extend_from_slice(&ns.to_le_bytes());
    if let Some(e) = entry {
        out.extend_from_slice(&e.to_le_bytes());
    }
    if let Some(x) = expiry_ms {
        out.extend_from_slice(&x.to_le_bytes());
    }
    match heap_off {
        Some(off) => {
            out.extend_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        None => {
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
    }
    let sum = sum32(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&sum.to_le_bytes());
}

/// A cell's full length from its first [`CELL_HDR`] bytes (unchecked:
/// only to know how many bytes to copy before the checksum is tried);
/// `None` if the flags are not a cell's.
#[inline]
pub fn cell_len_from_head(head: &[u8]) -> Option<usize> {
    let flags = *head.get(4)?;
    if flags & !cf::ALL != 0 {
        return None;
    }
    Some(CELL_HDR + extra_len(flags) + *head.get(5)? as usize + le16(head, 6))
}

/// Decodes and checks a whole cell (`b` is exactly the cell): its
/// checksum first, then flags and lengths. `None` for anything else.
#[inline]
pub fn decode_cell(b: &[u8]) -> Option<Cell<'_>> {
    if cell_len_from_head(b)? != b.len() || sum32(&b[4..]) != le32(b, 0) {
        return None;
    }
    let flags = b[4];
    let (klen, vlen) = (b[5] as usize, le16(b, 6));
    let mut at = CELL_HDR;
    let entry = (flags & cf::ENTRY != 0).then(|| {
        at += 4;
        le32(b, at - 4)
    });
    let expiry_ms = (flags & cf::EXPIRY != 0).then(|| {
        at += 8;
        le64(b, at - 8)
    });
    let body = if flags & cf::HEAP != 0 {
        if klen != 0 || vlen != HEAP_REF_LEN {
            return None;
        }
        let (k, v) = (le32(b, at + 8), le32(b, at + 12));
        if k as usize > MAX_KEY_LEN || v as usize > MAX_VALUE_LEN {
            return None;
        }
        CellBody::Heap {
            off: le64(b, at),
            klen: k,
            vlen: v,
        }
    } else {
        CellBody::Inline {
            key: &b[at..at + klen],
            value: &b[at + klen..],
        }
    };
    Some(Cell {
        ns: le16(b, 8) as u16,
        entry,
        expiry_ms,
        body,
    })
}

/// Appends a heap record.
pub fn encode_heap_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; HEAP_REC_HDR]);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let sum = sum32(&out[start + HEAP_REC_HDR..]);
    out[start..start + HEAP_REC_HDR].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a heap record (`b` is exactly the record) and splits it into key
/// and value.
pub fn decode_heap_record(b: &[u8], klen: usize) -> Option<(&[u8], &[u8])> {
    if b.len() < HEAP_REC_HDR + klen || sum32(&b[HEAP_REC_HDR..]) != le32(b, 0) {
        return None;
    }
    Some(b[HEAP_REC_HDR..].split_at(klen))
}

// ---------------------------------------------------------------------------
// Buckets
// ---------------------------------------------------------------------------

/// A bucket's directory header, clamped to what a bucket can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirHead {
    /// Cells (at most [`MAX_CELLS`]).
    pub n: usize,
    /// Buckets after this one holding cells whose home is this one.
    pub reach: u64,
    /// End of the last cell (at most [`BUCKET_LEN`]).
    pub end: usize,
}

impl DirHead {
    /// Parses the first [`DIR_HDR`] bytes of a bucket.
    pub fn parse(b: &[u8]) -> DirHead {
        DirHead {
            n: (*b.first().unwrap_or(&0) as usize).min(MAX_CELLS),
            reach: *b.get(1).unwrap_or(&0) as u64,
            end: le16(b, 2).min(BUCKET_LEN),
        }
    }

    /// End of the directory (where cells may begin).
    pub fn dir_end(&self) -> usize {
        DIR_HDR + SLOT_LEN * self.n
    }
}

/// Where slot `i`'s cell starts, from a directory `dir` of `n` slots.
#[inline]
pub fn slot_offset(dir: &[u8], n: usize, i: usize) -> usize {
    le16(dir, DIR_HDR + n + 2 * i)
}

/// Encodes a bucket of `cells` (fingerprint, cell bytes), in slot order,
/// with `reach`. `None` if they do not fit.
pub fn encode_bucket(cells: &[(u8, &[u8])], reach: u8) -> Option<Vec<u8>> {
    let n = cells.len();
    let mut off = DIR_HDR + SLOT_LEN * n;
    let used = off + cells.iter().map(|c| c.1.len()).sum::<usize>();
    if n > MAX_CELLS || used > BUCKET_LEN {
        return None;
    }
    let mut page = vec![0u8; BUCKET_LEN];
    page[0] = n as u8;
    page[1] = reach;
    page[2..4].copy_from_slice(&(used as u16).to_le_bytes());
    for (i, (fp, c)) in cells.iter().enumerate() {
        page[DIR_HDR + i] = *fp;
        page[DIR_HDR + n + 2 * i..DIR_HDR + n + 2 * i + 2]
            .copy_from_slice(&(off as u16).to_le_bytes());
        page[off..off + c.len()].copy_from_slice(c);
        off += c.len();
    }
    Some(page)
}

/// The directory slots among `fps` (at most 64) holding fingerprint `fp`,
/// as bits, eight slots compared per word (a zero-byte test).
#[inline]
pub fn fp_matches(fps: &[u8], fp: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut bits = 0u64;
    for (c, chunk) in fps.chunks(8).take(MAX_CELLS / 8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let x = u64::from_le_bytes(w) ^ (fp as u64 * LO);
        let mut z = x.wrapping_sub(LO) & !x & HI;
        while z != 0 {
            let i = c * 8 + (z.trailing_zeros() / 8) as usize;
            // The zero-byte test can flag a byte above a true zero byte.
            if chunk.get(i - c * 8) == Some(&fp) {
                bits |= 1 << i;
            }
            z &= z - 1;
        }
    }
    bits
}
