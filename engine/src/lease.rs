//! Per-key leases: an open-file-description (`F_OFD_SETLK`) lock on one byte
//! of the `leases` file, which the kernel releases if the holder dies.
//!
//! OFD locks of one open file description do not exclude each other, so
//! each thread takes its leases through a description of its own (a
//! [`Holder`]); the leases one thread holds at once (a memoized recursion
//! holds one per level) share it, so a recursion 500 levels deep holds one
//! descriptor, not 500 (it held one each, and a low `ulimit -n` failed the
//! user's own `open` in the recursion). A holder counts its leases per byte:
//! a byte taken twice by its thread (two keys of one hash, or the same key
//! at two levels) is unlocked when the last of them is released. A holder
//! whose leases are all released gives its description back to the store's
//! pool for the next one (opening one per lease cost more than the lock).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::sys;

/// The descriptions of `leases` not in use, per store.
pub(crate) type Pool = Arc<Mutex<Vec<File>>>;

/// One thread's description of a store's `leases` file, and the bytes it
/// holds locked (with how many leases hold each).
struct Holder {
    file: Option<File>,
    held: Mutex<Held>,
    pool: Weak<Mutex<Vec<File>>>,
}

#[derive(Default)]
struct Held {
    /// Locked bytes, and how many of this holder's leases hold each.
    bytes: HashMap<u64, u32>,
    /// An unlock failed: the description may still lock a byte, so it is
    /// closed (which releases its locks), not pooled.
    poisoned: bool,
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Every lease is released (each held an `Arc` of this): unless an
        // unlock failed, the description holds no lock, and is pooled.
        let poisoned = self.held.get_mut().poisoned;
        if let (Some(file), Some(pool), false) = (self.file.take(), self.pool.upgrade(), poisoned) {
            let mut p = pool.lock();
            if p.len() < 64 {
                p.push(file);
            }
        }
    }
}

/// A thread's holder of one store: (the store's pool, the fork
/// generation, the holder while any of its leases lives).
type Entry = (Weak<Mutex<Vec<File>>>, u64, Weak<Holder>);

thread_local! {
    /// This thread's holders.
    static HOLDERS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// A per-key lease: while it is held, no other holder of a lease on the same
/// key (in any thread or process) gets one. The kernel releases it if the
/// holding process dies.
pub struct Lease {
    holder: Option<Arc<Holder>>,
    at: u64,
    fork_gen: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("at", &self.at).finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(holder) = self.holder.take() else {
            return;
        };
        // A forked child shares the description with its parent, whose lock
        // it is: the child leaves it alone.
        if sys::fork_generation() != self.fork_gen {
            std::mem::forget(holder);
            return;
        }
        let mut held = holder.held.lock();
        match held.bytes.get_mut(&self.at) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                held.bytes.remove(&self.at);
                if let Some(file) = &holder.file {
                    if sys::ofd_unlock(file, self.at).is_err() {
                        held.poisoned = true;
                    }
                }
            }
            None => {}
        }
    }
}

/// This thread's holder for the store whose pool is `pool`, made (with a
/// pooled or new description from `open`) if the thread holds no lease of
/// it now. Outside a thread's life (a thread-local destructor), a holder of
/// its own.
fn holder(
    pool: &Pool,
    open: impl FnOnce() -> std::io::Result<File>,
) -> std::io::Result<Arc<Holder>> {
    let gen = sys::fork_generation();
    let found = HOLDERS
        .try_with(|h| {
            let mut h = h.borrow_mut();
            h.retain(|(p, _, w)| p.strong_count() > 0 && w.strong_count() > 0);
            h.iter()
                .find(|(p, g, _)| *g == gen && p.upgrade().is_some_and(|p| Arc::ptr_eq(&p, pool)))
                .and_then(|(_, _, w)| w.upgrade())
        })
        .ok()
        .flatten();
    if let Some(h) = found {
        return Ok(h);
    }
    let file = match pool.lock().pop() {
        Some(f) => f,
        None => open()?,
    };
    let h = Arc::new(Holder {
        file: Some(file),
        held: Mutex::new(Held::default()),
        pool: Arc::downgrade(pool),
    });
    let _ = HOLDERS.try_with(|hs| {
        hs.borrow_mut()
            .push((Arc::downgrade(pool), gen, Arc::downgrade(&h)))
    });
    Ok(h)
}

/// Tries once to take the lease on byte `at`; the lease if taken. `open`
/// opens a new description of the store's `leases` file when the pool has
/// none.
pub(crate) fn try_take(
    pool: &Pool,
    at: u64,
    open: impl FnOnce() -> std::io::Result<File>,
) -> std::io::Result<Option<Lease>> {
    let holder = holder(pool, open)?;
    {
        let mut held = holder.held.lock();
        if let Some(n) = held.bytes.get_mut(&at) {
            *n += 1;
        } else {
            let Some(file) = &holder.file else {
                return Ok(None);
            };
            if !sys::ofd_try_lock(file, at)? {
                return Ok(None);
            }
            held.bytes.insert(at, 1);
        }
    }
    Ok(Some(Lease {
        holder: Some(holder),
        at,
        fork_gen: sys::fork_generation(),
    }))
}
