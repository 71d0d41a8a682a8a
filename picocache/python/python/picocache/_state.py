"""Per-function state of a cached function: its namespace handle, counters,
the computations in flight, failure reporting, and the native wrapper that
serves its hits; with what the rest of the package shares (CacheInfo, the
logger, the sentinels, the fork hook)."""

from __future__ import annotations

import collections
import os
import sys
import _thread  # threading's C core: threading itself costs ~1.5 ms at import
import time
import weakref

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NamedTuple, Optional

    from ._core import BaseCache

from . import _native
from ._keys import IdentityError, fallback as _fallback
from ._naming import shaping_identity, store_name
from ._native import CacheError, CacheReadOnly, CacheTooLarge

class _Logger:
    """The ``picocache`` logger, looked up at its first message (importing
    :mod:`logging` costs milliseconds that most programs never need)."""

    def __getattr__(self, name: str) -> Any:
        import logging

        global logger
        logger = logging.getLogger("picocache")
        return getattr(logger, name)


logger: Any = _Logger()

if TYPE_CHECKING:
    class CacheInfo(NamedTuple):
        """Statistics of a cached function, as functools.lru_cache reports them."""

        hits: int
        misses: int
        maxsize: Optional[int]
        currsize: int
else:
    CacheInfo = collections.namedtuple("CacheInfo", ["hits", "misses", "maxsize", "currsize"])
    CacheInfo.__doc__ = "Statistics of a cached function, as functools.lru_cache reports them."
    CacheInfo.__module__ = __name__

_UNSET: Any = object()
_MISS: Any = object()

#: Longest key kept verbatim; longer keys are replaced by a digest prefixed
#: with a marker (the engine limits keys to 1 MiB). Defined once, natively.
_MAX_KEY: int = _native.MAX_KEY

#: Every live function state, to reset per-process state after fork.
_STATES: "weakref.WeakSet[_FunctionState]" = weakref.WeakSet()
_CACHES: "weakref.WeakSet[BaseCache]" = weakref.WeakSet()


def _is_coroutine_function(func: Any) -> bool:
    """``inspect.iscoroutinefunction`` without importing inspect unless the
    program has (for functions marked by ``inspect.markcoroutinefunction``)."""
    code = getattr(func, "__code__", None)
    if code is not None and code.co_flags & 0x80:  # CO_COROUTINE
        return True
    inspect = sys.modules.get("inspect")
    return inspect is not None and inspect.iscoroutinefunction(func)


def _after_fork_in_child() -> None:
    _native._after_fork_in_child()  # (also forgets the computations in flight)
    for st in list(_STATES):
        st.reset_after_fork()
    for c in list(_CACHES):
        c._after_fork_in_child()


#: The modules a call may import at its first use (not at ``import
#: picocache``: they cost milliseconds). Not logging (imported at the first
#: warning): importing it here would register its own fork hooks in the
#: middle of a fork.
_LAZY_MODULES = ("hashlib", "pickle", "copyreg", "io")


def _before_fork() -> None:
    """Before a fork: the modules a call imports lazily are imported now
    (waiting for another thread that is importing one: a child forked in the
    middle of that import inherits the module's import lock held and its
    first call waited for it forever), and SQLite backends finish their
    operations (a child must not inherit SQLite's lock state of a
    transaction; see picocache::sql::fork)."""
    for m in _LAZY_MODULES:
        __import__(m)
    _native._before_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_native._after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _decoding_lookup(ns: Any, loads: Callable[[bytes], Any]) -> Callable[[tuple, dict], Any]:
    """lookup_decoded for a namespace written in Python (Django, SQLAlchemy
    Engine): its lookup, then loads; a value that does not load is a miss."""
    lookup = ns.lookup

    def lookup_value(args: tuple, kwargs: dict) -> Any:
        raw = lookup(args, kwargs)
        if raw is None:
            return _MISS
        try:
            return loads(raw)
        except Exception:  # noqa: BLE001 - unreadable: a miss
            return _MISS

    return lookup_value


