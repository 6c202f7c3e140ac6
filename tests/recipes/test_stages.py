"""The stage registry: every registered stage parses, writes and re-reads its settings, checks
what it cannot do, and orders itself; recipes round-trip through dicts and TOML; version-1 files load."""

from __future__ import annotations

import tomllib

import pytest
from torch import nn

import deepshrink as ds
from deepshrink.coding import Coder
from deepshrink.errors import ConfigError
from deepshrink.recipes import (
    RECIPE_VERSION,
    STAGES,
    CodeStage,
    Layer,
    LowRankStage,
    Recipe,
    Stage,
    builtin_recipes,
    load_recipe,
    register_stage,
)
from deepshrink.train import TrainConfig

#: A table with non-default settings for every stage kind; the registry test fails for a kind without one.
EXAMPLES = {
    "prune": {"kind": "prune", "steps": 2, "ramp": "cubic", "retrain": {"epochs": 1, "optimizer": "sgd", "distill": 0.5},
              "layers": {"_linear": {"sparsity": 0.9}, "fc2": {"quality": 1.5}, "re:conv.*": {"sparsity": 0.5}}},
    "lowrank": {"kind": "lowrank", "method": "slr", "importance": "taylor", "calibration": 64,
                "finetune": {"epochs": 1, "schedule": "constant"},
                "layers": {"_linear": {"rank": 0.25, "reduced_rank": 2}, "_conv": {"method": "tucker", "energy": 0.9},
                           "fc2": {"skip": True}, "fc1": {"max_drop": 1.5, "importance": "activation"}}},
    "share": {"kind": "share", "init": "density", "float16": True, "finetune": {"epochs": 1},
              "layers": {"_default": {"bits": 4}, "_conv": {"bits": 8}}},
    "quantize": {"kind": "quantize", "calibration": "percentile", "percentile": 99.9, "ttq": True, "float16": True,
                 "train": {"epochs": 1, "distill": 0.5},
                 "layers": {"_linear": {"bits": 4, "granularity": "group", "group_size": 4}, "fc3": {"levels": "ternary"},
                            "_first": {"bits": 8, "symmetric": False}, "fc2": {"skip": True}}},
    "code": {"kind": "code", "coder": "ans", "layers": {"_default": {"gap_bits": "auto"}, "fc1": {"gap_bits": 6}}},
    "distill": {"kind": "distill", "student": "lenet-300-100", "width": 0.25,
                "train": {"epochs": 1, "distill": 0.5, "temperature": 2.0}},
    "dsd": {"kind": "dsd", "retrain": {"epochs": 1, "lr": 1e-5}, "layers": {"_default": {"release": True},
                                                                         "fc3": {"release": False}}},
    "structured": {"kind": "structured", "importance": "taylor", "steps": 3, "multiple": 8, "calibration": 64,
                   "retrain": {"epochs": 1, "distill": 0.5},
                   "layers": {"_linear": {"fraction": 0.5}, "fc2": {"fraction": 0.25}, "_last": {"skip": True}}},
    "dct": {"kind": "dct", "bits": 5, "block": 4, "init": "density", "float16": False, "finetune": {"epochs": 1},
            "layers": {"_linear": {"keep": 0.1, "block": 8}, "_conv": {"threshold": 0.5, "bits": 7}}},
    "hash": {"kind": "hash", "seed": 7, "sign": False, "domain": "dct", "block": 4, "train": {"epochs": 1},
             "layers": {"_linear": {"buckets": 0.125, "domain": "weight"}, "_conv": {"buckets": 40, "sign": True}}},
}
#: One bad setting per stage kind, and what the error names.
BAD = {
    "prune": ({"steps": 0}, "steps"),
    "lowrank": ({"method": "qr"}, "method"),
    "share": ({"init": "kmeans++"}, "init"),
    "quantize": ({"calibration": "kl"}, "calibration"),
    "code": ({"coder": "zip"}, "coder"),
    "distill": ({"student": "resnet-50"}, "student"),
    "dsd": ({"layers": {"_default": {"release": 1}}}, "release"),
    "structured": ({"multiple": 0}, "multiple"),
    "dct": ({"bits": 17}, "bits"),
    "hash": ({"domain": "fourier"}, "domain"),
}


def test_every_registered_stage_has_an_example():
    assert set(STAGES) == set(EXAMPLES) == set(BAD)


@pytest.mark.parametrize("kind", list(STAGES))
def test_a_stage_round_trips_through_its_table(kind):
    cls = STAGES[kind]
    stage = cls.parse(EXAMPLES[kind], kind)
    assert isinstance(stage, Stage) and stage.kind == kind
    table = stage.to_dict()
    assert table["kind"] == kind
    again = cls.parse(table, kind)
    assert again == stage and again.to_dict() == table
    # the table holds plain values only (what TOML and JSON can hold)
    def plain(v):
        return all(plain(x) for x in v.values()) if isinstance(v, dict) else type(v) in (str, int, float, bool)
    assert plain(table)


