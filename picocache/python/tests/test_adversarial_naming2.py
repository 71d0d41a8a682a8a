"""Adversarial probes, round 2 (after tests/test_adversarial_naming.py).

A cached call must return what the plain function returns; two different
functions, or two argument values that are unequal by ``==`` (which
``functools.lru_cache`` would key apart), must never share an entry. Equal
values sharing (1 == 1.0 == True, dict == OrderedDict) is NOT a bug.

Each test failed before its fix ("before the fix:" gives what it did).

Sections:
- WRONG VALUES: a cached call returned another call's result;
- CRASHES: a cached call raised where the plain function (and lru_cache) do not;
- PER-CALL COST: identity work repeated on every call (asserted by counting
  calls, never by timing);
- DESIGN: what follows from a documented choice (a cyclic argument is refused;
  version= pins).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import os
import subprocess
import sys
import textwrap
import types

import pytest

import picocache as pc
from picocache import _keys

PY = sys.executable


def _run(script: str, *args: str) -> str:
    r = subprocess.run([PY, script, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# ============================================================================
# WRONG VALUES
# ============================================================================


def test_ordered_dicts_in_different_order_never_share(local_cache):
    """REAL. OrderedDict equality is order-sensitive: the two arguments are
    unequal, but the Rust encoder (lib.rs `value`, PyDict downcast, not
    exact) sorts every dict subclass's items, so both get one key."""

    @local_cache
    def first(d):
        return next(iter(d))

    a = collections.OrderedDict([("a", 1), ("b", 2)])
    b = collections.OrderedDict([("b", 2), ("a", 1)])
    assert a != b
    assert first(a) == "a"
    assert first(b) == "b"  # before the fix: "a"


class Money(int):
    """An int with a currency; unequal to Money of another currency."""

    def __new__(cls, v, cur):
        o = super().__new__(cls, v)
        o.cur = cur
        return o

    def __eq__(self, other):
        return isinstance(other, Money) and int(self) == int(other) and self.cur == other.cur

    __hash__ = int.__hash__

    def __reduce__(self):
        return (Money, (int(self), self.cur))


def test_int_subclass_with_its_own_eq_is_not_keyed_as_a_plain_int(local_cache):
    """REAL. The Rust encoder takes every int (str, float, tuple, ...)
    subclass as its base type before the fallback is consulted: Money(5,
    'USD') and Money(5, 'EUR') are unequal (lru_cache keys them apart) but
    share a key."""

    @local_cache
    def fmt(m):
        return f"{int(m)} {m.cur}"

    assert not Money(5, "USD") == Money(5, "EUR")  # int.__ne__ is inherited: use ==
    assert fmt(Money(5, "USD")) == "5 USD"
    assert fmt(Money(5, "EUR")) == "5 EUR"  # before the fix: "5 USD"


class Tag(str):
    """A str with a namespace, keyed by both through __picocache_key__."""

    def __new__(cls, s, ns):
        o = super().__new__(cls, s)
        o.ns = ns
        return o

    def __picocache_key__(self):
        return (str(self), self.ns)

    def __eq__(self, other):
        return isinstance(other, Tag) and str(self) == str(other) and self.ns == other.ns

    __hash__ = str.__hash__


def test_picocache_key_of_a_str_subclass_is_honoured(local_cache):
    """REAL. The documented escape hatch is ignored for subclasses of
    builtin types: the Rust encoder never calls the fallback for a str
    subclass, so Tag.__picocache_key__ is never consulted."""

    @local_cache
    def full(t):
        return t.ns + ":" + t

    assert full(Tag("a", "x")) == "x:a"
    assert full(Tag("a", "y")) == "y:a"  # before the fix: "x:a"


