//! Maintenance of a local store from Python (issue 10): every namespace's
//! statistics and last use, and the removal of namespaces unused for a given
//! time (those of edited functions: a function's name carries a digest of its
//! code). What the `picocache` command-line tool's `stats` and `prune` do,
//! for users who install the wheel, which does not ship that tool: the Python
//! package's `LocalCache.prune` and `python -m picocache`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use picocache_engine as engine;

use crate::store::{shared_local_backend, Spec, StoreInner};
use crate::{guarded, panic_err, to_py};

/// The engine store under a handle opened on a local path (the one the
/// handle's namespaces use); an invalid-argument error for other backends.
pub(crate) fn engine_store(inner: &StoreInner) -> picocache::Result<engine::Store> {
    match &inner.spec {
        Spec::Local(path, group) => {
            // Reopens after a fork first, so the store below is the one the
            // handle's namespaces use (this process's shared instance).
            let _held = inner.backend()?;
            Ok(shared_local_backend(path, *group)?.store().clone())
        }
        _ => Err(picocache::Error::InvalidArgument(
            "removing unused namespaces needs a local store (LocalCache)".into(),
        )),
    }
}

/// `unused_for` seconds as a duration: finite and > 0, rounded up to whole
/// seconds (last use is recorded in seconds; rounding up never removes a
/// namespace used less than `unused_for` ago).
pub(crate) fn unused_for(seconds: f64) -> picocache::Result<Duration> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(picocache::Error::InvalidArgument(format!(
            "unused_for must be a finite number of seconds > 0, got {seconds}"
        )));
    }
    Duration::try_from_secs_f64(seconds.ceil()).map_err(|_| {
        picocache::Error::InvalidArgument(format!("unused_for {seconds} s is too long"))
    })
}

/// Lists (`dry_run`) or removes the namespaces of `store` unused for
/// `unused_for` seconds, the GIL released; panics are caught.
fn prune_store(
    py: Python<'_>,
    store: impl FnOnce() -> picocache::Result<engine::Store> + Send,
    unused_for_secs: f64,
    dry_run: bool,
) -> PyResult<Bound<'_, PyList>> {
    let found = py
        .allow_threads(move || {
            guarded(|| {
                let d = unused_for(unused_for_secs)?;
                let store = store()?;
                Ok(if dry_run {
                    store.unused_namespaces(d)?
                } else {
                    store.remove_unused_namespaces(d)?
                })
            })
        })
        .map_err(panic_err)?
        .map_err(to_py)?;
    let out = PyList::empty(py);
    for n in &found {
        let d = PyDict::new(py);
        d.set_item("name", &n.name)?;
        d.set_item("entries", n.entries)?;
        d.set_item("bytes", n.live_bytes)?;
        d.set_item("last_used", n.last_used)?;
        out.append(d)?;
    }
    Ok(out)
}

/// `Store.prune_unused`: through the handle's own (shared) engine store.
pub(crate) fn prune_handle<'py>(
    py: Python<'py>,
    inner: &Arc<StoreInner>,
    unused_for_secs: f64,
    dry_run: bool,
) -> PyResult<Bound<'py, PyList>> {
    let inner = inner.clone();
    prune_store(py, move || engine_store(&inner), unused_for_secs, dry_run)
}

/// Opens the existing store at `path` (never creates one) with `options`.
fn open_existing(path: &str, options: engine::Options) -> picocache::Result<engine::Store> {
    if !engine::is_store(Path::new(path)) {
        return Err(picocache::Error::InvalidArgument(format!(
            "no PicoCache store at {path}"
        )));
    }
    Ok(engine::Store::open(path, options)?)
}

/// Lists (`dry_run`) or removes the namespaces of the existing local store
/// in `path` unused for `unused_for` seconds: a list of dicts with `name`,
/// `entries`, `bytes` and `last_used` (Unix seconds, None if unknown).
/// Opened as `picocache prune` opens it: never created, no background
/// compaction.
#[pyfunction]
#[pyo3(signature = (path, unused_for, dry_run=false))]
pub(crate) fn prune_local(
    py: Python<'_>,
    path: String,
    unused_for: f64,
    dry_run: bool,
) -> PyResult<Bound<'_, PyList>> {
    let open = move || {
        open_existing(
            &path,
            engine::Options::default().background_compaction(false),
        )
    };
    prune_store(py, open, unused_for, dry_run)
}

/// The statistics of the existing local store in `path`, read as `picocache
/// stats` reads them: the store is opened for inspection only (never
/// created, rebuilt or written; not a use of any namespace). A dict with
/// `segments`, `log_bytes`, `dead_bytes`, `index_bytes`, `disk_bytes`,
/// `entries`, `compactions` and `namespaces`: a list of dicts with `name`,
/// `entries`, `bytes`, `hits`, `misses`, `evictions`, `rejected`, `maxsize`,
/// `max_bytes`, `ttl` (seconds or None) and `last_used` (Unix seconds, None
/// if unknown).
#[pyfunction]
pub(crate) fn inspect_local(py: Python<'_>, path: String) -> PyResult<Bound<'_, PyDict>> {
    let (s, disk) = py
        .allow_threads(move || {
            guarded(|| {
                let store = open_existing(&path, engine::Options::default().inspect_only(true))?;
                Ok((store.stats()?, store.disk_usage()?))
            })
        })
        .map_err(panic_err)?
        .map_err(to_py)?;
    let namespaces = PyList::empty(py);
    for n in &s.namespaces {
        let d = PyDict::new(py);
        d.set_item("name", &n.name)?;
        d.set_item("entries", n.entries)?;
        d.set_item("bytes", n.live_bytes)?;
        d.set_item("hits", n.hits)?;
        d.set_item("misses", n.misses)?;
        d.set_item("evictions", n.evictions)?;
        d.set_item("rejected", n.rejected)?;
        d.set_item("maxsize", n.limits.maxsize)?;
        d.set_item("max_bytes", n.limits.max_bytes)?;
        d.set_item("ttl", n.limits.ttl.map(|t| t.as_secs_f64()))?;
        d.set_item("last_used", n.last_used)?;
        namespaces.append(d)?;
    }
    let d = PyDict::new(py);
    d.set_item("segments", s.segments)?;
    d.set_item("log_bytes", s.log_bytes)?;
    d.set_item("dead_bytes", s.dead_bytes)?;
    d.set_item("index_bytes", s.index_bytes)?;
    d.set_item("disk_bytes", disk)?;
    d.set_item("entries", s.entries)?;
    d.set_item("compactions", s.compactions)?;
    d.set_item("namespaces", namespaces)?;
    Ok(d)
}
