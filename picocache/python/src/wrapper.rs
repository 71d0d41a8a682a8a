//! The callable that a cached synchronous function becomes: a native type,
//! so a hit that the namespace's fast lookup answers runs no Python frame,
//! as `functools.lru_cache`'s C wrapper does.
//!
//! `Wrapper` is the base of `picocache._core._CachedFunction` (a Python
//! subclass: it carries the instance `__dict__` that `functools.wraps` and
//! the `cache_info`/`cache_clear`/... attributes use, and CPython traverses
//! that dictionary for the garbage collector). CPython calls it through the
//! vectorcall protocol (`ffi/vcall.rs`: the arguments in an array; the
//! `__call__` below serves callers that hold a tuple, and the stable-ABI
//! build). A call goes:
//!
//! 0. a call whose arguments the front table can key (`front.rs`: exact
//!    `int`, `str`, `bytes`, `None`, `bool`, no keyword arguments) and that
//!    it holds, its record confirmed live by the store's watch: returned
//!    (an immutable result as kept, a mutable one decoded from its kept
//!    bytes), counted. A call of one argument is looked up by the argument
//!    itself: no tuple is made.
//! 1. if the function's namespace is open on a native store
//!    ([`Wrapper::_set_namespace`]): its `lookup_decoded` (encode the
//!    arguments, look up, decode; repeat hits of immutable results from the
//!    in-process tier). A value is a hit: counted here, kept in the front
//!    table where step 0 can serve it, returned.
//! 2. a miss: natively (`miss.rs`: flight, lease, the function, store), or
//!    the Python `compute` for what that path does not take.
//! 3. the namespace not open yet, or a lookup that raised a `TypeError` or
//!    a `CacheError`: the Python wrapper `slow`, which meets the same case
//!    and handles it (opens the store, explains a key that does not encode,
//!    warns and computes). Any other exception of the lookup (from a
//!    `__picocache_key__`, a `RecursionError`) is raised as it is: the
//!    Python wrapper would raise it too, after encoding the key again.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::front::{self, Front, Seen};
use crate::miss::MissCtx;
use crate::Namespace;

/// The Python side's `native_miss` tuple (see [`Wrapper::new`]).
type NativeMissArgs = (
    PyObject,
    PyObject,
    PyObject,
    PyObject,
    u64,
    bool,
    Option<PyObject>,
);

/// The native part of a cached function (see the module docs).
#[pyclass(module = "picocache._native", subclass, frozen)]
pub(crate) struct Wrapper {
    /// The Python wrapper: every call the fast lookup does not answer.
    slow: PyObject,
    /// `compute(args, kwargs)`: a call whose lookup missed.
    compute: PyObject,
    /// What `lookup_decoded` returns for a miss.
    miss: PyObject,
    /// The open namespace, once the Python side has opened it.
    ns: Mutex<Option<Py<Namespace>>>,
    /// The function's counts (its Python state holds them too, so they
    /// outlive the wrapper).
    counts: Py<Counts>,
    /// The native miss path's needs, if the function takes it (see
    /// `miss.rs`); else a miss calls `compute`.
    native_miss: Option<MissCtx>,
    /// Results kept by the call's argument objects.
    front: Front,
    /// CPython's way in (see `ffi/vcall.rs`).
    #[cfg(not(feature = "abi3"))]
    slot: crate::ffi::vcall::Slot,
}

/// This process's hits and misses of a function (`picocache::core::counts`),
/// shared by its [`Wrapper`] and its Python state. Every change is made
/// with the GIL held.
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct Counts(picocache::core::counts::Counts);

#[pymethods]
impl Counts {
    #[new]
    fn new() -> Self {
        Counts(Default::default())
    }

    /// Counts a call answered without running the function.
    pub(crate) fn hit(&self) {
        self.0.hit_serialized();
    }

    /// Counts a call that ran the function.
    pub(crate) fn miss(&self) {
        self.0.miss();
    }

    /// (hits, misses).
    fn value(&self) -> (u64, u64) {
        self.0.get()
    }

    /// Back to zero.
    fn reset(&self) {
        self.0.reset();
    }
}

