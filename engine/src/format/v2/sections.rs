//! The base's namespace section and LRU sections (FORMAT.md, "Cell",
//! "Namespace section", "LRU sections").
//!
//! ```text
//! namespace section: sum u32 | rows u32 | rows
//!   row: id u16 | name length u8 | name | maxsize, max_bytes, ttl_ms,
//!        def_seq, clear_seq, entries, bytes (u64 each)
//! LRU sections:      sum u32 | sections u32 | sections
//!   section: ns u16 | cells u32 | locations u32 (bucket << 6 | slot) each
//! ```
//!
//! Each is checksummed as a whole ([`super::sum32`] of the bytes after the
//! sum).

use super::{le16, le32, le64, sum32, MAX_NAME_LEN};

/// One namespace row as a base records it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NsRow {
    /// The row id in the index's namespace table.
    pub id: u16,
    /// The name (empty for a row freed by a removal, kept for its `CLEAR`
    /// sequence number).
    pub name: Vec<u8>,
    /// Entry limit (`u64::MAX` = none), as in the index's row.
    pub maxsize: u64,
    /// Byte limit (`u64::MAX` = none).
    pub max_bytes: u64,
    /// Default TTL in ms (0 = none).
    pub ttl_ms: u64,
    /// `seq` of the `NAMESPACE` record in force.
    pub def_seq: u64,
    /// `seq` of the last `CLEAR`.
    pub clear_seq: u64,
    /// Cells of this namespace in the base.
    pub entries: u64,
    /// Key and value bytes of those cells.
    pub bytes: u64,
}

const ROW_FIXED: usize = 2 + 1 + 7 * 8;

/// Encodes the namespace section. Names longer than [`MAX_NAME_LEN`] are
/// the caller's bug; they are cut to it.
pub fn encode_ns_section(rows: &[NsRow]) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for r in rows {
        let name = &r.name[..r.name.len().min(MAX_NAME_LEN)];
        out.extend_from_slice(&r.id.to_le_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        for v in [
            r.maxsize,
            r.max_bytes,
            r.ttl_ms,
            r.def_seq,
            r.clear_seq,
            r.entries,
            r.bytes,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let sum = sum32(&out[4..]);
    out[..4].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Checks and decodes a namespace section (`b` is exactly the section).
pub fn decode_ns_section(b: &[u8]) -> Option<Vec<NsRow>> {
    if b.len() < 8 || sum32(&b[4..]) != le32(b, 0) {
        return None;
    }
    let count = le32(b, 4) as usize;
    let mut rows = Vec::with_capacity(count.min(b.len() / ROW_FIXED));
    let mut at = 8;
    for _ in 0..count {
        let name_len = *b.get(at + 2)? as usize;
        if name_len > MAX_NAME_LEN || b.len() < at + ROW_FIXED + name_len {
            return None;
        }
        let name = b[at + 3..at + 3 + name_len].to_vec();
        let w = |i: usize| le64(b, at + 3 + name_len + 8 * i);
        rows.push(NsRow {
            id: le16(b, at) as u16,
            name,
            maxsize: w(0),
            max_bytes: w(1),
            ttl_ms: w(2),
            def_seq: w(3),
            clear_seq: w(4),
            entries: w(5),
            bytes: w(6),
        });
        at += ROW_FIXED + name_len;
    }
    (at == b.len()).then_some(rows)
}

/// One namespace's LRU section: the locations of its `ENTRY` cells, least
/// recently used first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LruSection {
    /// The namespace row.
    pub ns: u16,
    /// Cell locations (`bucket << 6 | slot`).
    pub locs: Vec<u32>,
}

/// The length of the LRU sections for `sections` namespaces and `cells`
/// locations in all.
pub fn lru_len(sections: usize, cells: u64) -> u64 {
    8 + 6 * sections as u64 + 4 * cells
}

/// Encodes the LRU sections.
pub fn encode_lru_sections(sections: &[LruSection]) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for s in sections {
        out.extend_from_slice(&s.ns.to_le_bytes());
        out.extend_from_slice(&(s.locs.len() as u32).to_le_bytes());
        for l in &s.locs {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }
    let sum = sum32(&out[4..]);
    out[..4].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Checks and decodes the LRU sections (`b` is exactly them), which must
/// list `lru_cells` locations in all.
pub fn decode_lru_sections(b: &[u8], lru_cells: u64) -> Option<Vec<LruSection>> {
    if b.len() < 8 || sum32(&b[4..]) != le32(b, 0) {
        return None;
    }
    let count = le32(b, 4) as usize;
    let mut out = Vec::with_capacity(count.min(b.len() / 6));
    let (mut at, mut total) = (8usize, 0u64);
    for _ in 0..count {
        if b.len() < at + 6 {
            return None;
        }
        let ns = le16(b, at) as u16;
        let n = le32(b, at + 2) as usize;
        at += 6;
        let end = n.checked_mul(4).and_then(|l| l.checked_add(at))?;
        if end > b.len() {
            return None;
        }
        let locs = (0..n).map(|i| le32(b, at + 4 * i)).collect();
        out.push(LruSection { ns, locs });
        total += n as u64;
        at = end;
    }
    (at == b.len() && total == lru_cells).then_some(out)
}
