//! The public per-namespace API: [`Namespace`], its leases
//! ([`Lease`](crate::Lease), `lease.rs`), and the [`Watch`] that confirms
//! its [`Located`] tokens.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ctx::{now_ms, read_only_error};
use crate::error::{Error, Result};
use crate::format::{self, ent, hdr, nsr};
use crate::hash::key_hash;
use crate::index::IndexMap;
use crate::options::{Limits, NamespaceStats};
use crate::read::Located;
use crate::shared::ns_stats;
use crate::store::Store;
use crate::sys;

/// A handle on one namespace of a [`Store`].
#[derive(Clone, Debug)]
pub struct Namespace {
    pub(crate) store: Store,
    /// The namespace's row; changes if the namespace is removed (by any
    /// process) and this handle defines it again.
    pub(crate) id: Arc<AtomicU32>,
    pub(crate) name: Arc<str>,
    pub(crate) name_hash: u64,
    /// The limits to define the namespace with again if it is removed.
    pub(crate) limits: (u64, u64, u64),
}

impl Namespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store this namespace belongs to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Re-resolves the id if the namespace row changed (the namespace was
    /// removed, or a rebuild lost the definition).
    fn id(&self) -> Result<u32> {
        let inner = &self.store.inner;
        let id = self.id.load(Ordering::Relaxed);
        {
            let idx = inner.ctx.index_guard();
            if idx.ns_get(id, nsr::NAME_HASH) == self.name_hash && !idx.retired() {
                return Ok(id);
            }
        }
        let idx = inner.current_index()?;
        if idx.ns_get(id, nsr::NAME_HASH) == self.name_hash {
            return Ok(id);
        }
        inner.ctx.forget_names();
        inner.with_writer(|w| self.row(w))
    }

    /// The value stored under `key`, or `None` (a miss: absent, expired, or
    /// unreadable). A hit refreshes the entry's LRU position.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.store
            .inner
            .lookup((self.id()?, self.name_hash), key, |v| v.to_vec())
    }

    /// Like [`Namespace::get`], but hands the value to `f` without allocating.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.store
            .inner
            .lookup((self.id()?, self.name_hash), key, f)
    }

    /// Like [`Namespace::get_with`], also handing `f` the record's
    /// [`Located`] token.
    pub fn get_located<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8], Located) -> R,
    ) -> Result<Option<R>> {
        self.store
            .inner
            .lookup_at((self.id()?, self.name_hash), key, true, f)
    }

    /// Like [`Namespace::get_located`], but a peek: counts neither a hit nor
    /// a miss and leaves recency alone (a memoizer calls it after its own put).
    pub fn peek_located<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8], Located) -> R,
    ) -> Result<Option<R>> {
        self.store
            .inner
            .lookup_at((self.id()?, self.name_hash), key, false, f)
    }

    /// The hash of `key` in this namespace, for [`Namespace::hit_located`].
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        key_hash(self.id.load(Ordering::Relaxed), key)
    }

    /// Whether the record that a lookup of the key with hash `key_hash`
    /// found at `at` is still the key's live, unexpired entry. If it is, the
    /// call counts a hit (recency and counters) as [`Namespace::get`] would,
    /// without copying or checking the record again; if not (the key was
    /// overwritten, removed, evicted, compacted, expired, or the index was
    /// rebuilt), it changes nothing and the caller looks the key up again.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use picocache_engine::{Limits, Options, Store};
    /// let store = Store::open(dir.path(), Options::default()).unwrap();
    /// let ns = store.namespace("f", Limits::default()).unwrap();
    /// ns.put(b"k", b"v1").unwrap();
    /// let at = ns.get_located(b"k", |_, at| at).unwrap().unwrap();
    /// assert!(ns.hit_located(ns.key_hash(b"k"), &at).unwrap());
    /// ns.put(b"k", b"v2").unwrap(); // a new record: the token is stale
    /// assert!(!ns.hit_located(ns.key_hash(b"k"), &at).unwrap());
    /// ```
    pub fn hit_located(&self, key_hash: u64, at: &Located) -> Result<bool> {
        // (A hash made under another namespace id finds nothing: a miss. If
        // the handle's row no longer holds this namespace, the answer is
        // false and the caller's full lookup re-resolves it.)
        self.store.inner.hit_located(
            self.id.load(Ordering::Relaxed),
            self.name_hash,
            key_hash,
            at,
        )
    }

    /// A [`Watch`] on the store's current index, which
    /// confirms this namespace's [`Located`] tokens without their keys.
    pub fn watch(&self) -> Result<crate::Watch> {
        self.store.inner.check_fork()?;
        Ok(crate::Watch {
            store: self.store.clone(),
            idx: self.store.inner.current_index()?,
        })
    }

    /// Stores `value` under `key` with the namespace's default TTL, then evicts
    /// least recently used entries until the limits hold. Returns false when
    /// the limits keep the entry from being stored at all (`maxsize` 0, or a
    /// record larger than `max_bytes`).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.put_with_ttl(key, value, None)
    }

    /// Like [`Namespace::put`] with an explicit TTL (`None`: the namespace's default).
    pub fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.put_located(key, value, ttl).map(|at| at.is_some())
    }

    /// Like [`Namespace::put_with_ttl`], returning the [`Located`] token of
    /// the record written (`None` where that returns false: nothing was
    /// stored). It is the token a [`Namespace::peek_located`] of the key
    /// would return now, without that second lookup: a memoizer keeping
    /// the value in its process uses it.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use picocache_engine::{Limits, Options, Store};
    /// let store = Store::open(dir.path(), Options::default()).unwrap();
    /// let ns = store.namespace("f", Limits::default()).unwrap();
    /// let at = ns.put_located(b"k", b"v1", None).unwrap().unwrap();
    /// assert_eq!(ns.peek_located(b"k", |_, at| at).unwrap(), Some(at));
    /// assert!(ns.hit_located(ns.key_hash(b"k"), &at).unwrap());
    /// ns.put(b"k", b"v2").unwrap(); // a new record: the token is stale
    /// assert!(!ns.hit_located(ns.key_hash(b"k"), &at).unwrap());
    /// ```
    pub fn put_located(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Located>> {
        check_kv(key, value)?;
        let inner = &self.store.inner;
        inner.retry_if_full(false, || {
            inner.with_writer(|w| {
                let id = self.used_row(w)?;
                Ok(w.put_batch(id, &[(key, value)], ttl)?.1)
            })
        })
    }

    /// Like [`Namespace::put_with_ttl`], the value being the concatenation
    /// of `parts`, written into the log one part after the other without
    /// joining them first (a large value given in pieces, such as a seal's
    /// head and the value, is not copied before its write).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use picocache_engine::{Limits, Options, Store};
    /// let store = Store::open(dir.path(), Options::default()).unwrap();
    /// let ns = store.namespace("f", Limits::default()).unwrap();
    /// ns.put_parts(b"k", &[b"head:", b"", b"value"], None).unwrap();
    /// assert_eq!(ns.get(b"k").unwrap().unwrap(), b"head:value");
    /// ```
    pub fn put_parts(&self, key: &[u8], parts: &[&[u8]], ttl: Option<Duration>) -> Result<bool> {
        self.put_parts_located(key, parts, ttl)
            .map(|at| at.is_some())
    }

    /// Like [`Namespace::put_parts`], returning the record's [`Located`]
    /// token as [`Namespace::put_located`] does.
    pub fn put_parts_located(
        &self,
        key: &[u8],
        parts: &[&[u8]],
        ttl: Option<Duration>,
    ) -> Result<Option<Located>> {
        let vlen = parts
            .iter()
            .try_fold(0usize, |n, p| n.checked_add(p.len()))
            .unwrap_or(usize::MAX);
        if key.len() > format::MAX_KEY_LEN || vlen > format::MAX_VALUE_LEN {
            return check_kv(key, &[]).and_then(|_| {
                Err(Error::InvalidArgument(format!(
                    "value of {vlen} bytes exceeds the limit of {}",
                    format::MAX_VALUE_LEN
                )))
            });
        }
        let inner = &self.store.inner;
        inner.retry_if_full(false, || {
            inner.with_writer(|w| {
                let id = self.used_row(w)?;
                w.put_parts(id, key, parts, ttl)
            })
        })
    }

    /// Stores many entries under one lock and, with
    /// [`Durability::PowerLoss`](crate::Durability::PowerLoss), one fsync. Returns how many were stored.
    pub fn put_batch(&self, items: &[(&[u8], &[u8])]) -> Result<usize> {
        for (k, v) in items {
            check_kv(k, v)?;
        }
        let inner = &self.store.inner;
        inner.retry_if_full(false, || {
            inner.with_writer(|w| {
                let id = self.used_row(w)?;
                Ok(w.put_batch(id, items, None)?.0)
            })
        })
    }

    /// Removes `key`. Returns whether it was present.
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        let inner = &self.store.inner;
        inner.retry_if_full(true, || {
            inner.with_writer(|w| {
                let id = self.row(w)?;
                w.remove(id, key)
            })
        })
    }

    /// Removes every entry of this namespace (in every process) and resets its
    /// hit, miss, eviction and rejection counters.
    pub fn clear(&self) -> Result<()> {
        let inner = &self.store.inner;
        inner.retry_if_full(true, || {
            inner.with_writer(|w| {
                let id = self.row(w)?;
                w.clear(id)
            })
        })
    }

    /// Counts one stored entry that the layer above found failing its check
    /// (picocache's seal): [`NamespaceStats::rejected`], in every process,
    /// reset by [`Namespace::clear`].
    pub fn count_rejected(&self) -> Result<()> {
        if self.store.inner.ctx.read_only() {
            return Ok(()); // nothing is counted in a read-only store
        }
        let id = self.id()?;
        self.store
            .inner
            .current_index()?
            .ns_add(id, nsr::REJECTED, 1);
        Ok(())
    }

    /// The namespace's statistics.
    ///
    /// Expired entries are not counted once swept: a namespace of at most
    /// 65,536 entries is swept here (at most once a second) when one of its
    /// entries may have expired; larger ones by the background thread.
    pub fn stats(&self) -> Result<NamespaceStats> {
        let id = self.id()?;
        let inner = &self.store.inner;
        let idx = inner.current_index()?;
        let next = idx.ns_get(id, nsr::NEXT_EXPIRY);
        if next != 0 && next <= now_ms() {
            // Best effort: stats are still returned if the sweep fails.
            let _ = inner.with_writer(|w| w.sweep_if_due(id, crate::expiry::SWEEP_INLINE_MAX));
        }
        let idx = inner.current_index()?;
        Ok(ns_stats(&idx, id))
    }

    /// Every live entry as (key, value length), most recently used first (in
    /// a namespace without limits, where hits are not ranked, most recently
    /// written first).
    pub fn keys(&self) -> Result<Vec<(Vec<u8>, usize)>> {
        if self.store.inner.ctx.read_only() {
            let id = self.id()?;
            return self.store.inner.with_writer_ro(|w| Ok(w.keys(id)));
        }
        self.store.inner.with_writer(|w| {
            let id = self.row(w)?;
            Ok(w.keys(id))
        })
    }

    /// Takes the lease on `key`, waiting up to `wait`. `Ok(None)` on timeout.
    ///
    /// Memoizers take it after a miss, look again, and compute only if the
    /// key is still missing, so concurrent callers compute a key once.
    pub fn lease(&self, key: &[u8], wait: Duration) -> Result<Option<crate::Lease>> {
        self.store.inner.check_fork()?;
        let h = key_hash(self.id.load(Ordering::Relaxed), key) ^ self.name_hash;
        let inner = &self.store.inner;
        if inner.ctx.read_only() {
            return Err(read_only_error(inner.ctx.dir(), "no lease can be taken"));
        }
        let open = || {
            inner
                .ctx
                .modes()
                .open(&inner.ctx.dir().join("leases"), false)
                .map(sys::LockFile::new)
        };
        let at = h & ((1 << 40) - 1);
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            if let Some(lease) = crate::lease::try_take(&inner.lease_files, at, open)? {
                return Ok(Some(lease));
            }
            if start.elapsed() >= wait {
                return Ok(None);
            }
            std::thread::sleep(pause.min(wait.saturating_sub(start.elapsed())));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

fn check_kv(key: &[u8], value: &[u8]) -> Result<()> {
    if key.len() > format::MAX_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "key of {} bytes exceeds the limit of {}",
            key.len(),
            format::MAX_KEY_LEN
        )));
    }
    if value.len() > format::MAX_VALUE_LEN {
        return Err(Error::InvalidArgument(format!(
            "value of {} bytes exceeds the limit of {}",
            value.len(),
            format::MAX_VALUE_LEN
        )));
    }
    Ok(())
}

