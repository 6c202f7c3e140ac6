"""The compression pipeline: run a recipe's stages on a model, measuring the objective and bytes
after each stage, and produce the deepshrink file.

Each stage's ``file_bytes`` is exact: the model is encoded after every stage (encoding is cheap).
Only the final file is decoded, by default: earlier stages are measured on the in-memory model,
whose weights are what the file stores (``measure="exact"`` decodes every stage's bytes).

Stages come from the stage registry (:mod:`deepshrink.recipes.stages`): the pipeline calls
``stage.run(model, ctx)`` for each, with a :class:`~deepshrink.pipeline.context.CompressContext`
holding the data, the objective, the teacher's outputs, the trainer and the layer table.

Scores: ``val_accuracy`` / ``test_accuracy`` of a :class:`StageReport` (and the ``*_accuracy``
keys of :meth:`CompressionResult.to_dict`) hold the objective's primary metric, named by
``CompressionResult.metric``: top-1 accuracy for ``classify`` (the names are kept for it), top-1
agreement with the dense model for ``match-logits``, mean cosine for ``match-embeddings``.
``test_metrics`` holds every metric of the objective.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import nn

from deepshrink.coding import Coder
from deepshrink.errors import ConfigError
from deepshrink.graph import Graph, fold_batchnorm_modules, trace
from deepshrink.pipeline.context import CompressContext, DataSource, layer_table, load_splits
from deepshrink.pipeline.pack import (
    CodingRule,
    PackReport,
    check_graph,
    check_reproduces,
    pack_model,
    storage_inputs,
)
from deepshrink.recipes.config import Recipe
from deepshrink.recipes.stages import MAX_DROP_GRID, CodeStage, Layer
from deepshrink.runtime import load
from deepshrink.storage import TensorCoding, TensorReport
from deepshrink.storage.tensors import CompressedTensor
from deepshrink.train import Objective, get_objective

#: Training samples that probe the stored network: it must reproduce the model on them.
PROBE_SAMPLES = 4
MEASURES = ("estimate", "exact")  # per-stage scores: on the in-memory model, or decoded from the stage's bytes
__all__ = ["MAX_DROP_GRID", "CompressionResult", "LayerRow", "StageReport", "check_recipe", "coding_rule", "compress",
           "dense_bytes"]


@dataclass
class StageReport:
    """Scores and size after one stage. ``val_accuracy``/``test_accuracy`` are the objective's
    primary metric (``val_accuracy`` is None without a validation split); ``test_metrics`` are all
    of its metrics on the test split."""

    stage: str
    val_accuracy: float | None
    test_accuracy: float
    file_bytes: int
    payload_bytes: int
    ratio: float
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)


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
    """Everything a compression run measured, and the compressed file's bytes. ``file_accuracy``
    is the objective's primary metric (``metric``) of the decoded file on the test split."""

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
    objective: str = "classify"
    metric: str = "accuracy"

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
            "objective": self.objective,
            "metric": self.metric,
            "dense_bytes": self.dense_bytes,
            "file_bytes": self.file_bytes,
            "ratio": self.ratio,
            "split_sizes": dict(self.split_sizes),
            "measure": self.measure,
            "baseline_test_accuracy": self.baseline.test_accuracy,
            "final_test_accuracy": self.file_accuracy,
            "accuracy_drop_points": 100 * (self.baseline.test_accuracy - self.file_accuracy),
            "final_test_metrics": dict(self.final.test_metrics),
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


def coding_rule(code: CodeStage, coder: Coder, order: list[str], kinds: dict[str, str],
                forms: Mapping[str, CompressedTensor] | None = None) -> CodingRule:
    """How each parameter is stored, from a code stage's per-layer rules; a parameter with a
    typed form in ``forms`` (what a quantise, hash or DCT stage left) is stored as that form."""

    def rule(name: str, tensor: np.ndarray, op: str, role: str) -> TensorCoding:
        if forms and name in forms:
            return TensorCoding(coder=coder, form=forms[name])
        layer = name[: -len(".weight")] if name.endswith(".weight") else name
        if role != "weight" or layer not in kinds:
            return TensorCoding(compress=False)
        return TensorCoding(coder=coder, gap_bits=code.gap_bits(layer, kinds[layer], order))

    return rule


