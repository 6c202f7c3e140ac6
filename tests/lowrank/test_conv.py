import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import deepshrink as ds
from deepshrink.data import InputSpec
from deepshrink.errors import ConfigError, DecompositionError
from deepshrink.lowrank import (
    cp_conv,
    cp_degeneracy,
    cp_factors,
    cp_rank,
    spatial_factors,
    spatial_rank,
    spatial_svd_conv,
    tucker2_conv,
    tucker2_factors,
    tucker_ranks,
)

SPEC = InputSpec((1, 28, 28), "uint8", 1 / 255, (0.0,), (1.0,))
BAD_RANKS = (0, -1, 1.5, 0.0, True, "x", None)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def planted_spatial(shape, k, seed=0):
    """A (C', C, h, w) kernel whose (C·h) × (C'·w) arrangement has rank k."""
    cout, cin, h, w = shape
    g = _gen(seed)
    vertical = torch.randn(k, cin, h, generator=g, dtype=torch.float64)
    horizontal = torch.randn(cout, k, w, generator=g, dtype=torch.float64)
    return torch.einsum("kci,okj->ocij", vertical, horizontal)


def planted_tucker(shape, ranks, seed=0):
    """core ×₀ U_out ×₁ U_in with a random (r_out, r_in, h, w) core."""
    (cout, cin, h, w), (r_out, r_in) = shape, ranks
    g = _gen(seed)
    core = torch.randn(r_out, r_in, h, w, generator=g, dtype=torch.float64)
    u_out = torch.randn(cout, r_out, generator=g, dtype=torch.float64)
    u_in = torch.randn(cin, r_in, generator=g, dtype=torch.float64)
    return torch.einsum("pqij,op,cq->ocij", core, u_out, u_in)


def planted_cp(shape, r, seed=0):
    """A sum of r rank-1 terms a ⊗ b ⊗ y ⊗ x."""
    g = _gen(seed)
    return cp_compose([torch.randn(d, r, generator=g, dtype=torch.float64) for d in shape])


def cp_compose(factors):
    return torch.einsum("ar,br,cr,dr->abcd", *factors)


def rel_err(approx, exact):
    return float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact))


def conv_with(weight, **kwargs):
    """A float32 Conv2d holding ``weight`` (with a random bias unless bias=False)."""
    cout, cin, h, w = weight.shape
    layer = nn.Conv2d(cin, cout, (h, w), **kwargs)
    with torch.no_grad():
        layer.weight.copy_(weight.float())
    return layer


def weights_of(seq):
    return sum(m.weight.numel() for m in seq.modules() if isinstance(m, nn.Conv2d))


# --- planted solutions -------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4), st.data(), st.integers(0, 2**16))
def test_spatial_factors_recover_a_planted_arrangement_rank(cout, cin, h, w, data, seed):
    full = min(cin * h, cout * w)
    k = data.draw(st.integers(1, full))
    weight = planted_spatial((cout, cin, h, w), k, seed)
    vertical, horizontal = spatial_factors(weight, k)
    assert vertical.shape == (k, cin, h, 1) and horizontal.shape == (cout, k, 1, w)
    assert vertical.dtype == horizontal.dtype == torch.float64
    rebuilt = torch.einsum("kci,okj->ocij", vertical[..., 0], horizontal[:, :, 0, :])
    assert rel_err(rebuilt, weight) < 1e-6
    if k > 1:  # one component fewer cannot represent it
        v, hz = spatial_factors(weight, k - 1)
        assert rel_err(torch.einsum("kci,okj->ocij", v[..., 0], hz[:, :, 0, :]), weight) > 1e-6


