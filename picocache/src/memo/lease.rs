//! The `Memo` side of the lease protocol ([`crate::core::lease`]): take the
//! key's lease after a miss and, if another process held it, look again
//! before computing.

use super::Memo;
use crate::backend::Namespace;
use crate::core::codec::ValueCodec;
use crate::core::lease::{self, Acquired, HeldLease};
use crate::{Error, Result};

impl<C> Memo<C> {
    /// Takes the key's lease after a miss. If another process holds it, waits
    /// for it and looks again: that process has probably stored the value.
    pub(super) fn lease<R>(&self, ns: &dyn Namespace, key: &[u8]) -> Result<Lease<R>>
    where
        C: ValueCodec<R, Error = Error>,
    {
        let acquired = match lease::acquire(ns, &self.ns_name, key, self.lease_timeout, None) {
            Ok(a) => a,
            Err(e) => {
                self.failed(e, "taking the lease")?;
                return Ok(Lease::None);
            }
        };
        let l = match acquired {
            Acquired::Free(l) => return Ok(Lease::Held(l)),
            Acquired::AfterWait(l) => l,
            Acquired::HeldHere => return Ok(Lease::None),
            Acquired::TimedOut => {
                log::warn!(
                    "picocache: {} waited {:?} for another process computing the same \
                     arguments; computing them here too",
                    self.ns_name,
                    self.lease_timeout
                );
                return Ok(Lease::None);
            }
        };
        // The lookup before counted the miss: a look again counts a hit
        // only (one computed call, one miss).
        match ns.recheck(key) {
            Ok(Some(bytes)) => match self.codec.decode_value(&bytes) {
                Ok(r) => return Ok(Lease::Found(r, bytes)),
                Err(e) => self.failed(e, "decoding a cached value")?,
            },
            Ok(None) => {}
            Err(e) => self.failed(e, "reading the cache")?,
        }
        Ok(Lease::Held(l))
    }
}

pub(super) enum Lease<R> {
    /// The lease is held: compute.
    Held(HeldLease),
    /// Another process computed the value while this one waited.
    Found(R, Vec<u8>),
    /// No lease (a failure, a timeout, or this thread holds it): compute
    /// anyway.
    None,
}
