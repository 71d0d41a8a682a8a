"""Keys over 64 KiB hit on every native path (issue 13: "long keys hit on
every path"; the SQLAlchemy Engine path is test_sqlalchemy_engine.py's): a
function called with a 100 kB and a 300 kB str argument stores its results;
a second cache object on the same store (same Redis prefix, same table, same
directory, same Django alias) hits them with the right values."""

from __future__ import annotations

import pytest

import picocache as pc
from conftest import MYSQL, POSTGRES, REDIS, django_setup, need, sa_url, uid

KINDS = ["local", "sqlite", "redis", "postgres", "mysql", "django-locmem", "django-redis", "django-db"]


def _opener(kind: str, tmp_path):
    """A function that opens a new cache object on one and the same store."""
    name = "lk" + uid()
    if kind == "local":
        return lambda: pc.LocalCache(tmp_path / "store")
    if kind == "sqlite":
        return lambda: pc.SQLiteCache(tmp_path / "c.db", table_name="t_" + name)
    if kind == "redis":
        url = need("PICOCACHE_REDIS_URL", REDIS)
        return lambda: pc.RedisCache(url, namespace=name)
    if kind == "postgres":  # a URL: the native PostgreSQL client
        url = sa_url(need("PICOCACHE_POSTGRES_URL", POSTGRES), "psycopg")
        return lambda: pc.SQLAlchemyCache(url, table_name="t_" + name)
    if kind == "mysql":  # a URL: the native MySQL client
        url = need("PICOCACHE_MYSQL_URL", MYSQL)
        return lambda: pc.SQLAlchemyCache(url, table_name="t_" + name)
    django_setup()
    alias = {"django-locmem": "default", "django-redis": "redis", "django-db": "db"}[kind]
    if alias == "redis":
        need("PICOCACHE_REDIS_URL", REDIS)
    return lambda: pc.DjangoCache(alias, version=name)


@pytest.mark.parametrize("kind", KINDS)
def test_keys_over_64_kib_hit_from_a_second_cache_object(kind, tmp_path):
    open_cache = _opener(kind, tmp_path)
    args = ["a" * 100_000, "\u00e9b" * 150_000]  # 100 kB, 300 kB+ (UTF-8: 450 kB)
    fname = "longkeys." + uid()

    def make(cache, runs):
        @cache(name=fname)
        def f(s):
            runs.append(len(s))
            return (len(s), s[:3], s[-3:])

        return f

    first_runs: list = []
    f1 = make(open_cache(), first_runs)
    want = [(len(s), s[:3], s[-3:]) for s in args]
    assert [f1(s) for s in args] == want
    assert first_runs == [len(s) for s in args]

    second_runs: list = []
    f2 = make(open_cache(), second_runs)
    assert [f2(s) for s in args] == want
    assert second_runs == [], f"{kind}: a long key missed on a second cache object: {second_runs}"
    # And a key that differs only in its last character is another key.
    other = args[1][:-1] + "z"
    assert f2(other) == (len(other), other[:3], other[-3:]) and second_runs == [len(other)]
