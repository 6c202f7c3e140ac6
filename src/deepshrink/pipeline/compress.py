"""The compression pipeline: run a recipe's stages on a model, measuring accuracy and bytes
after each stage, and produce the deepshrink file.

Each stage's ``file_bytes`` is exact: the model is encoded after every stage (encoding is cheap).
Only the final file is decoded, by default: earlier stages measure accuracy on the in-memory
model, whose weights are what the file stores (``measure="exact"`` decodes every stage's bytes)."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from deepshrink.coding import Coder
from deepshrink.data.dataset import Dataset
from deepshrink.errors import ConfigError
from deepshrink.graph import Graph, trace
from deepshrink.lowrank import FACTOR_NAMES, NeuronScores, check_method, factorize, neuron_importance, weight_counts
from deepshrink.pipeline.pack import CodingRule, PackReport, check_graph, check_reproduces, pack_model
from deepshrink.prune import (
    PRUNABLE,
    apply_mask,
    current_weight,
    layer_kind,
    magnitude_mask,
    make_permanent,
    prunable_layers,
)
from deepshrink.recipes.config import CodeStage, LowRankStage, PruneStage, Recipe, ShareStage
from deepshrink.runtime import load
from deepshrink.share import centroids_of, finalize, round_to_half, share_module
from deepshrink.storage import DEFAULT_GAP_BITS, TensorCoding, TensorReport
from deepshrink.train import History, evaluate, fit

Split = tuple[torch.Tensor, torch.Tensor]
MEASURES = ("estimate", "exact")  # per-stage accuracy: on the in-memory model, or decoded from the stage's bytes


@dataclass
class StageReport:
    """Accuracy and size after one stage (``val_accuracy`` is None without a validation split)."""

    stage: str
    val_accuracy: float | None
    test_accuracy: float
    file_bytes: int
    payload_bytes: int
    ratio: float
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class LayerRow:
    """One row of the per-layer table."""

    name: str
    shape: tuple[int, ...]
    kept: float
    bits: int
    codebook: int
    encoding: str
    index_bytes: int
    weight_bytes: int
    dense_bytes: int

    @property
    def ratio(self) -> float:
        return self.dense_bytes / max(1, self.index_bytes + self.weight_bytes)


@dataclass
class CompressionResult:
    """Everything a compression run measured, and the compressed file's bytes."""

    recipe: str
    coder: str
    dense_bytes: int
    stages: list[StageReport]
    layers: list[LayerRow]
    tensors: list[TensorReport]
    data: bytes
    model: nn.Module
    file_accuracy: float
    split_sizes: dict[str, int] = field(default_factory=dict)
    measure: str = "estimate"

    @property
    def baseline(self) -> StageReport:
        return self.stages[0]

    @property
    def final(self) -> StageReport:
        return self.stages[-1]

    @property
    def file_bytes(self) -> int:
        return len(self.data)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / max(1, self.file_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "coder": self.coder,
            "dense_bytes": self.dense_bytes,
            "file_bytes": self.file_bytes,
            "ratio": self.ratio,
            "split_sizes": dict(self.split_sizes),
            "measure": self.measure,
            "baseline_test_accuracy": self.baseline.test_accuracy,
            "final_test_accuracy": self.file_accuracy,
            "accuracy_drop_points": 100 * (self.baseline.test_accuracy - self.file_accuracy),
            "stages": [asdict(s) for s in self.stages],
            "layers": [{**asdict(r), "ratio": r.ratio} for r in self.layers],
            "streams": [
                {"tensor": t.name, "stream": k, "symbols": s.symbols, "alphabet": s.alphabet,
                 "coded_bytes": s.coded_bytes, "entropy_bytes": s.entropy_bytes}
                for t in self.tensors for k, s in t.streams.items()
            ],
        }


def dense_bytes(model: nn.Module, graph: Graph | None = None) -> int:
    """float32 bytes of every parameter the stored graph uses (the uncompressed size)."""
    graph = graph or trace(model)
    state = model.state_dict()
    return sum(state[p].numel() * 4 for p in graph.param_names)


def coding_rule(code: CodeStage, coder: Coder, order: list[str], kinds: dict[str, str]) -> CodingRule:
    """How each parameter is stored, from a code stage's per-layer rules."""

    def rule(name: str, tensor: np.ndarray, op: str, role: str) -> TensorCoding:
        layer = name[: -len(".weight")] if name.endswith(".weight") else name
        if role != "weight" or layer not in kinds:
            return TensorCoding(compress=False)
        settings = code.layers.resolve(layer, kinds[layer], order)
        gap_bits = settings.get("gap_bits", DEFAULT_GAP_BITS[kinds[layer]])
        return TensorCoding(coder=coder, gap_bits=None if gap_bits == "auto" else gap_bits)

    return rule


