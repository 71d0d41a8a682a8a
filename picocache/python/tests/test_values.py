"""Array results (issue 18): large buffers stored out of band (pickle
protocol 5, no pickle copy of the data), ``mmap_mode="r"`` hits that come
back read-only without a copy, and such results staying right whatever
eviction, clear, compaction or other processes do to the store (they are
never maps of the store's files: FORMAT.md, "Framed values")."""

from __future__ import annotations

import glob
import os
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest

import picocache as pc
from picocache import _values
from conftest import NATIVE, make_cache

np = pytest.importorskip("numpy")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _stream_len(data: bytes) -> int:
    return struct.unpack_from("<8sIQ", data)[2]


def test_large_buffers_are_out_of_band_and_small_ones_plain_pickle():
    a = np.arange(1 << 17, dtype=np.float64)  # 1 MiB
    data = _values.dumps(a)
    assert data[:8] == _values.MAGIC
    # The pickle stream holds no copy of the data: only the array's header.
    assert _stream_len(data) < 1024
    assert len(data) < a.nbytes + 1024
    raw = a.tobytes()
    at = data.index(raw[:64])
    assert at % _values.ALIGN == 0 and data[at:at + len(raw)] == raw
    back = _values.loads(data)
    assert back.dtype == a.dtype and np.array_equal(back, a)
    small = np.arange(10)
    s = _values.dumps(small)
    assert s[:1] == b"\x80" and np.array_equal(_values.loads(s), small)
    assert _values.loads(_values.dumps(None)) is None


def test_many_buffers_layouts_and_containers_round_trip():
    f_order = np.asfortranarray(np.arange(300_000, dtype=np.int32).reshape(600, 500))
    strided = np.arange(400_000, dtype=np.float32)[::3]  # not contiguous: in band
    big_endian = np.arange(100_000, dtype=">f8")
    value = {"f": f_order, "s": strided, "b": big_endian, "ba": bytearray(b"x" * 100_000),
             "pb": [np.ones(70_000, dtype=np.uint8), "text", 3]}
    data = _values.dumps(value)
    assert data[:8] == _values.MAGIC
    back = _values.loads(data)
    assert back["f"].flags.f_contiguous and np.array_equal(back["f"], f_order)
    assert np.array_equal(back["s"], strided) and np.array_equal(back["b"], big_endian)
    assert back["b"].dtype == big_endian.dtype
    assert back["ba"] == value["ba"] and isinstance(back["ba"], bytearray)
    assert np.array_equal(back["pb"][0], value["pb"][0]) and back["pb"][1:] == ["text", 3]


def test_pandas_frames_round_trip():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"x": np.arange(50_000, dtype=np.float64), "y": np.arange(50_000) % 7},
                      index=np.arange(50_000)[::-1])
    data = _values.dumps(df)
    assert data[:8] == _values.MAGIC
    pd.testing.assert_frame_equal(_values.loads(data), df)
    pd.testing.assert_frame_equal(_values.loads_readonly(data), df)


def test_loads_copies_and_loads_readonly_views_the_stored_bytes():
    a = np.arange(1 << 16, dtype=np.float64)
    data = _values.dumps(a)
    stored = np.frombuffer(data, dtype=np.uint8)
    w = _values.loads(data)
    assert w.flags.writeable and not np.shares_memory(w, stored)
    w[0] = 42.0  # a private copy
    r = _values.loads_readonly(data)
    assert not r.flags.writeable and np.shares_memory(r, stored)
    assert np.array_equal(r, a)
    with pytest.raises(ValueError):
        r[0] = 1.0


def test_malformed_framed_values_raise_value_error():
    data = _values.dumps(np.arange(1 << 14, dtype=np.float64))
    head = _values.MAGIC + struct.pack("<IQ", 0, 0)
    bad = [data[:8], data[:20], data[:40], data[:-1], data + b"\0", head,
           _values.MAGIC + struct.pack("<IQ", 1, 1 << 60) + struct.pack("<Q", 8),
           _values.MAGIC + struct.pack("<IQ", 1 << 30, 0)]
    for b in bad:
        for loads in (_values.loads, _values.loads_readonly):
            with pytest.raises(ValueError):
                loads(b)


