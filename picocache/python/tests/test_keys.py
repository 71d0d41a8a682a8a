"""Canonical key encoding: equal arguments, equal keys, in every process."""

from __future__ import annotations

import enum
import os
import subprocess
import sys
from collections import OrderedDict, namedtuple
from dataclasses import dataclass

import pytest

from picocache import _native
from picocache._keys import fallback


def k(*args, typed=False, **kwargs):
    return _native.encode_call(args, kwargs, typed, fallback)


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 1


@dataclass(frozen=True)
class Pt:
    x: int
    tags: frozenset


P2 = namedtuple("P2", "a b")


def test_lru_cache_equality_untyped():
    assert k(1) == k(1.0) == k(True) == k(Level.HIGH)
    assert k(0) == k(-0.0) == k(False)
    assert k(2**80) == k(float(2**80))
    assert k(1.5) != k(1)
    assert k("a") != k(b"a")
    assert k(b"a") == k(bytearray(b"a"))
    assert k((1, 2)) == k(P2(1, 2))
    assert k([1, 2]) != k((1, 2))
    assert k({1, 2}) == k(frozenset({2, 1}))
    assert k(None) != k(0) and k(()) != k(None)
    assert k(float("nan")) == k(float("nan"))


def test_typed_distinguishes_top_level_types():
    assert k(1, typed=True) != k(1.0, typed=True) != k(True, typed=True)
    assert k(1, typed=True) != k(Level.HIGH, typed=True)
    assert k((1,), typed=True) == k((1.0,), typed=True)  # like lru_cache: nested values untyped
    assert k(1, typed=True) == k(1, typed=True)


def test_order_independent():
    assert k({"a": 1, "b": 2}) == k({"b": 2, "a": 1})
    # OrderedDicts compare their order: two orders are two keys, as == says.
    od = OrderedDict([("b", 2), ("a", 1)])
    assert k(od) == k(OrderedDict(od)) != k(OrderedDict([("a", 1), ("b", 2)]))
    assert k(x=1, y=2) == k(y=2, x=1)
    assert k(1) != k(x=1)  # as lru_cache: positional and keyword calls differ
    assert k({"s": {3, 1, 2}}) == k({"s": {2, 3, 1}})


def test_distinct_values_distinct_keys():
    vals = [0, 1, -1, 2**63, -(2**63) - 1, 1.5, "", "a", "\ud800", b"", b"a", (), (1,), ((),), [], {}, {1: 2},
            {2: 1}, set(), {1}, None, ("a", "b"), ("ab",), Color.RED, Pt(1, frozenset()), complex(1, 2)]
    keys = [k(v) for v in vals]
    assert len(set(keys)) == len(vals)
    assert k("a", "b") != k("ab") != k(("a", "b"))


def test_objects_by_state():
    assert k(Pt(1, frozenset({"x", "y"}))) == k(Pt(1, frozenset({"y", "x"})))
    assert k(Pt(1, frozenset())) != k(Pt(2, frozenset()))
    assert k(Color.RED) == k(Color(1))
    assert k(len) == k(len) and k(int) != k(float)


def test_unencodable_raises_type_error():
    import threading

    with pytest.raises(TypeError):
        k(threading.Lock())
    with pytest.raises(TypeError):
        k(x for x in ())
    deep = []
    cur = deep
    for _ in range(200):
        cur.append([])
        cur = cur[0]
    with pytest.raises(TypeError, match="nested"):
        k(deep)


SCRIPT = r"""
import sys, enum
sys.path.insert(0, {path!r})
from test_keys import k, Pt
print(k({{"b", "a", "c", 1, 2.5, ("t", frozenset({{"x", "y", "z"}}))}},
        {{"k2": {{"p", "q"}}, "k1": [1, 2]}}, Pt(1, frozenset({{"m", "n", "o"}})), z=1, a=2).hex())
"""


def test_stable_across_processes_and_hash_seeds():
    here = os.path.dirname(__file__)
    outs = set()
    for seed in ("0", "1", "12345", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", SCRIPT.format(path=here)], env=env, check=True,
                             capture_output=True, text=True, cwd=here).stdout.strip().splitlines()[-1]
        outs.add(out)
    assert len(outs) == 1, outs
