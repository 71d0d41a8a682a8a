//! Compaction: choosing a victim segment, copying what must survive of it
//! in short chunks under the writer lock, retiring it, and the journal that
//! lets a compaction killed at any moment be finished by the next compactor
//! without copying anything twice (FORMAT.md, "Compaction").

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::ctx::{now_ms, read_only_error};
use crate::error::{Error, Result};
use crate::format::v1::{self, REC_HEADER_LEN};
use crate::format::{self, ent, hdr, kind, nsr, segr, SEG_HEADER_LEN};
use crate::hash::key_hash;
use crate::index::table::set_loc;
use crate::index::IndexMap;
use crate::log::{read_segment, scan_segment, Scanned};
use crate::shared::Inner;
use crate::txn::Writer;

/// Records per chunk (one writer-lock hold each).
const COMPACT_CHUNK: usize = 256;

/// Bit 63 of the journal's `CMP_DONE` word: a chunk is being copied.
const CHUNK_IN_PROGRESS: u64 = 1 << 63;

/// The compaction journal: three words of the index header.
///
/// One compactor runs at a time (an OFD lock), so one journal is enough. A
/// chunk sets `CMP_DEST` to the append location and then `CMP_DONE` to its
/// start with [`CHUNK_IN_PROGRESS`]; after its copies are written and the
/// index points at them, one store of `CMP_DONE` (the chunk's end, the bit
/// clear) commits it. So:
/// - a compactor killed between chunks leaves the journal consistent with
///   the index: the next compactor resumes after `CMP_DONE`;
/// - one killed inside a chunk leaves `MUTATING` set, and the rebuild that
///   follows discards every record at or after `CMP_DEST` (only that chunk
///   wrote there: it held the writer lock) and zeroes those bytes, so the
///   chunk is done again from its start, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Journal {
    /// The segment being compacted.
    pub(crate) victim: u32,
    /// Its records before this offset are dealt with.
    pub(crate) done: u64,
    /// Where the copies of the chunk in progress begin, if one is.
    pub(crate) dest: Option<u64>,
}

impl Journal {
    /// The journal of `idx`, if a compaction is under way.
    pub(crate) fn read(idx: &IndexMap) -> Option<Journal> {
        let victim = idx.hget(hdr::CMP_VICTIM);
        if victim == 0 || victim > u32::MAX as u64 {
            return None;
        }
        let done = idx.hget(hdr::CMP_DONE);
        Some(Journal {
            victim: victim as u32,
            done: (done & !CHUNK_IN_PROGRESS).max(SEG_HEADER_LEN),
            dest: (done & CHUNK_IN_PROGRESS != 0).then(|| idx.hget(hdr::CMP_DEST)),
        })
    }

    /// Writes `self` (with no chunk in progress) into a new index.
    pub(crate) fn carry_into(&self, idx: &IndexMap) {
        idx.hset(hdr::CMP_VICTIM, self.victim as u64);
        idx.hset(hdr::CMP_DONE, self.done);
        idx.hset(hdr::CMP_DEST, 0);
    }

    /// No compaction under way.
    pub(crate) fn clear(idx: &IndexMap) {
        idx.hset(hdr::CMP_DONE, 0);
        idx.hset(hdr::CMP_DEST, 0);
        idx.hset(hdr::CMP_VICTIM, 0);
    }

