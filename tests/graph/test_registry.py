"""Every registered op through its five parts: trace → IR (validated round trip) → shape plan →
PyTorch build → ONNX export run by onnxruntime. An op (or a trace form of an op) without a case
here fails :func:`test_cases_cover_every_op_and_trace_form`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.export.onnx_export import serialize_onnx, to_onnx
from deepshrink.graph import OPS, Graph, Op, build, register, trace
from deepshrink.graph.ops.base import TORCH_DTYPES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "format.md"


class Fn(nn.Module):
    """A module whose forward is ``fn`` (traced through by torch.fx)."""

    def __init__(self, fn: Callable, *mods: nn.Module):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        return self.fn(x, *self.mods)


class Fn2(Fn):
    """``fn`` of two inputs (``x``, ``y``) and the modules."""

    def forward(self, x, y):
        return self.fn(x, y, *self.mods)


@dataclass(frozen=True)
class In:
    """One input of a case: per-sample shape, dtype, and for int64 the exclusive upper bound."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    high: int = 2

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.dtype == torch.float32:
            return torch.randn(n, *self.shape, generator=gen)
        x = torch.randint(0, self.high, (n, *self.shape), generator=gen)
        return x.bool() if self.dtype == torch.bool else x


@dataclass(frozen=True)
class Case:
    op: str
    layer: Callable[[], nn.Module]
    shape: tuple[int, ...] | tuple[In, ...]
    id: str

    @property
    def inputs(self) -> tuple[In, ...]:
        if all(isinstance(d, int) for d in self.shape):
            return (In(self.shape),)
        return tuple(i if isinstance(i, In) else In(i) for i in self.shape)

    def make(self) -> nn.Module:
        """One-input layers inside a Sequential (torch.fx traces through the root module's
        forward); a several-input case is its own root."""
        return nn.Sequential(self.layer()) if len(self.inputs) == 1 else self.layer()


def _mha(**kw) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(8, 2, batch_first=True, **kw)


