//! Leases from Python: the `Lease` handle, and the step of a miss that
//! takes the key's lease and looks again (the protocol of
//! `picocache::core::lease`, shared with the Rust `Memo`).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use picocache::core::lease::{self, Acquired, HeldLease};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::{guarded, Namespace};

/// A held per-key lease; `release()` or leaving the `with` block frees it.
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct Lease {
    inner: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Lease {
    pub(crate) fn new(l: impl Any + Send) -> Self {
        Lease {
            inner: Mutex::new(Some(Box::new(l))),
        }
    }
}

/// Releases `held` with the GIL released (a Redis or SQL lease talks to the
/// server on drop), never panicking.
pub(crate) fn release(py: Python<'_>, held: Option<impl Any + Send>) {
    if held.is_some() {
        py.allow_threads(move || {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(held)));
        });
    }
}

#[pymethods]
impl Lease {
    /// Releases the lease (idempotent).
    fn release(&self, py: Python<'_>) {
        let l = self.inner.lock().take();
        release(py, l);
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

impl Namespace {
    /// Takes the per-key lease of `key` (waiting up to `wait` for another
    /// process holding it), then looks `key` up again as `lookup_decoded`
    /// does: (the lease, the value or `miss`). No lease and no look again
    /// when the wait timed out or this thread holds the lease already (the
    /// function re-entered itself): the value is then `miss`. On the local
    /// engine an uncontended lease and the look again are taken without
    /// releasing the GIL (no wait, one system call).
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    pub(crate) fn lease_look(
        &self,
        py: Python<'_>,
        key: &[u8],
        wait: Duration,
        loads: &Bound<'_, PyAny>,
        miss: &Bound<'_, PyAny>,
        keep: bool,
    ) -> PyResult<(Option<HeldLease>, PyObject)> {
        let mut held = None;
        if self.local && !HeldLease::held_here(&self.name, key) {
            // A try without waiting; any trouble goes the ordinary way.
            if let Ok(Ok(Some(l))) = guarded(|| self.current()?.lease(key, Duration::ZERO)) {
                held = Some(lease::hold(&self.name, key, l));
            }
        }
        let held = match held {
            Some(l) => Some(l),
            None => self.acquire_interruptibly(py, key, wait)?,
        };
        let Some(held) = held else {
            return Ok((None, miss.clone().unbind()));
        };
        let v = match self.fetch(py, key, loads, miss, keep, true) {
            Ok(v) => v,
            Err(e) => {
                release(py, Some(held));
                return Err(e);
            }
        };
        Ok((Some(held), v))
    }

    /// `core::lease::acquire` for up to `wait`, in slices of
    /// `SIGNAL_CHECK` with the GIL released, running the signal handlers
    /// between them: Ctrl-C ends a wait for another process's lease (which
    /// may take `lease_timeout`, a minute by default) at once.
    fn acquire_interruptibly(
        &self,
        py: Python<'_>,
        key: &[u8],
        wait: Duration,
    ) -> PyResult<Option<HeldLease>> {
        let deadline = Instant::now().checked_add(wait); // None: no end
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let slice = left.min(crate::miss::SIGNAL_CHECK);
            match self.run(py, |ns| lease::acquire(ns, &self.name, key, slice, None))? {
                Acquired::TimedOut if slice < left => py.check_signals()?,
                got => return Ok(got.into_held()),
            }
        }
    }
}
