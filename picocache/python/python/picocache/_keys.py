"""Canonical key encoding: the Python side (objects the Rust encoder does not know).

The Rust encoder (``_native.encode_call``) handles None, bool, int, float,
str, bytes, bytearray, tuple, list, dict, set and frozenset. Any other object
is handed to :func:`fallback`, which returns a replacement built from those
types; the encoder then encodes the replacement. The replacement is:

- ``obj.__picocache_key__()`` if the object's class defines it (the way to key
  an object, such as ``self`` of a method, by what matters);
- for a module, or a class that its module and qualified name import: that
  name; any other class (defined in a function, made by ``type()``) by its
  definition (:func:`class_identity`);
- for a function: its definition (:func:`function_identity`): module,
  qualified name, a digest of its code, its defaults and the contents of its
  closure (a cached function: the function it wraps); a bound method: its
  object and its function;
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
import functools
import os
import sys
import _thread  # threading's C core: threading itself costs ~1.5 ms at import
import types
import weakref
from collections import OrderedDict
TYPE_CHECKING = False  # typing is imported by type checkers only (import time)
if TYPE_CHECKING:
    import hashlib
    from typing import Any, Callable, Optional

from . import _native
from ._arrays import content_key

_guard = _thread._local()


# `enum` and `hashlib` are imported when needed: no enum member exists before
# `enum` is imported, and digests are first needed at a decoration.
def _is_enum_member(obj: Any) -> bool:
    enum = sys.modules.get("enum")
    return enum is not None and isinstance(obj, enum.Enum)


def _is_enum_class(cls: type) -> bool:
    enum = sys.modules.get("enum")
    return enum is not None and issubclass(cls, enum.Enum)


def _blake2b(data: bytes, digest_size: int) -> "hashlib.blake2b":
    import hashlib

    return hashlib.blake2b(data, digest_size=digest_size)


# -- names ----------------------------------------------------------------------------


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


def module_name(obj: Any) -> str:
    """The module that names ``obj`` (see ``picocache._naming``): its
    ``__module__``; for the main module, the name it has when imported if
    Python ran it with ``-m``, else ``__main__:`` and the script's resolved
    path, else (no file) ``__main__``."""
    module = getattr(obj, "__module__", None) or "?"
    if module not in ("__main__", "__mp_main__"):
        return module
    g = _globals_of(obj)
    spec_name = getattr(g.get("__spec__"), "name", None)
    if spec_name and spec_name not in ("__main__", "__mp_main__") and not spec_name.endswith(".__main__"):
        return spec_name
    path = g.get("__file__")
    if isinstance(path, str) and path:
        return "__main__:" + os.path.realpath(path)
    return "__main__"


def _resolves(obj: Any) -> bool:
    """True if ``obj``'s module and qualified name import ``obj`` itself."""
    qual = getattr(obj, "__qualname__", None)
    target = sys.modules.get(getattr(obj, "__module__", None) or "")
    if not isinstance(qual, str) or target is None or "<" in qual:
        return False
    for part in qual.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is obj


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


def encode_part(obj: object, what: Callable[[], str]) -> bytes:
    """``obj`` encoded canonically (as a key is); ``what()`` describes it in
    the TypeError raised if it cannot be."""
    try:
        return _native.encode(obj, False, fallback)
    except TypeError as e:
        raise TypeError(f"{what()}, which cannot be part of a cache key ({e})") from None


# -- the fallback ---------------------------------------------------------------------


