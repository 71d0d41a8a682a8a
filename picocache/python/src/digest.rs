//! `Blake3`: the digest that stands for a large array argument in a call's
//! key (issue 18; `python/picocache/_arrays.py`).
//!
//! BLAKE3 is a cryptographic hash (two different arrays sharing a key would
//! need a collision), and its SIMD code runs at several GB/s on one core,
//! about the bandwidth of a plain `numpy` copy; SHA-256 (hashlib, 1-2 GB/s
//! with SHA-NI) took two to three times as long as the copy. The extension
//! is built for the stable ABI of Python 3.8, which has no buffer protocol,
//! so the Python side feeds the array's bytes in blocks of `bytes` small
//! enough to stay in the CPU cache (one cheap copy each); each block is
//! hashed with the GIL released.

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
