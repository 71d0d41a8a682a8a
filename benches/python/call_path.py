#!/usr/bin/env python3
"""The call path of a hit, A/B (issue 16): the same LocalCache hits through
vectorcall (the default) or through ``__call__`` (``PICOCACHE_NO_VECTORCALL=1``:
the wrapper class is left without vectorcall), beside functools.lru_cache,
for three ways of calling: ``f(*a)``, ``f(i, s)``, ``f(i)``; 20,000 keys,
best of 7 passes, per call. The last column is a no-op lambda called the
same way (the loop's own cost).

    .venv/bin/python benches/python/call_path.py
    PICOCACHE_NO_VECTORCALL=1 .venv/bin/python benches/python/call_path.py
"""

import functools, os, tempfile, time
import picocache

if os.environ.get("PICOCACHE_NO_VECTORCALL"):
    picocache._state._CachedFunction._install_vectorcall = lambda self: False

c = picocache.LocalCache(tempfile.mkdtemp())
def body(i, s): return "x" * 100
def one(x): return "x" * 100
f, g = c(body), functools.lru_cache(maxsize=None)(body)
f1, g1 = c(one), functools.lru_cache(maxsize=None)(one)
N = 20000
args = [(i, "k%d" % i) for i in range(N)]
ints = list(range(N))
def star(fn):
    for a in args: fn(*a)
def direct(fn):
    for i, s in args: fn(i, s)
def single(fn):
    for i in ints: fn(i)
for fn in (f, g, f1, g1):
    for _ in range(2):
        (single if fn in (f1, g1) else star)(fn)
def best(loop, fn, reps=7):
    b = 1e9
    for _ in range(reps):
        t = time.perf_counter(); loop(fn); b = min(b, time.perf_counter() - t)
    return b / N * 1e6
for name, loop, pc, lru in (("f(*a)", star, f, g), ("f(i, s)", direct, f, g), ("f(i)", single, f1, g1)):
    base = best(loop, (lambda *a: None))
    p = best(loop, pc); l = best(loop, lru)
    print(f"{name:8s} picocache {p:.3f} us  lru {l:.3f} us  ratio {p/l:.2f}  (no-op lambda {base:.3f})")
