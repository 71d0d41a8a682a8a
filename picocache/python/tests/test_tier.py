"""The in-process tier of LocalCache: immutable results decoded once and
served again while the engine confirms their record is still the key's live
entry. Never a stale value: every change by another process (clear,
overwrite, eviction, expiry) is seen at the next call."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import picocache


def other_process(store: str, code: str) -> None:
    """Runs `code` in a fresh interpreter with `f` decorated on `store`
    (named as the test's `f` is, with name=: one namespace, another body)."""
    prog = textwrap.dedent(
        f"""
        import picocache
        cache = picocache.LocalCache({store!r})
        def f(x):
            return ("other", x)
        f = cache(maxsize=None, name="tiertest.f")(f)
        """
    ) + textwrap.dedent(code)
    subprocess.run([sys.executable, "-c", prog], check=True, timeout=120)


def make(store: str, calls: list, **kw):
    def f(x):
        calls.append(x)
        return ("mine", x)

    return picocache.LocalCache(store)(name="tiertest.f", **kw)(f)


def test_immutable_results_are_the_same_object_and_counted(tmp_path):
    calls: list = []
    f = make(str(tmp_path / "s"), calls, maxsize=None)
    a = f(1)
    b = f(1)
    assert a == ("mine", 1) and a is b, "a repeat hit serves the kept object"
    assert calls == [1]
    assert f.cache_info().hits == 1
    # The hit was counted in the shared store too (every process sees it).
    assert f.cache_stats()["hits"] == 1
    f(1)
    assert f.cache_stats()["hits"] == 2


def test_mutable_results_are_decoded_at_every_hit(tmp_path):
    @picocache.LocalCache(str(tmp_path / "s"))
    def g(x):
        return [x, {"n": x}]

    r = g(1)
    r.append("mutated")
    r[1]["n"] = -1
    again = g(1)
    assert again == [1, {"n": 1}], "a caller's mutation never reaches another call"
    assert again is not g(1)


def test_clear_in_another_process_is_seen(tmp_path):
    store = str(tmp_path / "s")
    calls: list = []
    f = make(store, calls, maxsize=None)
    assert f(1) == ("mine", 1) and f(1) == ("mine", 1)
    other_process(store, "f.cache_clear()\nassert f(1) == ('other', 1)\n")
    # The other process cleared and stored its own value for 1.
    assert f(1) == ("other", 1)
    assert calls == [1]


def test_eviction_in_another_process_is_seen(tmp_path):
    store = str(tmp_path / "s")
    calls: list = []
    f = make(store, calls, maxsize=3)
    for x in (1, 2, 3):
        f(x)
    assert f(1) == ("mine", 1)  # kept in the tier now
    # Another process fills the namespace: 1 is least recently used there?
    # No: our hit on 1 counted in the shared index, so 2 goes first.
    other_process(store, "f = cache(maxsize=3, name='tiertest.f')(f.__wrapped__)\nf(10)\n")
    assert f.cache_stats()["entries"] == 3
    calls.clear()
    assert f(1) == ("mine", 1) and calls == [], "our tier hit kept 1 recent"
    assert f(2) == ("mine", 2) and calls == [2], "2 was evicted: recomputed"


def test_overwrite_in_another_process_is_seen(tmp_path):
    store = str(tmp_path / "s")
    calls: list = []
    f = make(store, calls, maxsize=None)
    f(5)
    f(5)
    # Another process removes and replaces the entry under the same key.
    other_process(store, "f.cache_clear()\nf(5)\n")
    assert f(5) == ("other", 5)


def test_expiry_is_seen(tmp_path):
    calls: list = []
    f = make(str(tmp_path / "s"), calls, maxsize=None, ttl=0.2)
    f(1)
    f(1)
    assert calls == [1]
    time.sleep(0.3)
    f(1)
    assert calls == [1, 1], "an expired kept value is a miss"


def test_custom_serializer_sees_every_hit(tmp_path):
    import pickle

    loads_calls = []

    class Ser:
        dumps = staticmethod(pickle.dumps)

        @staticmethod
        def loads(b):
            loads_calls.append(1)
            return pickle.loads(b)

    @picocache.LocalCache(str(tmp_path / "s"), value_serializer=Ser)
    def f(x):
        return x

    f(1), f(1), f(1)
    assert len(loads_calls) == 2