@pytest.mark.parametrize("kind", list(STAGES))
def test_a_stage_refuses_bad_settings_and_unknown_keys(kind):
    cls = STAGES[kind]
    bad, needle = BAD[kind]
    with pytest.raises(ConfigError, match=needle):
        cls.parse({**EXAMPLES[kind], **bad}, kind)
    with pytest.raises(ConfigError, match="unknown keys"):
        cls.parse({**EXAMPLES[kind], "colour": "blue"}, kind)


@pytest.mark.parametrize("kind", list(STAGES))
def test_a_stage_checks_a_model_without_training(kind):
    """``check`` passes on a model its rules fit and says what is wrong on one they do not."""
    model = ds.build_model("lenet-300-100")
    layers = {n: Layer("linear", m) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    stage = STAGES[kind].parse(EXAMPLES[kind], kind)
    after = stage.check(layers, has_val=True)
    if kind == "distill":  # the student's layers: here the same architecture, new modules
        assert {n: a.kind for n, a in after.items()} == {n: a.kind for n, a in layers.items()}
    elif kind != "lowrank":  # a stage that stores its own form marks the layers it changed as fixed
        assert {n: (v.kind, v.module) for n, v in after.items()} == {n: (v.kind, v.module) for n, v in layers.items()}
        assert {v.fixed_by for v in after.values()} <= {None, kind if STAGES[kind].stores_form else None}
    else:  # fc1 is factorised: its factors take its place, fc2 is skipped
        assert list(after) == ["fc1.first", "fc1.second", "fc2", "fc3.first", "fc3.second"]
        with pytest.raises(ConfigError, match="max_drop.*validation"):
            stage.check(layers, has_val=False)
    conv_only = {"conv": Layer("conv", nn.Conv2d(1, 2, 3))}
    if kind in ("prune", "share"):
        selective = STAGES[kind].parse({"kind": kind, "layers": {"_linear": EXAMPLES[kind]["layers"]["_linear"
                                        if kind == "prune" else "_default"]}}, kind)
        with pytest.raises(ConfigError, match="no layer matches its rules"):
            selective.check(conv_only, has_val=True)


def test_order_and_graph_change_are_class_attributes():
    kinds = [k for k in sorted(STAGES, key=lambda k: STAGES[k].order) if k in ("prune", "lowrank", "share", "code")]
    assert kinds == ["prune", "lowrank", "share", "code"]
    assert [STAGES[k].changes_graph for k in kinds] == [False, True, False, False]
    stages = [STAGES[k].parse(EXAMPLES[k], k) for k in kinds]
    Recipe("ok", tuple(stages))
    with pytest.raises(ConfigError, match="in the order .*prune, .*lowrank, share, .*code"):
        Recipe("backwards", (stages[2], stages[0]))
    with pytest.raises(ConfigError, match="at most once"):
        Recipe("twice", (stages[0], stages[0]))


def test_a_kind_or_order_registered_twice_is_a_programming_error():
    from dataclasses import dataclass
    from typing import ClassVar

    with pytest.raises(TypeError, match="already used"):
        @register_stage
        @dataclass(frozen=True)
        class Again(Stage):
            kind: ClassVar[str] = "melt"
            order: ClassVar[int] = STAGES["prune"].order
    assert "melt" not in STAGES


def test_distills_reads_every_training_of_every_stage():
    plain = Recipe("r", (STAGES["share"].parse({"kind": "share", "layers": {"_default": {"bits": 4}}}, "s"),))
    assert not plain.distills
    assert Recipe("r", (STAGES["prune"].parse(EXAMPLES["prune"], "p"),)).distills  # retrain.distill = 0.5


@pytest.mark.parametrize("name", builtin_recipes())
def test_builtin_recipes_round_trip_through_dicts_and_toml(name, tmp_path):
    r = load_recipe(name)
    assert Recipe.from_dict(r.to_dict()) == r
    text = r.to_toml()
    assert tomllib.loads(text)["version"] == RECIPE_VERSION
    path = tmp_path / f"{name}.toml"
    path.write_text(text, "utf-8")
    assert load_recipe(path) == r


def test_a_version_1_file_loads_to_the_same_stages_as_version_2(tmp_path):
    """The recipes built in before versions existed carry none: they are version 1 and keep
    their meaning under version 2."""
    from importlib import resources

    v1 = [n for n in builtin_recipes()
          if "version" not in tomllib.loads(resources.files("deepshrink.recipes").joinpath(f"{n}.toml").read_text("utf-8"))]
    assert {"deep-compression", "deep-compression-lenet5", "lowrank-chain", "slr", "svd"} <= set(v1)
    for name in v1:
        text = resources.files("deepshrink.recipes").joinpath(f"{name}.toml").read_text("utf-8")
        v2 = tmp_path / f"{name}-v2.toml"
        v2.write_text(f"version = 2\n{text}", "utf-8")
        assert load_recipe(v2) == load_recipe(name)


@pytest.mark.parametrize("version", [0, 3, "2", True, 2.0])
def test_an_unknown_version_is_refused(tmp_path, version):
    p = tmp_path / "r.toml"
    p.write_text(f'version = {version if not isinstance(version, str) else repr(version)}\n'
                 '[[stages]]\nkind = "code"\n'.replace("True", "true"), "utf-8")
    with pytest.raises(ConfigError, match=r"version must be an integer in 1\.\.2"):
        load_recipe(p)


def test_enums_replace_free_strings():
    from deepshrink.lowrank import Importance, LowRankMethod
    from deepshrink.share import KMeansInit
    from deepshrink.train import Optimizer, Schedule

    low = STAGES["lowrank"].parse(EXAMPLES["lowrank"], "l")
    assert low.method is LowRankMethod.SLR and low.importance is Importance.TAYLOR
    rules = dict(low.layers.rules)
    assert rules["_conv"]["method"] is LowRankMethod.TUCKER and rules["fc1"]["importance"] is Importance.ACTIVATION
    assert STAGES["share"].parse(EXAMPLES["share"], "s").init is KMeansInit.DENSITY
    assert STAGES["code"].parse(EXAMPLES["code"], "c").coder is Coder.ANS
    cfg = TrainConfig(optimizer="sgd", schedule="constant")
    assert cfg.optimizer is Optimizer.SGD and cfg.schedule is Schedule.CONSTANT
    assert cfg.to_dict()["optimizer"] == "sgd" and type(cfg.to_dict()["optimizer"]) is str
    with pytest.raises(ConfigError, match=r"optimizer must be one of \['adam', 'sgd'\]"):
        TrainConfig(optimizer="lbfgs")


def test_code_stage_defaults_come_from_the_storage_defaults():
    from deepshrink.storage import DEFAULT_GAP_BITS

    code = CodeStage()
    for kind, bits in DEFAULT_GAP_BITS.items():
        assert code.gap_bits("x", kind, ["x"]) == bits
    assert CodeStage(coder="fixed").coder is Coder.FIXED
    assert LowRankStage.order < STAGES["share"].order < CodeStage.order


def test_a_named_rank_overrides_a_broader_skip_and_a_named_skip_a_broader_rank():
    """``_default = {skip}`` with ``fc2 = {rank}`` factorises fc2 only: the more specific rule
    wins, as for every other setting (it used to inherit the skip and factorise nothing)."""
    from torch import nn

    from deepshrink.recipes import Recipe

    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(8, 8))
    model.add_module("fc2", nn.Linear(8, 8))
    model.add_module("fc3", nn.Linear(8, 4))
    layers = dict(model.named_children())
    kinds = dict.fromkeys(layers, "linear")

    def plan(rules: str) -> set[str]:
        recipe = Recipe.from_dict(tomllib.loads(f'[[stages]]\nkind = "lowrank"\nmethod = "svd"\n[stages.layers]\n{rules}'))
        return set(recipe.stages[0].plans(layers, kinds)[0])

    assert plan('_default = { skip = true }\nfc2 = { rank = 2 }') == {"fc2"}
    assert plan('_linear = { rank = 2 }\nfc3 = { skip = true }') == {"fc1", "fc2"}


