//! Expiry: sweeping namespaces of entries whose TTL has passed, inline under
//! the writer lock for small namespaces and in chunks for large ones.

use crate::ctx::now_ms;
use crate::error::Result;
use crate::format::{self, ent, hdr, nsr};
use crate::shared::Inner;
use crate::txn::Writer;

/// The largest namespace that a put or `stats` sweeps of expired entries
/// inline (bounded work under the writer lock); larger ones are swept by the
/// background thread in chunks, and by `Store::compact`.
pub(crate) const SWEEP_INLINE_MAX: u64 = 1 << 16;

/// Entry slots a chunked sweep examines per writer-lock hold.
pub(crate) const SWEEP_CHUNK: u64 = 4096;

impl Writer<'_> {
    /// Sweeps `ns` of expired entries if one may have expired (its
    /// `NEXT_EXPIRY` has passed) and the namespace holds at most `max_entries`
    /// entries; at most once a second unless `max_entries` is `u64::MAX`.
    pub(crate) fn sweep_if_due(&mut self, ns: u32, max_entries: u64) -> Result<()> {
        let idx = &self.idx;
        let next = idx.ns_get(ns, nsr::NEXT_EXPIRY);
        let now = now_ms();
        if next == 0 || next > now || idx.ns_get(ns, nsr::ENTRIES) > max_entries {
            return Ok(());
        }
        if max_entries != u64::MAX && idx.ns_get(ns, nsr::LAST_SWEEP).saturating_add(1000) > now {
            return Ok(());
        }
        let mut from = 0;
        let mut min = 0;
        while let Some(next_from) = self.sweep_chunk(ns, from, u64::MAX, &mut min)? {
            from = next_from;
        }
        self.finish_sweep(ns, min, next);
        Ok(())
    }

    /// Drops the expired entries of `ns` among entry slots `from..` (at most
    /// `limit` slots), folding the other entries' expiries into `min`.
    /// Returns where to go on, or `None` at the end of the entry array.
    pub(crate) fn sweep_chunk(
        &mut self,
        ns: u32,
        from: u64,
        limit: u64,
        min: &mut u64,
    ) -> Result<Option<u64>> {
        let idx = self.idx.clone();
        let now = now_ms();
        let end = idx.hget(hdr::ENTRY_HWM).min(idx.layout.entries);
        let stop = from.saturating_add(limit).min(end);
        for e in from..stop {
            let e = e as u32;
            let loc = idx.eget(e, ent::LOC);
            if loc == 0 || idx.ns_size(e).0 != ns {
                continue;
            }
            let Some(h) = self.ctx.read_header(loc) else {
                continue;
            };
            if h.expire_ms == 0 {
                continue;
            }
            if h.expire_ms <= now {
                self.drop_entry(e)?;
            } else if *min == 0 || h.expire_ms < *min {
                *min = h.expire_ms;
            }
        }
        Ok((stop < end).then_some(stop))
    }

    /// Ends a sweep: `min` is the earliest expiry it saw among the entries it
    /// kept, `at_start` the namespace's `NEXT_EXPIRY` when it began. Puts
    /// during a chunked sweep only ever lowered `NEXT_EXPIRY`: if one did,
    /// its value is kept when lower.
    pub(crate) fn finish_sweep(&mut self, ns: u32, min: u64, at_start: u64) {
        let cur = self.idx.ns_get(ns, nsr::NEXT_EXPIRY);
        let next = if cur != at_start && cur != 0 && (min == 0 || cur < min) {
            cur
        } else {
            min
        };
        self.idx.ns_set(ns, nsr::NEXT_EXPIRY, next);
        self.idx.ns_set(ns, nsr::LAST_SWEEP, now_ms());
    }
}

impl Inner {
    /// Sweeps every namespace whose earliest expiry has passed of its
    /// expired entries, a chunk of entry slots per writer-lock hold. The
    /// background thread (`force` false) sweeps a namespace at most every
    /// second plus a second per 100,000 entries; `Store::compact` always.
    pub(crate) fn sweep_expired(&self, force: bool) -> Result<()> {
        let due = self.with_writer_ro(|w| {
            let now = now_ms();
            let idx = &w.idx;
            Ok((0..format::MAX_NAMESPACES as u32)
                .filter(|&ns| idx.ns_get(ns, nsr::NAME_LEN) != 0)
                .filter(|&ns| {
                    let next = idx.ns_get(ns, nsr::NEXT_EXPIRY);
                    let gap = 1000 + idx.ns_get(ns, nsr::ENTRIES) / 100;
                    next != 0
                        && next <= now
                        && (force || idx.ns_get(ns, nsr::LAST_SWEEP).saturating_add(gap) <= now)
                })
                .map(|ns| (ns, idx.ns_get(ns, nsr::NEXT_EXPIRY)))
                .collect::<Vec<_>>())
        })?;
        for (ns, at_start) in due {
            let mut from = Some(0);
            let mut min = 0;
            while let Some(f) = from {
                from = self.with_writer(|w| {
                    if w.idx.ns_get(ns, nsr::NAME_LEN) == 0 {
                        return Ok(None);
                    }
                    w.sweep_chunk(ns, f, crate::expiry::SWEEP_CHUNK, &mut min)
                })?;
            }
            self.with_writer(|w| {
                w.finish_sweep(ns, min, at_start);
                Ok(())
            })?;
        }
        Ok(())
    }
}
