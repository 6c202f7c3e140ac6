"""The decode side of the encoding registry on hostile descriptors: typed errors, claimed sections,
finite values."""

from __future__ import annotations

import numpy as np
import pytest

from deepshrink.errors import InvalidHeader, InvalidValue, LimitExceeded
from deepshrink.storage import TensorCoding, check_descriptor, decode_tensor, encode_tensor
from deepshrink.util.limits import Limits

RAW = {"shape": [2, 3], "dtype": "float32", "enc": "raw"}


@pytest.mark.parametrize("change", [
    {"dtype": ["float32"]}, {"dtype": {"a": 1}}, {"enc": ["raw"]}, {"shape": "6"}, {"shape": [2.0, 3]},
    {"shape": [True, 3]}, {"extra": 1},
])
def test_malformed_descriptors_are_invalid_header(change):
    with pytest.raises(InvalidHeader):
        check_descriptor("w", {**RAW, **change}, Limits())


def test_every_dimension_is_bounded_not_only_the_product():
    with pytest.raises(LimitExceeded, match="every dimension"):
        check_descriptor("w", {**RAW, "shape": [0, 2**63]}, Limits())


def test_descriptor_names_the_sections_it_claims():
    enc = encode_tensor("w", np.where(np.arange(64) % 7 == 0, 0.5, 0.0).astype(np.float32), TensorCoding(layout="sparse"))
    assert set(check_descriptor("w", enc.descriptor, Limits()).sections) == set(enc.sections)
    assert check_descriptor("b", RAW, Limits()).sections == ("b",)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_raw_values_and_codebooks_are_refused(value):
    raw = np.zeros(6, np.float32)
    raw[4] = value
    with pytest.raises(InvalidValue, match="'w'"):
        decode_tensor("w", RAW, {"w": memoryview(raw.tobytes())}, Limits())
    enc = encode_tensor("c", np.array([0.5, 0.0, 0.5, 0.25] * 8, np.float32), TensorCoding())
    assert enc.descriptor["enc"] == "codebook"
    sections = {k: memoryview(v) for k, v in enc.sections.items()}
    sections["c:cb"] = memoryview(np.full(enc.descriptor["k"], value, np.float32).astype(enc.descriptor["dtype"]).tobytes())
    with pytest.raises(InvalidValue, match="codebook"):
        decode_tensor("c", enc.descriptor, sections, Limits())
