"""The wrapper of a memoized ``async def`` function: the synchronous
wrapper's steps (``_core``), with the store's blocking calls moved to a
thread where the client blocks, and flights waited for with a callback,
never by blocking the event loop."""

from __future__ import annotations

import functools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

from . import _native
from ._native import CacheError, CacheRejected
from ._state import _MISS, _explain_key_error


def _waker(loop: Any, done: Any) -> Callable[[], None]:
    """What a flight's leader calls as it finishes (in its own thread) to
    wake a task of ``loop`` waiting on the future ``done``."""

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(resolve)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    return wake


def async_wrapper(owner: Any, st: Any, func: Callable, typed: bool, fast: bool, lookup_raw: Callable,
                  decode: Callable, encode_or_explain: Callable, store: Callable, fail: Callable) -> Callable:
    """The wrapper of ``func`` (a coroutine function) for the function state
    ``st`` of the cache ``owner``, with ``_core``'s closures for one
    function: the lookup, decoding, key encoding, store and failure
    report."""
    import asyncio  # only for async functions (importing it costs ~40 ms)

    blocking = owner._blocking_io

    async def io(fn: Callable, *a: Any) -> Any:
        # Django's and SQLAlchemy's clients block (and Django refuses
        # to touch a database from an event loop): run them in a thread.
        if blocking:
            return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *a))
        return fn(*a)

    async def awrapper(*args: Any, **kwargs: Any) -> Any:
        if st.maxsize == 0 or st.unnamed is not None:
            st.counts.miss()
            return await func(*args, **kwargs)
        try:
            k, raw = await io(lookup_raw, args, kwargs)
        except TypeError as e:
            if fast:
                raise _explain_key_error(func, typed, args, kwargs, e) from None
            raise
        except CacheRejected as e:
            # The store works: compute, and the result replaces the entry.
            fail(e, "a lookup")
            k, raw = None, None
        except CacheError as e:
            fail(e, "a lookup")
            st.counts.miss()
            return await func(*args, **kwargs)
        ns = st.ns
        if raw is not None:
            v = decode(raw, ns, k)
            if v is not _MISS:
                st.counts.hit()
                return v
        if k is None:
            k = encode_or_explain(ns, args, kwargs)
        # The process's flight table (the one the synchronous paths
        # use), joined as this task: another task of this event loop,
        # or of another thread's, computing the key is waited for
        # with a callback, never by blocking the loop.
        loop = asyncio.get_running_loop()
        task = id(asyncio.current_task())
        while True:
            role, fl = _native.flight_join(id(st.cache), st.store_name, k, task)
            if role == 0:
                break
            if role == 2:
                # Re-entrant: this task awaits its own computation of
                # this key; run the body (see compute_sync).
                st.counts.miss()
                return await func(*args, **kwargs)
            done = loop.create_future()
            fl.when_done(_waker(loop, done))
            try:
                # Bounded: a leader that never finishes (one forked
                # away mid-computation) is not waited for longer than
                # another process's lease would be.
                await asyncio.wait_for(asyncio.shield(done), owner.lease_timeout)
            except asyncio.TimeoutError:
                fl = None  # compute without leading
                break
            ok, v = fl.wait()  # done: does not block
            if ok:  # (only immutable results are handed over)
                st.counts.hit()
                return v
            # The leader failed, or its result is mutable: look again
            # (a copy of the stored value), else compute without
            # leading: the waiters of a failing computation fail side
            # by side, not one after the other.
            fl = None
            break
        try:
            # Another leader may have finished since our lookup.
            try:
                raw = await io(ns.get, k, True)
            except CacheError as e:
                fail(e, "a lookup")
                raw = None
            if raw is not None:
                v = decode(raw, ns, k)
                if v is not _MISS:
                    st.counts.hit()
                    if fl is not None:
                        fl.complete(v)
                    return v
            st.counts.miss()
            value = await func(*args, **kwargs)
            await io(store, ns, k, value)
            if fl is not None:
                fl.complete(value)
            return value
        finally:
            if fl is not None:
                fl.fail()  # (nothing if completed): the waiters try again

    return awrapper
