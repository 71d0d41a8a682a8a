//! The front table of a cached function (issue 16): repeat hits answered by
//! the call's own argument objects, as `functools.lru_cache` answers them,
//! without encoding the canonical key or looking it up in the store.
//!
//! A call whose positional arguments are all of exact types for which
//! Python's `==` (with the type) means the same as the canonical key's
//! equality (`None`, `bool`, `int`, `str`, `bytes`: see [`kinds`]), and
//! which has no keyword arguments, is looked up in a dictionary keyed by its
//! argument tuple. An entry holds the kinds of the arguments it was made
//! from (so `f(1)` and `f(True)`, equal as tuples, stay apart), the
//! [`picocache::Located`] token of the record its value came from, and the
//! value: the decoded object when it is immutable (handed out again, as the
//! in-process tier does); a list, dict, set or bytearray of immutable
//! elements as a private copy, copied again (shallowly) at each hit; else
//! the stored bytes, decoded at each hit. A mutable object is never shared
//! between calls (only immutable elements are, as `functools.lru_cache`
//! shares the whole result).
//!
//! An entry is served only while the store's [`picocache::Watch`] confirms
//! its record is still the key's live, unexpired entry, reading the index
//! entry the token names (no key, no probe): a record is never changed once
//! written and a location never reused in an index lineage, so a value
//! changed, removed, evicted, expired or cleared by any process is never
//! served. The confirmation counts the hit in the shared index and
//! refreshes recency where the namespace has a limit, as a lookup would.
//! A watch taken before a fork, or on an index since replaced, confirms
//! nothing: the call goes the ordinary way and the entry is made again.
//!
//! Floats are not served here (`-0.0 == 0.0`, NaN), nor keyword arguments,
//! methods (`self` is not one of the kinds) or anything else: those take
//! the namespace's lookup, which keeps its own tier of immutable results.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyInt, PyList, PySet, PyString, PyTuple};
use pyo3::Borrowed;

use picocache_engine::Confirmed;

use crate::tier::{immutable, TIER_MAX_BYTES, TIER_MAX_ENTRIES};
use crate::{fork_gen, Namespace, MAX_KEY};

/// Most positional arguments of a call the front table serves.
const MAX_ARGS: usize = 16;
/// Most elements of a container result kept as a copy (larger ones are
/// decoded from their bytes at each hit).
const MAX_COPY_LEN: usize = 1 << 16;

/// How an entry's value becomes a hit's result.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// Handed out as it is (immutable).
    Same,
    /// A shallow copy of the kept container of immutable elements.
    Copy,
    /// Decoded from the kept stored bytes.
    Decode,
}

/// Whether `v` is an exact list, dict, set or bytearray whose elements
/// (keys and values) are all immutable: a shallow copy of it is then
/// indistinguishable from decoding it again (but for the identity of its
/// immutable elements).
fn copyable(v: &Bound<'_, PyAny>) -> bool {
    if let Ok(l) = v.downcast_exact::<PyList>() {
        return l.len() <= MAX_COPY_LEN && l.iter().all(|e| immutable(&e, 1));
    }
    if let Ok(d) = v.downcast_exact::<PyDict>() {
        return d.len() <= MAX_COPY_LEN
            && d.iter().all(|(k, e)| immutable(&k, 1) && immutable(&e, 1));
    }
    if let Ok(s) = v.downcast_exact::<PySet>() {
        return s.len() <= MAX_COPY_LEN && s.iter().all(|e| immutable(&e, 1));
    }
    v.is_exact_instance_of::<PyByteArray>()
}

/// A new shallow copy of a [`copyable`] object.
fn copy_of<'py>(v: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(l) = v.downcast_exact::<PyList>() {
        return Ok(l.get_slice(0, l.len()).into_any());
    }
    if let Ok(d) = v.downcast_exact::<PyDict>() {
        return Ok(d.copy()?.into_any());
    }
    if let Ok(b) = v.downcast_exact::<PyByteArray>() {
        return Ok(PyByteArray::new(v.py(), &b.to_vec()).into_any());
    }
    v.call_method0("copy") // a set
}

/// What a lookup of the namespace's fast path saw, for the front table.
pub(crate) enum Seen {
    /// Nothing to keep (a miss, or a path that knows no record).
    Nothing,
    /// The value is immutable and was served from, or kept in, the tier:
    /// kept as it is.
    Kept {
        at: picocache::Located,
        bytes: usize,
    },
    /// The value is mutable: its stored bytes (checked), decoded at each hit.
    Raw {
        at: picocache::Located,
        raw: Py<PyBytes>,
    },
}

