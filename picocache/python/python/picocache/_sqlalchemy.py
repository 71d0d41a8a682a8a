"""SQLAlchemyCache's pure-Python path: an ``Engine`` or a dialect the Rust
backend does not speak. Table ``<table_name>_sa``: one row per entry, keyed by
(function name, digest of the key); the full key is stored and compared, so a
digest collision is a miss. A hit refreshes the entry's access time at most
once a second (not every hit is a write); a store evicts the least recently
used rows of that function only, in the same transaction. No cross-process
lease on this path: concurrent processes may compute a key more than once
(threads of one process still compute it once).

Bounds: every transaction of a cache operation runs with the cache's
``timeout`` (1 s by default) as its statement and lock timeout, so a table
another session holds locked (a migration, a ``VACUUM FULL``) fails the
operation after about that long instead of blocking the call:
PostgreSQL by ``SET LOCAL statement_timeout, lock_timeout`` (this
transaction only); MySQL/MariaDB by the session's ``lock_wait_timeout`` and
``innodb_lock_wait_timeout``, set for the transaction and restored after it
(the Engine's connections are the application's). SQLite waits for its own
busy timeout (5 s by default in SQLAlchemy's driver); other dialects get
no bound from picocache: give the Engine one (``connect_args``).

Keys and values are LONGBLOB on MySQL/MariaDB (a BLOB holds 64 KiB: a longer
key was never found again), and a table made with BLOB columns by an older
version is widened on open. Processes that open the same new table at once
all succeed: PostgreSQL creates it under an advisory lock, and on every
dialect a CREATE that lost a race to another process is tried again (it then
finds the table)."""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from typing import Any, Callable, Optional

from . import _native

try:
    import sqlalchemy as sa
except ImportError as e:  # pragma: no cover
    raise ImportError("SQLAlchemyCache with an Engine needs SQLAlchemy: pip install picocache[sqlalchemy]") from e


