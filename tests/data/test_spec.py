"""InputSpec: validation, preprocessing math, strict (de)serialisation."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.data import InputSpec
from deepshrink.errors import ConfigError, DataError

MNIST = dict(shape=(1, 28, 28), dtype="uint8", scale=1 / 255, mean=(0.286,), std=(0.353,))
GOOD = {"shape": [3, 2, 2], "dtype": "float32", "scale": 1.0, "mean": [0.1, 0.2, 0.3], "std": [1.0, 2.0, 4.0]}


# ---------------------------------------------------------------- construction


def test_normalises_types_and_is_frozen():
    s = InputSpec(shape=[1, np.int64(4)], dtype="uint8", scale=1, mean=[0], std=np.array([2.0]))
    assert s.shape == (1, 4) and type(s.shape[1]) is int
    assert s.scale == 1.0 and type(s.scale) is float
    assert s.mean == (0.0,) and s.std == (2.0,)
    assert s.numel == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.scale = 2.0  # type: ignore[misc]
    assert hash(s) == hash(InputSpec(shape=(1, 4), dtype="uint8", scale=1.0, mean=(0.0,), std=(2.0,)))


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(shape=(1, 0, 28)), "shape"),
        (dict(shape=(1, -28, 28)), "shape"),
        (dict(shape=()), "shape"),
        (dict(shape="1,28,28"), "shape"),
        (dict(shape=(1.0, 28, 28)), "shape"),
        (dict(shape=(True, 28, 28)), "shape"),
        (dict(dtype="float64"), "dtype"),
        (dict(dtype=np.uint8), "dtype"),
        (dict(scale=0.0), "scale"),
        (dict(scale=-1.0), "scale"),
        (dict(scale=float("nan")), "scale"),
        (dict(scale="1"), "scale"),
        (dict(std=(0.0,)), "std"),
        (dict(std=(-0.5,)), "std"),
        (dict(std=(float("inf"),)), "std"),
        (dict(mean=(float("nan"),)), "mean"),
        (dict(mean=(0.1, 0.2)), "mean"),
        (dict(std=(0.1, 0.2, 0.3)), "std"),
        (dict(mean=("0.1",)), "mean"),
    ],
)
def test_post_init_rejects(change, needle):
    with pytest.raises(ConfigError, match=needle):
        InputSpec(**{**MNIST, **change})


def test_per_channel_lengths_accepted():
    s = InputSpec(shape=(3, 2, 2), dtype="float32", scale=1.0, mean=(0.0, 0.1, 0.2), std=(1.0,))
    assert len(s.mean) == 3 and len(s.std) == 1


# ---------------------------------------------------------------- apply


def test_apply_math_uint8():
    s = InputSpec(**MNIST)
    x = np.random.default_rng(0).integers(0, 256, size=(5, 1, 28, 28), dtype=np.uint8)
    out = s.apply(x)
    expected = (x.astype(np.float64) / 255 - 0.286) / 0.353
    assert out.dtype == torch.float32 and tuple(out.shape) == (5, 1, 28, 28)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_apply_per_channel_broadcast_along_axis_1():
    s = InputSpec.from_dict(GOOD)
    x = torch.ones(2, 3, 2, 2)
    out = s.apply(x)
    for c, (m, sd) in enumerate(zip(GOOD["mean"], GOOD["std"])):
        assert torch.allclose(out[:, c], torch.full((2, 2, 2), (1.0 - m) / sd))


def test_apply_flat_input_is_reshaped_and_matches():
    s = InputSpec(**MNIST)
    x = np.random.default_rng(1).integers(0, 256, size=(4, 784), dtype=np.uint8)
    assert torch.equal(s.apply(x), s.apply(x.reshape(4, 1, 28, 28)))
    assert tuple(s.apply(torch.from_numpy(x)).shape) == (4, 1, 28, 28)


def test_apply_flat_spec_and_empty_batch():
    s = InputSpec(shape=(5,), dtype="float32", scale=2.0, mean=(1.0,), std=(0.5,))
    out = s.apply(np.arange(10, dtype=np.float32).reshape(2, 5))
    np.testing.assert_allclose(out.numpy(), (np.arange(10).reshape(2, 5) * 2.0 - 1.0) / 0.5)
    assert tuple(s.apply(np.zeros((0, 5), dtype=np.float32)).shape) == (0, 5)


def test_apply_does_not_modify_input_and_handles_odd_layouts():
    s = InputSpec(shape=(2,), dtype="float32", scale=3.0, mean=(1.0,), std=(2.0,))
    t = torch.tensor([[1.0, 2.0]])
    out = s.apply(t)
    assert torch.equal(t, torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(out, torch.tensor([[1.0, 2.5]]))
    big_endian = np.array([[1.0, 2.0]], dtype=">f8")
    reversed_view = np.array([[2.0, 1.0]])[:, ::-1]
    assert torch.allclose(s.apply(big_endian), out)
    assert torch.allclose(s.apply(reversed_view), out)


@pytest.mark.parametrize(
    "x",
    [np.zeros((2, 28, 28), np.uint8), np.zeros((2, 783), np.uint8), np.zeros((2, 3, 28, 28), np.uint8),
     np.zeros(784, np.uint8), torch.zeros(2, 1, 28, 27)],
)
def test_apply_wrong_shape_names_expected_shape(x):
    with pytest.raises(DataError) as e:
        InputSpec(**MNIST).apply(x)
    assert "(N, 1, 28, 28)" in str(e.value) and "(N, 784)" in str(e.value)


@pytest.mark.parametrize("x", [[[0] * 784], np.zeros((1, 784), bool), np.array([["a"] * 784]),
                               torch.zeros(1, 784, dtype=torch.bool)])
def test_apply_rejects_non_numeric(x):
    with pytest.raises(DataError):
        InputSpec(**MNIST).apply(x)


# ---------------------------------------------------------------- to_dict / from_dict


def test_to_dict_is_json_and_round_trips():
    s = InputSpec(**MNIST)
    d = s.to_dict()
    assert set(d) == {"shape", "dtype", "scale", "mean", "std"}
    back = InputSpec.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back == s


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)


@st.composite
def specs(draw):
    shape = tuple(draw(st.lists(st.integers(1, 64), min_size=1, max_size=4)))
    n = draw(st.sampled_from([1, shape[0]]))
    m = draw(st.sampled_from([1, shape[0]]))
    return InputSpec(
        shape=shape,
        dtype=draw(st.sampled_from(["uint8", "float32"])),
        scale=draw(positive),
        mean=tuple(draw(st.lists(finite, min_size=n, max_size=n))),
        std=tuple(draw(st.lists(positive, min_size=m, max_size=m))),
    )


@settings(max_examples=100, deadline=None, database=None)
@given(specs())
def test_round_trip_property(s):
    text = json.dumps(s.to_dict(), allow_nan=False)
    assert InputSpec.from_dict(json.loads(text)) == s


@pytest.mark.parametrize(
    "hostile",
    [
        {**GOOD, "extra": 1},
        {k: v for k, v in GOOD.items() if k != "std"},
        {**GOOD, "shape": "3,2,2"},
        {**GOOD, "shape": [3.0, 2, 2]},
        {**GOOD, "shape": [True, 2, 2]},
        {**GOOD, "shape": [[3], 2, 2]},
        {**GOOD, "shape": [3, -2, 2]},
        {**GOOD, "shape": [3, 0, 2]},
        {**GOOD, "shape": [2**40, 1]},
        {**GOOD, "shape": [1] * 100},
        {**GOOD, "shape": 3},
        {**GOOD, "dtype": 8},
        {**GOOD, "dtype": "object"},
        {**GOOD, "scale": "1"},
        {**GOOD, "scale": True},
        {**GOOD, "scale": None},
        {**GOOD, "scale": float("nan")},
        {**GOOD, "scale": float("inf")},
        {**GOOD, "mean": [float("nan"), 0.0, 0.0]},
        {**GOOD, "mean": 0.5},
        {**GOOD, "mean": [0.1, 0.2]},
        {**GOOD, "mean": ["0.1", 0.2, 0.3]},
        {**GOOD, "mean": [None, 0.2, 0.3]},
        {**GOOD, "std": [1.0, 0.0, 1.0]},
        {**GOOD, "std": [1.0, -1.0, 1.0]},
        {**GOOD, "std": [{"a": 1}, 1.0, 1.0]},
        {1: 2, **GOOD},
        [("shape", [1])],
        None,
        "shape",
    ],
)
def test_from_dict_rejects_hostile(hostile):
    with pytest.raises(ConfigError):
        InputSpec.from_dict(hostile)


def test_from_dict_error_names_unknown_and_missing_keys():
    bad = {k: v for k, v in GOOD.items() if k != "mean"}
    bad["evil"] = "__import__('os')"
    with pytest.raises(ConfigError) as e:
        InputSpec.from_dict(bad)
    assert "evil" in str(e.value) and "mean" in str(e.value)


def test_from_dict_accepts_int_floats_and_json_floats():
    s = InputSpec.from_dict({**GOOD, "scale": 1, "std": [1, 2, 4]})
    assert s.scale == 1.0 and s.std == (1.0, 2.0, 4.0)
    assert all(math.isfinite(v) for v in s.mean)


@pytest.mark.parametrize("bad", [np.nan, -np.inf, 1e300])
def test_apply_refuses_non_finite_and_overflowing_floats_without_a_warning(bad):
    import warnings

    x = np.zeros((2, 5))
    x[1, 3] = bad
    s = InputSpec(shape=(5,), dtype="float32", scale=1.0, mean=(0.0,), std=(1.0,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="NaN"):
            s.apply(x)


def test_spec_whose_normalisation_overflows_float32_is_refused():
    with pytest.raises(ConfigError, match="overflow"):
        InputSpec(shape=(5,), dtype="uint8", scale=1.0, mean=(0.0,), std=(1e-300,))
