"""Adversarial tests, session 11: sealed entries, the 1.4 drop-in, f.map,
content keys of arrays, max_bytes, from a hostile user's and a hostile
store's side.

The project's first rule: a cached call returns exactly what the function
returns (never another call's value, never code from the store, never a
hang) or steps aside with a warning.

Tests marked ``# failed before the fix`` reproduced a bug found in this
round (their docstring states the expected behaviour and the cause found;
"Today" there means before the fix); the others check a hostile case that
held. One documents a limitation (strict xfail).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import picocache as pc
from picocache import _native
from picocache._keys import fallback
from conftest import ALL, NATIVE, REDIS, django_setup, make_cache, need, uid

IDENT = (lambda v: v, lambda b: b)  # values are bytes, stored as they are


def key(obj) -> bytes:
    return _native.encode(obj, False, fallback)


def _same_store(kind: str, tmp_path, tag: str, **kw):
    """A cache of `kind` on one store per (tmp_path, tag): two calls with the
    same tag and different secrets see each other's entries."""
    if kind == "local":
        return pc.LocalCache(tmp_path / ("store-" + tag), **kw)
    if kind == "sqlite":
        return pc.SQLiteCache(tmp_path / "c.db", table_name="t_" + tag, **kw)
    if kind == "redis":
        return pc.RedisCache(need("PICOCACHE_REDIS_URL", REDIS), namespace="t" + tag, **kw)
    if kind == "sa-engine":
        sqlalchemy = pytest.importorskip("sqlalchemy")
        return pc.SQLAlchemyCache(sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'sa.db'}"),
                                  table_name="t_" + tag, **kw)
    if kind.startswith("django"):
        django_setup()
        alias = {"django": "default", "django-db": "db"}[kind]
        return pc.DjangoCache(alias, **kw)
    raise ValueError(kind)


def _plant_other_secret(kind, tmp_path, tag, name, args, value=999):
    """Stores `value` for name(*args) through a cache with another secret
    (what another machine, or an attacker holding no secret of ours, leaves)."""
    evil = _same_store(kind, tmp_path, tag, secret="attacker-" + uid())

    @evil(name=name)
    def planted(*a):
        return value

    st = planted.__picocache_state__
    ns = st.namespace()
    k = ns.key(tuple(args), {})
    ns.put(k, pickle.dumps(value))


def _forget_layer(f) -> None:
    """DjangoCache's in-process layer holds this process's own value: a
    planted entry meets a process that has not seen the key yet."""
    ns = f.__picocache_state__.ns
    inner = getattr(ns, "_inner", None)
    if inner is not None and hasattr(inner, "layer"):
        inner.layer.clear()


SHARED = ["local", "sqlite", "redis", "sa-engine", "django", "django-db"]


# =====================================================================================
# Sealed entries
# =====================================================================================


def test_secrets_given_as_one_string_is_not_split_into_characters(tmp_path):  # failed before the fix
    """``secrets="a-long-secret"`` (a str where a list was meant) must not
    become one secret per character (the first, one letter, would seal every
    entry: a forger needs at most 256 guesses). Expected: TypeError, or the
    string taken as one secret. Cause: _seal.secret_list runs list(secrets)
    on a str."""
    try:
        cache = pc.LocalCache(tmp_path / "s", secrets="a-long-secret")
    except TypeError:
        return
    assert cache._secrets == [b"a-long-secret"]


@pytest.mark.parametrize("how", ["readable-by-others", "owned-by-another-user"])
def test_a_secret_file_others_can_read_is_refused(how, tmp_path, monkeypatch):  # failed before the fix
    """The per-user secret file is documented 0600: a secret file that others
    can read (0644), or that another user owns (and so can rewrite), gives
    them the key to forge sealed entries (and so run a planted pickle through
    any store they can write). Expected: refused like one others can write
    (the cache steps aside with a warning, or raises), never used to verify
    entries. Cause: picocache/src/secret.rs read() checks only mode & 0o022
    (not read permission, not the owner)."""
    secret = tmp_path / "secret"
    secret.write_text("known-to-every-local-user\n")
    if how == "readable-by-others":
        secret.chmod(0o644)
    else:
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        secret.chmod(0o600)
        os.chown(secret, 65534, 65534)
    monkeypatch.delenv("PICOCACHE_SECRET", raising=False)
    monkeypatch.setenv("PICOCACHE_SECRET_FILE", str(secret))
    store = tmp_path / "store"
    name = "adv11.secret-file." + uid()
    try:
        victim = pc.LocalCache(store)
    except pc.CacheError:
        return  # refused at construction (a configuration error): fine

    @victim(name=name)
    def f(x):
        return ("true", x)

    try:
        f(0)
    except pc.CacheError:
        return  # refused: fine
    # A local user who read the file forges an entry.
    forger = pc.LocalCache(store, secret="known-to-every-local-user")

    @forger(name=name)
    def forged(x):
        return ("FORGED", x)

    assert forged(1) == ("FORGED", 1)
    assert f(1) == ("true", 1), "an entry sealed with a world-readable secret was served"