#[pymethods]
impl Wrapper {
    /// `native_miss`: `(func, dumps, fail, state, cache_id, keep,
    /// plain_dumps)` for the native miss path (see `miss.rs`), or None.
    #[new]
    #[pyo3(signature = (slow, compute, miss, counts, native_miss=None))]
    fn new(
        py: Python<'_>,
        slow: PyObject,
        compute: PyObject,
        miss: PyObject,
        counts: Py<Counts>,
        native_miss: Option<NativeMissArgs>,
    ) -> Self {
        let native_miss = native_miss.map(
            |(func, dumps, fail, state, cache, keep, plain_dumps)| MissCtx {
                func,
                dumps,
                fail,
                state,
                cache,
                keep,
                plain_dumps,
            },
        );
        Wrapper {
            slow,
            compute,
            miss,
            ns: Mutex::new(None),
            counts,
            native_miss,
            front: Front::new(py),
            #[cfg(not(feature = "abi3"))]
            slot: crate::ffi::vcall::Slot::new(),
        }
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyObject> {
        let kinds = match kwargs {
            Some(k) if !k.is_empty() => None,
            _ => front::tuple_kinds(args),
        };
        if let Some(kinds) = kinds {
            if let Some(v) = self.front.get(py, &front::key(args), kinds) {
                self.counts.get().hit();
                return Ok(v);
            }
        }
        self.call_after_front(py, args, kwargs, kinds)
    }

    /// Makes CPython call this function (and every other of its class)
    /// through the vectorcall protocol (`ffi/vcall.rs`): the arguments in an
    /// array, no tuple. Returns whether it does (not in the stable-ABI
    /// build, nor for a subclass that defines `__call__`).
    fn _install_vectorcall(slf: &Bound<'_, Self>) -> bool {
        #[cfg(not(feature = "abi3"))]
        {
            crate::ffi::vcall::install(slf).is_ok()
        }
        #[cfg(feature = "abi3")]
        {
            let _ = slf;
            false
        }
    }

    /// A method: bound to the instance, as a function would be.
    fn __get__(
        slf: &Bound<'_, Self>,
        obj: Option<&Bound<'_, PyAny>>,
        _owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyObject> {
        let py = slf.py();
        match obj {
            Some(o) if !o.is_none() => {
                static METHOD: GILOnceCell<Py<PyType>> = GILOnceCell::new();
                let method = METHOD.import(py, "types", "MethodType")?;
                Ok(method.call1((slf, o))?.unbind())
            }
            _ => Ok(slf.clone().into_any().unbind()),
        }
    }

    /// Serves hits from `ns` (a native namespace) from now on; None stops.
    #[pyo3(signature = (ns))]
    fn _set_namespace(&self, py: Python<'_>, ns: Option<Py<Namespace>>) {
        let old = std::mem::replace(&mut *self.ns.lock(), ns);
        self.front.clear(py);
        drop(old);
    }

    /// Drops the results kept by argument objects (a clear in this process:
    /// they would not be served anyway, their records being gone).
    fn _front_clear(&self, py: Python<'_>) {
        self.front.clear(py);
    }

    /// How many results are kept by argument objects (for tests).
    fn _front_len(&self, py: Python<'_>) -> usize {
        self.front.len(py)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.slow)?;
        visit.call(&self.compute)?;
        visit.call(&self.miss)?;
        visit.call(&self.counts)?;
        if let Some(cx) = &self.native_miss {
            visit.call(&cx.func)?;
            visit.call(&cx.dumps)?;
            visit.call(&cx.fail)?;
            visit.call(&cx.state)?;
            if let Some(p) = &cx.plain_dumps {
                visit.call(p)?;
            }
        }
        visit.call(self.front.dict())?;
        if let Some(ns) = self.ns.try_lock().as_deref().and_then(Option::as_ref) {
            visit.call(ns)?;
        }
        Ok(())
    }
}

/// What [`Wrapper::look`] found.
enum Looked {
    /// A hit, counted.
    Hit(PyObject),
    /// A miss of this encoded key in this namespace.
    Miss(Py<crate::Namespace>, Vec<u8>),
    /// A miss the Python `compute` takes (a key too long to use verbatim).
    Compute,
    /// The namespace not open yet, or a lookup that raised a `TypeError` (a
    /// key that does not encode) or a `CacheError`: the Python wrapper meets
    /// it again and handles it (explains the key; warns and computes).
    Slow,
    /// A lookup that raised anything else (a `__picocache_key__` that
    /// raised, a `RecursionError`, `KeyboardInterrupt`): raised as it is,
    /// as the Python wrapper would, but without encoding again (a key that
    /// recurses into this function would be encoded 2**depth times).
    Raise(PyErr),
}

impl Wrapper {
    /// Where CPython's vectorcall lands (`ffi/vcall.rs`): the front table for a
    /// call of positional arguments it can key, else the tuple path.
    #[cfg(not(feature = "abi3"))]
    pub(crate) fn vectorcall(
        &self,
        py: Python<'_>,
        call: &crate::ffi::vcall::Call<'_, '_>,
    ) -> PyResult<PyObject> {
        let n = call.len();
        let kinds = match call.has_keywords() {
            true => None,
            false => front::kinds(n, (0..n).map(|i| call.arg(i))),
        };
        if let (Some(kinds), 1) = (kinds, n) {
            // The key of a call of one argument is the argument: no tuple.
            if let Some(v) = self.front.get(py, &call.arg(0), kinds) {
                self.counts.get().hit();
                return Ok(v);
            }
            return self.call_after_front(py, &call.args()?, None, Some(kinds));
        }
        let args = call.args()?;
        let kwargs = call.kwargs()?;
        if let Some(kinds) = kinds {
            if let Some(v) = self.front.get(py, &front::key(&args), kinds) {
                self.counts.get().hit();
                return Ok(v);
            }
        }
        self.call_after_front(py, &args, kwargs.as_ref(), kinds)
    }