IMG = (3, 9, 11)
SEQ = (2, 5, 4)  # heads, tokens, features
MASK = In((5,), torch.int64)  # a 0/1 attention mask over 5 tokens
CASES = [
    Case("linear", lambda: nn.Linear(6, 4), (6,), "Linear"),
    Case("linear", lambda: nn.Linear(6, 4, bias=False), (3, 6), "Linear-3d-nobias"),
    Case("linear", lambda: nn.Linear(6, 4), (2, 3, 6), "Linear-4d"),
    Case("conv2d", lambda: nn.Conv2d(3, 4, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)), IMG, "Conv2d"),
    Case("conv2d", lambda: nn.Conv2d(3, 6, 3, padding=1, groups=3, bias=False), IMG, "Conv2d-grouped"),
    Case("conv2d", lambda: nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3), IMG, "Conv2d-depthwise"),
    Case("conv2d", lambda: nn.Conv2d(3, 4, (4, 3), padding="same", dilation=(1, 2)), IMG, "Conv2d-same-even"),
    Case("conv2d", lambda: nn.Conv2d(3, 4, 3, padding="valid"), IMG, "Conv2d-valid"),
    Case("conv1d", lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 10), "Conv1d"),
    Case("conv1d", lambda: nn.Conv1d(4, 4, 4, padding="same", dilation=2, groups=4, bias=False), (4, 9), "Conv1d-depthwise-same"),
    Case("batch_norm", lambda: nn.BatchNorm2d(3), IMG, "BatchNorm2d"),
    Case("batch_norm", lambda: nn.BatchNorm1d(5, affine=False), (5,), "BatchNorm1d-noaffine"),
    Case("batch_norm", lambda: nn.BatchNorm1d(3), (3, 7), "BatchNorm1d-sequence"),
    Case("layer_norm", lambda: nn.LayerNorm(5), (4, 5), "LayerNorm"),
    Case("layer_norm", lambda: nn.LayerNorm((4, 5), elementwise_affine=False), (3, 4, 5), "LayerNorm-2dims-noaffine"),
    Case("layer_norm", lambda: nn.LayerNorm(5, eps=1e-12, bias=False), (5,), "LayerNorm-nobias"),
    Case("embedding", lambda: nn.Embedding(10, 4), (In((6,), torch.int64, 10),), "Embedding"),
    Case("relu", nn.ReLU, IMG, "ReLU"),
    Case("relu", lambda: Fn(lambda x: F.relu(x) + torch.relu(x).relu()), IMG, "relu-forms"),
    Case("relu6", nn.ReLU6, IMG, "ReLU6"),
    Case("relu6", lambda: Fn(lambda x: F.relu6(x * 4)), IMG, "relu6-forms"),
    Case("gelu", nn.GELU, (7,), "GELU"),
    Case("gelu", lambda: nn.GELU("tanh"), (7,), "GELU-tanh"),
    Case("gelu", lambda: Fn(lambda x: F.gelu(x) + F.gelu(x, approximate="tanh")), (7,), "gelu-forms"),
    Case("silu", nn.SiLU, (7,), "SiLU"),
    Case("silu", lambda: Fn(lambda x: F.silu(x)), (7,), "silu-forms"),
    Case("hardswish", nn.Hardswish, (3, 7), "Hardswish"),
    Case("hardswish", lambda: Fn(lambda x: F.hardswish(x * 3)), (7,), "hardswish-forms"),
    Case("hardsigmoid", nn.Hardsigmoid, (3, 7), "Hardsigmoid"),
    Case("hardsigmoid", lambda: Fn(lambda x: F.hardsigmoid(x * 3)), (7,), "hardsigmoid-forms"),
    Case("tanh", nn.Tanh, (7,), "Tanh"),
    Case("tanh", lambda: Fn(lambda x: torch.tanh(x).tanh() + F.tanh(x)), (7,), "tanh-forms"),
    Case("sigmoid", nn.Sigmoid, (7,), "Sigmoid"),
    Case("sigmoid", lambda: Fn(lambda x: torch.sigmoid(x).sigmoid() + F.sigmoid(x)), (7,), "sigmoid-forms"),
    Case("leaky_relu", lambda: nn.LeakyReLU(0.2), IMG, "LeakyReLU"),
    Case("identity", lambda: nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.Tanh()), (7,), "Dropout-Identity"),
    Case("identity", lambda: Fn(lambda x: F.dropout(x, 0.5, training=False).tanh().contiguous()), (7,), "dropout-contiguous"),
    Case("softmax", lambda: nn.Softmax(dim=1), (4, 5), "Softmax"),
    Case("softmax", lambda: Fn(lambda x: F.softmax(x, dim=-1) + torch.softmax(x, 1) + x.softmax(-2)), (4, 5),
         "softmax-forms"),
    Case("log_softmax", lambda: nn.LogSoftmax(dim=-1), (4, 5), "LogSoftmax"),
    Case("log_softmax", lambda: Fn(lambda x: F.log_softmax(x, 2) + torch.log_softmax(x, dim=1) + x.log_softmax(1)),
         (4, 5), "log_softmax-forms"),
    Case("max_pool2d", lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), IMG, "MaxPool2d"),
    Case("max_pool2d", lambda: Fn(lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)), IMG, "max_pool2d-function"),
    Case("avg_pool2d", lambda: nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False), IMG, "AvgPool2d"),
    Case("avg_pool2d", lambda: nn.AvgPool2d((3, 2), stride=(1, 2), padding=1), IMG, "AvgPool2d-padded"),
    Case("avg_pool2d", lambda: Fn(lambda x: F.avg_pool2d(x, 2, padding=1, count_include_pad=False)), IMG,
         "avg_pool2d-function"),
    Case("global_avg_pool2d", lambda: nn.AdaptiveAvgPool2d(1), IMG, "AdaptiveAvgPool2d-1"),
    Case("global_avg_pool2d", lambda: Fn(lambda x: F.adaptive_avg_pool2d(x, (1, 1))), IMG, "adaptive_avg_pool2d-1"),
    Case("adaptive_avg_pool2d", lambda: nn.AdaptiveAvgPool2d((4, 3)), IMG, "AdaptiveAvgPool2d-uneven"),
    Case("adaptive_avg_pool2d", lambda: Fn(lambda x: F.adaptive_avg_pool2d(x, (3, None))), IMG, "adaptive_avg_pool2d-even"),
    Case("adaptive_max_pool2d", lambda: nn.AdaptiveMaxPool2d((2, 5)), IMG, "AdaptiveMaxPool2d-uneven"),
    Case("adaptive_max_pool2d", lambda: Fn(lambda x: F.adaptive_max_pool2d(x, (3, 11))), IMG, "adaptive_max_pool2d-even"),
    Case("flatten", nn.Flatten, IMG, "Flatten"),
    Case("flatten", lambda: Fn(lambda x: torch.flatten(x, 2) + x.flatten(start_dim=2)), IMG, "flatten-forms"),
    Case("reshape", lambda: Fn(lambda x: x.view(x.size(0), -1, 3)), IMG, "view"),
    Case("reshape", lambda: Fn(lambda x: x.reshape(-1, 11, 27).reshape((-1, 3, 99))), IMG, "reshape"),
    Case("reshape", lambda: Fn(lambda x: torch.reshape(x, (x.shape[0], x.size(-1), x.size(1), -1))), IMG,
         "reshape-sizes-moved"),
    Case("reshape", lambda: Fn(lambda x: x.view(x.flatten(2).size(0), x.size(1), x.flatten(2).shape[2])), IMG,
         "view-sizes-of-another-tensor"),
    Case("transpose", lambda: Fn(lambda x: x.transpose(1, 2) + torch.transpose(x, -1, 2).transpose(-2, -1).transpose(1, 2)), IMG,
         "transpose-forms"),
    Case("permute", lambda: Fn(lambda x: x.permute(0, 2, 3, 1) + torch.permute(x, (0, -2, -1, 1))), IMG, "permute-forms"),
    Case("unsqueeze", lambda: Fn(lambda x: x.unsqueeze(1) + torch.unsqueeze(x, -2)), (4, 5), "unsqueeze-forms"),
    Case("squeeze", lambda: Fn(lambda x: x.unsqueeze(2).squeeze(2) + torch.squeeze(x, 1)), (4, 5), "squeeze-forms"),
    Case("index", lambda: Fn(lambda x: x[:, None, 1:, ::2] + x[..., 1:, ::2, :][:, None]), IMG, "index-slices-newaxis"),
    Case("index", lambda: Fn(lambda x: x[:, 0, 2:9] + x[:, -1, 2:9, ...] + x[..., 1:8, :][:, 1]), IMG, "index-positions"),
    Case("cat", lambda: Fn(lambda x: torch.cat([x, x.tanh()], dim=1) + torch.concat((x, x), -3)), IMG, "cat-forms"),
    Case("expand_as", lambda: Fn(lambda x: x.mean(1, keepdim=True).expand_as(x) + x[:, :1].expand(x.size())
                                 + x[:, :, :1].expand(x.shape)), IMG, "expand-forms"),
    Case("cast", lambda: Fn2(lambda x, m: x * m.float() + m.to(torch.float32) + m.to(x.dtype) + m.type_as(x)
                             + m.bool().float() + m.to(dtype=torch.float) + x.to("cpu")), ((5,), MASK), "cast-forms"),
    Case("cast", lambda: Fn(lambda x: (x * 3).long() + x.type(torch.int64)), (5,), "cast-to-int64-output"),
    Case("full_like", lambda: Fn2(lambda x, m: torch.zeros_like(m) + torch.ones_like(x) + torch.full_like(x, 2.5)
                                  + torch.zeros_like(m, dtype=torch.float32)), ((5,), MASK), "full_like-forms"),
    Case("arange", lambda: Fn2(lambda x, m, e: e(m) + e(torch.arange(m.size(1))) + e(torch.arange(
        m.shape[1], dtype=torch.long, device=m.device)[None, :].expand_as(m)) + e(torch.arange(m.size(-1)).unsqueeze(0))
        + x, nn.Embedding(5, 3)), ((5, 1), MASK), "arange-positions"),
    Case("add", lambda: Fn(lambda x: x + x.tanh()), IMG, "operator-add"),
    Case("add", lambda: Fn(lambda x: torch.add(x.sigmoid(), x).add(x)), IMG, "torch-add"),
    Case("add", lambda: Fn(lambda x, p: x + p(x), nn.AdaptiveAvgPool2d(1)), IMG, "add-broadcast"),
    Case("add", lambda: Fn(lambda x: x + 1 + (2.5 + x)), IMG, "add-scalar"),
    Case("add", lambda: Fn2(lambda x, m: m + 1 + m), ((5,), MASK), "add-int64"),
    Case("sub", lambda: Fn2(lambda x, m: (1.0 - m) * -1e4 - x + torch.sub(x, x.sigmoid()).sub(0.5)), ((5,), MASK),
         "sub-forms"),
    Case("mul", lambda: Fn(lambda x: x * 0.5 * x.tanh() + 2 * torch.mul(x, x).mul(3)), IMG, "mul-forms"),
    Case("div", lambda: Fn2(lambda x, m: x / 8.0 + 1.0 / (x.sigmoid() + 1) + torch.div(x, 2).div(x.sigmoid() + 1)
                            + m / 2), ((5,), MASK), "div-forms"),
    Case("compare", lambda: Fn2(lambda x, m: ((x > 0).float() + (x < 0).float() + (x >= 0.5).float()
                                              + (x <= x.tanh()).float() + (m == 0).float() + (m != 1).float()
                                              + (0 < x).float() + torch.eq(m, 1).float() + torch.ne(m, 0).float()
                                              + torch.lt(x, 0.1).float() + torch.le(x, 0).float()
                                              + torch.gt(x, x.sigmoid()).float() + torch.ge(m, 1).float()
                                              + x.eq(x).float() + x.ne(0).float() + x.lt(0).float() + x.le(0).float()
                                              + x.gt(0).float() + x.ge(0).float())), ((5,), MASK), "compare-forms"),
    Case("clamp", lambda: Fn(lambda x: torch.clamp(x, min=-0.5) + x.clamp(-1, 1) + x.clamp_min(0.1)
                             + x.clamp_max(0.2) + torch.clip(x, max=0.3) + x.clip(0, 2)), IMG, "clamp-forms"),
    Case("clamp", lambda: Fn2(lambda x, m: torch.clamp(m.sum(1, keepdim=True), min=1e-9) + x), ((5,), MASK),
         "clamp-int64-float-bound"),
    Case("masked_fill", lambda: Fn2(lambda x, m: x.masked_fill(m == 0, -1e4)), ((5,), MASK), "masked_fill"),
    Case("matmul", lambda: Fn(lambda x: x @ x.transpose(-1, -2) + torch.matmul(x, x.transpose(2, 3)).matmul(x)
                              @ x.transpose(-1, -2)), SEQ, "matmul-forms"),
    Case("matmul", lambda: Fn(lambda x: torch.bmm(x, x.transpose(1, 2)).bmm(x)), (5, 4), "bmm-forms"),
    Case("mean", lambda: Fn(lambda x: x.mean(dim=(1, 2)) + torch.mean(x, -2, keepdim=True).mean(1)[:, 0]), IMG,
         "mean-forms"),
    Case("sum", lambda: Fn(lambda x: x.sum(1) + torch.sum(x, (2, 3), keepdim=True)[:, 0]), IMG, "sum-forms"),
    Case("sum", lambda: Fn2(lambda x, m: m.sum(1) + (m > 0).sum(-1)), ((5,), MASK), "sum-int64"),
    Case("normalize", lambda: Fn(lambda x: F.normalize(x, dim=-1) + F.normalize(x, p=1, dim=1)), IMG, "normalize"),
    Case("attention", lambda: Fn(lambda x: F.scaled_dot_product_attention(x, x * 0.5, x.tanh())), SEQ, "sdpa"),
    Case("attention", lambda: Fn(lambda x: F.scaled_dot_product_attention(x, x, x, is_causal=True, scale=0.3)), SEQ,
         "sdpa-causal"),
    Case("attention", lambda: Fn2(lambda x, m: F.scaled_dot_product_attention(
        x, x, x, attn_mask=(1.0 - m[:, None, None, :].float()) * -1e4)), (In(SEQ), MASK), "sdpa-float-mask"),
    Case("attention", lambda: Fn2(lambda x, m: F.scaled_dot_product_attention(
        x, x.sigmoid(), x, m[:, None, None, :] == 1)), (In(SEQ), In((5,), torch.int64, 2)), "sdpa-bool-mask"),
    Case("multihead_attention", lambda: Fn(lambda x, a: a(x, x.tanh(), x.tanh())[0], _mha()), (5, 8), "MultiheadAttention"),
    Case("multihead_attention", lambda: Fn2(lambda x, m, a: a(x, x, x, key_padding_mask=m == 0)[0], _mha(bias=False)),
         (In((5, 8)), MASK), "MultiheadAttention-padding-mask"),
    Case("multihead_attention", lambda: Fn2(lambda x, m, a: a(x, x, x, key_padding_mask=(1.0 - m.float()) * -1e4,
                                                                 need_weights=False)[0], _mha()),
         (In((5, 8)), MASK), "MultiheadAttention-float-mask"),
]


