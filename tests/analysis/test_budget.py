"""The automatic budget: targets, the Lagrangian frontier, the recipe it writes, and real runs."""

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import deepshrink as ds
from deepshrink.analysis.budget import (
    CONFIDENCE,
    Allocation,
    Option,
    Target,
    TargetUnreachable,
    auto_compress,
    budget_recipe,
    frontier,
    knobs,
    last_epochs,
    scaled,
    split_check,
)
from deepshrink.errors import ConfigError

GRIDS = {"prune": (0.0, 0.8, 0.95), "share": (3, 6)}


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"),
    ({"bytes": 0}, "positive integer"),
    ({"bytes": -5}, "positive integer"),
    ({"ratio": 0.5}, ">= 1"),
    ({"ratio": math.inf}, "finite"),
    ({"max_drop": -0.1}, r"\[0, 100\]"),
    ({"max_drop": math.nan}, r"\[0, 100\]"),
    ({"bytes": 100, "max_drop": 1.0}, "exactly one"),
])
def test_bad_targets_are_refused_with_the_reason(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Target(**kwargs)


def test_a_ratio_is_a_byte_budget_of_the_dense_size():
    assert Target(ratio=40).max_bytes(1_066_440) == 26_661
    assert Target(max_drop=0.5).max_bytes(1_000) is None


# Drops on a 0.01-point grid, as measured drops are (accuracy differences on at most 10,000
# samples): sums of them are then equal up to float rounding (about 1e-14, which the frontier and
# the check below both treat as a tie) or apart by at least 0.01. Arbitrary floats make near-ties
# like 4.6e-12 against 0.0, which neither a tolerance of 1e-12 nor of 1e-9 orders the same way.
options_st = st.lists(st.tuples(st.integers(1, 10_000), st.integers(0, 5_000).map(lambda c: c / 100)),
                      min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(options_st, min_size=1, max_size=3))
def test_the_frontier_is_the_pareto_set_of_all_combinations(layers):
    opts = {f"l{i}": [Option({"prune": float(j)}, b, d) for j, (b, d) in enumerate(o)] for i, o in enumerate(layers)}
    front = frontier(opts)
    every = [(sum(o.bytes for o in c), sum(o.drop for o in c)) for c in itertools.product(*opts.values())]
    assert front[0].bytes == min(b for b, _ in every)  # λ = 0: the smallest file
    assert front[-1].drop == pytest.approx(min(d for _, d in every))  # the most accurate
    for a in front:
        assert not any(b <= a.bytes and d < a.drop - 1e-9 for b, d in every)
    # and it is the whole Pareto set: every undominated combination is on it
    def dominated(b, d):
        return any(b2 <= b and d2 <= d + 1e-9 and (b2 < b or d2 < d - 1e-9) for b2, d2 in every)

    pareto = {(b, round(d, 6)) for b, d in every if not dominated(b, d)}
    assert {(a.bytes, round(a.drop, 6)) for a in front} == pareto
    assert [a.bytes for a in front] == sorted(a.bytes for a in front)
    assert all(x.drop > y.drop for x, y in zip(front, front[1:]))


def test_the_chosen_settings_are_an_ordinary_recipe(quick_recipe, ctx, tmp_path):
    alloc = Allocation({"fc1": Option({"prune": 0.95, "share": 3}, 1, 0.0),
                        "fc2": Option({"prune": 0.5, "share": 6}, 1, 0.0),
                        "fc3": Option({"prune": 0.0, "share": 8}, 1, 0.0)}, 3, 0.0)
    r = budget_recipe(quick_recipe, alloc, ctx.kinds)
    prune = r.stages[0].targets(ctx.kinds)
    assert prune == {"fc1": {"sparsity": 0.95}, "fc2": {"sparsity": 0.5}, "fc3": {"sparsity": 0.0}}
    assert r.stages[1].bits(ctx.kinds) == {"fc1": 3, "fc2": 6, "fc3": 8}
    assert r.stages[2] == quick_recipe.stages[2]  # the code stage is left alone
    path = tmp_path / "chosen.toml"
    path.write_text(r.to_toml())
    assert ds.load_recipe(path) == r


def test_probes_scale_the_training_and_a_recipe_without_settings_is_refused(quick_recipe):
    s = scaled(ds.load_recipe("deep-compression"), 0.25)
    assert s.stages[0].retrain.epochs == 2 and s.stages[0].steps == 2 and s.stages[1].finetune.epochs == 1
    assert knobs(quick_recipe) == ["prune", "share"]
    with pytest.raises(ConfigError, match="no stage whose per-layer setting"):
        knobs(ds.load_recipe("svd"))
    with pytest.raises(ConfigError, match="method 'soft'"):
        knobs(ds.load_recipe("soft-sharing"))


def test_target_bytes_gives_a_file_within_the_budget(trained, fashion_small, quick_recipe):
    b = auto_compress(trained, fashion_small, quick_recipe, Target(bytes=40_000), grids=GRIDS, progress=False)
    assert b.result.file_bytes <= 40_000
    assert b.overhead_bytes + b.allocation.bytes <= 40_000
    # the most accurate allocation that fits: the next frontier point would not
    i = b.frontier.index(b.allocation)
    assert i == len(b.frontier) - 1 or b.overhead_bytes + b.frontier[i + 1].bytes > 40_000
    assert ds.load(b.result.data) is not None
    assert b.recipe.stages[0].targets({"fc1": "linear", "fc2": "linear", "fc3": "linear"}).keys() == {"fc1", "fc2", "fc3"}


def test_max_drop_gives_the_smallest_file_its_runs_found_within_the_drop(trained, fashion_small, quick_recipe):
    b = auto_compress(trained, fashion_small, quick_recipe, Target(max_drop=2.0), grids=GRIDS, progress=False)
    i = b.frontier.index(b.allocation)
    (chosen,) = [p for p in b.probes if p.index == i and not p.search]
    # confirmed at the default confidence: its drop on the confirm half plus z standard errors
    # (paired, 500 samples) is within the target
    z = b.target.z
    assert b.target.confidence == CONFIDENCE and z > 0.8
    assert chosen.confirmed and chosen.confirm_se > 0 and chosen.confirm_drop + z * chosen.confirm_se <= 2.0
    assert chosen.file_bytes == b.result.file_bytes and b.check is chosen
    # every retraining kept its last epoch: nothing in a run selected on validation
    assert all(not getattr(st, t).keep_best for st in b.recipe.stages for t in st.trainings)
    # the runs saw the search half only; the confirm half judged the chosen file alone
    search, held = split_check(fashion_small)
    assert b.check_samples == len(held.y_val) == 500 and len(search.y_val) == 500
    assert b.result.split_sizes["val"] == 500
    assert [p.index for p in b.probes if p.confirmed is not None][-1] == i
    from deepshrink.pipeline.context import CompressContext
    from deepshrink.train import get_objective

    for part, drop_, se_ in ((held, chosen.confirm_drop, chosen.confirm_se), (search, chosen.val_drop, chosen.val_se)):
        judge = CompressContext.create(trained, part, get_objective("classify"), progress=False)
        dense_right = judge.per_sample(trained, "val")
        file_right = judge.per_sample(ds.load(b.result.data), "val")
        assert set(dense_right.unique().tolist()) <= {0.0, 1.0} and len(dense_right) == 500
        drop = 100 * (judge.evaluate(trained, "val") - judge.evaluate(ds.load(b.result.data), "val"))
        assert drop == pytest.approx(drop_, abs=1e-4)
        diff = (dense_right - file_right).numpy()
        assert se_ == pytest.approx(100 * diff.std(ddof=1) / np.sqrt(500), rel=1e-6)
    # every smaller point that was run missed the target on the search half, or was not confirmed;
    # the confirm half judged only points the search half passed
    assert all((not p.met and p.val_drop + z * p.val_se > 2.0) or p.confirmed is False
               for p in b.probes if p.index < i)
    assert all(p.met for p in b.probes if p.confirmed is not None)
    out = b.to_dict()
    assert out["target"] == {"max_drop": 2.0, "confidence": CONFIDENCE}
    assert (out["check_drop"], out["check_se"]) == (chosen.confirm_drop, chosen.confirm_se)


def test_a_file_the_search_half_passes_is_returned_only_when_the_confirm_half_agrees(trained, fashion_small,
                                                                                     quick_recipe):
    # relabel the confirm half with the dense model's own predictions: the dense model scores 100 %
    # there, so every disagreement of a compressed file is a loss, far more than on the search half
    from dataclasses import replace as dc_replace

    import torch

    order = np.random.default_rng(0).permutation(len(fashion_small.y_val))
    held = np.sort(order[: len(order) // 2])
    with torch.no_grad():
        own = trained(fashion_small.tensors("val")[0]).argmax(1).numpy()
    y_val = fashion_small.y_val.copy()
    y_val[held] = own[held].astype(y_val.dtype)
    data = dc_replace(fashion_small, y_val=y_val)
    log = []
    try:
        b = auto_compress(trained, data, quick_recipe, Target(max_drop=2.0), grids=GRIDS, progress=False,
                          log=log.append)
    except TargetUnreachable:
        b = None
    rejected = [m for m in log if m.startswith("confirm half") and m.endswith("-> not confirmed")]
    assert rejected, log  # the search settled on a file the confirm half did not accept
    refused = [p for p in (b.probes if b is not None else []) if p.confirmed is False]
    if b is not None:  # what it returns instead is confirmed, and larger: the search resumed above the refused
        assert b.check.confirmed and b.check_drop + b.target.z * b.check_se <= 2.0
        assert refused and all(p.file_bytes < b.result.file_bytes and p.met for p in refused)


def test_confidence_half_accepts_on_the_drop_alone_and_out_of_range_is_refused():
    assert Target(max_drop=1.0, confidence=0.5).z == 0.0
    assert Target(max_drop=1.0, confidence=0.975).z == pytest.approx(1.96, abs=1e-3)
    for bad in (0.4, 1.0, True, "0.8", float("nan")):
        with pytest.raises(ConfigError, match="confidence"):
            Target(max_drop=1.0, confidence=bad)
    assert "at 0.8 confidence" in Target(max_drop=0.5, confidence=0.8).describe()


def test_unreachable_targets_name_the_closest_point(trained, fashion_small, quick_recipe):
    with pytest.raises(TargetUnreachable, match="header, biases"):
        auto_compress(trained, fashion_small, quick_recipe, Target(bytes=500), grids=GRIDS, progress=False)
    with pytest.raises(TargetUnreachable, match="smallest it reaches is about"):
        auto_compress(trained, fashion_small, quick_recipe, Target(bytes=3_000), grids=GRIDS, progress=False)
    with pytest.raises(TargetUnreachable, match="closest lost"):
        auto_compress(trained, fashion_small, quick_recipe, Target(max_drop=0.5),
                      grids={"prune": (0.99,), "share": (1,)}, progress=False)


def test_a_large_frontier_is_thinned_evenly_in_log_bytes_keeping_both_ends():
    opts = {f"l{i}": [Option({"prune": float(j)}, 10 + 7 * j + i, 100.0 / (1 + j)) for j in range(40)]
            for i in range(3)}
    full = frontier(opts, max_points=100_000)
    thin = frontier(opts, max_points=30)
    assert len(thin) <= 32 < len(full)
    assert (thin[0].bytes, thin[-1].bytes) == (full[0].bytes, full[-1].bytes)


def test_noisy_drops_are_made_monotone_in_sparsity_and_bits():
    from deepshrink.analysis.budget import options
    from deepshrink.analysis.sweep import Point

    vals = {(0.5, 3): 0.88, (0.5, 5): 0.90, (0.8, 3): 0.89, (0.8, 5): 0.87, (0.9, 3): 0.85, (0.9, 5): 0.86}
    pts = [Point({"prune.sparsity": s, "share.bits": b}, 100, v) for (s, b), v in vals.items()]
    raw = {(o.setting["prune"], o.setting["share"]): o.drop for o in options(pts, 0.90, monotone=False)}
    fit = {(o.setting["prune"], o.setting["share"]): o.drop for o in options(pts, 0.90)}
    assert raw[(0.8, 3)] == pytest.approx(1.0) and raw[(0.5, 3)] == pytest.approx(2.0)
    for b in (3, 5):
        assert fit[(0.5, b)] <= fit[(0.8, b)] + 1e-9 <= fit[(0.9, b)] + 2e-9
    for s in (0.5, 0.8, 0.9):
        assert fit[(s, 3)] >= fit[(s, 5)] - 1e-9
    assert fit[(0.5, 3)] == pytest.approx(1.5)  # pooled with its neighbour, not raised to the worst


def test_recovery_measures_each_sparsity_after_retraining_and_leaves_the_model(trained, ctx, quick_recipe):
    import torch

    from deepshrink.analysis.budget import measure_recovery

    before = {k: v.clone() for k, v in trained.state_dict().items()}
    pts = measure_recovery(trained, ctx, ["prune", "share"], quick_recipe.stages[0].retrain,
                           grids={"prune": (0.0, 0.9, 0.98), "share": (2, 6)}, samples=512)
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    fc1 = {(p.setting["prune.sparsity"], p.setting["share.bits"]): p for p in pts["fc1"]}
    assert set(fc1) == {(s, b) for s in (0.0, 0.9, 0.98) for b in (2, 6)}
    assert fc1[(0.98, 6)].bytes < fc1[(0.9, 6)].bytes < fc1[(0.0, 6)].bytes
    assert fc1[(0.9, 2)].bytes < fc1[(0.9, 6)].bytes
    base = ctx.evaluate(trained, "val")
    # one epoch of retraining keeps a 90 %-pruned first layer close to the dense score
    assert fc1[(0.9, 6)].val > base - 0.1


def test_the_confirm_samples_are_disjoint_from_the_search_samples(fashion_small):
    search, held = split_check(fashion_small)
    a = {x.tobytes() for x in search.x_val}
    b = {x.tobytes() for x in held.x_val}
    assert len(search.y_val) + len(held.y_val) == len(fashion_small.y_val) and not (a & b)
    assert len(search.y_train) == len(fashion_small.y_train) and len(search.y_test) == len(fashion_small.y_test)


def test_the_runs_keep_their_last_epoch_and_nothing_else_changes(quick_recipe):
    assert any(getattr(st, t).keep_best for st in quick_recipe.stages for t in st.trainings)
    last = last_epochs(quick_recipe)
    for a, b in zip(quick_recipe.stages, last.stages, strict=True):
        assert a.trainings == b.trainings
        for t in a.trainings:
            assert not getattr(b, t).keep_best
            assert replace(getattr(b, t), keep_best=getattr(a, t).keep_best) == getattr(a, t)
        assert replace(b, **{t: getattr(a, t) for t in a.trainings}) == a


def test_the_control_run_is_the_same_retraining_with_nothing_pruned(trained, ctx, quick_recipe):
    import copy
    from dataclasses import replace

    import torch

    from deepshrink.analysis.budget import retrain_drift, short_context

    before = {k: v.clone() for k, v in trained.state_dict().items()}
    short = short_context(ctx, 512)
    config = replace(quick_recipe.stages[0].retrain, epochs=1)
    evaluate = lambda m: float(ctx.evaluate(m, "val"))  # noqa: E731
    drift = retrain_drift(trained, short, config, (0.0, 0.5, 0.9), evaluate)
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert list(drift) == [0.0, 0.5, 0.9] and drift[0.0] == 0.0
    assert 0.0 <= drift[0.5] <= drift[0.9]
    # by hand: two epochs of the same retraining on a copy, nothing pruned
    m = copy.deepcopy(trained)
    losses = []
    for _ in range(2):
        short.fit(m, config, desc="test")
        losses.append(max(0.0, evaluate(trained) - evaluate(m)))
    if losses[0] <= losses[1]:  # already monotone: the control is the raw losses
        assert (drift[0.5], drift[0.9]) == pytest.approx(tuple(losses))
    else:  # pooled
        assert drift[0.5] == pytest.approx(sum(losses) / 2) == pytest.approx(drift[0.9])
