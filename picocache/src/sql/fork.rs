//! Forks while other threads use an SQLite database (`os.fork()`,
//! `multiprocessing`'s fork, a pre-forking server).
//!
//! SQLite keeps, per process, the lock state of each database file it has
//! open (its list of inodes and their shared-memory nodes, counting the
//! locks this process's connections hold). A child inherits that state as it
//! was at the fork: if another thread was inside a transaction then, the
//! child's SQLite believes a lock is held by one of its own connections,
//! which no thread of the child will ever release, and every new
//! connection's write waits for it (9 forks in 10 hung so). So before a
//! fork, [`before_fork`] stops new operations of every SQLite backend of the
//! process and waits (boundedly) for those running to end: the child then
//! inherits idle connections only, whose state says no lock but the shared
//! ones every open connection holds. The child never uses the parent's
//! connections (its handles reopen); [`after_fork_in_child`] lets the
//! parent's pools go without closing them.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Shared;

/// Every SQLite backend of this process.
static SQLITE: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

thread_local! {
    /// The backends this thread's [`before_fork`] stopped, until its fork is
    /// done (per thread: two threads may fork at once, and the child must
    /// take no lock another thread of the parent may have held).
    static STOPPED: RefCell<Vec<Arc<Shared>>> = const { RefCell::new(Vec::new()) };
}

/// How long the registry's lock is waited for: held for microseconds, it
/// may be held forever in a child forked while another thread of the
/// parent held it (a backend then goes unregistered rather than hang).
const REGISTRY_WAIT: Duration = Duration::from_millis(100);

/// Registers an SQLite backend.
pub(super) fn register(shared: &Arc<Shared>) {
    if let Some(mut all) = SQLITE.try_lock_for(REGISTRY_WAIT) {
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(shared));
    }
}

/// Stops new operations of every SQLite backend of this process and waits
/// at most `wait` for the running ones to end; whether they all did. Call
/// just before `fork()`, then [`after_fork_in_parent`] in the parent and
/// [`after_fork_in_child`] in the child, from the same thread. (Python's
/// package does it through `os.register_at_fork`.) Forks of several
/// threads at once each stop the pools; they go on when the last is done.
pub fn before_fork(wait: Duration) -> bool {
    let live: Vec<Arc<Shared>> = match SQLITE.try_lock_for(REGISTRY_WAIT) {
        Some(all) => all.iter().filter_map(Weak::upgrade).collect(),
        None => return false,
    };
    let until = super::guard::later(Instant::now(), wait);
    let mut all_idle = true;
    for s in &live {
        all_idle &= s.pool.quiesce(until);
    }
    let _ = STOPPED.try_with(|st| st.borrow_mut().extend(live));
    all_idle
}

/// Lets the backends this thread's [`before_fork`] stopped go on (in the
/// parent).
pub fn after_fork_in_parent() {
    let stopped = STOPPED
        .try_with(|st| std::mem::take(&mut *st.borrow_mut()))
        .unwrap_or_default();
    for s in stopped {
        s.pool.resume();
    }
}

/// In the child: the parent's backends are the parent's: their pools are
/// not touched (another thread of the parent may have held a pool's lock at
/// the fork, and no thread here would release it), their connections never
/// used nor closed; they are let go without being dropped.
pub fn after_fork_in_child() {
    let stopped = STOPPED
        .try_with(|st| std::mem::take(&mut *st.borrow_mut()))
        .unwrap_or_default();
    std::mem::forget(stopped);
}
