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
from deepshrink.graph import INPUT, OPS, Graph, Op, build, register, trace

DOCS = Path(__file__).resolve().parents[2] / "docs" / "format.md"


class Fn(nn.Module):
    """A module whose forward is ``fn`` (traced through by torch.fx)."""

    def __init__(self, fn: Callable, *mods: nn.Module):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        return self.fn(x, *self.mods)


@dataclass(frozen=True)
class Case:
    op: str
    layer: Callable[[], nn.Module]
    shape: tuple[int, ...]
    id: str

    def make(self) -> nn.Module:
        """The layer inside a Sequential: torch.fx traces through the root module's forward."""
        return nn.Sequential(self.layer())


IMG = (3, 9, 11)
CASES = [
    Case("linear", lambda: nn.Linear(6, 4), (6,), "Linear"),
    Case("linear", lambda: nn.Linear(6, 4, bias=False), (3, 6), "Linear-3d-nobias"),
    Case("linear", lambda: nn.Linear(6, 4), (2, 3, 6), "Linear-4d"),
    Case("conv2d", lambda: nn.Conv2d(3, 4, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)), IMG, "Conv2d"),
    Case("conv2d", lambda: nn.Conv2d(3, 6, 3, padding=1, groups=3, bias=False), IMG, "Conv2d-grouped"),
    Case("batch_norm", lambda: nn.BatchNorm2d(3), IMG, "BatchNorm2d"),
    Case("batch_norm", lambda: nn.BatchNorm1d(5, affine=False), (5,), "BatchNorm1d-noaffine"),
    Case("relu", nn.ReLU, IMG, "ReLU"),
    Case("relu", lambda: Fn(lambda x: F.relu(x) + torch.relu(x).relu()), IMG, "relu-forms"),
    Case("tanh", nn.Tanh, (7,), "Tanh"),
    Case("tanh", lambda: Fn(lambda x: torch.tanh(x).tanh()), (7,), "tanh-forms"),
    Case("sigmoid", nn.Sigmoid, (7,), "Sigmoid"),
    Case("sigmoid", lambda: Fn(lambda x: torch.sigmoid(x).sigmoid()), (7,), "sigmoid-forms"),
    Case("leaky_relu", lambda: nn.LeakyReLU(0.2), IMG, "LeakyReLU"),
    Case("identity", lambda: nn.Sequential(nn.Dropout(0.5), nn.Identity(), nn.Tanh()), (7,), "Dropout-Identity"),
    Case("identity", lambda: Fn(lambda x: F.dropout(x, 0.5, training=False).tanh()), (7,), "dropout"),
    Case("softmax", lambda: nn.Softmax(dim=1), (4, 5), "Softmax"),
    Case("softmax", lambda: Fn(lambda x: F.softmax(x, dim=-1) + torch.softmax(x, 1)), (4, 5), "softmax-forms"),
    Case("log_softmax", lambda: nn.LogSoftmax(dim=-1), (4, 5), "LogSoftmax"),
    Case("log_softmax", lambda: Fn(lambda x: F.log_softmax(x, 2) + torch.log_softmax(x, dim=1)), (4, 5),
         "log_softmax-forms"),
    Case("max_pool2d", lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), IMG, "MaxPool2d"),
    Case("avg_pool2d", lambda: nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False), IMG, "AvgPool2d"),
    Case("avg_pool2d", lambda: nn.AvgPool2d((3, 2), stride=(1, 2), padding=1), IMG, "AvgPool2d-padded"),
    Case("global_avg_pool2d", lambda: nn.AdaptiveAvgPool2d(1), IMG, "AdaptiveAvgPool2d"),
    Case("flatten", nn.Flatten, IMG, "Flatten"),
    Case("flatten", lambda: Fn(lambda x: torch.flatten(x, 2) + x.flatten(start_dim=2)), IMG, "flatten-forms"),
    Case("reshape", lambda: Fn(lambda x: x.view(x.size(0), -1, 3)), IMG, "view"),
    Case("reshape", lambda: Fn(lambda x: x.reshape(-1, 11, 27).reshape((-1, 3, 99))), IMG, "reshape"),
    Case("add", lambda: Fn(lambda x: x + x.tanh()), IMG, "operator-add"),
    Case("add", lambda: Fn(lambda x: torch.add(x.sigmoid(), x)), IMG, "torch-add"),
    Case("add", lambda: Fn(lambda x, p: x + p(x), nn.AdaptiveAvgPool2d(1)), IMG, "add-broadcast"),
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


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_traces_plans_builds_and_exports(case):
    import onnxruntime as ort

    model = _prepare(case)
    x = torch.randn(3, *case.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
    # trace → IR, and the IR survives a JSON round trip through validation unchanged
    graph = trace(model)
    assert case.op in {n.op for n in graph.nodes}
    again = Graph.from_dict(json.loads(json.dumps(graph.to_dict())))
    assert again == graph
    # the shape plan (integer arithmetic) equals the shapes PyTorch computes, node by node
    state = model.state_dict()
    plan = again.plan(case.shape, {k: tuple(v.shape) for k, v in state.items()})
    net = build(again, state)
    env = {INPUT: x}
    with torch.no_grad():
        for node in again.nodes:
            env[node.name] = net.run_node(node, [env[i] for i in node.inputs])
            assert plan.shapes[node.name] == tuple(env[node.name].shape[1:]), node.name
        got = net(x)
    assert plan.shapes[again.output] == tuple(want.shape[1:])
    # the built network computes what the model computes
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # ONNX: onnxruntime agrees with the model
    data = serialize_onnx(to_onnx(again, state, case.shape))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {INPUT: x.numpy()})
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
        self.act = nn.GELU()

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
        return self.head(y.transpose(1, 2))


def test_every_unsupported_operation_is_reported_with_where():
    with pytest.raises(UnsupportedOperationError) as info:
        trace(ThreeUnsupported())
    message, problems = str(info.value), info.value.problems
    assert len(problems) == 3, problems
    assert "3 operation(s)" in message
    assert problems[0].startswith("module 'block.act' (GELU)")
    assert problems[1].startswith("function 'cumsum' at node 'cumsum'")
    assert problems[2].startswith("method 'transpose' at node 'transpose'")
    assert all(p in message for p in problems)
    assert "supported modules:" in message and "Linear" in message


def test_unsupported_configurations_are_all_reported():
    class Configs(nn.Module):
        def __init__(self):
            super().__init__()
            self.same = nn.Conv2d(1, 2, 3, padding="same")
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.flat = nn.Flatten(1, 2)

        def forward(self, x):
            return self.flat(self.pool(self.same(x))).softmax(1)

    with pytest.raises(UnsupportedOperationError) as info:
        trace(Configs())
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "module 'same' (Conv2d)", "module 'pool' (AdaptiveAvgPool2d)", "module 'flat' (Flatten)",
        "method 'softmax' at node 'softmax'",
    ]
    assert "padding='same'" in problems[0] and "output_size=2" in problems[1] and "end_dim=2" in problems[2]


def test_arguments_an_op_cannot_read_are_problems_too():
    """Run-time sizes and odd argument forms join the list of problems; nothing untyped escapes."""

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d((None, 1))
            self.act = nn.GELU()

        def forward(self, x):
            x = self.act(self.pool(x))
            return torch.flatten(x, start_dim=x.dim() - 1)

    with pytest.raises(UnsupportedOperationError) as info:
        trace(Odd())
    problems = info.value.problems
    assert any(p.startswith("module 'pool'") for p in problems), problems
    assert any(p.startswith("module 'act' (GELU)") for p in problems), problems
    assert any("flatten" in p for p in problems), problems
