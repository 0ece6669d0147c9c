"""Starting and stopping the local server: in this process, or as a child `vlbench serve`.

In this process (tests, the embedded server of `vlbench run`, the `vlbench serve` command): the
one starter is `serve_in_background`, an async context manager in the running loop; `ServerThread`
runs it in a thread of its own for synchronous code, and `serve_until_signal` is that thread
until Ctrl-C or SIGTERM (the CLI).

    async with serve_in_background(ServerConfig("demo")) as server:   # in the running loop
        print(server.base_url, server.dataset_id)
    with ServerThread(ServerConfig(dataset_dir)) as server:            # own thread and loop
        ...

As a child process (benchmarks and CLI tests, so that the server shares no GIL with the client
that drives it): `serve_process` starts `vlbench serve --port 0`, reads the `base_url: ...` and
`dataset_id: ...` lines it announces once it listens, and stops it with SIGTERM.

    with serve_process(["--dataset", "demo", "--no-auth"]) as server:
        drive(server.base_url, server.dataset_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from runner.errors import VlbenchError
from runner.server.app import build_app
from runner.server.background import BackgroundService, serve_until_signalled
from runner.server.config import ServerConfig
from runner.server.index import SearchIndex
from runner.server.query import DatasetInfo

__all__ = [
    "RunningServer",
    "ServeProcess",
    "ServerThread",
    "resolve_dataset_dir",
    "serve_in_background",
    "serve_process",
    "serve_until_signal",
    "start_serve_process",
    "stop_serve_process",
]

# The index is thread-safe; two workers let a search and an export overlap on two cores.
_INDEX_THREADS: Final = 2
# aiohttp's default 8 KiB request line would answer a long (hostile) query string with a bare 400.
_MAX_LINE_SIZE: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started server: where it listens and which dataset it serves."""

    base_url: str
    dataset_id: str
    config: ServerConfig
    info: DatasetInfo


def resolve_dataset_dir(dataset_dir: Path | str) -> Path:
    """The directory to serve.

    The string "demo" is the demo dataset (built once into the cache); a `Path`, or a string
    such as "./demo", is a directory.
    """
    if isinstance(dataset_dir, str) and dataset_dir == "demo":
        from runner.server.demo import demo_dataset_dir

        return demo_dataset_dir()
    return Path(dataset_dir)


# --- in this process --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_in_background(config: ServerConfig) -> AsyncIterator[RunningServer]:
    """Serve `config`'s dataset in the running loop until the block ends.

    Opens the index once (in the server's index thread), listens on `config.host:config.port`
    (port 0: a free one), and on exit stops listening, cancels export jobs, removes their files.
    """
    executor = ThreadPoolExecutor(max_workers=_INDEX_THREADS, thread_name_prefix="vlbench-index")
    try:
        path = await asyncio.to_thread(resolve_dataset_dir, config.dataset_dir)
        index = await asyncio.to_thread(SearchIndex.open, path)
        with _exports_dir(config) as workdir:
            runner = web.AppRunner(
                build_app(config, index, executor, workdir),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=1.0,
                max_line_size=_MAX_LINE_SIZE,
                max_field_size=_MAX_LINE_SIZE,
            )
            await runner.setup()
            try:
                site = web.TCPSite(
                    runner, config.host, config.port, reuse_port=config.reuse_port or None
                )
                await site.start()
                host, port = _bound_address(runner, config)
                yield RunningServer(f"http://{host}:{port}", index.info.id, config, index.info)
            finally:
                await runner.cleanup()
                # Closed transports release their sockets in callbacks the loop runs next:
                # let them run before the loop (a ServerThread's) closes, or sockets leak.
                await asyncio.sleep(0.01)
                index.close()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _exports_dir(config: ServerConfig) -> Iterator[Path]:
    """The export jobs' directory: the shared one given, else a temporary one removed after."""
    if config.exports_dir is not None:
        yield config.exports_dir
        return
    with tempfile.TemporaryDirectory(prefix="vlbench-exports-") as workdir:
        yield Path(workdir)


def _bound_address(runner: web.AppRunner, config: ServerConfig) -> tuple[str, int]:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            host = config.host if config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            return host, int(address[1])
    raise RuntimeError("the server is not listening on a TCP port")


class ServerThread(BackgroundService[RunningServer]):
    """`serve_in_background` in its own thread and event loop, for synchronous code and tests.

        with ServerThread(ServerConfig("demo", port=0)) as server:
            requests.get(server.base_url + "/api/v1/healthcheck")

    Entering blocks until the server listens (or re-raises why it could not start); leaving
    stops it and joins the thread.
    """

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(lambda: serve_in_background(config), name="vlbench-server")
        self.config = config

    @property
    def server(self) -> RunningServer:
        """The running server (only inside the `with` block)."""
        return self.value

    @property
    def base_url(self) -> str:
        """E.g. `http://127.0.0.1:43817`."""
        return self.server.base_url

    @property
    def dataset_id(self) -> str:
        """The id of the dataset it serves."""
        return self.server.dataset_id

    @property
    def info(self) -> DatasetInfo:
        """What the served dataset is."""
        return self.server.info

    def __enter__(self) -> ServerThread:
        self.start()
        return self


def serve_until_signal(
    config: ServerConfig, *, ready: Callable[[RunningServer], None] | None = None
) -> None:
    """Serve until SIGINT or SIGTERM (from the main thread); `ready` is called once it listens."""
    serve_until_signalled(lambda: serve_in_background(config), ready=ready)


# --- as a child process -----------------------------------------------------------------------

# The current interpreter running the CLI: works in any venv, installed console script or not.
DEFAULT_COMMAND: Final = (sys.executable, "-c", "from runner.cli import main; main()")


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


@contextlib.contextmanager
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
