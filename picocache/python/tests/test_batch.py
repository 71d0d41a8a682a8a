"""Batch jobs (issue 18): arrays keyed by content, f.map / f.starmap in one
round trip, max_bytes per function."""

from __future__ import annotations

import array
import concurrent.futures
import threading

import pytest

import picocache as pc
from picocache import _native
from picocache._keys import fallback
from conftest import ALL, NATIVE, make_cache

np = pytest.importorskip("numpy")


def key(obj) -> bytes:
    return _native.encode(obj, False, fallback)


# -- content keys ----------------------------------------------------------------------


def test_arrays_are_keyed_by_content_not_by_layout():
    a = np.arange(24, dtype="<f8").reshape(4, 6)
    same = [a.copy(), np.asfortranarray(a), a.astype(">f8"), a.T.T, np.array(a.tolist())]
    for b in same:
        assert key(b) == key(a)
    view = a[:, ::2]  # not contiguous
    assert key(view) == key(np.ascontiguousarray(view))
    different = [a.astype("f4"), a.reshape(6, 4), a + 1e-12, a[:3], a.astype("i8")]
    for b in different:
        assert key(b) != key(a)
    big = np.random.default_rng(1).random(1_000_000)
    k = key(big)
    assert len(k) < 200  # a digest, not the data
    assert key(big.copy()) == k
    changed = big.copy()
    changed[123_456] += 1.0
    assert key(changed) != k


def test_structured_object_and_empty_arrays():
    s = np.zeros(3, dtype=[("x", "i4"), ("y", "f8")])
    t = np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
    assert key(s) != key(t)  # field names count
    o = np.array([1, "a", None], dtype=object)
    assert key(o) == key(np.array([1, "a", None], dtype=object))
    assert key(np.zeros(0)) != key(np.zeros((0, 2)))


def test_masked_arrays_are_not_keyed_by_data_alone():
    m1 = np.ma.array([1, 2, 3], mask=[0, 1, 0])
    m2 = np.ma.array([1, 2, 3], mask=[0, 0, 0])
    assert key(m1) != key(m2)


def test_buffers():
    assert key(memoryview(b"abc")) == key(memoryview(bytearray(b"abc")))
    assert key(array.array("i", [1, 2])) == key(array.array("i", [1, 2]))
    assert key(array.array("i", [1, 2])) != key(array.array("l", [1, 2]))
    m = memoryview(np.arange(12, dtype="i4"))
    assert key(m[::2]) == key(memoryview(np.arange(12, dtype="i4")[::2].copy()))
    assert key(m[::2]) != key(m[1::2])


def test_pandas_by_content():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}, index=[10, 20, 30])
    assert key(df) == key(df.copy())
    assert key(df) != key(df.iloc[::-1])  # the same rows in another order
    assert key(df) != key(df.rename(columns={"a": "c"}))
    assert key(df) != key(df.astype({"a": "f8"}))
    assert key(df["a"]) == key(df["a"].copy())
    assert key(df["a"]) != key(df["a"].rename("z"))
    assert key(df.index) == key(pd.Index([10, 20, 30]))


@pytest.mark.parametrize("kind", NATIVE)
def test_a_function_of_an_array_hits_for_an_equal_array(kind, tmp_path):
    cache = make_cache(kind, tmp_path)
    calls = []

    @cache
    def total(a):
        calls.append(1)
        return float(a.sum())

    a = np.arange(100_000, dtype="f8")
    assert total(a) == total(a.copy()) == total(a[::-1][::-1])
    assert len(calls) == 1


# -- f.map ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL)
def test_map_computes_only_the_misses_in_order(kind, tmp_path):
    cache = make_cache(kind, tmp_path)
    calls = []

    @cache
    def sq(x):
        calls.append(x)
        return x * x

    sq(2), sq(5)
    calls.clear()
    assert sq.map([1, 2, 3, 2, 5, 1]) == [1, 4, 9, 4, 25, 1]
    assert calls == [1, 3]
    info = sq.cache_info()
    assert (info.hits, info.misses) == (4, 4)  # 2 before; the map: 2 misses, 4 hits
    assert sq.map([1, 3]) == [1, 9] and calls == [1, 3]

    @cache
    def add(a, b):
        calls.append((a, b))
        return a + b

    assert add.starmap([(1, 2), (3, 4), (1, 2)]) == [3, 7, 3]
    assert add(3, 4) == 7 and calls[-2:] == [(1, 2), (3, 4)]


