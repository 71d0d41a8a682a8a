"""What sealing costs a Python call (issue 11), side by side in one run.

    python3 benches/python/seal_cost.py OLD_PYTHON NEW_PYTHON [RUNS]

OLD_PYTHON and NEW_PYTHON are interpreters of two venvs with picocache
installed: one built before sealing (commit 1c2e518), one after. Each
workload runs in its own fresh subprocess, alternating old and new, RUNS
times (default 3); the table gives the median [min-max] in us per call.

A function of an int and a str, 20,000 distinct calls on a fresh cache:
- miss+store: the first round (lookup, run, pickle, seal, store);
- hit, immutable: the second round, returning 100 bytes: the Python package
  serves these from its in-process tier after a probe of the shared index,
  so no seal is checked again;
- hit, mutable: the same, returning a dict: unpickled from the store at
  every hit, so every hit checks the seal.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, tempfile
import picocache as pc
kind, result = sys.argv[1], sys.argv[2]
N = 20000
with tempfile.TemporaryDirectory() as d:
    if kind == "local":
        cache = pc.LocalCache(d + "/store")
    else:
        cache = pc.SQLiteCache(d + "/c.db")
    payload = b"x" * 100

    @cache(maxsize=None)
    def f(i, s):
        return payload if result == "bytes" else {"v": payload}

    args = [(i, f"key-{i}") for i in range(N)]
    t0 = time.perf_counter()
    for i, s in args:
        f(i, s)
    t1 = time.perf_counter()
    for i, s in args:
        f(i, s)
    t2 = time.perf_counter()
    print(json.dumps({"miss": (t1 - t0) / N * 1e6, "hit": (t2 - t1) / N * 1e6}))
"""


def run(python: str, kind: str, result: str) -> dict:
    with tempfile.TemporaryDirectory() as home:
        env = {"HOME": home, "PATH": "/usr/bin:/bin", "PICOCACHE_SECRET": "bench-secret"}
        out = subprocess.run([python, "-c", CHILD, kind, result], env=env, capture_output=True,
                             text=True, check=True)
    return json.loads(out.stdout)


def fmt(xs: list) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def main() -> None:
    old, new = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    rows = []
    for kind in ("local", "sqlite"):
        for result in ("bytes", "dict"):
            got: dict = {"old": {"miss": [], "hit": []}, "new": {"miss": [], "hit": []}}
            for _ in range(runs):
                for label, py in (("old", old), ("new", new)):
                    r = run(py, kind, result)
                    got[label]["miss"].append(r["miss"])
                    got[label]["hit"].append(r["hit"])
            what = "immutable (bytes)" if result == "bytes" else "mutable (dict)"
            rows.append((kind, what, got))
    print("| store | result | miss+store before | miss+store sealed | hit before | hit sealed |")
    print("|---|---|---|---|---|---|")
    for kind, what, g in rows:
        print(f"| {kind} | {what} | {fmt(g['old']['miss'])} | {fmt(g['new']['miss'])} | "
              f"{fmt(g['old']['hit'])} | {fmt(g['new']['hit'])} |")


if __name__ == "__main__":
    main()
