"""The decorator machinery shared by every cache class."""

from __future__ import annotations

import collections
import functools
import itertools
import os
import sys
import _thread  # threading's C core: threading itself costs ~1.5 ms at import
import time
import weakref

try:  # the C pickler that `pickle` itself re-exports, without `pickle`'s own imports (re, enum)
    from _pickle import dumps as _pickle_dumps, loads as _pickle_loads
except ImportError:  # pragma: no cover - Python without the C accelerator
    from pickle import dumps as _pickle_dumps, loads as _pickle_loads

# `import picocache` loads no more than it needs (issue 16): typing, logging,
# hashlib and pickle's Python module are imported when first used, if ever.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, NamedTuple, Optional, overload
else:
    def overload(func):  # the runtime never calls the @overload stubs
        return func

from . import _native
from ._keys import IdentityError, fallback as _fallback
from ._naming import function_name
from ._batch import as_calls, run_batch
from ._seal import secret_list
from . import _values
from ._native import CacheError, CacheReadOnly, CacheRejected, CacheTooLarge

if TYPE_CHECKING:
    from ._typing import CachedFunction, P, R


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
#: with a marker (the engine limits keys to 1 MiB).
_MAX_KEY = 64 * 1024

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


class _Flights:
    """The computations in flight in this process, by (namespace name, key):
    one table for every wrapper, so two wrappers of one namespace (name=
    given twice, two equal closures) wait for each other, and a thread that
    re-enters its own computation through either is seen doing so."""

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.table: dict = {}


_flights = _Flights()


def _after_fork_in_child() -> None:
    global _flights
    # Threads that were computing in the parent do not exist here.
    _flights = _Flights()
    _native._after_fork_in_child()
    for st in list(_STATES):
        st.reset_after_fork()
    for c in list(_CACHES):
        c._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _counter_value(c: "itertools.count[int]") -> int:
    return c.__reduce__()[1][0]  # type: ignore[index]


class _PickleSerializer:
    """The default value serializer: pickle with the default protocol."""

    dumps = staticmethod(_pickle_dumps)  # protocol None: pickle.DEFAULT_PROTOCOL
    loads = staticmethod(_pickle_loads)


def _value_serializer(vs: Any) -> tuple:
    if vs is None:
        # Pickle, large buffers (arrays) out of band: see picocache._values.
        return _values.dumps, _values.loads
    if isinstance(vs, tuple) and len(vs) == 2:
        dumps, loads = vs
    elif hasattr(vs, "dumps") and hasattr(vs, "loads"):
        dumps, loads = vs.dumps, vs.loads
    else:
        raise TypeError(
            "value_serializer must have dumps() and loads() (like the pickle module) "
            "or be a (dumps, loads) pair"
        )
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


class _Flight:
    """One in-process computation of a key that other threads wait for."""

    __slots__ = ("done", "ok", "value", "owner")

    def __init__(self) -> None:
        #: The thread computing: a call of the same key from that thread is
        #: re-entrant (waiting would deadlock).
        self.owner = _thread.get_ident()
        # Held by the leader until it finishes; waiters block on it. (A
        # plain lock: a threading.Event costs a Condition per miss.)
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.ok = False
        self.value: Any = None

    def wait(self) -> None:
        self.done.acquire()
        self.done.release()


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
        self.native_hits_count = _native.Hits()
        self.ns_lock = _thread.allocate_lock()
        self.hits = itertools.count()
        self.misses = itertools.count()
        self.async_inflight: dict = {}
        self.last_warn = 0.0
        self.suppressed = 0
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

    def __del__(self) -> None:
        # The function was dropped (a closure made per call, a redefined
        # function): its cache object keeps what clear() and cache_info()
        # need, not the function and everything its closure holds.
        try:
            self.cache._state_gone(self)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def reset_after_fork(self) -> None:
        # Threads that were computing in the parent do not exist here.
        self.async_inflight = {}
        self.ns_lock = _thread.allocate_lock()

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
        now = time.monotonic()
        if now < self.retry_at:
            if self.read_only_open is not None:
                raise self.read_only_open  # said once (failed() knows it)
            raise _native.CacheUnavailable(
                f"picocache: the store of {self.label} is unavailable (retrying shortly)"
            )
        with self.ns_lock:
            if self.ns is None:
                try:
                    name = self.name
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
        now = time.monotonic()
        if now - self.last_warn >= 1.0:
            extra = f" ({self.suppressed} more suppressed)" if self.suppressed else ""
            logger.warning("picocache: %s failed for %s in %r: %s%s; the function's own result is returned",
                           what, self.label, self.cache, e, extra)
            self.last_warn = now
            self.suppressed = 0
        else:
            self.suppressed += 1

    def info(self) -> CacheInfo:
        currsize = 0
        if self.maxsize != 0 and self.unnamed is None:
            try:
                currsize = int(self.namespace().stats()["entries"])
            except CacheError as e:
                self.failed(e, "cache_info")
            except TypeError:  # a function that cannot be named caches nothing
                pass
        return CacheInfo(_counter_value(self.hits) + self.native_hits(), _counter_value(self.misses),
                         self.maxsize, currsize)

    def native_hits(self) -> int:
        """Hits the native wrapper answered (0 without one)."""
        return int(self.native_hits_count.value())

    def clear(self) -> None:
        try:
            if self.unnamed is None:
                self.namespace().clear()
        except CacheError as e:
            self.failed(e, "cache_clear")
        except TypeError:  # a function that cannot be named caches nothing
            pass
        self.hits = itertools.count()
        self.misses = itertools.count()
        self.native_hits_count.reset()


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


