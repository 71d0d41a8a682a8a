"""Canonical key encoding: the Python side (objects the Rust encoder does not know).

The Rust encoder (``_native.encode_call``) handles None, bool, int, float,
str, bytes, bytearray, tuple, list, dict, set and frozenset. Any other object
is handed to :func:`fallback`, which returns a replacement built from those
types; the encoder then encodes the replacement. The replacement is:

- ``obj.__picocache_key__()`` if the object's class defines it (the way to key
  an object, such as ``self`` of a method, by what matters);
- for a class, a module, or a function importable by its module and qualified
  name: that name;
- for any other function (a lambda, a closure, a nested function): its
  definition (:func:`function_identity`): module, qualified name, a digest of
  its code, its defaults and the contents of its closure;
- otherwise the object's pickle reduction (``__reduce_ex__(4)``): the
  constructor's name, its arguments, the object's state, list items and dict
  items, each encoded canonically (so a dataclass holding a set is keyed the
  same in every process, which plain pickling does not give).

An object that has none of these (a lock, a socket, a generator) raises
``TypeError``; the decorator names the argument. So does an object compared
by identity: an instance of a class that defines neither ``__eq__`` nor its
own pickling (``__reduce__``/``__reduce_ex__``). ``functools.lru_cache`` keys
two such objects apart however equal their attributes; keying them by their
state would hand one object's result to another, and keying them by identity
means nothing in another process. Define ``__picocache_key__`` (or ``__eq__``)
on the class, or leave the argument out with ``ignore=``.
"""

from __future__ import annotations

import copyreg
import enum
import functools
import hashlib
import os
import sys
import threading
import types
from typing import Any, Callable, Optional

from . import _native

_GLOBAL_TYPES = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodDescriptorType if hasattr(types, "MethodDescriptorType") else type,
)


def _global_name(obj: object) -> tuple:
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module is None or qual is None or "<lambda>" in qual or "<locals>" in qual:
        raise TypeError(
            f"cannot use {obj!r} as a cache key: it is not importable by name"
        )
    if module == "__mp_main__":
        module = "__main__"
    return ("__global__", module, qual)


def _compared_by_identity(t: type) -> bool:
    """True for a class whose instances are equal only to themselves and
    pickle by the default reduction (their attributes): keying such an object
    by its state would give two distinct objects one entry."""
    return (
        t.__eq__ is object.__eq__
        and t.__reduce_ex__ is object.__reduce_ex__
        and t.__reduce__ is object.__reduce__
        and t not in copyreg.dispatch_table
    )


def fallback(obj: object) -> object:
    """A canonical replacement for ``obj`` (see the module docstring)."""
    keyfn = getattr(type(obj), "__picocache_key__", None)
    if keyfn is not None:
        t = type(obj)
        return ("__key__", t.__module__, t.__qualname__, keyfn(obj))
    if isinstance(obj, types.FunctionType) or _cached_state(obj) is not None:
        return _function_key(obj)
    if isinstance(obj, type) and "<locals>" in getattr(obj, "__qualname__", ""):
        return class_identity(obj)
    if isinstance(obj, _GLOBAL_TYPES):
        return _global_name(obj)
    if isinstance(obj, types.ModuleType):
        return ("__module__", obj.__name__)
    if isinstance(obj, enum.Enum):
        return ("__enum__", fallback(type(obj)), obj.name)
    if isinstance(obj, complex):
        return ("__complex__", obj.real, obj.imag)
    if isinstance(obj, types.MethodType):
        return ("__method__", fallback(obj.__self__), obj.__func__.__name__)
    if _compared_by_identity(type(obj)):
        t = type(obj)
        raise TypeError(
            f"an object of type {t.__qualname__} is compared by identity (its class defines no "
            "__eq__), so two such objects must not share a result, and its identity means "
            "nothing in another process; define __picocache_key__(self) on the class (return "
            "what identifies the object), or __eq__, or leave the argument out with ignore="
        )
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


# -- functions: what tells two definitions apart --------------------------------------

_guard = threading.local()


def _cached_state(obj: object) -> Any:
    """The per-function state of a picocache wrapper, or None."""
    try:
        return obj.__dict__.get("__picocache_state__") if hasattr(obj, "__dict__") else None
    except Exception:  # noqa: BLE001 - an odd __dict__: not a wrapper
        return None


