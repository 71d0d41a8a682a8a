//! Reading a namespace's entries: the stored bytes of an encoded key, and
//! their decoded value, served on the local engine from the in-process tier
//! after the engine confirms the record (see `tier.rs`).

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyTuple};

use crate::tier::immutable;
use crate::{
    fork_gen, front, guarded, is_forked, panic_err, to_py, wrapper, CacheInvalidArgument,
    CacheRejected, Namespace, MAX_KEY,
};

impl Namespace {
    /// The decoded value of a call with `args` and `kwargs` (see
    /// `lookup_decoded`), and on a miss the encoded key (one too long to
    /// look up verbatim, over `MAX_KEY`, is a miss: the Python side digests
    /// those).
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    pub(crate) fn lookup_call(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(PyObject, Option<Vec<u8>>)> {
        let (loads, miss, keep) = self.decoder(py)?;
        let k = self.encode_call(py, args, kwargs)?;
        if k.len() > MAX_KEY {
            return Ok((miss.clone().unbind(), Some(k)));
        }
        let v = self.fetch(py, &k, loads, miss, keep, false)?;
        let k = v.is(miss).then_some(k);
        Ok((v, k))
    }

    /// `loads`, the miss sentinel and `keep`, as `set_decoder` gave them.
    pub(crate) fn decoder<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(&Bound<'py, PyAny>, &Bound<'py, PyAny>, bool)> {
        match self.decoder.get() {
            Some((loads, miss, keep)) => Ok((loads.bind(py), miss.bind(py), *keep)),
            None => Err(CacheInvalidArgument::new_err(
                "lookup_decoded before set_decoder",
            )),
        }
    }

    /// The stored bytes under the encoded key `k` (see `lookup`).
    pub(crate) fn lookup_key(&self, py: Python<'_>, k: &[u8]) -> PyResult<Option<Vec<u8>>> {
        if self.local {
            // The hit path, without a GIL round trip. (No Python code runs
            // inside the engine call.)
            let fast = guarded(|| self.current()?.get(k));
            match fast {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !is_forked(&e) => return Err(to_py(e)),
                Ok(Err(_)) => {} // reopened below
                Err(p) => return Err(panic_err(p)),
            }
        }
        self.run(py, |ns| ns.get(k))
    }

    /// The decoded value under the encoded key `k`, or `miss` (see
    /// `lookup_decoded`).
    ///
    /// `recheck`: the look again after taking the lease; an entry that fails
    /// its seal check is then a miss (the first lookup reported it).
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    pub(crate) fn fetch(
        &self,
        py: Python<'_>,
        k: &[u8],
        loads: &Bound<'_, PyAny>,
        miss: &Bound<'_, PyAny>,
        keep: bool,
        recheck: bool,
    ) -> PyResult<PyObject> {
        match self.fetch_checked(py, k, loads, miss, keep, recheck, None) {
            Err(e) if recheck && e.is_instance_of::<CacheRejected>(py) => Ok(miss.clone().unbind()),
            r => r,
        }
    }

    /// `recheck`: on the local engine a miss is not counted again (the
    /// lookup before the lease counted it; one call, one miss) and a hit is.
    /// `seen`: where a hit of the local engine's fast path says which
    /// record its value came from (for the wrapper's front table).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)] // (see miss.rs: the stack of a recursion)
    pub(crate) fn fetch_checked(
        &self,
        py: Python<'_>,
        k: &[u8],
        loads: &Bound<'_, PyAny>,
        miss: &Bound<'_, PyAny>,
        keep: bool,
        recheck: bool,
        seen: Option<&mut front::Seen>,
    ) -> PyResult<PyObject> {
        let by_first = loads.downcast::<wrapper::ByFirstByte>().ok();
        let framed_once = by_first.is_some();
        let decode = |raw: Raw<'_>| -> PyResult<Option<PyObject>> {
            let got = match (&by_first, raw) {
                (Some(d), Raw::Framed(b)) => d.get().decode_framed(py, &b),
                (Some(d), Raw::Bytes(b)) => d.get().decode(py, &b),
                (None, Raw::Bytes(b)) => loads.call1((b,)).map(Bound::unbind),
                (None, Raw::Framed(b)) => loads.call1((b,)).map(Bound::unbind), // (never made)
            };
            match got {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.is_instance_of::<PyException>(py) => Ok(None),
                Err(e) => Err(e),
            }
        };
        if self.local && (keep || recheck) && k.len() <= MAX_KEY {
            let fast = guarded(|| {
                let ns = self.current()?;
                let Some(loc) = ns.locate() else {
                    return Ok(None);
                };
                let h = loc.key_hash(k);
                let cached = if !keep {
                    None
                } else {
                    let tier = self.tier.lock();
                    match tier.map.get(&h) {
                        Some(te) if tier.fork_gen == fork_gen() && te.key.as_slice() == k => {
                            Some((te.at, te.value.clone_ref(py), te.bytes))
                        }
                        _ => None,
                    }
                };
                if let Some((at, v, n)) = cached {
                    if loc.confirm_located(&at)? {
                        return Ok(Some(Ok((v, at, n))));
                    }
                    self.tier.lock().remove(h);
                }
                // The sealing layer checks the stored bytes before Python
                // sees them.
                let mut got = None;
                let mut open = |v: &[u8], at| got = Some((Raw::new(py, v, framed_once), at));
                if recheck {
                    loc.read_located(k, false, &mut open)?;
                    if let Some((_, at)) = &got {
                        loc.confirm_located(at)?; // the hit, counted as a lookup would
                    }
                } else {
                    loc.read_located(k, true, &mut open)?;
                }
                Ok(Some(Err((h, got))))
            });
            match fast {
                Ok(Ok(Some(Ok((v, at, n))))) => {
                    if let Some(s) = seen {
                        *s = front::Seen::Kept { at, bytes: n };
                    }
                    return Ok(v);
                }
                Ok(Ok(Some(Err((_, None))))) => return Ok(miss.clone().unbind()),
                Ok(Ok(Some(Err((h, Some((raw, at))))))) => {
                    let n = raw.len();
                    let kept_raw = seen.as_ref().and_then(|_| raw.bytes());
                    let Some(v) = decode(raw)? else {
                        return Ok(miss.clone().unbind());
                    };
                    let still = keep && immutable(v.bind(py), 0);
                    if still {
                        self.tier.lock().insert(h, k, at, v.clone_ref(py), n);
                    }
                    if let (Some(s), Some(raw)) = (seen, kept_raw) {
                        *s = if still {
                            front::Seen::Kept { at, bytes: n }
                        } else {
                            front::Seen::Raw { at, raw }
                        };
                    }
                    return Ok(v);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) if !is_forked(&e) => return Err(to_py(e)),
                Ok(Err(_)) => {} // reopened below
                Err(p) => return Err(panic_err(p)),
            }
        }
        // A look again counts a hit, not a second miss (`recheck`).
        match self.run(py, |ns| if recheck { ns.recheck(k) } else { ns.get(k) })? {
            Some(raw) => {
                Ok(decode(Raw::new(py, &raw, framed_once))?
                    .unwrap_or_else(|| miss.clone().unbind()))
            }
            None => Ok(miss.clone().unbind()),
        }
    }
}

