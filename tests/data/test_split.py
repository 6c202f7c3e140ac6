"""Split: the one type of data the pipeline reads."""

import pytest
import torch

from deepshrink.data import Split, load_dataset
from deepshrink.errors import DataError


def test_dataset_split_matches_tensors():
    data = load_dataset("fashion-mnist").subset(50, 5, 5)
    x, y = data.tensors("train")
    s = data.split("train")
    assert len(s) == 50 and torch.equal(s.inputs[0], x) and torch.equal(s.target, y)


def test_take_keeps_inputs_and_target_aligned():
    ids = torch.arange(12).reshape(6, 2)
    mask = torch.ones(6, 2, dtype=torch.int64)
    s = Split((ids, mask), torch.arange(6)).take(torch.tensor([4, 1]))
    assert s.inputs[0].tolist() == [[8, 9], [2, 3]] and s.target.tolist() == [4, 1] and len(s) == 2
    assert Split.of(ids).take(slice(0, 3)).target is None


@pytest.mark.parametrize("inputs, target", [
    ((), None),
    ((torch.zeros(3, 2), torch.zeros(4, 2)), None),
    ((torch.zeros(3, 2),), torch.zeros(2)),
])
def test_mismatched_lengths_are_refused(inputs, target):
    with pytest.raises(DataError):
        Split(inputs, target)
