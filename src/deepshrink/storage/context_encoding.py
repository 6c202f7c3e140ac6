"""The ``codebook/context`` encoding: a pruned, shared tensor coded by the context-adaptive
binary coder of :mod:`deepshrink.coding.context` (CABAC, Marpe et al. 2003; DeepCABAC,
Wiedemann et al. 2019).

It stores what ``codebook/sparse`` stores (K shared values, the kept positions and their
codebook indices) and decodes to the same :class:`~deepshrink.storage.tensors.SparseCodebookTensor`,
so the runtime, ONNX export and the C engine need nothing new. The mask and the indices are two
range-coded streams whose probabilities adapt to the neighbourhood of each weight; the optional
``grid`` says how a row's columns lie in an image (the 28x28 pixels feeding LeNet-300-100's
first layer, a convolution's kh x kw taps), so that the pixel above is a context.

The packer writes it only under ``coder = "context"``, and only for a tensor where it is
smaller than the best classic layout (:func:`deepshrink.storage.encode_tensor`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from deepshrink.coding import Coder, context
from deepshrink.errors import ConfigError, CorruptStream, FormatError, InvalidHeader
from deepshrink.storage.encodings import (
    _CB,
    _K,
    Prepared,
    SharedValues,
    _Codebook,
    _needs_shared,
    register_encoding,
    symbol_bits,
)
from deepshrink.storage.fields import CheckedDescriptor, Context, Field, Rule, Section, StreamDesc, StreamRule
from deepshrink.storage.report import EncodedTensor
from deepshrink.storage.tensors import SparseCodebookTensor, _rows_cols, index_dtype



def _cols(ctx: Context) -> int:
    return _rows_cols(ctx.values["shape"])[1]


class _Grid(Rule):
    text = "two positive integers `[h, w]` whose product divides the row length (the dimensions after the first)"

    def check(self, key: str, value: Any, ctx: Context) -> tuple[int, int]:
        cols = _cols(ctx)
        if (not isinstance(value, list) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
                or value[0] * value[1] > max(cols, 1) or (cols and cols % (value[0] * value[1]))):
            raise self.fail(key, value, ctx)
        return value[0], value[1]


class _ContextStream(StreamRule):
    """A stream descriptor whose coder must be ``context``."""

    def check(self, key: str, value: Any, ctx: Context) -> StreamDesc:
        desc = super().check(key, value, ctx)
        if desc.coder is not Coder.CONTEXT:
            raise InvalidHeader(f"{ctx.where} stream {key!r}: the coder must be 'context', got {desc.coder.value!r}")
        return desc

    @property
    def text(self) -> str:  # type: ignore[override]
        return f"a stream descriptor of coder `context`, alphabet {self.alphabet_text}, with `n` {self.count_text}"


def candidate_grids(shape: tuple[int, ...], grid: tuple[int, int] | None) -> list[tuple[int, int] | None]:
    """The grids :meth:`ContextCodebook.encode` tries (it keeps the smallest mask): none (one
    image row, ``(1, row length)``), the
    caller's, a convolution's kernel ``(kh, kw)``, and ``(s, s)`` when the row length is a
    perfect square ``s*s`` (a flattened square image)."""
    cols = _rows_cols(shape)[1]
    out: list[tuple[int, int] | None] = [None]
    if grid is not None:
        out.append(context.check_grid(cols, grid))
    if len(shape) == 4 and shape[2] * shape[3] > 1:
        out.append((shape[2], shape[3]))
    s = math.isqrt(cols)
    if s > 1 and s * s == cols:
        out.append((s, s))
    return list(dict.fromkeys(out))


@register_encoding
class ContextCodebook(_Codebook):
    name = "codebook/context"
    enc = "codebook"
    layout = "context"
    summary = ("K shared values; the kept mask and the codebook indices of the kept weights coded by a "
               "context-adaptive binary range coder (CABAC-style, `deepshrink.coding.context`)")
    own_fields = (
        _K,
        Field("grid", _Grid(), "a row's columns as images of h × w (e.g. [28, 28] for 784 pixels): the pixel "
                               "above is a context of the mask; [1, row length] for a row that is no image"),
        Field("mask", _ContextStream(lambda ctx: 2, "2", lambda ctx: ctx.numel, "= the element count"),
              "the mask stream: one bit per element, row-major, 1 = kept"),
        Field("val", _ContextStream(lambda ctx: max(1, ctx.values["k"]), "K (at least 1)"),
              "the value stream: the codebook index of every kept weight, row-major; `n` is the kept count"),
    )
    sections = (_CB, Section(":mask", "index", "the coded mask stream", stream="mask"),
                Section(":val", "weight", "the coded value stream", stream="val"))
    typed = SparseCodebookTensor
    example = {"shape": [300, 784], "dtype": "float16", "enc": "codebook", "layout": "context", "k": 31,
               "grid": [28, 28], "mask": {"coder": "context", "n": 235200, "bits": 1},
               "val": {"coder": "context", "n": 18816, "bits": 5}}

    def validate(self, name: str, desc: Any, limits: Any) -> CheckedDescriptor:
        checked = super().validate(name, desc, limits)
        if checked["val"].n and not checked["k"]:
            raise InvalidHeader(f"{checked.where}: kept weights ('val.n' = {checked['val'].n}) need a codebook (k >= 1)")
        return checked

    def encode(self, name: str, t: Prepared, coder: Coder, gap_bits: int,
               grid: tuple[int, int] | None = None) -> EncodedTensor:
        """Code ``t`` with every grid of :func:`candidate_grids` and keep the smallest mask
        (``coder`` and ``gap_bits`` are not used: both streams are context-coded)."""
        rows, cols = _rows_cols(t.shape)
        empty = SharedValues(np.zeros(0, np.float32), b"", np.zeros(0, np.int64))
        shared = _needs_shared(t, self) if t.flat.size else empty
        mask = (t.flat != 0).reshape(rows, cols)
        z = int(np.count_nonzero(shared.values < 0))
        best = None
        for g in candidate_grids(t.shape, grid):
            mdata, vdata = context.encode(mask, shared.symbols, shared.k, z, g)
            if best is None or len(mdata) < len(best[1]):
                best = (g, mdata, vdata)
        g, mdata, vdata = best
        desc: dict[str, Any] = {**self._base(t), "k": shared.k, "grid": list(context.check_grid(cols, g))}
        desc["mask"] = {"coder": Coder.CONTEXT.value, "n": t.flat.size, "bits": 1}
        desc["val"] = {"coder": Coder.CONTEXT.value, "n": len(t.positions), "bits": symbol_bits(max(1, shared.k))}
        sections = {f"{name}:cb": shared.data, f"{name}:mask": mdata, f"{name}:val": vdata}
        streams = {"mask": mask.reshape(-1).astype(np.int64), "val": np.asarray(shared.symbols, np.int64)}
        return self._encoded(name, desc, sections, streams, len(t.positions))

    def _decode(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
                keep: dict[str, np.ndarray] | None = None) -> SparseCodebookTensor:
        cb = self.codebook(checked, sections)
        k = checked["k"]
        rows, cols = _rows_cols(checked.shape)
        mdata = bytes(self.section(checked, sections, ":mask"))
        vdata = bytes(self.section(checked, sections, ":val"))
        z = int(np.count_nonzero(cb < 0))
        try:
            mask, vals = context.decode(mdata, vdata, rows, cols, k, z, checked["val"].n, checked["grid"])
        except FormatError:
            raise
        except (ConfigError, ValueError) as exc:
            raise CorruptStream(f"{checked.where}: {exc}") from None
        if keep is not None:
            keep["mask"] = mask.reshape(-1).astype(np.int64)
            keep["val"] = vals
        positions = np.flatnonzero(mask.reshape(-1))
        return SparseCodebookTensor(checked.shape, positions, vals.astype(index_dtype(max(k, 1))), cb)

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> SparseCodebookTensor:
        return self._decode(checked, sections)

    def decode(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
               keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        return self._decode(checked, sections, keep).to_dense()

    def gap_bits(self, checked: CheckedDescriptor) -> int | None:
        return None

    def value_bits(self, checked: CheckedDescriptor) -> int:
        return checked["val"].bits

    def nonzero(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> int:
        return checked["val"].n
