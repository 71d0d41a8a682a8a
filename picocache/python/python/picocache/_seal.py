"""Sealed entries for the namespaces written in Python (Django's cache, an
SQLAlchemy Engine), and the ``secret=`` / ``secrets=`` options.

The native backends seal in Rust (``picocache::SealedBackend``); these
wrap a Python namespace so that its values are sealed and checked the same
way, by ``_native.Sealer``: a MAC (keyed BLAKE3; HMAC-SHA256 before issue 18,
still checked) over the namespace name, the key and
the value, checked before a byte of the value reaches ``loads``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is imported by type checkers only (import time)
if TYPE_CHECKING:
    from typing import Any, Iterable, Optional

from . import _native


def secret_list(secret: Any, secrets: Optional[Iterable[Any]]) -> Optional[list]:
    """The ``secret=`` / ``secrets=`` options as a list of bytes (the first
    seals, all check), or None for the default (``PICOCACHE_SECRET``, else
    the per-user secret file)."""
    if secret is not None and secrets is not None:
        raise TypeError("give secret= or secrets=, not both")
    if secret is None and secrets is None:
        return None
    if secret is not None:
        items = [secret]
    elif isinstance(secrets, (str, bytes, bytearray, memoryview)):
        items = [secrets]  # one secret, not a sequence of characters
    else:
        items = list(secrets)  # type: ignore[arg-type]
    if not items:
        raise ValueError("secrets= needs at least one secret")
    out = []
    for s in items:
        if isinstance(s, str):
            s = s.encode()
        if not isinstance(s, (bytes, bytearray, memoryview)):
            raise TypeError(f"a secret must be str or bytes, not {type(s).__name__}")
        s = bytes(s)
        if not s:
            raise ValueError("a secret must not be empty")
        out.append(s)
    return out


class SealedNamespace:
    """A Python namespace whose values are sealed with ``sealer``."""

    def __init__(self, inner: Any, sealer: "_native.Sealer") -> None:
        self._inner = inner
        self._sealer = sealer
        self.name = inner.name
        #: Entries of this function that failed the check (a look again
        #: after the lease does not count the same entry twice).
        self.rejected = 0

    def __getattr__(self, attr: str) -> Any:  # key, remove, clear, lease, ...
        return getattr(self._inner, attr)

    def lookup(self, args: tuple, kwargs: Optional[dict] = None) -> Optional[bytes]:
        return self.get(self._inner.key(args, kwargs))

    def get(self, key: bytes, recheck: bool = False) -> Optional[bytes]:
        stored = self._inner.get(key)
        if stored is None:
            return None
        try:
            if not isinstance(stored, (bytes, bytearray)):
                # Not written by picocache (Django's cache holds any object).
                raise _native.CacheRejected(
                    f"a stored entry of {self.name} was rejected: not signed (a "
                    f"{type(stored).__name__}, not bytes); it is treated as a miss")
            return self._sealer.open(self.name, key, bytes(stored))
        except _native.CacheRejected:
            if recheck:
                return None
            self.rejected += 1
            raise

    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        self._inner.put(key, self._sealer.seal(self.name, key, value), ttl)

    def get_many(self, keys: list) -> list:
        """As the native get_many: a rejected entry is counted and the
        first rejection raised after all were looked at (the caller then
        looks again one key at a time, quietly)."""
        out, first = [], None
        for k in keys:
            try:
                out.append(self.get(k))
            except _native.CacheRejected as e:
                out.append(None)
                first = first or e
        if first is not None:
            raise first
        return out

    def put_many(self, items: list, ttl: Optional[float] = None) -> None:
        for k, v in items:
            self.put(k, v, ttl)

    def stats(self) -> dict:
        d = dict(self._inner.stats())
        d["rejected"] = self.rejected
        return d
