"""What names a cached function: its namespace in the store.

A namespace name is ``MODULE.QUALNAME``, then ``@VERSION`` if a version is
given, then ``#DIGEST`` unless nothing but the name tells the function apart:

- ``MODULE`` is the function's module. For the main module it is the name the
  module would have if imported when Python ran it with ``-m pkg.mod``
  (``pkg.mod``), else ``__main__:`` and the resolved path of the script, so a
  script run directly and its ``multiprocessing`` spawn workers (whose main
  module is ``__mp_main__``) agree, and two scripts with one file name in two
  directories do not. Code with no file (a notebook, ``python -c``, the REPL)
  is ``__main__``: only its code digest tells it apart.
- ``DIGEST`` (64 bits of BLAKE2b, 16 hex digits) covers what tells two definitions with one
  name apart (:func:`picocache._keys.function_identity`): the function's code
  (bytecode, constants, names, nested code objects; not line numbers, the
  file name or the docstring), its default arguments, and the contents of its
  closure, read at the first call. A changed body is a new namespace, so it
  never serves the old body's results. ``version=`` (on the decorator, or the
  cache's default) pins the name instead: the code is left out and entries
  survive edits until the version changes (closure contents and defaults
  still count; a lambda, which has no name to pin, keeps its code digest). ``name=`` on the decorator
  replaces the whole name: every function given that name shares entries.
- A name longer than 200 UTF-8 bytes (a deep script path) keeps its start
  and end around ``~`` and 16 hex digits of BLAKE2b of the whole name.
- The digest depends on the Python version's bytecode: the same function
  under two Python minor versions has two namespaces (never a wrong value).

The namespace a function's entries live in (:func:`store_name`) is that name,
then ``;typed`` if ``typed=True`` (a typed key of an exact int, str or None is
the bytes of the untyped key, which ``f(1.0)`` and ``f(True)`` share with
``f(1)``), then ``;ttl=SECONDS`` if it has a ``ttl`` (a ttl is applied when
an entry is written: a reader with a shorter one, or one written without,
would serve entries older than its own), then ``;vs=`` and 16 hex digits of
BLAKE2b of the identity of a custom ``value_serializer``
(:func:`serializer_identity`: its ``dumps`` and ``loads``), so a value is
only ever decoded by the serializer that made it (bytes a raw serializer
stored are never unpickled). The default serializer (pickle), untyped and
without a ttl, adds nothing: the entries stored before these suffixes stay
readable. Likewise ``;key=`` and a digest (:func:`shaping_identity`) when
``ignore=``, ``key=`` or a ``key_serializer`` shape the keys (a key of
``f(1, debug=True)`` with ``debug`` ignored is ``f(1)``'s). ``name=`` is
followed by the suffixes too.

A closure, default or bound object that cannot be encoded as a key raises
``TypeError`` at the first call, naming it: such a function cannot be told
apart from its siblings, so it is not cached; pass ``name=`` to name it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is imported by type checkers only (import time)
if TYPE_CHECKING:
    import hashlib
    from typing import Any, Callable, Optional

from . import _native
from ._keys import IdentityError, fallback, function_identity, module_name


def _blake2b(data: bytes, digest_size: int) -> "hashlib.blake2b":
    import hashlib  # at the first decoration, not at import

    return hashlib.blake2b(data, digest_size=digest_size)


def function_name(func: Callable, version: Any = None, *, self_obj: object = None) -> str:
    """The namespace name of ``func`` (see the module docstring): module,
    qualified name, ``@version`` if given, and a digest of what tells this
    definition apart (its code unless ``version`` is given, its defaults, its
    closure's contents; ``self_obj``, the wrapper of a recursive function,
    is a self-reference in its closure).

    Raises ``TypeError`` if a closure variable, default or bound object
    cannot be encoded as a key."""
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__qualname__
    name = f"{module_name(func)}.{qual}"
    if version is not None:
        name += f"@{version}"
    # A lambda has no name to pin: two lambdas with one version differ by code.
    pinned = version is not None and "<lambda>" not in qual
    try:
        ident = function_identity(func, with_code=not pinned, self_obj=self_obj)
    except TypeError as e:
        raise IdentityError(
            f"picocache: {e}; so {qual}() cannot be told apart from other functions with its "
            "name and is not cached: pass name='...' to the decorator to choose which "
            "functions share entries"
        ) from None
    if pinned and len(ident) == 3 and ident[0] == "__function__":
        # Pinned, and neither defaults nor a closure: the name says it all.
        return _shorten(name)
    enc = _native.encode(ident, False, fallback)
    return _shorten(name + "#" + _blake2b(enc, digest_size=8).hexdigest())


def store_name(name: str, typed: bool, value_id: Optional[str], ttl: Any = None,
               shape_id: Optional[str] = None) -> str:
    """The namespace of a function named ``name`` (see the module
    docstring): ``name``, then ``;typed`` if typed, then ``;ttl=SECONDS``
    if it has a ttl, then ``;key=ID`` if ``ignore=``, ``key=`` or a
    ``key_serializer`` shape its keys (:func:`shaping_identity`), then
    ``;vs=ID`` for a custom value serializer of identity ``value_id``."""
    suffix = ";typed" if typed else ""
    if ttl is not None:
        try:
            secs = float(ttl.total_seconds() if hasattr(ttl, "total_seconds") else ttl)
            suffix += f";ttl={secs!r}"
        except (TypeError, ValueError, OverflowError):
            suffix += ";ttl=?"  # (the store refuses it)
    if shape_id is not None:
        suffix += ";key=" + shape_id
    if value_id is not None:
        suffix += ";vs=" + value_id
    return _shorten(name + suffix) if suffix else name


def _callables_digest(head: str, callables: Any) -> str:
    """16 hex digits of BLAKE2b over ``head`` and, for each callable, its
    module and qualified name and, where they can be encoded, its code,
    defaults and closure (two lambdas of one module differ) or the object a
    method is bound to."""
    parts = [head]
    for f in callables:
        if f is None:
            parts.append("None")
            continue
        mod = getattr(f, "__module__", None) or type(f).__module__
        qual = getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__qualname__
        parts.append(f"{mod}.{qual}")
        try:
            parts.append(_native.encode(function_identity(f, with_code=True), False, fallback).hex())
        except (TypeError, ValueError, RecursionError):
            parts.append(_state_digest(f))
    return _blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _state_digest(f: Any) -> str:
    """What tells a callable whose identity does not encode from others of
    its names (two instances of one class with other state, a bound method
    of either, a partial of unencodable arguments): the digest of its pickle
    (an instance's state, a method's object, a partial's arguments). One
    that does not pickle either raises IdentityError: the function is not
    cached (one warning), as one that cannot be named; by its names alone,
    two such objects shared entries (``Scaled(2)`` read ``Scaled(3)``'s)."""
    import pickle

    try:
        return "pickle:" + _blake2b(pickle.dumps(f, protocol=4), digest_size=16).hexdigest()
    except Exception as e:  # noqa: BLE001 - whatever pickling an arbitrary object raises
        raise IdentityError(
            f"{f!r} can be told apart from other objects of its kind neither by its code nor by its pickle "
            f"({type(e).__name__}), so entries made with it could be read with another: give the "
            "function a name= of its own") from None


def serializer_identity(value_serializer: Any) -> Optional[str]:
    """None for the default serializer (pickle), else the digest of its
    ``dumps`` and ``loads`` (:func:`_callables_digest`)."""
    if value_serializer is None:
        return None
    from ._serial import serializer_pair

    return _callables_digest("", serializer_pair(value_serializer))


def shaping_identity(ignore: Any, key: Any, key_serializer: Any) -> Optional[str]:
    """None when the keys are the arguments' own encoding, else the digest of
    what shapes them: the ignored positions and names (in any order), the
    ``key=`` function and the ``key_serializer`` (:func:`_callables_digest`):
    a wrapper that ignores an argument, or keys by a function of them, never
    shares entries with one that does not."""
    ignore = list(ignore or ())
    if not ignore and key is None and key_serializer is None:
        return None
    ig = sorted(repr(i) for i in ignore)
    return _callables_digest("ignore=" + ",".join(ig), (key, key_serializer))


#: Longest name kept whole, in UTF-8 bytes (the local engine takes up to
#: 232; a script's path can be long).
MAX_NAME = 200


def _shorten(name: str) -> str:
    """``name`` if it fits MAX_NAME bytes, else its start, ``~`` and 16 hex
    digits of BLAKE2b of the whole name, and its end (the qualified name and
    digest): as unique as the whole, and still readable."""
    if len(name.encode("utf-8")) <= MAX_NAME:
        return name
    mark = "~" + _blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest() + "~"
    head, tail = name[:60], name[-110:]
    while len((head + mark + tail).encode("utf-8", "surrogatepass")) > MAX_NAME:
        tail = tail[1:]
        head = head[:-1] if len(head) > 20 else head
    return head + mark + tail
