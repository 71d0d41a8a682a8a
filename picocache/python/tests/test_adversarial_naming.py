"""Adversarial probes of issue 10: what names a cached function and what
keys an argument. A cached call must return what the function would return;
two different functions (or argument values that functools.lru_cache would
tell apart) must never share an entry.

Sections:
- WRONG VALUES: each returned another call's result before its fix;
- HANGS AND REFUSALS: a wait on the thread's own lease, a refused argument;
- REGRESSIONS: probes that passed from the start, kept so they stay that way.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import subprocess
import sys
import textwrap
import time

import pytest

import picocache as pc

PY = sys.executable


def _run(script: str, *args: str, cwd=None) -> str:
    r = subprocess.run([PY, script, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# ============================================================================
# WRONG VALUES
# ============================================================================


def test_bound_methods_of_a_cached_method_as_arguments_differ_by_self(local_cache):
    """A bound method of a @cache-decorated method, passed as an argument, is
    keyed by the method's namespace name only: its __self__ is dropped
    (fallback() finds __picocache_state__ through the bound method's
    attribute forwarding). lru_cache keys bound methods by (self, func)."""
    cache = local_cache

    class Scaler:
        def __init__(self, k):
            self.k = k

        def __picocache_key__(self):
            return self.k

        @cache
        def scale(self, x):
            return x * self.k

    @cache
    def apply(fn, x):
        return fn(x)

    assert apply(Scaler(2).scale, 10) == 20
    assert apply(Scaler(3).scale, 10) == 30  # observed: 20


def test_bound_method_of_base_and_override_are_different_arguments(local_cache):
    """A plain bound method is keyed ("__method__", self, __func__.__name__):
    B.m and its override D.m bound to one object share a key (e.g. passing
    super().m as a callback)."""
    cache = local_cache

    @cache
    def apply(fn, x):
        return fn(x)

    @dataclasses.dataclass(frozen=True)
    class B:
        def m(self, x):
            return x + 1

    @dataclasses.dataclass(frozen=True)
    class D(B):
        def m(self, x):
            return x + 100

        def via_super(self, x):
            return apply(super().m, x)

    d = D()
    assert apply(d.m, 1) == 101
    assert d.via_super(1) == 2  # observed: 101


_WRAPS_SRC = """
import functools

def logged(fn):
    @functools.wraps(fn)
    def inner(*a, **k):
        return fn(*a, **k)
    return inner

@cache
@logged
def f(x):
    return x + BODY
"""


def test_wraps_decorated_function_redefined_gets_a_new_namespace(local_cache):
    """@cache over a functools.wraps decorator: the cached function is the
    decorator's `inner` (one code for every decorated function); its closure
    holds the original f, keyed by NAME only (a module-level function with
    no closure), so f's body is in no digest. A notebook cell re-run with an
    edited body (same module, same qualname) is served the old body's results."""
    g1 = {"__name__": "notebook_cell", "cache": local_cache}
    exec(_WRAPS_SRC.replace("BODY", "1"), g1)
    g2 = {"__name__": "notebook_cell", "cache": local_cache}
    exec(_WRAPS_SRC.replace("BODY", "2"), g2)
    assert g1["f"](1) == 2
    assert g2["f"](1) == 3  # observed: 2
    assert g1["f"].cache_parameters()["name"] != g2["f"].cache_parameters()["name"]


def test_wraps_decorated_function_edited_between_runs_is_not_stale(tmp_path):
    """The same as a script edited between two runs: the commit promises "a
    changed body is a new namespace, so it never serves the old body's
    results", but not through a decorator."""
    store = str(tmp_path / "store")
    script = tmp_path / "job.py"
    head = "import sys, picocache as pc\ncache = pc.LocalCache(sys.argv[1])\n"
    script.write_text(head + _WRAPS_SRC.replace("BODY", "1") + "print(f(1))\n")
    assert _run(str(script), store) == "2"
    script.write_text(head + _WRAPS_SRC.replace("BODY", "2") + "print(f(1))\n")
    assert _run(str(script), store) == "3"  # observed: 2


def test_redefined_module_function_as_argument_is_not_served_old_result(local_cache):
    """A module-level function argument is keyed by (module, qualname). In a
    notebook, redefining `h` and calling apply(h, 1) again returns the old
    h's result; lru_cache keys the function by identity and recomputes."""

    @local_cache
    def apply(fn, x):
        return fn(x)

    src = "def h(x):\n    return x + BODY\n"
    g1 = {"__name__": "notebook_cell2"}
    exec(src.replace("BODY", "1"), g1)
    g2 = {"__name__": "notebook_cell2"}
    exec(src.replace("BODY", "2"), g2)
    assert apply(g1["h"], 1) == 2
    assert apply(g2["h"], 1) == 3  # observed: 2


