"""Data sources by name: what the pipeline trains and measures on, labelled or not.

A data source has a ``name``, ``split(name) -> Split`` for ``"train"``, ``"val"`` and ``"test"``,
``split_sizes()``, and ``input_spec`` (the preprocessing of its raw inputs, or ``None`` for token
ids). Labelled image datasets are :class:`~deepshrink.data.Dataset` (``load_dataset`` names them:
``fashion-mnist``, ``mnist``, ``mnist-5k``, or a path); the unlabelled sources for pretrained
networks are registered in :data:`UNLABELLED`. :func:`open_source` opens either by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from deepshrink.data.dataset import NAMED_DATASETS, PACKAGED_DATASETS, load_dataset
from deepshrink.data.images import IMAGE_CROPS, ImageCrops
from deepshrink.data.spec import InputSpec
from deepshrink.data.split import Split
from deepshrink.data.text import DEBIAN_SENTENCES, DebianSentences
from deepshrink.errors import DataError

__all__ = ["UNLABELLED", "DataSource", "open_source", "source_names"]


@runtime_checkable
class DataSource(Protocol):
    """What every data source offers (a :class:`~deepshrink.data.Dataset` is one)."""

    name: str
    input_spec: InputSpec | None

    def split(self, split: str) -> Split: ...

    def split_sizes(self) -> dict[str, int]: ...


#: Unlabelled sources (``target=None``) for judging a network against its dense self.
UNLABELLED: Mapping[str, Callable[..., DataSource]] = MappingProxyType({
    IMAGE_CROPS: ImageCrops,
    DEBIAN_SENTENCES: DebianSentences,
})


def source_names() -> list[str]:
    """Every data-source name :func:`open_source` accepts."""
    return sorted({*NAMED_DATASETS, *PACKAGED_DATASETS, *UNLABELLED})


def open_source(name: str, **options) -> DataSource:
    """The data source ``name`` (see :func:`source_names`); ``options`` go to its constructor
    (e.g. ``sizes=``, ``seed=`` for image crops; ``val_size=``, ``seed=`` for datasets)."""
    if name in UNLABELLED:
        return UNLABELLED[name](**options)
    if name in NAMED_DATASETS or name in PACKAGED_DATASETS:
        return load_dataset(name, **options)
    raise DataError(f"unknown data source {name!r}; expected one of {source_names()}")
