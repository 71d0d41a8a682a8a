"""A pickle-free value serializer for plain data.

``value_serializer=picocache.plain`` stores results without pickle: None,
bool, int (any size), float, str, bytes, bytearray, and lists, tuples and
dicts of them (dict keys of those types too), each loaded as the type it was
(a bytearray as a bytearray: a cached call returns what the function did). Anything else raises ``TypeError`` in
:func:`dumps` (the cached function then returns its result unstored, with a
warning). :func:`loads` only ever builds those types: bytes that are not a
value it wrote raise ``ValueError`` (a miss), never run code, and nesting is
bounded (no ``RecursionError``).

Layout: ``PCP1`` then one item; an item is a tag byte and its payload::

    N            None
    T / F        True / False
    i LEN BYTES  int: little-endian two's complement, LEN a 4-byte count
    f 8 BYTES    float: IEEE 754 binary64, little-endian
    s LEN UTF-8  str (lone surrogates kept: "surrogatepass")
    b LEN BYTES  bytes
    B LEN BYTES  bytearray (since issue 24; a memoryview is refused)
    l COUNT ...  list of COUNT items
    t COUNT ...  tuple of COUNT items
    d COUNT ...  dict of COUNT key items, each followed by its value item
"""

from __future__ import annotations

import struct
TYPE_CHECKING = False  # typing is imported by type checkers only (import time)
if TYPE_CHECKING:
    from typing import Any, List

__all__ = ["dumps", "loads"]

_MAGIC = b"PCP1"
#: Deepest nesting written or read.
MAX_DEPTH = 100
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")


def dumps(value: Any) -> bytes:
    """``value`` as bytes; ``TypeError`` for a type this format does not hold."""
    out: List[bytes] = [_MAGIC]
    _put(value, out, 0)
    return b"".join(out)


def _put(v: Any, out: List[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"picocache.plain: nested deeper than {MAX_DEPTH}")
    t = type(v)
    if v is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if v else b"F")
    elif t is int:
        b = v.to_bytes(v.bit_length() // 8 + 1, "little", signed=True)
        out += (b"i", _U32.pack(len(b)), b)
    elif t is float:
        out += (b"f", _F64.pack(v))
    elif t is str:
        b = v.encode("utf-8", "surrogatepass")
        out += (b"s", _U32.pack(len(b)), b)
    elif t is bytes or t is bytearray:
        out += (b"b" if t is bytes else b"B", _U32.pack(len(v)), bytes(v))
    elif t in (list, tuple):
        out += (b"l" if t is list else b"t", _U32.pack(len(v)))
        for x in v:
            _put(x, out, depth + 1)
    elif t is dict:
        out += (b"d", _U32.pack(len(v)))
        for k, x in v.items():
            _put(k, out, depth + 1)
            _put(x, out, depth + 1)
    else:
        raise TypeError(
            f"picocache.plain stores None, bool, int, float, str, bytes, bytearray, list, tuple "
            f"and dict, "
            f"not {t.__qualname__}"
        )


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ValueError("picocache.plain: truncated value")
        b = self.data[self.pos:end]
        self.pos = end
        return b

    def count(self) -> int:
        n = _U32.unpack(self.take(4))[0]
        if n > len(self.data) - self.pos:  # every item takes at least a byte
            raise ValueError("picocache.plain: a count longer than the value")
        return n

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"picocache.plain: nested deeper than {MAX_DEPTH}")
        tag = self.take(1)
        if tag == b"N":
            return None
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"i":
            return int.from_bytes(self.take(self.count()), "little", signed=True)
        if tag == b"f":
            return _F64.unpack(self.take(8))[0]
        if tag == b"s":
            return self.take(self.count()).decode("utf-8", "surrogatepass")
        if tag == b"b":
            return self.take(self.count())
        if tag == b"B":
            return bytearray(self.take(self.count()))
        if tag in (b"l", b"t"):
            items = [self.item(depth + 1) for _ in range(self.count())]
            return items if tag == b"l" else tuple(items)
        if tag == b"d":
            d = {}
            for _ in range(self.count()):
                k = self.item(depth + 1)
                try:
                    d[k] = self.item(depth + 1)
                except TypeError:
                    raise ValueError("picocache.plain: an unhashable dict key") from None
            return d
        raise ValueError(f"picocache.plain: unknown tag {tag!r}")


def loads(data: bytes) -> Any:
    """The value :func:`dumps` wrote; ``ValueError`` for any other bytes."""
    data = bytes(data)
    if not data.startswith(_MAGIC):
        raise ValueError("picocache.plain: not a value written by picocache.plain")
    r = _Reader(data)
    r.pos = len(_MAGIC)
    v = r.item(0)
    if r.pos != len(data):
        raise ValueError("picocache.plain: bytes after the value")
    return v
