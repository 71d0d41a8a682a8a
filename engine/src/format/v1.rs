//! Log version 1's records (FORMAT.md, "Segment files"): the 40-byte
//! header, its parser, the encoders (whole, and head-then-parts as
//! `put_parts` writes) and the checksum check. What both log versions share
//! (the segment header, record kinds, limits, names) is in
//! [`crate::format`]; version 2's records are [`crate::format::v2::record`].
//!
//! ```text
//! record (40-byte header, 8-aligned)
//! 0   4 crc32 of bytes 4..40+klen+vlen
//! 4   1 kind (1 put 2 remove 3 clear 4 ns)
//! 5   3 zero
//! 8   4 namespace id
//! 12  4 key length
//! 16  4 value length
//! 20  4 marker "PCRK"
//! 24  8 sequence number
//! 32  8 expiry (unix ms, 0 = none)
//! 40  key, value, zero padding to 8
//! ```

use super::{align8, kind, le32, le64, MAX_KEY_LEN, MAX_VALUE_LEN};

/// The log version of segments that hold version-1 records.
pub const LOG_VERSION: u32 = 1;
/// Size of a record header.
pub const REC_HEADER_LEN: usize = 40;
/// Marker in every record header (helps resynchronise after damage).
pub const REC_MARKER: u32 = u32::from_le_bytes(*b"PCRK");
/// The full on-disk size of a record with these lengths.
pub const fn record_size(klen: usize, vlen: usize) -> u64 {
    align8((REC_HEADER_LEN + klen + vlen) as u64)
}

/// A record's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Stored checksum.
    pub crc: u32,
    /// One of [`kind`].
    pub kind: u8,
    /// Namespace id.
    pub ns: u32,
    /// Key length.
    pub klen: u32,
    /// Value length.
    pub vlen: u32,
    /// Sequence number.
    pub seq: u64,
    /// Expiry, unix milliseconds, 0 = none.
    pub expire_ms: u64,
}

impl RecordHeader {
    /// Parses a header; `None` if the bytes cannot be one (zero kind, unknown
    /// kind, bad marker, nonzero reserved bytes, or lengths over the limits).
    pub fn parse(b: &[u8; REC_HEADER_LEN]) -> Option<RecordHeader> {
        let kind = b[4];
        if !(kind::PUT..=kind::NAMESPACE).contains(&kind) || b[5..8] != [0, 0, 0] {
            return None;
        }
        if le32(b, 20) != REC_MARKER {
            return None;
        }
        let h = RecordHeader {
            crc: le32(b, 0),
            kind,
            ns: le32(b, 8),
            klen: le32(b, 12),
            vlen: le32(b, 16),
            seq: le64(b, 24),
            expire_ms: le64(b, 32),
        };
        if h.klen as usize > MAX_KEY_LEN || h.vlen as usize > MAX_VALUE_LEN {
            return None;
        }
        Some(h)
    }

    /// Total on-disk size of the record, padding included.
    pub fn size(&self) -> u64 {
        record_size(self.klen as usize, self.vlen as usize)
    }

    /// Length of the checksummed part (header + key + value).
    pub fn body_len(&self) -> usize {
        REC_HEADER_LEN + self.klen as usize + self.vlen as usize
    }
}

/// Appends an encoded record to `out`.
pub fn encode_record(
    out: &mut Vec<u8>,
    kind: u8,
    ns: u32,
    seq: u64,
    expire_ms: u64,
    key: &[u8],
    value: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&ns.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&REC_MARKER.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&expire_ms.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    let padded = start + record_size(key.len(), value.len()) as usize;
    out.resize(padded, 0);
}

/// Appends the header and key of a record whose value is the concatenation
/// of `parts` (the value itself is not copied): the record is these bytes,
/// then the parts, then zeros up to [`record_size`]. The crc covers the
/// parts as [`encode_record`]'s covers its value.
pub fn encode_record_head(
    out: &mut Vec<u8>,
    kind: u8,
    ns: u32,
    seq: u64,
    expire_ms: u64,
    key: &[u8],
    parts: &[&[u8]],
) {
    let start = out.len();
    let vlen: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&ns.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(vlen as u32).to_le_bytes());
    out.extend_from_slice(&REC_MARKER.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&expire_ms.to_le_bytes());
    out.extend_from_slice(key);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start + 4..]);
    for p in parts {
        crc.update(p);
    }
    out[start..start + 4].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// Checks a whole record body (header + key + value) against its crc.
pub fn record_crc_ok(h: &RecordHeader, body: &[u8]) -> bool {
    body.len() == h.body_len() && crc32fast::hash(&body[4..]) == h.crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip() {
        let mut v = Vec::new();
        encode_record(&mut v, kind::PUT, 7, 42, 99, b"key", b"value!");
        assert_eq!(v.len() as u64, record_size(3, 6));
        assert_eq!(v.len() % 8, 0);
        let h = RecordHeader::parse(v[..REC_HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(
            (h.kind, h.ns, h.klen, h.vlen, h.seq, h.expire_ms),
            (1, 7, 3, 6, 42, 99)
        );
        assert!(record_crc_ok(&h, &v[..h.body_len()]));
        v[REC_HEADER_LEN] ^= 1;
        assert!(!record_crc_ok(&h, &v[..h.body_len()]));
    }
}
