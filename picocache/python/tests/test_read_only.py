"""A LocalCache on read-only media (issue 12, item C, from Python): hits are
served, misses compute without storing, and one warning says why. Uses a
real tmpfs remounted read-only, so it needs root (CI runs as root; a run
that cannot mount says so and, in CI, fails)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

FILL = textwrap.dedent("""
    import sys, picocache
    cache = picocache.LocalCache(sys.argv[1], secret="ro-test")
    @cache(name="ro.square")
    def square(x):
        return x * x
    for i in range(50):
        square(i)
""")

READ = textwrap.dedent("""
    import logging, sys, picocache
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    cache = picocache.LocalCache(sys.argv[1], secret="ro-test")
    runs = []
    @cache(name="ro.square")
    def square(x):
        runs.append(x)
        return x * x
    assert [square(i) for i in range(50)] == [i * i for i in range(50)]
    assert runs == [], runs            # every stored entry is served
    assert [square(i) for i in range(100, 140)] == [i * i for i in range(100, 140)]
    assert [square(i) for i in range(100, 140)] == [i * i for i in range(100, 140)]
    assert len(runs) == 80, len(runs)  # misses compute, nothing is stored
    print("ok")
""")


def _mount(path) -> bool:
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_read_only_store_serves_hits_and_warns_once(tmp_path):
    mnt = tmp_path / "mnt"
    if not _mount(mnt):
        msg = "SKIPPED LOUDLY: cannot mount a tmpfs (not root?): the read-only store test did not run"
        print(msg, file=sys.stderr)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        store = mnt / "store"
        subprocess.run([sys.executable, "-c", FILL, str(store)], check=True, timeout=60)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        r = subprocess.run([sys.executable, "-c", READ, str(store)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "ok"
        warnings = [line for line in r.stderr.splitlines() if line.startswith("WARNING")]
        assert len(warnings) == 1, r.stderr
        assert "read-only" in warnings[0] and "stores nothing" in warnings[0]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
