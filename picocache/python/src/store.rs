//! Stores: how a backend is (re)opened (`Spec`, once per process for a local
//! path, again after a fork), the sealed handle every namespace of a store
//! shares (`StoreInner`), and the `Store` class the Python package opens.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::GILProtected;

use picocache::{Backend, Limits};

use crate::forkslot::ForkSlot;
use crate::*;

/// How to (re)open a backend.
#[derive(Debug, Clone)]
pub(crate) enum Spec {
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
    pub(crate) fn open(&self) -> picocache::Result<Arc<dyn Backend>> {
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
pub(crate) fn shared_local(path: &str, group: bool) -> picocache::Result<Arc<dyn Backend>> {
    let b: Arc<dyn Backend> = shared_local_backend(path, group)?;
    Ok(b)
}

/// [`shared_local`] as the local backend it is (whose engine store
/// `maintain` reaches).
///
/// The registry of open stores is guarded by the GIL, taken only for the
/// look-up and the insertion, never across the open (file I/O): a `fork()`
/// needs the GIL in the forking thread, so no thread can hold the registry
/// at a fork (a lock held across the open by another thread was left held
/// in the child, whose first open then hung forever:
/// `test_adversarial_session23.py`).
///
/// A handle is reused only while `path` still names the directory it
/// opened (its device and inode, that directory held open by the registry
/// so that its inode number is not reused): a store deleted (`rm -rf`) or
/// moved away, and made again at `path` by another process, is opened
/// anew by the next cache object, never served from the old one's files.
pub(crate) fn shared_local_backend(
    path: &str,
    group: bool,
) -> picocache::Result<Arc<picocache::LocalBackend>> {
    type Entry = (u64, DirId, std::sync::Weak<picocache::LocalBackend>);
    type Shared = BTreeMap<(std::path::PathBuf, bool), Entry>;
    static OPEN: GILProtected<RefCell<Shared>> = GILProtected::new(RefCell::new(BTreeMap::new()));
    let key = (
        std::fs::canonicalize(path).unwrap_or_else(|_| std::path::PathBuf::from(path)),
        group,
    );
    let gen = fork_gen();
    let live = |open: &Shared, now: Option<(u64, u64)>| match open.get(&key) {
        Some((g, dir, weak)) if *g == gen && Some(dir.id) == now => weak.upgrade(),
        _ => None,
    };
    let now = DirId::at(path);
    if let Some(b) = Python::with_gil(|py| live(&OPEN.get(py).borrow(), now)) {
        return Ok(b);
    }
    let b = Arc::new(picocache::LocalBackend::open_with(
        path,
        picocache_engine::Options::default().group_access(group),
    )?);
    let Some(dir) = DirId::open(path) else {
        return Ok(b); // (the path gone again already: this handle, not shared)
    };
    Ok(Python::with_gil(|py| {
        let mut open = OPEN.get(py).borrow_mut();
        if let Some(theirs) = live(&open, Some(dir.id)) {
            return theirs; // another thread opened it meanwhile: one handle per process
        }
        open.retain(|_, (g, _, w)| *g == gen && w.strong_count() > 0);
        open.insert(key.clone(), (gen, dir, Arc::downgrade(&b)));
        b
    }))
}

/// The identity of a store's directory: its (device, inode), with the
/// directory held open so that the inode number stays its own.
struct DirId {
    id: (u64, u64),
    _held: std::fs::File,
}

impl DirId {
    /// The (device, inode) of what `path` names now, if anything.
    fn at(path: &str) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    /// The directory `path` names, held open.
    fn open(path: &str) -> Option<DirId> {
        use std::os::unix::fs::MetadataExt;
        let f = std::fs::File::open(path).ok()?;
        let m = f.metadata().ok()?;
        Some(DirId {
            id: (m.dev(), m.ino()),
            _held: f,
        })
    }
}

pub(crate) struct StoreInner {
    pub(crate) spec: Spec,
    /// The caller's secrets (None: `PICOCACHE_SECRET` or the per-user file).
    pub(crate) secrets: Option<Vec<Vec<u8>>>,
    pub(crate) state: ForkSlot<Arc<dyn Backend>>,
}

/// The backend `spec` opens, sealed with `secrets` (every value the Python
/// package stores is sealed, whatever the backend).
pub(crate) fn open_sealed(
    spec: &Spec,
    secrets: Option<&[Vec<u8>]>,
) -> picocache::Result<Arc<dyn Backend>> {
    let (secrets, source) = picocache::secret::resolve(secrets)?;
    Ok(Arc::new(picocache::SealedBackend::new(
        spec.open()?,
        secrets,
        source,
    )))
}

impl StoreInner {
    /// The backend, opened again in a forked child (see [`ForkSlot`]).
    pub(crate) fn backend(&self) -> picocache::Result<Arc<dyn Backend>> {
        self.state
            .get(|| open_sealed(&self.spec, self.secrets.as_deref()))
    }

    /// The next [`StoreInner::backend`] opens the backend again.
    pub(crate) fn force_reopen(&self) {
        self.state.invalidate();
    }
}

/// One open store (a backend).
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

/// The longest duration kept (about 136 years): a longer one (a finite
/// `1e300` seconds) means "no end" as well, and converting it as it is
/// would overflow (`Duration::from_secs_f64` panics past `u64::MAX` s).
const LONGEST: Duration = Duration::from_secs(1 << 32);

pub(crate) fn secs(s: Option<f64>) -> PyResult<Option<Duration>> {
    match s {
        None => Ok(None),
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(
            Duration::try_from_secs_f64(v).map_or(LONGEST, |d| d.min(LONGEST)),
        )),
        Some(v) => Err(PyValueError::new_err(format!(
            "a duration must be a finite number of seconds >= 0, got {v}"
        ))),
    }
}

pub(crate) fn open_store(
    py: Python<'_>,
    spec: Spec,
    secrets: Option<Vec<Vec<u8>>>,
) -> PyResult<Store> {
    let (s, k) = (spec.clone(), secrets.clone());
    let backend = py
        .allow_threads(move || guarded(|| open_sealed(&s, k.as_deref())))
        .map_err(panic_err)?
        .map_err(to_py)?;
    Ok(Store {
        inner: Arc::new(StoreInner {
            spec,
            secrets,
            state: ForkSlot::new(backend),
        }),
    })
}

/// The Redis options the Python constructors may set (None: the default).
pub(crate) struct RedisArgs {
    pub(crate) prefix: Option<String>,
    pub(crate) connect_timeout: Option<f64>,
    pub(crate) lease_ttl: Option<f64>,
    pub(crate) pool_size: Option<u32>,
    pub(crate) timeout: Option<f64>,
    pub(crate) max_value_size: Option<usize>,
    pub(crate) backoff: Option<f64>,
    pub(crate) backoff_max: Option<f64>,
}

pub(crate) fn redis_options(a: RedisArgs) -> PyResult<picocache::RedisOptions> {
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
    pub(crate) fn open(
        py: Python<'_>,
        url: String,
        secrets: Option<Vec<Vec<u8>>>,
    ) -> PyResult<Store> {
        open_store(py, Spec::Open(url), secrets)
    }

    /// Opens (creating if needed) the local engine store in directory `path`;
    /// `group_access`: a new store is shared with the owner's group
    /// (0770/0660) instead of private (0700/0600).
    #[staticmethod]
    #[pyo3(signature = (path, group_access=false, secrets=None))]
    pub(crate) fn local(
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
    pub(crate) fn sql(
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
    pub(crate) fn redis(
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
    pub(crate) fn redis_host(
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
    pub(crate) fn kind(&self, py: Python<'_>) -> PyResult<&'static str> {
        let inner = self.inner.clone();
        py.allow_threads(move || guarded(|| inner.backend().map(|b| b.kind())))
            .map_err(panic_err)?
            .map_err(to_py)
    }

    /// The names of every namespace in the store.
    pub(crate) fn namespace_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
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
    pub(crate) fn namespace(
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
            state: ForkSlot::new(ns),
            local,
            tier: Mutex::new(Tier {
                fork_gen: fork_gen(),
                ..Tier::default()
            }),
            decoder: std::sync::OnceLock::new(),
            miss_key: Default::default(),
        })
    }

    /// The namespaces of a local store unused for `unused_for` seconds
    /// (rounded up to whole seconds; > 0): removed, or only listed if
    /// `dry_run`. A list of dicts with `name`, `entries`, `bytes` and
    /// `last_used` (Unix seconds, None if unknown). Other backends raise
    /// `CacheInvalidArgument`. See `maintain`.
    #[pyo3(signature = (unused_for, dry_run=false))]
    pub(crate) fn prune_unused<'py>(
        &self,
        py: Python<'py>,
        unused_for: f64,
        dry_run: bool,
    ) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        crate::maintain::prune_handle(py, &self.inner, unused_for, dry_run)
    }

    pub(crate) fn __repr__(&self) -> String {
        format!("<picocache._native.Store {:?}>", redact(&self.inner.spec))
    }
}

pub(crate) fn redact(spec: &Spec) -> String {
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
