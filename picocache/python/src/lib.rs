//! Python bindings of PicoCache: the `picocache._native` extension module.
//!
//! The Python package (`python/picocache`) builds the decorator API on top of
//! three small classes:
//!
//! - [`Store`]: one open backend (local engine, SQL database, Redis server);
//! - [`Namespace`]: one memoized function's entries in a store, with the
//!   canonical key encoder and the hit path (`lookup`) in Rust;
//! - [`Lease`]: a held per-key lease (a context manager).
//!
//! Every backend error becomes a Python exception under `CacheError`; nothing
//! panics across the FFI boundary (a panic in a call is caught and raised as
//! `CacheError`). The GIL is released around store I/O. After `fork()` the
//! Python package calls `_after_fork_in_child`, and every handle reopens its
//! backend on its next use (the parent's handles are leaked in the child, never
//! closed, so no inherited socket or lock is touched).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet,
    PyString, PyTuple,
};

use picocache::{Backend, Limits};

mod digest;
mod sealer;
mod wrapper;

create_exception!(
    _native,
    CacheError,
    PyException,
    "Base class of every PicoCache error."
);
create_exception!(
    _native,
    CacheUnavailable,
    CacheError,
    "The store cannot be reached (server down, lock timeout)."
);
create_exception!(
    _native,
    CacheCorrupted,
    CacheError,
    "The store's files hold bytes the format does not allow."
);
create_exception!(
    _native,
    CacheFull,
    CacheError,
    "The disk holding the store is full."
);
create_exception!(
    _native,
    CacheReadOnly,
    CacheError,
    "The store is read-only (read-only media, or a directory this process may not write): hits are served, nothing is stored."
);
create_exception!(
    _native,
    CacheTooLarge,
    CacheError,
    "A value too large for the store (its server's limit, or max_value_size): not stored; the store is fine."
);
create_exception!(
    _native,
    CacheRejected,
    CacheError,
    "A stored entry failed its seal check (planted, tampered with, unsigned or signed with another secret)."
);
create_exception!(
    _native,
    CacheInvalidArgument,
    CacheError,
    "An argument, URL or option is not valid."
);

/// Bumped in a forked child: every handle opened under an older generation
/// reopens its backend.
static FORK_GEN: AtomicU64 = AtomicU64::new(0);

fn fork_gen() -> u64 {
    FORK_GEN.load(Ordering::Acquire)
}

/// The format version byte every encoded key starts with.
const KEY_VERSION: u8 = 1;
/// Deepest nesting the key encoder follows.
const MAX_DEPTH: usize = 64;

fn is_forked(e: &picocache::Error) -> bool {
    matches!(e, picocache::Error::Engine(picocache_engine::Error::Forked))
}

fn to_py(e: picocache::Error) -> PyErr {
    use picocache::Error as E;
    use picocache_engine::Error as G;
    let msg = e.to_string();
    match &e {
        E::Engine(g) => match g {
            G::Io(io)
                if io.kind() == std::io::ErrorKind::StorageFull
                    || io.raw_os_error() == Some(28) =>
            {
                CacheFull::new_err(msg)
            }
            G::Corrupted { .. } | G::Version { .. } => CacheCorrupted::new_err(msg),
            G::Locked(_) => CacheUnavailable::new_err(msg),
            G::ReadOnly { .. } => CacheReadOnly::new_err(msg),
            G::InvalidArgument(_) => CacheInvalidArgument::new_err(msg),
            _ => CacheError::new_err(msg),
        },
        E::Unavailable { .. } | E::LeaseTimeout(_) => CacheUnavailable::new_err(msg),
        E::InvalidArgument(_) => CacheInvalidArgument::new_err(msg),
        E::Rejected { .. } => CacheRejected::new_err(msg),
        E::TooLarge { .. } => CacheTooLarge::new_err(msg),
        _ => CacheError::new_err(msg),
    }
}

/// Runs `f` catching a panic (raised as `CacheError`).
fn guarded<R>(f: impl FnOnce() -> picocache::Result<R>) -> Result<picocache::Result<R>, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        if let Some(s) = p.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = p.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_string()
        }
    })
}

fn panic_err(what: String) -> PyErr {
    CacheError::new_err(format!("internal error in picocache: {what}"))
}

/// How to (re)open a backend.
#[derive(Debug, Clone)]
enum Spec {
    Open(String),
    Local(String, bool),
    Sql {
        url: String,
        options: picocache::SqlOptions,
    },
    Redis {
        url: String,
        options: picocache::RedisOptions,
    },
    RedisHost {
        host: String,
        port: u16,
        db: u32,
        password: Option<String>,
        options: picocache::RedisOptions,
    },
}

impl Spec {
    fn open(&self) -> picocache::Result<Arc<dyn Backend>> {
        Ok(match self {
            Spec::Open(url) => picocache::open(url)?,
            Spec::Local(path, group) => shared_local(path, *group)?,
            Spec::Sql { url, options } => {
                Arc::new(picocache::SqlBackend::connect(url, options.clone())?)
            }
            Spec::Redis { url, options } => {
                Arc::new(picocache::RedisBackend::connect(url, options.clone())?)
            }
            Spec::RedisHost {
                host,
                port,
                db,
                password,
                options,
            } => Arc::new(picocache::RedisBackend::connect_host(
                host,
                *port,
                *db,
                password.as_deref(),
                options.clone(),
            )?),
        })
    }
}

/// The local store at `path`, opened once per process (and again in a
/// forked child): every cache object on one path shares its maps and file
/// descriptors, as every `Memo` on one URL does in Rust.
fn shared_local(path: &str, group: bool) -> picocache::Result<Arc<dyn Backend>> {
    type Shared =
        HashMap<(std::path::PathBuf, bool), (u64, std::sync::Weak<picocache::LocalBackend>)>;
    static OPEN: std::sync::OnceLock<Mutex<Shared>> = std::sync::OnceLock::new();
    let key = (
        std::fs::canonicalize(path).unwrap_or_else(|_| std::path::PathBuf::from(path)),
        group,
    );
    let gen = fork_gen();
    let mut open = OPEN.get_or_init(|| Mutex::new(HashMap::new())).lock();
    if let Some((g, weak)) = open.get(&key) {
        if *g == gen {
            if let Some(b) = weak.upgrade() {
                return Ok(b);
            }
        }
    }
    let b = Arc::new(picocache::LocalBackend::open_with(
        path,
        picocache_engine::Options::default().group_access(group),
    )?);
    open.retain(|_, (g, w)| *g == gen && w.strong_count() > 0);
    open.insert(key, (gen, Arc::downgrade(&b)));
    Ok(b)
}

