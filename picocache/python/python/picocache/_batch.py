"""``f.map`` and ``f.starmap``: many calls of a cached function in one
round trip to the store (issue 18).

All the calls' keys are looked up in one ``get_many``; only the misses run
(each distinct call once, in order, or in the ``executor`` given); their
results are stored in one ``put_many``; the results come back in the order
of the inputs. A call that raises is not stored: the results computed
before it are, and the first exception (in input order) is raised. Each
input counts as a hit (served from the store, or a repeat of an earlier
input) or a miss (run), as separate calls would. No per-key lease is taken:
two processes mapping the same new inputs at once may both compute them.
"""

from __future__ import annotations

from . import _native

TYPE_CHECKING = False  # typing is imported by type checkers only (import time)
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, List, Optional, Tuple


def run_batch(st: Any, func: Callable, calls: List[Tuple[tuple, dict]], key_of: Callable,
              loads: Callable, dumps: Callable, fail: Callable, executor: Optional[Any],
              cache_error: type, rejected_error: type, submit: Optional[Callable] = None) -> list:
    """The results of ``func(*args, **kwargs)`` for each of ``calls``."""
    if not calls:
        return []
    try:
        ns = st.namespace()
    except cache_error as e:
        fail(e, "opening the store")
        ns = None
    if ns is None or st.maxsize == 0:
        out = []
        for a, kw in calls:
            st.counts.miss()
            out.append(func(*a, **kw))
        return out
    keys = [key_of(ns, a, kw) for a, kw in calls]  # TypeError: as a call would raise
    first: dict = {}
    for k, call in zip(keys, calls):
        first.setdefault(k, call)
    values: dict = {}
    try:
        got = ns.get_many(list(first))
    except rejected_error as e:
        # Reported (or raised, strict) once; the other entries are still good.
        fail(e, "a lookup")
        got = []
        for k in first:
            try:
                got.append(ns.get(k, True))
            except cache_error:
                got.append(None)
    except cache_error as e:
        fail(e, "a lookup")
        got = [None] * len(first)
    raws: dict = {}  # the stored bytes of each value, to decode a copy for a repeat
    for k, raw in zip(first, got):
        if raw is not None:
            try:
                values[k] = loads(raw)
                raws[k] = raw
            except Exception:  # noqa: BLE001 - an unreadable value is a miss
                pass
    todo = [k for k in first if k not in values]
    error: Optional[BaseException] = None
    fresh: list = []
    if executor is not None:
        target = submit or func
        futures = [(k, executor.submit(target, *first[k][0], **first[k][1])) for k in todo]
        for k, fut in futures:
            try:
                values[k] = fut.result()
                fresh.append(k)
            except Exception as e:  # noqa: BLE001 - raised after storing the rest
                error = error or e
    else:
        for k in todo:
            try:
                values[k] = func(*first[k][0], **first[k][1])
                fresh.append(k)
            except Exception as e:  # noqa: BLE001
                error = e
                break
    items = []
    for k in fresh:
        try:
            data = dumps(values[k])
            items.append((k, data))
            raws[k] = data
        except Exception as e:  # noqa: BLE001
            fail(cache_error(f"the result cannot be serialized: {e!r}"), "storing a result")
    if items:
        try:
            ns.put_many(items)
        except cache_error as e:
            fail(e, "storing results")
    out = []
    uncounted = set(fresh)  # a set: `in` on the list made 100,000 inputs take minutes
    given: set = set()
    for k in keys:
        if k not in values:  # not reached: an earlier call raised
            break
        if k in uncounted:
            uncounted.discard(k)
            st.counts.miss()
        else:
            st.counts.hit()
        v = values[k]
        if k in given and not _native.is_immutable(v):
            # A repeat of an input gets its own copy, as a separate call's
            # hit would: a caller's change of one result never reaches another.
            v = _copy_of(v, raws.get(k), loads)
        given.add(k)
        out.append(v)
    if error is not None:
        raise error
    return out


def _copy_of(v: Any, raw: Any, loads: Callable) -> Any:
    """A new copy of the mutable result ``v``: decoded again from its stored
    bytes ``raw``, or a deep copy."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            return loads(raw)
        except Exception:  # noqa: BLE001 - fall back to a deep copy
            pass
    import copy

    try:
        return copy.deepcopy(v)
    except Exception:  # noqa: BLE001 - nothing better: the same object, as before
        return v


def as_calls(iterable: Iterable[Any], star: bool) -> List[Tuple[tuple, dict]]:
    """``map``'s inputs (one argument each) or ``starmap``'s (a tuple of
    arguments each) as (args, kwargs) pairs."""
    if star:
        return [(tuple(a), {}) for a in iterable]
    return [((a,), {}) for a in iterable]
