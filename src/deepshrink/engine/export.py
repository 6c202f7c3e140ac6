"""``deepshrink export model.dsz -o DIR --format c``: the C engine of a file, compiled and checked
against PyTorch before anything is written, and the engine's sizes for ``deepshrink info``.

The file is read and validated (:func:`~deepshrink.fileformat.read_model_file`, then
:func:`~deepshrink.storage.decode_typed` per tensor) before any code is generated, and every op
the engine lacks is named in one :class:`~deepshrink.errors.UnsupportedOperationError` before
anything is decoded. With a C compiler the engine is built in a temporary folder (``-std=c99
-O2 -Wall -Werror``), its flash bytes are measured (``size`` of ``model.o``: text + data; the ELF
sections when ``size`` is missing), and ``main`` is run on a few samples and compared with
PyTorch (:func:`deepshrink.load`'s network). Without one the files are written unchecked
(``"checked": false``). ``DIR`` is written atomically: a temporary folder beside it, then a rename.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepshrink.engine import codegen, native
from deepshrink.errors import ConfigError, DeepshrinkError, ModelError, UnsupportedOperationError
from deepshrink.fileformat.container import Limits
from deepshrink.fileformat.model_file import ModelFile, read_model_file
from deepshrink.storage import decode_typed
from deepshrink.storage.tensors import CompressedTensor
from deepshrink.util.atomic import TMP_MARK

CFLAGS = ("-std=c99", "-O2", "-Wall", "-Werror")
"""How the export compiles the engine (the Makefile uses the same, without -Werror)."""
COMPILE_SECONDS = 600
RUN_SECONDS = 300
CHECK_OPS = 1 << 31
"""Operations (see :class:`~deepshrink.graph.ir.Plan`) the check may spend; a heavier network is
checked on fewer samples, at least 2."""
INFO_MAX_ELEMENTS = 1 << 24
"""Weights :func:`engine_report` decodes by default (``info``); a larger network's weight bytes
are computed only when asked (``info --engine``)."""
BUILD_FILES = ("main", "main.o", "model.o")
"""What ``make`` leaves in an engine's folder: an export may replace a folder holding only these
and the engine's own files."""


def _param_shapes(mf: ModelFile) -> dict[str, tuple[int, ...]]:
    return {name: tuple(desc["shape"]) for name, desc in mf.tensors_desc.items()}


def _typed(mf: ModelFile, limits: Limits) -> dict[str, CompressedTensor]:
    return {name: decode_typed(name, desc, mf.container.sections, limits) for name, desc in mf.tensors_desc.items()}


# ----------------------------------------------------------------------------------------------
# compiling and measuring


def elf_alloc_bytes(data: bytes) -> int | None:
    """Bytes of an ELF object's allocated sections that hold data in the file (text, rodata,
    data: what ``size`` reports as text + data); None if ``data`` is not an ELF file."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide, end = data[4] == 2, "<" if data[5] == 1 else ">"
    try:
        if wide:
            shoff, = struct.unpack_from(end + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        else:
            shoff, = struct.unpack_from(end + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        total = 0
        for i in range(shnum):
            base = shoff + i * shentsize
            if wide:
                sh_type, sh_flags = struct.unpack_from(end + "IQ", data, base + 4)
                sh_size, = struct.unpack_from(end + "Q", data, base + 32)
            else:
                sh_type, sh_flags = struct.unpack_from(end + "II", data, base + 4)
                sh_size, = struct.unpack_from(end + "I", data, base + 20)
            if sh_flags & 0x2 and sh_type != 8:  # SHF_ALLOC, not SHT_NOBITS (.bss)
                total += sh_size
        return total
    except struct.error:
        return None


def flash_bytes(obj: Path) -> int | None:
    """Flash bytes of a compiled object: text + data from binutils ``size`` (Berkeley format),
    else from its ELF sections; None when neither works."""
    tool = shutil.which("size")
    if tool:
        try:
            res = subprocess.run([tool, str(obj)], capture_output=True, text=True, timeout=60)
            fields = res.stdout.splitlines()[1].split() if res.returncode == 0 else []
            if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
                return int(fields[0]) + int(fields[1])
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    try:
        return elf_alloc_bytes(obj.read_bytes())
    except OSError:
        return None


def _run(cmd: Sequence[str], cwd: Path, timeout: int, what: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(list(cmd), cwd=cwd, input=data, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{what} took over {timeout} s") from None
    except OSError as exc:
        raise ModelError(f"{what} failed: {exc}") from None
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()[:3000]
        raise ModelError(f"{what} failed (exit status {res.returncode}): {err}")
    return res


def compile_engine(files: Mapping[str, str], folder: Path, cc: str, *, flags: Sequence[str] = CFLAGS,
                   link: bool = True) -> Path:
    """Write ``files`` into ``folder`` and compile ``model.o`` (and ``main`` with ``link``) as the
    Makefile does; returns ``model.o``. Raises :class:`ModelError` with the compiler's message."""
    for name, text in files.items():
        (folder / name).write_text(text)
    _run([cc, *flags, "-c", "model.c", "-o", "model.o"], folder, COMPILE_SECONDS, f"{cc} compiling model.c")
    if link:
        _run([cc, *flags, "-c", "main.c", "-o", "main.o"], folder, COMPILE_SECONDS, f"{cc} compiling main.c")
        _run([cc, *flags, "-o", "main", "main.o", "model.o", "-lm"], folder, COMPILE_SECONDS, f"{cc} linking main")
    return folder / "model.o"


