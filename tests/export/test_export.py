import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.export import onnx_agreement, to_onnx
from deepshrink.graph import trace

sys.path.insert(0, str(Path(__file__).parent.parent / "fileformat"))
from test_model_file import SPEC, tiny_compressed_model  # noqa: E402


class Everything(nn.Module):
    """Uses every op of the graph allow-list."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=1, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, bias=False)
        self.mp = nn.MaxPool2d(2, ceil_mode=True)
        self.ap = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.act = nn.LeakyReLU(0.1)
        self.fc = nn.Linear(4 * 15 * 15, 16)
        self.fc_gap = nn.Linear(4, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = torch.tanh(self.conv2(y)) + y
        y = self.ap(self.mp(y))
        g = self.fc_gap(torch.flatten(self.gap(y), 1))
        h = torch.sigmoid(self.fc(y.view(y.size(0), -1))) + g
        return torch.log_softmax(self.out(torch.relu(self.bn1(h))), dim=1)


def everything_model() -> Everything:
    """:class:`Everything` (seed 0) in eval mode with batch-norm statistics that are not the identity."""
    torch.manual_seed(0)
    model = Everything().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_onnx_matches_pytorch_for_every_op():
    model = everything_model()
    proto = to_onnx(trace(model), model.state_dict(), [1, 28, 28])
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(7, 1, 28, 28)
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_export_of_a_compressed_file(tmp_path):
    path = tmp_path / "m.dsz"
    ds.save_model(tiny_compressed_model(), path, SPEC)
    out = ds.export(path, tmp_path / "m.onnx")
    assert out["argmax_agreement"] == 1.0 and out["max_abs_diff"] < 1e-5
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert [n.op_type for n in proto.graph.node] == ["Reshape", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Identity"]
    loaded = ds.load(path)
    assert onnx_agreement(loaded, proto.SerializeToString(), n=64)["argmax_agreement"] == 1.0
    with pytest.raises(ds.DeepshrinkError, match="onnx"):
        ds.export(path, tmp_path / "m.pt")