impl Store {
    /// Opens namespace `name`, creating it with `limits` if it does not exist;
    /// if it exists with other limits, the new limits replace them (and are
    /// enforced at once).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the name is empty or longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes, or the store already has
    /// [`MAX_NAMESPACES`](crate::MAX_NAMESPACES) namespaces.
    pub fn namespace(&self, name: &str, limits: Limits) -> Result<Namespace> {
        self.inner.check_fork()?;
        if name.is_empty() || name.len() > format::MAX_NAME_LEN {
            return Err(Error::InvalidArgument(format!(
                "namespace name must be 1 to {} bytes, got {}",
                format::MAX_NAME_LEN,
                name.len()
            )));
        }
        let name_hash = crate::name_hash(name.as_bytes());
        let enc = limits.encode();
        if let Some(id) = self.inner.ctx.cached_name(name) {
            let idx = self.inner.ctx.index();
            if idx.ns_get(id, nsr::NAME_HASH) == name_hash
                && (
                    idx.ns_get(id, nsr::MAXSIZE),
                    idx.ns_get(id, nsr::MAX_BYTES),
                    idx.ns_get(id, nsr::TTL_MS),
                ) == enc
            {
                if !self.inner.ctx.read_only() {
                    crate::index::touch(&idx, id, self.inner.ctx.use_clock());
                }
                return Ok(Namespace {
                    store: self.clone(),
                    id: Arc::new(AtomicU32::new(id)),
                    name: name.into(),
                    name_hash,
                    limits: enc,
                });
            }
        }
        if self.inner.ctx.read_only() {
            // Nothing can be defined: an existing namespace opens with the
            // limits it has.
            return self.existing_namespace(name)?.ok_or_else(|| {
                read_only_error(
                    self.inner.ctx.dir(),
                    &format!("namespace {name:?} does not exist and cannot be created"),
                )
            });
        }
        let id = self.inner.retry_if_full(false, || {
            self.inner.with_writer(|w| {
                let id = w.define_namespace(name.as_bytes(), enc)?;
                crate::index::touch(&w.idx, id, w.ctx.use_clock());
                Ok(id)
            })
        })?;
        self.inner.ctx.cache_name(name, id);
        Ok(Namespace {
            store: self.clone(),
            id: Arc::new(AtomicU32::new(id)),
            name: name.into(),
            name_hash,
            limits: enc,
        })
    }

