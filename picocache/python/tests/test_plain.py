"""picocache.plain: a value serializer without pickle."""

from __future__ import annotations

import math
import random

import pytest

import picocache as pc
from picocache import plain

VALUES = [None, True, False, 0, -1, 2 ** 64, -(10 ** 5000), 1.5, -0.0, math.inf, "", "é\ud800", b"",
          b"\x00\xff", [], (), {}, [1, (2, [3, {"k": (None, b"v")}])], {1: "a", "b": [1.0], (1, 2): None,
                                                                         None: False}]


def test_round_trip_keeps_types_and_values():
    for v in VALUES:
        got = plain.loads(plain.dumps(v))
        assert got == v and type(got) is type(v), v
    assert math.copysign(1, plain.loads(plain.dumps(-0.0))) == -1
    assert math.isnan(plain.loads(plain.dumps(math.nan)))
    got = plain.loads(plain.dumps([bytearray(b"ab"), b"cd"]))  # (issue 24: types kept)
    assert got == [bytearray(b"ab"), b"cd"] and type(got[0]) is bytearray and type(got[1]) is bytes
    with pytest.raises(TypeError, match="picocache.plain"):
        plain.dumps(memoryview(b"ab"))


def test_other_types_are_refused_on_the_way_in():
    for v in (object(), {1, 2}, 1j, [lambda: 1], {"k": frozenset()}):
        with pytest.raises(TypeError, match="picocache.plain"):
            plain.dumps(v)
    deep: list = []
    for _ in range(plain.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match="nested"):
        plain.dumps(deep)


def test_hostile_bytes_never_load_as_anything_else():
    import pickle

    good = plain.dumps(VALUES)
    bad = [b"", b"PCP1", pickle.dumps(1), good + b"x", good[:-1], b"PCP1l\xff\xff\xff\xff",
           b"PCP1i\xff\xff\xff\x7f", b"PCP1?", b"PCP1d\x01\x00\x00\x00l\x00\x00\x00\x00N",
           b"PCP1" + b"l\x01\x00\x00\x00" * 1000 + b"N"]
    rng = random.Random(7)
    for _ in range(2000):  # random damage: a ValueError or a value of the plain types, never a crash
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        bad.append(bytes(b))
    for b in bad:
        try:
            v = plain.loads(b)
        except ValueError:
            continue
        plain.dumps(v)  # made of the plain types only (dumps refuses anything else)
    for b in bad[:10]:
        with pytest.raises(ValueError):
            plain.loads(b)


def test_plain_as_value_serializer(any_cache):
    cache = any_cache(value_serializer=pc.plain)
    calls = []

    @cache
    def f(x):
        calls.append(x)
        return {"x": x, "big": 10 ** 100, "t": (1, b"\x00")}

    assert f(3) == f(3) == {"x": 3, "big": 10 ** 100, "t": (1, b"\x00")}
    assert calls == [3]

    @cache
    def g(x):
        calls.append(("g", x))
        return {x}  # a set: not plain, returned unstored

    assert g(1) == {1} and g(1) == {1}
    assert calls.count(("g", 1)) == 2