struct StoreInner {
    spec: Spec,
    /// The caller's secrets (None: `PICOCACHE_SECRET` or the per-user file).
    secrets: Option<Vec<Vec<u8>>>,
    state: Mutex<(u64, Arc<dyn Backend>)>,
}

/// The backend `spec` opens, sealed with `secrets` (every value the Python
/// package stores is sealed, whatever the backend).
fn open_sealed(spec: &Spec, secrets: Option<&[Vec<u8>]>) -> picocache::Result<Arc<dyn Backend>> {
    let (secrets, source) = picocache::secret::resolve(secrets)?;
    Ok(Arc::new(picocache::SealedBackend::new(
        spec.open()?,
        secrets,
        source,
    )))
}

impl StoreInner {
    fn backend(&self) -> picocache::Result<Arc<dyn Backend>> {
        let gen = fork_gen();
        let mut st = self.state.lock();
        if st.0 != gen {
            let fresh = open_sealed(&self.spec, self.secrets.as_deref())?;
            let old = std::mem::replace(&mut *st, (gen, fresh));
            // The parent's connections and maps belong to the parent: never
            // close them from the child.
            std::mem::forget(old);
        }
        Ok(st.1.clone())
    }

    fn force_reopen(&self) {
        let mut st = self.state.lock();
        st.0 = u64::MAX;
    }
}

/// One open store (a backend).
#[pyclass(module = "picocache._native", frozen)]
struct Store {
    inner: Arc<StoreInner>,
}

fn secs(s: Option<f64>) -> PyResult<Option<Duration>> {
    match s {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => Err(PyValueError::new_err(format!(
            "a duration must be a finite number of seconds >= 0, got {v}"
        ))),
    }
}

fn open_store(py: Python<'_>, spec: Spec, secrets: Option<Vec<Vec<u8>>>) -> PyResult<Store> {
    let (s, k) = (spec.clone(), secrets.clone());
    let backend = py
        .allow_threads(move || guarded(|| open_sealed(&s, k.as_deref())))
        .map_err(panic_err)?
        .map_err(to_py)?;
    Ok(Store {
        inner: Arc::new(StoreInner {
            spec,
            secrets,
            state: Mutex::new((fork_gen(), backend)),
        }),
    })
}

/// The Redis options the Python constructors may set (None: the default).
struct RedisArgs {
    prefix: Option<String>,
    connect_timeout: Option<f64>,
    lease_ttl: Option<f64>,
    pool_size: Option<u32>,
    timeout: Option<f64>,
    max_value_size: Option<usize>,
    backoff: Option<f64>,
    backoff_max: Option<f64>,
}

fn redis_options(a: RedisArgs) -> PyResult<picocache::RedisOptions> {
    let RedisArgs {
        prefix,
        connect_timeout,
        lease_ttl,
        pool_size,
        timeout,
        max_value_size,
        backoff,
        backoff_max,
    } = a;
    let mut o = picocache::RedisOptions::default();
    if let Some(t) = secs(timeout)? {
        o.timeout = t;
    }
    if let Some(n) = max_value_size {
        o.max_value_size = n;
    }
    if let Some(t) = secs(backoff)? {
        o.backoff = t;
    }
    if let Some(t) = secs(backoff_max)? {
        o.backoff_max = t;
    }
    if let Some(p) = prefix {
        o.prefix = p;
    }
    if let Some(t) = secs(connect_timeout)? {
        o.connect_timeout = t;
    }
    if let Some(t) = secs(lease_ttl)? {
        o.lease_ttl = t;
    }
    if let Some(n) = pool_size {
        o.pool_size = n;
    }
    Ok(o)
}

#[pymethods]
impl Store {
    /// Opens the backend a URL names (`picocache::open`).
    #[staticmethod]
    #[pyo3(signature = (url, secrets=None))]
    fn open(py: Python<'_>, url: String, secrets: Option<Vec<Vec<u8>>>) -> PyResult<Store> {
        open_store(py, Spec::Open(url), secrets)
    }

    /// Opens (creating if needed) the local engine store in directory `path`;
    /// `group_access`: a new store is shared with the owner's group
    /// (0770/0660) instead of private (0700/0600).
    #[staticmethod]
    #[pyo3(signature = (path, group_access=false, secrets=None))]
    fn local(
        py: Python<'_>,
        path: String,
        group_access: bool,
        secrets: Option<Vec<Vec<u8>>>,
    ) -> PyResult<Store> {
        open_store(py, Spec::Local(path, group_access), secrets)
    }

    /// Connects to an SQL database (sqlite, postgresql, mysql URL).
    #[staticmethod]
    #[pyo3(signature = (url, table=None, connect_timeout=None, pool_size=None, secrets=None, timeout=None, max_value_size=None, backoff=None, backoff_max=None, lease_ttl=None))]
    #[allow(clippy::too_many_arguments)]
    fn sql(
        py: Python<'_>,
        url: String,
        table: Option<String>,
        connect_timeout: Option<f64>,
        pool_size: Option<u32>,
        secrets: Option<Vec<Vec<u8>>>,
        timeout: Option<f64>,
        max_value_size: Option<usize>,
        backoff: Option<f64>,
        backoff_max: Option<f64>,
        lease_ttl: Option<f64>,
    ) -> PyResult<Store> {
        let mut options = picocache::SqlOptions::default();
        if let Some(t) = secs(backoff)? {
            options.backoff = t;
        }
        if let Some(t) = secs(backoff_max)? {
            options.backoff_max = t;
        }
        if let Some(t) = secs(lease_ttl)? {
            options.lease_ttl = t;
        }
        if let Some(t) = table {
            options.table = t;
        }
        if let Some(t) = secs(connect_timeout)? {
            options.connect_timeout = t;
        }
        if let Some(n) = pool_size {
            options.pool_size = n;
        }
        if let Some(t) = secs(timeout)? {
            options.timeout = t;
        }
        if let Some(n) = max_value_size {
            options.max_value_size = n;
        }
        open_store(py, Spec::Sql { url, options }, secrets)
    }

