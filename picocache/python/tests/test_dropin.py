"""A drop-in for the original picocache 1.4 (issue 14): its documented API,
and the scenarios of its own test suite, in this project's words, on every
backend, including the in-memory SQLite URL its tests use and Django's
LocMemCache."""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import pytest

import picocache as pc
from conftest import ALL, REDIS, django_setup, make_cache, need, uid

MEMORY = ["sqlite-memory-url", "sqlite-memory-path", "sqlalchemy-sqlite-url"]


def cache_of(kind: str, tmp_path, **kw):
    if kind == "sqlite-memory-url":
        return pc.SQLAlchemyCache("sqlite:///:memory:", **kw)
    if kind == "sqlite-memory-path":
        return pc.SQLiteCache(":memory:", **kw)
    if kind == "sqlalchemy-sqlite-url":
        return pc.SQLAlchemyCache("sqlite://", **kw)  # SQLAlchemy's in-memory URL
    return make_cache(kind, tmp_path, **kw)


KINDS = ALL + MEMORY


@pytest.mark.parametrize("kind", KINDS)
def test_basic_caching(kind, tmp_path):
    cache = cache_of(kind, tmp_path)
    calls = []

    @cache
    def add(a, b):
        calls.append((a, b))
        return a + b

    assert add(1, 2) == 3
    assert add(1, 2) == 3
    assert add(2, 3) == 5
    assert calls == [(1, 2), (2, 3)]
    info = add.cache_info()
    assert (info.hits, info.misses) == (1, 2)
    assert info.currsize == 2
    assert info.maxsize is None  # the original's default: no limit


@pytest.mark.parametrize("kind", [k for k in KINDS if not k.startswith("django")])
def test_eviction_is_least_recently_used(kind, tmp_path):
    cache = cache_of(kind, tmp_path)
    calls = []

    @cache(maxsize=2)
    def sq(x):
        calls.append(x)
        return x * x

    sq(1), sq(2), sq(1), sq(3)  # 2 is the least recently used
    assert sq.cache_info().currsize == 2
    sq(1)
    assert calls == [1, 2, 3]
    sq(2)
    assert calls == [1, 2, 3, 2]


@pytest.mark.parametrize("kind", ["django", "django-db", "django-redis"])
def test_django_maxsize_is_an_in_process_layer(kind, tmp_path):
    """The original's documented DjangoCache maxsize: an lru_cache layer over
    Django's cache. A key the layer evicted is a miss of the layer that
    Django still serves: the body does not run again."""
    cache = cache_of(kind, tmp_path)
    calls = []

    @cache(maxsize=2)
    def sq(x):
        calls.append(x)
        return x * x

    assert [sq(1), sq(2), sq(3)] == [1, 4, 9]
    assert sq.cache_info().currsize == 2  # the layer's size
    assert sq(1) == 1  # evicted from the layer, served by Django
    assert calls == [1, 2, 3]
    sq.cache_clear()
    assert sq(1) == 1
    assert calls == [1, 2, 3, 1]


@pytest.mark.parametrize("kind", KINDS)
def test_cache_clear(kind, tmp_path):
    cache = cache_of(kind, tmp_path)
    calls = []

    @cache
    def f(x):
        calls.append(x)
        return x

    f(1), f(2)
    f.cache_clear()
    assert f.cache_info() == pc.CacheInfo(0, 0, None, 0)
    f(1)
    assert calls == [1, 2, 1]
    cache.clear()  # the whole cache object's functions
    f(1)
    assert calls == [1, 2, 1, 1]


