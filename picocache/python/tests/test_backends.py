"""Constructors (the 1.4 parameter names), defaults, failures and strict mode."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest

import picocache as pc
from conftest import MYSQL, POSTGRES, REDIS, django_setup, need, uid


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_local_default_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PICOCACHE_DIR", raising=False)
    assert pc.LocalCache().path == str(tmp_path / ".picocache")
    monkeypatch.setenv("PICOCACHE_DIR", str(tmp_path / "elsewhere"))
    c = pc.LocalCache()
    assert c.path == str(tmp_path / "elsewhere")

    @c
    def f(x):
        return x

    f(1)
    assert (tmp_path / "elsewhere").is_dir()


def test_sqlite_defaults_is_a_real_sqlite_file(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.chdir(tmp_path)
    c = pc.SQLiteCache()
    assert c.db_path == str(tmp_path / "picocache.db") and c.table_name == "picocache"

    @c
    def f(x):
        return x

    f(1)
    with sqlite3.connect(tmp_path / "picocache.db") as db:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
    assert "picocache" in tables


def test_every_class_takes_the_common_options(tmp_path):
    c = pc.LocalCache(tmp_path / "s", default_maxsize=5, default_typed=True,
                      key_serializer=None, value_serializer=None)

    @c
    def f(x):
        return x

    f(1), f(1.0)
    assert f.cache_info() == (0, 2, 5, 2)
    assert c.default_maxsize == 5 and c.default_typed is True


def test_redis_host_form_and_namespace():
    url = need("PICOCACHE_REDIS_URL", REDIS)
    import redis

    r = redis.Redis.from_url(url)
    host = r.connection_pool.connection_kwargs["host"]
    port = r.connection_pool.connection_kwargs["port"]
    ns = "h" + uid()
    c = pc.RedisCache(host=host, port=port, db=0, password=None, namespace=ns, ttl=100)

    @c
    def f(x):
        return x

    f(1), f(1)
    assert f.cache_info()[:2] == (1, 1)
    keys = r.keys(ns + "*")
    assert keys and all(k.startswith(ns.encode()) for k in keys)


@pytest.mark.parametrize("which", ["postgres", "mysql"])
def test_sqlalchemy_drivername_form(which):
    from urllib.parse import urlsplit

    url = need(f"PICOCACHE_{which.upper()}_URL", POSTGRES if which == "postgres" else MYSQL)
    u = urlsplit(url)
    c = pc.SQLAlchemyCache(drivername="postgresql+psycopg" if which == "postgres" else "mysql+pymysql",
                           username=u.username, password=u.password, host=u.hostname, port=u.port,
                           database=u.path.lstrip("/"), table_name="d_" + uid())

    @c(maxsize=256)
    def f(x):
        return x * 2

    assert f(2) == 4 and f(2) == 4 and f.cache_info().hits == 1


def test_sqlalchemy_engine_object(tmp_path):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    c = pc.SQLAlchemyCache(engine, table_name="picocache", echo=False)

    @c(maxsize=2)
    def f(x):
        return x

    for i in range(5):
        f(i)
    assert f.cache_info().currsize == 2
    assert "picocache_sa" in sqlalchemy.inspect(engine).get_table_names()


def test_unreachable_server_returns_value_and_warns(caplog):
    c = pc.RedisCache(f"redis://127.0.0.1:{closed_port()}/0")
    calls = []

    @c
    def f(x):
        calls.append(x)
        return x + 1

    with caplog.at_level(logging.WARNING, logger="picocache"):
        assert f(1) == 2 and f(1) == 2
    assert calls == [1, 1]
    assert "unavailable" in caplog.text.lower()
    assert f.cache_info().misses == 2


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0", "postgresql://u:p@127.0.0.1:{port}/db",
                                 "mysql://u:p@127.0.0.1:{port}/db"])
def test_strict_raises(url):
    url = url.format(port=closed_port())
    c = pc.RedisCache(url, strict=True) if url.startswith("redis") else pc.SQLAlchemyCache(url, strict=True)
    ran = []

    @c
    def f(x):
        ran.append(x)
        return x

    with pytest.raises(pc.CacheUnavailable):
        f(1)
    assert issubclass(pc.CacheUnavailable, pc.CacheError)

    @c(strict=False)
    def g(x):
        return x

    assert g(1) == 1


def test_store_recovers_after_failure(tmp_path):
    # A local store whose directory cannot be created is a configuration
    # error (issue 15): said at construction. A server that is down and
    # comes back is test_construction_errors.py's test_a_redis_that_comes_up_later_is_used.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    with pytest.raises(pc.CacheError, match="blocker"):
        pc.LocalCache(blocker / "store")
    blocker.unlink()
    c = pc.LocalCache(blocker / "store")

    @c
    def f(x):
        return x

    f(1)
    assert f(1) == 1 and f.cache_info().hits == 1


def test_django_timeout_respected_and_overridden():
    django_setup()
    from django.core.cache import caches

    c = pc.DjangoCache("short", version=uid())  # the alias's TIMEOUT is 1 s
    calls = []

    @c
    def f(x):
        calls.append(x)
        return x

    f(1), f(1)
    assert calls == [1]
    time.sleep(1.2)
    f(1)
    assert calls == [1, 1]  # expired with the alias's timeout

    c2 = pc.DjangoCache("short", timeout=60, version=uid())

    @c2
    def g(x):
        calls.append(("g", x))
        return x

    g(1)
    time.sleep(1.2)
    g(1)
    assert calls.count(("g", 1)) == 1
    assert caches["short"] is not None


@pytest.mark.parametrize("alias", ["default", "redis", "db"])
def test_django_clear_only_that_function(alias):
    django_setup()
    if alias == "redis":
        need("PICOCACHE_REDIS_URL", REDIS)
    from django.core.cache import caches

    dj = caches[alias]
    other = "someone-else:" + uid()
    dj.set(other, "session data", timeout=60)
    c = pc.DjangoCache(alias, version=uid())

    @c
    def f(x):
        return x

    @c
    def g(x):
        return x

    f(1), f(2), g(1)
    f.cache_clear()
    assert dj.get(other) == "session data"
    assert f.cache_info().currsize == 0 and g.cache_info().currsize == 1
    calls = []

    @c
    def f(x):  # noqa: F811 - same name, same namespace
        calls.append(x)
        return x

    f(1)
    assert calls == [1]


def test_django_entries_are_shared_and_maxsize_bounds_the_layer(tmp_path):
    """Three processes store 30 entries through Django's Redis cache; this
    process then gets every one without running the body, and its
    in-process layer (maxsize, as the original documents) holds 5."""
    need("PICOCACHE_REDIS_URL", REDIS)
    django_setup()
    import multiprocessing as mp

    version = uid()
    ctx = mp.get_context("fork")
    with ctx.Pool(3) as pool:
        pool.map(_django_store, [(version, i) for i in range(30)])
    c = pc.DjangoCache("redis", version=version)
    calls = []

    @c(maxsize=5, name="tests.bounded")
    def bounded(x):
        calls.append(x)
        return x

    assert [bounded(i) for i in range(30)] == list(range(30))
    assert calls == []
    assert bounded.cache_info().currsize == 5


def _django_store(arg):
    version, i = arg
    c = pc.DjangoCache("redis", version=version)

    @c(maxsize=5, name="tests.bounded")
    def bounded(x):
        return x

    bounded(i)


def test_redis_over_tls():
    """RedisCache with a rediss:// URL (the test server's TLS port)."""
    url = need("PICOCACHE_REDIS_TLS_URL", os.environ.get("PICOCACHE_REDIS_TLS_URL"))
    # The server must be listening first (a CI run once found the TLS port
    # refusing for a moment, which this test then reported as a cache bug):
    # wait up to 10 s, and say so plainly if it never opens.
    from urllib.parse import urlparse
    u = urlparse(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((u.hostname, u.port), timeout=1).close()
            break
        except OSError as e:
            if time.monotonic() > deadline:
                pytest.fail(f"the Redis TLS port {u.hostname}:{u.port} does not accept connections: {e}")
            time.sleep(0.2)
    calls = []
    cache = pc.RedisCache(url, namespace="tls" + uid())

    @cache(maxsize=2)
    def f(x):
        calls.append(x)
        return x * 2

    assert [f(1), f(1), f(2), f(3)] == [2, 2, 4, 6]
    assert calls == [1, 2, 3]
    assert f.cache_info().currsize == 2


def test_local_store_permissions_whatever_the_umask(tmp_path):
    # Under umask 002 a new store would be group-writable: it is private.
    import stat
    import subprocess
    import sys

    prog = (
        "import os, sys, picocache as pc\n"
        "os.umask(int(sys.argv[2], 8))\n"
        "c = pc.LocalCache(sys.argv[1], group_access=sys.argv[3] == '1')\n"
        "f = c(lambda x: x + 1)\n"
        "assert f(1) == 2 and f(1) == 2\n"
    )

    def modes(d):
        return stat.S_IMODE(os.stat(d).st_mode), {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()}

    private = tmp_path / "private"
    subprocess.run([sys.executable, "-c", prog, str(private), "002", "0"], check=True, timeout=60)
    d, files = modes(private)
    assert d == 0o700 and files and set(files.values()) == {0o600}, (oct(d), files)
    shared = tmp_path / "shared"
    subprocess.run([sys.executable, "-c", prog, str(shared), "077", "1"], check=True, timeout=60)
    d, files = modes(shared)
    assert d == 0o770 and files and set(files.values()) == {0o660}, (oct(d), files)
