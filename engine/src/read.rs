//! Lookups: finding a key's live record through the index, counting hits
//! and misses, and the [`Located`] token.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use crate::ctx::{now_ms, WriteCtx};
use crate::error::Result;
use crate::format::v1::{RecordHeader, REC_HEADER_LEN};
use crate::format::{ent, hdr, kind, nsr};
use crate::hash::key_hash;
use crate::index::IndexMap;
use crate::shared::Inner;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Counts a hit on entry `e` of `ns`: its hit counter, its last use (coarsely:
/// `now` is the use clock) and, in a namespace with a limit (the only kind
/// that evicts), the use clock and the entry's recency stamp. (An unlimited
/// namespace skips the stamp, a store into a third cache line of the lookup;
/// see FORMAT.md, "Hits and recency".)
#[inline]
pub(crate) fn count_hit(idx: &IndexMap, ns: u32, e: u32, now: u64) {
    idx.ns_add(ns, nsr::HITS, 1);
    crate::index::touch_coarse(idx, ns, now);
    if idx.ns_get(ns, nsr::MAXSIZE) == u64::MAX && idx.ns_get(ns, nsr::MAX_BYTES) == u64::MAX {
        return;
    }
    let stamp = idx.ns(ns, nsr::CLOCK).fetch_add(1, Ordering::AcqRel) + 1;
    // Last, so that no locked instruction waits for this store's cache miss.
    idx.e(e, ent::STAMP).store(stamp, Ordering::Relaxed);
}

/// Where a lookup found a key's live record: a token that
/// [`Namespace::hit_located`](crate::Namespace::hit_located) checks later without reading the record again.
///
/// A record is never changed once written, and within one index lineage (the
/// index's generation word: a new one whenever the index is rebuilt from the
/// log, carried over when it is copied into a larger file) a location is
/// never reused. So while the key's entry still points at this location, the
/// record there, hence the value, is the one the lookup returned: an
/// in-process cache of decoded values may serve it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub(crate) lineage: u64,
    pub(crate) loc: u64,
    pub(crate) expire_ms: u64,
    /// The namespace row and the index entry that held the record when it
    /// was found ([`Watch::hit`](crate::Watch::hit) checks that entry directly).
    pub(crate) ns: u32,
    pub(crate) entry: u32,
}

impl Located {
    /// The token of the record at `loc` (expiring at `expire_ms`, 0: never)
    /// held by entry `e` of namespace `ns` in `idx`: what a lookup that
    /// finds it returns, and what a put that wrote it returns.
    pub(crate) fn of(idx: &IndexMap, ns: u32, e: u32, loc: u64, expire_ms: u64) -> Located {
        Located {
            lineage: idx.hget(hdr::GENERATION),
            loc,
            expire_ms,
            ns,
            entry: e,
        }
    }
}

/// Outcome of one lookup.
enum Found {
    Hit,
    Miss,
    Expired,
}

impl WriteCtx {
    /// Finds the live PUT record of `key` in `ns`: (entry, header), with the
    /// record body left in `buf`.
    pub(crate) fn find(
        &self,
        idx: &IndexMap,
        ns: u32,
        key: &[u8],
        h: u64,
        buf: &mut Vec<u8>,
    ) -> Option<(u32, RecordHeader)> {
        self.find_at(idx, ns, key, h, buf).map(|(e, rh, _)| (e, rh))
    }

    /// [`WriteCtx::find`], also returning the record's location.
    pub(crate) fn find_at(
        &self,
        idx: &IndexMap,
        ns: u32,
        key: &[u8],
        h: u64,
        buf: &mut Vec<u8>,
    ) -> Option<(u32, RecordHeader, u64)> {
        let buckets = idx.layout.buckets;
        let tag = h >> 32;
        for step in 0..buckets {
            let pos = h.wrapping_add(step);
            let w = idx.bucket(pos).load(Ordering::Acquire);
            if w == 0 {
                return None;
            }
            if w >> 32 != tag {
                continue;
            }
            let e = (w as u32).wrapping_sub(1);
            if !idx.valid_entry(e) {
                continue;
            }
            let loc = idx.bucket_loc(pos).load(Ordering::Acquire);
            if let Some(rh) = self.read_record(loc, buf) {
                let klen = rh.klen as usize;
                if rh.kind == kind::PUT
                    && rh.ns == ns
                    && buf.get(REC_HEADER_LEN..REC_HEADER_LEN + klen) == Some(key)
                {
                    return Some((e, rh, loc));
                }
            }
        }
        None
    }
}

impl Inner {
    pub(crate) fn lookup<R>(
        &self,
        (ns, name_hash): (u32, u64),
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        self.lookup_at((ns, name_hash), key, true, |v, _| f(v))
    }

