"""The attack corpus: hostile deepshrink files with VALID checksums, one per hole found in issue 7.

``attack_cases(tmp_path)`` writes every case under ``tmp_path`` and returns ``[(name, path)]``.
Each must be refused with a :class:`~deepshrink.errors.FormatError` subclass by ``ds.load``, by
``info(path, decode=True)`` and by every CLI command that reads a file, quickly and without a big
allocation. ``heavy_valid_cases(tmp_path)`` returns files that are legitimate but used to be slow
(they must open fast). Most cases start from the real golden LeNet-300-100 file; the rest are
small hand-made networks. Use from another test module with::

    sys.path.insert(0, str(Path(__file__).parents[1] / "attacks"))
    from attack_corpus import attack_cases
"""

from __future__ import annotations

import copy
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deepshrink.coding import Coder, encode_stream
from deepshrink.fileformat.container import _PREFIX, FLAG_ZLIB, MAGIC, VERSION, pack, unpack
from deepshrink.storage import TensorCoding, encode_tensor

GOLDEN = Path(__file__).parents[1] / "fileformat" / "golden" / "lenet300-pruned-shared-v1.dsz"
ANS_CONSTANT = encode_stream(np.zeros(1 << 16, np.int64), 2, Coder.ANS, bits=1)  # any long run of symbol 0

Header = dict[str, Any]
Sections = dict[str, bytes]


def golden() -> tuple[Header, Sections]:
    """The golden file's header (without its section table) and sections, ready to edit."""
    c = unpack(GOLDEN.read_bytes())
    header = copy.deepcopy(c.header)
    del header["sections"]
    return header, {k: bytes(v) for k, v in c.sections.items()}


def pack_nan(header: Header, sections: Sections) -> bytes:
    """Like :func:`container.pack`, but JSON may hold NaN (which the writer refuses)."""
    header = {**header, "sections": [[k, len(v), zlib.crc32(v)] for k, v in sections.items()]}
    stored = zlib.compress(json.dumps(header, allow_nan=True).encode())
    return struct.pack("<8sHHII", MAGIC, VERSION, 1, len(stored), zlib.crc32(stored)) + stored + b"".join(sections.values())


def spec(shape: list[int], dtype: str = "float32") -> dict[str, Any]:
    return {"shape": shape, "dtype": dtype, "scale": 1.0, "mean": [0.0], "std": [1.0]}


def network(nodes: list[dict], output: str, input_spec: dict, tensors: dict[str, Any], sections: Sections,
            meta: dict | None = None, producer: str = "attack") -> bytes:
    header = {"format": "deepshrink", "producer": producer, "input": input_spec,
              "graph": {"nodes": nodes, "output": output}, "tensors": tensors, "meta": meta or {}}
    return pack(header, sections)


def constant_weight(name: str, shape: list[int], value: float = 0.5) -> tuple[dict, Sections]:
    """A tensor of ``shape`` holding one value, as a 1-entry codebook with an ANS stream of a few
    bytes: a valid stream for any element count (the compression-ratio bomb)."""
    n = int(np.prod(shape))
    desc = {"shape": shape, "dtype": "float32", "enc": "codebook", "k": 1, "layout": "dense",
            "sym": {"coder": "ans", "n": n, "bits": 1}}
    return desc, {f"{name}:cb": np.float32(value).tobytes(), f"{name}:sym": ANS_CONSTANT}


def linear(name: str, inp: str, weight: str) -> dict:
    return {"name": name, "op": "linear", "inputs": [inp], "params": {"weight": weight}}


def edit(fn: Callable[[Header, Sections], Any]) -> bytes:
    header, sections = golden()
    fn(header, sections)
    return pack(header, sections)


# ---------------------------------------------------------------------------------------------
# the cases


def _ans_bomb(two: bool) -> bytes:
    """2 x 2^27 (or one 2^27) weights of one ANS symbol in a few hundred bytes."""
    w1, s1 = constant_weight("a.weight", [2**13, 2**14])
    nodes, tensors, sections = [linear("a", "input", "a.weight")], {"a.weight": w1}, dict(s1)
    if two:
        w2, s2 = constant_weight("b.weight", [2**14, 2**13])
        nodes.append(linear("b", "a", "b.weight"))
        tensors["b.weight"] = w2
        sections |= s2
    return network(nodes, nodes[-1]["name"], spec([2**14]), tensors, sections)