    /// Connects to a Redis server by URL.
    #[staticmethod]
    #[pyo3(signature = (url, prefix=None, connect_timeout=None, lease_ttl=None, pool_size=None, secrets=None, timeout=None, max_value_size=None, backoff=None, backoff_max=None))]
    #[allow(clippy::too_many_arguments)]
    fn redis(
        py: Python<'_>,
        url: String,
        prefix: Option<String>,
        connect_timeout: Option<f64>,
        lease_ttl: Option<f64>,
        pool_size: Option<u32>,
        secrets: Option<Vec<Vec<u8>>>,
        timeout: Option<f64>,
        max_value_size: Option<usize>,
        backoff: Option<f64>,
        backoff_max: Option<f64>,
    ) -> PyResult<Store> {
        let options = redis_options(RedisArgs {
            prefix,
            connect_timeout,
            lease_ttl,
            pool_size,
            timeout,
            max_value_size,
            backoff,
            backoff_max,
        })?;
        open_store(py, Spec::Redis { url, options }, secrets)
    }

    /// Connects to a Redis server by host, port, db and password.
    #[staticmethod]
    #[pyo3(signature = (host, port, db, password=None, prefix=None, connect_timeout=None, lease_ttl=None, pool_size=None, secrets=None, timeout=None, max_value_size=None, backoff=None, backoff_max=None))]
    #[allow(clippy::too_many_arguments)]
    fn redis_host(
        py: Python<'_>,
        host: String,
        port: u16,
        db: u32,
        password: Option<String>,
        prefix: Option<String>,
        connect_timeout: Option<f64>,
        lease_ttl: Option<f64>,
        pool_size: Option<u32>,
        secrets: Option<Vec<Vec<u8>>>,
        timeout: Option<f64>,
        max_value_size: Option<usize>,
        backoff: Option<f64>,
        backoff_max: Option<f64>,
    ) -> PyResult<Store> {
        let options = redis_options(RedisArgs {
            prefix,
            connect_timeout,
            lease_ttl,
            pool_size,
            timeout,
            max_value_size,
            backoff,
            backoff_max,
        })?;
        open_store(
            py,
            Spec::RedisHost {
                host,
                port,
                db,
                password,
                options,
            },
            secrets,
        )
    }

    /// The backend kind: "local", "sqlite", "postgresql", "mysql", "redis".
    fn kind(&self, py: Python<'_>) -> PyResult<&'static str> {
        let inner = self.inner.clone();
        py.allow_threads(move || guarded(|| inner.backend().map(|b| b.kind())))
            .map_err(panic_err)?
            .map_err(to_py)
    }

    /// The names of every namespace in the store.
    fn namespace_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let inner = self.inner.clone();
        py.allow_threads(move || guarded(|| inner.backend()?.namespace_names()))
            .map_err(panic_err)?
            .map_err(to_py)
    }

    /// Opens namespace `name` with the given limits; `typed` and `fallback`
    /// configure its key encoder (`fallback(obj)` returns a canonical
    /// replacement for an object the encoder does not know, or raises).
    #[pyo3(signature = (name, maxsize=None, ttl=None, max_bytes=None, typed=false, fallback=None))]
    #[allow(clippy::too_many_arguments)]
    fn namespace(
        &self,
        py: Python<'_>,
        name: String,
        maxsize: Option<u64>,
        ttl: Option<f64>,
        max_bytes: Option<u64>,
        typed: bool,
        fallback: Option<PyObject>,
    ) -> PyResult<Namespace> {
        let limits = Limits {
            maxsize,
            max_bytes,
            ttl: secs(ttl)?,
        };
        let inner = self.inner.clone();
        let n = name.clone();
        let (ns, local) = py
            .allow_threads(move || {
                guarded(|| {
                    let local = inner.backend()?.kind() == "local";
                    Ok((open_ns(&inner, &n, limits)?, local))
                })
            })
            .map_err(panic_err)?
            .map_err(to_py)?;
        Ok(Namespace {
            store: self.inner.clone(),
            name,
            limits,
            typed,
            fallback,
            state: Mutex::new((fork_gen(), ns)),
            local,
            tier: Mutex::new(Tier {
                fork_gen: fork_gen(),
                ..Tier::default()
            }),
            decoder: std::sync::OnceLock::new(),
        })
    }

    fn __repr__(&self) -> String {
        format!("<picocache._native.Store {:?}>", redact(&self.inner.spec))
    }
}

fn redact(spec: &Spec) -> String {
    let hide = |u: &str| match (u.find("://"), u.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***@{}", &u[..s], &u[a + 1..]),
        _ => u.to_string(),
    };
    match spec {
        Spec::Open(u) | Spec::Sql { url: u, .. } | Spec::Redis { url: u, .. } => hide(u),
        Spec::Local(p, _) => p.clone(),
        Spec::RedisHost { host, port, db, .. } => format!("redis://{host}:{port}/{db}"),
    }
}

fn open_ns(
    inner: &StoreInner,
    name: &str,
    limits: Limits,
) -> picocache::Result<Arc<dyn picocache::Namespace>> {
    match inner.backend()?.namespace(name, limits) {
        Err(e) if is_forked(&e) => {
            inner.force_reopen();
            inner.backend()?.namespace(name, limits)
        }
        r => r,
    }
}

/// One memoized function's entries in a store.
#[pyclass(module = "picocache._native", frozen)]
struct Namespace {
    store: Arc<StoreInner>,
    name: String,
    limits: Limits,
    typed: bool,
    fallback: Option<PyObject>,
    state: Mutex<(u64, Arc<dyn picocache::Namespace>)>,
    /// The local engine: its lookups make no system call and never wait for
    /// another process or for a thread that needs the GIL (only short
    /// in-process read locks), so they run with the GIL held (releasing and
    /// retaking it would cost more than the lookup).
    local: bool,
    /// Decoded immutable results of the local engine, kept in the process.
    tier: Mutex<Tier>,
    /// `loads`, the miss sentinel and `keep`, for `lookup_decoded`.
    decoder: std::sync::OnceLock<(PyObject, PyObject, bool)>,
}

/// Longest encoded key looked up verbatim; the Python side digests longer
/// ones (`_core._MAX_KEY`).
const MAX_KEY: usize = 64 * 1024;
/// Most entries a namespace's in-process tier holds before it starts over.
const TIER_MAX_ENTRIES: usize = 1 << 17;
/// Most key and value bytes (serialized) it holds before it starts over.
const TIER_MAX_BYTES: usize = 64 << 20;

