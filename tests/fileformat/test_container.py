import struct
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshrink.errors import (
    BadMagic,
    ChecksumMismatch,
    FormatError,
    HeaderTooLarge,
    InvalidHeader,
    TruncatedFile,
    UnsupportedVersion,
)
from deepshrink.fileformat import container
from deepshrink.fileformat.container import MAGIC, Limits, pack, unpack

names = st.text(alphabet="abcdefghij.:_0123456789", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=300), max_size=6), st.booleans())
def test_round_trip_is_exact_and_deterministic(sections, compress):
    header = {"format": "x", "meta": {"n": 1}}
    data = pack(header, sections, compress_header=compress)
    assert data == pack(header, sections, compress_header=compress)
    parsed = unpack(data)
    assert {k: bytes(v) for k, v in parsed.sections.items()} == sections
    assert parsed.header["meta"] == {"n": 1}
    assert parsed.file_bytes == len(data)


def _sample() -> bytes:
    return pack({"format": "x"}, {"a": b"hello world", "b": bytes(range(50)), "c": b""})


def test_every_truncation_raises_a_format_error():
    data = _sample()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            unpack(data[:cut])


def test_every_flipped_byte_is_detected():
    data = _sample()
    for i in range(len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                unpack(bytes(bad))


def test_named_errors():
    data = bytearray(_sample())
    with pytest.raises(BadMagic, match="not a deepshrink file"):
        unpack(b"PK\x03\x04" + bytes(data[4:]))
    with pytest.raises(BadMagic):
        unpack(b"\x00" * 5)
    bad = bytearray(data)
    struct.pack_into("<H", bad, 8, 99)
    with pytest.raises(UnsupportedVersion, match="version 99"):
        unpack(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<H", bad, 10, 0x80)
    with pytest.raises(InvalidHeader, match="flag"):
        unpack(bytes(bad))
    with pytest.raises(TruncatedFile):
        unpack(bytes(data[:25]))
    with pytest.raises(InvalidHeader, match="after the last section"):
        unpack(bytes(data) + b"junk")
    bad = bytearray(data)
    bad[-1] ^= 0xFF
    with pytest.raises(ChecksumMismatch, match="section 'b'"):
        unpack(bytes(bad))


def _forge(header_obj, payload=b"", compress=True) -> bytes:
    raw = header_obj if isinstance(header_obj, bytes) else __import__("json").dumps(header_obj).encode()
    stored = zlib.compress(raw) if compress else raw
    prefix = struct.pack("<8sHHII", MAGIC, 1, int(compress), len(stored), zlib.crc32(stored))
    return prefix + stored + payload


def test_huge_claims_fail_fast_without_allocating():
    # header length field claims 4 GiB
    data = struct.pack("<8sHHII", MAGIC, 1, 1, 0xFFFFFFFF, 0) + b"x" * 100
    t = time.perf_counter()
    with pytest.raises(HeaderTooLarge):
        unpack(data)
    # a zlib bomb: 50 MB of zeros compressed into a tiny header
    bomb = zlib.compress(b" " * 50_000_000)
    prefix = struct.pack("<8sHHII", MAGIC, 1, 1, len(bomb), zlib.crc32(bomb))
    with pytest.raises(HeaderTooLarge, match="decompressed"):
        unpack(prefix + bomb)
    # a section claiming 2**60 bytes
    with pytest.raises(TruncatedFile):
        unpack(_forge({"sections": [["a", 2**60, 0]]}, b"abc"))
    assert time.perf_counter() - t < 2.0


@pytest.mark.parametrize(
    "header, error",
    [
        (b"[1, 2]", InvalidHeader),
        (b"{\"a\": NaN, \"sections\": []}", InvalidHeader),
        (b"{\"a\": 1, \"a\": 2, \"sections\": []}", InvalidHeader),
        (b"\xff\xfe", InvalidHeader),
        ({"sections": [["a", -1, 0]]}, InvalidHeader),
        ({"sections": [["a", 1, 0], ["a", 1, 0]]}, InvalidHeader),
        ({"sections": "all"}, InvalidHeader),
        ({"sections": [["a", True, 0]]}, InvalidHeader),
        (b"[" * 100_000 + b"]" * 100_000, InvalidHeader),
    ],
)
def test_hostile_headers(header, error):
    payload = b"ab" if isinstance(header, dict) and header.get("sections") and header["sections"] != "all" else b""
    with pytest.raises(error):
        unpack(_forge(header, payload))


def test_limits_are_configurable():
    data = _sample()
    with pytest.raises(HeaderTooLarge):
        unpack(data, Limits(max_header_bytes=10))
    with pytest.raises(ValueError):
        Limits(max_header_bytes=0)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.dsz"
    container.write(path, {"format": "x"}, {"a": b"first"})
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("deepshrink.util.atomic.os.replace", boom)
    with pytest.raises(OSError):
        container.write(path, {"format": "x"}, {"a": b"second"})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.dsz"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    path = tmp_path / "m.dsz"
    container.write(path, {"format": "x"}, {"a": b"x"})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
