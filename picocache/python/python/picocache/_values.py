"""The default value serializer: pickle, with large buffers (numpy arrays,
pandas blocks, ``bytearray``, ``pickle.PickleBuffer``) kept out of the
pickle stream (issue 18).

Values are pickled with protocol 5 and a ``buffer_callback``: a buffer of
``OOB_MIN_BYTES`` or more is kept out of band, so the pickler never copies
its data. A value without such a buffer is stored as the plain pickle
stream (as before, the protocol aside); one with them as a framed value
(FORMAT.md, "Framed values")::

    magic (8) | count n (u32) | pickle length (u64) | n buffer lengths (u64 each)
    | pickle stream | zero padding to 64 | buffer 0 | padding to 64 | buffer 1 ...

A pickle written by picocache always starts with byte 0x80 (PROTO), the
magic with 0x00, so ``loads`` tells them apart by the first byte. These are
the bytes inside the seal: the native backends check the seal over all of
them before ``loads`` sees any (``picocache/src/seal.rs``), as for any value.

``loads`` gives the buffers to ``pickle.loads`` as slices of one writable
``bytearray`` copy of the stored value (arrays come back writable, as with
plain pickle); ``loads_readonly`` (``mmap_mode="r"``) gives read-only
slices of the stored bytes themselves: no copy, read-only arrays. The local
engine hands a large framed value over as a private ``bytearray`` copied
once from its file (``picocache/python/src/fetch.rs``), which ``loads``
then uses as is.
"""

from __future__ import annotations

# The C modules only (issue 16: `import picocache` stays light).
from _functools import partial as _partial
from _struct import Struct, pack, unpack_from

try:
    from _pickle import PickleBuffer, dumps as _dumps, loads as _loads
except ImportError:  # pragma: no cover - Python without the C accelerator
    from pickle import PickleBuffer, dumps as _dumps, loads as _loads

from . import _native

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List

#: The first 8 bytes of a framed value.
MAGIC = b"\x00PCOOB1\n"
#: Buffers smaller than this stay in the pickle stream.
OOB_MIN_BYTES = 64 * 1024
#: Alignment of each buffer within the framed value.
ALIGN = 64
_HEAD = Struct("<8sIQ")
_MAX_BUFFERS = 1 << 20


def _pad(n: int) -> int:
    return -n % ALIGN


#: ``dumps`` of a value that holds no buffer (an immutable one: exact
#: ints, strs, bytes, floats, tuples of them...): the same bytes, with no
#: Python frame (the native miss path calls it).
plain_dumps = _partial(_dumps, protocol=5)


def dumps(value: Any) -> bytes:
    """``value`` pickled; large buffers out of band (see the module)."""
    bufs: "List[PickleBuffer]" = []
    readonly: "List[bool]" = []

    def keep_out(pb: PickleBuffer) -> bool:
        m = memoryview(pb)
        if m.readonly:
            readonly.append(True)
        if not m.contiguous:  # in band
            return True
        if m.nbytes < OOB_MIN_BYTES:
            return True
        bufs.append(pb)
        return False

    stream = _dumps(value, protocol=5, buffer_callback=keep_out)
    if readonly:
        # A read-only array would come back read-only from every loads
        # (protocol 5 records it so); pickled again so that it comes back
        # as the stored arrays do: writable from loads, read-only from
        # loads_readonly (see _array_from_buffer).
        del bufs[:]
        stream = _dumps_read_only_arrays(value, keep_out)
    if not bufs:
        return stream  # a plain pickle (protocol 5: every Python >= 3.8 reads it)
    raws = [pb.raw() for pb in bufs]
    parts: "List[Any]" = [_HEAD.pack(MAGIC, len(raws), len(stream)),
                        pack(f"<{len(raws)}Q", *(r.nbytes for r in raws)), stream]
    at = sum(len(p) for p in parts)
    for r in raws:
        parts.append(b"\x00" * _pad(at))
        at += _pad(at)
        parts.append(r)
        at += r.nbytes
    return b"".join(parts)


def _dumps_read_only_arrays(value: Any, keep_out: Any) -> bytes:
    """``value`` pickled with its read-only numpy arrays rebuilt by
    ``_array_from_buffer`` (the rare case: the pickler's own dispatch table
    costs a lookup per object)."""
    import copyreg
    import sys
    from io import BytesIO

    try:
        from _pickle import Pickler
    except ImportError:  # pragma: no cover
        from pickle import Pickler

    np = sys.modules.get("numpy")
    out = BytesIO()
    p = Pickler(out, protocol=5, buffer_callback=keep_out)
    table = dict(copyreg.dispatch_table)
    if np is not None:
        table[np.ndarray] = _reduce_array
    p.dispatch_table = table
    p.dump(value)
    return out.getvalue()


