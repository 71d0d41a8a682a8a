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
//!   segment (see `log/append.rs`), or else in the reserve file's room,
//!   released under the writer lock so no other writer takes it.
//!
//! A crash between the evictions and the deletion leaves the records in the
//! log: a rebuild brings the evicted entries back with their own values
//! (the latest of their keys), like any eviction, which writes no record.

use std::sync::atomic::Ordering;

use crate::compaction::Journal;
use crate::error::Result;
use crate::format::{ent, hdr, nsr, segr, SEG_HEADER_LEN};
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
        let files = crate::log::list_segments(&self.inner.dir)?;
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
                Err(e) if crate::space::is_full(&e) => return r,
                Err(e) => return Err(e),
            }
        }
        r
    }
}