    /// The journal a rebuild takes over from the index it replaces: only
    /// from an index that passed its checks and was last written in this
    /// boot (after a power loss its words may disagree with what reached the
    /// log), and a chunk in progress only if a writer died mid-mutation.
    /// `segments` are the segment files found.
    ///
    /// Never from a retired index: another rebuild (or a resize) already
    /// took its journal over, and the log has moved on since (a rebuild
    /// leaves the retired index's `STATE` and journal words as they were, so
    /// a chunk it shows in progress was discarded long ago, and what lies
    /// after its `dest` now is records written since, which a rebuild taking
    /// that journal would zero). Without a journal nothing is discarded: at
    /// worst a chunk's copies are kept beside their originals.
    pub(crate) fn for_rebuild(
        old: Option<&IndexMap>,
        boot: (u64, u64),
        segments: &[u32],
    ) -> Option<Journal> {
        let old = old.filter(|o| !o.retired())?;
        if boot == (0, 0) || (old.hget(hdr::BOOT_ID), old.hget(hdr::BOOT_ID + 8)) != boot {
            return None;
        }
        let j = Journal::read(old)?;
        if !segments.contains(&j.victim) {
            return None;
        }
        if let Some(dest) = j.dest {
            let (seg, off) = ((dest >> 32) as u32, dest & 0xffff_ffff);
            let active = (old.hget(hdr::ACTIVE_SEG) << 32) | old.hget(hdr::ACTIVE_OFF);
            let sane = old.hget(hdr::STATE) & format::STATE_MUTATING != 0
                && seg > j.victim
                && segments.contains(&seg)
                && off >= SEG_HEADER_LEN
                && off % 8 == 0
                && active >= dest;
            if !sane {
                return None;
            }
        }
        Some(j)
    }

    /// Where segment `id`'s records stop counting in a rebuild: the part of
    /// the log the chunk in progress wrote is discarded.
    pub(crate) fn cut(&self, id: u32) -> Option<u64> {
        let dest = self.dest?;
        let (seg, off) = ((dest >> 32) as u32, dest & 0xffff_ffff);
        match id.cmp(&seg) {
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal => Some(off),
            std::cmp::Ordering::Greater => Some(SEG_HEADER_LEN),
        }
    }
}

