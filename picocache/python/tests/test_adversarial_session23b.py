"""Adversarial tests of session 23 (second round): async functions on the
process's native flight table (many loops and threads, cancellation,
closed loops, re-entry through gather, fork mid-computation, mutable and
raising results), interruptible waits (signal handlers that raise, that
call the cached function, that fork), the engine's Watch across index
resizes (another process clearing and rewriting keys while this one holds
front entries), files closed on a background thread (fd counts), and
concurrent opening of one store.

Tests whose docstring starts "BUG (fixed)" failed before the fixes made in
the same session. Tests marked ``xfail(strict=True, reason="BUG: ...")`` show a bug that is
still there (each docstring gives the diagnosis); the others cover cases
that held. Three bugs, all "never a hang" / latency, none a wrong value:
an in-process wait for a thread-led flight has no bound (a leader that
joins a thread calling the same key deadlocks; a sync call on a flight led
by a task of its own loop deadlocks), and the callers of a key whose
computation keeps raising are serialized (N callers: N times its time).
Note (held, but slow): a task awaiting its own key through a child task
(gather, or asyncio.run in a joined thread) is re-entry only after
``lease_timeout`` (60 s by default), not at once as README's re-entry
paragraph says."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import picocache as pc

from _subproc import PY, child_env as _env, run_code as _run  # noqa: E402


def _in_thread(fn, timeout: float):
    """Runs ``fn`` in a daemon thread; its result or exception, or fails if it
    does not finish within ``timeout`` (a generous "does not hang" bound)."""
    box: dict = {}

    def run():
        try:
            box["v"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"hung for more than {timeout} s"
    if "e" in box:
        raise box["e"]
    return box["v"]


# ---------------------------------------------------------------------------
# 1. Async functions on the native flight table
# ---------------------------------------------------------------------------

def test_async_many_loops_many_threads_compute_once_and_copy_mutables(tmp_path):
    """Eight threads, each its own event loop with 20 tasks, all call one
    async function on 3 keys at once: each key is computed once (the
    others wait for the leader, in any loop), every caller gets the right
    value, and a mutable (list) result is a private copy per caller."""
    c = pc.LocalCache(tmp_path / "s")
    calls: dict = {}
    lock = threading.Lock()

    @c(name="f")
    async def f(x):
        with lock:
            calls[x] = calls.get(x, 0) + 1
        await asyncio.sleep(0.2)
        return [x, "v"]

    start = threading.Barrier(8)

    def worker():
        async def main():
            return await asyncio.gather(*(f(i % 3) for i in range(20)))
        start.wait()
        return asyncio.run(main())

    outs = [None] * 8

    def run_all():
        ts = []
        for i in range(8):
            def w(i=i):
                outs[i] = worker()
            ts.append(threading.Thread(target=w))
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    _in_thread(run_all, 30)
    every = [v for o in outs for v in o]
    assert len(every) == 160
    for i, v in enumerate(every):
        assert v == [i % 20 % 3, "v"]
    assert len({id(v) for v in every}) == 160, "a mutable result was shared"
    every[0].append("mutated")
    assert asyncio.run(f(0)) == [0, "v"]
    print("computes per key:", calls)
    assert calls == {0: 1, 1: 1, 2: 1}


def test_async_cancelled_leader_lets_a_waiter_compute(tmp_path):
    """The leader task is cancelled mid-computation: the waiting tasks (same
    loop and another thread's loop) are woken, one of them computes, and
    all get the value; nothing is cached from the cancelled leader."""
    c = pc.LocalCache(tmp_path / "s")
    n = {"c": 0}

    @c(name="f")
    async def f(x):
        n["c"] += 1
        await asyncio.sleep(0.3)
        return ("ok", x)

    other: dict = {}

    def other_loop():
        time.sleep(0.1)
        other["v"] = asyncio.run(f(1))

    async def main():
        leader = asyncio.ensure_future(f(1))
        await asyncio.sleep(0.05)
        waiters = [asyncio.ensure_future(f(1)) for _ in range(5)]
        await asyncio.sleep(0.1)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        return await asyncio.gather(*waiters)

    t = threading.Thread(target=other_loop)
    t.start()
    res = _in_thread(lambda: asyncio.run(main()), 20)
    t.join(20)
    assert res == [("ok", 1)] * 5
    assert other["v"] == ("ok", 1)
    # The cancelled leader, then the waiters side by side (each computes:
    # the waiters of a failed computation do not queue behind one another).
    assert 2 <= n["c"] <= 7, n


def test_async_cancellation_storm(tmp_path):
    """Hundreds of tasks on 4 keys, cancelled at random points, repeatedly:
    the survivors all get the right value, nothing hangs, and a fresh call
    afterwards on each key returns the right value (no flight left
    behind)."""
    import random

    c = pc.LocalCache(tmp_path / "s", lease_timeout=5)
    rnd = random.Random(7)

    @c(name="f")
    async def f(x):
        await asyncio.sleep(rnd.random() * 0.02)
        if rnd.random() < 0.2:
            raise ValueError("boom")
        return x * 10

    async def main():
        for _round in range(6):
            ts = [asyncio.ensure_future(f(i % 4)) for i in range(200)]
            for _ in range(60):
                await asyncio.sleep(rnd.random() * 0.003)
                rnd.choice(ts).cancel()
            rs = await asyncio.gather(*ts, return_exceptions=True)
            for i, r in enumerate(rs):
                assert isinstance(r, (asyncio.CancelledError, ValueError)) or r == (i % 4) * 10, r
            c.cache_clear()
        out = []
        for k in range(4):
            while True:
                try:
                    out.append(await f(k))
                    break
                except ValueError:
                    pass
        return out

    assert _in_thread(lambda: asyncio.run(main()), 40) == [0, 10, 20, 30]


def test_async_raising_leader_is_not_cached_and_waiters_retry(tmp_path):
    c = pc.LocalCache(tmp_path / "s")
    n = {"c": 0}

    @c(name="f")
    async def f(x):
        n["c"] += 1
        k = n["c"]
        await asyncio.sleep(0.1)
        if k == 1:
            raise KeyError("first")
        return (x, k)

    async def main():
        return await asyncio.gather(*(f(5) for _ in range(10)), return_exceptions=True)

    rs = _in_thread(lambda: asyncio.run(main()), 20)
    assert isinstance(rs[0], KeyError)
    # the waiters compute side by side after the failure: each gets a value
    # the function returned (none the exception, nothing cached from it)
    assert all(isinstance(r, tuple) and r[0] == 5 and r[1] >= 2 for r in rs[1:]), rs
    assert 2 <= n["c"] <= 10


def test_async_waiter_loop_closed_mid_wait_does_not_break_the_leader(tmp_path):
    """A waiting task's loop is stopped and closed while the leader (another
    thread's loop) computes: the leader's wake callback meets a closed loop
    and must be harmless; the leader's caller gets its value and a later
    call is a hit."""
    c = pc.LocalCache(tmp_path / "s")
    n = {"c": 0}
    release = threading.Event()

    @c(name="f")
    async def f(x):
        n["c"] += 1
        while not release.is_set():
            await asyncio.sleep(0.01)
        return ("v", x)

    res: dict = {}

    def leader():
        res["l"] = asyncio.run(f(1))

    lt = threading.Thread(target=leader)
    lt.start()
    time.sleep(0.1)
    loop = asyncio.new_event_loop()
    task = loop.create_task(f(1))
    loop.run_until_complete(asyncio.sleep(0.1))  # the task now waits
    assert not task.done()
    loop.close()  # closed with the task pending
    del task
    release.set()
    lt.join(10)
    assert res["l"] == ("v", 1)
    assert asyncio.run(f(1)) == ("v", 1)
    assert n["c"] == 1


def test_async_leader_loop_closed_mid_compute_waiter_is_bounded(tmp_path):
    """The leader's loop is closed (not cancelled) while it computes, its
    coroutine kept alive: a waiter in another loop waits at most about
    ``lease_timeout`` (here 1 s), then computes."""
    c = pc.LocalCache(tmp_path / "s", lease_timeout=1)

    @c(name="f")
    async def f(x):
        await asyncio.sleep(0.05)
        return ("v", x)

    loop = asyncio.new_event_loop()
    leader = loop.create_task(f(2))
    loop.run_until_complete(asyncio.sleep(0.01))  # the leader is inside f
    loop.close()
    t0 = time.monotonic()
    assert _in_thread(lambda: asyncio.run(f(2)), 15) == ("v", 2)
    print("waited", round(time.monotonic() - t0, 2), "s for a leader in a closed loop")
    assert leader is not None


def test_async_task_awaiting_itself_through_gather(tmp_path):
    """A task computing f(k) awaits f(k) in a child task (gather): the child
    is a different task, so it waits for the parent, which waits for the
    child. The wait is bounded by ``lease_timeout`` (here 1 s), then the
    child computes without the cache and both return the right value."""
    c = pc.LocalCache(tmp_path / "s", lease_timeout=1)
    depth = {"d": 0}

    @c(name="f")
    async def f(x):
        depth["d"] += 1
        if depth["d"] == 1:
            (inner,) = await asyncio.gather(f(x))
            return ("outer", inner)
        return ("inner", x)

    t0 = time.monotonic()
    r = _in_thread(lambda: asyncio.run(f(3)), 20)
    dt = time.monotonic() - t0
    print("self-await through gather returned", r, "after", round(dt, 2), "s")
    assert r == ("outer", ("inner", 3))
    assert asyncio.run(f(3)) == r


def test_async_direct_reentry_runs_uncached(tmp_path):
    """A task awaiting f(k) from inside f(k) directly (same task) is re-entry:
    it runs the body uncached at once, as the sync path does."""
    c = pc.LocalCache(tmp_path / "s", lease_timeout=30)
    depth = {"d": 0}

    @c(name="f")
    async def f(x):
        depth["d"] += 1
        if depth["d"] == 1:
            return ("outer", await f(x))
        return ("inner", x)

    assert _in_thread(lambda: asyncio.run(f(4)), 10) == ("outer", ("inner", 4))


def test_async_sync_leader_in_thread_without_loop_wakes_async_waiter(tmp_path):
    """Sync and async paths share the table only if it is the same function;
    here a sync wrapper computes a key in a plain thread while an async
    function of the same cache and *name* is awaited: whatever they share,
    the async call returns a correct value and does not hang."""
    c = pc.LocalCache(tmp_path / "s", lease_timeout=3)
    release = threading.Event()

    @c(name="shared")
    def g(x):
        release.wait(5)
        return ("sync", x)

    @c(name="shared")
    async def h(x):
        return ("sync", x)

    t = threading.Thread(target=g, args=(1,))
    t.start()
    time.sleep(0.1)
    threading.Timer(0.3, release.set).start()
    assert _in_thread(lambda: asyncio.run(h(1)), 15) == ("sync", 1)
    t.join(10)


def test_async_fork_mid_computation_child_does_not_wait(tmp_path):
    """fork() while a task (in another thread's loop) leads a flight: the
    child's table is forgotten, so the child's own call of that key
    computes at once (well within ``lease_timeout`` = 30 s)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    c = pc.LocalCache(tmp_path / "s", lease_timeout=30)
    inside = threading.Event()
    release = threading.Event()

    @c(name="f")
    async def f(x):
        inside.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return ("parent", x)

    t = threading.Thread(target=lambda: asyncio.run(f(9)))
    t.start()
    assert inside.wait(5)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            release.set()  # (the child's copy; nobody runs the leader here)
            t0 = time.monotonic()
            v = asyncio.run(asyncio.wait_for(f(9), 20))
            code = 0 if v in (("parent", 9),) and time.monotonic() - t0 < 10 else 2
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    release.set()
    t.join(10)
    assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------------------
# 2. Interruptible waits
# ---------------------------------------------------------------------------

def _with_alarm(handler, seconds: float):
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return old


class _Alarm(Exception):
    pass


def test_signal_handler_that_calls_the_cached_function_while_waiting(tmp_path):
    """The main thread waits for another thread's computation of f(1); a
    signal handler calls f(1) itself (a nested wait for the same leader)
    and f(2): both return the right values, the outer call too, and f(1) is
    computed once."""
    c = pc.LocalCache(tmp_path / "s")
    n = {1: 0, 2: 0}

    @c(name="f")
    def f(x):
        n[x] += 1
        if x == 1:
            time.sleep(0.8)
        return ("v", x)

    seen = []

    def h(signum, frame):
        seen.append((f(1), f(2)))

    t = threading.Thread(target=f, args=(1,))
    t.start()
    time.sleep(0.1)
    old = _with_alarm(h, 0.2)
    try:
        assert f(1) == ("v", 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    t.join()
    assert seen and seen[0] == (("v", 1), ("v", 2))
    assert n == {1: 1, 2: 1}


def test_many_signals_that_raise_during_a_thread_wait(tmp_path):
    """A timer signal every 20 ms while waiting, every fifth handler raises:
    the call raises that exception; the next call returns the leader's
    value; the key was computed once."""
    c = pc.LocalCache(tmp_path / "s")
    n = {"c": 0}

    @c(name="f")
    def f(x):
        n["c"] += 1
        time.sleep(1.0)
        return ("v", x)

    k = {"i": 0}

    def h(signum, frame):
        k["i"] += 1
        if k["i"] == 5:
            raise _Alarm()

    t = threading.Thread(target=f, args=(1,))
    t.start()
    time.sleep(0.1)
    old = signal.signal(signal.SIGALRM, h)
    signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
    try:
        with pytest.raises(_Alarm):
            f(1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert f(1) == ("v", 1)
    t.join()
    assert n["c"] == 1
    info = f.cache_info()
    print("after an interrupted wait:", info)
    assert info.misses == 1 and info.hits == 1  # the interrupted call is neither


def test_signal_raising_during_lease_wait_leaks_no_lease(tmp_path):
    """Process A holds f(1)'s lease (computing 1.5 s). Process B waits for it
    and a signal handler raises in B: B's call raises; then B exits. A's
    value is then served to a third process C (a hit, no compute), and a
    key B *would* have led (f(2), interrupted while computing) is free for
    C at once (B's lease was released, not leaked until lease_timeout)."""
    d = str(tmp_path / "s")
    a = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import time, picocache as pc
        c = pc.LocalCache({d!r}, lease_timeout=30)
        @c(name="f")
        def f(x):
            print("computing", flush=True)
            time.sleep(1.5)
            return ("A", x)
        f(1)
    """)], stdout=subprocess.PIPE, text=True, env=_env())
    assert a.stdout.readline().strip() == "computing"
    b = _run(f"""
        import signal, time, picocache as pc
        c = pc.LocalCache({d!r}, lease_timeout=30)
        class Stop(Exception): pass
        def h(s, fr): raise Stop()
        signal.signal(signal.SIGALRM, h)
        @c(name="f")
        def f(x):
            time.sleep(5)
            return ("B", x)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            f(1)
            print("no-raise-1")
        except Stop:
            print("raised-1")
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            f(2)
            print("no-raise-2")
        except Stop:
            print("raised-2")
    """, timeout=30)
    assert b.stdout.split() == ["raised-1", "raised-2"], b.stdout + b.stderr
    a.wait(20)
    cc = _run(f"""
        import time, picocache as pc
        c = pc.LocalCache({d!r}, lease_timeout=30)
        n = []
        @c(name="f")
        def f(x):
            n.append(x)
            return ("C", x)
        t0 = time.monotonic()
        print(f(1), f(2), n, time.monotonic() - t0 < 10)
    """, timeout=60)
    assert cc.stdout.strip() == "('A', 1) ('C', 2) [2] True", cc.stdout + cc.stderr


def test_signal_handler_that_forks_during_a_wait(tmp_path):
    """A signal handler forks while the main thread waits for another
    thread's computation; the child calls f(1) (its copy of the leader does
    not run: its flight table is forgotten, so it computes) and exits; the
    parent's wait completes with the leader's value."""
    c = pc.LocalCache(tmp_path / "s", lease_timeout=20)
    n = {"c": 0}

    @c(name="f")
    def f(x):
        n["c"] += 1
        time.sleep(0.8)
        return ("v", x)

    pids = []

    def h(signum, frame):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            try:
                t0 = time.monotonic()
                ok = f(1) == ("v", 1) and time.monotonic() - t0 < 10
                os._exit(0 if ok else 2)
            except BaseException:
                os._exit(3)
        pids.append(pid)

    t = threading.Thread(target=f, args=(1,))
    t.start()
    time.sleep(0.1)
    old = _with_alarm(h, 0.2)
    try:
        assert f(1) == ("v", 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    t.join()
    assert pids
    _, st = os.waitpid(pids[0], 0)
    assert os.waitstatus_to_exitcode(st) == 0
    assert n["c"] == 1


# ---------------------------------------------------------------------------
# 3, 5. Stale values across index resizes, clears, overwrites
# ---------------------------------------------------------------------------

_OTHER = """
    import sys, picocache as pc
    d, gen, lo, hi, clear = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    c = pc.LocalCache(d)
    @c(name="f")
    def f(x):
        return (gen, x)
    if clear == "clear":
        f.cache_clear()
    for x in range(lo, hi):
        f(x)
    print("done")
"""


def test_no_stale_value_after_another_process_clears_and_resizes(tmp_path):
    """This process holds front entries for f(0..99) (value generation 1).
    Another process clears the function and writes 6000 keys with
    generation 2 (forcing index resizes), including 0..99. Every later call
    here must return generation 2; repeated over 3 rounds."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)
    gen = {"g": 1}

    @c(name="f")
    def f(x):
        return (gen["g"], x)

    for x in range(100):
        f(x)
        assert f(x) == (1, x)
    for rnd in range(2, 5):
        r = _run(_OTHER, d, str(rnd), "0", "6000", "clear")
        assert r.stdout.strip() == "done", r.stderr
        gen["g"] = -1  # a compute here would be visible
        bad = [(x, f(x)) for x in range(100) if f(x) != (rnd, x)]
        assert not bad, f"round {rnd}: stale or recomputed values {bad[:5]}"


def test_no_stale_value_after_clear_then_other_keys_fill(tmp_path):
    """Another process clears, then fills 6000 *other* keys (resizes): the
    keys this process had in its front table are gone and must miss here
    (computed again), not be served from the front table."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)
    n = {"c": 0}

    @c(name="f")
    def f(x):
        n["c"] += 1
        return (1, x)

    for x in range(50):
        f(x)
        f(x)
    assert n["c"] == 50
    r = _run(_OTHER, d, "2", "1000", "7000", "clear")
    assert r.stdout.strip() == "done", r.stderr
    for x in range(50):
        assert f(x) == (1, x)
    assert n["c"] == 100, f"{100 - n['c']} cleared keys were served from the front table"


def test_no_stale_value_while_other_process_churns(tmp_path):
    """Concurrently: another process loops clear + rewrite of keys 0..19
    with increasing generations plus 3000 filler keys; this process reads
    keys 0..19 continuously. Every value read is one a process wrote
    (generation >= 0, never negative: this process's own compute returns
    -1 only when the store has no entry) and, after the churner ends, the
    final generation (4) is seen for every key."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)

    @c(name="f")
    def f(x):
        return (-1, x)

    churn = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import picocache as pc
        c = pc.LocalCache({d!r})
        for g in range(1, 5):
            @c(name="f")
            def f(x, g=g):
                return (g, x)
            f.cache_clear()
            for x in range(20):
                f(x)
            @c(name="filler")
            def h(x, g=g):
                return "z" * 2000 + str(x)
            for x in range(1000 * g, 1000 * g + 3000):
                f(x)
                h(x)
            h.cache_clear()
        print("done", flush=True)
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    seen_gens = set()
    deadline = time.monotonic() + 40
    while churn.poll() is None and time.monotonic() < deadline:
        for x in range(20):
            g, y = f(x)
            assert y == x
            seen_gens.add(g)
    out, err = churn.communicate(timeout=30)
    assert out.strip() == "done", err
    # after the churner: clear own front copies via nothing; values must be gen 6
    final = {x: f(x) for x in range(20)}
    print("generations seen while churning:", sorted(seen_gens))
    stale = {x: v for x, v in final.items() if v[0] not in (4, -1)}
    assert not stale, f"stale after the churn ended: {stale}"


def test_overwrite_right_after_put_is_not_served_from_front(tmp_path):
    """This process computes and stores f(x) (put_located keeps its token),
    another process immediately clears and stores a different value: this
    process must serve the other's value (repeated for 30 keys)."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)

    @c(name="f")
    def f(x):
        return (1, x)

    for x in range(30):
        f(x)
    r = _run(_OTHER, d, "2", "0", "30", "clear")
    assert r.stdout.strip() == "done", r.stderr
    got = [f(x) for x in range(30)]
    got2 = [f(x) for x in range(30)]
    assert got == [(2, x) for x in range(30)] == got2


def test_ttl_expiry_across_resize_is_not_served(tmp_path):
    """Entries with ttl=1 held in the front table; another process fills
    6000 keys of another function (resizes); after 1.5 s the first keys
    must be recomputed, not served."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)
    n = {"c": 0}

    @c(name="t", ttl=1)
    def f(x):
        n["c"] += 1
        return x

    for x in range(30):
        f(x)
        f(x)
    r = _run(_OTHER, d, "2", "0", "6000", "noclear")
    assert r.stdout.strip() == "done", r.stderr
    time.sleep(1.6)
    for x in range(30):
        f(x)
    assert n["c"] == 60


# ---------------------------------------------------------------------------
# 4, 6. Files, opening, map copies
# ---------------------------------------------------------------------------

def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_leak_over_many_resizes_and_clears(tmp_path):
    """Many clears and refills of thousands of keys (resizes, compactions,
    files closed on the background thread): the number of open fds
    settles back (at most a handful more than before)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc")
    c = pc.LocalCache(tmp_path / "s")

    @c(name="f")
    def f(x):
        return "x" * 200 + str(x)

    f(0)
    before = _fds()
    for rnd in range(8):
        for x in range(3000):
            f(x + rnd * 10)
        f.cache_clear()
    time.sleep(0.5)
    after = _fds()
    print("fds before", before, "after", after)
    assert after <= before + 4


def test_concurrent_open_of_one_store_from_threads(tmp_path):
    """16 threads open LocalCache(same dir) at once and use it: all values
    right, and one compute per key across them (one handle, one flight
    table)."""
    d = tmp_path / "s"
    n: dict = {}
    lock = threading.Lock()
    start = threading.Barrier(16)
    errs = []

    def w(i):
        try:
            start.wait()
            c = pc.LocalCache(d)

            @c(name="g")
            def g(x):
                with lock:
                    n[x] = n.get(x, 0) + 1
                time.sleep(0.05)
                return (x, "g")

            for x in range(5):
                assert g(x) == (x, "g")
        except BaseException as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=w, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errs, errs
    print("computes per key:", n)
    assert all(v == 1 for v in n.values()) and len(n) == 5


def test_map_repeats_get_copies_of_mutable_results(tmp_path):
    c = pc.LocalCache(tmp_path / "s")

    @c(name="f")
    def f(x):
        return {"x": [x]}

    out = list(f.map([1, 1, 1, 2, 1]))
    assert out == [{"x": [1]}] * 3 + [{"x": [2]}, {"x": [1]}]
    out[0]["x"].append("m")
    out[0]["y"] = 1
    assert out[1] == {"x": [1]} and out[4] == {"x": [1]}
    assert len({id(o) for o in out}) == 5
    assert len({id(o["x"]) for o in out}) == 5
    assert f(1) == {"x": [1]}


def test_secrets_first_use_from_many_processes(tmp_path):
    """Eight processes start at once on a fresh store (first use: the
    secrets file is created and read concurrently); each writes and reads
    keys; all agree on every value afterwards (no process rejected the
    others' sealed values as forged)."""
    d = str(tmp_path / "s")
    code = f"""
        import sys, picocache as pc, threading, warnings, logging
        logging.basicConfig(level=logging.WARNING)
        i = int(sys.argv[1])
        bar = threading.Barrier(4)
        def opener(j):
            bar.wait()  # four threads open the store (and read the secret) at once
            cj = pc.LocalCache({d!r}, strict=True)
            @cj(name="f")
            def fj(x):
                return (x, "v")
            [fj(k) for k in range(j, 40, 4)]
        ts = [threading.Thread(target=opener, args=(j,)) for j in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        c = pc.LocalCache({d!r}, strict=True)
        @c(name="f")
        def f(x):
            return (x, "v")
        print(all(f(k) == (k, "v") for k in range(40)), f.cache_stats().get("rejected", 0))
    """
    env = _env()
    env.pop("PICOCACHE_SECRET", None)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # no secret file yet
    ps = [subprocess.Popen([PY, "-c", textwrap.dedent(code), str(i)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env) for i in range(8)]
    outs = [p.communicate(timeout=60) for p in ps]
    for out, err in outs:
        assert out.split() == ["True", "0"], out + err
    secret = tmp_path / "config" / "picocache" / "secret"
    assert secret.exists()
    print("secret file mode", oct(secret.stat().st_mode & 0o777), "size", secret.stat().st_size)
    assert secret.stat().st_mode & 0o077 == 0
    # a ninth process, later, reads every value the eight stored (same secret)
    r = subprocess.run([PY, "-c", textwrap.dedent(f"""
        import picocache as pc
        c = pc.LocalCache({d!r}, strict=True)
        n = []
        @c(name="f")
        def f(x):
            n.append(x)
            return (x, "v")
        print(all(f(k) == (k, "v") for k in range(40)), len(n))
    """)], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.split() == ["True", "0"], r.stdout + r.stderr


def test_ttl_overwrite_across_resize_is_seen(tmp_path):
    """This process holds f(0..59) (ttl 1 s, generation 1) in its front
    table. Another process fills 6000 keys (resizes), waits for the ttl,
    and rewrites 0..59 with generation 2 (overwrites of expired entries):
    this process must then read generation 2, never 1."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)
    gen = {"g": 1}

    @c(name="f", ttl=1)
    def f(x):
        return (gen["g"], x)

    for x in range(60):
        f(x)
        assert f(x) == (1, x)
    r = _run(f"""
        import time, picocache as pc
        c = pc.LocalCache({d!r})
        @c(name="f", ttl=1)
        def f(x):
            return (2, x)
        for x in range(1000, 7000):
            f(x)
        time.sleep(1.2)
        for x in range(60):
            assert f(x) == (2, x), f(x)
        print("done", time.time())
    """)
    assert r.stdout.split()[0] == "done", r.stderr
    gen["g"] = -1
    got = [f(x) for x in range(60)]
    late = time.time() - float(r.stdout.split()[1])
    bad = [g for g in got if g[0] != 2]
    print("read", round(late, 3), "s after the other process's rewrite; not gen 2:", len(bad))
    if late < 0.8:
        assert not bad, bad[:5]


def test_eviction_by_other_process_across_resize_is_not_served(tmp_path):
    """maxsize=300 in both processes: this one holds f(0..99); another
    process writes 6000 other keys (resizes, and evicts 0..99): every
    later call here of 0..99 either computes or returns a value some
    process stored for it -- and the entries must really be gone
    (computed here again), not served from the front table."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)
    n = {"c": 0}

    @c(name="f", maxsize=300)
    def f(x):
        n["c"] += 1
        return (1, x)

    for x in range(100):
        f(x)
        f(x)
    r = _run(f"""
        import picocache as pc
        c = pc.LocalCache({d!r})
        @c(name="f", maxsize=300)
        def f(x):
            return (2, x)
        for x in range(1000, 7000):
            f(x)
        print(f.cache_info().currsize)
    """)
    assert r.returncode == 0, r.stderr
    print("currsize in the other process:", r.stdout.strip())
    n["c"] = 0
    for x in range(100):
        assert f(x) == (1, x)
    print("recomputed here:", n["c"], "of 100")
    assert n["c"] >= 90, f"only {n['c']} of 100 evicted keys were computed again"


def test_process_exit_and_fork_with_files_queued_for_closing(tmp_path):
    """Many clears and refills (files queued for the background closer),
    then fork: the child uses the store and exits; the parent goes on;
    then a subprocess doing the same exits at once after its last clear:
    no crash, no panic, values right."""
    code = f"""
        import os, picocache as pc
        c = pc.LocalCache({str(tmp_path / 's')!r})
        @c(name="f")
        def f(x):
            return "y" * 300 + str(x)
        for r in range(6):
            for x in range(2500):
                f(x)
            f.cache_clear()
        pid = os.fork()
        if pid == 0:
            ok = all(f(x) == "y" * 300 + str(x) for x in range(500))
            f.cache_clear()
            os._exit(0 if ok else 2)
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == 0, st
        assert all(f(x) == "y" * 300 + str(x) for x in range(500))
        for x in range(3000):
            f(x)
        f.cache_clear()
        print("ok")
    """
    r = _run(code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    assert "panic" not in r.stderr.lower()


def test_async_and_sync_function_sharing_a_name_on_one_loop_thread(tmp_path):
    """BUG (fixed). A sync and an async function share a name (and so entries and
    flights). A task leads the async one's key and awaits; another task of
    the same loop calls the sync one with that key: the sync call must not
    block the loop forever waiting for a leader that only this (blocked)
    loop can run.

    Repro: ``@c(name="shared") async def a(x)`` (awaits) and
    ``@c(name="shared") def s(x)``; in ``main()``: start ``a(1)`` as a task,
    ``await asyncio.sleep(0.05)``, then call ``s(1)``: it never returns
    (``lease_timeout=2`` does not bound it; only a signal ends it).

    Diagnosis: both wrappers join the same native flight table entry
    (``_native.flight_join`` with the same cache id, name and key). The async
    leader is ``Owner::Task(id(task))``; the sync caller joins as
    ``Owner::Thread`` (picocache/src/core/flight.rs ``join_as``), is not
    re-entry, becomes a Waiter and blocks in picocache/python/src/miss.rs
    ``wait`` (``Flight::wait_for`` in a loop, checking signals, with no
    deadline), on the loop's own thread, so the leader task can never run
    again. The async waiters are bounded by ``lease_timeout``
    (``_core.awrapper``); the sync waiter of a task-led flight is not. Fix:
    bound the sync wait of a flight led by a task (or by anything) by
    ``lease_timeout``, or have a Thread joiner whose thread runs the leader
    task's loop treat it as re-entry."""
    code = f"""
        import asyncio, picocache as pc
        c = pc.LocalCache({str(tmp_path / 's')!r}, lease_timeout=2)
        @c(name="shared")
        async def a(x):
            await asyncio.sleep(0.3)
            return ("v", x)
        @c(name="shared")
        def s(x):
            return ("v", x)
        async def main():
            t = asyncio.ensure_future(a(1))
            await asyncio.sleep(0.05)
            v = s(1)
            return v, await t
        print(asyncio.run(main()))
    """
    p = subprocess.Popen([PY, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
    try:
        out, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("the sync call blocked the event loop on a flight its own loop leads")
    assert out.strip() == "(('v', 1), ('v', 1))", out + err


def test_tuple_holding_a_list_is_not_shared_between_waiters(tmp_path):
    """A tuple is immutable, a list inside it is not: waiters (threads and
    tasks) of the leader's computation must each get their own list."""
    c = pc.LocalCache(tmp_path / "s")

    @c(name="f")
    def f(x):
        time.sleep(0.3)
        return (x, [x])

    @c(name="a")
    async def a(x):
        await asyncio.sleep(0.3)
        return (x, [x])

    outs = []
    lock = threading.Lock()

    def w():
        v = f(1)
        with lock:
            outs.append(v)

    ts = [threading.Thread(target=w) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert len(outs) == 6 and all(o == (1, [1]) for o in outs)
    assert len({id(o[1]) for o in outs}) == 6, "the inner list was shared between threads"

    async def main():
        return await asyncio.gather(*(a(2) for _ in range(6)))

    rs = _in_thread(lambda: asyncio.run(main()), 20)
    assert all(r == (2, [2]) for r in rs)
    assert len({id(r[1]) for r in rs}) == 6, "the inner list was shared between tasks"


def test_signal_handler_calls_the_function_during_a_lease_wait(tmp_path):
    """Another process holds f(1)'s lease (computing 1.2 s); this process
    waits, and a signal handler calls f(1) (a nested lease wait) and f(2):
    all return the right values, f(1) is not computed here."""
    d = str(tmp_path / "s")
    a = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import time, picocache as pc
        c = pc.LocalCache({d!r}, lease_timeout=30)
        @c(name="f")
        def f(x):
            print("computing", flush=True)
            time.sleep(1.2)
            return ("A", x)
        f(1)
    """)], stdout=subprocess.PIPE, text=True, env=_env())
    assert a.stdout.readline().strip() == "computing"
    b = _run(f"""
        import signal, picocache as pc
        c = pc.LocalCache({d!r}, lease_timeout=30)
        n = []
        @c(name="f")
        def f(x):
            n.append(x)
            return ("B", x)
        seen = []
        def h(s, fr): seen.append((f(1), f(2)))
        signal.signal(signal.SIGALRM, h)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        print(f(1), seen, n)
    """, timeout=30)
    a.wait(20)
    # The handler runs in the thread that leads f(1) in this process (it
    # waits for the other's lease): its f(1) is re-entry, run uncached (as
    # functools.lru_cache would), so ('B', 1) is what the function returns.
    assert b.stdout.strip() in ("('A', 1) [(('A', 1), ('B', 2))] [2]",
                                "('A', 1) [(('B', 1), ('B', 2))] [1, 2]"), b.stdout + b.stderr
    c = _run(f"""
        import picocache as pc
        c = pc.LocalCache({d!r}, lease_timeout=30)
        @c(name="f")
        def f(x):
            return ("C", x)
        print(f(1), f(2))
    """)
    assert c.stdout.strip() == "('A', 1) ('B', 2)", c.stdout + c.stderr


def test_asyncio_run_in_a_thread_joined_from_the_leader(tmp_path):
    """The leader's body starts a thread that runs ``asyncio.run(f(k))`` on
    the same key and joins it (blocking its loop): the thread's task waits
    for the leader, which waits for the thread. Bounded by
    ``lease_timeout`` (1 s): then the thread computes uncached; both
    return the right values."""
    c = pc.LocalCache(tmp_path / "s", lease_timeout=1)
    depth = {"d": 0}

    @c(name="f")
    async def f(x):
        depth["d"] += 1
        if depth["d"] == 1:
            box = {}
            t = threading.Thread(target=lambda: box.setdefault("v", asyncio.run(f(x))))
            t.start()
            t.join()
            return ("outer", box["v"])
        return ("inner", x)

    assert _in_thread(lambda: asyncio.run(f(7)), 20) == ("outer", ("inner", 7))


_COMPACT_OTHER = """
    import sys, time, picocache as pc
    d, gen = sys.argv[1], int(sys.argv[2])
    c = pc.LocalCache(d)
    @c(name="f")
    def f(x):
        return (gen, x)
    @c(name="big")
    def big(x):
        return b"z" * 60000 + str(x).encode()
    f.cache_clear()
    for x in range(20):
        f(x)
    for r in range(2):
        for x in range(1200):
            big(x)
        big.cache_clear()
    time.sleep(1.3)  # the compactors (every 0.5 s) of both processes
    print("done")
"""


def test_no_stale_value_across_compaction(tmp_path):
    """This process holds f(0..19) in its front table. Another process
    clears f and rewrites it (a new generation) at the head of the log,
    then writes and clears 140 MB of another function (sealed segments
    that are all dead, so compaction moves f's live entries and retires
    the segments), waits for the compactors. Here every f(x) must be the
    new generation, three rounds; compactions must have run."""
    import json

    d = str(tmp_path / "s")
    c = pc.LocalCache(d)

    @c(name="f")
    def f(x):
        return (-1, x)

    for x in range(20):
        f(x)
        f(x)
    for gen in (1, 2, 3):
        r = _run(_COMPACT_OTHER, d, str(gen))
        assert r.stdout.strip() == "done", r.stderr
        got = [f(x) for x in range(20)]
        assert got == [(gen, x) for x in range(20)], f"generation {gen}: {got[:4]}"
    s = json.loads(_run("import runpy, sys; sys.argv = ['picocache', 'stats', '--json', sys.argv[1]]; "
                        "runpy.run_module('picocache', run_name='__main__')", d).stdout)
    print("compactions:", s["compactions"], "dead bytes:", s["dead_bytes"], "disk bytes:", s["disk_bytes"])
    assert s["compactions"] > 0


def test_concurrent_readers_never_go_back_a_generation_during_compactions(tmp_path):
    """Four threads here read f(0..19) continuously while another process
    runs two rounds of clear + rewrite (generations 1, 2) + 140 MB of
    dead data (compactions, index resizes). Per thread and key, the
    generations read never decrease (-1 is this process's own compute of
    a cleared key, allowed); open fds settle back afterwards."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)

    @c(name="f")
    def f(x):
        return (-1, x)

    for x in range(20):
        f(x)
    before = _fds()
    stop = threading.Event()
    errs = []
    reads = [0]

    def reader():
        last = {}
        while not stop.is_set():
            for x in range(20):
                g, y = f(x)
                reads[0] += 1
                if y != x or (g != -1 and g < last.get(x, -1)):
                    errs.append((x, last.get(x), g))
                if g != -1:
                    last[x] = g

    ts = [threading.Thread(target=reader) for _ in range(4)]
    for t in ts:
        t.start()
    try:
        for gen in (1, 2):
            r = _run(_COMPACT_OTHER, d, str(gen))
            assert r.stdout.strip() == "done", r.stderr
    finally:
        stop.set()
        for t in ts:
            t.join(10)
    print("reads:", reads[0], "errors:", errs[:5])
    assert not errs, f"a reader went back a generation: {errs[:5]}"
    final = [f(x)[0] for x in range(20)]
    assert set(final) <= {2, -1}, final
    time.sleep(1.0)  # the closer thread
    after = _fds()
    print("fds before", before, "after", after)
    assert after <= before + 6


def test_sync_leader_joining_a_thread_that_calls_the_same_key(tmp_path):
    """BUG (fixed). The body of f(7) starts a thread that calls f(7) and joins it.
    ``functools.lru_cache`` computes the inner call and returns; across
    processes the same shape (a child process calling f(7)) waits at most
    ``lease_timeout``; the async shape (test_asyncio_run_in_a_thread_joined_
    from_the_leader, test_async_task_awaiting_itself_through_gather) is
    bounded by ``lease_timeout`` too. Here it never returns, with
    ``lease_timeout=1``.

    Repro::

        c = pc.LocalCache(d, lease_timeout=1)
        @c(name="f")
        def f(x):
            if first call:
                t = threading.Thread(target=lambda: f(x)); t.start(); t.join()
            ...
        f(7)   # hangs forever (Ctrl-C works)

    Diagnosis: the inner thread joins the flight table as
    ``Owner::Thread(other)`` (picocache/src/core/flight.rs ``join_as``), is
    not re-entry, and blocks in picocache/python/src/miss.rs ``wait``, a
    loop of ``Flight::wait_for(SIGNAL_CHECK)`` + ``check_signals`` with no
    deadline, while the leader blocks in ``join()``. README ("A function
    that calls itself with the same arguments runs its body again ...
    waiting for its own result would never end") and priority (1) ("never a
    hang"). Fix: bound the in-process wait by ``lease_timeout`` as the async
    path (``_core.awrapper``) and the lease wait do, then compute without
    leading."""
    code = f"""
        import threading, picocache as pc
        c = pc.LocalCache({str(tmp_path / 's')!r}, lease_timeout=1)
        depth = [0]
        @c(name="f")
        def f(x):
            depth[0] += 1
            if depth[0] == 1:
                box = {{}}
                t = threading.Thread(target=lambda: box.setdefault("v", f(x)))
                t.start()
                t.join()
                return ("outer", box["v"])
            return ("inner", x)
        print(f(7))
    """
    p = subprocess.Popen([PY, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
    try:
        out, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("f(7) deadlocked: the inner thread waits without bound for its joiner")
    assert out.strip() == "('outer', ('inner', 7))", out + err


def test_racing_writers_agree_after_quiescence(tmp_path):
    """This process and another both loop ``cache_clear()`` + compute
    f(0..9) (each its own tag) at the same time, plus filler keys (index
    resizes); puts are immediately overwritten by the other side. After the
    other process ends, what this process reads for each key must be what
    a fresh process reads (the store's value): a disagreement is a stale
    front/tier entry."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)

    @c(name="f")
    def f(x):
        return ("here", x)

    @c(name="fill")
    def fill(x):
        return x

    other = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import time, picocache as pc
        c = pc.LocalCache({d!r})
        @c(name="f")
        def f(x):
            return ("other", x)
        @c(name="fill")
        def fill(x):
            return x
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 2.5:
            f.cache_clear()
            for x in range(10):
                f(x)
            for x in range(i * 50, i * 50 + 50):
                fill(x)
            i += 1
        print("rounds", i, flush=True)
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    i = 0
    t0 = time.monotonic()
    while other.poll() is None and time.monotonic() - t0 < 1.8:  # the other writes last
        f.cache_clear()
        for x in range(10):
            f(x)
            f(x)
        for x in range(100000 + i * 50, 100000 + i * 50 + 50):
            fill(x)
        i += 1
    out, err = other.communicate(timeout=30)
    assert out.startswith("rounds"), err
    mine = [f(x) for x in range(10)]
    assert mine == [("other", x) for x in range(10)], mine
    r = _run(f"""
        import picocache as pc
        c = pc.LocalCache({d!r})
        @c(name="f")
        def f(x):
            return ("fresh", x)
        print([f(x) for x in range(10)])
    """)
    fresh = eval(r.stdout.strip())
    print("rounds here", i, "there", out.split()[1], "mine", mine[:3], "fresh", fresh[:3])
    assert mine == fresh, f"this process disagrees with the store: {mine} vs {fresh}"


def test_prune_by_another_process_is_not_hidden_by_the_front_table(tmp_path):
    """This process holds f(0..19) (generation 1) in its front table and
    then leaves the namespace unused for 2 s; another process prunes it
    (``prune(1)``) and writes f(0..19) with generation 2 into the new
    namespace of that name. Here every f(x) must be generation 2 (or this
    process's own compute, -1): generation 1 is a removed entry."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)
    gen = {"g": 1}

    @c(name="f")
    def f(x):
        return (gen["g"], x)

    for x in range(20):
        f(x)
        assert f(x) == (1, x)
    gen["g"] = -1
    time.sleep(2.2)
    r = _run(f"""
        import picocache as pc
        c = pc.LocalCache({d!r})
        removed = [p["name"] for p in c.prune(1)]
        @c(name="f")
        def f(x):
            return (2, x)
        for x in range(20):
            f(x)
        print(removed)
    """)
    assert r.returncode == 0, r.stderr
    print("pruned:", r.stdout.strip())
    got = [f(x) for x in range(20)]
    assert "'f'" in r.stdout, "the namespace was not pruned: " + r.stdout
    bad = [g for g in got if g[0] == 1]
    assert not bad, f"removed entries served: {bad[:5]}"


def test_concurrent_callers_of_a_raising_function_are_not_serialized(tmp_path):
    """BUG (fixed). 12 tasks await f(1), which raises after 0.3 s every time (an
    upstream timing out). Without a cache, or with ``functools.lru_cache``,
    they all fail after ~0.3 s. Here one leads, the others wait; the leader
    raises, one waiter becomes the leader and computes, the others wait
    again, ...: the last caller fails after 12 x 0.3 = 3.6 s, although
    ``lease_timeout=0.5`` is documented (brief, ``_core.awrapper``) as the
    bound of a task's wait. The sync path does the same (10 threads of a
    0.2 s raising function: 2.0 s; a mutable unpicklable result: the same,
    since such a result is not handed over and nothing is stored).
    Generous bound asserted: 3.0 s total (a bounded wait needs ~1.1 s).

    Diagnosis: ``_core.awrapper`` re-joins the flight table in a loop after a
    failed leader (``ok`` False), and every round restarts the
    ``asyncio.wait_for(..., lease_timeout)`` (no overall deadline);
    picocache/python/src/miss.rs ``wait`` + the sync retry likewise. Fix:
    one deadline per call across rounds (after it, compute without
    leading), or let the waiters of a failed flight compute concurrently
    instead of electing a new leader one at a time."""
    c = pc.LocalCache(tmp_path / "s", lease_timeout=0.5)
    n = {"c": 0}

    @c(name="f")
    async def f(x):
        n["c"] += 1
        await asyncio.sleep(0.3)
        raise TimeoutError("upstream")

    async def main():
        return await asyncio.gather(*(f(1) for _ in range(12)), return_exceptions=True)

    t0 = time.monotonic()
    rs = _in_thread(lambda: asyncio.run(main()), 30)
    dt = time.monotonic() - t0
    print(f"12 callers of a 0.3 s raising function: {dt:.2f} s, {n['c']} computes")
    assert all(isinstance(r, TimeoutError) for r in rs)
    assert dt < 3.0


def test_async_result_that_is_an_exception_instance(tmp_path):
    """An async function *returning* an exception object (mutable: raising
    it attaches a traceback): waiters get equal, distinct objects, and
    raising one does not give the others a traceback."""
    c = pc.LocalCache(tmp_path / "s")

    @c(name="f")
    async def f(x):
        await asyncio.sleep(0.2)
        return ValueError("r", x)

    async def main():
        return await asyncio.gather(*(f(1) for _ in range(6)))

    rs = _in_thread(lambda: asyncio.run(main()), 20)
    assert all(type(r) is ValueError and r.args == ("r", 1) for r in rs)
    assert len({id(r) for r in rs}) == 6
    try:
        raise rs[0]
    except ValueError:
        pass
    assert all(r.__traceback__ is None for r in rs[1:])
    again = asyncio.run(f(1))
    assert type(again) is ValueError and again.args == ("r", 1) and again.__traceback__ is None


@pytest.mark.parametrize("region", ["buckets", "entries"])
def test_no_stale_value_after_index_damage_rebuild_and_rewrite(tmp_path, region):
    """This process holds f(0..99) (generation 1); 4 KiB of the index is
    overwritten with random bytes (a rebuild follows), then another process
    clears f and writes generation 2 for 0..5999 (resizes). Here every
    f(x) must be generation 2 or this process's own compute (-1)."""
    d = str(tmp_path / "s")
    c = pc.LocalCache(d)
    gen = {"g": 1}

    @c(name="f")
    def f(x):
        return (gen["g"], x)

    for x in range(100):
        f(x)
        f(x)
    index = os.path.join(d, "index")
    size = os.path.getsize(index)
    buckets_at = 4096 + 1024 * 384 + 4096 * 40
    off = {"buckets": buckets_at, "entries": buckets_at + 16 * ((size - buckets_at) // 52)}[region]
    with open(index, "r+b") as fh:
        fh.seek(off)
        fh.write(os.urandom(4096))
    gen["g"] = -1
    r = _run(_OTHER, d, "2", "0", "6000", "clear")
    assert r.stdout.strip() == "done", r.stderr
    got = [f(x) for x in range(100)]
    bad = [g for g in got if g[0] not in (2, -1)]
    print(region, "gen 2:", sum(g[0] == 2 for g in got), "recomputed:", sum(g[0] == -1 for g in got))
    assert not bad, f"stale after damage + rewrite: {bad[:5]}"


def test_signal_storm_during_a_lease_wait(tmp_path):
    """A handler (that does not raise) runs every 5 ms while this process
    waits for another process's lease on f(1): the call returns the other
    process's value, computes nothing here, and the handler ran many
    times (the wait returns to Python between its 100 ms slices)."""
    d = str(tmp_path / "s")
    a = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import time, picocache as pc
        c = pc.LocalCache({d!r}, lease_timeout=30)
        @c(name="f")
        def f(x):
            print("computing", flush=True)
            time.sleep(1.0)
            return ("A", x)
        f(1)
    """)], stdout=subprocess.PIPE, text=True, env=_env())
    assert a.stdout.readline().strip() == "computing"
    b = _run(f"""
        import signal, picocache as pc
        c = pc.LocalCache({d!r}, lease_timeout=30)
        n = []
        @c(name="f")
        def f(x):
            n.append(x)
            return ("B", x)
        k = [0]
        def h(s, fr): k[0] += 1
        signal.signal(signal.SIGALRM, h)
        signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
        v = f(1)
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(v, n, k[0] >= 5)
    """, timeout=30)
    a.wait(20)
    assert b.stdout.strip() == "('A', 1) [] True", b.stdout + b.stderr


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres", "django-db"])
def test_async_many_loops_on_other_backends(tmp_path, kind):
    """Three threads' loops x 10 tasks on 2 keys of an async function on a
    remote/SQL backend (blocking clients run in the loop's executor): each
    key computed once, right values, mutable results not shared."""
    from conftest import make_cache

    c = make_cache(kind, tmp_path)
    calls: dict = {}
    lock = threading.Lock()

    @c(name="f")
    async def f(x):
        with lock:
            calls[x] = calls.get(x, 0) + 1
        await asyncio.sleep(0.3)
        return {"x": x}

    outs = []

    def w():
        async def main():
            return await asyncio.gather(*(f(i % 2) for i in range(10)))
        r = asyncio.run(main())
        with lock:
            outs.extend(r)

    def run_all():
        ts = [threading.Thread(target=w) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    _in_thread(run_all, 30)
    assert len(outs) == 30 and all(o in ({"x": 0}, {"x": 1}) for o in outs)
    assert len({id(o) for o in outs}) == 30
    print(kind, "computes per key:", calls)
    assert calls == {0: 1, 1: 1}