@pytest.mark.parametrize("kind", ["local", "sqlite", "django", "sa-engine"])
def test_map_warns_about_a_rejected_entry(kind, tmp_path, caplog):  # failed before the fix
    """f.map over an entry that fails its seal check must log the warning a
    plain call logs ("... was rejected ..."): an operator is told someone
    writes the store. Today the entry is recomputed silently. Cause:
    _batch.run_batch uses get_many, which turns a rejection into a None
    (picocache/src/sealed.rs get_many; _seal.SealedNamespace.get_many)."""
    tag, name = uid(), "adv11.mapwarn." + uid()
    cache = _same_store(kind, tmp_path, tag, secret="ours")
    calls = []

    @cache(name=name)
    def f(x):
        calls.append(x)
        return x * 2

    assert f(1) == 2
    _plant_other_secret(kind, tmp_path, tag, name, (1,))
    _forget_layer(f)
    with caplog.at_level(logging.WARNING, logger="picocache"):
        assert f.map([1, 2]) == [2, 4]
    assert calls == [1, 1, 2]
    assert "rejected" in caplog.text


@pytest.mark.parametrize("kind", ["local", "django"])
def test_map_with_strict_raises_cache_rejected(kind, tmp_path):  # failed before the fix
    """strict=True turns a rejected entry into picocache.CacheRejected for a
    plain call; f.map must not bypass it. Today f.map recomputes and returns.
    Cause: as test_map_warns_about_a_rejected_entry (get_many swallows the
    rejection, run_batch never calls fail())."""
    tag, name = uid(), "adv11.mapstrict." + uid()
    cache = _same_store(kind, tmp_path, tag, secret="ours", strict=True)

    @cache(name=name)
    def f(x):
        return x * 2

    assert f(1) == 2
    _plant_other_secret(kind, tmp_path, tag, name, (1,))
    _forget_layer(f)
    with pytest.raises(pc.CacheRejected):
        f(1)
    _forget_layer(f)
    with pytest.raises(pc.CacheRejected):
        f.map([1])


@pytest.mark.parametrize("kind", ["django", "sa-engine"])
def test_rejected_is_counted_per_function_and_once_per_entry(kind, tmp_path):  # failed before the fix
    """cache_stats()["rejected"] is the function's count, and one rejected
    entry met by one call counts once (as on the native backends). On the
    Python-written namespaces (Django, SQLAlchemy Engine) today it is the
    count of every function of the cache object, and one call counts the
    entry twice (the lookup and the recheck after the lease). Cause:
    BaseCache._sealer() is one Sealer per cache object whose counter
    _seal.SealedNamespace.stats reports; SealedNamespace.get counts again
    with recheck=True."""
    tag = uid()
    cache = _same_store(kind, tmp_path, tag, secret="ours")
    fname, gname = "adv11.count.f." + uid(), "adv11.count.g." + uid()

    @cache(name=fname)
    def f(x):
        return x

    @cache(name=gname)
    def g(x):
        return -x

    assert (f(1), g(1)) == (1, -1)
    _plant_other_secret(kind, tmp_path, tag, gname, (1,))
    _forget_layer(g)
    assert g(1) == -1
    assert g.cache_stats()["rejected"] == 1
    assert f.cache_stats()["rejected"] == 0


@pytest.mark.parametrize("bad", ["a str", 12, ("a", "tuple"), bytearray(b"\xa7" + b"x" * 40)])
def test_django_a_stored_value_that_is_not_bytes_is_a_miss(bad):  # failed before the fix
    """A Django cache entry whose value part is not bytes (a str, an int, a
    bytearray: another program, an older layout, a hostile writer) must be a
    miss: the function runs and its result is returned. Today the call raises
    TypeError "the arguments of f() cannot be used as a cache key: argument
    'stored': 'str' object cannot be converted to 'PyBytes'" (blaming the
    caller's arguments). Cause: _seal.SealedNamespace.get hands any object to
    Sealer.open; _core's wrappers read its TypeError as a key error."""
    django_setup()
    cache = pc.DjangoCache("default", version=uid(), secret="ours")
    calls = []

    @cache
    def f(x):
        calls.append(x)
        return x * 2

    assert f(1) == 2
    inner = f.__picocache_state__.ns._inner
    c = inner.cache
    k = inner.key((1,), {})
    c.set(inner._dkey(inner._gen(c), k), (k, bad, None), timeout=None)
    inner.layer.clear()
    assert f(1) == 2
    assert calls == [1, 1]


