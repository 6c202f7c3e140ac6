"""Per-layer sensitivity: the validation score and the layer's real coded bytes at each setting
of each technique, one layer changed at a time.

Each technique is one class in :data:`TECHNIQUES` (the registry the ``analyze`` command, the
automatic budget of :mod:`deepshrink.analysis.budget` and the report read): it names the recipe
stage whose per-layer setting it varies (``prune``'s ``sparsity``, ``share``'s ``bits``,
``quantize``'s ``bits``, ``lowrank``'s ``rank``), its grid, the layer kinds it applies to, and
how it changes one layer. A setting is measured without retraining: the layer is changed, the
network is scored on the validation split (one forward pass over it), and the layer is put back
bit for bit. The bytes are those the file would store for the layer's weights at that setting,
coded by :func:`~deepshrink.storage.encode_tensor` (the packer's own choice of layout and gap
width), not a parameter count.

Weight-to-weight techniques (pruning, sharing, quantisation) compose in stage order, which is how
the budget measures a joint setting such as "prune to 95 % then share at 4 bits" for one layer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from deepshrink.coding import Coder
from deepshrink.errors import ConfigError
from deepshrink.prune import current_weight, magnitude_mask
from deepshrink.share.kmeans import kmeans_1d
from deepshrink.storage import TensorCoding, encode_tensor
from deepshrink.storage.tensors import CompressedTensor

def progress_bar(total: int, desc: str, progress: bool | None) -> Any:
    """A progress bar as the trainer draws them (``progress=None``: only on a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="setting", disable=(not progress) if progress is not None else None,
                leave=False, dynamic_ncols=True)


Evaluate = Callable[[nn.Module], float]
"""Scores the whole model on the validation split (the objective's primary metric, 0..1)."""


@dataclass(frozen=True)
class Point:
    """One measured setting of one layer: the settings applied (stage key -> value), the layer's
    stored weight bytes, and the validation score of the network with only this layer changed."""

    setting: Mapping[str, float]
    bytes: int
    val: float

    def to_dict(self) -> dict[str, Any]:
        return {"setting": dict(self.setting), "bytes": self.bytes, "val": self.val}


@dataclass
class Changed:
    """A layer changed by a technique: a new weight (same shape, with its typed ``form`` when the
    technique stores one) or a replacement ``module`` (a factorisation); ``nbytes`` when the
    technique sizes itself (factors), else the weight is coded to size it."""

    weight: torch.Tensor | None = None
    form: CompressedTensor | None = None
    module: nn.Module | None = None
    nbytes: int | None = None


class Technique:
    """One way of shrinking a layer, varied along ``grid`` values of the ``key`` setting of recipe
    stage ``stage``. ``apply(layer, weight, value, context)`` returns the :class:`Changed` layer;
    weight techniques (``composes = True``) take the weight an earlier technique left."""

    name: ClassVar[str]
    stage: ClassVar[str]
    key: ClassVar[str]
    grid: ClassVar[tuple[float, ...]]
    kinds: ClassVar[tuple[str, ...]] = ("linear", "conv")
    composes: ClassVar[bool] = True
    doc: ClassVar[str] = ""

    def apply(self, layer: nn.Module, weight: torch.Tensor, value: float, context: Mapping[str, Any]) -> Changed:
        raise NotImplementedError


TECHNIQUES: dict[str, Technique] = {}


def register_technique(cls: type[Technique]) -> type[Technique]:
    """Add a technique to :data:`TECHNIQUES` under its ``name``."""
    TECHNIQUES[cls.name] = cls()
    return cls


def technique(name: str) -> Technique:
    if name not in TECHNIQUES:
        raise ConfigError(f"unknown technique {name!r}; expected one of {sorted(TECHNIQUES)}")
    return TECHNIQUES[name]


#: Pruning rates measured (fraction of the layer's weights removed).
SPARSITY_GRID = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
#: Bits per shared or quantised weight measured.
BITS_GRID = (2, 3, 4, 5, 6, 8)
#: Ranks measured, as fractions of the layer's weights the factors keep.
RANK_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75)


@register_technique
class Prune(Technique):
    name = "prune"
    stage = "prune"
    key = "sparsity"
    grid = SPARSITY_GRID
    kinds = ("linear", "conv", "embedding")
    doc = "magnitude pruning of the layer to the given fraction of zeros"

    def apply(self, layer, weight, value, context):
        return Changed(weight=weight * magnitude_mask(weight, sparsity=float(value)))


def shared_weight(weight: torch.Tensor, bits: int, *, init: str = "linear", float16: bool = False) -> torch.Tensor:
    """``weight`` with its non-zero values replaced by their k-means centroid (``2**bits - 1``
    centroids, zero kept exact): what the ``share`` stage stores before fine-tuning."""
    flat = weight.detach().reshape(-1).to(torch.float32)
    nz = flat != 0
    out = torch.zeros_like(flat)
    if bool(nz.any()):
        centroids, labels = kmeans_1d(flat[nz].numpy(), max(1, (1 << int(bits)) - 1), init=init)
        if float16:
            centroids = centroids.astype(np.float16).astype(np.float32)
        out[nz] = torch.from_numpy(centroids[labels])
    return out.reshape(weight.shape)


@register_technique
class Share(Technique):
    name = "share"
    stage = "share"
    key = "bits"
    grid = BITS_GRID
    kinds = ("linear", "conv", "embedding")
    doc = "k-means weight sharing of the layer's non-zero weights (2**bits - 1 centroids and zero)"

    def apply(self, layer, weight, value, context):
        return Changed(weight=shared_weight(weight, int(value), init=context.get("init", "linear"),
                                            float16=bool(context.get("float16", False))))