/// Decoded results of one namespace kept in the process, by key hash.
///
/// Each entry holds the [`picocache::Located`] token of the record its
/// value was decoded from; it is served only while the engine confirms that
/// record is still the key's live entry (`confirm_located`, which also counts the
/// hit and refreshes recency in the shared index). So a value changed,
/// removed, evicted, expired or cleared by any process is never served from
/// here. Only immutable values (exact `None`, `bool`, `int`, `float`,
/// `complex`, `str`, `bytes`, and tuples and frozensets of them) are kept:
/// handing out the same object again is then what `functools.lru_cache` does
/// and cannot leak a caller's mutation into another call's result.
#[derive(Default)]
struct Tier {
    fork_gen: u64,
    bytes: usize,
    /// By the engine's key hash (xxh3 already: hashed as itself).
    map: std::collections::HashMap<u64, TierEntry, picocache_engine::IdHasher>,
}

/// A key kept by the tier: short keys (the common case) inline, so the
/// comparison reads no second allocation.
enum TierKey {
    Inline { len: u8, buf: [u8; 48] },
    Heap(Box<[u8]>),
}

impl TierKey {
    fn new(k: &[u8]) -> TierKey {
        if k.len() <= 48 {
            let mut buf = [0u8; 48];
            buf[..k.len()].copy_from_slice(k);
            TierKey::Inline {
                len: k.len() as u8,
                buf,
            }
        } else {
            TierKey::Heap(k.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            TierKey::Inline { len, buf } => &buf[..*len as usize],
            TierKey::Heap(b) => b,
        }
    }
}

struct TierEntry {
    key: TierKey,
    at: picocache::Located,
    value: PyObject,
    bytes: usize,
}

impl Tier {
    fn insert(
        &mut self,
        h: u64,
        key: &[u8],
        at: picocache::Located,
        value: PyObject,
        raw_len: usize,
    ) {
        let bytes = key.len() + raw_len + 64;
        if self.fork_gen != fork_gen() {
            self.map.clear();
            self.bytes = 0;
            self.fork_gen = fork_gen();
        }
        if self.map.len() >= TIER_MAX_ENTRIES || self.bytes + bytes > TIER_MAX_BYTES {
            // Start over: cheap, and the hot keys come back at their next hit.
            self.map.clear();
            self.bytes = 0;
        }
        if bytes > TIER_MAX_BYTES / 16 {
            return;
        }
        self.bytes += bytes;
        if let Some(old) = self.map.insert(
            h,
            TierEntry {
                key: TierKey::new(key),
                at,
                value,
                bytes,
            },
        ) {
            self.bytes -= old.bytes;
        }
    }

