"""Channel groups and rewiring: keeping every channel changes nothing, removing channels that
carry zeros changes nothing, shapes shrink, refused cases name the layer and the reason."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError
from deepshrink.models import lenet_5, lenet_300_100
from deepshrink.models.mobilenet_v2 import mobilenet_v2
from deepshrink.structured import channel_groups, channel_importance, kept_count, narrow, shrink

X28 = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
X32 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _random_bn(model: nn.Module) -> nn.Module:
    """Batch norms with statistics and affine parameters away from the identity, in eval mode."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return _random_bn(mobilenet_v2(num_classes=10))


NETS = {"lenet-300-100": (lenet_300_100, X28), "lenet-5": (lenet_5, X28)}


@pytest.mark.parametrize("net", list(NETS))
def test_lenet_groups_and_keeping_every_channel_is_the_identity(net):
    build, x = NETS[net]
    torch.manual_seed(0)
    model = build().eval()
    groups = channel_groups(model, x)
    assert [g.name for g in groups if g.prunable] == (["fc1", "fc2"] if net == "lenet-300-100"
                                                      else ["conv1", "conv2", "fc1"])
    last = groups[-1]
    assert not last.prunable and "output" in last.reason
    if net == "lenet-5":  # conv2's channel c is fc1's inputs c*16 .. c*16+15 after the flatten
        conv2 = next(g for g in groups if g.name == "conv2")
        assert any(s.param == "fc1.weight" and s.axis == 1 and s.factor == 16 for s in conv2.slices)
    same = shrink(copy.deepcopy(model), {g.name: range(g.size) for g in groups if g.prunable}, x)
    assert torch.equal(same(x), model(x))


def _zero_channels(model, group, channels):
    """Make ``channels`` of ``group`` exactly zero where they are made: the producing rows and
    biases, and the scale and shift of the batch norms that follow them (consumers untouched)."""
    idx = torch.tensor(channels)
    with torch.no_grad():
        for s in group.producers + group.slices:
            owner = model.get_submodule(s.param.rpartition(".")[0])
            made_here = s in group.producers or s.param.rpartition(".")[0] in group.layers
            norm = isinstance(owner, nn.BatchNorm2d) and s.param.endswith(("weight", "bias"))
            if made_here or norm:
                dict(model.named_parameters())[s.param].index_fill_(s.axis, idx, 0.0)


def test_removing_zero_channels_of_lenets_keeps_the_outputs():
    torch.manual_seed(0)
    for build in (lenet_300_100, lenet_5):
        model = build().eval()
        groups = {g.name: g for g in channel_groups(model, X28)}
        first = groups["fc1"] if build is lenet_300_100 else groups["conv2"]
        dead = [1, 4, 5, 9]
        _zero_channels(model, first, dead)
        ref = model(X28)
        # the zero rows have zero L1 importance: narrow removes them first
        scores = channel_importance(model, [first], "l1")[first.name]
        assert set(np.flatnonzero(scores == 0)) == set(dead)
        small = narrow(model, {first.name: len(dead) / first.size}, X28)
        assert torch.allclose(small(X28), ref, atol=1e-5)
        w = dict(small.named_parameters())[first.producers[0].param]
        assert w.shape[0] == first.size - len(dead)


def test_mobilenet_residual_groups_depthwise_and_batchnorm(mobilenet):
    model = mobilenet
    groups = channel_groups(model, X32)
    by_name = {g.name: g for g in groups}
    # the residual adds of blocks 5 and 6 join the projections of blocks 4, 5 and 6
    res = by_name["features.4.conv.2"]
    assert res.layers == ["features.4.conv.2", "features.5.conv.2", "features.6.conv.2"] and res.prunable
    # an expansion's channels pass through the depthwise conv and its batch norms
    exp = by_name["features.2.conv.0.0"]
    params = {s.param for s in exp.slices}
    assert {"features.2.conv.1.0.weight", "features.2.conv.1.1.running_var", "features.2.conv.2.weight"} <= params
    assert not by_name["classifier.1"].prunable
    with torch.no_grad():
        ref = model(X32)
        same = shrink(copy.deepcopy(model), {g.name: range(g.size) for g in groups if g.prunable}, X32)
        assert torch.equal(same(X32), ref)


