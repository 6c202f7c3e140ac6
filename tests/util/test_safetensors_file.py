"""The deterministic safetensors writer: the reference reader loads it, and the same tensors and
metadata always give the same bytes (the reference writer orders metadata at random)."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from deepshrink.util.safetensors_file import save_safetensors


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "fc.weight": torch.randn(3, 4, generator=g), "fc.bias": torch.randn(3, generator=g),
        "bn.num_batches_tracked": torch.tensor(7), "empty": torch.zeros(0, 2), "half": torch.ones(5, dtype=torch.bfloat16),
        "mask": torch.tensor([True, False, True]), "codes": torch.arange(6, dtype=torch.uint8).reshape(2, 3),
        "strided": torch.arange(12.0).reshape(3, 4).t(),
    }


def test_round_trip_through_the_reference_reader(tmp_path):
    t = _tensors()
    meta = {"format": "deepshrink-dense", "input": '{"shape": [1]}', "note": "ü"}
    size = save_safetensors(t, tmp_path / "a.safetensors", meta)
    assert size == (tmp_path / "a.safetensors").stat().st_size
    back = load_file(str(tmp_path / "a.safetensors"))
    assert set(back) == set(t) and all(torch.equal(back[k], t[k]) and back[k].dtype == t[k].dtype for k in t)
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        assert f.metadata() == meta


def test_same_input_same_bytes(tmp_path):
    meta = {f"key{i}": str(i) for i in range(20)}  # enough keys that a random order shows
    save_safetensors(_tensors(), tmp_path / "a.safetensors", meta)
    save_safetensors(dict(reversed(list(_tensors().items()))), tmp_path / "b.safetensors", dict(reversed(meta.items())))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_same_layout_as_the_reference_writer_without_metadata(tmp_path):
    t = {k: v.contiguous() for k, v in _tensors().items()}
    save_safetensors(t, tmp_path / "ours.safetensors")
    save_file(t, str(tmp_path / "ref.safetensors"))
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