def _conv_macs_bomb() -> bytes:
    """A 1x1 convolution of 4096 -> 4096 channels on 64x64: 6.9e10 MACs per sample, with a
    header big enough that the compression-ratio check passes and the MAC bound must act."""
    w, s = constant_weight("c.weight", [4096, 4096, 1, 1])
    node = {"name": "c", "op": "conv2d", "inputs": ["input"], "params": {"weight": "c.weight"},
            "attrs": {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}}
    pad = np.random.default_rng(0).bytes(24_000).hex()  # incompressible: the file is > 16 KiB
    return network([node], "c", spec([4096, 64, 64]), {"c.weight": w}, s, meta={"pad": pad})


def _pool_work_bomb() -> bytes:
    """A 2048x2048 max-pool window slid over a 4096x4096 image: 1.8e13 reads per sample."""
    node = {"name": "p", "op": "max_pool2d", "inputs": ["input"],
            "attrs": {"kernel": [2048, 2048], "stride": [1, 1], "padding": [0, 0], "ceil_mode": False}}
    return network([node], "p", spec([1, 4096, 4096]), {}, {})


def _float_sparse_nan() -> bytes:
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    enc = encode_tensor("fc.weight", x, TensorCoding(max_codebook=1, layout="sparse"))
    if enc.descriptor["enc"] != "float":
        raise RuntimeError(f"expected a float/sparse tensor, got {enc.descriptor['enc']}")
    sections = dict(enc.sections)
    dtype = np.dtype(enc.descriptor["dtype"]).newbyteorder("<")
    sections["fc.weight:val"] = np.full(enc.descriptor["n"], np.nan, dtype).tobytes()
    return network([linear("fc", "input", "fc.weight")], "fc", spec([4]), {"fc.weight": enc.descriptor}, sections)


def _rename_node(h: Header, old: str, new: str) -> None:
    for node in h["graph"]["nodes"]:
        node["name"] = new if node["name"] == old else node["name"]
        node["inputs"] = [new if i == old else i for i in node["inputs"]]


def _set_stream(h: Header, s: Sections) -> None:
    s["fc3.weight:sym"] = bytes(len(s["fc3.weight:sym"]))  # valid CRC, but not a Huffman stream


def _replace_node(index: int, node: dict) -> Callable[[Header, Sections], None]:
    return lambda h, s: h["graph"]["nodes"].__setitem__(index, {**h["graph"]["nodes"][index], **node})


