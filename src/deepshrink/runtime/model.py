"""``deepshrink.load(path)``: a ready-to-run network from a deepshrink file alone."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from deepshrink.errors import ConfigError, ModelError
from deepshrink.fileformat.container import Limits
from deepshrink.fileformat.model_file import ModelFile, decode_tensors, read_model_file
from deepshrink.graph import Graph, build
from deepshrink.runtime.compressed import CompressedNet
from deepshrink.runtime.select import LARGE_BATCH, KernelRequest


class CompressedModel(nn.Module):
    """A network decoded from a deepshrink file.

    ``forward`` takes the graph's inputs in order (or by name), each a batch ``(N, *shape)``
    of the per-sample shape and dtype the file declares: preprocessed float input of shape
    ``(N, *input_spec.shape)`` for a one-input network; for a network with several inputs, e.g.
    ``model(input_ids, attention_mask)`` (int64). It returns the output, or a tuple for several.
    :meth:`predict` takes raw input as the file's input specification describes it (for example
    uint8 images) and applies the stored scaling and normalisation first. Batches whose
    activations would exceed ``Limits.max_activation_elements`` run in chunks (same results).

    ``net`` runs the graph: a :class:`~deepshrink.graph.GraphNet` of dense tensors
    (:attr:`mode` ``"dense"``), or a :class:`~deepshrink.runtime.compressed.CompressedNet` whose
    layers run from the compressed weights (``"compressed"``; see :func:`load` and
    :attr:`kernels`). Everything else behaves the same in both modes.
    """

    def __init__(self, model_file: ModelFile, tensors: Mapping[str, torch.Tensor] | None,
                 limits: Limits | None = None, *, net: nn.Module | None = None):
        super().__init__()
        limits = limits or Limits()
        self.graph: Graph = model_file.graph
        self.input_spec = model_file.input_spec
        self.meta: dict[str, Any] = dict(model_file.meta)
        self.file_bytes = model_file.container.file_bytes
        self.plan = model_file.plan
        self.max_batch = max_batch(model_file, limits)
        if net is None:
            if tensors is None:
                raise ModelError("CompressedModel needs the decoded tensors or a built network (net=...)")
            net = build(self.graph, tensors)
        self.net = net
        names = self.graph.input_names
        self._one_input = tuple(self.plan.shapes[names[0]]) if len(names) == 1 else None
        self.eval()

    @property
    def mode(self) -> str:
        """``"compressed"`` when layers run from the compressed weights in Python, ``"engine"`` when the
        compiled C engine runs the network, else ``"dense"``."""
        if isinstance(self.net, CompressedNet):
            return "compressed"
        return "engine" if type(self.net).__name__ == "EngineNet" else "dense"

    @property
    def kernels(self) -> list[dict[str, Any]]:
        """The kernel chosen for each layer in compressed mode, with its timings and resident
        bytes (see :attr:`CompressedNet.kernels <deepshrink.runtime.compressed.CompressedNet.kernels>`);
        empty in dense mode, where every node runs its op's PyTorch forward."""
        return self.net.kernels if isinstance(self.net, CompressedNet) else []

    def forward(self, *xs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = xs[0] if len(xs) == 1 and not named else None
        if (self._one_input is not None and isinstance(x, torch.Tensor) and x.ndim == len(self._one_input) + 1
                and x.shape[1:] == self._one_input):  # the common case, checked with little Python
            n = x.shape[0]
        else:
            env = self.net.bind(xs, named)
            n = None
            for name, x in env.items():  # the file's limits hold for the declared shapes only
                want = self.plan.shapes[name]
                if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != want or n not in (None, len(x)):
                    got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ModelError(f"input {name!r} must be a batch of shape (N, {', '.join(map(str, want))}) "
                                     f"with the same N as the other inputs, got {got}")
                n = len(x)
            xs = tuple(env[name] for name in self.graph.input_names)
        if n <= self.max_batch:
            return self.net(*xs)
        chunks = [self.net(*(x[i : i + self.max_batch] for x in xs)) for i in range(0, n, self.max_batch)]
        if isinstance(chunks[0], tuple):
            return tuple(torch.cat(parts) for parts in zip(*chunks))
        return torch.cat(chunks)

    def dense_state_dict(self) -> dict[str, torch.Tensor]:
        """The decoded parameters under their original names (as in the source model)."""
        return {k: v.detach().clone() for k, v in self.net.named_graph_tensors().items()}

    @torch.no_grad()
    def predict(
        self,
        raw: np.ndarray | torch.Tensor,
        batch_size: int = 1024,
        *,
        assume: Literal["raw", "scaled", "normalized"] | None = None,
    ) -> np.ndarray:
        """Class predictions (argmax over dim 1).

        ``raw`` is input as the file's input spec describes it (``input_spec.dtype``, e.g. uint8
        images); the stored scaling and normalisation are applied. Input of another dtype is
        refused unless ``assume`` says what it holds: ``"raw"`` (raw values in a wider dtype),
        ``"scaled"`` (already multiplied by ``scale``, e.g. floats in [0, 1]) or ``"normalized"``
        (fully preprocessed; passed to the network as is). See :meth:`InputSpec.prepare`.
        """
        if self.input_spec is None:
            raise ModelError(f"predict needs a network with one input and an input specification; this one takes "
                             f"{list(self.graph.input_names)}: call the model on them")
        outs = []
        for i in range(0, len(raw), batch_size):
            out = self(self.input_spec.prepare(raw[i : i + batch_size], assume=assume))
            if out.ndim != 2:
                raise ModelError(f"predict needs class scores of shape (N, classes); the network returns {tuple(out.shape)}")
            outs.append(out.argmax(dim=1).numpy())
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.int64)


