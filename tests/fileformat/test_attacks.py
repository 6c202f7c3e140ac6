"""Hostile files crafted by hand: each must fail with a FormatError, quickly and without large
allocations, or load and behave correctly. Found by review; kept as regression tests."""

from __future__ import annotations

import json
import resource
import time

import numpy as np
import pytest
import torch

import deepshrink as ds
from deepshrink.cli import main
from deepshrink.errors import FormatError, InvalidHeader, LimitExceeded
from deepshrink.fileformat.container import MAGIC, pack


def spec(shape=(4,)):
    return {"shape": list(shape), "dtype": "float32", "scale": 1.0, "mean": [0.0], "std": [1.0]}


def make(nodes, output, tensors=None, input_spec=None, producer="x", meta=None) -> bytes:
    desc, secs = {}, {}
    for name, arr in (tensors or {}).items():
        arr = np.asarray(arr, dtype=np.float32)
        desc[name] = {"shape": list(arr.shape), "dtype": "float32", "enc": "raw"}
        secs[name] = arr.tobytes()
    header = {"format": "deepshrink", "producer": producer, "input": input_spec or spec(),
              "graph": {"nodes": nodes, "output": output}, "tensors": desc, "meta": meta or {}}
    return pack(header, secs)


def lin(name, inp, w, b=None):
    params = {"weight": f"{name}.weight"} | ({"bias": f"{name}.bias"} if b is not None else {})
    return {"name": name, "op": "linear", "inputs": [inp], "params": params}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


W = {"fc.weight": np.ones((3, 4)), "fc.bias": np.zeros(3)}


def test_well_formed_handmade_file_loads():
    m = ds.load(make([lin("fc", "input", 1, 1)], "fc", W))
    assert torch.equal(m(torch.ones(2, 4)), torch.full((2, 3), 4.0))


@pytest.mark.parametrize(
    "nodes, output, tensors, input_spec, error",
    [
        # integers too large for a float
        ([{"name": "a", "op": "leaky_relu", "inputs": ["input"], "attrs": {"negative_slope": 10**400}}], "a", {}, None, InvalidHeader),
        # conv groups that do not divide the channels
        ([{"name": "c", "op": "conv2d", "inputs": ["input"], "params": {"weight": "c.weight"},
           "attrs": {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 2}}],
         "c", {"c.weight": np.ones((3, 1, 1, 1))}, spec((2, 4, 4)), InvalidHeader),
        # batch norm with a bias but no weight
        ([{"name": "bn", "op": "batch_norm", "inputs": ["input"], "attrs": {"eps": 1e-5},
           "params": {"running_mean": "m", "running_var": "v", "bias": "b"}}],
         "bn", {"m": np.zeros(4), "v": np.ones(4), "b": np.ones(4)}, None, InvalidHeader),
        # flatten(0) folds the batch away
        ([{"name": "f", "op": "flatten", "inputs": ["input"], "attrs": {"start_dim": 0}}], "f", {}, None, InvalidHeader),
        # layers that do not chain
        ([lin("fc", "input", 1)], "fc", {"fc.weight": np.ones((3, 5))}, None, InvalidHeader),
        # a 16-Gi-element input
        ([{"name": "r", "op": "relu", "inputs": ["input"]}], "r", {}, spec((1, 131072, 131072)), LimitExceeded),
        # a tiny conv whose padding explodes the activation
        ([{"name": "c", "op": "conv2d", "inputs": ["input"], "params": {"weight": "c.weight"},
           "attrs": {"stride": [1, 1], "padding": [60000, 60000], "dilation": [1, 1], "groups": 1}}],
         "c", {"c.weight": np.ones((1, 1, 1, 1))}, spec((1, 1, 1)), LimitExceeded),
        # reshape + broadcasting add into a huge tensor
        ([{"name": "a", "op": "reshape", "inputs": ["input"], "attrs": {"shape": [0, 1, -1]}},
          {"name": "b", "op": "reshape", "inputs": ["input"], "attrs": {"shape": [0, -1, 1]}},
          {"name": "c", "op": "add", "inputs": ["a", "b"]}], "c", {}, spec((16384,)), LimitExceeded),
        # a section name that is not a tensor's
        ([{"name": "r", "op": "relu", "inputs": ["input"], "params": {}}], "r", {}, None, None),
    ],
)
def test_crafted_graphs_fail_fast_with_format_errors(nodes, output, tensors, input_spec, error):
    data = make(nodes, output, tensors, input_spec)
    before, t = peak_rss_mb(), time.perf_counter()
    if error is None:
        ds.load(data)
        return
    with pytest.raises(error):
        ds.load(data)
    assert time.perf_counter() - t < 2.0
    assert peak_rss_mb() - before < 200


