"""Encodings of DCT-coded (``dct/sparse``) and hashed (``hashed``) tensors.

Both store the typed form a stage left (:attr:`Encoding.writes_forms`), never one chosen by
analysing dense values. ``dct/sparse`` is the ``codebook/sparse`` layout of the block-major
coefficient array (the same fields and sections, validated and decoded by that encoding against
the coefficient array's shape) plus the block; ``hashed`` is the bucket values and the seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from deepshrink.coding import Coder
from deepshrink.errors import InvalidHeader, LimitExceeded
from deepshrink.storage.encodings import (
    ENCODINGS,
    MAX_CODEBOOK,
    Encoding,
    _Codebook,
    register_encoding,
    value_dtype,
)
from deepshrink.storage.fields import DTYPES, CheckedDescriptor, Context, Field, IntRule, Rule, Section
from deepshrink.storage.report import EncodedTensor
from deepshrink.storage.tensors import SparseCodebookTensor, index_dtype
from deepshrink.transform.dct import MAX_BLOCK, coefficient_shape
from deepshrink.transform.hashing import MAX_SEED
from deepshrink.transform.tensors import DCTTensor, HashedTensor
from deepshrink.util.limits import Limits

_SPARSE = ENCODINGS["codebook/sparse"]


class BlockRule(Rule):
    """``[bh, bw]``, each in 1..:data:`MAX_BLOCK`; the coefficient array it makes of the tensor
    (padded to whole blocks) must stay within ``Limits.max_tensor_elements``."""

    text = (f"a list of two integers in [1, {MAX_BLOCK}] (block height and width), whose padded coefficient "
            "array has at most `Limits.max_tensor_elements` elements")

    def check(self, key: str, value: Any, ctx: Context) -> tuple[int, int]:
        if not (isinstance(value, list) and len(value) == 2 and all(
                isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= MAX_BLOCK for b in value)):
            raise self.fail(key, value, ctx)
        block = (value[0], value[1])
        n = math.prod(coefficient_shape(ctx.values["shape"], block))
        if n > ctx.limits.max_tensor_elements:
            raise LimitExceeded(f"{ctx.where}: the coefficient array of block {value} has {n} elements, over the "
                                f"limit of {ctx.limits.max_tensor_elements} per tensor")
        return block


_BLOCK_DOC = "the DCT block: rows and columns of the weight's 2-D view (all dimensions but the last, by the last)"


def _writer_limits(shape: list[int], extra: int = 1) -> Limits:
    """Limits under which the writer validates what it wrote (never below the defaults)."""
    return Limits(max_tensor_elements=max(Limits().max_tensor_elements, extra * math.prod(shape)))


@register_encoding
class DCTSparse(_Codebook):
    name = "dct/sparse"
    enc = "dct"
    layout = "sparse"
    summary = ("blockwise DCT coefficients (CNNpack, Wang et al. 2016) in the `codebook/sparse` layout of the "
               "block-major coefficient array `[blocks, bh, bw]` (the weight's 2-D view padded to whole blocks); "
               "`k`, `gap_bits`, `gap` and `sym` are that layout's, counted over the coefficient array. The "
               "weight is the orthonormal inverse DCT of every block, cropped")
    own_fields = (Field("block", BlockRule(), _BLOCK_DOC), *_SPARSE.own_fields)
    sections = _SPARSE.sections
    typed = DCTTensor
    writes_forms = True
    example = {"shape": [300, 784], "dtype": "float16", "enc": "dct", "layout": "sparse", "block": [8, 8],
               "k": 63, "gap_bits": 3, "gap": {"coder": "huffman", "n": 26100, "bits": 3},
               "sym": {"coder": "huffman", "n": 26100, "bits": 6}}

    def validate(self, name: str, desc: Any, limits: Limits) -> CheckedDescriptor:
        """Shape, dtype and block as any descriptor's fields; the rest as the ``codebook/sparse``
        descriptor of the coefficient array, by that encoding."""
        ctx = Context(f"tensor {name!r}", limits)
        if not isinstance(desc, dict):
            raise InvalidHeader(f"{ctx.where}: tensor descriptor must be an object")
        extra = sorted(k for k in desc if k not in {f.name for f in self.fields})
        if extra:
            raise InvalidHeader(f"{ctx.where}: unexpected field(s) {extra}; a {self.name} descriptor has the fields "
                                f"{sorted(f.name for f in self.fields)}")
        inner_names = {f.name for f in _SPARSE.own_fields}
        for f in self.fields:
            if f.name in inner_names:
                continue
            if f.name not in desc:
                raise InvalidHeader(f"{ctx.where}: a {self.name} descriptor needs the field {f.name!r} ({f.rule.text})")
            ctx.values[f.name] = f.rule.check(f.name, desc[f.name], ctx)
        cshape = coefficient_shape(ctx.values["shape"], ctx.values["block"])
        inner = {"shape": list(cshape), "dtype": ctx.values["dtype"], "enc": _SPARSE.enc, "layout": _SPARSE.layout,
                 **{k: desc[k] for k in inner_names if k in desc}}
        coefficients = _SPARSE.validate(name, inner, limits)
        values = {**ctx.values, **{k: coefficients[k] for k in inner_names}, "coefficients": coefficients}
        return CheckedDescriptor(name, self, ctx.values["shape"], ctx.numel, DTYPES[ctx.values["dtype"]], values,
                                 tuple(name + s.suffix for s in self.sections))

    def gap_bits(self, checked: CheckedDescriptor) -> int:
        return checked["gap_bits"]

    def _coefficients(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
                      keep: dict[str, np.ndarray] | None = None) -> SparseCodebookTensor:
        inner: CheckedDescriptor = checked["coefficients"]
        cb, positions, syms = _SPARSE._entries(inner, sections, keep)
        real = syms != inner["k"]
        return SparseCodebookTensor(inner.shape, positions[real], syms[real].astype(index_dtype(inner["k"])), cb)

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> DCTTensor:
        return DCTTensor(checked.shape, self._coefficients(checked, sections))

    def decode(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
               keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        return DCTTensor(checked.shape, self._coefficients(checked, sections, keep)).to_dense()

    def encode(self, name, t, coder, gap_bits):
        raise TypeError("dct/sparse stores the DCTTensor a stage left (encode_form), not dense values")

    def encode_form(self, name: str, form: DCTTensor, coder: Coder) -> EncodedTensor:
        """The coefficients as ``codebook/sparse`` stores them (the gap width that gives the
        fewest bytes), under this encoding's descriptor."""
        from deepshrink.storage.tensor_codec import TensorCoding, encode_tensor  # imports this registry

        coding = TensorCoding(coder=coder, gap_bits=None, layout="sparse", max_codebook=MAX_CODEBOOK - 1)
        inner = encode_tensor(name, form.coefficients.to_dense(), coding)
        if inner.descriptor["enc"] != _SPARSE.enc or inner.descriptor.get("layout") != _SPARSE.layout:
            raise ValueError(f"tensor {name!r}: its DCT coefficients did not fit a codebook")
        desc = {**inner.descriptor, "shape": list(form.shape), "enc": self.enc, "block": list(form.block)}
        streams: dict[str, np.ndarray] = {}
        checked = self.validate(name, desc, _writer_limits(desc["shape"], 4))
        self._coefficients(checked, inner.sections, streams)  # the symbols, for the report's entropy
        report = self.report(checked, inner.sections, streams=streams, nonzero=int(np.count_nonzero(form.to_dense())))
        return EncodedTensor(desc, inner.sections, report)


