"""The engine's C kernels (``kernels.c``) from Python: compiled once into a shared library with the
system C compiler, loaded with :mod:`ctypes`, and wrapped in small numpy functions.

The library is built with ``cc -O2 -shared -fPIC`` into a cache folder (``$XDG_CACHE_HOME/deepshrink``
or ``~/.cache/deepshrink``; a temporary folder when that is not writable), under a name keyed by a
hash of the source, the compiler and its flags, and renamed into place atomically, so concurrent
processes never load a half-written file.

    lib = native.load()               # None when there is no compiler (native.reason() says why)
    y = lib.linear(layout, x, bias)   # x (n, cols) float32 -> (n, rows)
    y = lib.conv2d(layout, x, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)

``layout`` is a :class:`~deepshrink.engine.layout.PackedWeight`; every wrapper takes and returns
C-contiguous float32 numpy arrays (other inputs are converted) and checks shapes before calling C.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepshrink.engine.layout import KINDS, PackedWeight

SOURCE = Path(__file__).with_name("kernels.c")
HEADER = Path(__file__).with_name("kernels.h")
CFLAGS = ("-std=c99", "-O2", "-shared", "-fPIC")
COMPILE_SECONDS = 120
BATCH_T = 4
"""From this batch size :meth:`Kernels.linear` runs ``ds_linear_t`` on the batch transposed."""

UNARY = {"relu": 0, "relu6": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4, "gelu": 5, "gelu_tanh": 6, "silu": 7,
         "hardswish": 8, "hardsigmoid": 9, "clamp": 10, "clamp_min": 11, "clamp_max": 12}
"""The ``ds_unary`` ops (``DS_RELU`` ...) by name."""
BINARY = {"add": 0, "sub": 1, "mul": 2, "div": 3}
"""The ``ds_binary`` ops (``DS_ADD`` ...) by name."""

_F = ctypes.POINTER(ctypes.c_float)
_I32 = ctypes.c_int32


class CWeight(ctypes.Structure):
    """``struct ds_weight``."""

    _fields_ = [("kind", _I32), ("rows", _I32), ("cols", _I32), ("gap_bits", _I32), ("value_bits", _I32),
                ("group", _I32), ("bits", ctypes.c_void_p), ("counts16", ctypes.c_void_p),
                ("counts32", ctypes.c_void_p), ("table", ctypes.c_void_p), ("values", ctypes.c_void_p),
                ("scales", ctypes.c_void_p), ("offsets", ctypes.c_void_p)]


class CConv(ctypes.Structure):
    """``struct ds_conv``."""

    _fields_ = [(k, _I32) for k in ("in_c", "in_h", "in_w", "out_c", "out_h", "out_w", "k_h", "k_w", "stride_h",
                                    "stride_w", "pad_h", "pad_w", "dil_h", "dil_w", "groups")]


class CPool(ctypes.Structure):
    """``struct ds_pool``."""

    _fields_ = [(k, _I32) for k in ("c", "in_h", "in_w", "out_h", "out_w", "k_h", "k_w", "stride_h", "stride_w",
                                    "pad_h", "pad_w", "count_pad")]


def compiler() -> str | None:
    """The C compiler: ``$CC`` if set, else ``cc``, ``gcc`` or ``clang`` on the PATH; None if none."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return next((p for p in (shutil.which(c) for c in ("cc", "gcc", "clang")) if p), None)


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$XDG_CACHE_HOME/deepshrink`` or ``~/.cache/deepshrink``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deepshrink"


def _compiler_id(cc: str) -> str:
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return res.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def build(cc: str | None = None) -> Path:
    """Compile ``kernels.c`` into the cache (if not there yet) and return the library's path.
    Raises ``RuntimeError`` with the compiler's message when it cannot."""
    cc = cc or compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install cc/gcc/clang)")
    src = SOURCE.read_bytes() + HEADER.read_bytes()
    key = hashlib.sha256(src + cc.encode() + _compiler_id(cc).encode() + " ".join(CFLAGS).encode()).hexdigest()[:20]
    name = f"libdskernels-{key}.so"
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"deepshrink-{os.getuid()}"):
        lib = folder / name
        if lib.exists():
            return lib
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            os.close(fd)
        except OSError:
            continue  # not writable: the next folder
        try:
            res = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True,
                                 timeout=COMPILE_SECONDS)
            if res.returncode != 0:
                raise RuntimeError(f"{cc} failed to compile {SOURCE.name}: {res.stderr.strip()[:2000]}")
            os.replace(tmp, lib)
            return lib
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{cc} took over {COMPILE_SECONDS} s to compile {SOURCE.name}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"no writable folder for the compiled kernels ({cache_dir()} or the temporary folder)")


