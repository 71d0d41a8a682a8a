//! The store's per-key lease across processes: after a miss the leader takes
//! it before computing, and a caller that finds it taken waits and looks
//! again. A thread never waits for a lease it holds itself.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{decode, Memo};
use crate::backend::Namespace;
use crate::Result;

impl Memo {
    /// Takes the key's lease after a miss. If another process holds it, waits
    /// for it and looks again: that process has probably stored the value.
    ///
    /// A thread that already holds the lease (the function, computing `key`,
    /// calls itself with the same arguments through another `Memo` of the
    /// same namespace) takes none: waiting for its own lease would only end
    /// at the timeout.
    pub(super) fn lease<R: DeserializeOwned>(
        &self,
        ns: &dyn Namespace,
        key: &[u8],
    ) -> Result<Lease<R>> {
        if HeldLease::held_here(&self.ns_name, key) {
            return Ok(Lease::None);
        }
        match ns.lease(key, Duration::ZERO) {
            Ok(Some(l)) => return Ok(Lease::Held(l)),
            Ok(None) => {}
            Err(e) => {
                self.failed(e, "taking the lease")?;
                return Ok(Lease::None);
            }
        }
        let l = match ns.lease(key, self.lease_timeout) {
            Ok(Some(l)) => l,
            Ok(None) => {
                log::warn!(
                    "picocache: {} waited {:?} for another process computing the same \
                     arguments; computing them here too",
                    self.ns_name,
                    self.lease_timeout
                );
                return Ok(Lease::None);
            }
            Err(e) => {
                self.failed(e, "taking the lease")?;
                return Ok(Lease::None);
            }
        };
        // The lookup before counted the miss: a look again counts a hit
        // only (one computed call, one miss).
        match ns.recheck(key) {
            Ok(Some(bytes)) => match decode::<R>(&bytes) {
                Ok(r) => return Ok(Lease::Found(r, bytes)),
                Err(e) => self.failed(e, "decoding a cached value")?,
            },
            Ok(None) => {}
            Err(e) => self.failed(e, "reading the cache")?,
        }
        Ok(Lease::Held(l))
    }
}

thread_local! {
    /// The (namespace, key) leases this thread holds while it computes.
    static LEASES_HELD: std::cell::RefCell<Vec<(String, Vec<u8>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A store lease taken by this thread, recorded in [`LEASES_HELD`] until it
/// is dropped (also on a panic), so that a re-entrant call on this thread
/// does not wait for it.
pub(super) struct HeldLease {
    _lease: crate::backend::Lease,
}

impl HeldLease {
    pub(super) fn new(ns_name: &str, key: &[u8], lease: crate::backend::Lease) -> Self {
        LEASES_HELD.with(|h| h.borrow_mut().push((ns_name.to_owned(), key.to_vec())));
        HeldLease { _lease: lease }
    }

    pub(super) fn held_here(ns_name: &str, key: &[u8]) -> bool {
        LEASES_HELD.with(|h| h.borrow().iter().any(|(n, k)| n == ns_name && k == key))
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        // Leases are taken and dropped in nested order: the last one is
        // this one.
        let _ = LEASES_HELD.try_with(|h| h.borrow_mut().pop());
    }
}

pub(super) enum Lease<R> {
    /// The lease is held: compute.
    Held(crate::backend::Lease),
    /// Another process computed the value while this one waited.
    Found(R, Vec<u8>),
    /// No lease (a failure or a timeout): compute anyway.
    None,
}
