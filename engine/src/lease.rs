//! Per-key leases: an open-file-description (`F_OFD_SETLK`) lock on one byte
//! of the `leases` file, which the kernel releases if the holder dies.
//!
//! OFD locks of one open file description do not exclude each other, so
//! each thread takes its leases through a description of its own (a
//! [`Holder`]); the leases one thread holds at once (a memoized recursion
//! holds one per level) share it, so a recursion 500 levels deep holds one
//! descriptor, not 500 (it held one each, and a low `ulimit -n` failed the
//! user's own `open` in the recursion). A holder remembers the bytes it
//! holds locked, and refuses a byte it holds already, as another thread's
//! holder would be refused: the lease that holds it may have been moved to
//! another thread (a `Lease` is `Send`, and a move cannot be seen), and the
//! thread that took it must not get the key again while that thread holds
//! it (adversarial round 25: it did, the byte was counted as re-entered). A
//! thread that asks again for a key it holds (the memoizers check for that
//! first: a function re-entering itself computes without a lease) waits,
//! up to its `wait`, like anyone else; so does one asking for a second key
//! of the same lock byte (40 bits of the key's hash) while holding the
//! first. A lease dropped on another thread releases its byte through its
//! holder's description. A holder whose leases are all released gives its
//! description back to the store's pool for the next one (opening one per
//! lease cost more than the lock).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::sys::{self, LockFile as File};

/// The descriptions of `leases` not in use, per store.
pub(crate) type Pool = Arc<Mutex<Vec<File>>>;

/// One thread's description of a store's `leases` file, and the bytes it
/// holds locked (one lease each).
struct Holder {
    file: Option<File>,
    held: Mutex<Held>,
    pool: Weak<Mutex<Vec<File>>>,
}

#[derive(Default)]
struct Held {
    /// Locked bytes, each held by one lease of this holder (which may have
    /// moved to another thread since).
    bytes: HashSet<u64>,
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

/// A per-key lease: while it is held, no other lease on the same key is
/// granted (in any thread or process, the thread that took it included,
/// wherever the lease has been moved to since). The kernel releases it if
/// the holding process dies.
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
        // On whichever thread the lease is dropped: its holder's
        // description (the taking thread's) holds the lock.
        let mut held = holder.held.lock();
        if held.bytes.remove(&self.at) {
            if let Some(file) = &holder.file {
                if sys::ofd_unlock(file, self.at).is_err() {
                    held.poisoned = true;
                }
            }
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
        // Held by a lease of this thread's (here, or moved elsewhere): the
        // kernel would grant it again to this description, so it is
        // refused here.
        if held.bytes.contains(&at) {
            return Ok(None);
        }
        let Some(file) = &holder.file else {
            return Ok(None);
        };
        if !sys::ofd_try_lock(file, at)? {
            return Ok(None);
        }
        held.bytes.insert(at);
    }
    Ok(Some(Lease {
        holder: Some(holder),
        at,
        fork_gen: sys::fork_generation(),
    }))
}