def _f32(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else np.ascontiguousarray(a, np.float32)


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


class Kernels:
    """The loaded library, with a numpy wrapper per kernel. Inputs are float32, C-contiguous
    (converted otherwise); outputs are new arrays."""

    def __init__(self, path: Path):
        self.path = path
        self.lib = lib = ctypes.CDLL(str(path))
        vp, i32, f32, sz = ctypes.c_void_p, _I32, ctypes.c_float, ctypes.c_size_t
        sigs = {
            "ds_linear": [vp, vp, vp, vp, i32],
            "ds_linear_t": [vp, vp, vp, vp, i32],
            "ds_conv2d": [vp, vp, vp, vp, vp, i32],
            "ds_to_dense": [vp, vp],
            "ds_unary": [i32, f32, f32, vp, vp, sz],
            "ds_affine": [vp, vp, vp, vp, i32, i32, sz],
            "ds_binary": [i32, vp, vp, vp, vp, vp, vp, i32],
            "ds_binary_scalar": [i32, vp, f32, i32, vp, sz],
            "ds_max_pool2d": [vp, vp, vp, i32],
            "ds_avg_pool2d": [vp, vp, vp, i32],
            "ds_adaptive_pool2d": [i32, i32, i32, i32, i32, i32, vp, vp],
            "ds_softmax": [i32, vp, vp, i32, i32, i32],
        }
        for name, args in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, None
        self._weights: weakref.WeakKeyDictionary[PackedWeight, CWeight] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def weight(self, layout: PackedWeight) -> CWeight:
        """The ``ds_weight`` of ``layout`` (made once per layout; its arrays are the layout's)."""
        with self._lock:
            w = self._weights.get(layout)
            if w is None:
                layout.check()  # the kernels trust the layout: check it once, before C reads it
                counts = layout.counts
                w = CWeight(KINDS.index(layout.kind), layout.rows, layout.cols, layout.gap_bits, layout.value_bits,
                            layout.group, _ptr(layout.bits),
                            _ptr(counts) if counts is not None and counts.dtype == np.uint16 else None,
                            _ptr(counts) if counts is not None and counts.dtype == np.uint32 else None,
                            _ptr(layout.table), _ptr(layout.values), _ptr(layout.scales), _ptr(layout.offsets))
                self._weights[layout] = w
            return w

    def to_dense(self, layout: PackedWeight) -> np.ndarray:
        """The weight decoded by the C decoder (tests compare it with the numpy one)."""
        out = np.empty(layout.rows * layout.cols, np.float32)
        self.lib.ds_to_dense(ctypes.byref(self.weight(layout)), out.ctypes.data)
        return out.reshape(layout.shape)

    def linear(self, layout: PackedWeight, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """``x @ W.T + bias`` for ``x`` of shape ``(n, cols)`` (or ``(cols,)``, giving ``(rows,)``);
        each entry is decoded once per call, whatever ``n``."""
        x, bias = _f32(x), _f32(bias)
        one = x.ndim == 1
        x2 = x.reshape(1, -1) if one else x
        if x2.ndim != 2 or x2.shape[1] != layout.cols:
            raise ValueError(f"linear: x must be (n, {layout.cols}), got {x.shape}")
        if bias is not None and bias.shape != (layout.rows,):
            raise ValueError(f"linear: bias must be ({layout.rows},), got {bias.shape}")
        n = x2.shape[0]
        if n >= BATCH_T:  # feature-major: every entry's multiply-adds run over the contiguous batch
            xt = np.ascontiguousarray(x2.T)
            yt = np.empty((layout.rows, n), np.float32)
            self.lib.ds_linear_t(ctypes.byref(self.weight(layout)), _ptr(bias), xt.ctypes.data, yt.ctypes.data, n)
            return np.ascontiguousarray(yt.T)
        y = np.empty((n, layout.rows), np.float32)
        if n:
            self.lib.ds_linear(ctypes.byref(self.weight(layout)), _ptr(bias), x2.ctypes.data, y.ctypes.data, n)
        return y[0] if one else y

    def conv2d(self, layout: PackedWeight, x: np.ndarray, bias: np.ndarray | None = None,
               stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1),
               groups: int = 1) -> np.ndarray:
        """``F.conv2d(x, W, bias, stride, padding, dilation, groups)`` for ``x`` of shape
        ``(n, C, H, W)``; ``layout.shape`` is ``(out_c, C / groups, kh, kw)``. ``padding`` is
        symmetric ``(ph, pw)``, or ``(top, left, bottom, right)``."""
        x, bias = _f32(x), _f32(bias)
        if len(layout.shape) != 4 or x.ndim != 4:
            raise ValueError(f"conv2d: a 4-D weight and input, got {layout.shape} and {x.shape}")
        return self._conv(layout, layout.shape, x, bias, stride, padding, dilation, groups)

    def conv1d(self, layout: PackedWeight, x: np.ndarray, bias: np.ndarray | None = None, stride: int = 1,
               padding: int | Sequence[int] = 0, dilation: int = 1, groups: int = 1) -> np.ndarray:
        """``F.conv1d(x, W, bias, stride, padding, dilation, groups)`` for ``x`` of shape
        ``(n, C, L)``; ``padding`` is symmetric, or ``(left, right)``."""
        x, bias = _f32(x), _f32(bias)
        if len(layout.shape) != 3 or x.ndim != 3:
            raise ValueError(f"conv1d: a 3-D weight and input, got {layout.shape} and {x.shape}")
        left, right = (padding, padding) if isinstance(padding, int) else padding
        oc, icg, k = layout.shape
        y = self._conv(layout, (oc, icg, 1, k), x[:, :, None, :], bias, (1, stride), (0, left, 0, right),
                       (1, dilation), groups)
        return y[:, :, 0, :]

    def _conv(self, layout, shape, x, bias, stride, padding, dilation, groups) -> np.ndarray:
        x = np.ascontiguousarray(x)
        oc, icg, kh, kw = shape
        n, c, h, w = x.shape
        if groups < 1 or c != icg * groups or oc % groups:
            raise ValueError(f"conv2d: weight {layout.shape} with groups={groups} does not fit input {x.shape}")
        pads = list(padding) if len(padding) == 4 else [padding[0], padding[1], padding[0], padding[1]]
        if min(*stride, *dilation) < 1 or min(pads) < 0:
            raise ValueError(f"conv2d: strides and dilations must be at least 1 and padding at least 0, got "
                             f"stride={tuple(stride)}, padding={tuple(padding)}, dilation={tuple(dilation)}")
        oh = (h + pads[0] + pads[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        ow = (w + pads[1] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"conv2d: the kernel does not fit the padded input {x.shape}")
        if bias is not None and bias.shape != (oc,):
            raise ValueError(f"conv2d: bias must be ({oc},), got {bias.shape}")
        geom = CConv(c, h, w, oc, oh, ow, kh, kw, stride[0], stride[1], pads[0], pads[1], dilation[0], dilation[1],
                     groups)
        y = np.empty((n, oc, oh, ow), np.float32)
        if n:
            self.lib.ds_conv2d(ctypes.byref(self.weight(layout)), _ptr(bias), ctypes.byref(geom), x.ctypes.data,
                               y.ctypes.data, n)
        return y

    def unary(self, op: str, x: np.ndarray, alpha: float = 0.0, beta: float = 0.0) -> np.ndarray:
        """An elementwise op of :data:`UNARY` (``alpha``: leaky slope or lower bound; ``beta``:
        upper bound of ``clamp``)."""
        if op not in UNARY:
            raise ValueError(f"unary: op {op!r} is not one of {list(UNARY)}")
        x = _f32(x)
        y = np.empty_like(x)
        self.lib.ds_unary(UNARY[op], alpha, beta, x.ctypes.data, y.ctypes.data, x.size)
        return y

    def affine(self, x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """``x * scale[c] + shift[c]`` over dimension 1 of ``x`` (``(n, C, ...)``): batch norm."""
        x, scale, shift = _f32(x), _f32(scale), _f32(shift)
        if x.ndim < 2 or scale.shape != (x.shape[1],) or shift.shape != (x.shape[1],):
            raise ValueError(f"affine: scale and shift need {x.shape[1:2]} values for input {x.shape}")
        y = np.empty_like(x)
        self.lib.ds_affine(scale.ctypes.data, shift.ctypes.data, x.ctypes.data, y.ctypes.data, x.shape[0],
                           x.shape[1], int(np.prod(x.shape[2:])))
        return y

    def binary(self, op: str, a: np.ndarray, b: np.ndarray | float, scalar_first: bool = False) -> np.ndarray:
        """``a op b`` of :data:`BINARY`, with numpy broadcasting of two arrays of one rank, or with a
        number ``b`` (``b op a`` with ``scalar_first``)."""
        if op not in BINARY:
            raise ValueError(f"binary: op {op!r} is not one of {list(BINARY)}")
        a = _f32(a)
        if not isinstance(b, np.ndarray):
            y = np.empty_like(a)
            self.lib.ds_binary_scalar(BINARY[op], a.ctypes.data, float(b), int(scalar_first), y.ctypes.data, a.size)
            return y
        b = _f32(b)
        if a.ndim != b.ndim or not 1 <= a.ndim <= 9:
            raise ValueError(f"binary: operands of one rank (1 to 9), got {a.shape} and {b.shape}")
        shape = np.broadcast_shapes(a.shape, b.shape)
        y = np.empty(shape, np.float32)
        if y.size:
            dims = np.array(shape, np.int32)
            sa, sb = (np.array([s // 4 if d != 1 else 0 for s, d in zip(t.strides, t.shape)], np.int32) for t in (a, b))
            self.lib.ds_binary(BINARY[op], a.ctypes.data, sa.ctypes.data, b.ctypes.data, sb.ctypes.data, y.ctypes.data,
                               dims.ctypes.data, len(shape))
        return y

    def _pool(self, fn, x, kernel, stride, padding, out, count_pad) -> np.ndarray:
        x = _f32(x)
        if x.ndim != 4:
            raise ValueError(f"pooling: an input (n, C, H, W), got {x.shape}")
        n, c, h, w = x.shape
        y = np.empty((n, c, *out), np.float32)
        p = CPool(c, h, w, out[0], out[1], kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
                  int(count_pad))
        fn(ctypes.byref(p), x.ctypes.data, y.ctypes.data, n)
        return y

    def max_pool2d(self, x: np.ndarray, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int] = (0, 0),
                   ceil_mode: bool = False) -> np.ndarray:
        """``F.max_pool2d`` of ``(n, C, H, W)``."""
        return self._pool(self.lib.ds_max_pool2d, x, kernel, stride, padding,
                          _pool_out(np.shape(x)[2:], kernel, stride, padding, ceil_mode), False)

    def avg_pool2d(self, x: np.ndarray, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int] = (0, 0),
                   ceil_mode: bool = False, count_include_pad: bool = True) -> np.ndarray:
        """``F.avg_pool2d`` of ``(n, C, H, W)``."""
        return self._pool(self.lib.ds_avg_pool2d, x, kernel, stride, padding,
                          _pool_out(np.shape(x)[2:], kernel, stride, padding, ceil_mode), count_include_pad)

    def adaptive_pool2d(self, x: np.ndarray, out: Sequence[int], is_max: bool = False) -> np.ndarray:
        """``F.adaptive_avg_pool2d`` (or max) of ``(n, C, H, W)`` to ``out = (oh, ow)``
        (``(1, 1)``: global average pooling)."""
        x = _f32(x)
        if x.ndim != 4 or min(out) < 1:
            raise ValueError(f"adaptive pooling: an input (n, C, H, W) and output sizes of at least 1, got {x.shape} "
                             f"and {tuple(out)}")
        n, c, h, w = x.shape
        y = np.empty((n, c, out[0], out[1]), np.float32)
        self.lib.ds_adaptive_pool2d(int(is_max), n * c, h, w, out[0], out[1], x.ctypes.data, y.ctypes.data)
        return y

    def softmax(self, x: np.ndarray, dim: int, log: bool = False) -> np.ndarray:
        """Softmax (or log-softmax) of ``x`` along ``dim``."""
        x = _f32(x)
        dim %= x.ndim
        y = np.empty_like(x)
        outer, inner = int(np.prod(x.shape[:dim])), int(np.prod(x.shape[dim + 1:]))
        self.lib.ds_softmax(int(log), x.ctypes.data, y.ctypes.data, outer, x.shape[dim], inner)
        return y


def _pool_out(hw: Sequence[int], k: Sequence[int], s: Sequence[int], p: Sequence[int], ceil: bool) -> tuple[int, int]:
    """PyTorch's pooled size (see :func:`deepshrink.graph.ops.base.window`); ``ValueError`` for a
    window PyTorch refuses."""
    from deepshrink.graph.ops.base import window

    if len(hw) != 2 or min(*k, *s) < 1 or min(p) < 0 or any(2 * p[i] > k[i] for i in range(2)):
        raise ValueError(f"pooling: kernel {tuple(k)} and stride {tuple(s)} at least 1, padding {tuple(p)} from 0 "
                         "to half the kernel, on an (n, C, H, W) input")
    return tuple(window(hw[i], k[i], s[i], p[i], ceil) for i in range(2))


_state: dict[str, object] = {}
_state_lock = threading.Lock()


def load() -> Kernels | None:
    """The kernels, compiled on first use (once per process); None when they cannot be built
    (no compiler, or it fails): :func:`reason` says why."""
    with _state_lock:
        if "lib" not in _state:
            try:
                _state["lib"], _state["reason"] = Kernels(build()), None
            except (RuntimeError, OSError) as exc:
                _state["lib"], _state["reason"] = None, str(exc)
        return _state["lib"]  # type: ignore[return-value]


def reason() -> str | None:
    """Why :func:`load` returned None (None when the kernels loaded, or before the first call)."""
    return _state.get("reason")  # type: ignore[return-value]


def available() -> bool:
    """True when the kernels can be loaded."""
    return load() is not None
