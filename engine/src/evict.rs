//! Evicting the oldest segment when a full disk leaves no room to compact
//! (FORMAT.md, "Full disk").
//!
//! Compaction copies a segment's live records forward before it deletes the
//! segment, so it needs room for the copies. When several writers have
//! filled the filesystem, every segment may still hold a live entry or two
//! and no compaction can free anything. This is a cache: the store then
//! drops the entries of its **oldest** segment (the lowest id, sealed)
//! instead of copying them, as evictions, and deletes the segment. Only
//! the oldest is safe to drop that way without writing anything for its
//! entries:
//!
//! - every `PUT` in it is older than every `PUT` elsewhere (a `PUT` gets its
//!   `seq` when it is appended to the active segment, the newest, and
//!   compaction gives a copied `PUT` a fresh one), so deleting it cannot
//!   bring back an older value of any key in a rebuild: there is none;
//! - for the same reason its `REMOVE` records shadow nothing that exists
//!   elsewhere, so they need no copy;
//! - its `CLEAR` and `NAMESPACE` records in force are copied by the usual
//!   compaction of the (now entirely dead) segment: a few small records,
//!   which fit in the headroom that ordinary appends leave in the active
//!   segment (see `writer/append.rs`), or else in the reserve file's room,
//!   released under the writer lock so no other writer takes it.
//!
//! A crash between the evictions and the deletion leaves the records in the
//! log: a rebuild brings the evicted entries back with their own values
//! (the latest of their keys), like any eviction, which writes no record.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::compaction::Journal;
use crate::error::{Error, Result};
use crate::format::v1::{self, REC_HEADER_LEN};
use crate::format::{self, ent, hdr, kind, nsr, segr, SEG_HEADER_LEN};
use crate::index::IndexMap;
use crate::log::{list_segments, read_segment, scan_segment, zero_fill, Scanned};
use crate::options::Options;
use crate::shared::Inner;
use crate::txn::Writer;

/// At most this many segments are evicted for one failing write.
const MAX_EVICTIONS_PER_WRITE: usize = 16;

impl Writer<'_> {
    /// Whether at least half of the sealed segments' record bytes are dead:
    /// the disk is full of garbage that compaction had no room to reclaim,
    /// not of entries the caller keeps (a store full of live entries says
    /// `ENOSPC` instead of evicting them).
    fn mostly_dead(&self) -> bool {
        let (mut dead, mut total) = (0u64, 0u64);
        for (row, _) in self.idx.seg_rows() {
            if self.idx.seg(row, segr::STATE).load(Ordering::Acquire) != 2 {
                continue;
            }
            let t = self.idx.seg(row, segr::TOTAL).load(Ordering::Acquire);
            total += t.saturating_sub(SEG_HEADER_LEN);
            dead += self.idx.seg(row, segr::DEAD).load(Ordering::Acquire);
        }
        total > 0 && dead.saturating_mul(2) >= total
    }

    /// The oldest segment, if it is sealed (not the active one) and no
    /// segment file with a lower id exists beside the index's rows.
    fn oldest_sealed(&self) -> Result<Option<u32>> {
        let active = self.idx.hget(hdr::ACTIVE_SEG);
        let rows = self.idx.seg_rows();
        let Some(&(row, id)) = rows.iter().min_by_key(|&&(_, id)| id) else {
            return Ok(None);
        };
        if id as u64 >= active || self.idx.seg(row, segr::STATE).load(Ordering::Acquire) != 2 {
            return Ok(None);
        }
        let files = crate::log::list_segments(self.ctx.dir())?;
        if files.iter().any(|&f| f < id) {
            return Ok(None);
        }
        Ok(Some(id))
    }

    /// Drops every entry whose record lies in segment `victim`, each counted
    /// as an eviction of its namespace (LRU list, counts and dead bytes kept
    /// as for any eviction). Returns how many.
    fn evict_entries_in(&mut self, victim: u32) -> Result<u64> {
        let idx = self.idx.clone();
        let hwm = idx.hget(hdr::ENTRY_HWM).min(idx.layout.entries);
        let mut n = 0;
        for e in 0..hwm as u32 {
            let loc = idx.eget(e, ent::LOC);
            if loc == 0 || (loc >> 32) as u32 != victim {
                continue;
            }
            let (ns, _) = idx.ns_size(e);
            self.drop_entry(e)?;
            idx.ns_add(ns, nsr::EVICTIONS, 1);
            n += 1;
        }
        Ok(n)
    }
}

