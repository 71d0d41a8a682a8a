//! The miss path of a cached synchronous function, in Rust, over the core
//! the Rust `Memo` uses too (`picocache::core`): one computation per key in
//! the process (`core::flight`; the table is shared with the Python miss
//! path through [`flight_join`]), the store's lease and the look again
//! (`core::lease`, in `lease.rs`), the function, the encoding and storing
//! of its result, and the counts (`core::counts`). Failures go to the
//! function's Python `fail(error, what)` (the policy of `core::report`,
//! with the Python package's once-only notices), which raises when the
//! function is strict.
//!
//! A miss of a function on a native store is two crossings of the GIL-held
//! boundary with no Python frame: the lookup (which also gives the encoded
//! key) and [`run`] (lease and look again, the function, store, release).
//!
//! The stack of a recursion: a recursive cached function nests
//! `Wrapper.__call__` and [`run`] once per level, so what is inlined into
//! them stays on the C stack for the whole recursion. The lookups, the
//! lease, the store and the front table's work are kept out of line
//! (`#[inline(never)]`): their frames are gone before the function runs.
//! A level then takes about 1.5 KB of C stack (the interpreter's own frame
//! and PyO3's call glue included; 2.2 KB with everything inlined), and
//! `test_native_miss.py` recurses 4,000 levels deep on the main thread's
//! 8 MB.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use picocache::core::flight::{Flight, FlightGuard, Flights, Role};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::lease::release;
use crate::tier::immutable;
use crate::wrapper::Counts;
use crate::{fork_gen, CacheError, Namespace, MAX_KEY};

/// What a leader hands its waiters: the function's result object.
type Shared = Arc<PyObject>;

/// The process's computations in flight, by (cache, namespace, key): one
/// table for every wrapper and for the Python miss path, so two wrappers of
/// one namespace wait for each other and a thread re-entering its own
/// computation through either is seen doing so. Its locks are taken only
/// with the GIL held, so none is held by another thread at a `fork()`.
fn flights() -> &'static Flights<Shared> {
    static FLIGHTS: OnceLock<Flights<Shared>> = OnceLock::new();
    FLIGHTS.get_or_init(Flights::default)
}

/// In a forked child: the threads computing in the parent do not exist.
pub(crate) fn forget_flights() {
    flights().forget_all();
}

/// The flight table's key of `key` in namespace `name` of the cache `cache`
/// (its Python `id`: two caches on one store may hold one name apart).
fn flight_key(cache: u64, name: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len() + 1 + key.len());
    k.extend_from_slice(&cache.to_le_bytes());
    k.extend_from_slice(name.as_bytes());
    k.push(0xff); // never in a name (UTF-8)
    k.extend_from_slice(key);
    k
}

/// A leader's guard made in this process: in a forked child (the function
/// forked while computing) it is forgotten, neither completed nor failed,
/// since the flight's waiters and locks belong to the parent.
struct Leading {
    guard: Option<FlightGuard<Shared>>,
    gen: u64,
}

impl Leading {
    fn new(g: FlightGuard<Shared>) -> Self {
        Leading {
            guard: Some(g),
            gen: fork_gen(),
        }
    }

    /// Hands `v` to the waiters if it is immutable. A mutable result is
    /// never shared: the flight fails instead, and each waiter, trying
    /// again, finds the stored value under the lease and decodes its own
    /// copy (or computes, if nothing was stored), so that no caller's
    /// change of its result reaches another's (as at a hit).
    fn complete(mut self, py: Python<'_>, v: &PyObject) {
        if let Some(g) = self.guard.take() {
            if self.gen != fork_gen() {
                std::mem::forget(g);
            } else if immutable(v.bind(py), 0) {
                g.complete(Arc::new(v.clone_ref(py)));
            } else {
                drop(g);
            }
        }
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            if self.gen != fork_gen() {
                std::mem::forget(g);
            } // else dropped: failed, the waiters try again
        }
    }
}

/// How long a wait runs with the GIL released before it looks for signals.
pub(crate) const SIGNAL_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Waits (GIL released) for another thread's computation, at most `limit`
/// (the function's `lease_timeout`: a leader may never finish, e.g. if it
/// waits for a thread that calls the function with the same arguments):
/// its result, or None if it failed, handed over nothing (a mutable
/// result), or took too long. Interruptible: every [`SIGNAL_CHECK`] it runs
/// the signal handlers, whose exception (KeyboardInterrupt) ends the wait.
fn wait(py: Python<'_>, f: &Flight<Shared>, limit: Duration) -> PyResult<Option<PyObject>> {
    let deadline = Instant::now().checked_add(limit); // None: no limit
    loop {
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if let Some(o) = py.allow_threads(|| f.wait_for(left.min(SIGNAL_CHECK))) {
            return Ok(o.map(|v| v.clone_ref(py)));
        }
        if left <= SIGNAL_CHECK {
            return Ok(None);
        }
        py.check_signals()?;
    }
}

