"""Async cached functions share the process's flight table with the
synchronous paths (issue 16: one core, `picocache::core::flight`): a task
joins as itself, waits for another task's computation of the same key by a
callback (never blocking its event loop), in its own loop or in another
thread's; a leader that fails, is cancelled or never finishes is not waited
for in vain."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import picocache as pc


def test_two_event_loops_in_two_threads_compute_a_key_once(tmp_path):
    """Each loop kept its own in-flight table before: two threads' loops
    both ran the body."""
    cache = pc.LocalCache(tmp_path / "s")
    runs = []
    started = threading.Event()

    @cache(name="slow")  # (a closure over an Event: named, so cached)
    async def slow(x):
        runs.append(x)
        started.set()
        await asyncio.sleep(0.3)
        return x * 10

    out = {}

    def leader():
        out["a"] = asyncio.run(slow(4))

    def waiter():
        started.wait(5)
        out["b"] = asyncio.run(slow(4))

    ts = [threading.Thread(target=leader), threading.Thread(target=waiter)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert out == {"a": 40, "b": 40}
    assert runs == [4], "the second loop's task waited for the first's"
    info = slow.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_tasks_of_one_loop_compute_once_and_the_waiters_are_hits(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")
    runs = []

    @cache
    async def f(x):
        runs.append(x)
        await asyncio.sleep(0.05)
        return ("r", x)

    async def main():
        return await asyncio.gather(*(f(1) for _ in range(8)))

    assert asyncio.run(main()) == [("r", 1)] * 8
    assert runs == [1]
    assert (f.cache_info().hits, f.cache_info().misses) == (7, 1)


def test_a_cancelled_leader_lets_a_waiter_compute(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")
    runs = []

    @cache
    async def f(x):
        runs.append(x)
        await asyncio.sleep(0.2)
        return x + 1

    async def main():
        lead = asyncio.ensure_future(f(1))
        await asyncio.sleep(0.05)
        wait = asyncio.ensure_future(f(1))
        await asyncio.sleep(0.05)
        lead.cancel()
        with pytest.raises(asyncio.CancelledError):
            await lead
        return await wait

    assert asyncio.run(main()) == 2
    assert runs == [1, 1]


def test_a_leader_that_raises_lets_a_waiter_compute(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")
    runs = []

    @cache
    async def f(x):
        runs.append(x)
        await asyncio.sleep(0.05)
        if len(runs) == 1:
            raise ValueError("first")
        return x

    async def main():
        return await asyncio.gather(f(3), f(3), return_exceptions=True)

    a, b = asyncio.run(main())
    assert isinstance(a, ValueError) and b == 3
    assert runs == [3, 3]


def test_a_leader_that_never_finishes_is_waited_for_no_longer_than_the_lease_timeout(tmp_path):
    """A leader task stuck on an event that is never set (in another
    thread's loop): the waiter computes after lease_timeout instead of
    hanging."""
    cache = pc.LocalCache(tmp_path / "s", lease_timeout=0.5)
    gate = threading.Event()
    stuck_started = threading.Event()

    @cache(name="f")
    async def f(x):
        if threading.current_thread().name == "stuck":
            stuck_started.set()
            while not gate.is_set():
                await asyncio.sleep(0.02)
        return x * 2

    t = threading.Thread(target=lambda: asyncio.run(f(5)), name="stuck")
    t.start()
    try:
        assert stuck_started.wait(5)
        t0 = time.monotonic()
        assert asyncio.run(f(5)) == 10
        assert time.monotonic() - t0 < 30  # bounded (about 0.5 s), not a hang
        assert f.cache_info().misses == 2, "both ran the body: the waiter gave up waiting"
    finally:
        gate.set()
        t.join(10)


def test_a_waiter_whose_loop_is_gone_does_not_break_the_leader(tmp_path):
    """The leader wakes a waiter of a loop that was closed meanwhile: the
    leader's call still returns its value, and later calls are hits."""
    cache = pc.LocalCache(tmp_path / "s")
    go = threading.Event()
    started = threading.Event()

    @cache(name="f")
    async def f(x):
        started.set()
        while not go.is_set():
            await asyncio.sleep(0.01)
        return x

    res = {}
    lead = threading.Thread(target=lambda: res.setdefault("lead", asyncio.run(f(9))))
    lead.start()
    assert started.wait(5)

    async def give_up():
        try:
            await asyncio.wait_for(f(9), 0.1)
        except asyncio.TimeoutError:
            return "timed out"

    assert asyncio.run(give_up()) == "timed out"  # its loop is closed now
    go.set()
    lead.join(10)
    assert res == {"lead": 9}
    assert asyncio.run(f(9)) == 9
    assert f.cache_info().hits >= 1, "stored by the leader"


# Re-entry (a task awaiting its own key): test_identity.py::test_reentrant_same_key_async_call_never_hangs.


def test_a_huge_lease_timeout_means_no_end_not_a_crash(tmp_path):
    """A finite but huge lease_timeout (1e300 s) panicked converting it to a
    Duration (a CacheError "internal error" from every miss); now it waits
    as long as it takes, as an unbounded timeout would."""
    cache = pc.LocalCache(tmp_path / "s", lease_timeout=1e300, strict=True)

    @cache
    def f(x):
        return x + 1

    @cache
    async def g(x):
        return x + 2

    assert (f(1), f(1)) == (2, 2)
    assert asyncio.run(g(1)) == 3
    assert f.cache_info().hits == 1
