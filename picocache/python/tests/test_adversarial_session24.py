"""Adversarial tests of session 24: one function cached with different
options on one store (typed, serializers, ttl, maxsize), keys that compare
equal but differ (numpy shapes, Decimal, Fraction, Enum, numpy scalars),
option edge values (ttl and maxsize at their limits), hostile value
serializers, stores deleted or replaced while in use, processes killed at
random moments, and hostile servers (a private Redis flushed and evicting,
PostgreSQL tables dropped, altered and locked mid-run).

Tests marked ``xfail(strict=True, reason="BUG: ...")`` show a bug that is
still there (each docstring says what happens, how often and a suggested
fix); the others, whose docstring starts "Held:", cover cases that held.
Frozen build tested: main 65e1899."""

from __future__ import annotations

import decimal
import fractions
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import picocache as pc
from conftest import POSTGRES, REDIS, make_cache, need, sa_url, uid
from _subproc import PY, child_env, run_code


def _body(*a, **k):
    """What every probe function computes: its arguments with their types."""
    return tuple((type(x).__name__, repr(x)) for x in a) + tuple(
        (n, type(v).__name__, repr(v)) for n, v in sorted(k.items()))


# ---------------------------------------------------------------------------
# 1. WRONG VALUES
# ---------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="BUG: typed=True serves an entry stored by typed=False "
                                       "for another type (f(1) returns f(1.0)'s result)")
@pytest.mark.parametrize("kind", ["local", "sqlite", "redis"])
def test_typed_true_never_serves_an_untyped_entry_of_another_type(kind, tmp_path):
    """BUG: typed=True must key f(1) and f(1.0) apart (README "Semantics",
    as ``functools.lru_cache(typed=True)``). But typed is not part of the
    namespace name and a typed key of an exact int / str / None is the same
    bytes as the untyped key: an entry that a ``typed=False`` wrapper of the
    same function stored for ``f(1.0)`` (keyed as 1) is served to the
    ``typed=True`` wrapper's ``f(1)``: it returns ``('float', '1.0')`` for an
    int argument. Same for f(0) after an untyped f(False). Every time, on
    every backend: the realistic way in is a deploy that turns typed on
    (``@cache`` -> ``@cache(typed=True)``: same name, same digest), or two
    services sharing a store, or ``name=`` shared by two wrappers (as here,
    which is the same in one process). Suggested fix: put ``typed`` in the
    namespace identity (e.g. ``#DIGEST`` over it, or a ``:typed`` suffix), or
    tag every top-level argument's type in typed keys (ints included)."""
    cache = make_cache(kind, tmp_path)
    name = "shared-" + uid()
    untyped = cache(name=name)(_body)
    typed = cache(name=name, typed=True)(_body)
    assert untyped(1.0) == (("float", "1.0"),)
    assert untyped(False) == (("bool", "False"),)
    assert typed(1) == (("int", "1"),)
    assert typed(0) == (("int", "0"),)


@pytest.mark.xfail(strict=True, reason="BUG: a 0-d numpy array and a 1-element 1-d array share "
                                       "one key (np.ascontiguousarray makes 0-d arrays 1-d)")
@pytest.mark.parametrize("typed", [False, True])
def test_a_zero_dimensional_array_is_not_keyed_as_a_one_element_vector(typed, tmp_path):
    """BUG: ``np.array(5)`` (shape ``()``) and ``np.array([5])`` (shape
    ``(1,)``) get one key, with typed=True too: ``f(np.array([5]))`` after
    ``f(np.array(5))`` returns the 0-d result (``a.shape``, ``a.ndim``,
    ``a.tolist()`` -> 5 instead of [5]). Every time, for every dtype. Cause:
    _arrays.py ``ndarray_key`` takes ``tuple(a.shape)`` after ``a =
    np.ascontiguousarray(a)``, which returns an array of ndim >= 1 (numpy
    documents it). Suggested fix: record ``shape = a.shape`` before the
    conversion (or use ``np.require(a, requirements="C")``, which keeps 0-d)."""
    np = pytest.importorskip("numpy")
    cache = pc.LocalCache(tmp_path / "s")

    @cache(typed=typed)
    def describe(a):
        return (a.shape, a.tolist())

    assert describe(np.array(5)) == ((), 5)
    assert describe(np.array([5])) == ((1,), [5])
    assert describe(np.array(2.5)) == ((), 2.5)
    assert describe(np.array([2.5])) == ((1,), [2.5])