    /// The instance's vectorcall slot (`vcall::install`).
    #[cfg(not(feature = "abi3"))]
    pub(crate) fn slot(&self) -> &crate::ffi::vcall::Slot {
        &self.slot
    }

    /// A call the front table did not answer (`kinds`: its arguments'
    /// kinds, if the front table can key it): the store, then the function.
    fn call_after_front(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        kinds: Option<u64>,
    ) -> PyResult<PyObject> {
        // This frame stays on the stack while the function runs on a miss:
        // the lookup and the front table's work are out of line (see
        // miss.rs on recursion).
        match self.look(py, args, kwargs, kinds) {
            Looked::Hit(v) => Ok(v),
            Looked::Miss(ns, key) => {
                let Some(cx) = &self.native_miss else {
                    return self.compute(py, args, kwargs);
                };
                let (v, stored) =
                    crate::miss::run(py, cx, self.counts.get(), ns.get(), args, kwargs, key)?;
                if let (Some(kinds), Some(stored)) = (kinds, stored) {
                    self.keep_missed(py, ns.get(), args, kinds, stored, &v);
                }
                Ok(v)
            }
            Looked::Compute => self.compute(py, args, kwargs),
            Looked::Slow => self.slow.call(py, args.clone(), kwargs),
            Looked::Raise(e) => Err(e),
        }
    }

    /// Looks the call up in the open namespace: a hit is counted and kept in
    /// the front table (when its arguments can key it).
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    fn look(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        kinds: Option<u64>,
    ) -> Looked {
        let Some(ns) = self.ns.lock().as_ref().map(|n| n.clone_ref(py)) else {
            return Looked::Slow;
        };
        let mut seen = Seen::Nothing;
        let got = match kinds {
            Some(_) => ns.get().lookup_front(py, args, &mut seen),
            None => ns.get().lookup_call(py, args, kwargs),
        };
        match got {
            Ok((v, _)) if !v.is(&self.miss) => {
                if let Some(kinds) = kinds {
                    // Best effort: without it the next call takes this path.
                    let _ = self.front.insert(py, ns.get(), args, kinds, seen, &v);
                }
                self.counts.get().hit();
                Looked::Hit(v)
            }
            Ok((_, Some(key))) if key.len() <= crate::MAX_KEY => Looked::Miss(ns, key),
            Ok(_) => Looked::Compute,
            Err(e)
                if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py)
                    || e.is_instance_of::<crate::CacheError>(py) =>
            {
                Looked::Slow // met again, and handled, by the Python wrapper
            }
            Err(e) => Looked::Raise(e),
        }
    }

    /// Keeps the value a miss stored (immutable, kept in the tier) in the
    /// front table: served by its arguments from the next call on, as a
    /// hit's would be. Best effort.
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    fn keep_missed(
        &self,
        py: Python<'_>,
        ns: &crate::Namespace,
        args: &Bound<'_, PyTuple>,
        kinds: u64,
        (at, bytes): (picocache::Located, usize),
        v: &PyObject,
    ) {
        let _ = self
            .front
            .insert(py, ns, args, kinds, Seen::Kept { at, bytes }, v);
    }

    /// A miss through the Python `compute` (the function takes no native
    /// miss path, or its key is too long to use verbatim: the Python side
    /// digests it). Nothing is kept for the front table.
    fn compute(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyObject> {
        let kw = match kwargs {
            Some(k) => k.clone(),
            None => PyDict::new(py),
        };
        self.compute.call1(py, (args, kw))
    }
}

/// A decoder of stored values that picks by the first byte: `framed` for
/// values that start with a zero byte (framed values, whose magic starts
/// so; a pickle never does), `plain` (the C `pickle.loads`) for the rest.
/// Native, so decoding a plain value runs no Python frame.
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct ByFirstByte {
    framed: PyObject,
    plain: PyObject,
}

#[pymethods]
impl ByFirstByte {
    #[new]
    fn new(framed: PyObject, plain: PyObject) -> Self {
        ByFirstByte { framed, plain }
    }

    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        match data.downcast::<PyBytes>() {
            Ok(b) => self.decode(py, b),
            Err(_) => self.framed.call1(py, (data,)), // not bytes: it knows what to do
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.framed)?;
        visit.call(&self.plain)
    }
}

impl ByFirstByte {
    /// The value of a framed value copied into `data` (see `fetch.rs`).
    pub(crate) fn decode_framed(
        &self,
        py: Python<'_>,
        data: &Bound<'_, pyo3::types::PyByteArray>,
    ) -> PyResult<PyObject> {
        self.framed.call1(py, (data,))
    }

    /// The value `data` encodes (the namespace's fetch calls this directly).
    pub(crate) fn decode(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<PyObject> {
        let f = if data.as_bytes().first() == Some(&0) {
            &self.framed
        } else {
            &self.plain
        };
        f.call1(py, (data,))
    }
}
