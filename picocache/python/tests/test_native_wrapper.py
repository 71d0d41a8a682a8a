"""A cached synchronous function is a native callable (issue 16): a hit the
store answers at once runs no Python frame, as functools.lru_cache's C
wrapper; it still behaves as the function wrapper did: metadata, methods,
pickling by name, counts, garbage collection."""

from __future__ import annotations

import gc
import inspect
import pickle
import sys
import weakref

import picocache as pc


def _python_frames_during(fn):
    """The Python functions entered while fn() runs (C calls not counted)."""
    entered = []

    def prof(frame, event, arg):
        if event == "call":
            entered.append(frame.f_code.co_name)

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return entered


def double(x):
    """Twice x."""
    return 2 * x


def test_a_hit_runs_no_python_frame(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")
    f = cache(double)
    assert f(21) == 42  # computed
    assert f(21) == 42  # read (and kept in the process)
    assert _python_frames_during(lambda: f(21)) == ["<lambda>"]
    mutable = cache(lambda n: [n])  # decoded at every hit: by the C unpickler, no frame either
    mutable(1)
    assert _python_frames_during(lambda: mutable(1)) == ["<lambda>"]
    info = f.cache_info()
    assert (info.hits, info.misses, info.currsize) == (2, 1, 1)


def test_misses_and_other_stores_still_work(any_cache):
    cache = any_cache()
    calls = []

    @cache
    def f(x, y=1):
        calls.append((x, y))
        return x + y

    # (as with lru_cache, f(1, y=2) and f(x=1, y=2) are two keys)
    assert [f(1), f(1), f(1, y=2), f(1, y=2), f(x=1, y=2)] == [2, 2, 3, 3, 3]
    assert calls == [(1, 1), (1, 2), (1, 2)]
    assert f.cache_info().hits == 2
    f.cache_clear()
    assert f.cache_info().hits == 0
    assert f(1) == 2 and calls[-1] == (1, 1)


def test_it_looks_like_the_function(tmp_path):
    f = pc.LocalCache(tmp_path / "s")(double)
    assert f.__name__ == "double" and f.__qualname__ == "double"
    assert f.__doc__ == "Twice x." and f.__module__ == __name__
    assert f.__wrapped__ is double
    assert str(inspect.signature(f)) == "(x)"
    assert callable(f) and "double" in repr(f)


class Counter:
    def __init__(self, start):
        self.start = start

    def __picocache_key__(self):
        return self.start

    def add(self, x):
        return self.start + x


def test_methods_are_bound_like_functions(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")

    class C(Counter):
        add = cache(Counter.add)

    a, b = C(10), C(20)
    assert (a.add(1), a.add(1), b.add(1)) == (11, 11, 21)
    assert C.add(a, 2) == 12  # through the class: unbound
    assert a.add.__self__ is a
    assert C.add.cache_info().hits == 1


def test_pickled_by_name(tmp_path, monkeypatch):
    mod = type(sys)("picocache_pickle_probe")
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    exec("def tripled(x):\n    return 3 * x\n", mod.__dict__)
    mod.tripled.__module__ = mod.__name__
    mod.tripled = pc.LocalCache(tmp_path / "s")(mod.tripled)
    assert pickle.loads(pickle.dumps(mod.tripled)) is mod.tripled


def test_a_dropped_closure_is_collected(tmp_path):
    """A closure decorated per call does not live as long as its cache
    object (it did, with everything its closure held: a leak); the cache
    object still clears and counts what the dropped function stored."""
    cache = pc.LocalCache(tmp_path / "s")

    class Big:
        """Something large a closure holds (keyed: the function is cached)."""

        def __picocache_key__(self):
            return "big"

    def make(k, **options):
        big = Big()

        @cache(**options)
        def mul(x):
            return k * x + (0 if big else 1)

        return mul, weakref.ref(big)

    for options in ({}, {"key": lambda x: x}):  # the native wrapper, the Python one
        f, big = make(3, **options)
        assert f(2) == 6 and f(2) == 6
        ref = weakref.ref(f)
        del f
        gc.collect()
        assert ref() is None and big() is None, options
    info = cache.cache_info()
    # (key= is part of the namespace's identity: the two share no entry.)
    assert (info.hits, info.misses) == (2, 2) and info.currsize == 2
    cache.clear()
    f, _ = make(3)
    calls = f.cache_info()
    assert f(2) == 6 and f.cache_info().misses == calls.misses + 1  # cleared: computed again


def test_a_recursive_function(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")

    @cache
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(200) == 280571172992510140037611932413038677189525
    assert fib.cache_info().misses == 201
    assert fib(200) == 280571172992510140037611932413038677189525
    assert fib.cache_info().hits == 198 + 1  # cold: fib(k - 2) is a hit for k = 3..200


def test_a_key_that_raises_is_encoded_once(tmp_path):
    """A ``__picocache_key__`` that raises (not a TypeError) is called once
    per call, its exception raised as it is: the native lookup does not hand
    the call to the Python wrapper, which would encode the key again (a key
    that recurses into the function cost 2**depth encodes: a hang)."""
    cache = pc.LocalCache(tmp_path / "s")
    calls = []

    class Bad:
        def __picocache_key__(self):
            calls.append(1)
            raise ValueError("no key")

    @cache
    def f(x):
        return 1

    assert f(1) == 1  # the namespace is open: the native lookup from now on
    for n in range(1, 4):
        try:
            f(Bad())
        except ValueError as e:
            assert str(e) == "no key"
        else:
            raise AssertionError("no ValueError")
        assert len(calls) == n
