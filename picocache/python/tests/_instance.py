"""A server of its own for one test (tests/servers/instance.sh): PostgreSQL
or MariaDB on a free loopback port, in its own state dir, with extra server
options; stopped and deleted afterwards. The shared servers of start.sh are
never touched. Missing server binaries skip the test visibly, and fail it
when ``CI`` is set (a CI run must run every fault test)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Iterator

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SCRIPT = os.path.join(ROOT, "tests", "servers", "instance.sh")
NOT_INSTALLED = 77


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cannot_run(msg: str) -> None:
    msg = "SKIPPED LOUDLY: " + msg
    print(msg, file=sys.stderr)
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI is set: every fault test must run)")
    pytest.skip(msg)


@contextlib.contextmanager
def server(kind: str, *options: str) -> Iterator[tuple[str, int]]:
    """Starts a ``kind`` ("postgres" or "mysql") server with ``options``;
    yields the picocache user's URL and the port."""
    # Directly under /tmp: the postgres user must reach the data dir, and
    # pytest's tmp_path lives in a private directory.
    state = tempfile.mkdtemp(prefix=f"picocache-{kind}-")
    port = free_port()
    r = subprocess.run(["bash", SCRIPT, "start", kind, state, str(port), *options],
                       capture_output=True, text=True, timeout=300)
    if r.returncode == NOT_INSTALLED:
        shutil.rmtree(state, ignore_errors=True)
        _cannot_run(f"{kind} is not installed: {r.stderr.strip()}")
    try:
        assert r.returncode == 0, f"instance.sh start {kind} failed:\n{r.stderr[-3000:]}"
        yield r.stdout.strip(), port
    finally:
        s = subprocess.run(["bash", SCRIPT, "stop", kind, state, str(port)],
                           capture_output=True, text=True, timeout=300)
        if s.returncode != 0:
            print(f"instance.sh stop {kind} failed:\n{s.stderr[-3000:]}", file=sys.stderr)
        shutil.rmtree(state, ignore_errors=True)
