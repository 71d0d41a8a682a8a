//! The `Backend` trait that every store implements.
//!
//! A backend is a connection to one store (a local engine directory, a SQL
//! database, a Redis server). It hands out [`Namespace`]s: one per memoized
//! function, each with its own limits, entries and statistics. Both traits are
//! object safe, so a memoizer holds an `Arc<dyn Namespace>` and does not care
//! which store is behind it. The conformance suite in `tests/` runs the same
//! checks against every implementation.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use picocache_engine::Limits;

use crate::Result;

/// Per-namespace statistics, the same for every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Live entries.
    pub entries: u64,
    /// Bytes held by live entries (as the backend measures them).
    pub bytes: u64,
    /// Hits since the last clear (every process / client).
    pub hits: u64,
    /// Misses since the last clear (every process / client).
    pub misses: u64,
    /// Entries evicted by the limits since the last clear.
    pub evictions: u64,
    /// Stored entries that failed their seal check (planted, tampered,
    /// unsigned or signed with another secret) and were treated as misses,
    /// since the last clear: by every process on the local engine, by this
    /// process on the other backends (only a
    /// [`SealedBackend`](crate::SealedBackend) counts them).
    pub rejected: u64,
}

/// A held per-key lease; dropping it releases the lease.
pub struct Lease(pub Box<dyn Any + Send>);

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lease")
    }
}

/// Calls `attempt` until it gives a value or `wait` has passed, sleeping
/// between tries (1 ms, doubling up to 20 ms): how the server-side leases
/// (SQL rows, Redis keys) wait for one another.
#[cfg(any(
    feature = "redis",
    feature = "sqlite",
    feature = "postgres",
    feature = "mysql"
))]
pub(crate) fn poll<T>(
    wait: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = attempt()? {
            return Ok(Some(v));
        }
        let elapsed = start.elapsed();
        if elapsed >= wait {
            return Ok(None);
        }
        std::thread::sleep(pause.min(wait - elapsed));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A store that holds namespaces.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A short name of the backend kind: "local", "sqlite", "postgresql",
    /// "mysql", "redis".
    fn kind(&self) -> &'static str;

    /// Opens namespace `name`, creating it if needed. If it exists, `limits`
    /// replace its limits (and are enforced at once).
    fn namespace(&self, name: &str, limits: Limits) -> Result<Arc<dyn Namespace>>;

    /// The names of every namespace in the store.
    fn namespace_names(&self) -> Result<Vec<String>>;

    /// Whether this backend seals its values (the
    /// [`SealedBackend`](crate::SealedBackend) adapter); memoizers seal any
    /// other backend they are given.
    fn is_sealed(&self) -> bool {
        false
    }
}

/// One namespace of a backend: a bounded LRU map of byte keys to byte values.
///
/// After `put` returns, the namespace holds at most `maxsize` entries (and,
/// where supported, `max_bytes` bytes); what is evicted is the least recently
/// used, a hit counting as a use. Expired entries are misses.
pub trait Namespace: Send + Sync + fmt::Debug {
    /// The namespace's name.
    fn name(&self) -> &str;

    /// The value under `key`, or `None` on a miss. Counts a hit or a miss.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Several gets; the default calls [`Namespace::get`] for each key.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Stores `value` under `key`, with `ttl` or the namespace's default TTL,
    /// evicting as the limits require.
    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Several puts as one step where the backend can; the default loops.
    fn put_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<()> {
        items.iter().try_for_each(|(k, v)| self.put(k, v, ttl))
    }

    /// Removes `key`; returns whether it was present.
    fn remove(&self, key: &[u8]) -> Result<bool>;

    /// Removes every entry of this namespace only, and resets its counters.
    fn clear(&self) -> Result<()>;

    /// The namespace's statistics.
    fn stats(&self) -> Result<Stats>;

    /// The namespace's limits as the store holds them.
    fn limits(&self) -> Result<Limits>;

    /// Takes the per-key lease that makes concurrent callers compute a key
    /// once, waiting up to `wait`. `Ok(None)` if it was not obtained in time.
    fn lease(&self, key: &[u8], wait: Duration) -> Result<Option<Lease>>;

    /// The local engine's namespace underneath, if this is one: memoizers
    /// use its [`picocache_engine::Located`] tokens to keep decoded values
    /// in the process. `None` (the default) for every other backend.
    ///
    /// The engine's bytes are what [`Namespace::put`] stored underneath: a
    /// caller that reads them there passes them through
    /// [`Namespace::unseal`] before using them.
    fn engine(&self) -> Option<&picocache_engine::Namespace> {
        None
    }

    /// Counts one entry that failed its seal check where every process sees
    /// it; returns whether this backend keeps such a count (the local
    /// engine does; the default does not, and the sealing layer then counts
    /// in the process).
    fn count_rejected(&self) -> Result<bool> {
        Ok(false)
    }

    /// The value inside `stored` (bytes read from [`Namespace::engine`] for
    /// `key`), or [`Error::Rejected`](crate::Error::Rejected) if it fails
    /// the seal check. The default (an unsealed namespace) returns `stored`.
    fn unseal<'a>(&self, key: &[u8], stored: &'a [u8]) -> Result<&'a [u8]> {
        let _ = key;
        Ok(stored)
    }

    /// The value part of `stored`, unchecked: for comparing with a value
    /// this process just put, never for decoding. The default returns
    /// `stored`.
    fn stored_payload<'a>(&self, stored: &'a [u8]) -> Option<&'a [u8]> {
        Some(stored)
    }
}
