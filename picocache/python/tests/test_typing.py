"""Type checkers see through the decorator (issue 15): a decorated function
keeps its parameters and return type, `mypy --strict` accepts the decorator,
a wrong argument type is flagged, and CacheInfo's fields are typed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SAMPLE = textwrap.dedent("""
    import asyncio
    from picocache import CacheInfo, LocalCache, RedisCache

    cache = LocalCache("store")


    @cache
    def add(a: int, b: int) -> int:
        return a + b


    @cache()
    def empty(x: int) -> int:
        return x


    @cache(maxsize=256, typed=True)
    def name(x: str) -> str:
        return x


    @cache(128, True)
    def pos(x: float) -> float:
        return x


    @RedisCache("redis://localhost:6379/0")(ttl=60)
    async def fetch(url: str) -> bytes:
        return url.encode()


    class Repo:
        @cache
        def stars(self, year: int) -> int:
            return year


    reveal_type(add)
    reveal_type(add(1, 2))
    reveal_type(empty(1))
    reveal_type(name("a"))
    reveal_type(pos(1.0))
    reveal_type(asyncio.run(fetch("u")))
    reveal_type(Repo().stars(2024))
    info: CacheInfo = add.cache_info()
    reveal_type(info.hits)
    reveal_type(info.maxsize)
    add.cache_clear()
    add("a", "b")
""")


def test_mypy_strict_sees_the_decorated_signatures(tmp_path):
    pytest.importorskip("mypy")
    (tmp_path / "sample.py").write_text(SAMPLE)
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "sample.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = r.stdout
    revealed = [line.split("Revealed type is ", 1)[1].strip('"') for line in out.splitlines()
                if "Revealed type is" in line]
    assert revealed == [
        "picocache._typing.CachedFunction[[a: int, b: int], int]",
        "int", "int", "str", "float", "bytes", "int", "int", "int | None",
    ], out
    errors = [line for line in out.splitlines() if ": error:" in line]
    # Exactly the two bad arguments of the last line, nothing about the decorators.
    assert len(errors) == 2 and all('incompatible type "str"; expected "int"' in e for e in errors), out
