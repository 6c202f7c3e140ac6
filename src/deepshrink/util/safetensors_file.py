"""A byte-deterministic safetensors writer.

The ``safetensors`` package keeps ``metadata`` in a hash map whose order changes from one process to
the next, so the same tensors give different files. This writer emits the same format
(https://github.com/huggingface/safetensors: an 8-byte little-endian header length, a JSON header
padded with spaces to 8 bytes, then the raw little-endian tensor bytes) with sorted keys, so the
same input always gives the same bytes. Files load with ``safetensors.torch.load_file``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping

import torch

from deepshrink.util.atomic import atomic_path

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> int:
    """Write ``tensors`` (CPU tensors of the dtypes in ``_DTYPES``) and string ``metadata`` to
    ``path`` atomically, with the umask's permissions; returns the file size in bytes."""
    # like the reference writer: widest dtype first (keeps every tensor aligned), then by name
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict[str, object] = {"__metadata__": dict(sorted((metadata or {}).items()))} if metadata else {}
    offset = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise TypeError(f"tensor {name!r} has dtype {t.dtype}; safetensors stores only {sorted(_DTYPES.values())}")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        for name in order:
            fh.write(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return 8 + len(head) + offset
