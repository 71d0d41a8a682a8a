//! Vectorcall for a cached function (issue 16): CPython calls the wrapper
//! with its arguments in a C array, as it calls `functools.lru_cache`'s C
//! wrapper, instead of packing them into a tuple (and a dict) for PyO3's
//! `__call__`.
//!
//! A [`Wrapper`] carries a [`Slot`]: the pointer to [`call`], at the same
//! offset in every instance. [`install`] tells the instance's type that
//! offset (`tp_vectorcall_offset`, `Py_TPFLAGS_HAVE_VECTORCALL`), once per
//! type; from then on CPython's vectorcall protocol reads the pointer from
//! the instance and calls [`call`], which hands a safe view of the
//! arguments ([`Call`]) to [`Wrapper::vectorcall`]. The wrapper's
//! `__call__` (`tp_call`) stays for callers that hold a tuple and a dict
//! (`PyObject_Call`), and is all there is in the stable-ABI build (feature
//! `abi3`: the type object is opaque there, and `ffi` is left out).
//!
//! Python 3.12 clears the flag when a class's `__call__` is assigned;
//! 3.8-3.11 do not, so [`install`] refuses a type whose `tp_call` is not
//! the wrapper's own (a subclass that defines `__call__`), and nothing
//! assigns `__call__` on the package's private class afterwards.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::Borrowed;

use crate::wrapper::Wrapper;

/// The instance field CPython's vectorcall reads: a pointer to [`call`].
#[repr(transparent)]
pub(crate) struct Slot(ffi::vectorcallfunc);

impl Slot {
    /// A slot that points to [`call`].
    pub(crate) const fn new() -> Slot {
        Slot(call)
    }
}

/// Tells `obj`'s type where its instances keep their [`Slot`], so CPython
/// calls them through [`call`]. Idempotent; an error (and nothing changed)
/// for a type that defines its own `__call__` or whose layout does not hold
/// the slot where `obj` has it.
pub(crate) fn install(obj: &Bound<'_, Wrapper>) -> PyResult<()> {
    let base = obj.as_ptr() as usize;
    let field = obj.get().slot() as *const Slot as usize;
    let ty: Bound<'_, PyType> = obj.get_type();
    let wrapper_ty = obj.py().get_type::<Wrapper>();
    let tp = ty.as_type_ptr();
    // SAFETY: `tp` is the live type object of `obj` and `wrapper_ty`'s is
    // the live `Wrapper` type (both held by references for this call); the
    // GIL is held, so no other thread reads or writes type slots meanwhile.
    // The reads are of plain fields of `PyTypeObject` (a non-stable-ABI
    // build: the struct is the running interpreter's).
    let (basicsize, call_slot, wrapper_call, flags, current) = unsafe {
        (
            (*tp).tp_basicsize,
            (*tp).tp_call,
            (*wrapper_ty.as_type_ptr()).tp_call,
            (*tp).tp_flags,
            (*tp).tp_vectorcall_offset,
        )
    };
    let offset = field
        .checked_sub(base)
        .filter(|o| o + std::mem::size_of::<Slot>() <= basicsize as usize)
        .ok_or_else(|| {
            PyRuntimeError::new_err("picocache: the wrapper's call slot is not in its object")
        })?;
    if call_slot.map(|f| f as usize) != wrapper_call.map(|f| f as usize) {
        return Err(PyTypeError::new_err(
            "picocache: a subclass of the wrapper that defines __call__ is called through it",
        ));
    }
    if flags & ffi::Py_TPFLAGS_HAVE_VECTORCALL != 0 {
        return if current == offset as ffi::Py_ssize_t {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(
                "picocache: the type's vectorcall offset differs",
            ))
        };
    }
    // SAFETY: as above (GIL held, live type object). Every instance of this
    // type is a `Wrapper` (the type is `Wrapper` or a subclass of it: `obj`
    // is one), made by `Wrapper::new`, which sets the slot; its offset is
    // the same in every instance (one Rust layout, and a subclass adds its
    // fields after the base's `tp_basicsize`), checked above to lie inside
    // the object. `PyType_Modified` drops what the interpreter cached about
    // the type.
    unsafe {
        (*tp).tp_vectorcall_offset = offset as ffi::Py_ssize_t;
        (*tp).tp_flags |= ffi::Py_TPFLAGS_HAVE_VECTORCALL;
        ffi::PyType_Modified(tp);
    }
    Ok(())
}

