import json

import pytest
import torch
from torch import nn

from deepshrink.errors import InvalidHeader, UnsupportedOperationError
from deepshrink.graph import Graph, Node, build, trace
from deepshrink.models import create


class Functional(nn.Module):
    """A user model written with functional calls, view(x.size(0), -1) and a residual add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 14 * 14, 10)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = y + self.conv(x)
        y = self.pool(y)
        y = y.view(y.size(0), -1)
        return torch.log_softmax(self.fc(self.drop(y)), dim=1)


@pytest.mark.parametrize("make", [lambda: create("lenet-300-100"), lambda: create("lenet-5"), Functional])
def test_trace_build_reproduces_model(make):
    model = make().eval()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    graph = trace(model)
    again = Graph.from_dict(json.loads(json.dumps(graph.to_dict())))
    assert again == graph
    net = build(again, model.state_dict())
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-6)


def test_unsupported_module_is_named():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.GRU(10, 10))
    with pytest.raises(UnsupportedOperationError, match="GRU"):
        trace(model)


def test_parameters_used_directly_are_rejected():
    class Raw(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(10, 784))

        def forward(self, x):
            return x.flatten(1) @ self.w.t()

    with pytest.raises(UnsupportedOperationError):
        trace(Raw())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["nodes"][0].update(op="exec"), "unknown op"),
        (lambda d: d["nodes"][1].update(inputs=["nope"]), "earlier nodes"),
        (lambda d: d["nodes"][1].update(inputs=[d["nodes"][2]["name"]]), "earlier nodes"),
        (lambda d: d.update(output="missing"), "output"),
        (lambda d: d["nodes"][1]["params"].pop("weight"), "needs parameters"),
        (lambda d: d["nodes"][0]["attrs"].update(start_dim="1"), "start_dim"),
        (lambda d: d["nodes"][0]["attrs"].update(extra=1), "attributes"),
        (lambda d: d["nodes"][2].update(name=d["nodes"][1]["name"]), "unique"),
        (lambda d: d.update(nodes=[]), "nodes"),
    ],
)
def test_hostile_graph_dicts_are_rejected(mutate, message):
    d = json.loads(json.dumps(trace(create("lenet-300-100")).to_dict()))
    mutate(d)
    with pytest.raises(InvalidHeader, match=message):
        Graph.from_dict(d)


def test_build_checks_parameter_shapes():
    model = create("lenet-300-100")
    graph = trace(model)
    state = dict(model.state_dict())
    state["fc1.bias"] = torch.zeros(299)
    with pytest.raises(InvalidHeader, match="shape"):
        build(graph, state)
    del state["fc1.weight"]
    with pytest.raises(InvalidHeader, match="missing"):
        build(graph, state)


def test_node_to_dict_omits_empty_fields():
    assert Node("r", "relu", ("input",)).to_dict() == {"name": "r", "op": "relu", "inputs": ["input"]}
