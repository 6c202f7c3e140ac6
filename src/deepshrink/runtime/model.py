"""``deepshrink.load(path)``: a ready-to-run network from a deepshrink file alone."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from deepshrink.errors import FormatError, InvalidHeader, LimitExceeded, ModelError
from deepshrink.fileformat.container import Limits
from deepshrink.fileformat.model_file import ModelFile, decode_tensors, read_model_file
from deepshrink.graph import Graph, build


class CompressedModel(nn.Module):
    """A network decoded from a deepshrink file.

    ``forward`` takes preprocessed float input of shape ``(N, *input_spec.shape)``;
    :meth:`predict` takes raw input as the file's input specification describes it (for example
    uint8 images) and applies the stored scaling and normalisation first.
    """

    def __init__(self, model_file: ModelFile, tensors: dict[str, torch.Tensor], limits: Limits | None = None):
        super().__init__()
        limits = limits or Limits()
        self.graph: Graph = model_file.graph
        self.input_spec = model_file.input_spec
        self.meta: dict[str, Any] = dict(model_file.meta)
        self.file_bytes = model_file.container.file_bytes
        check_runs(self.graph, tensors, self.input_spec.shape, limits)
        self.net = build(self.graph, tensors)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def dense_state_dict(self) -> dict[str, torch.Tensor]:
        """The decoded parameters under their original names (as in the source model)."""
        return {k: v.detach().clone() for k, v in self.net.named_graph_tensors().items()}

    @torch.no_grad()
    def predict(self, raw: np.ndarray | torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """Class predictions (argmax over dim 1) for raw input; applies the stored input spec."""
        outs = []
        for i in range(0, len(raw), batch_size):
            out = self.net(self.input_spec.apply(raw[i : i + batch_size]))
            if out.ndim != 2:
                raise ModelError(f"predict needs class scores of shape (N, classes); the network returns {tuple(out.shape)}")
            outs.append(out.argmax(dim=1).numpy())
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.int64)


def check_runs(graph: Graph, tensors: dict[str, torch.Tensor], shape: tuple[int, ...], limits: Limits) -> None:
    """Check, without allocating activations, that the network runs on a batch of 2 inputs of the
    declared shape, that no node's output exceeds the limits, and that the batch survives."""
    numel = 2
    for s in shape:
        numel *= s
    if numel > limits.max_activation_elements:
        raise LimitExceeded(
            f"input shape {tuple(shape)} exceeds the limit of {limits.max_activation_elements // 2} values per sample"
        )
    meta = build(graph, {k: torch.empty(v.shape, device="meta") for k, v in tensors.items()}, device="meta")
    meta.max_elements = limits.max_activation_elements
    try:
        with torch.no_grad():
            out = meta(torch.empty(2, *shape, device="meta"))
    except FormatError:
        raise
    except Exception as exc:  # any shape error inside torch: the stored layers do not chain
        raise InvalidHeader(f"the stored network does not run on its declared input shape {tuple(shape)}: {exc}") from None
    if out.ndim < 1 or out.shape[0] != 2:
        raise InvalidHeader(f"the stored network maps a batch of 2 inputs to shape {tuple(out.shape)}: it must keep the batch dimension")


def load(path: str | os.PathLike | bytes, *, limits: Limits | None = None) -> CompressedModel:
    """Read, verify and decode a deepshrink file into a :class:`CompressedModel`.

    Malformed or hostile files raise a :class:`~deepshrink.errors.FormatError` subclass before
    any allocation sized by the file's claims.
    """
    limits = limits or Limits()
    mf = read_model_file(path, limits)
    tensors = decode_tensors(mf.container, mf.graph, limits)
    return CompressedModel(mf, tensors, limits)
