"""The decorator machinery shared by every cache class."""

from __future__ import annotations

import functools
import _thread  # threading's C core: threading itself costs ~1.5 ms at import
import weakref

# `import picocache` loads no more than it needs (issue 16): typing, logging,
# hashlib and pickle's Python module are imported when first used, if ever.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional, overload
else:
    def overload(func):  # the runtime never calls the @overload stubs
        return func

from . import _native
from ._naming import function_name, serializer_identity
from ._batch import as_calls, run_batch
from ._seal import secret_list
from . import _values
from ._native import CacheError, CacheRejected

from ._serial import _value_serializer
from ._async import async_wrapper
from ._state import (
    _CACHES,
    _MISS,
    _UNSET,
    CacheInfo as CacheInfo,  # re-exported: picocache.CacheInfo
    _CachedFunction,
    _FunctionState,
    _arg_names,
    _digest_key,
    _explain_key_error,
    _is_coroutine_function,
    logger as logger,  # re-exported for _open
)

if TYPE_CHECKING:
    from ._typing import CachedFunction, P, R


class _NoFlight:
    """The flight handle of a call that computes without leading one."""

    def complete(self, value: Any) -> None:
        pass

    def fail(self) -> None:
        pass


_NO_FLIGHT = _NoFlight()


def _lease_timeout(v: Any) -> float:
    """``lease_timeout`` checked at construction: seconds >= 0; infinity (wait
    as long as it takes) is kept as about 136 years, as a huge finite value
    is. Anything else raises here, not at every call."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise ValueError(f"lease_timeout must be a number of seconds >= 0, not {v!r}")
    return min(float(v), 2.0 ** 32)


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
        self.lease_timeout = _lease_timeout(lease_timeout)
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

    def _value_identity(self) -> Optional[str]:
        """The identity of the value serializer in namespace names (None for
        the default: picocache._naming.serializer_identity), made once."""
        vid = self.__dict__.get("_value_id", _UNSET)
        if vid is _UNSET:
            vid = self._value_id = serializer_identity(self.value_serializer)
        return vid  # type: ignore[no-any-return]

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
        st.shaping = (ignore, key, self.key_serializer)  # (part of the namespace's identity)
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
                st.counts.miss()
                return func(*args, **kwargs)
            # One table for the process (native, shared with the native
            # miss path), by cache, namespace and key: two functions of
            # one name in two stores must not hand each other results.
            role, fl = _native.flight_join(id(st.cache), st.store_name, k)
            if role == 2:
                # Re-entrant: this thread is computing this key already
                # (the function calls itself with the same arguments).
                # Run the body, as functools.lru_cache does: a recursion
                # that ends returns its value, one that does not raises
                # RecursionError; waiting here would never return.
                st.counts.miss()
                return func(*args, **kwargs)
            if role == 1:
                ok, value = fl.wait(owner.lease_timeout)
                if ok:
                    st.counts.hit()
                    return value
                # The leader raised, handed over nothing (a mutable result,
                # stored: the look again below finds it) or took longer than
                # lease_timeout: compute without leading (waiters of a
                # failing computation fail side by side).
                fl = _NO_FLIGHT
            if st.read_only:  # nothing can be stored: no lease, no store
                st.counts.miss()
                try:
                    value = func(*args, **kwargs)
                except BaseException:
                    fl.fail()  # the waiters try again
                    raise
                fl.complete(value)
                return value
            lease = None
            try:
                try:
                    if st.native:
                        # Lease, then look again: another process may have
                        # stored the value while we waited (one native call).
                        lease, v = ns.lease_fetch(k, owner.lease_timeout, loads, _MISS, keep)
                        if v is not _MISS:
                            st.counts.hit()
                            fl.complete(v)
                            return v
                    else:
                        lease = ns.lease(k, owner.lease_timeout)
                        # Look again (with or without a lease: another thread
                        # or process may have stored it since our lookup).
                        raw = ns.get(k, True)  # a rejected entry was reported
                        if raw is not None:
                            v = decode(raw, ns, k)
                            if v is not _MISS:
                                st.counts.hit()
                                fl.complete(v)
                                return v
                except CacheError as e:
                    fail(e, "taking a lease")
                st.counts.miss()
                value = func(*args, **kwargs)
                store(ns, k, value)
                if lease is not None:
                    lease.release()
                    lease = None
                fl.complete(value)
                return value
            finally:
                if lease is not None:
                    lease.release()
                fl.fail()  # (nothing if completed)

        if _is_coroutine_function(func):
            wrapper: Callable = async_wrapper(owner, st, func, typed, fast, lookup_raw, decode,
                                              encode_or_explain, store, fail)
        else:
            def swrapper(*args: Any, **kwargs: Any) -> Any:
                if st.maxsize == 0:
                    st.counts.miss()
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
                        st.counts.hit()
                        return v
                    return compute_sync(args, kwargs)
                if st.unnamed is not None:
                    st.counts.miss()
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
                        st.counts.hit()
                        return v
                return compute_sync(args, kwargs)

            wrapper = swrapper
            if fast and st.maxsize != 0:
                # A miss of a native namespace runs natively too (flights,
                # lease, the function, store: _native's miss.rs).
                native_miss = (func, dumps, fail, st, id(self), keep,
                               _values.plain_dumps if self.value_serializer is None else None)
                wrapper = _CachedFunction(swrapper, compute_sync, _MISS, st.counts, native_miss)
                wrapper._install_vectorcall()  # calls without a tuple (once per class)
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
        if st._store_name is None or st.ns is None:
            return  # never stored anything
        g = self._gone.setdefault(st._store_name, {"hits": 0, "misses": 0})
        hits, misses = st.counts.value()
        g["hits"] += hits
        g["misses"] += misses
        g["open"] = (st.maxsize, st.ttl, st.typed, st.max_bytes)

    def _gone_namespaces(self, live: list) -> list:
        """The namespaces of dropped functions that no live one shares."""
        names = {st._store_name for st in live}
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
