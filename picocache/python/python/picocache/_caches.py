"""The cache classes: one per backend, all with the same decorator API."""

from __future__ import annotations

import os
import _thread  # threading's C core: threading itself costs ~1.5 ms at import
import weakref
TYPE_CHECKING = False  # typing is imported by type checkers only (import time)
if TYPE_CHECKING:
    import datetime
    from typing import Any, Callable, Optional

from . import _native
from ._core import BaseCache
from ._keys import fallback as _fallback
from ._open import check_local_path, check_sqlite_path, open_at_construction, redact, strict_given
from ._seal import SealedNamespace

def _quote(part: str) -> str:
    """A URL-quoted user name or password (urllib.parse loaded when needed)."""
    from urllib.parse import quote

    return quote(part, safe="")


_NATIVE_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")

#: The connection options of the remote caches (None: the backend's
#: default: 1 s connect and operation timeouts, a pool of 8, 8 MiB values).
_REMOTE_OPTIONS = ("connect_timeout", "timeout", "pool_size", "max_value_size", "backoff", "backoff_max")


def _remote_options(kwargs: dict) -> dict:
    """Takes the remote connection options out of ``kwargs`` (checked)."""
    out = {}
    for name in _REMOTE_OPTIONS:
        v = kwargs.pop(name, None)
        if v is None:
            continue
        if name in ("connect_timeout", "timeout", "backoff", "backoff_max"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, not {v!r}")
            v = float(v)
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, not {v!r}")
        out[name] = v
    return out


class _NativeCache(BaseCache):
    """A cache on a Rust backend, opened lazily (and reopened after a failure)."""

    def __init__(self, **kwargs: Any) -> None:
        self._strict_given = strict_given(kwargs)
        super().__init__(**kwargs)
        self._store: Optional[_native.Store] = None
        self._store_lock = _thread.RLock()  # (see _FunctionState.ns_lock)

    def _open_store(self) -> "_native.Store":
        raise NotImplementedError

    @property
    def store(self) -> "_native.Store":
        """The native store (opened on first use)."""
        s = self._store
        if s is None:
            with self._store_lock:
                if self._store is None:
                    self._store = self._open_store()
                s = self._store
        return s

    _supports_max_bytes = True

    def _open_namespace(self, name: str, maxsize: Optional[int], ttl: Optional[float], typed: bool,
                        max_bytes: Optional[int] = None) -> Any:
        return self.store.namespace(name, maxsize=maxsize, ttl=ttl, typed=typed, fallback=_fallback,
                                    max_bytes=max_bytes)

    def _after_fork_in_child(self) -> None:
        self._store_lock = _thread.RLock()  # (see _FunctionState.ns_lock)

    def namespace_names(self) -> list:
        """Every namespace (memoized function) in the store."""
        return self.store.namespace_names()


class LocalCache(_NativeCache):
    """The embedded engine: a directory of memory-mapped files shared by every
    thread and process on the machine.

    ``path`` defaults to ``$PICOCACHE_DIR`` or, if unset, ``.picocache`` in
    the working directory (resolved to an absolute path when the cache is
    created).

    A new store is private to its owner: its directory is created ``0700``
    and its files ``0600``, whatever the umask (whoever can write the store
    can make it evict or deny service). ``group_access=True`` creates it
    shared with the owner's group (``0770``/``0660``). An existing store's
    directory decides for the files any process adds to it.
    """

    def __init__(self, path: "Optional[str | os.PathLike[str]]" = None, *, group_access: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = os.path.abspath(os.fspath(path) if path is not None else _native.default_local_path())
        self.group_access = bool(group_access)
        # Opened now: a path that cannot be a store raises here (see _open).
        self._store = open_at_construction(self, self.path, self._open_store, check_local_path(self.path))

    def _open_store(self) -> "_native.Store":
        return _native.Store.local(self.path, self.group_access, secrets=self._secrets)

    def prune(self, unused_for: "float | datetime.timedelta", *, dry_run: bool = False) -> "list[dict[str, Any]]":
        """Removes the namespaces of this store that no process has used for
        ``unused_for`` (seconds, an int or float, or a ``datetime.timedelta``;
        > 0, counted in whole seconds, rounded up), with their entries, and
        returns them: one dict per namespace, with ``name``, ``entries``,
        ``bytes`` (the bytes its live records held) and ``last_used`` (Unix
        seconds; None if unknown). ``dry_run=True`` only lists them.

        Every edit of a cached function names a new namespace (the name
        carries a digest of its code), so the old ones stop being used; this
        is how they leave the store (``python -m picocache prune DIR
        --unused-for 30d`` from a shell). A namespace is used when a process
        opens it (decorates and calls the function), writes to it or looks a
        key up in it; lookups refresh its last use at most once a minute, so
        pass ``unused_for`` of minutes or more. A namespace whose last use is
        unknown is never removed. A function still running in another process
        whose namespace is removed starts again empty. The space of the
        removed entries is reclaimed by the store's compaction.
        """
        return self.store.prune_unused(_unused_for_seconds(unused_for), dry_run=bool(dry_run))

    def __repr__(self) -> str:
        return f"LocalCache({self.path!r})"


def _unused_for_seconds(unused_for: Any) -> float:
    """``unused_for`` of :meth:`LocalCache.prune` as seconds: a number or a
    ``datetime.timedelta``, > 0."""
    import datetime

    if isinstance(unused_for, datetime.timedelta):
        seconds: Any = unused_for.total_seconds()
    elif isinstance(unused_for, (int, float)) and not isinstance(unused_for, bool):
        seconds = unused_for
    else:
        raise TypeError(f"unused_for must be seconds (int or float) or a datetime.timedelta, "
                        f"not {type(unused_for).__name__}")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"unused_for must be a finite duration > 0, not {unused_for!r}")
    # Nothing was used more than 2**62 seconds ago: longer is the same.
    return float(min(seconds, 2**62))


def _memory_database(owner: Any) -> str:
    """A database file that lives as long as `owner` (the cache object) and
    is private to it: what ``:memory:`` means to the original picocache (one
    database for the cache object, shared by its threads, gone with it). It
    is a file (in /dev/shm where there is one) because every connection to a
    real ``:memory:`` database is a new, empty database."""
    import shutil
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="picocache-memory-", dir=base)
    weakref.finalize(owner, _remove_memory_database, d, os.getpid(), shutil.rmtree)
    return os.path.join(d, "memory.db")