class _FunctionState:
    """Per-function state: the namespace handle, counters, in-flight calls."""

    def __init__(self, cache: "BaseCache", func: Callable, name: Optional[str],
                 name_fn: Callable[[], str], maxsize: Optional[int],
                 typed: bool, ttl: Optional[float], strict: Optional[bool] = None) -> None:
        self.cache = cache
        self.func = func
        #: The namespace name: given (name=), or computed at first use by
        #: name_fn (a closure's contents are read then, not at decoration).
        self._name = name
        self._name_fn = name_fn
        #: The namespace in the store: the name with the typed, ttl, key and
        #: value serializer suffixes (picocache._naming.store_name), at first use.
        self._store_name: Optional[str] = None
        #: What shapes the keys: (ignore=, key=, key_serializer), for the
        #: namespace's identity (picocache._naming.shaping_identity).
        self.shaping: tuple = ((), None, None)
        #: The decorator's strict= (None: the cache's).
        self.strict = strict
        #: Set (to the error) if the function cannot be named, or its cache
        #: stepped aside at construction (strict=False): never cached.
        self.unnamed: Optional[CacheError] = getattr(cache, "_stepped_aside", None)
        self.maxsize = maxsize
        self.typed = typed
        self.ttl = ttl
        #: Set once a write found the store read-only: only lookups from then on.
        self.read_only = False
        #: Failed opens in a row (the retry window doubles with each).
        self.open_failures = 0
        #: The error of opening a namespace that a read-only store lacks.
        self.read_only_open: Optional[CacheError] = None
        #: Whether a too-large result was reported.
        self.too_large_warned = False
        #: The byte limit (max_bytes=), None for none.
        self.max_bytes: Optional[int] = None
        #: The decoder of stored values (mmap_mode="r": read-only arrays).
        self.loads: Callable[[bytes], Any] = cache._loads
        self.ns: Any = None
        #: (args, kwargs) -> the decoded value or _MISS: the native
        #: namespace's lookup_decoded (encode, look up and decode in one call,
        #: immutable results kept in the process), or _decoding_lookup.
        self.lookup_value: Any = None
        #: Whether ns.put takes the result object too (native namespaces).
        self.native = False
        #: A weak reference to the native wrapper (_CachedFunction) that
        #: serves hits once the namespace is open, if the function has one,
        #: and the count of the hits it served.
        self.fast_wrapper: Any = None
        #: This process's hits and misses (picocache::core::counts), shared
        #: with the native wrapper.
        self.counts = _native.Counts()
        self.ns_lock = _thread.RLock()  # (re-entered by a finalizer or gc callback that calls the function)
        #: The failure policy's warning rate (picocache::core::report).
        self.reporter = _native.Reporter()
        self.retry_at = 0.0
        _STATES.add(self)

    @property
    def name(self) -> str:
        """The namespace name; raises TypeError if the function cannot be
        told apart from others with its name (see picocache._naming)."""
        n = self._name
        if n is None:
            n = self._name = self._name_fn()
        return n

    @property
    def store_name(self) -> str:
        """The namespace the entries live in (raises as ``name``)."""
        n = self._store_name
        if n is None:
            n = self._store_name = store_name(self.name, self.typed, self.cache._value_identity(),
                                              self.ttl, shaping_identity(*self.shaping))
        return n

    def __del__(self) -> None:
        # The function was dropped (a closure made per call, a redefined
        # function): its cache object keeps what clear() and cache_info()
        # need, not the function and everything its closure holds.
        try:
            self.cache._state_gone(self)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def reset_after_fork(self) -> None:
        # Threads that were computing in the parent do not exist here (the
        # flight table forgets them: _native._after_fork_in_child).
        self.ns_lock = _thread.RLock()  # (re-entered by a finalizer or gc callback that calls the function)

    @property
    def label(self) -> str:
        """The name for messages (never raises)."""
        return self._name or getattr(self.func, "__qualname__", None) or repr(self.func)

    def namespace(self) -> Any:
        ns = self.ns
        if ns is not None:
            return ns
        if self.unnamed is not None:
            raise self.unnamed
        self._raise_while_waiting()
        with self.ns_lock:
            if self.ns is None:
                # Another thread may have failed to open the store while this
                # one waited for the lock: it waits for the retry window too,
                # instead of trying in turn (n threads would take n opens).
                self._raise_while_waiting()
                try:
                    name = self.store_name
                except IdentityError as e:
                    if self.cache.strict if self.strict is None else self.strict:
                        raise
                    # Not cached, for good: every call runs the body (the
                    # wrappers check `unnamed`); one warning, from the caller.
                    self.unnamed = _native.CacheUnavailable(str(e))
                    raise self.unnamed from None
                try:
                    extra = {} if self.max_bytes is None else {"max_bytes": self.max_bytes}
                    try:
                        ns = self.cache._open_namespace(name, self.maxsize, self.ttl, self.typed, **extra)
                    except (TypeError, ValueError) as e:
                        # The store's options, not the call's arguments (a
                        # TypeError here must not read as a key error).
                        raise _native.CacheInvalidArgument(f"opening the store: {e}") from e
                    self.native = isinstance(ns, _native.Namespace)
                    loads = self.loads
                    if self.native:
                        ns.set_decoder(loads, _MISS, self.cache.value_serializer is None)
                        self.lookup_value = ns.lookup_decoded
                        w = self.fast_wrapper() if self.fast_wrapper is not None else None
                        if w is not None:
                            w._set_namespace(ns)  # hits from now on without a Python frame
                    else:
                        self.lookup_value = _decoding_lookup(ns, loads)
                    self.ns = ns
                except CacheReadOnly as e:
                    # A read-only store without this function's namespace:
                    # it cannot be made; the store is not tried again for a
                    # minute, and the warning is not repeated.
                    self.read_only_open = e
                    self.retry_at = time.monotonic() + 60.0
                    raise
                except CacheError:
                    # Tried again after 1 s, then 2, 4, ... up to 30 s while
                    # it keeps failing: a store that is down from the start
                    # costs one open (its connect timeout) per window.
                    self.open_failures += 1
                    self.retry_at = time.monotonic() + min(30.0, 2.0 ** (self.open_failures - 1))
                    raise
                self.open_failures = 0
            return self.ns

    def _raise_while_waiting(self) -> None:
        """Raises while the store is not to be tried again yet (after a
        failed open)."""
        if time.monotonic() < self.retry_at:
            if self.read_only_open is not None:
                raise self.read_only_open  # said once (failed() knows it)
            raise _native.CacheUnavailable(
                f"picocache: the store of {self.label} is unavailable (retrying shortly)"
            )

    def failed(self, e: BaseException, what: str, strict: Optional[bool] = None) -> None:
        """A cache operation failed: raise if strict, else warn (at most once
        a second per function, with a count of the suppressed warnings)."""
        if self.cache.strict if strict is None else strict:
            raise e
        if isinstance(e, CacheTooLarge):
            # Said once per function: the store is fine, this value is not kept.
            if not self.too_large_warned:
                self.too_large_warned = True
                logger.warning("picocache: a result too large to store (%s); %s computes such results "
                               "and does not store them (said once)", e, self.label)
            return
        if isinstance(e, CacheReadOnly):
            # One warning: from now on this function only reads the store.
            if not self.read_only:
                self.read_only = True
                logger.warning("picocache: %s; %s serves the entries stored there and stores nothing",
                               e, self.label)
            return
        suppressed = self.reporter.warn_now()  # the core's rate: one a second
        if suppressed is not None:
            extra = f" ({suppressed} more suppressed)" if suppressed else ""
            logger.warning("picocache: %s failed for %s in %r: %s%s; the function's own result is returned",
                           what, self.label, self.cache, e, extra)

    def info(self) -> CacheInfo:
        currsize = 0
        if self.maxsize != 0 and self.unnamed is None:
            try:
                currsize = int(self.namespace().stats()["entries"])
            except CacheError as e:
                self.failed(e, "cache_info")
            except TypeError:  # a function that cannot be named caches nothing
                pass
        hits, misses = self.counts.value()
        return CacheInfo(hits, misses, self.maxsize, currsize)

    def clear(self) -> None:
        w = self.fast_wrapper() if self.fast_wrapper is not None else None
        if w is not None:
            w._front_clear()  # (its entries' records are gone: memory back now)
        try:
            if self.unnamed is None:
                self.namespace().clear()
        except CacheError as e:
            self.failed(e, "cache_clear")
        except TypeError:  # a function that cannot be named caches nothing
            pass
        self.counts.reset()


