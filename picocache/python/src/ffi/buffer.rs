//! An object's bytes read in place through the buffer protocol: a numpy
//! array's data is hashed where it lies, without a copy (`digest.rs`).

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;

/// Calls `f` with the bytes of `obj` (a C-contiguous buffer of unsigned
/// bytes: `bytes`, a `uint8` view of an array, ...) in place, with the GIL
/// released. A `BufferError` if `obj` exports no such buffer.
pub(crate) fn with_bytes<R: Send>(
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> R + Send,
) -> PyResult<R> {
    let py = obj.py();
    let buf = PyBuffer::<u8>::get(obj)?;
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err(
            "picocache: not a C-contiguous buffer",
        ));
    }
    let (ptr, len) = (buf.buf_ptr() as usize, buf.len_bytes());
    let out = py.allow_threads(|| {
        let bytes: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: `buf` holds the exporter's buffer (a `Py_buffer` from
            // `PyObject_GetBuffer`) until it is dropped after this closure,
            // so the `len` bytes at `ptr` stay allocated and the exporter
            // may not resize or free them (numpy and bytearray refuse while
            // a buffer is exported); they are C-contiguous (checked) bytes
            // (`PyBuffer::<u8>` checked the item format and size). Nothing
            // here writes them. Another thread could write them through the
            // array meanwhile (as for any reader of the buffer protocol:
            // hashlib, numpy's own copy): that changes which bytes are
            // hashed, which only makes the digest of a racing call
            // meaningless; the caller's contract is not to mutate an
            // argument during the call.
            unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
        };
        f(bytes)
    });
    drop(buf);
    Ok(out)
}
