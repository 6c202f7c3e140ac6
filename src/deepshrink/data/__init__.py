"""Datasets and input preprocessing: IDX/npz loading, validation splits, :class:`InputSpec`."""

from deepshrink.data.dataset import Dataset, load_dataset
from deepshrink.data.idx import read_idx, write_idx
from deepshrink.data.spec import InputSpec

__all__ = ["load_dataset", "Dataset", "InputSpec", "read_idx", "write_idx"]
