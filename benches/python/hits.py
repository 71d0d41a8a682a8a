#!/usr/bin/env python3
"""In-process hit cost, one run, beside in-memory caches (issue 16).

    pip install cachebox            # into the venv that has picocache built (maturin develop --release)
    python benches/python/hits.py

A function of an int and a str returning 100 bytes; 20,000 keys stored, then
each called again; the best of 7 passes, per call. LocalCache finds a repeat
hit by the argument objects (the native wrapper's front table) and serves it
after one read of the store's index confirms the record is live.
"immutable result": a str, handed out as kept; "mutable result": a list of a
str, a new shallow copy at each hit; "nested mutable result": a list of a
list, unpickled at each hit from bytes kept in the process.
Prints a Markdown table; the ratio column is against functools.lru_cache."""

import functools, tempfile, time, sys
import cachebox
import picocache as pc
N = 20000
def body(i, s): return "x" * 100
def mbody(i, s): return ["x" * 100]
def nbody(i, s): return [["x" * 100]]
args = [(i, "k%d" % i) for i in range(N)]
c = pc.LocalCache(tempfile.mkdtemp())
contenders = {
    "functools.lru_cache": functools.lru_cache(maxsize=None)(body),
    "cachebox @cached (LRUCache)": cachebox.cached(cachebox.LRUCache(0))(body),
    "LocalCache (immutable result)": c(body),
    "LocalCache (mutable result)": c(mbody),
    "LocalCache (nested mutable result)": c(nbody),
}
def run(fn):
    for a in args: fn(*a)
    best = 1e9
    for _ in range(7):
        t = time.perf_counter()
        for a in args: fn(*a)
        best = min(best, (time.perf_counter() - t) / N)
    return best * 1e6
base = None
for name, fn in contenders.items():
    us = run(fn)
    base = base or us
    print(f"| {name} | {us:.3f} us | {us/base:.1f}x |")
