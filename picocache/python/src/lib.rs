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
#![deny(unsafe_code)] // but in ffi/

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use picocache::core::codec::KeyCodec;
use picocache::Limits;

mod digest;
mod fetch;
#[cfg(not(feature = "abi3"))]
mod ffi;
mod forkslot;
mod front;
mod keys;
mod lease;
mod maintain;
mod miss;
mod misskey;
mod report;
mod sealer;
mod store;
mod tier;
mod wrapper;

use forkslot::ForkSlot;
use keys::Encoder;
use lease::Lease;
use store::{secs, Store, StoreInner};
use tier::Tier;

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
    state: ForkSlot<Arc<dyn picocache::Namespace>>,
    /// The local engine: its lookups make no system call and never wait for
    /// another process or for a thread that needs the GIL (only short
    /// in-process read locks), so they run with the GIL held (releasing and
    /// retaking it would cost more than the lookup).
    local: bool,
    /// Decoded immutable results of the local engine, kept in the process.
    tier: Mutex<Tier>,
    /// `loads`, the miss sentinel and `keep`, for `lookup_decoded`.
    decoder: std::sync::OnceLock<(PyObject, PyObject, bool)>,
    /// The key of the last missed `lookup_decoded`, for the `key` of the
    /// same call that follows (one encoding per miss).
    miss_key: misskey::MissKey,
}

/// Longest encoded key looked up verbatim; the Python side digests longer
/// ones (`_native.MAX_KEY`: this constant, the one definition).
const MAX_KEY: usize = 64 * 1024;
impl Namespace {
    /// The namespace handle, opened again in a forked child (see
    /// [`ForkSlot`]).
    fn current(&self) -> picocache::Result<Arc<dyn picocache::Namespace>> {
        self.state
            .get(|| open_ns(&self.store, &self.name, self.limits))
    }

    /// Runs `f` on the namespace with the GIL released, reopening once if the
    /// handle was inherited across a fork.
    fn run<R: Send>(
        &self,
        py: Python<'_>,
        f: impl Fn(&dyn picocache::Namespace) -> picocache::Result<R> + Send + Sync,
    ) -> PyResult<R> {
        py.allow_threads(|| {
            guarded(|| match f(&*self.current()?) {
                Err(e) if is_forked(&e) => {
                    self.store.force_reopen();
                    self.state.invalidate();
                    f(&*self.current()?)
                }
                r => r,
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
        enc.encode_key(&keys::CallArgs { args, kwargs })
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
        let k = match self.miss_key.take(args, kwargs) {
            Some(k) => k,
            None => self.encode_call(py, args, kwargs)?,
        };
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
        let v = self.lookup_key(py, &k)?;
        if v.is_none() {
            self.miss_key.remember(args, kwargs, &k);
        } else {
            self.miss_key.forget();
        }
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
        let (v, k) = self.lookup_call(py, args, kwargs)?;
        match k {
            Some(k) => self.miss_key.remember(args, kwargs, &k),
            None => self.miss_key.forget(),
        }
        Ok(v)
    }

    /// Takes the per-key lease (waiting up to `wait` seconds), then looks
    /// `key` up as `lookup_decoded` does: (the lease, or None if it timed out
    /// or this thread holds it already, in which case no lookup is made and
    /// the value is `miss`; the value or `miss`). See `lease.rs`.
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
        let (held, v) = self.lease_look(py, key, wait, loads, miss, keep)?;
        Ok((held.map(Lease::new), v))
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
        self.put_kept(py, key, value, ttl, obj)?;
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
        Ok(l.map(Lease::new))
    }

    fn __repr__(&self) -> String {
        format!("<picocache._native.Namespace {:?}>", self.name)
    }
}

/// Called by the Python package in a forked child: every handle reopens its
/// backend on its next use.
#[pyfunction]
fn _after_fork_in_child() {
    FORK_GEN.fetch_add(1, Ordering::AcqRel);
    miss::forget_flights();
    picocache::sql::fork::after_fork_in_child();
}

/// Called by the Python package just before a `fork()`: the SQLite
/// backends' operations in other threads end (at most 2 s are waited for
/// them) and new ones wait, so the child inherits no SQLite lock state of a
/// transaction (`picocache::sql::fork`). The GIL is released meanwhile.
#[pyfunction]
fn _before_fork(py: Python<'_>) {
    py.allow_threads(|| picocache::sql::fork::before_fork(std::time::Duration::from_secs(2)));
}

/// Called by the Python package in the parent after a `fork()`: the SQLite
/// backends go on.
#[pyfunction]
fn _after_fork_in_parent() {
    picocache::sql::fork::after_fork_in_parent();
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
    m.add_class::<wrapper::Counts>()?;
    m.add_class::<miss::FlightHandle>()?;
    m.add_class::<report::Reporter>()?;
    m.add_function(wrap_pyfunction!(miss::flight_join, m)?)?;
    m.add_function(wrap_pyfunction!(miss::is_immutable, m)?)?;
    m.add_class::<wrapper::ByFirstByte>()?;
    m.add_function(wrap_pyfunction!(keys::encode, m)?)?;
    m.add_function(wrap_pyfunction!(keys::encode_call, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_parent, m)?)?;
    m.add_function(wrap_pyfunction!(default_local_path, m)?)?;
    m.add_function(wrap_pyfunction!(maintain::prune_local, m)?)?;
    m.add_function(wrap_pyfunction!(maintain::inspect_local, m)?)?;
    m.add_class::<digest::Blake3>()?;
    #[cfg(not(feature = "abi3"))]
    m.add_function(wrap_pyfunction!(digest::blake3_buffer, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_KEY", MAX_KEY)?;
    Ok(())
}
