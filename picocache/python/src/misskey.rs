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
//! The key `key` gives for an argument tuple is noted too, and the value
//! `put` then stores under it on the same thread (an immutable result,
//! kept in the tier): the native wrapper takes it after the miss and keeps
//! it in its front table, so the next call with those arguments is served
//! by them, as after a hit (no extra lookup, no hit counted).

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

/// The key `key` last gave for an argument tuple (no keyword arguments),
/// and what `put` then stored under it on the same thread.
struct Keyed {
    thread: ThreadId,
    args: Py<PyTuple>,
    key: Vec<u8>,
    put: Option<Stored>,
}

/// A value `put` kept in the tier: where its record landed, its stored
/// size, the object.
pub(crate) struct Stored {
    pub(crate) at: picocache::Located,
    pub(crate) bytes: usize,
    pub(crate) obj: PyObject,
}

/// The key of the last missed lookup of a namespace, and the last value
/// stored by a miss (see the module).
#[derive(Default)]
pub(crate) struct MissKey {
    /// Whether `kept` holds anything (a hit checks only this).
    set: AtomicBool,
    kept: Mutex<Option<Kept>>,
    keyed: Mutex<Option<Keyed>>,
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

impl MissKey {
    /// Notes that `key` was given for `args` (no keyword arguments) on this
    /// thread: the decorator takes the lease with it, and stores the result
    /// under it.
    pub(crate) fn keyed(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        key: &[u8],
    ) {
        let new = no_kwargs(kwargs).then(|| Keyed {
            thread: std::thread::current().id(),
            args: args.clone().unbind(),
            key: key.to_vec(),
            put: None,
        });
        let old = std::mem::replace(&mut *self.keyed.lock(), new);
        drop(old); // (references dropped outside the lock)
    }

    /// Notes that this thread stored `obj` under `key`, its record at `at`
    /// (kept only if it is the key `key` last gave on this thread).
    pub(crate) fn stored(
        &self,
        key: &[u8],
        at: picocache::Located,
        bytes: usize,
        obj: &Bound<'_, PyAny>,
    ) {
        let mut g = self.keyed.lock();
        if let Some(k) = g.as_mut() {
            if k.thread == std::thread::current().id() && k.key == key && k.put.is_none() {
                k.put = Some(Stored {
                    at,
                    bytes,
                    obj: obj.clone().unbind(),
                });
            }
        }
    }

    /// What this thread stored for this very `args` tuple, if anything (then
    /// no longer kept): the value a miss computed and stored, for the front
    /// table.
    pub(crate) fn take_stored(&self, args: &Bound<'_, PyTuple>) -> Option<Stored> {
        let mut g = self.keyed.lock();
        let k = g.as_ref()?;
        if k.thread != std::thread::current().id() || !k.args.bind(args.py()).is(args) {
            return None;
        }
        let k = g.take()?;
        drop(g);
        k.put
    }
}
