//! The local engine backend (the default).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use picocache_engine as engine;

use crate::backend::{Backend, Lease, Limits, Locate, Located, Namespace, Stats, Watch};
use crate::Result;

/// The default directory of a local store: `$PICOCACHE_DIR` if set, else
/// `.picocache` in the working directory.
pub fn default_path() -> PathBuf {
    std::env::var_os("PICOCACHE_DIR").map_or_else(|| PathBuf::from(".picocache"), PathBuf::from)
}

/// A store on this machine, shared by every process that opens its directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    store: engine::Store,
}

impl LocalBackend {
    /// Opens (creating if needed) the store in `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<LocalBackend> {
        Self::open_with(path, engine::Options::default())
    }

    /// Opens the store in `path` with `options`. An I/O error names the
    /// path (`/etc/passwd: File exists`, not only `File exists`).
    pub fn open_with(path: impl AsRef<Path>, options: engine::Options) -> Result<LocalBackend> {
        let path = path.as_ref();
        let store = engine::Store::open(path, options).map_err(|e| match e {
            engine::Error::Io(io) => engine::Error::Io(std::io::Error::new(
                io.kind(),
                format!("{}: {io}", path.display()),
            )),
            other => other,
        })?;
        Ok(LocalBackend { store })
    }

    /// The engine store underneath.
    pub fn store(&self) -> &engine::Store {
        &self.store
    }
}

impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn namespace(&self, name: &str, limits: Limits) -> Result<Arc<dyn Namespace>> {
        Ok(Arc::new(LocalNamespace {
            ns: self.store.namespace(name, limits)?,
        }))
    }

    fn namespace_names(&self) -> Result<Vec<String>> {
        Ok(self.store.namespace_names()?)
    }
}

/// A namespace of a [`LocalBackend`].
#[derive(Debug, Clone)]
pub struct LocalNamespace {
    ns: engine::Namespace,
}

impl LocalNamespace {
    /// The engine namespace underneath.
    pub fn engine(&self) -> &engine::Namespace {
        &self.ns
    }
}

impl Namespace for LocalNamespace {
    fn name(&self) -> &str {
        self.ns.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.ns.get(key)?)
    }
    fn recheck(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let got = self.ns.peek_located(key, |v, at| (v.to_vec(), at))?;
        if let Some((_, at)) = &got {
            self.ns.hit_located(self.ns.key_hash(key), at)?;
        }
        Ok(got.map(|(v, _)| v))
    }
    fn put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.ns.put_with_ttl(key, value, ttl)?;
        Ok(())
    }
    fn put_parts(&self, key: &[u8], parts: &[&[u8]], ttl: Option<Duration>) -> Result<()> {
        self.ns.put_parts(key, parts, ttl)?;
        Ok(())
    }
    fn put_many(&self, items: &[(&[u8], &[u8])], ttl: Option<Duration>) -> Result<()> {
        if ttl.is_some() {
            return items.iter().try_for_each(|(k, v)| self.put(k, v, ttl));
        }
        self.ns.put_batch(items)?;
        Ok(())
    }
    fn remove(&self, key: &[u8]) -> Result<bool> {
        Ok(self.ns.remove(key)?)
    }
    fn clear(&self) -> Result<()> {
        Ok(self.ns.clear()?)
    }
    fn stats(&self) -> Result<Stats> {
        let s = self.ns.stats()?;
        Ok(Stats {
            entries: s.entries,
            bytes: s.live_bytes,
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
            rejected: s.rejected,
        })
    }
    fn limits(&self) -> Result<Limits> {
        Ok(self.ns.stats()?.limits)
    }
    fn lease(&self, key: &[u8], wait: Duration) -> Result<Option<Lease>> {
        Ok(self.ns.lease(key, wait)?.map(|l| Lease(Box::new(l))))
    }
    fn count_rejected(&self) -> Result<bool> {
        self.ns.count_rejected()?;
        Ok(true)
    }
    fn locate(&self) -> Option<&dyn Locate> {
        Some(self)
    }
}

impl Locate for LocalNamespace {
    fn key_hash(&self, key: &[u8]) -> u64 {
        self.ns.key_hash(key)
    }

    fn read_located(
        &self,
        key: &[u8],
        count: bool,
        f: &mut dyn FnMut(&[u8], Located),
    ) -> Result<bool> {
        let h = self.ns.key_hash(key);
        let mut found = |v: &[u8], at| f(v, Located::engine(h, at));
        let got = if count {
            self.ns.get_located(key, &mut found)?
        } else {
            self.ns.peek_located(key, &mut found)?
        };
        Ok(got.is_some())
    }

    fn confirm_located(&self, at: &Located) -> Result<bool> {
        Ok(self.ns.hit_located(at.key_hash(), at.at())?)
    }

    fn put_parts_located(
        &self,
        key: &[u8],
        parts: &[&[u8]],
        ttl: Option<Duration>,
    ) -> Result<Option<Located>> {
        let at = self.ns.put_parts_located(key, parts, ttl)?;
        Ok(at.map(|at| Located::engine(self.ns.key_hash(key), at)))
    }

    fn put_located(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Located>> {
        let at = self.ns.put_located(key, value, ttl)?;
        Ok(at.map(|at| Located::engine(self.ns.key_hash(key), at)))
    }

    fn watch(&self) -> Option<Watch> {
        self.ns.watch().ok().map(Watch::engine)
    }
}