def fallback(obj: object) -> object:
    """A canonical replacement for ``obj`` (see the module docstring)."""
    t = type(obj)
    if t in _REDUCED:  # seen before: none of the special cases below
        return _reduction(obj)
    ck = content_key(obj)  # arrays: by content (never added to _REDUCED)
    if ck is not None:
        return ck
    keyfn = getattr(t, "__picocache_key__", None)
    if keyfn is not None:
        return ("__key__", fallback(t), keyfn(obj))
    if isinstance(obj, types.MethodType):  # before functions: it forwards their attributes
        return ("__method__", _self_key(obj.__self__), _function_key(obj.__func__))
    if isinstance(obj, types.FunctionType):
        return _function_key(obj)
    if isinstance(obj, type):
        return _class_key(obj)
    if callable(obj) and hasattr(obj, "__wrapped__") and hasattr(obj, "cache_info"):
        # A functools.lru_cache (or similar) wrapper: the function it wraps.
        return ("__lru__", _function_key(obj.__wrapped__))
    if isinstance(obj, OrderedDict):  # its equality follows the order
        return ("__ordereddict__", fallback(t), list(obj.items()))
    if isinstance(obj, types.BuiltinFunctionType):  # builtin functions and bound builtin methods
        owner = obj.__self__
        if owner is None or isinstance(owner, types.ModuleType):
            return ("__builtin__", getattr(obj, "__module__", None) or getattr(owner, "__name__", ""),
                    obj.__qualname__)
        return ("__method__", _self_key(owner), obj.__name__)
    if isinstance(obj, (types.MethodDescriptorType, types.WrapperDescriptorType)):
        return ("__descriptor__", fallback(obj.__objclass__), obj.__name__)
    if isinstance(obj, types.ModuleType):
        return ("__module__", obj.__name__)
    if _is_enum_member(obj):
        # A Flag's combination of members has no name: its value keys it.
        name = obj.name if obj.name is not None else ("__value__", obj._value_)
        return ("__enum__", fallback(t), name)
    if isinstance(obj, complex):
        return ("__complex__", obj.real, obj.imag)
    if isinstance(obj, functools.partial):
        return ("__partial__", _function_key(obj.func) if callable(obj.func) else obj.func,
                obj.args, obj.keywords)
    if _compared_by_identity(t):
        raise TypeError(
            f"an object of type {t.__qualname__} is compared by identity (its class defines no "
            "__eq__), so two such objects must not share a result, and its identity means "
            "nothing in another process; define __picocache_key__(self) on the class (return "
            "what identifies the object), or __eq__, or leave the argument out with ignore="
        )
    if not callable(obj):  # (a callable may carry __wrapped__ on the instance)
        if len(_REDUCED) >= _MAX_REMEMBERED:
            _REDUCED.clear()
        _REDUCED.add(t)
    return _reduction(obj)


#: Most types and classes remembered (the memos hold them alive, so an id
#: is never reused while remembered; cleared when full).
_MAX_REMEMBERED = 4096
#: Types whose instances are keyed by their reduction (no special case).
_REDUCED: set = set()
#: Keys of classes (their names and definition digests), computed once.
_CLASS_KEYS: dict = {}


def _reduction(obj: object) -> tuple:
    t = type(obj)
    reducer = copyreg.dispatch_table.get(t)
    try:
        rv = reducer(obj) if reducer is not None else obj.__reduce_ex__(4)
    except Exception as e:  # noqa: BLE001 - any failure means "not encodable"
        raise TypeError(
            f"cannot encode an object of type {t.__qualname__} as a cache key "
            f"(it cannot be pickled: {e}); define __picocache_key__ on its class, "
            "or pass ignore=/key= to the decorator"
        ) from None
    if isinstance(rv, str):  # a named singleton, if the name gives this object
        module = getattr(obj, "__module__", None) or "builtins"
        if getattr(sys.modules.get(module), rv, None) is not obj:
            raise TypeError(f"cannot encode an object of type {t.__qualname__} as a cache key: "
                            f"its name {module}.{rv} does not give it back")
        return ("__global__", module, rv)
    if not isinstance(rv, tuple) or len(rv) < 2:
        raise TypeError(f"cannot encode an object of type {t.__qualname__} as a cache key")
    func, args = rv[0], rv[1]
    state = rv[2] if len(rv) > 2 else None
    listitems = list(rv[3]) if len(rv) > 3 and rv[3] is not None else None
    # Dict items in their order: a dict subclass whose equality differs from
    # dict's (it got here) may compare order, as OrderedDict does.
    dictitems = list(rv[4]) if len(rv) > 4 and rv[4] is not None else None
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


