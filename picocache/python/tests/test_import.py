"""`import picocache` loads only what it needs (issue 16): asyncio, inspect,
tempfile, typing, logging, hashlib, pickle's Python module, enum, re and
urllib come when first used, not at import."""

from __future__ import annotations

import subprocess
import sys


LAZY = ("asyncio", "inspect", "tempfile", "sqlalchemy", "django", "typing", "logging", "hashlib", "threading",
        "pickle", "enum", "re", "urllib.parse")


def test_import_does_not_load_what_a_call_may_never_need():
    code = ("import sys, picocache; "
            f"print(','.join(m for m in {LAZY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", r.stdout


def test_async_functions_still_work_when_asyncio_comes_later(tmp_path):
    code = f"""
import picocache
cache = picocache.LocalCache({str(tmp_path / 's')!r})
calls = []
@cache
async def f(x):
    calls.append(x)
    return x + 1
import asyncio
assert asyncio.run(f(1)) == 2 and asyncio.run(f(1)) == 2 and calls == [1]
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "ok", r.stderr


def test_first_use_works_without_the_lazy_modules_preloaded(tmp_path):
    """Everything a decorated call needs is imported on the way: naming
    (hashlib), an enum argument, a warning through logging, CacheInfo."""
    code = f"""
import sys, picocache
cache = picocache.LocalCache({str(tmp_path / 's')!r})
@cache
def f(x):
    return (x, 1)
assert f(2) == (2, 1) and f(2) == (2, 1)
assert f.cache_info() == picocache.CacheInfo(1, 1, None, 1)
assert f.cache_info().hits == 1 and type(f.cache_info()).__name__ == "CacheInfo"
import enum
class Color(enum.Enum):
    RED = 1
    BLUE = 2
assert f(Color.RED) != f(Color.BLUE)
assert f(10**20) == (10**20, 1)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "ok", r.stderr
