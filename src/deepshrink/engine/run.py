"""The exported C engine run in this process: ``deepshrink.load(path, mode="engine")``.

The engine's ``model.c`` (the same source ``export --format c`` writes, weights in their packed
compressed form) is compiled into a shared library in a private temporary folder and called
through ``ctypes``, one sample per ``model_run`` call. So ``deepshrink eval FILE --runtime engine``
scores exactly the code a board would run, on the user's data, without leaving Python.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import torch
from torch import nn

from deepshrink.engine import codegen, native
from deepshrink.engine.export import CFLAGS, _param_shapes, _run, _typed, flash_bytes
from deepshrink.errors import ConfigError, ModelError
from deepshrink.fileformat.container import Limits
from deepshrink.fileformat.model_file import ModelFile
from deepshrink.graph.build import GraphNet

COMPILE_SECONDS = 600


class EngineNet(nn.Module):
    """A network run by its compiled C engine. ``forward`` takes a float32 batch of the graph's one
    input (preprocessed, as :class:`~deepshrink.runtime.CompressedModel` passes it) and returns the
    output batch; samples run one after another (the engine has one static arena, so calls are
    serialised by a lock). Inference only: no gradients flow through it."""

    def __init__(self, mf: ModelFile, limits: Limits | None = None):
        super().__init__()
        limits = limits or Limits()
        self.graph = mf.graph
        cc = native.compiler()
        if cc is None:
            raise ConfigError("the engine runtime needs a C compiler ($CC, cc, gcc or clang); none was found. "
                              "Use mode='compressed' or 'dense'")
        codegen.check_support(mf.graph, mf.plan, _param_shapes(mf))
        src = codegen.generate(mf.graph, mf.plan, mf.input_spec, _typed(mf, limits))
        self.arena_bytes, self.weight_bytes = src.arena_bytes, src.weight_bytes
        self.input_shape, self.output_shape = tuple(src.input_shape), tuple(src.output_shape)
        folder = Path(tempfile.mkdtemp(prefix="deepshrink-engine-run-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, True)
        for name, text in src.files.items():
            (folder / name).write_text(text)
        _run([cc, *CFLAGS, "-c", "model.c", "-o", "model.o"], folder, COMPILE_SECONDS, f"{cc} compiling model.c")
        self.flash_bytes = flash_bytes(folder / "model.o")
        _run([cc, *CFLAGS, "-fPIC", "-shared", "model.c", "-o", "libmodel.so", "-lm"], folder, COMPILE_SECONDS,
             f"{cc} building the engine library")
        self._lib = ctypes.CDLL(str(folder / "libmodel.so"))
        self._run = self._lib.model_run
        self._run.argtypes, self._run.restype = [ctypes.c_void_p, ctypes.c_void_p], None
        self._in = int(torch.Size(self.input_shape).numel())
        self._out = int(torch.Size(self.output_shape).numel())
        self._lock = threading.Lock()

    bind = GraphNet.bind  # the graph's inputs by name, with the same errors as the other runtimes

    def named_graph_tensors(self) -> dict[str, torch.Tensor]:
        raise ModelError("the engine keeps its weights packed inside the compiled library; load the file with "
                         "mode='dense' for its dense tensors")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.input_shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ModelError(f"the engine takes a batch of shape (N, {', '.join(map(str, self.input_shape))}), got {got}")
        x = x.detach().to(torch.float32).contiguous()
        y = torch.empty((len(x), *self.output_shape), dtype=torch.float32)
        xp, yp = x.data_ptr(), y.data_ptr()
        with self._lock:
            for i in range(len(x)):
                self._run(xp + 4 * self._in * i, yp + 4 * self._out * i)
        return y

    def report(self) -> dict[str, int | None]:
        """The engine's memory: flash (text + data of ``model.o``), RAM arena and const weight bytes."""
        return {"flash_bytes": self.flash_bytes, "arena_bytes": self.arena_bytes, "weight_bytes": self.weight_bytes}