def test_map_with_an_exception_stores_what_was_computed(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")
    calls = []

    @cache
    def inv(x):
        calls.append(x)
        return 1 / x

    with pytest.raises(ZeroDivisionError):
        inv.map([1, 2, 0, 4])
    assert calls == [1, 2, 0]
    calls.clear()
    assert inv.map([1, 2, 4]) == [1.0, 0.5, 0.25]
    assert calls == [4]  # 1 and 2 were stored before the exception


def test_map_in_an_executor(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")
    threads = set()

    @cache
    def work(x):
        threads.add(threading.get_ident())
        return x + 1

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        assert work.map(range(200), executor=ex) == list(range(1, 201))
    assert threading.get_ident() not in threads
    assert work.cache_info().currsize == 200


def test_map_of_a_coroutine_function_is_refused(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")

    @cache
    async def f(x):
        return x

    with pytest.raises(TypeError, match="coroutine"):
        f.map([1])


# -- max_bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NATIVE)
def test_max_bytes_evicts_least_recently_used(kind, tmp_path):
    cache = make_cache(kind, tmp_path)
    calls = []

    @cache(max_bytes=6000)
    def blob(x):
        calls.append(x)
        return bytes(2000)

    blob(1), blob(2), blob(1), blob(3)  # about 2 KB each: 3 do not fit with overheads
    assert blob.cache_parameters()["max_bytes"] == 6000
    stats = blob.cache_stats()
    assert stats["bytes"] <= 6000
    blob(1)
    assert calls == [1, 2, 3]  # 1 was used after 2: 2 went first
    blob(2)
    assert calls == [1, 2, 3, 2]


def test_max_bytes_is_refused_where_the_store_cannot_bound_bytes(tmp_path):
    pytest.importorskip("django")
    from conftest import django_setup
    django_setup()
    with pytest.raises(TypeError, match="cannot bound bytes"):
        pc.DjangoCache()(max_bytes=10)(lambda x: x)
    cache = pc.LocalCache(tmp_path / "s", default_max_bytes=1 << 20)

    @cache
    def f(x):
        return x

    assert f.cache_parameters()["max_bytes"] == 1 << 20


class _Counted:
    """An argument that counts how often its key is taken."""

    calls = 0

    def __init__(self, v: int) -> None:
        self.v = v

    def __picocache_key__(self) -> int:
        _Counted.calls += 1
        return self.v


def test_a_miss_encodes_its_arguments_once(tmp_path):
    """A miss on the local engine encodes the call's key once (a 100 MB
    array's key is a 25 ms digest): the key of the failed lookup is reused
    by the look under the lease, for the same argument tuple on the same
    thread; anything else is encoded again."""
    c = pc.LocalCache(str(tmp_path / "store"))
    runs = []

    @c
    def f(x):
        runs.append(x.v)
        return x.v * 2

    _Counted.calls = 0
    assert f(_Counted(21)) == 42
    assert (runs, _Counted.calls) == ([21], 1)
    assert f(_Counted(21)) == 42  # a hit: one encoding, no run
    assert (runs, _Counted.calls) == ([21], 2)
    # The kept key is never reused for other arguments, in this thread or
    # another, nor after the argument changed.
    a = _Counted(5)
    assert f(a) == 10
    a.v = 6
    assert f(a) == 12 and runs == [21, 5, 6]
    results = []
    ts = [threading.Thread(target=lambda i=i: results.append(f(_Counted(100 + i % 3)))) for i in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == sorted(2 * (100 + i % 3) for i in range(12))
    assert sorted(runs[3:]) == [100, 101, 102]


@pytest.mark.parametrize("n", [1025, 256 * 1024 + 3, (8 << 20) - 1, 8 << 20, (8 << 20) + 1, (12 << 20) + 12345, 16 << 20])
def test_the_in_place_digest_is_the_blockwise_one(n):
    """The buffer read in place (a large one hashed on two threads, joined
    as BLAKE3's tree) gives the digest the block-by-block hasher gives, the
    one the stable-ABI build uses: keys agree between the builds."""
    if not hasattr(_native, "blake3_buffer"):
        pytest.skip("the stable-ABI build reads no buffer in place")
    data = (np.arange(n, dtype=np.uint64) * 2654435761 % 251).astype(np.uint8)
    h = _native.Blake3()
    for at in range(0, n, 1 << 20):
        h.update(data[at:at + (1 << 20)].tobytes())
    assert _native.blake3_buffer(data) == h.digest()
    assert _native.blake3_buffer(data.tobytes()) == h.digest()
    assert _native.blake3_buffer(memoryview(data)) == h.digest()
    with pytest.raises(BufferError):
        _native.blake3_buffer(data[::2])  # not contiguous
    with pytest.raises((BufferError, TypeError)):
        _native.blake3_buffer(np.zeros(4, dtype=np.float64))  # not bytes

