"""A replay server: the hosted API's documented bodies, served over a real socket on 127.0.0.1.

    with ReplayServer() as api:                       # every route answers its documented body
        api.answer("dataset", Canned(body={"status_new": "PARTIAL INDEX", ...}))
        api.answer("export_status", Canned(body={"status": "IN_PROGRESS"}), Canned(body=...))
        ...  # point a client or a suite at api.base_url / api.dataset_id
        assert api.calls("explore")                   # the query of every request, in order

Each route serves its answers in turn, the last one again and again; an answer may also be a
function of the request (`lambda request: Canned(...)`). The server runs in its own thread and
event loop, so a test may drive it from `asyncio.run` as `vlbench run` does. It computes
nothing: it replays what `../shared/explore-api.md` and the hosted API's public pages show,
so the client is tested against the hosted API's variants, not against our own local server.
"""

from __future__ import annotations

import contextlib
import io
import threading
import zipfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import web

from runner.server.background import BackgroundService

__all__ = [
    "CONTEXT_ALL",
    "DATASET_ID",
    "DATASET_READY",
    "DOCUMENTED_ANSWER",
    "LEGACY_ANSWER",
    "Canned",
    "ReplayServer",
    "json_zip",
    "parquet_zip",
]

DATASET_ID: Final = "95233006-eddc-11ef-b303-76dbc3993eb2"

# `/dataset/{id}` as documented.
DATASET_READY: Final = {
    "id": DATASET_ID,
    "display_name": "replayed",
    "status_new": "READY",
    "progress": 100,
    "n_images": 3,
}
# `/enrichment/{id}/context` with every enrichment a suite may need.
CONTEXT_ALL: Final = {
    "enrichment_context_id": "ctx-1",
    "status": "COMPLETED",
    "dataset_enrichment_models": {
        "enrichment_models": {
            "CAPTION_IMAGES": "caption-model",
            "IMAGE_TAGGING": "tagging-model",
            "MULTIMODEL_IMAGE_ENCODING": "encoding-model",
        }
    },
}
# The search answer of `explore-api.md`, as documented (string threshold, null labels).
DOCUMENTED_ANSWER: Final = {
    "clusters": [
        {
            "cluster_id": "d0470097-0c77-4a9c-9edf-289680df7f71",
            "type": "IMAGES",
            "n_images": 14,
            "similarity_threshold": "0",
            "relevance_score": 0.63,
            "relevance_score_type": "cosine_distance",
            "captions": ["An aerial view of a highway with multiple vehicles traveling at night."],
            "previews": [
                {
                    "type": "IMAGE",
                    "media_id": "300dad2c-1234-11f1-8483-5a879df30de4",
                    "media_uri": "https://cdn.example.com/image.jpg",
                    "media_thumb_uri": "https://cdn.example.com/thumb.webp",
                    "caption": "An aerial view of a highway with multiple vehicles at night.",
                    "file_name": "highway_night.jpg",
                    "relevance_score": 0.63,
                    "relevance_score_type": "cosine_distance",
                    "width": 1920,
                    "height": 1080,
                }
            ],
            "labels": None,
            "user_tags": None,
        }
    ],
    "metadata": {"used_duckdb": True},
}
# The legacy answer shape of the older caption-search page.
LEGACY_ANSWER: Final = {
    "clusters": [
        {
            "id": "c-legacy-1",
            "entity_type": "IMAGES",
            "size": 4,
            "representative_preview": "https://cdn.example.com/rep.jpg",
            "media": [
                {
                    "id": "m-sunset-1",
                    "preview": "https://cdn.example.com/sunset.jpg",
                    "filename": "sunset_beach_aerial.jpg",
                    "caption": "Golden sun setting over the ocean waves",
                    "relevance_score": 0.92,
                },
                {
                    "id": "m-sunset-2",
                    "preview": "https://cdn.example.com/sunset2.jpg",
                    "filename": "sunset_2.jpg",
                    "caption": "A man at the beach on sunset",
                    "relevance_score": 0.81,
                },
            ],
        }
    ],
    "total_pages": 1,
    "current_page": 0,
}
_NOT_FOUND: Final = {"detail": "Not Found"}

