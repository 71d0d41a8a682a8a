"""Never a wrong value: what names a cached function, and what may be a key
(issue 10). Each case on every backend; the cases about processes run real
scripts in real processes against one shared store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest

import picocache as pc
from conftest import MYSQL, POSTGRES, REDIS, need, sa_url

# -- closures, lambdas, nested functions --------------------------------------------


def test_closures_from_one_factory_never_share(any_cache):
    cache = any_cache()

    def make_multiplier(k):
        @cache
        def mul(x):
            return x * k

        return mul

    double, triple = make_multiplier(2), make_multiplier(3)
    assert double(5) == 10
    assert triple(5) == 15
    assert double(5) == 10 and triple(5) == 15
    # The same closure contents are the same function: a second factory call
    # shares the first one's entries.
    again = make_multiplier(2)
    assert again(5) == 10 and again.cache_info().hits == 1


def test_lambdas_in_one_scope_never_share(any_cache):
    cache = any_cache()
    sq = cache(lambda x: x * x)
    cube = cache(lambda x: x ** 3)
    assert sq(3) == 9
    assert cube(3) == 27
    # Defaults are part of what a lambda computes.
    times = [cache(lambda x, k=k: x * k) for k in (2, 3)]
    assert [t(7) for t in times] == [14, 21]


CALLS: list = []  # a global: a list in the closure would be part of the closure's identity


def test_nested_recursive_function_is_cached(any_cache):
    cache = any_cache()
    CALLS.clear()

    def outer(offset):
        @cache(maxsize=None)
        def f(n):
            CALLS.append(n)
            return offset if n == 0 else f(n - 1) + 1

        return f

    assert outer(100)(5) == 105
    assert outer(200)(5) == 205  # another closure: its own entries
    assert outer(100)(5) == 105 and len(CALLS) == 12


def test_closure_contents_are_read_at_the_first_call(local_cache):
    # A closure variable assigned after the decoration (a cell still empty
    # then) still tells the definitions apart.
    def make(k):
        @local_cache
        def f(x):
            return x * m

        m = k
        return f

    assert make(2)(5) == 10 and make(3)(5) == 15


def test_closure_that_cannot_be_told_apart_is_not_cached(any_cache, caplog):
    cache = any_cache()
    ran = []

    def make(lock, strict=None):
        @cache(strict=strict)
        def g(x):
            ran.append(x)
            with lock:
                return x

        return g

    # Two closures over two locks cannot be told apart: neither is cached
    # (one warning), both return their own results.
    g1, g2 = make(threading.Lock()), make(threading.Lock())
    with caplog.at_level("WARNING", logger="picocache"):
        assert [g1(1), g1(1), g2(1)] == [1, 1, 1]
    assert ran == [1, 1, 1]
    assert g1.cache_info().hits == 0 and g1.cache_info().currsize == 0
    warned = [r.getMessage() for r in caplog.records if "closure whose variable 'lock'" in r.getMessage()]
    assert len(warned) == 2 and "name=" in warned[0]  # one per function
    # strict=True: a clear TypeError instead, before the body runs.
    with pytest.raises(TypeError, match=r"closure whose variable 'lock' holds an object of type lock.*name="):
        make(threading.Lock(), strict=True)(2)
    assert ran == [1, 1, 1]
    # name= says which functions share entries: cached.
    named = cache(name="tests.identity.g." + uuid.uuid4().hex)(make(threading.Lock()).__wrapped__)
    assert named(2) == 2 and named(2) == 2 and ran == [1, 1, 1, 2]


def test_a_lambda_argument_is_keyed_by_its_definition(local_cache):
    @local_cache
    def apply(fn, x):
        return fn(x)

    assert apply(lambda v: v + 1, 1) == 2
    assert apply(lambda v: v * 10, 1) == 10
    k = 5
    assert apply(lambda v: v + k, 1) == 6


# -- arguments compared by identity ----------------------------------------------------


class Plain:
    """No __eq__, no __reduce__: lru_cache keys two instances apart."""

    def __init__(self, x):
        self.x = x


def test_identity_compared_arguments_are_refused(any_cache):
    cache = any_cache()
    ran = []

    @cache
    def f(p):
        ran.append(p)
        return id(p)

    p1, p2 = Plain(1), Plain(1)
    with pytest.raises(TypeError, match=r"argument 'p' of .*compared by identity.*__picocache_key__"):
        f(p1)
    with pytest.raises(TypeError, match="compared by identity"):
        f([p2])  # nested too
    assert ran == []

    class Keyed(Plain):
        def __picocache_key__(self):
            return self.x

    assert f(Keyed(1)) == f(Keyed(1))  # the class says they are one key


# -- re-entrant calls -------------------------------------------------------------------


def _run_with_deadline(fn, seconds=20.0):
    """Runs fn in a thread; fails (instead of hanging the suite) if it does not end."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the call hung"
    return out


