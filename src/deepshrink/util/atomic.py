"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

Temporaries are named ``.<name>.deepshrink-tmp-XXXXXXXX`` (see :data:`TMP_MARK`) so that one left
behind by a hard kill (SIGKILL, power loss) is recognisable. Any exception, including
``KeyboardInterrupt`` and the ``SystemExit`` the command line raises on SIGTERM, removes it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".deepshrink-tmp-"
"""Part of every temporary file name written by :func:`atomic_path`."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_target(path: str | os.PathLike) -> None:
    """Raise :class:`IsADirectoryError` when ``path`` is a folder: callers check before any work."""
    if Path(path).is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; expected a file name to write", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Missing parent folders are created. The final file gets the permissions ``0o666 & ~umask``,
    as a plain ``open(path, "w")`` would, whatever the writer did to the temporary. On any
    exception the temporary file is removed and ``path`` is left as it was.
    """
    check_target(path)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:120]}{TMP_MARK}", dir=target.parent)
    tmp_path = Path(tmp)
    try:
        os.close(fd)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp (and some writers) create 0600
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
