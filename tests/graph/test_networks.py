"""Whole networks as people write them, through trace → IR → plan → GraphNet → ONNX →
onnxruntime: a MobileNetV2-style inverted-residual network and a small BERT-style encoder layer
with two int64 inputs; batch-norm folding; several outputs; one error for many problems."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.export.onnx_export import serialize_onnx, to_onnx
from deepshrink.graph import OPS, Graph, GraphInput, build, fold_batchnorm, trace


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():  # real, non-trivial statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1×1 → BN → ReLU6 → depthwise 3×3 → BN → ReLU6 → project 1×1 →
    BN, with the residual when the shape allows it."""

    def __init__(self, inp: int, out: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), _bn(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), _bn(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out, 1, bias=False), _bn(out),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class TinyMobileNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), _bn(8), nn.ReLU6(inplace=True)),
            InvertedResidual(8, 16, 2), InvertedResidual(16, 16, 1),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class TinyBert(nn.Module):
    """One BERT encoder layer as people write it, with embeddings and masked mean pooling."""

    def __init__(self, vocab=30, max_len=16, hidden=16, heads=4, inter=32):
        super().__init__()
        self.heads, self.head_dim, self.hidden = heads, hidden // heads, hidden
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_len, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, inter)
        self.output = nn.Linear(inter, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def split_heads(self, x):
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).transpose(1, 2)

    def forward(self, input_ids, attention_mask):
        seq_length = input_ids.size(1)
        position_ids = torch.arange(seq_length, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        token_type_ids = torch.zeros_like(input_ids)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids.expand_as(input_ids))
             + self.token_type_embeddings(token_type_ids))
        x = self.dropout(self.emb_norm(x))
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores + (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        probs = self.dropout(F.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).transpose(1, 2).contiguous()
        context = context.view(context.size(0), context.size(1), self.hidden)
        x = self.attn_norm(x + self.dropout(self.attn_out(context)))
        x = self.out_norm(x + self.dropout(self.output(F.gelu(self.intermediate(x)))))
        mask = attention_mask.unsqueeze(-1).float()
        return torch.sum(x * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)


def _tokens(n: int = 5, length: int = 12, vocab: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=gen)
    lengths = torch.randint(1, length + 1, (n,), generator=gen)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return ids * mask, mask


def _roundtrip(model: nn.Module, xs: tuple[torch.Tensor, ...], inputs=None, shape=None) -> tuple[Graph, torch.Tensor]:
    """trace → JSON → Graph → plan → GraphNet → ONNX → onnxruntime; every result equals the model's."""
    import onnxruntime as ort

    model.eval()
    with torch.no_grad():
        want = model(*xs)
    graph = trace(model, inputs=inputs)
    graph = Graph.from_dict(json.loads(json.dumps(graph.to_dict())))
    state = model.state_dict()
    plan = graph.plan(shape, {k: tuple(v.shape) for k, v in state.items()})
    with torch.no_grad():
        got = build(graph, state)(*xs)
    outs = got if isinstance(got, tuple) else (got,)
    for name, out in zip(graph.outputs, outs):
        assert plan.shapes[name] == tuple(out.shape[1:])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    session = ort.InferenceSession(serialize_onnx(to_onnx(graph, state, shape)), providers=["CPUExecutionProvider"])
    onnx_outs = session.run(None, {name: x.numpy() for name, x in zip(graph.input_names, xs)})
    for o, w in zip(onnx_outs, want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(o, w.numpy(), rtol=1e-5, atol=1e-5)
    return graph, want


def test_mobilenet_style_network_end_to_end():
    torch.manual_seed(0)
    model = TinyMobileNet()
    x = torch.randn(4, 3, 32, 32)
    graph, _ = _roundtrip(model, (x,), shape=(3, 32, 32))
    ops = [n.op for n in graph.nodes]
    assert {"conv2d", "batch_norm", "relu6", "add", "global_avg_pool2d", "flatten", "identity", "linear"} <= set(ops)
    depthwise = [n for n in graph.nodes if n.op == "conv2d" and n.attrs["groups"] > 1]
    assert len(depthwise) == 2 and depthwise[0].attrs["stride"] == [2, 2]


def test_batchnorm_folding_is_exact_to_float_rounding():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), _bn(8), nn.ReLU6(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), _bn(8), nn.ReLU6()).eval()
    x = torch.randn(4, 3, 10, 10) * 3
    graph, state = trace(block), block.state_dict()
    folded, tensors = fold_batchnorm(graph, state)
    assert [n.op for n in folded.nodes] == ["conv2d", "relu6", "conv2d", "relu6"]
    assert set(tensors) == {"0.weight", "0.bias", "3.weight", "3.bias"}  # the bias-less conv gained one
    with torch.no_grad():
        want = block(x)
        torch.testing.assert_close(build(folded, tensors)(x), want, rtol=1e-5, atol=1e-5)
    # the whole MobileNet-style network folds too, and still exports
    model = TinyMobileNet().eval()
    folded, tensors = fold_batchnorm(trace(model), model.state_dict())
    assert "batch_norm" not in {n.op for n in folded.nodes}
    with torch.no_grad():
        xs = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(build(folded, tensors)(xs), model(xs), rtol=1e-5, atol=1e-5)