# route name -> (path pattern); every route is a GET.
_ROUTES: Final = {
    "dataset": "/api/v1/dataset/{dataset_id}",
    "context": "/api/v1/enrichment/{dataset_id}/context",
    "user_config": "/api/v1/user_config",
    "explore": "/api/v1/explore/{dataset_id}",
    "export_start": "/api/v1/dataset/{dataset_id}/export_context_async",
    "export_status": "/api/v1/dataset/{dataset_id}/export_status",
    "download": "/files/{name}",
}


@dataclass(frozen=True, slots=True)
class Canned:
    """One answer: a status, a body (JSON-able, or bytes as they are) and headers."""

    body: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        if isinstance(self.body, bytes):
            data, kind = self.body, "application/octet-stream"
        else:
            data, kind = orjson.dumps(self.body), "application/json"
        return web.Response(
            status=self.status, body=data, content_type=kind, headers=dict(self.headers)
        )


Answer = Canned | Callable[[web.Request], Canned]


def _defaults() -> dict[str, list[Answer]]:
    return {
        "dataset": [Canned(DATASET_READY)],
        "context": [Canned(CONTEXT_ALL)],
        "user_config": [Canned(_NOT_FOUND, status=404)],  # an API without feature flags
        "explore": [Canned(DOCUMENTED_ANSWER)],
        "export_start": [Canned({"id": "task-1"})],
        "export_status": [Canned({"status": "COMPLETED", "download_uri": "/files/export.zip"})],
        "download": [Canned(json_zip([]))],
    }


class ReplayServer:
    """The replay app on a free port of 127.0.0.1, in its own thread; stopped on exit."""

    def __init__(self) -> None:
        self.dataset_id = DATASET_ID
        self.base_url = ""
        self._answers = _defaults()
        self._served: dict[str, int] = {}
        self._calls: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self._lock = threading.Lock()
        self._service = BackgroundService(self._serving, name="replay-server")

    def answer(self, route: str, *answers: Answer) -> None:
        """Serve `answers` on `route` in turn (the last one from then on)."""
        if route not in _ROUTES or not answers:
            raise ValueError(f"unknown route {route!r} or no answer")
        with self._lock:
            self._answers[route] = list(answers)
            self._served[route] = 0

    def calls(self, route: str) -> list[dict[str, str]]:
        """The query parameters of every request `route` received, in order."""
        with self._lock:
            return [query for name, query, _ in self._calls if name == route]

    def headers(self, route: str) -> list[dict[str, str]]:
        with self._lock:
            return [headers for name, _, headers in self._calls if name == route]

    async def _handle(self, route: str, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._calls.append((route, dict(request.query), dict(request.headers)))
            answers = self._answers[route]
            n = self._served.get(route, 0)
            self._served[route] = n + 1
            answer = answers[min(n, len(answers) - 1)]
        canned = answer(request) if callable(answer) else answer
        return canned.response()

    def _app(self) -> web.Application:
        app = web.Application()
        for route, path in _ROUTES.items():

            async def handler(request: web.Request, route: str = route) -> web.StreamResponse:
                return await self._handle(route, request)

            app.router.add_get(path, handler)
        return app

    def start(self) -> ReplayServer:
        self.base_url = self._service.start()
        return self

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[str]:
        runner = web.AppRunner(self._app())
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        self._service.stop()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def json_zip(rows: Sequence[Mapping[str, Any]], *, documented: bool = True) -> bytes:
    """An export ZIP with `metadata.json`: the documented object form, or a bare list."""
    body: Any = {"info": {"dataset_id": DATASET_ID}, "media_items": list(rows)}
    return _zip("metadata.json", orjson.dumps(body if documented else list(rows)))


def parquet_zip(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """An export ZIP with `metadata.parquet` holding `columns`."""
    sink = io.BytesIO()
    pq.write_table(pa.table(dict(columns)), sink)
    return _zip("metadata.parquet", sink.getvalue())


def _zip(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, data)
    return out.getvalue()
