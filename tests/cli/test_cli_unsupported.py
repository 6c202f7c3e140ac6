"""A model with several unsupported operations is refused before training, all of them listed."""

import json

import numpy as np

from deepshrink.cli import main
from deepshrink.models.loading import save_weights


def test_compress_lists_every_unsupported_operation(tmp_path, capsys, monkeypatch):
    (tmp_path / "badmodels.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Bad(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(784, 10)\n"
        "        self.act = nn.ELU()\n"
        "    def forward(self, x):\n"
        "        return torch.cumsum(self.act(self.fc(x.flatten(1))), 1).roll(1, 1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from badmodels import Bad

    save_weights(Bad(), tmp_path / "w.safetensors")
    rng = np.random.default_rng(0)
    x, y = (rng.random((90, 28, 28)) * 255).astype(np.uint8), rng.integers(0, 3, 90)
    np.savez(tmp_path / "toy.npz", x_train=x[:70], y_train=y[:70], x_test=x[70:], y_test=y[70:])
    code = main(["compress", "--model", "badmodels:Bad", "--weights", str(tmp_path / "w.safetensors"),
                 "--data", str(tmp_path / "toy.npz"), "--val-size", "10", "-o", str(tmp_path / "o.dsz"),
                 "--json", "--no-progress"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert code == 2 and out["type"] == "UnsupportedOperationError"
    assert [p.split(":")[0] for p in out["problems"]] == [
        "module 'act' (ELU)", "function 'cumsum' at node 'cumsum'", "method 'roll' at node 'roll'"
    ]
    assert all(p in out["error"] for p in out["problems"])
    assert not (tmp_path / "o.dsz").exists()
