import pytest

from deepshrink.coding import Coder
from deepshrink.errors import ConfigError
from deepshrink.recipes import CodeStage, LayerRules, PruneStage, Recipe, ShareStage, builtin_recipes, load_recipe


def test_builtin_deep_compression_matches_the_paper_defaults():
    assert "deep-compression" in builtin_recipes()
    r = load_recipe("deep-compression")
    assert [s.kind for s in r.stages] == ["prune", "share", "code"]
    share = r.stages[1]
    order = ["conv1", "fc1", "fc2"]
    assert share.layers.resolve("conv1", "conv", order)["bits"] == 8
    assert share.layers.resolve("fc1", "linear", order)["bits"] == 5
    assert r.code_stage.coder is Coder.HUFFMAN
    assert r.with_coder("ans").code_stage.coder is Coder.ANS


def test_rule_precedence():
    rules = LayerRules.parse(
        {"_default": {"sparsity": 0.5, "quality": 1.0}, "_linear": {"sparsity": 0.9}, "_last": {"sparsity": 0.7},
         "re:fc[0-9]": {"sparsity": 0.8}, "fc2": {"sparsity": 0.1}},
        {"sparsity": (int, float), "quality": (int, float)}, "t",
    )
    order = ["conv", "fc1", "fc2", "out"]
    assert rules.resolve("conv", "conv", order) == {"sparsity": 0.5, "quality": 1.0}
    assert rules.resolve("fc1", "linear", order)["sparsity"] == 0.8
    assert rules.resolve("fc2", "linear", order)["sparsity"] == 0.1
    assert rules.resolve("out", "linear", order)["sparsity"] == 0.7
    # alternatives: a more specific quality replaces a generic sparsity
    rules = LayerRules.parse({"_linear": {"sparsity": 0.9}, "fc3": {"quality": 0.5}},
                             {"sparsity": (int, float), "quality": (int, float)}, "t")
    assert rules.resolve("fc3", "linear", ["fc3"], exclusive=[{"sparsity", "quality"}]) == {"quality": 0.5}


def test_recipe_from_user_file(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(
        'name = "mine"\n[[stages]]\nkind = "share"\n[stages.layers]\n_default = { bits = 4 }\n'
        '[[stages]]\nkind = "code"\ncoder = "ans"\n'
    )
    r = load_recipe(p)
    assert r.name == "mine" and isinstance(r.stages[0], ShareStage) and r.code_stage.coder is Coder.ANS
    assert r.code_stage.layers.resolve("x", "conv", ["x"])["gap_bits"] == 8  # default rules


@pytest.mark.parametrize(
    "text, match",
    [
        ('[[stages]]\nkind = "melt"\n', "kind"),
        ('[[stages]]\nkind = "code"\n[[stages]]\nkind = "prune"\n', "order"),
        ('[[stages]]\nkind = "prune"\nsteps = 0\n', "steps"),
        ('[[stages]]\nkind = "prune"\n[stages.layers]\n_default = { sparsity = 1.5 }\n', "sparsity"),
        ('[[stages]]\nkind = "prune"\n[stages.layers]\n_default = { spars = 0.5 }\n', "unknown setting"),
        ('[[stages]]\nkind = "prune"\n[stages.layers]\n_everything = { sparsity = 0.5 }\n', "special key"),
        ('[[stages]]\nkind = "prune"\n[stages.layers]\n"re:(" = { sparsity = 0.5 }\n', "regular expression"),
        ('[[stages]]\nkind = "share"\n[stages.finetune]\nepochs = -1\n', "epochs"),
        ('[[stages]]\nkind = "share"\n[stages.finetune]\nlearning_rate = 1\n', "unknown settings"),
        ('[[stages]]\nkind = "code"\ncoder = "zip"\n', "coder"),
        ('[[stages]]\nkind = "code"\n[stages.layers]\n_default = { gap_bits = "best" }\n', "gap_bits"),
        ('stages = 3\n', "list"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { rank = 0 }\n', "rank"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { rank = 1.5 }\n', "rank"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { rank = 2, energy = 0.9 }\n', "choose one"),
        ('[[stages]]\nkind = "lowrank"\nmethod = "qr"\n', "method"),
        ('[[stages]]\nkind = "lowrank"\nimportance = "vibes"\n', "importance"),
        ('[[stages]]\nkind = "lowrank"\ncalibration = 0\n', "calibration"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { rank = 2, max_drop = 1 }\n', "choose one"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { max_drop = -1 }\n', "max_drop"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { method = "tucker2" }\n', "method"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { reduced_rank = 1.0 }\n', "reduced_rank"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { unimportant = 1 }\n', "unimportant"),
        ('[[stages]]\nkind = "lowrank"\n[stages.layers]\n_default = { importance = "grad" }\n', "importance"),
        ('[[stages]]\nkind = "share"\n[[stages]]\nkind = "lowrank"\n', "order"),
        ('name = \n', "TOML"),
    ],
)
def test_bad_recipes_raise_config_errors(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_recipe(p)


def test_unknown_recipe_name():
    with pytest.raises(ConfigError, match="neither a built-in recipe"):
        load_recipe("no-such-recipe")


def test_stage_dataclasses_validate():
    with pytest.raises(ConfigError):
        PruneStage(LayerRules((("_default", {"sparsity": 0.5, "quality": 1.0}),)))
    with pytest.raises(ConfigError):
        ShareStage(LayerRules((("_default", {"bits": 0}),)))
    with pytest.raises(ConfigError):
        CodeStage(coder="lz4")
    with pytest.raises(ConfigError):
        Recipe("empty", ())
