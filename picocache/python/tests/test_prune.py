"""Namespaces old code left behind leave a local store (issue 10):
``LocalCache.prune`` and ``python -m picocache stats|prune``, for users who
installed the wheel (which does not ship the Rust ``picocache`` tool).

The engine's test clock (``Options::last_use_clock``) is a Rust test hook the
wheel does not build, so a namespace is aged here by waiting: a store with
three namespaces is filled, then nothing touches them for AGE seconds; the two
that must stay are then used again (a put raises a namespace's last use to
now; a lookup refreshes it only once it is a minute old, FORMAT.md "Last
use") just before each prune, which removes what is unused for UNUSED_FOR
seconds. Last use is kept in whole seconds, and a namespace is unused for N
seconds when its last use is more than N seconds before now: the old one's
is at least AGE - 1 > UNUSED_FOR + 1 seconds old, the used ones' at most
UNUSED_FOR seconds (3 s of slack for a slow subprocess) unless a step takes
that long."""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
import types
from collections import Counter

import pytest

import picocache
from picocache import _native

UNUSED_FOR = 3  # seconds
AGE = UNUSED_FOR + 1.2  # how long the old namespace is left alone
NAMES = ("prunetest.old", "prunetest.kept1", "prunetest.kept2")

CALLS: Counter = Counter()


def _old(x):
    CALLS["old", x] += 1
    return ("old", x)


def _kept1(x):
    CALLS["kept1", x] += 1
    return ("kept1", x)


def _kept2(x):
    CALLS["kept2", x] += 1
    return ("kept2", x)


def _store(path):
    """A store at `path` with the three namespaces, two entries each."""
    cache = picocache.LocalCache(str(path))
    fns = [cache(name=n)(f) for n, f in zip(NAMES, (_old, _kept1, _kept2))]
    for f in fns:
        f(1), f(2)
    return types.SimpleNamespace(path=str(path), cache=cache, old=fns[0], kept=fns[1:], fresh=[100])


def touch_kept(s):
    """Uses the two namespaces that must stay: a put each (a new key)."""
    s.fresh[0] += 1
    for f in s.kept:
        f(s.fresh[0])


@pytest.fixture(scope="module")
def aged(tmp_path_factory):
    """Two stores (one for the API, one for the command), each with three
    namespaces last used AGE seconds ago (one wait for both)."""
    base = tmp_path_factory.mktemp("prune")
    stores = types.SimpleNamespace(api=_store(base / "api"), cli=_store(base / "cli"))
    t = time.monotonic()
    time.sleep(AGE)
    print(f"aged the stores' namespaces {time.monotonic() - t:.2f} s (unused_for {UNUSED_FOR} s)")
    return stores


def names(path):
    """Namespace -> entries, read without using the store."""
    return {n["name"]: n["entries"] for n in _native.inspect_local(path)["namespaces"]}


def run_cli(*args, cwd=None):
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "picocache", *args], capture_output=True, text=True,
                       timeout=60, cwd=cwd)
    print(f"python -m picocache {' '.join(args)}: exit {r.returncode} in {time.monotonic() - t:.2f} s\n"
          f"{r.stdout}{r.stderr}")
    return r


def test_prune_lists_then_removes_exactly_the_unused_namespace(aged):
    s = aged.api
    assert names(s.path) == {n: 2 for n in NAMES}

    touch_kept(s)
    listed = s.cache.prune(UNUSED_FOR, dry_run=True)
    assert [n["name"] for n in listed] == ["prunetest.old"]
    (old,) = listed
    assert old["entries"] == 2 and old["bytes"] > 0
    assert isinstance(old["last_used"], int) and old["last_used"] <= time.time() - UNUSED_FOR
    # A dry run removes nothing.
    assert names(s.path) == {n: 2 if n == "prunetest.old" else 3 for n in NAMES}

    touch_kept(s)
    removed = s.cache.prune(datetime.timedelta(seconds=UNUSED_FOR))
    assert [(n["name"], n["entries"]) for n in removed] == [("prunetest.old", 2)]
    assert names(s.path) == {"prunetest.kept1": 4, "prunetest.kept2": 4}
    assert "prunetest.old" not in s.cache.namespace_names()
    assert s.cache.prune(UNUSED_FOR) == []

    # Its entries are gone: the function computes again (and its namespace
    # is back, in use); the other namespaces' entries still hit.
    before = CALLS.copy()
    assert s.old(1) == ("old", 1) and s.old(2) == ("old", 2)
    assert CALLS["old", 1] == before["old", 1] + 1 and CALLS["old", 2] == before["old", 2] + 1
    for f, tag in zip(s.kept, ("kept1", "kept2")):
        assert f(1) == (tag, 1) and f(2) == (tag, 2)
        assert CALLS[tag, 1] == before[tag, 1] and CALLS[tag, 2] == before[tag, 2]
    assert names(s.path)["prunetest.old"] == 2
    assert s.cache.prune(UNUSED_FOR, dry_run=True) == []


