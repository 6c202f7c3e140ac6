"""Running from the compressed form: latency, flash and RAM of every runtime, side by side.

For LeNet-300-100 and LeNet-5 on Fashion-MNIST, each compressed with its Deep Compression recipe
and with the low-rank chain (files built by bench/_runtime_files.py), one thread everywhere:

* dense PyTorch: the original network (``build_model`` + the trained weights), the user's
  starting point;
* onnxruntime on the dense export and on the compact export (``export --compact``);
* deepshrink's Python runtime, ``load(mode="compressed")`` (kernels chosen per layer at load);
* the C engine (``export --format c``), timed by its own ``main --time`` (``model_run`` alone),
  compiled with ``cc -O2``.

Latency at batch 1 and 64 is the median over rounds in which every runtime takes its turn, so
noise on this shared machine hits them alike; speed-ups are ratios to dense PyTorch measured in
the same rounds. The C engine runs one sample at a time; its batch-64 figure is 64 runs.
Bytes: the C engine's flash (text + data of ``model.o``) and RAM arena; each file's size for
the others. Every runtime's predictions on the whole Fashion-MNIST test set are checked against
the file decoded to dense (they must be identical).

Then a sweep: one 1024×1024 linear layer with 5-bit shared weights at densities 2–50 %, the
engine's packed kernel and torch's CSR against dense ``F.linear``, batch 1 and 64, plotted to
docs/img/runtime-density.png.

    python bench/runtime.py [--rounds 15] [--skip-sweep]

Writes docs/benchmarks.md (section ``runtime``), bench/results/runtime.json and the plot.
Targets (issue 9): C engine ≥ 3× dense PyTorch and ≥ 1.5× onnxruntime dense at batch 1 on the
Deep Compression LeNet-300-100 file; flash ≤ 1.5× the .dsz; arena < 8 KB for LeNet-300-100.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _report import ROOT, environment, update_section  # noqa: E402
from _runtime_files import baseline_path, ensure_files  # noqa: E402
from _timing import per_call_seconds  # noqa: E402

import deepshrink as ds  # noqa: E402

BATCHES = (1, 64)
DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
SWEEP_SHAPE = (1024, 1024)
PLOT = ROOT / "docs" / "img" / "runtime-density.png"


def _ort_session(onnx_path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


class Engine:
    """The exported C engine of one file, built in ``folder``; timed through ``main --time``."""

    def __init__(self, dsz: Path, folder: Path, test_raw: np.ndarray):
        self.report = ds.export(dsz, folder, "c")
        subprocess.run(["make", "-s", "-C", str(folder)], check=True, capture_output=True)
        self.binary = folder / "main"
        self.sample = folder / "one-sample.raw"
        self.sample.write_bytes(np.ascontiguousarray(test_raw[:1]).tobytes())
        self.batch = folder / "batch.raw"
        self.batch.write_bytes(np.ascontiguousarray(test_raw[:64]).tobytes())

    def median_seconds(self, runs: int = 2000) -> float:
        """Median seconds of one ``model_run`` over ``runs`` runs (one subprocess)."""
        out = subprocess.run([str(self.binary), "--time", str(runs), str(self.sample)], check=True,
                             capture_output=True, text=True).stdout
        fields = dict(kv.split("=") for kv in out.split())
        return float(fields["median_us"]) * 1e-6

    def predict(self, raw: np.ndarray) -> np.ndarray:
        out = subprocess.run([str(self.binary)], input=np.ascontiguousarray(raw).tobytes(), check=True,
                             capture_output=True).stdout
        return np.array(out.split(), dtype=np.int64)


def bench_file(model_name: str, recipe: str, dsz: Path, data: ds.Dataset, rounds: int, work: Path) -> dict:
    """Every runtime on one file: latency at each batch, bytes, and agreement on the test set."""
    raw_test = data.x_test  # uint8 images, as the file's input spec describes them
    spec = ds.load(dsz).input_spec
    dense_file = ds.load(dsz)
    reference = dense_file.predict(raw_test)

    original = ds.build_model(model_name, num_classes=data.num_classes)
    ds.load_weights(original, baseline_path(model_name))
    original.eval()
    compressed = ds.load(dsz, mode="compressed")
    onnx_dense, onnx_compact = work / "dense.onnx", work / "compact.onnx"
    dense_export = ds.export(dsz, onnx_dense)
    compact_export = ds.export(dsz, onnx_compact, compact=True)
    sessions = {"onnxruntime dense": _ort_session(onnx_dense), "onnxruntime compact": _ort_session(onnx_compact)}
    engine = Engine(dsz, work / "engine", raw_test)

    x_all = spec.apply(torch.from_numpy(raw_test))
    agree = {"deepshrink compressed": float((compressed.predict(raw_test) == reference).mean()),
             "C engine": float((engine.predict(raw_test) == reference).mean())}
    for name, sess in sessions.items():
        got = np.concatenate([sess.run(None, {"input": x_all[i:i + 1000].numpy()})[0].argmax(1)
                              for i in range(0, len(x_all), 1000)])
        agree[name] = float((got == reference).mean())

    latency: dict[str, dict[int, list[float]]] = {}
    for batch in BATCHES:
        x = x_all[:batch].contiguous()
        xn = x.numpy()
        candidates = {
            "dense PyTorch": lambda x=x: original(x),
            "deepshrink compressed": lambda x=x: compressed(x),
            **{name: (lambda s=sess, xn=xn: s.run(None, {"input": xn})) for name, sess in sessions.items()},
        }
        with torch.no_grad():
            for fn in candidates.values():
                for _ in range(5):
                    fn()
            for _ in range(rounds):
                for name, fn in candidates.items():
                    latency.setdefault(name, {}).setdefault(batch, []).append(per_call_seconds(fn))
                latency.setdefault("C engine", {}).setdefault(batch, []).append(batch * engine.median_seconds(500))
    med = {name: {b: float(np.median(v)) for b, v in per.items()} for name, per in latency.items()}
    dsz_bytes = dsz.stat().st_size
    torch_bytes = sum(p.numel() * 4 for p in original.parameters())
    return {
        "model": model_name, "recipe": recipe, "dsz_bytes": dsz_bytes,
        "latency_s": med, "agreement": agree,
        "bytes": {
            "dense PyTorch": torch_bytes,
            "onnxruntime dense": dense_export["bytes"],
            "onnxruntime compact": compact_export["bytes"],
            "deepshrink compressed": dsz_bytes,
            "C engine": engine.report.get("flash_bytes"),
        },
        "resident_weight_bytes": compressed.net.weight_bytes_resident if hasattr(compressed.net, "weight_bytes_resident") else None,
        "kernels": compressed.kernels,
        "engine": {k: v for k, v in engine.report.items() if isinstance(v, (int, float, str, bool)) or v is None},
        "test_samples": int(len(raw_test)),
    }


def sweep(rounds: int) -> list[dict]:
    """The engine's packed kernel and torch CSR against dense F.linear on one 1024×1024 layer."""
    from deepshrink.engine import layout, native
    from deepshrink.storage import SparseCodebookTensor

    kernels = native.load()
    rows, cols = SWEEP_SHAPE
    gen = np.random.default_rng(0)
    codebook = np.sort(gen.normal(0, 0.05, 31)).astype(np.float32)
    out = []
    for density in DENSITIES:
        nnz = int(round(density * rows * cols))
        positions = np.sort(gen.choice(rows * cols, nnz, replace=False)).astype(np.int64)
        idx = gen.integers(0, 31, nnz).astype(np.uint8)
        t = SparseCodebookTensor((rows, cols), positions, idx, codebook)
        packed = layout.pack(t, "codebook/sparse")
        dense_w = torch.from_numpy(t.to_dense())
        csr_w = dense_w.to_sparse_csr()
        bias = torch.zeros(rows)
        row = {"density": density, "nnz": nnz, "packed_bytes": packed.nbytes, "dense_bytes": rows * cols * 4}
        for batch in BATCHES:
            x = torch.randn(batch, cols)
            xn = x.numpy()
            cands = {
                "dense": lambda x=x: torch.nn.functional.linear(x, dense_w, bias),
                "torch CSR": lambda x=x: torch.sparse.mm(csr_w, x.T).T,
                "engine packed": lambda xn=xn: kernels.linear(packed, xn),
            }
            times: dict[str, list[float]] = {k: [] for k in cands}
            with torch.no_grad():
                for _ in range(rounds):
                    for name, fn in cands.items():
                        times[name].append(per_call_seconds(fn))
            med = {k: float(np.median(v)) for k, v in times.items()}
            row[f"batch{batch}"] = {k: {"median_s": v, "speedup": med["dense"] / v} for k, v in med.items()}
        out.append(row)
        print(f"density {density:.0%}: " + ", ".join(
            f"b{b} engine {row[f'batch{b}']['engine packed']['speedup']:.2f}x csr {row[f'batch{b}']['torch CSR']['speedup']:.2f}x"
            for b in BATCHES), flush=True)
    return out


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    dens = [100 * r["density"] for r in rows]
    for name, color in (("engine packed", "tab:blue"), ("torch CSR", "tab:orange")):
        for batch, style in ((1, "-o"), (64, "--s")):
            ax.plot(dens, [r[f"batch{batch}"][name]["speedup"] for r in rows], style, color=color,
                    label=f"{name}, batch {batch}")
    ax.axhline(1.0, color="grey", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(dens, [f"{d:g}%" for d in dens])
    ax.minorticks_off()
    ax.set_xlabel("density (kept weights)")
    ax.set_ylabel("speed-up over dense F.linear (one thread)")
    ax.set_title(f"{SWEEP_SHAPE[0]}×{SWEEP_SHAPE[1]} layer, 5-bit shared weights")
    ax.legend(fontsize=8)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


NAMES = ("dense PyTorch", "onnxruntime dense", "onnxruntime compact", "deepshrink compressed", "C engine")


def _num(b: int | None) -> str:
    return "-" if b is None else f"{b:,}"


def _ratio(b: int | None, dsz: int) -> str:
    return "-" if b is None else f"{b / dsz:.2f}×"


def markdown(results: list[dict], sweep_rows: list[dict] | None, command: str) -> str:
    lines = ["## Running from the compressed form (issue 9)", "",
             f"Command: `{command}`  ", f"Machine: {environment()}; one thread for every runtime.  ",
             "Latency is the median over interleaved rounds (every runtime takes its turn in each round); "
             "speed-up is dense PyTorch's latency divided by the runtime's, batch 1. Dense PyTorch is the "
             "original network with its trained weights. The C engine is timed by its own `main --time` "
             "(`model_run` alone, one sample at a time; batch 64 = 64 runs). Bytes: the C engine's flash "
             "(text + data of `model.o`) and RAM arena; the file each other runtime loads. *Agree* is the "
             "share of the 10,000 Fashion-MNIST test images on which the runtime predicts what the file "
             "decoded to dense predicts.", "",
             "| model | recipe | runtime | batch 1 | speed-up | batch 64 (per sample) | speed-up | bytes | ratio to .dsz | agree |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = r["latency_s"]["dense PyTorch"]
        for name in NAMES:
            lat = r["latency_s"][name]
            b = r["bytes"][name]
            agree = r["agreement"].get(name)
            lines.append(
                f"| {r['model']} | {r['recipe']} | {name} | {1e6 * lat[1]:.1f} µs | {base[1] / lat[1]:.2f}× | "
                f"{1e6 * lat[64] / 64:.2f} µs | {base[64] / lat[64]:.2f}× | "
                f"{_num(b)} | {_ratio(b, r['dsz_bytes'])} | "
                f"{'-' if agree is None else f'{100 * agree:.2f}%'} |")
    lines += ["", "The C engine's memory, and the Python runtime's kernels:", "",
              "| model | recipe | .dsz bytes | engine flash | flash / .dsz | weight bytes (const) | RAM arena | Python runtime: kernel per layer (batch 1 / 64) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        e = r["engine"]
        flash = e.get("flash_bytes")
        ks = "; ".join(f"{k.get('layer')}: {k.get('kernel_batch1', k.get('small'))}/{k.get('kernel_batchN', k.get('large'))}"
                       for k in r["kernels"])
        lines.append(f"| {r['model']} | {r['recipe']} | {r['dsz_bytes']:,} | {_num(flash)} | "
                     f"{_ratio(flash, r['dsz_bytes'])} | {_num(e.get('weight_bytes'))} | {_num(e.get('arena_bytes'))} | {ks} |")
    if sweep_rows:
        lines += ["", f"Where sparsity starts to pay: one {SWEEP_SHAPE[0]}×{SWEEP_SHAPE[1]} linear layer with 5-bit shared "
                  "weights (31-entry codebook) at random positions, speed-up over dense `F.linear` (one thread):", "",
                  "![speed-up against density](img/runtime-density.png)", "",
                  "| density | packed bytes | engine, batch 1 | torch CSR, batch 1 | engine, batch 64 | torch CSR, batch 64 |",
                  "|---|---|---|---|---|---|"]
        for s in sweep_rows:
            lines.append(f"| {100 * s['density']:g}% | {s['packed_bytes']:,} | {s['batch1']['engine packed']['speedup']:.2f}× | "
                         f"{s['batch1']['torch CSR']['speedup']:.2f}× | {s['batch64']['engine packed']['speedup']:.2f}× | "
                         f"{s['batch64']['torch CSR']['speedup']:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite the docs from bench/results/runtime.json")
    args = parser.parse_args()
    command = "python bench/runtime.py" + (f" --rounds {args.rounds}" if args.rounds != 15 else "")
    result_path = HERE / "results" / "runtime.json"
    if args.render:
        saved = json.loads(result_path.read_text())
        for r in saved["files"]:
            r["latency_s"] = {k: {int(b): v for b, v in per.items()} for k, per in r["latency_s"].items()}
        if saved["sweep"]:
            plot(saved["sweep"])
        update_section("runtime", markdown(saved["files"], saved["sweep"], saved["command"]))
        return
    files = ensure_files()
    torch.set_num_threads(1)
    data = ds.load_dataset("fashion-mnist")
    results = []
    t0 = time.perf_counter()
    for model_name, recipe, path in files:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"== {model_name} / {recipe}", flush=True)
            results.append(bench_file(model_name, recipe, path, data, args.rounds, Path(tmp)))
    sweep_rows = None if args.skip_sweep else sweep(args.rounds)
    if sweep_rows:
        plot(sweep_rows)
    result_path.parent.mkdir(exist_ok=True)
    for r in results:  # JSON keys are strings
        r["latency_s"] = {k: {int(b): v for b, v in per.items()} for k, per in r["latency_s"].items()}
    result_path.write_text(json.dumps({"command": command, "files": results, "sweep": sweep_rows,
                                       "seconds": time.perf_counter() - t0}, indent=1, default=str))
    saved = json.loads(result_path.read_text())
    for r in saved["files"]:
        r["latency_s"] = {k: {int(b): v for b, v in per.items()} for k, per in r["latency_s"].items()}
    update_section("runtime", markdown(saved["files"], saved["sweep"], command))
    print(markdown(saved["files"], saved["sweep"], command))


if __name__ == "__main__":
    main()