/// The kinds of a call's positional arguments, four bits each (the call's
/// length says how many), or None if one is not of an exact type whose
/// `==` agrees with the canonical key: `None`, `bool`, `int`, `str`, `bytes`.
/// (For these, two arguments of one kind are `==` exactly when they encode
/// to the same key bytes, typed or not; `True == 1` is told apart by kind.)
#[inline]
pub(crate) fn kinds<'a, 'py: 'a>(
    len: usize,
    args: impl Iterator<Item = Borrowed<'a, 'py, PyAny>>,
) -> Option<u64> {
    if len > MAX_ARGS {
        return None;
    }
    let mut k = 0u64;
    for (i, a) in args.enumerate() {
        let t = if a.is_exact_instance_of::<PyInt>() {
            1
        } else if a.is_exact_instance_of::<PyString>() {
            2
        } else if a.is_none() {
            3
        } else if a.is_exact_instance_of::<PyBytes>() {
            4
        } else if a.is_exact_instance_of::<PyBool>() {
            5
        } else {
            return None;
        };
        k |= t << (4 * i);
    }
    Some(k)
}

/// The kinds of the arguments in `args` ([`kinds`]).
#[inline]
pub(crate) fn tuple_kinds(args: &Bound<'_, PyTuple>) -> Option<u64> {
    kinds(args.len(), args.iter_borrowed())
}

/// The front table's key of a call with the arguments `args`: the argument
/// itself for a call of one (as `functools.lru_cache` keys it; never a
/// tuple, so never equal to the key of a call of another length), else the
/// tuple.
#[inline]
pub(crate) fn key<'a, 'py>(args: &'a Bound<'py, PyTuple>) -> Borrowed<'a, 'py, PyAny> {
    match args.len() {
        1 => args
            .get_borrowed_item(0)
            .unwrap_or_else(|_| args.as_any().as_borrowed()),
        _ => args.as_any().as_borrowed(),
    }
}

/// One call's kept result (see the module docs).
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct FrontEntry {
    watch: Arc<picocache::Watch>,
    at: picocache::Located,
    kinds: u64,
    /// The immutable value, the private container copied at each hit, or
    /// the stored bytes (see `how`).
    value: PyObject,
    how: How,
    bytes: usize,
}

/// A cached function's front table (see the module docs).
pub(crate) struct Front {
    /// Argument tuple -> [`FrontEntry`]. Only tuples of the kinds above are
    /// keys, so a lookup runs no Python code (no user `__eq__`/`__hash__`).
    dict: Py<PyDict>,
    state: Mutex<FrontState>,
}

struct FrontState {
    /// The watch new entries use (replaced once it is no longer current).
    watch: Option<Arc<picocache::Watch>>,
    /// Bytes the entries account for (their values' stored size, their
    /// arguments' and some overhead).
    bytes: usize,
    fork_gen: u64,
    /// The decoder of raw entries (the namespace's `loads`).
    loads: Option<PyObject>,
}

impl Front {
    pub(crate) fn new(py: Python<'_>) -> Front {
        Front {
            dict: PyDict::new(py).unbind(),
            state: Mutex::new(FrontState {
                watch: None,
                bytes: 0,
                fork_gen: fork_gen(),
                loads: None,
            }),
        }
    }

