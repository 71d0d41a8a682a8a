"""Functions for the multiprocessing tests (importable by spawn workers)."""

from __future__ import annotations

import os
import time

import picocache as pc

_CACHES: dict = {}


def cache_for(kind: str, loc: str):
    key = (kind, loc)
    if key not in _CACHES:
        if kind == "local":
            c = pc.LocalCache(loc, strict=True)
        elif kind == "sqlite":
            c = pc.SQLiteCache(loc, strict=True)
        elif kind == "redis":
            url, prefix = loc.split("|")
            c = pc.RedisCache(url, namespace=prefix, strict=True)
        else:
            raise ValueError(kind)

        def square(x, log):
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {x}\n")
            time.sleep(0.05)
            return x * x

        _CACHES[key] = c(maxsize=None, name="tests.square")(square)
    return _CACHES[key]


def run(args):
    kind, loc, log, x = args
    return x, cache_for(kind, loc)(x, log), os.getpid()