class _Evil:
    """Unpickling this creates a marker file (a stand-in for any command)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.xfail(strict=True, reason=(
    "a documented limitation (README, 'Who can write the store'): Django's cache backends unpickle "
    "what they read before picocache sees it, so whoever can write Django's cache server can run "
    "code in every Django application that reads it; the seal protects DjangoCache's values, not "
    "Django's own loading"))
def test_django_redis_a_pickle_planted_with_a_raw_client_never_runs(tmp_path):
    """Someone who can write the Redis server behind Django's cache (but runs
    no code on the application's hosts) must not run code in the application:
    the first rule, and the point of sealed entries. Today a pickle planted
    with a plain Redis client under DjangoCache's generation key
    (``picocache:<digest>:gen``, read on every call) runs when f(1) is called,
    before any seal is checked: Django's RedisCache unpickles every value it
    reads (the DatabaseCache, FileBasedCache and Memcached backends too).
    Cause: _django.DjangoNamespace reads through Django's deserializing
    get(); _seal.SealedNamespace can only check what Django already loaded.
    (A fix needs bytes read without unpickling, e.g. the backend's raw
    client, or DjangoCache refused/documented for shared stores.)"""
    django_setup()
    need("PICOCACHE_REDIS_URL", REDIS)
    redis = pytest.importorskip("redis")
    from django.core.cache import caches

    cache = pc.DjangoCache("redis", version=uid(), secret="ours")

    @cache
    def f(x):
        return x * 2

    assert f(1) == 2
    inner = f.__picocache_state__.ns._inner
    raw_key = caches["redis"].make_and_validate_key(inner.base + ":gen")
    r = redis.Redis.from_url(need("PICOCACHE_REDIS_URL", REDIS))
    assert r.exists(raw_key)
    marker = tmp_path / "PWNED"
    r.set(raw_key, pickle.dumps(_Evil(str(marker))))
    try:
        try:
            assert f(1) == 2
        except pc.CacheError:
            pass  # stepping aside is fine
    finally:
        r.delete(raw_key)  # leave no planted pickle in the shared server
    assert not marker.exists(), "a pickle planted in the store ran in the application"


@pytest.mark.parametrize("kind", SHARED)
def test_async_call_over_a_planted_entry_computes(kind, tmp_path, caplog):
    """Held: an async function meets an entry sealed with another secret: a
    miss with a warning, the true value, and the result replaces it."""
    tag, name = uid(), "adv11.async." + uid()
    cache = _same_store(kind, tmp_path, tag, secret="ours")
    calls = []

    @cache(name=name)
    async def f(x):
        calls.append(x)
        return x * 3

    assert asyncio.run(f(2)) == 6
    _plant_other_secret(kind, tmp_path, tag, name, (2,))
    _forget_layer(f)
    with caplog.at_level(logging.WARNING, logger="picocache"):
        assert asyncio.run(f(2)) == 6
    assert "rejected" in caplog.text
    assert asyncio.run(f(2)) == 6
    assert calls == [2, 2]


@pytest.mark.parametrize("kind", SHARED)
def test_map_over_planted_entries_returns_the_true_values(kind, tmp_path):
    """Held: f.map never returns a planted value (and overwrites it)."""
    tag, name = uid(), "adv11.mapvals." + uid()
    cache = _same_store(kind, tmp_path, tag, secret="ours")
    calls = []

    @cache(name=name)
    def f(x):
        calls.append(x)
        return x + 100

    assert f.map([1, 2, 3]) == [101, 102, 103]
    for x in (1, 3):
        _plant_other_secret(kind, tmp_path, tag, name, (x,))
    _forget_layer(f)
    assert f.map([3, 2, 1, 3]) == [103, 102, 101, 103]
    assert calls == [1, 2, 3, 3, 1]
    _forget_layer(f)
    assert f.map([1, 3]) == [101, 103] and calls == [1, 2, 3, 3, 1]


def _redis():
    redis = pytest.importorskip("redis")
    return redis.Redis.from_url(need("PICOCACHE_REDIS_URL", REDIS))


def test_raw_redis_plants_are_misses_truncated_header_only_empty_replayed():
    """Held: with a plain Redis client, an attacker replaces a sealed value by
    its first 21 bytes (header only), by 20 bytes, by b"", by the sealed value
    of another key of the function, by the sealed value of the same key of
    another function, and by a header of ours followed by a pickle: each is a
    miss and the function's own value is returned; no planted pickle runs."""
    r = _redis()
    prefix = "adv" + uid()
    cache = pc.RedisCache(need("PICOCACHE_REDIS_URL", REDIS), namespace=prefix, secret="ours")
    calls = []

    @cache(name="adv11.raw.f")
    def f(x):
        calls.append(x)
        return ("f", x)

    @cache(name="adv11.raw.g")
    def g(x):
        return ("g", x)

    f(1), f(2), g(1)
    fkeys = sorted(r.scan_iter(match=f"{prefix}:{{adv11.raw.f}}:v:*"))
    gkeys = sorted(r.scan_iter(match=f"{prefix}:{{adv11.raw.g}}:v:*"))
    assert len(fkeys) == 2 and len(gkeys) == 1
    vals = {k: r.get(k) for k in fkeys + gkeys}
    # Which f key is f(1)?  The one whose value holds ("f", 1).
    k1 = next(k for k in fkeys if pickle.loads(vals[k][21:]) == ("f", 1))
    k2 = next(k for k in fkeys if k != k1)
    good = vals[k1]
    marker = f"/tmp/adv11-pwned-{uid()}"
    plants = [good[:21], good[:20], b"", vals[k2], vals[gkeys[0]],
              good[:21] + pickle.dumps(_Evil(marker)), good[:5] + bytes(16) + good[21:]]
    for p in plants:
        r.set(k1, p)
        n = len(calls)
        assert f(1) == ("f", 1)
        assert len(calls) == n + 1
        assert f(1) == ("f", 1) and len(calls) == n + 1  # the true value replaced the plant
    assert not os.path.exists(marker)


