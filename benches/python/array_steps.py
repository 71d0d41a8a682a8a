#!/usr/bin/env python3
"""Where a 100 MB value's time goes (issue 18): each step of a PicoCache
``LocalCache`` miss and hit timed alone, in one process, median [min-max]
of ``PICOCACHE_ARRAY_REPEAT`` runs (default 5). From the repository root::

    .venv/bin/python benches/python/array_steps.py

The value is ``plus_one``'s result in ``benches/python/arrays.py``: a float64
array of ``PICOCACHE_ARRAY_MB`` MB (default 100). Steps:

- ``key``: the call's key (the BLAKE3 content digest of the argument);
- ``dumps``: the default value serializer (pickle protocol 5, the array's
  data out of band; ``parts`` when it returns the pieces unjoined);
- ``seal``: ``_native.Sealer.seal`` of the value (what the Python-written
  backends do; the native ones seal inside ``put``), returned as bytes;
- ``put``: ``Namespace.put`` into the local engine (seal, record, write),
  each run after ``os.sync()`` (not timed);
- ``get``: ``Namespace.get``: the record read, its crc and seal checked,
  the value handed to Python;
- ``loads``: the value decoded (writable arrays; ``loads_readonly``:
  read-only arrays, ``mmap_mode="r"``);
- ``hit``/``hit, mmap_mode="r"``: the whole decorated call on a warm cache;
- ``miss+store``: the whole decorated call on a fresh cache (minus nothing:
  the body ``a + 1`` is in it);
- for scale: numpy ``a.copy()`` and ``hashlib.sha256`` of the array.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from arrays import MB, REPEAT, array, plus_one  # noqa: E402


def med(f, setup=None, n=REPEAT):
    xs = []
    for _ in range(n):
        if setup is not None:
            setup()
        t = time.perf_counter()
        f()
        xs.append((time.perf_counter() - t) * 1e3)
    return statistics.median(xs), min(xs), max(xs)


def main() -> None:
    import numpy as np
    import picocache
    from picocache import _native, _values

    a = array(1)
    value = plus_one(a)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        cache = picocache.LocalCache(os.path.join(d, "steps"))
        f = cache(plus_one)
        f(a)  # opens the namespace
        st = f.__picocache_state__
        ns = st.namespace()
        rows.append(("key", med(lambda: ns.key((a,), None))))
        rows.append(("dumps", med(lambda: _values.dumps(value))))
        data = _values.dumps(value)
        if hasattr(_values, "dumps_parts"):
            rows.append(("dumps_parts (no join)", med(lambda: _values.dumps_parts(value))))
        sealer = _native.Sealer([b"bench-secret"])
        joined = data if isinstance(data, (bytes, bytearray)) else b"".join(data)
        rows.append(("seal (Sealer.seal, bytes out)", med(lambda: sealer.seal("ns", b"k", joined))))
        k = b"bench-key"
        rows.append(("put (engine, sealed)", med(lambda: ns.put(k, data), setup=os.sync)))
        rows.append(("get (engine, checked, bytes out)", med(lambda: ns.get(k))))
        raw = ns.get(k)
        rows.append(("loads (writable)", med(lambda: _values.loads(raw))))
        rows.append(("loads_readonly", med(lambda: _values.loads_readonly(raw))))
        assert np.array_equal(_values.loads(raw), value)
        rows.append(("hit, copied (the call)", med(lambda: f(a))))
        g = cache(mmap_mode="r")(plus_one)
        g(a)
        rows.append(('hit, mmap_mode="r" (the call)', med(lambda: g(a))))
        n = [0]

        def fresh():
            n[0] += 1
            os.sync()

        def miss():
            h = picocache.LocalCache(os.path.join(d, f"fresh{n[0]}"))(plus_one)
            h(a)

        rows.append(("miss+store (the call, fresh cache)", med(miss, setup=fresh)))
        rows.append(("body alone (a + 1)", med(lambda: plus_one(a))))
        rows.append(("numpy a.copy()", med(lambda: a.copy())))
        rows.append(("hashlib.sha256 of the array", med(lambda: hashlib.sha256(a).digest())))
    print(f"{MB} MB float64, median [min-max] of {REPEAT}, load {os.getloadavg()[0]:.1f}")
    print("| step | ms |\n|---|---|")
    for name, (m, lo, hi) in rows:
        print(f"| {name} | {m:.1f} [{lo:.1f}-{hi:.1f}] |")


if __name__ == "__main__":
    main()