impl Inner {
    /// Evicts the oldest sealed segment: drops its entries (evictions), then
    /// compacts it, which copies only its records in force and deletes it.
    /// Returns `false` if there is no such segment, or if less than half of
    /// the sealed segments' bytes are dead.
    pub(crate) fn evict_oldest_segment(&self) -> Result<bool> {
        let _lock = self.compaction_lock()?;
        let found = self.with_writer(|w| {
            // The headroom an earlier eviction used, if its room could not
            // be had back then (a segment's blocks are freed only when the
            // last process that maps it lets it go).
            let _ = w.restore_headroom();
            if !w.mostly_dead() {
                return Ok(None);
            }
            let Some(id) = w.oldest_sealed()? else {
                return Ok(None);
            };
            w.evict_entries_in(id)?;
            Ok(Some((id, Journal::read(&w.idx))))
        })?;
        let Some((victim, journal)) = found else {
            return Ok(false);
        };
        crate::compaction::compact_segment_on_full_disk(self, victim)?;
        // A compaction of another segment that stopped for lack of space
        // (between chunks: no chunk is in progress once its writer returned)
        // keeps its progress, so that it resumes without copying anything
        // twice.
        if let Some(j) = journal.filter(|j| j.victim != victim && j.dest.is_none()) {
            self.with_writer(|w| {
                let sealed = w
                    .idx
                    .seg_row(j.victim)
                    .is_some_and(|row| w.idx.seg(row, segr::STATE).load(Ordering::Acquire) == 2);
                if sealed && Journal::read(&w.idx).is_none() {
                    j.carry_into(&w.idx);
                }
                Ok(())
            })?;
        }
        Ok(true)
    }

    /// After `first` failed for lack of space (and a forced compaction ran),
    /// evicts the oldest segments one at a time, running `op` again after
    /// each, until it succeeds, fails otherwise, or nothing is left to evict.
    pub(crate) fn evict_until<R>(
        &self,
        first: Result<R>,
        mut op: impl FnMut() -> Result<R>,
    ) -> Result<R> {
        let mut r = first;
        for _ in 0..MAX_EVICTIONS_PER_WRITE {
            match &r {
                Err(e) if crate::space::is_full(e) => {}
                _ => return r,
            }
            match self.evict_oldest_segment() {
                Ok(true) => r = op(),
                Ok(false) => return r,
                // No room, or the compaction lock held past the lock
                // timeout: the write steps aside with its own error.
                Err(e) if crate::space::is_full(&e) || matches!(e, Error::Locked(_)) => return r,
                Err(e) => return Err(e),
            }
        }
        r
    }
}

// ---------------------------------------------------------------------------
// Before a rebuild, without an index
// ---------------------------------------------------------------------------

