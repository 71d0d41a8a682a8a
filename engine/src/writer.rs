//! The writer's mutations of the index, under the writer lock (`txn.rs`):
//! defining namespaces, puts, removals, clears, LRU eviction and limits, and
//! growing the index. Appends to the log are in `writer/append.rs` (puts of
//! values in parts in `writer/parts.rs`), recovery in
//! `recovery.rs`, expiry sweeps in `expiry.rs`, compaction in
//! `compaction.rs`, verify in `verify.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::ctx::now_ms;
use crate::error::{Error, Result};
use crate::expiry::SWEEP_INLINE_MAX;
use crate::format::v1::{self, REC_HEADER_LEN};
use crate::format::{self, ent, hdr, kind, nsr, segr};
use crate::hash::key_hash;
use crate::index::lru::{lru_insert_sorted, lru_push_head, lru_unlink};
use crate::index::table::{add_entry, bucket_insert, bucket_remove, free_entry, set_loc};
use crate::index::{buckets_for, check_e, corrupt, tmp_index_path, At, IndexMap, NIL};
use crate::read::Located;
use crate::txn::Writer;

pub(crate) mod append;
pub(crate) mod parts;

// ---------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------

impl Writer<'_> {
    /// Makes room in the entry array for `n` more entries.
    pub(crate) fn reserve(&mut self, n: u64) -> Result<()> {
        let count = self.idx.hget(hdr::ENTRY_COUNT);
        if count + n <= self.idx.layout.entries {
            return Ok(());
        }
        self.resize(buckets_for(count + n))
    }

    /// Copies the index into a new file with `buckets` buckets.
    fn resize(&mut self, buckets: u64) -> Result<()> {
        let old = self.idx.clone();
        let tmp = tmp_index_path(self.ctx.dir());
        // Same log, same locations: the lineage (generation) carries over.
        let new = IndexMap::create(
            &tmp,
            buckets,
            old.hget(hdr::GENERATION),
            self.ctx.modes(),
            self.ctx.io(),
        )?;
        let copy = (|| {
            // Entries keep their numbers, so the header words (free list and
            // high-water mark included), the namespace rows (LRU heads and
            // tails, counts) and the entries' own links are copied as they
            // are, in address order; only the buckets are laid out anew.
            for off in (hdr::DYNAMIC..hdr::DYNAMIC_END).step_by(8) {
                if off != hdr::RETIRED {
                    new.hset(off, old.hget(off));
                }
            }
            for row in 0..format::MAX_SEGMENTS {
                for f in [
                    segr::TOTAL,
                    segr::DEAD,
                    segr::MIN_PUT,
                    segr::STATE,
                    segr::ID,
                ] {
                    new.seg(row, f)
                        .store(old.seg(row, f).load(Ordering::Acquire), Ordering::Release);
                }
            }
            for ns in 0..format::MAX_NAMESPACES as u32 {
                if old.ns_get(ns, nsr::NAME_LEN) == 0 {
                    continue;
                }
                for f in (0..format::NS_ROW_LEN).step_by(8) {
                    new.ns_set(ns, f, old.ns_get(ns, f));
                }
            }
            let hwm = old.hget(hdr::ENTRY_HWM);
            if hwm > old.layout.entries || hwm > new.layout.entries {
                return Err(corrupt(
                    &old,
                    At::Header(hdr::ENTRY_HWM),
                    "entry high-water mark out of range",
                ));
            }
            for e in 0..hwm as u32 {
                for f in (0..format::ENTRY_LEN).step_by(8) {
                    new.eset(e, f, old.eget(e, f));
                }
                let loc = new.eget(e, ent::LOC);
                if loc != 0 {
                    bucket_insert(&new, new.eget(e, ent::HASH), e, loc)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = copy {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        new.hset(hdr::STATE, format::STATE_MUTATING);
        std::fs::rename(&tmp, self.ctx.dir().join("index"))?;
        old.hset(hdr::RETIRED, 1);
        old.hset(hdr::STATE, 0);
        self.idx = Arc::new(new);
        self.ctx.install_index(self.idx.clone());
        Ok(())
    }

    pub(crate) fn define_namespace(&mut self, name: &[u8], limits: (u64, u64, u64)) -> Result<u32> {
        let idx = self.idx.clone();
        let h = crate::name_hash(name);
        let mut found = None;
        let mut free = None;
        for id in 0..format::MAX_NAMESPACES as u32 {
            if idx.ns_get(id, nsr::NAME_LEN) == 0 {
                free = free.or(Some(id));
            } else if idx.ns_get(id, nsr::NAME_HASH) == h
                && idx.ns_name(id).as_deref() == Some(name)
            {
                found = Some(id);
                break;
            }
        }
        let id = match found {
            Some(id) => {
                let cur = (
                    idx.ns_get(id, nsr::MAXSIZE),
                    idx.ns_get(id, nsr::MAX_BYTES),
                    idx.ns_get(id, nsr::TTL_MS),
                );
                if cur == limits {
                    return Ok(id);
                }
                id
            }
            None => free.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the store already holds {} namespaces, the most it supports",
                    format::MAX_NAMESPACES
                ))
            })?,
        };
        let seq = self.next_seq();
        self.st.buf.clear();
        let lim = format::encode_limits(limits.0, limits.1, limits.2);
        v1::encode_record(&mut self.st.buf, kind::NAMESPACE, id, seq, 0, name, &lim);
        let size = v1::record_size(name.len(), lim.len());
        self.append(&[size])?;
        let idx = self.idx.clone();
        let now = self.ctx.use_clock();
        if found.is_none() {
            // CLEAR_SEQ stays: a row freed by a removal keeps shadowing the
            // records of its earlier namespace (zero in a never used row).
            idx.ns_set(id, nsr::LAST_USED, now);
            idx.ns_reset_contents(id);
            idx.ns_set(id, nsr::CLOCK, seq);
            idx.ns_set_name(id, name);
            idx.hset(hdr::NS_COUNT, idx.hget(hdr::NS_COUNT) + 1);
        }
        idx.ns_set(id, nsr::MAXSIZE, limits.0);
        idx.ns_set(id, nsr::MAX_BYTES, limits.1);
        idx.ns_set(id, nsr::TTL_MS, limits.2);
        idx.ns_set(id, nsr::DEF_SEQ, seq);
        crate::index::touch(&idx, id, now);
        self.enforce(id)?;
        Ok(id)
    }

    /// The expiry time of a record put now in `ns` with `ttl` (`None`: the
    /// namespace's default TTL); 0 if it never expires.
    pub(crate) fn expire_at(&self, ns: u32, ttl: Option<Duration>) -> u64 {
        let ttl_ms = ttl.map_or(self.idx.ns_get(ns, nsr::TTL_MS), |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        if ttl_ms == 0 {
            0
        } else {
            now_ms().saturating_add(ttl_ms)
        }
    }

    /// Notes in `ns`'s row that a record expiring at `expire` (0: never) was
    /// written, so that the sweep comes for it in time.
    pub(crate) fn note_expiry(&self, ns: u32, expire: u64) {
        if expire != 0 {
            let next = self.idx.ns_get(ns, nsr::NEXT_EXPIRY);
            if next == 0 || expire < next {
                self.idx.ns_set(ns, nsr::NEXT_EXPIRY, expire);
            }
        }
    }

    /// Stores `items` in `ns`, each with `ttl` (`None`: the namespace's
    /// default), then enforces the limits. Returns how many were stored
    /// (an item whose record is larger than `max_bytes` is not, nor any
    /// when `maxsize` is 0) and the [`Located`] token of the last one
    /// stored: what a lookup of its key would return now.
    pub(crate) fn put_batch(
        &mut self,
        ns: u32,
        items: &[(&[u8], &[u8])],
        ttl: Option<Duration>,
    ) -> Result<(usize, Option<Located>)> {
        let maxsize = self.idx.ns_get(ns, nsr::MAXSIZE);
        let max_bytes = self.idx.ns_get(ns, nsr::MAX_BYTES);
        if maxsize == 0 || items.is_empty() {
            return Ok((0, None));
        }
        let expire = self.expire_at(ns, ttl);
        self.reserve(items.len() as u64)?;
        self.st.buf.clear();
        let mut sizes = Vec::with_capacity(items.len());
        let mut kept = Vec::with_capacity(items.len());
        for (k, v) in items {
            let size = v1::record_size(k.len(), v.len());
            if size > max_bytes {
                continue;
            }
            let seq = self.next_seq();
            v1::encode_record(&mut self.st.buf, kind::PUT, ns, seq, expire, k, v);
            sizes.push(size);
            kept.push(*k);
        }
        if kept.is_empty() {
            return Ok((0, None));
        }
        let locs = self.append(&sizes)?;
        self.note_expiry(ns, expire);
        let mut last = (0, 0);
        for ((k, loc), size) in kept.iter().zip(&locs).zip(&sizes) {
            last = (self.index_put(ns, k, *loc, *size as u32)?, *loc);
        }
        self.enforce(ns)?;
        Ok((kept.len(), Some(self.located(ns, last.0, last.1, expire))))
    }

    /// The token of the record at `loc` that this writer just indexed in
    /// entry `e` of `ns`. Taken after the limits were enforced, from the
    /// index the writer holds then (a copy into a larger file keeps the
    /// lineage and the entry numbers; a rebuild makes a new lineage, and
    /// then the whole operation ran again on the new index).
    pub(crate) fn located(&self, ns: u32, e: u32, loc: u64, expire: u64) -> Located {
        Located::of(&self.idx, ns, e, loc, expire)
    }

    /// Points `key`'s entry in `ns` at the record at `loc` (of padded size
    /// `size`), making one if the key has none. Returns the entry.
    pub(crate) fn index_put(&mut self, ns: u32, key: &[u8], loc: u64, size: u32) -> Result<u32> {
        let idx = self.idx.clone();
        let h = key_hash(ns, key);
        let stamp = idx.ns(ns, nsr::CLOCK).fetch_add(1, Ordering::AcqRel) + 1;
        if let Some((e, _)) = self.ctx.find(&idx, ns, key, h, &mut self.st.scratch) {
            let (_, old_size) = idx.ns_size(e);
            self.mark_dead(idx.eget(e, ent::LOC), old_size as u64);
            set_loc(&idx, e, loc)?;
            idx.eset(e, ent::NS_SIZE, ns as u64 | ((size as u64) << 32));
            idx.eset(e, ent::STAMP, stamp);
            idx.eset(e, ent::LIST_STAMP, stamp);
            idx.ns_sub(ns, nsr::LIVE_BYTES, old_size as u64);
            idx.ns_add(ns, nsr::LIVE_BYTES, size as u64);
            lru_unlink(&idx, ns, e)?;
            lru_push_head(&idx, ns, e)?;
            return Ok(e);
        }
        // A new key: make room first (as `lru_cache` does), so that readers
        // in other processes never see the namespace over its `maxsize`.
        let maxsize = idx.ns_get(ns, nsr::MAXSIZE);
        if idx.ns_get(ns, nsr::ENTRIES) >= maxsize {
            // Expired entries make room before live ones are evicted.
            self.sweep_if_due(ns, SWEEP_INLINE_MAX)?;
        }
        while idx.ns_get(ns, nsr::ENTRIES) >= maxsize {
            if !self.evict_one(ns)? {
                break;
            }
        }
        add_entry(&idx, ns, h, loc, size, stamp, stamp).map_err(|e| match e {
            Error::InvalidArgument(_) => corrupt(
                &idx,
                At::Header(hdr::ENTRY_COUNT),
                "entry array full despite reservation",
            ),
            e => e,
        })
    }

    pub(crate) fn drop_entry(&mut self, e: u32) -> Result<()> {
        let idx = self.idx.clone();
        let (ns, size) = idx.ns_size(e);
        if ns as usize >= format::MAX_NAMESPACES {
            return Err(corrupt(
                &idx,
                At::Entry(e, ent::NS_SIZE),
                "entry names a namespace out of range",
            ));
        }
        bucket_remove(&idx, idx.eget(e, ent::HASH), e)?;
        lru_unlink(&idx, ns, e)?;
        self.mark_dead(idx.eget(e, ent::LOC), size as u64);
        idx.ns_sub(ns, nsr::ENTRIES, 1);
        idx.ns_sub(ns, nsr::LIVE_BYTES, size as u64);
        idx.hset(
            hdr::ENTRY_COUNT,
            idx.hget(hdr::ENTRY_COUNT).saturating_sub(1),
        );
        free_entry(&idx, e);
        Ok(())
    }

    /// Evicts the least recently used entry of `ns`. Hits only bump an atomic
    /// stamp, so the list is fixed up lazily here: a tail entry used since it
    /// took its place moves to the position its last use gives it.
    fn evict_one(&mut self, ns: u32) -> Result<bool> {
        let idx = self.idx.clone();
        for _ in 0..=idx.layout.entries {
            let t = idx.ns_get(ns, nsr::LRU_TAIL) as u32;
            if t == NIL {
                return Ok(false);
            }
            let t = check_e(&idx, t, At::Ns(ns, nsr::LRU_TAIL))?;
            let s = idx.eget(t, ent::STAMP);
            if s > idx.eget(t, ent::LIST_STAMP) {
                lru_unlink(&idx, ns, t)?;
                idx.eset(t, ent::LIST_STAMP, s);
                lru_insert_sorted(&idx, ns, t, s)?;
                continue;
            }
            self.drop_entry(t)?;
            idx.ns_add(ns, nsr::EVICTIONS, 1);
            return Ok(true);
        }
        Err(corrupt(
            &idx,
            At::Ns(ns, nsr::LRU_TAIL),
            "LRU list does not end",
        ))
    }

    pub(crate) fn enforce(&mut self, ns: u32) -> Result<()> {
        let maxsize = self.idx.ns_get(ns, nsr::MAXSIZE);
        let max_bytes = self.idx.ns_get(ns, nsr::MAX_BYTES);
        if self.idx.ns_get(ns, nsr::ENTRIES) > maxsize
            || self.idx.ns_get(ns, nsr::LIVE_BYTES) > max_bytes
        {
            self.sweep_if_due(ns, SWEEP_INLINE_MAX)?;
        }
        while self.idx.ns_get(ns, nsr::ENTRIES) > maxsize
            || self.idx.ns_get(ns, nsr::LIVE_BYTES) > max_bytes
        {
            if !self.evict_one(ns)? {
                if self.idx.ns_get(ns, nsr::ENTRIES) != 0 {
                    return Err(corrupt(
                        &self.idx,
                        At::Ns(ns, nsr::ENTRIES),
                        "namespace counts disagree with its LRU list",
                    ));
                }
                self.idx.ns_set(ns, nsr::LIVE_BYTES, 0);
                break;
            }
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, ns: u32, key: &[u8]) -> Result<bool> {
        let idx = self.idx.clone();
        let h = key_hash(ns, key);
        let found = self.ctx.find(&idx, ns, key, h, &mut self.st.scratch);
        // Written even when the key has no entry: an evicted or expired PUT
        // of it may still be in the log, and an index rebuild would bring it
        // back.
        let seq = self.next_seq();
        self.st.buf.clear();
        v1::encode_record(&mut self.st.buf, kind::REMOVE, ns, seq, 0, key, &[]);
        let size = v1::record_size(key.len(), 0);
        let locs = self.append(&[size])?;
        let mut was_live = false;
        if let Some((e, rh)) = found {
            // An expired entry is already a miss: it was not there.
            was_live = rh.expire_ms == 0 || rh.expire_ms > now_ms();
            self.drop_entry(e)?;
        }
        self.mark_dead(locs[0], size);
        Ok(was_live)
    }

    pub(crate) fn clear(&mut self, ns: u32) -> Result<()> {
        let seq = self.next_seq();
        self.st.buf.clear();
        v1::encode_record(&mut self.st.buf, kind::CLEAR, ns, seq, 0, &[], &[]);
        self.append(&[v1::record_size(0, 0)])?;
        let idx = self.idx.clone();
        idx.ns_set(ns, nsr::CLEAR_SEQ, seq);
        for _ in 0..=idx.layout.entries {
            let head = idx.ns_get(ns, nsr::LRU_HEAD) as u32;
            if head == NIL {
                break;
            }
            self.drop_entry(check_e(&idx, head, At::Ns(ns, nsr::LRU_HEAD))?)?;
        }
        for f in [
            nsr::ENTRIES,
            nsr::LIVE_BYTES,
            nsr::HITS,
            nsr::MISSES,
            nsr::EVICTIONS,
            nsr::REJECTED,
            nsr::NEXT_EXPIRY,
        ] {
            idx.ns_set(ns, f, 0);
        }
        Ok(())
    }

    pub(crate) fn keys(&mut self, ns: u32) -> Vec<(Vec<u8>, usize)> {
        let idx = self.idx.clone();
        let mut out = Vec::new();
        let mut cur = idx.ns_get(ns, nsr::LRU_HEAD) as u32;
        for _ in 0..idx.layout.entries {
            if cur == NIL || !idx.valid_entry(cur) {
                break;
            }
            if let Some(h) = self
                .ctx
                .read_record(idx.eget(cur, ent::LOC), &mut self.st.scratch)
            {
                let k = self.st.scratch[REC_HEADER_LEN..REC_HEADER_LEN + h.klen as usize].to_vec();
                out.push((idx.eget(cur, ent::STAMP), k, h.vlen as usize));
            }
            cur = idx.links(cur).1;
        }
        // Most recently used first: hits move entries lazily in the list, so
        // order by the last-use stamps (stable: list order breaks ties).
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        out.into_iter().map(|(_, k, n)| (k, n)).collect()
    }
}
