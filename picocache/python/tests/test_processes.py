"""Many processes share one cache: multiprocessing pools (fork and spawn)."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _workers  # noqa: E402

from conftest import REDIS, need  # noqa: E402


def location(kind, tmp_path):
    if kind == "local":
        return str(tmp_path / "store")
    if kind == "sqlite":
        return str(tmp_path / "c.db")
    return need("PICOCACHE_REDIS_URL", REDIS) + "|p" + uuid.uuid4().hex[:8]


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("kind", ["local", "sqlite", "redis"])
def test_pool_shares_cache(kind, method, tmp_path):
    loc = location(kind, tmp_path)
    log = str(tmp_path / "computed.log")
    # The parent uses the cache first, so forked children inherit open handles.
    assert _workers.cache_for(kind, loc)(0, log) == 0
    ctx = mp.get_context(method)
    jobs = [(kind, loc, log, x) for x in list(range(1, 13)) * 4]
    with ctx.Pool(4) as pool:
        results = pool.map(_workers.run, jobs, chunksize=1)
    assert all(v == x * x for x, v, _ in results)
    assert len({pid for _, _, pid in results}) > 1
    with open(log) as f:
        computed = [line.split()[1] for line in f]
    # Every key computed once across all processes (leases + a second look).
    assert sorted(computed, key=int) == [str(x) for x in range(13)]
    f = _workers.cache_for(kind, loc)
    assert f.cache_info().currsize == 13
    # A clear in one process is seen by every process.
    f.cache_clear()
    with ctx.Pool(2) as pool:
        pool.map(_workers.run, [(kind, loc, log, 5)] * 2)
    with open(log) as fh:
        assert [line.split()[1] for line in fh].count("5") == 2


def test_fork_child_uses_inherited_cache(tmp_path):
    if not hasattr(os, "fork"):
        pytest.skip("SKIPPED LOUDLY: no fork on this platform")
    log = str(tmp_path / "log")
    f = _workers.cache_for("local", str(tmp_path / "s"))
    assert f(3, log) == 9
    pid = os.fork()
    if pid == 0:  # the child: hits, misses and stores, no error
        try:
            ok = f(3, log) == 9 and f(4, log) == 16
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert f(4, log) == 16
    with open(log) as fh:
        assert [line.split()[1] for line in fh] == ["3", "4"]
