"""The local Explore API server (aiohttp.web): the endpoints of explore-api.md over one dataset.

Start it from Python in one of three ways; each loads the dataset's index once:

    async with serve_in_background(ServerConfig("demo")) as server:   # in the running loop
        print(server.base_url, server.dataset_id)
    with ServerThread(ServerConfig(dataset_dir)) as server:            # own thread and loop
        ...
    run_server(config, ready=print)                                    # blocking, for the CLI

Routes (all GET, JSON): `/api/v1/healthcheck`, `/api/v1/dataset/{id}`,
`/api/v1/enrichment/{id}/context`, `/api/v1/explore/{id}`,
`/api/v1/dataset/{id}/export_context_async`, `/api/v1/dataset/{id}/export_status`, and the
ZIP at `/api/v1/dataset/{id}/export_download/{task}` (the `download_uri`, relative to the base
URL; like a presigned URL it needs no token: the random task id is the capability).

Status codes where the contract is silent: 404 for an unknown dataset (checked first), 409 when the
dataset is not READY, then 422 for bad parameters, then 409 when the dataset lacks the enrichment
a request needs (`issues`, OBJECTS, labels without tagging). Every 4xx/5xx body has `detail`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import orjson
from aiohttp import web

from runner import __version__
from runner.api.auth import Credentials, verify_token
from runner.errors import AuthError
from runner.server.errors import HttpError, Issue, ValidationFailed
from runner.server.exports import ExportManager
from runner.server.faults import Decision, FaultConfig, FaultInjector, retry_after_header
from runner.server.index import SearchIndex
from runner.server.query import DatasetInfo
from runner.server.vql import parse_explore, parse_export

__all__ = [
    "DATASET_STATUSES",
    "PAGE_SIZE",
    "RunningServer",
    "ServerConfig",
    "ServerThread",
    "build_app",
    "run_server",
    "serve_in_background",
]

PAGE_SIZE: Final = 100
DATASET_STATUSES: Final = ("DRAFT", "INDEXING", "READ ONLY", "PARTIAL INDEX", "READY", "ERROR")
API_PREFIX: Final = "/api/v1"
_HEALTH_PATH: Final = f"{API_PREFIX}/healthcheck"
# The index is thread-safe; two workers let a search and an export overlap on two cores.
_INDEX_THREADS: Final = 2
# aiohttp's default 8 KiB request line would answer a long (hostile) query string with a bare 400.
_MAX_LINE_SIZE: Final = 256 * 1024
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How to run the local server.

    `dataset_dir` is a directory made by `vlbench dataset import`, or "demo" for the shipped demo
    dataset. `port=0` picks a free port. `auth=False` is the on-premises mode (no token needed);
    otherwise tokens must verify against `credentials` (None: `VL_API_KEY`/`VL_API_SECRET` from
    the environment, else the demo pair). `token_ttl_s` treats a token older than that (from its
    `iat`) as expired. The fault switches are those of `FaultConfig`. `dataset_status` is what
    the dataset endpoint reports; search answers 409 unless it is READY. Exports of more than
    `export_max_entities` rows are REJECTED; `export_fail` makes every export job FAILED and
    `export_delay_ms` holds each job IN_PROGRESS that long.
    """

    dataset_dir: Path | str = "demo"
    host: str = "127.0.0.1"
    port: int = 0
    auth: bool = True
    latency_ms: float = 0.0
    rate_limit: float | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    token_ttl_s: float | None = None
    seed: int = 0
    dataset_status: str = "READY"
    export_max_entities: int = 100_000
    export_fail: bool = False
    export_delay_ms: float = 0.0
    credentials: Credentials | None = None
    reuse_port: bool = False  # SO_REUSEPORT: processes share the port (runner.server.workers)

    def __post_init__(self) -> None:
        if self.dataset_status not in DATASET_STATUSES:
            raise ValueError(
                f"dataset_status: {self.dataset_status!r} is not one of {DATASET_STATUSES}"
            )
        self.faults()  # validates the rates

    def faults(self) -> FaultConfig:
        """The fault switches of this config."""
        return FaultConfig(
            latency_ms=self.latency_ms,
            rate_limit=self.rate_limit,
            fail_rate=self.fail_rate,
            drop_rate=self.drop_rate,
            malformed_rate=self.malformed_rate,
            seed=self.seed,
        )


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


