"""The context-adaptive coder against Huffman and ANS on the same Deep-Compression files.

Each file (LeNet-300-100 and LeNet-5 on Fashion-MNIST, compressed by their built-in Deep
Compression recipes; bench/_runtime_files.py builds and caches them in ``runs/bench-runtime/``)
is decoded and its tensors stored again with the coders ``huffman``, ``ans`` and ``context``:
the same pruned and shared weights, the same graph and header fields, only the coding differs.
Every classic layout chooses its gap width per tensor (``gap_bits=None``), the most favourable
setting for Huffman and ANS. Each repacked file is checked to give the same outputs as the
original.

Reported: file bytes per coder, and per weight tensor its encoding, index bytes (gaps or the
mask) and value bytes (codebook and symbols); encode time (every tensor of the file) and decode
time (every tensor, to typed tensors), median of ``--repeats``; with ``--reference`` also the
decode time of the pure-Python coder (what runs without the C extension).

    python bench/context_coding.py                     # the cached files (built when missing)
    python bench/context_coding.py --files a.dsz b.dsz --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

CODERS = ("huffman", "ans", "context")


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def repack(path: Path, coder: str) -> dict:
    """Store the tensors of the file at ``path`` again with ``coder``; sizes, per-tensor bytes
    and the new file's bytes."""
    from deepshrink.fileformat.model_file import pack_model_file, read_model_file
    from deepshrink.storage import TensorCoding, decode_tensor, encode_tensor
    from deepshrink.util.limits import Limits

    mf = read_model_file(path)
    sections = mf.container.sections
    arrays = {n: decode_tensor(n, d, sections, Limits()) for n, d in mf.tensors_desc.items()}

    def encode_all():
        out = {}
        for n, d in mf.tensors_desc.items():
            coding = TensorCoding(compress=False) if d["enc"] == "raw" else TensorCoding(coder=coder, gap_bits=None)
            out[n] = encode_tensor(n, arrays[n], coding)
        return out

    start = time.perf_counter()
    encoded = encode_all()
    encode_s = time.perf_counter() - start
    descs = {n: e.descriptor for n, e in encoded.items()}
    secs = {k: v for e in encoded.values() for k, v in e.sections.items()}
    data, _ = pack_model_file(mf.graph, mf.input_spec, descs, secs, mf.meta)
    tensors = []
    for n, e in encoded.items():
        if mf.tensors_desc[n]["enc"] == "raw":
            continue
        r = e.report
        tensors.append({"tensor": n, "shape": list(r.shape), "kept": r.nonzero, "encoding": r.encoding,
                        "grid": e.descriptor.get("grid"), "index_bytes": r.index_bytes, "value_bytes": r.weight_bytes,
                        "bytes": r.total_bytes})
    return {"coder": coder, "file_bytes": len(data), "encode_s": encode_s, "tensors": tensors, "data": data}


def decode_seconds(data: bytes, repeats: int) -> float:
    from deepshrink.fileformat.model_file import read_model_file
    from deepshrink.storage import decode_typed
    from deepshrink.util.limits import Limits

    mf = read_model_file(data)

    def run():
        for n, d in mf.tensors_desc.items():
            decode_typed(n, d, mf.container.sections, Limits())

    return _median_seconds(run, repeats)


def same_outputs(original: Path, data: bytes) -> bool:
    import deepshrink as ds
    from deepshrink.fileformat.model_file import read_model_file

    a, b = ds.load(original), ds.load(data)
    x = torch.rand(16, *read_model_file(original).input_spec.shape)
    with torch.no_grad():
        return bool(torch.equal(a(x), b(x)))


def run(files: list[Path], repeats: int, reference: bool) -> list[dict]:
    from deepshrink.coding import _util

    out = []
    for path in files:
        rows = []
        for coder in CODERS:
            r = repack(path, coder)
            r["decode_s"] = decode_seconds(r["data"], repeats)
            if reference and coder == "context":
                fast, _util.FAST = _util.FAST, None
                try:
                    r["decode_reference_s"] = decode_seconds(r["data"], 1)
                finally:
                    _util.FAST = fast
            r["same_outputs"] = same_outputs(path, r.pop("data"))
            rows.append(r)
        out.append({"file": path.name, "original_bytes": path.stat().st_size, "coders": rows})
    return out


def print_tables(results: list[dict]) -> None:
    for f in results:
        base = {r["coder"]: r["file_bytes"] for r in f["coders"]}
        print(f"\n{f['file']} (as stored: {f['original_bytes']:,} B)")
        print(f"{'coder':8} {'file B':>8} {'vs huffman':>10} {'vs ans':>7} {'encode ms':>9} {'decode ms':>9}  same outputs")
        for r in f["coders"]:
            ref = f" (Python: {1e3 * r['decode_reference_s']:.0f} ms)" if "decode_reference_s" in r else ""
            print(f"{r['coder']:8} {r['file_bytes']:>8,} {100 * (r['file_bytes'] / base['huffman'] - 1):>+9.1f}% "
                  f"{100 * (r['file_bytes'] / base['ans'] - 1):>+6.1f}% {1e3 * r['encode_s']:>9.1f} "
                  f"{1e3 * r['decode_s']:>9.1f}  {r['same_outputs']}{ref}")
        print(f"{'tensor':14} {'shape':>12} {'kept':>7}  " + "  ".join(f"{c + ' idx/val (enc)':>34}" for c in CODERS))
        per = {r["coder"]: {t["tensor"]: t for t in r["tensors"]} for r in f["coders"]}
        for name, t0 in per["huffman"].items():
            cells = []
            for c in CODERS:
                t = per[c][name]
                enc = t["encoding"].split("/")[-1] + (f" {t['grid'][0]}x{t['grid'][1]}" if t["grid"] else "")
                cells.append(f"{t['index_bytes']:>7,}/{t['value_bytes']:>7,} ({enc})".rjust(34))
            print(f"{name:14} {'x'.join(map(str, t0['shape'])):>12} {t0['kept']:>7,}  " + "  ".join(cells))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", nargs="*", type=Path, help="Deep-Compression .dsz files (default: bench/_runtime_files.py's)")
    p.add_argument("--repeats", type=int, default=5, help="decode timings: median of this many runs")
    p.add_argument("--reference", action="store_true", help="also time the pure-Python context decoder")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    files = args.files
    if not files:
        from _runtime_files import ensure_files

        files = [path for _, recipe, path in ensure_files(threads=1) if recipe.startswith("deep-compression")]
    results = run(files, args.repeats, args.reference)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print_tables(results)
    return 0 if all(r["same_outputs"] for f in results for r in f["coders"]) else 1


if __name__ == "__main__":
    sys.exit(main())