def test_reentrant_same_key_call_never_hangs(any_cache):
    cache = any_cache()
    state = {"depth": 0}

    @cache
    def once_more(x):
        # Calls itself with the same argument once, then answers.
        state["depth"] += 1
        if state["depth"] < 3:
            return once_more(x) + 1
        return x

    out = _run_with_deadline(lambda: once_more(10))
    assert out == {"value": 12}
    assert once_more(10) == 12  # stored once, by the outermost call

    @cache
    def forever(x):
        return forever(x)

    out = _run_with_deadline(lambda: forever(1))
    assert isinstance(out.get("error"), RecursionError)
    # The key was released: another thread is not left waiting.
    out = _run_with_deadline(lambda: once_more(10))
    assert out == {"value": 12}


def test_reentrant_same_key_async_call_never_hangs(any_cache):
    cache = any_cache()

    @cache
    async def forever(x):
        return await forever(x)

    out = _run_with_deadline(lambda: asyncio.run(forever(1)))
    assert isinstance(out.get("error"), RecursionError)


# -- keys of every int ------------------------------------------------------------------


def test_huge_ints_are_keys(any_cache):
    cache = any_cache()
    calls = []

    @cache
    def digits(n):
        calls.append(1)
        return n % 1000

    big = 10 ** 5000
    assert digits(big) == 0
    assert digits(big + 7) == 7
    assert digits(-big - 7) == (-big - 7) % 1000
    assert digits(big) == 0 and len(calls) == 3
    assert digits(2 ** 64) == (2 ** 64) % 1000 and digits(-(2 ** 64)) == -(2 ** 64) % 1000


def test_int_encoding_is_canonical():
    from picocache import _native

    seen = {}
    for n in [0, 1, -1, 2 ** 63 - 1, -(2 ** 63), 2 ** 63, -(2 ** 63) - 1, 2 ** 64, -(2 ** 64), 255, 256,
              -256, -257, 10 ** 5000, -(10 ** 5000), 10 ** 5000 + 1]:
        enc = _native.encode(n)
        assert enc not in seen, (n, seen.get(enc))
        seen[enc] = n
        assert _native.encode(n) == enc
    assert _native.encode(float(2 ** 70)) == _native.encode(2 ** 70)  # 2.0**70 == 2**70


# -- names -------------------------------------------------------------------------------


def test_name_ignores_docstring_and_line_numbers_but_not_code():
    src = '''
def f(x):
    """{doc}"""
{pad}
    return x + {n}
'''
    names = []
    for doc, pad, n in [("one", "", 1), ("two", "\n\n\n", 1), ("one", "", 2)]:
        ns: dict = {"__name__": "tests_identity_mod"}
        exec(compile(src.format(doc=doc, pad=pad, n=n), "<f>", "exec"), ns)
        names.append(pc.function_name(ns["f"]))
    assert names[0] == names[1] != names[2]
    assert names[0].startswith("tests_identity_mod.f#")
    assert pc.function_name(ns["f"], version=3) == "tests_identity_mod.f@3"


# -- across processes: scripts --------------------------------------------------------

CACHE_FOR = '''
import os
import sys
import picocache as pc

KIND, LOC = sys.argv[1], sys.argv[2]
OPTS = {"strict": True, "lease_timeout": float(os.environ.get("TEST_LEASE_TIMEOUT", "60"))}


def make_cache():
    if KIND == "local":
        return pc.LocalCache(LOC, **OPTS)
    if KIND == "sqlite":
        return pc.SQLiteCache(LOC, **OPTS)
    if KIND == "redis":
        url, prefix = LOC.split("|")
        return pc.RedisCache(url, namespace=prefix, **OPTS)
    url, table = LOC.split("|")
    return pc.SQLAlchemyCache(url, table_name=table, **OPTS)


cache = make_cache()
'''