def _unavailable(fn: Callable) -> Callable:
    def inner(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except sa.exc.SQLAlchemyError as e:
            raise _native.CacheUnavailable(f"sqlalchemy: {e}") from e

    return inner


def _blob() -> Any:
    """Binary of any length: LONGBLOB on MySQL/MariaDB (BLOB stops at 64 KiB)."""
    from sqlalchemy.dialects import mysql

    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql").with_variant(mysql.LONGBLOB(), "mariadb")


def _lost_race(e: Exception) -> bool:
    """Whether a CREATE failed because another process created the same
    table, type or index at the same moment."""
    if isinstance(e, sa.exc.IntegrityError):  # PostgreSQL: pg_type_typname_nsp_index
        return True
    text = str(getattr(e, "orig", e)).lower()
    return any(w in text for w in ("already exists", "duplicate", "1050", "1061"))


def _server_codes(e: Exception) -> tuple[Any, Any]:
    """The server's error codes under a SQLAlchemy error: the driver's
    numeric code (MySQL and MariaDB drivers: ``args[0]``) and the SQLSTATE
    (PostgreSQL drivers: ``sqlstate`` or ``pgcode``); ``None`` where absent."""
    orig = getattr(e, "orig", None)
    if orig is None:
        return None, None
    args = getattr(orig, "args", None) or [None]
    return args[0], getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _deadlock(e: Exception) -> bool:
    """Whether the server rolled a transaction back for a deadlock (MySQL
    1213; PostgreSQL 40P01, 40001): worth another try. (Not a lock wait that
    ran out, MySQL 1205: the operation's time is spent.)"""
    code, pgcode = _server_codes(e)
    return code == 1213 or pgcode in ("40P01", "40001")


#: How many times a write the server rolled back for a deadlock is tried
#: (with random, growing pauses between: 12 clients storing one new key at
#: once on MySQL deadlocked 5 times in a row once, under load).
_WRITE_TRIES = 10

#: Seconds the operations of this path are skipped after one ran out of
#: time or found the server away (see ``SAStore.tx``).
_BACKOFF = 1.0


def _timed_out_or_away(e: Exception) -> bool:
    """Whether ``e`` says the operation's time ran out (PostgreSQL 57014,
    55P03; MySQL 1205, 3024; MariaDB 1969) or the server is away (a
    connection that failed or was lost: ``OperationalError``)."""
    code, pgcode = _server_codes(e)
    if _deadlock(e):
        return False  # (pymysql's deadlock is an OperationalError: tried again)
    return (isinstance(e, sa.exc.OperationalError) or code in (1205, 3024, 1969)
            or pgcode in ("57014", "55P03"))


#: How many times a CREATE that lost a race is tried again.
_CREATE_TRIES = 5


class SAStore:
    def __init__(self, engine: Any, table: str, timeout: float = 1.0) -> None:
        self.engine = engine
        self.timeout = timeout
        self.down_until = 0.0
        md = sa.MetaData()
        self.table = sa.Table(
            table, md,
            sa.Column("ns", sa.String(255), primary_key=True),
            sa.Column("kh", sa.String(64), primary_key=True),
            sa.Column("k", _blob(), nullable=False),
            sa.Column("v", _blob(), nullable=False),
            sa.Column("atime", sa.BigInteger(), nullable=False),
            sa.Column("expires", sa.Float(), nullable=True),
        )
        sa.Index(f"{table}_lru", self.table.c.ns, self.table.c.atime)
        try:
            self._create(md, table)
        except sa.exc.SQLAlchemyError as e:
            raise _native.CacheUnavailable(f"sqlalchemy: {e}") from e

    @contextlib.contextmanager
    def tx(self) -> Any:
        """A transaction of one cache operation, bounded by ``timeout`` (see
        the module docs). One that fails for time or for the server's
        absence starts a back-off: the operations of the next second (the
        rest of the call, and the other calls) fail at once, as on the native
        path."""
        if time.monotonic() < self.down_until:
            raise _native.CacheUnavailable(
                "sqlalchemy: skipped for a moment after an operation ran out of time or the server failed")
        try:
            with self._tx() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as e:
            if _timed_out_or_away(e):
                self.down_until = time.monotonic() + _BACKOFF
            raise

    @contextlib.contextmanager
    def _tx(self) -> Any:
        with self.engine.begin() as conn:
            name = conn.dialect.name
            ms = max(1, int(self.timeout * 1000))
            if name == "postgresql":
                conn.execute(sa.text(f"SET LOCAL statement_timeout = {ms}"))
                conn.execute(sa.text(f"SET LOCAL lock_timeout = {ms}"))
                yield conn
            elif name in ("mysql", "mariadb"):
                secs = max(1, round(self.timeout))
                old = conn.execute(sa.text(
                    "SELECT @@SESSION.lock_wait_timeout, @@SESSION.innodb_lock_wait_timeout")).first()
                conn.execute(sa.text(f"SET SESSION lock_wait_timeout = {secs}, innodb_lock_wait_timeout = {secs}"))
                try:
                    yield conn
                finally:
                    with contextlib.suppress(sa.exc.SQLAlchemyError):
                        conn.execute(sa.text("SET SESSION lock_wait_timeout = :a, innodb_lock_wait_timeout = :b"),
                                     {"a": int(old[0]), "b": int(old[1])})
            else:
                yield conn

    def _create(self, md: Any, table: str) -> None:
        lock = int.from_bytes(hashlib.blake2b(f"picocache sa schema {table}".encode(), digest_size=8).digest(),
                              "big", signed=True)
        for attempt in range(_CREATE_TRIES):
            try:
                with self.engine.begin() as conn:
                    name = conn.dialect.name
                    if name == "postgresql":
                        # One creator at a time; the others then find the table.
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})
                    md.create_all(conn, checkfirst=True)
                    if name in ("mysql", "mariadb"):
                        self._widen_mysql_blobs(conn, table)
                return
            except sa.exc.SQLAlchemyError as e:
                if attempt + 1 >= _CREATE_TRIES or not _lost_race(e):
                    raise
                time.sleep(0.02 * (attempt + 1))

    @staticmethod
    def _widen_mysql_blobs(conn: Any, table: str) -> None:
        """A table an older version made has BLOB keys and values: LONGBLOB."""
        rows = conn.execute(sa.text(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t AND COLUMN_NAME IN ('k', 'v')"), {"t": table})
        if any(str(r[1]).lower() != "longblob" for r in rows):
            quoted = conn.dialect.identifier_preparer.quote(table)
            conn.execute(sa.text(f"ALTER TABLE {quoted} MODIFY k LONGBLOB NOT NULL, MODIFY v LONGBLOB NOT NULL"))

    def namespace(self, name: str, maxsize: Optional[int], ttl: Optional[float], typed: bool,
                  fallback: Callable) -> "SANamespace":
        return SANamespace(self, name, maxsize, ttl, typed, fallback)


class SANamespace:
    def __init__(self, store: SAStore, name: str, maxsize: Optional[int], ttl: Optional[float], typed: bool,
                 fallback: Callable) -> None:
        self.store, self.name, self.maxsize, self.ttl = store, name, maxsize, ttl
        self.typed, self.fallback = typed, fallback
        self.t = store.table

    def key(self, args: tuple, kwargs: Optional[dict] = None) -> bytes:
        return _native.encode_call(args, kwargs, self.typed, self.fallback)

    def lookup(self, args: tuple, kwargs: Optional[dict] = None) -> Optional[bytes]:
        return self.get(self.key(args, kwargs))

    @staticmethod
    def _kh(key: bytes) -> str:
        return hashlib.blake2b(key, digest_size=32).hexdigest()

    @_unavailable
    def get(self, key: bytes) -> Optional[bytes]:
        t, kh = self.t, self._kh(key)
        with self.store.tx() as conn:
            row = conn.execute(sa.select(t.c.k, t.c.v, t.c.atime, t.c.expires)
                               .where(t.c.ns == self.name, t.c.kh == kh)).first()
        if row is None or bytes(row[0]) != key:
            return None
        now = time.time()
        if row[3] is not None and row[3] <= now:
            self.remove(key)
            return None
        if self.maxsize is not None:
            # The LRU order is exact, as lru_cache's: every hit is a use (a
            # write per hit; without maxsize nothing is ever evicted by it).
            with self.store.tx() as conn:
                conn.execute(sa.update(t).where(t.c.ns == self.name, t.c.kh == kh)
                             .values(atime=max(time.time_ns(), row[2] + 1)))
        return bytes(row[1])

    @_unavailable
    def put(self, key: bytes, value: bytes, ttl: Optional[float] = None) -> None:
        if self.maxsize == 0:
            return
        ttl = ttl if ttl is not None else self.ttl
        expires = time.time() + ttl if ttl is not None else None
        for attempt in range(_WRITE_TRIES):
            try:
                return self._put(key, value, expires)
            except sa.exc.DBAPIError as e:
                # Concurrent stores of one function may deadlock on MySQL's
                # gap locks: the server rolled this one back; try again.
                if attempt + 1 >= _WRITE_TRIES or not _deadlock(e):
                    raise
                # Random pauses, so the writers that deadlocked do not meet
                # again in step (at most ~0.3 s, ~1.5 s in all).
                time.sleep(random.random() * 0.005 * 2 ** min(attempt, 6))

    def _put(self, key: bytes, value: bytes, expires: Optional[float]) -> None:
        t, kh = self.t, self._kh(key)
        with self.store.tx() as conn:
            conn.execute(sa.delete(t).where(t.c.ns == self.name, t.c.kh == kh))
            conn.execute(sa.insert(t).values(ns=self.name, kh=kh, k=key, v=value, atime=time.time_ns(),
                                             expires=expires))
            if self.maxsize is not None:
                n = conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.ns == self.name)).scalar()
                if n > self.maxsize:
                    old = [r[0] for r in conn.execute(
                        sa.select(t.c.kh).where(t.c.ns == self.name).order_by(t.c.atime.asc())
                        .limit(n - self.maxsize))]
                    conn.execute(sa.delete(t).where(t.c.ns == self.name, t.c.kh.in_(old)))

    @_unavailable
    def remove(self, key: bytes) -> bool:
        with self.store.tx() as conn:
            r = conn.execute(sa.delete(self.t).where(self.t.c.ns == self.name, self.t.c.kh == self._kh(key)))
            return bool(r.rowcount)

    @_unavailable
    def clear(self) -> None:
        with self.store.tx() as conn:
            conn.execute(sa.delete(self.t).where(self.t.c.ns == self.name))

    @_unavailable
    def stats(self) -> dict:
        t = self.t
        with self.store.tx() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(t).where(
                t.c.ns == self.name, sa.or_(t.c.expires.is_(None), t.c.expires > time.time()))).scalar()
        return {"entries": int(n or 0), "bytes": 0, "hits": 0, "misses": 0, "evictions": 0}

    def lease(self, key: bytes, wait: float) -> None:
        return None