# -- functions and classes: what tells two definitions apart --------------------------


class IdentityError(TypeError):
    """A function that cannot be told apart from others with its name (a
    closure variable, default or bound object that cannot be encoded)."""


def _self_key(obj: object) -> object:
    """The object a method is bound to (an object may hold its own bound
    methods: a cycle is recorded as such)."""
    if not _enter(obj):
        return ("__cycle__", type(obj).__qualname__)
    try:
        return encode_part(obj, lambda: "the object of a bound method")
    finally:
        _leave(obj)


#: Identities of functions used as keys, computed once per function (its
#: closure's contents as first seen, as a cached function's own closure is
#: read once); weak, as lambdas made per call come and go.
_IDENTITIES: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


def _memo(table: Any, obj: Any, compute: Callable[[], tuple]) -> tuple:
    """``table[obj]``, computed by ``compute`` the first time (a table that
    fills up is emptied)."""
    try:
        ident = table.get(obj)
    except TypeError:  # not hashable or weakly referenceable
        ident = None
    if ident is not None:
        return ident
    top = not getattr(_guard, "active", None)
    ident = compute()
    if top:  # not a part computed inside another (its cycles cut short)
        if len(table) >= _MAX_REMEMBERED:
            table.clear()
        try:
            table[obj] = ident
        except TypeError:
            pass
    return ident


def _class_key(cls: type) -> tuple:
    """A class: by its name if that imports it (and its definition's digest,
    so a redefined or reloaded class is another key), else by its definition."""

    def compute() -> tuple:
        if _resolves(cls):
            digest = _blake2b(_native.encode(class_identity(cls, lenient=True), False, fallback),
                                     digest_size=16).digest()
            return ("__global__", module_name(cls), cls.__qualname__, digest)
        return class_identity(cls)

    return _memo(_CLASS_KEYS, cls, compute)


def _cached_state(func: types.FunctionType) -> Any:
    """The per-function state of a picocache wrapper, or None."""
    return func.__dict__.get("__picocache_state__")


