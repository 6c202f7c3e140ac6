"""A file of several typed inputs (token ids and a mask): info, ONNX and safetensors export."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from safetensors import safe_open
from torch import nn

import deepshrink as ds
from deepshrink.errors import ConfigError, ModelError
from deepshrink.export import export, onnx_agreement
from deepshrink.graph import example_inputs, index_bounds, trace
from deepshrink.inspect import info
from deepshrink.models import num_classes
from deepshrink.pipeline.pack import check_reproduces, pack_model

VOCAB = 50


class Encoder(nn.Module):
    """Token ids and a mask → a masked mean of embeddings, projected (an embedding, not scores)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.kind = nn.Embedding(3, 8)
        self.proj = nn.Linear(8, 6)

    def forward(self, input_ids, attention_mask):
        x = self.emb(input_ids) + self.kind(torch.zeros_like(input_ids))
        w = attention_mask.unsqueeze(-1).float()
        return self.proj((x * w).sum(1) / torch.clamp(w.sum(1), min=1e-9))


def _tokens(n=5, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=g)
    mask = (torch.arange(length)[None] < torch.randint(1, length + 1, (n, 1), generator=g)).long()
    return ids * mask, mask


@pytest.fixture(scope="module")
def packed():
    torch.manual_seed(0)
    model = Encoder().eval()
    data, _ = pack_model(model, None, probe=_tokens(), meta={"objective": "match-embeddings"})
    return model, data


def test_random_probes_are_ids_the_tables_hold():
    graph = trace(Encoder(), inputs=_tokens())
    shapes = {k: tuple(v.shape) for k, v in Encoder().state_dict().items()}
    assert index_bounds(graph, shapes) == {"input_ids": VOCAB, "attention_mask": 2}
    ids, mask = example_inputs(graph, graph.input_shapes(), shapes, n=64)
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape == (64, 7)
    assert 0 <= int(ids.min()) and int(ids.max()) < VOCAB and int(ids.max()) > VOCAB // 2
    assert set(mask.unique().tolist()) == {0, 1}


def test_pack_needs_examples_to_declare_inputs_it_has_no_specification_for():
    with pytest.raises(ModelError, match=r"declares its inputs from examples: give one batch of every input"):
        pack_model(Encoder(), None)


def test_the_file_loads_reproduces_and_describes_its_inputs(packed):
    model, data = packed
    net = ds.load(data)
    ids, mask = _tokens(9, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(net(ids, mask), model(ids, mask))
    check_reproduces(model, net)  # random ids below the table sizes, read from the graph
    assert num_classes(net) is None  # compressed for embeddings: 6 numbers are no classes
    out = info(data, decode=True)
    assert out["input"] is None
    assert out["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [7]},
                             {"name": "attention_mask", "dtype": "int64", "shape": [7]}]
    assert out["outputs"] == [{"name": out["output"], "dtype": "float32", "shape": [6]}]
    json.dumps(out)  # what `deepshrink info --json` prints


def test_onnx_export_agrees_with_onnxruntime(packed, tmp_path):
    _, data = packed
    out = export(data, tmp_path / "enc.onnx")
    assert out["max_abs_diff"] < 1e-5 and out["argmax_agreement"] is None and out["num_classes"] is None
    assert [i["dtype"] for i in out["inputs"]] == ["int64", "int64"]  # what the CLI says the export takes
    proto = onnx.load(str(tmp_path / "enc.onnx"))
    assert [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input] == [
        ("input_ids", onnx.TensorProto.INT64), ("attention_mask", onnx.TensorProto.INT64)]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["inputs"])[0] == {"name": "input_ids", "dtype": "int64", "shape": [7]}
    assert "input_shape" not in meta and "num_classes" not in meta
    # on data given by the caller as well
    check = onnx_agreement(ds.load(data), (tmp_path / "enc.onnx").read_bytes(), inputs=_tokens(3, seed=2))
    assert check["max_abs_diff"] < 1e-5
    with pytest.raises(ConfigError, match=r"the network takes \['input_ids', 'attention_mask'\], got 1"):
        onnx_agreement(ds.load(data), (tmp_path / "enc.onnx").read_bytes(), inputs=_tokens()[:1])
    with pytest.raises(ConfigError, match="with_preprocessing needs a network with an input specification"):
        export(data, tmp_path / "pre.onnx", with_preprocessing=True)
    assert not (tmp_path / "pre.onnx").exists()


def test_safetensors_export_records_no_input_specification(packed, tmp_path):
    model, data = packed
    export(data, tmp_path / "enc.safetensors")
    with safe_open(str(tmp_path / "enc.safetensors"), "pt") as f:
        meta = f.metadata()
        assert json.loads(meta["input"]) is None
        assert json.loads(meta["graph"])["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": [7]}
        torch.testing.assert_close(f.get_tensor("emb.weight"), model.emb.weight.detach())
