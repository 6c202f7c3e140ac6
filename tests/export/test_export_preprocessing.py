"""ONNX export keeps the preprocessing (issue 7, silent wrong answer 5): the input spec is in the
metadata, and ``with_preprocessing`` puts the scaling and normalisation into the graph."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError, UnsupportedOperationError
from deepshrink.export import onnx_export, to_onnx
from deepshrink.graph import trace

sys.path.insert(0, str(Path(__file__).parent.parent / "fileformat"))
from test_model_file import SPEC, tiny_compressed_model  # noqa: E402


@pytest.fixture
def dsz(tmp_path):
    path = tmp_path / "m.dsz"
    ds.save_model(tiny_compressed_model(), path, SPEC)
    return path


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_onnx_metadata_holds_the_input_spec(dsz, tmp_path):
    out = ds.export(dsz, tmp_path / "m.onnx")
    props = _props(tmp_path / "m.onnx")
    assert json.loads(props["input_shape"]) == [1, 28, 28] and props["input_dtype"] == "uint8"
    assert float(props["input_scale"]) == SPEC.scale
    assert json.loads(props["input_mean"]) == list(SPEC.mean) and json.loads(props["input_std"]) == list(SPEC.std)
    assert props["num_classes"] == "10" == str(out["num_classes"])
    assert props["producer"] == "deepshrink" and props["producer_version"] == ds.__version__
    assert props["preprocessing"].startswith("not in the graph")


def test_with_preprocessing_takes_raw_uint8_like_predict(dsz, tmp_path):
    out = ds.export(dsz, tmp_path / "raw.onnx", with_preprocessing=True)
    assert out["preprocessing"] is True and out["argmax_agreement"] == 1.0 and out["max_abs_diff"] < 1e-5
    assert _props(tmp_path / "raw.onnx")["preprocessing"].startswith("in the graph")
    sess = ort.InferenceSession(str(tmp_path / "raw.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    raw = np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    got = sess.run(None, {"input": raw})[0]
    model = ds.load(dsz)
    with torch.no_grad():
        want = model(model.input_spec.apply(raw)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), model.predict(raw))


def test_with_preprocessing_per_channel_float_input():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    spec = ds.InputSpec((3, 8, 8), "float32", 1.0, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    proto = to_onnx(trace(model), model.state_dict(), spec.shape, preprocess=spec)
    raw = np.random.default_rng(1).random((4, 3, 8, 8), dtype=np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": raw})[0]
    with torch.no_grad():
        want = model(spec.apply(raw)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_exports_are_deterministic_and_get_the_umask_permissions(dsz, tmp_path):
    old = os.umask(0o022)
    try:
        for name in ("a", "b"):
            ds.export(dsz, tmp_path / f"{name}.safetensors")
            ds.export(dsz, tmp_path / f"{name}.onnx")
    finally:
        os.umask(old)
    for ext in ("safetensors", "onnx"):
        a, b = tmp_path / f"a.{ext}", tmp_path / f"b.{ext}"
        assert a.read_bytes() == b.read_bytes() and a.stat().st_mode & 0o777 == 0o644


def test_with_preprocessing_needs_onnx(dsz, tmp_path):
    with pytest.raises(ConfigError, match="ONNX"):
        ds.export(dsz, tmp_path / "m.safetensors", with_preprocessing=True)


def test_export_refuses_weights_protobuf_cannot_hold_before_converting(monkeypatch):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    monkeypatch.setattr(onnx_export, "MAX_ONNX_BYTES", 1000)
    # shapes only: converting a tensor (work done before the check) would fail on the meta device
    state = {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedOperationError, match="2 GiB"):
        to_onnx(trace(model), state, [1, 28, 28])


def test_a_weight_shared_by_many_nodes_is_converted_once():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x):
            for _ in range(50):
                x = self.fc(x)
            return x

    model = Reuse().eval()
    proto = to_onnx(trace(model), model.state_dict(), [16])
    assert [i.name for i in proto.graph.initializer] == ["fc.weight", "fc.bias"]
    assert sum(n.op_type == "Gemm" for n in proto.graph.node) == 50


def test_serialisation_failures_are_typed():
    from google.protobuf.message import EncodeError

    class Unencodable:  # what protobuf does with a message of 2 GiB or more, or a broken one
        def SerializeToString(self):
            raise EncodeError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")

    with pytest.raises(UnsupportedOperationError, match="cannot be serialised"):
        onnx_export.serialize_onnx(Unencodable())
