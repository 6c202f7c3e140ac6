"""The everyday path, before and after, side by side in one run.

Runs the same measurements against two source trees: the current checkout and a baseline
revision (default: the last commit before issue 7's work), each in fresh processes, interleaved
round by round so that the machine's noise hits both alike. Reports medians and ratios:

* opening a file: CPU time of ``import deepshrink`` and of ``deepshrink.load`` (LeNet-300-100,
  8% density, 5-bit shared, Huffman), next to ``import torch``;
* decoding: dense weights reconstructed per second by ``decode_tensors`` on one core, for a
  36.8 M-parameter MLP (784-4096-4096-4096-10) at 8% density, 5-bit codebooks, Huffman and ANS;
* encoding: ``encode_tensor`` with automatic gap width and layout for a 4096×4096 layer at 8%
  density, 5-bit codebook (16.8 M weights);
* retraining: seconds per epoch of masked LeNet-300-100 on Fashion-MNIST, one thread;
* threads: retraining epoch and batch-64 inference at one and two torch threads (current tree).

Writes the ``everyday`` section of docs/benchmarks.md and bench/results/everyday.json.

    python bench/everyday.py [--baseline 117fc56] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, environment, update_section  # noqa: E402

WORKER = Path(__file__).resolve().parent / "_everyday_worker.py"
DENSITY = 0.08
BITS = 5


def _sparse_shared(rng: np.random.Generator, shape: tuple[int, int], density: float = DENSITY,
                   bits: int = BITS) -> np.ndarray:
    """A pruned, shared weight matrix: ``density`` of the entries survive, drawn from a normal
    distribution outside the pruned gap and snapped to ``2**bits - 1`` levels (k-means-like)."""
    n = shape[0] * shape[1]
    w = np.zeros(n, dtype=np.float32)
    keep = rng.choice(n, size=int(round(density * n)), replace=False)
    vals = rng.standard_normal(len(keep)).astype(np.float32) * 0.05
    vals += np.sign(vals) * 0.02  # nothing inside the pruned gap
    levels = np.quantile(vals, np.linspace(0, 1, (1 << bits) - 1)).astype(np.float32)
    w[keep] = levels[np.abs(vals[:, None] - levels[None, :]).argmin(axis=1)]
    return w.reshape(shape)


def _mlp_file(path: Path, coder: str, sizes: tuple[int, ...]) -> int:
    """Pack a pruned, shared MLP with the current tree; returns its parameter count."""
    import deepshrink as ds
    from deepshrink.storage import TensorCoding

    rng = np.random.default_rng(0)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(_sparse_shared(rng, (b, a))))
            lin.bias.zero_()
        layers += [lin] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    model = nn.Sequential(*layers)
    spec = ds.InputSpec(shape=(1, 28, 28), dtype="uint8", scale=1 / 255, mean=(0.0,), std=(1.0,))

    def rule(name, tensor, op, role):
        return TensorCoding(coder=coder, gap_bits=None) if role == "weight" else TensorCoding(compress=False)

    data, _ = ds.pack_model(model, spec, coding=rule)
    path.write_bytes(data)
    return sum(p.numel() for p in model.parameters())


def _lenet_file(path: Path) -> None:
    """LeNet-300-100 pruned to 8% and 5-bit shared, packed by the current tree with Huffman."""
    _mlp_file(path, "huffman", (784, 300, 100, 10))


def _tree(rev: str, into: Path) -> Path:
    """The baseline's ``src`` exported from git (no worktree state left behind)."""
    archive = into / "base.tar"
    subprocess.run(["git", "archive", "-o", str(archive), rev, "src"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "base", filter="data")
    return into / "base" / "src"


def _run(src: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("DEEPSHRINK_THREADS", None)
    proc = subprocess.run([sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} on {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="117fc56", help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (fresh processes) per measurement")
    ap.add_argument("--epochs", type=int, default=3, help="retraining epochs per epoch measurement")
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="deepshrink-bench-") as tmp_name:
        tmp = Path(tmp_name)
        trees = {"before": _tree(args.baseline, tmp), "after": ROOT / "src"}
        lenet = tmp / "lenet.dsz"
        _lenet_file(lenet)
        sizes = (784, 4096, 4096, 4096, 10)
        big = {c: tmp / f"mlp-{c}.dsz" for c in ("huffman", "ans")}
        for coder, path in tqdm(big.items(), desc="pack the 37 M MLP"):
            params = _mlp_file(path, coder, sizes)
        layer = tmp / "layer.npy"
        np.save(layer, _sparse_shared(np.random.default_rng(1), (4096, 4096)), allow_pickle=False)

        rows: dict[str, dict[str, list[dict]]] = {}

        def add(key: str, tree: str, row: dict) -> None:
            rows.setdefault(key, {}).setdefault(tree, []).append(row)

        plan = [("import_torch", ("import_torch",)), ("load", ("import_load", str(lenet)))]
        plan += [(f"decode_{c}", ("decode", str(p), "3")) for c, p in big.items()]
        plan += [(f"encode_{c}", ("encode", str(layer), c, "1")) for c in ("huffman", "ans")]
        plan += [("epoch", ("epoch", "1", str(args.epochs)))]
        threads = [(f"epoch_t{t}", ("epoch", str(t), str(args.epochs))) for t in (1, 2)]
        threads += [(f"infer64_t{t}", ("infer", str(t), "64", "200")) for t in (1, 2)]
        total = args.rounds * (2 * len(plan) + len(threads))
        with tqdm(total=total, desc="measure") as bar:
            for _ in range(args.rounds):
                for key, task in plan:
                    for tree in ("before", "after"):
                        add(key, tree, _run(trees[tree], *task))
                        bar.update()
                for key, task in threads:
                    add(key, "after", _run(trees["after"], *task))
                    bar.update()

    results = {k: {t: v for t, v in per.items()} for k, per in rows.items()}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "everyday.json").write_text(json.dumps(
        {"baseline": args.baseline, "rounds": args.rounds, "mlp_params": params, "rows": results}, indent=1))
    update_section("everyday", report(rows, args, params))
    print(report(rows, args, params))


def report(rows: dict, args: argparse.Namespace, params: int) -> str:
    def m(key: str, tree: str, field: str) -> float:
        return _median(rows[key][tree], field)

    torch_cpu = m("import_torch", "after", "import_cpu_s")
    lines = [
        "## The everyday path: before and after (issue 7)",
        "",
        f"`python bench/everyday.py --baseline {args.baseline} --rounds {args.rounds}`: the baseline "
        f"revision `{args.baseline}` and this tree measured side by side, fresh processes interleaved "
        f"round by round; medians of {args.rounds} rounds; torch threads pinned per row (one unless stated). {environment()}.",
        "",
        "| measurement | before | after | after / before |",
        "|---|---|---|---|",
    ]

    def row(label: str, key: str, field: str, fmt: str, scale: float = 1.0) -> None:
        b, a = m(key, "before", field), m(key, "after", field)
        lines.append(f"| {label} | {fmt.format(b * scale)} | {fmt.format(a * scale)} | {a / b:.2f}× |")

    row("`import deepshrink`, CPU s", "load", "import_cpu_s", "{:.3f}")
    row("`deepshrink.load` (LeNet-300-100, 8%), CPU s", "load", "load_cpu_s", "{:.3f}")
    for c in ("huffman", "ans"):
        row(f"decode {params / 1e6:.1f} M-weight MLP at 8%, {c}, M weights/s (1 core)", f"decode_{c}",
            "weights_per_s", "{:.1f}", 1e-6)
    for c in ("huffman", "ans"):
        row(f"encode a 4096×4096 layer at 8%, {c}, gap width and layout chosen, s", f"encode_{c}", "seconds",
            "{:.2f}")
        row(f"… its coded bytes ({c})", f"encode_{c}", "bytes", "{:,.0f}")
    row("retraining epoch, masked LeNet-300-100, 1 thread, s", "epoch", "seconds_per_epoch", "{:.2f}")
    lines += ["", "Targets of issue 7, from the same run:", ""]
    for tree in ("before", "after"):
        imp, load = m("load", tree, "import_cpu_s"), m("load", tree, "load_cpu_s")
        lines.append(f"- {tree}: (`import deepshrink` + `load`) / `import deepshrink` = "
                     f"{(imp + load) / imp:.2f}× (target ≤ 1.2×); `import deepshrink` / `import torch` = "
                     f"{imp / torch_cpu:.2f}× (target ≤ 1.2×; `import torch` {torch_cpu:.3f} CPU s).")
    lines.append(f"- decoding target ≥ 50 M weights/s: Huffman {m('decode_huffman', 'after', 'weights_per_s') / 1e6:.1f}, "
                 f"ANS {m('decode_ans', 'after', 'weights_per_s') / 1e6:.1f} M weights/s.")
    lines.append(f"- encoding target < 1 s: Huffman {m('encode_huffman', 'after', 'seconds'):.2f} s, "
                 f"ANS {m('encode_ans', 'after', 'seconds'):.2f} s.")
    lines += [
        "",
        "Thread count (current tree only):",
        "",
        "| measurement | 1 thread | 2 threads | 2 / 1 |",
        "|---|---|---|---|",
    ]
    for label, key, field, fmt, scale in (
        ("retraining epoch, masked LeNet-300-100, s", "epoch_t{}", "seconds_per_epoch", "{:.2f}", 1.0),
        ("LeNet-300-100 inference, batch 64, ms", "infer64_t{}", "seconds", "{:.3f}", 1e3),
    ):
        one, two = m(key.format(1), "after", field), m(key.format(2), "after", field)
        lines.append(f"| {label} | {fmt.format(one * scale)} | {fmt.format(two * scale)} | {two / one:.2f}× |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
