"""``deepshrink.load(path)``: a ready-to-run network from a deepshrink file alone."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from deepshrink.errors import InvalidHeader
from deepshrink.fileformat.container import Limits
from deepshrink.fileformat.model_file import ModelFile, decode_tensors, read_model_file
from deepshrink.graph import Graph, build


class CompressedModel(nn.Module):
    """A network decoded from a deepshrink file.

    ``forward`` takes preprocessed float input of shape ``(N, *input_spec.shape)``;
    :meth:`predict` takes raw input as the file's input specification describes it (for example
    uint8 images) and applies the stored scaling and normalisation first.
    """

    def __init__(self, model_file: ModelFile, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.net = build(model_file.graph, tensors)
        self.graph: Graph = model_file.graph
        self.input_spec = model_file.input_spec
        self.meta: dict[str, Any] = dict(model_file.meta)
        self.file_bytes = model_file.container.file_bytes
        self._tensors = tensors
        self.eval()
        try:  # a dry run on the declared input shape: layer shapes must chain
            with torch.no_grad():
                self.net(torch.zeros(1, *self.input_spec.shape))
        except (RuntimeError, ValueError, IndexError) as exc:
            raise InvalidHeader(
                f"the stored network does not run on its declared input shape {self.input_spec.shape}: {exc}"
            ) from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def dense_state_dict(self) -> dict[str, torch.Tensor]:
        """The decoded parameters under their original names (as in the source model)."""
        return {k: v.clone() for k, v in self._tensors.items()}

    @torch.no_grad()
    def predict(self, raw: np.ndarray | torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """Class predictions for raw input (applies the stored input specification)."""
        outs = []
        for i in range(0, len(raw), batch_size):
            x = self.input_spec.apply(raw[i : i + batch_size])
            outs.append(self.net(x).argmax(dim=1).numpy())
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.int64)


def load(path: str | os.PathLike | bytes, *, limits: Limits | None = None) -> CompressedModel:
    """Read, verify and decode a deepshrink file into a :class:`CompressedModel`.

    Malformed or hostile files raise a :class:`~deepshrink.errors.FormatError` subclass before
    any allocation sized by the file's claims.
    """
    limits = limits or Limits()
    mf = read_model_file(path, limits)
    tensors = decode_tensors(mf.container, mf.graph, limits)
    return CompressedModel(mf, tensors)
