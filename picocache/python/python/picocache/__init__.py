"""PicoCache: persistent, process-shared memoization.

A ``functools.lru_cache`` whose entries live in a store: the embedded local
engine (:class:`LocalCache`), SQLite (:class:`SQLiteCache`), PostgreSQL or
MySQL/MariaDB (:class:`SQLAlchemyCache`), Redis (:class:`RedisCache`) or
Django's cache framework (:class:`DjangoCache`)::

    from picocache import LocalCache

    cache = LocalCache()

    @cache
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)
"""

from . import _native

if _native.__dict__.get("Wrapper") is None:
    # A program that embeds Python, finalized it and initialized it again in
    # the same process: PyO3 hands back the module object of the first
    # interpreter, whose attributes finalization set to None. Nothing of it
    # may be used (its types belong to the finalized interpreter).
    raise ImportError(
        "picocache cannot be imported again in this process: its native module was initialized by an "
        "interpreter that has since been finalized (PyO3 extension modules initialize once per process)"
    )

from ._native import (
    CacheCorrupted,
    CacheError,
    CacheFull,
    CacheInvalidArgument,
    CacheReadOnly,
    CacheRejected,
    CacheTooLarge,
    CacheUnavailable,
    __version__,
)
from . import plain
from ._core import BaseCache, CacheInfo, function_name
from ._caches import (
    DjangoCache,
    LocalCache,
    PicoCache,
    RedisCache,
    SQLAlchemyCache,
    SQLiteCache,
)

__all__ = [
    "BaseCache",
    "CacheCorrupted",
    "CacheError",
    "CacheFull",
    "CacheInfo",
    "CacheInvalidArgument",
    "CacheReadOnly",
    "CacheRejected",
    "CacheTooLarge",
    "CacheUnavailable",
    "DjangoCache",
    "LocalCache",
    "PicoCache",
    "RedisCache",
    "SQLAlchemyCache",
    "SQLiteCache",
    "function_name",
    "plain",
    "__version__",
]
