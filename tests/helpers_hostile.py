"""A hostile front before the local server: its own answers, or `429 Retry-After` with a long wait.

    with Hostile(demo_server.base_url, "3600", pass_first=1, limit=2) as front:
        suite = write_suite(..., base_url=front.base_url)

A tiny aiohttp app on 127.0.0.1 in a thread of its own, shared by the Retry-After tests and the
attack list (issue 11).
"""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time

from aiohttp import ClientSession, web

__all__ = ["AN_HOUR", "YEARS_AHEAD", "Hostile"]

AN_HOUR = "3600"
YEARS_AHEAD = email.utils.formatdate(time.time() + 5 * 365 * 86400, usegmt=True)


class Hostile:
    """A tiny aiohttp app on 127.0.0.1 in front of the local server, in a thread of its own.

    While `hostile` is on, searches after the first `pass_first` get `429 Retry-After: <header>`
    (at most `limit` of them, None: all); everything else is the local server's own answer.
    """

    def __init__(
        self, upstream: str, header: str, pass_first: int = 0, limit: int | None = None
    ) -> None:
        self.upstream, self.header = upstream, header
        self.pass_first, self.limit = pass_first, limit
        self.hostile = True
        self.hang = False  # every request waits forever (a server that accepts and never answers)
        self.seen = self.searches = self.throttled = 0
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._released: asyncio.Event | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen += 1
        if self.hang:
            assert self._released is not None
            await self._released.wait()  # set when the app stops
        if "/explore/" in request.path and self.hostile:
            self.searches += 1
            spent = self.limit is not None and self.throttled >= self.limit
            if self.searches > self.pass_first and not spent:
                self.throttled += 1
                headers = {"Retry-After": self.header, "Content-Type": "application/json"}
                return web.Response(status=429, body=b'{"detail": "slow down"}', headers=headers)
        assert self._session is not None
        auth = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        async with self._session.get(self.upstream + request.path_qs, headers=auth) as answer:
            kind = answer.headers.get("Content-Type", "application/json")
            body = await answer.read()
            return web.Response(status=answer.status, body=body, headers={"Content-Type": kind})

    async def _start(self) -> str:
        self._released = asyncio.Event()
        self._session = ClientSession()
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _stop(self) -> None:
        assert self._runner is not None and self._session is not None
        assert self._released is not None
        self._released.set()
        await self._runner.cleanup()
        await self._session.close()

    def __enter__(self) -> Hostile:
        self._thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
