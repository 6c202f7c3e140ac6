"""Layer kernels of the compressed runtime: one class per way of running a linear or conv layer.

A :class:`Layer` is one graph node with a compressible weight (an op whose
:attr:`~deepshrink.graph.ops.base.Op.layer_kind` is ``"linear"`` or ``"conv"``: ``linear``,
``conv2d``, ``conv1d``) and its weight as a typed compressed tensor
(:mod:`deepshrink.storage.tensors`). A :class:`Kernel` subclass runs such a layer one way;
:data:`KERNELS` maps each kernel's name to its class, so adding a way is writing one class with
:func:`register_kernel`:

* ``dense``: ``F.linear`` / ``F.conv*d`` with the dense weight (the op's registered forward);
* ``csr``: a ``torch.sparse_csr_tensor`` (int32 indices) times the input (convolutions through
  ``F.unfold``, ungrouped only);
* ``scipy``: a ``scipy.sparse.csr_matrix`` times the input, as numpy (same layouts as ``csr``);
* ``codebook``: the codebook indices kept as bytes, the weight gathered from the table at every
  call, then the dense op (less memory; rarely faster);
* ``native``: the compiled engine's kernels (``deepshrink.engine``) through ctypes, on the
  packed layout, when a C compiler is present (else it is no candidate, and loading still works).

Factorised layers (SVD, SLR, Tucker-2, CP) need no kernel of their own: the file stores them as
a chain of ordinary layers, and each factor is a layer that gets its own kernel.

Each kernel exposes ``fn``, a plain callable from the layer's input batch to its output (what
the network calls, with no further dispatch), ``resident_bytes`` (the bytes it keeps for the
weight) and :meth:`Kernel.weight` (the dense weight, rebuilt from what it keeps). Kernels are
for inference: their outputs carry no gradient with respect to the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from deepshrink.graph.ops import OPS
from deepshrink.storage.tensors import CodebookTensor, CompressedTensor, CSRMatrix, SparseCodebookTensor

LAYER_OPS = ("linear", "conv1d", "conv2d")
"""The ops whose nodes run through a kernel (``layer_kind`` ``"linear"`` or ``"conv"``)."""


class Layer:
    """One layer node and what its kernels are built from.

    ``in_shape`` and ``out_shape`` are the per-sample shapes of its input and output (from the
    file's plan: the runtime refuses inputs of other shapes, so they are fixed). ``weight`` is
    the typed compressed tensor; :meth:`dense` and :meth:`csr` expand it once and are shared by
    the candidates built while measuring. :meth:`release` drops them and the typed tensor once
    the kernels are built (they keep what they need); ``shape``, ``nnz`` and ``encoding`` stay."""

    def __init__(self, name: str, op: str, attrs: dict[str, Any], weight: CompressedTensor,
                 bias: torch.Tensor | None, in_shape: tuple[int, ...], out_shape: tuple[int, ...], param: str = ""):
        if op not in LAYER_OPS:
            raise ValueError(f"a kernel layer is one of {LAYER_OPS}, got {op!r}")
        self.name, self.op, self.attrs, self.bias = name, op, dict(attrs), bias
        self.weight: CompressedTensor = weight
        self.param = param
        self.shape: tuple[int, ...] = tuple(int(d) for d in weight.shape)
        self.encoding = type(weight).__name__
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self._dense: torch.Tensor | None = None
        self._csr: CSRMatrix | None = None
        self._nnz: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def dense_bytes(self) -> int:
        """Bytes of the dense float32 weight."""
        return 4 * self.numel

    @property
    def nnz(self) -> int:
        """Nonzero weights (entries of the CSR view)."""
        if self._nnz is None:
            w = self.weight
            nnz = getattr(w, "nnz", None)
            if nnz is None and isinstance(w, CodebookTensor):
                nnz = np.count_nonzero(w.indices != len(w.codebook))
            elif nnz is None:
                nnz = self.csr().nnz if self._csr is not None else np.count_nonzero(w.to_dense())
            self._nnz = int(nnz)
        return self._nnz

    def dense(self) -> torch.Tensor:
        """The dense float32 weight (bit for bit what dense decoding gives)."""
        if self._dense is None:
            self._dense = torch.from_numpy(np.ascontiguousarray(self.weight.to_dense(), dtype=np.float32))
        return self._dense

    def csr(self) -> CSRMatrix:
        """The weight's nonzeros by rows of its 2-D view ``[out, in*k...]``."""
        if self._csr is None:
            self._csr = self.weight.csr()
        return self._csr

    def release(self) -> None:
        """Drop the typed tensor and the expansions made while choosing kernels (the kernels keep
        their own copies); ``nnz`` is counted first."""
        _ = self.nnz
        self._dense = self._csr = None
        self.weight = None  # type: ignore[assignment]


class Kernel:
    """One way of running a :class:`Layer`. Subclasses set :attr:`name` (and :attr:`ops` when
    they run fewer ops), build ``self.fn`` and ``self.resident_bytes`` in ``__init__`` and
    implement :meth:`weight`; :meth:`unsupported` and :meth:`estimate_bytes` let the selector
    skip them before building."""

    name: ClassVar[str]
    ops: ClassVar[tuple[str, ...]] = LAYER_OPS
    fn: Callable[[torch.Tensor], torch.Tensor]
    resident_bytes: int

    @classmethod
    def available(cls) -> str | None:
        """Why this kernel cannot run on this machine at all (None when it can)."""
        return None

    @classmethod
    def unsupported(cls, layer: Layer) -> str | None:
        """Why this kernel cannot run ``layer`` (None when it can)."""
        if layer.op not in cls.ops:
            return f"the {cls.name} kernel runs {', '.join(cls.ops)}, not {layer.op}"
        return None

    @classmethod
    def estimate_bytes(cls, layer: Layer) -> int:
        """The bytes the kernel would keep for the weight (decides skipping before building)."""
        return layer.dense_bytes

    def __init__(self, layer: Layer):
        self.layer = layer.name

    def weight(self) -> torch.Tensor:
        """The dense float32 weight, rebuilt from what the kernel keeps."""
        raise NotImplementedError(f"{type(self).__name__} must implement weight()")


KERNELS: dict[str, type[Kernel]] = {}
"""Kernel name → class, in the order candidates are tried (``dense`` first: the reference)."""


def register_kernel(cls: type[Kernel]) -> type[Kernel]:
    """Add a kernel class to :data:`KERNELS` under its ``name``."""
    if cls.name in KERNELS:
        raise ValueError(f"a kernel named {cls.name!r} is already registered")
    KERNELS[cls.name] = cls
    return cls


# ----------------------------------------------------------------------------------------------
# convolution as a matrix product (the CSR kernels)


class _Im2col:
    """A convolution ``[out, C, k...]`` with ``groups == 1`` as ``W2d @ unfold(x)``: the
    per-call pieces, precomputed. A 1-D convolution runs as a 2-D one of height 1; padding that
    differs at the two ends (``"same"`` with an even kernel) is applied with ``F.pad`` first."""

    def __init__(self, layer: Layer):
        a, w = layer.attrs, layer.shape
        one_d = layer.op == "conv1d"
        pads = OPS[layer.op].pads(a, w)
        nd = len(w) - 2
        start, end = pads[:nd], pads[nd:]
        if one_d:
            start, end = [0, *start], [0, *end]
        self.kernel = (1, w[2]) if one_d else (w[2], w[3])
        self.stride = (1, a["stride"][0]) if one_d else tuple(a["stride"])
        self.dilation = (1, a["dilation"][0]) if one_d else tuple(a["dilation"])
        self.one_d = one_d
        if start == end:
            self.padding, self.pre_pad = tuple(start), None
        else:  # F.pad takes the last dimension first
            self.padding, self.pre_pad = (0, 0), (start[1], end[1], start[0], end[0])
        self.rows = int(np.prod(w[1:]))
        self.out_shape = layer.out_shape  # (out, L) or (out, oh, ow)
        self.positions = int(np.prod(layer.out_shape[1:]))

    def cols(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C*k..., L)`` patches of ``x``."""
        if self.one_d:
            x = x.unsqueeze(2)
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        return F.unfold(x, self.kernel, self.dilation, self.padding, self.stride)


def _check_conv(layer: Layer) -> str | None:
    if layer.op != "linear" and layer.attrs.get("groups", 1) != 1:
        return f"grouped convolution (groups={layer.attrs['groups']}) is run by the dense kernels only"
    return None


def _csr_bytes(layer: Layer) -> int:
    """int32 column indices and float32 values per nonzero, int32 row pointers."""
    return 8 * layer.nnz + 4 * (layer.shape[0] + 1)


# ----------------------------------------------------------------------------------------------
# the kernels


@register_kernel
class DenseKernel(Kernel):
    """The dense weight through the op's registered PyTorch forward (``F.linear``,
    ``F.conv2d``, ``F.conv1d``): what dense decoding runs, bit for bit."""

    name = "dense"

    def __init__(self, layer: Layer):
        super().__init__(layer)
        self.w = layer.dense()
        b = layer.bias
        if layer.op == "linear":
            self.fn = lambda x, w=self.w, b=b: F.linear(x, w, b)
        else:
            a, conv = layer.attrs, (F.conv1d if layer.op == "conv1d" else F.conv2d)
            stride, padding, dilation, groups = a["stride"], a["padding"], a["dilation"], a["groups"]
            self.fn = lambda x, w=self.w, b=b: conv(x, w, b, stride, padding, dilation, groups)
        self.resident_bytes = self.w.numel() * 4

    def weight(self) -> torch.Tensor:
        return self.w


class _CSRKernel(Kernel):
    """What the CSR kernels share: ungrouped layers only (convolutions through ``F.unfold``) and
    the bytes of a CSR matrix."""

    @classmethod
    def unsupported(cls, layer: Layer) -> str | None:
        return super().unsupported(layer) or _check_conv(layer)

    @classmethod
    def estimate_bytes(cls, layer: Layer) -> int:
        return _csr_bytes(layer)


@register_kernel
class TorchCSRKernel(_CSRKernel):
    """``torch.sparse_csr_tensor`` (int32 indices) times the input: ``addmv`` for one row,
    ``addmm`` of the transposed input otherwise; convolutions through ``F.unfold``."""

    name = "csr"

    def __init__(self, layer: Layer):
        import warnings

        super().__init__(layer)
        c = layer.csr()
        with warnings.catch_warnings():  # "sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            self.w = torch.sparse_csr_tensor(
                torch.from_numpy(c.indptr.astype(np.int32)), torch.from_numpy(c.indices.astype(np.int32)),
                torch.from_numpy(np.ascontiguousarray(c.weights(), dtype=np.float32)), size=c.shape)
        self.resident_bytes = _csr_bytes(layer)
        w, b = self.w, layer.bias
        out, cols = c.shape
        bcol = None if b is None else b[:, None]
        if layer.op == "linear":

            def fn(x: torch.Tensor) -> torch.Tensor:
                x2 = x.reshape(-1, cols)
                if x2.shape[0] == 1:
                    y = torch.mv(w, x2[0]) if b is None else torch.addmv(b, w, x2[0])
                    return y.view(*x.shape[:-1], out)
                y = (torch.mm(w, x2.t()) if b is None else torch.addmm(bcol, w, x2.t())).t()
                return y if x.ndim == 2 else y.reshape(*x.shape[:-1], out)
        else:
            im = _Im2col(layer)
            oshape, length = im.out_shape, im.positions

            def fn(x: torch.Tensor) -> torch.Tensor:
                p = im.cols(x)
                n = p.shape[0]
                if n == 1:
                    y = torch.mm(w, p[0]) if b is None else torch.addmm(bcol, w, p[0])
                    return y.view(1, *oshape)
                p2 = p.transpose(0, 1).reshape(cols, n * length)
                y = torch.mm(w, p2) if b is None else torch.addmm(bcol, w, p2)
                return y.view(out, n, length).transpose(0, 1).reshape(n, *oshape)
        self.fn = fn

    def weight(self) -> torch.Tensor:
        return self.w.to_dense()


@register_kernel
class ScipyCSRKernel(_CSRKernel):
    """``scipy.sparse.csr_matrix`` (int32 indices) times the input as numpy: a matrix-vector
    product for one row, else the product with the transposed input; convolutions through
    ``F.unfold``."""

    name = "scipy"

    @classmethod
    def available(cls) -> str | None:
        try:
            import scipy.sparse  # noqa: F401
        except ImportError:
            return "scipy is not installed"
        return None

    def __init__(self, layer: Layer):
        import scipy.sparse as sp

        super().__init__(layer)
        c = layer.csr()
        self.s = sp.csr_matrix((np.ascontiguousarray(c.weights(), dtype=np.float32), c.indices.astype(np.int32),
                                c.indptr.astype(np.int32)), shape=c.shape)
        self.resident_bytes = _csr_bytes(layer)
        s = self.s
        bn = None if layer.bias is None else layer.bias.numpy()
        bcol = None if bn is None else bn[:, None]
        out, cols = c.shape
        if layer.op == "linear":

            def fn(x: torch.Tensor) -> torch.Tensor:
                x2 = x.detach().reshape(-1, cols).numpy()
                if x2.shape[0] == 1:
                    y = s @ x2[0]
                    if bn is not None:
                        y += bn
                    return torch.from_numpy(y).view(*x.shape[:-1], out)
                y = s @ np.ascontiguousarray(x2.T)
                if bcol is not None:
                    y += bcol
                y = torch.from_numpy(y).t()
                return y if x.ndim == 2 else y.reshape(*x.shape[:-1], out)
        else:
            im = _Im2col(layer)
            oshape, length = im.out_shape, im.positions

            def fn(x: torch.Tensor) -> torch.Tensor:
                p = im.cols(x.detach()).numpy()
                n = p.shape[0]
                if n == 1:
                    y = s @ p[0]
                    if bcol is not None:
                        y += bcol
                    return torch.from_numpy(y).view(1, *oshape)
                y = s @ p.transpose(1, 0, 2).reshape(cols, n * length)
                if bcol is not None:
                    y += bcol
                return torch.from_numpy(y).view(out, n, length).transpose(0, 1).reshape(n, *oshape)
        self.fn = fn

    def weight(self) -> torch.Tensor:
        return torch.from_numpy(self.s.toarray())


@register_kernel
class CodebookKernel(Kernel):
    """The codebook indices kept as bytes (uint8, or uint16 for more than 255 entries) and
    looked up in the table at every call, then the dense op: a quarter of the dense weight's
    memory, at the cost of a gather per call. Only for codebook-shared weights."""

    name = "codebook"

    @classmethod
    def unsupported(cls, layer: Layer) -> str | None:
        if not isinstance(layer.weight, (CodebookTensor, SparseCodebookTensor)):
            return "the weight has no codebook"
        return super().unsupported(layer)

    @classmethod
    def estimate_bytes(cls, layer: Layer) -> int:
        w = layer.weight
        return layer.numel * w.indices.dtype.itemsize + 4 * (len(w.codebook) + 1)  # type: ignore[attr-defined]

    def __init__(self, layer: Layer):
        super().__init__(layer)
        w = layer.weight
        k = len(w.codebook)  # type: ignore[attr-defined]
        self.table = np.append(np.asarray(w.codebook, dtype=np.float32), np.float32(0.0))  # type: ignore[attr-defined]
        if isinstance(w, CodebookTensor):
            self.idx = np.ascontiguousarray(w.indices)
        else:  # SparseCodebookTensor: index K (zero) everywhere else
            idx = np.full(layer.numel, k, dtype=w.indices.dtype)
            idx[w.positions] = w.indices
            self.idx = idx.reshape(layer.shape)
        self.resident_bytes = self.idx.nbytes + self.table.nbytes
        table, idx, b, a, op = self.table, self.idx, layer.bias, layer.attrs, layer.op
        if op == "linear":
            self.fn = lambda x: F.linear(x, torch.from_numpy(np.take(table, idx)), b)
        else:
            conv = F.conv1d if op == "conv1d" else F.conv2d
            stride, padding, dilation, groups = a["stride"], a["padding"], a["dilation"], a["groups"]
            self.fn = lambda x: conv(x, torch.from_numpy(np.take(table, idx)), b, stride, padding, dilation, groups)

    def weight(self) -> torch.Tensor:
        return torch.from_numpy(np.take(self.table, self.idx))


# ----------------------------------------------------------------------------------------------
# the compiled engine


def engine() -> tuple[Any, str | None]:
    """The compiled engine's kernels (:func:`deepshrink.engine.native.load`), compiled on first
    use, and None with the reason when there are none: no engine in this installation, or no C
    compiler (or it failed)."""
    try:
        from deepshrink.engine import native
    except ImportError as exc:
        return None, f"the C engine is not part of this installation ({exc})"
    lib = native.load()
    if lib is None:
        return None, f"the C engine's kernels could not be built: {native.reason()}"
    return lib, None


@register_kernel
class NativeKernel(Kernel):
    """The C engine's kernels (``deepshrink.engine``) through ctypes, on the packed layout of the
    weight (:func:`deepshrink.engine.layout.pack`: codebook indices stay bit-packed and are
    decoded on the fly; sparse layouts keep relative column gaps). Linear and conv2d run the
    engine's wrappers; a conv1d runs as a conv2d of height 1 (the packed weight relabelled
    ``[out, in, 1, k]``, the same bytes). Available when a C compiler is present."""

    name = "native"

    @classmethod
    def available(cls) -> str | None:
        return engine()[1]

    @classmethod
    def estimate_bytes(cls, layer: Layer) -> int:
        return layer.dense_bytes  # the packer keeps the smallest layout the tensor allows: never more

    def __init__(self, layer: Layer):
        import dataclasses

        from deepshrink.engine.layout import pack

        super().__init__(layer)
        lib, why = engine()
        if lib is None:
            raise RuntimeError(why)
        self.packed = pack(layer.weight)
        self.resident_bytes = self.packed.nbytes
        bn = None if layer.bias is None else np.ascontiguousarray(layer.bias.numpy(), dtype=np.float32)
        if layer.op == "linear":
            self.fn = _native_linear(lib, self.packed, layer.bias)
            return
        else:
            a, w = layer.attrs, layer.shape
            pads = OPS[layer.op].pads(a, w)
            conv2d = lib.conv2d
            if layer.op == "conv1d":
                packed = dataclasses.replace(self.packed, shape=(w[0], w[1], 1, w[2]))
                stride, dilation = (1, a["stride"][0]), (1, a["dilation"][0])
                padding = (0, pads[0], 0, pads[1])

                def fn(x: torch.Tensor) -> torch.Tensor:
                    y = conv2d(packed, x.detach().unsqueeze(2).numpy(), bn, stride, padding, dilation, a["groups"])
                    return torch.from_numpy(y).squeeze(2)
            else:
                packed = self.packed
                stride, dilation, padding = tuple(a["stride"]), tuple(a["dilation"]), tuple(pads)

                def fn(x: torch.Tensor) -> torch.Tensor:
                    return torch.from_numpy(conv2d(packed, x.detach().numpy(), bn, stride, padding, dilation,
                                                   a["groups"]))
        self.fn = fn

    def weight(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.packed.to_dense(), dtype=np.float32))


def _native_linear(lib: Any, packed: Any, bias: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A linear layer on the engine's ``ds_linear``, called with the pointers of torch tensors.

    An adapter for speed: ``lib.linear`` (the engine's wrapper) converts to numpy and back and
    looks the weight up under a lock at every call, about 5 µs of a 25 µs LeNet layer at batch 1.
    Here the ``ds_weight`` is made once by the wrapper's own :meth:`weight` (which checks the
    layout), and each call checks what the wrapper checks (float32, ``cols`` features) before C
    reads the input; anything else goes through ``lib.linear``."""
    import ctypes

    rows, cols = packed.rows, packed.cols
    wref = ctypes.byref(lib.weight(packed))
    call = lib.lib.ds_linear
    b = None if bias is None else bias.detach().to(torch.float32).contiguous()
    bptr = None if b is None else b.data_ptr()
    bn = None if b is None else b.numpy()
    empty, f32 = torch.empty, torch.float32

    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.dtype is not f32 or x.shape[-1] != cols:
            if x.ndim < 2:
                raise ValueError(f"linear: x must be a batch (n, ..., {cols}), got {tuple(x.shape)}")
            y = lib.linear(packed, x.detach().reshape(-1, x.shape[-1]).numpy(), bn)
            return torch.from_numpy(y).view(*x.shape[:-1], rows)
        x = x.detach().contiguous()
        m = x.numel() // cols
        y = empty((*x.shape[:-1], rows), dtype=f32)  # from x's own shape: C writes m rows
        if m:
            call(wref, bptr, x.data_ptr(), y.data_ptr(), m)
        return y

    fn.keep = (packed, b)  # type: ignore[attr-defined]  # the arrays C reads live as long as fn
    return fn
