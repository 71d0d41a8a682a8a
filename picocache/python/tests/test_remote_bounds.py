"""Remote caches cost a bounded delay whatever the server does (issue 13,
from Python): a server that accepts connections and never answers, the
constructor's timeouts, and values too large to store."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

import picocache as pc
from conftest import REDIS, need, uid


class BlackHole:
    """A TCP endpoint that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list = []
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.held.append(c)
            except OSError:
                return

    def close(self) -> None:
        self.stop = True
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture
def hole():
    h = BlackHole()
    yield h
    h.close()


def _caches(port: int):
    opts = {"timeout": 0.3, "connect_timeout": 0.3}
    return {
        "redis": pc.RedisCache(f"redis://127.0.0.1:{port}/0", namespace="bh" + uid(), **opts),
        "postgres": pc.SQLAlchemyCache(f"postgresql://u:p@127.0.0.1:{port}/db", table_name="t_" + uid(), **opts),
        "mysql": pc.SQLAlchemyCache(f"mysql://u:p@127.0.0.1:{port}/db", table_name="t_" + uid(), **opts),
    }


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql"])
def test_a_server_that_never_answers_costs_a_bounded_delay(kind, hole, caplog):
    cache = _caches(hole.port)[kind]
    calls = []

    @cache
    def f(x):
        calls.append(x)
        return x * 2

    longest = 0.0
    with caplog.at_level(logging.WARNING, logger="picocache"):
        for i in range(20):
            t0 = time.monotonic()
            assert f(i) == i * 2
            longest = max(longest, time.monotonic() - t0)
    assert calls == list(range(20))
    # The bound under test: one connect or operation timeout (0.3 s) per
    # try, a few tries at most in a call, plus scheduling margin.
    assert longest < 2.0, f"{kind}: a call took {longest:.2f} s"
    assert "unavailable" in caplog.text


def test_options_are_checked():
    with pytest.raises(ValueError):
        pc.RedisCache("redis://127.0.0.1:1/0", timeout=0)
    with pytest.raises(ValueError):
        pc.SQLAlchemyCache("postgresql://u@h/db", pool_size=0)


def test_a_value_too_large_is_reported_once_and_the_store_stays_usable(caplog):
    url = need("PICOCACHE_REDIS_URL", REDIS)
    cache = pc.RedisCache(url, namespace="big" + uid(), max_value_size=4096)
    calls = []

    @cache
    def f(n):
        calls.append(n)
        return b"x" * n

    with caplog.at_level(logging.WARNING, logger="picocache"):
        for _ in range(3):
            assert f(100_000) == b"x" * 100_000  # too large: computed each time
        assert f(10) == b"x" * 10 and f(10) == b"x" * 10  # small: cached
    assert calls == [100_000] * 3 + [10]
    too_large = [r for r in caplog.records if "too large" in r.getMessage()]
    assert len(too_large) == 1, caplog.text