@pytest.mark.parametrize("kind", ALL)
def test_empty_21_byte_and_large_values_round_trip(kind, tmp_path):
    """Held: values whose sealed form is exactly the 21-byte header (b""), the
    header plus 21 bytes, and 5 MB, on every backend, by a call and by map."""
    cache = make_cache(kind, tmp_path, secret="ours", value_serializer=IDENT)
    calls = []

    @cache
    def f(n):
        calls.append(n)
        return b"\x00" * n

    for n in (0, 21, 5_000_000):
        assert f(n) == b"\x00" * n
        assert f(n) == b"\x00" * n
    assert f.map([0, 21]) == [b"", b"\x00" * 21]
    assert calls == [0, 21, 5_000_000]


_RACE = textwrap.dedent("""
    import sys, picocache
    cache = picocache.LocalCache(sys.argv[1], secret=sys.argv[2])
    @cache(name="adv11.race")
    def f(x):
        return (sys.argv[2], x)
    bad = 0
    for i in range(400):
        v = f(i % 7)
        if v != (sys.argv[2], i % 7):
            bad += 1
        if i % 50 == 0:
            f.cache_clear()
    print(bad)
""")


def test_processes_with_different_secrets_never_see_each_others_values(tmp_path):
    """Held: two processes on one store with different secrets, racing on the
    same keys (and clearing): each only ever returns what its own function
    returned."""
    store = str(tmp_path / "store")
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, store, s], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for s in ("alpha", "beta")]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs == ["0", "0"]


# =====================================================================================
# In-flight computations
# =====================================================================================


def test_concurrent_calls_in_two_stores_with_one_name_do_not_share_a_result(tmp_path):  # failed before the fix
    """Two caches on different stores, each with a function named "report"
    (a name is scoped by its store): concurrent calls of the two with one
    argument must each return their own function's value. Today the second
    waits for the first's in-flight computation and returns ITS value (another
    function's value). Cause: _core compute_sync keys the process-wide
    _flights table by (namespace name, key) only, not by store."""
    a = pc.LocalCache(tmp_path / "a", secret="ours")
    b = pc.LocalCache(tmp_path / "b", secret="ours")

    @a(name="adv11.report")
    def fa(x):
        time.sleep(0.4)
        return ("a", x)

    @b(name="adv11.report")
    def fb(x):
        time.sleep(0.4)
        return ("b", x)

    out = {}
    t1 = threading.Thread(target=lambda: out.__setitem__("a", fa(1)))
    t2 = threading.Thread(target=lambda: out.__setitem__("b", fb(1)))
    t1.start()
    time.sleep(0.1)
    t2.start()
    t1.join()
    t2.join()
    assert out == {"a": ("a", 1), "b": ("b", 1)}


