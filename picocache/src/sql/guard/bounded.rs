//! [`BoundedPool`]: at most `max` connections open at once (idle or in
//! use); a caller that finds them all in use waits at most the operation
//! timeout for one, then fails with [`PoolBusy`]; and the freeze a fork
//! needs ([`BoundedPool::quiesce`], `sql/fork.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{later, unavailable, PoolBusy};
use crate::Result;

struct PoolState<T> {
    idle: Vec<T>,
    /// Connections open: idle plus checked out plus being opened.
    open: usize,
    /// Checkouts wait while this is not 0: forks being prepared
    /// ([`BoundedPool::quiesce`]; several threads may fork at once).
    freezes: u32,
}

/// At most `max` connections of type `T`, idle ones reused.
pub(crate) struct BoundedPool<T> {
    backend: &'static str,
    state: Mutex<PoolState<T>>,
    freed: Condvar,
    max: usize,
    wait: Duration,
    /// Connections given up on (a timeout) whose threads are still blocked:
    /// the server still holds them, so they keep their places in the pool
    /// until they end (`worker.rs`).
    lingering: Arc<AtomicUsize>,
}

/// A connection taken from a [`BoundedPool`]; dropping it closes it (and
/// frees its place), [`Checked::put_back`] returns it for reuse.
pub(crate) struct Checked<'a, T> {
    pool: &'a BoundedPool<T>,
    conn: Option<T>,
    /// Whether it was idle in the pool (it may have gone stale).
    pub(crate) reused: bool,
}

impl<T> Checked<'_, T> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut T {
        self.conn.as_mut().expect("a checked-out connection")
    }

    /// Returns the connection to the pool.
    pub(crate) fn put_back(mut self) {
        if let Some(c) = self.conn.take() {
            let mut s = self.pool.state.lock();
            s.idle.push(c);
            drop(s);
            self.pool.freed.notify_one();
        }
    }
}

impl<T> Drop for Checked<'_, T> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            drop(c);
            self.pool.release_slot();
        }
    }
}

impl<T> BoundedPool<T> {
    /// A pool of at most `max` connections (at least one) whose callers wait
    /// at most `wait` for a free one.
    pub(crate) fn new(backend: &'static str, max: usize, wait: Duration) -> Self {
        BoundedPool {
            backend,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                freezes: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
            wait,
            lingering: Arc::default(),
        }
    }

    /// This pool, counting `lingering` as its abandoned connections still
    /// open (a count shared with other pools to the same server).
    pub(crate) fn sharing_lingering(mut self, lingering: Arc<AtomicUsize>) -> Self {
        self.lingering = lingering;
        self
    }

    /// The count of this pool's abandoned connections still open (given to
    /// each connection's worker).
    pub(crate) fn lingering(&self) -> &Arc<AtomicUsize> {
        &self.lingering
    }

    /// Whether another connection may be opened: the open ones and those
    /// still lingering stay under the pool's size.
    fn has_room(&self, open: usize) -> bool {
        open + self.lingering.load(Ordering::Acquire) < self.max
    }

    /// The most connections open at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn release_slot(&self) {
        let mut s = self.state.lock();
        s.open = s.open.saturating_sub(1);
        drop(s);
        self.freed.notify_one();
    }

    /// An idle connection, or a new one from `connect` if fewer than `max`
    /// are open, or, after waiting up to the pool's wait for one, [`PoolBusy`].
    #[cfg(test)]
    pub(crate) fn checkout(&self, connect: impl FnOnce() -> Result<T>) -> Result<Checked<'_, T>> {
        self.checkout_by(later(Instant::now(), self.wait), connect)
    }

    /// [`BoundedPool::checkout`], waiting for a free connection until
    /// `deadline` at the latest.
    pub(crate) fn checkout_by(
        &self,
        deadline: Instant,
        connect: impl FnOnce() -> Result<T>,
    ) -> Result<Checked<'_, T>> {
        let start = Instant::now();
        let until = deadline.min(later(start, self.wait));
        let mut s = self.state.lock();
        loop {
            if s.freezes > 0 {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(unavailable(
                        self.backend,
                        PoolBusy {
                            max: self.max,
                            waited: start.elapsed(),
                        },
                    ));
                }
                self.freed
                    .wait_for(&mut s, left.min(Duration::from_millis(5)));
                continue;
            }
            if let Some(c) = s.idle.pop() {
                return Ok(Checked {
                    pool: self,
                    conn: Some(c),
                    reused: true,
                });
            }
            if self.has_room(s.open) {
                s.open += 1;
                drop(s);
                return match connect() {
                    Ok(c) => Ok(Checked {
                        pool: self,
                        conn: Some(c),
                        reused: false,
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(e)
                    }
                };
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.freed.wait_for(&mut s, left).timed_out() {
                if !s.idle.is_empty() || self.has_room(s.open) {
                    continue;
                }
                return Err(unavailable(
                    self.backend,
                    PoolBusy {
                        max: self.max,
                        waited: start.elapsed(),
                    },
                ));
            }
        }
    }

    /// Stops new checkouts and waits, until `until` at the latest, for the
    /// connections in use (or being opened) to come back; whether they all
    /// did. [`BoundedPool::resume`] lets checkouts go on.
    pub(crate) fn quiesce(&self, until: Instant) -> bool {
        let mut s = self.state.lock();
        s.freezes += 1;
        loop {
            if s.open.saturating_sub(s.idle.len()) == 0 {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // (Short waits: a put-back wakes one waiter, maybe a checkout.)
            self.freed
                .wait_for(&mut s, left.min(Duration::from_millis(2)));
        }
    }

    /// Ends a [`BoundedPool::quiesce`] (checkouts go on once every quiesce
    /// has ended).
    pub(crate) fn resume(&self) {
        let mut s = self.state.lock();
        s.freezes = s.freezes.saturating_sub(1);
        drop(s);
        self.freed.notify_all();
    }

    /// Closes every idle connection (after the server went away they are all
    /// suspect).
    pub(crate) fn clear_idle(&self) {
        let mut s = self.state.lock();
        let idle = std::mem::take(&mut s.idle);
        s.open = s.open.saturating_sub(idle.len());
        drop(s);
        drop(idle);
        self.freed.notify_all();
    }
}
