"""The generated engine: every op it covers against PyTorch, the arena plan, the refusal of ops it
lacks, and names from the file never reaching the code."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepshrink as ds
from deepshrink.data import InputSpec
from deepshrink.engine import codegen, native
from deepshrink.engine.export import _typed, compile_engine, export_c, run_engine
from deepshrink.errors import InvalidHeader, UnsupportedOperationError
from deepshrink.fileformat import Limits, read_model_file
from deepshrink.fileformat.container import pack, unpack

sys.path.insert(0, str(Path(__file__).parent))
from helpers import STRICT, compress_weights, need_cc  # noqa: E402

SPEC = InputSpec((2, 12, 12), "uint8", 1 / 255, (0.4, 0.5), (0.25, 0.3))


class EveryOp(nn.Module):
    """Every op the engine covers, on a two-channel 12x12 image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.dw = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False)
        self.grouped = nn.Conv2d(6, 6, 3, padding="same", dilation=2, groups=3)
        self.pw = nn.Conv2d(6, 8, 1)
        self.conv1d = nn.Conv1d(8, 4, 3, padding=1)
        self.bn1d = nn.BatchNorm1d(4)
        self.fc = nn.Linear(12, 128)
        self.bnf = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 10)
        self.fc_g = nn.Linear(8, 10)
        self.drop = nn.Dropout(0.3)
        self.leaky = nn.LeakyReLU(0.1)

    def forward(self, x):
        y = F.relu6(self.bn(self.conv(x)))                                   # 6x12x12
        y = self.leaky(self.dw(y))                                           # depthwise, stride 2: 6x6x6
        y = torch.tanh(self.grouped(y)) + y                                  # grouped, dilated, 'same'; residual
        y = F.hardswish(self.pw(y))                                          # pointwise: 8x6x6
        y = y * torch.sigmoid(F.adaptive_avg_pool2d(y, 1))                   # broadcast mul (squeeze-excite)
        g = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1) + y.float().mean((2, 3))  # global averages: 8
        a = F.avg_pool2d(y, 2, stride=1, padding=1, count_include_pad=False)  # 8x7x7
        a = F.avg_pool2d(a, 3, stride=2, padding=1)                          # 8x4x4
        m = F.max_pool2d(a, 3, stride=2, ceil_mode=True)                     # 8x2x2
        s = F.adaptive_max_pool2d(a, (3, 1)) * F.hardsigmoid(F.adaptive_avg_pool2d(m, (3, 1)))  # 8x3x1
        v = s.view(s.size(0), 8, 3) - 0.25                                   # reshape; scalar sub
        v = self.bn1d(F.silu(self.conv1d(v))).unsqueeze(1).squeeze(1)      # conv1d, batch_norm 1-D: 4x3
        h = F.gelu(v.flatten(1)) + F.gelu(v.flatten(1), approximate="tanh")  # 12
        h = torch.clamp(F.relu(self.bnf(self.fc(h))), max=3.0)               # 128
        z = self.fc2(self.drop(h)) - self.fc_g(g)                            # 10
        z = (2.0 - z) / (2.5 + torch.sigmoid(z)) * 1.5
        return F.log_softmax(torch.clamp(z, -4.0, 4.0), dim=1) + F.softmax(z, dim=1)


def _every_op_model() -> nn.Module:
    torch.manual_seed(0)
    model = EveryOp().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    compress_weights(model.conv, 0.3, 4)         # shared: codebook layouts
    compress_weights(model.pw, 0.0, 4)
    compress_weights(model.fc_g, 0.7, 3)
    compress_weights(model.conv1d, 0.9, 4)      # codebook/sparse
    with torch.no_grad():                        # pruned, not shared: float/sparse
        model.fc.weight.mul_(model.fc.weight.abs() > 0.2)
    return model


@pytest.fixture(scope="module")
def every_op(save_dsz):
    return save_dsz(_every_op_model(), SPEC, "every-op.dsz")


def _want(path, raw: np.ndarray) -> np.ndarray:
    model = ds.load(path)
    with torch.no_grad():
        return model(model.input_spec.apply(raw)).numpy()


def test_every_op_matches_pytorch(every_op, build_engine):
    mf = read_model_file(every_op)
    ops = {n.op for n in mf.graph.nodes}
    assert ops >= {"conv2d", "conv1d", "batch_norm", "relu", "relu6", "leaky_relu", "tanh", "sigmoid", "hardswish",
                   "hardsigmoid", "silu", "gelu", "clamp", "add", "sub", "mul", "div", "global_avg_pool2d", "avg_pool2d",
                   "max_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "reshape", "flatten", "unsqueeze",
                   "squeeze", "identity", "linear", "softmax", "log_softmax", "mean", "cast"}, ops
    src = codegen.generate(mf.graph, mf.plan, mf.input_spec, _typed(mf, Limits()))
    assert set(src.layouts.values()) == {"dense", "codebook/dense", "codebook/sparse", "float/sparse"}, src.layouts
    raw = np.random.default_rng(0).integers(0, 256, (20, *SPEC.shape), dtype=np.uint8)
    got = run_engine(build_engine(every_op), raw)  # -Wall -Wextra -Wpedantic -Werror
    np.testing.assert_allclose(got, _want(every_op, raw), rtol=1e-4, atol=1e-5)


