"""A cache server that accepts connections and never answers (a black hole
on a loopback port) costs a decorated call at most the connect timeout plus
the statement timeout (set here in the URL: ``?timeout=0.3&connect_timeout=0.3``),
and most calls nothing: the store is skipped between tries. Every call
returns the function's own value.

Bounds under test (upper bounds; MARGIN is slack for a loaded machine):
a call takes less than ``2 * 0.3 s + MARGIN``; at least half of the calls
(those between tries) take less than ``FAST``."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import picocache as pc

TIMEOUT = 0.3
MARGIN = 1.5
FAST = 0.1


@pytest.fixture
def black_hole():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    held: list = []
    stop = threading.Event()

    def run() -> None:
        s.settimeout(0.05)
        while not stop.is_set():
            try:
                c, _ = s.accept()
            except OSError:
                continue
            held.append(c)  # never read, never answered

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield s.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    s.close()


@pytest.mark.parametrize("scheme", ["redis://127.0.0.1:{}/0", "postgresql://u:p@127.0.0.1:{}/db",
                                    "mysql://u:p@127.0.0.1:{}/db"])
def test_a_black_hole_never_blocks_a_call_long(scheme, black_hole):
    url = scheme.format(black_hole) + f"?timeout={TIMEOUT}&connect_timeout={TIMEOUT}"
    c = pc.RedisCache(url) if url.startswith("redis") else pc.SQLAlchemyCache(url)

    @c
    def f(x):
        return x + 1

    took = []
    for i in range(10):
        t = time.monotonic()
        assert f(i) == i + 1
        took.append(time.monotonic() - t)
        time.sleep(0.15)
    assert max(took) < 2 * TIMEOUT + MARGIN, took
    assert sum(t < FAST for t in took) >= len(took) // 2, took