def _cases() -> dict[str, Callable[[], bytes]]:
    cb_nan = lambda h, s: s.update({"fc2.weight:cb": np.full(30, np.nan, np.float32).tobytes()})  # noqa: E731
    return {
        # resource bombs
        "ans_bomb_2x2^27_weights": lambda: _ans_bomb(two=True),
        "ans_bomb_2^27_weights": lambda: _ans_bomb(two=False),
        "conv_macs_bomb": _conv_macs_bomb,
        "pool_work_bomb": _pool_work_bomb,
        "input_2^34_values": lambda: network(
            [{"name": "r", "op": "relu", "inputs": ["input"]}], "r", spec([1, 131072, 131072]), {}, {}),
        # non-finite numbers
        "codebook_nan": lambda: edit(cb_nan),
        "codebook_inf": lambda: edit(lambda h, s: s.update({"fc3.weight:cb": np.full(27, np.inf, np.float32).tobytes()})),
        "raw_bias_inf": lambda: edit(lambda h, s: s.update({"fc3.bias": np.full(10, -np.inf, np.float32).tobytes()})),
        "raw_bias_nan": lambda: edit(lambda h, s: s.update({"fc1.bias": np.full(300, np.nan, np.float32).tobytes()})),
        "float_sparse_nan": _float_sparse_nan,
        "input_std_zero": lambda: edit(lambda h, s: h["input"].update(std=[0.0])),
        "input_std_tiny": lambda: edit(lambda h, s: h["input"].update(std=[1e-300])),
        "input_mean_nan": lambda: pack_nan(*_edited(lambda h, s: h["input"].update(mean=[float("nan")]))),
        # wrong types in descriptors
        "dtype_is_a_list": lambda: edit(lambda h, s: h["tensors"]["fc1.bias"].update(dtype=["float32"])),
        "enc_is_a_list": lambda: edit(lambda h, s: h["tensors"]["fc1.bias"].update(enc=["raw"])),
        "layout_is_an_object": lambda: edit(lambda h, s: h["tensors"]["fc1.weight"].update(layout={"a": 1})),
        "coder_is_a_list": lambda: edit(lambda h, s: h["tensors"]["fc1.weight"]["sym"].update(coder=["ans"])),
        "k_is_a_float": lambda: edit(lambda h, s: h["tensors"]["fc1.weight"].update(k=30.0)),
        "stream_is_a_list": lambda: edit(lambda h, s: h["tensors"]["fc1.weight"].update(gap=[5])),
        "shape_of_strings": lambda: edit(lambda h, s: h["tensors"]["fc1.bias"].update(shape=["300"])),
        "params_is_a_list": lambda: edit(_replace_node(1, {"params": ["fc1.weight"]})),
        # shapes
        "shape_0_by_2^63": lambda: edit(lambda h, s: h["tensors"]["fc3.bias"].update(shape=[0, 2**63])),
        "shape_2^40": lambda: edit(lambda h, s: h["tensors"]["fc3.bias"].update(shape=[2**40])),
        "shape_does_not_chain": lambda: edit(lambda h, s: h["tensors"]["fc2.bias"].update(shape=[99])),
        # stray sections
        "stray_section_with_tensor_prefix": lambda: edit(lambda h, s: s.update({"fc1.weight:zzz": b"x"})),
        "stray_40000_empty_sections": lambda: edit(lambda h, s: s.update({f"fc1.weight:{i}": b"" for i in range(40_000)})),
        "stray_10mb_section": lambda: edit(lambda h, s: s.update({"fc1.bias:pad": bytes(10 << 20)})),
        "section_of_another_layout": lambda: edit(lambda h, s: s.update({"fc1.bias:cb": b"abcd"})),
        # names and attributes
        "node_name_trailing_newline": lambda: edit(lambda h, s: _rename_node(h, "flatten", "flatten\n")),
        "softmax_dim_7": lambda: edit(lambda h, s: h["graph"]["nodes"].append(
            {"name": "sm", "op": "softmax", "inputs": ["fc3"], "attrs": {"dim": 7}}) or h["graph"].update(output="sm")),
        "softmax_over_batch": lambda: edit(lambda h, s: h["graph"]["nodes"].append(
            {"name": "sm", "op": "softmax", "inputs": ["fc3"], "attrs": {"dim": 0}}) or h["graph"].update(output="sm")),
        "zero_class_output_layer": lambda: network(
            [linear("fc", "input", "w")], "fc", spec([4]), {"w": {"shape": [0, 4], "dtype": "float32", "enc": "raw"}},
            {"w": b""}),
        "conv_kernel_0x0": lambda: network(
            [{"name": "c", "op": "conv2d", "inputs": ["input"], "params": {"weight": "c.weight"},
              "attrs": {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}}],
            "c", spec([1, 8, 8]), {"c.weight": {"shape": [4, 1, 0, 0], "dtype": "float32", "enc": "raw"}},
            {"c.weight": b""}),
        "leaky_relu_slope_1e308": lambda: edit(_replace_node(2, {"op": "leaky_relu", "attrs": {"negative_slope": 1e308}})),
        "pool_kernel_over_input": lambda: network(
            [{"name": "p", "op": "max_pool2d", "inputs": ["input"],
              "attrs": {"kernel": [9, 9], "stride": [1, 1], "padding": [0, 0], "ceil_mode": False}}],
            "p", spec([1, 8, 8]), {}, {}),
        "reshape_wrong_count": lambda: edit(_replace_node(0, {"op": "reshape", "attrs": {"shape": [0, 783]}})),
        "reshape_folds_batch": lambda: edit(_replace_node(0, {"op": "reshape", "attrs": {"shape": [2, -1]}})),
        "flatten_start_dim_5": lambda: edit(_replace_node(0, {"attrs": {"start_dim": 5}})),
        "batch_norm_eps_negative": lambda: network(
            [{"name": "bn", "op": "batch_norm", "inputs": ["input"], "attrs": {"eps": -1.0},
              "params": {"running_mean": "m", "running_var": "v"}}],
            "bn", spec([4]), {k: {"shape": [4], "dtype": "float32", "enc": "raw"} for k in "mv"},
            {"m": bytes(16), "v": bytes(16)}),
        "batch_norm_negative_variance": lambda: network(
            [{"name": "bn", "op": "batch_norm", "inputs": ["input"], "attrs": {"eps": 1e-5},
              "params": {"running_mean": "m", "running_var": "v"}}],
            "bn", spec([4]), {k: {"shape": [4], "dtype": "float32", "enc": "raw"} for k in "mv"},
            {"m": bytes(16), "v": np.full(4, -1.0, np.float32).tobytes()}),
        # 10,000 elementwise ops over 4 M values: no multiply-accumulate, 4e10 operations per sample
        "relu_chain_work_bomb": lambda: network(
            [{"name": f"r{i}", "op": "relu", "inputs": ["input" if i == 0 else f"r{i - 1}"]} for i in range(10_000)],
            "r9999", spec([1 << 22]), {}, {}),
        "producer_900k_chars": lambda: edit(lambda h, s: h.update(producer="[" * 900_000)),
        # streams only a decoder checks (info must decode them when asked)
        "corrupt_stream_valid_crc": lambda: edit(_set_stream),
    }


