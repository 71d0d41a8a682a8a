"""Fault endpoints and connection counters shared by the remote fault tests
(issue 13): a black hole that counts the connections it holds, a slow proxy
that counts the connections it carries, and a watcher that samples a real
server's own count of a set of processes' connections.

Every test prints its figures on a line starting with ``FIGURE`` (run pytest
with ``-s``): the fault, the longest call, the most connections seen, and
the bound asserted."""

from __future__ import annotations

import os
import queue
import selectors
import socket
import threading
import time
from typing import Callable, Iterable


def established(port: int) -> int:
    """The kernel's count of this host's established TCP connections whose
    local port is `port` (an endpoint's accepted connections): a client's
    close shows at once (the endpoint's side leaves ESTABLISHED), whatever
    the endpoint's own threads have handled yet."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except (OSError, StopIteration):
            continue
    return n


class BlackHole:
    """A TCP endpoint that accepts connections and never answers. What a
    client sends is read and dropped (never answered), so that a client's
    close is seen: ``open`` is the number of connections held now,
    ``accepted`` the number accepted in all, ``most`` the most established at
    once (the kernel's count at each accept, so a client's close is seen even
    before this endpoint's thread reads it)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.open = self.most = self.accepted = 0
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.05):
                s = key.fileobj
                if s is self.sock:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self._sel.register(c, selectors.EVENT_READ)
                    self.accepted += 1
                    self.open += 1
                    self.most = max(self.most, established(self.port))
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # the client closed it
                    self._sel.unregister(s)
                    s.close()
                    self.open -= 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()


class SlowProxy:
    """A TCP proxy to a real server whose answers reach the client `delay`
    seconds after the server sent them (in order, on the same connections).
    ``open`` counts the client connections carried now, ``accepted`` all of
    them, ``most`` the most established at once (the kernel's count at each
    accept, as for BlackHole)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.delay = 0.0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.conns: list = []
        self.open = self.most = self.accepted = 0
        self._lock = threading.Lock()
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
            with self._lock:
                self.accepted += 1
                self.open += 1
                self.most = max(self.most, established(self.port))
            self.conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src, dst, late: bool) -> None:
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
        else:  # the client closed its connection
            with self._lock:
                self.open -= 1
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


def host_port(url: str) -> tuple[str, int]:
    tail = url.split("://", 1)[1].rpartition("@")[2]
    host, _, port = tail.split("/", 1)[0].partition(":")
    return host, int(port)


def local_ports(pids: Iterable[int]) -> set[int]:
    """The local TCP ports of the sockets the processes `pids` hold (from
    /proc): to tell their connections from anyone else's in a server's own
    list of clients."""
    inodes: set[str] = set()
    pids = list(pids)
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    if not inodes or not pids:
        return ports
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pids[0]}/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[9] in inodes:
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration):
            continue
    return ports


class Watcher:
    """Samples ``count()`` every ``every`` seconds on a thread of its own
    until stopped; ``count`` opens its own monitoring connection (``connect``)
    and must not count it. A failed sample (the server is down) reconnects
    at the next one. ``most`` is the largest count seen."""

    def __init__(self, connect: Callable[[], object], count: Callable[[object], int], every: float = 0.01):
        self.connect, self.count, self.every = connect, count, every
        self.most = self.samples = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.connect()
                n = self.count(conn)
                self.most = max(self.most, n)
                self.samples += 1
            except Exception:
                self.failed += 1
                try:
                    if conn is not None:
                        conn.close()
                except Exception:
                    pass
                conn = None
                time.sleep(0.05)
            time.sleep(self.every)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def redis_watcher(url: str, pids: Callable[[], Iterable[int]]) -> Watcher:
    """The Redis server's own count (CLIENT LIST) of the connections of the
    processes ``pids()``; the watcher's connection is not theirs."""
    import redis

    def connect():
        return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def count(r) -> int:
        ports = local_ports(pids())
        return sum(1 for c in r.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports)

    return Watcher(connect, count)


def postgres_watcher(url: str, pids: Callable[[], Iterable[int]]) -> Watcher:
    """The PostgreSQL server's own count (pg_stat_activity, the test's
    database and user, not the watcher's backend) of the connections of the
    processes ``pids()``."""
    import psycopg

    def connect():
        return psycopg.connect(url, autocommit=True, connect_timeout=2)

    def count(c) -> int:
        ports = local_ports(pids())
        rows = c.execute("SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                         "AND usename = current_user AND pid <> pg_backend_pid()").fetchall()
        return sum(1 for (p,) in rows if p in ports)

    return Watcher(connect, count)


def mysql_watcher(url: str) -> Watcher:
    """The MariaDB server's own count (information_schema.PROCESSLIST) of
    the URL user's connections, not the watcher's own: for a server of the
    test's own, where that user is the test's alone."""
    import pymysql

    _, port = host_port(url)
    rest = url.split("://", 1)[1]
    auth, _, tail = rest.rpartition("@")
    user, _, password = auth.partition(":")
    db = tail.split("/", 1)[1].split("?")[0]

    def connect():
        return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, database=db,
                               connect_timeout=2, autocommit=True)

    def count(c) -> int:
        with c.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        "WHERE USER = %s AND ID <> CONNECTION_ID()", (user,))
            return int(cur.fetchone()[0])

    return Watcher(connect, count)


def figure(fault: str, backend: str, longest: float, most: int, bound: int, extra: str = "") -> None:
    """The line of figures of one fault test."""
    print(f"\nFIGURE fault={fault} backend={backend} longest_call={longest:.3f}s "
          f"most_connections={most} bound={bound}" + (f" ({extra})" if extra else ""), flush=True)