# =====================================================================================
# f.map / f.starmap
# =====================================================================================


def test_map_of_a_method_passes_the_instance(tmp_path):  # failed before the fix
    """``obj.method.map(xs)`` must return ``[obj.method(x) for x in xs]``.
    Today the instance is dropped: each x is passed as ``self`` and the
    results are another call's (here [("m", 10), ("m", 10)] instead of
    [("m", 1), ("m", 2)]). Cause: wrapper.map is an attribute of the plain
    function; a bound method forwards it without binding (_core map_/batch
    never see the instance)."""
    cache = pc.LocalCache(tmp_path / "s", secret="ours")

    class A:
        def __picocache_key__(self):
            return "A"

        @cache
        def m(self, x=10):
            return ("m", x)

        @cache
        def s(self, x, y=0):
            return ("s", x, y)

    a = A()
    assert [a.m(1), a.m(2)] == [("m", 1), ("m", 2)]
    try:
        got = a.m.map([1, 2])
    except TypeError:
        got = None  # refusing would step aside; returning wrong values does not
    assert got in (None, [("m", 1), ("m", 2)])
    try:
        got = a.s.starmap([(1, 2), (3, 4)])
    except TypeError:
        got = None
    assert got in (None, [("s", 1, 2), ("s", 3, 4)])


def test_map_with_an_executor_and_a_failure_stores_the_others(tmp_path):
    """Held: in an executor, every call but the failing one is stored, the
    exception is the first in input order, and results come in input order."""
    import concurrent.futures

    cache = pc.LocalCache(tmp_path / "s", secret="ours")
    calls = []

    @cache
    def f(x):
        calls.append(x)
        time.sleep(0.01 * (5 - x))
        if x in (2, 4):
            raise ValueError(x)
        return x * 10

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        with pytest.raises(ValueError) as ei:
            f.map([1, 2, 3, 4, 5], executor=ex)
    assert ei.value.args == (2,)
    calls.clear()
    assert f.map([5, 3, 1]) == [50, 30, 10] and calls == []


_POOL_MODULE = textwrap.dedent("""
    import picocache, sys
    cache = picocache.LocalCache(sys.argv[1], secret="ours")
    @cache
    def sq(x):
        return x * x
""")
_POOL_MAIN = textwrap.dedent("""
    import concurrent.futures, sys
    sys.path.insert(0, sys.argv[2])
    import pool_mod
    if __name__ == "__main__":
        with concurrent.futures.ProcessPoolExecutor(2) as ex:
            print(pool_mod.sq.map([1, 2, 3], executor=ex))
        print(pool_mod.sq.map([1, 2, 3]), pool_mod.sq.cache_info().misses)
""")


