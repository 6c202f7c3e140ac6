"""The encoding registry: every way a tensor can be stored in a deepshrink file, one class each.

A tensor's descriptor in the file header (``{"shape": …, "dtype": …, "enc": …, …}``) names its
encoding by ``enc`` (and ``layout``). The class registered for that pair is the only place that
knows the encoding: it declares the descriptor's fields (each with the rule that validates it)
and the byte sections the tensor owns (each with how its length is bounded), and it encodes,
validates, decodes (to dense float32, or to a typed tensor from :mod:`deepshrink.storage.tensors`)
and reports. The reader, ``deepshrink info``, the pipeline's size report and the tables of
docs/format.md (:func:`format_tables`) all go through it, so a new encoding is one new class.

Decoding takes a :class:`CheckedDescriptor`, which only :meth:`Encoding.validate` makes: no
section is read before its descriptor has been checked completely. The module functions
:func:`check_descriptor`, :func:`decode_tensor`, :func:`decode_typed` and :func:`tensor_report`
take an untrusted descriptor, find its encoding and validate it first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from deepshrink.coding import Coder, decode_positions, decode_stream, encode_positions, encode_stream, entropy_bits
from deepshrink.errors import CorruptStream, FormatError, InvalidHeader, InvalidValue
from deepshrink.storage.fields import (
    COMMON_FIELDS,
    DTYPES,
    CheckedDescriptor,
    Context,
    Field,
    IntRule,
    OneOf,
    Section,
    StreamDesc,
    StreamRule,
)
from deepshrink.storage.report import EncodedTensor, StreamReport, TensorReport
from deepshrink.storage.tensors import (
    CodebookTensor,
    CompressedTensor,
    DenseTensor,
    SparseCodebookTensor,
    SparseTensor,
    index_dtype,
)
from deepshrink.util.limits import Limits

#: A codebook has at most ``MAX_CODEBOOK - 1`` values: with the zero symbol, its symbols fit 16 bits.
MAX_CODEBOOK = 1 << 16
#: Widest gap field of the relative-index layout, in bits.
MAX_GAP_BITS = 16


def value_dtype(values: np.ndarray) -> str:
    """'float16' when every value survives a round trip through float16 exactly (for example
    after :func:`deepshrink.share.round_to_half`), else 'float32'. Storage is lossless either way."""
    v = np.asarray(values, dtype=np.float32)
    with np.errstate(over="ignore"):
        return "float16" if np.array_equal(v.astype(np.float16).astype(np.float32), v) else "float32"


def symbol_bits(alphabet: int) -> int:
    """Bits of a fixed-length symbol of an ``alphabet``-symbol stream (at least 1)."""
    return max(1, math.ceil(math.log2(alphabet))) if alphabet > 1 else 1


# ----------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class SharedValues:
    """The distinct nonzero values of a tensor, when there are few enough for a codebook."""

    values: np.ndarray  # sorted, float32
    data: bytes  # the codebook section: ``values`` in the tensor's dtype
    symbols: np.ndarray  # the codebook index of every nonzero, in position order

    @property
    def k(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Prepared:
    """A float32 tensor analysed once for every encoding that may store it."""

    shape: tuple[int, ...]
    flat: np.ndarray
    positions: np.ndarray  # flat positions of the nonzeros
    values: np.ndarray  # the nonzeros, in position order
    dtype: str  # value dtype (see value_dtype)
    shared: SharedValues | None  # None: too many distinct values for the codebook

    @classmethod
    def of(cls, array: np.ndarray, max_codebook: int) -> Prepared:
        array = np.ascontiguousarray(array, dtype=np.float32)
        flat = array.reshape(-1)
        positions = np.flatnonzero(flat)
        values = flat[positions]
        dtype = value_dtype(flat)
        shared = None
        if flat.size and max_codebook:  # 0: stored raw, no codebook needed
            uniq = np.unique(values)
            if len(uniq) <= max_codebook:
                shared = SharedValues(uniq, uniq.astype(DTYPES[dtype]).tobytes(), np.searchsorted(uniq, values))
        return cls(tuple(int(s) for s in array.shape), flat, positions, values, dtype, shared)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize


class Encoding:
    """One way of storing a tensor. Subclasses set the class attributes and implement
    :meth:`encode`, :meth:`decode_typed` (and :meth:`decode` when a direct path is faster),
    and register with :func:`register_encoding`."""

    name: ClassVar[str]  # registry key, e.g. "codebook/sparse"
    enc: ClassVar[str]  # the descriptor's "enc"
    layout: ClassVar[str | None]  # the descriptor's "layout"; None: the descriptor has no layout field
    summary: ClassVar[str]  # one line for docs/format.md
    own_fields: ClassVar[tuple[Field, ...]]  # the fields besides shape, dtype, enc and layout
    fields: ClassVar[tuple[Field, ...]]  # all of them, in checking order (set by register_encoding)
    sections: ClassVar[tuple[Section, ...]]
    typed: ClassVar[type[CompressedTensor]]
    example: ClassVar[dict[str, Any]]  # a valid descriptor, shown in docs/format.md (a test validates it)

    # ---- validation (untrusted input) ----

    def validate(self, name: str, desc: Any, limits: Limits) -> CheckedDescriptor:
        """Check every field of an untrusted descriptor (no section is read): a malformed field
        is an :class:`InvalidHeader` naming it and what was expected, a size over the limits a
        :class:`LimitExceeded`."""
        ctx = Context(f"tensor {name!r}", limits)
        if not isinstance(desc, dict):
            raise InvalidHeader(f"{ctx.where}: tensor descriptor must be an object")
        known = [f.name for f in self.fields]
        extra = sorted(k for k in desc if k not in known)
        if extra:
            raise InvalidHeader(f"{ctx.where}: unexpected field(s) {extra}; a {self.name} descriptor has the fields {sorted(known)}")
        for f in self.fields:
            if f.name in desc:
                ctx.values[f.name] = f.rule.check(f.name, desc[f.name], ctx)
            elif f.required:
                raise InvalidHeader(f"{ctx.where}: a {self.name} descriptor needs the field {f.name!r} ({f.rule.text})")
        values = ctx.values
        return CheckedDescriptor(name, self, values["shape"], ctx.numel, DTYPES[values["dtype"]], values,
                                 tuple(name + s.suffix for s in self.sections))

    def section(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview], suffix: str) -> memoryview:
        """A section of the tensor, its length checked when the encoding fixes it."""
        (spec,) = [s for s in self.sections if s.suffix == suffix]
        key = checked.name + suffix
        if key not in sections:
            raise InvalidHeader(f"{checked.where}: section {key!r} is missing")
        data = sections[key]
        if spec.length is not None and len(data) != spec.length(checked):
            raise InvalidHeader(f"{checked.where}: section {key!r} has {len(data)} bytes, expected {spec.length(checked)}")
        return data

    def values(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview], suffix: str, what: str) -> np.ndarray:
        """A section of stored values as float32, refused unless every value is finite."""
        data = self.section(checked, sections, suffix)
        out = np.frombuffer(data, dtype=checked.dtype).astype(np.float32)
        if not np.isfinite(out).all():
            bad = out[~np.isfinite(out)][0]
            raise InvalidValue(f"{what} holds a non-finite value ({bad}); weights must be finite numbers")
        return out

    def stream(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview], key: str,
               keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Decode the coded stream the descriptor field ``key`` describes (int64 symbols); with
        ``keep``, also store them there under ``key`` (for a report's entropy)."""
        (spec,) = [s for s in self.sections if s.stream == key]
        desc: StreamDesc = checked[key]
        data = self.section(checked, sections, spec.suffix)
        where = f"{checked.where} stream {key!r}"
        try:
            out = decode_stream(bytes(data), desc.coder, desc.n, desc.alphabet, bits=desc.bits)
        except FormatError:
            raise
        except (ValueError, IndexError, OverflowError) as exc:
            raise CorruptStream(f"{where}: {exc}") from None
        out = np.asarray(out, dtype=np.int64)
        if keep is not None:
            keep[key] = out
        return out

    def positions(self, checked: CheckedDescriptor, gaps: np.ndarray) -> np.ndarray:
        """Entry positions of the relative-index layout from its gaps (fillers included)."""
        try:
            return decode_positions(gaps, checked.numel)
        except FormatError:
            raise
        except (ValueError, IndexError) as exc:
            raise CorruptStream(f"{checked.where}: {exc}") from None

    # ---- encoding, decoding, reports ----

    def encode(self, name: str, t: Prepared, coder: Coder, gap_bits: int) -> EncodedTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement encode()")

    writes_forms: ClassVar[bool] = False
    """Whether :meth:`encode_form` stores a typed tensor of :attr:`typed` as it is (the form a
    stage left in ``ctx.forms``: integer levels and scales, hashed buckets, DCT coefficients),
    rather than the encoding being chosen by analysing the dense values."""

    def encode_form(self, name: str, form: CompressedTensor, coder: Coder) -> EncodedTensor:
        """Store ``form`` (an instance of :attr:`typed`) exactly, its streams coded with ``coder``."""
        raise NotImplementedError(f"{type(self).__name__} stores no typed form")

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> CompressedTensor:
        """The typed tensor (see :mod:`deepshrink.storage.tensors`) of a checked descriptor."""
        raise NotImplementedError(f"{type(self).__name__} must implement decode_typed()")

    def decode(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
               keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The dense float32 tensor of a checked descriptor (``keep``: see :meth:`stream`)."""
        return self.decode_typed(checked, sections).to_dense()

    def nonzero(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> int | None:
        """The tensor's nonzero count if it can be read without decoding a coded stream."""
        return None

    def report(
        self,
        checked: CheckedDescriptor,
        sections: Mapping[str, memoryview | bytes],
        *,
        streams: Mapping[str, np.ndarray] | None = None,
        nonzero: int | None = None,
    ) -> TensorReport:
        """Bytes per section and stream, nonzeros, bits per value. ``streams`` (decoded symbols
        by descriptor field) add each stream's entropy; ``nonzero``, when known, is used as is."""
        sizes = {checked.name + s.suffix: len(self.section(checked, sections, s.suffix)) for s in self.sections}
        role_bytes = {"index": 0, "weight": 0}
        stream_reports = {}
        for s in self.sections:
            role_bytes[s.role] += sizes[checked.name + s.suffix]
            if s.stream is not None:
                d: StreamDesc = checked[s.stream]
                entropy = None
                if streams is not None and s.stream in streams:
                    entropy = entropy_bits(streams[s.stream], d.alphabet) / 8.0
                stream_reports[s.stream] = StreamReport(d.n, d.alphabet, sizes[checked.name + s.suffix], entropy, d.coder.value)
        if nonzero is None:
            nonzero = self.nonzero(checked, sections)  # type: ignore[arg-type]
        return TensorReport(
            checked.name, checked.shape, checked.numel, nonzero, self.enc, self.layout or "dense",
            codebook_size=self.codebook_size(checked), value_bits=self.value_bits(checked),
            index_bytes=role_bytes["index"], weight_bytes=role_bytes["weight"], streams=stream_reports,
            encoding=self.name, dtype=checked["dtype"], gap_bits=self.gap_bits(checked), sections=sizes,
        )

    def value_bits(self, checked: CheckedDescriptor) -> int:
        """Bits of one stored value before entropy coding."""
        return 8 * checked.dtype.itemsize

    def codebook_size(self, checked: CheckedDescriptor) -> int:
        """Shared values in the codebook (0: no codebook)."""
        return 0

    def gap_bits(self, checked: CheckedDescriptor) -> int | None:
        """Width of the relative-index gaps (None: not a sparse layout)."""
        return None

    def _encoded(self, name: str, desc: dict[str, Any], sections: dict[str, bytes],
                 streams: Mapping[str, np.ndarray], nonzero: int) -> EncodedTensor:
        """Wrap what :meth:`encode` wrote, checked by the reader's own validation (so the writer
        never stores a descriptor the reader refuses)."""
        limits = Limits(max_tensor_elements=max(Limits().max_tensor_elements, math.prod(desc["shape"])))
        checked = self.validate(name, desc, limits)
        return EncodedTensor(desc, sections, self.report(checked, sections, streams=streams, nonzero=nonzero))

    def _base(self, t: Prepared) -> dict[str, Any]:
        base: dict[str, Any] = {"shape": list(t.shape), "dtype": t.dtype, "enc": self.enc}
        if self.layout is not None:
            base["layout"] = self.layout
        return base


ENCODINGS: dict[str, Encoding] = {}

E = TypeVar("E", bound=type[Encoding])


def register_encoding(cls: E) -> E:
    """Class decorator: add an encoding (one instance) to :data:`ENCODINGS` under ``cls.name``.
    Its fields are the common ones, ``enc`` (and ``layout`` unless it is None), then its own."""
    cls.fields = (*COMMON_FIELDS, Field("enc", OneOf((cls.enc,)), "the encoding"),
                  *([Field("layout", OneOf((cls.layout,)), "the layout")] if cls.layout is not None else []),
                  *cls.own_fields)
    names = [f.name for f in cls.fields]
    if cls.name in ENCODINGS or len(set(names)) != len(names):
        raise TypeError(f"encoding {cls.name!r}: already registered, or two fields of the same name")
    for s in cls.sections:
        if (s.stream is None) == (s.length is None) or s.role not in ("index", "weight"):
            raise TypeError(f"encoding {cls.name!r}, section {s.suffix!r}: needs exactly one of stream/length and a role")
    ENCODINGS[cls.name] = cls()
    return cls


def form_encoding(form: CompressedTensor) -> Encoding:
    """The registered encoding that stores typed tensors of ``form``'s class as they are."""
    for e in ENCODINGS.values():
        if e.writes_forms and type(form) is e.typed:
            return e
    raise TypeError(f"no registered encoding stores a {type(form).__name__} as it is")


def encoding_of(name: str, desc: Any) -> Encoding:
    """The registered encoding a descriptor names by its ``enc`` (and ``layout``)."""
    if not isinstance(desc, dict):
        raise InvalidHeader(f"tensor {name!r}: tensor descriptor must be an object")
    enc, layout = desc.get("enc"), desc.get("layout")
    for e in ENCODINGS.values():
        if isinstance(enc, str) and enc == e.enc and (e.layout is None or (isinstance(layout, str) and layout == e.layout)):
            return e
    raise InvalidHeader(
        f"tensor {name!r}: unknown encoding/layout {enc!r}/{layout!r}; expected one of {list(ENCODINGS)}"
    )


def check_descriptor(name: str, desc: Any, limits: Limits) -> CheckedDescriptor:
    """Validate an untrusted tensor descriptor completely (no section is read)."""
    return encoding_of(name, desc).validate(name, desc, limits)


def decode_tensor(name: str, desc: Any, sections: Mapping[str, memoryview], limits: Limits) -> np.ndarray:
    """Decode one tensor to dense float32 from its untrusted descriptor, validating it first."""
    checked = check_descriptor(name, desc, limits)
    return checked.encoding.decode(checked, sections)


def decode_typed(name: str, desc: Any, sections: Mapping[str, memoryview], limits: Limits) -> CompressedTensor:
    """Decode one tensor to its typed form (:mod:`deepshrink.storage.tensors`), validating first."""
    checked = check_descriptor(name, desc, limits)
    return checked.encoding.decode_typed(checked, sections)


def tensor_report(
    name: str, desc: Any, sections: Mapping[str, memoryview], limits: Limits, *, decode: bool = False
) -> tuple[TensorReport, np.ndarray | None]:
    """The report of a stored tensor, and with ``decode=True`` its dense float32 values.

    Without decoding, coded streams are not read: their entropy is ``None``, and so is
    ``nonzero`` for codebook encodings. With decoding, streams are decoded once for both."""
    checked = check_descriptor(name, desc, limits)
    e = checked.encoding
    if not decode:  # the report checks the sections' presence and fixed lengths
        return e.report(checked, sections), None
    streams: dict[str, np.ndarray] = {}
    dense = e.decode(checked, sections, streams)
    return e.report(checked, sections, streams=streams, nonzero=int(np.count_nonzero(dense))), dense


def section_owner(section: str) -> str:
    """The tensor a section's name points to: ``w`` for ``w``, ``w:sym``, ``w:gap``, ``w:cb``,
    ``w:val``. Only a name; whether the tensor claims the section is :func:`check_descriptor`'s."""
    return section.rpartition(":")[0] if ":" in section else section


# ----------------------------------------------------------------------------------------------
# the encodings


def _stream_bytes(symbols: np.ndarray, alphabet: int, coder: Coder) -> tuple[dict[str, Any], bytes]:
    bits = symbol_bits(alphabet)
    data = encode_stream(symbols, alphabet, coder, bits=bits)
    return {"coder": coder.value, "n": int(len(symbols)), "bits": bits}, data


def _k_plus_one(ctx: Context) -> int:
    return ctx.values["k"] + 1


def _gap_alphabet(ctx: Context) -> int:
    return 1 << ctx.values["gap_bits"]


def _nonzero_values(checked: CheckedDescriptor, data: memoryview | bytes) -> int:
    return int(np.count_nonzero(np.frombuffer(data, dtype=checked.dtype)))


_K = Field("k", IntRule(0, MAX_CODEBOOK - 1), "K, the number of shared values in the codebook")
_GAP_BITS = Field("gap_bits", IntRule(1, MAX_GAP_BITS), "width of a gap: 2^gap_bits - 1 zeros at most between entries")
_GAP = Field("gap", StreamRule(_gap_alphabet, "2^gap_bits"),
             "the gap stream: zeros skipped before each entry (fillers included)")
_CB = Section(":cb", "weight", "the K shared values, sorted", length=lambda c: c["k"] * c.dtype.itemsize,
              length_text="K × size of `dtype`")
_GAPS = Section(":gap", "index", "the coded gap stream", stream="gap")


@register_encoding
class Raw(Encoding):
    name = "raw"
    enc = "raw"
    layout = None
    summary = "every element, little-endian, in `dtype`"
    own_fields = ()
    sections = (Section("", "weight", "the elements, row-major", length=lambda c: c.numel * c.dtype.itemsize,
                        length_text="element count × size of `dtype`"),)
    typed = DenseTensor
    example = {"shape": [300], "dtype": "float32", "enc": "raw"}

    def encode(self, name: str, t: Prepared, coder: Coder, gap_bits: int) -> EncodedTensor:
        sections = {name: t.flat.astype(DTYPES[t.dtype]).tobytes()}
        return self._encoded(name, self._base(t), sections, {}, len(t.positions))

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> DenseTensor:
        return DenseTensor(self.values(checked, sections, "", checked.where).reshape(checked.shape))

    def nonzero(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> int:
        return _nonzero_values(checked, self.section(checked, sections, ""))


class _Codebook(Encoding):
    """Shared helpers of the codebook encodings: symbol K stands for zero."""

    def codebook(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> np.ndarray:
        return self.values(checked, sections, ":cb", f"{checked.where}: the codebook")

    def value_bits(self, checked: CheckedDescriptor) -> int:
        return checked["sym"].bits

    def codebook_size(self, checked: CheckedDescriptor) -> int:
        return checked["k"]


@register_encoding
class CodebookDense(_Codebook):
    name = "codebook/dense"
    enc = "codebook"
    layout = "dense"
    summary = "K shared values; one symbol per element, symbol K = 0"
    own_fields = (
        _K,
        Field("sym", StreamRule(_k_plus_one, "K + 1", lambda ctx: ctx.numel, "= the element count"),
              "the symbol stream: the codebook index of every element, K for zero"),
    )
    sections = (_CB, Section(":sym", "weight", "the coded symbol stream", stream="sym"))
    typed = CodebookTensor
    example = {"shape": [64, 3, 3, 3], "dtype": "float16", "enc": "codebook", "layout": "dense", "k": 15,
               "sym": {"coder": "ans", "n": 1728, "bits": 4}}

    def encode(self, name: str, t: Prepared, coder: Coder, gap_bits: int) -> EncodedTensor:
        shared = _needs_shared(t, self)
        symbols = np.full(t.flat.size, shared.k, dtype=np.int64)
        symbols[t.positions] = shared.symbols
        sym, data = _stream_bytes(symbols, shared.k + 1, coder)
        desc = {**self._base(t), "k": shared.k, "sym": sym}
        return self._encoded(name, desc, {f"{name}:cb": shared.data, f"{name}:sym": data}, {"sym": symbols}, len(t.positions))

    def decode(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
               keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        table = np.append(self.codebook(checked, sections), np.float32(0.0))
        return table[self.stream(checked, sections, "sym", keep)].reshape(checked.shape)

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> CodebookTensor:
        cb = self.codebook(checked, sections)
        syms = self.stream(checked, sections, "sym")
        return CodebookTensor(syms.astype(index_dtype(checked["k"] + 1)).reshape(checked.shape), cb)


@register_encoding
class CodebookSparse(_Codebook):
    name = "codebook/sparse"
    enc = "codebook"
    layout = "sparse"
    summary = ("relative-index layout (Han et al. 2016): per entry, a gap (zeros skipped, < 2^gap_bits) and "
               "a symbol; a gap that overflows is split with filler entries whose symbol is K (zero)")
    own_fields = (
        _K, _GAP_BITS, _GAP,
        Field("sym", StreamRule(_k_plus_one, "K + 1", lambda ctx: ctx.values["gap"].n, "= `gap.n`"),
              "the symbol stream: the codebook index of every entry, K for fillers"),
    )
    sections = (_CB, Section(":sym", "weight", "the coded symbol stream", stream="sym"), _GAPS)
    typed = SparseCodebookTensor
    example = {"shape": [10, 100], "dtype": "float32", "enc": "codebook", "layout": "sparse", "k": 27, "gap_bits": 5,
               "gap": {"coder": "huffman", "n": 87, "bits": 5}, "sym": {"coder": "huffman", "n": 87, "bits": 5}}

    def gap_bits(self, checked: CheckedDescriptor) -> int:
        return checked["gap_bits"]

    def encode(self, name: str, t: Prepared, coder: Coder, gap_bits: int) -> EncodedTensor:
        shared = _needs_shared(t, self)
        gaps, filler = encode_positions(t.positions, t.flat.size, gap_bits)
        gap, gdata = _stream_bytes(gaps, 1 << gap_bits, coder)
        symbols = np.full(len(gaps), shared.k, dtype=np.int64)
        symbols[~filler] = shared.symbols
        sym, sdata = _stream_bytes(symbols, shared.k + 1, coder)
        desc = {**self._base(t), "k": shared.k, "gap_bits": gap_bits, "sym": sym, "gap": gap}
        sections = {f"{name}:cb": shared.data, f"{name}:sym": sdata, f"{name}:gap": gdata}
        return self._encoded(name, desc, sections, {"sym": symbols, "gap": gaps}, len(t.positions))

    def _entries(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
                 keep: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cb = self.codebook(checked, sections)
        gaps = self.stream(checked, sections, "gap", keep)
        syms = self.stream(checked, sections, "sym", keep)
        return cb, self.positions(checked, gaps), syms

    def decode(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
               keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        cb, positions, syms = self._entries(checked, sections, keep)
        out = np.zeros(checked.numel, dtype=np.float32)
        out[positions] = np.append(cb, np.float32(0.0))[syms]
        return out.reshape(checked.shape)

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> SparseCodebookTensor:
        cb, positions, syms = self._entries(checked, sections)
        real = syms != checked["k"]  # fillers (and any entry of symbol K) are zeros
        return SparseCodebookTensor(checked.shape, positions[real], syms[real].astype(index_dtype(checked["k"])), cb)


@register_encoding
class FloatSparse(Encoding):
    name = "float/sparse"
    enc = "float"
    layout = "sparse"
    summary = "relative-index layout with the values themselves in `dtype` (pruned, not shared); fillers hold 0"
    own_fields = (
        _GAP_BITS,
        Field("n", IntRule(0, lambda ctx: ctx.numel, "element count"), "number of entries, fillers included"),
        Field("gap", StreamRule(_gap_alphabet, "2^gap_bits", lambda ctx: ctx.values["n"], "= the field `n`"), _GAP.doc),
    )
    sections = (Section(":val", "weight", "the value of every entry", length=lambda c: c["n"] * c.dtype.itemsize,
                        length_text="n × size of `dtype`"), _GAPS)
    typed = SparseTensor
    example = {"shape": [100, 300], "dtype": "float32", "enc": "float", "layout": "sparse", "gap_bits": 5, "n": 2439,
               "gap": {"coder": "huffman", "n": 2439, "bits": 5}}

    def gap_bits(self, checked: CheckedDescriptor) -> int:
        return checked["gap_bits"]

    def encode(self, name: str, t: Prepared, coder: Coder, gap_bits: int) -> EncodedTensor:
        gaps, filler = encode_positions(t.positions, t.flat.size, gap_bits)
        gap, gdata = _stream_bytes(gaps, 1 << gap_bits, coder)
        vals = np.zeros(len(gaps), dtype=DTYPES[t.dtype])
        vals[~filler] = t.values
        desc = {**self._base(t), "gap_bits": gap_bits, "n": int(len(gaps)), "gap": gap}
        sections = {f"{name}:val": vals.tobytes(), f"{name}:gap": gdata}
        return self._encoded(name, desc, sections, {"gap": gaps}, len(t.positions))

    def _entries(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
                 keep: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        values = self.values(checked, sections, ":val", checked.where)
        return self.positions(checked, self.stream(checked, sections, "gap", keep)), values

    def decode(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview],
               keep: dict[str, np.ndarray] | None = None) -> np.ndarray:
        positions, values = self._entries(checked, sections, keep)
        out = np.zeros(checked.numel, dtype=np.float32)
        out[positions] = values
        return out.reshape(checked.shape)

    def decode_typed(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> SparseTensor:
        positions, values = self._entries(checked, sections)
        real = values.view(np.uint32) != 0  # drop stored +0.0 (fillers); keep -0.0 to stay bit-exact
        return SparseTensor(checked.shape, positions[real], values[real])

    def nonzero(self, checked: CheckedDescriptor, sections: Mapping[str, memoryview]) -> int:
        return _nonzero_values(checked, self.section(checked, sections, ":val"))


def _needs_shared(t: Prepared, e: Encoding) -> SharedValues:
    if t.shared is None:
        raise ValueError(f"{e.name} needs a tensor with at most {MAX_CODEBOOK - 1} distinct nonzero values")
    return t.shared


# ----------------------------------------------------------------------------------------------
# docs/format.md


def format_tables() -> str:
    """The per-encoding tables of docs/format.md, generated from the registry (a test checks
    that the document holds exactly this text)."""
    lines = ["| encoding | `enc` | `layout` | sections | meaning |", "|---|---|---|---|---|"]
    for e in ENCODINGS.values():
        secs = ", ".join(f"`<name>{s.suffix}`" for s in e.sections)
        lines.append(f"| `{e.name}` | `{e.enc}` | {f'`{e.layout}`' if e.layout else '(absent)'} | {secs} | {e.summary} |")
    lines += ["", "The common fields of every descriptor (besides `enc`, and `layout` where the table gives one):", "",
              "| field | rule | meaning |", "|---|---|---|"]
    lines += [f"| `{f.name}` | {f.rule.text} | {f.doc} |" for f in COMMON_FIELDS]
    for e in ENCODINGS.values():
        rows = [f"| `{f.name}`{'' if f.required else ' (optional)'} | {f.rule.text} | {f.doc} |"
                for f in e.own_fields]
        rows += [f"| section `<name>{s.suffix}` | "
                 f"{f'{s.length_text} bytes' if s.length else f'the bytes of the stream `{s.stream}`'} | {s.doc} |"
                 for s in e.sections]
        more = bool(e.own_fields)
        lines += ["", f"**`{e.name}`**: the common fields{', these fields' if more else ''} and "
                  f"{'these sections' if len(e.sections) > 1 else 'this section'}:", "",
                  "| field / section | rule | meaning |", "|---|---|---|", *rows,
                  "", f"For example `{json.dumps(e.example, separators=(', ', ': '))}`."]
    coders = ", ".join(f"`{c.value}`" for c in Coder)
    lines += ["", "A stream descriptor is an object with exactly `coder` (one of " + coders + "), `n` (the "
              "number of symbols) and `bits` (1 to 32, with 2^bits at least the alphabet: the fixed "
              "coder's width)."]
    return "\n".join(lines) + "\n"


# the encodings of the other techniques register from their packages (after the base classes)
import deepshrink.quant.encoding  # noqa: E402,F401
import deepshrink.storage.context_encoding  # noqa: E402,F401
import deepshrink.transform.encoding  # noqa: E402,F401