def test_plain_pickles_of_earlier_versions_still_load():
    a = np.arange(1 << 15)
    for proto in (2, 4, 5):
        assert np.array_equal(_values.loads(pickle.dumps(a, protocol=proto)), a)


@pytest.mark.parametrize("kind", NATIVE)
def test_array_results_hit_writable_or_read_only(kind, tmp_path):
    cache = make_cache(kind, tmp_path)
    calls = []

    @cache
    def double(a):
        calls.append(1)
        return a * 2

    @cache(mmap_mode="r")
    def triple(a):
        calls.append(1)
        return a * 3

    a = np.arange(1 << 18, dtype=np.float64)
    first = double(a)
    hit = double(a.copy())
    assert len(calls) == 1 and np.array_equal(hit, a * 2) and hit.flags.writeable
    hit[0] = -1.0  # a caller's change never reaches the next hit
    assert double(a)[0] == 0.0 and first[0] == 0.0
    triple(a)
    ro = triple(a)
    assert len(calls) == 2 and np.array_equal(ro, a * 3) and not ro.flags.writeable
    assert triple.cache_parameters()["mmap_mode"] == "r"
    mapped = triple.map([a, a + 1])
    assert len(calls) == 3 and not mapped[0].flags.writeable
    assert np.array_equal(mapped[1], (a + 1) * 3)


def test_mmap_mode_is_checked(tmp_path):
    cache = pc.LocalCache(tmp_path / "s")
    for bad in ("r+", "w+", "c", "R", 1):
        with pytest.raises(ValueError):
            cache(mmap_mode=bad)(lambda x: x)
    with pytest.raises(ValueError):
        pc.LocalCache(tmp_path / "s2", default_mmap_mode="w+")
    with pytest.raises(TypeError):
        pc.LocalCache(tmp_path / "s3", value_serializer=pickle)(mmap_mode="r")(lambda x: x)
    c = pc.LocalCache(tmp_path / "s4", default_mmap_mode="r")

    @c
    def f(n):
        return np.zeros(n)

    f(100_000)
    assert not f(100_000).flags.writeable


def test_a_flipped_byte_of_stored_array_data_is_a_miss(tmp_path):
    store = tmp_path / "store"
    cache = pc.LocalCache(store)
    calls = []

    @cache(mmap_mode="r")
    def ramp(n):
        calls.append(n)
        return np.arange(n, dtype=np.float64)

    n = 1 << 16
    ramp(n)
    marker = np.arange(n, dtype=np.float64)[1000:1008].tobytes()
    hits = 0
    for seg in glob.glob(str(store / "seg-*")):
        with open(seg, "r+b") as fh:
            buf = fh.read()
            at = buf.find(marker)
            if at >= 0:
                fh.seek(at + 3)
                fh.write(bytes([buf[at + 3] ^ 0x10]))
                hits += 1
    assert hits == 1
    got = ramp(n)
    assert len(calls) == 2 and np.array_equal(got, np.arange(n, dtype=np.float64))


_WRITER = """
import sys
import numpy as np
import picocache as pc

cache = pc.LocalCache(sys.argv[1])

@cache(maxsize=3, name="big", mmap_mode="r")
def big(i):
    return np.full(1 << 20, float(i))

for i in range(1, 13):
    big(i)
"""


_OVERWRITER = """
import sys
import numpy as np
import picocache as pc

cache = pc.LocalCache(sys.argv[1])

@cache(maxsize=3, name="big")
def big(i):  # the same name, another body: it stores another value for big(0)
    return np.full(1 << 20, 100.0 + i)

big(0)
"""


def _cli():
    for p in ("target/release/picocache", "target/debug/picocache"):
        if os.path.exists(os.path.join(ROOT, p)):
            return os.path.join(ROOT, p)
    return shutil.which("picocache")