def _edited(fn: Callable[[Header, Sections], Any]) -> tuple[Header, Sections]:
    header, sections = golden()
    fn(header, sections)
    return header, sections


def attack_cases(tmp_path: Path) -> list[tuple[str, Path]]:
    """Write every hostile case under ``tmp_path``; returns ``[(name, path)]``."""
    out = []
    folder = Path(tmp_path) / "attacks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in _cases().items():
        path = folder / f"{name}.dsz"
        path.write_bytes(make())
        out.append((name, path))
    padded = folder / "padded_8GiB_sparse.dsz"  # a valid file followed by 8 GiB of sparse zeros
    padded.write_bytes(GOLDEN.read_bytes())
    with padded.open("r+b") as f:
        f.truncate(GOLDEN.stat().st_size + (8 << 30))
    out.append(("padded_8GiB_sparse", padded))
    stray = folder / "stray_1GiB_section_sparse.dsz"
    _write_with_zero_section(stray, *golden(), "zzz", 1 << 30)
    out.append(("stray_1GiB_section_sparse", stray))
    return out


def _write_with_zero_section(path: Path, header: Header, sections: Sections, name: str, length: int) -> None:
    """A valid container whose last section, ``name``, is ``length`` zero bytes with a correct
    CRC, written as a sparse file: nothing but the header says it belongs to no tensor."""
    crc, chunk = 0, bytes(1 << 26)
    for start in range(0, length, len(chunk)):
        crc = zlib.crc32(chunk[: min(len(chunk), length - start)], crc)
    header = dict(header)
    header["sections"] = [[k, len(v), zlib.crc32(v)] for k, v in sections.items()] + [[name, length, crc]]
    stored = zlib.compress(json.dumps(header, separators=(",", ":"), sort_keys=True).encode(), 9)
    head = _PREFIX.pack(MAGIC, VERSION, FLAG_ZLIB, len(stored), zlib.crc32(stored)) + stored
    path.write_bytes(b"".join([head, *sections.values()]))
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size + length)


def heavy_valid_cases(tmp_path: Path) -> list[tuple[str, Path]]:
    """Legitimate files that used to be slow to open: they must load (quickly)."""
    folder = Path(tmp_path) / "heavy"
    folder.mkdir(parents=True, exist_ok=True)
    chain = [{"name": f"r{i}", "op": "relu", "inputs": ["input" if i == 0 else f"r{i - 1}"]} for i in range(10_000)]
    shared = [linear(f"l{i}", "input" if i == 0 else f"l{i - 1}", "w") for i in range(9_990)]
    eye = {"w": {"shape": [4, 4], "dtype": "float32", "enc": "raw"}}
    cases = {
        "chain_10000_nodes": network(chain, "r9999", spec([4]), {}, {}),
        "one_weight_9990_nodes": network(shared, "l9989", spec([4]), eye, {"w": np.eye(4, dtype=np.float32).tobytes()}),
    }
    out = []
    for name, data in cases.items():
        path = folder / f"{name}.dsz"
        path.write_bytes(data)
        out.append((name, path))
    return out