class BaseCache:
    """The base of every cache class: a decorator factory.

    ``@cache``, ``@cache()``, ``@cache(maxsize)``, ``@cache(maxsize, typed)``,
    ``cache(function)`` and ``@cache(**options)`` decorate a function with
    ``functools.lru_cache`` semantics, the entries kept in the store.

    Options of every cache class (keyword arguments of the constructor):

    - ``default_maxsize=None``: the ``maxsize`` of functions that give none
      (None: no limit, as in picocache 1.4);
    - ``default_typed=False``, ``default_ttl=None`` (seconds),
      ``default_max_bytes=None``: the same for ``typed``, ``ttl``, ``max_bytes``;
    - ``version=None``: appended to every function's name (a new version
      starts from an empty cache);
    - ``strict=False``: a cache failure raises (``CacheError`` subclasses)
      instead of being logged while the function's value is returned;
    - ``lease_timeout=60.0``: how long a call waits for another process
      computing the same arguments before computing them too;
    - ``key_serializer=None``: ``(args, kwargs) -> bytes`` instead of the
      canonical key encoding;
    - ``value_serializer=None``: an object with ``dumps``/``loads`` (or a
      ``(dumps, loads)`` pair; ``json`` works; ``picocache.plain`` stores plain
      data without pickle) instead of pickle;
    - ``secret=None`` / ``secrets=None``: the secret(s) entries are sealed
      with (default: ``$PICOCACHE_SECRET``, else a per-user secret file);
    - ``default_mmap_mode=None``: the ``mmap_mode`` of functions that give none.

    Options of the decorator: ``maxsize``, ``typed``, ``ttl`` (seconds),
    ``max_bytes`` (native stores), ``version``, ``name`` (replaces the
    function's name), ``strict``, ``ignore`` (argument names or positions left
    out of the key), ``key`` (a function of the arguments giving the key),
    ``mmap_mode`` (``"r"``: large arrays of a hit come back read-only, without
    the copy that makes them writable; never a map of the store's files: see
    FORMAT.md, "Framed values").

    A decorated function has ``cache_info()``, ``cache_clear()`` (alias
    ``clear()``), ``cache_parameters()``, ``cache_stats()`` (the store's
    counters), ``map(iterable)`` and ``starmap(iterable)``.
    """

    #: Whether a cache failure raises (True) or is logged (False).
    strict: bool
    #: Whether the store's client blocks an event loop (run it in a thread).
    _blocking_io = False

    def __init__(self, *, default_maxsize: Optional[int] = None, default_typed: bool = False,
                 key_serializer: Optional[Callable[[tuple, dict], bytes]] = None,
                 value_serializer: Any = None, strict: bool = False,
                 default_ttl: Optional[float] = None, lease_timeout: float = 60.0,
                 version: Any = None, secret: Any = None, secrets: Any = None,
                 default_max_bytes: Optional[int] = None, default_mmap_mode: Optional[str] = None) -> None:
        self.default_maxsize = default_maxsize
        self.default_typed = default_typed
        self.key_serializer = key_serializer
        self.value_serializer = value_serializer
        self._dumps, self._loads = _value_serializer(value_serializer)
        self.default_mmap_mode = _values.check_mmap_mode(default_mmap_mode, value_serializer)
        self.strict = strict
        self.default_ttl = default_ttl
        self.lease_timeout = lease_timeout
        self.version = version
        #: The byte limit of each function unless the decorator gives one.
        self.default_max_bytes = default_max_bytes
        #: The secrets entries are sealed with (None: PICOCACHE_SECRET, else
        #: the per-user secret file); never shown by repr.
        self._secrets = secret_list(secret, secrets)
        self._sealer_obj: Any = None
        self._functions: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()
        #: The live functions' states (weakly: a dropped function is
        #: collected, as with functools.lru_cache), and, by namespace name,
        #: what clear() and cache_info() need of the dropped ones.
        self._states: "weakref.WeakSet[_FunctionState]" = weakref.WeakSet()
        self._gone: dict = {}
        _CACHES.add(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # (Without this, pickle failed on an inner WeakValueDictionary with
        # an AttributeError.) A cache holds its open store and its secrets:
        # it is made again in each process, not sent to one.
        raise TypeError(f"cannot pickle a {type(self).__name__} object: it holds its open store; make the "
                        "cache in the process that uses it (at module level, which a spawn worker imports)")

    def _sealer(self) -> Any:
        """The sealer of the namespaces written in Python (made once)."""
        if self._sealer_obj is None:
            self._sealer_obj = _native.Sealer(self._secrets)
        return self._sealer_obj

    # -- backend hooks ----------------------------------------------------
    #: Whether the store can bound a function's bytes (max_bytes=).
    _supports_max_bytes = False

    def _open_namespace(self, name: str, maxsize: Optional[int], ttl: Optional[float], typed: bool,
                        max_bytes: Optional[int] = None) -> Any:
        """Returns an object with lookup/key/get/put/remove/clear/stats/lease."""
        raise NotImplementedError

    def _after_fork_in_child(self) -> None:
        """Drops per-process resources in a forked child."""

    # -- the decorator ----------------------------------------------------
    @overload
    def __call__(self, func: Callable[P, R], /) -> CachedFunction[P, R]: ...

    @overload
    def __call__(self, maxsize: Optional[int] = ..., typed: bool = ..., *, version: Any = ...,
                 ttl: Optional[float] = ..., strict: Optional[bool] = ..., ignore: Iterable[Any] = ...,
                 key: Optional[Callable[..., Any]] = ..., name: Optional[str] = ...,
                 max_bytes: Optional[int] = ..., mmap_mode: Optional[str] = ...,
                 ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...

    def __call__(self, func: Any = _UNSET, /, *args: Any, **kwargs: Any) -> Any:
        """``@cache``, ``@cache()``, ``@cache(maxsize, typed)`` (positional, as
        ``functools.lru_cache`` takes them), ``@cache(maxsize=..., ...)``, or
        ``cache(user_function)``."""
        if (callable(func) or isinstance(func, (staticmethod, classmethod))) and not args and not kwargs:
            return self._decorate(func)
        if func is not _UNSET and callable(func):
            raise TypeError("picocache: options go in a call before the function: @cache(maxsize=...)")
        if func is not _UNSET:
            # @cache(128), @cache(None), @cache(128, True): lru_cache's order.
            if "maxsize" in kwargs:
                raise TypeError("picocache: maxsize given twice")
            kwargs["maxsize"] = func
            if args:
                if len(args) > 1:
                    raise TypeError("picocache: at most maxsize and typed are positional; "
                                    "use keywords for the other options")
                if "typed" in kwargs:
                    raise TypeError("picocache: typed given twice")
                kwargs["typed"] = args[0]
        elif args:
            raise TypeError("picocache: pass options as keyword arguments")

        def deco(f: Callable) -> Callable:
            return self._decorate(f, **kwargs)

        return deco

    def _decorate(self, func: Callable, maxsize: Any = _UNSET, typed: Any = _UNSET,
                  version: Any = None, ttl: Any = _UNSET, strict: Optional[bool] = None,
                  ignore: Iterable[Any] = (), key: Optional[Callable] = None,
                  name: Optional[str] = None, max_bytes: Any = _UNSET, mmap_mode: Any = _UNSET) -> Callable:
        if maxsize is _UNSET:
            maxsize = self.default_maxsize
        if maxsize is not None:
            if isinstance(maxsize, bool) or not isinstance(maxsize, int):
                raise TypeError("maxsize must be an int or None")
            maxsize = max(0, maxsize)
        if typed is _UNSET:
            typed = self.default_typed
        typed = bool(typed)
        if ttl is _UNSET:
            ttl = self.default_ttl
        if max_bytes is _UNSET:
            max_bytes = self.default_max_bytes
        if max_bytes is not None:
            if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
                raise TypeError("max_bytes must be an int >= 0 or None")
            if not self._supports_max_bytes:
                raise TypeError(f"picocache: {type(self).__name__} cannot bound bytes (max_bytes=); "
                                "its store's own limits apply")
        if mmap_mode is _UNSET:
            mmap_mode = self.default_mmap_mode
        mmap_mode = _values.check_mmap_mode(mmap_mode, self.value_serializer)
        if version is None:
            version = self.version
        if isinstance(func, (staticmethod, classmethod)):
            return type(func)(self._decorate(func.__func__, maxsize, typed, version, ttl, strict,
                                             ignore, key, name, max_bytes, mmap_mode))
        wrapper_cell: list = []  # the wrapper, a self-reference in a recursive closure

        def name_fn() -> str:
            return function_name(func, version, self_obj=wrapper_cell[0]() if wrapper_cell else None)

        st = _FunctionState(self, func, name, name_fn, maxsize, typed, ttl, strict)
        st.max_bytes = max_bytes
        if mmap_mode is not None:
            st.loads = _values.loads_readonly
        self._states.add(st)
        owner = self

        # Argument transformation: ignore= and key=.
        ignore = list(ignore or ())
        transform = None
        if ignore or key is not None:
            names = _arg_names(func)
            ig_pos = {i for i in ignore if isinstance(i, int)}
            ig_names = {n for n in ignore if isinstance(n, str)}
            ig_pos |= {i for i, n in enumerate(names) if n in ig_names}

            def transform(args: tuple, kwargs: dict) -> tuple:
                if ig_pos:
                    args = tuple(a for i, a in enumerate(args) if i not in ig_pos)
                if ig_names:
                    kwargs = {k: v for k, v in kwargs.items() if k not in ig_names}
                if key is not None:
                    return (key(*args, **kwargs),), None
                return args, kwargs

        key_serializer = self.key_serializer

        def make_key(ns: Any, args: tuple, kwargs: dict) -> bytes:
            if transform is not None:
                args, kwargs = transform(args, kwargs)
            if key_serializer is not None:
                k = key_serializer(args, kwargs)
                if not isinstance(k, bytes):
                    raise TypeError("key_serializer must return bytes")
                return b"\xfeU" + k
            return _digest_key(ns.key(args, kwargs))

        def encode_or_explain(ns: Any, args: tuple, kwargs: dict) -> bytes:
            try:
                return make_key(ns, args, kwargs)
            except TypeError as e:
                if transform is not None or key_serializer is not None:
                    raise
                raise _explain_key_error(func, typed, args, kwargs, e) from None

        def fail(e: BaseException, what: str) -> None:
            st.failed(e, what, strict)

        dumps, loads = self._dumps, st.loads
        fast = transform is None and key_serializer is None
        # Decoded results are kept in the process (immutable ones, local
        # engine) only with the default serializer: a custom loads sees
        # every hit.
        keep = self.value_serializer is None

        def lookup_raw(args: tuple, kwargs: dict) -> Any:
            """(key or None, raw value or None); raises TypeError for bad args."""
            ns = st.namespace()
            if fast:
                return None, ns.lookup(args, kwargs)
            k = encode_or_explain(ns, args, kwargs)
            return k, ns.get(k)

        def decode(raw: Any, ns: Any, k: Optional[bytes]) -> Any:
            try:
                return loads(raw)
            except Exception as e:  # noqa: BLE001 - an unreadable value is a miss
                logger.info("picocache: a stored value of %s does not load (%s); recomputing", st.label, e)
                return _MISS

        def store(ns: Any, k: bytes, value: Any) -> None:
            try:
                data = dumps(value)
            except Exception as e:  # noqa: BLE001
                fail(CacheError(f"the result cannot be serialized: {e!r}"), "storing a result")
                return
            try:
                if st.native and keep:
                    ns.put(k, data, None, value)
                else:
                    ns.put(k, data, None)
            except CacheError as e:
                fail(e, "storing a result")

        def compute_sync(args: tuple, kwargs: dict) -> Any:
            # A miss (or an uncacheable call): dedupe in-process, then across
            # processes with the store's lease.
            try:
                ns = st.namespace()
                k = encode_or_explain(ns, args, kwargs)
            except CacheError as e:
                fail(e, "opening the store")
                next(st.misses)
                return func(*args, **kwargs)
            while True:
                # The store counts: two functions of one name in two stores
                # must not hand each other their results.
                fkey = (id(st.cache), st._name, k)
                with _flights.lock:
                    fl = _flights.table.get(fkey)
                    leader = fl is None
                    if leader:
                        fl = _flights.table[fkey] = _Flight()
                if leader:
                    break
                if fl.owner == _thread.get_ident():
                    # Re-entrant: this thread is computing this key already
                    # (the function calls itself with the same arguments).
                    # Run the body, as functools.lru_cache does: a recursion
                    # that ends returns its value, one that does not raises
                    # RecursionError; waiting here would never return.
                    next(st.misses)
                    return func(*args, **kwargs)
                fl.wait()
                if fl.ok:
                    next(st.hits)
                    return fl.value
                # The leader raised: compute again (exceptions are not cached).
            if st.read_only:  # nothing can be stored: no lease, no store
                try:
                    next(st.misses)
                    value = func(*args, **kwargs)
                    fl.value, fl.ok = value, True
                    return value
                finally:
                    with _flights.lock:
                        if _flights.table.get(fkey) is fl:
                            del _flights.table[fkey]
                    fl.done.release()
            lease = None
            try:
                try:
                    if st.native:
                        # Lease, then look again: another process may have
                        # stored the value while we waited (one native call).
                        lease, v = ns.lease_fetch(k, owner.lease_timeout, loads, _MISS, keep)
                        if v is not _MISS:
                            next(st.hits)
                            fl.value, fl.ok = v, True
                            return v
                    else:
                        lease = ns.lease(k, owner.lease_timeout)
                        # Look again (with or without a lease: another thread
                        # or process may have stored it since our lookup).
                        raw = ns.get(k, True)  # a rejected entry was reported
                        if raw is not None:
                            v = decode(raw, ns, k)
                            if v is not _MISS:
                                next(st.hits)
                                fl.value, fl.ok = v, True
                                return v
                except CacheError as e:
                    fail(e, "taking a lease")
                next(st.misses)
                value = func(*args, **kwargs)
                store(ns, k, value)
                fl.value, fl.ok = value, True
                return value
            finally:
                if lease is not None:
                    try:
                        lease.release()
                    except CacheError as e:  # pragma: no cover - release is best effort
                        fail(e, "releasing a lease")
                with _flights.lock:
                    if _flights.table.get(fkey) is fl:
                        del _flights.table[fkey]
                fl.done.release()

        if _is_coroutine_function(func):
            import asyncio  # only for async functions (importing it costs ~40 ms)

            blocking = owner._blocking_io

            async def io(fn: Callable, *a: Any) -> Any:
                # Django's and SQLAlchemy's clients block (and Django refuses
                # to touch a database from an event loop): run them in a thread.
                if blocking:
                    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *a))
                return fn(*a)

            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                if st.maxsize == 0 or st.unnamed is not None:
                    next(st.misses)
                    return await func(*args, **kwargs)
                try:
                    k, raw = await io(lookup_raw, args, kwargs)
                except TypeError as e:
                    if fast:
                        raise _explain_key_error(func, typed, args, kwargs, e) from None
                    raise
                except CacheRejected as e:
                    # The store works: compute, and the result replaces the entry.
                    fail(e, "a lookup")
                    k, raw = None, None
                except CacheError as e:
                    fail(e, "a lookup")
                    next(st.misses)
                    return await func(*args, **kwargs)
                ns = st.ns
                if raw is not None:
                    v = decode(raw, ns, k)
                    if v is not _MISS:
                        next(st.hits)
                        return v
                if k is None:
                    k = encode_or_explain(ns, args, kwargs)
                loop = asyncio.get_running_loop()
                task = asyncio.current_task()
                while True:
                    fut, leader_task = st.async_inflight.get(k, (None, None))
                    if fut is None or fut.get_loop() is not loop:
                        break
                    if leader_task is task:
                        # Re-entrant: this task awaits its own computation of
                        # this key; run the body (see compute_sync).
                        next(st.misses)
                        return await func(*args, **kwargs)
                    try:
                        v = await asyncio.shield(fut)
                    except BaseException:  # noqa: BLE001 - the leader failed: compute ourselves
                        continue
                    next(st.hits)
                    return v
                fut = loop.create_future()
                st.async_inflight[k] = (fut, task)
                try:
                    # Another leader may have finished since our lookup.
                    try:
                        raw = await io(ns.get, k, True)
                    except CacheError as e:
                        fail(e, "a lookup")
                        raw = None
                    if raw is not None:
                        v = decode(raw, ns, k)
                        if v is not _MISS:
                            next(st.hits)
                            fut.set_result(v)
                            return v
                    next(st.misses)
                    value = await func(*args, **kwargs)
                    await io(store, ns, k, value)
                    fut.set_result(value)
                    return value
                except BaseException as e:
                    fut.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
                    fut.exception()  # retrieved: no "never retrieved" warning
                    raise
                finally:
                    if st.async_inflight.get(k, (None,))[0] is fut:
                        del st.async_inflight[k]

            wrapper: Callable = awrapper
        else:
            def swrapper(*args: Any, **kwargs: Any) -> Any:
                if st.maxsize == 0:
                    next(st.misses)
                    return func(*args, **kwargs)
                lv = st.lookup_value
                if lv is not None and fast:
                    # The hit path: encode, look up and decode in one call
                    # (native: repeat hits of immutable results skip the decode).
                    try:
                        v = lv(args, kwargs)
                    except TypeError as e:
                        raise _explain_key_error(func, typed, args, kwargs, e) from None
                    except CacheError as e:
                        fail(e, "a lookup")
                        v = _MISS
                    if v is not _MISS:
                        next(st.hits)
                        return v
                    return compute_sync(args, kwargs)
                if st.unnamed is not None:
                    next(st.misses)
                    return func(*args, **kwargs)
                try:
                    k, raw = lookup_raw(args, kwargs)
                except TypeError as e:
                    if fast:
                        raise _explain_key_error(func, typed, args, kwargs, e) from None
                    raise
                except CacheError as e:
                    fail(e, "a lookup")
                    raw = None
                if raw is not None:
                    v = decode(raw, st.ns, k)
                    if v is not _MISS:
                        next(st.hits)
                        return v
                return compute_sync(args, kwargs)

            wrapper = swrapper
            if fast and st.maxsize != 0:
                wrapper = _CachedFunction(swrapper, compute_sync, _MISS, st.native_hits_count)
                st.fast_wrapper = weakref.ref(wrapper)

        functools.update_wrapper(wrapper, func)
        wrapper_cell.append(weakref.ref(wrapper))  # weakly: the state must not keep the wrapper alive
        wrapper.__picocache_state__ = st  # type: ignore[attr-defined]

        def cache_info() -> CacheInfo:
            """Hits and misses of this function in this process (like
            functools.lru_cache), its maxsize, and currsize: the entries the
            store holds for it (every process)."""
            return st.info()

        def cache_clear() -> None:
            """Removes this function's entries (in every process) and resets
            its counters."""
            st.clear()

        def cache_parameters() -> dict:
            params = {"maxsize": st.maxsize, "typed": st.typed, "ttl": st.ttl, "name": st.name}
            if st.max_bytes is not None:
                params["max_bytes"] = st.max_bytes
            if mmap_mode is not None:
                params["mmap_mode"] = mmap_mode
            return params

        def cache_stats() -> dict:
            """The store's own statistics of this function (every process)."""
            return dict(st.namespace().stats())

        wrapper.cache_info = cache_info  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        wrapper.clear = cache_clear  # type: ignore[attr-defined]
        wrapper.cache_parameters = cache_parameters  # type: ignore[attr-defined]
        wrapper.cache_stats = cache_stats  # type: ignore[attr-defined]

        def batch(iterable: Iterable[Any], star: bool, executor: Any) -> list:
            if _is_coroutine_function(func):
                raise TypeError("picocache: map/starmap take a plain function, not a coroutine function")
            code = getattr(func, "__code__", None)
            first_arg = code.co_varnames[0] if code is not None and code.co_argcount else None
            if first_arg in ("self", "cls"):
                # obj.method.map(...) reaches this function unbound: the
                # instance would be lost.
                raise TypeError("picocache: map/starmap are for functions, not methods; "
                                "call the method in a loop")
            calls = as_calls(iterable, star)
            if st.unnamed is not None:
                return [func(*a, **kw) for a, kw in calls]
            submit = func
            if executor is not None:
                import concurrent.futures

                if isinstance(executor, concurrent.futures.ProcessPoolExecutor):
                    submit = wrapper  # pickled by name: the module's attribute is the wrapper
            return run_batch(st, func, calls, encode_or_explain, loads, dumps, fail, executor, CacheError,
                             CacheRejected, submit)

        def map_(iterable: Iterable[Any], *, executor: Any = None) -> list:
            """``[f(x) for x in iterable]`` with one lookup for all of them
            in the store, running only the misses (in ``executor`` if given:
            a ``concurrent.futures`` executor) and storing them at once."""
            return batch(iterable, False, executor)

        def starmap(iterable: Iterable[Any], *, executor: Any = None) -> list:
            """``[f(*args) for args in iterable]``, as ``map``."""
            return batch(iterable, True, executor)

        wrapper.map = map_  # type: ignore[attr-defined]
        wrapper.starmap = starmap  # type: ignore[attr-defined]
        wrapper.cache = self  # type: ignore[attr-defined]
        return wrapper

    # -- whole-cache operations (the 1.4 API) ----------------------------
    def cache_info(self) -> CacheInfo:
        """The sum over every function this cache object decorated."""
        hits = misses = currsize = 0
        live = list(self._states)
        for st in live:
            i = st.info()
            hits += i.hits
            misses += i.misses
            currsize += i.currsize
        for g in self._gone.values():
            hits += g["hits"]
            misses += g["misses"]
        for ns in self._gone_namespaces(live):
            try:
                currsize += int(ns.stats()["entries"])
            except CacheError as e:
                logger.warning("picocache: cache_info failed for %r: %s", self, e)
        return CacheInfo(hits, misses, self.default_maxsize, currsize)

    def clear(self) -> None:
        """Clears every function this cache object decorated."""
        live = list(self._states)
        for st in live:
            st.clear()
        for ns in self._gone_namespaces(live):
            try:
                ns.clear()
            except CacheError as e:
                logger.warning("picocache: cache_clear failed for %r: %s", self, e)
        for g in self._gone.values():
            g["hits"] = g["misses"] = 0

    def _state_gone(self, st: _FunctionState) -> None:
        """Keeps what clear() and cache_info() need of a dropped function."""
        if st._name is None or st.ns is None:
            return  # never stored anything
        g = self._gone.setdefault(st._name, {"hits": 0, "misses": 0})
        g["hits"] += _counter_value(st.hits) + st.native_hits()
        g["misses"] += _counter_value(st.misses)
        g["open"] = (st.maxsize, st.ttl, st.typed, st.max_bytes)

    def _gone_namespaces(self, live: list) -> list:
        """The namespaces of dropped functions that no live one shares."""
        names = {st._name for st in live}
        out = []
        for name, g in list(self._gone.items()):
            if name in names:
                continue
            maxsize, ttl, typed, max_bytes = g["open"]
            extra = {} if max_bytes is None else {"max_bytes": max_bytes}
            try:
                out.append(self._open_namespace(name, maxsize, ttl, typed, **extra))
            except CacheError as e:
                logger.warning("picocache: opening %s failed for %r: %s", name, self, e)
        return out

    cache_clear = clear
