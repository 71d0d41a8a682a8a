//! The callable that a cached synchronous function becomes: a native type,
//! so a hit that the namespace's fast lookup answers runs no Python frame,
//! as `functools.lru_cache`'s C wrapper does.
//!
//! `Wrapper` is the base of `picocache._core._CachedFunction` (a Python
//! subclass: it carries the instance `__dict__` that `functools.wraps` and
//! the `cache_info`/`cache_clear`/... attributes use, and CPython traverses
//! that dictionary for the garbage collector). A call goes:
//!
//! 0. a call whose arguments the front table can key (`front.rs`: exact
//!    `int`, `str`, `bytes`, `None`, `bool`, no keyword arguments) and that
//!    it holds, its record confirmed live by the store's watch: returned
//!    (an immutable result as kept, a mutable one decoded from its kept
//!    bytes), counted.
//! 1. if the function's namespace is open on a native store
//!    ([`Wrapper::_set_namespace`]): its `lookup_decoded` (encode the
//!    arguments, look up, decode; repeat hits of immutable results from the
//!    in-process tier). A value is a hit: counted here, kept in the front
//!    table where step 0 can serve it, returned.
//! 2. a miss: the Python `compute` (lease, run the function, store).
//! 3. anything else (the namespace not open yet, a lookup that raised): the
//!    Python wrapper `slow`, which meets the same case and handles it (opens
//!    the store, explains a key that does not encode, warns and computes).

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::front::{self, Front, Seen};
use crate::Namespace;

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
    /// Hits answered here (the Python side counts its own; it holds this
    /// counter too, so the count outlives the wrapper).
    hits: Py<Hits>,
    /// Results kept by the call's argument objects.
    front: Front,
}

/// A count of hits, shared by a [`Wrapper`] and its function's state.
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct Hits(AtomicU64);

#[pymethods]
impl Hits {
    #[new]
    fn new() -> Self {
        Hits(AtomicU64::new(0))
    }

    /// The count.
    fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Back to zero.
    fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Hits {
    /// Counts one hit while the GIL is held: every change of the count
    /// holds it (none is made with it released), so a load and a store
    /// lose nothing and cost less than a locked add on the hit path.
    #[inline]
    fn count_under_gil(&self) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

#[pymethods]
impl Wrapper {
    #[new]
    fn new(
        py: Python<'_>,
        slow: PyObject,
        compute: PyObject,
        miss: PyObject,
        hits: Py<Hits>,
    ) -> Self {
        Wrapper {
            slow,
            compute,
            miss,
            ns: Mutex::new(None),
            hits,
            front: Front::new(py),
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
            _ => front::kinds(args),
        };
        if let Some(kinds) = kinds {
            if let Some(v) = self.front.get(py, args, kinds) {
                self.hits.get().count_under_gil();
                return Ok(v);
            }
        }
        let ns = self.ns.lock().as_ref().map(|n| n.clone_ref(py));
        if let Some(ns) = ns {
            let got = match kinds {
                Some(kinds) => {
                    let mut seen = Seen::Nothing;
                    let got = ns.get().lookup_front(py, args, &mut seen);
                    if let Ok(v) = &got {
                        if !v.is(&self.miss) {
                            // Best effort: without it the next call takes this path.
                            let _ = self.front.insert(py, ns.get(), args, kinds, seen, v);
                        }
                    }
                    got
                }
                None => ns.get().lookup_decoded(py, args, kwargs),
            };
            match got {
                Ok(v) if !v.is(&self.miss) => {
                    self.hits.get().count_under_gil();
                    return Ok(v);
                }
                Ok(_) => {
                    let kw = match kwargs {
                        Some(k) => k.clone(),
                        None => PyDict::new(py),
                    };
                    let v = self.compute.call1(py, (args, kw))?;
                    if let Some(kinds) = kinds {
                        // The value this miss stored (immutable, kept in the
                        // tier) is served by its arguments from the next
                        // call on, as a hit's would be.
                        if let Some(s) = ns.get().miss_key.take_stored(args) {
                            if s.obj.is(&v) {
                                let seen = Seen::Kept {
                                    at: s.at,
                                    bytes: s.bytes,
                                };
                                let _ = self.front.insert(py, ns.get(), args, kinds, seen, &v);
                            }
                        }
                    }
                    return Ok(v);
                }
                Err(_) => {} // met again, and handled, below
            }
        }
        self.slow.call(py, args.clone(), kwargs)
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
        visit.call(&self.hits)?;
        visit.call(self.front.dict())?;
        if let Some(ns) = self.ns.try_lock().as_deref().and_then(Option::as_ref) {
            visit.call(ns)?;
        }
        Ok(())
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
