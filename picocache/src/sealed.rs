//! [`SealedBackend`]: any backend, with every value sealed on the way in
//! and checked on the way out (see [`crate::seal`]).
//!
//! Memoizers (the Rust [`Memo`](crate::Memo) and the Python package) always
//! work through it. A stored value that fails the check is never returned:
//! `get` answers [`Error::Rejected`], which memoizers treat as a miss (the
//! function runs and its result overwrites the entry) with a warning, or as
//! an error in strict mode. Each rejected entry is counted once in
//! [`Stats::rejected`]: by the store where it keeps such a count (the local
//! engine: every process), else in this process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, Lease, Limits, Locate, Located, Namespace, Stats};
use crate::seal::{self, Secrets};
use crate::secret::SecretSource;
use crate::{Error, Result};

/// A backend whose values are sealed with a secret.
#[derive(Debug, Clone)]
pub struct SealedBackend {
    inner: Arc<dyn Backend>,
    secrets: Arc<Secrets>,
    source: SecretSource,
}

impl SealedBackend {
    /// `inner`, sealing with `secrets` (the first seals, all check).
    pub fn new(inner: Arc<dyn Backend>, secrets: Arc<Secrets>, source: SecretSource) -> Self {
        SealedBackend {
            inner,
            secrets,
            source,
        }
    }

    /// `inner`, sealing with the secret of `PICOCACHE_SECRET` or the
    /// per-user secret file (see [`crate::secret`]).
    pub fn with_default_secret(inner: Arc<dyn Backend>) -> Result<Self> {
        let (secrets, source) = crate::secret::resolve(None)?;
        Ok(Self::new(inner, secrets, source))
    }

    /// The backend underneath (its values are sealed bytes).
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// Where the secrets came from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

impl Backend for SealedBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn namespace(&self, name: &str, limits: Limits) -> Result<Arc<dyn Namespace>> {
        Ok(Arc::new(SealedNamespace {
            inner: self.inner.namespace(name, limits)?,
            secrets: self.secrets.clone(),
            remote: self.inner.kind() != "local",
            rejected: AtomicU64::new(0),
            last_rejected: AtomicU64::new(0),
        }))
    }

    fn namespace_names(&self) -> Result<Vec<String>> {
        self.inner.namespace_names()
    }

    fn is_sealed(&self) -> bool {
        true
    }
}

/// A namespace of a [`SealedBackend`].
#[derive(Debug)]
pub struct SealedNamespace {
    inner: Arc<dyn Namespace>,
    secrets: Arc<Secrets>,
    /// Whether other machines may write the store (the hint about
    /// `PICOCACHE_SECRET` then applies).
    remote: bool,
    rejected: AtomicU64,
    /// A hash of the key of the last rejected entry: a lookup and the
    /// recheck after taking the lease see one entry, counted once.
    last_rejected: AtomicU64,
}

fn key_tag(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key) | 1
}

impl SealedNamespace {
    /// The value inside `stored` (read for `key`), or the rejection.
    fn open<'a>(&self, key: &[u8], stored: &'a [u8]) -> Result<&'a [u8]> {
        self.secrets
            .open(self.inner.name(), key, stored)
            .map_err(|r| self.reject(key, r))
    }

    fn reject(&self, key: &[u8], reason: seal::Rejection) -> Error {
        let tag = key_tag(key);
        if self.last_rejected.swap(tag, Ordering::Relaxed) != tag
            && !self.inner.count_rejected().unwrap_or(false)
        {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        Error::Rejected {
            namespace: self.inner.name().to_owned(),
            reason,
            remote: self.remote,
        }
    }
}

impl SealedNamespace {
    /// Seals the concatenation of `parts` for `key` and hands `store` the
    /// stored parts: the seal's head, computed over the parts (no copy of
    /// them), in front of them. Once stored, an earlier rejection of the key
    /// is forgotten (the next one is counted again).
    fn put_sealed<R>(
        &self,
        key: &[u8],
        parts: &[&[u8]],
        store: impl FnOnce(&[&[u8]]) -> Result<R>,
    ) -> Result<R> {
        let head = self.secrets.seal_head(self.inner.name(), key, parts);
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&head);
        all.extend_from_slice(parts);
        let r = store(&all)?;
        let _ = self.last_rejected.compare_exchange(
            key_tag(key),
            0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        Ok(r)
    }

