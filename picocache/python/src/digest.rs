//! `Blake3`: the digest that stands for a large array argument in a call's
//! key (issue 18; `python/picocache/_arrays.py`).
//!
//! BLAKE3 is a cryptographic hash (two different arrays sharing a key would
//! need a collision), and its SIMD code runs at several GB/s on one core,
//! about the bandwidth of a plain `numpy` copy; SHA-256 (hashlib, 1-2 GB/s
//! with SHA-NI) took two to three times as long as the copy. The extension
//! reads the array's bytes in place through the buffer protocol
//! ([`blake3_buffer`], `ffi/buffer.rs`) and hashes a large one on two
//! threads (the two halves of BLAKE3's tree, joined as the crate's `hazmat`
//! module documents: the digest is `blake3::hash` of the bytes, as
//! `tests/test_array_keys.py` checks against [`Blake3`]). The stable-ABI build (feature `abi3`) has no buffer protocol: the
//! Python side feeds it blocks of `bytes` small enough to stay in the CPU
//! cache (one cheap copy each) through [`Blake3`], one thread.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// An incremental BLAKE3 hash: `update(block)` any number of times, then
/// `digest()` (32 bytes).
#[pyclass(module = "picocache._native", frozen)]
pub(crate) struct Blake3 {
    hasher: Mutex<blake3::Hasher>,
}

#[pymethods]
impl Blake3 {
    #[new]
    fn new() -> Self {
        Blake3 {
            hasher: Mutex::new(blake3::Hasher::new()),
        }
    }

    /// Hashes `block` (the GIL is released meanwhile).
    fn update(&self, py: Python<'_>, block: &[u8]) {
        py.allow_threads(|| {
            self.hasher.lock().update(block);
        });
    }

    /// The 32-byte digest of everything hashed so far.
    fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.hasher.lock().finalize().as_bytes())
    }
}

/// Inputs at least this long are hashed on two threads.
#[cfg(not(feature = "abi3"))]
const PARALLEL_FROM: usize = 8 << 20;

/// BLAKE3 of `data` (the same digest as `blake3::hash`): a large input on
/// two threads, each hashing one subtree of the tree.
#[cfg(not(feature = "abi3"))]
pub(crate) fn hash(data: &[u8]) -> [u8; 32] {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_root, HasherExt, Mode};
    if data.len() < PARALLEL_FROM {
        return *blake3::hash(data).as_bytes();
    }
    // The root's two children: the left subtree holds the largest power of
    // two of chunks that leaves at least one byte to the right.
    let split = left_subtree_len(data.len() as u64) as usize;
    let (left, right) = data.split_at(split);
    let (l, r) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            blake3::Hasher::new()
                .set_input_offset(split as u64)
                .update(right)
                .finalize_non_root()
        });
        let l = blake3::Hasher::new().update(left).finalize_non_root();
        (l, r.join())
    });
    let r = match r {
        Ok(r) => r,
        Err(_) => return *blake3::hash(data).as_bytes(), // (a thread that panicked: once more here)
    };
    *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
}

/// The BLAKE3 digest (32 bytes) of `obj`'s bytes, read in place through the
/// buffer protocol (a C-contiguous buffer of unsigned bytes), the GIL
/// released; a large buffer on two threads. `BufferError` for an object
/// that exports no such buffer.
#[cfg(not(feature = "abi3"))]
#[pyfunction]
pub(crate) fn blake3_buffer<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let d = crate::ffi::buffer::with_bytes(obj, hash)?;
    Ok(PyBytes::new(obj.py(), &d))
}
