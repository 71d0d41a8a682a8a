"""Value serializers: the default (pickle, large buffers out of band: see
_values) and a user's ``value_serializer`` adapted to bytes."""

from __future__ import annotations

try:  # the C pickler that `pickle` itself re-exports, without `pickle`'s own imports (re, enum)
    from _pickle import dumps as _pickle_dumps, loads as _pickle_loads
except ImportError:  # pragma: no cover - Python without the C accelerator
    from pickle import dumps as _pickle_dumps, loads as _pickle_loads

from . import _values

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


class _PickleSerializer:
    """The default value serializer: pickle with the default protocol."""

    dumps = staticmethod(_pickle_dumps)  # protocol None: pickle.DEFAULT_PROTOCOL
    loads = staticmethod(_pickle_loads)


def serializer_pair(vs: Any) -> tuple:
    """The user's ``(dumps, loads)`` of a custom ``value_serializer``."""
    if isinstance(vs, tuple) and len(vs) == 2:
        return vs
    if hasattr(vs, "dumps") and hasattr(vs, "loads"):
        return vs.dumps, vs.loads
    raise TypeError(
        "value_serializer must have dumps() and loads() (like the pickle module) "
        "or be a (dumps, loads) pair"
    )


def _value_serializer(vs: Any) -> tuple:
    if vs is None:
        # Pickle, large buffers (arrays) out of band: see picocache._values.
        return _values.dumps, _values.loads
    dumps, loads = serializer_pair(vs)
    return _bytes_dumps(dumps), _bytes_loads(loads)


def _bytes_dumps(dumps: Callable[[Any], Any]) -> Callable[[Any], bytes]:
    """A serializer may produce str (the json module does): stored as UTF-8."""

    def to_bytes(value: Any) -> bytes:
        out = dumps(value)
        if isinstance(out, str):
            return out.encode("utf-8", "surrogatepass")
        if isinstance(out, (bytearray, memoryview)):
            return bytes(out)
        if not isinstance(out, bytes):
            raise TypeError(f"value_serializer.dumps returned {type(out).__qualname__}, not bytes or str")
        return out

    return to_bytes


def _bytes_loads(loads: Callable[[Any], Any]) -> Callable[[bytes], Any]:
    """Stored bytes go to loads as they are; a loads that takes only str
    (tomllib.loads, say) gets them decoded from UTF-8."""

    def from_bytes(data: bytes) -> Any:
        try:
            return loads(data)
        except TypeError:
            return loads(data.decode("utf-8", "surrogatepass"))

    return from_bytes