def test_mobilenet_removing_zero_channels_of_a_residual_group_keeps_the_outputs(mobilenet):
    model = copy.deepcopy(mobilenet)
    groups = {g.name: g for g in channel_groups(model, X32)}
    res, exp = groups["features.4.conv.2"], groups["features.7.conv.0.0"]
    dead_res, dead_exp = [0, 3, 17], [5, 100]
    # a channel is zero after the batch norm that follows its convolution when the norm's scale and shift are
    _zero_channels(model, res, dead_res)
    _zero_channels(model, exp, dead_exp)
    with torch.no_grad():
        ref = model(X32)
        keep = {res.name: [c for c in range(res.size) if c not in dead_res],
                exp.name: [c for c in range(exp.size) if c not in dead_exp]}
        small = shrink(model, keep, X32)
        out = small(X32)
    assert torch.allclose(out, ref, atol=1e-4)
    dw = small.features[7].conv[1][0]
    assert dw.in_channels == dw.out_channels == dw.groups == 190
    assert small.features[4].conv[2].out_channels == 29 and small.features[5].conv[0][0].in_channels == 29
    assert small.features[4].conv[3].num_features == 29


def test_narrow_shrinks_mobilenet_and_the_graph_shows_it(mobilenet):
    small = narrow(mobilenet, 0.5, X32, multiple=8)
    assert small is not mobilenet and mobilenet.features[0][0].out_channels == 32  # a copy
    assert sum(p.numel() for p in small.parameters()) < 0.4 * sum(p.numel() for p in mobilenet.parameters())
    graph = ds.trace(small, inputs=(X32,))
    shapes = graph.plan(None, {k: tuple(v.shape) for k, v in small.state_dict().items()}).shapes
    assert shapes["features.0.0"] == (16, 16, 16) and shapes["features.18.0"][0] == 640
    assert all(g.size % 8 == 0 for g in channel_groups(small, X32) if g.prunable)
    assert small(X32).shape == (2, 10)


def test_taylor_importance_on_calibration_batches():
    torch.manual_seed(0)
    model = lenet_5().eval()
    groups = [g for g in channel_groups(model, X28) if g.prunable]
    y = torch.tensor([0, 1, 2, 3])
    scores = channel_importance(model, groups, "taylor", [((X28,), y)])
    assert {k: v.shape for k, v in scores.items()} == {"conv1": (20,), "conv2": (50,), "fc1": (500,)}
    assert all(np.isfinite(v).all() and (v >= 0).all() and v.sum() > 0 for v in scores.values())
    assert not any(p.grad is not None for p in model.parameters())
    with pytest.raises(ConfigError, match="taylor.*batches"):
        channel_importance(model, groups, "taylor")


def test_kept_counts():
    assert kept_count(300, 0.7) == 90
    assert kept_count(10, 0.99) == 1  # never all
    assert kept_count(100, 0.5, 8) == 48
    assert kept_count(20, 0.9, 8) == 8
    assert kept_count(5, 0.0, 8) == 5


class _NormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)))


def test_refused_cases_name_the_layer_and_the_reason():
    x = torch.randn(2, 8)
    with pytest.raises(ConfigError, match="'fc1'.*layer_norm normalises over the channels"):
        narrow(_NormNet(), {"fc1": 0.5}, x)
    with pytest.raises(ConfigError, match="'fc2'.*output"):
        shrink(_NormNet(), {"fc2": [0, 1]}, x)
    with pytest.raises(ConfigError, match="no channel group 'fc9'"):
        narrow(_NormNet(), {"fc9": 0.5}, x)
    for bad in (1.0, -0.1, True):
        with pytest.raises(ConfigError, match="fraction"):
            narrow(lenet_300_100(), bad, X28)
    with pytest.raises(ConfigError, match="multiple"):
        narrow(lenet_300_100(), 0.5, X28, multiple=0)
    with pytest.raises(ConfigError, match="keep 1 to 300"):
        shrink(lenet_300_100(), {"fc1": []}, X28)


def test_minilm_attention_spaces_are_refused_and_its_feed_forward_is_prunable():
    from deepshrink.models.minilm import minilm_l6

    torch.manual_seed(0)
    model = minilm_l6().eval()
    ids = torch.randint(1, 1000, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    groups = {g.name: g for g in channel_groups(model, (ids, mask))}
    assert groups["layers.0.intermediate"].prunable  # the feed-forward's hidden units are plain neurons
    with pytest.raises(ConfigError, match="'layers.0.query'.*reshape"):
        narrow(model, {"layers.0.query": 0.5}, (ids, mask), inplace=True)
    with pytest.raises(ConfigError, match="'embeddings.word'.*layer_norm"):
        narrow(model, {"embeddings.word": 0.5}, (ids, mask), inplace=True)
    with torch.no_grad():
        ref = model(ids, mask)
        small = narrow(model, {"layers.0.intermediate": 0.0}, (ids, mask), inplace=True)
        assert torch.equal(small(ids, mask), ref)
