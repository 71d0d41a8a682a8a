"""Adversarial tests of session 24 (part b): the mechanisms changed this
session (65e1899..8f4abe7) -- namespace suffixes (';key=', ';vs=', ';ttl='),
the SQLite fork barrier (os.register_at_fork), on the frozen build of main
8f4abe7.

Tests whose docstring starts "BUG" are strict xfails describing a bug as
found (what happens, how often, a suggested fix); "Held:" tests cover
properties that held."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time

import pytest

import picocache as pc
from picocache._naming import serializer_identity, shaping_identity


class Scaled:
    """A value serializer whose bytes only its own instance reads right
    (values stored times k)."""

    def __init__(self, k):
        self.k = k

    def dumps(self, v):
        return repr(v * self.k).encode()

    def loads(self, b):
        return int(b) // self.k


def plain_fn(x):
    return x + 1


@pytest.mark.xfail(strict=True, reason="BUG: value serializers that are instances of one class share a namespace")
def test_serializer_instances_of_one_class_share_namespace(tmp_path):
    """BUG (wrong value, every time): two caches on one store whose
    value_serializer are two instances of one class (Scaled(2), Scaled(3):
    dumps/loads bound methods reading self.k) get the same ';vs=' digest:
    _callables_digest encodes a bound method's __self__ with encode_part,
    which raises TypeError for any plain object, so the digest falls back to
    the module and qualified names alone. plain_fn(10) cached through
    Scaled(2) stores b'22'; the Scaled(3) wrapper reads it as 22//3 = 7, not
    11. Suggested fix: when a callable (or its __self__/closure/partial
    arguments) cannot be encoded, fold in something that tells instances
    apart (its __dict__/__slots__ encoded with the fallback, else id() plus
    a warning that the namespace is per process), or refuse to share
    (IdentityError -> per-object namespace) rather than falling back to names
    only."""
    a = pc.LocalCache(str(tmp_path / "s"), value_serializer=Scaled(2))
    b = pc.LocalCache(str(tmp_path / "s"), value_serializer=Scaled(3))
    fa = a(plain_fn)
    fb = b(plain_fn)
    assert fa(10) == 11
    got = fb(10)
    print("Scaled(3) wrapper read", got, "ids", serializer_identity(Scaled(2)), serializer_identity(Scaled(3)))
    assert got == 11
