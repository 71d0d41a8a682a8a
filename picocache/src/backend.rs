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

    /// A second look at `key` by a caller that counted its miss already
    /// (it missed, then took the key's lease): a value found counts as a
    /// hit, none counts nothing, so one computed call is one miss. The
    /// default is [`Namespace::get`] (which counts a second miss).
    fn recheck(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(key)
    }

    /// Several gets; the default calls [`Namespace::get`] for each key.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Stores `value` under `key`, with `ttl` or the namespace's default TTL,
    /// evicting as the limits require.
    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Stores the concatenation of `parts` under `key`, as [`Namespace::put`]
    /// would. A backend that can write the parts without joining them first
    /// (the local engine) does; the default joins them (one copy) and puts.
    fn put_parts(&self, key: &[u8], parts: &[&[u8]], ttl: Option<Duration>) -> Result<()> {
        match parts {
            [one] => self.put(key, one, ttl),
            _ => self.put(key, &parts.concat(), ttl),
        }
    }

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

    /// The namespace's [`Locate`] capability, if it has one: reads that
    /// say where a record lives, so a memoizer can keep decoded values in
    /// its process. `None` (the default) for a backend that cannot confirm
    /// cheaply that a record is still live (every remote one: another
    /// machine changes records unseen).
    fn locate(&self) -> Option<&dyn Locate> {
        None
    }

    /// Counts one entry that failed its seal check where every process sees
    /// it; returns whether this backend keeps such a count (the local
    /// engine does; the default does not, and the sealing layer then counts
    /// in the process).
    fn count_rejected(&self) -> Result<bool> {
        Ok(false)
    }
}

/// Where a [`Locate`] read found a key's record: a token that
/// [`Locate::confirm_located`] checks later. It names one record, not a key:
/// once the key is overwritten, removed, evicted, expired, compacted or
/// cleared (by any process), the token no longer confirms. Two tokens are
/// equal when they name the same record of the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    key_hash: u64,
    at: picocache_engine::Located,
}

impl Located {
    /// A token of the local engine's record `at` of the key with `key_hash`.
    pub(crate) fn engine(key_hash: u64, at: picocache_engine::Located) -> Self {
        Located { key_hash, at }
    }

    /// The hash of the key ([`Locate::key_hash`]).
    pub fn key_hash(&self) -> u64 {
        self.key_hash
    }

    /// The engine's token.
    pub(crate) fn at(&self) -> &picocache_engine::Located {
        &self.at
    }
}

/// The optional capability of a [`Namespace`] ([`Namespace::locate`]) that
/// memoizers use to keep decoded values in their process: a read that says
/// where the record lives, and a check, much cheaper than a read, that the
/// record is still the key's live entry.
///
/// A memoizer that keeps the value decoded from a [`Locate::read_located`]
/// serves it again only after [`Locate::confirm_located`] says yes, so a
/// value changed, removed, evicted, expired or cleared by any process is
/// never served from its process. The local engine has this capability (the
/// check reads the shared index in memory); a
/// [`SealedBackend`](crate::SealedBackend) passes it on, checking each
/// value's seal in the read.
pub trait Locate: Send + Sync {
    /// The hash of `key` that [`Located::key_hash`] reports (the same for
    /// every read of the key through this namespace handle).
    fn key_hash(&self, key: &[u8]) -> u64;

    /// Reads `key` in place: calls `f` with its value (checked and unsealed
    /// where the namespace seals: a value failing its check is an
    /// [`Error::Rejected`](crate::Error::Rejected) and `f` is not called) and
    /// the record's token. `Ok(false)` if the key has no live entry. With
    /// `count` the read is a lookup ([`Namespace::get`]: a hit or miss,
    /// recency); without, a peek that changes nothing.
    fn read_located(
        &self,
        key: &[u8],
        count: bool,
        f: &mut dyn FnMut(&[u8], Located),
    ) -> Result<bool>;

    /// Whether the record `at` names is still its key's live, unexpired
    /// entry. If so, counts a hit and refreshes recency as
    /// [`Namespace::get`] would, without reading or checking the value again;
    /// if not, changes nothing (the caller reads the key again).
    fn confirm_located(&self, at: &Located) -> Result<bool>;

    /// Stores the concatenation of `parts` under `key` as
    /// [`Namespace::put_parts`] does (sealed where the namespace seals), and
    /// returns the token of the record written: the one a
    /// [`Locate::read_located`] of the key would give now, without that
    /// second lookup, so a memoizer can keep the value it stored. `None`
    /// when nothing was stored (the limits keep the value out: `maxsize` 0,
    /// a record larger than `max_bytes`).
    fn put_parts_located(
        &self,
        key: &[u8],
        parts: &[&[u8]],
        ttl: Option<Duration>,
    ) -> Result<Option<Located>>;

    /// [`Locate::put_parts_located`] of one value: stores `value` under
    /// `key` as [`Namespace::put`] does and returns the new record's token.
    fn put_located(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Located>> {
        self.put_parts_located(key, &[value], ttl)
    }

    /// A [`Watch`] that confirms this namespace's tokens without their
    /// keys, as [`Locate::confirm_located`] does (counting the hit), or
    /// `None` (the default) if the namespace has none. A memoizer that keys
    /// its kept values by something other than the encoded key (the Python
    /// wrapper: the call's argument objects) holds one.
    fn watch(&self) -> Option<Watch> {
        None
    }
}

/// A cheap, lock-free confirmation of [`Located`] tokens ([`Locate::watch`]):
/// the local engine's [`picocache_engine::Watch`]. It reads one index file;
/// once that file is replaced, [`Watch::current`] is false: take a new one
/// for new tokens (the old ones still confirm if a resize replaced it); in a
/// forked child it confirms nothing.
#[derive(Clone, Debug)]
pub struct Watch(picocache_engine::Watch);

impl Watch {
    /// Whether the record `at` names is still its key's live, unexpired
    /// entry; if so, counts a hit and refreshes recency as
    /// [`Locate::confirm_located`] does. Never an error: anything unusual
    /// (a replaced index, a fork, a token of another index) answers false.
    #[inline]
    pub fn hit(&self, at: &Located) -> bool {
        self.0.hit(at.at())
    }

    /// [`Watch::hit`], saying whether the token was confirmed through a
    /// newer index than the watch's own ([`picocache_engine::Watch::confirm`]).
    #[inline]
    pub fn confirm(&self, at: &Located) -> picocache_engine::Confirmed {
        self.0.confirm(at.at())
    }

    /// Whether this watch still reads the store's current index.
    pub fn current(&self) -> bool {
        self.0.current()
    }

    pub(crate) fn engine(w: picocache_engine::Watch) -> Self {
        Watch(w)
    }
}
