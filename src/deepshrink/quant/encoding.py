"""Storage of uniformly quantised tensors: :class:`QuantTensor` and the ``quant`` encoding.

A quantised weight is an integer symbol per element and a scale per *group* of elements (a
group is a contiguous run of a row in row-major order: the whole row for per-channel scales,
the whole tensor for a per-tensor scale, ``G`` elements for per-group scales). The element's
value is ``scale[g] * level(q)`` with the level

* ``int``: ``q - zero[g]`` for ``q`` in ``[0, 2^bits)``; the zero point is a byte per group
  (asymmetric) or the fixed ``2^(bits-1)`` (symmetric, Jacob et al. 2018),
* ``binary``: ``2q - 1``, i.e. ``±scale`` (BinaryConnect / XNOR-Net, Rastegari et al. 2016),
* ``ternary``: ``q - 1``, i.e. ``-scale, 0, +scale`` (Ternary Weight Networks, Li et al. 2016).

The value is computed in float32 as ``float32(level) * scale`` (one rounding), identically by
:meth:`QuantTensor.to_dense`, ONNX's ``DequantizeLinear`` and the quantise stage (which sets the
weight from ``to_dense``), so the stored network is the trained one bit for bit.

The symbol stream is coded with the run's coder: with the fixed coder an int4 tensor of ``n``
weights costs exactly ``ceil(n/2)`` bytes, a binary one ``ceil(n/8)``, a ternary one ``ceil(n/4)``;
Huffman or ANS then exploit the peaked distribution of the levels (the zeros of a ternary layer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from deepshrink.coding import Coder, stream_size
from deepshrink.errors import CorruptStream, InvalidValue
from deepshrink.storage.encodings import Encoding, _stream_bytes, register_encoding, value_dtype
from deepshrink.storage.fields import DTYPES, CheckedDescriptor, Context, Field, OneOf, Rule, Section, StreamRule
from deepshrink.storage.report import EncodedTensor, TensorReport
from deepshrink.storage.tensors import CompressedTensor, CSRMatrix, IntGrid, _csr, _rows_cols

#: The level sets of :class:`QuantTensor`.
LEVELS = ("int", "binary", "ternary")
#: Bits of an integer grid (``int`` levels): 2..8 (a 1-bit integer grid is ``binary``).
INT_BITS = (2, 8)


def alphabet(levels: str, bits: int) -> int:
    """Number of distinct symbols ``q`` of a tensor with these ``levels`` and ``bits``."""
    return {"binary": 2, "ternary": 3}.get(levels, 1 << bits)


#: Ternary symbols are stored five to a stream symbol (3^5 = 243 ≤ 256): 1.6 bits per weight with
#: fixed-length codes instead of 2, the usual packing of ternary weights; Huffman and ANS code the
#: same groups.
TRITS = 5


def stream_alphabet(levels: str, bits: int) -> int:
    """Alphabet of the stored ``q`` stream: :func:`alphabet`, or 3^5 for ternary (five trits a symbol)."""
    return 3 ** TRITS if levels == "ternary" else alphabet(levels, bits)


def stream_count(levels: str, numel: int) -> int:
    """Symbols of the stored ``q`` stream of ``numel`` elements."""
    return -(-numel // TRITS) if levels == "ternary" else numel


def pack_trits(q: np.ndarray) -> np.ndarray:
    """Base-3 groups of five ternary symbols (the first the most significant), zero-padded."""
    flat = np.zeros(stream_count("ternary", q.size) * TRITS, np.int64)
    flat[: q.size] = q.reshape(-1)
    return flat.reshape(-1, TRITS) @ (3 ** np.arange(TRITS - 1, -1, -1, dtype=np.int64))


def unpack_trits(symbols: np.ndarray, numel: int) -> np.ndarray | None:
    """Inverse of :func:`pack_trits`; None when a padding trit is not zero (a corrupt stream)."""
    digits = (symbols[:, None] // (3 ** np.arange(TRITS - 1, -1, -1, dtype=np.int64))) % 3
    flat = digits.reshape(-1)
    return None if flat[numel:].any() else flat[:numel]


def level_bits(levels: str) -> tuple[int, int]:
    """The allowed range of ``bits`` for ``levels`` (binary: 1, ternary: 2, int: 2..8)."""
    return {"binary": (1, 1), "ternary": (2, 2)}.get(levels, INT_BITS)


def group_ok(shape: tuple[int, ...], group: int) -> bool:
    """Whether ``group`` elements per scale fit ``shape``: the whole tensor, or a divisor of the
    row length (the product of the dimensions after the first) so that no group spans two rows."""
    numel = math.prod(shape)
    _, cols = _rows_cols(shape)
    return group >= 1 and (group == numel or (cols > 0 and cols % group == 0))


@dataclass(frozen=True, eq=False)
class QuantTensor(CompressedTensor):
    """A uniformly quantised tensor (the ``quant`` encoding): ``q`` (uint8, the tensor's shape),
    ``bits`` (1..8), ``levels`` (``"int"``, ``"binary"``, ``"ternary"``), ``group`` (elements per
    scale, contiguous in row-major order within a row), ``scale`` (float32, one per group,
    positive) and ``zero`` (uint8, one per group, asymmetric ``int`` only; None otherwise)."""

    tensor_data_names: ClassVar[tuple[str, ...]] = ("q", "scale", "zero")

    q: np.ndarray
    bits: int
    levels: str
    group: int
    scale: np.ndarray
    zero: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self.q.shape)

    @property
    def symmetric(self) -> bool:
        return self.zero is None

    @property
    def n_groups(self) -> int:
        return self.numel // self.group if self.group else 0

    def integers(self) -> np.ndarray:
        """The signed integer level of every element (int16), as ``[groups, group]``."""
        q = self.q.reshape(self.n_groups, self.group).astype(np.int16)
        if self.levels == "binary":
            return 2 * q - 1
        if self.levels == "ternary":
            return q - 1
        zero = np.int16(1 << (self.bits - 1)) if self.zero is None else self.zero.astype(np.int16)[:, None]
        return q - zero

    def to_dense(self) -> np.ndarray:
        """``float32(level) * scale`` per element: one float32 rounding, as ``DequantizeLinear``."""
        return (self.integers().astype(np.float32) * self.scale.astype(np.float32)[:, None]).reshape(self.shape)

    def csr(self) -> CSRMatrix:
        """The dense values by rows (no codebook: scales differ per group); exact zeros dropped."""
        flat = self.to_dense().reshape(-1)
        positions = np.flatnonzero(flat)
        return _csr(self.shape, positions, flat[positions], None)

    def grid(self) -> IntGrid | None:
        """The integer grid view: ``scale * (q - offset)`` with the zero point (``2^(bits-1)`` when
        symmetric) as offset for ``int``, 1 for ternary, and for binary ``s·(2q − 1) = 2s·(q − ½)``
        (doubling a float32 is exact, so the values are :meth:`to_dense`'s bit for bit). None when
        a doubled binary scale would overflow float32."""
        scale = self.scale.astype(np.float32)
        n = self.n_groups
        if self.levels == "binary":
            with np.errstate(over="ignore"):
                scale = scale * np.float32(2)
            if not np.isfinite(scale).all():
                return None
            offset = np.full(n, 0.5, np.float32)
        elif self.levels == "ternary":
            offset = np.ones(n, np.float32)
        elif self.zero is None:
            offset = np.full(n, 1 << (self.bits - 1), np.float32)
        else:
            offset = self.zero.astype(np.float32)
        return IntGrid(self.q, self.bits, self.group, scale, offset)

    def to_onnx(self, g: Any, name: str) -> str:
        """``DequantizeLinear`` of one byte per element: the signed level as int8 (zero point 0)
        when symmetric, ``q`` as uint8 with the per-group zero point otherwise; per-axis scales
        on axis 0 (the rows are the groups for per-channel scales; per-group scales reshape the
        tensor to ``[groups, group]`` first and back after). Exact: ONNX computes
        ``float32(x - zero_point) * scale``, the same single rounding as :meth:`to_dense`."""
        if self.symmetric:
            x = self.integers().astype(np.int8)
            zp = np.zeros(self.n_groups, np.int8)
        else:
            x = self.q.reshape(self.n_groups, self.group).astype(np.uint8)
            zp = np.asarray(self.zero, np.uint8)
        scale = self.scale.astype(np.float32)
        rows, cols = _rows_cols(self.shape)
        if self.n_groups == 1:
            ins = [g.init(f"{name}/q", x.reshape(self.shape)), g.init(f"{name}/scale", np.array(scale[0])),
                   g.init(f"{name}/zero_point", np.array(zp[0]))]
            return g.node("DequantizeLinear", ins, f"{name}/values")
        per_row = self.group == cols and len(self.shape) >= 1
        shaped = x.reshape(self.shape) if per_row else x
        ins = [g.init(f"{name}/q", shaped), g.init(f"{name}/scale", scale), g.init(f"{name}/zero_point", zp)]
        out = g.node("DequantizeLinear", ins, f"{name}/values" if per_row else f"{name}/groups", axis=0)
        if per_row:
            return out
        return g.node("Reshape", [out, g.init(f"{name}/shape", np.array(self.shape, dtype=np.int64))], f"{name}/values")


# ----------------------------------------------------------------------------------------------
# the encoding


class _Bool(Rule):
    text = "`true` or `false`"

    def check(self, key: str, value: Any, ctx: Context) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value, ctx)
        return value


class _Bits(Rule):
    text = "an integer: 1 for `binary`, 2 for `ternary`, 2 to 8 for `int`"

    def check(self, key: str, value: Any, ctx: Context) -> int:
        lo, hi = level_bits(ctx.values["levels"])
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(key, value, ctx)
        return value


class _Group(Rule):
    text = "a positive integer: the element count, or a divisor of the row length (the dimensions after the first)"

    def check(self, key: str, value: Any, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not group_ok(ctx.values["shape"], value):
            raise self.fail(key, value, ctx)
        return value


class _Symmetric(_Bool):
    text = "`true` or `false`; `true` for `binary` and `ternary`"

    def check(self, key: str, value: Any, ctx: Context) -> bool:
        value = super().check(key, value, ctx)
        if not value and ctx.values["levels"] != "int":
            raise self.fail(key, value, ctx)
        return value


def _groups(c: CheckedDescriptor) -> int:
    return c.numel // c["group"] if c["group"] else 0


@register_encoding
class Quant(Encoding):
    name = "quant"
    enc = "quant"
    layout = None
    summary = ("uniform quantisation: one integer symbol per element and a scale per group of a row "
               "(per channel, per tensor or per group); int (symmetric or with a zero point), binary ±s or ternary {-s, 0, s}")
    own_fields = (
        Field("levels", OneOf(LEVELS), "value of a symbol q: `int` scale·(q − zero point), `binary` scale·(2q − 1), "
                                       "`ternary` scale·(q − 1)"),
        Field("bits", _Bits(), "bits of the integer grid"),
        Field("group", _Group(), "elements sharing one scale, contiguous in row-major order within a row"),
        Field("symmetric", _Symmetric(), "`int` only: `true` is the fixed zero point 2^(bits−1), `false` a stored byte per group"),
        Field("q", StreamRule(lambda ctx: stream_alphabet(ctx.values["levels"], ctx.values["bits"]),
                              "2^bits (2 binary; 243 ternary)",
                              lambda ctx: stream_count(ctx.values["levels"], ctx.numel),
                              "= the element count (ternary: ⌈count / 5⌉)"),
              "the symbol stream: q of every element, row-major; ternary q five to a symbol, base 3, the "
              "first the most significant, the last symbol zero-padded"),
    )
    sections = (
        Section(":q", "weight", "the coded symbol stream", stream="q"),
        Section(":scale", "weight", "one positive finite scale per group", length=lambda c: _groups(c) * c.dtype.itemsize,
                length_text="(element count / group) × size of `dtype`"),
        Section(":zp", "weight", "asymmetric only (absent when `symmetric`): one zero point per group, below 2^bits",
                length=_groups, length_text="element count / group"),
    )
    typed = QuantTensor
    writes_forms = True
    example = {"shape": [120, 400], "dtype": "float16", "enc": "quant", "levels": "int", "bits": 4, "group": 400,
               "symmetric": False, "q": {"coder": "fixed", "n": 48000, "bits": 4}}

    # the zero-point section exists only for asymmetric tensors

    def validate(self, name: str, desc: Any, limits: Any) -> CheckedDescriptor:
        checked = super().validate(name, desc, limits)
        if checked["symmetric"]:
            checked = CheckedDescriptor(checked.name, checked.encoding, checked.shape, checked.numel, checked.dtype,
                                        checked.fields, tuple(s for s in checked.sections if not s.endswith(":zp")))
        return checked

    def section(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview], suffix: str) -> memoryview:
        if suffix == ":zp" and checked["symmetric"]:
            return memoryview(b"")
        return super().section(checked, sections, suffix)

    def report(self, checked, sections, *, streams=None, nonzero=None) -> TensorReport:
        r = super().report(checked, sections, streams=streams, nonzero=nonzero)
        r.sections = {k: v for k, v in r.sections.items() if k in checked.sections}
        r.codebook_size = 0
        return r

    def value_bits(self, checked: CheckedDescriptor) -> int:
        return checked["bits"]

    # encoding and decoding

    def encode_form(self, name: str, form: CompressedTensor, coder: Coder) -> EncodedTensor:
        if not isinstance(form, QuantTensor):
            raise TypeError(f"the quant encoding stores a QuantTensor, got {type(form).__name__}")
        scale = np.asarray(form.scale, np.float32)
        dtype = value_dtype(scale)
        symbols = form.q.reshape(-1).astype(np.int64)
        if form.levels == "ternary":
            symbols = pack_trits(symbols)
        size = stream_alphabet(form.levels, form.bits)
        if coder is not Coder.FIXED and stream_size(np.bincount(symbols, minlength=size), Coder.FIXED) \
                <= stream_size(np.bincount(symbols, minlength=size), coder):
            coder = Coder.FIXED  # near-uniform levels (int8 of a wide layer): the code table costs more than it saves
        q, data = _stream_bytes(symbols, size, coder)
        desc = {"shape": list(form.shape), "dtype": dtype, "enc": self.enc, "levels": form.levels, "bits": form.bits,
                "group": form.group, "symmetric": form.symmetric, "q": q}
        sections = {f"{name}:q": data, f"{name}:scale": scale.astype(DTYPES[dtype]).tobytes()}
        if not form.symmetric:
            sections[f"{name}:zp"] = np.asarray(form.zero, np.uint8).tobytes()
        nonzero = int(np.count_nonzero(form.to_dense()))
        return self._encoded(name, desc, sections, {"q": symbols}, nonzero)

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
                     keep: dict[str, np.ndarray] | None = None) -> QuantTensor:
        scale = self.values(checked, sections, ":scale", f"{checked.where}: the scales")
        if scale.size and not (scale > 0).all():
            raise InvalidValue(f"{checked.where}: the scales must be positive, found {scale[~(scale > 0)][0]}")
        zero = None
        if not checked["symmetric"]:
            zero = np.frombuffer(self.section(checked, sections, ":zp"), dtype=np.uint8).copy()
            top = alphabet("int", checked["bits"])
            if zero.size and int(zero.max()) >= top:
                raise InvalidValue(f"{checked.where}: a zero point is {int(zero.max())}, beyond the {top} levels")
        q = self.stream(checked, sections, "q", keep)
        if checked["levels"] == "ternary":
            q = unpack_trits(q, checked.numel)
            if q is None:
                raise CorruptStream(f"{checked.where} stream 'q': the padding of the last group of trits is not zero")
        q = q.astype(np.uint8).reshape(checked.shape)
        return QuantTensor(q, checked["bits"], checked["levels"], checked["group"], scale, zero)

    def decode(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
               keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        return self.decode_typed(checked, sections, keep).to_dense()
