"""How a model's raw input is preprocessed: shape, raw dtype, scale and per-channel normalisation.

An :class:`InputSpec` travels with a compressed model (it is stored in file headers via
:meth:`InputSpec.to_dict`), so :meth:`InputSpec.from_dict` treats its input as untrusted.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from deepshrink.errors import ConfigError, DataError

__all__ = ["InputSpec"]

_DTYPES = ("uint8", "float32")
_KEYS = ("shape", "dtype", "scale", "mean", "std")
_MAX_NDIM = 8
_MAX_DIM = 2**31 - 1
_F32_MAX = float(np.finfo(np.float32).max)
ASSUME = (None, "raw", "scaled", "normalized")  # what CompressedModel.predict's input holds


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _float_tuple(field: str, value, *, positive: bool) -> tuple[float, ...]:
    if _is_real(value):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        raise ConfigError(f"InputSpec.{field} must be a sequence of numbers, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        if not _is_real(v):
            raise ConfigError(f"InputSpec.{field}[{i}] must be a number, got {type(v).__name__} {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise ConfigError(f"InputSpec.{field}[{i}] must be finite, got {f}")
        if positive and f <= 0:
            raise ConfigError(f"InputSpec.{field}[{i}] must be > 0, got {f}")
        out.append(f)
    return tuple(out)


@dataclass(frozen=True)
class InputSpec:
    """Per-sample input shape and the preprocessing ``(raw * scale - mean) / std``.

    ``shape`` is the shape of one sample, e.g. ``(1, 28, 28)``; ``dtype`` is the dtype of the raw
    input a user supplies (``"uint8"`` or ``"float32"``); ``mean`` and ``std`` hold one value per
    channel (``shape[0]`` values) or a single value for all channels.

    Construction normalises sequences to tuples of ``int``/``float`` and raises
    :class:`~deepshrink.errors.ConfigError` on any invalid value.
    """

    shape: tuple[int, ...]
    dtype: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        shape = self.shape
        if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)):
            raise ConfigError(f"InputSpec.shape must be a tuple of ints, got {type(shape).__name__}")
        if not 1 <= len(shape) <= _MAX_NDIM:
            raise ConfigError(f"InputSpec.shape must have 1 to {_MAX_NDIM} dimensions, got {len(shape)}")
        for i, d in enumerate(shape):
            if not _is_int(d):
                raise ConfigError(f"InputSpec.shape[{i}] must be an int, got {type(d).__name__} {d!r}")
            if not 0 < int(d) <= _MAX_DIM:
                raise ConfigError(f"InputSpec.shape[{i}] must be in 1..{_MAX_DIM}, got {int(d)}")
        shape = tuple(int(d) for d in shape)

        if not isinstance(self.dtype, str) or self.dtype not in _DTYPES:
            raise ConfigError(f"InputSpec.dtype must be one of {list(_DTYPES)}, got {self.dtype!r}")

        if not _is_real(self.scale):
            raise ConfigError(f"InputSpec.scale must be a number, got {type(self.scale).__name__} {self.scale!r}")
        scale = float(self.scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"InputSpec.scale must be finite and > 0, got {scale}")

        mean = _float_tuple("mean", self.mean, positive=False)
        std = _float_tuple("std", self.std, positive=True)
        for field, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, shape[0]):
                raise ConfigError(
                    f"InputSpec.{field} has {len(values)} values; expected 1 or shape[0] = {shape[0]} "
                    "(one per channel)"
                )

        if max(scale, *map(abs, mean)) / min(std) > _F32_MAX:
            raise ConfigError(
                f"InputSpec: scale {scale:g} and mean {list(mean)} divided by std {list(std)} overflow float32"
            )

        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def numel(self) -> int:
        """Number of elements in one sample (the product of ``shape``)."""
        return math.prod(self.shape)

    def apply(self, x) -> torch.Tensor:
        """Preprocess a batch: return float32 ``(x * scale - mean) / std`` of shape ``(N, *shape)``.

        ``x`` is a numpy array or torch tensor of shape ``(N, *shape)`` or ``(N, prod(shape))`` (the
        latter is reshaped). mean/std are broadcast per channel along axis 1. The input is not
        modified. Raises :class:`~deepshrink.errors.DataError` for any other shape, a
        non-numeric dtype, or NaN, infinite or float32-overflowing values.
        """
        return self._normalise(self._batch(x).to(torch.float32) * self.scale)

    def prepare(self, x, *, assume: str | None = None) -> torch.Tensor:
        """Check raw user input against this spec and preprocess it, for inference.

        Unlike :meth:`apply`, the dtype must match the spec's kind: float input for a ``uint8``
        spec (e.g. images already in [0, 1]) or integer input for a ``float32`` spec is refused
        with a :class:`~deepshrink.errors.DataError` unless ``assume`` says what it holds:

        * ``"raw"``: raw values as the spec describes them, in another dtype;
        * ``"scaled"``: already multiplied by ``scale`` (only ``(x - mean) / std`` is applied);
        * ``"normalized"``: fully preprocessed; used as is.

        ``(N, *shape[1:])`` is accepted for a single-channel spec (e.g. ``(N, 28, 28)`` for
        ``(1, 28, 28)``). NaN, infinite or float32-overflowing values are refused.
        """
        if assume not in ASSUME:
            raise DataError(f"assume must be one of {[a for a in ASSUME if a]} or None, got {assume!r}")
        if isinstance(x, np.ndarray):
            is_float, is_int = x.dtype.kind == "f", x.dtype.kind in "ui"
        elif isinstance(x, torch.Tensor):
            is_float, is_int = x.is_floating_point(), _torch_is_int(x)
        else:
            raise DataError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
        if not (is_float or is_int):
            raise DataError(f"expected numeric input, got dtype {x.dtype}")
        if assume is None and is_float != (self.dtype == "float32"):
            raise DataError(
                f"the model expects raw {self.dtype} input (input spec: shape {self.shape}, scale "
                f"{self.scale:g}, mean {list(self.mean)}, std {list(self.std)}), got dtype {x.dtype}; "
                "pass assume='raw', 'scaled' (already multiplied by scale, e.g. floats in [0, 1]) or "
                "'normalized' (fully preprocessed) to say what the input holds"
            )
        if self.shape[0] == 1 and x.ndim == len(self.shape) and tuple(x.shape[1:]) == self.shape[1:]:
            x = x[:, None]
        t = self._batch(x).to(torch.float32)
        out = t if assume == "normalized" else self._normalise(t if assume == "scaled" else t * self.scale)
        if not bool(torch.isfinite(out).all()):
            raise DataError("preprocessing the input overflows float32; check its range against the input spec")
        return out

    def _batch(self, x) -> torch.Tensor:
        """``x`` as a numeric tensor of shape ``(N, *shape)`` (a view where possible)."""
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "uif":
                raise DataError(f"InputSpec.apply: expected a numeric array, got dtype {x.dtype}")
            dt = x.dtype.newbyteorder("=")  # torch needs native byte order
            if dt.kind == "u" and dt.itemsize > 1:
                dt = np.dtype(np.float64)  # torch's wide unsigned types support few operations
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=dt))
        elif isinstance(x, torch.Tensor):
            if not (x.is_floating_point() or _torch_is_int(x)):
                raise DataError(f"InputSpec.apply: expected a numeric tensor, got dtype {x.dtype}")
            t = x
        else:
            raise DataError(f"InputSpec.apply: expected a numpy array or torch tensor, got {type(x).__name__}")
        if t.is_floating_point() and t.numel() and not float(t.abs().max()) <= _F32_MAX:  # also catches NaN
            raise DataError(f"input holds NaN, infinite or out-of-float32-range values (|x| > {_F32_MAX:.3g})")
        got = tuple(t.shape)
        if t.dim() == 1 + len(self.shape) and got[1:] == self.shape:
            return t
        if t.dim() == 2 and got[1] == self.numel:
            return t.reshape((got[0], *self.shape))
        raise DataError(
            f"InputSpec.apply: expected input of shape (N, {', '.join(map(str, self.shape))}) "
            f"or (N, {self.numel}), got {got}"
        )

    def _normalise(self, t: torch.Tensor) -> torch.Tensor:
        """``(t - mean) / std`` per channel along axis 1, as a new tensor."""
        view = (1, -1) + (1,) * (len(self.shape) - 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=t.device).reshape(view)
        std = torch.tensor(self.std, dtype=torch.float32, device=t.device).reshape(view)
        return (t - mean) / std

    def to_dict(self) -> dict:
        """JSON-safe dict (lists, str and floats only); inverse of :meth:`from_dict`."""
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d) -> InputSpec:
        """Build an InputSpec from :meth:`to_dict` output, e.g. parsed from an untrusted header.

        Strict: ``d`` must be a mapping with exactly the keys shape, dtype, scale, mean, std;
        shape a list of ints, dtype a string, scale a number, mean/std lists of numbers (bools,
        strings, nested lists, NaN and infinities are rejected). Raises
        :class:`~deepshrink.errors.ConfigError` on anything else.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"InputSpec.from_dict: expected a dict, got {type(d).__name__}")
        keys = set(d.keys())
        if not all(isinstance(k, str) for k in keys):
            raise ConfigError("InputSpec.from_dict: all keys must be strings")
        missing = [k for k in _KEYS if k not in keys]
        unknown = sorted(keys - set(_KEYS))
        if missing or unknown:
            raise ConfigError(
                f"InputSpec.from_dict: expected exactly the keys {list(_KEYS)}; "
                f"missing {missing}, unknown {unknown}"
            )
        for key in ("shape", "mean", "std"):
            if not isinstance(d[key], (list, tuple)):
                raise ConfigError(
                    f"InputSpec.from_dict: {key!r} must be a list, got {type(d[key]).__name__}"
                )
        for i, v in enumerate(d["shape"]):
            if type(v) is not int:
                raise ConfigError(f"InputSpec.from_dict: shape[{i}] must be an int, got {type(v).__name__} {v!r}")
        for key in ("mean", "std"):
            for i, v in enumerate(d[key]):
                if type(v) not in (int, float):
                    raise ConfigError(
                        f"InputSpec.from_dict: {key}[{i}] must be a number, got {type(v).__name__} {v!r}"
                    )
        if type(d["scale"]) not in (int, float):
            raise ConfigError(f"InputSpec.from_dict: scale must be a number, got {type(d['scale']).__name__}")
        if type(d["dtype"]) is not str:
            raise ConfigError(f"InputSpec.from_dict: dtype must be a string, got {type(d['dtype']).__name__}")
        return cls(
            shape=tuple(d["shape"]),
            dtype=d["dtype"],
            scale=d["scale"],
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
        )


_TORCH_INTS = tuple(
    getattr(torch, n)
    for n in ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")
    if hasattr(torch, n)
)


def _torch_is_int(t: torch.Tensor) -> bool:
    return t.dtype in _TORCH_INTS
