"""functools.lru_cache semantics, persistent: the same checks on every backend."""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import threading
import time

import pytest

import picocache as pc


def test_decorator_forms_and_cache_info(any_cache):
    cache = any_cache()
    calls = []

    @cache
    def a(x):
        calls.append(("a", x))
        return x + 1

    @cache()
    def b(x):
        calls.append(("b", x))
        return x + 2

    @cache(maxsize=7, typed=True)
    def c(x):
        calls.append(("c", x))
        return x + 3

    assert (a(1), a(1), b(1), b(1), c(1), c(1)) == (2, 2, 3, 3, 4, 4)
    assert calls == [("a", 1), ("b", 1), ("c", 1)]
    info = a.cache_info()
    assert isinstance(info, tuple) and info._fields == ("hits", "misses", "maxsize", "currsize")
    assert info == pc.CacheInfo(1, 1, None, 1)  # the original default: no limit
    assert c.cache_info() == (1, 1, 7, 1)
    assert cache.cache_info().hits == 3


def test_maxsize_positional_like_lru_cache(local_cache):
    @local_cache(3)
    def f(x):
        return x

    f(1)
    assert f.cache_info().maxsize == 3


def test_functions_never_share_entries(any_cache):
    cache = any_cache()

    @cache
    def square(x):
        return x * x

    @cache
    def cube(x):
        return x * x * x

    assert square(3) == 9
    assert cube(3) == 27  # the original picocache returned 9 here


def test_maxsize_is_per_function(any_cache):
    cache = any_cache()

    @cache(maxsize=1)
    def small(x):
        return x

    @cache(maxsize=100)
    def big(x):
        return -x

    for i in range(5):
        big(i)
    for i in range(3):
        small(i)
    assert small.cache_info().currsize == 1
    assert big.cache_info().currsize == 5
    before = big.cache_info().hits
    for i in range(5):
        assert big(i) == -i
    assert big.cache_info().hits == before + 5


def test_maxsize_bounds_entries_lru(native_cache):
    cache = native_cache()
    calls = []

    @cache(maxsize=2)
    def f(x):
        calls.append(x)
        return x

    f(1), f(2), f(1), f(3)  # 2 is the least recently used
    assert f.cache_info().currsize == 2
    calls.clear()
    f(1), f(3)
    assert calls == []
    f(2)
    assert calls == [2]


def test_maxsize_none_unlimited_and_zero_caches_nothing(any_cache):
    cache = any_cache()
    calls = []

    @cache(maxsize=None)
    def unl(x):
        calls.append(x)
        return x

    for i in range(140):  # LocMem and the DB cache cull beyond 300 keys by default
        unl(i)
    assert unl.cache_info().currsize == 140
    assert unl.cache_info().maxsize is None

    @cache(maxsize=0)
    def none(x):
        calls.append(("none", x))
        return x

    none(1), none(1)
    assert calls.count(("none", 1)) == 2
    assert none.cache_info() == (0, 2, 0, 0)


def test_typed(any_cache):
    cache = any_cache()
    calls = []

    @cache(maxsize=None)
    def untyped(x):
        calls.append(x)
        return x

    @cache(maxsize=None, typed=True)
    def typed(x):
        calls.append(("t", x))
        return x

    untyped(1), untyped(1.0), untyped(True)
    assert len(calls) == 1 and untyped.cache_info().currsize == 1
    calls.clear()
    typed(1), typed(1.0), typed(True), typed(1)
    assert len(calls) == 3 and typed.cache_info().currsize == 3


def test_cache_clear_only_that_function(any_cache):
    cache = any_cache()

    @cache
    def f(x):
        return x

    @cache
    def g(x):
        return x

    f(1), f(2), g(1), f(1)
    f.cache_clear()
    assert f.cache_info() == (0, 0, None, 0)
    assert g.cache_info().currsize == 1
    g.clear()  # the 1.4 alias
    assert g.cache_info().currsize == 0
    f(1), g(1)
    cache.clear()  # the cache object's own clear: every function it decorated
    assert f.cache_info().currsize == 0 and g.cache_info().currsize == 0


