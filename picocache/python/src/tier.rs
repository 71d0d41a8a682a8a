//! The in-process tier of the local engine: decoded immutable results kept
//! in the process, served while the engine confirms their records are live.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyComplex, PyFloat, PyFrozenSet, PyInt, PyString, PyTuple};

use crate::fork_gen;

/// Most entries a namespace's in-process tier holds before it starts over.
pub(crate) const TIER_MAX_ENTRIES: usize = 1 << 17;
/// Most key and value bytes (serialized) it holds before it starts over.
pub(crate) const TIER_MAX_BYTES: usize = 64 << 20;

/// Decoded results of one namespace kept in the process, by key hash.
///
/// Each entry holds the [`picocache::Located`] token of the record its
/// value was decoded from; it is served only while the engine confirms that
/// record is still the key's live entry (`confirm_located`, which also counts the
/// hit and refreshes recency in the shared index). So a value changed,
/// removed, evicted, expired or cleared by any process is never served from
/// here. Only immutable values (exact `None`, `bool`, `int`, `float`,
/// `complex`, `str`, `bytes`, and tuples and frozensets of them) are kept:
/// handing out the same object again is then what `functools.lru_cache` does
/// and cannot leak a caller's mutation into another call's result.
#[derive(Default)]
pub(crate) struct Tier {
    pub(crate) fork_gen: u64,
    pub(crate) bytes: usize,
    /// By the engine's key hash (xxh3 already: hashed as itself).
    pub(crate) map: std::collections::HashMap<u64, TierEntry, picocache_engine::IdHasher>,
}

/// A key kept by the tier: short keys (the common case) inline, so the
/// comparison reads no second allocation.
pub(crate) enum TierKey {
    Inline { len: u8, buf: [u8; 48] },
    Heap(Box<[u8]>),
}

impl TierKey {
    pub(crate) fn new(k: &[u8]) -> TierKey {
        if k.len() <= 48 {
            let mut buf = [0u8; 48];
            buf[..k.len()].copy_from_slice(k);
            TierKey::Inline {
                len: k.len() as u8,
                buf,
            }
        } else {
            TierKey::Heap(k.into())
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            TierKey::Inline { len, buf } => &buf[..*len as usize],
            TierKey::Heap(b) => b,
        }
    }
}

pub(crate) struct TierEntry {
    pub(crate) key: TierKey,
    pub(crate) at: picocache::Located,
    pub(crate) value: PyObject,
    pub(crate) bytes: usize,
}

impl Tier {
    pub(crate) fn insert(
        &mut self,
        h: u64,
        key: &[u8],
        at: picocache::Located,
        value: PyObject,
        raw_len: usize,
    ) {
        let bytes = key.len() + raw_len + 64;
        if self.fork_gen != fork_gen() {
            self.map.clear();
            self.bytes = 0;
            self.fork_gen = fork_gen();
        }
        if self.map.len() >= TIER_MAX_ENTRIES || self.bytes + bytes > TIER_MAX_BYTES {
            // Start over: cheap, and the hot keys come back at their next hit.
            self.map.clear();
            self.bytes = 0;
        }
        if bytes > TIER_MAX_BYTES / 16 {
            return;
        }
        self.bytes += bytes;
        if let Some(old) = self.map.insert(
            h,
            TierEntry {
                key: TierKey::new(key),
                at,
                value,
                bytes,
            },
        ) {
            self.bytes -= old.bytes;
        }
    }

    pub(crate) fn remove(&mut self, h: u64) {
        if let Some(old) = self.map.remove(&h) {
            self.bytes -= old.bytes;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

/// Whether handing out `v` again is indistinguishable from decoding it
/// again: exact builtin immutable types, and tuples and frozensets of them.
pub(crate) fn immutable(v: &Bound<'_, PyAny>, depth: usize) -> bool {
    if depth > 8 {
        return false;
    }
    if v.is_none()
        || v.is_exact_instance_of::<PyString>()
        || v.is_exact_instance_of::<PyBytes>()
        || v.is_exact_instance_of::<PyInt>()
        || v.is_exact_instance_of::<PyFloat>()
        || v.is_exact_instance_of::<PyBool>()
        || v.is_exact_instance_of::<PyComplex>()
    {
        return true;
    }
    if let Ok(t) = v.downcast_exact::<PyTuple>() {
        return t.len() <= 64 && t.iter().all(|e| immutable(&e, depth + 1));
    }
    if let Ok(f) = v.downcast_exact::<PyFrozenSet>() {
        return f.len() <= 64 && f.iter().all(|e| immutable(&e, depth + 1));
    }
    false
}
