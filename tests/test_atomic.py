"""The one atomic write: whole or absent, temp file removed, the cause named on a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import WriteError
from runner.store.atomic import atomic_path, atomic_write, atomic_write_bytes


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and `mount`; skipped elsewhere, the patched test still runs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")
    with atomic_write(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # nothing shows before the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_failure_inside_block_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="boom"), atomic_write(target) as f:
        f.write(b"half")
        raise ValueError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_patched_enospc_names_cause_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.md"

    def full(fd: int) -> None:  # a buffered write's ENOSPC may surface only at fsync
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match=rf"{target}: cannot write: no space left on device"):
        atomic_write_bytes(target, b"x" * 100_000)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_rust_writer_error_text_is_mapped(tmp_path: Path) -> None:
    target = tmp_path / "m.parquet"
    with pytest.raises(WriteError, match="no space left on device"), atomic_path(target):
        raise RuntimeError("failed to write: No space left on device (os error 28)")
    assert list(tmp_path.iterdir()) == []


def test_real_full_disk_then_freed(tiny_disk: Path) -> None:
    target = tiny_disk / "big.bin"
    with pytest.raises(WriteError, match=rf"{target}: cannot write: no space left on device"):
        atomic_write_bytes(target, os.urandom(256 * 1024))
    assert list(tiny_disk.iterdir()) == []  # no 0-byte temp file left
    atomic_write_bytes(target, b"fits")
    assert target.read_bytes() == b"fits"