/// The function's `lease_timeout` (how long a call waits for another's
/// computation).
fn lease_timeout(py: Python<'_>, state: &PyObject) -> PyResult<Duration> {
    let secs: f64 = state
        .bind(py)
        .getattr(pyo3::intern!(py, "cache"))?
        .getattr(pyo3::intern!(py, "lease_timeout"))?
        .extract()?;
    Ok(crate::store::secs(Some(secs))?.unwrap_or_default())
}

/// A flight handle for the Python miss path (`_core.compute_sync`).
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct FlightHandle {
    leading: Mutex<Option<Leading>>,
    waiting: Option<Arc<Flight<Shared>>>,
}

#[pymethods]
impl FlightHandle {
    /// The leader: hands `value` to the waiters if it is immutable; else
    /// they look again (see `Leading::complete`).
    fn complete(&self, py: Python<'_>, value: PyObject) {
        if let Some(l) = self.leading.lock().take() {
            l.complete(py, &value);
        }
    }

    /// The leader: failed (raised); the waiters try again.
    fn fail(&self) {
        drop(self.leading.lock().take());
    }

    /// A waiter: (True, the leader's value), or (False, None) if it failed,
    /// its result is mutable, or it did not finish within `timeout` seconds
    /// (default: no limit): look again, and compute without leading.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<(bool, Option<PyObject>)> {
        let limit = crate::store::secs(timeout)?.unwrap_or(Duration::MAX);
        let got = match &self.waiting {
            Some(f) => wait(py, f, limit)?,
            None => None,
        };
        Ok(match got {
            Some(v) => (true, Some(v)),
            None => (false, None),
        })
    }

    /// A waiter that must not block (an event loop's task): `callback()` is
    /// called once the leader finishes, at once if it has (then `wait`
    /// returns without blocking). It is called in the leader's thread:
    /// `loop.call_soon_threadsafe` is what it should do; an exception it
    /// raises is reported as unraisable.
    fn when_done(&self, callback: PyObject) {
        let Some(f) = &self.waiting else {
            return;
        };
        f.when_done(move || {
            Python::with_gil(|py| {
                if let Err(e) = callback.call0(py) {
                    e.write_unraisable(py, None);
                }
            })
        });
    }
}

/// Whether `obj` is immutable as the in-process tier counts it (exact None,
/// bool, int, float, complex, str, bytes, and tuples and frozensets of
/// them): the Python async path shares only such results between waiters.
#[pyfunction]
pub(crate) fn is_immutable(obj: &Bound<'_, PyAny>) -> bool {
    immutable(obj, 0)
}

/// Joins the computation of `key` in namespace `name` of the cache whose
/// `id` is `cache`: (0, handle) to lead (complete or fail the handle),
/// (1, handle) to wait, (2, None) for re-entry (this thread, or the event
/// loop's task whose `id` is `task`, computes it).
#[pyfunction]
#[pyo3(signature = (cache, name, key, task=None))]
pub(crate) fn flight_join(
    cache: u64,
    name: &str,
    key: &[u8],
    task: Option<u64>,
) -> (u8, Option<FlightHandle>) {
    let k = flight_key(cache, name, key);
    let role = match task {
        Some(t) => flights().join_task(&k, t),
        None => flights().join(&k),
    };
    match role {
        Role::Leader(g) => (
            0,
            Some(FlightHandle {
                leading: Mutex::new(Some(Leading::new(g))),
                waiting: None,
            }),
        ),
        Role::Waiter(f) => (
            1,
            Some(FlightHandle {
                leading: Mutex::new(None),
                waiting: Some(f),
            }),
        ),
        Role::Reentrant => (2, None),
    }
}

