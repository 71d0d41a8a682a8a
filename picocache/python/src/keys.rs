//! The canonical key of a call: Python arguments encoded to bytes, equal
//! for equal arguments in every process (see [`Encoder`]).

use picocache::core::codec::KeyCodec;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::*;

/// The format version byte every encoded key starts with.
pub(crate) const KEY_VERSION: u8 = 1;
/// Deepest nesting the key encoder follows.
const MAX_DEPTH: usize = 64;
/// The canonical key encoder.
///
/// Equal arguments (by Python `==`, as `functools.lru_cache` sees them) give
/// equal bytes in every process and under every `PYTHONHASHSEED`: ints,
/// bools and integral floats share one encoding (unless `typed`, which tags
/// top-level arguments with their type, as `lru_cache(typed=True)` does), sets
/// and dicts are sorted by their encoded elements, and keyword arguments by
/// name. Unknown objects go through `fallback`.
pub(crate) struct Encoder<'a, 'py> {
    pub(crate) typed: bool,
    pub(crate) fallback: Option<&'a Bound<'py, PyAny>>,
}

/// A call's argument objects: what the [`Encoder`] encodes as the
/// [`KeyCodec`] of the Python package (`picocache::core::codec`).
pub(crate) struct CallArgs<'a, 'py> {
    pub(crate) args: &'a Bound<'py, PyTuple>,
    pub(crate) kwargs: Option<&'a Bound<'py, PyDict>>,
}

impl KeyCodec<CallArgs<'_, '_>> for Encoder<'_, '_> {
    type Error = PyErr;

