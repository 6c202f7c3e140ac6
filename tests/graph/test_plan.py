"""Graph.plan: integer shape inference agrees with PyTorch, counts work and validates attributes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import InvalidHeader
from deepshrink.graph import INPUT, Graph, Node, build, trace
from deepshrink.models import create


def _actual_shapes(graph: Graph, net, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    env, shapes = {INPUT: x}, {}
    for node in graph.nodes:
        env[node.name] = net.run_node(node, [env[i] for i in node.inputs])
        shapes[node.name] = tuple(env[node.name].shape[1:])
    return shapes


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.pool(torch.relu(self.bn(self.conv(x))))
        y = self.avg(self.dw(y) + y)
        return torch.softmax(self.fc(self.gap(y).view(y.size(0), -1)), dim=1)


@pytest.mark.parametrize("make, shape", [
    (lambda: create("lenet-300-100"), (1, 28, 28)),
    (lambda: create("lenet-5"), (1, 28, 28)),
    (Mixed, (3, 19, 23)),
])
def test_plan_shapes_match_pytorch(make, shape):
    model = make().eval()
    graph = trace(model)
    state = model.state_dict()
    plan = graph.plan(shape, {k: tuple(v.shape) for k, v in state.items()})
    with torch.no_grad():
        actual = _actual_shapes(graph, build(graph, state), torch.randn(2, *shape))
    assert {k: v for k, v in plan.shapes.items() if k != INPUT} == actual
    assert plan.peak_elements >= max(map(lambda s: torch.Size(s).numel(), actual.values()))


def test_plan_counts_linear_macs():
    graph = trace(create("lenet-300-100"))
    shapes = {k: tuple(v.shape) for k, v in create("lenet-300-100").state_dict().items()}
    assert graph.plan((1, 28, 28), shapes).macs == 784 * 300 + 300 * 100 + 100 * 10


@pytest.mark.parametrize("kernel, stride, padding, ceil", [(2, 2, 0, False), (3, 2, 1, True), (3, 3, 0, True), (5, 2, 2, True)])
@pytest.mark.parametrize("size", [7, 8, 13])
def test_pool_output_size_matches_pytorch(kernel, stride, padding, ceil, size):
    node = Node("p", "max_pool2d", (INPUT,), {"kernel": [kernel, kernel], "stride": [stride, stride],
                                              "padding": [padding, padding], "ceil_mode": ceil})
    plan = Graph((node,), "p").plan((1, size, size), {})
    want = nn.functional.max_pool2d(torch.zeros(1, 1, size, size), kernel, stride, padding, ceil_mode=ceil).shape[1:]
    assert plan.shapes["p"] == tuple(want)


def _one(op, attrs=None, params=None, inputs=(INPUT,)):
    return Graph((Node("n", op, inputs, attrs or {}, params or {}),), "n")


@pytest.mark.parametrize("graph, shape, params, match", [
    (_one("softmax", {"dim": 7}), (10,), {}, "dim=7"),
    (_one("log_softmax", {"dim": 0}), (10,), {}, "non-batch"),
    (_one("linear", params={"weight": "w"}), (10,), {"w": (0, 10)}, "empty"),
    (_one("linear", params={"weight": "w"}), (10,), {"w": (3, 9)}, "input features"),
    (_one("conv2d", {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}, {"weight": "w"}),
     (1, 8, 8), {"w": (4, 1, 0, 0)}, "empty dimension"),
    (_one("conv2d", {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 2}, {"weight": "w"}),
     (4, 8, 8), {"w": (3, 2, 1, 1)}, "groups"),
    (_one("conv2d", {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}, {"weight": "w"}),
     (1, 8, 8), {"w": (1, 1, 9, 1)}, "does not fit"),
    (_one("max_pool2d", {"kernel": [2, 2], "stride": [1, 1], "padding": [2, 2], "ceil_mode": False}), (1, 8, 8), {}, "half"),
    (_one("reshape", {"shape": [0, 7]}), (10,), {}, "does not hold"),
    (_one("reshape", {"shape": [5, -1]}), (10,), {}, "batch"),
    (_one("reshape", {"shape": [0, 0, 0]}), (10,), {}, "lacks"),
    (_one("flatten", {"start_dim": 3}), (10,), {}, "start_dim"),
    (_one("global_avg_pool2d"), (10,), {}, "(N, C, H, W)"),
    (_one("batch_norm", {"eps": 1e-5}, {"running_mean": "m", "running_var": "v"}), (3, 4), {"m": (4,), "v": (4,)}, "channels"),
    (Graph((Node("a", "relu", (INPUT,)), Node("b", "reshape", ("a",), {"shape": [0, 2, -1]}),
            Node("c", "add", ("a", "b"))), "c"), (4,), {}, "broadcast"),
])
def test_plan_refuses_attributes_that_do_not_fit(graph, shape, params, match):
    with pytest.raises(InvalidHeader, match=match):
        graph.plan(shape, params)


@pytest.mark.parametrize("op, attrs", [("leaky_relu", {"negative_slope": 1e308}), ("batch_norm", {"eps": -1.0})])
def test_out_of_range_float_attributes_are_refused(op, attrs):
    params = {"running_mean": "m", "running_var": "v"} if op == "batch_norm" else {}
    with pytest.raises(InvalidHeader, match="expected a number"):
        _one(op, attrs, params)


def test_names_with_a_trailing_newline_are_refused():
    with pytest.raises(InvalidHeader, match="name"):
        Graph((Node("relu\n", "relu", (INPUT,)),), "relu\n")
    with pytest.raises(InvalidHeader, match="parameter name"):
        _one("linear", params={"weight": "w\n"})


def test_free_after_releases_each_value_once_after_its_last_use():
    nodes = [Node("a", "relu", (INPUT,)), Node("b", "relu", ("a",)), Node("dead", "relu", ("a",)),
             Node("c", "add", ("a", "b"))]
    assert Graph(tuple(nodes), "c").free_after() == [[INPUT], [], ["dead"], ["a", "b"]]
