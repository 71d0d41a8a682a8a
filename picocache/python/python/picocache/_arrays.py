"""Keys of arrays by content: numpy arrays, pandas objects, memoryviews and
``array.array`` (issue 18).

An array argument is keyed by what ``==`` compares, never by pickling it:
its element type in native byte order, its shape, and its elements in C
order. So a view and a copy of the same data are one key, as are a Fortran-
ordered and a C-ordered array of the same values, and a big-endian array and
a little-endian one of the same values; arrays that differ in dtype or shape
are not. Data over ``INLINE_BYTES`` is replaced by its BLAKE3 digest
(``_native.blake3_buffer``: read in place through the buffer protocol, the
GIL released, a large one on two threads; in the stable-ABI build, which has
no buffer protocol, ``_native.Blake3`` fed blocks of ``BLOCK`` bytes that
stay in the CPU cache), so a 100 MB argument costs less than a numpy copy of
it, and a 40-byte key part; a collision would need a BLAKE3 collision. Both
ways give the same digest. (SHA-256 took two to three times as long as the
copy: BENCHMARKS.md, "Batch jobs of arrays".)

Only exact ``numpy.ndarray`` is keyed this way: subclasses (masked arrays,
``numpy.matrix``) carry more than their data and go the generic route.
Arrays of Python objects are keyed by their elements. pandas ``Series``,
``DataFrame`` and ``Index`` are keyed by their index, columns, dtypes and
values (so the same rows in another order are another key). numpy and
pandas are never imported here: only objects of modules already loaded are
recognised.
"""

from __future__ import annotations

import sys
TYPE_CHECKING = False  # typing is imported by type checkers only (import time)
if TYPE_CHECKING:
    from typing import Any, Optional

#: Data up to this size is part of the key itself; beyond, its digest.
INLINE_BYTES = 1024
#: Bytes hashed per step where the buffer cannot be read in place (copied
#: out as one ``bytes``: the stable-ABI build has no buffer protocol).
BLOCK = 256 * 1024


def _data(raw: Any, nbytes: int) -> bytes:
    """``raw`` (a flat C-contiguous view of unsigned bytes, or bytes) itself
    if short, else its BLAKE3 digest."""
    if nbytes <= INLINE_BYTES:
        return bytes(raw)
    from . import _native

    in_place = getattr(_native, "blake3_buffer", None)
    if in_place is not None:
        try:
            return in_place(raw)  # type: ignore[no-any-return]
        except (BufferError, TypeError, ValueError):
            pass  # not a C-contiguous buffer of bytes: block by block
    view = memoryview(raw)
    h = _native.Blake3()
    update = h.update
    for at in range(0, nbytes, BLOCK):
        update(view[at:at + BLOCK].tobytes())
    return h.digest()


def _packed(np: Any, dt: Any) -> Any:
    """``dt`` with its fields (nested ones too) in order and no padding."""
    if dt.fields is None:
        if dt.subdtype is not None:
            base, shape = dt.subdtype
            inner = _packed(np, base)
            return dt if inner == base else np.dtype((inner, shape))
        return dt
    return np.dtype([(name, _packed(np, dt.fields[name][0])) for name in dt.names])


