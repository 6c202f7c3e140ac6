"""Stages ``dct`` (CNNpack transform coding) and ``hash`` (HashedNets, FreshNets).

Both store the weights of the layers they change in a form of their own (``stores_form``): the
stage trains the layer through a parametrization that computes the weight from a small table
(shared DCT coefficients, or hash buckets), then leaves the typed tensor in ``ctx.forms`` and
sets the weight to exactly its :meth:`~deepshrink.storage.CompressedTensor.to_dense`, which is
what loading computes. No later stage may change those weights (:meth:`Stage.touch`).

While fine-tuning, the other layers' weights stay fixed (a pruned or shared layer keeps its
pattern, as in the ``share`` stage); the tables, biases and other parameters are trained.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.utils.parametrize as P
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.recipes.rules import LayerRules
from deepshrink.recipes.stages import NUM, Stage, _kinds, register_stage
from deepshrink.share import KMeansInit, kmeans_1d
from deepshrink.storage.tensors import CompressedTensor, SparseCodebookTensor, index_dtype
from deepshrink.train.loop import TrainConfig, as_enum
from deepshrink.transform.dct import MAX_BLOCK, Block, coefficient_shape, dct_blocks, idct_torch, kernel_block
from deepshrink.transform.hashing import MAX_SEED, bucket_signs
from deepshrink.transform.tensors import DCTTensor, HashedTensor


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(v: Any, lo: int, hi: int, what: str) -> None:
    if not _is_int(v) or not lo <= v <= hi:
        raise ConfigError(f"{what} must be an integer in {lo}..{hi}, got {v!r}")


def _check_block(v: Any, what: str) -> Block:
    """A block setting: an int ``B`` in 1..:data:`MAX_BLOCK` (``B × B``) or a pair ``[bh, bw]``
    of them (a tuple, so the frozen stage stays hashable)."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(b) and 1 <= b <= MAX_BLOCK for b in v):
        return int(v[0]), int(v[1])
    if not _is_int(v) or not 1 <= v <= MAX_BLOCK:
        raise ConfigError(f"{what} must be an integer in 1..{MAX_BLOCK} or a pair [rows, columns] of them, got {v!r}")
    return v


def _check_bool(v: Any, what: str) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"{what} must be true or false, got {v!r}")


