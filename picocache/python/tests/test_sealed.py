"""Sealed entries (issue 11): someone who can write the store but cannot run
code on the application's hosts can neither run code in the application nor
make it return a value it did not compute.

The attacker writes with plain clients (sqlite3, psycopg, pymysql, redis-py,
SQL through the SQLAlchemy Engine, Django's own cache API), never through
picocache; on the local engine, whose only client is picocache, with a store
handle that holds another secret."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

import picocache as pc
from picocache import _native
from conftest import ALL, MYSQL, NATIVE, POSTGRES, REDIS, django_setup, need, sa_url, uid


class _Evil:
    """Unpickling this touches a marker file (a stand-in for any command)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pg():
    import psycopg
    return psycopg.connect(need("PICOCACHE_POSTGRES_URL", POSTGRES), autocommit=True)


def _my():
    import pymysql
    from urllib.parse import urlparse
    u = urlparse(need("PICOCACHE_MYSQL_URL", MYSQL))
    return pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username, password=u.password,
                           database=u.path.lstrip("/"), autocommit=True)


def _rewrite_sql(conn, table: str, fn, ph: str) -> int:
    """Replaces every value of `table` by fn(value); returns how many."""
    cur = conn.cursor()
    cur.execute(f"SELECT kh, v FROM {table}")
    rows = cur.fetchall()
    for kh, v in rows:
        cur.execute(f"UPDATE {table} SET v = {ph} WHERE kh = {ph}", (fn(bytes(v)), kh))
    if hasattr(conn, "commit"):
        conn.commit()
    return len(rows)


_SQLITE_READ = """
import pickle, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = [(bytes(kh), bytes(v)) for kh, v in c.execute(f"SELECT kh, v FROM {sys.argv[2]}")]
sys.stdout.buffer.write(pickle.dumps(rows))
"""
_SQLITE_WRITE = """
import pickle, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for v, kh in pickle.loads(sys.stdin.buffer.read()):
    c.execute(f"UPDATE {sys.argv[2]} SET v = ? WHERE kh = ?", (v, kh))
c.commit()
"""


def rewrite(kind: str, cache, fn, tmp_path) -> int:
    """Replaces every stored value of `cache` by fn(old value), with a plain
    client of the backend; returns how many values it replaced."""
    if kind == "sqlite":
        # In another process: two SQLite libraries in one process (Python's
        # and picocache's bundled one) break each other's POSIX locks.
        db, t = str(tmp_path / "c.db"), cache.table_name
        read = subprocess.run([sys.executable, "-c", _SQLITE_READ, db, t], capture_output=True, check=True)
        rows = pickle.loads(read.stdout)
        new = [(fn(v), kh) for kh, v in rows]
        subprocess.run([sys.executable, "-c", _SQLITE_WRITE, db, t], input=pickle.dumps(new), check=True)
        return len(rows)
    if kind == "postgres":
        with _pg() as conn:
            return _rewrite_sql(conn, cache.table_name, fn, "%s")
    if kind == "mysql":
        conn = _my()
        try:
            return _rewrite_sql(conn, cache.table_name, fn, "%s")
        finally:
            conn.close()
    if kind == "redis":
        import redis
        r = redis.Redis.from_url(need("PICOCACHE_REDIS_URL", REDIS))
        n = 0
        for key in r.scan_iter(match=f"{cache.namespace}:*:v:*"):
            r.set(key, fn(r.get(key)), keepttl=True)
            n += 1
        return n
    if kind.startswith("sa-engine"):
        import sqlalchemy as sa
        with cache.engine.begin() as conn:
            rows = conn.execute(sa.text(f"SELECT kh, v FROM {cache.table_name}_sa")).fetchall()
            for kh, v in rows:
                conn.execute(sa.text(f"UPDATE {cache.table_name}_sa SET v = :v WHERE kh = :kh"),
                             {"v": fn(bytes(v)), "kh": kh})
            return len(rows)
    raise ValueError(kind)


