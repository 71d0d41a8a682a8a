"""A down remote server warns at most once a second per function, with a
count of the warnings it suppressed (issue 13; picocache/_state.py
``failed``): 50 calls well within a second to a closed port give exactly one
failure warning per function (and at most the cache object's one
"unreachable now" warning of its opening); a call more than a second later
warns again and says how many were suppressed."""

from __future__ import annotations

import logging
import re
import socket
import time

import pytest

import picocache as pc
from conftest import uid


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connections are refused at once
    return port


def _failures(records, label: str) -> list[str]:
    return [r.getMessage() for r in records
            if r.levelno >= logging.WARNING and "failed for" in r.getMessage() and label in r.getMessage()]


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql"])
def test_a_down_server_warns_once_a_second_per_function_with_a_suppressed_count(kind, caplog):
    port = _closed_port()
    if kind == "redis":
        cache = pc.RedisCache(f"redis://127.0.0.1:{port}/0", namespace="w" + uid())
    else:
        scheme = {"postgres": "postgresql", "mysql": "mysql"}[kind]
        cache = pc.SQLAlchemyCache(f"{scheme}://u:p@127.0.0.1:{port}/db", table_name="t_" + uid())
    n = "rate" + uid()

    @cache(name=n + ".f")
    def f(x):
        return x + 1

    @cache(name=n + ".g")
    def g(x):
        return x * 2

    with caplog.at_level(logging.WARNING, logger="picocache"):
        t0 = time.monotonic()
        for i in range(50):
            assert f(i) == i + 1
        for i in range(50):
            assert g(i) == i * 2
        took = time.monotonic() - t0
        burst = list(caplog.records)
        time.sleep(1.2)
        assert f(1000) == 1001
        assert g(1000) == 2000
    # The premise: the calls fail at once (a refused connection, then the
    # back-off window), well within the one-second window.
    assert took < 0.8, f"100 calls took {took:.2f} s: not well within a second"
    others = [r.getMessage() for r in burst
              if "failed for" not in r.getMessage() and r.levelno >= logging.WARNING]
    print(f"\n{kind}: 2 x 50 calls in {took:.3f} s: "
          f"{len(_failures(burst, n + '.f'))} warning(s) for f, {len(_failures(burst, n + '.g'))} for g, "
          f"other warnings {len(others)}")
    for name in (n + ".f", n + ".g"):
        first = _failures(burst, name)
        assert len(first) == 1, first  # exactly one in the burst
        assert "suppressed" not in first[0], first
        later = _failures(caplog.records, name)[1:]
        assert len(later) == 1, later  # the call 1.2 s later warns again
        m = re.search(r"\((\d+) more suppressed\)", later[0])
        assert m, later[0]
        # Every failed operation of the 49 other calls (a lookup at least;
        # also the first call's later operations) was counted.
        print(f"{kind} {name.rsplit('.', 1)[1]}: the warning 1.2 s later says {m.group(0)}")
        assert int(m.group(1)) >= 49, later[0]
    # Besides: at most the cache object's one "unreachable now" of its opening.
    assert len(others) <= 1 and all("unreachable" in o for o in others), others
