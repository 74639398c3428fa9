"""atomic_write_bytes: all or nothing, umask permissions, no temporary left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from prefvec.fileio import atomic_write_bytes


def test_replaces_atomically_with_umask_permissions(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.bin"
    old = os.umask(0o022)
    try:
        atomic_write_bytes(path, b"one")
        atomic_write_bytes(path, b"two")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