def test_picocache_key_of_local_classes_from_one_factory_never_share(local_cache):
    """REAL. fallback() keys an object with __picocache_key__ as ('__key__',
    t.__module__, t.__qualname__, key): two classes from one factory (one
    qualname) with equal keys share. lru_cache: instances compared by
    identity, never shared. (A class made by type()/make_dataclass is the
    same; so are the main-module classes of two scripts, next test.)"""

    def make_unit(factor):
        class Unit:
            def __init__(self, v):
                self.v = v

            def __picocache_key__(self):
                return self.v

            def si(self):
                return self.v * factor

        return Unit

    Metres, Feet = make_unit(1), make_unit(3)

    @local_cache
    def si(u):
        return u.si()

    assert si(Metres(10)) == 10
    assert si(Feet(10)) == 30  # before the fix: 10


def test_picocache_key_of_main_classes_of_two_scripts_never_share(tmp_path):
    """REAL. As test_main_module_classes_of_two_scripts_never_share (round
    1), but the class defines __picocache_key__: the '__key__' tuple uses the
    raw t.__module__ ('__main__'), not module_name(t)."""
    store = str(tmp_path / "store")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "adv2_lib.py").write_text(textwrap.dedent("""
        import sys, picocache as pc
        cache = pc.LocalCache(sys.argv[1])

        @cache
        def describe(item):
            return item.describe()
    """))
    outs = []
    for tag in ("A", "B"):
        d = tmp_path / tag
        d.mkdir()
        (d / "main.py").write_text(textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(lib)!r})
            import adv2_lib

            class Item:
                def __init__(self, n):
                    self.n = n
                def __picocache_key__(self):
                    return self.n
                def describe(self):
                    return "{tag}%d" % self.n

            print(adv2_lib.describe(Item(1)))
        """))
        outs.append(_run(str(d / "main.py"), store))
    assert outs == ["A1", "B1"]  # before the fix: ["A1", "A1"]


_SQ_SRC = """
import dataclasses

@dataclasses.dataclass(frozen=True)
class Sq:
    s: int

    def area(self):
        return self.s * BODY
