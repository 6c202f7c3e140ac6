"""Datasets and input preprocessing: IDX/npz loading, validation splits, :class:`InputSpec`."""

from deepshrink.data.dataset import (
    DEFAULT_VAL_SIZE,
    MAX_CLASSES,
    Dataset,
    SplitWarning,
    ValSplit,
    load_dataset,
)
from deepshrink.data.idx import read_idx, write_idx
from deepshrink.data.spec import InputSpec
from deepshrink.data.split import Split

__all__ = [
    "DEFAULT_VAL_SIZE",
    "MAX_CLASSES",
    "Dataset",
    "InputSpec",
    "Split",
    "SplitWarning",
    "ValSplit",
    "load_dataset",
    "read_idx",
    "write_idx",
]