def _function_key(func: Any) -> tuple:
    """A function used as an argument (or held by a closure): by name if it is
    a plain module-level function, else by its definition."""
    st = _cached_state(func)
    if st is not None:
        return ("__cached__", st.name)
    qual = getattr(func, "__qualname__", "")
    if func.__closure__ is None and "<" not in qual:
        return _global_name(func)
    return function_identity(func)


class IdentityError(TypeError):
    """A function that cannot be told apart from others with its name (a
    closure variable, default or bound object that cannot be encoded)."""


def _enter(obj: object) -> bool:
    """Marks ``obj`` as being identified in this thread; False if it already is
    (a cycle: a recursive closure, a method naming its own class)."""
    active = getattr(_guard, "active", None)
    if active is None:
        active = _guard.active = set()
    if id(obj) in active:
        return False
    active.add(id(obj))
    return True


def _leave(obj: object) -> None:
    _guard.active.discard(id(obj))


_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _plain(v: object) -> bool:
    if isinstance(v, (tuple, frozenset)):
        return all(_plain(x) for x in v)
    return isinstance(v, _PLAIN)


def class_identity(cls: type) -> tuple:
    """A class defined inside a function (not importable by name): its
    module, qualified name, bases, the functions written in its body (their
    definitions, or their code if a closure cannot be encoded), its
    plain-data class attributes and, for an enum, its members' values.
    (Objects it holds beyond those are not compared: two local classes with
    one name that differ only there share a key.)"""
    qual = cls.__qualname__
    if not _enter(cls):
        return ("__cycle__", qual)
    try:
        members = []
        for attr, v in sorted(vars(cls).items()):
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            elif isinstance(v, property):
                v = v.fget
            if isinstance(v, types.FunctionType):
                if v.__qualname__.startswith(qual + "."):  # not one that another class lent it
                    try:  # its definition (code, defaults, closure) ...
                        members.append((attr, _native.encode(function_identity(v), False, fallback)))
                    except TypeError:  # ... or at least its code
                        members.append((attr, code_digest(v)))
            elif not (attr.startswith("__") and attr.endswith("__")) and _plain(v):
                members.append((attr, _native.encode(v, False, fallback)))
        if issubclass(cls, enum.Enum):
            members.append(("__members__", tuple(
                (m.name, encode_part(m.value, lambda: f"a member of the enum {qual}"))
                for m in cls.__members__.values()
            )))
        bases = tuple(b if b is object else fallback(b) for b in cls.__bases__)
        return ("__class__", module_name(cls), qual, bases, tuple(members))
    finally:
        _leave(cls)


def encode_part(obj: object, what: Callable[[], str]) -> bytes:
    """``obj`` encoded canonically (as a key is); ``what()`` describes it in
    the IdentityError raised if it cannot be."""
    try:
        return _native.encode(obj, False, fallback)
    except IdentityError:
        raise
    except TypeError as e:
        raise IdentityError(
            f"picocache: {what()}, which cannot be part of a cache key ({e}); so the function "
            "cannot be told apart from others with its name and is not cached: pass name='...' "
            "to the decorator to choose which functions share entries"
        ) from None


def _const(c: object) -> object:
    """A code constant, tagged with its type (``1``, ``1.0`` and ``True``
    are one key but three different constants)."""
    if isinstance(c, types.CodeType):
        return ("code",) + code_parts(c)
    if isinstance(c, tuple):
        return ("tuple", tuple(_const(x) for x in c))
    if isinstance(c, frozenset):
        return ("frozenset", frozenset(_const(x) for x in c))
    if isinstance(c, float):
        return ("float", c.hex())
    if isinstance(c, complex):
        return ("complex", c.real.hex(), c.imag.hex())
    if c is Ellipsis:
        return ("Ellipsis",)
    return (type(c).__name__, c)