def test_one_weight_used_by_many_nodes_counts_once_per_use():
    nodes = [lin(f"l{i}", "input" if i == 0 else f"l{i - 1}", 1) for i in range(40)]
    for n in nodes:
        n["params"] = {"weight": "w"}
    data = make(nodes, "l39", {"w": np.zeros((256, 256))}, spec((256,)))
    with pytest.raises(LimitExceeded):
        ds.load(data, limits=ds.Limits(max_total_elements=256 * 256 * 10))
    assert ds.load(data)(torch.ones(1, 256)).abs().sum() == 0  # within default limits it loads


def test_json_numbers_out_of_range():
    for bad in (b'{"a": ' + b"9" * 5000 + b', "sections": []}', b'{"a": 1e400, "sections": []}'):
        header = bad
        import struct
        import zlib

        stored = zlib.compress(header)
        data = struct.pack("<8sHHII", MAGIC, 1, 1, len(stored), zlib.crc32(stored)) + stored
        with pytest.raises(InvalidHeader):
            ds.load(data)


def test_many_sections_are_rejected_quickly():
    header = {"format": "deepshrink", "producer": "x", "input": spec(), "graph": {"nodes": [lin("fc", "input", 1)], "output": "fc"},
              "tensors": {f"t{i}": {"shape": [0], "dtype": "float32", "enc": "raw"} for i in range(3000)}, "meta": {}}
    sections = {f"s{i}": b"" for i in range(30000)}
    t = time.perf_counter()
    with pytest.raises(FormatError):
        ds.load(pack(header, sections))
    assert time.perf_counter() - t < 3.0


def test_integer_float_attributes_are_normalised_for_export(tmp_path):
    nodes = [lin("fc", "input", 1, 1), {"name": "a", "op": "leaky_relu", "inputs": ["fc"], "attrs": {"negative_slope": 1}}]
    path = tmp_path / "m.dsz"
    path.write_bytes(make(nodes, "a", W))
    out = ds.export(path, tmp_path / "m.onnx")
    assert out["argmax_agreement"] == 1.0


def test_a_layer_named_output_exports(tmp_path):
    path = tmp_path / "m.dsz"
    path.write_bytes(make([lin("output", "input", 1, 1)], "output", {"output.weight": np.eye(3, 4), "output.bias": np.zeros(3)}))
    assert ds.export(path, tmp_path / "m.onnx")["max_abs_diff"] < 1e-6


@pytest.mark.parametrize("producer", ["[/oops]", "[link=http://x]click[/link]", "\ud800"])
def test_cli_info_prints_hostile_strings_safely(tmp_path, capsys, producer):
    path = tmp_path / "m.dsz"
    try:
        path.write_bytes(make([lin("fc", "input", 1, 1)], "fc", W, producer=producer))
    except UnicodeEncodeError:
        return
    code = main(["info", str(path)])
    err = capsys.readouterr()
    assert code in (0, 2)
    if producer == "\ud800":
        assert code == 2 and "UTF-8" in err.err
    else:
        assert code == 0 and "oops" in err.out or "click" in err.out


def test_cli_json_output_is_strict_json(tmp_path, capsys):
    path = tmp_path / "m.dsz"
    path.write_bytes(make([lin("fc", "input", 1, 1)], "fc", W, meta={"acc": 0.5}))
    assert main(["info", str(path), "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert main(["info", str(tmp_path / "m.dsz" / "x"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["type"] == "FormatError"
    assert main(["export", str(path), "-o", str(tmp_path), "--format", "onnx", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["type"] in ("IsADirectoryError", "FormatError", "OSError", "PermissionError")
