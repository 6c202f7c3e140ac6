"""Encode one float32 tensor into byte sections, and decode it back bit-exactly.

Encodings (the ``enc`` field of a tensor descriptor):

* ``raw``: little-endian float32, all elements.
* ``codebook``: the tensor holds at most ``max_codebook`` distinct non-zero values (after weight
  sharing); they form a float32 codebook of K entries and each element is a symbol in [0, K]
  where K stands for zero. Layout ``dense`` codes one symbol per element; layout ``sparse`` codes
  only the entries of the relative-index layout (Han et al. 2016): a gap stream and a symbol
  stream, with filler zeros where a gap overflows ``gap_bits``.
* ``float``: sparse layout with the surviving values kept as float32 (pruned, not shared).

Symbol and gap streams are coded with a :class:`~deepshrink.coding.Coder` (fixed-length,
Huffman or ANS). The encoder sizes every candidate layout from symbol histograms and codes only
the one it chooses (see :func:`encode_tensor`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepshrink.coding import (
    Coder,
    decode_positions,
    decode_stream,
    encode_positions,
    encode_stream,
    entropy_bits,
    stream_size,
)
from deepshrink.errors import ConfigError, CorruptStream, FormatError, InvalidHeader, InvalidValue, LimitExceeded
from deepshrink.util.limits import Limits

MAX_CODEBOOK = 1 << 16
_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def value_dtype(values: np.ndarray) -> str:
    """'float16' when every value survives a round trip through float16 exactly (for example
    after :func:`deepshrink.share.round_to_half`), else 'float32'. Storage is lossless either way."""
    v = np.asarray(values, dtype=np.float32)
    with np.errstate(over="ignore"):
        return "float16" if np.array_equal(v.astype(np.float16).astype(np.float32), v) else "float32"
AUTO_GAP_BITS = tuple(range(2, 11))
#: Gap widths by layer kind when a recipe gives none: the paper's 8 bits for convolutions and 5
#: for fully connected layers (Han et al. 2016).
DEFAULT_GAP_BITS = {"conv": 8, "linear": 5}
#: What one decoded symbol costs, in bits of file size, when :func:`encode_tensor` compares the
#: raw, dense and sparse layouts: a layout that makes the decoder decode more symbols (dense: one
#: per element; sparse: a gap and a symbol per entry) is chosen only if it saves more than this
#: per extra symbol. For example an 8%-dense tensor stays sparse unless dense saves about 2% of
#: its bytes, since dense decodes ~6x the symbols.
SYMBOL_COST_BITS = 1 / 64


@dataclass(frozen=True)
class TensorCoding:
    """How to store one tensor. ``compress=False`` stores it raw (float32). ``gap_bits=None``
    sizes every width in :data:`AUTO_GAP_BITS` and keeps the smallest; ``layout="auto"`` chooses
    between raw, dense and sparse as :func:`encode_tensor` describes."""

    compress: bool = True
    coder: Coder = Coder.HUFFMAN
    gap_bits: int | None = DEFAULT_GAP_BITS["linear"]
    max_codebook: int = 256
    layout: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "coder", Coder(self.coder))
        if self.gap_bits is not None and not 1 <= self.gap_bits <= 16:
            raise ConfigError(f"gap_bits must be in 1..16, got {self.gap_bits}")
        if not 1 <= self.max_codebook < MAX_CODEBOOK:
            raise ConfigError(f"max_codebook must be in 1..{MAX_CODEBOOK - 1}, got {self.max_codebook}")
        if self.layout not in ("auto", "dense", "sparse"):
            raise ConfigError(f"layout must be 'auto', 'dense' or 'sparse', got {self.layout!r}")


@dataclass
class StreamReport:
    symbols: int
    alphabet: int
    coded_bytes: int
    entropy_bytes: float


@dataclass
class TensorReport:
    """What was stored for one tensor, and how large each part is."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nonzero: int
    enc: str
    layout: str
    codebook_size: int = 0
    value_bits: int = 32
    index_bytes: int = 0
    weight_bytes: int = 0
    streams: dict[str, StreamReport] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.index_bytes + self.weight_bytes

    @property
    def kept(self) -> float:
        return self.nonzero / self.numel if self.numel else 0.0