def test_wraps_and_wrapped(local_cache):
    def original(x, y=2):
        """Docs."""
        return x + y

    f = local_cache(original)
    assert f.__wrapped__ is original
    assert f.__name__ == "original" and f.__doc__ == "Docs." and f.__qualname__ == original.__qualname__
    assert f.cache_parameters()["maxsize"] is None


def test_none_cached_exceptions_not(any_cache):
    cache = any_cache()
    calls = []

    @cache
    def f(x):
        calls.append(x)
        if x < 0:
            raise ValueError(x)
        return None

    assert f(1) is None and f(1) is None
    assert calls == [1]
    for _ in range(2):
        with pytest.raises(ValueError):
            f(-1)
    assert calls == [1, -1, -1]


def test_methods(any_cache):
    cache = any_cache()

    class Point:
        def __init__(self, x):
            self.x = x
            self.calls = 0

        def __picocache_key__(self):
            return self.x

        @cache
        def norm(self, scale):
            self.calls += 1
            return self.x * scale

        @cache
        @classmethod
        def make(cls, x):
            return x * 10

        @cache
        @staticmethod
        def twice(x):
            return 2 * x

    p = Point(3)
    assert p.norm(2) == 6 and p.norm(2) == 6 and p.calls == 1
    q = Point(3)
    assert q.norm(2) == 6 and q.calls == 0  # same key: equal instances
    assert Point(4).norm(2) == 8
    assert Point.make(2) == 20 and Point.twice(4) == 8


def test_method_with_unencodable_self(local_cache):
    class Service:
        def __init__(self):
            self.lock = threading.Lock()
            self.calls = 0

        @local_cache
        def get(self, x):
            self.calls += 1
            return x

        @local_cache(ignore=["self"])
        def get2(self, x):
            self.calls += 1
            return x

    s = Service()
    with pytest.raises(TypeError, match="'self'.*__picocache_key__"):
        s.get(1)
    assert s.calls == 0
    assert s.get2(1) == 1 and s.get2(1) == 1 and s.calls == 1


def test_unencodable_argument_named_before_running(any_cache):
    cache = any_cache()
    ran = []

    @cache
    def f(a, conn):
        ran.append(1)

    with pytest.raises(TypeError, match=r"argument 'conn' of .*f\(\)"):
        f(1, threading.Lock())
    with pytest.raises(TypeError, match=r"argument 'conn'"):
        f(1, conn=threading.Lock())
    assert ran == []


def test_key_function(local_cache):
    @local_cache(key=lambda a, b: a)
    def f(a, b):
        return b

    assert f(1, "x") == "x" and f(1, "y") == "x"


def test_version_invalidates(tmp_path):
    c = pc.LocalCache(tmp_path / "s")

    def impl(x):
        return "v1"

    f1 = c(version=1)(impl)
    assert f1(1) == "v1"

    def impl(x):  # noqa: F811 - same qualname, new code
        return "v2"

    assert c(version=1)(impl)(1) == "v1"
    assert c(version=2)(impl)(1) == "v2"


def test_async(any_cache):
    cache = any_cache()
    calls = []

    @cache
    async def f(x):
        calls.append(x)
        await asyncio.sleep(0.01)
        return x * 2

    async def main():
        a = await f(2)
        b = await f(2)
        many = await asyncio.gather(*[f(3) for _ in range(10)])
        return a, b, many

    a, b, many = asyncio.run(main())
    assert (a, b) == (4, 4) and many == [6] * 10
    assert calls == [2, 3]  # awaited once per key; the coroutine itself is never stored
    assert f.cache_info().hits == 10 and f.cache_info().misses == 2
    assert asyncio.iscoroutinefunction(f)


def test_threads_same_args_compute_once(any_cache):
    cache = any_cache()
    calls = []
    barrier = threading.Barrier(8)

    @cache
    def slow(x):
        calls.append(x)
        time.sleep(0.3)
        return x

    def run():
        barrier.wait()
        assert slow(5) == 5

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [5]
    assert slow.cache_info()[:2] == (7, 1)


