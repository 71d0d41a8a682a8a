//! Transactions: the one writer at a time (in-process mutex, then the
//! cross-process `flock`), recovery before a mutation, the index's
//! mutating/clean state around it, and group commit of appends.

use std::fs::File;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{self, hdr};
use crate::index::IndexMap;
use crate::options::Durability;
use crate::shared::{read_only_error, Inner, WriterState};
use crate::sys;

/// The writer: holds the in-process mutex and the cross-process flock.
pub(crate) struct Writer<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) idx: Arc<IndexMap>,
    pub(crate) st: &'a mut WriterState,
}

impl Inner {
    /// Runs `f` as the one writer of the store: in-process mutex, then the
    /// cross-process `flock`, then recovery if the last writer died
    /// mid-mutation, then the mutation itself.
    pub(crate) fn with_writer<R>(&self, f: impl FnMut(&mut Writer<'_>) -> Result<R>) -> Result<R> {
        self.writer_op(true, f)
    }

    /// Like [`Inner::with_writer`] for operations that only read under the lock.
    pub(crate) fn with_writer_ro<R>(
        &self,
        f: impl FnMut(&mut Writer<'_>) -> Result<R>,
    ) -> Result<R> {
        self.writer_op(false, f)
    }

    fn writer_op<R>(
        &self,
        mutating: bool,
        f: impl FnMut(&mut Writer<'_>) -> Result<R>,
    ) -> Result<R> {
        let r = self.writer_op_locked(mutating, f)?;
        if mutating && self.opts.durability == Durability::PowerLoss {
            let mine = self.commit.lock().appended;
            self.group_sync(mine)?;
        }
        Ok(r)
    }

    /// Makes every append numbered up to `upto` durable. Callers arriving
    /// while another thread syncs wait for it and are usually covered by its
    /// fsync: several writers committing together share one.
    pub(crate) fn group_sync(&self, upto: u64) -> Result<()> {
        if self.commit.lock().synced >= upto {
            return Ok(());
        }
        let _g = self.sync_lock.lock();
        if self.commit.lock().synced >= upto {
            return Ok(());
        }
        self.sync_pending()
    }

    /// Syncs every segment with unsynced appends.
    pub(crate) fn sync_pending(&self) -> Result<()> {
        let (target, pending) = {
            let mut c = self.commit.lock();
            (c.appended, std::mem::take(&mut c.pending))
        };
        for (i, &id) in pending.iter().enumerate() {
            if let Some(seg) = self.segment(id) {
                if let Err(e) = self.opts.io.sync(&seg.file) {
                    // Whatever was not synced stays pending.
                    self.commit
                        .lock()
                        .pending
                        .extend(pending.iter().skip(i).copied());
                    return Err(e.into());
                }
            }
        }
        let mut c = self.commit.lock();
        c.synced = c.synced.max(target);
        Ok(())
    }

    fn writer_op_locked<R>(
        &self,
        mutating: bool,
        mut f: impl FnMut(&mut Writer<'_>) -> Result<R>,
    ) -> Result<R> {
        self.check_fork()?;
        if mutating && self.read_only {
            return Err(read_only_error(&self.dir, "it cannot be written"));
        }
        let mut st = self.writer.lock();
        let _flock = FlockGuard::new(&self.lock_file)?;
        let mut idx = self.index.read().clone();
        let mut rebuilt = false;
        loop {
            let mut w = Writer {
                inner: self,
                idx: idx.clone(),
                st: &mut st,
            };
            w.recover_if_needed()?;
            if mutating {
                w.begin()?;
            }
            match f(&mut w) {
                Ok(r) => {
                    if mutating {
                        w.end();
                    }
                    return Ok(r);
                }
                Err(Error::Corrupted { .. }) if !rebuilt => {
                    // The index contradicted itself: rebuild it from the log and retry.
                    w.rebuild()?;
                    w.end();
                    idx = w.idx.clone();
                    rebuilt = true;
                }
                Err(e) => {
                    if mutating && !matches!(e, Error::Corrupted { .. }) {
                        w.end();
                    }
                    return Err(e);
                }
            }
        }
    }
}

struct FlockGuard<'a>(&'a File);

impl<'a> FlockGuard<'a> {
    fn new(f: &'a File) -> Result<FlockGuard<'a>> {
        sys::flock(f, true, false)?;
        Ok(FlockGuard(f))
    }
}

impl Drop for FlockGuard<'_> {
    fn drop(&mut self) {
        let _ = sys::funlock(self.0);
    }
}

impl Writer<'_> {
    /// Marks the index mid-mutation. If it was synced clean, leaving that
    /// state is made durable (`msync` of the header page) before anything
    /// else changes: otherwise a power loss could leave the clean header of
    /// the sync beside pages the kernel wrote back since, an index that
    /// would be trusted after the reboot and is not consistent (FORMAT.md,
    /// "Recovery"). Only the first mutation after a sync pays this.
    pub(crate) fn begin(&mut self) -> Result<()> {
        let was_clean = self.idx.hget(hdr::STATE) & format::STATE_CLEAN_SYNCED != 0;
        self.idx.hset(hdr::STATE, format::STATE_MUTATING);
        let (a, b) = self.inner.boot_id;
        if (self.idx.hget(hdr::BOOT_ID), self.idx.hget(hdr::BOOT_ID + 8)) != (a, b) {
            self.idx.hset(hdr::BOOT_ID, a);
            self.idx.hset(hdr::BOOT_ID + 8, b);
        }
        if was_clean {
            self.idx.flush_header(self.inner.opts.io.as_ref())?;
        }
        Ok(())
    }

    pub(crate) fn end(&mut self) {
        if std::mem::take(&mut self.st.mark_clean) {
            self.idx.hset(hdr::STATE, format::STATE_CLEAN_SYNCED);
            let _ = self.idx.flush(self.inner.opts.io.as_ref());
        } else {
            self.idx.hset(hdr::STATE, 0);
        }
    }
}