@dataclass
class EncodedTensor:
    descriptor: dict[str, Any]
    sections: dict[str, bytes]
    report: TensorReport

    @property
    def nbytes(self) -> int:
        return sum(len(v) for v in self.sections.values())


def _stream(symbols: np.ndarray, alphabet: int, coder: Coder, bits: int) -> tuple[dict[str, Any], bytes, StreamReport]:
    data = encode_stream(symbols, alphabet, coder, bits=bits)
    rep = StreamReport(len(symbols), alphabet, len(data), entropy_bits(symbols, alphabet) / 8.0)
    return {"coder": coder.value, "n": int(len(symbols)), "bits": bits}, data, rep


def _bits_for(alphabet: int) -> int:
    return max(1, math.ceil(math.log2(alphabet))) if alphabet > 1 else 1


def _raw(name: str, base: dict[str, Any], flat: np.ndarray, nnz: int) -> EncodedTensor:
    dt = _DTYPES[base["dtype"]]
    shape = tuple(base["shape"])
    return EncodedTensor(
        {**base, "enc": "raw"},
        {name: flat.astype(dt).tobytes()},
        TensorReport(name, shape, flat.size, nnz, "raw", "dense", weight_bytes=flat.size * dt.itemsize),
    )


def _dense(name: str, base: dict[str, Any], positions: np.ndarray, numel: int, coder: Coder,
           codebook: tuple[int, bytes, np.ndarray]) -> EncodedTensor:
    """One codebook symbol per element (K = zero)."""
    k, cb, symbols = codebook
    bits = _bits_for(k + 1)
    symbols_all = np.full(numel, k, dtype=np.int64)
    symbols_all[positions] = symbols
    desc, data, rep = _stream(symbols_all, k + 1, coder, bits)
    return EncodedTensor(
        {**base, "enc": "codebook", "k": k, "layout": "dense", "sym": desc},
        {f"{name}:cb": cb, f"{name}:sym": data},
        TensorReport(name, tuple(base["shape"]), numel, len(positions), "codebook", "dense", k, bits,
                     weight_bytes=len(data) + len(cb), streams={"sym": rep}),
    )


def _sparse(name: str, base: dict[str, Any], positions: np.ndarray, numel: int, gap_bits: int,
            coder: Coder, nnz: int, codebook: tuple[int, bytes, np.ndarray] | None,
            values: np.ndarray) -> EncodedTensor:
    """The relative-index layout with ``gap_bits``; values by codebook symbols (``codebook`` =
    (K, codebook bytes, symbol per position)) or as float32."""
    shape = tuple(base["shape"])
    gaps, filler = encode_positions(positions, numel, gap_bits)
    gdesc, gdata, grep = _stream(gaps, 1 << gap_bits, coder, gap_bits)
    if codebook is not None:
        k, cb, symbols = codebook
        syms = np.full(len(gaps), k, dtype=np.int64)
        syms[~filler] = symbols
        bits = _bits_for(k + 1)
        sdesc, sdata, srep = _stream(syms, k + 1, coder, bits)
        return EncodedTensor(
            {**base, "enc": "codebook", "k": k, "layout": "sparse", "gap_bits": gap_bits, "sym": sdesc, "gap": gdesc},
            {f"{name}:cb": cb, f"{name}:sym": sdata, f"{name}:gap": gdata},
            TensorReport(name, shape, numel, nnz, "codebook", "sparse", k, bits, index_bytes=len(gdata),
                         weight_bytes=len(sdata) + len(cb), streams={"sym": srep, "gap": grep}),
        )
    vals = np.zeros(len(gaps), dtype=_DTYPES[base["dtype"]])
    vals[~filler] = values
    vbytes = vals.tobytes()
    return EncodedTensor(
        {**base, "enc": "float", "layout": "sparse", "gap_bits": gap_bits, "n": int(len(gaps)), "gap": gdesc},
        {f"{name}:val": vbytes, f"{name}:gap": gdata},
        TensorReport(name, shape, numel, nnz, "float", "sparse", 0, 32, index_bytes=len(gdata),
                     weight_bytes=len(vbytes), streams={"gap": grep}),
    )