def _prepare(case: Case) -> nn.Module:
    torch.manual_seed(0)
    model = case.make().eval()
    with torch.no_grad():  # non-trivial statistics, so batch_norm's arithmetic is exercised
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model


def _forms(model: nn.Module) -> set:
    """The module types, functions and methods torch.fx sees in ``model``."""
    gm = torch.fx.symbolic_trace(model)
    modules = dict(gm.named_modules())
    out = set()
    for n in gm.graph.nodes:
        if n.op == "call_module":
            out.add(type(modules[n.target]))
        elif n.op in ("call_function", "call_method"):
            out.add(n.target)
    return out


def test_cases_cover_every_op_and_trace_form():
    assert {c.op for c in CASES} == set(OPS), "every registered op needs a case here (and no case a missing op)"
    seen = set().union(*(_forms(c.make()) for c in CASES))
    for op in OPS.values():
        missing = [f for f in (*op.modules, *op.functions, *op.methods) if f not in seen]
        assert not missing, f"op {op.name}: no case traces {missing}"


def _inputs(case: Case, n: int = 3) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    xs = tuple(i.sample(n, gen) for i in case.inputs)
    if len(xs) > 1 and xs[-1].dtype == torch.int64:  # a mask: every sample keeps its first token
        xs[-1][:, 0] = 1
    return xs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_traces_plans_builds_and_exports(case):
    import onnxruntime as ort

    model = _prepare(case)
    xs = _inputs(case)
    with torch.no_grad():
        want = model(*xs)
    # trace → IR, and the IR survives a JSON round trip through validation unchanged; one-input
    # cases are traced as before (one float input "input"), several inputs from example batches
    several = len(xs) > 1 or xs[0].dtype != torch.float32
    graph = trace(model, inputs=xs) if several else trace(model)
    assert case.op in {n.op for n in graph.nodes}
    again = Graph.from_dict(json.loads(json.dumps(graph.to_dict())))
    assert again == graph
    # the shape plan (integer arithmetic) equals the shapes PyTorch computes, node by node, and
    # the dtypes inferred when the graph was built equal PyTorch's
    state = model.state_dict()
    plan = again.plan(None if several else case.shape, {k: tuple(v.shape) for k, v in state.items()})
    net = build(again, state)
    env = dict(zip(again.input_names, xs))
    with torch.no_grad():
        for node in again.nodes:
            env[node.name] = net.run_node(node, [env[i] for i in node.inputs])
            assert plan.shapes[node.name] == tuple(env[node.name].shape[1:]), node.name
            assert plan.dtypes[node.name] == TORCH_DTYPES[env[node.name].dtype], node.name
        got = net(*xs)
    assert plan.shapes[again.output] == tuple(want.shape[1:])
    # the built network computes what the model computes
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # ONNX: onnxruntime agrees with the model
    data = serialize_onnx(to_onnx(again, state, None if several else case.shape))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {name: x.numpy() for name, x in zip(again.input_names, xs)})
    np.testing.assert_allclose(onnx_out, want.numpy(), rtol=1e-4, atol=1e-5)