def _reduce_array(a: Any) -> Any:
    """An exact numpy array's reduction: read-only contiguous ones by
    ``_array_from_buffer``, others as numpy reduces them."""
    flags = a.flags
    if flags.writeable or a.dtype.hasobject or not (flags.c_contiguous or flags.f_contiguous):
        return a.__reduce_ex__(5)
    order = "F" if flags.f_contiguous and not flags.c_contiguous else "C"
    return _array_from_buffer, (PickleBuffer(a), a.dtype, a.shape, order)


def _array_from_buffer(buf: Any, dtype: Any, shape: tuple, order: str) -> Any:
    """A stored read-only array, rebuilt as the stored arrays are: over an
    out-of-band buffer given by ``loads`` (a private writable copy of the
    stored bytes, which pickle handed over read-only) it is writable, over
    one given by ``loads_readonly`` read-only, without a copy either way;
    from the pickle stream itself (a small array) a writable copy."""
    import numpy as np

    if isinstance(buf, memoryview) and buf.readonly and buf.obj is not None \
            and not memoryview(buf.obj).readonly:
        owner = buf.obj
        start = np.frombuffer(owner, dtype=np.uint8)
        mine = np.frombuffer(buf, dtype=np.uint8)
        offset = (mine.ctypes.data - start.ctypes.data) if mine.size else 0
        count = buf.nbytes // dtype.itemsize if dtype.itemsize else 0
        flat = np.frombuffer(owner, dtype=dtype, count=count, offset=offset)
    elif isinstance(buf, memoryview):
        flat = np.frombuffer(buf, dtype=dtype)  # loads_readonly: read-only, no copy
    else:
        flat = np.frombuffer(bytearray(buf), dtype=dtype)
    return flat.reshape(shape, order=order)


def _split(view: memoryview) -> tuple:
    """(pickle stream, buffer slices) of a framed value; ValueError if its
    layout does not add up."""
    if view.nbytes < _HEAD.size:
        raise ValueError("a framed value shorter than its header")
    _, n, plen = _HEAD.unpack_from(view, 0)
    if n == 0 or n > _MAX_BUFFERS:
        raise ValueError("a framed value with a bad buffer count")
    at = _HEAD.size + 8 * n
    if at > view.nbytes:
        raise ValueError("a framed value shorter than its buffer table")
    lens = unpack_from(f"<{n}Q", view, _HEAD.size)
    if plen > view.nbytes - at:
        raise ValueError("a framed value shorter than its pickle stream")
    stream = view[at:at + plen]
    at += plen
    bufs = []
    for ln in lens:
        at += _pad(at)
        if ln > view.nbytes - at:
            raise ValueError("a framed value shorter than its buffers")
        bufs.append(view[at:at + ln])
        at += ln
    if at != view.nbytes:
        raise ValueError("a framed value with trailing bytes")
    return stream, bufs


def _framed_loads(data: Any) -> Any:
    """The value ``dumps`` stored; arrays writable (one copy of the data:
    ``data`` itself when the store hands over a private ``bytearray``)."""
    if data[:1] != MAGIC[:1] or data[:8] != MAGIC:
        return _loads(data)
    stream, bufs = _split(memoryview(data if type(data) is bytearray else bytearray(data)))
    return _loads(stream, buffers=bufs)


def _framed_loads_readonly(data: Any) -> Any:
    """As ``loads``, but the buffers are read-only views of ``data`` itself
    (no copy): numpy arrays come back read-only (``mmap_mode="r"``)."""
    if data[:1] != MAGIC[:1] or data[:8] != MAGIC:
        return _loads(data)
    stream, bufs = _split(memoryview(data).toreadonly())
    return _loads(stream, buffers=bufs)


#: ``loads(data)``: the value ``dumps`` stored, arrays writable;
#: ``loads_readonly(data)``: arrays read-only views of ``data`` (``mmap_mode="r"``).
#: Native dispatchers: a plain pickle (every value without large buffers: a
#: pickle never starts with a zero byte, the magic does) goes straight to the
#: C unpickler, with no Python frame; a framed value to the functions above.
loads: Callable[[bytes], Any] = _native.ByFirstByte(_framed_loads, _loads)
loads_readonly: Callable[[bytes], Any] = _native.ByFirstByte(_framed_loads_readonly, _loads)


def check_mmap_mode(mode: Any, value_serializer: Any) -> Any:
    """``mmap_mode`` as given (None or ``"r"``); raises for anything else,
    and for ``"r"`` with a custom value serializer."""
    if mode is None:
        return None
    if mode != "r" or not isinstance(mode, str):
        raise ValueError(f"picocache: mmap_mode must be None or 'r', not {mode!r} "
                         "(results are never written through)")
    if value_serializer is not None:
        raise TypeError("picocache: mmap_mode='r' needs the default value serializer")
    return mode
