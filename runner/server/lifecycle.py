"""`vlbench serve` in a child process: start it, read the address it announces, stop it.

Benchmarks and CLI tests run the server in a process of its own, so that it shares no GIL with
the client that drives it. `runner.cli.serve` prints `base_url: ...` and `dataset_id: ...` once it
listens; this module is the one reader of that announcement.

    with serve_process(["--dataset", "demo", "--no-auth"]) as server:
        drive(server.base_url, server.dataset_id)
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.errors import VlbenchError

__all__ = ["ServeProcess", "serve_process", "start_serve_process", "stop_serve_process"]

# The current interpreter running the CLI: works in any venv, installed console script or not.
DEFAULT_COMMAND = (sys.executable, "-c", "from runner.cli import main; main()")


@dataclass(frozen=True, slots=True)
class ServeProcess:
    """A running `vlbench serve` and the address it announced."""

    process: subprocess.Popen[str]
    base_url: str
    dataset_id: str


def start_serve_process(
    args: Sequence[str],
    *,
    command: Sequence[str] = DEFAULT_COMMAND,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    capture_stderr: bool = False,
) -> ServeProcess:
    """Start `command serve --port 0 *args` and wait until it announces where it listens.

    Raises `VlbenchError` (with its stderr when captured) if the server exits first.
    """
    process = subprocess.Popen(
        [*command, "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    assert process.stdout is not None  # stdout=PIPE
    announced: dict[str, str] = {}
    while "base_url" not in announced or "dataset_id" not in announced:
        line = process.stdout.readline()
        if not line:
            code = process.wait()
            errors = process.stderr.read() if process.stderr is not None else ""
            stop_serve_process(process)
            raise VlbenchError(f"vlbench serve exited with {code} before listening: {errors}")
        key, _, value = line.strip().partition(": ")
        announced[key] = value
    return ServeProcess(process, announced["base_url"], announced["dataset_id"])


def stop_serve_process(process: subprocess.Popen[str], *, timeout_s: float = 20) -> None:
    """SIGTERM (the server's clean stop), then SIGKILL after `timeout_s`; close the pipes."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


@contextmanager
def serve_process(
    args: Sequence[str],
    *,
    command: Sequence[str] = DEFAULT_COMMAND,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    capture_stderr: bool = False,
) -> Iterator[ServeProcess]:
    """`start_serve_process` as a context manager that stops the server on exit."""
    server = start_serve_process(
        args, command=command, env=env, cwd=cwd, capture_stderr=capture_stderr
    )
    try:
        yield server
    finally:
        stop_serve_process(server.process)
