"""Remote caches cost a bounded delay whatever the server does (issue 13,
from Python): a server that accepts connections and never answers, one
that answers every statement just under the timeout, the constructor's
timeouts, and values too large to store."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

import picocache as pc
from conftest import MYSQL, POSTGRES, REDIS, need, uid


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


class SlowProxy:
    """A TCP proxy to a real server whose answers reach the client `delay`
    seconds after the server sent them (in order, on the same connections)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.delay = 0.0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list = []
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop:
            try:
                client, _ = self.sock.accept()
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                return
            server.settimeout(None)
            self.conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src, dst, late: bool) -> None:
        import queue

        q: queue.Queue = queue.Queue()

        def deliver() -> None:
            while True:
                due, data = q.get()
                if data is None:
                    break
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    dst.sendall(data)
                except OSError:
                    break
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        if late:
            threading.Thread(target=deliver, daemon=True).start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if late:
                q.put((time.monotonic() + self.delay, data))
            else:
                try:
                    dst.sendall(data)
                except OSError:
                    break
        if late:
            q.put((0.0, None))
        else:
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def url_for(self, url: str) -> str:
        scheme, rest = url.split("://", 1)
        auth, _, tail = rest.rpartition("@")
        hostport, sep, path = tail.partition("/")
        return f"{scheme}://{auth + '@' if auth else ''}127.0.0.1:{self.port}{sep}{path}"

    def close(self) -> None:
        self.stop = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def _host_port(url: str) -> tuple[str, int]:
    tail = url.split("://", 1)[1].rpartition("@")[2]
    host, _, port = tail.split("/", 1)[0].partition(":")
    return host, int(port)


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql"])
def test_answers_just_under_the_timeout_cost_a_call_a_bounded_delay(kind, caplog):
    """Every answer 0.8 x timeout late: each operation of a call ends within
    its timeout in total (not one timeout per statement), so a call that
    misses waits for the server at most connect_timeout + 5 x timeout (its
    function's first call, which opens the function's namespace, one
    timeout more), as the README's options table says."""
    var, value = {
        "redis": ("PICOCACHE_REDIS_URL", REDIS),
        "postgres": ("PICOCACHE_POSTGRES_URL", POSTGRES),
        "mysql": ("PICOCACHE_MYSQL_URL", MYSQL),
    }[kind]
    url = need(var, value)
    proxy = SlowProxy(*_host_port(url))
    timeout, margin = 1.0, 1.5
    opts = {"timeout": timeout, "connect_timeout": timeout, "backoff": 0.3, "backoff_max": 0.3}
    try:
        if kind == "redis":
            cache = pc.RedisCache(proxy.url_for(url), namespace="slow" + uid(), **opts)
        else:
            cache = pc.SQLAlchemyCache(proxy.url_for(url), table_name="slow_" + uid(), **opts)
        calls = []

        @cache
        def warm(x):
            calls.append(x)
            return x + 1

        assert warm(0) == 1 and warm(0) == 1, kind  # its namespace, on a fast link

        @cache
        def first(x):
            return x * 3

        proxy.delay = 0.8 * timeout
        took = {}
        with caplog.at_level(logging.WARNING, logger="picocache"):
            t0 = time.monotonic()
            assert warm(1) == 2
            took["miss"] = time.monotonic() - t0
            time.sleep(0.5)  # the back-off window, if the miss tripped it
            t0 = time.monotonic()
            assert first(1) == 3
            took["first call"] = time.monotonic() - t0
        print(f"{kind}: answers {proxy.delay:.1f} s late, timeout {timeout} s: {took}")
        assert took["miss"] < timeout + 5 * timeout + margin, (kind, took)
        assert took["first call"] < timeout + 6 * timeout + margin, (kind, took)
    finally:
        proxy.close()