    /// The kept result of a call whose arguments (of `kinds`) have the
    /// front table's `key` ([`key`]), if its record is still live (the hit
    /// counted in the store); None otherwise.
    #[inline]
    pub(crate) fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        kinds: u64,
    ) -> Option<PyObject> {
        let d = self.dict.bind(py);
        let e = d.get_item(key).ok()??;
        let e = e.downcast::<FrontEntry>().ok()?.get();
        if e.kinds != kinds {
            return None;
        }
        match e.watch.confirm(&e.at) {
            Confirmed::Live => {}
            // Confirmed through the store's current index (the entry's was
            // resized away): point the entry at the current watch.
            Confirmed::InNewerIndex => self.refresh(py, key, e),
            _ => return None,
        }
        match e.how {
            How::Same => return Some(e.value.clone_ref(py)),
            How::Copy => return copy_of(e.value.bind(py)).ok().map(Bound::unbind),
            How::Decode => {}
        }
        // A mutable result: decoded again from the kept bytes.
        let loads = self.state.lock().loads.as_ref()?.clone_ref(py);
        let raw = e.value.bind(py).downcast::<PyBytes>().ok()?;
        let got = match loads.bind(py).downcast::<crate::wrapper::ByFirstByte>() {
            Ok(d) => d.get().decode(py, raw),
            Err(_) => loads.call1(py, (raw,)),
        };
        got.ok()
    }

    /// Makes `e` (kept under `key`) use the front table's current watch, if
    /// it has one, so its hits stop going the long way. Best effort.
    #[inline(never)]
    fn refresh(&self, py: Python<'_>, key: &Bound<'_, PyAny>, e: &FrontEntry) {
        let Some(watch) = self.state.lock().watch.clone().filter(|w| w.current()) else {
            return;
        };
        let entry = FrontEntry {
            watch,
            at: e.at,
            kinds: e.kinds,
            value: e.value.clone_ref(py),
            how: e.how,
            bytes: e.bytes,
        };
        if let Ok(entry) = Py::new(py, entry) {
            let _ = self.dict.bind(py).set_item(key, entry);
        }
    }

    /// Keeps what `seen` describes, the result of a call with `args` (of
    /// `kinds`) that `ns` answered with `value`.
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    pub(crate) fn insert(
        &self,
        py: Python<'_>,
        ns: &Namespace,
        args: &Bound<'_, PyTuple>,
        kinds: u64,
        seen: Seen,
        value: &PyObject,
    ) -> PyResult<()> {
        let (at, value, how, n) = match seen {
            Seen::Nothing => return Ok(()),
            Seen::Kept { at, bytes } => (at, value.clone_ref(py), How::Same, bytes),
            Seen::Raw { at, raw } => {
                let n = raw.bind(py).as_bytes().len();
                let v = value.bind(py);
                if copyable(v) {
                    // A private copy: `value` itself goes to the caller.
                    (at, copy_of(v)?.unbind(), How::Copy, n)
                } else {
                    (at, raw.into_any(), How::Decode, n)
                }
            }
        };
        if n > TIER_MAX_BYTES / 16 {
            return Ok(());
        }
        // The entry's share of the budget: the value's stored size, the
        // arguments' own memory (an int or str argument may be large: its
        // `__sizeof__`, as `sys.getsizeof` counts it), some overhead.
        let mut bytes = n + 96;
        for a in args.iter_borrowed() {
            bytes += match a.call_method0(pyo3::intern!(py, "__sizeof__")) {
                Ok(s) => s.extract::<usize>().unwrap_or(TIER_MAX_BYTES),
                Err(_) => TIER_MAX_BYTES, // (not kept)
            };
        }
        if bytes > TIER_MAX_BYTES / 16 {
            return Ok(());
        }
        let watch = {
            let mut st = self.state.lock();
            if st.fork_gen != fork_gen() {
                st.watch = None;
                st.fork_gen = fork_gen();
            }
            match &st.watch {
                Some(w) if w.current() => w.clone(),
                _ => {
                    let Some(w) = ns.watch() else {
                        return Ok(());
                    };
                    let w = Arc::new(w);
                    st.watch = Some(w.clone());
                    w
                }
            }
        };
        let entry = Py::new(
            py,
            FrontEntry {
                watch,
                at,
                kinds,
                value,
                how,
                bytes,
            },
        )?;
        // (No Python code runs from here on: the keys and values are of
        // builtin types, and the entry was allocated above.)
        let d = self.dict.bind(py);
        let key = key(args);
        let mut st = self.state.lock();
        if how == How::Decode && st.loads.is_none() {
            st.loads = ns.decoder.get().map(|(l, _, _)| l.clone_ref(py));
        }
        let old = d
            .get_item(key)?
            .and_then(|o| o.downcast::<FrontEntry>().ok().map(|o| o.get().bytes));
        if let Some(b) = old {
            st.bytes = st.bytes.saturating_sub(b);
        }
        if d.len() >= TIER_MAX_ENTRIES || st.bytes + bytes > TIER_MAX_BYTES {
            // Start over, as the tier does: the hot calls come back at once.
            d.clear();
            st.bytes = 0;
        }
        d.set_item(key, entry)?;
        st.bytes += bytes;
        Ok(())
    }

    /// Drops every entry (a new namespace, a clear in this process).
    pub(crate) fn clear(&self, py: Python<'_>) {
        let mut st = self.state.lock();
        self.dict.bind(py).clear();
        st.bytes = 0;
        st.watch = None;
    }

    /// Entries held (tests).
    pub(crate) fn len(&self, py: Python<'_>) -> usize {
        self.dict.bind(py).len()
    }

    pub(crate) fn dict(&self) -> &Py<PyDict> {
        &self.dict
    }
}

impl Namespace {
    /// A watch on this namespace's store (the local engine), if it has one.
    pub(crate) fn watch(&self) -> Option<picocache::Watch> {
        let ns = self.current().ok()?;
        ns.locate()?.watch()
    }

    /// `lookup_decoded` of a call without keyword arguments, also saying
    /// in `seen` which record a hit's value came from.
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    pub(crate) fn lookup_front(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        seen: &mut Seen,
    ) -> PyResult<(PyObject, Option<Vec<u8>>)> {
        let (loads, miss, keep) = self.decoder(py)?;
        let k = self.encode_call(py, args, None)?;
        if k.len() > MAX_KEY {
            return Ok((miss.clone().unbind(), Some(k)));
        }
        let v = if !keep {
            // A custom serializer: its loads sees every hit from the store.
            self.fetch(py, &k, loads, miss, false, false)?
        } else {
            self.fetch_checked(py, &k, loads, miss, true, false, Some(seen))?
        };
        let k = v.is(miss).then_some(k);
        Ok((v, k))
    }
}
