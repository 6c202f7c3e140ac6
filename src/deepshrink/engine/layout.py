"""Packed weight layouts of the C engine: a typed compressed tensor as the const arrays the
kernels of ``kernels.c`` read (``struct ds_weight``), without expanding it.

A weight is viewed as ``rows x cols`` (rows = the first dimension: output features or output
channels). Its layout is one of (see ``kernels.h``):

* ``dense``: float32 values, row-major;
* ``codebook/dense``: one codebook index per element, ``value_bits`` wide, in a bit stream;
* ``codebook/sparse``: per row, entries of ``gap | index << gap_bits`` (``gap`` = zeros skipped
  since the previous entry of the row), fillers (gap ``2**gap_bits - 1``, index K: weight 0) where
  a gap overflows, and the entry count of each row;
* ``float/sparse``: the same gaps alone, with one float32 value per entry (fillers hold 0);
* ``grid/dense``: quantised weights as their integers (:meth:`~deepshrink.storage.tensors.
  CompressedTensor.grid`): one ``value_bits``-wide ``q`` per element in a bit stream, and per group
  of ``group`` elements a float32 scale and offset (weight ``scale * (q - offset)``); the kernels
  read it as a codebook per group, ``scale * (k - offset)`` for ``k < 2**value_bits``.

Bit streams are little-endian with 8 zero bytes at the end; a field is at most 25 bits wide, so
the kernels read it with one 32-bit load (two fields with one 64-bit load). :func:`pack` chooses the layout of fewest bytes the
tensor allows and, for the sparse layouts, the gap width of fewest bytes (fillers included).
:meth:`PackedWeight.to_dense` is a numpy reference decoder (tests check it equals the typed
tensor's ``to_dense()`` bit for bit), :func:`c_arrays` writes the const arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepshrink.storage.tensors import CompressedTensor, IntGrid, _rows_cols

KINDS = ("dense", "codebook/dense", "codebook/sparse", "float/sparse", "grid/dense")
"""The layouts, in the order of the kernels' ``DS_DENSE`` ... ``DS_GRID`` constants."""
C_KINDS = {"dense": "DS_DENSE", "codebook/dense": "DS_CB_DENSE", "codebook/sparse": "DS_CB_SPARSE",
           "float/sparse": "DS_F_SPARSE", "grid/dense": "DS_GRID"}
MAX_GRID_BITS = 8
"""Widest integer of a ``grid/dense`` layout (the kernels expand a group's grid into a table of
``2**value_bits`` floats on the stack)."""
MAX_FIELD_BITS = 25
"""Widest field a kernel reads (with up to 7 bits of offset, a field fits one 32-bit load)."""
MAX_GAP_BITS = 16
PAD_BYTES = 8
MAX_ROW_ENTRIES = 2**32 - 1


