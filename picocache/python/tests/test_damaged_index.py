"""A LocalCache whose index another process damages while it runs (issue 12,
item 3, from Python): 4 KiB of bytes written over the namespace table, the
buckets or the entries. Every call returns its own value, before and after,
in the damaged process and in a fresh one; what the damage hid is computed
again, never replaced by another value."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import sys, picocache
    cache = picocache.LocalCache(sys.argv[1], secret="damage-test")
    runs = []
    @cache(name="damage.blob")
    def blob(i):
        runs.append(i)
        return (i, str(i) * 50)
    N = 300
    want = [(i, str(i) * 50) for i in range(N)]
    assert [blob(i) for i in range(N)] == want
    print("READY", flush=True)
    sys.stdin.readline()            # the index is damaged meanwhile
    runs.clear()
    for _ in range(30):
        assert [blob(i) for i in range(N)] == want
    print(f"CHILD OK: {len(runs)} of {30 * N} calls recomputed", flush=True)
""")

# FORMAT.md: a 4 KiB header, 1,024 namespace rows of 384 bytes, 4,096 segment
# rows of 40 bytes, then B buckets of 16 bytes and 3B/4 entries of 48 bytes.
BUCKETS_AT = 4096 + 1024 * 384 + 4096 * 40


@pytest.mark.parametrize("region", ["namespace table", "buckets", "entries"])
def test_an_index_damaged_under_a_running_cache(tmp_path, region):
    store = tmp_path / "s"
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(store)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "READY", p.stderr.read()
        index = store / "index"
        size = os.path.getsize(index)
        off = {"namespace table": 4096, "buckets": BUCKETS_AT,
               "entries": BUCKETS_AT + 16 * ((size - BUCKETS_AT) // 52)}[region]
        with open(index, "r+b") as f:     # another process's bytes
            f.seek(off)
            f.write(os.urandom(4096))
        p.stdin.write("go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "CHILD OK" in out, (p.returncode, out, err)
    print(region, out.strip())
    # A fresh process: every value right.
    r = subprocess.run([sys.executable, "-c", CHILD.replace("sys.stdin.readline()", "pass"),
                        str(store)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "CHILD OK" in r.stdout, (r.stdout, r.stderr)