def test_mutually_recursive_closures_from_one_factory_never_share(local_cache):
    """a's name is computed first; it needs b's name (a cell of a), which
    needs a's: that inner computation hits the cycle guard and b's name is
    MEMOIZED from a ("__cycle__", qualname) stand-in, without k. So b of
    make(1) and b of make(2) share a namespace and a2(1) gets a1's result
    through b. (If b is called first, the names differ: order dependent.)"""
    cache = local_cache

    def make(k):
        @cache
        def a(n):
            return k if n == 0 else b(n - 1)

        @cache
        def b(n):
            return a(n)

        return a, b

    a1, b1 = make(1)
    a2, b2 = make(2)
    assert a1(1) == 1
    assert a2(1) == 2  # observed: 1
    assert b1.cache_parameters()["name"] != b2.cache_parameters()["name"]


def test_make_dataclass_classes_with_one_name_never_share(local_cache):
    """dataclasses.make_dataclass (and type(), below) make classes that are
    not importable by their name but have no '<locals>' in it: they are keyed
    by (module, qualname) only, so instances of two different classes with
    equal fields share an entry. lru_cache: the dataclass __eq__ compares the
    class, so they never do."""

    @local_cache
    def area(s):
        return s.area()

    S1 = dataclasses.make_dataclass("Shape", ["w", "h"], namespace={"area": lambda self: self.w * self.h})
    S2 = dataclasses.make_dataclass("Shape", ["w", "h"], namespace={"area": lambda self: self.w * self.h / 2})
    assert S1(2, 3) != S2(2, 3)
    assert area(S1(2, 3)) == 6
    assert area(S2(2, 3)) == 3  # observed: 6


def test_type_created_classes_with_one_name_never_share(local_cache):
    def make_unit(factor):
        def conv(self, x):
            return x * self.factor

        return type("Unit", (), {"factor": factor, "conv": conv,
                                 "__eq__": lambda a, b: type(a) is type(b),
                                 "__hash__": lambda a: hash(type(a))})

    @local_cache
    def conv(u, x):
        return u.conv(x)

    U2, U3 = make_unit(2), make_unit(3)
    assert conv(U2(), 5) == 10
    assert conv(U3(), 5) == 15  # observed: 10


def test_typed_local_int_subclasses_with_one_qualname_differ(local_cache):
    """typed=True tags a top-level argument with its type's module.qualname
    only (lib.rs type_tag): two local int subclasses from one factory get one
    tag. lru_cache(typed=True) keys by the type object."""

    def unit(suffix):
        class Unit(int):
            def __str__(self):
                return int.__str__(self) + suffix

        return Unit

    M, S = unit("m"), unit("s")

    @local_cache(typed=True)
    def show(x):
        return str(x)

    assert show(M(3)) == "3m"
    assert show(S(3)) == "3s"  # observed: "3m"


def test_flag_pseudo_members_without_a_name_never_share(local_cache):
    """An enum member is keyed by (class, .name); a Flag with
    boundary=KEEP has pseudo-members whose name is None: F(4) and F(8) share."""

    class F(enum.Flag, boundary=enum.KEEP):
        A = 1

    @local_cache
    def bits(f):
        return f.value

    assert F(4) != F(8)
    assert bits(F(4)) == 4
    assert bits(F(8)) == 8  # observed: 4


def test_main_module_classes_of_two_scripts_never_share(tmp_path):
    """Functions of the main module are named by the script's path, but a
    CLASS (or enum, or function) of the main module used as an argument is
    keyed ("__global__", "__main__", qualname): two main.py in two
    directories passing their own `Item` to one library function share."""
    store = str(tmp_path / "store")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "adv_lib.py").write_text(textwrap.dedent("""
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
            import sys, dataclasses
            sys.path.insert(0, {str(lib)!r})
            import adv_lib

            @dataclasses.dataclass(frozen=True)
            class Item:
                n: int
                def describe(self):
                    return "{tag}%d" % self.n

            print(adv_lib.describe(Item(1)))
        """))
        outs.append(_run(str(d / "main.py"), store))
    assert outs == ["A1", "B1"]  # observed: ["A1", "A1"]


