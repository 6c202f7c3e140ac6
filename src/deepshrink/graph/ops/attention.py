"""Attention: ``F.scaled_dot_product_attention`` (additive float or boolean mask, causal) and
``nn.MultiheadAttention`` (``batch_first=True``, one input projection, optional key padding
mask). The score matrix (heads × queries × keys per sample) is scratch memory the plan counts.

Models written with separate ``nn.Linear`` query/key/value projections and
``F.scaled_dot_product_attention`` (or matmul and softmax) trace into ordinary ``linear`` nodes
that every compression stage treats as layers; ``nn.MultiheadAttention`` keeps its fused input
projection in one parameter, stored as it is (its output projection is an ``nn.Linear``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import Call, Channels, Op, boolean, floats, fmt, int_in, nullable, real, register

MAX_SCALE = 1e6


def _scores_onnx(g, out: str, q: str, k: str, rank: int, scale: float) -> str:
    """``q kᵀ · scale`` over the last two dimensions of tensors of full rank ``rank``."""
    perm = list(range(rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    kt = g.node("Transpose", [k], f"{out}/kT", perm=perm)
    scores = g.node("MatMul", [q, kt], f"{out}/qk")
    return g.node("Mul", [scores, g.init(f"{out}/scale", np.array(scale, np.float32))], f"{out}/scores")


def _attend_onnx(g, out: str, scores: str, v: str, mask: str | None, mask_keeps: bool | None) -> str:
    """``softmax(scores + mask) v``; a bool mask keeps the positions where it is ``mask_keeps``."""
    if mask is not None:
        if mask_keeps is None:
            scores = g.node("Add", [scores, mask], f"{out}/masked")
        else:
            ninf = g.init(f"{out}/-inf", np.array(-np.inf, np.float32))
            branches = [scores, ninf] if mask_keeps else [ninf, scores]
            scores = g.node("Where", [mask, *branches], f"{out}/masked")
    probs = g.node("Softmax", [scores], f"{out}/probs", axis=-1)
    return g.node("MatMul", [probs, v], out)


@register
class ScaledDotProductAttention(Op):
    """``softmax(q kᵀ · scale + mask) v`` with q ``(N, *, L, E)``, k ``(N, *, S, E)``, v ``(N, *, S,
    Ev)`` and an optional mask of the same rank broadcast to ``(N, *, L, S)``: float (added) or
    bool (true takes part). ``is_causal`` masks the keys after each query. ``scale`` defaults to
    ``1 / sqrt(E)``."""

    name, inputs, max_inputs = "attention", 3, 4
    attrs = {"is_causal": boolean, "scale": nullable(real(0.0, MAX_SCALE))}
    functions = (F.scaled_dot_product_attention,)

    def dtype(self, a, ins):
        floats(ins[:3])
        if len(ins) == 4 and ins[3] not in ("float32", "bool"):
            raise ValueError(f"the mask must be float32 or bool, got {ins[3]}")
        return "float32"

    def shape(self, a, ins, ps):
        q, k, v = ins[:3]
        if len(q) < 2 or not len(q) == len(k) == len(v) or q[:-2] != k[:-2] or k[:-2] != v[:-2]:
            raise ValueError(f"q {fmt(q)}, k {fmt(k)}, v {fmt(v)} must be (N, *, L, E), (N, *, S, E), (N, *, S, Ev)")
        if q[-1] != k[-1] or k[-2] != v[-2]:
            raise ValueError(f"q {fmt(q)}, k {fmt(k)}, v {fmt(v)}: query and key sizes or key and value counts differ")
        if len(ins) == 4:
            if a["is_causal"]:
                raise ValueError("a mask and is_causal together")
            m, full = ins[3], q[:-1] + (k[-2],)
            if len(m) != len(full) or any(i not in (1, j) for i, j in zip(m, full)):
                raise ValueError(f"the mask {fmt(m)} does not broadcast to the scores {fmt(full)}")
        return q[:-1] + v[-1:]

    def macs(self, a, ins, ps, out):
        q, k, v = ins[:3]
        return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])

    def scratch(self, a, ins, ps, out):
        q, k = ins[:2]
        return 2 * math.prod(q[:-1]) * k[-2]  # scores and probabilities

    def from_call(self, call):
        if call.arg(4, "dropout_p", 0.0) != 0.0 or call.kwargs.get("enable_gqa", False):
            raise UnsupportedOperationError("scaled_dot_product_attention with dropout_p or enable_gqa (it applies "
                                            "dropout even in eval mode)")
        mask = call.arg(3, "attn_mask")
        tensors = tuple(call.args[:3]) + ((mask,) if mask is not None else ())
        return tensors, {"is_causal": bool(call.arg(5, "is_causal", False)), "scale": call.arg(6, "scale")}

    def channels(self, a, ins, out):
        return Channels("mix", reason="attention mixes the features of its heads (query·key products)")

    def forward(self, a, xs, p):
        mask = xs[3] if len(xs) == 4 else None
        return F.scaled_dot_product_attention(xs[0], xs[1], xs[2], attn_mask=mask, is_causal=a["is_causal"],
                                              scale=a["scale"])

    def to_onnx(self, node, xs, shapes, g):
        a, out = node.attrs, node.name
        q, k = shapes[:2]
        scale = a["scale"] if a["scale"] is not None else 1 / math.sqrt(q[-1])
        scores = _scores_onnx(g, out, xs[0], xs[1], len(q) + 1, scale)
        mask, keeps = (xs[3], True if g.dtype(xs[3]) == "bool" else None) if len(xs) == 4 else (None, None)
        if a["is_causal"]:
            causal = np.triu(np.full((q[-2], k[-2]), -np.inf, np.float32), 1)
            mask, keeps = g.init(f"{out}/causal", causal), None
        _attend_onnx(g, out, scores, xs[2], mask, keeps)


@register
class MultiheadAttention(Op):
    """``nn.MultiheadAttention(E, num_heads, batch_first=True)`` at inference: query ``(N, L,
    E)``, key and value ``(N, S, E)``, an optional key padding mask ``(N, S)`` (bool: true
    ignores the key; float: added). Returns the attended values, not the attention weights."""

    name, inputs, max_inputs = "multihead_attention", 3, 4
    params, optional_params, param_ndim = ("in_proj_weight", "out_proj_weight"), ("in_proj_bias", "out_proj_bias"), 2
    attrs = {"num_heads": int_in(1, 1 << 16)}
    modules = (nn.MultiheadAttention,)
    tuple_output = 0

    def check_roles(self, roles):
        if ("in_proj_bias" in roles) != ("out_proj_bias" in roles):
            raise ValueError("multihead_attention takes both biases or neither")

    def check_param_shapes(self, a, ps):
        e = ps["out_proj_weight"][0] if len(ps["out_proj_weight"]) == 2 else -1
        want = {"in_proj_weight": (3 * e, e), "in_proj_bias": (3 * e,), "out_proj_weight": (e, e), "out_proj_bias": (e,)}
        for role, shape in ps.items():
            if e < 1 or shape != want[role]:
                raise ValueError(f"{role} has shape {shape}, expected {want[role]} for out_proj_weight {ps['out_proj_weight']}")
        if e % a["num_heads"]:
            raise ValueError(f"embed dim {e} is not divisible by num_heads={a['num_heads']}")

    def dtype(self, a, ins):
        floats(ins[:3])
        if len(ins) == 4 and ins[3] not in ("float32", "bool"):
            raise ValueError(f"the key padding mask must be float32 or bool, got {ins[3]}")
        return "float32"

    def shape(self, a, ins, ps):
        q, k, v = ins[:3]
        e = ps["out_proj_weight"][0]
        if len(q) != 2 or q[1] != e or k != v or len(k) != 2 or k[1] != e:
            raise ValueError(f"query {fmt(q)}, key {fmt(k)}, value {fmt(v)} must be (N, L, {e}), (N, S, {e}), (N, S, {e})")
        if len(ins) == 4 and ins[3] != k[:1]:
            raise ValueError(f"the key padding mask {fmt(ins[3])} must be (N, {k[0]})")
        return q

    def macs(self, a, ins, ps, out):
        (l, e), (s, _) = ins[0], ins[1]
        return 2 * l * e * e + 2 * s * e * e + 2 * l * s * e

    def scratch(self, a, ins, ps, out):
        (l, e), (s, _) = ins[0], ins[1]
        return 2 * a["num_heads"] * l * s + 3 * (l + s) * e

    def module_params(self, mod):
        names = {"in_proj_weight": "in_proj_weight", "in_proj_bias": "in_proj_bias",
                 "out_proj_weight": "out_proj.weight", "out_proj_bias": "out_proj.bias"}
        return {role: name for role, name in names.items()
                if functools.reduce(getattr, name.split("."), mod) is not None}

    def from_module_call(self, mod, call: Call):
        if not mod.batch_first or not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn:
            raise UnsupportedOperationError(
                "MultiheadAttention needs batch_first=True, one embed dim for query, key and value, no bias_kv "
                "and no add_zero_attn")
        if call.arg(5, "attn_mask") is not None or call.arg(7, "is_causal", False):
            raise UnsupportedOperationError("MultiheadAttention with attn_mask or is_causal; a key_padding_mask is supported")
        mask = call.arg(3, "key_padding_mask")
        tensors = (call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")) + ((mask,) if mask is not None else ())
        return tensors, {"num_heads": int(mod.num_heads)}

    def channels(self, a, ins, out):
        return Channels("mix", reason="attention mixes the features of its heads (query·key products)")

    def forward(self, a, xs, p):
        q, k, v = xs[:3]
        n, h = q.shape[0], a["num_heads"]
        wq, wk, wv = p["in_proj_weight"].chunk(3)
        bq, bk, bv = p["in_proj_bias"].chunk(3) if "in_proj_bias" in p else (None, None, None)
        heads = lambda x, w, b: F.linear(x, w, b).reshape(n, x.shape[1], h, -1).transpose(1, 2)  # noqa: E731
        mask = None
        if len(xs) == 4:
            kpm = xs[3][:, None, None, :]
            mask = ~kpm if kpm.dtype == torch.bool else kpm
        y = F.scaled_dot_product_attention(heads(q, wq, bq), heads(k, wk, bk), heads(v, wv, bv), attn_mask=mask)
        return F.linear(y.transpose(1, 2).reshape(q.shape), p["out_proj_weight"], p.get("out_proj_bias"))

    def to_onnx(self, node, xs, shapes, g):
        p, out, h = node.params, node.name, node.attrs["num_heads"]
        (l, e), (s, _) = shapes[0], shapes[1]
        w = g.param(p["in_proj_weight"])
        b = g.param(p["in_proj_bias"]) if "in_proj_bias" in p else None
        split = []
        for i, (x, n) in enumerate(zip(xs[:3], (l, s, s))):
            y = g.node("MatMul", [x, g.init(f"{out}/w{i}", w[i * e:(i + 1) * e].T)], f"{out}/proj{i}")
            if b is not None:
                y = g.node("Add", [y, g.init(f"{out}/b{i}", b[i * e:(i + 1) * e])], f"{out}/proj{i}b")
            y = g.node("Reshape", [y, g.init(f"{out}/heads{i}", np.array([0, n, h, e // h], np.int64))], f"{out}/split{i}")
            split.append(g.node("Transpose", [y], f"{out}/heads{i}T", perm=[0, 2, 1, 3]))
        scores = _scores_onnx(g, out, split[0], split[1], 4, 1 / math.sqrt(e // h))
        mask, keeps = None, None
        if len(xs) == 4:
            axes = g.init(f"{out}/mask_axes", np.array([1, 2], np.int64))
            mask = g.node("Unsqueeze", [xs[3], axes], f"{out}/mask")
            keeps = False if g.dtype(xs[3]) == "bool" else None
        y = _attend_onnx(g, f"{out}/attended", scores, split[2], mask, keeps)
        y = g.node("Transpose", [y], f"{out}/merged", perm=[0, 2, 1, 3])
        y = g.node("Reshape", [y, g.init(f"{out}/shape", np.array([0, l, e], np.int64))], f"{out}/joined")
        y = g.node("MatMul", [y, g.init(p["out_proj_weight"] + ".T", g.param(p["out_proj_weight"]).T)],
                   out if "out_proj_bias" not in p else f"{out}/out")
        if "out_proj_bias" in p:
            g.node("Add", [y, g.init(p["out_proj_bias"], g.param(p["out_proj_bias"]))], out)