@dataclass(frozen=True, eq=False)
class PackedWeight:
    """One weight in a layout of the C kernels (``kind``, one of :data:`KINDS`).

    ``shape`` is the tensor's shape (``rows`` = ``shape[0]``, ``cols`` = the product of the rest).
    ``bits`` is the bit stream (uint8, padded), ``counts`` the entries of each row (uint16 when
    every count fits, else uint32; sparse layouts), ``table`` the codebook with the zero of index K
    appended (float32; codebook layouts), ``values`` float32 weights (``dense``: every element;
    ``float/sparse``: one per entry); ``grid/dense``: ``group`` elements per scale, ``scales`` and
    ``offsets`` float32, one per group. Arrays a layout does not use are None."""

    kind: str
    shape: tuple[int, ...]
    gap_bits: int = 0
    value_bits: int = 0
    bits: np.ndarray | None = None
    counts: np.ndarray | None = None
    table: np.ndarray | None = None
    values: np.ndarray | None = None
    group: int = 0
    scales: np.ndarray | None = None
    offsets: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return self.shape[0] if len(self.shape) >= 2 else 1

    @property
    def cols(self) -> int:
        return math.prod(self.shape[1:]) if len(self.shape) >= 2 else math.prod(self.shape)

    @property
    def entries(self) -> int:
        """Fields in the stream (or values of a dense layout), fillers included."""
        if self.kind == "dense":
            return self.rows * self.cols
        if self.kind in ("codebook/dense", "grid/dense"):
            return self.rows * self.cols
        return int(self.counts.sum(dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes of the const arrays (flash)."""
        return sum(a.nbytes for a in self._arrays().values() if a is not None)

    def _arrays(self) -> dict[str, np.ndarray | None]:
        return {"bits": self.bits, "counts": self.counts, "table": self.table, "values": self.values,
                "scales": self.scales, "offsets": self.offsets}

    def check(self) -> None:
        """Raise ``ValueError`` unless the kernels can read this layout within its arrays: the
        arrays' dtypes and lengths, every codebook index inside the table and every column inside
        the row (a full decode with numpy; :func:`pack` makes only layouts that pass)."""
        rows, cols = self.rows, self.cols
        if self.kind not in KINDS:
            raise ValueError(f"unknown layout {self.kind!r}; expected one of {list(KINDS)}")
        want = {"dense": {"values"}, "codebook/dense": {"bits", "table"}, "codebook/sparse": {"bits", "counts", "table"},
                "float/sparse": {"bits", "counts", "values"}, "grid/dense": {"bits", "scales", "offsets"}}[self.kind]
        dtypes = {"bits": (np.uint8,), "counts": (np.uint16, np.uint32), "table": (np.float32,), "values": (np.float32,),
                  "scales": (np.float32,), "offsets": (np.float32,)}
        for name, ok in dtypes.items():
            a = getattr(self, name)
            if (a is None) == (name in want):
                raise ValueError(f"layout {self.kind} {'needs' if a is None else 'has no'} {name!r}")
            if a is not None and (a.dtype not in ok or a.ndim != 1 or not a.flags.c_contiguous):
                raise ValueError(f"{name} must be a contiguous 1-D array of {' or '.join(np.dtype(d).name for d in ok)}")
        if self.kind == "dense":
            if self.values.size != rows * cols:
                raise ValueError(f"a dense layout of {rows}x{cols} needs {rows * cols} values, got {self.values.size}")
            return
        if self.kind == "grid/dense":
            n = rows * cols
            if not 1 <= self.value_bits <= MAX_GRID_BITS:
                raise ValueError(f"grid/dense value_bits={self.value_bits} is outside 1..{MAX_GRID_BITS}")
            if not (self.group >= 1 and (self.group == n or cols % self.group == 0)):
                raise ValueError(f"grid/dense group {self.group} is neither the {n} elements nor a divisor of the "
                                 f"{cols} columns")
            if self.scales.size != n // self.group or self.offsets.size != n // self.group:
                raise ValueError(f"grid/dense needs {n // self.group} scales and offsets, got {self.scales.size} and "
                                 f"{self.offsets.size}")
            if self.bits.size < (n * self.value_bits + 7) // 8 + PAD_BYTES:
                raise ValueError(f"the stream holds {self.bits.size} bytes, fewer than {n} fields of "
                                 f"{self.value_bits} bits need")
            return
        dense_kind = self.kind == "codebook/dense"
        width = self.value_bits if dense_kind else self.gap_bits + self.value_bits
        if not 1 <= width <= MAX_FIELD_BITS or (not dense_kind and not 1 <= self.gap_bits <= MAX_GAP_BITS):
            raise ValueError(f"field widths gap_bits={self.gap_bits}, value_bits={self.value_bits} are out of range")
        if self.counts is not None and self.counts.size != rows:
            raise ValueError(f"counts must have one entry per row ({rows}), got {self.counts.size}")
        n = self.entries
        if self.bits.size < (n * width + 7) // 8 + PAD_BYTES:
            raise ValueError(f"the stream holds {self.bits.size} bytes, fewer than {n} fields of {width} bits need")
        if self.kind == "float/sparse" and self.values.size != n:
            raise ValueError(f"float/sparse needs one value per entry ({n}), got {self.values.size}")
        if self.kind != "float/sparse":
            fields = read_fields(self.bits, n, width)
            if n and int((fields >> self.gap_bits).max()) >= self.table.size:
                raise ValueError(f"a codebook index is outside the table of {self.table.size} values")
        if self.kind != "codebook/dense":
            gaps = read_fields(self.bits, n, self.gap_bits + self.value_bits) & ((1 << self.gap_bits) - 1)
            counts = self.counts.astype(np.int64)
            ends = np.cumsum(counts)
            starts = (ends - counts)[counts > 0]  # rows without entries have no segment
            span = np.add.reduceat(gaps + 1, starts) if n else np.zeros(0, np.int64)  # last column + 1, per row
            if n and int(span.max()) > cols:
                raise ValueError(f"a row's entries run past its {cols} columns")

    def to_dense(self) -> np.ndarray:
        """The float32 tensor, decoded with numpy the way the kernels decode it."""
        rows, cols = self.rows, self.cols
        if self.kind == "dense":
            return self.values.reshape(self.shape)
        if self.kind == "codebook/dense":
            idx = read_fields(self.bits, rows * cols, self.value_bits)
            return self.table[idx].reshape(self.shape)
        if self.kind == "grid/dense":
            q = read_fields(self.bits, rows * cols, self.value_bits).astype(np.uint8)
            return IntGrid(q, self.value_bits, self.group, self.scales, self.offsets).to_dense().reshape(self.shape)
        n = self.entries
        if self.kind == "codebook/sparse":
            fields = read_fields(self.bits, n, self.gap_bits + self.value_bits)
            gaps, weights = fields & ((1 << self.gap_bits) - 1), self.table[fields >> self.gap_bits]
        else:
            gaps, weights = read_fields(self.bits, n, self.gap_bits), self.values
        counts = self.counts.astype(np.int64)
        row_of = np.repeat(np.arange(rows, dtype=np.int64), counts)
        csum = np.cumsum(gaps.astype(np.int64) + 1)  # one past each entry's column, counted from the stream's start
        before = np.concatenate([[0], csum])[np.cumsum(counts) - counts]  # the same at each row's start
        col = csum - np.repeat(before, counts) - 1
        out = np.zeros(rows * cols, np.float32)
        real = weights.view(np.uint32) != 0  # fillers are +0.0; a stored -0.0 stays
        out[(row_of * cols + col)[real]] = weights[real]
        return out.reshape(self.shape)


# ----------------------------------------------------------------------------------------------
# bit streams


def write_fields(fields: np.ndarray, width: int) -> np.ndarray:
    """Fields of ``width`` bits (≤ :data:`MAX_FIELD_BITS`) packed little-endian: field ``i`` at bit
    ``i * width``; :data:`PAD_BYTES` zero bytes at the end."""
    if not 1 <= width <= MAX_FIELD_BITS:
        raise ValueError(f"field width {width} is outside 1..{MAX_FIELD_BITS}")
    fields = np.asarray(fields, np.uint64)
    nbytes = (len(fields) * width + 7) // 8 + PAD_BYTES
    bit = np.arange(len(fields), dtype=np.uint64) * np.uint64(width)
    byte, shift = (bit >> np.uint64(3)).astype(np.int64), bit & np.uint64(7)
    shifted = fields << shift  # at most 32 bits: fields never overlap, so per-byte sums are exact
    out = np.zeros(nbytes, np.int64)
    for k in range(4):
        part = ((shifted >> np.uint64(8 * k)) & np.uint64(0xFF)).astype(np.int64)
        out += np.bincount(byte + k, weights=part, minlength=nbytes)[:nbytes].astype(np.int64)
    return out.astype(np.uint8)


def read_fields(stream: np.ndarray, n: int, width: int) -> np.ndarray:
    """The first ``n`` fields of ``width`` bits of a stream :func:`write_fields` made, read as the
    kernels read them (one 32-bit little-endian word at byte ``bit // 8``)."""
    bit = np.arange(n, dtype=np.int64) * width
    b = stream.astype(np.uint64)
    byte = bit >> 3
    word = b[byte] | b[byte + 1] << np.uint64(8) | b[byte + 2] << np.uint64(16) | b[byte + 3] << np.uint64(24)
    return ((word >> (bit & 7).astype(np.uint64)) & np.uint64((1 << width) - 1)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# choosing and building a layout


def _gaps(rows: int, cols: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of each entry and its gap (zeros skipped since the previous entry of its row)."""
    row = positions // max(cols, 1)
    col = positions - row * cols
    prev = np.empty_like(col)
    if len(col):
        prev[0] = -1
        prev[1:] = np.where(row[1:] == row[:-1], col[:-1], -1)
    return row, col - prev - 1


def _sparse_cost(rows: int, row: np.ndarray, gaps: np.ndarray, value_bits: int, value_bytes: int) -> tuple[int, int]:
    """(bytes, gap_bits) of the cheapest sparse layout of these gaps (entries of rows ``row``):
    ``value_bits`` per entry in the stream (codebook index) or ``value_bytes`` per entry beside it
    (float values), and the row counts."""
    best = None
    top = min(MAX_GAP_BITS, MAX_FIELD_BITS - value_bits)
    for gb in range(1, top + 1):
        per = (gaps >> gb) + 1
        entries = int(per.sum())
        most = int(np.bincount(row, weights=per, minlength=rows).max()) if rows else 0
        nbytes = ((entries * (gb + value_bits) + 7) // 8 + PAD_BYTES + entries * value_bytes
                  + rows * (2 if most <= 0xFFFF else 4))
        if best is None or nbytes < best[0]:
            best = (nbytes, gb)
    return best


def _sparse_stream(rows: int, row: np.ndarray, gaps: np.ndarray, gap_bits: int, syms: np.ndarray | None,
                   filler_sym: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fields (gap and, with ``syms``, the symbol above it), the row counts and which field is a
    real entry (not a filler)."""
    fillers = gaps >> gap_bits
    per = fillers + 1
    total = int(per.sum())
    top = (1 << gap_bits) - 1
    gap = np.full(total, top, np.int64)
    real = np.zeros(total, bool)
    ends = np.cumsum(per) - 1  # each real entry comes after its fillers
    gap[ends] = gaps - (fillers << gap_bits)
    real[ends] = True
    sym = np.full(total, filler_sym, np.int64)
    if syms is not None:
        sym[ends] = syms
    fields = gap | (sym << gap_bits) if syms is not None else gap
    counts = np.bincount(row, weights=per, minlength=rows).astype(np.int64)
    return fields, counts, real


def _counts(counts: np.ndarray) -> np.ndarray:
    if counts.size and counts.max() > MAX_ROW_ENTRIES:
        raise ValueError(f"a row has {int(counts.max())} entries, over {MAX_ROW_ENTRIES}")
    return counts.astype(np.uint16 if not counts.size or counts.max() <= 0xFFFF else np.uint32)


def _grid(t: CompressedTensor) -> IntGrid | None:
    """The tensor's integer grid if the ``grid/dense`` kernels can run it: at most
    :data:`MAX_GRID_BITS` bits, groups inside rows (or the whole tensor), and values equal to the
    tensor's bit for bit (a grid view that does not reproduce it is not used)."""
    g = t.grid()
    if g is None or not 1 <= g.bits <= MAX_GRID_BITS or g.q.shape != tuple(t.shape) or g.q.dtype != np.uint8:
        return None
    n = g.q.size
    _, cols = _rows_cols(tuple(t.shape))
    if n == 0 or not (g.group >= 1 and (g.group == n or (cols and cols % g.group == 0))):
        return None
    if g.scale.size != n // g.group or g.offset.size != n // g.group or int(g.q.max()) >= 1 << g.bits:
        return None
    want = np.ascontiguousarray(t.to_dense(), np.float32).view(np.uint32)
    if not np.array_equal(np.ascontiguousarray(g.to_dense(), np.float32).view(np.uint32), want):
        return None
    return g


def _grid_bytes(g: IntGrid) -> int:
    return (g.q.size * g.bits + 7) // 8 + PAD_BYTES + 8 * (g.q.size // g.group)


def _pack_grid(shape: tuple[int, ...], g: IntGrid) -> PackedWeight:
    return PackedWeight("grid/dense", shape, 0, g.bits, bits=write_fields(g.q.reshape(-1), g.bits), group=g.group,
                        scales=np.ascontiguousarray(g.scale, np.float32),
                        offsets=np.ascontiguousarray(g.offset, np.float32))


def pack(t: CompressedTensor, kind: str | None = None) -> PackedWeight:
    """``t`` in the layout ``kind`` (one of :data:`KINDS` the tensor allows: codebook layouts need
    a codebook tensor, ``grid/dense`` an integer grid), or, with None, the allowed layout of fewest
    bytes (ties: the dense one, which decodes faster).

    Every typed tensor describes itself to the engine through its CSR view
    (:meth:`~deepshrink.storage.tensors.CompressedTensor.csr`): its kept entries by rows, as codebook
    indices (with the codebook) or float values, and quantised tensors also through their grid
    view (:meth:`~deepshrink.storage.tensors.CompressedTensor.grid`), so a new tensor type needs no
    case here."""
    shape = tuple(int(d) for d in t.shape)
    grid = _grid(t) if kind in (None, "grid/dense") else None
    if kind == "grid/dense":
        if grid is None:
            raise ValueError(f"a {type(t).__name__} without an integer grid of at most {MAX_GRID_BITS} bits "
                             f"cannot pack as grid/dense")
        return _pack_grid(shape, grid)
    c = t.csr()
    rows, cols = c.shape
    positions = np.repeat(np.arange(rows, dtype=np.int64), np.diff(c.indptr)) * cols + c.indices.astype(np.int64)
    row, gaps = _gaps(rows, cols, positions)
    if c.codebook is not None:
        k = len(c.codebook)
        table = np.append(np.asarray(c.codebook, np.float32), np.float32(0.0))
        vb = max(1, int(k).bit_length())
        syms = c.values.astype(np.int64)
        sparse_bytes, gb = _sparse_cost(rows, row, gaps, vb, 0) if vb < MAX_FIELD_BITS else (None, 0)
        dense_bytes = (rows * cols * vb + 7) // 8 + PAD_BYTES
        if kind is None:
            kind = "codebook/sparse" if sparse_bytes is not None and sparse_bytes < dense_bytes else "codebook/dense"
            if grid is not None and _grid_bytes(grid) < min(dense_bytes, sparse_bytes or dense_bytes):
                return _pack_grid(shape, grid)
        _check_kind(kind, ("codebook/dense", "codebook/sparse"), t)
        if kind == "codebook/dense":
            idx = np.full(rows * cols, k, np.int64)  # index K: the zero appended to the table
            idx[positions] = syms
            return PackedWeight(kind, shape, 0, vb, bits=write_fields(idx, vb), table=table)
        fields, counts, _ = _sparse_stream(rows, row, gaps, gb, syms, k)
        return PackedWeight(kind, shape, gb, vb, bits=write_fields(fields, gb + vb), counts=_counts(counts), table=table)
    values = np.asarray(c.values, np.float32)
    sparse_bytes, gb = _sparse_cost(rows, row, gaps, 0, 4)
    if kind is None:
        kind = "float/sparse" if sparse_bytes < 4 * rows * cols else "dense"
        if grid is not None and _grid_bytes(grid) < min(sparse_bytes, 4 * rows * cols):
            return _pack_grid(shape, grid)
    _check_kind(kind, ("dense", "float/sparse"), t)
    if kind == "dense":
        flat = np.zeros(rows * cols, np.float32)
        flat[positions] = values
        return PackedWeight(kind, shape, values=flat)
    fields, counts, real = _sparse_stream(rows, row, gaps, gb, None, 0)
    vals = np.zeros(len(fields), np.float32)
    vals[real] = values
    return PackedWeight(kind, shape, gb, 0, bits=write_fields(fields, gb), counts=_counts(counts), values=vals)


def _check_kind(kind: str, allowed: tuple[str, ...], t: CompressedTensor) -> None:
    if kind not in allowed:
        raise ValueError(f"a {type(t).__name__} packs as {' or '.join(allowed)}, not {kind!r}")


# ----------------------------------------------------------------------------------------------
# C source


def c_float(v: float) -> str:
    """A float32 value as a C literal that reads back to the same float (9 significant digits)."""
    f = float(np.float32(v))
    if not math.isfinite(f):
        raise ValueError(f"cannot write the non-finite value {f} as a C constant")
    s = f"{f:.9g}"
    if "e" not in s and "." not in s:
        s += ".0"
    return s + "f"


def c_array(ctype: str, name: str, values: np.ndarray, per_line: int = 24) -> str:
    """``static const <ctype> <name>[n] = {...};`` (an empty array gets one zero element: C99 has
    no empty arrays)."""
    flat = np.asarray(values).reshape(-1)
    if ctype == "float":
        items = [c_float(v) for v in flat.tolist()]
        per_line = 8
    else:
        items = [str(int(v)) for v in flat.tolist()]
    if not items:
        items = ["0"]
    lines = [",".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return f"static const {ctype} {name}[{len(items)}] = {{\n" + ",\n".join(lines) + "\n};\n"


def c_arrays(p: PackedWeight, name: str) -> str:
    """The const arrays of ``p`` and the ``static const ds_weight <name>`` describing them."""
    out = []
    fields = {"bits": "NULL", "counts16": "NULL", "counts32": "NULL", "table": "NULL", "values": "NULL",
              "scales": "NULL", "offsets": "NULL"}
    if p.bits is not None:
        out.append(c_array("uint8_t", f"{name}_bits", p.bits))
        fields["bits"] = f"{name}_bits"
    if p.counts is not None:
        key = "counts16" if p.counts.dtype == np.uint16 else "counts32"
        out.append(c_array("uint16_t" if key == "counts16" else "uint32_t", f"{name}_counts", p.counts))
        fields[key] = f"{name}_counts"
    if p.table is not None:
        out.append(c_array("float", f"{name}_table", p.table))
        fields["table"] = f"{name}_table"
    if p.values is not None:
        out.append(c_array("float", f"{name}_values", p.values))
        fields["values"] = f"{name}_values"
    for key in ("scales", "offsets"):
        if getattr(p, key) is not None:
            out.append(c_array("float", f"{name}_{key}", getattr(p, key)))
            fields[key] = f"{name}_{key}"
    init = ", ".join(f".{k} = {v}" for k, v in fields.items())
    out.append(f"static const ds_weight {name} = {{.kind = {C_KINDS[p.kind]}, .rows = {p.rows}, .cols = {p.cols}, "
               f".gap_bits = {p.gap_bits}, .value_bits = {p.value_bits}, .group = {p.group}, {init}}};\n")
    return "".join(out)
