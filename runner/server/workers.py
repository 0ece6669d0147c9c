"""`vlbench serve --workers N`: N server processes on one port, so that the server uses N cores.

    serve(ServerConfig("demo", port=8765), workers=2, ready=print)     # blocks until SIGTERM/^C

Each worker is a process of its own (spawned, so nothing is shared by accident) that opens the
dataset and listens on the same host and port with SO_REUSEPORT; the kernel hands each new
connection to one of them. What a worker holds is its own: the result and query-embedding caches
and the fault switches' draws (a rate-limit fault would be counted per worker, so it needs one
worker). Export jobs are shared: the workers keep them in one directory, so a poll or a download
may reach any worker.

`run_workers` is the process manager itself and knows nothing of the server: it runs a picklable
`Worker` (a factory: given the port and a `ready` callback, it serves until SIGTERM) in N
processes, reports the first worker's `ready`, and stops every worker when it is stopped or
when one of them exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Final, Protocol

from runner.errors import UsageError, VlbenchError
from runner.server.config import ServerConfig
from runner.server.lifecycle import RunningServer, resolve_dataset_dir, serve_until_signal

__all__ = ["Worker", "run_workers", "serve", "serve_worker"]

Ready = Callable[[RunningServer], None]
# How long a worker may take to open its dataset and listen, and to stop when asked.
_START_TIMEOUT_S: Final = 300.0
_STOP_TIMEOUT_S: Final = 10.0
_POLL_S: Final = 0.2


class Worker(Protocol):
    """Serve on `port` (shared with the other workers) until SIGTERM; call `ready` once listening.

    Must be picklable: it is sent to a spawned process.
    """

    def __call__(self, port: int, ready: Ready) -> None: ...


def serve(config: ServerConfig, *, workers: int = 1, ready: Ready | None = None) -> None:
    """Serve `config` in this process (`workers=1`) or in `workers` processes on one port."""
    if workers < 1:
        raise UsageError(f"--workers: {workers} is not a number of processes (1 or more)")
    if workers == 1:
        serve_until_signal(config, ready=ready)
        return
    if config.rate_limit is not None:
        raise UsageError(
            "--rate-limit needs one worker: with --workers each process would count its own"
        )
    with tempfile.TemporaryDirectory(prefix="vlbench-exports-") as shared:
        config = dataclasses.replace(config, exports_dir=config.exports_dir or Path(shared))
        run_workers(serve_worker(config), workers, host=config.host, port=config.port, ready=ready)


def serve_worker(config: ServerConfig) -> Worker:
    """The `Worker` that serves `config` (the demo dataset is built here, once, not per worker)."""
    resolved = dataclasses.replace(config, dataset_dir=resolve_dataset_dir(config.dataset_dir))
    return functools.partial(_serve_on, resolved)


def _serve_on(config: ServerConfig, port: int, ready: Ready) -> None:
    serve_until_signal(dataclasses.replace(config, port=port, reuse_port=True), ready=ready)


def run_workers(
    worker: Worker, count: int, *, host: str, port: int, ready: Ready | None = None
) -> None:
    """Run `worker` in `count` processes on `host:port` (0: a free port) until stopped.

    Returns after SIGTERM or Ctrl-C, once every worker has stopped. Raises `VlbenchError` when a
    worker cannot start (with its reason) or exits on its own (the others are stopped first).
    """
    with _reserved_port(host, port) as chosen:
        context = multiprocessing.get_context("spawn")
        processes: list[BaseProcess] = []
        try:
            first: RunningServer | None = None
            for number in range(count):
                receive, send = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker_main,
                    args=(worker, chosen, send),
                    name=f"vlbench-serve-{number}",
                )
                process.start()
                send.close()
                processes.append(process)
                server = _await_ready(number, process, receive)
                first = first or server
            if ready is not None and first is not None:
                ready(first)
            _serve_until_stopped(processes)
        finally:
            _stop(processes)


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """Bind (without listening) so that port 0 becomes one port every worker then shares."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as reservation:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            reservation.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        # A socket that never listens receives no connections: it only holds the port.
        yield int(reservation.getsockname()[1])


def _worker_main(worker: Worker, port: int, send: Connection) -> None:
    """A worker process: serve, telling the parent once listening (or why it could not)."""

    def announce(server: RunningServer) -> None:
        send.send(("ready", server))

    try:
        worker(port, announce)
    except BaseException as exc:  # noqa: BLE001 - the reason goes to the parent
        with contextlib.suppress(OSError):
            send.send(("error", _reason(exc)))
        raise SystemExit(1) from None
    finally:
        send.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, VlbenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _await_ready(number: int, process: BaseProcess, receive: Connection) -> RunningServer:
    """The worker's `RunningServer` once it listens; `VlbenchError` if it fails or exits."""
    try:
        if not receive.poll(_START_TIMEOUT_S):
            raise VlbenchError(f"worker {number} did not listen within {_START_TIMEOUT_S:.0f} s")
        kind, value = receive.recv()
    except EOFError:
        process.join(_STOP_TIMEOUT_S)
        raise VlbenchError(
            f"worker {number} exited with {process.exitcode} before listening"
        ) from None
    finally:
        receive.close()
    if kind != "ready":
        raise VlbenchError(f"worker {number} could not start: {value}")
    server: RunningServer = value
    return server


def _serve_until_stopped(processes: list[BaseProcess]) -> None:
    """Wait for SIGTERM or Ctrl-C; `VlbenchError` if a worker exits first."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        by_sentinel = {p.sentinel: p for p in processes}
        while not stop.is_set():
            ended = wait(list(by_sentinel), timeout=_POLL_S)
            if ended and not stop.is_set():
                gone = by_sentinel[ended[0]]  # type: ignore[index]
                gone.join(_STOP_TIMEOUT_S)  # its pipe closes a moment before it can be reaped
                raise VlbenchError(f"{gone.name} exited with {gone.exitcode}; stopping the others")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(processes: list[BaseProcess]) -> None:
    """SIGTERM every live worker (their clean stop), then SIGKILL whoever is left."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(_STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()
