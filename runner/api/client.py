"""The Explore API client: one aiohttp session, the bearer token, typed pages, classified errors.

    async with ExploreClient(base_url, dataset_id, auth=TokenSource.from_env()) as client:
        dataset = await client.get_dataset()
        page = await client.search_page(spec.params(), 0, request_key=spec.key)

One call is one HTTP request (plus, on a 401 with credentials to mint from, one resend with a
fresh token; `get_json` and `download` also follow redirects). Retries, backoff and pagination
are the scheduler's business (`runner.execute`); this module says what happened, precisely
enough to decide:

- `Page` (`runner.api.pages`): a 2xx search body that is the documented JSON, parsed with
  orjson into one Arrow array a page (no Python object a hit), tolerant of the variants the
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
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import orjson

from runner.api.auth import (
    ENV_API_KEY,
    ENV_API_SECRET,
    ENV_TOKEN,
    Credentials,
    bearer_header,
    mint_token,
)
from runner.api.pacer import Pacer
from runner.api.pages import (
    CLUSTER_TYPE,
    PREVIEW_TYPE,
    Cluster,
    Page,
    Preview,
    parse_page,
)
from runner.api.pages import mapping as _mapping
from runner.api.pages import opt_int as _opt_int
from runner.api.pages import opt_text as _opt_text
from runner.api.pages import text as _text
from runner.errors import ApiError, AuthError, TransportError, UsageError

__all__ = [
    "CLUSTER_TYPE",
    "PREVIEW_TYPE",
    "BadBody",
    "Cluster",
    "DatasetStatus",
    "EnrichmentContext",
    "ExploreClient",
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
# Longest error detail kept in a message; server details can echo whole inputs.
_MAX_DETAIL_CHARS: Final = 300
# A Retry-After further out than this is taken as this (a date in the far future is a bug).
_MAX_RETRY_AFTER_S: Final = 600.0
# Most HTTP requests one `get_json` / `download` call sends: redirects and a resend after a 401.
_MAX_HOPS: Final = 8
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CHUNK: Final = 1024 * 1024


class Throttled(ApiError):
    """The API asked to come back later: 429, or any status with `Retry-After`.

    `retry_after` is the wait it asked for in seconds (None when it gave no usable header).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        detail: object = None,
        request_key: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, detail=detail, request_key=request_key)
        self.retry_after = retry_after


class BadBody(TransportError):
    """A 2xx answer whose body is not the documented JSON (`kind == "bad_body"`)."""

    def __init__(self, message: str, *, status: int, request_key: str | None = None) -> None:
        super().__init__(message, kind="bad_body", request_key=request_key)
        self.status = status


# -- the bearer token ---------------------------------------------------------------------------


class TokenSource:
    """Where the bearer token comes from: none, a ready token, or credentials to mint from.

    With credentials, a token is minted on first use and again `renew_before_s` before it
    expires (a run outlasts a token's 10 minutes), and `renew()` mints one at once after a 401.
    A ready token cannot be renewed. repr and str never show the token or the secret.
    """

    __slots__ = (
        "_clock",
        "_credentials",
        "_expires",
        "_generation",
        "_renew_before",
        "_token",
        "_ttl",
    )

    def __init__(
        self,
        *,
        token: str | None = None,
        credentials: Credentials | None = None,
        ttl_s: float = 600.0,
        renew_before_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token is not None and credentials is not None:
            raise ValueError("give a token or credentials, not both")
        self._token = token
        self._credentials = credentials
        self._ttl = ttl_s
        self._renew_before = min(renew_before_s, ttl_s / 2)
        self._clock = clock
        self._expires = math.inf if token is not None else -math.inf
        self._generation = 0

    @classmethod
    def anonymous(cls) -> TokenSource:
        """No Authorization header (an on-premises install, or a local server without auth)."""
        return cls()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        token_env: str = ENV_TOKEN,
        api_key_env: str = ENV_API_KEY,
        api_secret_env: str = ENV_API_SECRET,
        default: Credentials | None = None,
    ) -> TokenSource:
        """A ready token from `token_env`, else credentials from the key and secret variables.

        With neither set: `default` credentials when given, else anonymous. One of the key and
        secret without the other is refused (`UsageError` naming the missing variable).
        """
        env = os.environ if environ is None else environ
        token = env.get(token_env) or None
        if token is not None:
            return cls(token=token)
        key, secret = env.get(api_key_env) or "", env.get(api_secret_env) or ""
        if key and secret:
            return cls(credentials=Credentials(key, secret))
        if key or secret:
            missing = api_secret_env if key else api_key_env
            raise UsageError(f"{missing} is not set (set both {api_key_env} and {api_secret_env})")
        return cls(credentials=default) if default is not None else cls()

    @property
    def kind(self) -> str:
        """ "none", "token" or "credentials"."""
        if self._credentials is not None:
            return "credentials"
        return "token" if self._token is not None else "none"

    @property
    def renewable(self) -> bool:
        """Whether a fresh token can be minted (credentials were given)."""
        return self._credentials is not None

    def current(self) -> tuple[int, dict[str, str]]:
        """The token's generation and the headers that carry it (empty without auth)."""
        if self._credentials is not None and self._clock() >= self._expires - self._renew_before:
            self._mint()
        if self._token is None:
            return self._generation, {}
        return self._generation, bearer_header(self._token)

    def renew(self, generation: int) -> bool:
        """Mint a fresh token after a 401 on `generation`; False when no token can be minted.

        Workers that all got a 401 on the same token renew it once: a later generation means
        another worker already did.
        """
        if self._credentials is None:
            return False
        if generation == self._generation:
            self._mint()
        return True

    def redact(self, text: str) -> str:
        """`text` with the token and the secret blanked, should a server ever echo them."""
        for secret in (self._token, self._credentials.api_secret if self._credentials else None):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    def _mint(self) -> None:
        assert self._credentials is not None  # only called with credentials
        now = self._clock()
        self._token = mint_token(self._credentials, ttl_s=self._ttl, now=now)
        self._expires = now + self._ttl
        self._generation += 1

    def __repr__(self) -> str:
        if self._credentials is not None:
            return f"TokenSource(credentials={self._credentials.api_key!r})"
        return f"TokenSource({self.kind})"

    __str__ = __repr__


