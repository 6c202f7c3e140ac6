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

__all__ = [
    "DEFAULT_VAL_SIZE",
    "MAX_CLASSES",
    "Dataset",
    "InputSpec",
    "SplitWarning",
    "ValSplit",
    "load_dataset",
    "read_idx",
    "write_idx",
]