/// Evicts the oldest segment for a rebuild of the index that found no room
/// for its new file (FORMAT.md, "Full disk", "A rebuild on a full disk").
/// Called under the writer lock, with no index to trust (a writer died
/// mid-mutation): what is in force is read from the log itself.
///
/// 1. If the journal of `old` (as a rebuild would take it over) has a
///    compaction chunk in progress, its copies are zeroed now, as the
///    rebuild would, and the journal's in-progress bit is cleared in `old`,
///    so that no later rebuild discards what is written after them.
/// 2. The whole log is scanned: per namespace row, the `NAMESPACE` record
///    (definition or removal) and the `CLEAR` with the highest `seq`.
/// 3. Those of them that lie in the oldest valid segment are copied to the
///    end of the newest one (a `NAMESPACE` record under a fresh `seq`, a
///    `CLEAR` verbatim), into its headroom, or else into the reserve's
///    room, and synced.
/// 4. The oldest segment is unlinked; in `old` its row is cleared and the
///    epoch bumped, so that other processes drop their maps of it.
///
/// Returns the evicted segment, or `None` when there is none to evict (fewer
/// than two valid segments) or its records in force do not fit.
pub(crate) fn evict_oldest_before_rebuild(
    dir: &Path,
    opts: &Options,
    old: Option<&IndexMap>,
    boot: (u64, u64),
) -> Result<Option<u32>> {
    let io = opts.io.as_ref();
    let ids = list_segments(dir)?;
    if let Some(j) = Journal::for_rebuild(old, boot, &ids) {
        if j.dest.is_some() {
            for &id in &ids {
                let Some(cut) = j.cut(id) else { continue };
                let path = dir.join(format::segment_file_name(id));
                let Some(data) = read_segment(io, &path, id)? else {
                    continue;
                };
                let end = scan_segment(&data).1;
                if end > cut {
                    let file = crate::files::open_existing(&path, true)?;
                    zero_fill(io, &file, cut, end)?;
                }
            }
            if let Some(old) = old {
                // The chunk is now "not started": it is done again from its
                // start, and the zeroed copies are unused space.
                old.hset(hdr::CMP_DONE, j.done);
                old.hset(hdr::CMP_DEST, 0);
            }
        }
    }
    // Pass 1: what is in force, per row, in the whole log.
    let mut valid: Vec<(u32, u64)> = Vec::new(); // (id, end of its records)
    let mut ns_force: HashMap<u32, u64> = HashMap::new();
    let mut clear_force: HashMap<u32, u64> = HashMap::new();
    let mut max_seq = 0u64;
    for &id in &ids {
        let path = dir.join(format::segment_file_name(id));
        let Some(data) = read_segment(io, &path, id)? else {
            continue;
        };
        let (recs, end, _) = scan_segment(&data);
        for r in &recs {
            let h = r.h;
            max_seq = max_seq.max(h.seq);
            let force = match h.kind {
                kind::NAMESPACE if namespace_record_counts(&data, r) => &mut ns_force,
                kind::CLEAR if (h.ns as usize) < format::MAX_NAMESPACES => &mut clear_force,
                _ => continue,
            };
            let s = force.entry(h.ns).or_insert(0);
            *s = (*s).max(h.seq);
        }
        valid.push((id, end));
    }
    let (Some(&(victim, _)), Some(&(newest, newest_end))) = (valid.first(), valid.last()) else {
        return Ok(None);
    };
    if victim == newest {
        return Ok(None);
    }
    // Pass 2: the victim's records in force.
    let victim_path = dir.join(format::segment_file_name(victim));
    let Some(data) = read_segment(io, &victim_path, victim)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    let mut seen: Vec<(u8, u32)> = Vec::new();
    for r in scan_segment(&data).0 {
        let h = r.h;
        let in_force = match h.kind {
            kind::NAMESPACE => ns_force.get(&h.ns) == Some(&h.seq),
            kind::CLEAR => clear_force.get(&h.ns) == Some(&h.seq),
            _ => false,
        };
        if !in_force || seen.contains(&(h.kind, h.ns)) {
            continue;
        }
        seen.push((h.kind, h.ns));
        let body = &data[r.off as usize..r.off as usize + h.body_len()];
        if h.kind == kind::NAMESPACE {
            let (key, value) = body[REC_HEADER_LEN..].split_at(h.klen as usize);
            max_seq += 1;
            v1::encode_record(&mut buf, kind::NAMESPACE, h.ns, max_seq, 0, key, value);
        } else {
            buf.extend_from_slice(&data[r.off as usize..(r.off + h.size()) as usize]);
        }
    }
    drop(data);
    if !buf.is_empty() {
        let path = dir.join(format::segment_file_name(newest));
        let file = crate::files::open_existing(&path, true)?;
        let off = format::align8(newest_end.max(SEG_HEADER_LEN));
        let need = off + buf.len() as u64;
        let len = file.metadata()?.len();
        if need > len {
            let mut r = io.allocate(&file, len, need - len);
            if r.as_ref().is_err_and(crate::space::io_is_full)
                && crate::space::release_reserve_in(dir)
            {
                r = io.allocate(&file, len, need - len);
            }
            match r {
                Ok(()) => {}
                Err(e) if crate::space::io_is_full(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        io.write_at(&file, &buf, off)?;
        // The copies are on disk before the original goes.
        io.sync(&file)?;
    }
    match std::fs::remove_file(&victim_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(old) = old {
        if let Some(row) = old.seg_row(victim) {
            old.seg(row, segr::ID).store(0, Ordering::Release);
        }
        old.h(hdr::EPOCH).fetch_add(1, Ordering::AcqRel);
    }
    Ok(Some(victim))
}

/// Whether a `NAMESPACE` record counts in a rebuild: a definition (a valid
/// name and limits) or a removal (a valid name, no value), of a row in range.
fn namespace_record_counts(data: &[u8], r: &Scanned) -> bool {
    let h = r.h;
    if h.ns as usize >= format::MAX_NAMESPACES
        || h.klen == 0
        || h.klen as usize > format::MAX_NAME_LEN
    {
        return false;
    }
    let body = &data[r.off as usize..r.off as usize + h.body_len()];
    h.vlen == 0 || format::decode_limits(&body[REC_HEADER_LEN + h.klen as usize..]).is_some()
}
