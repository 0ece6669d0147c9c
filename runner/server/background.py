"""An async service (an async context manager) run in a thread of its own, or until a signal.

    service = BackgroundService(lambda: serve_in_background(config), name="vlbench-server")
    running = service.start()                # what the context manager yielded
    ...
    service.stop()

    serve_until_signalled(lambda: serve_judge(session), ready=print)   # blocks until ^C / SIGTERM

The local Explore server and the judging page are both an `async with` that listens while its
block runs; this module is the one way either is kept alive for synchronous code and tests, and
the one way a command serves one until it is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import FrameType, TracebackType
from typing import Generic, TypeVar

__all__ = ["BackgroundService", "serve_until_signalled"]

T = TypeVar("T")
Opener = Callable[[], AbstractAsyncContextManager[T]]


class BackgroundService(Generic[T]):
    """`open()` entered in its own thread and event loop, exited on `stop()`.

    `start()` blocks until the service is up and returns what it yielded, or re-raises why it
    could not start; `stop()` ends it and joins the thread. Subclasses add `__enter__`, giving
    what suits their callers (the thread itself, or a URL).
    """

    def __init__(self, open: Opener[T], *, name: str) -> None:
        self._open = open
        self._name = name
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def value(self) -> T:
        """What the service yielded (only while it runs)."""
        if self._value is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._value

    @property
    def running(self) -> bool:
        """Whether the service's thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> T:
        """Start the thread and wait until the service is up."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.value

    def stop(self) -> None:
        """Stop the service and join its thread (idempotent)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._value = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._open() as value:
            self._value = value
            self._ready.set()
            await self._stop.wait()


def serve_until_signalled(open: Opener[T], *, ready: Callable[[T], None] | None = None) -> None:
    """Run `open()` until SIGINT or SIGTERM (from the main thread); `ready` once it is up."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    service = BackgroundService(open, name="vlbench-serve")
    try:
        value = service.start()
        if ready is not None:
            ready(value)
        # A timed wait, so that a service thread that died is noticed too.
        while service.running and not stop.wait(0.5):
            pass
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
