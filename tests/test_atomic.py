"""The one atomic write: whole or absent, temp file removed, the cause named on a full disk."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from run_builder import build_run, hit, judgment
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import WriteError
from runner.store import atomic
from runner.store.atomic import atomic_path, atomic_write, atomic_write_bytes


@contextmanager
def _tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount`, unmounted after (needs root and `mount`; else skipped)."""
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB disk for one file (the patched tests run where this one is skipped)."""
    with _tmpfs(tmp_path / "disk", "64k") as disk:
        yield disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB disk for a whole report."""
    with _tmpfs(tmp_path / "disk", "2m") as disk:
        yield disk


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


def _reported_run(root: Path) -> Path:
    hits = [hit(f"q{q}", f"m{m}", raw_score=0.1 * m) for q in range(1, 4) for m in range(1, 6)]
    return build_run(root, hits=hits, judgments=[judgment("q1", "m1"), judgment("q2", "m3")])


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def test_report_on_a_full_disk_names_the_cause_and_works_once_freed(
    small_disk: Path, tmp_path: Path
) -> None:
    run = _reported_run(tmp_path / "runs")
    out = small_disk / "report"
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * (free - 24 * 1024))  # room for the metrics, not for report.html
    cli = CliRunner()
    result = cli.invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert re.search(
        rf"error: {re.escape(str(out))}/[\w.]+: cannot write: no space left on device",
        result.output,
    )
    assert "Traceback" not in result.output
    assert _temps(small_disk) == []  # no half-written temp file
    for done in out.iterdir():  # what was written is whole
        if done.suffix == ".parquet":
            assert pq.ParquetFile(done).metadata.num_rows >= 0
    filler.unlink()
    result = cli.invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").read_text(encoding="utf-8").rstrip().endswith("</html>")
    assert _temps(small_disk) == []


def test_report_on_a_full_disk_without_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _reported_run(tmp_path / "runs")
    out = tmp_path / "out"

    def full(path: Path) -> None:  # what a full disk does to the last write before the rename
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(atomic, "fsync_file", full)
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert (
        f"error: {out / 'metrics.parquet'}: cannot write: no space left on device" in result.output
    )
    assert _temps(tmp_path) == [] and not (out / "metrics.parquet").exists()
    monkeypatch.undo()
    assert CliRunner().invoke(app, ["report", str(run), "--out", str(out)]).exit_code == 0
