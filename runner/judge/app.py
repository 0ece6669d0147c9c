"""The judging page: aiohttp on 127.0.0.1, one HTML page, its script and style, a JSON API.

    GET  /                  the page (page.html; judge.js and judge.css beside it)
    GET  /api/state         every query and hit of the session, this rater's grades, progress
    POST /api/grade         {"query_id", "media_id", "grade"}: appended to the store at once
    POST /api/undo          take back this rater's latest grade
    GET  /thumb/{index}     the local thumbnail file of item `index`

Bad input answers 400 with `{"error": "<parameter>: <what is wrong>"}`. POSTs must say
`Content-Type: application/json`, which a page of another origin cannot send without the
preflight this server never grants, so no other site can grade through a rater's browser.
The page's Content-Security-Policy allows scripts, styles and requests to this server only;
images may come from it, from data: URIs, and from exactly the origins of the session's http(s)
thumbnail URIs (`media_thumb_uri` of the run), nowhere else. A thumbnail that cannot load (no
network, a server that is gone) falls back to the hit's caption and file name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from runner.errors import UsageError
from runner.judge.session import Item, JudgeSession, image_origin
from runner.server.background import BackgroundService, serve_until_signalled

__all__ = ["CSP", "JudgeThread", "build_app", "page_csp", "run_judge", "serve_judge"]

# The policy of a session whose thumbnails are all local or data: URIs.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_ASSETS: Final = {
    "/": ("page.html", "text/html"),
    "/judge.js": ("judge.js", "text/javascript"),
    "/judge.css": ("judge.css", "text/css"),
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LOCAL_NAMES: Final = frozenset({"127.0.0.1", "localhost"})
_SESSION: Final = web.AppKey("session", JudgeSession)
_LOCK: Final = web.AppKey("lock", asyncio.Lock)
_POLICY: Final = web.AppKey("policy", str)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def page_csp(session: JudgeSession) -> str:
    """`CSP` with the origins of the session's http(s) thumbnails added to `img-src`."""
    origins = sorted({o for it in session.items if it.thumb and (o := image_origin(it.thumb))})
    if not origins:
        return CSP
    return CSP.replace("img-src 'self' data:", " ".join(["img-src 'self' data:", *origins]))


def _remote(thumb: str) -> bool:
    return thumb.startswith(("http://", "https://", "data:"))


def _thumb_url(index: int, item: Item) -> str | None:
    if item.thumb and _remote(item.thumb):
        return item.thumb
    return f"/thumb/{index}"


async def _asset(request: web.Request) -> web.Response:
    name, kind = _ASSETS[request.path]
    text = resources.files("runner.judge").joinpath(name).read_text(encoding="utf-8")
    return web.Response(
        text=text,
        content_type=kind,
        headers={
            "Content-Security-Policy": request.app[_POLICY],
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _state(request: web.Request) -> web.Response:
    return _json(request.app[_SESSION].state(_thumb_url))


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise UsageError("Content-Type: send application/json")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise UsageError("body: not JSON") from None
    if not isinstance(body, dict):
        raise UsageError("body: not a JSON object")
    return body


def _progress(session: JudgeSession) -> dict[str, int]:
    done, total = session.progress()
    return {"done": done, "total": total}


async def _grade(request: web.Request) -> web.Response:
    session = request.app[_SESSION]
    try:
        body = await _body(request)
        async with request.app[_LOCK]:
            # The write and fsync run in a thread: the page keeps answering meanwhile.
            item = await asyncio.to_thread(
                session.grade, body.get("query_id"), body.get("media_id"), body.get("grade")
            )
    except UsageError as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(
        {"query_id": item.query_id, "media_id": item.media_id, "grade": body["grade"]}
        | _progress(session)
    )


async def _undo(request: web.Request) -> web.Response:
    session = request.app[_SESSION]
    try:
        await _body(request)
    except UsageError as exc:
        return _json({"error": str(exc)}, status=400)
    async with request.app[_LOCK]:
        undone = await asyncio.to_thread(session.undo)
    if undone is None:
        return _json({"error": "undo: nothing to undo"}, status=409)
    grade = session.grades().get(undone)
    return _json(
        {"query_id": undone[0], "media_id": undone[1], "grade": grade} | _progress(session)
    )


async def _thumb(request: web.Request) -> web.StreamResponse:
    session = request.app[_SESSION]
    text = request.match_info["index"]
    index = int(text) if text.isdigit() else -1
    if not 0 <= index < len(session.items):
        return _json({"error": f"index: {text!r} is not an item of this session"}, status=404)
    thumb = session.items[index].thumb
    if not thumb or _remote(thumb) or not Path(thumb).is_file():
        return _json({"error": f"index: item {index} has no local thumbnail"}, status=404)
    return web.FileResponse(thumb, headers={"Cache-Control": "max-age=3600"})


@web.middleware
async def _local_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A page of another site whose name was re-pointed at 127.0.0.1 (DNS rebinding) would be
    # same-origin; its requests still carry its own host name, so only loopback names pass.
    name = request.host.rsplit(":", 1)[0]
    if name not in _LOCAL_NAMES:
        return _json({"error": f"Host: {request.host!r} is not this machine"}, status=400)
    return await handler(request)


def build_app(session: JudgeSession) -> web.Application:
    """The aiohttp application of one judging session."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[_local_host])
    app[_SESSION] = session
    app[_POLICY] = page_csp(session)  # the items, so their thumbnails, are fixed for a session
    app[_LOCK] = asyncio.Lock()
    for path in _ASSETS:
        app.router.add_get(path, _asset)
    app.router.add_get("/api/state", _state)
    app.router.add_post("/api/grade", _grade)
    app.router.add_post("/api/undo", _undo)
    app.router.add_get("/thumb/{index}", _thumb)
    return app


@contextlib.asynccontextmanager
async def serve_judge(session: JudgeSession, *, port: int = 0) -> AsyncIterator[str]:
    """Serve the session on 127.0.0.1:`port` (0: a free one); yield its URL.

    On exit the server stops and the store is compacted (labels.parquet, the qrels files).
    """
    app_runner = web.AppRunner(build_app(session), access_log=None, handle_signals=False)
    await app_runner.setup()
    try:
        site = web.TCPSite(app_runner, "127.0.0.1", port)
        await site.start()
        bound = next(a[1] for a in app_runner.addresses if isinstance(a, tuple) and len(a) >= 2)
        yield f"http://127.0.0.1:{bound}/"
    finally:
        await app_runner.cleanup()
        await asyncio.to_thread(session.close)


def run_judge(
    session: JudgeSession, *, port: int = 0, ready: Callable[[str], None] | None = None
) -> None:
    """Serve until Ctrl-C or SIGTERM; `ready(url)` is called once the page is up."""
    serve_until_signalled(lambda: serve_judge(session, port=port), ready=ready)


class JudgeThread(BackgroundService[str]):
    """The page in its own thread and loop, for tests: `with JudgeThread(session) as url:`."""

    def __init__(self, session: JudgeSession) -> None:
        super().__init__(lambda: serve_judge(session), name="vlbench-judge")
        self.session = session

    def __enter__(self) -> str:
        return self.start()
