"""Hostile recipe files: every malformed value is a ConfigError naming the file, never a traceback."""

from __future__ import annotations

import pytest

from deepshrink.errors import ConfigError
from deepshrink.recipes import Recipe, load_recipe
from deepshrink.train import TrainConfig

SHARE = '[[stages]]\nkind = "share"\n[stages.finetune]\n'


@pytest.mark.parametrize(
    "text, match",
    [
        ('[[stages]]\nkind = ["prune"]\n', "'kind' must be one of"),
        ('[[stages]]\nkind = { a = 1 }\n', "'kind' must be one of"),
        ('a = ' + '[' * 10_000 + ']' * 10_000 + '\n', "too deeply"),
        ('a = ' + '{ b = ' * 5_000 + '1' + ' }' * 5_000 + '\n', "too deeply"),
        (SHARE + f"seed = {2**70}\n", r"seed must be an integer in 0\.\.2\*\*63-1"),
        (SHARE + "epochs = 1000000000000000000\n", "epochs must be an integer in 0..10,000"),
        (SHARE + "epochs = 1e18\n", "epochs must be an integer"),
        (SHARE + "batch_size = 1000000000000000000\n", "batch_size must be an integer in 1..1,048,576"),
        (SHARE + "batch_size = 1e18\n", "batch_size must be an integer"),
        (SHARE + 'weight_decay = "x"\n', "weight_decay must be a number"),
        (SHARE + 'keep_best = "no"\n', "keep_best"),
        ('description = ["x"]\n[[stages]]\nkind = "code"\n', "description must be"),
        ('[[stages]]\nkind = "code"\ncoder = ["ans"]\n', "coder"),
    ],
)
def test_hostile_recipe_values(tmp_path, text, match):
    p = tmp_path / "hostile.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_recipe(p)
    assert "hostile.toml" in str(e.value)


def test_invalid_utf8_is_a_config_error(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'name = "caf\xe9"\n[[stages]]\nkind = "code"\n')
    with pytest.raises(ConfigError, match="not UTF-8") as e:
        load_recipe(p)
    assert "latin1.toml" in str(e.value)


@pytest.mark.parametrize("spec", [None, 3, b"deep-compression"])
def test_recipe_spec_of_the_wrong_type(spec):
    with pytest.raises(ConfigError, match="built-in name"):
        load_recipe(spec)


@pytest.mark.parametrize("raw", [[], "stages", {"stages": [["prune"]]}])
def test_from_dict_rejects_non_tables(raw):
    with pytest.raises(ConfigError):
        Recipe.from_dict(raw)


@pytest.mark.parametrize("bad", [dict(epochs=10**18), dict(epochs=1e18), dict(batch_size=10**18),
                                 dict(batch_size=2**20 + 1), dict(seed=2**70), dict(seed=-1), dict(seed=1.5),
                                 dict(momentum="x"), dict(keep_best=1)])
def test_train_config_bounds(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_train_config_bounds_themselves_are_allowed():
    cfg = TrainConfig(epochs=10_000, batch_size=2**20, seed=2**63 - 1)
    assert (cfg.epochs, cfg.batch_size, cfg.seed) == (10_000, 2**20, 2**63 - 1)
