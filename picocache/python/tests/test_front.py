"""The front table of the native wrapper (issue 16): a repeat hit of a call
whose arguments are exact None/bool/int/str/bytes is answered by the
argument objects themselves, after one read of the store's index confirms
the record is still live. Never a value the store would not serve: every
change by another process (clear, overwrite, eviction, expiry), a fork, a
bool beside an int, a float, a method, is seen at the next call."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import time

import pytest

import picocache


def other_process(store: str, code: str, maxsize=None) -> None:
    """Runs `code` in a fresh interpreter with `f` decorated on `store`
    (one namespace with the test's `f`, another body)."""
    prog = textwrap.dedent(
        f"""
        import picocache
        cache = picocache.LocalCache({store!r})
        def f(x):
            return ("other", x)
        f = cache(maxsize={maxsize!r}, name="fronttest.f")(f)
        """
    ) + textwrap.dedent(code)
    subprocess.run([sys.executable, "-c", prog], check=True, timeout=120)


def make(store: str, calls: list, **kw):
    def f(x):
        calls.append(x)
        return ("mine", x)

    return picocache.LocalCache(store)(name="fronttest.f", **kw)(f)


def test_repeat_hits_are_served_by_the_arguments_and_counted(tmp_path):
    calls: list = []

    @picocache.LocalCache(str(tmp_path / "s"))
    def f(i, s, b=None):
        calls.append((i, s))
        return ("r", i, s)

    f(0, "first")  # the function's first call opens its store (the Python path)
    assert f._front_len() == 0
    a = f(1, "k")
    # The miss stored an immutable result: kept by its arguments at once
    # (no hit counted for it).
    assert f._front_len() == 1
    assert f.cache_info().hits == 0 and f.cache_stats()["hits"] == 0
    b = f(1, "k")  # served by them
    c = f(1, "k")
    assert a == b == c == ("r", 1, "k") and a is b is c
    assert calls == [(0, "first"), (1, "k")]
    assert f.cache_info().hits == 2 and f.cache_info().misses == 2
    # Every hit counted in the shared store too (other processes see them).
    assert f.cache_stats()["hits"] == 2
    for _ in range(5):
        assert f(1, "k") is c
    assert f.cache_info().hits == 7 and f.cache_stats()["hits"] == 7
    # Keyword arguments and other kinds take the ordinary path.
    assert f(1, "k", b=None) == ("r", 1, "k") and f(1, s="k") == ("r", 1, "k")
    assert f._front_len() == 1
    n = len(calls)
    f.cache_clear()
    assert f._front_len() == 0 and f.cache_info().hits == 0
    assert f(1, "k") == ("r", 1, "k") and len(calls) == n + 1


@pytest.mark.parametrize("typed", [False, True])
def test_kinds_stay_apart_as_the_canonical_key_keeps_them(tmp_path, typed):
    """1, True, 1.0, -0.0, 0.0, "1", b"1", None: equal tuples of different
    kinds must not share an entry unless the canonical key does. The oracle
    is the same function called with keyword arguments (never served by the
    front table: the canonical key alone decides which calls share a value;
    typed=False: ints, bools and integral floats share one, as documented)."""
    values = [1, True, 1.0, -0.0, 0.0, 0, False, "1", b"1", None, 2**70, -(2**70), "", b""]
    cache = picocache.LocalCache(str(tmp_path / "s"))

    def body(x):
        return (type(x).__name__, repr(x))

    ours = cache(typed=typed, name="ours")(body)
    ref = cache(typed=typed, name="ref")(body)
    order = values + values[::-1] + values + [v for v in values for _ in range(3)]
    for x in order:
        assert ours(x) == ref(x=x), (x, typed)
    assert ours._front_len() > 0 and ref._front_len() == 0
    if typed:  # every kind apart (but -0.0 == 0.0: one float key, as lru_cache(typed=True))
        assert ours(True) == ("bool", "True") and ours(1) == ("int", "1") and ours(1.0) == ("float", "1.0")
        assert ours(0.0) == ours(-0.0) and ours(False) == ("bool", "False") and ours(b"1") == ("bytes", "b'1'")

    def pair(a, b):
        return (body(a), body(b))

    ours2 = cache(typed=typed, name="ours2")(pair)
    ref2 = cache(typed=typed, name="ref2")(pair)
    pairs = [(1, True), (True, 1), (1, 1), (True, True), (1.0, 1), ("a", b"a"), (None, 0), (0, False)]
    for p in pairs + pairs[::-1] + pairs:
        assert ours2(*p) == ref2(a=p[0], b=p[1]), (p, typed)


def test_clear_in_another_process_is_seen(tmp_path):
    store = str(tmp_path / "s")
    calls: list = []
    f = make(store, calls)
    assert f(1) == ("mine", 1) and f(1) == ("mine", 1)
    assert f._front_len() == 1
    other_process(store, "f.cache_clear()\n")
    assert f(1) == ("mine", 1) and calls == [1, 1], "the clear was seen: computed again"
    assert f(1) == ("mine", 1) and calls == [1, 1]
    other_process(store, "f.cache_clear()\nassert f(1) == ('other', 1)\n")
    assert f(1) == ("other", 1), "the other process's value, not the kept one"


def test_overwrite_and_remove_in_another_process_are_seen(tmp_path):
    store = str(tmp_path / "s")
    calls: list = []
    f = make(store, calls)
    f(5), f(5), f(5)
    assert f._front_len() == 1
    # The same key written again with another value (a clear first: the
    # other process would otherwise hit).
    other_process(store, "f.cache_clear()\nf(5)\n")
    assert f(5) == ("other", 5)
    assert f(5) == ("other", 5)


def test_expiry_is_seen(tmp_path):
    calls: list = []
    f = make(str(tmp_path / "s"), calls, ttl=0.3)
    f(1), f(1), f(1)
    assert calls == [1] and f._front_len() == 1
    time.sleep(0.45)
    assert f(1) == ("mine", 1)
    assert calls == [1, 1], "an expired kept value is a miss"


def test_maxsize_eviction_is_lru_as_before(tmp_path):
    """Front hits keep their entries recent in the store, as lookups did."""
    calls: list = []
    f = make(str(tmp_path / "s"), calls, maxsize=3)
    for x in (1, 2, 3, 1, 2, 3):
        f(x)  # misses, then hits that keep each by its arguments
    assert f._front_len() == 3
    f(1)  # a front hit: 1 is the most recent now, 2 the least
    f(4)  # evicts 2
    assert f.cache_info().currsize == 3
    calls.clear()
    assert f(1) == ("mine", 1) and f(3) == ("mine", 3) and f(4) == ("mine", 4)
    assert calls == [], "1, 3 and 4 stayed"
    assert f(2) == ("mine", 2) and calls == [2], "2 was evicted"


def test_eviction_in_another_process_is_seen(tmp_path):
    store = str(tmp_path / "s")
    calls: list = []
    f = make(store, calls, maxsize=3)
    for x in (1, 2, 3, 1, 2, 3):
        f(x)
    f(1)  # a front hit, counted recent in the shared index: 2 is the least
    other_process(store, "f(10)\n", maxsize=3)
    calls.clear()
    assert f(1) == ("mine", 1) and calls == [], "our front hits kept 1 recent"
    assert f(2) == ("mine", 2) and calls == [2], "2 was evicted: computed again"


def test_methods_and_unusual_arguments_take_the_ordinary_path(tmp_path):
    cache = picocache.LocalCache(str(tmp_path / "s"))

    class Box:
        def __init__(self, k):
            self.k = k

        def __picocache_key__(self):
            return self.k

        @cache
        def get(self, x):
            return (self.k, x)

    a, b = Box("a"), Box("b")
    for _ in range(3):
        assert a.get(1) == ("a", 1) and b.get(1) == ("b", 1)
    assert Box.get._front_len() == 0
    info = Box.get.cache_info()
    assert (info.hits, info.misses) == (4, 2)

    class MyInt(int):
        pass

    @cache
    def g(x):
        return (type(x).__name__, x)

    for _ in range(2):
        assert g(1.5) == ("float", 1.5)
        assert g((1, 2)) == ("tuple", (1, 2))
        assert g(MyInt(3)) == ("MyInt", 3)
    assert g._front_len() == 0


def test_mutable_results_are_fresh_at_every_hit(tmp_path):
    cache = picocache.LocalCache(str(tmp_path / "s"))

    @cache
    def nested(x):  # kept as its stored bytes, decoded at each hit
        return [x, {"n": x}]

    nested(1)
    r = nested(1)
    assert nested._front_len() == 1
    r.append("mutated")
    r[1]["n"] = -1
    again = nested(1)
    assert again == [1, {"n": 1}], "a caller's mutation never reaches another call"
    assert again is not nested(1) and again[1] is not nested(1)[1]
    assert nested.cache_info().hits == 4

    @cache
    def flat(kind, x):  # containers of immutable elements: copied at each hit
        return {"list": [x, "s", (1, 2)], "dict": {"a": x, (1,): "t"}, "set": {x, "s"},
                "bytearray": bytearray(b"ab")}[kind]

    for kind in ("list", "dict", "set", "bytearray"):
        first = flat(kind, 1)
        kept = flat(kind, 1)
        expect = type(first)(first)
        if kind == "list":
            kept.append("mutated")
        elif kind == "dict":
            kept["a"] = "mutated"
        elif kind == "set":
            kept.add("mutated")
        else:
            kept.extend(b"mutated")
        first.clear()
        for _ in range(3):
            again = flat(kind, 1)
            assert again == expect and type(again) is type(expect), kind
            assert again is not kept
            again.clear()  # never reaches the next call
    assert flat._front_len() == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_sees_changes_made_after_the_fork(tmp_path):
    store = str(tmp_path / "s")
    calls: list = []
    f = make(store, calls)
    f(1), f(1)
    assert f._front_len() == 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: waits until the store changed, then calls
        try:
            os.close(w)
            os.read(r, 1)
            ok = f(1) == ("other", 1) and f(1) == ("other", 1) and f(7) == ("mine", 7)
            ok = ok and f.cache_info().hits >= 1
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    os.close(r)
    other_process(store, "f.cache_clear()\nassert f(1) == ('other', 1)\n")
    os.write(w, b"x")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, "the child served the parent's kept value"
    assert f(1) == ("other", 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_serves_unchanged_entries(tmp_path):
    calls: list = []
    f = make(str(tmp_path / "s"), calls)
    f(1), f(1)
    pid = os.fork()
    if pid == 0:
        try:
            ok = f(1) == ("mine", 1) and f(1) == ("mine", 1) and calls == [1]
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert f.cache_stats()["hits"] == 3  # the parent's one, the child's two
