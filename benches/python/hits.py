#!/usr/bin/env python3
"""In-process hit cost, one run, beside in-memory caches (issue 16).

    pip install cachebox            # into the venv that has picocache built (maturin develop --release)
    python benches/python/hits.py

A function returning 100 bytes; 20,000 keys stored, then each called again;
the best of 7 passes, per call. Three ways of calling it: `f(i, s)` (an int
and a str, written out), `f(*a)` (the same arguments from a prepared tuple),
`f(i)` (a function of one int). LocalCache finds a repeat hit by the argument
objects (the native wrapper's front table) and serves it after one read of
the store's index confirms the record is live. "immutable result": a str,
handed out as kept; "mutable result": a list of a str, a new shallow copy at
each hit; "nested mutable result": a list of a list, unpickled at each hit
from bytes kept in the process. Prints a Markdown table; each ratio is
against functools.lru_cache called the same way."""

import functools, tempfile, time
import cachebox
import picocache as pc

N = 20000
args = [(i, "k%d" % i) for i in range(N)]
ints = list(range(N))


def body(i, s): return "x" * 100
def mbody(i, s): return ["x" * 100]
def nbody(i, s): return [["x" * 100]]
def body1(i): return "x" * 100
def mbody1(i): return ["x" * 100]
def nbody1(i): return [["x" * 100]]


def written(fn):
    for i, s in args: fn(i, s)
def star(fn):
    for a in args: fn(*a)
def one(fn):
    for i in ints: fn(i)


c = pc.LocalCache(tempfile.mkdtemp())
contenders = {
    "functools.lru_cache": lambda b: functools.lru_cache(maxsize=None)(b),
    "cachebox @cached (LRUCache)": lambda b: cachebox.cached(cachebox.LRUCache(0))(b),
    "LocalCache (immutable result)": c,
    "LocalCache (mutable result)": c,
    "LocalCache (nested mutable result)": c,
}
bodies = {"nested": (nbody, nbody1), "mutable": (mbody, mbody1)}


def best(loop, fn):
    loop(fn)
    b = 1e9
    for _ in range(7):
        t = time.perf_counter()
        loop(fn)
        b = min(b, (time.perf_counter() - t) / N)
    return b * 1e6


print("| per hit | `f(i, s)` | `f(*a)` | `f(i)` |")
print("|---|---|---|---|")
base = None
for name, make in contenders.items():
    two, single = next((v for k, v in bodies.items() if k in name), (body, body1))
    f2, f1 = make(two), make(single)
    row = [best(written, f2), best(star, f2), best(one, f1)]
    base = base or row
    cells = " | ".join(f"{us:.3f} us ({us / b:.1f}x)" for us, b in zip(row, base))
    print(f"| {name} | {cells} |")