def test_local_class_non_plain_class_attribute_counts(local_cache):
    """Since 1b4271c (class_identity rewrite) a local class's class
    attributes count only if 'plain' (no list/dict/set): two classes from one
    factory that differ by a list attribute share (its docstring admits it;
    at aa0e28e the class raised TypeError instead)."""

    def make(rates):
        @dataclasses.dataclass(frozen=True)
        class Pricer:
            RATES = rates
            n: int

            def price(self):
                return self.RATES[self.n]

        return Pricer

    P1, P2 = make([10, 20]), make([30, 40])

    @local_cache
    def price(p):
        return p.price()

    assert price(P1(1)) == 20
    assert price(P2(1)) == 40  # observed (working tree): 20


# ============================================================================
# HANGS AND REFUSALS
# ============================================================================


def test_two_wrappers_of_one_namespace_do_not_wait_on_own_lease(tmp_path):
    """Two wrappers with one namespace (name= reuse, or two identical
    closures from one factory) calling each other with one key in one thread:
    with an in-flight table per wrapper, the inner call waited on the lease
    its own thread holds, for the whole lease_timeout."""
    import threading

    cache = pc.LocalCache(tmp_path / "store", lease_timeout=600)

    @cache(name="shared")
    def outer(n):
        return inner(n) + 1

    @cache(name="shared")
    def inner(n):
        return n

    out = []
    t = threading.Thread(target=lambda: out.append(outer(5)), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the inner call waits on its own thread's lease"
    assert out == [6]


def test_bound_builtin_methods_as_arguments(local_cache):
    """A bound builtin method ((255).bit_length) raised TypeError ("not
    importable by name"); lru_cache takes it. Keyed like a bound Python
    method: its __self__ and its name."""

    @local_cache
    def call(fn):
        return fn()

    assert call((255).bit_length) == 8


# ============================================================================
# REGRESSIONS
# ============================================================================


def test_name_is_computed_once_per_function(local_cache, monkeypatch):
    import picocache._naming as naming

    calls = []
    orig = naming.function_identity
    monkeypatch.setattr(naming, "function_identity", lambda *a, **k: calls.append(1) or orig(*a, **k))

    def make(k):
        @local_cache
        def f(x):
            return x + len(k)

        return f

    f = make(list(range(100_000)))
    for i in range(5000):
        f(i % 10)
    assert len(calls) == 1  # named once, at the first call; not per call


def test_closures_over_distinct_mutable_state_never_share(local_cache):
    def make(cfg):
        @local_cache
        def get(key):
            return cfg[key]

        return get

    assert make({"a": 1})("a") == 1
    assert make({"a": 2})("a") == 2


def test_local_enums_with_one_name_differ_by_value(local_cache):
    def mk(v):
        class Mode(enum.Enum):
            FAST = v

        return Mode

    @local_cache
    def val(m):
        return m.value

    assert val(mk(1).FAST) == 1
    assert val(mk(2).FAST) == 2


def test_intflag_pseudo_members_differ(local_cache):
    class P(enum.IntFlag):
        A = 1

    @local_cache
    def val(m):
        return int(m)

    assert val(P(8)) == 8 and val(P(16)) == 16


def test_partials_of_one_function_differ_by_arguments(local_cache):
    def power(x, e):
        return x ** e

    @local_cache
    def apply(fn, x):
        return fn(x)

    assert apply(functools.partial(power, e=2), 3) == 9
    assert apply(functools.partial(power, e=3), 3) == 27


def test_version_pinned_closures_still_differ_by_contents(local_cache):
    def make(k):
        @local_cache(version=1)
        def mul(x):
            return x * k

        return mul

    assert make(2)(5) == 10
    assert make(3)(5) == 15


def test_python_c_programs_with_one_function_name_differ(tmp_path):
    store = str(tmp_path / "store")
    prog = ("import sys, picocache as pc\ncache = pc.LocalCache(sys.argv[1])\n"
            "@cache\ndef f(x):\n    return x + BODY\nprint(f(1))\n")
    outs = []
    for body in ("1", "2"):
        r = subprocess.run([PY, "-c", prog.replace("BODY", body), store],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout.strip())
    assert outs == ["2", "3"]


# ---- WRONG VALUES, continued (fail now; 1b4271c class_identity) ----


def test_local_class_holding_a_function_from_its_factory_counts(local_cache):
    """class_identity (1b4271c) skips a function attribute whose qualname is
    not under the class's ('one that another class lent it'): a class factory
    that stores its argument function as a (static) method makes two
    classes with one key."""

    def double(x):
        return 2 * x

    def triple(x):
        return 3 * x

    def make(fn):
        @dataclasses.dataclass(frozen=True)
        class Step:
            run = staticmethod(fn)
            n: int

            def go(self):
                return self.run(self.n)

        return Step

    @local_cache
    def go(step):
        return step.go()

    assert go(make(double)(5)) == 10
    assert go(make(triple)(5)) == 15  # observed: 10
