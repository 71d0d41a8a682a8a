#!/usr/bin/env python3
"""Batch jobs of arrays (issue 18): PicoCache ``LocalCache`` against
``joblib.Memory`` (its home ground) and diskcache (``Cache.memoize``), in one
run. One command, from the repository root, in the environment the tests
use (peers: ``benches/python/requirements-arrays.txt``)::

    .venv/bin/pip install -r benches/python/requirements-arrays.txt
    .venv/bin/python benches/python/arrays.py

Workloads (``PICOCACHE_ARRAY_MB``, default 100: a float64 array of that many
MB, random, argument of ``plus_one(a) = a + 1``, whose result has the same
size):

- ``key``: turning the argument into the cache's key (picocache: the key
  encoder with the array's BLAKE3 content digest; joblib: ``joblib.hash``
  of the arguments, what ``Memory`` does per call; diskcache: pickling the
  key tuple, what ``memoize`` does per call), and beside it the bandwidth
  of a plain numpy copy of the same array (``a.copy()``, and ``np.copyto``
  into an array already touched);
- ``miss+store``: the first call on a fresh cache, and its overhead over the
  body (the body alone is timed apart);
- ``hit``: a call on a warm cache in the same process, the result copied
  (joblib's default, picocache's default) or mapped/read-only (joblib
  ``mmap_mode="r"``, picocache ``mmap_mode="r"``: a read-only result
  without the second copy, never a map of the store; FORMAT.md);
- ``shared``: 4 processes on one fresh cache, each calling ``plus_one`` on
  the same 4 arrays in the same order, released together once all have made
  their arrays: wall time from the release to the last result, body runs in
  total, wrong results;
- ``map``: a function of small arguments (an int, returning a short str)
  on 100,000 inputs (``PICOCACHE_ARRAY_MAP_N``): picocache through
  ``f.map``, the peers (no batch API) in a loop; misses on a fresh cache,
  then hits. joblib is timed on 2,000 inputs and diskcache on 20,000, per
  call.

Each timed figure is the median of ``PICOCACHE_ARRAY_REPEAT`` runs (default
5; [min-max] beside it), every contender in its own process. Temporary
stores live under ``$TMPDIR``. Every run that writes starts with ``os.sync()``
(not timed): 100 MB writes otherwise run into the kernel's throttling of
the dirty pages earlier runs left, and whoever runs second pays for the
first.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MB = int(os.environ.get("PICOCACHE_ARRAY_MB", "100"))
REPEAT = int(os.environ.get("PICOCACHE_ARRAY_REPEAT", "5"))
MAP_N = int(os.environ.get("PICOCACHE_ARRAY_MAP_N", "100000"))
SLOW_MAP_N = {"joblib": 2000, "diskcache": 20000}
PROCS = 4
SHARED_ARRAYS = 4
CONTENDERS = ["picocache", "joblib", "diskcache"]


def array(seed: int):
    import numpy as np
    return np.random.default_rng(seed).random(MB * 1_000_000 // 8)


def plus_one(a):
    """The array function under test."""
    path = os.environ.get("PICOCACHE_ARRAY_COUNTER")
    if path:
        with open(path, "ab") as f:
            f.write(b"x")
    return a + 1.0


def label(i: int) -> str:
    """The small-argument function under test."""
    return f"item-{i:08d}"


def make(name: str, d: str, fn, mapped: bool = False):
    if name == "picocache":
        import picocache
        return picocache.LocalCache(os.path.join(d, "local"))(mmap_mode="r" if mapped else None)(fn)
    if name == "joblib":
        import joblib
        return joblib.Memory(os.path.join(d, "joblib"), verbose=0,
                             mmap_mode="r" if mapped else None).cache(fn)
    if name == "diskcache":
        if mapped:
            return None
        import diskcache
        return diskcache.Cache(os.path.join(d, "diskcache"), size_limit=1 << 40).memoize()(fn)
    raise ValueError(name)


def timed(f, *a):
    t = time.perf_counter()
    r = f(*a)
    return time.perf_counter() - t, r


def stat(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def key_fn(name: str, d: str):
    f = make(name, d, plus_one)
    if name == "picocache":
        ns = f.__picocache_state__.namespace()
        return lambda a: ns.key((a,), None)
    if name == "joblib":
        import joblib
        return lambda a: joblib.hash(([a], {}))
    import diskcache
    c = diskcache.Cache(os.path.join(d, "diskcache-key"))
    return lambda a: c._disk.put(f.__cache_key__(a))


def child(name: str, d: str) -> dict:
    import numpy as np
    a = array(0)
    out: dict = {}
    # key cost, and a plain numpy copy of the same array
    kf = key_fn(name, d)
    out["key"] = stat([timed(kf, a)[0] for _ in range(REPEAT)])
    if name == "picocache":
        out["copy"] = stat([timed(a.copy)[0] for _ in range(REPEAT)])
        dst = np.empty_like(a)
        np.copyto(dst, a)
        out["copyto"] = stat([timed(np.copyto, dst, a)[0] for _ in range(REPEAT)])
    # the body alone
    out["body"] = stat([timed(plus_one, a)[0] for _ in range(REPEAT)])
    # miss+store on a fresh cache, then hits
    miss, hit = [], []
    expect = a + 1.0
    for r in range(REPEAT):
        f = make(name, os.path.join(d, f"miss{r}"), plus_one)
        os.sync()  # no dirty pages of earlier runs to throttle this one's writes
        t, v = timed(f, a)
        miss.append(t)
        assert np.array_equal(v, expect)
    f = make(name, os.path.join(d, "miss0"), plus_one)
    for _ in range(REPEAT):
        t, v = timed(f, a)
        hit.append(t)
    assert np.array_equal(v, expect)
    out["miss"], out["hit"] = stat(miss), stat(hit)
    g = make(name, os.path.join(d, "miss0"), plus_one, mapped=True)
    if g is not None:
        g(a)
        mh = []
        for _ in range(REPEAT):
            t, v = timed(g, a)
            mh.append(t)
        assert np.array_equal(v, expect)
        out["hit_mapped"] = stat(mh)
        out["hit_mapped_writeable"] = bool(getattr(v, "flags").writeable)
    return out


def map_child(name: str, d: str) -> dict:
    n = MAP_N if name == "picocache" else min(MAP_N, SLOW_MAP_N[name])
    xs = list(range(n))
    f = make(name, d, label)
    os.sync()
    t0 = time.perf_counter()
    got = f.map(xs) if name == "picocache" else [f(x) for x in xs]
    miss = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = f.map(xs) if name == "picocache" else [f(x) for x in xs]
    hit = time.perf_counter() - t0
    assert got == again == [label(x) for x in xs]
    return {"n": n, "miss_us": miss / n * 1e6, "hit_us": hit / n * 1e6,
            "miss_total_s": miss, "hit_total_s": hit}


def shared_worker(name: str, d: str, go: str) -> None:
    import numpy as np
    arrays = [array(i) for i in range(SHARED_ARRAYS)]
    f = make(name, d, plus_one)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    with open(go) as fh:
        start = float(fh.read())
    while time.time() < start:
        time.sleep(0.0005)
    bad = 0
    for a in arrays:
        v = f(a)
        bad += not np.array_equal(v[::997], a[::997] + 1.0)
    print(json.dumps({"end": time.time(), "bad": bad}))


def shared(name: str, root: str) -> dict:
    d = tempfile.mkdtemp(dir=root)
    counter = os.path.join(d, "counter")
    env = {**os.environ, "PICOCACHE_ARRAY_COUNTER": counter}
    go = os.path.join(d, "go")
    procs = [subprocess.Popen([sys.executable, __file__, "--shared-worker", name, d, go],
                              stdout=subprocess.PIPE, env=env, text=True) for _ in range(PROCS)]
    for p in procs:  # every worker has made its arrays
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    os.sync()
    start = time.time() + 0.2
    with open(go + ".tmp", "w") as fh:
        fh.write(repr(start))
    os.rename(go + ".tmp", go)
    outs = [json.loads(p.communicate()[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    runs = os.path.getsize(counter) if os.path.exists(counter) else 0
    return {"wall": max(o["end"] for o in outs) - start, "bad": sum(o["bad"] for o in outs),
            "body_runs": runs}


def run_child(args: list) -> dict:
    p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{args}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def fmt(s: dict, unit: float = 1e3) -> str:
    return f"{s['median'] * unit:.1f} [{s['min'] * unit:.1f}-{s['max'] * unit:.1f}]"


def verdict(ours: float, theirs: float, goal: float = 5.0) -> str:
    x = theirs / ours
    return f"{x:.1f}x" + ("" if x >= goal else " **MISSED**")


def report(res: dict) -> None:
    p, j, dc = res["picocache"], res["joblib"], res["diskcache"]
    nbytes = MB * 1_000_000
    print(f"\n### {MB} MB float64 array: ms per call, median [min-max] of {REPEAT}\n")
    print("| workload | PicoCache | joblib.Memory | diskcache | vs joblib (goal 5x) |")
    print("|---|---|---|---|---|")
    print(f"| key of the argument | {fmt(p['key'])} | {fmt(j['key'])} | {fmt(dc['key'])} | "
          f"{verdict(p['key']['median'], j['key']['median'])} |")
    print(f"| body alone (`a + 1`) | {fmt(p['body'])} | {fmt(j['body'])} | {fmt(dc['body'])} | |")
    print(f"| miss+store (call) | {fmt(p['miss'])} | {fmt(j['miss'])} | {fmt(dc['miss'])} | "
          f"{verdict(p['miss']['median'], j['miss']['median'])} |")
    ov = {k: max(1e-9, v["miss"]["median"] - v["body"]["median"]) for k, v in res.items()
          if k in ("picocache", "joblib", "diskcache")}
    print(f"| miss+store overhead (call - body) | {ov['picocache'] * 1e3:.1f} | {ov['joblib'] * 1e3:.1f} | "
          f"{ov['diskcache'] * 1e3:.1f} | {verdict(ov['picocache'], ov['joblib'])} |")
    print(f"| hit, result copied | {fmt(p['hit'])} | {fmt(j['hit'])} | {fmt(dc['hit'])} | "
          f"{verdict(p['hit']['median'], j['hit']['median'])} |")
    print(f"| hit, `mmap_mode=\"r\"` | {fmt(p['hit_mapped'])} (read-only copy) | {fmt(j['hit_mapped'])} "
          f"(memmap) | - | {verdict(p['hit_mapped']['median'], j['hit_mapped']['median'])} |")
    sp, sj, sd = res["shared"]["picocache"], res["shared"]["joblib"], res["shared"]["diskcache"]
    print(f"| {PROCS} processes x {SHARED_ARRAYS} arrays, one fresh cache: wall ms (body runs, wrong) | "
          f"{sp['wall'] * 1e3:.0f} ({sp['body_runs']}, {sp['bad']}) | {sj['wall'] * 1e3:.0f} "
          f"({sj['body_runs']}, {sj['bad']}) | {sd['wall'] * 1e3:.0f} ({sd['body_runs']}, {sd['bad']}) | "
          f"{verdict(sp['wall'], sj['wall'])} |")
    mp, mj, md = res["map"]["picocache"], res["map"]["joblib"], res["map"]["diskcache"]
    print(f"\n### A function of small arguments on {MAP_N:,} inputs: us per input "
          f"(PicoCache through `f.map`; peers in a loop, joblib timed on {mj['n']:,}, diskcache "
          f"on {md['n']:,})\n")
    print("| workload | PicoCache `f.map` | joblib.Memory | diskcache | vs joblib (goal 5x) |")
    print("|---|---|---|---|---|")
    for k, what in (("miss_us", "misses, fresh cache"), ("hit_us", "hits")):
        print(f"| {what} | {mp[k]:.2f} | {mj[k]:.1f} | {md[k]:.2f} | {verdict(mp[k], mj[k])} |")
    copy, copyto, key = p["copy"]["median"], p["copyto"]["median"], p["key"]["median"]
    print(f"\n### Hashing vs memory bandwidth ({MB} MB)\n")
    print("| | ms | GB/s |")
    print("|---|---|---|")
    for what, t in (("PicoCache key of the array (BLAKE3 content digest)", key),
                    ("numpy `a.copy()`", copy), ("numpy `np.copyto` into a touched array", copyto),
                    ("joblib.hash", j["key"]["median"])):
        print(f"| {what} | {t * 1e3:.1f} | {nbytes / t / 1e9:.2f} |")
    ratio = key / copy
    print(f"\nkey / `a.copy()` = {ratio:.2f} (goal <= 2){'' if ratio <= 2 else ' **MISSED**'}; "
          f"key / `np.copyto` = {key / copyto:.2f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--map-child":
        print(json.dumps(map_child(sys.argv[2], sys.argv[3])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--shared-worker":
        shared_worker(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    import numpy
    import joblib
    import diskcache
    import picocache
    print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, joblib {joblib.__version__}, "
          f"diskcache {diskcache.__version__}, picocache {getattr(picocache, '__version__', '?')}; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    res: dict = {"shared": {}, "map": {}}
    with tempfile.TemporaryDirectory() as root:
        for name in CONTENDERS:
            res[name] = run_child(["--child", name, tempfile.mkdtemp(dir=root)])
            print(name, "arrays done", flush=True)
            res["map"][name] = run_child(["--map-child", name, tempfile.mkdtemp(dir=root)])
            print(name, "map done", flush=True)
            res["shared"][name] = shared(name, root)
            print(name, "shared done", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    report(res)
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