def test_threads_different_args_parallel(any_cache):
    cache = any_cache()
    inside = []
    peak = []
    lock = threading.Lock()
    gate = threading.Event()

    @cache
    def f(x):
        with lock:
            inside.append(x)
            peak.append(len(inside))
            if len(inside) == 4:
                gate.set()
        gate.wait(10)  # only returns early if all four run at once
        with lock:
            inside.remove(x)
        return x

    threads = [threading.Thread(target=f, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(peak) == 4


def test_recursion(any_cache):
    cache = any_cache()

    @cache(maxsize=None)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(60) == 1548008755920
    assert fib.cache_info().misses == 61


def test_value_whose_class_moved_is_a_miss(any_cache):
    import sys
    import types

    mod = types.ModuleType("picocache_tests_moving")
    exec("class Moving:\n    def __init__(self, v):\n        self.v = v\n", mod.__dict__)
    sys.modules[mod.__name__] = mod
    cache = any_cache()
    calls = []

    @cache
    def f(x):
        calls.append(x)
        cls = getattr(mod, "Moving", None)
        return cls(x) if cls is not None else ("plain", x)

    try:
        assert f(1).v == 1
        del mod.Moving  # the class moved: the stored value no longer unpickles
        assert f(1) == ("plain", 1)  # a miss, recomputed, not an error
        assert calls == [1, 1]
        assert f(1) == ("plain", 1) and calls == [1, 1]
    finally:
        del sys.modules[mod.__name__]


def test_unreadable_value_is_a_miss(any_cache):
    bad = {"on": False}

    class Ser:
        @staticmethod
        def dumps(v):
            return pickle.dumps(v)

        @staticmethod
        def loads(b):
            if bad["on"]:
                raise pickle.UnpicklingError("Can't get attribute 'Gone' on <module>")
            return pickle.loads(b)

    cache = any_cache(value_serializer=Ser)
    calls = []

    @cache
    def f(x):
        calls.append(x)
        return x

    f(1), f(1)
    bad["on"] = True
    assert f(1) == 1  # not an error
    assert calls == [1, 1]


def test_unpicklable_result_is_returned(any_cache, caplog):
    cache = any_cache()

    @cache
    def f(x):
        return threading.Lock()

    with caplog.at_level(logging.WARNING, logger="picocache"):
        assert f(1) is not None
    assert "cannot be serialized" in caplog.text


def test_key_serializer(local_cache):
    c = pc.LocalCache(local_cache.path, key_serializer=lambda args, kwargs: repr((args, kwargs)).encode())
    calls = []

    @c
    def f(x):
        calls.append(x)
        return x

    f(1), f(1)
    assert calls == [1]


def test_ttl(native_cache):
    cache = native_cache()
    calls = []

    @cache(ttl=0.3)
    def f(x):
        calls.append(x)
        return x

    f(1), f(1)
    assert calls == [1]
    time.sleep(1.1)
    f(1)
    assert calls == [1, 1]


SURVIVE_CALLS: list = []  # a global: a list in f's closure would be part of f's identity


def test_entries_survive_a_new_cache_object(tmp_path):
    SURVIVE_CALLS.clear()

    def make():
        c = pc.LocalCache(tmp_path / "s")

        @c
        def f(x):
            SURVIVE_CALLS.append(x)
            return x * 2

        return f

    assert make()(21) == 42
    assert make()(21) == 42
    assert SURVIVE_CALLS == [21]


def test_text_value_serializers_work(any_cache):
    # The json module itself (dumps gives str) and a loads that takes only str.
    import json

    for i, ser in enumerate((json, (json.dumps, _only_str(json.loads)))):
        cache = any_cache(value_serializer=ser)
        calls = []

        @cache
        def f(x):
            calls.append(x)
            return {"x": x, "items": [x, "é"]}

        assert f(i) == {"x": i, "items": [i, "é"]}
        assert f(i) == {"x": i, "items": [i, "é"]}
        assert calls == [i], "the second call is a hit"


def _only_str(loads):
    def strict_loads(s):
        if not isinstance(s, str):
            raise TypeError("str only")
        return loads(s)

    return strict_loads