def test_every_layer_kind_of_the_op_registry_has_a_default_gap_width():
    """A layer op added to the registry is coded with a default width, by the code stage and by
    pack_model's default coding alike (an embedding once had none and made default_coding fail)."""
    import numpy as np

    from deepshrink.graph import OPS
    from deepshrink.pipeline.pack import default_coding
    from deepshrink.prune import layer_kinds
    from deepshrink.storage import DEFAULT_GAP_BITS

    assert set(layer_kinds()) == set(DEFAULT_GAP_BITS) and "embedding" in layer_kinds()
    for op in OPS.values():
        if op.layer_kind:
            coding = default_coding("w", np.zeros((4, 4), np.float32), op.name, "weight")
            assert coding.compress and coding.gap_bits == DEFAULT_GAP_BITS[op.layer_kind]
            assert CodeStage().gap_bits("x", op.layer_kind, ["x"]) == DEFAULT_GAP_BITS[op.layer_kind]
    assert not default_coding("b", np.zeros(4, np.float32), "linear", "bias").compress


def test_a_stage_that_would_throw_away_an_earlier_stages_work_on_a_layer_is_refused():
    """Hashing or DCT-coding a layer replaces its pruned zeros and shared values: refused by name
    before any training; the same stages on different layers compose."""
    from deepshrink.pipeline.compress import check_recipe

    model = ds.build_model("lenet-300-100")
    share = {"kind": "share", "layers": {"fc1": {"bits": 5}}}
    for later in ({"kind": "hash", "layers": {"fc1": {"buckets": 0.1}}},
                  {"kind": "dct", "layers": {"fc1": {"keep": 0.1}}}):
        bad = Recipe.from_dict({"name": "r", "stages": [share, later]})
        with pytest.raises(ConfigError, match=r"layer 'fc1' was changed by the 'share' stage; the '(hash|dct)' stage"):
            check_recipe(model, bad)
        fine = {**later, "layers": {"fc2": dict(later["layers"]["fc1"])}}
        check_recipe(model, Recipe.from_dict({"name": "r", "stages": [share, fine]}))
