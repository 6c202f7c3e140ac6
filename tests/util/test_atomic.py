"""Atomic writes: the umask's permissions, recognisable temporaries, nothing left behind on
failure or on SIGTERM in the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from deepshrink.util.atomic import TMP_MARK, atomic_path, write_bytes_atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_written_files_get_the_umask_permissions(tmp_path, umask_027):
    target = tmp_path / "new" / "folder" / "m.dsz"  # missing folders are created
    with atomic_path(target) as tmp:
        assert TMP_MARK in tmp.name and tmp.name.startswith(".m.dsz")
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)  # a writer that leaves the file 0600
        os.write(fd, b"data")
        os.close(fd)
        os.chmod(tmp, 0o600)
    assert target.read_bytes() == b"data"
    assert target.stat().st_mode & 0o777 == 0o640


def test_a_failed_write_leaves_neither_temporary_nor_target(tmp_path):
    target = tmp_path / "m.dsz"
    write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.dsz"]


def test_a_folder_is_not_a_target(tmp_path):
    with pytest.raises(IsADirectoryError, match="expected a file name"):
        write_bytes_atomic(tmp_path, b"x")
    assert os.listdir(tmp_path) == []


def test_sigterm_during_a_write_removes_the_temporary(tmp_path):
    """The command line turns SIGTERM into an exception, so the temporary is removed."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from deepshrink.cli import Terminated, _signals_unwind
        from deepshrink.util.atomic import atomic_path
        try:
            with _signals_unwind(), atomic_path({str(tmp_path / "out.onnx")!r}) as tmp:
                tmp.write_bytes(b"partial")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
        except Terminated as exc:
            print("terminated", exc.signum)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert r.stdout.strip() == f"terminated {int(__import__('signal').SIGTERM)}", r.stderr
    assert os.listdir(tmp_path) == []
