"""Remote caches cost a bounded delay whatever the server does (issue 13,
from Python): a server that accepts connections and never answers, one
that answers every statement just under the timeout, the constructor's
timeouts, and values too large to store."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import picocache as pc
from _faults import BlackHole, SlowProxy, figure
from _faults import host_port as _host_port
from conftest import MYSQL, POSTGRES, REDIS, need, uid


@pytest.fixture
def hole():
    h = BlackHole()
    yield h
    h.close()


HOLE_THREADS = 4
HOLE_POOL = 2


def _cache(kind: str, port: int):
    # Short back-off windows: the cache tries the black hole again and again
    # (a new connection each time), which is what the connection bound is
    # about.
    opts = {"timeout": 0.3, "connect_timeout": 0.3, "pool_size": HOLE_POOL, "backoff": 0.2,
            "backoff_max": 0.2}
    if kind == "redis":
        return pc.RedisCache(f"redis://127.0.0.1:{port}/0", namespace="bh" + uid(), **opts)
    scheme = {"postgres": "postgresql", "mysql": "mysql"}[kind]
    return pc.SQLAlchemyCache(f"{scheme}://u:p@127.0.0.1:{port}/db", table_name="t_" + uid(), **opts)


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql"])
def test_a_server_that_never_answers_costs_a_bounded_delay(kind, hole, caplog):
    """HOLE_THREADS threads call the functions of one cache object (pool of
    HOLE_POOL) for 3 s against a black hole: every call returns its own value
    within the bound, and the black hole itself never holds more connections
    at once than the pool allows."""
    cache = _cache(kind, hole.port)
    calls = []

    @cache
    def f(x):
        calls.append(x)
        return x * 2

    longest = [0.0]
    wrong = []
    n = [0]

    def run(t: int) -> None:
        end = time.monotonic() + 3.0
        i = t * 1_000_000
        while time.monotonic() < end:
            t0 = time.monotonic()
            if f(i) != i * 2:
                wrong.append(i)
            longest[0] = max(longest[0], time.monotonic() - t0)
            n[0] += 1
            i += 1
            time.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger="picocache"):
        threads = [threading.Thread(target=run, args=(t,)) for t in range(HOLE_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not wrong
    assert len(calls) == n[0]
    # The SQL clients (PostgreSQL and MySQL) run on worker threads
    # (sql/worker.rs): a connection that timed out is abandoned on its
    # thread, its socket still open until its blocked read ends (the server
    # answers late or closes it); it keeps its place in the pool until then,
    # so the endpoint never holds more than pool_size of them. Redis closes
    # a timed-out connection (socket timeouts).
    bound = HOLE_POOL
    # The README's per-call bound (connect_timeout + 6 x timeout on a
    # function's first call) plus a margin for 4 threads on 2 loaded cores.
    longest_bound = 0.3 + 6 * 0.3 + 1.5
    figure("black-hole", kind, longest[0], hole.most, bound,
           f"pool_size={HOLE_POOL}, {HOLE_THREADS} threads, {n[0]} calls, {hole.accepted} connections "
           f"accepted in all, timeouts 0.3 s, call bound {longest_bound:.1f} s")
    assert longest[0] < longest_bound, f"{kind}: a call took {longest[0]:.2f} s"
    assert 1 <= hole.most <= bound, (kind, hole.most)
    assert "unavailable" in caplog.text


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql"])
def test_a_server_that_stops_answering_mid_run_costs_a_bounded_delay_and_pool(kind, caplog):
    """The black hole after the store is open: a proxy to the real server
    stops passing answers (they would come an hour late) while
    HOLE_THREADS threads call (pool of HOLE_POOL, timeouts 0.3 s, back-off
    0.2 s: a probe, on a new connection, every 0.2 s) for 3 s. Every call
    returns its own value within the bound; the server side never sees more
    of this process's connections at once than the pool (abandoned ones
    on the SQL backends included)."""
    var, value = {
        "redis": ("PICOCACHE_REDIS_URL", REDIS),
        "postgres": ("PICOCACHE_POSTGRES_URL", POSTGRES),
        "mysql": ("PICOCACHE_MYSQL_URL", MYSQL),
    }[kind]
    url = need(var, value)
    proxy = SlowProxy(*_host_port(url))
    opts = {"timeout": 0.3, "connect_timeout": 0.3, "pool_size": HOLE_POOL, "backoff": 0.2,
            "backoff_max": 0.2}
    try:
        if kind == "redis":
            cache = pc.RedisCache(proxy.url_for(url), namespace="stop" + uid(), **opts)
        else:
            cache = pc.SQLAlchemyCache(proxy.url_for(url), table_name="stop_" + uid(), **opts)
        calls = []

        @cache
        def f(x):
            calls.append(x)
            return x * 2

        assert f(-1) == -2 and f(-1) == -2 and calls == [-1]  # open, stored, hit
        proxy.delay = 3600.0
        longest = [0.0]
        wrong = []
        n = [0]

        def run(t: int) -> None:
            end = time.monotonic() + 3.0
            i = t * 1_000_000
            while time.monotonic() < end:
                t0 = time.monotonic()
                if f(i) != i * 2:
                    wrong.append(i)
                longest[0] = max(longest[0], time.monotonic() - t0)
                n[0] += 1
                i += 1
                time.sleep(0.01)

        with caplog.at_level(logging.WARNING, logger="picocache"):
            threads = [threading.Thread(target=run, args=(t,)) for t in range(HOLE_THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not wrong
        bound = HOLE_POOL
        longest_bound = 0.3 + 5 * 0.3 + 1.5  # README: connect_timeout + 5 x timeout, + margin
        figure("stops-answering", kind, longest[0], proxy.most, bound,
               f"pool_size={HOLE_POOL}, {HOLE_THREADS} threads, {n[0]} calls, {proxy.accepted} connections "
               f"accepted in all, timeouts 0.3 s, back-off 0.2 s, call bound {longest_bound:.1f} s")
        assert longest[0] < longest_bound, f"{kind}: a call took {longest[0]:.2f} s"
        assert 1 <= proxy.most <= bound, (kind, proxy.most)
        assert "unavailable" in caplog.text
    finally:
        proxy.close()


def test_options_are_checked():
    with pytest.raises(ValueError):
        pc.RedisCache("redis://127.0.0.1:1/0", timeout=0)
    with pytest.raises(ValueError):
        pc.SQLAlchemyCache("postgresql://u@h/db", pool_size=0)


def test_a_value_too_large_is_reported_once_and_the_store_stays_usable(caplog):
    url = need("PICOCACHE_REDIS_URL", REDIS)
    cache = pc.RedisCache(url, namespace="big" + uid(), max_value_size=4096)
    calls = []

    @cache
    def f(n):
        calls.append(n)
        return b"x" * n

    with caplog.at_level(logging.WARNING, logger="picocache"):
        for _ in range(3):
            assert f(100_000) == b"x" * 100_000  # too large: computed each time
        assert f(10) == b"x" * 10 and f(10) == b"x" * 10  # small: cached
    assert calls == [100_000] * 3 + [10]
    too_large = [r for r in caplog.records if "too large" in r.getMessage()]
    assert len(too_large) == 1, caplog.text


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql"])
def test_answers_just_under_the_timeout_cost_a_call_a_bounded_delay(kind, caplog):
    """Every answer 0.8 x timeout late: each operation of a call ends within
    its timeout in total (not one timeout per statement), so a call that
    misses waits for the server at most connect_timeout + 5 x timeout (its
    function's first call, which opens the function's namespace, one
    timeout more), as the README's options table says."""
    var, value = {
        "redis": ("PICOCACHE_REDIS_URL", REDIS),
        "postgres": ("PICOCACHE_POSTGRES_URL", POSTGRES),
        "mysql": ("PICOCACHE_MYSQL_URL", MYSQL),
    }[kind]
    url = need(var, value)
    proxy = SlowProxy(*_host_port(url))
    timeout, margin = 1.0, 1.5
    pool = 2
    opts = {"timeout": timeout, "connect_timeout": timeout, "backoff": 0.3, "backoff_max": 0.3,
            "pool_size": pool}
    try:
        if kind == "redis":
            cache = pc.RedisCache(proxy.url_for(url), namespace="slow" + uid(), **opts)
        else:
            cache = pc.SQLAlchemyCache(proxy.url_for(url), table_name="slow_" + uid(), **opts)
        calls = []

        @cache
        def warm(x):
            calls.append(x)
            return x + 1

        assert warm(0) == 1 and warm(0) == 1, kind  # its namespace, on a fast link

        @cache
        def first(x):
            return x * 3

        proxy.delay = 0.8 * timeout
        took = {"miss": 0.0}
        wrong = []

        def miss(i: int) -> None:  # four threads at once on a pool of two
            t0 = time.monotonic()
            if warm(i) != i + 1:
                wrong.append(i)
            took["miss"] = max(took["miss"], time.monotonic() - t0)

        with caplog.at_level(logging.WARNING, logger="picocache"):
            threads = [threading.Thread(target=miss, args=(i,)) for i in range(1, 5)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(0.5)  # the back-off window, if the misses tripped it
            t0 = time.monotonic()
            assert first(1) == 3
            took["first call"] = time.monotonic() - t0
        assert not wrong
        print(f"{kind}: answers {proxy.delay:.1f} s late, timeout {timeout} s: {took}")
        # As for the black hole: the SQL backends' timed-out connections,
        # abandoned on their threads until the late answer comes, keep their
        # places in the pool; Redis closes them.
        bound = pool
        figure("slow-endpoint", kind, max(took.values()), proxy.most, bound,
               f"answers {proxy.delay:.1f} s late, timeout {timeout} s, pool_size={pool}, 4 threads, "
               f"{proxy.accepted} connections accepted in all; miss {took['miss']:.2f} s, "
               f"first call {took['first call']:.2f} s")
        # The misses run on 4 threads beside the proxy's own Python threads
        # (which time the late answers) on 2 cores: one more second of margin
        # (measured: up to 6.3 s on Redis against the README's 6 s).
        assert took["miss"] < timeout + 5 * timeout + margin + 1.0, (kind, took)
        assert took["first call"] < timeout + 6 * timeout + margin, (kind, took)
        assert 1 <= proxy.most <= bound, (kind, proxy.most)
    finally:
        proxy.close()


def test_first_calls_of_many_threads_on_a_black_hole_cost_one_bounded_delay(hole):
    """16 threads make their function's first call at once against a black
    hole (Redis URL): each must return within the README's per-call bound
    (connect_timeout + 6 x timeout) plus the margin. Before the fix (threads
    waiting for the function's open lock each tried the store in turn):
    the n-th thread waited about n x 0.63 s (10.2 s for the 16th). The same
    happened on PostgreSQL (n x 0.26 s), but there new connections fail at
    once after 16 abandoned ones (sql/worker.rs MAX_STUCK): 4.2 s at most
    with these timeouts, too close to the bound to fail reliably."""
    kind = "redis"
    cache = _cache(kind, hole.port)

    @cache
    def f(x):
        return x * 2

    took = []
    n = 16

    def first(i: int) -> None:
        t0 = time.monotonic()
        assert f(i) == i * 2
        took.append(time.monotonic() - t0)

    threads = [threading.Thread(target=first, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bound = 0.3 + 6 * 0.3 + 1.5
    print(f"\n{kind}: first calls of {n} threads on a black hole: longest {max(took):.2f} s "
          f"(bound {bound:.1f} s), {hole.accepted} connections accepted")
    assert len(took) == n
    assert max(took) < bound, sorted(round(t, 2) for t in took)