    fn remove(&mut self, h: u64) {
        if let Some(old) = self.map.remove(&h) {
            self.bytes -= old.bytes;
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

/// Whether handing out `v` again is indistinguishable from decoding it
/// again: exact builtin immutable types, and tuples and frozensets of them.
fn immutable(v: &Bound<'_, PyAny>, depth: usize) -> bool {
    if depth > 8 {
        return false;
    }
    if v.is_none()
        || v.is_exact_instance_of::<PyString>()
        || v.is_exact_instance_of::<PyBytes>()
        || v.is_exact_instance_of::<PyInt>()
        || v.is_exact_instance_of::<PyFloat>()
        || v.is_exact_instance_of::<PyBool>()
        || v.is_exact_instance_of::<PyComplex>()
    {
        return true;
    }
    if let Ok(t) = v.downcast_exact::<PyTuple>() {
        return t.len() <= 64 && t.iter().all(|e| immutable(&e, depth + 1));
    }
    if let Ok(f) = v.downcast_exact::<PyFrozenSet>() {
        return f.len() <= 64 && f.iter().all(|e| immutable(&e, depth + 1));
    }
    false
}

impl Namespace {
    fn current(&self) -> picocache::Result<Arc<dyn picocache::Namespace>> {
        let gen = fork_gen();
        let mut st = self.state.lock();
        if st.0 != gen {
            let fresh = open_ns(&self.store, &self.name, self.limits)?;
            let old = std::mem::replace(&mut *st, (gen, fresh));
            std::mem::forget(old);
        }
        Ok(st.1.clone())
    }

    /// Runs `f` on the namespace with the GIL released, reopening once if the
    /// handle was inherited across a fork.
    fn run<R: Send>(
        &self,
        py: Python<'_>,
        f: impl Fn(&dyn picocache::Namespace) -> picocache::Result<R> + Send + Sync,
    ) -> PyResult<R> {
        py.allow_threads(|| {
            guarded(|| {
                let ns = self.current()?;
                match f(&*ns) {
                    Err(e) if is_forked(&e) => {
                        self.store.force_reopen();
                        let fresh = open_ns(&self.store, &self.name, self.limits)?;
                        let old = std::mem::replace(&mut *self.state.lock(), (fork_gen(), fresh));
                        std::mem::forget(old);
                        let ns = self.current()?;
                        f(&*ns)
                    }
                    r => r,
                }
            })
        })
        .map_err(panic_err)?
        .map_err(to_py)
    }

    fn encode_call(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<u8>> {
        let enc = Encoder {
            typed: self.typed,
            fallback: self.fallback.as_ref().map(|f| f.bind(py)),
        };
        let mut out = Vec::with_capacity(32);
        enc.call(args, kwargs, &mut out)?;
        Ok(out)
    }
}

impl Namespace {
    /// The decoded value under the encoded key `k`, or `miss` (see
    /// `lookup_decoded`).
    ///
    /// `recheck`: the look again after taking the lease; an entry that fails
    /// its seal check is then a miss (the first lookup reported it).
    fn fetch(
        &self,
        py: Python<'_>,
        k: &[u8],
        loads: &Bound<'_, PyAny>,
        miss: &Bound<'_, PyAny>,
        keep: bool,
        recheck: bool,
    ) -> PyResult<PyObject> {
        match self.fetch_checked(py, k, loads, miss, keep, recheck) {
            Err(e) if recheck && e.is_instance_of::<CacheRejected>(py) => Ok(miss.clone().unbind()),
            r => r,
        }
    }

    /// `recheck`: on the local engine a miss is not counted again (the
    /// lookup before the lease counted it; one call, one miss) and a hit is.
    fn fetch_checked(
        &self,
        py: Python<'_>,
        k: &[u8],
        loads: &Bound<'_, PyAny>,
        miss: &Bound<'_, PyAny>,
        keep: bool,
        recheck: bool,
    ) -> PyResult<PyObject> {
        let by_first = loads.downcast::<wrapper::ByFirstByte>().ok();
        let decode = |raw: Bound<'_, PyBytes>| -> PyResult<Option<PyObject>> {
            let got = match &by_first {
                Some(d) => d.get().decode(py, &raw),
                None => loads.call1((raw,)).map(Bound::unbind),
            };
            match got {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.is_instance_of::<PyException>(py) => Ok(None),
                Err(e) => Err(e),
            }
        };
        if self.local && (keep || recheck) && k.len() <= MAX_KEY {
            let fast = guarded(|| {
                let ns = self.current()?;
                let Some(loc) = ns.locate() else {
                    return Ok(None);
                };
                let h = loc.key_hash(k);
                let cached = if !keep {
                    None
                } else {
                    let tier = self.tier.lock();
                    match tier.map.get(&h) {
                        Some(te) if tier.fork_gen == fork_gen() && te.key.as_slice() == k => {
                            Some((te.at, te.value.clone_ref(py)))
                        }
                        _ => None,
                    }
                };
                if let Some((at, v)) = cached {
                    if loc.confirm_located(&at)? {
                        return Ok(Some(Ok(v)));
                    }
                    self.tier.lock().remove(h);
                }
                // The sealing layer checks the stored bytes before Python
                // sees them.
                let mut got = None;
                let mut open = |v: &[u8], at| got = Some((PyBytes::new(py, v), at));
                if recheck {
                    loc.read_located(k, false, &mut open)?;
                    if let Some((_, at)) = &got {
                        loc.confirm_located(at)?; // the hit, counted as a lookup would
                    }
                } else {
                    loc.read_located(k, true, &mut open)?;
                }
                Ok(Some(Err((h, got))))
            });
            match fast {
                Ok(Ok(Some(Ok(v)))) => return Ok(v),
                Ok(Ok(Some(Err((_, None))))) => return Ok(miss.clone().unbind()),
                Ok(Ok(Some(Err((h, Some((raw, at))))))) => {
                    let n = raw.as_bytes().len();
                    let Some(v) = decode(raw)? else {
                        return Ok(miss.clone().unbind());
                    };
                    if keep && immutable(v.bind(py), 0) {
                        self.tier.lock().insert(h, k, at, v.clone_ref(py), n);
                    }
                    return Ok(v);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) if !is_forked(&e) => return Err(to_py(e)),
                Ok(Err(_)) => {} // reopened below
                Err(p) => return Err(panic_err(p)),
            }
        }
        // A look again counts a hit, not a second miss (`recheck`).
        match self.run(py, |ns| if recheck { ns.recheck(k) } else { ns.get(k) })? {
            Some(raw) => {
                Ok(decode(PyBytes::new(py, &raw))?.unwrap_or_else(|| miss.clone().unbind()))
            }
            None => Ok(miss.clone().unbind()),
        }
    }
}

#[pymethods]
impl Namespace {
    /// The namespace's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The canonical key of a call with `args` and `kwargs`.
    #[pyo3(signature = (args, kwargs=None))]
    fn key<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let k = self.encode_call(py, args, kwargs)?;
        Ok(PyBytes::new(py, &k))
    }

    /// The stored value of a call with `args` and `kwargs`, or None.
    #[pyo3(signature = (args, kwargs=None))]
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let k = self.encode_call(py, args, kwargs)?;
        if self.local {
            // The hit path, without a GIL round trip. (No Python code runs
            // inside the engine call.)
            let fast = guarded(|| self.current()?.get(&k));
            match fast {
                Ok(Ok(v)) => return Ok(v.map(|v| PyBytes::new(py, &v))),
                Ok(Err(e)) if !is_forked(&e) => return Err(to_py(e)),
                Ok(Err(_)) => {} // reopened below
                Err(p) => return Err(panic_err(p)),
            }
        }
        let v = self.run(py, |ns| ns.get(&k))?;
        Ok(v.map(|v| PyBytes::new(py, &v)))
    }

    /// Sets the `loads`, `miss` and `keep` that `lookup_decoded` uses (once;
    /// later calls are ignored).
    #[pyo3(signature = (loads, miss, keep=true))]
    fn set_decoder(&self, loads: PyObject, miss: PyObject, keep: bool) {
        let _ = self.decoder.set((loads, miss, keep));
    }

    /// The decoded value of a call with `args` and `kwargs` (the `loads`
    /// given to `set_decoder` applied to the stored bytes), or its `miss`. A
    /// stored value that `loads` cannot decode is a miss. On the local
    /// engine, immutable results are kept in the process and served again,
    /// after the engine confirms the record is still the key's live entry,
    /// without copying or decoding it (never with `keep` false: the Python
    /// side keeps values only with its default serializer, so a custom
    /// `loads` sees every hit).
    #[pyo3(signature = (args, kwargs))]
    fn lookup_decoded(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyObject> {
        let Some((loads, miss, keep)) = self.decoder.get() else {
            return Err(CacheInvalidArgument::new_err(
                "lookup_decoded before set_decoder",
            ));
        };
        let (loads, miss) = (loads.bind(py), miss.bind(py));
        let k = self.encode_call(py, args, kwargs)?;
        if k.len() > MAX_KEY {
            return Ok(miss.clone().unbind());
        }
        self.fetch(py, &k, loads, miss, *keep, false)
    }

    /// Takes the per-key lease (waiting up to `wait` seconds), then looks
    /// `key` up as `lookup_decoded` does: (the lease, or None if it timed out,
    /// in which case no lookup is made and the value is `miss`; the value or
    /// `miss`). On the local engine an uncontended lease and the lookup are
    /// taken without releasing the GIL (no wait, one system call).
    #[pyo3(signature = (key, wait, loads, miss, keep=true))]
    fn lease_fetch(
        &self,
        py: Python<'_>,
        key: &[u8],
        wait: f64,
        loads: &Bound<'_, PyAny>,
        miss: &Bound<'_, PyAny>,
        keep: bool,
    ) -> PyResult<(Option<Lease>, PyObject)> {
        let wait = secs(Some(wait))?.unwrap_or_default();
        let mut held = None;
        if self.local {
            // A try without waiting; any trouble goes the ordinary way.
            if let Ok(Ok(l)) = guarded(|| self.current()?.lease(key, Duration::ZERO)) {
                held = l;
            }
        }
        let held = match held {
            Some(l) => Some(l),
            None => self.run(py, |ns| ns.lease(key, wait))?,
        };
        let Some(held) = held else {
            return Ok((None, miss.clone().unbind()));
        };
        let lease = Lease {
            inner: Mutex::new(Some(held)),
        };
        let v = self.fetch(py, key, loads, miss, keep, true)?;
        Ok((Some(lease), v))
    }

    /// The value under `key`, or None. An entry that fails its seal check
    /// raises `CacheRejected`, or with `recheck` (a look again after a
    /// lookup that reported it) is None.
    #[pyo3(signature = (key, recheck=false))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        recheck: bool,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let v = self.run(py, |ns| {
            // A look again counts a hit, not a second miss (`recheck`).
            let got = if recheck {
                ns.recheck(key)
            } else {
                ns.get(key)
            };
            match got {
                Err(e) if recheck && e.is_rejected() => Ok(None),
                r => r,
            }
        })?;
        Ok(v.map(|v| PyBytes::new(py, &v)))
    }