def test_map_in_a_process_pool_executor(tmp_path):  # failed before the fix
    """f.map(xs, executor=...) takes "a concurrent.futures executor"; a
    ProcessPoolExecutor is the one CPU-bound work needs. For a module-level
    cached function it must return [1, 4, 9] (computed in the pool, then
    stored: a second map is all hits). Today every call fails with
    PicklingError "Can't pickle <function sq>: it's not the same object as
    pool_mod.sq". Cause: _batch.run_batch submits the undecorated function,
    which pickle finds by name and finds the wrapper instead."""
    (tmp_path / "pool_mod.py").write_text(_POOL_MODULE)
    main = tmp_path / "main.py"
    main.write_text(_POOL_MAIN)
    r = subprocess.run([sys.executable, str(main), str(tmp_path / "store"), str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-800:]
    # The first map's three computed calls are this process's misses; the
    # second map (all hits) adds none.
    assert r.stdout.split("\n")[:2] == ["[1, 4, 9]", "[1, 4, 9] 3"]


# =====================================================================================
# Arrays keyed by content
# =====================================================================================


def test_pandas_categorical_dtype_is_part_of_the_key(tmp_path):  # failed before the fix
    """Two Series with the same values but other categories (or ordered
    vs not) differ: == refuses to compare them, and f(s) may differ
    (s.cat.categories, value_counts(), min() raises when unordered). Today
    they are one key and the second call returns the first's value. Cause:
    _arrays.pandas_key keys the dtype by str(dtype), which is "category" for
    every CategoricalDtype."""
    pd = pytest.importorskip("pandas")
    cache = pc.LocalCache(tmp_path / "s", secret="ours")

    @cache
    def categories(s):
        return list(s.cat.categories)

    @cache
    def ordered(s):
        return bool(s.cat.ordered)

    ab = pd.Series(["a"], dtype=pd.CategoricalDtype(["a", "b"]))
    ac = pd.Series(["a"], dtype=pd.CategoricalDtype(["a", "c"]))
    assert categories(ab) == ["a", "b"]
    assert categories(ac) == ["a", "c"]
    on = pd.Series(["a"], dtype=pd.CategoricalDtype(["a", "b"], ordered=True))
    off = pd.Series(["a"], dtype=pd.CategoricalDtype(["a", "b"], ordered=False))
    assert ordered(on) is True
    assert ordered(off) is False


def test_pandas_multiindex_names_are_part_of_the_key(tmp_path):  # failed before the fix
    """An Index's name is part of its key; a MultiIndex's level names must be
    too (reset_index(), index.names differ). Today two Series whose
    MultiIndexes differ only in names are one key. Cause: _arrays.pandas_key
    keys an Index by obj.name, which is None for a MultiIndex."""
    pd = pytest.importorskip("pandas")
    cache = pc.LocalCache(tmp_path / "s", secret="ours")

    @cache
    def names(s):
        return list(s.index.names)

    ab = pd.Series([1], index=pd.MultiIndex.from_tuples([(1, 2)], names=["a", "b"]))
    xy = pd.Series([1], index=pd.MultiIndex.from_tuples([(1, 2)], names=["x", "y"]))
    assert names(ab) == ["a", "b"]
    assert names(xy) == ["x", "y"]


def test_pandas_datetimeindex_freq_is_part_of_the_key(tmp_path):  # failed before the fix
    """A DatetimeIndex with a freq and one without hold the same values but
    behave differently (idx.shift(1) needs the freq; without it pandas
    raises). Today they are one key: the second call returns the first's
    result instead of raising. Cause: _arrays.pandas_key ignores freq."""
    pd = pytest.importorskip("pandas")
    cache = pc.LocalCache(tmp_path / "s", secret="ours")

    @cache
    def shifted(idx):
        return [str(t) for t in idx.shift(1)]

    with_freq = pd.date_range("2020-01-01", periods=2, freq="D")
    without = pd.DatetimeIndex(list(with_freq))
    assert without.freq is None
    assert shifted(with_freq) == ["2020-01-02 00:00:00", "2020-01-03 00:00:00"]
    with pytest.raises(Exception):
        shifted(without)


def test_object_arrays_keep_their_dtype_in_the_key(tmp_path):  # failed before the fix
    """Arrays with Python objects are keyed by their elements; their dtype
    must count too: an object array, a numpy 2 StringDType array and a
    structured array with an object field can hold the same elements (same
    tolist()) and are different arguments. Today they are one key (the
    second call returns the first's dtype). Cause: _arrays.ndarray_key's
    hasobject branch keys (shape, tolist()) without the dtype."""
    np = pytest.importorskip("numpy")
    cache = pc.LocalCache(tmp_path / "s", secret="ours")

    @cache
    def dtype_of(a):
        return str(a.dtype)

    assert dtype_of(np.array(["a"], dtype=object)) == "object"
    if hasattr(np, "dtypes") and hasattr(np.dtypes, "StringDType"):
        assert dtype_of(np.array(["a"], dtype=np.dtypes.StringDType())) == "StringDType()"
    o = np.empty(1, dtype=object)
    o[0] = (1, "b")
    s = np.array([(1, "b")], dtype=[("a", "i8"), ("b", "O")])
    assert o.tolist() == s.tolist()
    assert dtype_of(o) == "object"
    assert dtype_of(s) == str(s.dtype)


def test_a_strided_memoryview_of_a_non_native_format_is_a_key(tmp_path):  # failed before the fix
    """A memoryview that is not contiguous, of a format with an explicit
    byte order ('<i' from ctypes, '>i4' from numpy), must be keyed by its
    content (or refused with TypeError naming the argument). Today the call
    raises ValueError "memoryview: destination format must be a native single
    character format". Cause: _arrays.buffer_key casts the copied bytes back
    to obj.format, which memoryview.cast accepts only for native formats."""
    import ctypes

    cache = pc.LocalCache(tmp_path / "s", secret="ours")

    @cache
    def content(m):
        return m.tobytes()

    m = memoryview((ctypes.c_int * 4)(1, 2, 3, 4))[::2]
    assert not m.c_contiguous and m.format == "<i"
    try:
        first = content(m)
    except TypeError:
        return
    assert first == m.tobytes()
    assert content(memoryview((ctypes.c_int * 4)(1, 2, 3, 4))[::2]) == first
    assert content.cache_info().hits == 1


def test_a_structured_array_with_out_of_order_fields_is_a_key(tmp_path):  # failed before the fix
    """A structured array whose fields are out of order (or overlap) in
    memory is an ordinary numpy array: a cached call with it must return the
    function's value (keyed by content, or a TypeError naming the argument).
    Today the call raises ValueError "dtype.descr is not defined for types
    with overlapping or out-of-order fields" and the function never runs.
    Cause: _arrays.ndarray_key keys a structured dtype by str(dt.descr).
    (The key must still tell offsets apart: the same bytes read as a=1, b=2
    under one layout are a=2, b=1 under the other.)"""
    np = pytest.importorskip("numpy")
    cache = pc.LocalCache(tmp_path / "s", secret="ours")

    @cache
    def field_a(arr):
        return arr["a"].tolist()

    swapped = np.dtype({"names": ["a", "b"], "formats": ["<i4", "<i4"], "offsets": [4, 0], "itemsize": 8})
    arr = np.zeros(2, dtype=swapped)
    arr["a"] = [1, 2]
    try:
        assert field_a(arr) == [1, 2]
    except TypeError:
        return
    assert field_a(arr.copy()) == [1, 2]
    ordered = np.dtype({"names": ["a", "b"], "formats": ["<i4", "<i4"], "offsets": [0, 4], "itemsize": 8})
    assert field_a(arr.view(ordered)) == [0, 0]


def test_a_tuple_that_mimics_an_array_key_is_another_key():
    """Held: a tuple shaped like the replacement of an array, an enum or a
    complex is not keyed like the object it imitates."""
    np = pytest.importorskip("numpy")
    from picocache._arrays import ndarray_key

    a = np.array([1, 2, 3])
    assert key(a) != key(ndarray_key(np, a))
    assert key(complex(1, 2)) != key(("__complex__", 1.0, 2.0))
    assert key(memoryview(b"ab")) != key(("__memoryview__", "B", (2,), b"ab"))


def test_masked_arrays_differ_by_fill_value_and_mask(tmp_path):
    """Held: masked arrays with one data but another mask or fill_value are
    other keys (filled() differs)."""
    np = pytest.importorskip("numpy")
    cache = pc.LocalCache(tmp_path / "s", secret="ours")

    @cache
    def filled(m):
        return m.filled().tolist()

    assert filled(np.ma.array([1, 2], mask=[0, 1], fill_value=7)) == [1, 7]
    assert filled(np.ma.array([1, 2], mask=[0, 1], fill_value=9)) == [1, 9]
    assert filled(np.ma.array([1, 2], mask=[1, 0], fill_value=9)) == [9, 2]


# =====================================================================================
# The 1.4 drop-in
# =====================================================================================

_FORK_EXIT = textwrap.dedent("""
    import logging, os, sys, threading
    logging.basicConfig(level=logging.WARNING, format="WARNING %(message)s")
    import picocache
    kind = sys.argv[1]
    cache = picocache.SQLiteCache(":memory:", secret="s") if kind == "sqlite" \\
        else picocache.SQLAlchemyCache("sqlite://", secret="s")
    calls = []
    @cache
    def f(x):
        calls.append(x)
        return x + 1
    f(1)
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a worker that exits normally (a web server's worker recycling)
    os.waitpid(pid, 0)
    # The parent's cache is still its own: new connections open its database.
    def work(i):
        for j in range(30):
            f(100 * i + j)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    n = len(calls)
    for i in range(6):
        for j in range(30):
            f(100 * i + j)
    print(len(calls) - n)
""")


@pytest.mark.parametrize("kind", ["sqlite", "sqlalchemy"])
def test_an_in_memory_database_outlives_a_forked_child_that_exits(kind):  # failed before the fix
    """SQLiteCache(":memory:") / SQLAlchemyCache("sqlite://") is deleted when
    ITS cache object is garbage collected, not when a forked child process
    exits: after a child's normal exit the parent keeps caching (stored
    entries hit, no warnings). Today the child's exit removes the database
    directory; the parent's new connections fail ("unable to open database
    file"), every call recomputes with a warning. Cause:
    _caches._memory_database's weakref.finalize runs at interpreter exit in
    every process that inherited it."""
    r = subprocess.run([sys.executable, "-c", _FORK_EXIT, kind], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0", "entries stored after the child exited were lost"
    assert "WARNING" not in r.stderr, r.stderr


def test_django_layer_never_serves_after_another_process_clears_or_past_timeout():
    """Held: DjangoCache(maxsize=...)'s in-process layer drops an entry that
    another cache object (another process) cleared, and one past its ttl."""
    django_setup()
    version = uid()
    calls = []

    def make():
        cache = pc.DjangoCache("default", version=version, secret="ours")

        @cache(maxsize=4, ttl=1, name="adv11.layer." + version)
        def f(x):
            calls.append(x)
            return (x, len(calls))

        return f

    a, b = make(), make()
    first = a(1)
    assert b(1) == first
    b.cache_clear()
    second = a(1)
    assert second != first
    time.sleep(1.1)
    assert a(1) != second


def test_redis_params_dict_selects_the_db():
    """Held: RedisCache({"host", "port", "db"}) (str port and db too) and
    url_or_params= put the entries in that database."""
    r0 = _redis()
    from urllib.parse import urlparse

    u = urlparse(need("PICOCACHE_REDIS_URL", REDIS))
    prefix = "adv" + uid()
    cache = pc.RedisCache({"host": u.hostname, "port": str(u.port), "db": "7"}, namespace=prefix,
                          secret="ours")

    @cache
    def f(x):
        return x

    assert f(1) == 1 and f(1) == 1 and f.cache_info().hits == 1
    import redis

    r7 = redis.Redis(host=u.hostname, port=u.port, db=7)
    assert list(r7.scan_iter(match=prefix + "*"))
    assert not list(r0.scan_iter(match=prefix + "*")) or u.path.strip("/") == "7"
    cache2 = pc.RedisCache(url_or_params={"host": u.hostname, "port": u.port, "db": 7}, namespace=prefix,
                           secret="ours")
    assert cache2(f.__wrapped__)(1) == 1


# =====================================================================================
# max_bytes
# =====================================================================================


@pytest.mark.parametrize("kind", NATIVE)
def test_max_bytes_smaller_than_a_seal_never_errs_and_never_lies(kind, tmp_path):
    """Held: max_bytes=0, 1, or smaller than a sealed entry: every call returns
    the function's value, nothing is stored, nothing raises."""
    cache = make_cache(kind, tmp_path, secret="ours")
    for mb in (0, 1, 30):
        calls = []

        @cache(max_bytes=mb, name=f"adv11.mb{mb}.{uid()}")
        def f(n):
            calls.append(n)
            return "x" * n

        for n in (0, 5, 300):
            assert f(n) == "x" * n
            assert f(n) == "x" * n
        assert f.cache_info().currsize == 0
        assert len(calls) == 6


# =====================================================================================
# A read-only LocalCache
# =====================================================================================

_FILL_RO = textwrap.dedent("""
    import sys, picocache
    cache = picocache.LocalCache(sys.argv[1], secret="ro")
    @cache(name="adv11.ro.old")
    def old(x):
        return x * x
    for i in range(5):
        old(i)
""")


def test_a_read_only_store_warns_once_for_a_function_it_never_stored(tmp_path, caplog):  # failed before the fix
    """A read-only LocalCache "serves hits and stores nothing with one
    warning": for a function whose namespace the store does not hold (new
    code deployed against a read-only snapshot) that is one warning too.
    Today: the read-only warning, then "opening the store failed ... the
    store of ... is unavailable (retrying shortly)" once a second for as long
    as the program runs (the namespace is reopened every second). Cause:
    _core._FunctionState.namespace sets retry_at on CacheReadOnly and the
    next calls raise CacheUnavailable, which failed() warns about (rate-
    limited, not once); the read_only flag does not stop the retries."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs (not root?)")
    try:
        store = mnt / "store"
        subprocess.run([sys.executable, "-c", _FILL_RO, str(store)], check=True, timeout=60)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        cache = pc.LocalCache(store, secret="ro")

        @cache(name="adv11.ro.old")
        def old(x):
            return -1  # never runs: every call is a stored entry

        @cache(name="adv11.ro.new")
        def new(x):
            return x + 1

        with caplog.at_level(logging.WARNING, logger="picocache"):
            assert [old(i) for i in range(5)] == [0, 1, 4, 9, 16]
            t = time.monotonic()
            while time.monotonic() - t < 2.3:
                assert new(1) == 2
                time.sleep(0.005)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage()[:120] for r in warnings]
        assert "read-only" in warnings[0].getMessage()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
