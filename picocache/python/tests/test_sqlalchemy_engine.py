"""The SQLAlchemy Engine path (SQLAlchemyCache given an Engine): keys and
values over 64 KiB hit on every database (MySQL/MariaDB's BLOB stopped at
64 KiB), a table an older version made with BLOB columns is widened, and
processes (here: threads with their own engines) that open the same new
table at once all succeed, with no warning."""

from __future__ import annotations

import logging
import threading

import pytest

import picocache as pc
from conftest import MYSQL, POSTGRES, need, sa_url, uid

sqlalchemy = pytest.importorskip("sqlalchemy")

ENGINES = ["sqlite", "postgres", "mysql"]


def engine_for(kind: str, tmp_path):
    if kind == "sqlite":
        return sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
    if kind == "postgres":
        return sqlalchemy.create_engine(sa_url(need("PICOCACHE_POSTGRES_URL", POSTGRES), "psycopg"))
    return sqlalchemy.create_engine(sa_url(need("PICOCACHE_MYSQL_URL", MYSQL), "pymysql"))


def doubler(c, calls: list):
    """The same function (one namespace) on cache object `c`."""

    @c(maxsize=10)
    def f(s):
        calls.append(len(s))
        return s * 2

    return f


@pytest.mark.parametrize("kind", ENGINES)
def test_keys_and_values_over_64_kib_hit(kind, tmp_path, caplog):
    table = "t_" + uid()
    sizes = (100, 70_000, 300_000)
    with caplog.at_level(logging.WARNING, logger="picocache"):
        first: list = []
        f = doubler(pc.SQLAlchemyCache(engine_for(kind, tmp_path), table_name=table), first)
        for n in sizes:
            assert f("k" * n) == "k" * n * 2
        # Another cache object (another process, as far as the store
        # knows): every result comes from the table.
        second: list = []
        g = doubler(pc.SQLAlchemyCache(engine_for(kind, tmp_path), table_name=table), second)
        for n in sizes:
            assert g("k" * n) == "k" * n * 2
    assert first == list(sizes)
    assert second == [], "read from the table, not computed again"
    assert g.cache_info().hits == 3
    assert caplog.records == []


def test_mysql_blob_table_of_an_older_version_is_widened():
    table = "t_" + uid()
    engine = sqlalchemy.create_engine(sa_url(need("PICOCACHE_MYSQL_URL", MYSQL), "pymysql"))
    with engine.begin() as conn:  # the old layout: BLOB keys and values
        conn.execute(sqlalchemy.text(
            f"CREATE TABLE {table}_sa (ns VARCHAR(255) NOT NULL, kh VARCHAR(64) NOT NULL, k BLOB NOT NULL, "
            f"v BLOB NOT NULL, atime BIGINT NOT NULL, expires FLOAT NULL, PRIMARY KEY (ns, kh))"))
    first: list = []
    f = doubler(pc.SQLAlchemyCache(engine, table_name=table), first)
    assert f("x" * 100_000) == "x" * 200_000
    second: list = []
    g = doubler(pc.SQLAlchemyCache(sqlalchemy.create_engine(engine.url), table_name=table), second)
    assert g("x" * 100_000) == "x" * 200_000
    assert (first, second) == ([100_000], [])


@pytest.mark.parametrize("kind", ["postgres", "mysql", "sqlite"])
def test_clients_opening_a_new_table_at_once_all_succeed(kind, tmp_path, caplog):
    n = 12
    table = "t_" + uid()
    engines = [engine_for(kind, tmp_path) for _ in range(n)]
    start = threading.Barrier(n)
    results: list = [None] * n

    def client(i: int) -> None:
        c = pc.SQLAlchemyCache(engines[i], table_name=table, strict=True)

        @c(maxsize=10)
        def f(x):
            return x + i * 0

        start.wait()
        try:
            results[i] = f(1)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    with caplog.at_level(logging.WARNING):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [1] * n
    assert [r.getMessage() for r in caplog.records] == []