    /// Stores `value` under `key` (`ttl` in seconds; None: the default).
    /// `obj`, if given, is the object `value` encodes: on the local engine an
    /// immutable one is kept in the process for `lookup_decoded`.
    #[pyo3(signature = (key, value, ttl=None, obj=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &[u8],
        value: &[u8],
        ttl: Option<f64>,
        obj: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let ttl = secs(ttl)?;
        self.run(py, |ns| ns.put(key, value, ttl))?;
        if self.local && key.len() <= MAX_KEY {
            if let Some(obj) = obj.filter(|o| immutable(o, 0)) {
                // Where the record landed (a peek: no hit counted). Best
                // effort: without it the value is decoded at its next hit.
                let found = guarded(|| {
                    let ns = self.current()?;
                    let mut same = None;
                    if let Some(loc) = ns.locate() {
                        loc.read_located(key, false, &mut |v, at| {
                            same = (v == value).then_some((at.key_hash(), at));
                        })?;
                    }
                    Ok(same)
                });
                if let Ok(Ok(Some((h, at)))) = found {
                    self.tier
                        .lock()
                        .insert(h, key, at, obj.clone().unbind(), value.len());
                }
            }
        }
        Ok(())
    }

    /// The values under `keys` in one step of the store (None for a miss,
    /// and for an entry that fails its seal check).
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<Vec<u8>>,
    ) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        let got = self.run(py, |ns| {
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            ns.get_many(&refs)
        })?;
        Ok(got
            .into_iter()
            .map(|v| v.map(|v| PyBytes::new(py, &v)))
            .collect())
    }

    /// Stores every `(key, value)` of `items` in one step where the store
    /// can (`ttl` in seconds; None: the default).
    #[pyo3(signature = (items, ttl=None))]
    fn put_many(
        &self,
        py: Python<'_>,
        items: Vec<(Vec<u8>, Vec<u8>)>,
        ttl: Option<f64>,
    ) -> PyResult<()> {
        let ttl = secs(ttl)?;
        self.run(py, |ns| {
            let refs: Vec<(&[u8], &[u8])> = items
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            ns.put_many(&refs, ttl)
        })
    }

    /// Removes `key`; returns whether it was present.
    fn remove(&self, py: Python<'_>, key: &[u8]) -> PyResult<bool> {
        // (A kept value of `key` is dropped at its next lookup: the engine
        // no longer confirms its record.)
        self.run(py, |ns| ns.remove(key))
    }

    /// Removes every entry of this namespace and resets its counters.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        self.tier.lock().clear();
        self.run(py, |ns| ns.clear())
    }

    /// The namespace's statistics: a dict with entries, bytes, hits, misses,
    /// evictions (hits and misses as the store counts them, every process).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.run(py, |ns| ns.stats())?;
        let d = PyDict::new(py);
        d.set_item("entries", s.entries)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("rejected", s.rejected)?;
        Ok(d)
    }

    /// The limits the store holds: (maxsize, max_bytes, ttl seconds).
    fn limits(&self, py: Python<'_>) -> PyResult<(Option<u64>, Option<u64>, Option<f64>)> {
        let l = self.run(py, |ns| ns.limits())?;
        Ok((l.maxsize, l.max_bytes, l.ttl.map(|t| t.as_secs_f64())))
    }

    /// Takes the per-key lease, waiting up to `wait` seconds; None on timeout.
    fn lease(&self, py: Python<'_>, key: &[u8], wait: f64) -> PyResult<Option<Lease>> {
        let wait = secs(Some(wait))?.unwrap_or_default();
        let l = self.run(py, |ns| ns.lease(key, wait))?;
        Ok(l.map(|l| Lease {
            inner: Mutex::new(Some(l)),
        }))
    }

    fn __repr__(&self) -> String {
        format!("<picocache._native.Namespace {:?}>", self.name)
    }
}

/// A held per-key lease; `release()` or leaving the `with` block frees it.
#[pyclass(module = "picocache._native", frozen)]
struct Lease {
    inner: Mutex<Option<picocache::Lease>>,
}