@dataclass(frozen=True)
class _Plan:
    """A candidate layout, sized from histograms before anything is coded."""

    layout: str  # "raw", "dense" or "sparse"
    nbytes: int  # bytes of its sections (exact for fixed and Huffman, an estimate for ANS)
    symbols: int  # symbols the decoder decodes
    gap_bits: int = 0

    @property
    def cost(self) -> float:
        """File bits plus :data:`SYMBOL_COST_BITS` per decoded symbol."""
        return 8 * self.nbytes + SYMBOL_COST_BITS * self.symbols


def _sparse_plan(real_gap: np.ndarray, gap_bits: int, coder: Coder, itemsize: int,
                 sym_counts: np.ndarray | None, cb_bytes: int) -> _Plan:
    """Size of the relative-index layout with ``gap_bits`` from the gaps between nonzeros:
    a gap ``r`` becomes ``r >> gap_bits`` fillers (gap ``2**gap_bits - 1``, symbol K) and one
    entry of gap ``r mod 2**gap_bits`` (see :func:`~deepshrink.coding.encode_positions`)."""
    fillers = int((real_gap >> gap_bits).sum())
    entries = len(real_gap) + fillers
    gap_counts = np.bincount(real_gap & ((1 << gap_bits) - 1), minlength=1 << gap_bits)
    gap_counts[-1] += fillers
    nbytes = stream_size(gap_counts, coder, gap_bits)
    if sym_counts is None:
        return _Plan("sparse", nbytes + entries * itemsize, entries, gap_bits)
    counts = sym_counts.copy()
    counts[-1] += fillers
    nbytes += cb_bytes + stream_size(counts, coder, _bits_for(len(counts)))
    return _Plan("sparse", nbytes, 2 * entries, gap_bits)


def _plans(numel: int, positions: np.ndarray, codebook: tuple[int, bytes, np.ndarray] | None,
           coding: TensorCoding, itemsize: int) -> list[_Plan]:
    """The candidate layouts ``coding`` allows, each sized from symbol histograms; of the
    sparse gap widths only the smallest is kept."""
    plans = [_Plan("raw", numel * itemsize, 0)] if coding.layout == "auto" else []
    sym_counts, cb_bytes = None, 0
    if codebook is not None:
        k, cb, symbols = codebook
        sym_counts, cb_bytes = np.bincount(symbols, minlength=k + 1), len(cb)
        if coding.layout in ("auto", "dense"):
            counts = sym_counts.copy()
            counts[k] += numel - len(positions)
            plans.append(_Plan("dense", cb_bytes + stream_size(counts, coding.coder, _bits_for(k + 1)), numel))
    if coding.layout in ("auto", "sparse"):
        real_gap = np.diff(positions, prepend=-1) - 1
        widths = AUTO_GAP_BITS if coding.gap_bits is None else (coding.gap_bits,)
        sparse = [_sparse_plan(real_gap, g, coding.coder, itemsize, sym_counts, cb_bytes) for g in widths]
        plans.append(min(sparse, key=lambda p: p.nbytes))
    return plans


def encode_tensor(name: str, array: np.ndarray, coding: TensorCoding) -> EncodedTensor:
    """Encode ``array`` (any shape, float32) under the key ``name``.

    Every layout ``coding`` allows is sized from symbol histograms and the code lengths they
    imply (:func:`~deepshrink.coding.stream_size`: exact for fixed and Huffman codes, within a
    few bytes for ANS); only the chosen one is coded. Of the sparse gap widths the smallest
    wins. Between the raw, dense and sparse layouts (``layout="auto"``) the lowest
    ``8 * bytes + SYMBOL_COST_BITS * decoded symbols`` wins: dense must save more than
    :data:`SYMBOL_COST_BITS` bits per extra symbol it makes the decoder decode.
    """
    array = np.ascontiguousarray(array, dtype=np.float32)
    flat = array.reshape(-1)
    positions = np.flatnonzero(flat)
    nnz = len(positions)
    base = {"shape": [int(s) for s in array.shape], "dtype": value_dtype(flat)}
    if not coding.compress or flat.size == 0:
        return _raw(name, base, flat, nnz)
    values = flat[positions]
    uniq = np.unique(values)
    codebook = None
    if len(uniq) <= coding.max_codebook:
        codebook = (len(uniq), uniq.astype(_DTYPES[base["dtype"]]).tobytes(), np.searchsorted(uniq, values))
    plans = _plans(flat.size, positions, codebook, coding, _DTYPES[base["dtype"]].itemsize)
    best = min(plans, key=lambda p: p.cost, default=_Plan("raw", 0, 0))
    if best.layout == "sparse":
        return _sparse(name, base, positions, flat.size, best.gap_bits, coding.coder, nnz, codebook, values)
    if best.layout == "dense" and codebook is not None:
        return _dense(name, base, positions, flat.size, coding.coder, codebook)
    return _raw(name, base, flat, nnz)


