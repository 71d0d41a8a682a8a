//! The `Memo` side of the lease protocol ([`crate::core::lease`]): take the
//! key's lease after a miss and look again before computing (another caller
//! may have stored the value between the miss and the lease).

use super::Memo;
use crate::backend::Namespace;
use crate::core::codec::ValueCodec;
use crate::core::lease::{self, Acquired, HeldLease};
use crate::{Error, Result};

impl<C> Memo<C> {
    /// Takes the key's lease after a miss (waiting for it if another process
    /// holds it), then looks again: another caller may have stored the value
    /// since the miss, whether this one waited for its lease or it had
    /// released it already (a lease taken at once is no proof that nobody
    /// computed the key meanwhile).
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
            Acquired::Free(l) | Acquired::AfterWait(l) => l,
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
    /// Another caller stored the value since the miss.
    Found(R, Vec<u8>),
    /// No lease (a failure, a timeout, or this thread holds it): compute
    /// anyway.
    None,
}
