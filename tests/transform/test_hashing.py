"""The hash of HashedNets: fixed values, independent of chunking, balanced."""

import numpy as np

from deepshrink.transform import hashing
from deepshrink.transform.hashing import bucket_signs, expand, mix64


def test_splitmix64_finaliser_known_values():
    # splitmix64's first outputs from state 0 (the reference generator adds φ, then finalises)
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        states = np.arange(1, 4, dtype=np.uint64) * golden
    assert [int(v) for v in mix64(states)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_buckets_and_signs_are_pinned():
    """A change of the hash changes every stored file: these values are part of the format."""
    index, sign = bucket_signs(7, 0, 6, 1000)
    assert index.dtype == np.int64 and sign.dtype == np.float32
    assert index.tolist() == [940, 533, 755, 470, 866, 515]
    assert sign.tolist() == [-1.0, -1.0, -1.0, -1.0, 1.0, -1.0]
    tail, _ = bucket_signs(7, 4, 2, 1000)  # a chunk starting mid-tensor
    assert tail.tolist() == [866, 515]


def test_chunks_give_the_same_values_as_one_pass(monkeypatch):
    values = np.random.default_rng(0).standard_normal(37).astype(np.float32)
    whole = expand(values, 3, 5000, True)
    monkeypatch.setattr(hashing, "CHUNK", 17)
    chunked = np.empty(5000, np.float32)
    for start, count in hashing.chunks(5000, 17):
        index, xi = bucket_signs(3, start, count, 37)
        chunked[start:start + count] = values[index] * xi
    assert np.array_equal(chunked, whole)
    assert np.array_equal(expand(values, 3, 5000, True), whole)  # expand itself in chunks of 17
    assert np.array_equal(expand(values, 3, 5000, False), np.abs(whole) * np.sign(values[bucket_signs(3, 0, 5000, 37)[0]]))


def test_buckets_are_used_evenly_and_signs_are_balanced():
    index, sign = bucket_signs(0, 0, 200_000, 100)
    counts = np.bincount(index, minlength=100)
    assert counts.min() > 1700 and counts.max() < 2300
    assert abs(sign.mean()) < 0.01
    other, _ = bucket_signs(1, 0, 200_000, 100)
    assert (other == index).mean() < 0.02  # another seed, another pattern