impl Namespace {
    /// Stores `value` under `key`; `obj`, if given, is the object it
    /// encodes: on the local engine an immutable one is kept in the tier,
    /// and where its record landed is returned (for the front table).
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    pub(crate) fn put_kept(
        &self,
        py: Python<'_>,
        key: &[u8],
        value: &[u8],
        ttl: Option<std::time::Duration>,
        obj: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<picocache::Located>> {
        // On the local engine the put says where its record landed (no
        // second probe); the token names this very record, and stops
        // confirming once anyone overwrites it.
        let local = self.local && key.len() <= MAX_KEY;
        let at = self.run(py, |ns| match ns.locate() {
            Some(loc) if local => loc.put_located(key, value, ttl),
            _ => ns.put(key, value, ttl).map(|()| None),
        })?;
        let (Some(at), Some(obj)) = (at, obj.filter(|o| immutable(o, 0))) else {
            return Ok(None);
        };
        let h = at.key_hash();
        self.tier
            .lock()
            .insert(h, key, at, obj.clone().unbind(), value.len());
        Ok(Some(at))
    }
}

/// What the native miss path needs of the Python side of a function.
pub(crate) struct MissCtx {
    /// The user's function.
    pub(crate) func: PyObject,
    /// `dumps(value) -> bytes`.
    pub(crate) dumps: PyObject,
    /// `fail(error, what)`: reports a cache failure (raises when strict).
    pub(crate) fail: PyObject,
    /// The function's `_FunctionState` (`read_only`, `cache.lease_timeout`).
    pub(crate) state: PyObject,
    /// `id` of the cache object (the flight table's key).
    pub(crate) cache: u64,
    /// Whether results are kept in the process (the default serializer).
    pub(crate) keep: bool,
    /// With the default serializer: C pickle's `dumps` at protocol 5, which
    /// gives the same bytes as `dumps` for an immutable result (no buffer
    /// to keep out of band) without a Python frame.
    pub(crate) plain_dumps: Option<PyObject>,
}

impl MissCtx {
    fn fail(&self, py: Python<'_>, e: PyErr, what: &str) -> PyResult<()> {
        self.fail.call1(py, (e.into_value(py), what)).map(drop)
    }
}

/// The result of a miss, and where it was stored if it was kept (for the
/// front table).
pub(crate) type Missed = (PyObject, Option<(picocache::Located, usize)>);

/// A call whose lookup missed `key` (see the module).
pub(crate) fn run(
    py: Python<'_>,
    cx: &MissCtx,
    counts: &Counts,
    ns: &Namespace,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
    key: Vec<u8>,
) -> PyResult<Missed> {
    // This frame stays on the stack while the function runs: only what the
    // end needs is kept here (see the module on recursion).
    let lead = match begin(py, cx, counts, ns, &key)? {
        Begun::Answered(v) => return Ok((v, None)),
        Begun::Uncached => {
            counts.miss();
            return Ok((cx.func.call(py, args.clone(), kwargs)?, None));
        }
        Begun::Lead(lead) => lead,
    };
    counts.miss();
    let v = cx.func.call(py, args.clone(), kwargs);
    finish(py, cx, ns, &key, lead, v)
}

/// How a miss goes on after [`begin`].
enum Begun {
    /// Answered without running the function (another thread's or
    /// process's result): counted.
    Answered(PyObject),
    /// Run the function without the cache (re-entry).
    Uncached,
    /// Run the function, then [`finish`].
    Lead(Box<Lead>),
}

/// What the leader holds while the function runs.
struct Lead {
    /// The flight it leads (None: it computes without leading, after
    /// another's computation failed or took too long).
    flight: Option<Leading>,
    lease: Option<picocache::core::lease::HeldLease>,
    /// Whether to store the result (not on a read-only store).
    store: bool,
}

/// Everything before the function runs: the flight (waiting for another
/// thread's computation), the lease and the look again.
#[inline(never)] // (see the module: the stack of a recursion)
fn begin(
    py: Python<'_>,
    cx: &MissCtx,
    counts: &Counts,
    ns: &Namespace,
    key: &[u8],
) -> PyResult<Begun> {
    let fkey = flight_key(cx.cache, &ns.name, key);
    let wait_for = lease_timeout(py, &cx.state)?;
    let read_only = cx
        .state
        .bind(py)
        .getattr(pyo3::intern!(py, "read_only"))?
        .is_truthy()?;
    let flight = match flights().join(&fkey) {
        Role::Leader(g) => Leading::new(g),
        Role::Waiter(f) => {
            if let Some(v) = wait(py, &f, wait_for)? {
                counts.hit();
                return Ok(Begun::Answered(v));
            }
            // The leader raised, handed over nothing (a mutable result: it
            // is stored), or took longer than `lease_timeout`: look again,
            // then compute without leading (no flight, no lease), so the
            // waiters of a failing computation fail side by side, not one
            // after the other.
            // A store that fails meanwhile is a warning (an error only
            // when strict), never this caller's failure: it computes.
            if !read_only {
                let (loads, miss, keep) = ns.decoder(py)?;
                match ns.fetch(py, key, loads, miss, keep, true) {
                    Ok(v) if !v.is(miss) => {
                        counts.hit();
                        return Ok(Begun::Answered(v));
                    }
                    Ok(_) => {}
                    Err(e) if e.is_instance_of::<CacheError>(py) => cx.fail(py, e, "a lookup")?,
                    Err(e) => return Err(e),
                }
            }
            return Ok(Begun::Lead(Box::new(Lead {
                flight: None,
                lease: None,
                store: !read_only,
            })));
        }
        // This thread computes this key already (the function calls
        // itself with the same arguments): run it, as lru_cache does.
        Role::Reentrant => return Ok(Begun::Uncached),
    };
    let flight = Some(flight);
    if read_only {
        // Nothing can be stored: no lease, no store.
        return Ok(Begun::Lead(Box::new(Lead {
            flight,
            lease: None,
            store: false,
        })));
    }
    let (loads, miss, keep) = ns.decoder(py)?;
    let mut lease = None;
    match ns.lease_look(py, key, wait_for, loads, miss, keep) {
        Ok((l, v)) if !v.is(miss) => {
            // Another process stored it while this one waited.
            release(py, l);
            counts.hit();
            if let Some(f) = flight {
                f.complete(py, &v);
            }
            return Ok(Begun::Answered(v));
        }
        Ok((l, _)) => lease = l,
        Err(e) if e.is_instance_of::<CacheError>(py) => cx.fail(py, e, "taking a lease")?,
        Err(e) => return Err(e),
    }
    Ok(Begun::Lead(Box::new(Lead {
        flight,
        lease,
        store: true,
    })))
}

/// Everything after the function ran (`v`, or what it raised): store,
/// release the lease, hand the value to the waiters (or fail them).
#[inline(never)] // (see the module: the stack of a recursion)
#[allow(clippy::boxed_local)] // boxed so that `run`'s frame holds a pointer only
fn finish(
    py: Python<'_>,
    cx: &MissCtx,
    ns: &Namespace,
    key: &[u8],
    lead: Box<Lead>,
    v: PyResult<PyObject>,
) -> PyResult<Missed> {
    let Lead {
        flight,
        lease,
        store: storing,
    } = *lead;
    let v = match v {
        Ok(v) => v,
        Err(e) => {
            release(py, lease);
            return Err(e); // `flight` dropped: the waiters try again
        }
    };
    let stored = if storing {
        store(py, cx, ns, key, &v)
    } else {
        Ok(None)
    };
    release(py, lease);
    let at = stored?;
    if let Some(f) = flight {
        f.complete(py, &v);
    }
    Ok((v, at))
}

/// Encodes and stores `v` under `key`; a failure goes to `fail` (an error
/// only when it raises: strict).
#[inline(never)] // (see miss.rs: the stack of a recursion)
fn store(
    py: Python<'_>,
    cx: &MissCtx,
    ns: &Namespace,
    key: &[u8],
    v: &PyObject,
) -> PyResult<Option<(picocache::Located, usize)>> {
    let dumps = match &cx.plain_dumps {
        Some(plain) if immutable(v.bind(py), 0) => plain,
        _ => &cx.dumps,
    };
    let data = match dumps.call1(py, (v,)) {
        Ok(d) => d,
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyException>(py) => {
            let msg = format!("the result cannot be serialized: {}", e.value(py).repr()?);
            cx.fail(py, CacheError::new_err(msg), "storing a result")?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let data = data.bind(py);
    let bytes: &[u8] = match data.downcast::<pyo3::types::PyBytes>() {
        Ok(b) => b.as_bytes(),
        Err(_) => {
            let msg = "the serializer did not return bytes".to_owned();
            cx.fail(py, CacheError::new_err(msg), "storing a result")?;
            return Ok(None);
        }
    };
    let obj = cx.keep.then(|| v.bind(py));
    match ns.put_kept(py, key, bytes, None, obj) {
        Ok(at) => Ok(at.map(|at| (at, bytes.len()))),
        Err(e) if e.is_instance_of::<CacheError>(py) => {
            cx.fail(py, e, "storing a result")?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