/// Stored bytes handed to the decoder. A framed value (FORMAT.md "Framed
/// values": its first byte is zero) of at least [`FRAMED_ONCE_MIN`] bytes,
/// for the package's own decoder, is copied once into a `bytearray` whose
/// memory its arrays then use (writable, or read-only views with
/// `mmap_mode="r"`), instead of into `bytes` that the decoder copies again.
enum Raw<'py> {
    Bytes(Bound<'py, PyBytes>),
    Framed(Bound<'py, PyByteArray>),
}

/// The smallest framed value copied once (below, the second copy is cheap
/// and `bytes` can be kept by the front table).
const FRAMED_ONCE_MIN: usize = 1 << 20;

impl<'py> Raw<'py> {
    fn new(py: Python<'py>, v: &[u8], framed_once: bool) -> Self {
        if framed_once && v.len() >= FRAMED_ONCE_MIN && v.first() == Some(&0) {
            Raw::Framed(PyByteArray::new(py, v))
        } else {
            Raw::Bytes(PyBytes::new(py, v))
        }
    }

    fn len(&self) -> usize {
        match self {
            Raw::Bytes(b) => b.as_bytes().len(),
            Raw::Framed(b) => b.len(),
        }
    }

    /// The `bytes`, for the front table (a framed value is not kept there).
    fn bytes(&self) -> Option<Py<PyBytes>> {
        match self {
            Raw::Bytes(b) => Some(b.clone().unbind()),
            Raw::Framed(_) => None,
        }
    }
}
