"""How fragile MobileNetV2 is to pruning and to one k-means codebook per layer, before retraining.

The pretrained MobileNetV2 (batch norm folded into its convolutions, as compress does) is
judged against the dense network on 64 test crops (160 px): top-1 agreement, top-5 overlap, KL.
This is what the built-in ``mobilenet-v2`` recipe was designed from. Prints a markdown table and
writes it to docs/benchmarks.md (section ``mobilenet-sensitivity``).

    python bench/mobilenet_sensitivity.py
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import environment, update_section  # noqa: E402

DEPTHWISE = re.compile(r"features\.([0-9]+\.conv\.1|1\.conv\.0)\.0")


def main() -> None:
    from deepshrink.data.sources import open_source
    from deepshrink.graph.fold import fold_batchnorm_modules
    from deepshrink.models import create
    from deepshrink.prune import prunable_layers
    from deepshrink.share.kmeans import finalize, share_module
    from deepshrink.train import evaluate_metrics, outputs

    torch.set_num_threads(2)
    test = open_source("image-crops", sizes={"train": 8, "val": 4, "test": 64}, size=160).split("test")
    dense = create("mobilenet-v2")
    teacher = outputs(dense, test)
    folded = copy.deepcopy(dense)
    fold_batchnorm_modules(folded)
    rows = []

    def score(label: str, model) -> None:
        r = evaluate_metrics(model, test, "match-logits", teacher)
        rows.append(f"| {label} | {100 * r['top1_agreement']:.1f}% | {100 * r['top5_overlap']:.1f}% | {r['mean_kl']:.3f} |")
        print(rows[-1], flush=True)

    def prune(weight: torch.Tensor, fraction: float) -> None:
        k = int(fraction * weight.numel())
        if k:
            weight[weight.abs() <= weight.abs().flatten().kthvalue(k).values] = 0

    score("batch norm folded (reference)", folded)
    for fraction in (0.1, 0.25, 0.5):
        m = copy.deepcopy(folded)
        with torch.no_grad():
            for layer in prunable_layers(m).values():
                prune(layer.weight.data, fraction)
        score(f"every layer pruned {fraction:.0%} by magnitude", m)
    for fraction in (0.5, 0.7, 0.8):
        m = copy.deepcopy(folded)
        with torch.no_grad():
            prune(m.classifier[1].weight.data, fraction)
        score(f"the classifier alone pruned {fraction:.0%}", m)
    for name, base in (("unfolded", dense), ("folded", folded)):
        for bits in (6, 5, 4):
            for keep in (False, True):
                m = copy.deepcopy(base)
                for n, layer in prunable_layers(m).items():
                    if keep and (DEPTHWISE.fullmatch(n) or n == "features.0.0"):
                        share_module(layer, 8)
                    else:
                        share_module(layer, bits)
                finalize(m)
                what = "depthwise and first at 8 bits" if keep else "every layer"
                score(f"{name}: {bits}-bit codebook per layer, {what}", m)
    table = "\n".join([
        "## MobileNetV2: pruning and sharing before retraining", "",
        f"Command: `python bench/mobilenet_sensitivity.py`. {environment()}. 64 test crops of 160 px; against the dense "
        "network. One codebook per layer (linear init), no fine-tuning.", "",
        "| change | top-1 agreement | top-5 overlap | mean KL |", "|---|---|---|---|", *rows])
    update_section("mobilenet-sensitivity", table)


if __name__ == "__main__":
    main()