    /// Opens an existing namespace without changing its limits.
    /// `Ok(None)` if there is no namespace of that name.
    pub fn existing_namespace(&self, name: &str) -> Result<Option<Namespace>> {
        self.inner.check_fork()?;
        let idx = self.inner.current_index()?;
        let h = crate::name_hash(name.as_bytes());
        for id in 0..format::MAX_NAMESPACES as u32 {
            if idx.ns_get(id, nsr::NAME_LEN) != 0
                && idx.ns_get(id, nsr::NAME_HASH) == h
                && idx.ns_name(id).as_deref() == Some(name.as_bytes())
            {
                return Ok(Some(Namespace {
                    store: self.clone(),
                    id: Arc::new(AtomicU32::new(id)),
                    name: name.into(),
                    name_hash: h,
                    limits: (
                        idx.ns_get(id, nsr::MAXSIZE),
                        idx.ns_get(id, nsr::MAX_BYTES),
                        idx.ns_get(id, nsr::TTL_MS),
                    ),
                }));
            }
        }
        Ok(None)
    }
}

/// What [`Watch::confirm`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Not the key's live entry (or a fork, a damaged token, ...).
    No,
    /// Live, in the index the watch reads.
    Live,
    /// Live, through the process's current index: the watch's own was
    /// replaced by a resize ([`Watch::current`] is false).
    InNewerIndex,
}

