"""compress --target-bytes / --target-ratio / --max-drop through the command line."""

from pathlib import Path

import pytest

import deepshrink as ds


@pytest.fixture(scope="module")
def base(tmp_path_factory, fashion):
    from deepshrink.cli import main

    path = tmp_path_factory.mktemp("w") / "base.safetensors"
    assert main(["train", "--model", "lenet-300-100", "--limit", "2000", "--epochs", "2", "-o", str(path),
                 "--no-progress", "--json"]) == 0
    return path


def _compress(cli, base, out, *extra):
    return cli("compress", "--model", "lenet-300-100", "--weights", str(base), "--limit", "2000", "-o", str(out),
               *extra)


def test_target_bytes_writes_a_file_within_budget_and_the_recipe_it_chose(cli, base, fast_recipe, tmp_path):
    out = tmp_path / "m.dsz"
    code, res = _compress(cli, base, out, "--recipe", str(fast_recipe), "--target-bytes", "30000")
    assert code == 0, res
    assert out.stat().st_size == res["file_bytes"] <= 30000
    recipe_file = Path(res["budget"]["recipe_file"])
    assert recipe_file == tmp_path / "m.recipe.toml"
    chosen = ds.load_recipe(recipe_file)  # an ordinary recipe: rerun it, edit it
    assert set(chosen.stages[0].targets({"fc1": "linear", "fc2": "linear", "fc3": "linear"})) == {"fc1", "fc2", "fc3"}
    assert res["budget"]["target"] == {"bytes": 30000}
    assert all(r["met"] for r in res["budget"]["runs"][-1:])


@pytest.mark.parametrize("extra, words", [
    (("--max-drop", "-1"), "finite number >= 0"),
    (("--target-bytes", "0"), "≥ 1"),
    (("--target-ratio", "0.5"), ">= 1"),
    (("--target-bytes", "100"), "header, biases"),
    (("--target-bytes", "20000", "--max-drop", "1"), "one of --target-bytes"),
    (("--recipe", "svd", "--max-drop", "1"), "no stage whose per-layer setting"),
])
def test_bad_targets_exit_2_with_a_message_and_no_file(cli, base, tmp_path, extra, words):
    out = tmp_path / "m.dsz"
    code, res = _compress(cli, base, out, *extra)
    assert code == 2 and words in res["error"], res
    assert not out.exists() and not (tmp_path / "m.recipe.toml").exists()
