"""Regenerate docs/img/report-analysis.png and docs/img/report-run.png, the screenshots of both
report pages in headless chromium (scripts/ensure-chromium.sh installs it):

    PYTHONPATH=src .venv/bin/python tests/report/make_screenshots.py

LeNet-300-100 trained for 4 epochs on 12,000 Fashion-MNIST samples; the analysis document is the
tests' sample (report_helpers.analysis_doc) measured on 2,000 validation samples, the run the
deep-compression recipe with fewer epochs. About a minute on two cores.
"""

import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from report_helpers import analysis_doc  # noqa: E402
from test_browser import screenshot  # noqa: E402

import deepshrink as ds  # noqa: E402
from deepshrink.report import analysis_page, run_page, write_page  # noqa: E402

RECIPE = """name = "deep-compression-quick"
description = "the deep-compression recipe with fewer epochs"
[[stages]]
kind = "prune"
steps = 3
[stages.retrain]
epochs = 2
distill = 0.5
temperature = 2.0
[stages.layers]
_linear = { sparsity = 0.9 }
_last = { sparsity = 0.7 }
[[stages]]
kind = "share"
float16 = true
[stages.finetune]
epochs = 1
lr = 3e-4
[stages.layers]
_linear = { bits = 5 }
[[stages]]
kind = "code"
[stages.layers]
_default = { gap_bits = "auto" }
"""

torch.set_num_threads(2)
torch.manual_seed(0)
docs = Path(__file__).resolve().parents[2] / "docs" / "img"
data = ds.load_dataset("fashion-mnist", val_size=5000, seed=0).subset(12000, 2000, 2000, seed=0)
model = ds.build_model("lenet-300-100")
ds.fit(model, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=4), progress=False)
doc = analysis_doc(model, data.tensors("val"), model_name="lenet-300-100", data_name="fashion-mnist")
with tempfile.TemporaryDirectory() as tmp:
    recipe_path = Path(tmp) / "recipe.toml"
    recipe_path.write_text(RECIPE)
    result = ds.compress(model, data, ds.load_recipe(str(recipe_path)), progress=False,
                         meta={"model": "lenet-300-100", "data": "fashion-mnist", "seed": 0})
    for name, page in (("analysis", analysis_page(doc)), ("run", run_page(result, source="lenet-300-100.dsz"))):
        html = Path(tmp) / f"{name}.html"
        write_page(html, page)
        png = docs / f"report-{name}.png"
        screenshot(html, png, Path(tmp) / f"profile-{name}")
        Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)  # a third of the bytes
        print(f"docs/img/report-{name}.png")
