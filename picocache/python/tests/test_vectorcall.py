"""The native wrapper is called through CPython's vectorcall protocol (issue
16, `vcall.rs`): the arguments arrive in a C array, and a call of one
argument is looked up in the front table by the argument itself, no tuple.
Every way of calling a cached function still gives the function's result,
keyword arguments and methods included, and a subclass that defines its own
`__call__` keeps it."""

from __future__ import annotations

import functools
import operator
import sys

import pytest

import picocache as pc
from picocache import _native

HAVE_VECTORCALL = 1 << 11  # Py_TPFLAGS_HAVE_VECTORCALL


def test_the_wrapper_class_is_called_through_vectorcall(tmp_path):
    f = pc.LocalCache(tmp_path / "s")(lambda x: x + 1)
    assert type(f).__flags__ & HAVE_VECTORCALL, "the version-specific build installs vectorcall"
    assert [f(1), f(1), f(1)] == [2, 2, 2]
    info = f.cache_info()
    assert (info.hits, info.misses) == (2, 1)
    assert f._front_len() == 1  # the third call was served by the argument itself


def body(a, b=10, *rest, c=100, **kw):
    return (a, b, rest, c, sorted(kw.items()))


CALLS = [
    ((1,), {}),
    ((1, 2), {}),
    ((1,), {"b": 2}),
    ((), {"a": 1}),
    ((), {"a": 1, "b": 2, "c": 3}),
    ((1, 2, 3, 4), {}),
    ((1, 2, 3), {"c": 4, "z": 5}),
    ((1,), {"z": 6}),
    (("x",), {}),
    ((None, b"y"), {}),
    ((True,), {}),
    ((1, True), {}),
    ((True, 1), {}),
]


@pytest.mark.parametrize("how", ["written", "star", "partial", "operator", "dunder"])
def test_every_way_of_calling_gives_the_functions_result(tmp_path, how):
    f = pc.LocalCache(tmp_path / "s")(body)

    def call(args, kwargs):
        if how == "written":  # the compiler's call: positional in the array, keywords named
            return eval("f(" + ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]) + ")")
        if how == "star":  # PyObject_Call(tuple, dict): CPython unpacks it for vectorcall
            return f(*args, **kwargs)
        if how == "partial":  # another C caller with a prepended argument
            if not args:
                return functools.partial(f, **kwargs)()
            return functools.partial(f, args[0])(*args[1:], **kwargs)
        if how == "operator":
            return operator.methodcaller("__call__", *args, **kwargs)(f)
        return f.__call__(*args, **kwargs)  # the tp_call slot's wrapper

    for _ in range(3):  # a miss, a hit from the store, a hit from the front table
        for args, kwargs in CALLS:
            assert call(args, kwargs) == body(*args, **kwargs), (args, kwargs)


# One-argument keys (the argument itself, not a tuple) against the canonical
# key's kinds: test_front.py::test_kinds_stay_apart_as_the_canonical_key_keeps_them.


def test_map_and_sorted_key_call_through_it(tmp_path):
    f = pc.LocalCache(tmp_path / "s")(lambda x: -x)
    assert list(map(f, range(5))) == [0, -1, -2, -3, -4]
    assert sorted(range(5), key=f) == [4, 3, 2, 1, 0]
    assert list(map(f, range(5))) == [0, -1, -2, -3, -4]


def test_methods_through_vectorcall(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")

    class C:
        def __init__(self, k):
            self.k = k

        def __picocache_key__(self):
            return self.k

        @cache
        def add(self, x, y=0):
            return self.k + x + y

        @cache
        @staticmethod
        def twice(x):
            return 2 * x

    a = C(10)
    for _ in range(3):
        assert (a.add(1), a.add(1, y=2), a.add(x=1), C.add(a, 3), C(20).add(1)) == (11, 13, 11, 13, 21)
        assert (a.twice(4), C.twice(4)) == (8, 8)


class Boom(Exception):
    pass


def test_an_exception_passes_through_unchanged(tmp_path):
    calls = []

    @pc.LocalCache(tmp_path / "s")
    def f(x):
        calls.append(x)
        raise Boom(x)

    for _ in range(2):
        with pytest.raises(Boom) as e:
            f(7)
        assert e.value.args == (7,)
        assert any(fr.name == "f" for fr in e.traceback)  # the function's own frame is in it
    assert calls == [7, 7]  # never cached


def test_a_subclass_with_its_own_call_keeps_it():
    class Loud(_native.Wrapper):
        def __call__(self, *a, **k):
            return ("own", a, k)

    def slow(*a, **k):
        return ("slow", a, k)

    w = Loud(slow, slow, object(), _native.Counts())
    assert w._install_vectorcall() is False
    assert not type(w).__flags__ & HAVE_VECTORCALL
    assert w(1, b=2) == ("own", (1,), {"b": 2})


def test_a_plain_subclass_gets_vectorcall_and_falls_back_to_slow():
    class Plain(_native.Wrapper):
        pass

    seen = []

    def slow(*a, **k):
        seen.append((a, k))
        return "slow"

    w = Plain(slow, slow, object(), _native.Counts())
    assert w._install_vectorcall() is True and w._install_vectorcall() is True  # idempotent
    assert type(w).__flags__ & HAVE_VECTORCALL
    # no namespace set: every call goes to the Python wrapper, arguments intact
    assert (w(1, "a", k=2), w(), w(*range(20))) == ("slow", "slow", "slow")
    assert seen == [((1, "a"), {"k": 2}), ((), {}), (tuple(range(20)), {})]


def test_deep_recursion_through_vectorcall_still_raises_recursion_error(tmp_path):
    @pc.LocalCache(tmp_path / "s")
    def down(n):
        return 0 if n == 0 else down(n - 1) + 1

    f = down
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        with pytest.raises(RecursionError):
            f(10_000)
    finally:
        sys.setrecursionlimit(old)
    assert f(50) == 50