def plant(kind: str, cache, f, args: tuple, value: bytes, tmp_path) -> None:
    """Puts `value` as the stored value of f(*args)."""
    st = f.__picocache_state__
    if kind == "local":
        # The engine's only client is picocache: a handle with another secret.
        raw = _native.Store.local(str(tmp_path / "store"), secrets=[b"attacker"])
        ns = raw.namespace(st.name)
        ns.put(ns.key(args, {}), value)
        return
    if kind.startswith("django"):
        inner = st.ns._inner  # Django's plain cache API, under the key it reads
        c = inner.cache
        k = inner.key(args, {})
        c.set(inner._dkey(inner._gen(c), k), (k, value, None), timeout=None)
        # This process's in-process layer holds the true value (it never
        # reads Django for it): the planted one meets a process that has
        # not seen the key yet.
        inner.layer.clear()
        return
    assert rewrite(kind, cache, lambda _old: value, tmp_path) == 1


def make(kind: str, tmp_path, **kw):
    """A cache of `kind` (the same store for every call with one tmp_path
    and table / prefix given in kw)."""
    if kind == "local":
        kw.pop("table_name")
        return pc.LocalCache(tmp_path / "store", **kw)
    if kind == "sqlite":
        return pc.SQLiteCache(tmp_path / "c.db", **kw)
    if kind == "postgres":
        return pc.SQLAlchemyCache(sa_url(need("PICOCACHE_POSTGRES_URL", POSTGRES), "psycopg"), **kw)
    if kind == "mysql":
        return pc.SQLAlchemyCache(sa_url(need("PICOCACHE_MYSQL_URL", MYSQL), "pymysql"), **kw)
    if kind == "redis":
        kw["namespace"] = kw.pop("table_name")
        return pc.RedisCache(need("PICOCACHE_REDIS_URL", REDIS), **kw)
    if kind == "sa-engine":
        sqlalchemy = pytest.importorskip("sqlalchemy")
        return pc.SQLAlchemyCache(sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'sa.db'}"), **kw)
    if kind == "sa-engine-postgres":
        sqlalchemy = pytest.importorskip("sqlalchemy")
        engine = sqlalchemy.create_engine(sa_url(need("PICOCACHE_POSTGRES_URL", POSTGRES), "psycopg"))
        return pc.SQLAlchemyCache(engine, **kw)
    if kind.startswith("django"):
        django_setup()
        alias = {"django": "default", "django-redis": "redis", "django-db": "db"}[kind]
        if alias == "redis":
            need("PICOCACHE_REDIS_URL", REDIS)
        kw["version"] = kw.pop("table_name")
        return pc.DjangoCache(alias, **kw)
    raise ValueError(kind)


def double_of(cache, calls: list):
    @cache
    def double(x):
        calls.append(x)
        return x * 2

    return double


@pytest.mark.parametrize("kind", ALL)
def test_a_planted_pickle_never_runs_and_the_true_value_is_returned(kind, tmp_path, caplog):
    table = "t_" + uid()
    cache = make(kind, tmp_path, table_name=table, secret="s1")
    calls: list = []
    f = double_of(cache, calls)
    assert f(21) == 42
    marker = tmp_path / "PWNED"
    with caplog.at_level(logging.WARNING, logger="picocache"):
        plant(kind, cache, f, (21,), pickle.dumps(_Evil(str(marker))), tmp_path)
        assert f(21) == 42
    assert not marker.exists(), "the planted pickle ran"
    assert calls == [21, 21]
    assert "rejected" in caplog.text
    assert f.cache_stats()["rejected"] >= 1
    # The function's result replaced the planted entry: a hit again.
    assert f(21) == 42
    assert calls == [21, 21]
    # A well-formed pickle of a value the application never computed.
    plant(kind, cache, f, (21,), pickle.dumps(999), tmp_path)
    assert f(21) == 42
    assert calls == [21, 21, 21]
    assert not marker.exists()


@pytest.mark.parametrize("kind", [k for k in ALL if k != "local" and not k.startswith("django")])
def test_every_flipped_byte_is_a_miss(kind, tmp_path):
    cache = make(kind, tmp_path, table_name="t_" + uid(), secret="s1")
    calls: list = []
    f = double_of(cache, calls)
    assert f(7) == 14
    stored: list = []
    rewrite(kind, cache, lambda v: stored.append(v) or v, tmp_path)
    (good,) = stored
    assert good[0] == 0xA8 and len(good) > 21  # sealed version 2 (keyed BLAKE3)
    for i in range(0, len(good)):
        rewrite(kind, cache, lambda _v, i=i: good[:i] + bytes([good[i] ^ 0x40]) + good[i + 1:], tmp_path)
        assert f(7) == 14
    assert len(calls) == 1 + len(good)