    /// The payload of a stored entry, checked.
    fn opened(&self, key: &[u8], stored: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        match stored {
            None => Ok(None),
            Some(mut stored) => {
                self.open(key, &stored)?;
                stored.drain(..seal::OVERHEAD);
                Ok(Some(stored))
            }
        }
    }
}

impl Namespace for SealedNamespace {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let stored = self.inner.get(key)?;
        self.opened(key, stored)
    }

    fn recheck(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let stored = self.inner.recheck(key)?;
        self.opened(key, stored)
    }

    /// Every entry is checked and each rejected one counted; if any was
    /// rejected, the first rejection is the answer (callers look again one
    /// key at a time, quietly, to use the others).
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let got = self.inner.get_many(keys)?;
        let mut first = None;
        let out = got
            .into_iter()
            .zip(keys)
            .map(|(v, k)| {
                let mut stored = v?;
                if let Err(e) = self.open(k, &stored) {
                    first.get_or_insert(e);
                    return None;
                }
                stored.drain(..seal::OVERHEAD);
                Some(stored)
            })
            .collect();
        match first {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.put_parts(key, &[value], ttl)
    }

    /// The seal's head is computed over the parts (no copy of them) and
    /// handed down in front of them: the local engine writes them without
    /// joining; other backends join once.
    fn put_parts(&self, key: &[u8], parts: &[&[u8]], ttl: Option<Duration>) -> Result<()> {
        self.put_sealed(key, parts, |all| self.inner.put_parts(key, all, ttl))
    }

    fn put_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<()> {
        let name = self.inner.name();
        let sealed: Vec<Vec<u8>> = items
            .iter()
            .map(|(k, v)| self.secrets.seal(name, k, v))
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = items
            .iter()
            .zip(&sealed)
            .map(|((k, _), s)| (*k, s.as_slice()))
            .collect();
        self.inner.put_many(&pairs, ttl)
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        self.inner.remove(key)
    }

    fn clear(&self) -> Result<()> {
        self.rejected.store(0, Ordering::Relaxed);
        self.inner.clear()
    }

    fn stats(&self) -> Result<Stats> {
        let mut s = self.inner.stats()?;
        s.rejected += self.rejected.load(Ordering::Relaxed);
        Ok(s)
    }

    fn limits(&self) -> Result<Limits> {
        self.inner.limits()
    }

    fn lease(&self, key: &[u8], wait: Duration) -> Result<Option<Lease>> {
        self.inner.lease(key, wait)
    }

    fn locate(&self) -> Option<&dyn Locate> {
        self.inner.locate().map(|_| self as &dyn Locate)
    }
}

/// Reads in place through the namespace underneath, each value's seal
/// checked (and counted when it fails) before `f` sees its payload.
impl Locate for SealedNamespace {
    fn key_hash(&self, key: &[u8]) -> u64 {
        self.inner.locate().map_or(0, |l| l.key_hash(key))
    }

    fn read_located(
        &self,
        key: &[u8],
        count: bool,
        f: &mut dyn FnMut(&[u8], Located),
    ) -> Result<bool> {
        let Some(inner) = self.inner.locate() else {
            return Ok(false);
        };
        let mut failed = None;
        let found = inner.read_located(key, count, &mut |stored, at| match self.secrets.open(
            self.inner.name(),
            key,
            stored,
        ) {
            Ok(payload) => f(payload, at),
            Err(r) => failed = Some(r),
        })?;
        match failed {
            Some(r) => Err(self.reject(key, r)),
            None => Ok(found),
        }
    }

    fn confirm_located(&self, at: &Located) -> Result<bool> {
        match self.inner.locate() {
            Some(inner) => inner.confirm_located(at),
            None => Ok(false),
        }
    }

    /// Seals, then stores through the namespace underneath: the token is
    /// the sealed record's, and [`Locate::read_located`] of it unseals as
    /// for any record. (Over a namespace that does not locate its records,
    /// the value is stored as [`Namespace::put_parts`] stores it, and the
    /// answer is `None`: no token.)
    fn put_parts_located(
        &self,
        key: &[u8],
        parts: &[&[u8]],
        ttl: Option<Duration>,
    ) -> Result<Option<Located>> {
        self.put_sealed(key, parts, |all| match self.inner.locate() {
            Some(inner) => inner.put_parts_located(key, all, ttl),
            None => self.inner.put_parts(key, all, ttl).map(|()| None),
        })
    }

    /// The namespace underneath's: a token comes from a read whose seal
    /// was checked, and confirming it reads no value.
    fn watch(&self) -> Option<crate::Watch> {
        self.inner.locate()?.watch()
    }
}