/// A watch on a store's index: confirms [`Located`] tokens without the key,
/// for an in-process cache that keys its entries by something else (the
/// Python wrapper keys them by the call's argument objects).
///
/// [`Watch::hit`] answers as [`Namespace::hit_located`](crate::Namespace::hit_located)
/// does, reading the index entry the token names instead of probing the
/// bucket array for the key: a location is never reused within an index
/// lineage, so an entry that still points at the token's location is that
/// record's live entry. A watch made before a fork confirms nothing (the
/// caller looks the key up again and takes a new watch). Once its index file
/// is replaced, [`Watch::current`] is false (take a new watch for new
/// tokens), but a token it was given still confirms through the process's
/// current index when the file was replaced by a resize, which keeps the
/// lineage, the entries' numbers and the locations (a rebuild or a
/// compaction starts a new lineage, or moves the records: their tokens no
/// longer confirm).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use picocache_engine::{Limits, Options, Store};
/// let store = Store::open(dir.path(), Options::default()).unwrap();
/// let ns = store.namespace("f", Limits::default()).unwrap();
/// ns.put(b"k", b"v1").unwrap();
/// let at = ns.get_located(b"k", |_, at| at).unwrap().unwrap();
/// let watch = ns.watch().unwrap();
/// assert!(watch.hit(&at)); // counted as a hit
/// assert_eq!(ns.stats().unwrap().hits, 2);
/// ns.put(b"k", b"v2").unwrap(); // a new record: the token is stale
/// assert!(!watch.hit(&at));
/// let at = ns.get_located(b"k", |_, at| at).unwrap().unwrap();
/// for i in 0..5000u32 {
///     ns.put(&i.to_le_bytes(), b"x").unwrap(); // the index grows into a new file
/// }
/// assert!(!watch.current()); // new tokens want a new watch,
/// assert!(watch.hit(&at)); // old ones still confirm (a resize moves no record)
/// ns.clear().unwrap(); // every token of the namespace is stale now
/// assert!(!watch.hit(&at));
/// ```
#[derive(Clone)]
pub struct Watch {
    pub(crate) store: Store,
    pub(crate) idx: Arc<IndexMap>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    /// Whether the record `at` names is still its key's live, unexpired
    /// entry in the index this watch reads; if so, counts a hit on it (the
    /// namespace's hit counter, and recency where the namespace has a limit)
    /// as a lookup would. Never an error: anything unusual answers false.
    #[inline]
    pub fn hit(&self, at: &Located) -> bool {
        self.confirm(at) != Confirmed::No
    }