def run_engine(binary: Path, raw: np.ndarray, *, scores: bool = True) -> np.ndarray:
    """Run a built ``main`` on raw samples (``(n, ...)`` of the engine's raw dtype): the output
    vectors (``(n, size)`` float32) or, without ``scores``, the labels."""
    res = _run([str(binary), "--scores"] if scores else [str(binary)], binary.parent, RUN_SECONDS,
               "the compiled engine", np.ascontiguousarray(raw).tobytes())
    lines = res.stdout.decode().split("\n")[:-1]
    if scores:
        return np.array([[float(v) for v in line.split()] for line in lines], np.float32)
    return np.array([int(line) for line in lines], np.int64)


# ----------------------------------------------------------------------------------------------
# checking against PyTorch


def _raw_samples(spec, n: int, seed: int = 0) -> np.ndarray:
    """``n`` raw inputs as a user would feed them: uint8 pixels, or floats for a float spec."""
    rng = np.random.default_rng(seed)
    if spec.dtype == "uint8":
        return rng.integers(0, 256, (n, *spec.shape), dtype=np.uint8)
    return rng.standard_normal((n, *spec.shape)).astype(np.float32)


def agreement(got: np.ndarray, want: np.ndarray) -> dict[str, float | None]:
    """Max |difference|, the largest output magnitude, and the argmax agreement (None for one output value)."""
    diff = float(np.abs(got - want).max()) if want.size else 0.0
    agree = float((got.argmax(1) == want.argmax(1)).mean()) if want.ndim == 2 and want.shape[1] > 1 else None
    return {"max_abs_diff": diff, "output_scale": float(np.abs(want).max()) if want.size else 0.0,
            "argmax_agreement": agree}


def _check(mf: ModelFile, typed: Mapping[str, CompressedTensor], src: codegen.EngineSource, binary: Path,
           raw: np.ndarray, limits: Limits) -> dict[str, Any]:
    from deepshrink.runtime.model import CompressedModel  # PyTorch: only when checking

    model = CompressedModel(mf, {k: torch.from_numpy(np.ascontiguousarray(t.to_dense())) for k, t in typed.items()},
                            limits)
    spec = codegen.engine_spec(mf.graph, mf.plan, mf.input_spec)
    with torch.no_grad():
        want = model(spec.apply(raw)).reshape(len(raw), -1).numpy()
    got = run_engine(binary, raw)
    if got.shape != want.shape:
        raise ModelError(f"the compiled engine printed {got.shape} values for {want.shape} outputs")
    out = agreement(got, want)
    # float32 sums in another order: differences grow with the outputs' scale and the depth
    tol = 1e-3 * max(1.0, out["output_scale"])
    top2 = np.sort(want, axis=1)[:, -2:] if want.ndim == 2 and want.shape[1] > 1 else None
    flips = 0 if top2 is None else int(((got.argmax(1) != want.argmax(1)) & (top2[:, 1] - top2[:, 0] > 2 * tol)).sum())
    if not out["max_abs_diff"] <= tol or flips:
        raise ModelError(f"the compiled engine and PyTorch disagree (max |diff| {out['max_abs_diff']:.3g}, allowed "
                         f"{tol:.3g}; argmax agreement {out['argmax_agreement']}); nothing was written")
    return out


# ----------------------------------------------------------------------------------------------
# writing the folder


