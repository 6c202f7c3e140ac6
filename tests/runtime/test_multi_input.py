"""Files whose network takes several typed inputs (a sentence encoder's token ids and mask):
the header declares them, the reader plans them against the limits, CompressedModel runs them
(chunked like any batch), and a header that does not fit them is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import deepshrink as ds
from deepshrink.data.spec import InputSpec
from deepshrink.errors import InvalidHeader, LimitExceeded, ModelError
from deepshrink.fileformat import container
from deepshrink.fileformat.container import Limits
from deepshrink.fileformat.model_file import check_header, pack_model_file
from deepshrink.graph import Graph, GraphInput, Node, trace
from deepshrink.storage import TensorCoding, encode_tensor

sys.path.insert(0, str(Path(__file__).parents[1] / "graph"))
from test_networks import TinyBert, _tokens  # noqa: E402


def _pack(model: torch.nn.Module, graph: Graph, spec: InputSpec | None = None) -> bytes:
    """The file bytes of ``graph`` with ``model``'s tensors stored raw."""
    state = model.state_dict()
    descs, sections = {}, {}
    for name in graph.param_names:
        enc = encode_tensor(name, state[name].float().numpy(), TensorCoding(compress=False))
        descs[name] = enc.descriptor
        sections.update(enc.sections)
    return pack_model_file(graph, spec, descs, sections)[0]


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    model = TinyBert().eval()
    ids, mask = _tokens(n=9)
    graph = trace(model, inputs=(ids, mask))
    return model, graph, _pack(model, graph), ids, mask


def test_a_two_input_file_loads_and_reproduces_the_model(bert):
    model, graph, data, ids, mask = bert
    loaded = ds.load(data)
    assert loaded.input_spec is None and loaded.graph == graph
    assert loaded.graph.to_dict()["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [12]},
                                                {"name": "attention_mask", "dtype": "int64", "shape": [12]}]
    with torch.no_grad():
        want = model(ids, mask)
        torch.testing.assert_close(loaded(ids, mask), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loaded(attention_mask=mask, input_ids=ids), want, rtol=1e-5, atol=1e-6)
    # a batch over the activation limit runs in chunks, all inputs split alike
    small = ds.load(data, limits=Limits(max_activation_elements=2 * loaded.plan.peak_elements))
    assert small.max_batch == 2
    with torch.no_grad():
        torch.testing.assert_close(small(ids, mask), want, rtol=1e-5, atol=1e-6)


def test_inputs_that_do_not_fit_the_file_are_refused(bert):
    _, _, data, ids, mask = bert
    loaded = ds.load(data)
    with pytest.raises(ModelError, match="attention_mask"):
        loaded(ids, mask[:, :5])  # a longer or shorter sequence than the limits were checked for
    with pytest.raises(ModelError, match="same N"):
        loaded(ids, mask[:3])
    with pytest.raises(ModelError, match="missing"):
        loaded(ids)
    with pytest.raises(ModelError, match="inputs"):
        loaded(ids, mask, mask)
    with pytest.raises(ModelError, match="call the model"):
        loaded.predict(ids.numpy())


def _header(data: bytes) -> dict:
    return container.unpack(data).header


def test_the_header_input_must_fit_the_graph_inputs(bert):
    _, graph, data, _, _ = bert
    h = _header(data)
    sections = list(container.unpack(data).sections)
    spec = {"shape": [12], "dtype": "float32", "scale": 1.0, "mean": [0.0], "std": [1.0]}
    with pytest.raises(InvalidHeader, match="'input': null"):
        check_header({**h, "input": spec}, sections, len(data), Limits())
    undeclared = {**h["graph"], "inputs": [{"name": i.name, "dtype": i.dtype} for i in graph.inputs]}
    with pytest.raises(InvalidHeader, match="declare its shape"):
        check_header({**h, "graph": undeclared}, sections, len(data), Limits())
    longer = {**h["graph"], "inputs": [{**i.to_dict(), "shape": [4096]} for i in graph.inputs]}
    with pytest.raises(LimitExceeded):  # the score matrix of 4096 tokens counts as activations
        check_header({**h, "graph": longer}, sections, len(data), Limits(max_activation_elements=1 << 24))


@pytest.mark.parametrize("inputs, match", [
    ("ids", "'inputs' must be a list"),
    ([], "'inputs' must be a list"),
    ([{"name": "x", "dtype": "float64"}], "dtype"),
    ([{"name": "x", "dtype": "int64", "shape": [0]}], "shape"),
    ([{"name": "x", "dtype": "int64", "shape": [2**31]}], "shape"),
    ([{"name": "x", "dtype": "int64", "shape": [True]}], "shape"),
    ([{"name": "x", "dtype": "int64", "extra": 1}], "keys"),
    ([{"name": "x\n", "dtype": "int64"}], "name"),
    ([{"name": "x", "dtype": "int64"}, {"name": "x", "dtype": "int64"}], "unique"),
    ([{"name": "x", "dtype": "int64"}], "int64"),  # relu of integers
    ([{"name": "y", "dtype": "float32"}], "inputs"),  # the node reads "x"
])
def test_hostile_graph_inputs_are_refused(inputs, match):
    graph = {"inputs": inputs, "nodes": [{"name": "r", "op": "relu", "inputs": ["x"]}], "output": "r"}
    with pytest.raises(InvalidHeader, match=match):
        Graph.from_dict(graph)


@pytest.mark.parametrize("output, match", [([], "output"), (["r", "x"], "output"), ([["r"]], "output"), (7, "output")])
def test_hostile_outputs_are_refused(output, match):
    graph = {"inputs": [{"name": "x", "dtype": "float32"}], "nodes": [{"name": "r", "op": "relu", "inputs": ["x"]}],
             "output": output}
    with pytest.raises(InvalidHeader, match=match):
        Graph.from_dict(graph)


def test_work_of_matmul_and_attention_counts_against_the_limits():
    """A tiny file cannot ask for a huge matrix product or score matrix: both are counted."""
    x = GraphInput("x", "float32", (1, 4096, 64))
    mm = Graph((Node("t", "transpose", ("x",), {"dims": [-1, -2]}), Node("m", "matmul", ("x", "t"))), "m", (x,))
    plan = mm.plan(None, {})
    assert plan.macs == 4096 * 4096 * 64
    att = Graph((Node("a", "attention", ("x", "x", "x"), {"is_causal": False, "scale": None}),), "a", (x,))
    plan = att.plan(None, {})
    assert plan.peak_elements >= 2 * 4096 * 4096 and plan.macs == 4096 * 4096 * 128
