"""A cache whose store cannot be opened for a reason of configuration raises
at construction, naming the class, the path or URL (password hidden) and the
cause; ``strict=False`` given there warns instead and the cache steps aside.
A server that is merely down warns and is retried later (issue 15).

Real paths, a real read-only filesystem and the real servers
(source /tmp/picocache-servers/env.sh)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import pytest

import picocache as pc
from conftest import MYSQL, POSTGRES, REDIS, need, uid

SECRET = "pw-s3cr3t-zz"


def free_port() -> int:
    """A loopback port nobody listens on (a server that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    rest = rest.split("@", 1)[-1]
    user = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[0] if "@" in url else ""
    return f"{scheme}://{user}:{password}@{rest}"


def raises_naming(exc_type, make, *parts):
    with pytest.raises(exc_type) as info:
        make()
    text = str(info.value)
    for p in parts:
        assert p in text, (p, text)
    assert SECRET not in text, text
    return text


# -- LocalCache ----------------------------------------------------------------

def test_local_on_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    raises_naming(pc.CacheInvalidArgument, lambda: pc.LocalCache(f), "LocalCache", str(f), "not a directory")
    raises_naming(pc.CacheError, lambda: pc.LocalCache("/etc/passwd"), "LocalCache", "/etc/passwd",
                  "not a directory")


def test_local_under_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    raises_naming(pc.CacheError, lambda: pc.LocalCache(f / "store"), "LocalCache", str(f / "store"),
                  "not a directory")


def test_local_where_nothing_can_be_created():
    raises_naming(pc.CacheError, lambda: pc.LocalCache("/proc/picocache-store"), "LocalCache",
                  "/proc/picocache-store")


def test_local_on_a_read_only_filesystem(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,ro", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        msg = "SKIPPED LOUDLY: cannot mount a tmpfs (not root?)"
        print(msg, file=sys.stderr)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        raises_naming(pc.CacheError, lambda: pc.LocalCache(mnt / "store"), "LocalCache", str(mnt),
                      "not writable")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_local_strict_false_warns_once_and_steps_aside(tmp_path, caplog):
    f = tmp_path / "file"
    f.write_text("x")
    with caplog.at_level(logging.WARNING, logger="picocache"):
        cache = pc.LocalCache(f, strict=False)
    assert len(caplog.records) == 1
    assert str(f) in caplog.text and "strict=False" in caplog.text
    caplog.clear()
    runs = []

    @cache
    def double(x: int) -> int:
        runs.append(x)
        return 2 * x

    with caplog.at_level(logging.WARNING, logger="picocache"):
        assert [double(1), double(1), double(2)] == [2, 2, 4]
    assert runs == [1, 1, 2]  # uncached
    assert caplog.records == []  # said once, at construction
    assert double.cache_info().misses == 3
    assert f.read_text() == "x"


def test_local_strict_true_raises_too(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    raises_naming(pc.CacheError, lambda: pc.LocalCache(f, strict=True), str(f))


# -- SQLiteCache -----------------------------------------------------------------

def test_sqlite_on_a_directory(tmp_path):
    raises_naming(pc.CacheInvalidArgument, lambda: pc.SQLiteCache(tmp_path), "SQLiteCache", str(tmp_path),
                  "is a directory")


def test_sqlite_in_a_missing_directory(tmp_path):
    p = tmp_path / "nope" / "c.db"
    raises_naming(pc.CacheInvalidArgument, lambda: pc.SQLiteCache(p), "SQLiteCache", str(p),
                  "does not exist")
    assert not (tmp_path / "nope").exists()


def test_sqlite_on_a_file_that_is_not_a_database(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, these are my notes\n" * 100)
    raises_naming(pc.CacheInvalidArgument, lambda: pc.SQLiteCache(p), "SQLiteCache", str(p),
                  "not an SQLite database")
    assert p.read_text().startswith("hello")


def test_sqlite_url_in_a_missing_directory(tmp_path):
    p = tmp_path / "nope" / "c.db"
    raises_naming(pc.CacheInvalidArgument, lambda: pc.SQLAlchemyCache(f"sqlite:///{p}"), "SQLAlchemyCache",
                  str(p), "does not exist")


# -- SQLAlchemyCache: URLs and servers ------------------------------------------

def test_unknown_url_scheme_redacts_the_password():
    raises_naming(pc.CacheInvalidArgument,
                  lambda: pc.SQLAlchemyCache(f"nosuchdb://user:{SECRET}@127.0.0.1/db"),
                  "SQLAlchemyCache", "nosuchdb://user:***@127.0.0.1/db")


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_sql_wrong_password(kind):
    url = need(f"PICOCACHE_{kind.upper()}_URL", POSTGRES if kind == "postgres" else MYSQL)
    text = raises_naming(pc.CacheError, lambda: pc.SQLAlchemyCache(with_password(url, SECRET)),
                         "SQLAlchemyCache", ":***@")
    assert "password" in text.lower() or "denied" in text.lower(), text


def test_postgres_missing_database():
    url = need("PICOCACHE_POSTGRES_URL", POSTGRES)
    bad = url.rsplit("/", 1)[0] + "/no_such_db_" + uid()
    raises_naming(pc.CacheError, lambda: pc.SQLAlchemyCache(bad), "SQLAlchemyCache", "no_such_db_",
                  "does not exist")


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_sql_server_down_warns_and_the_function_runs(kind, caplog):
    url = need(f"PICOCACHE_{kind.upper()}_URL", POSTGRES if kind == "postgres" else MYSQL)
    scheme, rest = url.split("://", 1)
    auth, _, tail = rest.rpartition("@")
    db = tail.split("/", 1)[1]
    down = f"{scheme}://{auth}@127.0.0.1:{free_port()}/{db}"
    with caplog.at_level(logging.WARNING, logger="picocache"):
        cache = pc.SQLAlchemyCache(down, connect_timeout=0.5)
    assert "unreachable now" in caplog.text and "SQLAlchemyCache" in caplog.text

    @cache
    def inc(x: int) -> int:
        return x + 1

    assert inc(1) == 2


# -- RedisCache --------------------------------------------------------------------

def test_redis_wrong_password():
    url = need("PICOCACHE_REDIS_URL", REDIS)
    raises_naming(pc.CacheError, lambda: pc.RedisCache(with_password(url, SECRET)), "RedisCache", ":***@")


def test_redis_missing_db():
    url = need("PICOCACHE_REDIS_URL", REDIS)
    bad = url.rsplit("/", 1)[0] + "/9999"
    raises_naming(pc.CacheError, lambda: pc.RedisCache(bad), "RedisCache", "/9999", "DB index")


def test_redis_untrusted_certificate():
    """rediss:// to a server whose certificate is not trusted (the test
    server's is self-signed; #insecure is what accepts it)."""
    url = need("PICOCACHE_REDIS_TLS_URL", os.environ.get("PICOCACHE_REDIS_TLS_URL"))
    verified = url.split("#", 1)[0]
    raises_naming(pc.CacheError, lambda: pc.RedisCache(verified), "RedisCache", verified, "certificate")
    pc.RedisCache(url)  # with #insecure: fine


def test_redis_unknown_scheme_and_bad_parameters():
    raises_naming(pc.CacheInvalidArgument, lambda: pc.RedisCache("http://127.0.0.1:6379/0"), "RedisCache",
                  "http://127.0.0.1:6379/0")
    raises_naming(pc.CacheInvalidArgument, lambda: pc.RedisCache("redis://127.0.0.1:99999/0"), "RedisCache")
    raises_naming(pc.CacheError, lambda: pc.RedisCache({"host": "127.0.0.1", "port": 99999}), "RedisCache")


@pytest.mark.parametrize("strict", [None, True])
def test_redis_down_warns_at_construction_and_names_the_function_later(strict, caplog):
    kw = {} if strict is None else {"strict": strict}
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="picocache"):
        cache = pc.RedisCache(f"redis://:{SECRET}@127.0.0.1:{port}/0", connect_timeout=0.5, **kw)
    assert "unreachable now" in caplog.text and f"127.0.0.1:{port}" in caplog.text
    assert SECRET not in caplog.text
    caplog.clear()

    @cache
    def triple(x: int) -> int:
        return 3 * x

    if strict:
        with pytest.raises(pc.CacheUnavailable):
            triple(2)
        return
    with caplog.at_level(logging.WARNING, logger="picocache"):
        assert triple(2) == 6
    assert "triple" in caplog.text and "RedisCache" in caplog.text, caplog.text
    assert SECRET not in caplog.text


# -- DjangoCache ---------------------------------------------------------------------

def test_django_unknown_alias():
    from conftest import django_setup

    django_setup()
    raises_naming(pc.CacheInvalidArgument, lambda: pc.DjangoCache("no-such-alias"), "DjangoCache",
                  "no-such-alias", "settings.CACHES")
    cache = pc.DjangoCache("no-such-alias", strict=False)

    @cache
    def square(x: int) -> int:
        return x * x

    assert square(3) == 9 and square.cache_info().misses == 1


def test_a_redis_that_comes_up_later_is_used(tmp_path, caplog):
    """The decision for servers that are down: construction warns, calls run
    uncached, and the store is opened once the server answers (a private
    redis-server started on a free port, not the shared one)."""
    import shutil
    import time

    server = shutil.which("redis-server")
    if server is None:
        msg = "SKIPPED LOUDLY: no redis-server binary"
        print(msg, file=sys.stderr)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="picocache"):
        cache = pc.RedisCache(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5, backoff=0.2, backoff_max=0.5)
    assert "unreachable now" in caplog.text
    runs = []

    @cache
    def square(x: int) -> int:
        runs.append(x)
        return x * x

    assert square(4) == 16 and square(4) == 16
    assert runs == [4, 4]  # uncached while the server is down
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        x = 100
        while True:
            x += 1
            runs.clear()
            square(x), square(x)
            if runs == [x]:
                break  # the second call was a hit: the store is in use
            assert time.monotonic() < deadline, "the store was never opened after the server came up"
            time.sleep(0.3)
        assert square.cache_info().hits >= 1
    finally:
        proc.terminate()
        proc.wait(10)
