"""The deepshrink container: magic, version, a checksummed compressed JSON header, then sections.

Byte layout (all integers little-endian; see docs/format.md)::

    0   8  magic       89 44 53 5A 0D 0A 1A 0A   ("\\x89DSZ\\r\\n\\x1a\\n")
    8   2  version     u16, currently 1
    10  2  flags       u16, bit 0 = header is zlib-compressed; other bits must be 0
    12  4  header_len  u32, stored header bytes (at most Limits.max_header_bytes)
    16  4  header_crc  u32, CRC-32 of the stored header bytes
    20  …  header      JSON object (UTF-8), zlib-compressed when flag bit 0 is set
    …   …  sections    concatenated, in the order and with the lengths the header lists

The header's ``sections`` entry lists ``[name, length, crc32]`` for every section; the lengths
must add up to exactly the bytes after the header (no holes, no overlaps, no trailing bytes).
Every check happens before any allocation sized by the file's claims.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepshrink.errors import (
    BadMagic,
    ChecksumMismatch,
    FormatError,
    HeaderTooLarge,
    InvalidHeader,
    TruncatedFile,
    UnsupportedVersion,
)
from deepshrink.util.atomic import write_bytes_atomic
from deepshrink.util.limits import Limits

MAGIC = b"\x89DSZ\r\n\x1a\n"
VERSION = 1
FLAG_ZLIB = 1
_PREFIX = struct.Struct("<8sHHII")
PREFIX_SIZE = _PREFIX.size  # 20
MAX_SECTIONS = 100_000


@dataclass(frozen=True)
class Container:
    """A parsed file: the header (a dict) and its sections (name → bytes), all checksums verified."""

    header: dict[str, Any]
    sections: Mapping[str, memoryview] = field(default_factory=dict)
    file_bytes: int = 0
    header_bytes: int = 0


def pack(header: Mapping[str, Any], sections: Mapping[str, bytes], *, compress_header: bool = True) -> bytes:
    """Serialise a header and sections to bytes (deterministic for equal inputs)."""
    header = dict(header)
    header["sections"] = [[name, len(data), zlib.crc32(data)] for name, data in sections.items()]
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8")
    stored = zlib.compress(raw, 9) if compress_header else raw
    flags = FLAG_ZLIB if compress_header else 0
    prefix = _PREFIX.pack(MAGIC, VERSION, flags, len(stored), zlib.crc32(stored))
    return b"".join([prefix, stored, *sections.values()])


def write(path: str | os.PathLike, header: Mapping[str, Any], sections: Mapping[str, bytes]) -> int:
    """Write a container atomically (temporary file + rename); returns the file size."""
    data = pack(header, sections)
    write_bytes_atomic(path, data)
    return len(data)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InvalidHeader(f"header: duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> None:
    raise InvalidHeader(f"header: {name} is not allowed in JSON")


def _parse_int(text: str) -> int:
    if len(text) > 20:
        raise InvalidHeader(f"header: integer with {len(text)} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text) if len(text) <= 64 else math.inf
    if not math.isfinite(value):
        raise InvalidHeader(f"header: number {text[:30]!r} is out of the float range")
    return value


def _parse_head(head: memoryview, size: int, limits: Limits) -> tuple[dict[str, Any], int, list[tuple[str, int, int]]]:
    """Check the prefix and header at the start of a ``size``-byte file. ``head`` holds at least
    the prefix and, when they fit in the file, the header bytes. Returns the header, the offset
    of the payload and the validated ``(name, length, crc)`` section entries."""
    if size < PREFIX_SIZE:
        if bytes(head[: len(MAGIC)]) != MAGIC[: len(head)]:
            raise BadMagic(f"not a deepshrink file: expected magic {MAGIC!r}")
        raise TruncatedFile(f"file has {size} bytes, fewer than the {PREFIX_SIZE}-byte prefix")
    magic, version, flags, header_len, header_crc = _PREFIX.unpack_from(head, 0)
    if magic != MAGIC:
        raise BadMagic(f"not a deepshrink file: expected magic {MAGIC!r}, got {bytes(magic)!r}")
    if version != VERSION:
        raise UnsupportedVersion(f"format version {version} is not supported; this reader reads version {VERSION}")
    if flags & ~FLAG_ZLIB:
        raise InvalidHeader(f"unknown flag bits {flags:#06x}; this reader knows only {FLAG_ZLIB:#06x}")
    if header_len > limits.max_header_bytes:
        raise HeaderTooLarge(f"header claims {header_len} bytes; the limit is {limits.max_header_bytes}")
    if PREFIX_SIZE + header_len > size:
        raise TruncatedFile(f"header claims {header_len} bytes but only {size - PREFIX_SIZE} follow the prefix")
    stored = head[PREFIX_SIZE : PREFIX_SIZE + header_len]
    if zlib.crc32(stored) != header_crc:
        raise ChecksumMismatch("header checksum does not match: the header is corrupt")
    if flags & FLAG_ZLIB:
        d = zlib.decompressobj()
        try:
            raw = d.decompress(stored, limits.max_header_bytes + 1)
        except zlib.error as exc:
            raise InvalidHeader(f"header does not decompress: {exc}") from None
        if len(raw) > limits.max_header_bytes:
            raise HeaderTooLarge(f"decompressed header exceeds the limit of {limits.max_header_bytes} bytes")
        if not d.eof or d.unused_data:
            raise InvalidHeader("compressed header is incomplete or has trailing bytes")
    else:
        raw = bytes(stored)
    try:
        header = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant,
            parse_int=_parse_int, parse_float=_parse_float,
        )
        # lone surrogates (\ud800) parse but are not text: refuse them here, not in a printer
        json.dumps(header, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise InvalidHeader(f"header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidHeader("header must be a JSON object")
    entries = header.get("sections")
    if not isinstance(entries, list) or len(entries) > MAX_SECTIONS:
        raise InvalidHeader(f"header 'sections' must be a list of at most {MAX_SECTIONS} entries")
    payload = size - PREFIX_SIZE - header_len
    offset = 0
    names: set[str] = set()
    for i, entry in enumerate(entries):
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in entry[1:])
        ):
            raise InvalidHeader(f"section entry {i} must be [name, length, crc32] with non-negative integers")
        name, length, _ = entry
        if name in names:
            raise InvalidHeader(f"section {name!r} is listed twice")
        names.add(name)
        if offset + length > payload:
            raise TruncatedFile(
                f"section {name!r} needs bytes {offset}..{offset + length} of the payload, "
                f"but the payload has {payload} bytes"
            )
        offset += length
    if offset != payload:
        raise InvalidHeader(f"{payload - offset} bytes after the last section are not described by the header")
    return header, PREFIX_SIZE + header_len, entries


def unpack(data: bytes | bytearray | memoryview, limits: Limits | None = None) -> Container:
    """Parse and verify a container held in memory. Raises a :class:`FormatError` subclass."""
    buf = memoryview(data)
    return _assemble(buf, *_parse_head(buf, len(buf), limits or Limits()))


def _assemble(buf: memoryview, header: dict[str, Any], start: int, entries: list[tuple[str, int, int]]) -> Container:
    """Slice the sections out of a whole file whose head :func:`_parse_head` has checked, and
    verify their checksums."""
    sections: dict[str, memoryview] = {}
    offset = start
    for name, length, crc in entries:
        sections[name] = buf[offset : offset + length]
        offset += length
        if zlib.crc32(sections[name]) != crc:
            raise ChecksumMismatch(f"section {name!r} is corrupt: its CRC-32 does not match the header")
    return Container(header, sections, len(buf), start)


def read(
    path: str | os.PathLike,
    limits: Limits | None = None,
    check: Callable[[dict[str, Any], list[str], int], None] | None = None,
) -> Container:
    """Read and verify a container from a file. The file's size is checked against its header
    before the payload is read, so a file padded with gigabytes is refused without reading them.
    ``check(header, section_names, file_bytes)``, when given, runs before the payload is read
    too: a reader that knows what the sections must be refuses a huge stray one unread."""
    limits = limits or Limits()
    path = Path(path)
    try:
        if not path.exists():
            raise FormatError(f"{str(path)!r} does not exist")
        if not path.is_file():
            raise FormatError(f"{str(path)!r} is not a regular file, expected a .dsz file")
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(PREFIX_SIZE)
            if len(head) == PREFIX_SIZE:
                header_len = _PREFIX.unpack_from(head, 0)[3]
                if header_len <= min(limits.max_header_bytes, size - PREFIX_SIZE):
                    head += f.read(header_len)
            parsed = _parse_head(memoryview(head), size, limits)  # refuses a size the header does not describe
            if check is not None:
                check(parsed[0], [entry[0] for entry in parsed[2]], size)
            data = bytearray(size)
            data[: len(head)] = head
            if f.readinto(memoryview(data)[len(head) :]) != size - len(head) or f.read(1):
                raise TruncatedFile(f"{str(path)!r} changed size while it was read")
    except OSError as exc:
        raise FormatError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return _assemble(memoryview(data), *parsed)