@dataclass(slots=True)
class _State:
    """Everything the handlers share: config, index, export jobs, fault draws, API secrets."""

    config: ServerConfig
    index: SearchIndex
    info: DatasetInfo
    executor: ThreadPoolExecutor
    exports: ExportManager
    injector: FaultInjector
    secrets: Mapping[str, str]

    async def in_index_thread(self, call: Callable[[], _T]) -> _T:
        # Searches are CPU-bound (numpy, SQLite, the encoder): off the event loop, so that
        # healthchecks, latency faults and downloads stay responsive under load.
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)


_STATE: Final = web.AppKey("state", _State)


# --- handlers ---------------------------------------------------------------------------------


async def _healthcheck(request: web.Request) -> web.Response:
    return _json({"status": "Green", "service-health-message": "none", "version": __version__})


async def _dataset(request: web.Request) -> web.Response:
    state = _dataset_state(request)
    info, status = state.info, state.config.dataset_status
    return _json(
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
    return _json(
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
    clusters = await state.in_index_thread(
        lambda: state.index.search_page_json(parsed.request, parsed.page_number, PAGE_SIZE)
    )
    # The page comes as JSON bytes written from per-row fragments (runner.server.page).
    body = b'{"clusters":' + clusters + b',"metadata":{"used_duckdb":true}}'
    return web.Response(body=body, content_type="application/json")


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
    return _json(job.to_json(None) | {"status": "INIT", "progress": 0, "result_message": None})


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
    return _json(job.to_json(_download_path(state.info.id, job.id)))


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


def _stable_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vlbench:{name}"))


def _json(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, detail: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"detail": detail}, status=status, headers=headers)


# --- middlewares ------------------------------------------------------------------------------

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _fault_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Outermost: latency, 429, injected 5xx before the request; drops and bad bodies after."""
    state = request.app[_STATE]
    injector = state.injector
    if not injector.config.enabled or not _faultable(request.path):
        return await handler(request)
    if injector.config.latency_ms:
        await asyncio.sleep(injector.config.latency_ms / 1000)
    wait = injector.admit()
    if wait is not None:
        limit = injector.config.rate_limit
        headers = {"Retry-After": retry_after_header(wait)}
        return _error(429, f"Too many requests: the limit is {limit:g} requests/s", headers)
    decision = injector.decide()
    if decision.fail_status is not None:
        return _error(decision.fail_status, _FAIL_DETAILS[decision.fail_status])
    response = await handler(request)
    return await _spoil(request, response, decision)


_FAIL_DETAILS: Final = {
    500: "Internal server error (injected fault)",
    502: "Bad gateway (injected fault)",
    503: "Service unavailable (injected fault)",
}
_HTML_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


async def _spoil(
    request: web.Request, response: web.StreamResponse, decision: Decision
) -> web.StreamResponse:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return response
    body = response.body
    if decision.malformed == "html" and response.status == 200:
        return web.Response(body=_HTML_PAGE, status=200, content_type="text/html")
    if decision.malformed == "truncated_json" and response.status == 200:
        return web.Response(
            body=body[: max(1, len(body) // 2)], status=200, content_type="application/json"
        )
    if decision.drop:
        return await _drop(request, response, body)
    return response


async def _drop(request: web.Request, response: web.Response, body: bytes) -> web.StreamResponse:
    """Send the headers and half the body, then abort the connection."""
    stream = web.StreamResponse(status=response.status)
    stream.content_type = response.content_type
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        transport.abort()
    return stream


def _faultable(path: str) -> bool:
    return path.startswith(API_PREFIX + "/") and path.rstrip("/") != _HEALTH_PATH


@web.middleware
async def _error_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Turn every failure into JSON with `detail`; nothing a client sends yields a 5xx."""
    try:
        return await handler(request)
    except HttpError as exc:
        return _error(exc.status, exc.detail, exc.headers)
    except ValidationFailed as exc:
        return _error(422, [issue.to_json() for issue in exc.issues])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = "Not Found" if exc.status == 404 else exc.reason
        return _error(
            exc.status, detail, {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        _log.exception("unexpected error answering %s %s", request.method, request.path)
        return _error(500, "Internal server error")


@web.middleware
async def _auth_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """401 unless a valid bearer token comes with the request (healthcheck and downloads free)."""
    state = request.app[_STATE]
    if not state.config.auth or _auth_free(request):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise HttpError(401, "Not authenticated", headers=_CHALLENGE)
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpError(
            401, "Invalid authorization header: expected 'Bearer <token>'", headers=_CHALLENGE
        )
    try:
        verify_token(token.strip(), state.secrets, max_age_s=state.config.token_ttl_s)
    except AuthError as exc:
        raise HttpError(401, f"Invalid token: {exc.detail}", headers=_CHALLENGE) from None
    return await handler(request)


_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}


def _auth_free(request: web.Request) -> bool:
    if request.path.rstrip("/") == _HEALTH_PATH or "/export_download/" in request.path:
        return True
    # An unknown route is a 404 whether or not a token came with it.
    return request.match_info.http_exception is not None


# --- starting and stopping --------------------------------------------------------------------


def build_app(state: _State) -> web.Application:
    """The aiohttp application over an opened index (see `serve_in_background`)."""
    app = web.Application(middlewares=[_fault_middleware, _error_middleware, _auth_middleware])
    app[_STATE] = state
    p = API_PREFIX
    app.router.add_get(f"{p}/healthcheck", _healthcheck)
    app.router.add_get(f"{p}/dataset/{{dataset_id}}", _dataset)
    app.router.add_get(f"{p}/enrichment/{{dataset_id}}/context", _enrichment_context)
    app.router.add_get(f"{p}/explore/{{dataset_id}}", _explore)
    app.router.add_get(f"{p}/dataset/{{dataset_id}}/export_context_async", _export_start)
    app.router.add_get(f"{p}/dataset/{{dataset_id}}/export_status", _export_status)
    app.router.add_get(f"{p}/dataset/{{dataset_id}}/export_download/{{task_id}}", _export_download)
    return app


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
        with tempfile.TemporaryDirectory(prefix="vlbench-exports-") as workdir:
            state = _State(
                config=config,
                index=index,
                info=index.info,
                executor=executor,
                exports=ExportManager(
                    Path(workdir),
                    max_entities=config.export_max_entities,
                    fail=config.export_fail,
                    delay_s=config.export_delay_ms / 1000,
                ),
                injector=FaultInjector(config.faults()),
                secrets=_secrets(config),
            )
            runner = web.AppRunner(
                build_app(state),
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
                await state.exports.close()
                await runner.cleanup()
                index.close()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _secrets(config: ServerConfig) -> dict[str, str]:
    creds = config.credentials or Credentials.from_env()
    return {creds.api_key: creds.api_secret} if creds is not None else {}


def _bound_address(runner: web.AppRunner, config: ServerConfig) -> tuple[str, int]:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            host = config.host if config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            return host, int(address[1])
    raise RuntimeError("the server is not listening on a TCP port")


class ServerThread:
    """The server in its own thread and event loop, for synchronous code and tests.

        with ServerThread(ServerConfig("demo", port=0)) as server:
            requests.get(server.base_url + "/api/v1/healthcheck")

    Entering blocks until the server listens (or re-raises why it could not start); leaving
    stops it and joins the thread.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._server: RunningServer | None = None
        self._error: BaseException | None = None

    @property
    def server(self) -> RunningServer:
        """The running server (only inside the `with` block)."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return self._server

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

    def start(self) -> RunningServer:
        """Start the thread and wait until the server listens."""
        self._thread = threading.Thread(target=self._run, name="vlbench-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.server

    def stop(self) -> None:
        """Stop the server and join its thread (idempotent)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._server = None

    def __enter__(self) -> ServerThread:
        self.start()
        return self

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
        async with serve_in_background(self.config) as server:
            self._server = server
            self._ready.set()
            await self._stop.wait()


def run_server(
    config: ServerConfig, *, ready: Callable[[RunningServer], None] | None = None
) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); `ready` is called once it listens."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with serve_in_background(config) as server:
            if ready is not None:
                ready(server)
            await stop.wait()

    asyncio.run(main())