def _val_accuracy(model: nn.Module, val: Split) -> float | None:
    """Accuracy on the validation split, None when there is none (``val_size=0``)."""
    return evaluate(model, val) if len(val[0]) else None


def _best_val(h: History) -> float | None:
    return None if h.best_epoch < 0 or np.isnan(h.best_val_accuracy) else h.best_val_accuracy


def _prune_targets(stage: PruneStage, kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per-layer ``sparsity`` or ``quality`` of the layers the stage prunes."""
    order = list(kinds)
    targets = {}
    for name, kind in kinds.items():
        s = stage.layers.resolve(name, kind, order, exclusive=[{"sparsity", "quality"}])
        if "sparsity" in s or "quality" in s:
            targets[name] = s
    if not targets:
        raise ConfigError("prune stage: no layer matches its rules; nothing to prune")
    return targets


def _share_bits(stage: ShareStage, kinds: dict[str, str]) -> dict[str, int]:
    """Bits per layer of the layers the stage shares."""
    order = list(kinds)
    bits = {name: stage.layers.resolve(name, kind, order).get("bits") for name, kind in kinds.items()}
    bits = {name: b for name, b in bits.items() if b is not None}
    if not bits:
        raise ConfigError("share stage: no layer matches its rules; nothing to share")
    return bits


def _lowrank_plans(stage: LowRankStage, layers: dict[str, nn.Module]) -> dict[str, dict[str, Any]]:
    """Settings (with ``method`` and ``importance`` filled in) of the layers the stage factorises."""
    order = list(layers)
    plans: dict[str, dict[str, Any]] = {}
    for name, m in layers.items():
        s = stage.layers.resolve(name, layer_kind(m), order, exclusive=[{"rank", "energy", "max_drop"}])
        if s.get("skip") or not {"rank", "energy", "max_drop"} & set(s):
            continue
        method = s.get("method", stage.method)
        check_method(method, m, f"lowrank: layer {name!r}")
        plans[name] = {**s, "method": method, "importance": s.get("importance", stage.importance)}
    if not plans:
        raise ConfigError("lowrank stage: no layer matches its rules; nothing to factorise")
    return plans


def check_recipe(model: nn.Module, recipe: Recipe, *, has_val: bool = True) -> None:
    """Refuse, before any training, a recipe that cannot do what it says on ``model``.

    A :class:`~deepshrink.errors.ConfigError` names the problem: an exact-name or ``re:`` rule
    that applies to no layer of the kind the stage changes (listing those layers; layers that a
    low-rank stage creates, such as ``fc1.first``, count for the stages after it), a stage whose
    rules select no layer, a low-rank method that does not fit a layer, or a ``max_drop`` rank
    search without validation data (``has_val=False``)."""
    modules = dict(model.named_modules())
    layers = prunable_layers(model)
    kinds = {n: layer_kind(m) for n, m in layers.items()}
    for i, stage in enumerate(recipe.stages, 1):
        where = f"recipe {recipe.name!r}, stage {i} ({stage.kind})"
        unused = stage.layers.unused(list(kinds))
        if unused:
            listing = ", ".join(f"{n} ({k})" for n, k in kinds.items())
            notes = "".join(f"; {p!r} is a {type(modules[p]).__name__}, which the stage cannot change"
                            for p in unused if p in modules and not isinstance(modules[p], PRUNABLE))
            raise ConfigError(
                f"{where}: no layer matches the rule{'s' if len(unused) > 1 else ''} "
                f"{', '.join(repr(p) for p in unused)}{notes}. The layers it can change are: {listing}"
            )
        try:
            if isinstance(stage, PruneStage):
                _prune_targets(stage, kinds)
            elif isinstance(stage, ShareStage):
                _share_bits(stage, kinds)
            elif isinstance(stage, LowRankStage):
                plans = _lowrank_plans(stage, layers)
                if not has_val and any("max_drop" in p for p in plans.values()):
                    raise ConfigError("max_drop chooses ranks by validation accuracy, and there is no validation "
                                      "split (val_size=0); give a rank or energy, or load the data with a "
                                      "validation split")
                after: dict[str, str] = {}
                for n, k in kinds.items():  # each factorised layer becomes its factors, in place
                    after.update({f"{n}.{c}": k for c in FACTOR_NAMES[plans[n]["method"]]} if n in plans else {n: k})
                kinds = after
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _prune(model: nn.Module, stage: PruneStage, layers: dict[str, nn.Module], order: list[str],
           data: tuple, progress: bool | None) -> dict[str, Any]:
    train, val, teacher = data
    targets = _prune_targets(stage, {n: layer_kind(layers[n]) for n in order})
    std0 = {name: float(current_weight(layers[name]).std()) for name in targets}
    hist = []
    for step in range(1, stage.steps + 1):
        frac = step / stage.steps
        for name, s in targets.items():
            w = current_weight(layers[name])
            if "sparsity" in s:
                mask = magnitude_mask(w, sparsity=s["sparsity"] * frac)
            else:
                mask = magnitude_mask(w, threshold=s["quality"] * frac * std0[name])
            apply_mask(layers[name], mask)
        h = fit(model, train, val, stage.retrain, desc=f"prune {step}/{stage.steps}", progress=progress,
                teacher_logits=teacher)
        hist.append(_best_val(h))
    make_permanent(model)
    return {"val_accuracy_per_step": hist, "targets": {k: dict(v) for k, v in targets.items()}}


def _share(model: nn.Module, stage: ShareStage, layers: dict[str, nn.Module], order: list[str],
           data: tuple, progress: bool | None) -> dict[str, Any]:
    train, val, teacher = data
    ks = {}
    for name, bits in _share_bits(stage, {n: layer_kind(layers[n]) for n in order}).items():
        ks[name] = {"bits": bits, "clusters": share_module(layers[name], bits, init=stage.init)}
    shared = {id(centroids_of(layers[n])) for n in ks}
    frozen = {id(m.weight) for n, m in layers.items() if n not in ks}
    params = [p for p in model.parameters() if id(p) in shared or id(p) not in frozen]
    before = _val_accuracy(model, val)
    h = fit(model, train, val, stage.finetune, params=params, desc="share: fine-tune centroids", progress=progress,
            teacher_logits=teacher)
    finalize(model)
    if stage.float16:
        round_to_half(model)
    return {"layers": ks, "val_accuracy_before_finetune": before, "val_accuracy_after_finetune": _best_val(h)}


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


MAX_DROP_GRID = tuple(round(0.02 * 1.25 ** i, 4) for i in range(18)) + (1.0,)  # 2 % .. 100 % of the weights


def _search_fraction(model: nn.Module, name: str, build, val: tuple, base: float, max_drop: float) -> float:
    """The smallest weight fraction on :data:`MAX_DROP_GRID` whose factorisation of layer ``name``
    alone keeps validation accuracy within ``max_drop`` points of ``base`` (binary search; the
    accuracy is taken as monotone in the fraction)."""
    original = model.get_submodule(name)
    lo, hi = 0, len(MAX_DROP_GRID) - 1
    try:
        while lo < hi:
            mid = (lo + hi) // 2
            _set_module(model, name, build(MAX_DROP_GRID[mid]))
            if 100 * (base - evaluate(model, val)) <= max_drop:
                hi = mid
            else:
                lo = mid + 1
    finally:
        _set_module(model, name, original)
    return MAX_DROP_GRID[lo]


def _lowrank(model: nn.Module, stage: LowRankStage, layers: dict[str, nn.Module], order: list[str],
             data: tuple, progress: bool | None) -> dict[str, Any]:
    train, val, teacher = data
    plans = _lowrank_plans(stage, {n: layers[n] for n in order})
    calib = (train[0][: stage.calibration], train[1][: stage.calibration])
    batches = [(calib[0][i : i + 256], calib[1][i : i + 256]) for i in range(0, len(calib[0]), 256)]
    scores: dict[str, NeuronScores] = {}
    for strategy in {p["importance"] for p in plans.values() if p["method"] == "slr"}:
        chosen = {n: layers[n] for n, p in plans.items() if p["method"] == "slr" and p["importance"] == strategy}
        scores.update(neuron_importance(model, chosen, strategy, batches))
    search_val = (val[0][:2000], val[1][:2000])
    base = evaluate(model, search_val) if any("max_drop" in p for p in plans.values()) else float("nan")
    built, report = {}, {}
    for name, p in plans.items():
        layer = layers[name]

        def build(rank, layer=layer, p=p, name=name):
            return factorize(layer, p["method"], rank=rank, energy=p.get("energy"), scores=scores.get(name),
                             reduced_rank=p.get("reduced_rank", 0.5), unimportant=p.get("unimportant", 0.5))

        rank = _search_fraction(model, name, build, search_val, base, p["max_drop"]) if "max_drop" in p \
            else p.get("rank", 1.0)
        built[name] = build(rank)
        before, (total, nonzero) = layer.weight.numel(), weight_counts(built[name])
        report[name] = {"method": p["method"], "rank": rank, "weights_before": before, "weights_after": total,
                        "nonzero_after": nonzero,
                        "shapes": [list(q.weight.shape) for q in prunable_layers(built[name]).values()]}
        if p["method"] == "slr":
            report[name]["importance"] = p["importance"]
    for name, module in built.items():
        _set_module(model, name, module)
    before = _val_accuracy(model, val)
    h = fit(model, train, val, stage.finetune, desc="lowrank: fine-tune factors", progress=progress,
            teacher_logits=teacher)
    make_permanent(model)  # SLR's fixed zero pattern becomes plain zeros
    return {"layers": report, "val_accuracy_before_finetune": before, "val_accuracy_after_finetune": _best_val(h)}


def compress(
    model: nn.Module,
    data: Dataset,
    recipe: Recipe,
    *,
    progress: bool | None = None,
    meta: dict[str, Any] | None = None,
    measure: str = "estimate",
) -> CompressionResult:
    """Compress a trained ``model`` with ``recipe`` on ``data``.

    The input model is not modified. The recipe is checked against the model first
    (:func:`check_recipe`), then retraining selects epochs on the validation split; the test split
    is only evaluated for the report. Without a validation split (``val_size=0``) retraining keeps
    its last epoch, validation accuracies are reported as None and a ``max_drop`` rank search is
    refused. The returned result holds the file's bytes; its final accuracy is measured on a
    model decoded from those bytes, the only decode of the run unless ``measure="exact"``, which
    measures every stage's accuracy on the network decoded from that stage's bytes (slower).
    Every stage's ``file_bytes`` is the exact encoded size either way.
    """
    if measure not in MEASURES:
        raise ConfigError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    model = copy.deepcopy(model).eval()
    graph = trace(model)  # fail early, before any training, if the model cannot be stored
    check_recipe(model, recipe, has_val=len(data.y_val) > 0)
    check_graph(model, graph, data.input_spec)  # ... or if the graph does not reproduce it
    train, val, test = data.tensors("train"), data.tensors("val"), data.tensors("test")
    layers = prunable_layers(model)
    order = list(layers)
    kinds = {n: layer_kind(m) for n, m in layers.items()}
    dense = dense_bytes(model, graph)
    stages = [StageReport("baseline", _val_accuracy(model, val), evaluate(model, test), dense, dense, 1.0, 0.0)]
    code = recipe.code_stage
    teacher = None
    if recipe.distills:
        teacher = _logits(model, train[0])  # the dense model teaches its compressed self
    pack_report: PackReport | None = None
    blob = b""
    for i, stage in enumerate(recipe.stages, 1):
        start = time.perf_counter()
        if isinstance(stage, PruneStage):
            detail = _prune(model, stage, layers, order, (train, val, teacher), progress)
        elif isinstance(stage, LowRankStage):
            detail = _lowrank(model, stage, layers, order, (train, val, teacher), progress)
            graph = trace(model)  # the structure changed: two layers where there was one
            layers = prunable_layers(model)
            order = list(layers)
            kinds = {n: layer_kind(m) for n, m in layers.items()}
        elif isinstance(stage, ShareStage):
            detail = _share(model, stage, layers, order, (train, val, teacher), progress)
        else:
            detail = {"coder": stage.coder.value}
        coder = stage.coder if isinstance(stage, CodeStage) else Coder.FIXED
        blob, pack_report = pack_model(
            model, data.input_spec, coding=coding_rule(code, coder, order, kinds),
            meta={**(meta or {}), "recipe": recipe.name, "stage": stage.kind}, graph=graph, verify=False,
        )
        net: nn.Module = model
        if measure == "exact" or i == len(recipe.stages):
            net = load(blob)  # the network the file holds
            check_reproduces(model, net, data.input_spec)
        stages.append(StageReport(
            stage.kind, _val_accuracy(net, val), evaluate(net, test), len(blob), pack_report.payload_bytes,
            dense / len(blob), time.perf_counter() - start, detail,
        ))
    rows = []
    for t in pack_report.tensors:
        layer = t.name[: -len(".weight")]
        if layer in layers and t.name.endswith(".weight"):
            rows.append(LayerRow(layer, t.shape, t.kept, t.value_bits, t.codebook_size, f"{t.enc}/{t.layout}",
                                 t.index_bytes, t.weight_bytes, t.numel * 4))
    return CompressionResult(recipe.name, code.coder.value, dense, stages, rows, pack_report.tensors, blob,
                             model, stages[-1].test_accuracy, data.split_sizes(), measure)