def _hashed_count(ctx: Context) -> int:
    return math.prod(coefficient_shape(ctx.values["shape"], ctx.values["block"]))


@register_encoding
class Hashed(Encoding):
    name = "hashed"
    enc = "hashed"
    layout = None
    summary = ("HashedNets (Chen et al. 2015): value `i` (row-major) is ξ(i)·bucket[h(i)], h and the sign ξ from "
               "the splitmix64 hash of `i` and `seed` (deepshrink.transform.hashing); the values are the weight's "
               "block-major DCT coefficients (FreshNets, Chen et al. 2016), or with `block` [1, 1] the weights themselves")
    own_fields = (
        Field("seed", IntRule(0, MAX_SEED), "the hash seed"),
        Field("sign", IntRule(0, 1), "1: each value takes the sign ξ(i) = ±1; 0: all +1"),
        Field("block", BlockRule(), _BLOCK_DOC + "; [1, 1]: the weights themselves are hashed (HashedNets)"),
        Field("buckets", IntRule(1, _hashed_count, "the number of hashed values"), "number of buckets"),
    )
    sections = (Section(":bk", "weight", "the bucket values", length=lambda c: c["buckets"] * c.dtype.itemsize,
                        length_text="buckets × size of `dtype`"),)
    typed = HashedTensor
    writes_forms = True
    example = {"shape": [300, 784], "dtype": "float16", "enc": "hashed", "seed": 1234, "sign": 1, "block": [1, 1],
               "buckets": 14700}

    def encode(self, name, t, coder, gap_bits):
        raise TypeError("hashed stores the HashedTensor a stage left (encode_form), not dense values")

    def encode_form(self, name: str, form: HashedTensor, coder: Coder) -> EncodedTensor:
        buckets = np.asarray(form.buckets, dtype=np.float32)
        dtype = value_dtype(buckets)
        desc = {"shape": list(form.shape), "dtype": dtype, "enc": self.enc, "seed": int(form.seed),
                "sign": int(bool(form.sign)), "block": list(form.block), "buckets": len(buckets)}
        sections = {f"{name}:bk": buckets.astype(DTYPES[dtype]).tobytes()}
        return self._encoded(name, desc, sections, {}, int(np.count_nonzero(form.to_dense())))

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> HashedTensor:
        buckets = self.values(checked, sections, ":bk", f"{checked.where}: the buckets")
        return HashedTensor(checked.shape, buckets, checked["seed"], checked["sign"] == 1, checked["block"])