impl Writer<'_> {
    /// The sealed segment most worth compacting among those with an id below
    /// `below`.
    pub(crate) fn pick_victim(&self, force: bool, below: u64) -> Option<u32> {
        let threshold = self.ctx.opts().compaction_threshold;
        let mut best: Option<(f64, u32)> = None;
        for (row, id) in self.idx.seg_rows() {
            if self.idx.seg(row, segr::STATE).load(Ordering::Acquire) != 2 {
                continue;
            }
            if id as u64 >= below {
                continue; // sealed after this compaction started
            }
            let total = self
                .idx
                .seg(row, segr::TOTAL)
                .load(Ordering::Acquire)
                .saturating_sub(SEG_HEADER_LEN);
            let dead = self.idx.seg(row, segr::DEAD).load(Ordering::Acquire);
            let ratio = if total == 0 {
                1.0
            } else {
                dead as f64 / total as f64
            };
            let eligible = if force {
                dead > 0 || total == 0
            } else {
                ratio >= threshold
            };
            if eligible && best.is_none_or(|(r, _)| ratio > r) {
                best = Some((ratio, id));
            }
        }
        best.map(|(_, id)| id)
    }

    pub(crate) fn seal_if_dead(&mut self) -> Result<()> {
        let id = self.idx.hget(hdr::ACTIVE_SEG) as u32;
        if let Some(row) = self.idx.seg_row(id) {
            if self.idx.seg(row, segr::DEAD).load(Ordering::Acquire) > 0 {
                self.roll(0)?;
            }
        }
        Ok(())
    }

    /// Copies what must survive of a chunk of `victim`'s records to the
    /// active segment:
    /// - a live PUT, under a fresh sequence number (so the segments that hold
    ///   long-lived entries do not keep old sequence numbers alive, which
    ///   would keep tombstones alive; see below);
    /// - a tombstone (a REMOVE with the record's own sequence number) for a
    ///   key that has no live entry, if it may shadow an older PUT of that key
    ///   in another segment: a dead PUT (evicted, expired, removed) becomes
    ///   one, an existing REMOVE stays one. Without it, an index rebuild would
    ///   bring back the older value. A segment's `MIN_PUT` tells whether it
    ///   may hold a PUT older than the tombstone; when none does, the
    ///   tombstone is garbage and goes;
    /// - the namespace's current CLEAR record, verbatim (its sequence number
    ///   is the point it clears up to), and its NAMESPACE record in force,
    ///   under a fresh sequence number that becomes the one in force: the
    ///   original, and any copy a killed compaction left elsewhere, are then
    ///   stale and dropped by the next compaction that meets them.
    ///
    /// The chunk is journaled (see [`Journal`]): records before the
    /// journal's `done` offset were dealt with by an earlier chunk, maybe in
    /// a process that was killed since, and are skipped; while the copies are
    /// written the journal says where they start, so that a rebuild after a
    /// crash in the middle discards them and the chunk is done again, once.
    fn compact_chunk(&mut self, victim: u32, data: &[u8], recs: &[Scanned]) -> Result<()> {
        if self.idx.seg_row(victim).is_none() {
            return Ok(()); // another compactor finished it
        }
        let idx = self.idx.clone();
        let done = match Journal::read(&idx) {
            Some(j) if j.victim == victim => j.done,
            _ => SEG_HEADER_LEN,
        };
        let recs = &recs[recs.partition_point(|r| r.off < done)..];
        let Some(last) = recs.last() else {
            return Ok(());
        };
        let chunk_end = last.off + last.h.size();
        let dest = (idx.hget(hdr::ACTIVE_SEG) << 32) | idx.hget(hdr::ACTIVE_OFF);
        idx.hset(hdr::CMP_VICTIM, victim as u64);
        idx.hset(hdr::CMP_DEST, dest);
        idx.hset(hdr::CMP_DONE, done | CHUNK_IN_PROGRESS);
        let r = self.copy_chunk(victim, data, recs);
        // One store commits the chunk (or, after an error, gives it up: it
        // is done again from the start, its copies are garbage).
        let idx = self.idx.clone();
        idx.hset(hdr::CMP_DONE, if r.is_ok() { chunk_end } else { done });
        idx.hset(hdr::CMP_DEST, 0);
        r
    }

    /// The copying part of [`Writer::compact_chunk`].
    fn copy_chunk(&mut self, victim: u32, data: &[u8], recs: &[Scanned]) -> Result<()> {
        enum Keep {
            Live(u32),
            Tombstone,
            Verbatim,
            Namespace,
        }
        let idx = self.idx.clone();
        let now = now_ms();
        // The oldest PUT that any other segment may hold.
        let oldest_put = idx
            .seg_rows()
            .into_iter()
            .filter(|&(_, id)| id != victim)
            .map(|(row, _)| idx.seg(row, segr::MIN_PUT).load(Ordering::Acquire))
            .filter(|&m| m != 0)
            .min()
            .unwrap_or(u64::MAX);
        let mut keep: Vec<(usize, Keep)> = Vec::new();
        // Copies of one CLEAR or NAMESPACE record within the chunk (left by
        // killed compactions of earlier builds): one is enough.
        let mut meta_seen: Vec<(u8, u32)> = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            let h = r.h;
            if h.ns as usize >= format::MAX_NAMESPACES {
                continue;
            }
            let body = &data[r.off as usize..r.off as usize + h.body_len()];
            let key = &body[REC_HEADER_LEN..REC_HEADER_LEN + h.klen as usize];
            match h.kind {
                kind::PUT | kind::REMOVE => {
                    let found =
                        self.ctx
                            .find(&idx, h.ns, key, key_hash(h.ns, key), &mut self.st.scratch);
                    let mut live = found.is_some();
                    if let (Some((e, _)), kind::PUT) = (found, h.kind) {
                        let loc = ((victim as u64) << 32) | r.off;
                        if idx.eget(e, ent::LOC) == loc {
                            if h.expire_ms != 0 && h.expire_ms <= now {
                                self.drop_entry(e)?;
                                live = false;
                            } else {
                                keep.push((i, Keep::Live(e)));
                                continue;
                            }
                        }
                    }
                    // A live key's current record is newer than this one.
                    if !live
                        && h.seq > idx.ns_get(h.ns, nsr::CLEAR_SEQ)
                        && idx.ns_get(h.ns, nsr::NAME_LEN) != 0
                        && oldest_put < h.seq
                    {
                        keep.push((i, Keep::Tombstone));
                    }
                }
                kind::CLEAR | kind::NAMESPACE => {
                    let in_force = if h.kind == kind::CLEAR {
                        idx.ns_get(h.ns, nsr::CLEAR_SEQ)
                    } else {
                        idx.ns_get(h.ns, nsr::DEF_SEQ)
                    };
                    if h.seq == in_force && !meta_seen.contains(&(h.kind, h.ns)) {
                        meta_seen.push((h.kind, h.ns));
                        keep.push((
                            i,
                            if h.kind == kind::CLEAR {
                                Keep::Verbatim
                            } else {
                                Keep::Namespace
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        if keep.is_empty() {
            return Ok(());
        }
        self.st.buf.clear();
        let mut sizes = Vec::with_capacity(keep.len());
        let mut new_defs = Vec::new();
        for (i, what) in &keep {
            let r = &recs[*i];
            let h = r.h;
            let body = &data[r.off as usize..r.off as usize + h.body_len()];
            let key = &body[REC_HEADER_LEN..REC_HEADER_LEN + h.klen as usize];
            let start = self.st.buf.len();
            match what {
                Keep::Live(_) => {
                    let value = &body[REC_HEADER_LEN + h.klen as usize..];
                    let seq = self.next_seq();
                    let buf = &mut self.st.buf;
                    v1::encode_record(buf, kind::PUT, h.ns, seq, h.expire_ms, key, value);
                }
                Keep::Tombstone => {
                    let buf = &mut self.st.buf;
                    v1::encode_record(buf, kind::REMOVE, h.ns, h.seq, 0, key, &[]);
                }
                Keep::Namespace => {
                    let value = &body[REC_HEADER_LEN + h.klen as usize..];
                    let seq = self.next_seq();
                    new_defs.push((h.ns, seq));
                    let buf = &mut self.st.buf;
                    v1::encode_record(buf, kind::NAMESPACE, h.ns, seq, 0, key, value);
                }
                Keep::Verbatim => self
                    .st
                    .buf
                    .extend_from_slice(&data[r.off as usize..(r.off + h.size()) as usize]),
            }
            sizes.push((self.st.buf.len() - start) as u64);
        }
        let locs = self.append(&sizes)?;
        for (((_, what), loc), size) in keep.iter().zip(&locs).zip(&sizes) {
            match what {
                Keep::Live(e) => set_loc(&idx, *e, *loc)?,
                Keep::Tombstone => self.mark_dead(*loc, *size),
                Keep::Verbatim | Keep::Namespace => {}
            }
        }
        for (ns, seq) in new_defs {
            idx.ns_set(ns, nsr::DEF_SEQ, seq);
        }
        Ok(())
    }

    pub(crate) fn retire_segment(&mut self, victim: u32) -> Result<()> {
        let Some(row) = self.idx.seg_row(victim) else {
            return Ok(());
        };
        // The copies must be on disk before the originals go.
        self.sync_log()?;
        // The file goes before its row: a segment file left behind without a
        // row (its lowest PUT seq no longer counted) could hold PUTs that
        // tombstones dropped since would have shadowed, and a rebuild reads
        // every segment file. If it cannot be removed, it stays tracked.
        match std::fs::remove_file(self.ctx.dir().join(format::segment_file_name(victim))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.idx.seg(row, segr::ID).store(0, Ordering::Release);
        for f in [segr::STATE, segr::TOTAL, segr::DEAD, segr::MIN_PUT] {
            self.idx.seg(row, f).store(0, Ordering::Release);
        }
        if Journal::read(&self.idx).is_some_and(|j| j.victim == victim) {
            Journal::clear(&self.idx);
        }
        self.idx.h(hdr::EPOCH).fetch_add(1, Ordering::AcqRel);
        self.idx.h(hdr::COMPACTIONS).fetch_add(1, Ordering::AcqRel);
        self.ctx.forget_segment(victim);
        Ok(())
    }
}

/// Compacts one segment: copies what must survive of it to the active
/// segment in short chunks under the writer lock, then retires it. Resumes
/// after the journal's `done` offset if the journal names this segment.
pub(crate) fn compact_segment(inner: &Inner, victim: u32) -> Result<()> {
    compact_segment_with(inner, victim, false)
}

/// [`compact_segment`] for a segment evicted on a full disk (see
/// `evict.rs`): a chunk whose copies do not fit is copied again, in the same
/// writer-lock hold, into the active segment's headroom, and if that is not
/// enough after the reserve file is deleted (no other writer can take its
/// room meanwhile); the headroom and the reserve are made again, in the
/// lock hold that deletes the victim, from the room that frees.
pub(crate) fn compact_segment_on_full_disk(inner: &Inner, victim: u32) -> Result<()> {
    compact_segment_with(inner, victim, true)
}

fn compact_segment_with(inner: &Inner, victim: u32, on_full_disk: bool) -> Result<()> {
    let path = inner.ctx.dir().join(format::segment_file_name(victim));
    let data = match read_segment(inner.ctx.io(), &path, victim) {
        Ok(Some(d)) => d,
        Ok(None) => Vec::new(),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut recs = if data.is_empty() {
        Vec::new()
    } else {
        scan_segment(&data).0
    };
    let done = inner.with_writer_ro(|w| {
        Ok(Journal::read(&w.idx)
            .filter(|j| j.victim == victim)
            .map_or(0, |j| j.done))
    })?;
    recs.retain(|r| r.off >= done);
    for chunk in recs.chunks(COMPACT_CHUNK) {
        inner.with_writer(|w| {
            let r = w.compact_chunk(victim, &data, chunk);
            if !on_full_disk || !r.as_ref().is_err_and(crate::space::is_full) {
                return r;
            }
            // The active segment's headroom, then the reserve's room.
            w.st.use_headroom = true;
            let r = w.compact_chunk(victim, &data, chunk);
            w.st.use_headroom = false;
            match r {
                Err(e) if crate::space::is_full(&e) && w.ctx.release_reserve() => {
                    w.compact_chunk(victim, &data, chunk)
                }
                r => r,
            }
        })?;
    }
    inner.with_writer(|w| {
        w.retire_segment(victim)?;
        if on_full_disk {
            // Best effort: the victim's room is free, and no other writer
            // can take it before this lock hold ends.
            let _ = w.restore_headroom();
            w.ctx.ensure_reserve();
        }
        Ok(())
    })
}

/// The compaction lock, held: an OFD lock on byte 0 of `lock`, released
/// explicitly (`F_UNLCK`) when the guard is dropped.
///
/// Closing the description is not enough: a process that forks while one
/// of its threads compacts leaves the child a descriptor of the locked
/// description (the compacting thread does not exist in the child, so the
/// child never closes it), and the lock would stay held as long as the
/// child lives. An unlock releases it whatever descriptors remain. A child
/// never unlocks: the description it inherited is its parent's, and so is
/// the lock on it (the guard remembers the fork generation it was taken in).
pub(crate) struct CompactionLock {
    file: crate::sys::LockFile,
    fork_gen: u64,
}

impl Drop for CompactionLock {
    fn drop(&mut self) {
        if crate::sys::fork_generation() == self.fork_gen {
            // If the unlock fails, closing the file below still releases
            // the lock unless a forked child keeps a descriptor of it.
            let _ = crate::sys::ofd_unlock(&self.file, 0);
        }
    }
}

/// The error of a compaction lock not taken within `timeout`.
pub(crate) fn compaction_locked(timeout: Duration) -> Error {
    Error::Locked(format!(
        "the store's compaction lock stayed held by another process or thread for \
         {timeout:?} (one stopped while compacting?)"
    ))
}

impl Inner {
    /// Takes the compaction lock (see [`CompactionLock`]; the kernel drops
    /// it if the holder dies). One compactor at a time, across threads and
    /// processes. If `wait`, waits for it at most
    /// [`Options::lock_timeout`](crate::Options::lock_timeout), as for the
    /// writer lock (a compactor stopped with the lock, by Ctrl-Z or a
    /// debugger, must not block everyone), then fails with
    /// [`Error::Locked`]; else returns `None` when it is taken.
    pub(crate) fn take_compaction_lock(&self, wait: bool) -> Result<Option<CompactionLock>> {
        let lock = crate::sys::LockFile::new(crate::files::open_existing(
            &self.ctx.dir().join("lock"),
            true,
        )?);
        let fork_gen = crate::sys::fork_generation();
        let timeout = self.ctx.opts().lock_timeout;
        let start = std::time::Instant::now();
        while !crate::sys::ofd_try_lock(&lock, 0)? {
            if !wait {
                return Ok(None);
            }
            if start.elapsed() >= timeout {
                return Err(compaction_locked(timeout));
            }
            // Segments retired meanwhile are freed only when every process
            // lets go of its maps: a full disk needs that room.
            self.ctx.prune_segments(&self.ctx.index());
            std::thread::sleep(
                Duration::from_millis(1).min(timeout.saturating_sub(start.elapsed())),
            );
        }
        Ok(Some(CompactionLock {
            file: lock,
            fork_gen,
        }))
    }

    /// [`Inner::take_compaction_lock`], waiting (at most the lock timeout).
    pub(crate) fn compaction_lock(&self) -> Result<CompactionLock> {
        self.take_compaction_lock(true)?
            .ok_or_else(|| compaction_locked(self.ctx.opts().lock_timeout))
    }
}

/// Finishes the compaction the journal names, if one was interrupted (its
/// compactor was killed, or failed). Returns whether there was one.
pub(crate) fn resume_interrupted(inner: &Inner) -> Result<bool> {
    let victim = inner.with_writer(|w| {
        let Some(j) = Journal::read(&w.idx) else {
            return Ok(None);
        };
        let sealed = w
            .idx
            .seg_row(j.victim)
            .is_some_and(|row| w.idx.seg(row, segr::STATE).load(Ordering::Acquire) == 2);
        if !sealed {
            Journal::clear(&w.idx);
            return Ok(None);
        }
        Ok(Some(j.victim))
    })?;
    match victim {
        Some(v) => compact_segment(inner, v).map(|_| true),
        None => Ok(false),
    }
}

/// The background compactor's loop, until `stop` says so.
///
/// `stop` is a `std` mutex and condition variable, not `parking_lot`'s:
/// `parking_lot` parks threads in a process-wide table whose bucket locks a
/// forked child inherits as they were, and this thread sleeps and wakes
/// there every `interval`; a fork at that instant left a bucket locked in
/// the child, whose own store's compactor and `Drop` then waited forever
/// (adversarial_session25 `a_lease_held_across_a_fork_stays_the_parents`:
/// 3 hangs in 20 runs). `std`'s are a futex word in the object itself.
pub(crate) fn compactor_loop(
    weak: Weak<Inner>,
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    interval: Duration,
) {
    loop {
        {
            let stopped = stop.0.lock().unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
            let (stopped, _) = stop
                .1
                .wait_timeout(stopped, interval)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.check_fork().is_err() {
            return;
        }
        // Errors are retried at the next tick; a full disk must not kill the thread.
        let _ = inner.sweep_expired(false);
        let _ = inner.compact(false);
    }
}

impl Inner {
    /// Compacts segments over the threshold (or with any dead bytes when
    /// `force`). Returns the number of segments retired.
    pub(crate) fn compact(&self, force: bool) -> Result<usize> {
        // One compactor at a time, across threads and processes: two
        // compactors of one segment would each copy its tombstones, and the
        // copies would multiply at every later compaction (issue 3's stress
        // test grew thousands of segments). An OFD lock on byte 0 of `lock`
        // (the kernel drops it if the holder dies); the background compactor
        // skips a round when it is taken, `Store::compact` (and a put on a
        // full disk) waits for it at most the lock timeout.
        self.check_fork()?;
        if self.ctx.read_only() {
            return Err(read_only_error(self.ctx.dir(), "it cannot be compacted"));
        }
        let Some(_lock) = self.take_compaction_lock(force)? else {
            return Ok(0);
        };
        if force {
            // Expired entries become dead space that this compaction reclaims.
            self.sweep_expired(true)?;
            // On a full disk the next segment may not fit: the sealed ones
            // are still compacted.
            match self.with_writer(|w| w.seal_if_dead()) {
                Err(e) if crate::space::is_full(&e) => {}
                r => r?,
            }
        }
        // On a full disk, a segment whose copies do not fit ends the
        // compaction without an error: what was freed stays freed, and the
        // segments left (less dead: the most dead go first) need more room.
        let full = |e: &Error| crate::space::is_full(e);
        // A compaction that was killed (or failed) is finished first, from
        // where its journal says it stopped.
        let mut done = match crate::compaction::resume_interrupted(self) {
            Ok(resumed) => usize::from(resumed),
            Err(e) if full(&e) => return Ok(0),
            Err(e) => return Err(e),
        };
        // Only segments sealed before this compaction started: the records it
        // copies land in newer segments, and chasing those would not end.
        let below = self.with_writer_ro(|w| Ok(w.idx.hget(hdr::ACTIVE_SEG)))?;
        loop {
            let Some(victim) = self.with_writer_ro(|w| Ok(w.pick_victim(force, below)))? else {
                return Ok(done);
            };
            match crate::compaction::compact_segment(self, victim) {
                Ok(()) => done += 1,
                Err(e) if full(&e) => return Ok(done),
                Err(e) => return Err(e),
            }
            if done > format::MAX_SEGMENTS {
                return Ok(done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use crate::sys::proc::{fork_then, reap};
    use crate::{Options, Store};

    /// Whether a new description of `dir/lock` gets the compaction lock
    /// (released at once if it does).
    fn free(dir: &std::path::Path) -> bool {
        let f = crate::files::open_existing(&dir.join("lock"), true).unwrap();
        let got = crate::sys::ofd_try_lock(&f, 0).unwrap();
        if got {
            crate::sys::ofd_unlock(&f, 0).unwrap();
        }
        got
    }

    /// A child forked while the parent holds the compaction lock shares
    /// its description: dropping its copy of the guard must not release
    /// the parent's lock, and the parent's drop releases it although the
    /// child (still alive) keeps a descriptor of it.
    #[test]
    fn a_forked_child_neither_releases_nor_keeps_the_parents_compaction_lock() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default().background_compaction(false);
        let store = Store::open(dir.path(), opts).unwrap();
        let guard = Cell::new(Some(store.inner.compaction_lock().unwrap()));
        assert!(!free(dir.path()));
        let (mut parent, mut child) = std::os::unix::net::UnixStream::pair().unwrap();
        let pid = fork_then(|| {
            // The child drops its copy, reports whether the lock is still
            // held, and stays alive until the parent has checked.
            drop(guard.take());
            let held = !free(dir.path());
            let mut b = [u8::from(held)];
            let ok = child.write_all(&b).is_ok() && child.read_exact(&mut b).is_ok();
            i32::from(!ok)
        });
        let mut b = [0u8];
        parent.read_exact(&mut b).unwrap();
        assert_eq!(b[0], 1, "the child's drop released the parent's lock");
        assert!(
            !free(dir.path()),
            "the child's drop released the parent's lock"
        );
        drop(guard.take());
        assert!(
            free(dir.path()),
            "the lock stayed held while a child keeps a descriptor of it"
        );
        parent.write_all(&[0]).unwrap();
        assert_eq!(reap(pid), Some(0));
    }
}
