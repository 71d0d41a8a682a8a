"""Canonical key encoding: the Python side (objects the Rust encoder does not know).

The Rust encoder (``_native.encode_call``) handles None, bool, int, float,
str, bytes, bytearray, tuple, list, dict, set and frozenset. Any other object
is handed to :func:`fallback`, which returns a replacement built from those
types; the encoder then encodes the replacement. The replacement is:

- ``obj.__picocache_key__()`` if the object's class defines it (the way to key
  an object, such as ``self`` of a method, by what matters);
- for a class, function or other global: its module and qualified name;
- otherwise the object's pickle reduction (``__reduce_ex__(4)``): the
  constructor's name, its arguments, the object's state, list items and dict
  items, each encoded canonically (so a dataclass holding a set is keyed the
  same in every process, which plain pickling does not give).

An object that has none of these (a lock, a socket, a generator) raises
``TypeError``; the decorator names the argument.
"""

from __future__ import annotations

import copyreg
import enum
import types

_GLOBAL_TYPES = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodDescriptorType if hasattr(types, "MethodDescriptorType") else type,
)


def _global_name(obj: object) -> tuple:
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module is None or qual is None or "<lambda>" in qual:
        raise TypeError(
            f"cannot use {obj!r} as a cache key: it is not importable by name"
        )
    if module == "__mp_main__":
        module = "__main__"
    return ("__global__", module, qual)


def fallback(obj: object) -> object:
    """A canonical replacement for ``obj`` (see the module docstring)."""
    keyfn = getattr(type(obj), "__picocache_key__", None)
    if keyfn is not None:
        t = type(obj)
        return ("__key__", t.__module__, t.__qualname__, keyfn(obj))
    if isinstance(obj, _GLOBAL_TYPES):
        return _global_name(obj)
    if isinstance(obj, enum.Enum):
        return ("__enum__", _global_name(type(obj)), obj.name)
    if isinstance(obj, complex):
        return ("__complex__", obj.real, obj.imag)
    if isinstance(obj, types.MethodType):
        return ("__method__", fallback(obj.__self__), obj.__func__.__name__)
    reducer = copyreg.dispatch_table.get(type(obj))
    try:
        rv = reducer(obj) if reducer is not None else obj.__reduce_ex__(4)
    except Exception as e:  # noqa: BLE001 - any failure means "not encodable"
        raise TypeError(
            f"cannot encode an object of type {type(obj).__qualname__} as a cache key "
            f"(it cannot be pickled: {e}); define __picocache_key__ on its class, "
            "or pass ignore=/key= to the decorator"
        ) from None
    if isinstance(rv, str):
        return ("__global__", getattr(obj, "__module__", ""), rv)
    if not isinstance(rv, tuple) or len(rv) < 2:
        raise TypeError(
            f"cannot encode an object of type {type(obj).__qualname__} as a cache key"
        )
    func, args = rv[0], rv[1]
    state = rv[2] if len(rv) > 2 else None
    listitems = list(rv[3]) if len(rv) > 3 and rv[3] is not None else None
    dictitems = dict(rv[4]) if len(rv) > 4 and rv[4] is not None else None
    if state is not None and not isinstance(state, (dict, tuple)):
        state = (state,)
    if func is copyreg.__newobj__ and args:  # type: ignore[attr-defined]
        func, args = args[0], args[1:]
    if getattr(func, "__name__", None) == "_reconstructor":
        func, args = args[0], args[1:]
    if type(state) is tuple and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
        # (dict state, slots state)
        state = ("__slots__", state[0], state[1])
    return ("__reduce__", fallback(func) if not isinstance(func, tuple) else func, args, state, listitems, dictitems)
