"""`import picocache` loads only what it needs (issue 16): asyncio, inspect
and tempfile come when first used, not at import."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_load_asyncio_inspect_or_tempfile():
    code = ("import sys, picocache; "
            "print(','.join(m for m in ('asyncio', 'inspect', 'tempfile', 'sqlalchemy', 'django') "
            "if m in sys.modules))")
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
