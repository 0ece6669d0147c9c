"""The Explore API client: one aiohttp session, the bearer token, typed pages, classified errors.

    async with ExploreClient(base_url, dataset_id, auth=TokenSource.from_env()) as client:
        dataset = await client.get_dataset()
        page = await client.search_page(spec.params(), 0, request_key=spec.key)

One call is one HTTP request (plus, on a 401 with credentials to mint from, one resend with a
fresh token; `get_json` and `download` also follow redirects). Retries, backoff and pagination
are the scheduler's business (`runner.execute`); this module says what happened, precisely
enough to decide:

- `Page` (`runner.api.pages`): a 2xx search body that is the documented JSON, decoded typed
  (msgspec) into one Arrow array a page (no Python dict a hit), tolerant of the variants the
  contract warns about (`total_pages`, null `labels`, string thresholds and scores, null
  `previews`);
- `ApiError` (status, detail, request key) for any other status; `AuthError` for 401/403;
  `Throttled` for 429, and for any status carrying `Retry-After` (seconds or an HTTP date);
- `TransportError` with `kind` "timeout", "transport_error" (refused, reset, dropped mid-body) or
  "bad_body" (`BadBody`: a 2xx body that is not the documented JSON).

When a `Pacer` is given, every HTTP request this client sends, resends included, waits for it.
The token never appears in a message, a repr or a log line, and is sent only to the API's own
origin (scheme, host, port): a redirect elsewhere, e.g. to a presigned storage URL, goes without.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import orjson

from runner.api.answers import (
    MAX_DETAIL_CHARS,
    DatasetStatus,
    EnrichmentContext,
    ExportTask,
    FeatureFlags,
    detail_text,
    parse_context,
    parse_dataset,
    parse_export_task,
    parse_user_config,
)
from runner.api.auth import TokenSource
from runner.api.pacer import Pacer
from runner.api.pages import (
    CLUSTER_TYPE,
    PREVIEW_TYPE,
    Cluster,
    Page,
    Preview,
    parse_page,
)
from runner.errors import ApiError, AuthError, BadBody, Throttled, TransportError

# `BadBody`, `Throttled` (runner.errors) and `TokenSource` (runner.api.auth) are re-exported:
# callers of the client catch and build them with it.
__all__ = [
    "CLUSTER_TYPE",
    "PREVIEW_TYPE",
    "BadBody",
    "Cluster",
    "DatasetStatus",
    "EnrichmentContext",
    "ExploreClient",
    "ExportTask",
    "FeatureFlags",
    "Page",
    "Preview",
    "SendTiming",
    "Throttled",
    "TokenSource",
    "parse_page",
    "parse_retry_after",
]

_T = TypeVar("_T")

API_PREFIX: Final = "/api/v1"
# Most HTTP requests one `get_json` / `download` call sends: redirects and a resend after a 401.
_MAX_HOPS: Final = 8
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 1024 * 1024
# How much of a body that is not the documented JSON a bad-body error quotes.
_BODY_START: Final = 200
# Answers to `/user_config` that mean "this API has no such endpoint" (an older or on-prem API).
_NO_ENDPOINT: Final = frozenset({404, 405, 501})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date.

    None for a missing or unusable header; a date in the past gives 0. The wait is what the server
    asked, however long: the retry policy caps it (`retries.max_retry_after_s`) and records what
    was asked, so a cap here would make that record wrong.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


# -- the client ---------------------------------------------------------------------------------


@dataclass(slots=True)
class SendTiming:
    """Filled in by a call: when its (last) HTTP request was sent and how long the answer took.

    Measured after the pacer admitted the request, so it is the API's latency, not the queue's.
    """

    sent_at: float = 0.0  # Unix seconds
    latency_s: float = 0.0


class ExploreClient:
    """The Explore API over one aiohttp `ClientSession` (given, or owned and closed on exit).

    `timeout_s` bounds each HTTP request as a whole (connect, send, wait, read the body).
    `pacer`, when given, is awaited before every request this client sends.
    """

    def __init__(
        self,
        base_url: str,
        dataset_id: str,
        *,
        session: aiohttp.ClientSession | None = None,
        auth: TokenSource | None = None,
        pacer: Pacer | None = None,
        timeout_s: float = 30.0,
        connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.dataset_id = dataset_id
        self.auth = auth if auth is not None else TokenSource.anonymous()
        self.pacer = pacer
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owns_session = session is None
        self._connections = connections
        quoted = quote(dataset_id, safe="")
        self._explore_url = f"{self.base_url}{API_PREFIX}/explore/{quoted}"
        self._dataset_url = f"{self.base_url}{API_PREFIX}/dataset/{quoted}"
        self._context_url = f"{self.base_url}{API_PREFIX}/enrichment/{quoted}/context"
        self._export_path = f"/dataset/{quoted}"

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session requests go through (created on first use when none was given)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ExploreClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def get_dataset(self) -> DatasetStatus:
        """The dataset's id, name, status (`READY` to search) and size."""
        body = await self._get(self._dataset_url, {}, what="dataset", key=None)
        return self._parse(body, "dataset", None, lambda b: parse_dataset(b, self.dataset_id))

    async def get_enrichment_context(self) -> EnrichmentContext:
        """The enrichment models applied to the dataset (which searches it can serve)."""
        body = await self._get(self._context_url, {}, what="enrichment context", key=None)
        return self._parse(body, "enrichment context", None, parse_context)

    async def get_user_config(self) -> FeatureFlags | None:
        """The features the account may use for this dataset; None where the API has no
        `/user_config` (it answers 404, 405 or 501)."""
        what = "user config"
        try:
            body = await self._api_get(
                "/user_config", {"dataset_id": self.dataset_id}, what=what, timeout_s=None
            )
        except ApiError as exc:
            if exc.status in _NO_ENDPOINT and not isinstance(exc, AuthError):
                return None
            raise
        return self._parse(body, what, None, parse_user_config)

    async def search_page(
        self,
        params: Mapping[str, str],
        page_number: int,
        *,
        request_key: str | None = None,
        timing: SendTiming | None = None,
    ) -> Page:
        """One page of a search: `params` as the plan gives them, plus `page_number`."""
        query = {**params, "page_number": str(page_number)}
        what = f"search page {page_number}"
        body = await self._get(self._explore_url, query, what=what, key=request_key, timing=timing)
        return self._parse(body, what, request_key, lambda b: parse_page(b, page_number))

    async def start_export(
        self, params: Mapping[str, str], *, what: str = "export", timeout_s: float | None = None
    ) -> ExportTask:
        """Start an export job (`export_context_async` with `params`): its id, maybe its state.

        `params` should hold `file_name` and `export_format`, which the hosted API requires.
        """
        path = f"{self._export_path}/export_context_async"
        body = await self._api_get(path, params, what=what, timeout_s=timeout_s)
        return self._parse(body, what, None, parse_export_task)

    async def export_status(
        self, task_id: str, *, what: str = "export status", timeout_s: float | None = None
    ) -> ExportTask:
        """The state of export job `task_id` (`export_status`)."""
        path = f"{self._export_path}/export_status"
        params = {"export_task_id": task_id}
        body = await self._api_get(path, params, what=what, timeout_s=timeout_s)
        return self._parse(body, what, None, parse_export_task)

    async def get_json(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        what: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """The parsed JSON body of a GET of `path` under the API prefix (`/api/v1`).

        `client.get_json(f"/dataset/{id}/export_status", {"export_task_id": task})`. One call
        like the others (not retried; the same errors, `BadBody` for a body that is not JSON),
        except that redirects are followed (the token only to the API's own origin).
        `what` names the call in messages; `timeout_s` overrides the client's for this call.
        """
        label = what or f"GET {path}"
        body = await self._api_get(path, params or {}, what=label, timeout_s=timeout_s)
        return self._parse(body, label, None, orjson.loads)

    async def _api_get(
        self, path: str, params: Mapping[str, str], *, what: str, timeout_s: float | None
    ) -> tuple[int, bytes]:
        """A GET of `path` under the API prefix, redirects followed."""
        url = f"{self.base_url}{API_PREFIX}/{path.lstrip('/')}"
        return await self._get(url, params, what=what, key=None, timeout_s=timeout_s, follow=True)

    async def download(
        self,
        url: str,
        sink: Path,
        *,
        what: str = "download",
        timeout_s: float | None = None,
    ) -> None:
        """Stream the 2xx body of a GET of `url` into the file `sink`, following redirects.

        The token goes only to the API's own origin: a download redirected to storage (a
        presigned URL), or at another origin from the start, is fetched without it. Errors as
        for the other calls; not retried.
        """
        await self._get(url, {}, what=what, key=None, timeout_s=timeout_s, follow=True, sink=sink)

    def _parse(
        self,
        body: tuple[int, bytes],
        what: str,
        key: str | None,
        parse: Callable[[bytes], _T],
    ) -> _T:
        status, data = body
        try:
            return parse(data)
        except (ValueError, orjson.JSONDecodeError) as exc:
            # The body's start (never a header) is what a person needs to see what came back.
            start = data[:_BODY_START].decode("utf-8", "replace")
            message = self.auth.redact(f"{what}{_key(key)}: bad body: {exc}; body: {start!r}")
            raise BadBody(message, status=status, request_key=key) from None

    async def _get(
        self,
        url: str,
        params: Mapping[str, str],
        *,
        what: str,
        key: str | None,
        timing: SendTiming | None = None,
        timeout_s: float | None = None,
        follow: bool = False,
        sink: Path | None = None,
    ) -> tuple[int, bytes]:
        """One call: the request, one resend with a fresh token after a 401 (a second 401 is
        final), and with `follow` the redirects. A 2xx body goes to `sink` when given (b"").

        The token is sent only while the URL is at the API's own origin.
        """
        api_origin = _origin(self.base_url)
        send_token = _origin(url) == api_origin
        renewed = False
        for _ in range(_MAX_HOPS):
            generation, headers = self.auth.current() if send_token else (0, {})
            status, body, answer = await self._send(
                url,
                params,
                headers,
                what=what,
                key=key,
                timing=timing,
                timeout_s=timeout_s,
                sink=sink,
            )
            if 200 <= status < 300:
                return status, body
            location = answer.get("Location")
            if follow and status in _REDIRECTS and location:
                url, params = urljoin(url, location), {}
                send_token = send_token and _origin(url) == api_origin
                continue
            # An expired token: mint a fresh one and send once more.
            if status == 401 and send_token and not renewed and self.auth.renew(generation):
                renewed = True
                continue
            raise self._error(status, body, answer.get("Retry-After"), what=what, key=key)
        raise TransportError(
            f"{what}{_key(key)}: too many redirects", kind="transport_error", request_key=key
        )

    async def _send(
        self,
        url: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        *,
        what: str,
        key: str | None,
        timing: SendTiming | None,
        timeout_s: float | None,
        sink: Path | None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """One HTTP request: its status, body (b"" when streamed to `sink`) and headers."""
        if self.pacer is not None:
            await self.pacer.acquire()
        started = time.perf_counter()
        if timing is not None:
            timing.sent_at = time.time()
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self.session.get(
                url, params=params, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                status = response.status
                answer = response.headers
                if 200 <= status < 300 and sink is not None:
                    with open(sink, "wb") as file:
                        async for chunk in response.content.iter_chunked(_CHUNK):
                            file.write(chunk)
                    body = b""
                else:
                    body = await response.read()
        except TimeoutError:
            _stop_clock(timing, started)
            raise TransportError(
                f"{what}{_key(key)}: timed out", kind="timeout", request_key=key
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            _stop_clock(timing, started)
            reason = type(exc).__name__
            raise TransportError(
                self.auth.redact(f"{what}{_key(key)}: {reason}: {exc}"),
                kind="transport_error",
                request_key=key,
            ) from None
        _stop_clock(timing, started)
        return status, body, answer

    def _error(
        self, status: int, body: bytes, retry_after: str | None, *, what: str, key: str | None
    ) -> ApiError:
        try:
            parsed = orjson.loads(body)
            detail: object = parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed
        except orjson.JSONDecodeError:
            detail = body[:MAX_DETAIL_CHARS].decode("utf-8", "replace")
        message = self.auth.redact(f"{what}{_key(key)}: HTTP {status}: {detail_text(detail)}")
        if status == 401 and self.auth.unset:
            # Sent without a token because the environment held none: say what to set.
            message = f"{message} (no credentials were sent: {self.auth.unset})"
        detail = self.auth.redact(detail_text(detail))
        if status in (401, 403):
            return AuthError(message, status=status, detail=detail, request_key=key)
        wait = parse_retry_after(retry_after)
        if status == 429 or wait is not None:
            return Throttled(
                message, status=status, detail=detail, request_key=key, retry_after=wait
            )
        return ApiError(message, status=status, detail=detail, request_key=key)

    def __repr__(self) -> str:
        return f"ExploreClient({self.base_url!r}, {self.dataset_id!r}, auth={self.auth!r})"


def _stop_clock(timing: SendTiming | None, started: float) -> None:
    if timing is not None:
        timing.latency_s = time.perf_counter() - started


def _key(request_key: str | None) -> str:
    return f" [request {request_key}]" if request_key else ""


@functools.lru_cache(maxsize=64)  # a run asks it of the same few URLs, twice a request
def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port