def test_read_only_results_survive_eviction_clear_compaction_and_other_writers(tmp_path):
    store = tmp_path / "store"
    cache = pc.LocalCache(store)

    @cache(maxsize=3, name="big", mmap_mode="r")
    def big(i):
        return np.full(1 << 20, float(i))  # 8 MiB

    big(0)
    held = [big(0) for _ in range(3)]  # hits
    assert all(not h.flags.writeable for h in held)
    first_segments = set(glob.glob(str(store / "seg-*")))
    # Another process fills the namespace: big(0) is evicted, the log rolls.
    subprocess.run([sys.executable, "-c", textwrap.dedent(_WRITER), str(store)], check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert big.cache_info().currsize == 3
    # Another process stores another value under big(0)'s key: a hit serves
    # it, and the results handed out before keep theirs.
    subprocess.run([sys.executable, "-c", textwrap.dedent(_OVERWRITER), str(store)], check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    replaced = big(0)
    assert (replaced == 100.0).all() and not replaced.flags.writeable
    assert all((h == 0.0).all() for h in held)
    big.cache_clear()
    cli = _cli()
    if cli is not None:
        subprocess.run([cli, "compact", str(store)], check=True, capture_output=True)
        # The segments that held big(0)'s record are gone (unlinked).
        assert not first_segments & set(glob.glob(str(store / "seg-*")))
    for h in held:
        assert h.shape == (1 << 20,) and (h == 0.0).all()
    again = big(0)  # recomputed: the entry is gone (cache_clear reset the counters)
    assert (again == 0.0).all() and big.cache_info().misses == 1


def test_blake3_content_digest_is_blake3_and_sees_every_byte():
    """The digest that stands for a large array in a key (``_arrays``):
    BLAKE3, fed in blocks; a change of any one byte, at a block boundary or
    at the end, gives another key."""
    from picocache import _arrays, _native

    h = _native.Blake3()
    assert h.digest().hex() == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    h.update(b"a")
    h.update(b"bc")
    one = _native.Blake3()
    one.update(b"abc")
    assert h.digest() == one.digest() == bytes.fromhex(
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85")
    n = 3 * _arrays.BLOCK + 17
    base = np.zeros(n, dtype=np.uint8)
    keys = {_arrays.ndarray_key(np, base)}
    for at in (0, _arrays.BLOCK - 1, _arrays.BLOCK, 2 * _arrays.BLOCK + 5, n - 1):
        b = base.copy()
        b[at] = 1
        keys.add(_arrays.ndarray_key(np, b))
    assert len(keys) == 6
    # A view and a copy, one key; the digest is what the key holds.
    big = np.arange(n // 8, dtype=np.float64)
    k = _arrays.ndarray_key(np, big)
    assert k == _arrays.ndarray_key(np, big[::-1][::-1].copy()) and len(k[3]) == 32
    assert _arrays.buffer_key(memoryview(big))[3] == k[3]


def test_options_that_change_what_an_entry_means_have_namespaces_of_their_own(tmp_path):
    """Issue 24: the namespace is the name, then ``;typed``, ``;ttl=``,
    ``;key=`` (ignore=, key=, key_serializer) and ``;vs=`` (a custom value
    serializer); the default (pickle, untyped, no ttl, plain keys) is the
    name alone, so what it stored before is still read. Two lambda
    serializers of one module are told apart by their code."""

    def ns(f):
        return f.__picocache_state__.store_name

    cache = pc.LocalCache(tmp_path / "s")
    body = lambda x, y=0: (x, y)  # noqa: E731
    assert ns(cache(name="n")(body)) == "n"
    assert ns(cache(name="n", typed=True)(body)) == "n;typed"
    assert ns(cache(name="n", ttl=2)(body)) == "n;ttl=2.0"
    assert ns(cache(name="n", ttl=2.0, typed=True)(body)) == "n;typed;ttl=2.0"
    by_gen = ns(cache(name="n", ignore=(a for a in ["y"]))(body))
    assert by_gen.startswith("n;key=") and by_gen == ns(cache(name="n", ignore=["y"])(body))
    assert ns(cache(name="n", key=lambda x, y=0: x)(body)) not in ("n", by_gen)
    raw = pc.LocalCache(tmp_path / "s", value_serializer=(lambda v: v, lambda b: b))
    pic = pc.LocalCache(tmp_path / "s", value_serializer=(lambda v: pickle.dumps(v),
                                                         lambda b: pickle.loads(b)))
    a, b = ns(raw(name="n")(body)), ns(pic(name="n")(body))
    assert a.startswith("n;vs=") and b.startswith("n;vs=") and a != b
    assert ns(pc.LocalCache(tmp_path / "s", value_serializer=pc.plain)(name="n")(body)).startswith("n;vs=")
