"""Objectives on real outputs: a trained model against a perturbed copy of itself."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from deepshrink.data import Split
from deepshrink.errors import ConfigError, DataError
from deepshrink.train import OBJECTIVES, TrainConfig, evaluate, evaluate_metrics, fit, get_objective, outputs


def _data(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()  # 4 classes
    return Split.of(x, y)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 8))
    data = _data()
    fit(model, data.take(slice(0, 500)), data.take(slice(500, None)), TrainConfig(epochs=15, lr=1e-2, batch_size=32),
        progress=False)
    return model


def _perturbed(model, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=g))
    return out


def test_registry_names_and_primary_metrics():
    assert list(OBJECTIVES) == ["classify", "match-logits", "match-embeddings"]
    assert {n: o.primary for n, o in OBJECTIVES.items()} == {
        "classify": "accuracy", "match-logits": "top1_agreement", "match-embeddings": "mean_cosine"}
    with pytest.raises(ConfigError, match="objective must be one of"):
        get_objective("regress")


@pytest.mark.parametrize("name", ["match-logits", "match-embeddings"])
def test_identical_outputs_score_perfectly(trained, name):
    data = _data(seed=2)
    teacher = outputs(trained, data)
    m = evaluate_metrics(trained, data, name, teacher)
    assert set(m) >= {OBJECTIVES[name].primary}
    if name == "match-logits":
        assert m == pytest.approx({"top1_agreement": 1.0, "top5_overlap": 1.0, "mean_kl": 0.0}, abs=1e-9)
    else:
        assert m == pytest.approx({"mean_cosine": 1.0, "top10_overlap": 1.0}, abs=1e-9)
    # and the loss of the model against itself is zero
    out = trained(*data.inputs).detach()
    assert float(OBJECTIVES[name].loss(out, None, teacher, TrainConfig())) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["match-logits", "match-embeddings"])
def test_fidelity_falls_as_the_copy_drifts(trained, name):
    data = _data(seed=3)
    teacher = outputs(trained, data)
    scores = [evaluate_metrics(_perturbed(trained, s), data, name, teacher) for s in (0.05, 0.3, 1.5)]
    primary = OBJECTIVES[name].primary
    assert scores[0][primary] > scores[1][primary] > scores[2][primary]
    other = "mean_kl" if name == "match-logits" else "top10_overlap"
    if name == "match-logits":
        assert 0 < scores[0][other] < scores[1][other] < scores[2][other]
        assert scores[0]["top5_overlap"] > scores[2]["top5_overlap"]
    else:
        assert scores[0][other] > scores[2][other]


def test_classify_reports_accuracy_and_refuses_data_without_labels(trained):
    data = _data(seed=4)
    acc = evaluate(trained, data)
    want = float((trained(*data.inputs).argmax(1) == data.target).float().mean())
    assert acc == pytest.approx(want) and acc > 0.3
    assert evaluate(trained, (data.inputs[0], data.target)) == acc  # the (inputs, labels) pair of Dataset.tensors
    with pytest.raises(DataError, match="needs labels.*match-logits"):
        evaluate(trained, Split(data.inputs))


def test_match_logits_training_pulls_a_fresh_student_to_the_teacher(trained):
    """No labels at all: the student only sees the teacher's logits."""
    data = _data(seed=5)
    train, val = Split(data.take(slice(0, 500)).inputs), Split(data.take(slice(500, None)).inputs)
    t_train, t_val = outputs(trained, train), outputs(trained, val)
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 8))
    before = evaluate(student, val, "match-logits", t_val)
    hist = fit(student, train, val, TrainConfig(epochs=15, lr=1e-2, batch_size=32, temperature=2.0), progress=False,
               objective="match-logits", teacher=t_train, val_teacher=t_val)
    after = evaluate(student, val, "match-logits", t_val)
    assert hist.metric == "top1_agreement" and after == pytest.approx(hist.best_val_accuracy)
    assert after > max(0.85, before + 0.2)
    with pytest.raises(ConfigError, match="teacher"):
        fit(student, train, val, TrainConfig(epochs=1), progress=False, objective="match-logits")


