//! Everything done under the writer lock: appends, index maintenance, LRU
//! eviction, recovery (index rebuild from the log), compaction and verify.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::expiry::SWEEP_INLINE_MAX;
use crate::format::{self, ent, hdr, kind, nsr, segr, REC_HEADER_LEN, SEG_HEADER_LEN};
use crate::hash::key_hash;
use crate::index::lru::{lru_insert_sorted, lru_push_head, lru_unlink};
use crate::index::table::{
    add_entry, bucket_insert, bucket_remove, check_e, corrupt, free_entry, set_loc,
};
use crate::index::{buckets_for, tmp_index_path, IndexMap, NIL};
use crate::log::zero_fill;
use crate::options::Durability;
use crate::store::{now_ms, Inner};

/// Per-process writer state (behind the in-process writer mutex).
#[derive(Default)]
pub(crate) struct WriterState {
    pub(crate) buf: Vec<u8>,
    pub(crate) scratch: Vec<u8>,
    mark_clean: bool,
}

/// The writer: holds the in-process mutex and the cross-process flock.
pub(crate) struct Writer<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) idx: Arc<IndexMap>,
    pub(crate) st: &'a mut WriterState,
}

const PREALLOC_CHUNK: u64 = 4 << 20;

// ---------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------

impl Writer<'_> {
    pub(crate) fn begin(&mut self) {
        self.idx.hset(hdr::STATE, format::STATE_MUTATING);
        let (a, b) = self.inner.boot_id;
        if (self.idx.hget(hdr::BOOT_ID), self.idx.hget(hdr::BOOT_ID + 8)) != (a, b) {
            self.idx.hset(hdr::BOOT_ID, a);
            self.idx.hset(hdr::BOOT_ID + 8, b);
        }
    }

    pub(crate) fn end(&mut self) {
        if std::mem::take(&mut self.st.mark_clean) {
            self.idx.hset(hdr::STATE, format::STATE_CLEAN_SYNCED);
            let _ = self.idx.flush(self.inner.opts.io.as_ref());
        } else {
            self.idx.hset(hdr::STATE, 0);
        }
    }

    pub(crate) fn ensure_active_segment(&mut self) -> Result<()> {
        let id = self.idx.hget(hdr::ACTIVE_SEG) as u32;
        if id == 0 || self.idx.seg_row(id).is_none() || self.inner.segment(id).is_none() {
            self.roll(0)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one.
    pub(crate) fn roll(&mut self, min_len: u64) -> Result<()> {
        let idx = self.idx.clone();
        if let Some(row) = idx.seg_row(idx.hget(hdr::ACTIVE_SEG) as u32) {
            idx.seg(row, segr::STATE).store(2, Ordering::Release);
        }
        let mut id = idx.hget(hdr::NEXT_SEG_ID).max(1);
        for _ in 0..=format::MAX_SEGMENTS {
            if id > u32::MAX as u64 {
                return Err(Error::InvalidArgument("segment ids exhausted".into()));
            }
            let row = id as usize % format::MAX_SEGMENTS;
            if idx.seg(row, segr::ID).load(Ordering::Acquire) != 0 {
                id += 1;
                continue;
            }
            let path = self.inner.dir.join(format::segment_file_name(id as u32));
            if path.exists() {
                id += 1;
                continue;
            }
            // The segment is prepared under a temporary name and renamed into
            // place complete, so a crash never leaves a headerless segment.
            // Only the lock holder uses the temporary name.
            let tmp = self.inner.dir.join(format!("seg-{:08x}.tmp", id as u32));
            let file = self.inner.modes().open(&tmp, true)?;
            let io = &self.inner.opts.io;
            let init =
                (min_len + SEG_HEADER_LEN).max(PREALLOC_CHUNK.min(self.inner.opts.segment_size));
            // On a full filesystem, only what the first records need.
            let need = format::align8(min_len + SEG_HEADER_LEN).max(4096);
            let r = crate::space::allocate_fitting(io.as_ref(), &file, 0, init, need.min(init))
                .and_then(|len| {
                    io.write_at(&file, &format::encode_segment_header(id as u32), 0)?;
                    io.sync(&file)?;
                    Ok(len)
                });
            let r = r.map_err(Error::from).and_then(|len| {
                if self.inner.opts.durability == Durability::PowerLoss {
                    zero_fill(io.as_ref(), &file, SEG_HEADER_LEN, len)?;
                }
                Ok(())
            });
            let r = r
                .and_then(|_| std::fs::rename(&tmp, &path).map_err(Error::from))
                .and_then(|_| {
                    if self.inner.opts.durability == Durability::PowerLoss {
                        File::open(&self.inner.dir).and_then(|d| d.sync_all())?;
                    }
                    Ok(())
                });
            if let Err(e) = r {
                drop(file);
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            idx.hset(hdr::NEXT_SEG_ID, id + 1);
            idx.seg(row, segr::TOTAL)
                .store(SEG_HEADER_LEN, Ordering::Release);
            idx.seg(row, segr::DEAD).store(0, Ordering::Release);
            idx.seg(row, segr::MIN_PUT).store(0, Ordering::Release);
            idx.seg(row, segr::STATE).store(1, Ordering::Release);
            idx.seg(row, segr::ID).store(id, Ordering::Release);
            idx.hset(hdr::ACTIVE_OFF, SEG_HEADER_LEN);
            idx.hset(hdr::ACTIVE_SEG, id);
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "the store has {} segments, the most it can track; compact it",
            format::MAX_SEGMENTS
        )))
    }

    /// Appends the records in `st.buf` (of the given padded sizes) to the log.
    /// Returns their locations.
    pub(crate) fn append(&mut self, sizes: &[u64]) -> Result<Vec<u64>> {
        let mut locs = Vec::with_capacity(sizes.len());
        let seg_size = self.inner.opts.segment_size;
        let mut i = 0;
        let mut pos = 0usize;
        let buf = std::mem::take(&mut self.st.buf);
        let r = (|| {
            while i < sizes.len() {
                self.ensure_active_segment()?;
                let seg_id = self.idx.hget(hdr::ACTIVE_SEG) as u32;
                let off = self.idx.hget(hdr::ACTIVE_OFF);
                let mut run = 0;
                let mut bytes = 0u64;
                while i + run < sizes.len() && off + bytes + sizes[i + run] <= seg_size {
                    bytes += sizes[i + run];
                    run += 1;
                }
                if run == 0 {
                    if off == SEG_HEADER_LEN {
                        run = 1; // an oversized record gets a segment of its own
                        bytes = sizes[i];
                    } else {
                        self.roll(sizes[i])?;
                        continue;
                    }
                }
                if off + bytes > u32::MAX as u64 {
                    return Err(Error::InvalidArgument("record too large".into()));
                }
                let seg = self.inner.segment(seg_id).ok_or_else(|| {
                    corrupt(&self.idx, format!("active segment {seg_id} is missing"))
                })?;
                let io = &self.inner.opts.io;
                if off + bytes > seg.known_len.load(Ordering::Acquire) {
                    let len = seg.file.metadata()?.len();
                    if off + bytes > len {
                        let target = (off + bytes).div_ceil(PREALLOC_CHUNK) * PREALLOC_CHUNK;
                        let target = target.min(seg_size.max(off + bytes));
                        // On a full filesystem, only what this write needs.
                        let target = crate::space::allocate_fitting(
                            io.as_ref(),
                            &seg.file,
                            len,
                            target,
                            off + bytes,
                        )?;
                        if self.inner.opts.durability == Durability::PowerLoss {
                            // fallocate leaves "unwritten" extents: the first
                            // write into each turns fdatasync into a journal
                            // commit. Zeroing the range once makes later
                            // commits plain data flushes.
                            zero_fill(io.as_ref(), &seg.file, len, target)?;
                        }
                        seg.known_len.fetch_max(target, Ordering::AcqRel);
                    } else {
                        seg.known_len.fetch_max(len, Ordering::AcqRel);
                    }
                }
                // The segment's lowest PUT sequence number covers these
                // records before they are written (a crash in between leaves
                // it lower than needed, never higher).
                let mut min_put = u64::MAX;
                let mut p = pos;
                for s in &sizes[i..i + run] {
                    if buf[p + 4] == kind::PUT {
                        let mut w = [0u8; 8];
                        w.copy_from_slice(&buf[p + 24..p + 32]);
                        min_put = min_put.min(u64::from_le_bytes(w));
                    }
                    p += *s as usize;
                }
                let row = self.idx.seg_row(seg_id);
                if let (Some(row), true) = (row, min_put != u64::MAX) {
                    let cur = self.idx.seg(row, segr::MIN_PUT).load(Ordering::Acquire);
                    if cur == 0 || min_put < cur {
                        self.idx
                            .seg(row, segr::MIN_PUT)
                            .store(min_put, Ordering::Release);
                    }
                }
                io.write_at(&seg.file, &buf[pos..pos + bytes as usize], off)?;
                let mut o = off;
                for s in &sizes[i..i + run] {
                    locs.push(((seg_id as u64) << 32) | o);
                    o += s;
                }
                self.idx.hset(hdr::ACTIVE_OFF, off + bytes);
                if let Some(row) = row {
                    self.idx
                        .seg(row, segr::TOTAL)
                        .store(off + bytes, Ordering::Release);
                }
                self.inner.commit.lock().pending.insert(seg_id);
                i += run;
                pos += bytes as usize;
            }
            // Durable commits are synced by `Inner::group_sync` after the
            // writer lock is released, so that concurrent writers share fsyncs.
            self.inner.commit.lock().appended += 1;
            Ok(())
        })();
        self.st.buf = buf;
        r.map(|_| locs)
    }

    pub(crate) fn sync_log(&mut self) -> Result<()> {
        self.inner.sync_pending()
    }

    pub(crate) fn sync_all(&mut self) -> Result<()> {
        self.sync_log()?;
        self.idx.flush(self.inner.opts.io.as_ref())?;
        self.st.mark_clean = true;
        Ok(())
    }

    pub(crate) fn next_seq(&self) -> u64 {
        let s = self.idx.hget(hdr::NEXT_SEQ).max(1);
        self.idx.hset(hdr::NEXT_SEQ, s + 1);
        s
    }

    pub(crate) fn mark_dead(&self, loc: u64, size: u64) {
        if let Some(row) = self.idx.seg_row((loc >> 32) as u32) {
            self.idx
                .seg(row, segr::DEAD)
                .fetch_add(size, Ordering::AcqRel);
        }
    }

    /// Makes room in the entry array for `n` more entries.
    fn reserve(&mut self, n: u64) -> Result<()> {
        let count = self.idx.hget(hdr::ENTRY_COUNT);
        if count + n <= self.idx.layout.entries {
            return Ok(());
        }
        self.resize(buckets_for(count + n))
    }

    /// Copies the index into a new file with `buckets` buckets.
    fn resize(&mut self, buckets: u64) -> Result<()> {
        let old = self.idx.clone();
        let tmp = tmp_index_path(&self.inner.dir);
        // Same log, same locations: the lineage (generation) carries over.
        let new = IndexMap::create(&tmp, buckets, old.hget(hdr::GENERATION), self.inner.modes())?;
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
                return Err(corrupt(&old, "entry high-water mark out of range"));
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
        std::fs::rename(&tmp, self.inner.dir.join("index"))?;
        old.hset(hdr::RETIRED, 1);
        old.hset(hdr::STATE, 0);
        self.idx = Arc::new(new);
        self.inner.install_index(self.idx.clone());
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
        format::encode_record(&mut self.st.buf, kind::NAMESPACE, id, seq, 0, name, &lim);
        let size = format::record_size(name.len(), lim.len());
        self.append(&[size])?;
        let idx = self.idx.clone();
        let now = self.inner.use_clock();
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
        crate::lifecycle::touch(&idx, id, now);
        self.enforce(id)?;
        Ok(id)
    }

    pub(crate) fn put_batch(
        &mut self,
        ns: u32,
        items: &[(&[u8], &[u8])],
        ttl: Option<Duration>,
    ) -> Result<usize> {
        let maxsize = self.idx.ns_get(ns, nsr::MAXSIZE);
        let max_bytes = self.idx.ns_get(ns, nsr::MAX_BYTES);
        if maxsize == 0 || items.is_empty() {
            return Ok(0);
        }
        let ttl_ms = ttl.map_or(self.idx.ns_get(ns, nsr::TTL_MS), |t| {
            (t.as_millis() as u64).max(1)
        });
        let expire = if ttl_ms == 0 {
            0
        } else {
            now_ms().saturating_add(ttl_ms)
        };
        self.reserve(items.len() as u64)?;
        self.st.buf.clear();
        let mut sizes = Vec::with_capacity(items.len());
        let mut kept = Vec::with_capacity(items.len());
        for (k, v) in items {
            let size = format::record_size(k.len(), v.len());
            if size > max_bytes {
                continue;
            }
            let seq = self.next_seq();
            format::encode_record(&mut self.st.buf, kind::PUT, ns, seq, expire, k, v);
            sizes.push(size);
            kept.push(*k);
        }
        if kept.is_empty() {
            return Ok(0);
        }
        let locs = self.append(&sizes)?;
        if expire != 0 {
            let next = self.idx.ns_get(ns, nsr::NEXT_EXPIRY);
            if next == 0 || expire < next {
                self.idx.ns_set(ns, nsr::NEXT_EXPIRY, expire);
            }
        }
        for ((k, loc), size) in kept.iter().zip(&locs).zip(&sizes) {
            self.index_put(ns, k, *loc, *size as u32)?;
        }
        self.enforce(ns)?;
        Ok(kept.len())
    }

    fn index_put(&mut self, ns: u32, key: &[u8], loc: u64, size: u32) -> Result<()> {
        let idx = self.idx.clone();
        let h = key_hash(ns, key);
        let stamp = idx.ns(ns, nsr::CLOCK).fetch_add(1, Ordering::AcqRel) + 1;
        if let Some((e, _)) = self.inner.find(&idx, ns, key, h, &mut self.st.scratch) {
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
            return Ok(());
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
            Error::InvalidArgument(_) => corrupt(&idx, "entry array full despite reservation"),
            e => e,
        })
    }

    pub(crate) fn drop_entry(&mut self, e: u32) -> Result<()> {
        let idx = self.idx.clone();
        let (ns, size) = idx.ns_size(e);
        if ns as usize >= format::MAX_NAMESPACES {
            return Err(corrupt(&idx, "entry names a namespace out of range"));
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
            let t = check_e(&idx, t)?;
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
        Err(corrupt(&idx, "LRU list does not end"))
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
        let found = self.inner.find(&idx, ns, key, h, &mut self.st.scratch);
        // Written even when the key has no entry: an evicted or expired PUT
        // of it may still be in the log, and an index rebuild would bring it
        // back.
        let seq = self.next_seq();
        self.st.buf.clear();
        format::encode_record(&mut self.st.buf, kind::REMOVE, ns, seq, 0, key, &[]);
        let size = format::record_size(key.len(), 0);
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
        format::encode_record(&mut self.st.buf, kind::CLEAR, ns, seq, 0, &[], &[]);
        self.append(&[format::record_size(0, 0)])?;
        let idx = self.idx.clone();
        idx.ns_set(ns, nsr::CLEAR_SEQ, seq);
        for _ in 0..=idx.layout.entries {
            let head = idx.ns_get(ns, nsr::LRU_HEAD) as u32;
            if head == NIL {
                break;
            }
            self.drop_entry(check_e(&idx, head)?)?;
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
                .inner
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
