import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.data import InputSpec
from deepshrink.errors import FormatError, InvalidHeader, LimitExceeded, ModelError
from deepshrink.fileformat import Limits, read_model_file
from deepshrink.fileformat.container import MAGIC, pack, unpack
from deepshrink.pipeline.pack import pack_model

GOLDEN = Path(__file__).parent / "golden"
SPEC = InputSpec((1, 28, 28), "uint8", 1 / 255, (0.2860,), (0.3530,))


def tiny_compressed_model() -> nn.Module:
    """A deterministic LeNet-300-100 with pruned, shared weights (no training needed)."""
    torch.manual_seed(1234)
    model = ds.build_model("lenet-300-100")
    rng = np.random.default_rng(1234)
    with torch.no_grad():
        for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.Linear)):
            book = np.linspace(-0.2, 0.2, 31).astype(np.float32)
            w = book[rng.integers(0, 31, m.weight.shape)] * (rng.random(m.weight.shape) < 0.08)
            m.weight.copy_(torch.from_numpy(w))
            m.bias.copy_(torch.from_numpy(rng.standard_normal(m.bias.shape).astype(np.float32) * 0.01))
    return model.eval()


def test_pack_load_round_trip_is_exact():
    model = tiny_compressed_model()
    data, report = pack_model(model, SPEC)
    loaded = ds.load(data)
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.dense_state_dict()[name], t)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert report.file_bytes == len(data) < 266_610 * 4 / 30  # uniform random symbols: ~5 bits each
    assert loaded.input_spec == SPEC


def test_golden_file_decodes_and_encoding_is_stable():
    """The committed golden file must keep decoding to the same network, and packing the same
    model must keep producing the same bytes (a format change must be deliberate)."""
    model = tiny_compressed_model()
    data, _ = pack_model(model, SPEC)
    golden = GOLDEN / "lenet300-pruned-shared-v1.dsz"
    assert golden.exists(), "run tests/fileformat/make_golden.py to create the golden file"
    gold = golden.read_bytes()
    loaded = ds.load(gold)
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.dense_state_dict()[name], t)
    assert data == gold


def test_every_truncation_and_flip_of_a_model_file_raises_format_error():
    model = tiny_compressed_model()
    data, _ = pack_model(model, SPEC)
    step = max(1, len(data) // 400)
    for cut in range(0, len(data), step):
        with pytest.raises(FormatError):
            ds.load(data[:cut])
    rng = np.random.default_rng(0)
    for i in rng.choice(len(data), 300, replace=False):
        bad = bytearray(data)
        bad[i] ^= 1 << int(rng.integers(8))
        with pytest.raises(FormatError):
            ds.load(bytes(bad))


def _rewrite(data: bytes, edit) -> bytes:
    parsed = unpack(data)
    header = dict(parsed.header)
    header.pop("sections")
    sections = {k: bytes(v) for k, v in parsed.sections.items()}
    edit(header, sections)
    return pack(header, sections)


@pytest.mark.parametrize(
    "edit, error, match",
    [
        (lambda h, s: h.update(format="onnx"), InvalidHeader, "format"),
        (lambda h, s: h.pop("graph"), InvalidHeader, "keys"),
        (lambda h, s: h["tensors"].pop("fc1.weight"), InvalidHeader, "missing"),
        (lambda h, s: s.update({"stray": b"x"}), InvalidHeader, "belong to no tensor"),
        (lambda h, s: h["tensors"]["fc1.weight"].update(shape=[300, 783]), FormatError, "shape|run|position"),
        (lambda h, s: h["tensors"]["fc1.bias"].update(shape=[2**40]), LimitExceeded, "limit"),
        (lambda h, s: h["input"].update(shape=[1, 28, 27]), InvalidHeader, "declared input shape"),
        (lambda h, s: h["input"].update(std=[0.0]), InvalidHeader, "input"),
        (lambda h, s: h["graph"]["nodes"][1].update(op="eval"), InvalidHeader, "unknown op"),
    ],
)
def test_semantically_hostile_files(edit, error, match):
    data = _rewrite(pack_model(tiny_compressed_model(), SPEC)[0], edit)
    with pytest.raises(error, match=match):
        ds.load(data)


def test_total_element_limit_is_enforced_before_decoding():
    data, _ = pack_model(tiny_compressed_model(), SPEC)
    with pytest.raises(LimitExceeded):
        ds.load(data, limits=Limits(max_total_elements=1000))
    with pytest.raises(LimitExceeded):
        read_model_file(data, Limits(max_tensor_elements=1000))


def test_pack_refuses_models_the_graph_cannot_reproduce():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)
            self.flat = nn.Flatten()

        def forward(self, x):
            return self.fc(self.flat(x))

    model = Branchy()
    ds.pack_model(model, SPEC)  # fine
    model.fc.register_forward_hook(lambda m, i, o: o * 2)  # invisible to the tracer
    with pytest.raises(ModelError, match="does not reproduce"):
        ds.pack_model(model, SPEC)


def test_missing_and_wrong_files(tmp_path):
    with pytest.raises(FormatError, match="does not exist"):
        ds.load(tmp_path / "nope.dsz")
    p = tmp_path / "model.onnx"
    p.write_bytes(b"\x08\x07\x12\x04onnx" + b"\x00" * 40)
    with pytest.raises(FormatError, match="not a deepshrink file"):
        ds.load(p)
    with pytest.raises(FormatError):
        ds.load(tmp_path)
    forged = struct.pack("<8sHHII", MAGIC, 1, 0, 2, zlib.crc32(b"{}")) + b"{}"
    with pytest.raises(InvalidHeader):
        ds.load(forged)
