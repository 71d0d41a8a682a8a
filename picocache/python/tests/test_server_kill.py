"""A server killed with SIGKILL and restarted while 4 processes call cached
functions (issue 13): every value returned is the function's, no call waits
longer than the configured bound, and caching resumes once the server is
back. Real servers (tests/servers/start.sh), a real SIGKILL of the server's
process, its own START command to bring it back. Each process runs 3 threads
on one cache object with ``pool_size=2``; a watcher samples the server's own
count of the workers' connections (Redis CLIENT LIST, PostgreSQL
pg_stat_activity of the test's database and user; told apart from other
clients by the workers' local ports; the watcher's connection not counted),
and the test asserts it never exceeds 4 x 2 and prints a FIGURE line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from _faults import figure, postgres_watcher, redis_watcher
from conftest import POSTGRES, REDIS, need, sa_url, uid

PROCESSES = 4
THREADS = 3  # per process, on one cache object: more than its pool
POOL = 2

WORKER = textwrap.dedent("""
    import json, sys, threading, time, picocache
    kind, url, name, seconds, threads, pool = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), \
        int(sys.argv[5]), int(sys.argv[6])
    opts = dict(timeout=0.5, connect_timeout=0.5, backoff=0.25, backoff_max=1.0, pool_size=pool)
    if kind == "redis":
        cache = picocache.RedisCache(url, namespace=name, **opts)
    else:
        cache = picocache.SQLAlchemyCache(url, table_name=name, **opts)
    runs = []
    @cache(name="kill.f")
    def f(i):
        runs.append(i)
        return ("value", i, i * i)
    outs = []
    def run(t):
        wrong, calls, longest = 0, 0, 0.0
        end = time.monotonic() + seconds
        i = t * 67
        while time.monotonic() < end:
            t0 = time.monotonic()
            v = f(i % 200)
            longest = max(longest, time.monotonic() - t0)
            calls += 1
            if v != ("value", i % 200, (i % 200) ** 2):
                wrong += 1
            i += 1
        outs.append((wrong, calls, longest))
    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"wrong": sum(o[0] for o in outs), "calls": sum(o[1] for o in outs),
                      "longest": max(o[2] for o in outs), "runs": len(runs)}))
""")


def _server_pid(kind: str) -> int:
    d = os.environ.get("PICOCACHE_SERVERS_DIR", "/tmp/picocache-servers")
    path = os.path.join(d, "redis", "redis.pid") if kind == "redis" else os.path.join(d, "pg", "postmaster.pid")
    with open(path) as f:
        return int(f.readline().strip())


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_sigkill_and_restart_under_four_processes(kind):
    if kind == "redis":
        url = need("PICOCACHE_REDIS_URL", REDIS)
    else:
        url = sa_url(need("PICOCACHE_POSTGRES_URL", POSTGRES), "psycopg")
    start = need(f"PICOCACHE_{kind.upper()}_START", os.environ.get(f"PICOCACHE_{kind.upper()}_START"))
    name = ("k" if kind == "redis" else "t_k") + uid()
    seconds = 9.0
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, kind, url, name, str(seconds), str(THREADS),
                                 str(POOL)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(PROCESSES)]
    pids = [w.pid for w in workers]
    # The server's own count of the workers' connections (CLIENT LIST or
    # pg_stat_activity, told apart by the workers' local ports), sampled on
    # a monitoring connection of its own that is not counted.
    watch = (redis_watcher(url, lambda: pids) if kind == "redis"
             else postgres_watcher(need("PICOCACHE_POSTGRES_URL", POSTGRES), lambda: pids))
    try:
        with watch:
            time.sleep(2.5)
            os.kill(_server_pid(kind), signal.SIGKILL)
            time.sleep(1.5)
            r = subprocess.run(["sh", "-c", start], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"restarting {kind} failed:\n{r.stdout}\n{r.stderr}"
            back = time.monotonic()
            outs = [w.communicate(timeout=120) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.communicate()
    results = []
    for out, err in outs:
        assert out.strip(), err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["wrong"] == 0 for r in results), results
    longest = max(r["longest"] for r in results)
    # The bound under test: a connect or an operation timeout (0.5 s) a try,
    # at most a few tries in one call, plus scheduling margin on 2 cores.
    assert longest < 4.0, f"{kind}: a call took {longest:.2f} s ({results})"
    bound = PROCESSES * POOL
    figure("sigkill-restart", kind, longest, watch.most, bound,
           f"{PROCESSES} processes x {THREADS} threads, pool_size={POOL}, timeouts 0.5 s, "
           f"{sum(x['calls'] for x in results)} calls, {watch.samples} samples of the server's count "
           f"({watch.failed} failed while it was down)")
    assert watch.samples > 50 and watch.most >= 1, (watch.samples, watch.most)
    assert watch.most <= bound, f"{kind}: the server saw {watch.most} connections of the workers"
    # Caching resumed: once the server is back, a new process stores and
    # hits within the back-off window (1 s) and a margin.
    probe = textwrap.dedent(f"""
        import sys, time, picocache
        opts = dict(timeout=0.5, connect_timeout=0.5, backoff=0.25, backoff_max=1.0)
        cache = (picocache.RedisCache({url!r}, namespace={name!r}, **opts) if {kind!r} == "redis"
                 else picocache.SQLAlchemyCache({url!r}, table_name={name!r}, **opts))
        runs = []
        @cache(name="kill.probe")
        def g(x):
            runs.append(x)
            return x
        t0 = time.monotonic()
        n = 0
        while True:
            k = "p%d" % n
            n += 1
            before = len(runs)
            g(k); g(k)
            if len(runs) - before == 1:  # computed once, then a hit: cached
                break
            if time.monotonic() - t0 > 15:
                sys.exit("caching did not resume")
            time.sleep(0.1)
        print(round(time.monotonic() - t0, 2))
    """)
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    print(f"{kind}: longest call {longest:.2f} s, calls {sum(x['calls'] for x in results)}, "
          f"caching resumed {r.stdout.strip()} s after the probe started "
          f"({time.monotonic() - back:.1f} s after the restart)")