def _function_key(func: Any) -> tuple:
    """A function used as an argument or held by a closure or class: its
    definition; a picocache wrapper: the name it was given, or the
    definition of the function it wraps."""
    if isinstance(func, types.FunctionType):
        st = _cached_state(func)
        if st is not None:
            if st._name is not None:
                return ("__cached__", st._name)
            func = st.func
    return _memo(_IDENTITIES, func, lambda: function_identity(func))


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
    # The docstring's slot (the first constant) is keyed as the None an
    # undocumented function has there: adding or removing a docstring keeps
    # the name. (-OO still differs: it leaves a NOP in the docstring's
    # place, see tests/test_adversarial_session12.py.)
    consts = tuple(
        _const(None) if (i == 0 and doc is not None and c == doc) else _const(c)
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


@functools.lru_cache(maxsize=4096)
def _code_digest(co: types.CodeType, doc: Optional[str]) -> str:
    enc = _native.encode(code_parts(co, doc), False, fallback)
    return _blake2b(enc, digest_size=16).hexdigest()


def code_digest(func: types.FunctionType) -> str:
    """A digest of what ``func``'s code computes (see :func:`code_parts`)."""
    return _code_digest(func.__code__, func.__doc__ if isinstance(func.__doc__, str) else None)


def function_identity(func: Any, *, with_code: bool = True, self_obj: object = None) -> tuple:
    """What tells ``func`` apart from every other function with its name: a
    digest of its code (unless ``with_code`` is false), its default
    arguments, and the contents of its closure (``self_obj`` in a closure, the
    wrapper of a recursive function, is recorded as a self-reference).

    Raises ``TypeError`` naming the default or closure variable that cannot be
    encoded: such a function cannot be told apart from its siblings. (A
    module-level function's defaults that cannot be encoded, such as a
    sentinel ``object()``, count by their types: they are made once, by the
    code.)"""
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
        return ("__callable__", encode_part(func, lambda: f"the callable is an object of type {type(func).__qualname__}"))
    qual = func.__qualname__
    if not _enter(func):
        return ("__cycle__", qual)
    try:
        parts: list = ["__function__", module_name(func), qual]
        if with_code:
            parts.append(code_digest(func))
        if func.__defaults__ or func.__kwdefaults__:
            defaults = (func.__defaults__, func.__kwdefaults__)
            try:
                parts.append(encode_part(defaults, lambda: f"a default argument of {qual}() is a value"))
            except TypeError:
                if func.__closure__ is not None or not _resolves(func):
                    raise
                parts.append(repr([type(d).__qualname__ for d in func.__defaults__ or ()]
                                  + sorted((k, type(v).__qualname__) for k, v in (func.__kwdefaults__ or {}).items())))
        g = func.__globals__
        mod = sys.modules.get(func.__module__ or "")
        if (mod is None or vars(mod) is not g) and not g.get("__file__"):
            # Globals of no module and no file (exec with a dict of its own):
            # the globals it reads are part of what it computes. (A spawn
            # worker's main script runs in a copy of its module's globals,
            # with its file: named by its path, as in the parent.)
            used = []
            for n in sorted(set(func.__code__.co_names)):
                if n in g and not (n.startswith("__") and n.endswith("__")):
                    try:
                        used.append((n, _native.encode(g[n], False, fallback)))
                    except TypeError:
                        used.append((n, "type:" + type(g[n]).__qualname__))
            if used:
                parts.append(("__globals__", tuple(used)))
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
                try:
                    cells.append((var, encode_part(
                        v, lambda var=var, v=v: (
                            f"{qual}() is a closure whose variable {var!r} holds "
                            f"an object of type {type(v).__qualname__}"
                        ),
                    )))
                except TypeError:
                    if not _resolves(func):
                        raise
                    # Importable by name (functools.singledispatch's
                    # registry, say): one definition per process.
                    cells.append((var, "type:" + type(v).__qualname__))
            parts.append(tuple(cells))
        return tuple(parts)
    finally:
        _leave(func)


def class_identity(cls: type, lenient: bool = False) -> tuple:
    """A class that its name does not import (defined in a function, made by
    ``type()``): its module, qualified name, bases, the definitions of its
    functions (or their code, for one whose closure cannot be encoded), its
    other attributes (dunder attributes aside) and, for an enum, its members'
    values. Raises TypeError if an attribute cannot be encoded (``lenient``,
    for a class that its name imports: its type counts instead)."""
    qual = cls.__qualname__
    if not _enter(cls):
        return ("__cycle__", qual)
    try:
        is_enum = _is_enum_class(cls)
        members = []
        for attr, v in sorted(vars(cls).items()):
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            elif isinstance(v, property):
                v = (v.fget, v.fset, v.fdel)
            if isinstance(v, types.FunctionType) and v.__qualname__.startswith(qual + "."):
                try:  # written in the class body: its definition ...
                    members.append((attr, _native.encode(function_identity(v), False, fallback)))
                except TypeError:  # ... or at least its code
                    members.append((attr, code_digest(v)))
            elif (attr.startswith("__") and attr.endswith("__")) or is_enum:
                continue  # made by Python (or, for an enum, its members: below)
            else:
                try:
                    members.append((attr, encode_part(
                        v, lambda attr=attr: f"the class {qual} has an attribute {attr!r}")))
                except Exception as e:  # noqa: BLE001 - an odd attribute's own failure too
                    if not lenient:
                        raise TypeError(str(e)) from None
                    members.append((attr, "type:" + type(v).__qualname__))
        if is_enum:
            members.append(("__members__", tuple(
                (m.name, encode_part(m.value, lambda: f"a member of the enum {qual}"))
                for m in cls.__members__.values()  # type: ignore[attr-defined]
            )))
        bases = tuple(b if b is object else fallback(b) for b in cls.__bases__)
        return ("__class__", module_name(cls), qual, bases, tuple(members))
    finally:
        _leave(cls)
