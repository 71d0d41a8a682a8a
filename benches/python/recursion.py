#!/usr/bin/env python3
"""Cold recursive fib(1000) on each backend, default options (issue 13:
"a cold fib(1000) ... takes about as long as on LocalCache times the round
trips").

    source /tmp/picocache-servers/env.sh       # tests/servers/start.sh
    python benches/python/recursion.py [depth] [runs]

fib(n) = fib(n-1) + fib(n-2), memoized, every level a miss (a fresh table,
prefix or directory per run), then fib(depth) again (a hit). Each backend is
run twice per round:

- direct: the wall time of the cold fib(depth) (best of `runs`), and per
  level (wall / (depth + 1));
- through a counting TCP proxy on loopback (tests/_faults.py SlowProxy with
  no delay): the server's answers that reached the client (recv chunks from
  the server side: about one per round trip for these small values), per
  level, and the most connections to the server established at once (the
  kernel's count at the proxy's port). The proxy's own latency makes that
  run slower; its time is not reported.

Prints Markdown tables."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "picocache", "python", "tests"))

import picocache as pc  # noqa: E402
from _faults import SlowProxy, host_port  # noqa: E402

DEPTH = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


class Counting(SlowProxy):
    """A pass-through proxy that counts the server's answers."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.answers = 0

    def _pump(self, src, dst, late: bool) -> None:
        if not late:
            return super()._pump(src, dst, late)
        while True:  # server -> client, no delay: count each chunk
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            self.answers += 1
            try:
                dst.sendall(data)
            except OSError:
                break


TMP = tempfile.mkdtemp(prefix="picocache-fib-")


def make(kind: str, url: str | None):
    name = "fib" + uuid.uuid4().hex[:10]
    if kind == "LocalCache":
        return pc.LocalCache(os.path.join(TMP, name))
    if kind == "SQLiteCache":
        return pc.SQLiteCache(os.path.join(TMP, name + ".db"), table_name="t_" + name)
    if kind == "RedisCache":
        return pc.RedisCache(url, namespace=name)
    return pc.SQLAlchemyCache(url, table_name="t_" + name)


def cold_fib(cache) -> tuple[float, float, int]:
    out = {}

    def run() -> None:
        @cache(name="bench.fib." + uuid.uuid4().hex[:8])
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        t0 = time.perf_counter()
        v = fib(DEPTH)
        out["cold"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert fib(DEPTH) == v
        out["hit"] = time.perf_counter() - t0
        out["v"] = v
        info = fib.cache_info()
        out["misses"] = info.misses

    sys.setrecursionlimit(100_000)
    threading.stack_size(256 << 20)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    a, b = 0, 1
    for _ in range(DEPTH):
        a, b = b, a + b
    assert out["v"] == a and out["misses"] == DEPTH + 1, out
    return out["cold"], out["hit"], out["misses"]


def main() -> None:
    backends = [("LocalCache", None), ("SQLiteCache", None)]
    for kind, var in [("RedisCache", "PICOCACHE_REDIS_URL"),
                      ("SQLAlchemyCache (postgresql URL)", "PICOCACHE_POSTGRES_URL"),
                      ("SQLAlchemyCache (mysql URL)", "PICOCACHE_MYSQL_URL")]:
        url = os.environ.get(var)
        if url:
            backends.append((kind, url))
        else:
            print(f"skipped {kind}: {var} is not set", file=sys.stderr)
    rows = []
    local = None
    for kind, url in backends:
        colds, hits = [], []
        for _ in range(RUNS):
            cold, hit, _ = cold_fib(make(kind, url))
            colds.append(cold)
            hits.append(hit)
        best = min(colds)
        if local is None:
            local = best
        answers = conns = None
        if url:
            proxy = Counting(*host_port(url))
            try:
                cache = make(kind, proxy.url_for(url))
                before = proxy.answers  # the opening's (schema, PING)
                cold_fib(cache)
                answers = proxy.answers - before
                conns = proxy.most
            finally:
                proxy.close()
        rows.append((kind, best, max(colds), best / (DEPTH + 1), best / local, min(hits), answers, conns))
    print(f"\ncold fib({DEPTH}), {RUNS} runs, default options (pool_size 8, timeouts 1 s), one thread, "
          f"load {os.getloadavg()[0]:.1f}\n")
    print("| backend | cold fib, best (worst) | per level | x LocalCache | fib again (hit) | "
          "server answers per level | most connections |")
    print("|---|---|---|---|---|---|---|")
    for kind, best, worst, per, ratio, hit, answers, conns in rows:
        a = f"{answers / (DEPTH + 1):.1f}" if answers is not None else "-"
        c = str(conns) if conns is not None else "-"
        print(f"| {kind} | {best:.3f} s ({worst:.3f} s) | {per * 1e6:.0f} us | {ratio:.1f} | "
              f"{hit * 1e6:.0f} us | {a} | {c} |")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