MODES = ("dense", "compressed", "engine")


def max_batch(model_file: ModelFile, limits: Limits) -> int:
    """The most samples one call runs at once within ``limits.max_activation_elements``."""
    return max(1, limits.max_activation_elements // model_file.plan.peak_elements)


def load(
    path: str | os.PathLike | bytes,
    *,
    limits: Limits | None = None,
    mode: Literal["dense", "compressed", "engine"] = "dense",
    kernels: KernelRequest = None,
    prefer: str = "speed",
) -> CompressedModel:
    """Read, verify and decode a deepshrink file into a :class:`CompressedModel`.

    Malformed or hostile files raise a :class:`~deepshrink.errors.FormatError` subclass before
    any allocation sized by the file's claims: shapes, work and activation sizes are checked from
    the header in integer arithmetic (see :meth:`deepshrink.graph.Graph.plan`).

    ``mode="dense"`` (the default) decodes every tensor to dense float32 and runs each node's
    PyTorch forward. ``mode="compressed"`` keeps the weights of the linear and conv layers in
    their typed compressed form (:mod:`deepshrink.storage.tensors`) and runs each layer with the
    kernel that measured fastest for it at load, at batch 1 and at a large batch (dense, torch
    or scipy CSR, codebook gather, or the compiled engine when a C compiler is present; see
    :mod:`deepshrink.runtime.select`); results match dense decoding to float rounding, and
    ``model.kernels`` reports the choice. ``kernels`` forces kernels in compressed mode: one
    kernel name for every layer it can run, or a mapping of layer name to kernel name
    (``{"fc1": "csr"}``); the names are :data:`deepshrink.runtime.kernels.KERNELS`'s.
    Compressed mode is for inference (no gradients); it measures with the caller's PyTorch
    thread count. ``prefer="memory"`` keeps, per layer, the correct kernel holding the fewest
    bytes (usually the engine's packed weights, when a compiler is present) instead of the
    fastest one, one kernel for every batch size.

    ``mode="engine"`` runs the C engine that ``export --format c`` writes (weights packed and
    decoded on the fly), compiled here into a shared library and called through ctypes one sample
    at a time (:class:`deepshrink.engine.run.EngineNet`): what a board would compute, scored in
    Python. It needs a C compiler and a network the engine supports (one float input, one output).
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if prefer != "speed" and mode != "compressed":
        raise ConfigError("prefer= chooses how mode='compressed' picks its kernels; other modes have none to pick")
    if kernels is not None and mode != "compressed":
        raise ConfigError("kernels= chooses the kernels of mode='compressed'; dense mode runs PyTorch's own")
    limits = limits or Limits()
    mf = read_model_file(path, limits)
    if mode == "dense":
        tensors = decode_tensors(mf.container, mf.graph, limits)
        return CompressedModel(mf, tensors, limits)
    if mode == "engine":
        from deepshrink.engine.run import EngineNet

        return CompressedModel(mf, None, limits, net=EngineNet(mf, limits))
    from deepshrink.storage import decode_typed

    typed = {name: decode_typed(name, desc, mf.container.sections, limits)
             for name, desc in mf.container.header["tensors"].items()}
    large = min(LARGE_BATCH, max_batch(mf, limits))
    net = CompressedNet(mf.graph, typed, mf.plan, large_batch=large, kernels=kernels, prefer=prefer)
    return CompressedModel(mf, None, limits, net=net)
