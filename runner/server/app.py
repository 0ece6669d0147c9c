"""The local Explore API's routes (aiohttp.web): the endpoints of explore-api.md over one dataset.

Routes (all GET, JSON): `/api/v1/healthcheck`, `/api/v1/dataset/{id}`,
`/api/v1/enrichment/{id}/context`, `/api/v1/explore/{id}`,
`/api/v1/dataset/{id}/export_context_async`, `/api/v1/dataset/{id}/export_status`, and the
ZIP at `/api/v1/dataset/{id}/export_download/{task}` (the `download_uri`, relative to the base
URL; like a presigned URL it needs no token: the random task id is the capability).

and `GET /api/v1/user_config?dataset_id=` (which features the account may use).

Status codes where the contract is silent, in the order checked: 404 for an unknown dataset, 409
when the dataset is not searchable (DRAFT, INDEXING, ERROR; READY, READ ONLY and PARTIAL INDEX
are), 422 for bad parameters, 409 when the dataset lacks the enrichment a request needs
(`issues`, OBJECTS, labels without tagging), 403 when a feature the request uses is disabled
(`ServerConfig.disabled_features`), 404 for an unknown `anchor_media_id`. Every 4xx/5xx body has
`detail`.

`build_app` makes the application over an opened index; `runner.server.lifecycle` starts it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from aiohttp import web

from runner.api.auth import Credentials
from runner.server.config import FEATURES, SEARCHABLE_STATUSES, ServerConfig
from runner.server.errors import HttpError, Issue, ValidationFailed
from runner.server.exports import ExportManager, export_table
from runner.server.faults import FaultInjector
from runner.server.index import PAGE_SIZE, SearchIndex
from runner.server.middleware import (
    API_PREFIX,
    auth_middleware,
    error_middleware,
    fault_middleware,
    json_response,
)
from runner.server.query import ClusterMatch, DatasetInfo, SearchRequest
from runner.server.shapes import dataset_body, explore_body
from runner.server.vql import parse_explore, parse_export
from runner.version import __version__

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
        # healthchecks, latency faults and downloads stay responsive under load (a quick
        # one, `SearchIndex.is_quick`, is cheaper than the hop here and runs on the loop).
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
        # What the API says the dataset has: the index's, less what the config hides.
        info=dataclasses.replace(
            index.info, enrichments=index.info.enrichments - config.hidden_enrichments
        ),
        executor=executor,
        exports=ExportManager(
            workdir,
            max_entities=config.export_max_entities,
            fault=config.export_fault,
            delay_s=config.export_delay_ms / 1000,
            file_name_key=(
                "image_filename" if "image-filename" in config.contract_changes else "file_name"
            ),
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
    app.router.add_get(f"{p}/user_config", _user_config)
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


async def _user_config(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    dataset_id = request.query.get("dataset_id")
    if dataset_id is not None and dataset_id != state.info.id:
        raise HttpError(404, "Dataset not found")
    disabled = state.config.disabled_features
    return json_response(
        {"dataset_id": dataset_id, "features": {name: name not in disabled for name in FEATURES}}
    )


async def _dataset(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    info, status = state.info, state.config.dataset_status
    record = {
        "id": info.id,
        "display_name": info.display_name,
        "progress": 100 if status in SEARCHABLE_STATUSES else 0,
        "n_images": info.n_images,
        "n_objects": 0,
        "n_videos": 0,
        "created_at": info.created_at.isoformat(),
        "enrichments": sorted(info.enrichments),
    }
    return json_response(dataset_body(record, status, state.config.contract_changes))


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
    "MULTIMODEL_IMAGE_ENCODING": "vlbench-imported-image-embeddings",
    "IMAGE_TAGGING": "vlbench-imported-labels",
}


async def _explore(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    _require_searchable(state)
    parsed = parse_explore(request.query, state.info)
    _check_request(state, parsed.request, parsed.anchor_type)
    search, page_number = parsed.request, parsed.page_number
    if not state.config.contract_changes:
        # The page comes as JSON bytes written from per-row fragments (runner.server.page).
        def clusters_json() -> bytes:
            return state.index.search_page_json(search, page_number, PAGE_SIZE)

        quick = state.index.is_quick(search)
        clusters = clusters_json() if quick else await state.in_index_thread(clusters_json)
        page_json = b'{"clusters":' + clusters + b',"metadata":{"used_duckdb":true}}'
        return web.Response(body=page_json, content_type="application/json")

    def answer() -> tuple[list[ClusterMatch], int]:
        page = state.index.search_page(search, page_number, PAGE_SIZE)
        return page, -(-state.index.count_clusters(search) // PAGE_SIZE)

    # A contract changed on purpose (`--fault contract=`) goes through the answer's dicts.
    page, total_pages = await state.in_index_thread(answer)
    body = explore_body(
        page,
        search.entity_type,
        page_number=page_number,
        total_pages=total_pages,
        changes=state.config.contract_changes,
    )
    return json_response(body)


async def _export_start(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    _require_searchable(state)
    parsed = parse_export(request.query, state.info)
    _check_request(state, parsed.request, parsed.anchor_type)
    rows = await state.in_index_thread(lambda: export_table(state.index, parsed.request))
    job = state.exports.start(
        rows,
        dataset_id=state.info.id,
        export_format=parsed.export_format,
        file_name=parsed.file_name,
        include_images=parsed.include_images,
        entity_type=parsed.request.entity_type,
    )
    return json_response(job.start_json(state.exports.fault))


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


def _require_searchable(state: _State) -> None:
    status = state.config.dataset_status
    if status not in SEARCHABLE_STATUSES:
        searchable = ", ".join(SEARCHABLE_STATUSES)
        raise HttpError(409, f"Dataset {state.info.id} is {status}: searching needs {searchable}")


def _check_request(state: _State, search: SearchRequest, anchor_type: str | None) -> None:
    """403 for a disabled feature the search uses; 404 for an anchor the dataset does not hold."""
    for feature in _features_of(search):
        if feature in state.config.disabled_features:
            raise HttpError(
                403, f"Feature {feature} is disabled for this account (dataset {state.info.id})"
            )
    text = search.text
    if text is not None and text.op == "visual":
        if anchor_type == "UPLOAD":
            raise HttpError(
                404, f"Anchor {text.value!r} (UPLOAD) not found: this server takes no uploads"
            )
        if state.index.row_of(text.value) is None:
            raise HttpError(
                404, f"Anchor media {text.value!r} not found in dataset {state.info.id}"
            )


def _features_of(search: SearchRequest) -> list[str]:
    """The `user_config` features a search uses."""
    features = []
    if search.text is not None:
        features.append(_TEXT_FEATURES[search.text.op])
    if search.labels_one_of is not None or search.label_rules:
        features.append("labels_search")
    return features


_TEXT_FEATURES: Final = {
    "caption": "captions_search",
    "semantic": "semantic_search",
    "fts": "full_text_search",
    "visual": "visual_search",
}


def _stable_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vlbench:{name}"))