    /// [`Watch::hit`], telling a token confirmed in this watch's index from
    /// one confirmed through the process's current index, the watch's own
    /// having been resized away (the caller may then re-point what it keeps
    /// at a current watch, so later hits take the short way).
    #[inline]
    pub fn confirm(&self, at: &Located) -> Confirmed {
        let inner = &self.store.inner;
        if sys::fork_generation() != inner.fork_gen {
            return Confirmed::No;
        }
        if at.expire_ms != 0 && now_ms() >= at.expire_ms {
            return Confirmed::No;
        }
        // A resize copies the index into a new file with the same lineage,
        // entry numbers and locations: a token of the retired file still
        // names its record in the process's current one.
        let current;
        let (idx, how): (&IndexMap, _) = if self.idx.retired() {
            current = inner.ctx.index_guard();
            (&current, Confirmed::InNewerIndex)
        } else {
            (&self.idx, Confirmed::Live)
        };
        if idx.retired()
            || idx.hget(hdr::GENERATION) != at.lineage
            || !idx.valid_entry(at.entry)
            || idx.eget(at.entry, ent::LOC) != at.loc
        {
            return Confirmed::No;
        }
        if !inner.ctx.read_only() {
            crate::read::count_hit(idx, at.ns, at.entry, inner.ctx.use_clock());
        }
        how
    }

    /// Whether this watch still reads the store's current index (false
    /// once the index was replaced, or after a fork: take a new one for new
    /// tokens; see the type's docs for the old ones).
    pub fn current(&self) -> bool {
        sys::fork_generation() == self.store.inner.fork_gen && !self.idx.retired()
    }
}