def _half(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to the nearest float16 (kept as float32) when all stay finite: the
    file then stores them in half the bytes (as ``share``'s ``float16`` does for codebooks)."""
    half = values.astype(np.float16)
    return half.astype(np.float32) if np.isfinite(half).all() else values


class _TableWeight(nn.Module):
    """Parametrization ``table → weight`` of a layer whose weight a small learnable table makes;
    ``right_inverse`` gives the table's initial value (the weight it replaces is not used)."""

    def __init__(self, table: np.ndarray):
        super().__init__()
        self._init = torch.from_numpy(np.asarray(table, dtype=np.float32).copy())

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self._init.to(weight.dtype)


class DCTWeight(_TableWeight):
    """``weight = IDCT(coefficients)`` with the kept coefficients ``table[labels]`` at
    ``positions`` of the block-major coefficient array of shape ``cshape`` (zero elsewhere)."""

    def __init__(self, positions: np.ndarray, labels: np.ndarray, cshape: tuple[int, int, int],
                 shape: tuple[int, ...], table: np.ndarray):
        super().__init__(table)
        self.register_buffer("positions", torch.from_numpy(positions.astype(np.int64)))
        self.register_buffer("labels", torch.from_numpy(labels.astype(np.int64)))
        self.cshape, self.shape = cshape, shape

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        flat = table.new_zeros(int(np.prod(self.cshape))).scatter(0, self.positions, table[self.labels])
        return idct_torch(flat.reshape(self.cshape), self.shape)


class HashedWeight(_TableWeight):
    """``weight = sign · buckets[index]`` (HashedNets), or its inverse DCT with ``cshape``
    (FreshNets: the hashed values are the coefficients)."""

    def __init__(self, index: np.ndarray, sign: np.ndarray, shape: tuple[int, ...],
                 cshape: tuple[int, int, int] | None, table: np.ndarray):
        super().__init__(table)
        self.register_buffer("index", torch.from_numpy(index))
        self.register_buffer("sign", torch.from_numpy(sign))
        self.shape, self.cshape = shape, cshape

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:
        values = buckets[self.index] * self.sign
        if self.cshape is None:
            return values.reshape(self.shape)
        return idct_torch(values.reshape(self.cshape), self.shape)


def _fit_tables(model: nn.Module, ctx: Any, names: list[str], config: TrainConfig, desc: str) -> float | None:
    """Fine-tune the tables of the parametrized layers ``names`` with every parameter that is not
    another layer's weight (biases, normalisation); returns the best validation score."""
    frozen = {id(m.weight) for n, m in ctx.layers.items() if n not in names}
    params = [p for p in model.parameters() if id(p) not in frozen]
    return ctx.fit(model, config, params=params, desc=desc)


def _store(module: nn.Module, name: str, form: CompressedTensor, ctx: Any, float16: bool) -> None:
    """Replace the layer's parametrization by the plain weight ``form.to_dense()`` (bit for bit
    what loading the file computes) and record the form for the file."""
    P.remove_parametrizations(module, "weight", leave_parametrized=True)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(form.to_dense()))
        bias = getattr(module, "bias", None)
        if float16 and isinstance(bias, torch.Tensor):
            bias.copy_(torch.from_numpy(_half(bias.detach().cpu().numpy())))
    ctx.forms[f"{name}.weight"] = form


def _table(param: torch.Tensor, float16: bool) -> np.ndarray:
    t = param.detach().cpu().numpy().astype(np.float32)
    return (_half(t) if float16 else t) + np.float32(0.0)  # + 0: no -0.0, which a sparse layout drops


# --- dct ---------------------------------------------------------------------------------------

@register_stage
@dataclass(frozen=True)
class DCTStage(Stage):
    """Transform coding in the DCT domain (CNNpack, Wang et al., NIPS 2016): each layer's weight
    is cut into blocks (a convolution's kernels; ``block × block`` tiles of other weights, or
    ``bh × bw`` for ``block = [bh, bw]``, padded at the edges: ``[1, B]`` transforms runs of one
    neuron's inputs, e.g. ``[1, 28]`` one image row of a 784-input layer), each block is
    transformed by the orthonormal 2-D DCT-II, the smallest coefficients are dropped (per layer ``keep``: the fraction kept by magnitude, or
    ``threshold``: drop those below ``threshold ×`` the standard deviation of the layer's
    coefficients), the kept ones are k-means shared with ``bits`` (``2**bits - 1`` values) and
    the shared values are fine-tuned through the inverse transform (``finetune``). With
    ``retrain.epochs > 0`` the kept coefficients are first trained each on its own, through the
    inverse transform, before they are shared: the network recovers from the dropped ones with
    the kept ones free (as Deep Compression retrains the weights pruning keeps before it shares
    them), and k-means then clusters values that already work together. Per layer ``bits`` and
    ``block`` default to the stage's; ``float16`` rounds the shared values and the biases of the
    coded layers to float16 afterwards."""

    kind: ClassVar[str] = "dct"
    order: ClassVar[int] = 70
    stores_form: ClassVar[bool] = True
    discards: ClassVar[frozenset[str]] = frozenset({"prune", "share"})  # the coded form keeps neither zeros nor shared values
    settings: ClassVar[Mapping[str, Any]] = {"keep": NUM, "threshold": NUM, "bits": int, "block": (int, list)}
    trainings: ClassVar[tuple[str, ...]] = ("retrain", "finetune")

    layers: LayerRules = field(default_factory=LayerRules)
    bits: int = 6
    block: Block = 8
    init: KMeansInit = KMeansInit.LINEAR
    float16: bool = True
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=1e-4))

    def __post_init__(self) -> None:
        _check_int(self.bits, 1, 16, "dct: bits")
        object.__setattr__(self, "block", _check_block(self.block, "dct: block"))
        _check_bool(self.float16, "dct: float16")
        object.__setattr__(self, "init", as_enum(KMeansInit, self.init, "dct: init"))
        for pattern, s in self.layers.rules:
            where = f"dct: layers.{pattern}"
            if "keep" in s and "threshold" in s:
                raise ConfigError(f"{where} gives both keep and threshold; choose one")
            if "keep" in s and not (isinstance(s["keep"], NUM) and 0 < s["keep"] <= 1):
                raise ConfigError(f"{where}.keep (fraction of coefficients kept) must be in (0, 1], got {s['keep']!r}")
            if "threshold" in s and not (isinstance(s["threshold"], NUM) and 0 <= s["threshold"] <= 100):
                raise ConfigError(f"{where}.threshold (× the coefficients' std) must be in [0, 100], "
                                  f"got {s['threshold']!r}")
            if "bits" in s:
                _check_int(s["bits"], 1, 16, f"{where}.bits")
            if "block" in s:
                _check_block(s["block"], f"{where}.block")

    def plans(self, kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Settings (``bits`` and ``block`` filled in) of the layers the stage codes."""
        order = list(kinds)
        out = {}
        for name, kind in kinds.items():
            s = self.layers.resolve(name, kind, order, exclusive=[{"keep", "threshold"}])
            if "keep" in s or "threshold" in s:
                out[name] = {"bits": self.bits, "block": self.block, **s}
        if not out:
            raise ConfigError("dct stage: no layer matches its rules (give keep or threshold); nothing to code")
        return out

    def check(self, layers, *, has_val):
        return self.touch(layers, self.plans(_kinds(layers)))

    def run(self, model, ctx):
        layers = ctx.layers
        plans = self.plans(ctx.kinds)
        report, kept = {}, {}
        for name, p in plans.items():
            m = layers[name]
            w = m.weight.detach().cpu().numpy()
            shape = tuple(w.shape)
            block = kernel_block(shape, p["block"])
            coef = dct_blocks(w, block).reshape(-1)
            mag = np.abs(coef)
            if "keep" in p:
                n = max(1, int(round(p["keep"] * coef.size)))
                positions = np.sort(np.argsort(-mag, kind="stable")[:n])
            else:
                positions = np.flatnonzero(mag > p["threshold"] * coef.std())
                if positions.size == 0:
                    positions = np.array([int(np.argmax(mag))])
            cshape = coefficient_shape(shape, block)
            kept[name] = (positions, cshape, shape, coef[positions])
            report[name] = {"block": list(block), "bits": p["bits"], "coefficients": int(coef.size),
                            "kept": int(positions.size),
                            "energy_kept": float((coef[positions] ** 2).sum() / max((coef ** 2).sum(), 1e-30))}
        retrained = None
        if self.retrain.epochs > 0:  # each kept coefficient its own value (labels 0..n-1), trained
            for name, (positions, cshape, shape, values) in kept.items():
                P.register_parametrization(layers[name], "weight", DCTWeight(
                    positions, np.arange(positions.size), cshape, shape, values), unsafe=True)
            retrained = _fit_tables(model, ctx, list(plans), self.retrain, "dct: retrain kept coefficients")
            for name, (positions, cshape, shape, _) in kept.items():
                m = layers[name]
                values = m.parametrizations.weight.original.detach().cpu().numpy().astype(np.float64)
                P.remove_parametrizations(m, "weight", leave_parametrized=True)
                kept[name] = (positions, cshape, shape, values)
        for name, (positions, cshape, shape, values) in kept.items():
            centroids, labels = kmeans_1d(values, (1 << plans[name]["bits"]) - 1, init=self.init)
            P.register_parametrization(layers[name], "weight", DCTWeight(positions, labels, cshape, shape, centroids),
                                       unsafe=True)
            report[name]["clusters"] = len(centroids)
        before = ctx.evaluate(model, "val")
        after = _fit_tables(model, ctx, list(plans), self.finetune, "dct: fine-tune shared coefficients")
        for name in plans:
            m = layers[name]
            pz: DCTWeight = m.parametrizations.weight[0]
            codebook = _table(m.parametrizations.weight.original, self.float16)
            labels = pz.labels.numpy()
            coefficients = SparseCodebookTensor(pz.cshape, pz.positions.numpy().copy(),
                                                labels.astype(index_dtype(len(codebook))), codebook)
            _store(m, name, DCTTensor(tuple(pz.shape), coefficients), ctx, self.float16)
        return {"layers": report, "val_accuracy_after_retrain": retrained, "val_accuracy_before_finetune": before,
                "val_accuracy_after_finetune": after}


# --- hash --------------------------------------------------------------------------------------

class HashDomain(StrEnum):
    """What is hashed: the weights (HashedNets) or their blockwise DCT coefficients (FreshNets)."""

    WEIGHT = "weight"
    DCT = "dct"


@register_stage
@dataclass(frozen=True)
class HashStage(Stage):
    """Random weight sharing by hashing (HashedNets, Chen et al., ICML 2015): every weight of a
    layer is ``ξ(i) · buckets[h(i)]``, ``h`` a fixed hash of the flat index into ``buckets``
    shared values and ``ξ(i) = ±1`` a second hash (``sign``); only the buckets and the hash seed
    are stored, so the compression factor is the layer's size over ``buckets`` (per layer: an
    int, or a fraction of the layer's weights). With ``domain = "dct"`` the blockwise DCT
    coefficients are hashed instead (FreshNets, Chen et al., KDD 2016: a convolution's kernels
    are ``block`` for it; other weights use ``block × block`` tiles, or ``[bh, bw]``), which spends the shared
    values on the smooth low frequencies. The buckets start as the signed mean of the values
    that hash to them and are trained (``train``) with the hashing fixed; ``float16`` rounds
    them and the layers' biases to float16 afterwards."""

    kind: ClassVar[str] = "hash"
    order: ClassVar[int] = 65
    stores_form: ClassVar[bool] = True
    discards: ClassVar[frozenset[str]] = frozenset({"prune", "share"})  # the coded form keeps neither zeros nor shared values
    settings: ClassVar[Mapping[str, Any]] = {"buckets": NUM, "domain": str, "block": (int, list), "sign": bool}
    trainings: ClassVar[tuple[str, ...]] = ("train",)

    layers: LayerRules = field(default_factory=LayerRules)
    seed: int = 0
    sign: bool = True
    domain: HashDomain = HashDomain.WEIGHT
    block: Block = 8
    float16: bool = True
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=1e-3, distill=0.5))

    def __post_init__(self) -> None:
        _check_int(self.seed, 0, MAX_SEED, "hash: seed")
        _check_bool(self.sign, "hash: sign")
        _check_bool(self.float16, "hash: float16")
        object.__setattr__(self, "block", _check_block(self.block, "hash: block"))
        object.__setattr__(self, "domain", as_enum(HashDomain, self.domain, "hash: domain"))
        rules = []
        for pattern, s in self.layers.rules:
            where = f"hash: layers.{pattern}"
            b = s.get("buckets", 1)
            if isinstance(b, bool) or not isinstance(b, NUM) or (isinstance(b, int) and b < 1) or (
                    isinstance(b, float) and not 0 < b <= 1):
                raise ConfigError(f"{where}.buckets must be an int ≥ 1 (at most the layer's weights) or a fraction "
                                  f"in (0, 1] of the layer's weights, got {b!r}")
            if "block" in s:
                _check_block(s["block"], f"{where}.block")
            if "sign" in s:
                _check_bool(s["sign"], f"{where}.sign")
            s = dict(s)
            if "domain" in s:
                s["domain"] = as_enum(HashDomain, s["domain"], f"{where}.domain")
            rules.append((pattern, s))
        object.__setattr__(self, "layers", LayerRules(tuple(rules)))

    def plans(self, kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Settings (``domain``, ``block`` and ``sign`` filled in) of the layers the stage hashes."""
        order = list(kinds)
        out = {}
        for name, kind in kinds.items():
            s = self.layers.resolve(name, kind, order)
            if "buckets" in s:
                out[name] = {"domain": self.domain, "block": self.block, "sign": self.sign, **s}
        if not out:
            raise ConfigError("hash stage: no layer matches its rules (give buckets); nothing to hash")
        return out

    @staticmethod
    def geometry(shape: tuple[int, ...], plan: Mapping[str, Any]) -> tuple[tuple[int, int], int]:
        """The DCT block ((1, 1), the identity, when the weights are hashed) and the number of
        hashed values."""
        if plan["domain"] is HashDomain.WEIGHT:
            return (1, 1), int(np.prod(shape))
        block = kernel_block(shape, plan["block"])
        return block, int(np.prod(coefficient_shape(shape, block)))

    @staticmethod
    def bucket_count(name: str, n: int, buckets: int | float) -> int:
        """The layer's bucket count: an int as it is (refused above ``n``, the values hashed),
        a fraction of ``n`` rounded (at least 1)."""
        if isinstance(buckets, float):
            return max(1, int(round(buckets * n)))
        if buckets > n:
            raise ConfigError(f"hash: layer {name!r}: buckets must be in 1..{n} (its hashed values), got {buckets}")
        return buckets

    def check(self, layers, *, has_val):
        plans = self.plans(_kinds(layers))
        for name, p in plans.items():
            module = layers[name].module
            if module is not None:
                _, n = self.geometry(tuple(module.weight.shape), p)
                self.bucket_count(name, n, p["buckets"])
        return self.touch(layers, plans)

    def layer_seed(self, name: str) -> int:
        """Each layer's hash seed: the stage's, offset by the CRC-32 of the layer name (layers
        of one shape do not share a pattern)."""
        return (self.seed + zlib.crc32(name.encode())) % (MAX_SEED + 1)

    def run(self, model, ctx):
        layers = ctx.layers
        plans = self.plans(ctx.kinds)
        report, meta = {}, {}
        for name, p in plans.items():
            m = layers[name]
            w = m.weight.detach().cpu().numpy()
            shape = tuple(w.shape)
            block, n = self.geometry(shape, p)
            k = self.bucket_count(name, n, p["buckets"])
            weights = block == (1, 1)
            values = w.reshape(-1).astype(np.float64) if weights else dct_blocks(w, block).reshape(-1)
            seed = self.layer_seed(name)
            index, xi = bucket_signs(seed, 0, n, k)
            if not p["sign"]:
                xi = np.ones_like(xi)
            counts = np.bincount(index, minlength=k)
            init = np.bincount(index, weights=xi * values, minlength=k) / np.maximum(counts, 1)
            cshape = None if weights else coefficient_shape(shape, block)
            P.register_parametrization(m, "weight", HashedWeight(index, xi, shape, cshape, init), unsafe=True)
            meta[name] = (seed, p["sign"], block)
            report[name] = {"domain": p["domain"].value, "buckets": k, "hashed_values": n, "seed": seed,
                            "compression": n / k, "block": None if weights else list(block)}
        before = ctx.evaluate(model, "val")
        after = _fit_tables(model, ctx, list(plans), self.train, "hash: train buckets")
        for name, (seed, sign, block) in meta.items():
            m = layers[name]
            shape = tuple(m.parametrizations.weight[0].shape)
            buckets = _table(m.parametrizations.weight.original, self.float16)
            _store(m, name, HashedTensor(shape, buckets, seed, sign, block), ctx, self.float16)
        return {"layers": report, "val_accuracy_before_train": before, "val_accuracy_after_train": after}
