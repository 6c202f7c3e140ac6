"""Shared helpers of the engine tests: typed compressed tensors of every kind, the compiled
kernels (skipping when no C compiler exists)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deepshrink.engine import native

sys.path.insert(0, str(Path(__file__).parent))
from helpers import STRICT, need_cc, typed_tensor  # noqa: E402


@pytest.fixture(scope="session")
def lib():
    """The compiled kernels; the test is skipped when they cannot be built."""
    need_cc()
    kernels = native.load()
    if kernels is None:
        pytest.skip(f"the C kernels cannot be built here: {native.reason()}")
    return kernels


@pytest.fixture(scope="session")
def make_typed():
    """:func:`typed_tensor`."""
    return typed_tensor


@pytest.fixture(scope="session")
def build_engine(tmp_path_factory):
    """``build_engine(dsz_path_or_bytes, flags=STRICT) -> main``: the engine of a file generated
    (without the export's own check) and compiled into a fresh folder with ``flags``."""
    from deepshrink.engine import codegen
    from deepshrink.engine.export import _typed, compile_engine
    from deepshrink.fileformat import Limits, read_model_file

    def build(path, flags=STRICT):
        need_cc()
        mf = read_model_file(path)
        src = codegen.generate(mf.graph, mf.plan, mf.input_spec, _typed(mf, Limits()))
        folder = tmp_path_factory.mktemp("engine")
        compile_engine(src.files, folder, native.compiler(), flags=flags)
        return folder / "main"

    return build


@pytest.fixture(scope="session")
def save_dsz(tmp_path_factory):
    """``save_dsz(model, spec, name) -> path``: the model packed into a .dsz file (as it is:
    pruned or shared weights are stored compressed)."""
    import deepshrink as ds

    def save(model, spec, name="m.dsz"):
        path = tmp_path_factory.mktemp("dsz") / name
        ds.save_model(model.eval(), path, spec)
        return path

    return save


