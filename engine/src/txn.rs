//! Transactions: the one writer at a time (in-process mutex, then the
//! cross-process `flock`), recovery before a mutation, the index's
//! mutating/clean state around it, and group commit of appends.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ctx::{read_only_error, WriteCtx, WriterState};
use crate::error::{Error, Result};
use crate::format::{self, hdr};
use crate::index::IndexMap;
use crate::options::Durability;
use crate::shared::Inner;
use crate::sys;

/// The writer: holds the in-process mutex and the cross-process flock.
///
/// It works through the store's [`WriteCtx`] only (see `ctx.rs`): the locks
/// it holds, and the rest of [`Inner`], are out of its reach.
pub(crate) struct Writer<'a> {
    pub(crate) ctx: &'a WriteCtx,
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
        if mutating && self.ctx.opts().durability == Durability::PowerLoss {
            self.ctx.group_sync(self.ctx.appended())?;
        }
        Ok(r)
    }

    fn writer_op_locked<R>(
        &self,
        mutating: bool,
        mut f: impl FnMut(&mut Writer<'_>) -> Result<R>,
    ) -> Result<R> {
        self.check_fork()?;
        if mutating && self.ctx.read_only() {
            return Err(read_only_error(self.ctx.dir(), "it cannot be written"));
        }
        let mut st = self.writer.lock();
        let _flock = self.take_writer_lock()?;
        let mut idx = self.ctx.index();
        let mut rebuilt = false;
        loop {
            let mut w = Writer {
                ctx: &self.ctx,
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

/// The longest back-off of writer-lock waits (see [`LockBackoff`]).
///
/// [`LockBackoff`]: crate::shared::LockBackoff
const MAX_LOCK_BACKOFF: Duration = Duration::from_secs(10);
/// The first back-off of writer-lock waits.
const FIRST_LOCK_BACKOFF: Duration = Duration::from_secs(1);

impl Inner {
    /// The cross-process writer lock: waited for at most `lock_timeout`,
    /// or, within the back-off after a wait timed out, tried once (see
    /// [`LockBackoff`](crate::shared::LockBackoff)).
    fn take_writer_lock(&self) -> Result<FlockGuard<'_>> {
        let timeout = self.ctx.opts().lock_timeout;
        let backing_off = {
            let b = self.lock_backoff.lock();
            b.until
                .and_then(|u| u.checked_duration_since(Instant::now()))
        };
        if let Some(left) = backing_off {
            if sys::flock(&self.lock_file, true, true)? {
                *self.lock_backoff.lock() = Default::default();
                return Ok(FlockGuard(&self.lock_file));
            }
            return Err(Error::Locked(format!(
                "the store's writer lock is held by another process or thread, and a wait of \
                 {timeout:?} for it timed out lately (one stopped while writing?): not waited \
                 for again for {left:?}"
            )));
        }
        match FlockGuard::new(&self.lock_file, timeout) {
            Ok(g) => {
                let mut b = self.lock_backoff.lock();
                if b.until.is_some() {
                    *b = Default::default();
                }
                Ok(g)
            }
            Err(e @ Error::Locked(_)) => {
                let mut b = self.lock_backoff.lock();
                b.window = if b.window.is_zero() {
                    FIRST_LOCK_BACKOFF
                } else {
                    (b.window * 2).min(MAX_LOCK_BACKOFF)
                };
                b.until = Instant::now().checked_add(b.window);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

struct FlockGuard<'a>(&'a File);

impl<'a> FlockGuard<'a> {
    /// The writer lock, waited for at most `timeout` (see
    /// [`Options::lock_timeout`](crate::Options::lock_timeout)).
    fn new(f: &'a File, timeout: std::time::Duration) -> Result<FlockGuard<'a>> {
        if !sys::flock_within(f, timeout)? {
            return Err(locked(timeout));
        }
        Ok(FlockGuard(f))
    }
}

/// The error of a writer lock not taken within `timeout`.
pub(crate) fn locked(timeout: std::time::Duration) -> Error {
    Error::Locked(format!(
        "the store's writer lock stayed held by another process or thread for {timeout:?} \
         (one stopped while writing?)"
    ))
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
        let (a, b) = self.ctx.boot_id();
        if (self.idx.hget(hdr::BOOT_ID), self.idx.hget(hdr::BOOT_ID + 8)) != (a, b) {
            self.idx.hset(hdr::BOOT_ID, a);
            self.idx.hset(hdr::BOOT_ID + 8, b);
        }
        if was_clean {
            self.idx.flush_header(self.ctx.io())?;
        }
        Ok(())
    }

    pub(crate) fn end(&mut self) {
        if std::mem::take(&mut self.st.mark_clean) {
            self.idx.hset(hdr::STATE, format::STATE_CLEAN_SYNCED);
            let _ = self.idx.flush(self.ctx.io());
        } else {
            self.idx.hset(hdr::STATE, 0);
        }
    }
}
