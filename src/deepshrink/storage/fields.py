"""The pieces encodings are declared from: descriptor fields with the rules that validate them,
sections with their lengths, and the checked descriptor validation produces.

A rule's ``text`` says what it expects; the same words appear in its error messages and in the
tables of docs/format.md, so the document and the reader cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from deepshrink.coding import Coder
from deepshrink.errors import InvalidHeader, LimitExceeded
from deepshrink.util.limits import Limits

if TYPE_CHECKING:
    from deepshrink.storage.encodings import Encoding

#: The value types a file may store (little-endian); decoding always gives float32.
DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
#: Dimensions a stored tensor may have.
MAX_DIMS = 8


class Context:
    """What validating one descriptor has established so far: the fields checked (in their
    declared order, so a rule may depend on an earlier field) and the limits."""

    def __init__(self, where: str, limits: Limits):
        self.where = where
        self.limits = limits
        self.values: dict[str, Any] = {}

    @property
    def numel(self) -> int:
        return math.prod(self.values["shape"])


@dataclass(frozen=True)
class StreamDesc:
    """A validated stream descriptor ``{"coder", "n", "bits"}`` and the alphabet it codes."""

    coder: Coder
    n: int
    bits: int
    alphabet: int

    def to_dict(self) -> dict[str, Any]:
        return {"coder": self.coder.value, "n": self.n, "bits": self.bits}


class Rule:
    """How one descriptor field is validated. ``text`` says what is expected; it appears in the
    error message and in docs/format.md."""

    text: str = ""

    def check(self, key: str, value: Any, ctx: Context) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement check()")

    def fail(self, key: str, value: Any, ctx: Context) -> InvalidHeader:
        return InvalidHeader(f"{ctx.where}: {key!r} must be {self.text}, got {value!r}")


@dataclass(frozen=True)
class ShapeRule(Rule):
    text: str = (f"a list of at most {MAX_DIMS} non-negative integers; each and their product at most "
                 "`Limits.max_tensor_elements`")

    def check(self, key: str, value: Any, ctx: Context) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) > MAX_DIMS or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value
        ):
            raise InvalidHeader(f"{ctx.where}: {key} must be a list of at most {MAX_DIMS} non-negative integers, got {value!r}")
        top = ctx.limits.max_tensor_elements
        if any(s > top for s in value) or math.prod(value) > top:
            raise LimitExceeded(
                f"{ctx.where}: shape {value} exceeds the limit of {top} elements per tensor "
                "(in total and in every dimension)"
            )
        return tuple(value)


@dataclass(frozen=True)
class OneOf(Rule):
    """A string from a fixed list (a one-element list for ``enc`` and ``layout``)."""

    choices: tuple[str, ...] = ()

    @property
    def text(self) -> str:  # type: ignore[override]
        names = ", ".join(f"`{c}`" for c in self.choices)
        return names if len(self.choices) == 1 else f"one of {names}"

    def check(self, key: str, value: Any, ctx: Context) -> str:
        if not isinstance(value, str) or value not in self.choices:  # a list is not hashable: compare
            raise self.fail(key, value, ctx)
        return value


@dataclass(frozen=True)
class IntRule(Rule):
    """An integer in ``[lo, hi]``; ``hi`` may depend on earlier fields (``hi_text`` names it)."""

    lo: int = 0
    hi: int | Callable[[Context], int] = 0
    hi_text: str = ""

    @property
    def text(self) -> str:  # type: ignore[override]
        return f"an integer in [{self.lo}, {self.hi_text or self.hi}]"

    def check(self, key: str, value: Any, ctx: Context) -> int:
        hi = self.hi(ctx) if callable(self.hi) else self.hi
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= hi:
            here = f" (= {hi} here)" if callable(self.hi) else ""
            raise InvalidHeader(f"{ctx.where}: {key!r} must be {self.text}{here}, got {value!r}")
        return value


@dataclass(frozen=True)
class StreamRule(Rule):
    """A coded symbol stream ``{"coder", "n", "bits"}``. ``alphabet`` gives its symbol count
    from earlier fields; ``count``, when set, the exact ``n`` it must have (else ``n`` is at
    most the tensor's element count: every entry advances at least one position)."""

    alphabet: Callable[[Context], int] = lambda ctx: 1
    alphabet_text: str = ""
    count: Callable[[Context], int] | None = None
    count_text: str = "at most the element count"

    @property
    def text(self) -> str:  # type: ignore[override]
        return f"a stream descriptor of alphabet {self.alphabet_text}, with `n` {self.count_text}"

    def check(self, key: str, value: Any, ctx: Context) -> StreamDesc:
        where = f"{ctx.where} stream {key!r}"
        if not isinstance(value, dict) or set(value) != {"bits", "coder", "n"}:
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise InvalidHeader(f"{where}: expected exactly the keys ['bits', 'coder', 'n'], got {got}")
        coders = [c.value for c in Coder]
        if value["coder"] not in coders:  # a list here is not hashable: compare, do not look up
            raise InvalidHeader(f"{where}: unknown coder {value['coder']!r}; expected one of {coders}")
        alphabet = self.alphabet(ctx)
        numel = ctx.numel
        n = value["n"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= numel:
            raise InvalidHeader(f"{where}: 'n' must be an integer in [0, {numel}] (the element count), got {n!r}")
        if self.count is not None and n != self.count(ctx):
            raise InvalidHeader(f"{where}: 'n' must be {self.count_text} ({self.count(ctx)}), got {n}")
        bits = value["bits"]
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
            raise InvalidHeader(f"{where}: 'bits' must be an integer in [1, 32], got {bits!r}")
        if alphabet > (1 << bits):
            raise InvalidHeader(f"{where}: {bits} bits cannot hold an alphabet of {alphabet} symbols")
        return StreamDesc(Coder(value["coder"]), n, bits, alphabet)


@dataclass(frozen=True)
class Field:
    """One descriptor field: its name, its rule and what it means. Fields are checked in the
    order the encoding declares them."""

    name: str
    rule: Rule
    doc: str
    required: bool = True


@dataclass(frozen=True)
class Section:
    """One byte section a tensor owns, named ``<tensor name><suffix>``. Its length is either
    exact, computed from the checked descriptor (``length``), or that of a coded stream the
    descriptor field ``stream`` describes; a stream's decoder rejects missing or extra bytes.
    ``role`` says which byte count of a report it adds to: ``"index"`` (where the weights are)
    or ``"weight"`` (what they are)."""

    suffix: str
    role: str
    doc: str
    stream: str | None = None
    length: Callable[[CheckedDescriptor], int] | None = None
    length_text: str = ""


@dataclass(frozen=True)
class CheckedDescriptor:
    """A validated tensor descriptor: its encoding, shape, element count, value dtype, checked
    field values (streams as :class:`StreamDesc`) and the names of the sections it owns."""

    name: str
    encoding: Encoding
    shape: tuple[int, ...]
    numel: int
    dtype: np.dtype
    fields: Mapping[str, Any]
    sections: tuple[str, ...]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    @property
    def where(self) -> str:
        return f"tensor {self.name!r}"


COMMON_FIELDS = (
    Field("shape", ShapeRule(), "the tensor's shape"),
    Field("dtype", OneOf(tuple(DTYPES)), "type of the stored values (raw elements, codebook or float values)"),
)