    /// The lookup in row `ns`, which holds the namespace whose name hashes
    /// to `name_hash`: `count` says whether it is a use (a hit or a miss
    /// counted, a hit refreshing recency) or a peek that changes nothing.
    ///
    /// The row is checked around the lookup, as a sequence lock: its name
    /// hash and definition sequence (`DEF_SEQ`, set whenever the row is
    /// defined or removed, and when a compaction copies its definition)
    /// before, and again after the record is found. A row removed and
    /// defined again for another namespace meanwhile (by another process:
    /// `remove_namespace`, `picocache prune`), which may have stored the same
    /// key, makes the lookup a miss, never that namespace's value
    /// (adversarial round 25: 0 to 8 wrong values per 1.5 M lookups racing
    /// removals, before); a row defined again under its own name (a
    /// compaction's copy) is looked up again, a few times at most.
    pub(crate) fn lookup_at<R>(
        &self,
        (ns, name_hash): (u32, u64),
        key: &[u8],
        count: bool,
        f: impl FnOnce(&[u8], Located) -> R,
    ) -> Result<Option<R>> {
        self.check_fork()?;
        // A read-only store counts nothing: its index is mapped read-only.
        let count = count && !self.ctx.read_only();
        let h = key_hash(ns, key);
        // The thread's buffer, taken for the lookup and put back after (a
        // new one when the thread-local is gone: a call from another
        // thread-local's destructor as the thread exits).
        let mut scratch = SCRATCH.try_with(RefCell::take).unwrap_or_default();
        let buf = &mut scratch;
        let found = (|| {
            let mut redefined = 0u32;
            loop {
                let guard = self.ctx.index_guard();
                let idx: &IndexMap = &guard;
                if idx.retired() {
                    drop(guard);
                    self.current_index()?;
                    continue;
                }
                self.ctx.prune_segments(idx);
                let defined = idx.ns_get(ns, nsr::DEF_SEQ);
                if idx.ns_get(ns, nsr::NAME_HASH) != name_hash {
                    return Ok(None); // removed since the caller resolved it
                }
                let mut hit_entry = None;
                let mut located = Located {
                    lineage: 0,
                    loc: 0,
                    expire_ms: 0,
                    ns,
                    entry: 0,
                };
                let found = match self.ctx.find_at(idx, ns, key, h, buf) {
                    Some((e, rh, loc)) => {
                        if rh.expire_ms != 0 && now_ms() >= rh.expire_ms {
                            Found::Expired
                        } else {
                            hit_entry = Some(e);
                            located = Located::of(idx, ns, e, loc, rh.expire_ms);
                            Found::Hit
                        }
                    }
                    None => Found::Miss,
                };
                // A concurrent index replacement may have made what we read
                // stale: look again in the new index.
                if idx.retired() {
                    continue;
                }
                if idx.ns_get(ns, nsr::NAME_HASH) != name_hash {
                    return Ok(None); // the row changed hands during the lookup
                }
                if idx.ns_get(ns, nsr::DEF_SEQ) != defined {
                    // Defined again meanwhile: a compaction's copy of the
                    // definition (the same namespace), or a removal and
                    // redefinitions back to this name. Look again.
                    redefined += 1;
                    if redefined > 3 {
                        return Ok(None);
                    }
                    continue;
                }
                return Ok(match found {
                    Found::Hit => {
                        if count {
                            if let Some(e) = hit_entry {
                                count_hit(idx, ns, e, self.ctx.use_clock());
                            }
                        }
                        let klen = buf
                            .get(12..16)
                            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                        buf.get(REC_HEADER_LEN + klen..).map(|v| f(v, located))
                    }
                    Found::Miss | Found::Expired => {
                        if count {
                            idx.ns_add(ns, nsr::MISSES, 1);
                            crate::index::touch_coarse(idx, ns, self.ctx.use_clock());
                        }
                        None
                    }
                });
            }
        })();
        let _ = SCRATCH.try_with(|cell| cell.replace(scratch));
        found
    }

    /// Whether the record `at` names is still the live entry of its key (and
    /// unexpired); if so, counts a hit on it as a lookup would.
    pub(crate) fn hit_located(
        &self,
        ns: u32,
        name_hash: u64,
        key_hash: u64,
        at: &Located,
    ) -> Result<bool> {
        self.check_fork()?;
        if at.expire_ms != 0 && now_ms() >= at.expire_ms {
            return Ok(false);
        }
        let guard = self.ctx.index_guard();
        let idx: &IndexMap = &guard;
        if idx.retired()
            || idx.hget(hdr::GENERATION) != at.lineage
            || idx.ns_get(ns, nsr::NAME_HASH) != name_hash
        {
            return Ok(false);
        }
        let tag = key_hash >> 32;
        for step in 0..idx.layout.buckets {
            let pos = key_hash.wrapping_add(step);
            let w = idx.bucket(pos).load(Ordering::Acquire);
            if w == 0 {
                return Ok(false);
            }
            if w >> 32 != tag {
                continue;
            }
            let e = (w as u32).wrapping_sub(1);
            if idx.valid_entry(e) && idx.bucket_loc(pos).load(Ordering::Acquire) == at.loc {
                if !self.ctx.read_only() {
                    count_hit(idx, ns, e, self.ctx.use_clock());
                }
                return Ok(true);
            }
        }
        Ok(false)
    }
}