    fn encode_key(&self, call: &CallArgs<'_, '_>) -> PyResult<Vec<u8>> {
        let mut out = Vec::with_capacity(32);
        self.call(call.args, call.kwargs, &mut out)?;
        Ok(out)
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

impl Encoder<'_, '_> {
    pub(crate) fn call(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        out.push(KEY_VERSION);
        out.push(b'A');
        put_len(out, args.len());
        for a in args.iter() {
            self.value(&a, out, 0, self.typed)?;
        }
        if let Some(kw) = kwargs {
            if !kw.is_empty() {
                let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(kw.len());
                for (k, v) in kw.iter() {
                    // UTF-8 (byte order is code point order); lone
                    // surrogates kept, as in str values.
                    let k = k.downcast::<PyString>()?;
                    let name = match k.to_cow() {
                        Ok(c) => c.as_bytes().to_vec(),
                        Err(_) => k
                            .call_method1("encode", ("utf-8", "surrogatepass"))?
                            .downcast::<PyBytes>()?
                            .as_bytes()
                            .to_vec(),
                    };
                    let mut buf = Vec::new();
                    self.value(&v, &mut buf, 0, self.typed)?;
                    items.push((name, buf));
                }
                items.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'K');
                put_len(out, items.len());
                for (k, v) in items {
                    put_len(out, k.len());
                    out.extend_from_slice(&k);
                    out.extend_from_slice(&v);
                }
            }
        }
        Ok(())
    }

    fn int(&self, v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
        if let Ok(i) = v.extract::<i64>() {
            out.push(b'i');
            out.extend_from_slice(&i.to_le_bytes());
        } else {
            // Big ints: int(v) (a subclass may override its methods) as
            // little-endian two's complement in the fewest bytes that hold
            // its sign (bit_length / 8 + 1). Not decimal digits: converting
            // an int of over 4300 digits to str raises ValueError.
            let py = v.py();
            let i = py.get_type::<PyInt>().call1((v,))?;
            let bits: usize = i.call_method0("bit_length")?.extract()?;
            let kw = PyDict::new(py);
            kw.set_item("signed", true)?;
            let b = i.call_method("to_bytes", (bits / 8 + 1, "little"), Some(&kw))?;
            let b = b.downcast::<PyBytes>()?.as_bytes();
            out.push(b'J');
            put_len(out, b.len());
            out.extend_from_slice(b);
        }
        Ok(())
    }

    fn type_tag(&self, v: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
        let t = v.get_type();
        let module: String = t.getattr("__module__")?.extract()?;
        if module != "builtins" {
            if let Some(f) = self.fallback {
                // A class of the user's: its name may not tell it apart (two
                // classes made by one factory); the fallback keys it by its
                // definition where its name does not import it.
                let r = f.call1((t,))?;
                out.push(b'U');
                return self.value(&r, out, depth + 1, false);
            }
        }
        let qual: String = t.getattr("__qualname__")?.extract()?;
        out.push(b'T');
        put_len(out, module.len() + 1 + qual.len());
        out.extend_from_slice(module.as_bytes());
        out.push(b'.');
        out.extend_from_slice(qual.as_bytes());
        Ok(())
    }

    fn sorted(
        &self,
        items: impl Iterator<Item = PyResult<Vec<u8>>>,
        tag: u8,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let mut v = items.collect::<PyResult<Vec<_>>>()?;
        v.sort();
        out.push(tag);
        put_len(out, v.len());
        for e in v {
            out.extend_from_slice(&e);
        }
        Ok(())
    }

    fn value(
        &self,
        v: &Bound<'_, PyAny>,
        out: &mut Vec<u8>,
        depth: usize,
        typed: bool,
    ) -> PyResult<()> {
        if depth > MAX_DEPTH {
            return Err(PyTypeError::new_err(
                "argument nested too deeply (or recursive) to be a cache key",
            ));
        }
        let d = depth + 1;
        if v.is_none() {
            out.push(b'N');
            return Ok(());
        }
        if typed && !(v.is_exact_instance_of::<PyInt>() || v.is_exact_instance_of::<PyString>()) {
            self.type_tag(v, out, depth)?;
        }
        if self.fallback.is_some() && self.subclass_compares_otherwise(v)? {
            return self.fallback_value(v, out, d);
        }
        if let Ok(b) = v.downcast_exact::<PyBool>() {
            out.push(b'i');
            out.extend_from_slice(&(b.is_true() as i64).to_le_bytes());
            return Ok(());
        }
        if v.is_instance_of::<PyInt>() {
            return self.int(v, out);
        }
        if let Ok(s) = v.downcast::<PyString>() {
            match s.to_cow() {
                Ok(s) => {
                    out.push(b's');
                    put_len(out, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
                Err(_) => {
                    // Lone surrogates.
                    let b = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
                    let b = b.downcast::<PyBytes>()?.as_bytes();
                    out.push(b'S');
                    put_len(out, b.len());
                    out.extend_from_slice(b);
                }
            }
            return Ok(());
        }
        if let Ok(f) = v.downcast::<PyFloat>() {
            let x = f.value();
            if x.is_finite() && x.fract() == 0.0 {
                // 1.0 == 1: one key (typed keys carry the type tag already).
                if x.abs() < 9.0e18 {
                    out.push(b'i');
                    out.extend_from_slice(&(x as i64).to_le_bytes());
                } else {
                    let i = v.py().get_type::<PyInt>().call1((x,))?;
                    self.int(&i, out)?;
                }
            } else {
                // By its 64 bits: a NaN keeps its sign and payload (NaN
                // equals nothing, so no two NaNs are "equal arguments" to
                // merge; `-nan` once shared `nan`'s key, a wrong value).
                out.push(b'f');
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
            return Ok(());
        }
        if let Ok(b) = v.downcast::<PyBytes>() {
            let b = b.as_bytes();
            out.push(b'y');
            put_len(out, b.len());
            out.extend_from_slice(b);
            return Ok(());
        }
        if let Ok(b) = v.downcast::<PyByteArray>() {
            let b = b.to_vec();
            out.push(b'y');
            put_len(out, b.len());
            out.extend_from_slice(&b);
            return Ok(());
        }
        if let Ok(t) = v.downcast::<PyTuple>() {
            out.push(b'(');
            put_len(out, t.len());
            for e in t.iter() {
                self.value(&e, out, d, false)?;
            }
            return Ok(());
        }
        if let Ok(l) = v.downcast::<PyList>() {
            out.push(b'[');
            put_len(out, l.len());
            for e in l.iter() {
                self.value(&e, out, d, false)?;
            }
            return Ok(());
        }
        if let Ok(m) = v.downcast::<PyDict>() {
            let mut items = Vec::with_capacity(m.len());
            for (k, val) in m.iter() {
                let mut kb = Vec::new();
                self.value(&k, &mut kb, d, false)?;
                let mut vb = Vec::new();
                self.value(&val, &mut vb, d, false)?;
                items.push((kb, vb));
            }
            items.sort();
            out.push(b'{');
            put_len(out, items.len());
            for (k, val) in items {
                out.extend_from_slice(&k);
                out.extend_from_slice(&val);
            }
            return Ok(());
        }
        if let Ok(s) = v.downcast::<PySet>() {
            return self.sorted(
                s.iter().map(|e| {
                    let mut b = Vec::new();
                    self.value(&e, &mut b, d, false).map(|_| b)
                }),
                b'<',
                out,
            );
        }
        if let Ok(s) = v.downcast::<PyFrozenSet>() {
            return self.sorted(
                s.iter().map(|e| {
                    let mut b = Vec::new();
                    self.value(&e, &mut b, d, false).map(|_| b)
                }),
                b'<',
                out,
            );
        }
        self.fallback_value(v, out, d)
    }

    /// `v` replaced by the fallback's canonical stand-in, encoded.
    fn fallback_value(&self, v: &Bound<'_, PyAny>, out: &mut Vec<u8>, d: usize) -> PyResult<()> {
        match self.fallback {
            Some(f) => {
                let r = f.call1((v,))?;
                out.push(b'R');
                self.value(&r, out, d, false)
            }
            None => Err(PyTypeError::new_err(format!(
                "cannot encode an object of type {} as a cache key",
                v.get_type().name()?
            ))),
        }
    }

    /// True for an instance of a subclass of a built-in type that this
    /// encoder knows (int, str, float, bytes, bytearray, tuple, list, dict,
    /// set, frozenset) whose equality is not the built-in's (it defines its
    /// own `__eq__`, as `OrderedDict` does) or that defines
    /// `__picocache_key__`: encoding it as the built-in would give two
    /// objects that `lru_cache` keeps apart one key. (A subclass that keeps
    /// the built-in's equality, such as `IntEnum` or a `namedtuple`, compares
    /// equal to the built-in value, so it is keyed as one.)
    fn subclass_compares_otherwise(&self, v: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = v.py();
        let base = if v.is_exact_instance_of::<PyInt>()
            || v.is_exact_instance_of::<PyBool>()
            || v.is_exact_instance_of::<PyString>()
            || v.is_exact_instance_of::<PyFloat>()
            || v.is_exact_instance_of::<PyBytes>()
            || v.is_exact_instance_of::<PyByteArray>()
            || v.is_exact_instance_of::<PyTuple>()
            || v.is_exact_instance_of::<PyList>()
            || v.is_exact_instance_of::<PyDict>()
            || v.is_exact_instance_of::<PySet>()
            || v.is_exact_instance_of::<PyFrozenSet>()
        {
            return Ok(false);
        } else if v.is_instance_of::<PyInt>() {
            py.get_type::<PyInt>()
        } else if v.is_instance_of::<PyString>() {
            py.get_type::<PyString>()
        } else if v.is_instance_of::<PyFloat>() {
            py.get_type::<PyFloat>()
        } else if v.is_instance_of::<PyBytes>() {
            py.get_type::<PyBytes>()
        } else if v.is_instance_of::<PyByteArray>() {
            py.get_type::<PyByteArray>()
        } else if v.is_instance_of::<PyTuple>() {
            py.get_type::<PyTuple>()
        } else if v.is_instance_of::<PyList>() {
            py.get_type::<PyList>()
        } else if v.is_instance_of::<PyDict>() {
            py.get_type::<PyDict>()
        } else if v.is_instance_of::<PySet>() {
            py.get_type::<PySet>()
        } else if v.is_instance_of::<PyFrozenSet>() {
            py.get_type::<PyFrozenSet>()
        } else {
            return Ok(false);
        };
        let t = v.get_type();
        if t.hasattr("__picocache_key__")? {
            return Ok(true);
        }
        Ok(!t.getattr("__eq__")?.is(&base.getattr("__eq__")?))
    }
}

/// Encodes one object canonically (for tests and the Python fallback path).
#[pyfunction]
#[pyo3(signature = (obj, typed=false, fallback=None))]
pub(crate) fn encode<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    typed: bool,
    fallback: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let enc = Encoder { typed, fallback };
    let mut out = vec![KEY_VERSION];
    enc.value(obj, &mut out, 0, typed)?;
    Ok(PyBytes::new(py, &out))
}

/// Encodes a call's arguments canonically (the key `Namespace.key` makes).
#[pyfunction]
#[pyo3(signature = (args, kwargs=None, typed=false, fallback=None))]
pub(crate) fn encode_call<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
    typed: bool,
    fallback: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let enc = Encoder { typed, fallback };
    let out = enc.encode_key(&CallArgs { args, kwargs })?;
    Ok(PyBytes::new(py, &out))
}
