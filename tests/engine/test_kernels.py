"""The packed layouts and the C kernels against the typed tensors' own decoding and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepshrink.engine import layout as L
from deepshrink.engine import native

TYPES = ("dense", "codebook", "sparse-codebook", "sparse")
ALLOWED = {"dense": ("dense", "float/sparse"), "sparse": ("dense", "float/sparse"),
           "codebook": ("codebook/dense", "codebook/sparse"), "sparse-codebook": ("codebook/dense", "codebook/sparse")}
# every layout the kernels have, each from a tensor type that packs as it
LAYOUTS = [("dense", "dense"), ("sparse", "float/sparse"), ("codebook", "codebook/dense"),
           ("sparse-codebook", "codebook/sparse")]


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(TYPES), rows=st.integers(1, 9), cols=st.integers(1, 700),
       density=st.sampled_from([0.0, 0.004, 0.05, 0.3, 1.0]), k=st.sampled_from([1, 3, 31, 255, 300]),
       seed=st.integers(0, 2**16))
def test_every_layout_decodes_to_the_typed_tensor_bit_for_bit(make_typed, kind, rows, cols, density, k, seed):
    t = make_typed(kind, (rows, cols), density, seed, k)
    want = t.to_dense()
    for kind_ in (None, *ALLOWED[kind]):
        p = L.pack(t, kind_)
        assert p.kind in ALLOWED[kind] and p.shape == (rows, cols)
        np.testing.assert_array_equal(_bits(p.to_dense()), _bits(want))
        if p.kind.endswith("sparse"):
            assert p.gap_bits + p.value_bits <= L.MAX_FIELD_BITS and int(p.counts.sum()) == p.entries
    assert L.pack(t).nbytes == min(L.pack(t, k_).nbytes for k_ in ALLOWED[kind])


def test_the_chosen_gap_width_is_the_smallest_stream():
    gaps = np.array([0, 1, 40, 3, 0, 700, 2], np.int64)
    best = min(range(1, 17), key=lambda gb: ((len(gaps) + int((gaps >> gb).sum())) * (gb + 5) + 7) // 8)
    assert L._sparse_cost(1, np.zeros(len(gaps), np.int64), gaps, 5, 0)[1] == best


def test_negative_zero_and_fillers_stay_exact(make_typed):
    from deepshrink.storage.tensors import DenseTensor, SparseTensor

    values = np.zeros((2, 300), np.float32)
    values[0, 299] = -0.0
    values[1, 0] = 1.5
    values[1, 250] = -2.0  # a gap of 249 zeros: fillers at any gap width below 8
    for t in (DenseTensor(values), SparseTensor((2, 300), np.array([299, 300, 550]), np.array([-0.0, 1.5, -2.0], np.float32))):
        p = L.pack(t, "float/sparse")
        np.testing.assert_array_equal(_bits(p.to_dense()), _bits(t.to_dense()))


def test_fields_round_trip():
    rng = np.random.default_rng(0)
    for width in (1, 5, 10, 17, 25):
        fields = rng.integers(0, 1 << width, 1001)
        stream = L.write_fields(fields, width)
        assert len(stream) == (1001 * width + 7) // 8 + L.PAD_BYTES and not stream[-L.PAD_BYTES:].any()
        np.testing.assert_array_equal(L.read_fields(stream, 1001, width), fields)
    with pytest.raises(ValueError):
        L.write_fields([0], 26)


def test_c_literals_read_back_exactly():
    for v in (0.0, -0.0, 1.0, 0.1, 1 / 3, -3.4e38, 1.17549435e-38, 1e-45, 123456789.0):
        s = L.c_float(v)
        assert s.endswith("f") and ("." in s or "e" in s)
        assert np.float32(float(s[:-1])) == np.float32(v)
    with pytest.raises(ValueError):
        L.c_float(float("inf"))


# ----------------------------------------------------------------------------------------------
# the compiled kernels


@pytest.mark.parametrize("kind, layout", LAYOUTS)
def test_c_decoder_matches(lib, make_typed, kind, layout):
    t = make_typed(kind, (37, 301), 0.07, seed=3)
    p = L.pack(t, layout)
    np.testing.assert_array_equal(lib.to_dense(p), t.to_dense())


@pytest.mark.parametrize("kind, layout", LAYOUTS)
@pytest.mark.parametrize("n", [1, 64])
def test_linear_matches_torch(lib, make_typed, kind, layout, n):
    t = make_typed(kind, (120, 333), 0.08, seed=n)
    p = L.pack(t, layout)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 333)).astype(np.float32)
    bias = rng.standard_normal(120).astype(np.float32)
    want = F.linear(torch.from_numpy(x), torch.from_numpy(t.to_dense()), torch.from_numpy(bias)).numpy()
    np.testing.assert_allclose(lib.linear(p, x, bias), want, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(lib.linear(p, x), want - bias, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(lib.linear(p, x[0], bias), want[0], rtol=1e-5, atol=2e-5)
    with pytest.raises(ValueError, match="333"):
        lib.linear(p, x[:, :-1])


CONVS = [  # (in_c, out_c, kernel, stride, padding, dilation, groups)
    (3, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (6, 12, (3, 3), (2, 2), (1, 1), (1, 1), 1),   # stride 2 (MobileNetV2's first layer)
    (8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 8),    # depthwise
    (8, 8, (3, 3), (2, 2), (1, 1), (1, 1), 8),    # depthwise, stride 2
    (8, 16, (1, 1), (1, 1), (0, 0), (1, 1), 1),   # pointwise
    (6, 9, (5, 3), (2, 1), (2, 0), (2, 1), 3),    # grouped, dilated, uneven everything
]


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("kind, layout", LAYOUTS)
def test_conv2d_matches_torch(lib, make_typed, conv, kind, layout):
    ic, oc, k, stride, padding, dilation, groups = conv
    t = make_typed(kind, (oc, ic // groups, *k), 0.4, seed=ic + oc)
    p = L.pack(t, layout)
    rng = np.random.default_rng(2)
    bias = rng.standard_normal(oc).astype(np.float32)
    for n in (1, 64 if conv == CONVS[0] else 3):
        x = rng.standard_normal((n, ic, 13, 11)).astype(np.float32)
        want = F.conv2d(torch.from_numpy(x), torch.from_numpy(t.to_dense()), torch.from_numpy(bias), stride, padding,
                        dilation, groups).numpy()
        got = lib.conv2d(p, x, bias, stride, padding, dilation, groups)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-5)


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_conv2d_uneven_padding_as_same(lib, make_typed):
    t = make_typed("dense", (4, 2, 4, 4), 1.0)
    x = np.random.default_rng(0).standard_normal((2, 2, 9, 9)).astype(np.float32)
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(t.to_dense()), padding="same").numpy()
    np.testing.assert_allclose(lib.conv2d(L.pack(t), x, padding=(1, 1, 2, 2)), want, rtol=1e-5, atol=2e-5)


def test_elementwise_pooling_and_softmax_match_torch(lib):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 9, 7)) * 4).astype(np.float32)
    tx = torch.from_numpy(x)
    unary = {"relu": F.relu(tx), "relu6": F.relu6(tx), "sigmoid": torch.sigmoid(tx), "tanh": torch.tanh(tx),
             "gelu": F.gelu(tx), "gelu_tanh": F.gelu(tx, approximate="tanh"), "silu": F.silu(tx),
             "hardswish": F.hardswish(tx), "hardsigmoid": F.hardsigmoid(tx)}
    for op, want in unary.items():
        np.testing.assert_allclose(lib.unary(op, x), want.numpy(), rtol=1e-5, atol=1e-6, err_msg=op)
    np.testing.assert_allclose(lib.unary("leaky_relu", x, 0.1), F.leaky_relu(tx, 0.1).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(lib.unary("clamp", x, -1.0, 2.0), torch.clamp(tx, -1.0, 2.0).numpy())
    np.testing.assert_array_equal(lib.unary("clamp_min", x, 0.5), torch.clamp(tx, min=0.5).numpy())
    np.testing.assert_array_equal(lib.unary("clamp_max", x, 0.5), torch.clamp(tx, max=0.5).numpy())
    scale, shift = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(lib.affine(x, scale, shift), x * scale[:, None, None] + shift[:, None, None], rtol=1e-6)
    for kw in ({"kernel": (2, 2), "stride": (2, 2)}, {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 1)},
               {"kernel": (2, 2), "stride": (2, 2), "ceil_mode": True}):
        args = (kw["kernel"], kw["stride"], kw.get("padding", (0, 0)))
        np.testing.assert_array_equal(lib.max_pool2d(x, *args, kw.get("ceil_mode", False)),
                                      F.max_pool2d(tx, *args, ceil_mode=kw.get("ceil_mode", False)).numpy())
        for pad in (True, False):
            want = F.avg_pool2d(tx, *args, ceil_mode=kw.get("ceil_mode", False), count_include_pad=pad).numpy()
            np.testing.assert_allclose(lib.avg_pool2d(x, *args, kw.get("ceil_mode", False), pad), want, rtol=1e-6)
    for out in ((1, 1), (4, 3), (9, 7)):
        np.testing.assert_allclose(lib.adaptive_pool2d(x, out), F.adaptive_avg_pool2d(tx, out).numpy(), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_array_equal(lib.adaptive_pool2d(x, out, True), F.adaptive_max_pool2d(tx, out).numpy())
    for dim in (1, 2, -1):
        np.testing.assert_allclose(lib.softmax(x, dim), F.softmax(tx, dim).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(lib.softmax(x, dim, log=True), F.log_softmax(tx, dim).numpy(), rtol=1e-5,
                                   atol=1e-5)
    b = rng.standard_normal((3, 4, 1, 7)).astype(np.float32) + 3
    for op, fn in (("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", torch.div)):
        np.testing.assert_allclose(lib.binary(op, x, b), fn(tx, torch.from_numpy(b)).numpy(), rtol=1e-6)
        np.testing.assert_allclose(lib.binary(op, b, x), fn(torch.from_numpy(b), tx).numpy(), rtol=1e-6)
        np.testing.assert_allclose(lib.binary(op, x, 2.5), fn(tx, 2.5).numpy(), rtol=1e-6)
        np.testing.assert_allclose(lib.binary(op, x, 2.5, scalar_first=True), fn(2.5, tx).numpy(), rtol=1e-6)


def test_no_compiler_gives_none_and_a_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(native, "_state", {})
    assert native.compiler() is None
    assert native.load() is None and "no C compiler" in native.reason()
    assert not native.available()
    with pytest.raises(RuntimeError, match="no C compiler"):
        native.build()


def test_a_failing_compiler_gives_none_and_its_message(monkeypatch, tmp_path):
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\necho 'fakecc: broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_state", {})
    assert native.load() is None and "fakecc: broken" in native.reason()
    assert not list((tmp_path / "cache").rglob("*.so*"))  # no half-written library left


def test_library_is_cached_and_an_unwritable_cache_falls_back(lib, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    path = native.build()
    assert path.exists() and not str(path).startswith(str(blocker))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = native.build()
    assert first.parent == tmp_path / "cache" / "deepshrink"
    mtime = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == mtime  # not rebuilt


def test_layouts_the_kernels_could_read_out_of_bounds_are_refused(lib, make_typed):
    from dataclasses import replace

    good = L.pack(make_typed("sparse-codebook", (4, 50), 0.2), "codebook/sparse")
    good.check()
    bad_cases = {
        "table": replace(good, table=good.table[:3]),
        "run past": replace(good, counts=np.array([good.counts.sum(), 0, 0, 0], np.uint16)),  # one row of all
        "fewer than": replace(good, bits=good.bits[:4]),
        "one entry per row": replace(good, counts=good.counts[:2]),
        "needs": replace(good, table=None),
        "contiguous": replace(good, table=np.stack([good.table, good.table], axis=1)[:, 0]),
    }
    for match, bad in bad_cases.items():
        with pytest.raises(ValueError, match=match):
            lib.linear(bad, np.zeros((1, 50), np.float32))
    stream = L.write_fields(np.full(200, 40), 6)  # gap 40 every time: far past 50 columns
    with pytest.raises(ValueError, match="run past"):
        L.PackedWeight("float/sparse", (4, 50), 6, 0, bits=stream, counts=np.full(4, 50, np.uint16),
                       values=np.ones(200, np.float32)).check()
