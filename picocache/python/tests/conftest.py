"""Fixtures: one factory per backend, against real servers.

Remote backends read their URLs from PICOCACHE_REDIS_URL,
PICOCACHE_POSTGRES_URL and PICOCACHE_MYSQL_URL (tests/servers/start.sh writes
them to /tmp/picocache-servers/env.sh); a test whose server is not configured
is skipped with the reason printed (run pytest with -rs), and fails in CI
(CI=true, which .ci/run sets)."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_settings")

REDIS = os.environ.get("PICOCACHE_REDIS_URL")
POSTGRES = os.environ.get("PICOCACHE_POSTGRES_URL")
MYSQL = os.environ.get("PICOCACHE_MYSQL_URL")

_django_ready = False


def django_setup() -> None:
    global _django_ready
    if _django_ready:
        return
    try:
        import django
    except ImportError:
        pytest.skip("SKIPPED LOUDLY: Django is not installed (pip install -r tests/requirements.txt)")
    django.setup()
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)
    _django_ready = True


def in_ci() -> bool:
    """Whether this is a CI run (CI=true or 1, as .ci/run sets it): there
    every server must be there, as in the Rust tests (tests/src/lib.rs)."""
    v = os.environ.get("CI", "")
    return v.lower() == "true" or v == "1"


def need(var: str, value: str | None) -> str:
    """The server URL `value` of `var`; if it is unset the test is skipped
    loudly, or fails in CI."""
    if not value:
        where = "source /tmp/picocache-servers/env.sh after tests/servers/start.sh"
        if in_ci():
            pytest.fail(f"{var} is not set and CI is: every server must be there ({where})")
        msg = f"SKIPPED LOUDLY: {var} is not set ({where})"
        print(msg, file=sys.stderr)
        pytest.skip(msg)
    return value


def uid() -> str:
    return uuid.uuid4().hex[:10]


def sa_url(url: str, driver: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}+{driver}://{rest}"


def make_cache(kind: str, tmp_path, **kw):
    import picocache as pc

    if kind == "local":
        return pc.LocalCache(tmp_path / "store", **kw)
    if kind == "sqlite":
        return pc.SQLiteCache(tmp_path / "c.db", table_name="t_" + uid(), **kw)
    if kind == "postgres":
        return pc.SQLAlchemyCache(sa_url(need("PICOCACHE_POSTGRES_URL", POSTGRES), "psycopg"),
                                  table_name="t_" + uid(), **kw)
    if kind == "mysql":
        return pc.SQLAlchemyCache(sa_url(need("PICOCACHE_MYSQL_URL", MYSQL), "pymysql"),
                                  table_name="t_" + uid(), **kw)
    if kind == "redis":
        return pc.RedisCache(need("PICOCACHE_REDIS_URL", REDIS), namespace="t" + uid(), **kw)
    if kind == "sa-engine":
        sqlalchemy = pytest.importorskip("sqlalchemy")
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'sa.db'}")
        return pc.SQLAlchemyCache(engine, table_name="t_" + uid(), **kw)
    if kind == "sa-engine-postgres":
        sqlalchemy = pytest.importorskip("sqlalchemy")
        engine = sqlalchemy.create_engine(sa_url(need("PICOCACHE_POSTGRES_URL", POSTGRES), "psycopg"))
        return pc.SQLAlchemyCache(engine, table_name="t_" + uid(), **kw)
    if kind.startswith("django"):
        django_setup()
        alias = {"django": "default", "django-redis": "redis", "django-db": "db"}[kind]
        if alias == "redis":
            need("PICOCACHE_REDIS_URL", REDIS)
        kw.setdefault("version", uid())  # the aliases outlive one test (Redis: one run)
        return pc.DjangoCache(alias, **kw)
    raise ValueError(kind)


ALL = ["local", "sqlite", "postgres", "mysql", "redis", "sa-engine", "sa-engine-postgres",
       "django", "django-redis", "django-db"]
NATIVE = ["local", "sqlite", "postgres", "mysql", "redis"]


@pytest.fixture(params=ALL)
def any_cache(request, tmp_path):
    """A fresh cache (its own table / prefix) on every backend."""
    return lambda **kw: make_cache(request.param, tmp_path, **kw)


@pytest.fixture(params=NATIVE)
def native_cache(request, tmp_path):
    return lambda **kw: make_cache(request.param, tmp_path, **kw)


@pytest.fixture
def local_cache(tmp_path):
    import picocache as pc

    return pc.LocalCache(tmp_path / "store")