/// The arguments of one vectorcall, as CPython passed them: `n` positional
/// ones, then one value per name in `kwnames`.
pub(crate) struct Call<'a, 'py> {
    py: Python<'py>,
    all: &'a [*mut ffi::PyObject],
    n: usize,
    kwnames: Option<&'a Bound<'py, PyTuple>>,
}

impl<'a, 'py> Call<'a, 'py> {
    /// How many positional arguments.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// The positional argument `i` (`i < len()`).
    pub(crate) fn arg(&self, i: usize) -> Borrowed<'a, 'py, PyAny> {
        let p = self.all[..self.n][i];
        // SAFETY: CPython passes valid, non-null borrowed references that
        // stay alive for the call, and `self` does not outlive the call.
        unsafe { Borrowed::from_ptr(self.py, p) }
    }

    /// Whether the call has keyword arguments.
    pub(crate) fn has_keywords(&self) -> bool {
        self.all.len() > self.n
    }

    /// The positional arguments as a new tuple.
    pub(crate) fn args(&self) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(self.py, (0..self.n).map(|i| self.arg(i)))
    }

    /// The keyword arguments as a new dict, or None if there are none.
    pub(crate) fn kwargs(&self) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(names) = self.kwnames else {
            return Ok(None);
        };
        if !self.has_keywords() {
            return Ok(None);
        }
        let d = PyDict::new(self.py);
        for (j, p) in self.all[self.n..].iter().enumerate() {
            // SAFETY: as in `arg`: the keyword values follow the positional
            // arguments in CPython's array, valid for the call.
            let v = unsafe { Borrowed::from_ptr(self.py, *p) };
            d.set_item(names.get_borrowed_item(j)?, v)?;
        }
        Ok(Some(d))
    }
}

/// The vectorcall function of every [`Wrapper`] (see the module docs).
///
/// # Safety
///
/// Called by CPython only, per the vectorcall protocol: with the GIL held,
/// `callable` an instance of a type [`install`] prepared (so a `Wrapper`),
/// `args` pointing to the positional arguments then the keyword values
/// (`PyVectorcall_NARGS(nargsf)` plus `len(kwnames)` valid references),
/// `kwnames` null or a tuple of str.
unsafe extern "C" fn call(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: the GIL is held (the protocol's contract above).
    let py = unsafe { Python::assume_gil_acquired() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the protocol's contract: `nargsf` encodes the count of
        // positional arguments; `kwnames` is null or a tuple; `args` holds
        // that many references plus one per keyword name; `callable` is a
        // `Wrapper` (only `install`ed types call this).
        unsafe {
            let n = ffi::PyVectorcall_NARGS(nargsf) as usize;
            let names = (!kwnames.is_null()).then(|| Borrowed::from_ptr(py, kwnames));
            let kwnames = names.as_deref().map(|k| k.downcast_unchecked::<PyTuple>());
            let nkw = kwnames.map_or(0, |k| k.len());
            let all: &[*mut ffi::PyObject] = if n + nkw == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(args, n + nkw)
            };
            let slf = Borrowed::from_ptr(py, callable);
            let slf = slf.downcast_unchecked::<Wrapper>();
            let call = Call {
                py,
                all,
                n,
                kwnames,
            };
            slf.get().vectorcall(py, &call)
        }
    }));
    match outcome {
        Ok(Ok(v)) => v.into_ptr(),
        Ok(Err(e)) => {
            e.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            crate::CacheError::new_err("picocache: internal error (a panic) in a cached call")
                .restore(py);
            std::ptr::null_mut()
        }
    }
}