def _location(kind, tmp_path):
    tag = uuid.uuid4().hex[:8]
    if kind == "local":
        return str(tmp_path / "store")
    if kind == "sqlite":
        return str(tmp_path / "c.db")
    if kind == "redis":
        return need("PICOCACHE_REDIS_URL", REDIS) + "|p" + tag
    if kind == "postgres":
        return sa_url(need("PICOCACHE_POSTGRES_URL", POSTGRES), "psycopg") + "|t_" + tag
    if kind == "mysql":
        return sa_url(need("PICOCACHE_MYSQL_URL", MYSQL), "pymysql") + "|t_" + tag
    raise ValueError(kind)


def _write(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CACHE_FOR + textwrap.dedent(body))
    return path


def _run(script, kind, loc, *extra, cwd=None, env=None):
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    r = subprocess.run([sys.executable, str(script), kind, loc, *extra], capture_output=True, text=True,
                       timeout=120, cwd=cwd or script.parent, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


SCRIPT_KINDS = ["local", "sqlite", "redis", "postgres", "mysql"]


@pytest.mark.parametrize("kind", SCRIPT_KINDS)
def test_two_scripts_with_one_file_name_never_share(kind, tmp_path):
    loc = _location(kind, tmp_path)
    body = '''
    import json

    @cache
    def convert(x):
        return x {op}

    print(json.dumps([convert(5), convert.cache_info().hits, convert(5), convert.cache_info().hits]))
    '''
    a = _write(tmp_path / "a" / "main.py", body.format(op="+ 1"))
    b = _write(tmp_path / "b" / "main.py", body.format(op="* 10"))
    assert _run(a, kind, loc) == [6, 0, 6, 1]
    assert _run(b, kind, loc) == [50, 0, 50, 1]
    assert _run(a, kind, loc) == [6, 1, 6, 2]  # the first script's entries are still its own
    # The same script run from another directory, by a relative path: one name.
    assert _run(a.relative_to(tmp_path), kind, loc, cwd=tmp_path) == [6, 1, 6, 2]


@pytest.mark.parametrize("kind", SCRIPT_KINDS)
def test_closures_and_lambdas_across_processes(kind, tmp_path):
    loc = _location(kind, tmp_path)
    script = _write(tmp_path / "names.py", '''
    import json

    def make_multiplier(k):
        @cache
        def mul(x):
            return x * k
        return mul

    double, triple = make_multiplier(2), make_multiplier(3)
    sq = cache(lambda x: x * x)
    cube = cache(lambda x: x ** 3)
    fs = [double, triple, sq, cube]
    print(json.dumps([[f(3) for f in fs], [f.cache_info().hits for f in fs]]))
    ''')
    assert _run(script, kind, loc) == [[6, 9, 9, 27], [0, 0, 0, 0]]
    assert _run(script, kind, loc) == [[6, 9, 9, 27], [1, 1, 1, 1]]


@pytest.mark.parametrize("kind", SCRIPT_KINDS)
def test_changed_body_never_serves_old_results(kind, tmp_path):
    loc = _location(kind, tmp_path)
    body = '''
    import json

    @cache{deco}
    def price(x):
        return x * {factor}

    print(json.dumps([price(10), price.cache_info().hits]))
    '''
    script = tmp_path / "app.py"
    _write(script, body.format(deco="", factor=2))
    assert _run(script, kind, loc) == [20, 0]
    assert _run(script, kind, loc) == [20, 1]
    _write(script, body.format(deco="", factor=3))
    assert _run(script, kind, loc) == [30, 0]
    # A comment, a docstring or moved lines change nothing.
    _write(script, body.format(deco="", factor="3  # tripled\n\n"))
    assert _run(script, kind, loc) == [30, 1]
    # version= pins the name: the entries survive an edit.
    _write(script, body.format(deco="(version=1)", factor=4))
    assert _run(script, kind, loc) == [40, 0]
    _write(script, body.format(deco="(version=1)", factor=5))
    assert _run(script, kind, loc) == [40, 1]


SPAWN_APP = '''
import json
import multiprocessing as mp
import os

LOG = sys.argv[3]


@cache
def work(x):
    with open(LOG, "a") as f:
        f.write(f"{{os.getpid()}} {{x}}\\n")
    return x * {mult}


def name_in_worker(_):
    return work.cache_parameters()["name"]


if __name__ == "__main__":
    first = [work(x) for x in range(4)]
    with mp.get_context("spawn").Pool(2) as pool:
        res = pool.map(work, range(8), chunksize=1)
        names = set(pool.map(name_in_worker, range(4), chunksize=1))
    print(json.dumps({{"first": first, "res": res, "names": sorted(names),
                      "name": work.cache_parameters()["name"], "pid": os.getpid()}}))
'''


@pytest.mark.parametrize("kind", SCRIPT_KINDS)
def test_spawn_workers_share_with_their_parent_only(kind, tmp_path):
    loc = _location(kind, tmp_path)
    outs = []
    for d, mult in (("one", 2), ("two", 3)):
        script = _write(tmp_path / d / "spawnapp.py", SPAWN_APP.format(mult=mult))
        log = tmp_path / d / "log"
        out = _run(script, kind, loc, str(log))
        assert out["first"] == [x * mult for x in range(4)]
        assert out["res"] == [x * mult for x in range(8)]
        assert out["names"] == [out["name"]], "the workers name the function as the parent does"
        computed = [line.split() for line in log.read_text().splitlines()]
        # The workers hit the parent's four entries and computed the rest once.
        assert sorted(int(x) for _, x in computed) == list(range(8))
        assert {int(x) for pid, x in computed if int(pid) == out["pid"]} == {0, 1, 2, 3}
        outs.append(out)
    assert outs[0]["name"] != outs[1]["name"]


def test_run_as_module_names_like_an_import(tmp_path):
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(textwrap.dedent('''
        import picocache as pc

        def f(x):
            return x

        if __name__ == "__main__":
            print(pc.function_name(f))
    '''))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path)] + [p for p in sys.path if p]))
    as_main = subprocess.run([sys.executable, "-m", "pkgx.mod"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, check=True).stdout.strip()
    imported = subprocess.run([sys.executable, "-c", "import picocache as pc, pkgx.mod as m; "
                               "print(pc.function_name(m.f))"], capture_output=True, text=True, env=env,
                              cwd=tmp_path, check=True).stdout.strip()
    assert as_main == imported and as_main.startswith("pkgx.mod.f#")


@pytest.mark.parametrize("kind", SCRIPT_KINDS)
def test_a_process_waiting_on_its_own_lease_does_not_hang(kind, tmp_path):
    # f(21) runs a second process that calls f(21) and waits for it: that
    # process finds the key leased by its waiting parent. It waits at most
    # lease_timeout (2 s here), then computes; nothing hangs.
    loc = _location(kind, tmp_path)
    script = _write(tmp_path / "leases.py", '''
    import json
    import subprocess

    @cache
    def f(x):
        if os.environ.get("DEPTH") == "1":
            return x * 2
        r = subprocess.run([sys.executable, __file__, KIND, LOC], capture_output=True, text=True,
                           env=dict(os.environ, DEPTH="1"), timeout=100, check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])[0] + 1

    print(json.dumps([f(21)]))
    ''')
    assert _run(script, kind, loc, env={"TEST_LEASE_TIMEOUT": "2"}) == [43]
    assert _run(script, kind, loc, env={"TEST_LEASE_TIMEOUT": "2"}) == [43]  # a hit


@pytest.mark.parametrize("kind", SCRIPT_KINDS)
def test_a_script_in_a_deep_directory_is_cached(kind, tmp_path):
    # Its name holds the script's path: a long one is shortened, not refused.
    loc = _location(kind, tmp_path)
    deep = tmp_path.joinpath(*(["d" * 60] * 5))
    body = '''
    import json

    @cache
    def f(x):
        return x + 1

    print(json.dumps([f(1), f.cache_info().hits, len(f.cache_parameters()["name"].encode())]))
    '''
    script = _write(deep / "app.py", body)
    first = _run(script, kind, loc)
    assert first[:2] == [2, 0] and first[2] <= 200
    assert _run(script, kind, loc)[:2] == [2, 1]
    other = _write(deep.parent / ("d" * 60 + "x") / "app.py", body)
    assert _run(other, kind, loc)[:2] == [2, 0]  # another path: its own entries


def test_local_classes_enums_and_dataclasses_as_keys(local_cache):
    import dataclasses
    import enum

    def make(n):
        @dataclasses.dataclass(frozen=True)
        class P:
            x: int

            def scaled(self):
                return self.x * n

        class Mode(enum.Enum):
            A = n

        return P, Mode

    @local_cache
    def use(p, mode):
        return p.scaled() + mode.value

    P1, M1 = make(1)
    P2, M2 = make(2)
    P1b, M1b = make(1)
    assert use(P1(10), M1.A) == 11
    assert use(P2(10), M2.A) == 22  # same names, other definitions: other keys
    assert use(P1b(10), M1b.A) == 11 and use.cache_info().hits == 1  # same definition: one key