@pytest.mark.parametrize("shape, ranks", [((8, 6, 3, 3), (3, 2)), ((5, 7, 1, 3), (5, 7)), ((9, 4, 3, 2), (1, 1))])
def test_tucker2_factors_recover_a_planted_core(shape, ranks):
    weight = planted_tucker(shape, ranks, seed=3)
    core, u_out, u_in = tucker2_factors(weight, ranks)
    cout, cin, h, w = shape
    assert core.shape == (*ranks, h, w) and u_out.shape == (cout, ranks[0]) and u_in.shape == (cin, ranks[1])
    assert rel_err(torch.einsum("pqij,op,cq->ocij", core, u_out, u_in), weight) < 1e-6
    # HOOI factors have orthonormal columns
    torch.testing.assert_close(u_out.T @ u_out, torch.eye(ranks[0], dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(u_in.T @ u_in, torch.eye(ranks[1], dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("shape, r", [((6, 4, 3, 5), 3), ((6, 5, 2, 3), 4), ((7, 3, 3, 3), 1)])
def test_cp_factors_recover_a_planted_sum_of_rank_one_terms(shape, r):
    weight = planted_cp(shape, r, seed=1)
    factors, err = cp_factors(weight, r)
    assert [tuple(f.shape) for f in factors] == [(d, r) for d in shape]
    assert err < 1e-6
    assert rel_err(cp_compose(factors), weight) < 1e-6
    norms = [f.norm(dim=0) for f in factors]
    lam = torch.stack(norms).prod(0).numpy()
    cong, _ = cp_degeneracy(lam, [(f / n).numpy() for f, n in zip(factors, norms)])
    assert cong > -0.85  # a well-posed fit: no pair of large components cancels


# --- CP ill-posedness ------------------------------------------------------------------------

def _no_best_rank2(seed=0):
    g = _gen(seed)
    a, b = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)

    def outer(*v):
        return torch.einsum("a,b,c,d->abcd", *v)

    return outer(a, a, a, b) + outer(a, a, b, a) + outer(a, b, a, a) + outer(b, a, a, a)


def test_cp_factors_refuse_a_tensor_whose_best_rank2_approximation_does_not_exist():
    # rank 4, border rank 2: rank-2 fits approach it only while two components diverge and cancel
    with pytest.raises(DecompositionError, match="degenerate"):
        cp_factors(_no_best_rank2(), 2)


def test_cp_conv_refuses_the_ill_posed_kernel_and_accepts_a_planted_one():
    with pytest.raises(DecompositionError, match="degenerate"):
        cp_conv(conv_with(_no_best_rank2(seed=1)), rank=2)
    seq = cp_conv(conv_with(planted_cp((5, 5, 5, 5), 2, seed=2)), rank=2)  # same shape, same rank: no error
    assert seq.reduce.out_channels == 2


# --- factorised layers against the original convolution ------------------------------------

LAYER = {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 3)}
SHAPE = (6, 4, 3, 5)  # C' = 6, C = 4, 3×5 kernel


def _compare(seq, layer, x, tol=1e-4):
    with torch.no_grad():
        want, got = layer(x), seq(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))


@pytest.mark.parametrize("method", ["spatial", "tucker", "cp"])
def test_exact_rank_factorisation_reproduces_the_convolution(method):
    g = _gen(7)
    if method == "cp":
        weight = planted_cp(SHAPE, 3, seed=7)
    else:
        weight = torch.randn(*SHAPE, generator=g, dtype=torch.float64)
    layer = conv_with(weight, **LAYER)
    cout, cin, h, w = SHAPE
    if method == "spatial":
        seq = spatial_svd_conv(layer, rank=min(cin * h, cout * w))
    elif method == "tucker":
        seq = tucker2_conv(layer, rank=max(cin, cout))
    else:
        seq = cp_conv(layer, rank=3)
    x = torch.randn(3, cin, 11, 16, generator=g)
    _compare(seq, layer, x)


@pytest.mark.parametrize("method, rank", [("spatial", 2), ("spatial", 0.3), ("tucker", 2), ("tucker", 0.3),
                                          ("cp", 2), ("cp", 0.2)])
def test_low_rank_layers_keep_the_output_shape(method, rank):
    layer = nn.Conv2d(4, 6, (3, 5), **LAYER)
    seq = {"spatial": spatial_svd_conv, "tucker": tucker2_conv, "cp": cp_conv}[method](layer, rank=rank)
    x = torch.randn(2, 4, 12, 17)
    with torch.no_grad():
        assert seq(x).shape == layer(x).shape
    assert weights_of(seq) < layer.weight.numel()


def test_spatial_layout():
    layer = nn.Conv2d(4, 6, (3, 5), **LAYER)
    seq = spatial_svd_conv(layer, rank=2)
    assert list(dict(seq.named_children())) == ["vertical", "horizontal"]
    v, hz = seq.vertical, seq.horizontal
    assert v.weight.shape == (2, 4, 3, 1) and hz.weight.shape == (6, 2, 1, 5)
    assert (v.stride, v.padding, v.dilation) == ((2, 1), (1, 0), (2, 1))
    assert (hz.stride, hz.padding, hz.dilation) == ((1, 1), (0, 2), (1, 3))
    assert v.groups == hz.groups == 1
    assert v.bias is None and torch.equal(hz.bias, layer.bias)


def test_tucker_layout():
    layer = nn.Conv2d(4, 6, (3, 5), **LAYER)
    seq = tucker2_conv(layer, rank=2)
    assert list(dict(seq.named_children())) == ["reduce", "core", "restore"]
    assert seq.reduce.weight.shape == (2, 4, 1, 1)
    assert seq.core.weight.shape == (2, 2, 3, 5)
    assert seq.restore.weight.shape == (6, 2, 1, 1)
    assert (seq.core.stride, seq.core.padding, seq.core.dilation) == (layer.stride, layer.padding, layer.dilation)
    assert all(m.groups == 1 for m in seq)
    assert seq.reduce.bias is None and seq.core.bias is None and torch.equal(seq.restore.bias, layer.bias)


def test_cp_layout():
    layer = conv_with(planted_cp(SHAPE, 3, seed=4), **LAYER)
    seq = cp_conv(layer, rank=3)
    assert list(dict(seq.named_children())) == ["reduce", "vertical", "horizontal", "restore"]
    assert seq.reduce.weight.shape == (3, 4, 1, 1) and seq.reduce.groups == 1
    assert seq.vertical.weight.shape == (3, 1, 3, 1) and seq.vertical.groups == 3  # depthwise
    assert seq.horizontal.weight.shape == (3, 1, 1, 5) and seq.horizontal.groups == 3
    assert seq.restore.weight.shape == (6, 3, 1, 1) and seq.restore.groups == 1
    assert (seq.vertical.stride, seq.vertical.padding, seq.vertical.dilation) == ((2, 1), (1, 0), (2, 1))
    assert (seq.horizontal.stride, seq.horizontal.padding, seq.horizontal.dilation) == ((1, 1), (0, 2), (1, 3))
    assert all(m.bias is None for m in list(seq)[:3]) and torch.equal(seq.restore.bias, layer.bias)
    assert weights_of(seq) == 3 * (4 + 3 + 5 + 6)  # R(C + h + w + C'), the count cp_rank budgets


def test_layers_without_bias_stay_without_bias():
    layer = nn.Conv2d(4, 6, 3, bias=False)
    for seq in (spatial_svd_conv(layer, rank=2), tucker2_conv(layer, rank=2)):
        assert all(m.bias is None for m in seq)


# --- rank rules --------------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(1, 7), st.integers(1, 7))
fractions = st.floats(0.001, 1.0)


def test_integer_ranks_are_absolute_and_clipped():
    shape = (6, 4, 3, 5)
    assert spatial_rank(5, shape) == 5
    assert spatial_rank(1000, shape) == min(4 * 3, 6 * 5)
    assert tucker_ranks(3, shape) == (3, 3)
    assert tucker_ranks(5, shape) == (5, 4)
    assert tucker_ranks(1000, shape) == (6, 4)
    assert cp_rank(7, shape) == 7  # a CP rank may exceed every mode size: not clipped
    assert spatial_svd_conv(nn.Conv2d(4, 6, (3, 5)), rank=1000).vertical.out_channels == 12


@settings(max_examples=200, deadline=None, database=None)
@given(shapes, fractions)
def test_spatial_fraction_keeps_at_most_that_share_of_weights(shape, f):
    cout, cin, h, w = shape
    k, full, budget = spatial_rank(f, shape), min(cin * h, cout * w), f * cout * cin * h * w
    assert 1 <= k <= full
    per = cin * h + cout * w
    assert k * per <= budget or k == 1
    assert k == full or (k + 1) * per > budget  # the largest rank that fits


@settings(max_examples=200, deadline=None, database=None)
@given(shapes, fractions)
def test_tucker_fraction_keeps_at_most_that_share_of_weights(shape, f):
    cout, cin, h, w = shape
    r_out, r_in = tucker_ranks(f, shape)
    assert 1 <= r_out <= cout and 1 <= r_in <= cin
    weights = cin * r_in + r_in * r_out * h * w + r_out * cout
    assert weights <= f * cout * cin * h * w or (r_out, r_in) == (1, 1)


@settings(max_examples=200, deadline=None, database=None)
@given(shapes, fractions)
def test_cp_fraction_keeps_at_most_that_share_of_weights(shape, f):
    cout, cin, h, w = shape
    r, budget, per = cp_rank(f, shape), f * cout * cin * h * w, cin + h + w + cout
    assert r >= 1
    assert r * per <= budget or r == 1
    assert (r + 1) * per > budget


@pytest.mark.parametrize("f", [0.1, 0.25, 0.5, 1.0])
def test_fraction_bounds_the_weights_of_the_real_layers(f):
    layer = nn.Conv2d(8, 12, (3, 5))
    n = layer.weight.numel()
    for seq in (spatial_svd_conv(layer, rank=f), tucker2_conv(layer, rank=f)):
        assert weights_of(seq) <= f * n


@pytest.mark.parametrize("bad", BAD_RANKS)
def test_bad_ranks_are_config_errors(bad):
    shape = (6, 4, 3, 5)
    for rule in (spatial_rank, tucker_ranks, cp_rank):
        with pytest.raises(ConfigError):
            rule(bad, shape)
    layer = nn.Conv2d(4, 6, (3, 5))
    for fn in (spatial_svd_conv, tucker2_conv, cp_conv):
        with pytest.raises(ConfigError):
            fn(layer, rank=bad)


@pytest.mark.parametrize("fn", [spatial_svd_conv, tucker2_conv, cp_conv])
@pytest.mark.parametrize("layer, words", [
    (nn.Linear(10, 5), "nn.Conv2d"),
    (nn.Conv1d(4, 6, 3), "nn.Conv2d"),
    (nn.Conv2d(4, 6, 3, groups=2), "groups=1"),
    (nn.Conv2d(4, 6, 3, padding="same"), "padding"),
    (nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), "padding"),
])
def test_unsupported_layers_are_config_errors(fn, layer, words):
    with pytest.raises(ConfigError, match=words):
        fn(layer, rank=2)


