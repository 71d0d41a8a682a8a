//! A put whose value comes in parts (issue 18): the record's header and key
//! are encoded apart and the parts are written after them where they go in
//! the segment, never joined into one buffer first. A sealed 100 MB value
//! (the seal's 21-byte head, then the value) is then written with no copy
//! of it besides the write itself. The record is the one
//! [`crate::format::v1::encode_record`] would make of the joined value.

use std::time::Duration;

use crate::error::Result;
use crate::format::v1::{self, REC_HEADER_LEN};
use crate::format::{kind, nsr};
use crate::read::Located;
use crate::txn::Writer;

impl Writer<'_> {
    /// Stores the concatenation of `parts` under `key` in namespace `ns`, as
    /// `put_batch` stores one item. Returns the [`Located`] token of the
    /// record, or `None` when the limits keep it from being stored
    /// (`maxsize` 0, or a record larger than `max_bytes`).
    pub(crate) fn put_parts(
        &mut self,
        ns: u32,
        key: &[u8],
        parts: &[&[u8]],
        ttl: Option<Duration>,
    ) -> Result<Option<Located>> {
        let maxsize = self.idx.ns_get(ns, nsr::MAXSIZE);
        let max_bytes = self.idx.ns_get(ns, nsr::MAX_BYTES);
        let vlen: usize = parts.iter().map(|p| p.len()).sum();
        let size = v1::record_size(key.len(), vlen);
        if maxsize == 0 || size > max_bytes {
            return Ok(None);
        }
        let expire = self.expire_at(ns, ttl);
        self.reserve(1)?;
        let seq = self.next_seq();
        let mut head = Vec::with_capacity(REC_HEADER_LEN + key.len());
        v1::encode_record_head(&mut head, kind::PUT, ns, seq, expire, key, parts);
        let loc = self.append_parts(&head, parts, size, seq)?;
        self.note_expiry(ns, expire);
        let e = self.index_put(ns, key, loc, size as u32)?;
        self.enforce(ns)?;
        Ok(Some(self.located(ns, e, loc, expire)))
    }
}
