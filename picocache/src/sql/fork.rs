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

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Shared;

/// Every SQLite backend of this process.
static SQLITE: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// The backends [`before_fork`] stopped, until the fork is done.
static STOPPED: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

/// Registers an SQLite backend.
pub(super) fn register(shared: &Arc<Shared>) {
    let mut all = SQLITE.lock();
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(shared));
}

/// Stops new operations of every SQLite backend of this process and waits
/// at most `wait` for the running ones to end; whether they all did. Call
/// just before `fork()`, then [`after_fork_in_parent`] in the parent and
/// [`after_fork_in_child`] in the child. (Python's package does it through
/// `os.register_at_fork`.)
pub fn before_fork(wait: Duration) -> bool {
    let live: Vec<Arc<Shared>> = SQLITE.lock().iter().filter_map(Weak::upgrade).collect();
    let until = Instant::now() + wait;
    let mut all_idle = true;
    for s in &live {
        all_idle &= s.pool.quiesce(until);
    }
    STOPPED.lock().extend(live);
    all_idle
}

/// Lets the backends [`before_fork`] stopped go on (in the parent).
pub fn after_fork_in_parent() {
    for s in STOPPED.lock().drain(..) {
        s.pool.resume();
    }
}

/// In the child: the parent's backends are the parent's (their connections
/// are never used nor closed here); they are let go without being dropped.
pub fn after_fork_in_child() {
    for s in STOPPED.lock().drain(..) {
        s.pool.resume();
        std::mem::forget(s);
    }
}