def test_register_refuses_a_claimed_name_or_trace_form_and_an_incomplete_op():
    class Twice(Op):
        name = "relu"

        def forward(self, a, xs, p):
            return xs[0]

    class Steals(Twice):
        name = "steals_relu"
        modules = (nn.ReLU,)

    class Incomplete(Op):
        name = "incomplete"

    with pytest.raises(TypeError, match="'relu' is already registered by op 'relu'"):
        register(Twice)
    with pytest.raises(TypeError, match="ReLU.* is already registered by op 'relu'"):
        register(Steals)
    with pytest.raises(TypeError, match="needs a name and a forward"):
        register(Incomplete)
    assert "steals_relu" not in OPS and "incomplete" not in OPS and OPS["relu"].name == "relu"


def test_format_spec_lists_every_op():
    listed = re.search(r"an op from the allow-list \(([^)]*)\)", DOCS.read_text())
    assert listed, "docs/format.md no longer lists the ops"
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == set(OPS)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = nn.ELU()

    def forward(self, x):
        return self.act(self.fc(x))


class ThreeUnsupported(nn.Module):
    """Supported layers around an unsupported module, function and method."""

    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = torch.cumsum(self.block(x), dim=1)
        return self.head(y.roll(1, 2))


def test_every_unsupported_operation_is_reported_with_where():
    with pytest.raises(UnsupportedOperationError) as info:
        trace(ThreeUnsupported())
    message, problems = str(info.value), info.value.problems
    assert len(problems) == 3, problems
    assert "3 operation(s)" in message
    assert problems[0].startswith("module 'block.act' (ELU)")
    assert problems[1].startswith("function 'cumsum' at node 'cumsum'")
    assert problems[2].startswith("method 'roll' at node 'roll'")
    assert all(p in message for p in problems)
    assert "supported modules:" in message and "Linear" in message