def _kinds_sharing_a_store():
    return NATIVE + ["sa-engine", "django"]


@pytest.mark.parametrize("kind", _kinds_sharing_a_store())
def test_another_secret_is_a_miss_with_a_warning_and_rotation_reads_old(kind, tmp_path, caplog):
    table = "t_" + uid()
    calls: list = []

    def fn(cache):
        @cache(name="sealed.double")
        def double(x):
            calls.append(x)
            return x * 2
        return double

    old = fn(make(kind, tmp_path, table_name=table, secret="old-secret"))
    assert [old(1), old(2)] == [2, 4]
    other = fn(make(kind, tmp_path, table_name=table, secret="someone-else"))
    with caplog.at_level(logging.WARNING, logger="picocache"):
        assert other(1) == 2
    assert calls == [1, 2, 1]
    assert "another secret" in caplog.text
    rotated = fn(make(kind, tmp_path, table_name=table, secrets=["new-secret", "old-secret"]))
    assert rotated(2) == 4  # sealed with the old secret: still read
    assert calls == [1, 2, 1]
    # What the rotated cache writes, the new secret reads.
    assert rotated(3) == 6
    new_only = fn(make(kind, tmp_path, table_name=table, secret="new-secret"))
    assert new_only(3) == 6
    assert calls == [1, 2, 1, 3]


@pytest.mark.parametrize("kind", ["local", "sqlite", "redis", "django"])
def test_strict_raises_cache_rejected(kind, tmp_path):
    cache = make(kind, tmp_path, table_name="t_" + uid(), secret="s1", strict=True)
    calls: list = []
    f = double_of(cache, calls)
    assert f(3) == 6
    if kind in ("local", "django"):
        plant(kind, cache, f, (3,), pickle.dumps(6), tmp_path)
    else:
        rewrite(kind, cache, lambda _v: pickle.dumps(6), tmp_path)
    with pytest.raises(pc.CacheRejected, match="rejected"):
        f(3)


def test_secret_options_are_checked():
    with pytest.raises(ValueError):
        pc.LocalCache("/tmp/x", secret="")
    with pytest.raises(TypeError):
        pc.LocalCache("/tmp/x", secret="a", secrets=["b"])
    with pytest.raises(TypeError):
        pc.LocalCache("/tmp/x", secret=123)
    assert "s3cret" not in repr(pc.LocalCache("/tmp/x", secret="s3cret"))


_SCRIPT = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.WARNING)
    import picocache
    cache = picocache.LocalCache(sys.argv[1])
    calls = []
    @cache(name="secret-file.double")
    def double(x):
        calls.append(x)
        return x * 2
    assert double(5) == 10
    print("computed" if calls else "hit")
""")


def _run(tmp_path, env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PICOCACHE_SECRET", "PICOCACHE_SECRET_FILE",
                                                            "XDG_CONFIG_HOME")}
    env["HOME"] = str(tmp_path / "home")
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "store")], env=env,
                          capture_output=True, text=True, timeout=60)


def test_per_user_secret_file_and_environment(tmp_path):
    (tmp_path / "home").mkdir()
    first = _run(tmp_path, {})
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "computed"
    secret = tmp_path / "home" / ".config" / "picocache" / "secret"
    assert secret.exists()
    assert (secret.stat().st_mode & 0o777) == 0o600
    assert ((secret.parent.stat().st_mode) & 0o077) == 0
    # Another process of the same user: the same secret, a hit.
    second = _run(tmp_path, {})
    assert second.stdout.strip() == "hit", second.stderr
    # PICOCACHE_SECRET wins over the file: another secret, a miss with a warning.
    env = _run(tmp_path, {"PICOCACHE_SECRET": "fleet-secret"})
    assert env.stdout.strip() == "computed"
    assert "another secret" in env.stderr and "PICOCACHE_SECRET" in env.stderr
    # Rotation through the environment: new first, old accepted.
    rot = _run(tmp_path, {"PICOCACHE_SECRET": "newer fleet-secret"})
    assert rot.stdout.strip() == "hit", rot.stderr
