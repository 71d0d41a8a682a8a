"""A LocalCache whose files another program truncates while it runs (issue 12,
from Python): a cut index is rebuilt from the log (every stored result is
still served, nothing recomputed), a cut segment turns the lost entries into
misses that compute again; never a wrong value, never a SIGBUS. The cache
runs in a child process, so a SIGBUS would show as its death."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import os, subprocess, sys, picocache
    store, victim, cut = sys.argv[1], sys.argv[2], sys.argv[3]
    cache = picocache.LocalCache(store, secret="cut-test")
    runs = []
    @cache(name="cut.blob")
    def blob(i):
        runs.append(i)
        return (i, "x" * 1000)
    N = 2000
    assert [blob(i) for i in range(N)] == [(i, "x" * 1000) for i in range(N)]
    assert len(runs) == N
    runs.clear()
    assert [blob(i) for i in range(N)] == [(i, "x" * 1000) for i in range(N)]
    assert runs == [], len(runs)
    files = sorted(os.listdir(store))
    path = os.path.join(store, "index" if victim == "index" else
                        [f for f in files if f.startswith("seg-")][0])
    before = os.path.getsize(path)
    subprocess.run(["truncate", "-s", cut, path], check=True)
    # Every call returns its own value, twice (the second time from the store).
    for _ in range(2):
        assert [blob(i) for i in range(N)] == [(i, "x" * 1000) for i in range(N)]
    # A second cache object on the store (no in-process values of its own).
    fresh = picocache.LocalCache(store, secret="cut-test")
    @fresh(name="cut.blob")
    def blob2(i):
        runs.append(i)
        return (i, "x" * 1000)
    runs.clear()
    for _ in range(2):
        assert [blob2(i) for i in range(N)] == [(i, "x" * 1000) for i in range(N)]
    print(f"CHILD OK: {victim} cut from {before} to {cut} bytes; "
          f"{len(runs)} of {N} calls recomputed")
""")


@pytest.mark.parametrize("victim,cut", [("index", "0"), ("index", "4096"), ("segment", "65536")])
def test_a_file_truncated_under_a_running_cache(tmp_path, victim, cut):
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "s"), victim, cut],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "CHILD OK" in r.stdout, (r.returncode, r.stdout, r.stderr)
    line = [ln for ln in r.stdout.splitlines() if "CHILD OK" in ln][0]
    print(line)
    recomputed = int(line.split("; ")[1].split(" of ")[0])
    if victim == "index":
        assert recomputed == 0, line  # rebuilt from the log: nothing lost
    else:
        assert 0 < recomputed < 2000, line  # only what the cut took