def test_unsupported_configurations_are_all_reported():
    class Configs(nn.Module):
        def __init__(self):
            super().__init__()
            self.reflect = nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")
            self.pool = nn.MaxPool2d(2, dilation=2)
            self.flat = nn.Flatten(1, 2)

        def forward(self, x):
            return self.flat(self.pool(self.reflect(x))).softmax(1, dtype=torch.float64)

    with pytest.raises(UnsupportedOperationError) as info:
        trace(Configs())
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "module 'reflect' (Conv2d)", "module 'pool' (MaxPool2d)", "module 'flat' (Flatten)",
        "method 'softmax' at node 'softmax'",
    ]
    assert "padding_mode='reflect'" in problems[0] and "dilation" in problems[1] and "end_dim=2" in problems[2]
    assert "dtype" in problems[3]


def test_arguments_an_op_cannot_read_are_problems_too():
    """Run-time sizes and odd argument forms join the list of problems; nothing untyped escapes."""

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ELU()

        def forward(self, x):
            x = self.act(x).view(x.size(1) * 2, -1)
            return torch.flatten(x, start_dim=x.dim() - 1)

    with pytest.raises(UnsupportedOperationError) as info:
        trace(Odd())
    problems = info.value.problems
    assert any(p.startswith("module 'act' (ELU)") for p in problems), problems
    assert any(p.startswith("function 'mul'") and "size" in p for p in problems), problems
    assert any(p.startswith("method 'dim'") for p in problems), problems
    assert any("flatten" in p for p in problems), problems
