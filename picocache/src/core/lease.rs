//! The store's per-key lease across processes: after a miss the leader
//! takes it before computing, and a caller that finds it taken waits (up to
//! a timeout) and looks again: the other process has probably stored the
//! value by then. A thread never waits for a lease it holds itself (the
//! function, computing a key, calls itself with the same arguments through
//! another handle of the same namespace): it would only wait for the
//! timeout.

use std::cell::RefCell;
use std::time::Duration;

use crate::backend::{Lease, Namespace};
use crate::Result;

thread_local! {
    /// The (namespace, key) leases this thread holds while it computes.
    static LEASES_HELD: RefCell<Vec<(String, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

/// A lease this thread holds, recorded until it is dropped (also on a panic),
/// so that a re-entrant call on this thread does not wait for it. Dropping it
/// releases the lease.
pub struct HeldLease {
    lease: Option<Lease>,
    ns_name: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease").finish_non_exhaustive()
    }
}

impl HeldLease {
    fn new(ns_name: &str, key: &[u8], lease: Lease) -> Self {
        // (Not recorded once the thread-local is gone, in a call from another
        // thread-local's destructor as the thread exits: no re-entry then.)
        let _ = LEASES_HELD.try_with(|h| h.borrow_mut().push((ns_name.to_owned(), key.to_vec())));
        HeldLease {
            lease: Some(lease),
            ns_name: ns_name.to_owned(),
            key: key.to_vec(),
        }
    }

    /// Whether this thread holds the lease of `key` in `ns_name`.
    pub fn held_here(ns_name: &str, key: &[u8]) -> bool {
        LEASES_HELD
            .try_with(|h| h.borrow().iter().any(|(n, k)| n == ns_name && k == key))
            .unwrap_or(false)
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        drop(self.lease.take());
        // The last record of this lease on this thread (leases are taken and
        // dropped in nested order on a thread). Dropped on another thread,
        // it finds none there: the taking thread then keeps a stale record,
        // which only makes it take no lease for that key again (no wait,
        // never a wrong value).
        let _ = LEASES_HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h
                .iter()
                .rposition(|(n, k)| *n == self.ns_name && *k == self.key)
            {
                h.remove(i);
            }
        });
    }
}

/// How taking a lease went.
#[derive(Debug)]
pub enum Acquired {
    /// Taken at once, no other process computing now: look again before
    /// computing (another may have stored the value and released the lease
    /// between the caller's miss and this).
    Free(HeldLease),
    /// Taken after waiting for another process: look again before computing.
    AfterWait(HeldLease),
    /// This thread holds it already (re-entry): compute without one.
    HeldHere,
    /// Another process held it for the whole `wait`: compute without one.
    TimedOut,
}

impl Acquired {
    /// The lease, if one is held.
    pub fn into_held(self) -> Option<HeldLease> {
        match self {
            Acquired::Free(l) | Acquired::AfterWait(l) => Some(l),
            Acquired::HeldHere | Acquired::TimedOut => None,
        }
    }
}

/// Takes the lease of `key` in `ns` (named `ns_name`), waiting up to `wait`
/// for another process that holds it. `first_try`: the result of a try
/// without waiting that the caller made already (the Python adapter tries
/// with the GIL held, then calls this with it released), else `None`.
pub fn acquire(
    ns: &dyn Namespace,
    ns_name: &str,
    key: &[u8],
    wait: Duration,
    first_try: Option<Option<Lease>>,
) -> Result<Acquired> {
    if HeldLease::held_here(ns_name, key) {
        return Ok(Acquired::HeldHere);
    }
    let tried = match first_try {
        Some(t) => t,
        None => ns.lease(key, Duration::ZERO)?,
    };
    if let Some(l) = tried {
        return Ok(Acquired::Free(HeldLease::new(ns_name, key, l)));
    }
    Ok(match ns.lease(key, wait)? {
        Some(l) => Acquired::AfterWait(HeldLease::new(ns_name, key, l)),
        None => Acquired::TimedOut,
    })
}

/// Records that this thread holds `lease` (taken by the caller's own means).
pub fn hold(ns_name: &str, key: &[u8], lease: Lease) -> HeldLease {
    HeldLease::new(ns_name, key, lease)
}