def test_the_command_shows_last_use_and_prunes(aged, tmp_path):
    s = aged.cli
    touch_kept(s)
    r = run_cli("stats", s.path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"store      {s.path}\n")
    assert "entries    8 in 3 namespace(s)" in r.stdout
    # Columns are two or more spaces apart (`176 B`, `LAST USED` have one).
    table = [re.split(r"\s{2,}", line) for line in r.stdout.splitlines()[5:]]
    assert table[0] == ["NAMESPACE", "ENTRIES", "BYTES", "HITS", "MISSES", "EVICTIONS", "REJECTED", "MAXSIZE",
                        "TTL", "LAST USED"]
    rows = {row[0]: dict(zip(table[0], row)) for row in table[1:]}
    assert set(rows) == set(NAMES)
    age = {n: int(re.fullmatch(r"(\d+)s", row["LAST USED"]).group(1)) for n, row in rows.items()}
    assert age["prunetest.old"] > UNUSED_FOR
    assert age["prunetest.kept1"] <= UNUSED_FOR and age["prunetest.kept2"] <= UNUSED_FOR
    assert [rows["prunetest.old"][c] for c in ("ENTRIES", "HITS", "MISSES", "MAXSIZE", "TTL")] == \
        ["2", "0", "2", "-", "-"]
    assert re.fullmatch(r"\d+ B", rows["prunetest.old"]["BYTES"])
    assert [rows["prunetest.kept1"][c] for c in ("ENTRIES", "HITS", "MISSES")] == ["3", "0", "3"]

    touch_kept(s)
    r = run_cli("prune", s.path, "--unused-for", f"{UNUSED_FOR}s", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"would remove prunetest\.old: 2 entries, \d+ B, last used \d+s ago",
                                            lines[0]), lines
    # `stats` and a dry run are not uses, and remove nothing.
    assert names(s.path) == {"prunetest.old": 2, "prunetest.kept1": 4, "prunetest.kept2": 4}

    touch_kept(s)
    r = run_cli("prune", s.path, "--unused-for", f"{UNUSED_FOR}s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"removed prunetest\.old: 2 entries, \d+ B, last used \d+s ago", lines[0]), lines
    assert lines[1:] == [f"1 namespace(s) unused for {UNUSED_FOR}s removed; the store's compaction reclaims "
                         f"their space"]
    assert names(s.path) == {"prunetest.kept1": 5, "prunetest.kept2": 5}
    # This process's handles see the other process's removal: the old
    # function computes again, the others still hit.
    before = CALLS.copy()
    assert s.old(1) == ("old", 1) and CALLS["old", 1] == before["old", 1] + 1
    assert s.kept[0](1) == ("kept1", 1) and CALLS["kept1", 1] == before["kept1", 1]
    assert names(s.path) == {"prunetest.old": 1, "prunetest.kept1": 5, "prunetest.kept2": 5}

    r = run_cli("--json", "prune", s.path, "--unused-for", "1h", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"path": s.path, "unused_for_secs": 3600, "dry_run": False, "removed": []}
    r = run_cli("prune", s.path, "--unused-for", "30d", cwd=tmp_path)
    assert r.stdout == f"no namespace of {s.path} unused for 30d\n"

    r = run_cli("stats", s.path, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["path"] == s.path and doc["entries"] == 11
    got = {n["name"]: n for n in doc["namespaces"]}
    assert set(got) == set(NAMES)
    k = got["prunetest.kept1"]
    assert (k["entries"], k["hits"], k["misses"], k["maxsize"], k["ttl_ms"]) == (5, 1, 5, None, None)
    assert abs(k["last_used"] - time.time()) <= UNUSED_FOR + 1


@pytest.mark.parametrize("bad", [0, -1, -0.5, 0.0, math.nan, math.inf, -math.inf, datetime.timedelta(0),
                                 datetime.timedelta(seconds=-5), -10**400])
def test_prune_refuses_a_duration_that_is_not_positive(tmp_path, bad):
    cache = picocache.LocalCache(str(tmp_path / "s"))
    with pytest.raises(ValueError):
        cache.prune(bad)
    with pytest.raises(ValueError):
        cache.prune(bad, dry_run=True)


@pytest.mark.parametrize("bad", [True, "30d", None])
def test_prune_refuses_what_is_not_a_duration(tmp_path, bad):
    with pytest.raises(TypeError):
        picocache.LocalCache(str(tmp_path / "s")).prune(bad)


def test_the_native_side_refuses_bad_durations_and_other_backends(tmp_path):
    store = picocache.LocalCache(str(tmp_path / "s")).store
    for bad in (0.0, -1.0, math.nan, math.inf, 1e300):
        with pytest.raises(_native.CacheInvalidArgument):
            store.prune_unused(bad)
    sql = picocache.SQLiteCache(str(tmp_path / "db.sqlite")).store
    with pytest.raises(_native.CacheInvalidArgument, match="local store"):
        sql.prune_unused(60.0)


def test_a_duration_longer_than_anything_removes_nothing(tmp_path):
    cache = picocache.LocalCache(str(tmp_path / "s"))
    cache(name="prunetest.long")(_old)(1)
    for long in (10**400, 1e300, datetime.timedelta.max, 2**64):
        assert cache.prune(long) == [] and cache.prune(long, dry_run=True) == []
    r = run_cli("prune", str(tmp_path / "s"), "--unused-for", "18446744073709551615s", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"no namespace of {tmp_path / 's'} unused for 18446744073709551615s\n"
    assert names(str(tmp_path / "s")) == {"prunetest.long": 1}


def test_a_fraction_of_a_second_counts_as_a_whole_second(tmp_path):
    cache = picocache.LocalCache(str(tmp_path / "s"))
    cache(name="prunetest.frac")(_old)(1)
    # Rounded up to 1 s: a namespace used this second is never unused for it.
    assert cache.prune(0.001) == []
    assert names(str(tmp_path / "s")) == {"prunetest.frac": 1}


@pytest.mark.parametrize("text,seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("3600s", 3600),
                                          ("2w", 14 * 86400), (" 5s ", 5)])
def test_durations_are_read_as_the_rust_tool_reads_them(text, seconds):
    from picocache.__main__ import duration_text, parse_duration

    assert parse_duration(text) == seconds
    assert parse_duration(duration_text(seconds)) == seconds


@pytest.mark.parametrize("text,message", [
    ("30", '"30" needs a unit: s, m, h, d or w (e.g. 30d)'),
    ("30x", '"30x": unknown unit "x" (use s, m, h, d or w, e.g. 30d)'),
    ("-1d", '"-1d" is not a duration such as 30d, 12h, 90m or 3600s'),
    ("d", '"d" is not a duration such as 30d, 12h, 90m or 3600s'),
    ("0d", '"0d": the duration must be longer than 0'),
    ("1.5d", '"1.5d": unknown unit ".5d"'),
    ("99999999999999999999w", '"99999999999999999999w" is not a duration such as 30d'),
    ("300000000000000d", '"300000000000000d" is too long'),
])
def test_a_bad_duration_exits_2_with_a_message(tmp_path, capsys, text, message):
    from picocache.__main__ import main

    picocache.LocalCache(str(tmp_path / "s"))
    with pytest.raises(SystemExit) as e:
        main(["prune", str(tmp_path / "s"), f"--unused-for={text}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    print(err)
    assert "argument --unused-for:" in err and message in err


def test_a_bad_duration_exits_2_from_a_shell(tmp_path):
    picocache.LocalCache(str(tmp_path / "s"))
    r = run_cli("prune", str(tmp_path / "s"), "--unused-for", "30", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert 'error: argument --unused-for: "30" needs a unit' in r.stderr
    r = run_cli("prune", str(tmp_path / "s"), cwd=tmp_path)
    assert r.returncode == 2 and "--unused-for" in r.stderr


def test_no_store_is_an_error_and_creates_nothing(tmp_path):
    missing = str(tmp_path / "missing")
    for args in (["stats", missing], ["prune", missing, "--unused-for", "30d"]):
        r = run_cli(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == f"picocache: error: invalid argument: no PicoCache store at {missing}\n"
    assert not os.path.exists(missing)


def test_import_picocache_loads_neither_the_command_nor_argparse():
    code = "import sys, picocache; print('argparse' in sys.modules, 'picocache.__main__' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_the_readme_names_a_command_a_wheel_installs(tmp_path):
    """The README's instruction runs as written (no `picocache` binary needed)."""
    readme = os.path.join(os.path.dirname(__file__), "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = " ".join(f.read().split())
    assert "`python -m picocache prune DIR --unused-for 30d`" in text
    assert not re.search(r"(?<!-m )`picocache (prune|stats)", text), "a command the wheel does not install"
    store = str(tmp_path / "s")
    picocache.LocalCache(store)(name="prunetest.readme")(_old)(1)
    r = run_cli(*"python -m picocache prune DIR --unused-for 30d".replace("DIR", store).split()[3:], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"no namespace of {store} unused for 30d\n"
    r = run_cli("stats", store, cwd=tmp_path)
    assert r.returncode == 0 and "prunetest.readme" in r.stdout


def test_sizes_ages_and_ttls_print_as_the_rust_tool_prints_them():
    from picocache.__main__ import _ttl, age, human_bytes

    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 2**20)] == ["0 B", "1023 B", "1.5 KiB", "5.0 MiB"]
    assert [age(t, 1000_000) for t in (None, 1000_000, 999_955, 999_280, 982_000, 740_800)] == \
        ["unknown", "0s", "45s", "12m", "5h", "3d"]
    assert [_ttl(v) for v in (None, 60.0, 1.5, 0.5, 0.0015, 86400.0)] == ["-", "60s", "1.5s", "500ms", "1.5ms",
                                                                          "86400s"]
