"""Per-layer sensitivity: settings change one layer, are measured, and leave the model as it was."""

import numpy as np
import pytest
import torch

import deepshrink as ds
from deepshrink.analysis.sweep import TECHNIQUES, combos, measure, shared_weight, weight_bytes
from deepshrink.errors import ConfigError
from deepshrink.prune import magnitude_mask


def _val(ctx):
    return lambda m: ctx.evaluate(m, "val")


def test_measuring_leaves_every_weight_bit_for_bit(trained, ctx):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    measure(trained, "fc1", combos(["prune", "share"], {"prune": (0.9,), "share": (3,)}), _val(ctx))
    measure(trained, "fc2", combos(["svd"], {"svd": (0.1,)}), _val(ctx))
    after = trained.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(trained.fc2).__name__ == "Linear"


def test_no_change_scores_the_dense_model_and_pruning_costs_bytes_and_accuracy(trained, ctx):
    pts = measure(trained, "fc1", combos(["prune"], {"prune": (0.0, 0.5, 0.9, 0.99)}), _val(ctx))
    assert pts[0].val == pytest.approx(ctx.evaluate(trained, "val"))
    sizes = [p.bytes for p in pts]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 20
    assert pts[-1].val < pts[0].val - 0.01  # 99 % of the first layer gone, no retraining


def test_bytes_are_what_the_packer_stores_for_that_layer(trained, ctx, fashion_small):
    (p,) = measure(trained, "fc1", [{"prune": 0.9, "share": 4}], _val(ctx), coder="ans")
    m = ds.build_model("lenet-300-100")
    m.load_state_dict(trained.state_dict())
    with torch.no_grad():
        w = m.fc1.weight
        w.copy_(shared_weight(w * magnitude_mask(w, sparsity=0.9), 4))
    from deepshrink.pipeline.pack import pack_model
    from deepshrink.storage import TensorCoding

    def coding(name, tensor, op, role):
        return TensorCoding(coder="ans", gap_bits=None) if name == "fc1.weight" else TensorCoding(compress=False)

    _, report = pack_model(m, fashion_small.input_spec, coding=coding)
    stored = next(t for t in report.tensors if t.name == "fc1.weight")
    assert p.bytes == stored.total_bytes
    assert p.setting == {"prune.sparsity": 0.9, "share.bits": 4.0}


def test_shared_weight_keeps_zeros_and_has_at_most_2_to_the_bits_values():
    w = torch.randn(50, 40)
    w[w.abs() < 0.5] = 0
    s = shared_weight(w, 3)
    assert torch.equal(s == 0, w == 0)
    assert len(torch.unique(s[s != 0])) <= 7


def test_quantize_stores_its_form_at_the_real_width(trained):
    w = trained.fc2.weight.detach()
    b8 = weight_bytes("fc2.weight", TECHNIQUES["quantize"].apply(trained.fc2, w, 8, {}).weight, "fixed",
                      TECHNIQUES["quantize"].apply(trained.fc2, w, 8, {}).form)
    b4 = weight_bytes("fc2.weight", TECHNIQUES["quantize"].apply(trained.fc2, w, 4, {}).weight, "fixed",
                      TECHNIQUES["quantize"].apply(trained.fc2, w, 4, {}).form)
    assert w.numel() <= b8 < 1.1 * w.numel() and b4 < 0.55 * b8


def test_factorisations_replace_the_layer_and_cannot_be_composed(trained, ctx):
    pts = measure(trained, "fc2", combos(["svd"], {"svd": (0.05, 0.5)}), _val(ctx))
    assert pts[0].bytes < pts[1].bytes and pts[0].val <= pts[1].val + 0.01
    with pytest.raises(ConfigError, match="cannot follow"):
        measure(trained, "fc2", [{"prune": 0.5, "svd": 0.5}], _val(ctx))
    with pytest.raises(ConfigError, match="unknown technique"):
        combos(["pruning"])


def test_combos_is_the_product_of_the_grids():
    c = combos(["prune", "share"], {"prune": (0.5, 0.9), "share": (2, 4, 8)})
    assert len(c) == 6 and c[0] == {"prune": 0.5, "share": 2} and c[-1] == {"prune": 0.9, "share": 8}
    assert len(combos(["share"])) == len(TECHNIQUES["share"].grid)
    assert np.all(np.diff(TECHNIQUES["prune"].grid) > 0)