# --- a factorised LeNet-5: file, runtime, ONNX ------------------------------------------------

def _plant_conv2(model, method):
    """Give conv2 a kernel that the method represents exactly at its rank (so the factorised net
    equals the dense one, and the ALS / HOOI converge in a few iterations)."""
    shape = tuple(model.conv2.weight.shape)
    if method == "spatial":
        kernel, make = planted_spatial(shape, spatial_rank(0.5, shape)), lambda c: spatial_svd_conv(c, rank=0.5)
    elif method == "tucker":
        kernel, make = planted_tucker(shape, tucker_ranks(0.5, shape)), lambda c: tucker2_conv(c, rank=0.5)
    else:
        kernel, make = planted_cp(shape, 4), lambda c: cp_conv(c, rank=4)
    with torch.no_grad():
        model.conv2.weight.copy_(kernel * (model.conv2.weight.norm() / kernel.norm()))
    return make


@pytest.mark.parametrize("method, convs", [("spatial", 3), ("tucker", 4), ("cp", 5)])
def test_factorised_lenet5_stores_loads_and_exports_as_small_convolutions(tmp_path, method, convs):
    import onnx

    model = ds.build_model("lenet-5")
    make = _plant_conv2(model, method)
    raw = torch.randint(0, 256, (16, 1, 28, 28), generator=_gen(5), dtype=torch.uint8)
    x = SPEC.apply(raw)
    with torch.no_grad():
        dense = model(x)
    model.conv2 = make(model.conv2)
    model.eval()
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    with torch.no_grad():
        fac = model(x)
    torch.testing.assert_close(fac, dense, rtol=1e-4, atol=1e-4 * float(dense.abs().max()))

    path = tmp_path / f"{method}.dsz"
    ds.save_model(model, path, SPEC)
    loaded = ds.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), fac)
    assert np.array_equal(loaded.predict(raw), fac.argmax(1).numpy())
    state = loaded.dense_state_dict()
    for name, p in model.conv2.named_parameters():
        assert torch.equal(state[f"conv2.{name}"], p.detach())

    out = ds.export(path, tmp_path / f"{method}.onnx")
    assert out["argmax_agreement"] == 1.0
    nodes = onnx.load(str(tmp_path / f"{method}.onnx")).graph.node
    conv_nodes = [n for n in nodes if n.op_type == "Conv"]
    assert len(conv_nodes) == convs  # the small layers, not one rebuilt dense kernel
    assert sum(n.op_type == "Gemm" for n in nodes) == 2
    groups = sorted(next((a.i for a in n.attribute if a.name == "group"), 1) for n in conv_nodes)
    assert groups == ([1, 1, 1, 4, 4] if method == "cp" else [1] * convs)


def test_energy_rank_of_an_all_zero_kernel_is_clipped_to_the_full_rank():
    from deepshrink.lowrank import spatial_svd_conv, tucker2_conv

    c = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        c.weight.zero_()
    spatial = spatial_svd_conv(c, energy=0.9)
    assert spatial.vertical.out_channels <= min(3 * 3, 4 * 3)
    tucker = tucker2_conv(c, energy=0.9)
    assert tucker.reduce.out_channels <= 3 and tucker.restore.in_channels <= 4