@register_technique
class Quantize(Technique):
    name = "quantize"
    stage = "quantize"
    key = "bits"
    grid = BITS_GRID
    doc = "uniform symmetric integer quantisation, a scale per output channel (calibrated by MSE)"

    def apply(self, layer, weight, value, context):
        from deepshrink.quant.uniform import QuantSpec, Rule, quant_form

        mask = (weight != 0).to(weight.dtype) if bool((weight == 0).any()) else None
        form = quant_form(weight, QuantSpec(bits=int(value)), Rule(), mask)
        return Changed(weight=torch.from_numpy(np.asarray(form.to_dense(), np.float32)), form=form)


class _Factor(Technique):
    stage = "lowrank"
    key = "rank"
    grid = RANK_GRID
    kinds = ("linear",)
    composes = False

    def apply(self, layer, weight, value, context):
        from deepshrink.lowrank import factorize

        module = factorize(layer, self.name, rank=float(value), **self._extra(layer, context))
        return Changed(module=module, nbytes=factor_bytes(module, context.get("coder", Coder.ANS)))

    def _extra(self, layer, context) -> dict[str, Any]:
        return {}


@register_technique
class SVD(_Factor):
    name = "svd"
    doc = "truncated SVD of the layer into two layers (rank as the fraction of the weights kept)"


@register_technique
class SLR(_Factor):
    name = "slr"
    doc = ("Sparse Low Rank (Swaminathan et al. 2020): truncated SVD with a lower rank for the least "
           "important neurons, by absolute weight")

    def _extra(self, layer, context):
        from deepshrink.lowrank import neuron_importance

        return {"scores": neuron_importance(layer, {"layer": layer}, "weight")["layer"]}


def weight_bytes(name: str, weight: torch.Tensor, coder: Coder | str, form: CompressedTensor | None = None) -> int:
    """Bytes the file stores for ``weight`` (coded by the packer's own rule: every layout and gap
    width sized, the smallest kept; a stage's typed ``form`` stored as it is)."""
    coding = TensorCoding(coder=Coder(coder), gap_bits=None, form=form)
    return encode_tensor(name, weight.detach().to(torch.float32).numpy(), coding).report.total_bytes


def factor_bytes(module: nn.Module, coder: Coder | str) -> int:
    """Bytes of the weights of a factorised layer (its factors' weights, as the packer stores them)."""
    from deepshrink.prune import prunable_layers

    return sum(weight_bytes(n, current_weight(m), coder) for n, m in prunable_layers(module).items())


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@contextmanager
def changed(model: nn.Module, name: str, change: Changed):
    """``model`` with layer ``name`` changed as ``change`` says, restored afterwards bit for bit."""
    layer = model.get_submodule(name)
    if change.module is not None:
        _set_module(model, name, change.module)
        try:
            yield model
        finally:
            _set_module(model, name, layer)
        return
    w = layer.weight
    saved = w.detach().clone()
    with torch.no_grad():
        w.copy_(change.weight.to(w.dtype))
    try:
        yield model
    finally:
        with torch.no_grad():
            w.copy_(saved)


def combos(names: Sequence[str], grids: Mapping[str, Sequence[float]] | None = None) -> list[dict[str, float]]:
    """Every combination of the named techniques' grid values (``grids`` overrides a grid)."""
    grids = grids or {}
    values = [tuple(grids.get(n, technique(n).grid)) for n in names]
    return [dict(zip(names, v)) for v in itertools.product(*values)]


def measure(model: nn.Module, name: str, settings: Iterable[Mapping[str, float]], evaluate: Evaluate, *,
            coder: Coder | str = Coder.ANS, context: Mapping[str, Any] | None = None,
            tick: Callable[[], None] | None = None) -> list[Point]:
    """Score ``model`` with layer ``name`` changed by each of ``settings`` (technique name ->
    value, applied in the order given: weight techniques compose; a factorisation must come
    alone), and size the layer's stored weights. The model is left as it was."""
    layer = model.get_submodule(name)
    base = current_weight(layer).detach().clone()
    ctx = {"coder": Coder(coder), **(context or {})}
    points = []
    for setting in settings:
        weight, change = base, None
        for tname, value in setting.items():
            t = technique(tname)
            if change is not None and not t.composes:
                raise ConfigError(f"{tname} replaces the layer and cannot follow another technique")
            change = t.apply(layer, weight, value, ctx)
            if change.weight is not None:
                weight = change.weight
        if change is None:
            change = Changed(weight=base)
        nbytes = change.nbytes if change.nbytes is not None else weight_bytes(f"{name}.weight", weight, ctx["coder"],
                                                                              change.form)
        with changed(model, name, change):
            val = float(evaluate(model))
        keys = {technique(t).key if len(setting) == 1 else f"{technique(t).stage}.{technique(t).key}": float(v)
                for t, v in setting.items()}
        points.append(Point(keys, int(nbytes), val))
        if tick is not None:
            tick()
    return points


@dataclass
class Curve:
    """A technique's points on one layer (one setting varied)."""

    layer: str
    technique: str
    points: list[Point] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        t = technique(self.technique)
        return {"layer": self.layer, "technique": self.technique, "setting": t.key,
                "points": [{"value": p.setting[t.key], "bytes": p.bytes, "val": p.val} for p in self.points]}
