//! `MissKey`: the key of a call whose lookup just missed, kept for the look
//! under the lease that follows (issue 18).
//!
//! A miss encodes the call's arguments twice: `lookup_decoded` or `lookup` (the
//! lookup), then `key` when the decorator takes the lease and looks again.
//! For a large array argument each encoding is a BLAKE3 pass over its data
//! (about 25 ms at 100 MB). The key of the last miss is kept here with a
//! strong reference to the very argument tuple it was made from, and `key`
//! returns it, once, when it is asked for the key of that same tuple object
//! (and the same keyword arguments) on the same thread: the object cannot
//! have been freed and its address reused meanwhile, since it is held.
//! Anything else (another thread, other arguments) encodes again.
//! The tuple is held until then, or until the namespace's next lookup
//! (one tuple per namespace at most).
//!
//! (The native wrapper's own miss path, `miss.rs`, takes the key from its
//! lookup directly; this is for the Python miss path.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

struct Kept {
    thread: ThreadId,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
    key: Vec<u8>,
}

/// The key of the last missed lookup of a namespace (see the module).
#[derive(Default)]
pub(crate) struct MissKey {
    /// Whether `kept` holds anything (a hit checks only this).
    set: AtomicBool,
    kept: Mutex<Option<Kept>>,
}

fn no_kwargs(k: Option<&Bound<'_, PyDict>>) -> bool {
    k.is_none_or(|d| d.is_empty())
}

impl MissKey {
    /// Keeps `key`, the encoding of `args` and `kwargs`, whose lookup missed.
    pub(crate) fn remember(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        key: &[u8],
    ) {
        let kept = Kept {
            thread: std::thread::current().id(),
            args: args.clone().unbind(),
            kwargs: kwargs.filter(|d| !d.is_empty()).map(|d| d.clone().unbind()),
            key: key.to_vec(),
        };
        let old = self.kept.lock().replace(kept);
        self.set.store(true, Ordering::Release);
        drop(old); // (references dropped outside the lock)
    }

    /// Drops what is kept (a lookup that did not miss: its arguments are
    /// not held any longer than the call).
    pub(crate) fn forget(&self) {
        if self.set.load(Ordering::Acquire) {
            self.set.store(false, Ordering::Release);
            let old = self.kept.lock().take();
            drop(old);
        }
    }

    /// The kept key, if it was made from this very `args` tuple and these
    /// keyword arguments on this thread (then it is no longer kept).
    pub(crate) fn take(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Option<Vec<u8>> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        let mut kept = self.kept.lock();
        let k = kept.as_ref()?;
        let same_kwargs = match (&k.kwargs, kwargs) {
            (None, kw) => no_kwargs(kw),
            (Some(a), Some(b)) => a.bind(args.py()).is(b),
            (Some(_), None) => false,
        };
        if k.thread != std::thread::current().id()
            || !k.args.bind(args.py()).is(args)
            || !same_kwargs
        {
            return None;
        }
        let k = kept.take()?;
        self.set.store(false, Ordering::Release);
        drop(kept);
        Some(k.key)
    }
}
