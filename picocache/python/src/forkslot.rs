//! A handle that belongs to one process: opened again in a forked child.
//!
//! A store's backend and a namespace's handle hold connections, maps and
//! locks of the process that opened them. A child forked from it must not
//! use them (another process's SQLite locks, a Redis connection the parent
//! is reading from) nor close them (the parent still does). A [`ForkSlot`]
//! keeps the handle with the fork generation ([`crate::fork_gen`]) it was
//! opened under, and a caller in a newer generation opens its own and
//! forgets (never drops) the parent's.
//!
//! Its lock is held for a few instructions, never across the open (file or
//! network I/O, with the GIL released), but by threads that may have
//! released the GIL; so a child forked meanwhile can inherit it held by a
//! thread it does not have. Past [`STUCK`] it is taken for such a lock, and
//! the call works with a handle of its own (slower, never a hang).

use std::time::Duration;

use parking_lot::Mutex;

use crate::fork_gen;

/// How long a slot's lock is waited for before it is taken for one a
/// forked child inherited held: a live holder holds it for a few
/// instructions.
pub(crate) const STUCK: Duration = Duration::from_millis(250);

/// A handle of type `T` (cheap to clone: an `Arc`) and the fork generation
/// it was opened under.
pub(crate) struct ForkSlot<T> {
    state: Mutex<(u64, T)>,
}

impl<T: Clone> ForkSlot<T> {
    /// A slot holding `handle`, opened by this process now.
    pub(crate) fn new(handle: T) -> Self {
        ForkSlot {
            state: Mutex::new((fork_gen(), handle)),
        }
    }

    /// This process's handle: the one kept if it was opened under the
    /// current generation, else one `open` makes (kept for the next call,
    /// the parent's forgotten).
    pub(crate) fn get<E>(&self, open: impl Fn() -> Result<T, E>) -> Result<T, E> {
        let gen = fork_gen();
        {
            let Some(st) = self.state.try_lock_for(STUCK) else {
                return open();
            };
            if st.0 == gen {
                return Ok(st.1.clone());
            }
        }
        let fresh = open()?;
        let Some(mut st) = self.state.try_lock_for(STUCK) else {
            return Ok(fresh);
        };
        if st.0 != gen {
            let old = std::mem::replace(&mut *st, (gen, fresh));
            // The parent's connections and maps belong to the parent:
            // never closed here.
            std::mem::forget(old);
        } // else another thread opened one meanwhile: ours is dropped
        Ok(st.1.clone())
    }

    /// Takes the handle kept for one of another process (a backend that
    /// answered `Forked`): the next [`ForkSlot::get`] opens a new one.
    pub(crate) fn invalidate(&self) {
        if let Some(mut st) = self.state.try_lock_for(STUCK) {
            st.0 = u64::MAX;
        }
    }
}
