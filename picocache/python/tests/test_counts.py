"""One computed call is one miss in the store's counters, on every native
store (issue 15: the look again after taking the lease counted a second
miss on SQLite, PostgreSQL, MariaDB and Redis). Real servers."""

from __future__ import annotations

import pytest

from conftest import NATIVE, make_cache


@pytest.mark.parametrize("kind", NATIVE)
def test_one_computed_call_is_one_miss_in_the_store(kind, tmp_path):
    cache = make_cache(kind, tmp_path)

    @cache
    def square(x: int) -> int:
        return x * x

    assert square(3) == 9          # computed: one miss
    assert square(3) == 9          # a hit
    assert [square(i) for i in range(10, 14)] == [100, 121, 144, 169]  # four misses
    s = square.cache_stats()
    assert (s["hits"], s["misses"]) == (1, 5), s
    info = square.cache_info()
    assert (info.hits, info.misses) == (1, 5), info


@pytest.mark.parametrize("kind", NATIVE)
def test_one_computed_async_call_is_one_miss_in_the_store(kind, tmp_path):
    import asyncio

    cache = make_cache(kind, tmp_path)

    @cache
    async def cube(x: int) -> int:
        return x ** 3

    async def main() -> list:
        return [await cube(2), await cube(2), await cube(3)]

    assert asyncio.run(main()) == [8, 8, 27]
    s = cube.cache_stats()
    assert (s["hits"], s["misses"]) == (1, 2), s