def test_arena_reuses_memory_and_aliases_reshapes(build_engine):
    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(64, 100), nn.Linear(100, 100), nn.Linear(100, 10)

        def forward(self, x):
            y = torch.relu(self.a(torch.flatten(x, 1)))  # flatten: the input itself; relu: in place
            return self.c(torch.relu(self.b(y)) + y)     # the residual keeps y alive across b

    data, _ = ds.pack_model(Chain().eval(), InputSpec((1, 8, 8), "float32", 1.0, (0.0,), (1.0,)))
    mf = read_model_file(data)
    plan = codegen.plan_bytes(mf.graph, mf.plan, {k: tuple(v["shape"]) for k, v in mf.tensors_desc.items()})
    # y (100) and b's output (100) are alive at once, then c's output (10) reuses the space of one
    assert plan["arena_bytes"] == 4 * 100 * 2 and plan["weight_bytes"] is None
    src = codegen.generate(mf.graph, mf.plan, mf.input_spec, _typed(mf, Limits()))
    run = src.files["model.c"].split("void model_run")[1]
    assert "ds_linear(&w2, c1, input," in run  # flatten is no copy
    assert "ds_unary(DS_RELU, 0.0f, 0.0f, (arena + 0), (arena + 0), 100);" in run  # in place
    raw = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)  # float32 raw input
    assert "typedef float model_raw_t;" in src.files["model.h"]
    np.testing.assert_allclose(run_engine(build_engine(data), raw), _want(data, raw), rtol=1e-5, atol=1e-6)


def test_comment_is_safe():
    hostile = '*/ system("rm -rf /"); /* \n\\ ??/ é \x00 ** // */'
    s = codegen.comment(hostile)
    assert "*/" not in s and "/*" not in s and "\\" not in s and "??" not in s and "\n" not in s
    assert all(32 <= ord(ch) < 127 for ch in s)
    assert codegen.comment("*" * 10 + "/" * 10) .count("*/") == 0
    assert len(codegen.comment("x" * 500)) == 100


def test_hostile_names_never_reach_the_code(every_op, tmp_path, build_engine):
    mf = read_model_file(every_op)
    hostile = ['*/ system("rm"); /*', "a\nb", "back\\slash", "caf\u00e9 ??/", "*/#include <stdio.h>/*"]
    # the file format refuses such names outright: a file holding one never reaches code generation
    header = dict(unpack(every_op.read_bytes()).header)
    header["graph"]["nodes"][1]["name"] = hostile[0]
    sections = {k: bytes(v) for k, v in unpack(every_op.read_bytes()).sections.items()}
    header.pop("sections")
    with pytest.raises(InvalidHeader):
        export_c(pack(header, sections), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    # and if a graph held them anyway, the code would not use them: C identifiers are generated
    nodes = list(mf.graph.nodes)
    renamed = {}
    for i, node in enumerate(nodes):
        renamed[node.name] = hostile[i % len(hostile)] + str(i)
    typed = _typed(mf, Limits())
    new_nodes = []
    for node in nodes:
        n = dataclasses.replace(node)
        object.__setattr__(n, "name", renamed[node.name])
        object.__setattr__(n, "inputs", tuple(renamed.get(x, x) for x in node.inputs))
        object.__setattr__(n, "params", {r: hostile[len(p) % len(hostile)] + p for r, p in node.params.items()})
        new_nodes.append(n)
    graph = object.__new__(type(mf.graph))
    object.__setattr__(graph, "nodes", tuple(new_nodes))
    object.__setattr__(graph, "output", renamed[mf.graph.output])
    object.__setattr__(graph, "inputs", mf.graph.inputs)
    object.__setattr__(graph, "_dtypes", {renamed.get(k, k): v for k, v in mf.graph.dtypes.items()})
    plan = dataclasses.replace(mf.plan, shapes={renamed.get(k, k): v for k, v in mf.plan.shapes.items()},
                               dtypes={renamed.get(k, k): v for k, v in mf.plan.dtypes.items()})
    typed = {hostile[len(p) % len(hostile)] + p: t for p, t in typed.items()}
    src = codegen.generate(graph, plan, mf.input_spec, typed)
    text = src.files["model.c"]
    for h in hostile:
        assert h not in text
    assert not re.search(r"[^\x09\x0a\x20-\x7e]", text)  # printable ASCII only
    out = tmp_path / "hostile"
    out.mkdir()
    for name, t in src.files.items():
        (out / name).write_text(t)
    raw = np.random.default_rng(1).integers(0, 256, (4, *SPEC.shape), dtype=np.uint8)
    need_cc()
    compile_engine(src.files, out, native.compiler(), flags=STRICT)
    np.testing.assert_allclose(run_engine(out / "main", raw), _want(every_op, raw), rtol=1e-4, atol=1e-5)


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)

    def forward(self, x):
        y = self.norm(self.fc(x.flatten(1)))
        y = y.view(y.size(0), 4, 4).transpose(1, 2)
        return torch.cat([y.flatten(1), y.flatten(1)], 1)


def test_ops_the_engine_lacks_are_named_together_and_nothing_is_written(tmp_path, save_dsz):
    path = save_dsz(Unsupported().eval(), InputSpec((1, 4, 4), "float32", 1.0, (0.0,), (1.0,)), "unsupported.dsz")
    out = tmp_path / "engine"
    with pytest.raises(UnsupportedOperationError) as exc:
        export_c(path, out)
    msg = str(exc.value)
    for op in ("layer_norm", "transpose", "cat"):
        assert op in msg
    assert "linear" not in msg.split("ops it lacks:")[1].split(")")[0]
    assert len(exc.value.problems) == 3
    assert not out.exists() and not list(tmp_path.iterdir())
    info = ds.info(path)
    assert info["engine"]["supported"] is False and len(info["engine"]["problems"]) == 3
