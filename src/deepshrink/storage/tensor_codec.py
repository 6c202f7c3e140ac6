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
Huffman or ANS). For each candidate layout the encoder measures the real size and keeps the
smallest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepshrink.coding import Coder, decode_positions, decode_stream, encode_positions, encode_stream, entropy_bits
from deepshrink.errors import ConfigError, CorruptStream, FormatError, InvalidHeader, LimitExceeded
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


@dataclass(frozen=True)
class TensorCoding:
    """How to store one tensor. ``compress=False`` stores it raw (float32). ``gap_bits=None``
    tries every width in :data:`AUTO_GAP_BITS` and keeps the smallest result."""

    compress: bool = True
    coder: Coder = Coder.HUFFMAN
    gap_bits: int | None = 5
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


def encode_tensor(name: str, array: np.ndarray, coding: TensorCoding) -> EncodedTensor:
    """Encode ``array`` (any shape, float32) under the key ``name``: every candidate encoding
    allowed by ``coding`` is built and the smallest is kept."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    shape = tuple(int(s) for s in array.shape)
    flat = array.reshape(-1)
    positions = np.flatnonzero(flat)
    nnz = len(positions)
    base = {"shape": list(shape), "dtype": value_dtype(flat)}
    raw = EncodedTensor(
        {**base, "enc": "raw"},
        {name: flat.astype(_DTYPES[base["dtype"]]).tobytes()},
        TensorReport(name, shape, flat.size, nnz, "raw", "dense",
                     weight_bytes=flat.size * _DTYPES[base["dtype"]].itemsize),
    )
    if not coding.compress or flat.size == 0:
        return raw
    candidates: list[EncodedTensor] = [] if coding.layout != "auto" else [raw]
    values = flat[positions]
    uniq = np.unique(values)
    codebook = None
    if len(uniq) <= coding.max_codebook:
        k = len(uniq)
        codebook = (k, uniq.astype(_DTYPES[base["dtype"]]).tobytes(), np.searchsorted(uniq, values))
        if coding.layout in ("auto", "dense"):
            bits = _bits_for(k + 1)
            symbols_all = np.full(flat.size, k, dtype=np.int64)
            symbols_all[positions] = codebook[2]
            desc, data, rep = _stream(symbols_all, k + 1, coding.coder, bits)
            candidates.append(EncodedTensor(
                {**base, "enc": "codebook", "k": k, "layout": "dense", "sym": desc},
                {f"{name}:cb": codebook[1], f"{name}:sym": data},
                TensorReport(name, shape, flat.size, nnz, "codebook", "dense", k, bits,
                             weight_bytes=len(data) + len(codebook[1]), streams={"sym": rep}),
            ))
    if coding.layout in ("auto", "sparse"):
        widths = AUTO_GAP_BITS if coding.gap_bits is None else (coding.gap_bits,)
        for gap_bits in widths:
            candidates.append(_sparse(name, base, positions, flat.size, gap_bits, coding.coder, nnz, codebook, values))
    return min(candidates or [raw], key=lambda c: c.nbytes)


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
    try:
        coder = Coder(desc["coder"])
    except ValueError:
        raise InvalidHeader(f"{where}: unknown coder {desc['coder']!r}; expected one of {[c.value for c in Coder]}") from None
    n = _int_field(desc, "n", 0, max_n, where)
    bits = _int_field(desc, "bits", 1, 32, where)
    if alphabet > (1 << bits):
        raise InvalidHeader(f"{where}: {bits} bits cannot hold an alphabet of {alphabet} symbols")
    return coder, n, bits


def _decode_stream(desc: Any, data: memoryview, alphabet: int, max_n: int, where: str) -> np.ndarray:
    coder, n, bits = _check_stream(desc, alphabet, max_n, where)
    try:
        out = decode_stream(bytes(data), coder, n, alphabet, bits=bits)
    except FormatError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:
        raise CorruptStream(f"{where}: {exc}") from None
    return np.asarray(out, dtype=np.int64)


_LAYOUT_KEYS = {
    ("raw", None): {"shape", "dtype", "enc"},
    ("codebook", "dense"): {"shape", "dtype", "enc", "k", "layout", "sym"},
    ("codebook", "sparse"): {"shape", "dtype", "enc", "k", "layout", "gap_bits", "sym", "gap"},
    ("float", "sparse"): {"shape", "dtype", "enc", "layout", "gap_bits", "n", "gap"},
}


def check_descriptor(name: str, desc: Any, limits: Limits) -> tuple[tuple[int, ...], int]:
    """Validate a tensor descriptor completely (no section is read); returns (shape, numel)."""
    where = f"tensor {name!r}"
    if not isinstance(desc, dict):
        raise InvalidHeader(f"{where}: tensor descriptor must be an object")
    shape = desc.get("shape")
    if not isinstance(shape, list) or len(shape) > 8 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape
    ):
        raise InvalidHeader(f"{where}: shape must be a list of at most 8 non-negative integers, got {shape!r}")
    numel = 1
    for s in shape:
        numel *= s
        if numel > limits.max_tensor_elements:
            raise LimitExceeded(
                f"{where}: shape {shape} exceeds the limit of {limits.max_tensor_elements} elements per tensor"
            )
    enc, layout = desc.get("enc"), desc.get("layout")
    keys = _LAYOUT_KEYS.get((enc, layout if enc != "raw" else None)) if isinstance(enc, str) and (
        layout is None or isinstance(layout, str)) else None
    if keys is None:
        raise InvalidHeader(
            f"{where}: unknown encoding/layout {enc!r}/{layout!r}; expected raw, codebook/dense, "
            "codebook/sparse or float/sparse"
        )
    _keys(desc, keys, where)
    if desc["dtype"] not in _DTYPES:
        raise InvalidHeader(f"{where}: dtype must be one of {sorted(_DTYPES)}, got {desc['dtype']!r}")
    if enc == "codebook":
        k = _int_field(desc, "k", 0, MAX_CODEBOOK - 1, where)
        _check_stream(desc["sym"], k + 1, numel, where)
    if "gap_bits" in keys:
        gap_bits = _int_field(desc, "gap_bits", 1, 16, where)
        _check_stream(desc["gap"], 1 << gap_bits, numel, where)
    if enc == "float":
        _int_field(desc, "n", 0, numel, where)
    return tuple(shape), numel


def section_owner(section: str) -> str:
    """The tensor a section belongs to: ``w`` for ``w``, ``w:sym``, ``w:gap``, ``w:cb``, ``w:val``."""
    return section.rpartition(":")[0] if ":" in section else section


def decode_tensor(name: str, desc: Any, sections: Mapping[str, memoryview], limits: Limits) -> np.ndarray:
    """Decode one tensor from its descriptor and sections, validating everything first."""
    where = f"tensor {name!r}"
    shape, numel = check_descriptor(name, desc, limits)
    enc = desc["enc"]
    dt = _DTYPES[desc["dtype"]]
    if enc == "raw":
        data = _section(sections, name, where, dt.itemsize * numel)
        return np.frombuffer(data, dtype=dt).astype(np.float32).reshape(shape)
    gaps = None
    if enc == "codebook":
        k = desc["k"]
        cb = np.frombuffer(_section(sections, f"{name}:cb", where, dt.itemsize * k), dtype=dt).astype(np.float32)
        table = np.append(cb, np.float32(0.0))
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
