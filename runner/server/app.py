"""The local Explore API's routes (aiohttp.web): the endpoints of explore-api.md over one dataset.

Routes (all GET, JSON): `/api/v1/healthcheck`, `/api/v1/dataset/{id}`,
`/api/v1/enrichment/{id}/context`, `/api/v1/explore/{id}`,
`/api/v1/dataset/{id}/export_context_async`, `/api/v1/dataset/{id}/export_status`, and the
ZIP at `/api/v1/dataset/{id}/export_download/{task}` (the `download_uri`, relative to the base
URL; like a presigned URL it needs no token: the random task id is the capability).

Status codes where the contract is silent: 404 for an unknown dataset (checked first), 409 when the
dataset is not READY, then 422 for bad parameters, then 409 when the dataset lacks the enrichment
a request needs (`issues`, OBJECTS, labels without tagging). Every 4xx/5xx body has `detail`.

`build_app` makes the application over an opened index; `runner.server.lifecycle` starts it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from aiohttp import web

from runner import __version__
from runner.api.auth import Credentials
from runner.server.config import ServerConfig
from runner.server.errors import HttpError, Issue, ValidationFailed
from runner.server.exports import ExportManager
from runner.server.faults import FaultInjector
from runner.server.index import PAGE_SIZE, SearchIndex
from runner.server.middleware import (
    API_PREFIX,
    auth_middleware,
    error_middleware,
    fault_middleware,
    json_response,
)
from runner.server.query import ClusterMatch, DatasetInfo, MemberMatch
from runner.server.vql import parse_explore, parse_export

__all__ = ["build_app"]

_T = TypeVar("_T")


@dataclass(slots=True)
class _State:
    """Everything the handlers share: config, index, export jobs."""

    config: ServerConfig
    index: SearchIndex
    info: DatasetInfo
    executor: Executor
    exports: ExportManager

    async def in_index_thread(self, call: Callable[[], _T]) -> _T:
        # Searches are CPU-bound (numpy, SQLite, the encoder): off the event loop, so that
        # healthchecks, latency faults and downloads stay responsive under load.
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)


_STATE: Final = web.AppKey("state", _State)


def build_app(
    config: ServerConfig, index: SearchIndex, executor: Executor, workdir: Path
) -> web.Application:
    """The application over an opened index: searches run on `executor`, export ZIPs go to
    `workdir`. Cleaning the application up cancels unfinished export jobs."""
    state = _State(
        config=config,
        index=index,
        info=index.info,
        executor=executor,
        exports=ExportManager(
            workdir,
            max_entities=config.export_max_entities,
            fail=config.export_fail,
            delay_s=config.export_delay_ms / 1000,
        ),
    )
    middlewares = [fault_middleware(FaultInjector(config.faults())), error_middleware]
    if config.auth:
        middlewares.append(auth_middleware(_secrets(config), max_age_s=config.token_ttl_s))
    app = web.Application(middlewares=middlewares)
    app[_STATE] = state
    app.on_cleanup.append(_close_exports)
    p = API_PREFIX
    app.router.add_get(f"{p}/healthcheck", _healthcheck)
    app.router.add_get(f"{p}/dataset/{{dataset_id}}", _dataset)
    app.router.add_get(f"{p}/enrichment/{{dataset_id}}/context", _enrichment_context)
    app.router.add_get(f"{p}/explore/{{dataset_id}}", _explore)
    app.router.add_get(f"{p}/dataset/{{dataset_id}}/export_context_async", _export_start)
    app.router.add_get(f"{p}/dataset/{{dataset_id}}/export_status", _export_status)
    app.router.add_get(f"{p}/dataset/{{dataset_id}}/export_download/{{task_id}}", _export_download)
    return app


async def _close_exports(app: web.Application) -> None:
    await app[_STATE].exports.close()


def _secrets(config: ServerConfig) -> dict[str, str]:
    creds = config.credentials or Credentials.from_env()
    return {creds.api_key: creds.api_secret} if creds is not None else {}


# --- handlers ---------------------------------------------------------------------------------


async def _healthcheck(request: web.Request) -> web.Response:
    return json_response(
        {"status": "Green", "service-health-message": "none", "version": __version__}
    )


async def _dataset(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    info, status = state.info, state.config.dataset_status
    return json_response(
        {
            "id": info.id,
            "display_name": info.display_name,
            "status_new": status,
            "progress": 100 if status in ("READY", "READ ONLY") else 0,
            "n_images": info.n_images,
            "n_objects": 0,
            "n_videos": 0,
            "created_at": info.created_at.isoformat(),
            "enrichments": sorted(info.enrichments),
        }
    )


async def _enrichment_context(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    info = state.info
    models = {name: _MODEL_IDS[name] for name in sorted(info.enrichments) if name in _MODEL_IDS}
    return json_response(
        {
            "enrichment_context_id": _stable_id(f"enrichment-context:{info.id}"),
            "dataset_id": info.id,
            "status": "COMPLETED" if models else "NEW",
            "dataset_enrichment_models": {"enrichment_models": models},
        }
    )


# What the enrichment context names for each enrichment the dataset has. USER_TAGS is not an
# enrichment model (users add tags by hand), so the context does not list it.
_MODEL_IDS: Final = {
    "CAPTION_IMAGES": "vlbench-imported-captions+all-MiniLM-L6-v2",
    "IMAGE_TAGGING": "vlbench-imported-labels",
}


async def _explore(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    _require_ready(state)
    parsed = parse_explore(request.query, state.info)
    page = await state.in_index_thread(
        lambda: state.index.search_page(parsed.request, parsed.page_number, PAGE_SIZE)
    )
    entity_type = parsed.request.entity_type
    return json_response(
        {
            "clusters": [_cluster_json(c, entity_type) for c in page],
            "metadata": {"used_duckdb": True},
        }
    )


async def _export_start(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    _require_ready(state)
    parsed = parse_export(request.query, state.info)
    rows = await state.in_index_thread(lambda: state.index.export_rows(parsed.request))
    job = state.exports.start(
        rows,
        dataset_id=state.info.id,
        export_format=parsed.export_format,
        file_name=parsed.file_name,
        include_images=parsed.include_images,
    )
    # The start answer always says INIT (as documented); a rejection shows on the first poll.
    return json_response(
        job.to_json(None) | {"status": "INIT", "progress": 0, "result_message": None}
    )


async def _export_status(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    task_id = request.query.get("export_task_id")
    if task_id is None:
        raise ValidationFailed(
            [Issue("missing", ("query", "export_task_id"), "Field required", None)]
        )
    job = state.exports.get(task_id)
    if job is None or job.dataset_id != state.info.id:
        raise HttpError(404, "Export task not found")
    return json_response(job.to_json(_download_path(state.info.id, job.id)))


async def _export_download(request: web.Request) -> web.StreamResponse:
    state = _dataset_state(request)
    job = state.exports.get(request.match_info["task_id"])
    if job is None or job.dataset_id != state.info.id:
        raise HttpError(404, "Export task not found")
    if job.status != "COMPLETED" or job.zip_path is None:
        raise HttpError(409, f"Export task is {job.status}, not COMPLETED")
    body = await asyncio.to_thread(job.zip_path.read_bytes)
    return web.Response(
        body=body,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{job.file_name}"'},
    )


def _download_path(dataset_id: str, task_id: str) -> str:
    return f"{API_PREFIX}/dataset/{dataset_id}/export_download/{task_id}"


def _dataset_state(request: web.Request) -> _State:
    state = request.app[_STATE]
    if request.match_info.get("dataset_id") != state.info.id:
        raise HttpError(404, "Dataset not found")
    return state


def _require_ready(state: _State) -> None:
    status = state.config.dataset_status
    if status != "READY":
        raise HttpError(409, f"Dataset {state.info.id} is {status}: searching needs READY")


# --- response shapes --------------------------------------------------------------------------


def _cluster_json(cluster: ClusterMatch, entity_type: str) -> dict[str, Any]:
    members = cluster.members
    captions = list(dict.fromkeys(m.caption for m in members if m.caption))
    return {
        "cluster_id": cluster.cluster_id,
        "type": entity_type,
        "n_images": cluster.n_images,
        "similarity_threshold": str(cluster.granularity),
        "relevance_score": cluster.score,
        "relevance_score_type": cluster.score_type,
        "captions": captions,
        "previews": [_preview_json(m) for m in members],
        "labels": _union(m.labels for m in members),
        "user_tags": _union(m.tags for m in members),
    }


def _preview_json(member: MemberMatch) -> dict[str, Any]:
    return {
        "type": "IMAGE",
        "media_id": member.media_id,
        "media_uri": member.media_uri,
        # No thumbnails are made locally: the thumbnail is the image itself.
        "media_thumb_uri": member.media_uri,
        "caption": member.caption,
        "file_name": member.file_name,
        "relevance_score": member.score,
        "relevance_score_type": member.score_type,
        "width": member.width,
        "height": member.height,
        "labels": list(member.labels) if member.labels else None,
    }


def _union(groups: Iterator[tuple[str, ...] | None]) -> list[str] | None:
    """The sorted union of the groups, or None when there is nothing (as the API's null)."""
    items = {item for group in groups if group for item in group}
    return sorted(items) if items else None


def _stable_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vlbench:{name}"))
