"""Adversarial tests, session 12: construction-time opening (odd paths,
passwords in URLs, servers), array values (framed values, mmap_mode="r",
content keys) and the laziness of ``import picocache``.

Each test asserts what lru_cache or the docs promise; the ones marked xfail
describe a bug still open (see the reason)."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap

import pytest

import picocache as pc
from picocache import _values
from conftest import MYSQL, POSTGRES, REDIS, need, uid

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(os.path.dirname(os.path.abspath(pc.__file__)))


def run_py(code: str, *args: str, flags=(), env=None, timeout=30, cwd=None) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter that finds this picocache."""
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([PKG, HERE] + sys.path[1:]), **(env or {})}
    return subprocess.run([sys.executable, *flags, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=e, timeout=timeout, cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# 1. Construction-time errors
# ---------------------------------------------------------------------------

def _everything_said(make, caplog):
    """What a construction shows of itself: the exception's text and args,
    the warnings logged, and the cache's repr."""
    out = []
    with caplog.at_level(logging.DEBUG, logger="picocache"):
        try:
            c = make()
        except Exception as e:  # noqa: BLE001
            out += [str(e), repr(e), repr(e.args), str(e.__cause__), str(e.__context__)]
        else:
            out.append(repr(c))

            @c
            def f(x):
                return x

            f(1)
    out.append(caplog.text)
    return "\n".join(out)


@pytest.mark.parametrize("password", ["se/cr#et9", "p/w@x9q", "a#b?c9z", "with space9", "pct%2Fenc9"])
def test_a_redis_password_with_special_characters_never_leaks(password, caplog):
    url = f"redis://user:{password}@127.0.0.1:{free_port()}/0"
    text = _everything_said(lambda: pc.RedisCache(url, connect_timeout=0.3), caplog)
    secret = password[:-1]
    # No piece of the password longer than 2 characters is shown either.
    pieces = [p for p in secret.replace("#", "/").replace("@", "/").replace("?", "/").split("/") if len(p) > 2]
    for p in [secret] + pieces:
        assert p not in text, (p, text)


@pytest.mark.parametrize("password", ["se/cr@t9", "x/y#z9w"])
def test_a_postgres_password_with_special_characters_never_leaks(password, caplog):
    url = need("PICOCACHE_POSTGRES_URL", POSTGRES)
    rest = url.split("@", 1)[1]
    bad = f"postgresql://picocache:{password}@{rest}"
    text = _everything_said(lambda: pc.SQLAlchemyCache(bad, connect_timeout=0.5), caplog)
    secret = password[:-1]
    pieces = [p for p in secret.replace("#", "/").replace("@", "/").split("/") if len(p) > 2]
    for p in [secret] + pieces:
        assert p not in text, (p, text)


@pytest.mark.parametrize("kind", ["postgres-wrong", "postgres-bad-param", "postgres-down", "mysql-wrong", "redis",
                                  "postgres-user-param", "sqlalchemy-unknown"])
def test_a_password_given_as_a_query_parameter_never_leaks(kind, caplog):
    """libpq and MySQL URLs take ``?password=``: it is a password too (it
    was shown whole in errors, warnings and repr, also inside the native
    layer's own message for a connection string it cannot parse)."""
    secret = "Qp4ss-" + uid()
    pg = need("PICOCACHE_POSTGRES_URL", POSTGRES).split("@", 1)[1]  # host:port/db
    my = need("PICOCACHE_MYSQL_URL", MYSQL).split("@", 1)[1]
    make = {
        "postgres-wrong": lambda: pc.SQLAlchemyCache(f"postgresql://picocache@{pg}?password={secret}"),
        "postgres-bad-param": lambda: pc.SQLAlchemyCache(f"postgresql://picocache@{pg}?password={secret}&bogus=1"),
        "postgres-down": lambda: pc.SQLAlchemyCache(
            f"postgresql://picocache@127.0.0.1:{free_port()}/db?password={secret}", connect_timeout=0.3),
        "postgres-user-param": lambda: pc.SQLAlchemyCache(
            f"postgresql://{pg.split('/')[0]}/picocache?user=picocache&password={secret}"),
        "mysql-wrong": lambda: pc.SQLAlchemyCache(f"mysql://picocache@{my}?password={secret}"),
        "redis": lambda: pc.RedisCache(need("PICOCACHE_REDIS_URL", REDIS) + f"?password={secret}",
                                       namespace="t" + uid()),
        "sqlalchemy-unknown": lambda: pc.SQLAlchemyCache(f"nosuchdialect://u@h/db?password={secret}"),
    }[kind]
    text = _everything_said(make, caplog)
    assert secret not in text, text


def test_sql_and_redis_bad_ports_raise_naming_the_class():
    for make in (lambda: pc.SQLAlchemyCache("postgresql://u:pw-Zq9@127.0.0.1:99999/db"),
                 lambda: pc.SQLAlchemyCache("mysql://u:pw-Zq9@127.0.0.1:notaport/db"),
                 lambda: pc.RedisCache("redis://:pw-Zq9@127.0.0.1:-1/0")):
        with pytest.raises(pc.CacheError) as info:
            make()
        text = str(info.value)
        assert ("SQLAlchemyCache" in text or "RedisCache" in text) and "pw-Zq9" not in text, text


@pytest.mark.parametrize("what", ["database", "user"])
def test_a_postgres_name_spelled_like_a_redis_reply_is_still_a_configuration_error(what, caplog):
    """A database named BUSYBOX_... or a user named LOADING is not a server
    that is "not ready now": the error is a configuration error and raises
    (it was taken for a transient Redis reply and only warned)."""
    url = need("PICOCACHE_POSTGRES_URL", POSTGRES)
    scheme, rest = url.split("://", 1)
    auth, _, hostdb = rest.rpartition("@")
    host = hostdb.split("/", 1)[0]
    if what == "database":
        bad = f"{scheme}://{auth}@{host}/BUSYBOX_{uid()}"
    else:
        bad = f"{scheme}://LOADING:{auth.split(':', 1)[1]}@{hostdb}"
    with caplog.at_level(logging.WARNING, logger="picocache"):
        with pytest.raises(pc.CacheError) as info:
            pc.SQLAlchemyCache(bad)
    assert "SQLAlchemyCache" in str(info.value)
    assert "unreachable now" not in caplog.text


def test_sqlite_on_a_fifo_raises_at_once(tmp_path):
    """A FIFO is not a database: construction must not block reading it."""
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    r = run_py("""
        import sys, picocache as pc
        try:
            pc.SQLiteCache(sys.argv[1])
        except pc.CacheError as e:
            print("RAISED", e)
        else:
            print("CONSTRUCTED")
    """, str(fifo), timeout=15)
    assert "RAISED" in r.stdout and "SQLiteCache" in r.stdout and str(fifo) in r.stdout, r


def test_sqlite_on_dev_null_and_local_under_dev_null_raise():
    with pytest.raises(pc.CacheError) as info:
        pc.SQLiteCache("/dev/null")
    assert "SQLiteCache" in str(info.value) and "/dev/null" in str(info.value)
    with pytest.raises(pc.CacheError) as info:
        pc.LocalCache("/dev/null/store")
    assert "LocalCache" in str(info.value)


def test_symlinked_unicode_and_relative_paths_are_one_store(tmp_path, monkeypatch):
    real = tmp_path / "réal ünï 🙂"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    a = pc.LocalCache("link/store")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # a relative path was resolved at construction
    b = pc.LocalCache(str(real / "store"))
    calls = []

    @a(name="shared")
    def fa(x):
        calls.append(x)
        return x * 2

    @b(name="shared")
    def fb(x):
        calls.append(x)
        return x * 2

    assert fa(21) == 42 and fb(21) == 42 and calls == [21]
    assert not (other / "link").exists()
    r = run_py("""
        import sys, picocache as pc
        c = pc.LocalCache(sys.argv[1])
        f = c(name="shared")(lambda x: -1)
        print(f(21), f.cache_info().hits)
    """, str(real / "store"))
    assert r.stdout.split() == ["42", "1"], r


def test_a_dangling_symlink_or_a_symlink_loop_raises_naming_the_path(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for p in (tmp_path / "dangling", tmp_path / "loop"):
        with pytest.raises(pc.CacheError) as info:
            pc.LocalCache(p)
        assert str(p) in str(info.value)


@pytest.fixture
def open_tmp():
    """A directory user 65534 can reach (pytest's own are 0700)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="picocache-s12-", dir="/tmp")
    os.chmod(d, 0o755)
    yield __import__("pathlib").Path(d)
    for root, dirs, _ in os.walk(d):
        for x in dirs:
            os.chmod(os.path.join(root, x), 0o755)
    shutil.rmtree(d, ignore_errors=True)


def _as_nobody(code: str, *args: str, timeout=30) -> subprocess.CompletedProcess:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run as user 65534")
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([PKG] + sys.path[1:]), "PICOCACHE_SECRET": "s12-shared",
         "HOME": "/nonexistent"}
    return subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                           textwrap.dedent(code), *args], capture_output=True, text=True, env=e, timeout=timeout,
                          cwd="/")


def test_a_directory_without_search_permission_is_named_with_the_right_cause(open_tmp):
    base = open_tmp / "nox"
    base.mkdir()
    os.chmod(base, 0o666)  # writable by all, searchable by none
    r = _as_nobody("""
        import sys, picocache as pc
        try:
            pc.LocalCache(sys.argv[1])
        except pc.CacheError as e:
            print("RAISED", e)
    """, str(base / "store"))
    assert "RAISED" in r.stdout and "LocalCache" in r.stdout and str(base) in r.stdout, r
    # The cause: it cannot be searched (x), not that it is not writable.
    assert "not writable" not in r.stdout and "search" in r.stdout, r.stdout


def test_a_store_that_becomes_unwritable_later_keeps_serving(open_tmp):
    sub = open_tmp / "d"
    sub.mkdir()
    os.chmod(sub, 0o777)
    store = sub / "store"
    r = _as_nobody("""
        import os, sys, picocache as pc
        c = pc.LocalCache(sys.argv[1])
        calls = []
        @c(name="f")
        def f(x):
            calls.append(x)
            return [x]
        f(1)
        for n in os.listdir(sys.argv[1]):
            os.chmod(os.path.join(sys.argv[1], n), 0o400)
        os.chmod(sys.argv[1], 0o500)
        assert f(1) == [1] and f(2) == [2] and f(2) == [2], calls
        print("OK", calls)
    """, str(store))
    assert "OK" in r.stdout, r
    # Another process opens it now: it cannot write, but it serves f(1).
    r = _as_nobody("""
        import sys, picocache as pc
        c = pc.LocalCache(sys.argv[1])
        calls = []
        @c(name="f")
        def f(x):
            calls.append(x)
            return [x]
        print("VALUES", f(1), f(3), f(3), len(calls))
    """, str(store))
    assert "VALUES [1] [3] [3]" in r.stdout, r
    assert r.stdout.split()[-1] in ("1", "2"), r.stdout  # f(1) at least was a hit


def test_fork_after_construction_shares_the_store(tmp_path):
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    c = pc.LocalCache(tmp_path / "store")
    calls = []

    @c(name="forked")
    def f(x):
        calls.append(x)
        return (x, os.getpid())

    parent = f(1)
    pid = os.fork()
    if pid == 0:  # the child: a hit of the parent's entry, then its own
        ok = f(1) == parent and f(2)[1] == os.getpid() and f.cache_info().hits == 1
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert f(2)[1] == pid and calls == [1]


def test_pickling_a_cache_object_is_a_clear_type_error_without_the_password(tmp_path):
    url = need("PICOCACHE_REDIS_URL", REDIS)
    secret = "pw-" + uid()
    for c in (pc.LocalCache(tmp_path / "store"), pc.RedisCache(url, namespace="t" + uid()),
              pc.RedisCache(f"redis://:{secret}@127.0.0.1:{free_port()}/0", connect_timeout=0.2),
              pc.SQLiteCache(tmp_path / "c.db")):
        # (It failed with an AttributeError about a WeakValueDictionary.)
        with pytest.raises(TypeError) as info:
            pickle.dumps(c)
        assert type(c).__name__ in str(info.value) and secret not in str(info.value)


def test_many_caches_on_one_path_with_few_file_descriptors(tmp_path):
    """Was a bug: every LocalCache object opened the store's files again (3
    descriptors each): the 64th cache on one path raised 'Too many open
    files'. Cache objects on one path now share the store in the process."""
    r = run_py("""
        import resource, sys, picocache as pc
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        caches = [pc.LocalCache(sys.argv[1]) for _ in range(100)]
        fs = [c(name="same")(lambda x: x + 1) for c in caches]
        print("SUM", sum(f(1) for f in fs))
    """, str(tmp_path / "store"))
    assert "SUM 200" in r.stdout, r.stderr[-2000:]


def test_many_caches_on_one_path_share_entries(tmp_path):
    caches = [pc.LocalCache(tmp_path / "store") for _ in range(50)]
    calls = []
    fs = []
    for c in caches:
        @c(name="many")
        def f(x):
            calls.append(x)
            return x + 1
        fs.append(f)
    assert [f(1) for f in fs] == [2] * 50 and calls == [1]


# ---------------------------------------------------------------------------
# 2. Array values
# ---------------------------------------------------------------------------

np = pytest.importorskip("numpy")


def _same(a, b) -> bool:
    if isinstance(a, np.ma.MaskedArray):
        return (type(b) is type(a) and np.array_equal(a.data, b.data) and np.array_equal(a.mask, b.mask)
                and a.dtype == b.dtype)
    if isinstance(a, np.ndarray):
        return (type(b) is type(a) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a).__module__.startswith("pandas"):
        return type(a) is type(b) and a.equals(b)
    return a == b


def _values_zoo() -> dict:
    big = np.arange(200_000, dtype=np.float64)
    return {
        "view": big[::3],
        "reversed": big[::-1],
        "fortran": np.asfortranarray(big.reshape(400, 500)),
        "zerod": np.array(2.5),
        "empty": np.zeros((0, 70_000)),
        "objects": np.array([{"a": 1}, [1, 2], None] * 1000, dtype=object),
        "structured": np.zeros(20_000, dtype=[("a", "<i4"), ("b", ">f8", (2,))]),
        "byteswapped": np.arange(100_000, dtype=">i8"),
        "matrix": np.matrix(big[:100_000].reshape(100, 1000)),
        "masked": np.ma.masked_array(big, mask=big % 3 == 0),
        "datetimes": np.arange(100_000).astype("datetime64[ns]"),
        "strings": np.array(["abc", "déf"] * 20_000),
        "nested": {"x": [np.ones(100_000), (np.zeros(70_000, dtype=np.int8),)], "y": bytearray(b"z" * 100_000)},
        "nan": np.full(100_000, np.nan),
    }


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
@pytest.mark.parametrize("mode", [None, "r"])
def test_array_layouts_round_trip_through_the_store(mode, tmp_path):
    c = pc.LocalCache(tmp_path / "store")
    zoo = _values_zoo()
    for name, v in zoo.items():
        @c(name=f"zoo-{name}", mmap_mode=mode)
        def g(i, _v=v):
            return _v

        g(1)
        hit = g(1)
        assert g.cache_info().hits == 1, name
        assert _same(v, hit), name
        if isinstance(hit, np.ndarray) and mode is None:
            assert hit.flags.writeable, name
        # (Large contiguous plain arrays go out of band: read-only under "r".)
        if isinstance(hit, np.ndarray) and mode == "r" and (v.flags.c_contiguous or v.flags.f_contiguous) \
                and v.nbytes >= 1 << 16 and type(v) is np.ndarray and v.dtype.kind in "biuf":
            assert not hit.flags.writeable, name


def test_pandas_objects_holding_arrays_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    c = pc.LocalCache(tmp_path / "store")
    n = 60_000
    values = {
        "frame": pd.DataFrame({"f": np.arange(n, dtype=np.float64), "i": np.arange(n) % 7,
                               "s": ["x", "y"] * (n // 2)}, index=np.arange(n)[::-1]),
        "series": pd.Series(np.arange(n, dtype=np.float32), name="s"),
        "categorical": pd.Series(pd.Categorical(["a", "b", "c"] * (n // 3))),
        "dates": pd.Series(pd.date_range("2020-01-01", periods=n, freq="min", tz="UTC")),
    }
    for mode in (None, "r"):
        for name, v in values.items():
            @c(name=f"pd-{name}-{mode}", mmap_mode=mode)
            def g(_v=v):
                return _v

            g()
            hit = g()
            assert g.cache_info().hits == 1 and _same(v, hit), (name, mode)


def test_one_buffer_returned_twice_comes_back_shared_and_independent_of_the_next_hit(tmp_path):
    c = pc.LocalCache(tmp_path / "store")

    @c
    def pair(n):
        a = np.arange(n, dtype=np.float64)
        return (a, a, {"again": a})

    n = 100_000
    pair(n)
    h1 = pair(n)
    h2 = pair(n)
    assert h1[0] is h1[1] is h1[2]["again"]
    assert h1[0].flags.writeable and not np.shares_memory(h1[0], h2[0])
    h1[0][:] = -1.0  # the caller's copy
    assert (pair(n)[0] == np.arange(n)).all() and (h2[0] == np.arange(n)).all()


@pytest.mark.parametrize("n", [10, 100_000])
def test_a_read_only_result_hits_writable_without_mmap_mode(n, tmp_path):
    c = pc.LocalCache(tmp_path / "store")

    @c
    def frozen(n):
        a = np.arange(n, dtype=np.float64)
        a.setflags(write=False)
        return a

    frozen(n)
    hit = frozen(n)
    assert hit.flags.writeable  # (protocol 5 alone kept it read-only: fixed in _values)
    hit[0] = 5.0
    assert frozen(n)[0] == 0.0

    @c(mmap_mode="r")
    def frozen_r(n):
        return frozen(n)  # a read-only array (a hit of frozen)

    frozen_r(n)
    ro = frozen_r(n)
    assert (ro == np.arange(n)).all() and frozen_r.cache_info().hits == 1
    if n * 8 >= _values.OOB_MIN_BYTES:
        assert not ro.flags.writeable  # out of band: read-only under "r", as any large array


def test_read_only_hits_never_change_when_another_process_rewrites_the_key(tmp_path):
    store = tmp_path / "store"
    c = pc.LocalCache(store)

    @c(name="ro", mmap_mode="r")
    def ro(n):
        return np.zeros(n)

    n = 1 << 18
    ro(n)
    held = ro(n)
    assert not held.flags.writeable
    r = run_py("""
        import sys, numpy as np, picocache as pc
        c = pc.LocalCache(sys.argv[1])
        ro = c(name="ro", mmap_mode="r")(lambda n: np.full(n, 7.0))
        ro.cache_clear()
        for _ in range(3):
            assert (ro(1 << 18) == 7.0).all()
        print("DONE")
    """, str(store))
    assert "DONE" in r.stdout, r
    assert (held == 0.0).all()
    assert (ro(n) == 7.0).all()  # the other process's value
    with pytest.raises(ValueError):
        held[0] = 1.0


_EVIL = """
import os
class Boom:
    def __reduce__(self):
        return (os.system, ("touch " + {marker!r},))
"""


@pytest.mark.parametrize("damage", ["evil", "truncated", "framed-evil"])
def test_a_tampered_framed_value_in_the_store_is_a_miss_never_code(damage, tmp_path):
    db = tmp_path / "c.db"
    marker = tmp_path / "pwned"
    c = pc.SQLiteCache(db, table_name="t12")
    calls = []

    @c(name="arr")
    def arr(n):
        calls.append(n)
        return np.arange(n, dtype=np.float64)

    n = 50_000
    arr(n)
    con = sqlite3.connect(db)
    (v,) = con.execute('SELECT v FROM "t12"').fetchone()
    assert _values.MAGIC in v
    ns = {}
    exec(_EVIL.format(marker=str(marker)), ns)
    evil_pickle = pickle.dumps(ns["Boom"](), protocol=5)
    if damage == "evil":
        new = evil_pickle  # the whole stored value: a pickle that runs code
    elif damage == "truncated":
        new = v[: len(v) // 2]
    else:  # a well-formed framed value whose pickle stream runs code, seal bytes kept
        import struct
        at = v.index(_values.MAGIC)
        data = np.arange(n, dtype=np.float64).tobytes()
        head = _values.MAGIC + struct.pack("<IQ", 1, len(evil_pickle)) + struct.pack("<Q", len(data))
        body = head + evil_pickle
        framed = body + b"\0" * (-len(body) % _values.ALIGN) + data
        assert isinstance(_values._split(memoryview(framed)), tuple)
        new = v[:at] + framed
    con.execute('UPDATE "t12" SET v = ?', (new,))
    con.commit()
    con.close()
    got = arr(n)
    assert (got == np.arange(n)).all() and len(calls) == 2
    assert not marker.exists()
    assert arr(n)[-1] == n - 1 and len(calls) == 2


def test_content_keys_agree_across_processes_and_layouts(tmp_path):
    """Process A stores results for arrays; process B (another hash seed)
    asks with views, copies, Fortran order and the other byte order: every
    call is a hit. Other dtypes and shapes are misses."""
    store = tmp_path / "store"
    code = """
        import sys, numpy as np, picocache as pc
        c = pc.LocalCache(sys.argv[1])
        @c(name="total")
        def total(a):
            return float(np.asarray(a, dtype=np.float64).sum())
        base = np.arange(60_000, dtype=np.int32).reshape(200, 300)
        small = np.arange(12, dtype=np.float64).reshape(3, 4)
        if sys.argv[2] == "store":
            for a in (base, small, base.astype(np.int64)):
                total(a)
            print("MISSES", total.cache_info().misses)
        else:
            same = [base.copy(), np.asfortranarray(base), base.astype(">i4"), base[::-1][::-1],
                    np.ascontiguousarray(base.T).T, small.copy(order="F"), small.astype(">f8"),
                    base.astype(np.int64)[:, :]]
            for a in same:
                total(a)
            print("HITS", total.cache_info().hits, total.cache_info().misses)
            other = [base.astype(np.float32), base.reshape(300, 200), base.reshape(-1), small[:2],
                     small.astype(np.float32), base.astype(np.uint32)]
            for a in other:
                total(a)
            print("AFTER", total.cache_info().hits, total.cache_info().misses)
    """
    r = run_py(code, str(store), "store", env={"PYTHONHASHSEED": "1"})
    assert "MISSES 3" in r.stdout, r
    r = run_py(code, str(store), "ask", env={"PYTHONHASHSEED": "2"})
    assert "HITS 8 0" in r.stdout and "AFTER 8 6" in r.stdout, r


def test_mmap_mode_with_a_custom_serializer_is_refused_and_map_with_arrays_works(tmp_path):
    with pytest.raises(TypeError):
        pc.LocalCache(tmp_path / "a", value_serializer=pickle, default_mmap_mode="r")
    c = pc.LocalCache(tmp_path / "b", default_mmap_mode="r")

    @c
    def neg(a):
        return -a

    arrays = [np.arange(100_000, dtype=np.float64) + i for i in range(3)]
    first = neg.map(arrays)
    again = neg.map([a.copy() for a in arrays])
    assert neg.cache_info().misses == 3 and neg.cache_info().hits == 3
    for a, x, y in zip(arrays, first, again):
        assert (x == -a).all() and (y == -a).all() and not y.flags.writeable


# ---------------------------------------------------------------------------
# 4. import picocache laziness
# ---------------------------------------------------------------------------

_LAZY = """
    import sys
    LAZY = ("typing", "logging", "enum", "hashlib", "re", "urllib")
    before = [m for m in LAZY if m in sys.modules]
    import picocache as pc
    after = [m for m in LAZY if m in sys.modules and m not in before]
    print("LOADED", after)
    def check(ok, what):  # (not an assert statement: -OO strips those, calls and all)
        if not ok:
            raise SystemExit("FAILED: " + what)
    store = sys.argv[1]
    c = pc.LocalCache(store)
    calls = []
    @c
    def f(x):
        '''Documented.'''
        calls.append(x)
        return {"v": x}
    g = c(lambda x: x * 3)          # a lambda: named with a digest
    def make(k):
        return c(lambda x: x + k)   # a closure
    check(f(1) == {"v": 1} and f(1) == {"v": 1} and f.cache_info().hits == 1, "f")
    @c
    def ident(x):
        '''Documented too.'''
        return x
    check(g(2) == 6 and make(5)(1) == 6 and f.map([1, 2]) == [{"v": 1}, {"v": 2}] and ident(4) == 4, "g")
    aside = pc.LocalCache("/dev/null/x", strict=False)   # warns: logging loaded now
    check(aside(lambda x: x + 1)(1) == 2, "aside")
    try:
        pc.LocalCache("/dev/null/x")
    except pc.CacheInvalidArgument:
        pass
    import enum, typing, logging, hashlib   # first imported now
    check(f(1) == {"v": 1} and f.cache_info().hits == 3, "later")
    print("NAMES", sorted(c.namespace_names()))
    print("OK")
"""


@pytest.mark.parametrize("flags", [(), ("-S",), ("-I",), ("-X", "importtime"), ("-OO",)])
def test_import_is_lazy_and_everything_works_later(flags, tmp_path):
    code = _LAZY
    if "-I" in flags:  # PYTHONPATH is ignored
        code = f"import sys; sys.path[:0] = {[PKG] + sys.path[1:]!r}\n" + textwrap.dedent(code)
    r = run_py(code, str(tmp_path / "store"), flags=flags)
    assert "OK" in r.stdout, r.stderr[-3000:]
    assert "LOADED []" in r.stdout, r.stdout
    if "importtime" in flags:
        lines = [ln for ln in r.stderr.splitlines() if "import time:" in ln]
        at = next(i for i, ln in enumerate(lines) if ln.rstrip().endswith("| picocache"))
        inner = {ln.rsplit("|", 1)[1].strip() for ln in lines[:at]}
        assert not inner & {"typing", "logging", "enum", "hashlib"}, inner


@pytest.mark.xfail(strict=True, reason="BUG: a documented function's namespace name differs under "
                   "PYTHONOPTIMIZE=2, so -OO processes never share the cache of documented functions with "
                   "other processes: -OO leaves a NOP where the docstring was (3.11), which shifts the bytecode "
                   "and the exception table's offsets that _keys.code_parts digests (the docstring constant "
                   "itself is now keyed alike)")
def test_pythonoptimize_2_gives_the_same_namespace_names(tmp_path):
    store = str(tmp_path / "store")
    plain = run_py(_LAZY, store)
    optimized = run_py(_LAZY, store, env={"PYTHONOPTIMIZE": "2"})
    assert "OK" in plain.stdout and "OK" in optimized.stdout, (plain.stderr, optimized.stderr)
    names = [next(ln for ln in r.stdout.splitlines() if ln.startswith("NAMES")) for r in (plain, optimized)]
    # The optimized process found every function's namespace: it made none.
    assert names[0] == names[1], names


def test_adding_or_removing_a_docstring_keeps_the_name():
    """README: the digest covers the code, "not line numbers, comments or
    the docstring"; adding a docstring to a function changed its name."""
    src = "def f(x):\n{doc}    return x + 1\n"
    names = set()
    for doc in ("", '    """Docs."""\n', '    """Other docs."""\n'):
        ns: dict = {"__name__": "s12_doc_mod"}
        exec(compile(src.format(doc=doc), "<f>", "exec"), ns)
        names.add(pc.function_name(ns["f"]))
    assert len(names) == 1, names


def test_spawn_workers_share_the_cache(tmp_path):
    mod = tmp_path / "s12_spawn_mod.py"
    mod.write_text(textwrap.dedent("""
        import os, picocache as pc
        cache = pc.LocalCache(os.environ["S12_STORE"])

        @cache
        def square(x):
            '''Squared, with the pid that computed it.'''
            return (x * x, os.getpid())
    """))
    r = run_py("""
        import multiprocessing as mp, os, sys
        sys.path.insert(0, sys.argv[1])
        import s12_spawn_mod as m
        if __name__ == "__main__":
            first = m.square(3)
            with mp.get_context("spawn").Pool(2) as pool:
                out = pool.map(m.square, [3, 4, 4, 5])
            assert out[0] == first, (out, first)
            assert all(o[1] != os.getpid() for o in out[1:])
            again = [m.square(x) for x in (4, 5)]
            assert again == [out[1], out[3]] and m.square.cache_info().misses == 1
            print("OK")
    """, str(tmp_path), env={"S12_STORE": str(tmp_path / "store")}, timeout=60)
    assert "OK" in r.stdout, r.stderr[-3000:]


def test_content_keys_of_structured_arrays_ignore_the_fields_byte_order(tmp_path):
    """_arrays: "a big-endian array and a little-endian one of the same
    values" are one key; structured arrays too (their fields swapped)."""
    from picocache import _arrays

    little = np.zeros(500, dtype=[("a", "<i4"), ("b", "<f8", (2,)), ("c", [("d", "<i2")])])
    little["a"] = np.arange(500)
    little["b"][:, 1] = 0.5
    big = little.astype([("a", ">i4"), ("b", ">f8", (2,)), ("c", [("d", ">i2")])])
    assert (big["a"] == little["a"]).all() and (big["b"] == little["b"]).all()
    assert _arrays.ndarray_key(np, big) == _arrays.ndarray_key(np, little)
    other = little.copy()
    other["a"][7] = -1
    assert _arrays.ndarray_key(np, other) != _arrays.ndarray_key(np, little)
    renamed = little.astype([("x", "<i4"), ("b", "<f8", (2,)), ("c", [("d", "<i2")])])
    assert _arrays.ndarray_key(np, renamed) != _arrays.ndarray_key(np, little)
    c = pc.LocalCache(tmp_path / "store")
    calls = []

    @c
    def total(a):
        calls.append(1)
        return int(a["a"].sum())

    assert total(little) == total(big) == int(np.arange(500).sum()) and len(calls) == 1


# ---------------------------------------------------------------------------
# 3 (Python side). Results kept in the process (immutable ones, local
# engine) against other processes
# ---------------------------------------------------------------------------

_OTHER = """
    import os, sys, time, picocache as pc
    c = pc.LocalCache(sys.argv[1])
    what = sys.argv[2]
    maxsize = 2 if what == "evict" else None
    @c(name="kept", maxsize=maxsize)
    def kept(x):
        return ("other", x, what)
    if what in ("overwrite", "planted"):
        kept.cache_clear()
        kept(7)
    elif what == "evict":
        for i in range(100, 104):
            kept(i)
    elif what == "clear":
        kept.cache_clear()
    elif what == "stats":
        print("STATS", kept.cache_stats()["hits"])
"""


def test_results_kept_in_the_process_yield_to_other_processes(tmp_path):
    store = str(tmp_path / "store")
    c = pc.LocalCache(store, secret="s12-secret")
    calls = []

    @c(name="kept")
    def kept(x):
        calls.append(x)
        return ("mine", x, len(calls))

    def other(what, secret="s12-secret"):
        r = run_py(_OTHER, store, what, env={"PICOCACHE_SECRET": secret})
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    assert kept(7) == ("mine", 7, 1)
    assert kept(7) == kept(7) == ("mine", 7, 1)  # kept in the process now
    out = other("stats")  # hits from the process count in the store
    assert out.split()[-2:] == ["STATS", "2"], out
    other("overwrite")
    assert kept(7) == ("other", 7, "overwrite") and len(calls) == 1
    assert kept(7) == ("other", 7, "overwrite")
    other("clear")
    assert kept(7) == ("mine", 7, 2) and kept(7) == ("mine", 7, 2)
    # A value sealed with another secret (a planted one): rejected, computed.
    other("planted", secret="another-secret")
    assert kept(7) == ("mine", 7, 3) and kept(7) == ("mine", 7, 3)
    info = kept.cache_info()
    assert (info.hits, info.misses) == (6, 3), info


_COUNT = """
    import sys, picocache as pc
    c = pc.LocalCache(sys.argv[1], secret=sys.argv[2])
    @c(name="counted")
    def counted(x):
        return ("v", sys.argv[2])
    for _ in range(int(sys.argv[3])):
        counted(7)
    i = counted.cache_info()
    s = counted.cache_stats()
    print("COUNTS", i.hits, i.misses, s["hits"], s["misses"], s["rejected"])
"""


@pytest.mark.xfail(strict=True, reason="BUG: a lookup whose entry fails its seal check (a value planted or "
                   "sealed with another secret) counts as a hit in the store's statistics and not as a miss "
                   "(the inner namespace counts the read before SealedNamespace checks the seal; "
                   "picocache/src/sealed.rs, every backend)")
def test_a_rejected_entry_counts_as_a_miss_in_the_store(tmp_path):
    store = str(tmp_path / "store")

    def run(secret, n):
        r = run_py(_COUNT, store, secret, str(n))
        assert r.returncode == 0, r.stderr[-2000:]
        return [int(x) for x in r.stdout.split("COUNTS", 1)[1].split()]

    assert run("A", 3)[:2] == [2, 1]
    assert run("B", 1)[:2] == [0, 1]  # rejected: computed
    a = run("A", 2)
    assert a[:2] == [1, 1]  # rejected again (B's value), then a hit
    # The store saw 3 hits and 3 misses (each process's own counts summed).
    assert a[2:4] == [3, 3], a


def test_a_kept_result_evicted_or_expired_elsewhere_is_computed_again(tmp_path):
    import time

    store = str(tmp_path / "store")
    c = pc.LocalCache(store, secret="s12-secret")
    calls = []

    @c(name="kept", maxsize=2)
    def kept(x):
        calls.append(x)
        return ("mine", x, len(calls))

    kept(7)
    kept(7)
    r = run_py(_OTHER, store, "evict", env={"PICOCACHE_SECRET": "s12-secret"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert kept(7) == ("mine", 7, 2)

    @c(name="short", ttl=0.3)
    def short(x):
        calls.append(x)
        return (x, len(calls))

    first = short(1)
    assert short(1) == first
    time.sleep(0.45)
    assert short(1) != first


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql", "sqlite"])
def test_fork_after_construction_of_a_remote_cache(kind, tmp_path):
    """The store is opened at construction now: a forked child must not
    share the parent's connections (interleaved replies), and both go on
    answering right."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    if kind == "redis":
        c = pc.RedisCache(need("PICOCACHE_REDIS_URL", REDIS), namespace="t" + uid())
    elif kind == "postgres":
        c = pc.SQLAlchemyCache(need("PICOCACHE_POSTGRES_URL", POSTGRES), table_name="t_" + uid())
    elif kind == "mysql":
        c = pc.SQLAlchemyCache(need("PICOCACHE_MYSQL_URL", MYSQL), table_name="t_" + uid())
    else:
        c = pc.SQLiteCache(tmp_path / "c.db")

    @c(name="forked")
    def f(x):
        return (x, os.getpid())

    before = [f(i) for i in range(20)]
    pids = []
    for k in range(3):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                h0 = f.cache_info().hits  # (inherited, as lru_cache's are)
                got = [f(i) for i in range(20)]
                mine = [f(100 * (k + 1) + i) for i in range(20)]  # keys of this child only
                ok = got == before and all(m[1] == os.getpid() for m in mine)
                ok = ok and f.cache_info().hits - h0 == 20
                if not ok:
                    print("CHILD", got[:3], mine[:3], f.cache_info(), h0, file=sys.stderr, flush=True)
                code = 0 if ok else 1
            finally:
                os._exit(code)
        pids.append(pid)
        # The parent keeps using its connections meanwhile.
        assert all(f(i) == before[i] for i in range(20))
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert all(f(i) == before[i] for i in range(20))
    assert [f(100 * (k + 1))[1] for k in range(3)] == pids


@pytest.mark.parametrize("kind", ["postgres"])
def test_a_sql_server_that_comes_up_later_is_used(kind, caplog):
    """A PostgreSQL of its own (tests/servers/instance.sh) on a port chosen
    first: construction warns (down), calls run uncached, and once the
    server answers the calls use it."""
    import tempfile
    import time

    import _instance

    state = tempfile.mkdtemp(prefix=f"picocache-{kind}-s12-")
    port = free_port()
    url = f"postgresql://picocache:picocache@127.0.0.1:{port}/picocache"
    with caplog.at_level(logging.WARNING, logger="picocache"):
        c = pc.SQLAlchemyCache(url, connect_timeout=0.5, table_name="t_" + uid())
    assert "unreachable now" in caplog.text
    calls = []

    @c
    def inc(x):
        calls.append(x)
        return x + 1

    assert inc(1) == 2 and inc(1) == 2 and len(calls) == 2
    r = subprocess.run(["bash", _instance.SCRIPT, "start", kind, state, str(port)], capture_output=True,
                       text=True, timeout=300)
    if r.returncode == _instance.NOT_INSTALLED:
        shutil.rmtree(state, ignore_errors=True)
        _instance._cannot_run(f"{kind} is not installed")
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.strip().rsplit("/", 1)[0].endswith(f":{port}"), r.stdout
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            before = len(calls)
            inc(5)
            inc(5)
            if len(calls) == before + 1:  # stored, then hit
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the server that came up was never used: {calls}")
        assert inc(5) == 6 and inc.cache_info().hits >= 2
    finally:
        subprocess.run(["bash", _instance.SCRIPT, "stop", kind, state, str(port)], capture_output=True,
                       text=True, timeout=300)
        shutil.rmtree(state, ignore_errors=True)


_EMBED_C = r"""
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int rounds = atoi(argv[2]);
    for (int i = 0; i < rounds; i++) {
        Py_Initialize();
        int rc = PyRun_SimpleString(argv[1]);
        if (Py_FinalizeEx() < 0) { printf("FINALIZE FAILED\n"); return 3; }
        printf("ROUND %d rc=%d\n", i, rc);
        fflush(stdout);
    }
    return 0;
}
"""


def test_embedded_interpreter(tmp_path):
    """picocache in a program that embeds Python (Py_Initialize, run,
    Py_FinalizeEx): works, a thread included, and finalizes cleanly; a second
    Py_Initialize in the same process gets an ImportError (PyO3 modules
    initialize once per process), never a crash."""
    import sysconfig

    cc = shutil.which("cc") or shutil.which("gcc")
    config = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}-config",
                          path=os.path.dirname(os.path.realpath(sys.executable)) + os.pathsep
                          + sysconfig.get_config_var("BINDIR"))
    if cc is None or config is None or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("no C compiler, python-config or shared libpython to embed Python")
    flags = subprocess.run([config, "--cflags", "--ldflags", "--embed"], capture_output=True, text=True,
                           check=True).stdout.split()
    src = tmp_path / "embed.c"
    src.write_text(_EMBED_C)
    exe = tmp_path / "embed"
    subprocess.run([cc, str(src), "-o", str(exe), *flags], check=True, capture_output=True, timeout=120)
    paths = [PKG] + [p for p in sys.path if "site-packages" in p]
    code = textwrap.dedent(f"""
        import sys, threading
        sys.path[:0] = {paths!r}
        import picocache as pc
        c = pc.LocalCache({str(tmp_path / 'store')!r})
        @c
        def sq(x):
            return x * x
        t = threading.Thread(target=lambda: sq(5))
        t.start(); t.join()
        ok = sq(4) == 16 and sq(4) == 16 and sq(5) == 25
        print("EMBEDDED", ok, sq.cache_info().hits, flush=True)
    """)
    r = subprocess.run([str(exe), code, "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "EMBEDDED True 2" in r.stdout and "ROUND 0 rc=0" in r.stdout, r
    r = subprocess.run([str(exe), code, "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r  # no crash at the second initialization
    assert "EMBEDDED True 4" in r.stdout and "ROUND 1 rc=-1" in r.stdout and "ImportError" in r.stderr, r


def test_sqlite_database_with_a_foreign_table_of_that_name_raises_and_keeps_its_data(tmp_path):
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE picocache (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO picocache(name) VALUES ('user data')")
    con.commit()
    con.close()
    with pytest.raises(pc.CacheError) as info:
        pc.SQLiteCache(db)
    assert "SQLiteCache" in str(info.value) and str(db) in str(info.value)
    con = sqlite3.connect(db)
    assert con.execute("SELECT name FROM picocache").fetchall() == [("user data",)]
    con.close()


@pytest.mark.xfail(strict=True, reason="BUG (minor): a construction that fails on a foreign table named "
                   "'picocache' leaves picocache_meta and picocache_ns behind in the user's database (the "
                   "schema is not made in one transaction), and its cause reads 'no such column: ns in CREATE "
                   "INDEX ...' rather than naming the table in the way (picocache/src/sql)")
def test_sqlite_foreign_table_leaves_nothing_behind(tmp_path):
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE picocache (id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(pc.CacheError) as info:
        pc.SQLiteCache(db)
    con = sqlite3.connect(db)
    tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    con.close()
    assert tables == ["picocache"], tables
    assert "table" in str(info.value).split("SQLiteCache: cannot open the store at", 1)[1].lower()


def test_results_kept_in_the_process_refresh_recency(tmp_path):
    c = pc.LocalCache(tmp_path / "store")
    calls = []

    @c(maxsize=2)
    def kept(x):
        calls.append(x)
        return ("v", x)

    kept(1)
    kept(2)
    for _ in range(5):
        kept(1)  # served from the process: 1 is the most recently used
    kept(3)  # evicts 2, the least recently used
    assert kept(1) == ("v", 1) and calls == [1, 2, 3]
    kept(2)
    assert calls == [1, 2, 3, 2]


@pytest.mark.parametrize("make", ["sqlalchemy-url", "sqlite-cache", "sqlalchemy-url-query"])
def test_a_relative_sqlite_path_stays_the_same_database_after_chdir_and_fork(make, tmp_path, monkeypatch):
    """A relative path is resolved at construction: a chdir, then a fork
    (the child opens the store again) must still use that database. (The
    URL form was opened again relative to the new working directory: a
    second, empty database.)"""
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    c = {"sqlalchemy-url": lambda: pc.SQLAlchemyCache("sqlite:///rel.db", table_name="t1"),
         "sqlalchemy-url-query": lambda: pc.SQLAlchemyCache("sqlite:///rel.db?mode=rwc", table_name="t1"),
         "sqlite-cache": lambda: pc.SQLiteCache("rel.db")}[make]()

    @c(name="rel")
    def f(x):
        return (x, os.getpid())

    v = f(1)
    monkeypatch.chdir(b)
    assert f(1) == v
    pid = os.fork()
    if pid == 0:
        os._exit(0 if f(1) == v else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not [n for n in os.listdir(b) if n.startswith("rel.db")], os.listdir(b)
    assert "rel.db" in repr(c) and str(a) in repr(c)


@pytest.mark.parametrize("where", ["wrong-password", "down"])
def test_a_redis_password_given_by_keyword_never_leaks(where, caplog):
    secret = "kw/pw#" + uid()
    if where == "down":
        make = lambda: pc.RedisCache(host="127.0.0.1", port=free_port(), password=secret,  # noqa: E731
                                     connect_timeout=0.3)
    else:
        url = need("PICOCACHE_REDIS_URL", REDIS)
        host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
        make = lambda: pc.RedisCache({"host": host, "port": int(port), "password": secret})  # noqa: E731
    text = _everything_said(make, caplog)
    assert secret not in text and secret.split("/")[1] not in text, text


def test_a_pandas_to_numpy_result_hits_writable(tmp_path):
    """pandas 3 (copy on write) hands out read-only arrays from to_numpy():
    a function returning one must hit writable, as with pickle before."""
    pd = pytest.importorskip("pandas")
    c = pc.LocalCache(tmp_path / "store")

    @c
    def column(n):
        return pd.DataFrame({"x": np.arange(n, dtype=np.float64)})["x"].to_numpy()

    n = 100_000
    column(n)
    hit = column(n)
    assert hit.flags.writeable and (hit == np.arange(n)).all()
    hit *= 2
    assert (column(n) == np.arange(n)).all()


def test_content_keys_ignore_the_padding_of_aligned_structured_arrays(tmp_path):
    """An aligned structured dtype has padding bytes between its fields that
    == never reads and np.empty leaves as they were: equal arrays had other
    keys (and the same array another key in another process)."""
    from picocache import _arrays

    dt = np.dtype([("a", "u1"), ("b", "<i8"), ("c", [("x", "u1"), ("y", "<f8")], (2,))], align=True)
    clean = np.zeros(3, dtype=dt)
    dirty = np.frombuffer(b"\xff" * (3 * dt.itemsize), dtype=dt).copy()
    for name in dt.names:
        dirty[name] = 0
    assert (clean == dirty).all()
    assert _arrays.ndarray_key(np, clean) == _arrays.ndarray_key(np, dirty)
    dirty["c"]["y"][0, 1] = 1.5
    assert _arrays.ndarray_key(np, clean) != _arrays.ndarray_key(np, dirty)
    c = pc.LocalCache(tmp_path / "store")
    calls = []

    @c
    def count(a):
        calls.append(1)
        return len(a)

    dirty["c"]["y"][0, 1] = 0.0
    assert count(clean) == count(dirty) == 3 and len(calls) == 1


def test_content_keys_of_long_double_arrays_ignore_their_padding(tmp_path):
    """On x86-64 a long double keeps 10 bytes in 16; arithmetic leaves the
    other 6 as it finds them (np.arange's hold stack bytes): the same values
    had other keys, even in one process."""
    from picocache import _arrays

    if np.finfo(np.longdouble).nmant != 63:
        pytest.skip("long double is not x87 extended precision here")
    for t in (np.longdouble, np.clongdouble):
        a = np.arange(300, dtype=t)
        b = np.frombuffer(b"\xff" * (300 * a.itemsize), dtype=t).copy()
        b[:] = a
        assert (a == b).all()
        assert _arrays.ndarray_key(np, a) == _arrays.ndarray_key(np, b) == _arrays.ndarray_key(np, a * 1)
        c = a.copy()
        c[7] = np.nextafter(c[7].real, np.longdouble(1000))
        assert _arrays.ndarray_key(np, c) != _arrays.ndarray_key(np, a)
    cache = pc.LocalCache(tmp_path / "store")
    calls = []

    @cache
    def total(x):
        calls.append(1)
        return float(x.sum())

    x = np.arange(50, dtype=np.longdouble)
    y = np.frombuffer(b"\x7f" * x.nbytes, np.longdouble).copy()
    y[:] = x  # the same values over other padding
    assert total(x) == total(x * 1) == total(y) and len(calls) == 1