"""


def test_class_redefined_in_its_module_is_not_served_old_result(local_cache):
    """REAL. A class that its name imports is keyed by its name only
    (fallback: ('__global__', module, qualname)), its definition left out.
    Redefining it (a notebook cell re-run: Jupyter's __main__ is in
    sys.modules) keys instances of the new class like those of the old one.
    lru_cache: the dataclass __eq__ compares classes, so never shared.
    (Round 1 fixed exactly this for a redefined *function* argument.)"""
    mod = types.ModuleType("adv2_nbmod")
    sys.modules["adv2_nbmod"] = mod
    try:
        exec(_SQ_SRC.replace("BODY", "self.s"), mod.__dict__)
        old = mod.Sq

        @local_cache
        def area(x):
            return x.area()

        assert area(mod.Sq(3)) == 9
        exec(_SQ_SRC.replace("BODY", "4"), mod.__dict__)
        assert old(3) != mod.Sq(3)
        assert area(mod.Sq(3)) == 12  # before the fix: 9
    finally:
        del sys.modules["adv2_nbmod"]


def test_importlib_reload_with_an_edited_class_is_not_served_old_result(local_cache, tmp_path, monkeypatch):
    """REAL. The same through importlib.reload of an edited module file."""
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "adv2_rmod.py"
    path.write_text(_SQ_SRC.replace("BODY", "self.s"))
    import adv2_rmod  # type: ignore[import-not-found]

    try:
        @local_cache
        def area(x):
            return x.area()

        assert area(adv2_rmod.Sq(3)) == 9
        path.write_text(_SQ_SRC.replace("BODY", "4"))
        st = os.stat(path)
        os.utime(path, (st.st_atime + 10, st.st_mtime + 10))  # a fresh .pyc
        importlib.invalidate_caches()
        importlib.reload(adv2_rmod)
        assert area(adv2_rmod.Sq(3)) == 12  # before the fix: 9
    finally:
        sys.modules.pop("adv2_rmod", None)


def _lru_factory(k):
    @functools.lru_cache
    def f(x):
        return x * k

    return f


def test_lru_cached_closures_as_arguments_never_share(local_cache):
    """REAL. A functools.lru_cache wrapper is not a FunctionType: fallback()
    reduces it, and its __reduce__ returns its __qualname__ (a str), which
    _reduction() takes for a named singleton ('__global__', module,
    'make.<locals>.f') without checking that the name imports it. Two
    lru_cached closures from one factory share every key."""

    @local_cache
    def apply(fn, x):
        return fn(x)

    assert apply(_lru_factory(1), 5) == 5
    assert apply(_lru_factory(2), 5) == 10  # before the fix: 5


def test_lru_cached_closure_in_a_cached_closure_never_share(local_cache):
    """REAL. The same for a cached function whose closure holds an
    lru_cached helper: both closures get one namespace."""

    def outer(g):
        @local_cache
        def h(x):
            return g(x)

        return h

    assert outer(_lru_factory(1))(5) == 5
    assert outer(_lru_factory(2))(5) == 10  # before the fix: 5


def test_lru_cached_function_redefined_as_argument_is_not_served_old_result(local_cache):
    """REAL. A notebook cell redefining an @functools.lru_cache function
    (module-level this time): keyed by its name only."""

    @local_cache
    def apply(fn, x):
        return fn(x)

    src = "import functools\n@functools.lru_cache\ndef sq(x):\n    return x * BODY\n"
    g1 = {"__name__": "adv2_cell"}
    exec(src.replace("BODY", "1"), g1)
    g2 = {"__name__": "adv2_cell"}
    exec(src.replace("BODY", "2"), g2)
    assert apply(g1["sq"], 5) == 5
    assert apply(g2["sq"], 5) == 10  # before the fix: 5


def test_exec_with_different_globals_never_share(local_cache):
    """REAL in one process (a design limit across processes). Two functions
    exec'd with one __name__ and one body read different globals; they are
    two function objects (lru_cache: two caches) but get one namespace,
    since a function's digest covers its code, defaults and closure, never
    the globals it reads. runpy.run_path(init_globals=...) and notebooks
    (redefine f after changing a global) hit this."""
    src = "@cache\ndef f(x):\n    return x * K\n"
    g1 = {"__name__": "__main__", "cache": local_cache, "K": 1}
    exec(src, g1)
    g2 = {"__name__": "__main__", "cache": local_cache, "K": 2}
    exec(src, g2)
    assert g1["f"](5) == 5
    assert g2["f"](5) == 10  # before the fix: 5


# ============================================================================
# CRASHES (the plain function, and lru_cache, accept these calls)
# ============================================================================


class _Listener:
    """Equal by name; holds a bound method of itself (a callback)."""

    def __init__(self, n):
        self.n = n
        self.callback = self.on_event

    def on_event(self):
        return self.n

    def __eq__(self, other):
        return isinstance(other, _Listener) and other.n == self.n

    def __hash__(self):
        return hash(self.n)


def test_object_holding_its_own_bound_method_does_not_recurse(local_cache):
    """REAL CRASH. fallback() encodes a bound method's __self__ with a fresh
    _native.encode (encode_part: depth back to 0) and without the _enter
    cycle guard: object -> state -> bound method -> object ... ends in
    RecursionError (not the TypeError of an ordinary cycle)."""

    @local_cache
    def fire(listener):
        return listener.callback()

    try:
        assert fire(_Listener(1)) == 1
    except TypeError:
        pass  # a clear refusal would be acceptable; RecursionError is not


def test_singledispatch_function_as_argument(local_cache):
    """CRASH. A module-level functools.singledispatch function (a plain
    function whose closure holds a WeakKeyDictionary) passed as an argument
    raises TypeError; lru_cache keys it by identity. A resolvable
    module-level function could fall back to its name, as its
    un-encodable defaults already do."""

    @functools.singledispatch
    def kind(x):
        return "other"

    @kind.register
    def _(x: int):
        return "int"

    mod = types.ModuleType("adv2_sdmod")
    kind.__module__, kind.__qualname__ = mod.__name__, "kind"
    mod.kind = kind
    sys.modules[mod.__name__] = mod
    try:
        @local_cache
        def apply(fn, x):
            return fn(x)

        assert apply(kind, 1) == "int"  # before the fix: TypeError
    finally:
        del sys.modules[mod.__name__]


class _TreeNode:
    """Equal and hashed by name; children point back at their parent."""

    def __init__(self, name, parent=None):
        self.name, self.parent, self.children = name, parent, []
        if parent is not None:
            parent.children.append(self)

    def __eq__(self, other):
        return isinstance(other, _TreeNode) and other.name == self.name

    def __hash__(self):
        return hash(self.name)


def test_object_with_back_references_is_refused_before_running(local_cache):
    """A node with a parent pointer: the reduction encodes the whole graph,
    so a cycle refuses the argument (the documented TypeError, naming it,
    before the body runs), never a wrong value or a crash."""
    ran = []

    @local_cache
    def name(n):
        ran.append(n)
        return n.name

    root = _TreeNode("root")
    with pytest.raises(TypeError, match="argument 'n'.*recursive"):
        name(_TreeNode("leaf", root))
    assert ran == []


def test_memoryview_argument(local_cache):
    """CRASH (minor). A read-only memoryview is hashable (lru_cache takes
    it) and equal to the bytes it views; picocache refuses it (it cannot be
    pickled). fallback() could key it as bytes(obj)."""

    @local_cache
    def length(b):
        return len(b)

    assert length(memoryview(b"abc")) == 3  # before the fix: TypeError


def test_keyword_name_with_a_lone_surrogate(local_cache):
    """CRASH (contrived). A **kwargs name with a lone surrogate raises
    UnicodeEncodeError (lib.rs Encoder::call: k.extract::<String>())."""

    @local_cache
    def names(**kw):
        return sorted(kw)

    assert names(**{"\ud800": 1}) == ["\ud800"]  # before the fix: UnicodeEncodeError


# ============================================================================
# PER-CALL COST (counted, not timed)
# ============================================================================


def test_function_argument_identity_is_not_recomputed_per_call(local_cache, monkeypatch):
    """PERF. A function argument is keyed by its definition on every call:
    a closure over 100k items costs ~7 ms per call (the plain call: 0.2 us;
    lru_cache hashes it by identity). Its identity could be memoized per
    function object (WeakKeyDictionary), read once like a cached function's
    own closure."""
    calls = []
    orig = _keys.function_identity
    monkeypatch.setattr(_keys, "function_identity", lambda *a, **k: calls.append(1) or orig(*a, **k))

    def make(data):
        return lambda x: x + len(data)

    fn = make(list(range(1000)))

    @local_cache
    def apply(f, x):
        return f(x)

    for _ in range(50):
        assert apply(fn, 1) == 1001
    assert len(calls) <= 5  # before the fix: 50+ (one per call)


def test_local_class_identity_is_not_recomputed_per_call(local_cache, monkeypatch):
    """PERF. An instance of a local class: class_identity() (every method's
    definition) runs on every call (3 times per call observed), ~10x the
    cost of a module-level class's instance."""
    calls = []
    orig = _keys.class_identity
    monkeypatch.setattr(_keys, "class_identity", lambda c: calls.append(1) or orig(c))

    def make():
        @dataclasses.dataclass(frozen=True)
        class P:
            n: int

            def a(self):
                return 1

        return P

    P = make()

    @local_cache
    def get(p):
        return p.n

    for _ in range(50):
        assert get(P(1)) == 1
    assert len(calls) <= 5  # before the fix: 150


# ============================================================================
# DESIGN
# ============================================================================


def test_version_pinned_sibling_definitions_share_as_documented(local_cache):
    """version= pins the name (entries survive edits), so two bodies with one
    qualname and one version share entries: documented (README), the price
    of surviving edits; without a version they never share."""

    def make(kind, version):
        if kind:
            @local_cache(version=version)
            def f(x):
                return x + 1
        else:
            @local_cache(version=version)
            def f(x):
                return x + 2
        return f

    assert make(True, None)(1) == 2 and make(False, None)(1) == 3
    assert make(True, 1)(1) == 2 and make(False, 1)(1) == 2  # pinned: shared


