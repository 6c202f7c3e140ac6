"""The ``distill`` stage and :func:`deepshrink.distill.train_student`: settings refused before any
training, the student replacing the teacher in the file, and a loss that reads the teacher."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.distill import train_student
from deepshrink.engine import native
from deepshrink.engine.export import export_c
from deepshrink.errors import ConfigError
from deepshrink.pipeline.compress import check_recipe
from deepshrink.recipes import Recipe
from deepshrink.recipes.stages import STAGES, Layer


def recipe(*stages: dict) -> Recipe:
    return Recipe.from_dict({"name": "t", "stages": list(stages)})


@pytest.fixture(scope="module")
def data(fashion):
    return fashion.subset(800, 300, 300, seed=1)


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    model = ds.build_model("lenet-5")
    ds.fit(model, data.tensors("train"), data.tensors("val"), ds.TrainConfig(epochs=2, seed=0), progress=False)
    return model


@pytest.mark.parametrize("settings, needle", [
    ({"student": "resnet-50"}, r"student must be one of \['lenet-300-100', 'lenet-5', 'narrow'\]"),
    ({"student": "mobilenet-v2"}, "pretrained network"),
    ({"student": 3}, "student"),
    ({"student": "narrow", "width": 0.0}, r"width .* must be in \(0, 1\)"),
    ({"student": "narrow", "width": 1}, r"width .* must be in \(0, 1\)"),
    ({"student": "narrow", "width": True}, "width"),
    ({"init": "pretrained"}, r"init must be one of \['random', 'teacher'\]"),
    ({"init": "teacher"}, "init = 'teacher' needs student = 'narrow'"),
    ({"train": {"distill": 1.5}}, r"train: distill .* must be in \[0, 1\]"),
    ({"train": {"temperature": 0}}, r"train: temperature must be in \(0, 100\]"),
    ({"layers": {"fc1": {}}}, "no per-layer rules"),
])
def test_bad_settings_are_refused_naming_the_setting(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        recipe({"kind": "distill", **settings})


def test_the_default_training_distills_and_the_stage_comes_first():
    stage = STAGES["distill"]()
    assert stage.distills and stage.train.distill == 0.5 and stage.train.temperature == 2.0
    assert recipe({"kind": "distill"}).distills  # so the pipeline computes the teacher's outputs
    with pytest.raises(ConfigError, match="order"):
        recipe({"kind": "prune", "layers": {"_default": {"sparsity": 0.5}}}, {"kind": "distill"})


def test_the_check_gives_the_students_layers_to_the_later_stages(teacher, data):
    # lenet-5 has conv1, conv2, fc1, fc2; the student lenet-300-100 has fc1..fc3
    ok = recipe({"kind": "distill"}, {"kind": "prune", "layers": {"fc3": {"sparsity": 0.5}}})
    check_recipe(teacher, ok)
    bad = recipe({"kind": "distill"}, {"kind": "prune", "layers": {"conv1": {"sparsity": 0.5}}})
    with pytest.raises(ConfigError, match="no layer matches the rule 'conv1'.*fc1 \\(linear\\), fc2 \\(linear\\), fc3"):
        ds.compress(teacher, data, bad, progress=False)
    narrow_rules = recipe({"kind": "distill", "student": "narrow", "width": 0.5},
                          {"kind": "lowrank", "layers": {"fc1": {"rank": 8}}})
    check_recipe(teacher, narrow_rules)


def test_a_student_that_cannot_take_the_data_is_refused_before_training(data):
    # 14×14 images: the teacher fits them, lenet-300-100 (784 inputs) does not
    small = replace(data, x_train=data.x_train[:, :, ::2, ::2], x_val=data.x_val[:, :, ::2, ::2],
                    x_test=data.x_test[:, :, ::2, ::2], input_spec=replace(data.input_spec, shape=(1, 14, 14)))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(196, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.raises(ConfigError, match=r"student 'lenet-300-100' cannot take the data's inputs \(per sample 1×14×14\)"):
        ds.compress(teacher, small, recipe({"kind": "distill", "train": {"epochs": 50}}), progress=False)
    # a teacher of 7 outputs: the student gets 7 too
    seven = nn.Sequential(nn.Flatten(), nn.Linear(784, 7))
    student = train_student(seven, data, train=ds.TrainConfig(epochs=0, distill=0.5))
    assert student.fc3.out_features == 7


@pytest.fixture(scope="module")
def distilled(teacher, data):
    r = recipe({"kind": "distill", "student": "lenet-300-100", "train": {"epochs": 1}}, {"kind": "code"})
    return ds.compress(teacher, data, r, progress=False)


def test_the_file_stores_the_trained_student(distilled, teacher, data, tmp_path):
    result = distilled
    assert [s.stage for s in result.stages] == ["baseline", "distill", "code"]
    assert result.dense_bytes == 4 * sum(p.numel() for p in teacher.parameters())  # the ratio is the teacher's
    assert result.ratio == pytest.approx(result.dense_bytes / result.file_bytes)
    detail = result.stages[1].detail
    assert detail["parameters"] == {"teacher": 431_080, "student": 266_610}
    assert detail["val_accuracy_after"] > detail["val_accuracy_before"] + 0.2
    path = tmp_path / "s.dsz"
    path.write_bytes(result.data)
    net = ds.load(path)
    stored = net.dense_state_dict()
    assert {n: tuple(t.shape) for n, t in stored.items()} == {n: tuple(t.shape) for n, t in result.model.state_dict().items()}
    assert {n.split(".")[0] for n in stored} == {"fc1", "fc2", "fc3"}
    assert ds.evaluate(net, data.tensors("test")) == pytest.approx(result.file_accuracy) and result.file_accuracy > 0.3
    out = ds.export(path, tmp_path / "s.onnx")
    assert out["argmax_agreement"] == 1.0
    assert [n.op_type for n in onnx.load(str(tmp_path / "s.onnx")).graph.node if n.op_type == "Gemm"] == ["Gemm"] * 3


def test_the_student_exports_to_the_c_engine(distilled, tmp_path):
    if native.compiler() is None:
        pytest.skip("no C compiler")
    out = export_c(distilled.data, tmp_path / "engine")
    assert out["checked"] and out["argmax_agreement"] == 1.0
    assert out["weight_bytes"] < 266_610 * 4 * 1.01


def test_the_distillation_loss_reads_the_teacher(teacher, data):
    """With a = 1 the labels are not read: on random labels the student still learns the teacher's
    predictions; with a = 0 on the same labels it learns nothing."""
    rng = np.random.default_rng(0)
    noisy = replace(data, y_train=rng.integers(0, 10, len(data.y_train)), y_val=rng.integers(0, 10, len(data.y_val)))
    x, _ = data.tensors("test")
    with torch.no_grad():
        want = teacher(x).argmax(1)

    def agreement(a: float, epochs: int) -> float:
        student = train_student(teacher, noisy, train=ds.TrainConfig(epochs=epochs, distill=a, keep_best=False), seed=0)
        with torch.no_grad():
            return float((student(x).argmax(1) == want).float().mean())

    assert agreement(1.0, 3) > 0.7
    assert agreement(0.0, 1) < 0.4


def test_train_student_is_seeded_and_leaves_the_teacher_alone(teacher, data):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = ds.TrainConfig(epochs=1, distill=0.7)
    report: dict = {}
    a = train_student(teacher, data, train=cfg, seed=5, report=report)
    b = train_student(teacher, data, train=cfg, seed=5)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    untrained = [train_student(teacher, data, train=ds.TrainConfig(epochs=0), seed=s).fc1.weight for s in (5, 6)]
    assert not torch.equal(*untrained)
    assert report["student"] == "lenet-300-100" and report["distill"] == 0.7


def test_a_narrow_student_keeps_a_fraction_of_every_hidden_layer(teacher, data):
    x = data.tensors("val")[0][:4]
    stage = STAGES["distill"](student="narrow", width=0.5)
    student = stage.build(teacher, 10, (x,))
    shapes = {n: tuple(p.shape) for n, p in student.named_parameters() if n.endswith("weight")}
    assert shapes == {"conv1.weight": (10, 1, 5, 5), "conv2.weight": (25, 10, 5, 5), "fc1.weight": (250, 400),
                      "fc2.weight": (10, 250)}
    # at random: no weight of the teacher's; from the teacher: its channels of largest L1 norm
    assert not torch.isin(student.fc2.weight, teacher.fc2.weight).any()
    warm = replace(stage, init="teacher").build(teacher, 10, (x,))
    keep = torch.sort(torch.topk(teacher.conv1.weight.abs().flatten(1).sum(1), 10).indices).values
    assert torch.equal(warm.conv1.weight, teacher.conv1.weight[keep])
    assert ds.evaluate(warm, data.tensors("val")) > 0.3  # the kept channels carry the teacher's features


def test_a_narrow_student_from_the_teacher_compresses_further(teacher, data):
    r = recipe({"kind": "distill", "student": "narrow", "width": 0.5, "init": "teacher", "train": {"epochs": 1}},
               {"kind": "prune", "steps": 1, "retrain": {"epochs": 1}, "layers": {"_default": {"sparsity": 0.5}}},
               {"kind": "code"})
    result = ds.compress(teacher, data, r, progress=False)
    assert result.stages[1].detail["parameters"]["student"] == 109_295
    assert result.stages[1].detail["val_accuracy_before"] > 0.3  # started from the teacher's channels
    assert result.ratio > 4 and result.file_accuracy > 0.4
    assert ds.load(result.data).dense_state_dict()["conv2.weight"].shape == (25, 10, 5, 5)


@pytest.mark.parametrize("name, teacher_name, student_layers", [
    ("distill-lenet-300-100", "lenet-5", ["fc1", "fc2", "fc3"]),
    ("distill-half", "lenet-300-100", ["fc1", "fc2", "fc3"]),
    ("distill-half", "lenet-5", ["conv1", "conv2", "fc1", "fc2"]),
])
def test_the_builtin_distill_recipes_fit_their_teachers(name, teacher_name, student_layers):
    r = ds.load_recipe(name)
    assert r.distills and r.stages[0].train.epochs == 20  # the stated student budget
    check_recipe(ds.build_model(teacher_name), r)
    assert list(r.stages[0].check({n: Layer("linear" if n.startswith("fc") else "conv", m) for n, m in
                                   ds.build_model(teacher_name).named_children() if hasattr(m, "weight")},
                                  has_val=True)) == student_layers