class _CachedFunction(_native.Wrapper):
    """A cached synchronous function: called like the function it wraps
    (``__wrapped__``), bound like a function when it is a method, pickled by
    its qualified name. Hits that the store answers at once run no Python
    frame (``_native.Wrapper``); everything else goes through the Python
    wrapper it was made with."""

    def __reduce__(self) -> str:
        return self.__qualname__  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<cached function {self.__qualname__} at {id(self):#x}>"


def _arg_names(func: Callable) -> list:
    try:
        import inspect  # (not at import: it costs milliseconds)

        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _explain_key_error(func: Callable, typed: bool, args: tuple, kwargs: dict, err: Exception) -> TypeError:
    if isinstance(err, IdentityError):  # about the function, not its arguments
        return err
    names = _arg_names(func)
    culprit = None
    for i, a in enumerate(args):
        try:
            _native.encode(a, typed, _fallback)
        except TypeError as e:
            name = names[i] if i < len(names) else f"#{i}"
            culprit = (name, a, e)
            break
    else:
        for k, v in kwargs.items():
            try:
                _native.encode(v, typed, _fallback)
            except TypeError as e:
                culprit = (k, v, e)
                break
    qual = getattr(func, "__qualname__", repr(func))
    if culprit is None:
        return TypeError(f"picocache: the arguments of {qual}() cannot be used as a cache key: {err}")
    name, value, e = culprit
    hint = ""
    if name in ("self", "cls"):
        hint = (" For a method, define __picocache_key__(self) on the class (return what identifies "
                "the instance), or decorate with ignore=['self'] if the result does not depend on it.")
    return TypeError(
        f"picocache: argument {name!r} of {qual}() (a {type(value).__qualname__}) cannot be used "
        f"as a cache key: {e}.{hint}"
    )


def _digest_key(key: bytes) -> bytes:
    if len(key) <= _MAX_KEY:
        return key
    import hashlib

    return b"\xffH" + hashlib.blake2b(key, digest_size=32).digest()