# ----------------------------------------------------------------------------------------------
# decoding (untrusted input)


def _int_field(d: Mapping[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InvalidHeader(f"{where}: {key!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _keys(d: Any, required: set[str], where: str) -> None:
    if not isinstance(d, dict) or set(d) != required:
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise InvalidHeader(f"{where}: expected exactly the keys {sorted(required)}, got {got}")


def _section(sections: Mapping[str, memoryview], key: str, where: str, length: int | None = None) -> memoryview:
    if key not in sections:
        raise InvalidHeader(f"{where}: section {key!r} is missing")
    data = sections[key]
    if length is not None and len(data) != length:
        raise InvalidHeader(f"{where}: section {key!r} has {len(data)} bytes, expected {length}")
    return data


def _check_stream(desc: Any, alphabet: int, max_n: int, where: str) -> tuple[Coder, int, int]:
    _keys(desc, {"coder", "n", "bits"}, where)
    coders = [c.value for c in Coder]
    if desc["coder"] not in coders:  # a list here is not hashable: compare, do not look up
        raise InvalidHeader(f"{where}: unknown coder {desc['coder']!r}; expected one of {coders}")
    n = _int_field(desc, "n", 0, max_n, where)
    bits = _int_field(desc, "bits", 1, 32, where)
    if alphabet > (1 << bits):
        raise InvalidHeader(f"{where}: {bits} bits cannot hold an alphabet of {alphabet} symbols")
    return Coder(desc["coder"]), n, bits


def _decode_stream(desc: Any, data: memoryview, alphabet: int, max_n: int, where: str) -> np.ndarray:
    coder, n, bits = _check_stream(desc, alphabet, max_n, where)
    try:
        out = decode_stream(bytes(data), coder, n, alphabet, bits=bits)
    except FormatError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:
        raise CorruptStream(f"{where}: {exc}") from None
    return np.asarray(out, dtype=np.int64)


# (enc, layout) -> the descriptor's keys, and the suffixes of the sections it owns
_LAYOUTS: dict[tuple[str, str | None], tuple[set[str], tuple[str, ...]]] = {
    ("raw", None): ({"shape", "dtype", "enc"}, ("",)),
    ("codebook", "dense"): ({"shape", "dtype", "enc", "k", "layout", "sym"}, (":cb", ":sym")),
    ("codebook", "sparse"): (
        {"shape", "dtype", "enc", "k", "layout", "gap_bits", "sym", "gap"}, (":cb", ":sym", ":gap")
    ),
    ("float", "sparse"): ({"shape", "dtype", "enc", "layout", "gap_bits", "n", "gap"}, (":val", ":gap")),
}


@dataclass(frozen=True)
class CheckedDescriptor:
    """A validated tensor descriptor: its shape, element count and the sections it owns."""

    shape: tuple[int, ...]
    numel: int
    sections: tuple[str, ...]


def check_descriptor(name: str, desc: Any, limits: Limits) -> CheckedDescriptor:
    """Validate a tensor descriptor completely (no section is read); every malformed field is an
    :class:`InvalidHeader`, every size over the limits a :class:`LimitExceeded`."""
    where = f"tensor {name!r}"
    if not isinstance(desc, dict):
        raise InvalidHeader(f"{where}: tensor descriptor must be an object")
    shape = desc.get("shape")
    if not isinstance(shape, list) or len(shape) > 8 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape
    ):
        raise InvalidHeader(f"{where}: shape must be a list of at most 8 non-negative integers, got {shape!r}")
    if any(s > limits.max_tensor_elements for s in shape) or math.prod(shape) > limits.max_tensor_elements:
        raise LimitExceeded(
            f"{where}: shape {shape} exceeds the limit of {limits.max_tensor_elements} elements per tensor "
            "(in total and in every dimension)"
        )
    numel = math.prod(shape)
    enc, layout = desc.get("enc"), desc.get("layout")
    key = (enc, layout if enc != "raw" else None)
    spec = _LAYOUTS.get(key) if all(x is None or isinstance(x, str) for x in key) else None  # type: ignore[arg-type]
    if spec is None:
        raise InvalidHeader(
            f"{where}: unknown encoding/layout {enc!r}/{layout!r}; expected raw, codebook/dense, "
            "codebook/sparse or float/sparse"
        )
    keys, suffixes = spec
    _keys(desc, keys, where)
    if not isinstance(desc["dtype"], str) or desc["dtype"] not in _DTYPES:
        raise InvalidHeader(f"{where}: dtype must be one of {sorted(_DTYPES)}, got {desc['dtype']!r}")
    if enc == "codebook":
        k = _int_field(desc, "k", 0, MAX_CODEBOOK - 1, where)
        _check_stream(desc["sym"], k + 1, numel, where)
    if "gap_bits" in keys:
        gap_bits = _int_field(desc, "gap_bits", 1, 16, where)
        _check_stream(desc["gap"], 1 << gap_bits, numel, where)
    if enc == "float":
        _int_field(desc, "n", 0, numel, where)
    return CheckedDescriptor(tuple(shape), numel, tuple(name + s for s in suffixes))


def section_owner(section: str) -> str:
    """The tensor a section's name points to: ``w`` for ``w``, ``w:sym``, ``w:gap``, ``w:cb``,
    ``w:val``. Only a name; whether the tensor claims the section is :func:`check_descriptor`'s."""
    return section.rpartition(":")[0] if ":" in section else section


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(values).all():
        bad = values[~np.isfinite(values)][0]
        raise InvalidValue(f"{what} holds a non-finite value ({bad}); weights must be finite numbers")
    return values


def decode_tensor(name: str, desc: Any, sections: Mapping[str, memoryview], limits: Limits) -> np.ndarray:
    """Decode one tensor from its descriptor and sections, validating everything first."""
    where = f"tensor {name!r}"
    checked = check_descriptor(name, desc, limits)
    shape, numel = checked.shape, checked.numel
    enc = desc["enc"]
    dt = _DTYPES[desc["dtype"]]
    if enc == "raw":
        data = _section(sections, name, where, dt.itemsize * numel)
        return _finite(np.frombuffer(data, dtype=dt).astype(np.float32), where).reshape(shape)
    gaps = None
    if enc == "codebook":
        k = desc["k"]
        cb = np.frombuffer(_section(sections, f"{name}:cb", where, dt.itemsize * k), dtype=dt).astype(np.float32)
        table = np.append(_finite(cb, f"{where}: the codebook"), np.float32(0.0))
        if desc["layout"] == "sparse":
            gaps = _decode_stream(desc["gap"], _section(sections, f"{name}:gap", where), 1 << desc["gap_bits"], numel, where)
        syms = _decode_stream(desc["sym"], _section(sections, f"{name}:sym", where), k + 1, numel, where)
        if gaps is None:
            if len(syms) != numel:
                raise InvalidHeader(f"{where}: dense layout needs {numel} symbols, header says {len(syms)}")
            return table[syms].reshape(shape)
        if len(syms) != len(gaps):
            raise InvalidHeader(f"{where}: {len(syms)} symbols but {len(gaps)} gaps")
        values = table[syms]
    else:  # float, sparse
        n = desc["n"]
        values = np.frombuffer(_section(sections, f"{name}:val", where, dt.itemsize * n), dtype=dt).astype(np.float32)
        _finite(values, where)
        gaps = _decode_stream(desc["gap"], _section(sections, f"{name}:gap", where), 1 << desc["gap_bits"], numel, where)
        if len(gaps) != n:
            raise InvalidHeader(f"{where}: {n} values but {len(gaps)} gaps")
    try:
        positions = decode_positions(gaps, numel)
    except FormatError:
        raise
    except (ValueError, IndexError) as exc:
        raise CorruptStream(f"{where}: {exc}") from None
    out = np.zeros(numel, dtype=np.float32)
    out[positions] = values
    return out.reshape(shape)