def code_parts(co: types.CodeType, doc: Optional[str] = None) -> tuple:
    """What a code object computes: bytecode, constants (nested code objects
    included), names and argument layout; not line numbers, the file name or
    the docstring ``doc``."""
    consts = tuple(
        None if (i == 0 and doc is not None and c == doc) else _const(c)
        for i, c in enumerate(co.co_consts)
    )
    return (
        co.co_code,
        consts,
        co.co_names,
        co.co_varnames,
        co.co_freevars,
        co.co_cellvars,
        co.co_argcount,
        co.co_posonlyargcount,
        co.co_kwonlyargcount,
        co.co_flags,
        getattr(co, "co_exceptiontable", b""),
    )


def code_digest(func: types.FunctionType) -> str:
    """A digest of what ``func``'s code computes (see :func:`code_parts`)."""
    parts = code_parts(func.__code__, func.__doc__ if isinstance(func.__doc__, str) else None)
    enc = _native.encode(parts, False, fallback)
    return hashlib.blake2b(enc, digest_size=16).hexdigest()


def function_identity(func: Any, *, with_code: bool = True, self_obj: object = None) -> tuple:
    """What tells ``func`` apart from every other function with its name: a
    digest of its code (unless ``with_code`` is false), its default
    arguments, and the contents of its closure (``self_obj`` in a closure, the
    wrapper of a recursive function, is recorded as a self-reference).

    Raises ``TypeError`` naming the default or closure variable that cannot be
    encoded: such a function cannot be told apart from its siblings."""
    if isinstance(func, types.MethodType):
        qual = getattr(func, "__qualname__", "?")
        return (
            "__boundmethod__",
            function_identity(func.__func__, with_code=with_code),
            encode_part(func.__self__, lambda: f"{qual} is bound to an object of type {type(func.__self__).__qualname__}"),
        )
    if isinstance(func, functools.partial):
        return (
            "__partial__",
            function_identity(func.func, with_code=with_code),
            encode_part((func.args, func.keywords), lambda: "a functools.partial holds an argument"),
        )
    if not isinstance(func, types.FunctionType):
        if isinstance(func, _GLOBAL_TYPES):
            return _global_name(func)
        return ("__callable__", encode_part(func, lambda: f"the callable is an object of type {type(func).__qualname__}"))
    qual = func.__qualname__
    if not _enter(func):
        return ("__cycle__", qual)
    try:
        parts: list = ["__function__", module_name(func), qual]
        if with_code:
            parts.append(code_digest(func))
        if func.__defaults__ or func.__kwdefaults__:
            parts.append(encode_part(
                (func.__defaults__, func.__kwdefaults__),
                lambda: f"a default argument of {qual}() is a value",
            ))
        if func.__closure__:
            cells = []
            for var, cell in zip(func.__code__.co_freevars, func.__closure__):
                try:
                    v = cell.cell_contents
                except ValueError:  # not yet assigned
                    cells.append((var, b"\x00empty"))
                    continue
                if v is self_obj or v is func:
                    cells.append((var, b"\x00self"))
                    continue
                cells.append((var, encode_part(
                    v, lambda var=var, v=v: (
                        f"{qual}() is a closure whose variable {var!r} holds "
                        f"an object of type {type(v).__qualname__}"
                    ),
                )))
            parts.append(tuple(cells))
        return tuple(parts)
    finally:
        _leave(func)


def _globals_of(func: Any) -> dict:
    f = func
    for _ in range(8):  # bound methods, partials
        g = getattr(f, "__globals__", None)
        if g is not None:
            return g
        f = getattr(f, "__func__", None) or getattr(f, "func", None)
        if f is None:
            break
    mod = sys.modules.get(getattr(func, "__module__", None) or "")
    return vars(mod) if mod is not None else {}


def module_name(func: Any) -> str:
    """The module that names ``func`` (see ``picocache._naming``): its
    ``__module__``; for the main module, the name it has when imported if
    Python ran it with ``-m``, else ``__main__:`` and the script's resolved
    path, else (no file) ``__main__``."""
    module = getattr(func, "__module__", None) or "?"
    if module not in ("__main__", "__mp_main__"):
        return module
    g = _globals_of(func)
    spec_name = getattr(g.get("__spec__"), "name", None)
    if spec_name and spec_name not in ("__main__", "__mp_main__") and not spec_name.endswith(".__main__"):
        return spec_name
    path = g.get("__file__")
    if isinstance(path, str) and path:
        return "__main__:" + os.path.realpath(path)
    return "__main__"