def _write_folder(out: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` into the folder ``out`` atomically (a temporary folder beside it, renamed).
    An existing folder is replaced only if it holds nothing but an engine's files."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{str(out)!r} is a file; --format c writes a folder (model.c, model.h, main.c, Makefile)")
    if out.is_dir():
        extra = sorted(set(os.listdir(out)) - set(codegen.FILES) - set(BUILD_FILES))
        if extra:
            raise ConfigError(f"{str(out)!r} holds other files ({', '.join(extra[:5])}); export the engine into a new "
                              "or empty folder, or one holding only an earlier engine")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:100]}{TMP_MARK}", dir=parent))
    old = None
    try:
        mask = os.umask(0)
        os.umask(mask)
        for name, text in files.items():
            (tmp / name).write_text(text)
            os.chmod(tmp / name, 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        if out.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name[:100]}{TMP_MARK}old-", dir=parent))
            os.rename(out, old / "engine")
        os.rename(tmp, out)
    except BaseException:
        if old is not None and (old / "engine").exists() and not out.exists():
            os.rename(old / "engine", out)  # put the earlier engine back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def export_c(path: str | os.PathLike | bytes, out: str | os.PathLike, *, inputs: np.ndarray | torch.Tensor | None = None,
             limits: Limits | None = None, check: bool = True) -> dict[str, Any]:
    """Write the C engine of the deepshrink file ``path`` into the folder ``out`` (``model.c``,
    ``model.h``, ``main.c``, ``Makefile``).

    With a C compiler (and ``check``) the engine is compiled and ``main`` is compared with
    PyTorch on ``inputs`` (raw samples, as :meth:`CompressedModel.predict` takes them: e.g.
    uint8 images) or on a few random raw samples; nothing is written if they disagree. Returns
    the files, ``flash_bytes`` (text + data of ``model.o``; None without a compiler),
    ``arena_bytes`` (RAM), ``weight_bytes`` (const arrays), ``dsz_bytes``, ``checked``,
    ``max_abs_diff`` and ``argmax_agreement``.
    """
    limits = limits or Limits()
    mf = read_model_file(path, limits)
    codegen.check_support(mf.graph, mf.plan, _param_shapes(mf))  # every missing op named, before decoding
    typed = _typed(mf, limits)
    src = codegen.generate(mf.graph, mf.plan, mf.input_spec, typed)
    spec = codegen.engine_spec(mf.graph, mf.plan, mf.input_spec)
    raw = None
    if inputs is not None:
        raw = np.ascontiguousarray(inputs.numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs))
        if raw.dtype != np.dtype(spec.dtype) or raw.shape[1:] != spec.shape or not len(raw):
            raise ConfigError(f"inputs must be raw samples of shape (N, {', '.join(map(str, spec.shape))}) and dtype "
                              f"{spec.dtype}, got {raw.shape} {raw.dtype}")
    result: dict[str, Any] = {"format": "c", "path": str(out), "files": list(codegen.FILES), "flash_bytes": None,
                              "arena_bytes": src.arena_bytes, "weight_bytes": src.weight_bytes,
                              "dsz_bytes": mf.container.file_bytes, "checked": False, "max_abs_diff": None,
                              "argmax_agreement": None, "compiler": None}
    cc = native.compiler()
    if cc is not None and check:
        with tempfile.TemporaryDirectory(prefix="deepshrink-engine-") as build:
            folder = Path(build)
            obj = compile_engine(src.files, folder, cc)
            result["flash_bytes"] = flash_bytes(obj)
            if raw is None:
                n = max(2, min(16, CHECK_OPS // max(1, mf.plan.ops)))
                raw = _raw_samples(spec, n)
            res = _check(mf, typed, src, folder / "main", raw, limits)
            result.update(checked=True, compiler=cc, max_abs_diff=res["max_abs_diff"],
                          argmax_agreement=res["argmax_agreement"])
    _write_folder(Path(out), src.files)
    result["bytes"] = sum(len(t.encode()) for t in src.files.values())
    return result


def engine_report(path: str | os.PathLike | bytes | ModelFile, limits: Limits | None = None, *,
                  flash: bool = False) -> dict[str, Any]:
    """What the C engine of a file needs, for ``deepshrink info``: ``supported`` (and, if not,
    the ``problems``), ``arena_bytes`` (from the graph), ``weight_bytes`` (from the packed
    layouts: the tensors are decoded, by default only for up to :data:`INFO_MAX_ELEMENTS` weights)
    and, with ``flash``, ``flash_bytes`` (model.c compiled; None without a compiler, with a
    ``flash_error``). A file whose streams do not decode gets an ``error``."""
    limits = limits or Limits()
    mf = path if isinstance(path, ModelFile) else read_model_file(path, limits)
    out: dict[str, Any] = {"supported": True, "arena_bytes": None, "weight_bytes": None, "flash_bytes": None}
    try:
        out["arena_bytes"] = codegen.plan_bytes(mf.graph, mf.plan, _param_shapes(mf))["arena_bytes"]
    except UnsupportedOperationError as exc:
        return {**out, "supported": False, "problems": list(exc.problems)}
    shapes = _param_shapes(mf)
    if not flash and sum(math.prod(v) for v in shapes.values()) > INFO_MAX_ELEMENTS:
        return {**out, "note": f"over {INFO_MAX_ELEMENTS:,} weights: decoded only with --engine"}
    try:
        typed = _typed(mf, limits)
    except DeepshrinkError as exc:
        return {**out, "error": str(exc)}
    if not flash:
        out["weight_bytes"] = codegen.plan_bytes(mf.graph, mf.plan, shapes, typed)["weight_bytes"]
        return out
    src = codegen.generate(mf.graph, mf.plan, mf.input_spec, typed)
    out["weight_bytes"] = src.weight_bytes
    cc = native.compiler()
    if cc is None:
        return {**out, "flash_error": "no C compiler (set CC, or install cc/gcc/clang)"}
    with tempfile.TemporaryDirectory(prefix="deepshrink-engine-") as build:
        try:
            out["flash_bytes"] = flash_bytes(compile_engine(src.files, Path(build), cc, link=False))
        except ModelError as exc:
            out["flash_error"] = str(exc)
    return out