def test_match_embeddings_training_aligns_directions(trained):
    data = _data(seed=6)
    encoder = trained[:2]  # the hidden layer as an embedding
    train, val = Split(data.take(slice(0, 500)).inputs), Split(data.take(slice(500, None)).inputs)
    t_train, t_val = outputs(encoder, train), outputs(encoder, val)
    torch.manual_seed(2)
    student = nn.Sequential(nn.Linear(10, 32), nn.ReLU())
    before = evaluate(student, val, "match-embeddings", t_val)
    fit(student, train, val, TrainConfig(epochs=20, lr=1e-2, batch_size=32), progress=False,
        objective="match-embeddings", teacher=t_train, val_teacher=t_val)
    m = evaluate_metrics(student, val, "match-embeddings", t_val)
    assert m["mean_cosine"] > max(0.9, before + 0.2) and m["top10_overlap"] > 0.3


def test_empty_splits_score_nan():
    model = nn.Linear(10, 4)
    empty = Split((torch.zeros(0, 10),))
    for name, obj in OBJECTIVES.items():
        assert all(math.isnan(v) for v in evaluate_metrics(model, empty, name, torch.zeros(0, 4)).values())


def test_several_inputs_train_and_evaluate_as_model_star_inputs():
    """A two-input model (token ids and a mask, as a sentence encoder takes them) trains to match
    a teacher's embeddings: batches are ``model(*split.inputs)``."""

    class Pool(nn.Module):
        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.emb = nn.Embedding(40, 12)
            self.proj = nn.Linear(12, 12)

        def forward(self, ids, mask):
            h = self.emb(ids) * mask.unsqueeze(-1)
            return self.proj(h.sum(1) / mask.sum(1, keepdim=True).clamp_min(1))

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (400, 7), generator=g)
    mask = (torch.rand(400, 7, generator=g) > 0.2).float()
    data = Split((ids, mask))
    train, val = data.take(slice(0, 300)), data.take(slice(300, None))
    teacher = Pool(0)
    t_train, t_val = outputs(teacher, train), outputs(teacher, val)
    student = Pool(1)
    before = evaluate(student, val, "match-embeddings", t_val)
    fit(student, train, val, TrainConfig(epochs=30, lr=1e-2, batch_size=32), progress=False,
        objective="match-embeddings", teacher=t_train, val_teacher=t_val)
    assert evaluate(student, val, "match-embeddings", t_val) > max(0.9, before + 0.3)


def test_evaluation_batches_shrink_for_large_inputs_and_give_the_same_outputs():
    """Outputs over a split are computed in batches bounded by input values (memory), and the
    batching does not change them."""
    from deepshrink.data import Split
    from deepshrink.train.objectives import EVAL_BATCH, EVAL_INPUT_VALUES, eval_batch, outputs

    big = Split((torch.zeros(3, 3, 160, 160),))
    assert eval_batch(big) == EVAL_INPUT_VALUES // (3 * 160 * 160) < EVAL_BATCH
    assert eval_batch(Split((torch.zeros(5, 1, 28, 28),))) == EVAL_BATCH
    assert eval_batch(Split((torch.zeros(2, 64, dtype=torch.long), torch.ones(2, 64, dtype=torch.long)))) == EVAL_BATCH
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = Split((torch.randn(7, 12),))
    assert torch.allclose(outputs(net, x, batch_size=2), outputs(net, x), atol=1e-6)


@pytest.mark.parametrize("name", ["classify", "match-logits", "match-embeddings"])
def test_per_sample_scores_average_to_the_primary_metric(trained, name):
    data = _data(seed=5)
    teacher = outputs(trained, data)
    student = _perturbed(trained, 0.3)
    obj = OBJECTIVES[name]
    per = obj.per_sample(outputs(student, data), data.target, teacher)
    assert per.dtype == torch.float64 and per.shape == (len(data),)
    assert float(per.mean()) == pytest.approx(evaluate(student, data, name, teacher), abs=1e-6)
    assert 0 < float(per.std()) and (name == "match-embeddings" or set(per.unique().tolist()) <= {0.0, 1.0})


def test_per_sample_agreement_of_a_sequence_is_the_mean_over_its_positions():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 5, 7, generator=g), torch.randn(6, 5, 7, generator=g)
    per = OBJECTIVES["match-logits"].per_sample(student, None, teacher)
    want = (student.argmax(2) == teacher.argmax(2)).double().mean(1)
    assert torch.equal(per, want)
    assert float(per.mean()) == pytest.approx(OBJECTIVES["match-logits"].metrics(student, None, teacher)["top1_agreement"])