def check_recipe(model: nn.Module, recipe: Recipe, *, has_val: bool = True) -> None:
    """Refuse, before any training, a recipe that cannot do what it says on ``model``.

    A :class:`~deepshrink.errors.ConfigError` names the problem: an exact-name or ``re:`` rule
    that applies to no layer (listing the layers; layers that a low-rank stage creates, such as
    ``fc1.first``, count for the stages after it), and whatever each stage's own
    :meth:`~deepshrink.recipes.stages.Stage.check` refuses (a stage whose rules select no layer, a
    low-rank method that does not fit a layer, a layer named for a low-rank stage that has no
    low-rank form, a ``max_drop`` rank search without validation data: ``has_val=False``)."""
    modules = dict(model.named_modules())
    mods, kinds = layer_table(model)
    layers = {n: Layer(kinds[n], m) for n, m in mods.items()}
    for i, stage in enumerate(recipe.stages, 1):
        where = f"recipe {recipe.name!r}, stage {i} ({stage.kind})"
        unused = stage.layers.unused(list(layers))
        if unused:
            listing = ", ".join(f"{n} ({layer.kind})" for n, layer in layers.items())
            notes = "".join(f"; {p!r} is a {type(modules[p]).__name__}, which the stage cannot change"
                            for p in unused if p in modules and p not in layers)
            raise ConfigError(
                f"{where}: no layer matches the rule{'s' if len(unused) > 1 else ''} "
                f"{', '.join(repr(p) for p in unused)}{notes}. The layers it can change are: {listing}"
            )
        try:
            layers = stage.check(layers, has_val=has_val)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def compress(
    model: nn.Module,
    data: DataSource,
    recipe: Recipe,
    *,
    progress: bool | None = None,
    meta: dict[str, Any] | None = None,
    measure: str = "estimate",
    objective: str | Objective = "classify",
    fold_batchnorm: bool = True,
) -> CompressionResult:
    """Compress a trained ``model`` with ``recipe`` on ``data`` (a :class:`DataSource`, e.g. a
    :class:`~deepshrink.data.Dataset`), retraining and scoring by ``objective`` (see
    :mod:`deepshrink.train.objectives`: ``"classify"`` on labels, or fidelity to the dense model's
    outputs with ``"match-logits"`` / ``"match-embeddings"``, which need no labels).

    The input model is not modified. The recipe is checked against the model first
    (:func:`check_recipe`), then retraining selects epochs on the validation split; the test split
    is only evaluated for the report. Without a validation split (``val_size=0``) retraining keeps
    its last epoch, validation scores are reported as None and a ``max_drop`` rank search is
    refused. The returned result holds the file's bytes; its final score is measured on a
    model decoded from those bytes, the only decode of the run unless ``measure="exact"``, which
    measures every stage on the network decoded from that stage's bytes (slower).
    Every stage's ``file_bytes`` is the exact encoded size either way.

    Batch norms that directly follow a convolution or linear layer are first folded into it
    (:func:`~deepshrink.graph.fold_batchnorm_modules`; ``fold_batchnorm=False`` keeps them): the
    stages retrain in training mode, where a batch norm would normalise by each small batch and
    drift its running statistics, and the pruned and shared weights are then the ones the network
    applies. The folded network is the baseline (it equals the model to float rounding);
    ``baseline.detail["folded_batchnorm"]`` lists each folded batch norm and its layer.
    """
    if measure not in MEASURES:
        raise ConfigError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    obj = get_objective(objective)
    model = copy.deepcopy(model).eval()
    check_recipe(model, recipe, has_val=data.split_sizes().get("val", 0) > 0)
    splits = load_splits(data, obj)
    # real samples probe the stored network (token ids must be ids its tables hold) and declare
    # the shapes of inputs no input specification describes
    probe = splits["train"].take(slice(0, PROBE_SAMPLES)).inputs
    folded = fold_batchnorm_modules(model, probe) if fold_batchnorm else {}
    graph = storage_inputs(model, data.input_spec, probe)  # fail early, before any training, if the
    check_graph(model, graph, data.input_spec, probe)  # model cannot be stored or its graph differs
    ctx = CompressContext.create(model, data, obj, graph=graph, teach_train=recipe.distills, progress=progress,
                                 splits=splits)
    dense = dense_bytes(model, graph)
    base = ctx.metrics(model, "test")
    stages = [StageReport("baseline", ctx.evaluate(model, "val"), base[obj.primary], dense, dense, 1.0, 0.0,
                          {"folded_batchnorm": folded}, base)]
    code = recipe.code_stage
    coder = Coder.FIXED  # until the code stage has run
    pack_report: PackReport | None = None
    blob = b""
    for i, stage in enumerate(recipe.stages, 1):
        start = time.perf_counter()
        detail = stage.run(model, ctx)
        if ctx.model is not model:  # the stage replaced the model (a student)
            model = ctx.model
        elif stage.changes_graph:
            ctx.refresh(model)  # e.g. two layers where there was one
        if stage is code:
            coder = code.coder
        blob, pack_report = pack_model(
            model, data.input_spec, coding=coding_rule(code, coder, ctx.order, ctx.kinds, ctx.forms),
            meta={**(meta or {}), "recipe": recipe.name, "stage": stage.kind, "objective": obj.name},
            graph=ctx.graph, verify=False,
        )
        net: nn.Module = model
        if measure == "exact" or i == len(recipe.stages):
            net = load(blob)  # the network the file holds
            check_reproduces(model, net, data.input_spec, probe)
        scores = ctx.metrics(net, "test")
        stages.append(StageReport(
            stage.kind, ctx.evaluate(net, "val"), scores[obj.primary], len(blob), pack_report.payload_bytes,
            dense / len(blob), time.perf_counter() - start, detail, scores,
        ))
    rows = []
    for t in pack_report.tensors:
        layer = t.name[: -len(".weight")]
        if layer in ctx.layers and t.name.endswith(".weight"):
            rows.append(LayerRow(layer, t.shape, t.kept, t.value_bits, t.codebook_size, f"{t.enc}/{t.layout}",
                                 t.index_bytes, t.weight_bytes, t.numel * 4))
    return CompressionResult(recipe.name, code.coder.value, dense, stages, rows, pack_report.tensors, blob,
                             model, stages[-1].test_accuracy, data.split_sizes(), measure, obj.name, obj.primary)