# -- typed answers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    """What `/dataset/{id}` says: searching needs `status == "READY"`."""

    dataset_id: str
    display_name: str | None
    status: str
    n_images: int | None


@dataclass(frozen=True, slots=True)
class EnrichmentContext:
    """What `/enrichment/{id}/context` says: the enrichment models applied, by type."""

    status: str | None
    models: Mapping[str, str]

    @property
    def enrichments(self) -> frozenset[str]:
        """The enrichment types available, e.g. CAPTION_IMAGES, IMAGE_TAGGING."""
        return frozenset(self.models)


def _parse_dataset(body: bytes, dataset_id: str) -> DatasetStatus:
    root = _mapping(orjson.loads(body), "body")
    status = root.get("status_new", root.get("status"))
    if status is None:
        raise ValueError("dataset has no status_new")
    return DatasetStatus(
        dataset_id=_text(root.get("id", dataset_id), "id"),
        display_name=_opt_text(root.get("display_name")),
        status=_text(status, "status_new"),
        n_images=_opt_int(root.get("n_images"), "n_images"),
    )


def _parse_context(body: bytes) -> EnrichmentContext:
    root = _mapping(orjson.loads(body), "body")
    outer = root.get("dataset_enrichment_models") or {}
    models = _mapping(outer, "dataset_enrichment_models").get("enrichment_models") or {}
    return EnrichmentContext(
        status=_opt_text(root.get("status")),
        models={str(k): str(v) for k, v in _mapping(models, "enrichment_models").items()},
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date.

    None for a missing or unusable header; a date in the past gives 0; a wait further out than
    ten minutes is cut to ten minutes.
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
    return min(max(0.0, seconds), _MAX_RETRY_AFTER_S)


def _detail_text(detail: object) -> str:
    """A one-line rendering of an error body's `detail` (a string, or a 422 list of issues)."""
    if isinstance(detail, list):
        parts = []
        for issue in detail:
            if isinstance(issue, dict):
                loc = ".".join(str(p) for p in issue.get("loc") or [])
                parts.append(f"{loc}: {issue.get('msg', '')}" if loc else str(issue.get("msg", "")))
            else:
                parts.append(str(issue))
        text = "; ".join(parts)
    else:
        text = str(detail)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[:_MAX_DETAIL_CHARS] + "…"


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
        return self._parse(body, "dataset", None, lambda b: _parse_dataset(b, self.dataset_id))

    async def get_enrichment_context(self) -> EnrichmentContext:
        """The enrichment models applied to the dataset (which searches it can serve)."""
        body = await self._get(self._context_url, {}, what="enrichment context", key=None)
        return self._parse(body, "enrichment context", None, _parse_context)

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
        url = f"{self.base_url}{API_PREFIX}/{path.lstrip('/')}"
        label = what or f"GET {path}"
        body = await self._get(
            url, params or {}, what=label, key=None, timeout_s=timeout_s, follow=True
        )
        return self._parse(body, label, None, orjson.loads)

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
            message = self.auth.redact(f"{what}{_key(key)}: bad body: {exc}")
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
            detail = body[:_MAX_DETAIL_CHARS].decode("utf-8", "replace")
        message = self.auth.redact(f"{what}{_key(key)}: HTTP {status}: {_detail_text(detail)}")
        detail = self.auth.redact(_detail_text(detail))
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


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port