def test_batchnorm_stays_where_folding_would_change_the_network():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc, self.bn1 = nn.Conv2d(2, 2, 1), _bn(2), nn.Linear(4, 4), nn.BatchNorm1d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y, self.bn1(self.fc(x.flatten(1)[:, :4]))

    model = Shared().eval()
    folded, _ = fold_batchnorm(trace(model), model.state_dict())
    assert [n.op for n in folded.nodes].count("batch_norm") == 2  # conv output read twice; linear rank unknown
    folded, tensors = fold_batchnorm(trace(model), model.state_dict(), (2, 3, 3))
    assert [n.op for n in folded.nodes].count("batch_norm") == 1  # with shapes, the linear's folds
    x = torch.randn(3, 2, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(build(folded, tensors)(x), model(x), rtol=1e-5, atol=1e-5)


def test_bert_style_encoder_with_two_int64_inputs_end_to_end():
    torch.manual_seed(0)
    model = TinyBert()
    ids, mask = _tokens()
    graph, want = _roundtrip(model, (ids, mask), inputs=(ids, mask))
    assert [(i.name, i.dtype, i.shape) for i in graph.inputs] == [("input_ids", "int64", (12,)),
                                                                 ("attention_mask", "int64", (12,))]
    assert want.shape == (5, 16)
    kinds = {n.name: OPS[n.op].layer_kind for n in graph.nodes if OPS[n.op].layer_kind}
    assert kinds["query"] == kinds["key"] == kinds["value"] == "linear"
    assert kinds["word_embeddings"] == kinds["position_embeddings"] == "embedding"
    # padding does not leak into the pooled embedding: the same sentence padded further agrees
    longer_ids, longer_mask = torch.cat([ids, ids[:, :4] * 0], 1), torch.cat([mask, mask[:, :4] * 0], 1)
    model16 = build(trace(model, inputs=(longer_ids, longer_mask)), model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model16(longer_ids, longer_mask), want, rtol=1e-4, atol=1e-5)


def test_integer_inputs_without_a_description_are_a_listed_problem():
    with pytest.raises(UnsupportedOperationError) as info:
        trace(TinyBert())  # dtypes not given: every input is taken for float32
    assert any("int64" in p and "inputs=" in p for p in info.value.problems), info.value.problems
    graph = trace(TinyBert(), inputs=[GraphInput("ids", "int64"), GraphInput("mask", "int64")])
    assert graph.input_names == ("ids", "mask") and graph.inputs[0].shape is None


def test_several_outputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x, mask):
            y = self.fc(x)
            return y.softmax(-1), (y * mask.float()).sum(1), mask.sum(1)

    x, mask = torch.randn(4, 5, 6), (torch.rand(4, 5, 1) > 0.5).long()
    graph, want = _roundtrip(Two(), (x, mask), inputs=(x, mask))
    assert len(graph.outputs) == 3 and graph.to_dict()["output"] == list(graph.outputs)
    assert graph.dtypes[graph.outputs[2]] == "int64"


class ManyProblems(nn.Module):
    """A transformer-ish model with several things the format cannot store."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.rnn = nn.GRU(8, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, ids, mask):
        x = self.emb(ids) + self.emb(torch.arange(5))  # a constant length: not a size of a tensor
        x = self.rnn(self.fc(x))[0].transpose(0, 1)
        return x.flip(1) * mask[:, :, None]


def test_a_model_with_many_problems_gets_one_error_listing_them_all():
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(UnsupportedOperationError) as info:
        trace(ManyProblems(), inputs=(ids, ids))
    where = [p.split(":")[0] for p in info.value.problems]
    assert where == ["get_attr '_tensor_constant0' at node '_tensor_constant0'", "module 'rnn' (GRU)",
                     "method 'transpose' at node 'transpose'", "method 'flip' at node 'flip'"], info.value.problems
    assert "torch.arange(x.size(k))" in info.value.problems[0]
    assert "batch dimension" in info.value.problems[2]