#[pymethods]
impl Lease {
    /// Releases the lease (idempotent).
    fn release(&self, py: Python<'_>) {
        let l = self.inner.lock().take();
        // A Redis or SQL lease talks to the server on drop.
        py.allow_threads(move || {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(l)));
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> bool {
        self.release(py);
        false
    }
}

/// The canonical key encoder.
///
/// Equal arguments (by Python `==`, as `functools.lru_cache` sees them) give
/// equal bytes in every process and under every `PYTHONHASHSEED`: ints,
/// bools and integral floats share one encoding (unless `typed`, which tags
/// top-level arguments with their type, as `lru_cache(typed=True)` does), sets
/// and dicts are sorted by their encoded elements, and keyword arguments by
/// name. Unknown objects go through `fallback`.
struct Encoder<'a, 'py> {
    typed: bool,
    fallback: Option<&'a Bound<'py, PyAny>>,
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

impl Encoder<'_, '_> {
    fn call(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        out.push(KEY_VERSION);
        out.push(b'A');
        put_len(out, args.len());
        for a in args.iter() {
            self.value(&a, out, 0, self.typed)?;
        }
        if let Some(kw) = kwargs {
            if !kw.is_empty() {
                let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(kw.len());
                for (k, v) in kw.iter() {
                    // UTF-8 (byte order is code point order); lone
                    // surrogates kept, as in str values.
                    let k = k.downcast::<PyString>()?;
                    let name = match k.to_cow() {
                        Ok(c) => c.as_bytes().to_vec(),
                        Err(_) => k
                            .call_method1("encode", ("utf-8", "surrogatepass"))?
                            .downcast::<PyBytes>()?
                            .as_bytes()
                            .to_vec(),
                    };
                    let mut buf = Vec::new();
                    self.value(&v, &mut buf, 0, self.typed)?;
                    items.push((name, buf));
                }
                items.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'K');
                put_len(out, items.len());
                for (k, v) in items {
                    put_len(out, k.len());
                    out.extend_from_slice(&k);
                    out.extend_from_slice(&v);
                }
            }
        }
        Ok(())
    }

    fn int(&self, v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
        if let Ok(i) = v.extract::<i64>() {
            out.push(b'i');
            out.extend_from_slice(&i.to_le_bytes());
        } else {
            // Big ints: int(v) (a subclass may override its methods) as
            // little-endian two's complement in the fewest bytes that hold
            // its sign (bit_length / 8 + 1). Not decimal digits: converting
            // an int of over 4300 digits to str raises ValueError.
            let py = v.py();
            let i = py.get_type::<PyInt>().call1((v,))?;
            let bits: usize = i.call_method0("bit_length")?.extract()?;
            let kw = PyDict::new(py);
            kw.set_item("signed", true)?;
            let b = i.call_method("to_bytes", (bits / 8 + 1, "little"), Some(&kw))?;
            let b = b.downcast::<PyBytes>()?.as_bytes();
            out.push(b'J');
            put_len(out, b.len());
            out.extend_from_slice(b);
        }
        Ok(())
    }

    fn type_tag(&self, v: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
        let t = v.get_type();
        let module: String = t.getattr("__module__")?.extract()?;
        if module != "builtins" {
            if let Some(f) = self.fallback {
                // A class of the user's: its name may not tell it apart (two
                // classes made by one factory); the fallback keys it by its
                // definition where its name does not import it.
                let r = f.call1((t,))?;
                out.push(b'U');
                return self.value(&r, out, depth + 1, false);
            }
        }
        let qual: String = t.getattr("__qualname__")?.extract()?;
        out.push(b'T');
        put_len(out, module.len() + 1 + qual.len());
        out.extend_from_slice(module.as_bytes());
        out.push(b'.');
        out.extend_from_slice(qual.as_bytes());
        Ok(())
    }

    fn sorted(
        &self,
        items: impl Iterator<Item = PyResult<Vec<u8>>>,
        tag: u8,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let mut v = items.collect::<PyResult<Vec<_>>>()?;
        v.sort();
        out.push(tag);
        put_len(out, v.len());
        for e in v {
            out.extend_from_slice(&e);
        }
        Ok(())
    }

