"""DjangoCache's namespace: entries in ``django.core.cache.caches[alias]``.

Layout (every key starts with ``picocache:<digest of the function name>``):

- ``...:gen``: the function's generation, a random token. ``cache_clear()``
  replaces it, so every older entry becomes unreachable in every process at
  once, then deletes the old generation's keys. It is stored with no timeout;
  if the backend loses it, a new token is made (the old entries turn into
  misses, never stale hits).
- ``...:<gen>:<digest of the key>``: an entry, stored as ``(key, value,
  expiry)`` (a digest collision is then a miss; the expiry, Unix seconds or
  None, tells every process's layer how long it may hold the value), with
  the alias's timeout (or ``timeout``).
- ``...:<gen>:n`` and ``...:<gen>:s<i>``: the entries' keys, so that
  ``cache_clear()`` can delete them: every store takes a sequence number
  ``n`` from the atomic ``incr`` of the counter and writes its key into slot
  ``n - 1``, with the entry's timeout.

``maxsize``, as in the original picocache, bounds an in-process
``lru_cache``-like layer over Django's cache, not Django's cache: Django's
own limits (``TIMEOUT``, ``MAX_ENTRIES``, the backend's eviction) bound the
persistent side, and a key the layer evicted is still served by Django (the
function does not run again). ``maxsize=None``: the layer is unbounded and
Django's timeout is the only limit. ``cache_info().currsize`` is the layer's
size. Every lookup still reads the function's generation from Django, so a
``cache_clear()`` in any process is seen at once.
- ``...:lease:<digest>``: a lease taken with ``add`` (atomic on every
  backend but the file cache), so concurrent callers compute a key once.

``cache_clear()`` never calls the alias's ``clear()``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
import threading
from collections import OrderedDict
from typing import Any, Callable, Optional

from . import _native

_LEASE_TTL = 60
#: Most old entries a cache_clear() deletes one by one.
_MAX_SLOTS = 100_000


def _h(b: bytes, n: int = 16) -> str:
    return hashlib.blake2b(b, digest_size=n).hexdigest()


class _DjangoLease:
    def __init__(self, cache: Any, key: str, token: str) -> None:
        self.cache, self.key, self.token = cache, key, token

    def release(self) -> None:
        try:
            if self.cache.get(self.key) == self.token:
                self.cache.delete(self.key)
        except Exception:  # noqa: BLE001 - a lease expires anyway
            pass

    def __enter__(self) -> "_DjangoLease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _wrap(fn: Callable) -> Callable:
    """Turns a Django cache failure into CacheUnavailable."""

    def inner(self: "DjangoNamespace", *a: Any, **kw: Any) -> Any:
        try:
            return fn(self, *a, **kw)
        except _native.CacheError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _native.CacheUnavailable(f"django cache {self.alias!r}: {e!r}") from e

    return inner


class DjangoNamespace:
    """One function's entries in a Django cache alias."""

    def __init__(self, alias: str, name: str, maxsize: Optional[int], timeout: Any, typed: bool,
                 fallback: Callable, default: bool) -> None:
        from django.core.cache import caches  # noqa: F401 - fail early if Django is missing

        self.alias = alias
        self.name = name
        self.maxsize = maxsize
        self.timeout = timeout
        self.use_default_timeout = default
        self.typed = typed
        self.fallback = fallback
        self.base = "picocache:" + _h(name.encode(), 12)
        #: The in-process layer: key -> (generation, stored value, monotonic
        #: expiry or None), LRU order.
        self.layer: "OrderedDict[bytes, tuple]" = OrderedDict()
        self.layer_lock = threading.Lock()

    def _timeout(self, c: Any, ttl: Optional[float]) -> Optional[float]:
        """The entry's timeout in seconds (None: never expires)."""
        return ttl if ttl is not None else (c.default_timeout if self.use_default_timeout else self.timeout)

    def _remember(self, gen: str, key: bytes, value: bytes, expires: Optional[float]) -> None:
        """Keeps the entry in the layer until `expires` (wall clock; None:
        no expiry), never longer than Django keeps it."""
        if self.maxsize == 0 or (expires is not None and expires <= time.time()):
            return
        with self.layer_lock:
            self.layer[key] = (gen, value, expires)
            self.layer.move_to_end(key)
            if self.maxsize is not None:
                while len(self.layer) > self.maxsize:
                    self.layer.popitem(last=False)  # the layer only: Django keeps it

    # -- helpers ----------------------------------------------------------
    @property
    def cache(self) -> Any:
        from django.core.cache import caches

        return caches[self.alias]

    def _set(self, c: Any, k: str, v: Any) -> None:
        if self.use_default_timeout:
            c.set(k, v)
        else:
            c.set(k, v, timeout=self.timeout)

    def _gen(self, c: Any) -> str:
        gk = self.base + ":gen"
        g = c.get(gk)
        if g is None:
            c.add(gk, uuid.uuid4().hex, timeout=None)
            g = c.get(gk)
            if g is None:  # a backend that keeps nothing (DummyCache)
                g = "0"
        return g

    def _dkey(self, gen: str, key: bytes) -> str:
        return f"{self.base}:{gen}:{_h(key)}"

    def _slots(self, c: Any, gen: str) -> list:
        n = c.get(f"{self.base}:{gen}:n") or 0
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > _MAX_SLOTS:
            # Not ours, or more than a clear deletes one by one: the new
            # generation makes the old entries unreachable anyway.
            return []
        return [f"{self.base}:{gen}:s{i}" for i in range(n)]

    # -- the namespace interface ------------------------------------------
    def key(self, args: tuple, kwargs: Optional[dict] = None) -> bytes:
        return _native.encode_call(args, kwargs, self.typed, self.fallback)

    def lookup(self, args: tuple, kwargs: Optional[dict] = None) -> Optional[bytes]:
        return self.get(self.key(args, kwargs))

    @_wrap
    def get(self, key: bytes) -> Optional[bytes]:
        c = self.cache
        gen = self._gen(c)
        with self.layer_lock:
            held = self.layer.get(key)
            if held is not None:
                if held[0] == gen and (held[2] is None or time.time() < held[2]):
                    self.layer.move_to_end(key)
                    return held[1]
                del self.layer[key]
        got = c.get(self._dkey(gen, key))
        if isinstance(got, tuple) and len(got) == 3 and got[0] == key:
            self._remember(gen, key, got[1], got[2])
            return got[1]
        return None

    @_wrap
    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        if self.maxsize == 0:
            return
        c = self.cache
        gen = self._gen(c)
        dkey = self._dkey(gen, key)
        t = self._timeout(c, ttl)
        expires = None if t is None else time.time() + t
        entry = (key, value, expires)  # the expiry: for the layers of every process
        if ttl is not None:
            c.set(dkey, entry, timeout=ttl)
        else:
            self._set(c, dkey, entry)
        self._remember(gen, key, value, expires)
        ctr = f"{self.base}:{gen}:n"
        c.add(ctr, 0, timeout=None)
        try:
            n = c.incr(ctr)
        except ValueError:  # the counter was evicted between add and incr
            c.add(ctr, 0, timeout=None)
            n = c.incr(ctr)
        slot = f"{self.base}:{gen}:s{n - 1}"
        if ttl is not None:
            c.set(slot, dkey, timeout=ttl)
        else:
            self._set(c, slot, dkey)

    @_wrap
    def remove(self, key: bytes) -> bool:
        c = self.cache
        with self.layer_lock:
            self.layer.pop(key, None)
        return bool(c.delete(self._dkey(self._gen(c), key)))

    @_wrap
    def clear(self) -> None:
        c = self.cache
        with self.layer_lock:
            self.layer.clear()
        old = self._gen(c)
        c.set(self.base + ":gen", uuid.uuid4().hex, timeout=None)
        slots = self._slots(c, old)
        if slots:
            targets = [v for v in c.get_many(slots).values() if isinstance(v, str)]
            c.delete_many(targets + slots + [f"{self.base}:{old}:n"])
        else:
            c.delete(f"{self.base}:{old}:n")

    @_wrap
    def stats(self) -> dict:
        """``entries``: the in-process layer's (the original's ``currsize``)."""
        gen = self._gen(self.cache)
        with self.layer_lock:
            now = time.time()
            stale = [k for k, (g, _, e) in self.layer.items() if g != gen or (e is not None and now >= e)]
            for k in stale:
                del self.layer[k]
            entries = len(self.layer)
        return {"entries": entries, "bytes": 0, "hits": 0, "misses": 0, "evictions": 0}

    @_wrap
    def lease(self, key: bytes, wait: float) -> Optional[_DjangoLease]:
        c = self.cache
        lk = f"{self.base}:lease:{_h(key)}"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        pause = 0.002
        while True:
            if c.add(lk, token, timeout=_LEASE_TTL):
                return _DjangoLease(c, lk, token)
            if time.monotonic() >= deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