def ndarray_key(np: Any, a: Any) -> tuple:
    """The key of an exact ``numpy.ndarray``."""
    if a.dtype.hasobject:
        return ("__ndarray_objects__", repr(a.dtype), a.shape, a.tolist())
    dt = a.dtype
    if dt.byteorder not in ("=", "|") and not dt.fields:
        a = a.astype(dt.newbyteorder("="))
        dt = a.dtype
    elif dt.fields and dt.newbyteorder("=") != dt:
        # A structured dtype with fields in the other byte order (its own
        # byte order is "|"): its fields in native order, same layout.
        a = a.astype(dt.newbyteorder("="))
        dt = a.dtype
    if dt.fields:
        # Fields packed, without the padding bytes between them (an aligned
        # dtype's): == never reads those, and nothing sets them (np.empty).
        packed = _packed(np, dt)
        if packed != dt:
            a = a.astype(packed)
            dt = a.dtype
    # A structured dtype by its full description (names, formats, offsets,
    # itemsize); others by their type string (kind, size, byte order, unit),
    # or repr where that says more (string and user dtypes).
    kind = repr(dt) if dt.fields or dt.kind not in "biufcmMSUV" else dt.str
    shape = tuple(a.shape)  # before ascontiguousarray, which makes a 0-d array 1-d
    a = np.ascontiguousarray(a)
    flat = a.reshape(-1).view(np.uint8) if a.size else b""
    if a.size and dt.type in (np.longdouble, np.clongdouble):
        # x87 extended precision keeps 10 bytes in 12 or 16: the rest is
        # padding that arithmetic leaves as it finds it.
        part = dt.itemsize if dt.kind == "f" else dt.itemsize // 2
        used = 10 if np.finfo(np.longdouble).nmant == 63 else part
        if used < part:
            flat = np.ascontiguousarray(flat.reshape(-1, part)[:, :used]).reshape(-1)
    return ("__ndarray__", kind, shape, _data(flat, flat.nbytes if a.size else 0))


def buffer_key(obj: Any) -> tuple:
    """The key of a memoryview (its format, shape and elements in C order)."""
    if obj.c_contiguous:
        flat = obj.cast("B") if obj.nbytes else b""
    else:
        flat = obj.tobytes()  # its elements in C order, whatever the format
    return ("__memoryview__", obj.format, tuple(obj.shape or ()), _data(flat, obj.nbytes))


def array_key(obj: Any) -> tuple:
    """The key of an ``array.array`` (its type code and elements)."""
    m = memoryview(obj)
    flat = m.cast("B") if m.nbytes else b""
    return ("__array__", obj.typecode, len(obj), _data(flat, m.nbytes))


def _values_key(values: Any) -> Any:
    np = sys.modules.get("numpy")
    arr = values.to_numpy() if hasattr(values, "to_numpy") else values
    if np is not None and type(arr) is np.ndarray:
        return ndarray_key(np, arr)
    return list(arr)


def pandas_key(pd: Any, obj: Any) -> Optional[tuple]:
    """The key of a pandas Series, DataFrame or Index, or None for other
    pandas objects. (Names and labels that are not arrays are left to the
    key encoder.)"""
    # repr of a dtype: a categorical's categories and order, a datetime's
    # unit and zone; an index's names (every level) and frequency.
    if isinstance(obj, pd.Index):
        return ("__pd_index__", type(obj).__name__, repr(obj.dtype), tuple(obj.names),
                getattr(obj, "freqstr", None), _values_key(obj))
    if isinstance(obj, pd.Series):
        return _with_attrs(obj, ("__pd_series__", repr(obj.dtype), obj.name, pandas_key(pd, obj.index),
                                 _values_key(obj.array)))
    if isinstance(obj, pd.DataFrame):
        cols = [(repr(obj.dtypes.iloc[i]), _values_key(obj.iloc[:, i].array)) for i in range(obj.shape[1])]
        return _with_attrs(obj, ("__pd_frame__", pandas_key(pd, obj.columns), pandas_key(pd, obj.index), cols))
    return None


def _with_attrs(obj: Any, key: tuple) -> tuple:
    """``key`` with the object's ``.attrs`` (pandas' metadata: a unit, a
    source), encoded as any dict, when it has any: two Series that differ
    only there are two keys. (Without attrs the key is as it was.)"""
    attrs = getattr(obj, "attrs", None)
    return key + (("__attrs__", dict(attrs)),) if attrs else key


def content_key(obj: Any) -> Optional[tuple]:
    """The content key of ``obj`` if it is an array this module knows, else
    None."""
    t = type(obj)
    if t is memoryview:
        return buffer_key(obj)
    module = t.__module__
    if module == "array" and t.__name__ == "array":
        return array_key(obj)
    if module == "numpy":
        np = sys.modules.get("numpy")
        if np is not None and t is np.ndarray:
            return ndarray_key(np, obj)
        return None
    if module.startswith("pandas"):
        pd = sys.modules.get("pandas")
        if pd is not None:
            return pandas_key(pd, obj)
    return None