def _remove_memory_database(d: str, pid: int, rmtree: Callable) -> None:
    """Deletes an in-memory database's file, in the process that made it
    only (a forked child that exits must not take the parent's)."""
    if os.getpid() == pid:
        rmtree(d, True)


def _is_memory_sqlite_url(url: str) -> bool:
    """sqlite:///:memory: and SQLAlchemy's sqlite:// (an in-memory database)."""
    scheme, _, rest = url.partition("://")
    if scheme.split("+", 1)[0].lower() != "sqlite":
        return False
    path = rest.split("?", 1)[0]
    return path in ("", "/:memory:", ":memory:")


class SQLiteCache(_NativeCache):
    """A cache in an SQLite database file (WAL mode, shared by processes).
    ``":memory:"``: a database private to this cache object (shared by its
    threads), gone with it."""

    def __init__(self, db_path: "str | os.PathLike[str]" = "picocache.db", table_name: str = "picocache",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        problem = None
        if os.fspath(db_path) == ":memory:":
            self.db_path = _memory_database(self)
        else:
            self.db_path = os.path.abspath(os.fspath(db_path))
            problem = check_sqlite_path(self.db_path)
        self.table_name = table_name
        self._store = open_at_construction(self, self.db_path, self._open_store, problem)

    def _open_store(self) -> "_native.Store":
        return _native.Store.sql("sqlite:///" + self.db_path, table=self.table_name, secrets=self._secrets)

    def __repr__(self) -> str:
        return f"SQLiteCache({self.db_path!r}, table_name={self.table_name!r})"


def _sqlite_url_problem(url: str) -> Optional[str]:
    """Why the database file of an ``sqlite://`` URL cannot be opened (see
    ``check_sqlite_path``; None for other URLs)."""
    scheme, _, rest = url.partition("://")
    if scheme.split("+", 1)[0].lower() != "sqlite":
        return None
    path = rest.split("?", 1)[0].split("#", 1)[0]
    path = path[1:] if path.startswith("/") else path  # sqlite:///relative, sqlite:////absolute
    if not path or path == ":memory:":
        return None
    return check_sqlite_path(os.path.abspath(path))


def _absolute_sqlite_url(url: str) -> str:
    """An ``sqlite://`` URL with a relative path made absolute (against the
    working directory now), as ``SQLiteCache`` resolves its path: the store
    is opened again after a fork, and a ``chdir`` in between must not make
    that another database. Other URLs as they are."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() != "sqlite":
        return url
    path, q, query = rest.partition("?")
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:" or path.startswith("/") or path.startswith("file:"):
        return url
    return f"{scheme}:///{os.path.abspath(path)}{q}{query}"


def _is_native_sql_url(url: str) -> bool:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    base = scheme.split("+", 1)[0]
    return base in _NATIVE_SQL_SCHEMES


def _build_url(drivername: str, username: Optional[str], password: Optional[str], host: Optional[str],
               port: Optional[int], database: Optional[str]) -> str:
    if drivername.split("+", 1)[0] == "sqlite":
        return f"{drivername}:///{database or ''}"
    auth = ""
    if username is not None:
        auth = _quote(username)
        if password is not None:
            auth += ":" + _quote(password)
        auth += "@"
    hostport = host or "localhost"
    if port is not None:
        hostport += f":{port}"
    return f"{drivername}://{auth}{hostport}/{database or ''}"


class SQLAlchemyCache(BaseCache):
    """A cache in an SQL database.

    ``url_or_engine`` is a URL (``postgresql://``, ``postgresql+psycopg://``,
    ``mysql+pymysql://``, ``sqlite:///path``...) or a SQLAlchemy ``Engine``;
    or give ``drivername``, ``username``, ``password``, ``host``, ``port`` and
    ``database``. SQLite, PostgreSQL and MySQL/MariaDB URLs run on the Rust
    backend with no Python dependency; an ``Engine`` or another dialect goes
    through SQLAlchemy (``pip install picocache[sqlalchemy]``), in table
    ``<table_name>_sa``. ``echo`` is passed to ``create_engine`` on that path.
    ``":memory:"`` URLs give one database per cache object, deleted with it.
    On the native (URL) path the connection options of ``RedisCache`` apply
    too: ``timeout``, ``connect_timeout``, ``pool_size``, ``max_value_size``,
    ``backoff``, ``backoff_max``; on the ``Engine`` path ``timeout`` bounds
    each cache operation's statements and lock waits (PostgreSQL and
    MySQL/MariaDB; see ``_sqlalchemy``) and the others are the Engine's own.
    """

    @property
    def _blocking_io(self) -> bool:  # type: ignore[override]
        return True

    def __init__(self, url_or_engine: Any = None, table_name: str = "picocache", echo: bool = False, *,
                 url: Any = None, engine: Any = None, drivername: Optional[str] = None,
                 username: Optional[str] = None, password: Optional[str] = None, host: Optional[str] = None,
                 port: Optional[int] = None, database: Optional[str] = None, **kwargs: Any) -> None:
        self._remote = _remote_options(kwargs)
        self._strict_given = strict_given(kwargs)
        super().__init__(**kwargs)
        target = url_or_engine if url_or_engine is not None else (url if url is not None else engine)
        if target is None:
            if drivername is None:
                raise TypeError("SQLAlchemyCache needs a URL, an Engine, or drivername=...")
            target = _build_url(drivername, username, password, host, port, database)
        if not isinstance(target, str) and hasattr(target, "render_as_string"):
            target = target.render_as_string(hide_password=False)  # a sqlalchemy URL object
        self.table_name = table_name
        self.echo = echo
        self._native_store: Optional[_native.Store] = None
        self._sa: Any = None
        self._lock = _thread.allocate_lock()
        if isinstance(target, str) and _is_memory_sqlite_url(target):
            # One database for this cache object, as SQLAlchemy's in-memory
            # SQLite is for one Engine (see _memory_database).
            target = "sqlite:///" + _memory_database(self)
        if isinstance(target, str) and _is_native_sql_url(target):
            target = _absolute_sqlite_url(target)
            self.url: Optional[str] = target
            self.engine = None
            # Opened now: a configuration error raises here (see _open).
            self._native_store = open_at_construction(
                self, redact(target),
                lambda: _native.Store.sql(target, table=table_name, secrets=self._secrets, **self._remote),
                _sqlite_url_problem(target))
        elif isinstance(target, str):
            self.url = target
            self.engine = None
            try:
                from sqlalchemy import create_engine  # the pure-Python path
            except ImportError:
                problem = (f"{target.split('://', 1)[0]!r} is not a URL scheme picocache opens itself "
                           f"(sqlite, postgresql, mysql, mariadb), and SQLAlchemy, which would, is not "
                           f"installed (pip install picocache[sqlalchemy])")
                open_at_construction(self, redact(target), lambda: None, problem)
                return
            try:
                self.engine = create_engine(target, echo=echo)
            except Exception as e:  # noqa: BLE001 - SQLAlchemy's ArgumentError, NoSuchModuleError, ImportError
                problem = f"SQLAlchemy cannot make an engine of it: {type(e).__name__}: {e}"
                open_at_construction(self, redact(target), lambda: None, problem)
        else:
            self.url = None
            self.engine = target

    @property
    def _supports_max_bytes(self) -> bool:  # type: ignore[override]
        return self.engine is None  # the native SQL backend; not the SQLAlchemy Engine path

    def _open_namespace(self, name: str, maxsize: Optional[int], ttl: Optional[float], typed: bool,
                        max_bytes: Optional[int] = None) -> Any:
        with self._lock:
            if self.engine is None:
                if self._native_store is None:
                    self._native_store = _native.Store.sql(self.url, table=self.table_name,
                                                           secrets=self._secrets, **self._remote)
                store = self._native_store
            else:
                if self._sa is None:
                    from ._sqlalchemy import SAStore
                    self._sa = SAStore(self.engine, self.table_name + "_sa",
                                       timeout=self._remote.get("timeout", 1.0))
                store = self._sa
        if self.engine is None:
            return store.namespace(name, maxsize=maxsize, ttl=ttl, typed=typed, fallback=_fallback,
                                   max_bytes=max_bytes)
        ns = store.namespace(name, maxsize=maxsize, ttl=ttl, typed=typed, fallback=_fallback)
        return SealedNamespace(ns, self._sealer())

    def _after_fork_in_child(self) -> None:
        self._lock = _thread.allocate_lock()
        if self.engine is not None:
            try:
                self.engine.dispose(close=False)
            except TypeError:  # SQLAlchemy < 1.4.33
                pass

    def __repr__(self) -> str:
        where = '<engine>' if self.url is None else repr(redact(self.url))
        return f"SQLAlchemyCache({where}, table_name={self.table_name!r})"


def _redis_params_url(params: dict) -> str:
    """The URL of the original picocache's ``url_or_params`` dict (the
    keywords of ``redis.Redis``: host, port, db, username, password, ssl,
    unix_socket_path). Other keys raise TypeError naming them."""
    p = dict(params)
    known = {"host", "port", "db", "username", "password", "ssl", "unix_socket_path"}
    unknown = sorted(set(p) - known)
    if unknown:
        raise TypeError(f"RedisCache: connection parameters not supported: {', '.join(unknown)} "
                        f"(supported: {', '.join(sorted(known))}; or give a URL)")
    db = int(p.get("db", 0) or 0)
    auth = ""
    if p.get("username") is not None or p.get("password") is not None:
        auth = _quote(str(p.get("username") or ""))
        if p.get("password") is not None:
            auth += ":" + _quote(str(p["password"]))
        auth += "@"
    if p.get("unix_socket_path"):
        return f"unix://{auth}{p['unix_socket_path']}?db={db}"
    scheme = "rediss" if p.get("ssl") else "redis"
    host = p.get("host") or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{auth}{host}:{int(p.get('port') or 6379)}/{db}"


class RedisCache(_NativeCache):
    """A cache on a Redis server: ``RedisCache("redis://host:6379/0")``,
    ``RedisCache({"host": ..., "port": ...})`` (the original's
    ``url_or_params``) or ``RedisCache(host=..., port=..., db=...,
    password=...)``. Every key starts with ``namespace``; ``ttl`` (seconds) is
    the default time to live.

    Connection options (keywords; None: the default): ``timeout`` (seconds
    one cache operation may take in total, all its commands, 1.0),
    ``connect_timeout`` (seconds opening a connection may add, 1.0), ``pool_size``
    (connections at most, 8), ``max_value_size`` (bytes a stored entry may
    have, 8 MiB), ``backoff`` / ``backoff_max`` (seconds the server is skipped
    after a failure, 1.0 doubling to 10.0). A call never waits much longer
    than these for a server that does not answer."""

    _blocking_io = True

    def __init__(self, url: "Optional[str | dict]" = None, host: str = "localhost", port: int = 6379, db: int = 0,
                 password: Optional[str] = None, namespace: str = "picocache", ttl: Optional[float] = None,
                 **kwargs: Any) -> None:
        if ttl is not None:
            kwargs.setdefault("default_ttl", ttl)
        if "url_or_params" in kwargs:  # the original's name for the first argument
            if url is not None:
                raise TypeError("RedisCache: give url or url_or_params, not both")
            url = kwargs.pop("url_or_params")
        self._remote = _remote_options(kwargs)
        super().__init__(**kwargs)
        if isinstance(url, dict):
            url = _redis_params_url(url)
        elif url is not None and not isinstance(url, str):
            raise TypeError(f"RedisCache: url must be a str or a dict of parameters, not {type(url).__name__}")
        self.url, self.host, self.port, self.db = url, host, port, db
        self._password = password
        self.namespace = namespace
        self.ttl = ttl
        # Opened now: a configuration error raises here, a server that is
        # down warns (see _open).
        self._store = open_at_construction(self, self._where(), self._open_store)

    def _where(self) -> str:
        if self.url is not None:
            return redact(self.url)
        return f"redis://{self.host}:{self.port}/{self.db}"

    def _open_store(self) -> "_native.Store":
        if self.url is not None:
            return _native.Store.redis(self.url, prefix=self.namespace, secrets=self._secrets, **self._remote)
        return _native.Store.redis_host(self.host, self.port, self.db, self._password, prefix=self.namespace,
                                        secrets=self._secrets, **self._remote)

    def __repr__(self) -> str:
        return f"RedisCache({self._where()!r}, namespace={self.namespace!r})"


class DjangoCache(BaseCache):
    """A cache in Django's cache framework: ``django.core.cache.caches[alias]``.

    Entries use the alias's configured timeout unless ``timeout`` (seconds;
    None: never expire) is given. ``cache_clear()`` removes only that
    function's keys. See ``picocache._django`` for how ``maxsize`` holds across
    processes.
    """

    _DEFAULT: Any = object()
    _blocking_io = True

    def __init__(self, alias: str = "default", timeout: Any = _DEFAULT, **kwargs: Any) -> None:
        self._strict_given = strict_given(kwargs)
        super().__init__(**kwargs)
        self.alias = alias
        self.timeout = timeout
        problem = None
        try:
            from django.conf import settings
        except ImportError:
            problem = "Django is not installed (pip install picocache[django])"
        else:
            # Settings not configured yet (a module imported by the settings):
            # the alias is looked up at the first call.
            if settings.configured and alias not in settings.CACHES:
                problem = (f"settings.CACHES has no alias {alias!r} "
                           f"(it has: {', '.join(map(repr, settings.CACHES)) or 'none'})")
        if problem is not None:
            open_at_construction(self, f"django.core.cache.caches[{alias!r}]", lambda: None, problem)

    def _open_namespace(self, name: str, maxsize: Optional[int], ttl: Optional[float], typed: bool,
                        max_bytes: Optional[int] = None) -> Any:
        from ._django import DjangoNamespace
        timeout = ttl if ttl is not None else self.timeout
        ns = DjangoNamespace(self.alias, name, maxsize, timeout, typed, _fallback,
                             default=timeout is self._DEFAULT)
        return SealedNamespace(ns, self._sealer())

    def __repr__(self) -> str:
        return f"DjangoCache({self.alias!r})"


#: The original picocache's names.
PicoCache = BaseCache