    fn value(
        &self,
        v: &Bound<'_, PyAny>,
        out: &mut Vec<u8>,
        depth: usize,
        typed: bool,
    ) -> PyResult<()> {
        if depth > MAX_DEPTH {
            return Err(PyTypeError::new_err(
                "argument nested too deeply (or recursive) to be a cache key",
            ));
        }
        let d = depth + 1;
        if v.is_none() {
            out.push(b'N');
            return Ok(());
        }
        if typed && !(v.is_exact_instance_of::<PyInt>() || v.is_exact_instance_of::<PyString>()) {
            self.type_tag(v, out, depth)?;
        }
        if self.fallback.is_some() && self.subclass_compares_otherwise(v)? {
            return self.fallback_value(v, out, d);
        }
        if let Ok(b) = v.downcast_exact::<PyBool>() {
            out.push(b'i');
            out.extend_from_slice(&(b.is_true() as i64).to_le_bytes());
            return Ok(());
        }
        if v.is_instance_of::<PyInt>() {
            return self.int(v, out);
        }
        if let Ok(s) = v.downcast::<PyString>() {
            match s.to_cow() {
                Ok(s) => {
                    out.push(b's');
                    put_len(out, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
                Err(_) => {
                    // Lone surrogates.
                    let b = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
                    let b = b.downcast::<PyBytes>()?.as_bytes();
                    out.push(b'S');
                    put_len(out, b.len());
                    out.extend_from_slice(b);
                }
            }
            return Ok(());
        }
        if let Ok(f) = v.downcast::<PyFloat>() {
            let x = f.value();
            if x.is_finite() && x.fract() == 0.0 {
                // 1.0 == 1: one key (typed keys carry the type tag already).
                if x.abs() < 9.0e18 {
                    out.push(b'i');
                    out.extend_from_slice(&(x as i64).to_le_bytes());
                } else {
                    let i = v.py().get_type::<PyInt>().call1((x,))?;
                    self.int(&i, out)?;
                }
            } else {
                let x = if x.is_nan() { f64::NAN } else { x };
                out.push(b'f');
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
            return Ok(());
        }
        if let Ok(b) = v.downcast::<PyBytes>() {
            let b = b.as_bytes();
            out.push(b'y');
            put_len(out, b.len());
            out.extend_from_slice(b);
            return Ok(());
        }
        if let Ok(b) = v.downcast::<PyByteArray>() {
            let b = b.to_vec();
            out.push(b'y');
            put_len(out, b.len());
            out.extend_from_slice(&b);
            return Ok(());
        }
        if let Ok(t) = v.downcast::<PyTuple>() {
            out.push(b'(');
            put_len(out, t.len());
            for e in t.iter() {
                self.value(&e, out, d, false)?;
            }
            return Ok(());
        }
        if let Ok(l) = v.downcast::<PyList>() {
            out.push(b'[');
            put_len(out, l.len());
            for e in l.iter() {
                self.value(&e, out, d, false)?;
            }
            return Ok(());
        }
        if let Ok(m) = v.downcast::<PyDict>() {
            let mut items = Vec::with_capacity(m.len());
            for (k, val) in m.iter() {
                let mut kb = Vec::new();
                self.value(&k, &mut kb, d, false)?;
                let mut vb = Vec::new();
                self.value(&val, &mut vb, d, false)?;
                items.push((kb, vb));
            }
            items.sort();
            out.push(b'{');
            put_len(out, items.len());
            for (k, val) in items {
                out.extend_from_slice(&k);
                out.extend_from_slice(&val);
            }
            return Ok(());
        }
        if let Ok(s) = v.downcast::<PySet>() {
            return self.sorted(
                s.iter().map(|e| {
                    let mut b = Vec::new();
                    self.value(&e, &mut b, d, false).map(|_| b)
                }),
                b'<',
                out,
            );
        }
        if let Ok(s) = v.downcast::<PyFrozenSet>() {
            return self.sorted(
                s.iter().map(|e| {
                    let mut b = Vec::new();
                    self.value(&e, &mut b, d, false).map(|_| b)
                }),
                b'<',
                out,
            );
        }
        self.fallback_value(v, out, d)
    }

    /// `v` replaced by the fallback's canonical stand-in, encoded.
    fn fallback_value(&self, v: &Bound<'_, PyAny>, out: &mut Vec<u8>, d: usize) -> PyResult<()> {
        match self.fallback {
            Some(f) => {
                let r = f.call1((v,))?;
                out.push(b'R');
                self.value(&r, out, d, false)
            }
            None => Err(PyTypeError::new_err(format!(
                "cannot encode an object of type {} as a cache key",
                v.get_type().name()?
            ))),
        }
    }

    /// True for an instance of a subclass of a built-in type that this
    /// encoder knows (int, str, float, bytes, bytearray, tuple, list, dict,
    /// set, frozenset) whose equality is not the built-in's (it defines its
    /// own `__eq__`, as `OrderedDict` does) or that defines
    /// `__picocache_key__`: encoding it as the built-in would give two
    /// objects that `lru_cache` keeps apart one key. (A subclass that keeps
    /// the built-in's equality, such as `IntEnum` or a `namedtuple`, compares
    /// equal to the built-in value, so it is keyed as one.)
    fn subclass_compares_otherwise(&self, v: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = v.py();
        let base = if v.is_exact_instance_of::<PyInt>()
            || v.is_exact_instance_of::<PyBool>()
            || v.is_exact_instance_of::<PyString>()
            || v.is_exact_instance_of::<PyFloat>()
            || v.is_exact_instance_of::<PyBytes>()
            || v.is_exact_instance_of::<PyByteArray>()
            || v.is_exact_instance_of::<PyTuple>()
            || v.is_exact_instance_of::<PyList>()
            || v.is_exact_instance_of::<PyDict>()
            || v.is_exact_instance_of::<PySet>()
            || v.is_exact_instance_of::<PyFrozenSet>()
        {
            return Ok(false);
        } else if v.is_instance_of::<PyInt>() {
            py.get_type::<PyInt>()
        } else if v.is_instance_of::<PyString>() {
            py.get_type::<PyString>()
        } else if v.is_instance_of::<PyFloat>() {
            py.get_type::<PyFloat>()
        } else if v.is_instance_of::<PyBytes>() {
            py.get_type::<PyBytes>()
        } else if v.is_instance_of::<PyByteArray>() {
            py.get_type::<PyByteArray>()
        } else if v.is_instance_of::<PyTuple>() {
            py.get_type::<PyTuple>()
        } else if v.is_instance_of::<PyList>() {
            py.get_type::<PyList>()
        } else if v.is_instance_of::<PyDict>() {
            py.get_type::<PyDict>()
        } else if v.is_instance_of::<PySet>() {
            py.get_type::<PySet>()
        } else if v.is_instance_of::<PyFrozenSet>() {
            py.get_type::<PyFrozenSet>()
        } else {
            return Ok(false);
        };
        let t = v.get_type();
        if t.hasattr("__picocache_key__")? {
            return Ok(true);
        }
        Ok(!t.getattr("__eq__")?.is(&base.getattr("__eq__")?))
    }
}

/// Encodes one object canonically (for tests and the Python fallback path).
#[pyfunction]
#[pyo3(signature = (obj, typed=false, fallback=None))]
fn encode<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    typed: bool,
    fallback: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let enc = Encoder { typed, fallback };
    let mut out = vec![KEY_VERSION];
    enc.value(obj, &mut out, 0, typed)?;
    Ok(PyBytes::new(py, &out))
}

/// Encodes a call's arguments canonically (the key `Namespace.key` makes).
#[pyfunction]
#[pyo3(signature = (args, kwargs=None, typed=false, fallback=None))]
fn encode_call<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
    typed: bool,
    fallback: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let enc = Encoder { typed, fallback };
    let mut out = Vec::new();
    enc.call(args, kwargs, &mut out)?;
    Ok(PyBytes::new(py, &out))
}

/// Called by the Python package in a forked child: every handle reopens its
/// backend on its next use.
#[pyfunction]
fn _after_fork_in_child() {
    FORK_GEN.fetch_add(1, Ordering::AcqRel);
}

/// The default directory of a local store (`$PICOCACHE_DIR` or `.picocache`).
#[pyfunction]
fn default_local_path() -> String {
    picocache::local::default_path()
        .to_string_lossy()
        .into_owned()
}

/// The `picocache._native` module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Store>()?;
    m.add_class::<Namespace>()?;
    m.add_class::<Lease>()?;
    m.add("CacheError", py.get_type::<CacheError>())?;
    m.add("CacheUnavailable", py.get_type::<CacheUnavailable>())?;
    m.add("CacheCorrupted", py.get_type::<CacheCorrupted>())?;
    m.add("CacheFull", py.get_type::<CacheFull>())?;
    m.add(
        "CacheInvalidArgument",
        py.get_type::<CacheInvalidArgument>(),
    )?;
    m.add("CacheRejected", py.get_type::<CacheRejected>())?;
    m.add("CacheReadOnly", py.get_type::<CacheReadOnly>())?;
    m.add("CacheTooLarge", py.get_type::<CacheTooLarge>())?;
    m.add_class::<sealer::Sealer>()?;
    m.add_class::<wrapper::Wrapper>()?;
    m.add_class::<wrapper::Hits>()?;
    m.add_class::<wrapper::ByFirstByte>()?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(encode_call, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(default_local_path, m)?)?;
    m.add_class::<digest::Blake3>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