@pytest.mark.parametrize("kind", KINDS)
def test_typed(kind, tmp_path):
    cache = cache_of(kind, tmp_path)
    calls = []

    @cache(typed=True)
    def f(x):
        calls.append(x)
        return x

    f(1), f(1.0), f(1)
    assert calls == [1, 1.0]

    @cache(None, True)  # positional, as functools.lru_cache(None, True)
    def g(x):
        calls.append(("g", x))
        return x

    g(2), g(2.0)
    assert calls[2:] == [("g", 2), ("g", 2.0)]
    assert g.cache_parameters()["typed"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_threads_compute_each_key_once(kind, tmp_path):
    cache = cache_of(kind, tmp_path)
    lock = threading.Lock()
    calls: dict = {}

    # (A closure over a lock cannot be told apart from another closure of
    # that name, so it is cached only under a chosen name: README, Semantics.)
    @cache(name="dropin.threads.slow." + uid())
    def slow(x):
        with lock:
            calls[x] = calls.get(x, 0) + 1
        return x * 10

    results: list = []

    def worker():
        for i in range(20):
            results.append(slow(i % 5))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160
    assert all(r == (i % 5) * 10 for r, i in zip(sorted(results), sorted(i % 5 for _ in range(8)
                                                                           for i in range(20))))
    assert set(calls) == {0, 1, 2, 3, 4}
    assert all(n == 1 for n in calls.values()), calls
    info = slow.cache_info()
    assert info.hits + info.misses == 160 and info.misses == 5


def test_in_memory_sqlite_lives_with_the_cache_object_and_is_private(tmp_path):
    a = pc.SQLAlchemyCache("sqlite:///:memory:")
    b = pc.SQLAlchemyCache("sqlite:///:memory:")
    calls = []

    @a(name="mem.f")
    def fa(x):
        calls.append(("a", x))
        return x

    @b(name="mem.f")
    def fb(x):
        calls.append(("b", x))
        return x

    fa(1), fa(1), fb(1)
    assert calls == [("a", 1), ("b", 1)]  # one database per cache object
    path = Path(a.url[len("sqlite:///"):])
    assert path.exists()
    del a, fa
    import gc
    gc.collect()
    assert not path.exists()  # gone with the cache object


def test_positional_and_bare_forms():
    cache = pc.LocalCache(Path(pytest.importorskip("tempfile").mkdtemp()) / "s")

    def f(x):
        return x

    wrapped = cache(f)  # cache(user_function)
    assert wrapped(3) == 3 and wrapped.cache_info().misses == 1
    assert cache(64)(f).cache_parameters()["maxsize"] == 64
    assert cache(64, True)(f).cache_parameters() == {"maxsize": 64, "typed": True, "ttl": None,
                                                     "name": cache(64, True)(f).cache_parameters()["name"]}
    assert cache(None)(f).cache_parameters()["maxsize"] is None
    with pytest.raises(TypeError):
        cache(64, True, 5)
    with pytest.raises(TypeError):
        cache(64, maxsize=3)
    defaulted = pc.LocalCache(Path(pytest.importorskip("tempfile").mkdtemp()) / "s", default_maxsize=7)
    assert defaulted(f).cache_parameters()["maxsize"] == 7
    assert defaulted(None)(f).cache_parameters()["maxsize"] is None


def test_cache_info_is_lru_caches_namedtuple():
    assert pc.CacheInfo._fields == ("hits", "misses", "maxsize", "currsize")


def test_redis_url_or_params_dict():
    url = need("PICOCACHE_REDIS_URL", REDIS)
    from urllib.parse import urlparse
    u = urlparse(url)
    for cache in (pc.RedisCache({"host": u.hostname, "port": u.port, "db": 0}, namespace="d" + uid()),
                  pc.RedisCache(url_or_params={"host": u.hostname, "port": u.port}, namespace="d" + uid())):
        calls = []

        @cache
        def f(x):
            calls.append(x)
            return x

        f(1), f(1)
        assert calls == [1]
    with pytest.raises(TypeError, match="decode_responses"):
        pc.RedisCache({"host": "h", "decode_responses": True})


def test_the_originals_extras_exist():
    meta = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    assert {"redis", "sqlalchemy", "django"} <= set(extras)


def test_django_locmem_is_the_default_alias():
    django_setup()
    from django.core.cache import caches
    assert "LocMemCache" in type(caches["default"]).__name__


def test_a_wrong_local_path_is_named(tmp_path, caplog):
    """Issue 15: LocalCache("/etc/passwd") failed every call with a warning
    naming no path."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(pc.CacheInvalidArgument, match="afile exists and is not a directory"):
        pc.LocalCache(afile)
    # A path where nothing can be created: said at construction too.
    with pytest.raises(pc.CacheError, match="/proc/picocache-cannot-be-here"):
        pc.LocalCache("/proc/picocache-cannot-be-here")


@pytest.mark.parametrize("name", ["index", "reserve", "seg-00000001.log"])
def test_a_users_directory_is_never_taken_over(tmp_path, name):
    """LocalCache(dir) on a directory of the user's holding a file named
    ``index`` overwrote it with a store's index (the notes were gone, no
    word said). Such a directory is refused at construction, every file
    left as it was; other files beside a store are fine."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / name).write_text("my precious notes\n")
    with pytest.raises(pc.CacheInvalidArgument, match=f"not a PicoCache store.*{name}"):
        pc.LocalCache(str(mine))
    assert (mine / name).read_text() == "my precious notes\n"
    assert sorted(p.name for p in mine.iterdir()) == [name]
    # strict=False: warned, and the functions run uncached (the file kept).
    c = pc.LocalCache(str(mine), strict=False)
    runs = []

    @c
    def f(x):
        runs.append(x)
        return x * 2

    assert (f(2), f(2)) == (4, 4) and runs == [2, 2]
    assert (mine / name).read_text() == "my precious notes\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("kept")
    c = pc.LocalCache(str(other))
    assert c(lambda x: x + 1)(1) == 2
    assert (other / "notes.txt").read_text() == "kept"
