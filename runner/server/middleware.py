"""The local server's middlewares: injected faults, JSON error answers, bearer-token auth.

`runner.server.app.build_app` stacks them outermost first:

    faults(injector)            latency, 429, injected 5xx before a request; drops, bad bodies after
    errors                      every failure becomes JSON with `detail`; no client input 5xxs
    auth(secrets, ttl)          401 unless a valid bearer token comes (healthcheck, downloads free)

`json_response` and `error_response` are the one way any handler answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from runner.api.auth import TokenVerifier
from runner.errors import AuthError
from runner.server.errors import HttpError, ValidationFailed
from runner.server.faults import Decision, FaultInjector, retry_after_header

__all__ = [
    "API_PREFIX",
    "HEALTH_PATH",
    "auth_middleware",
    "error_middleware",
    "error_response",
    "fault_middleware",
    "json_response",
]

API_PREFIX: Final = "/api/v1"
HEALTH_PATH: Final = f"{API_PREFIX}/healthcheck"
_log = logging.getLogger("runner.server.app")


def json_response(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """`body` as JSON (orjson)."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, detail: object, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The documented error body: `{"detail": ...}`."""
    return json_response({"detail": detail}, status=status, headers=headers)


# --- faults -----------------------------------------------------------------------------------


def fault_middleware(injector: FaultInjector) -> Middleware:
    """Outermost: latency, 429, injected 5xx before the request; drops and bad bodies after."""

    @web.middleware
    async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not injector.config.enabled or not _faultable(request.path):
            return await handler(request)
        if injector.config.latency_ms:
            await asyncio.sleep(injector.config.latency_ms / 1000)
        wait = injector.admit()
        if wait is not None:
            limit = injector.config.rate_limit
            headers = {"Retry-After": retry_after_header(wait)}
            return error_response(
                429, f"Too many requests: the limit is {limit:g} requests/s", headers
            )
        decision = injector.decide()
        if decision.fail_status is not None:
            return error_response(decision.fail_status, _FAIL_DETAILS[decision.fail_status])
        response = await handler(request)
        return await _spoil(request, response, decision)

    return faults


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
    return path.startswith(API_PREFIX + "/") and path.rstrip("/") != HEALTH_PATH


# --- errors -----------------------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into JSON with `detail`; nothing a client sends yields a 5xx."""
    try:
        return await handler(request)
    except HttpError as exc:
        return error_response(exc.status, exc.detail, exc.headers)
    except ValidationFailed as exc:
        return error_response(422, [issue.to_json() for issue in exc.issues])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = "Not Found" if exc.status == 404 else exc.reason
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, detail, allow)
    except asyncio.CancelledError:
        raise
    except Exception:
        _log.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(500, "Internal server error")


# --- auth -------------------------------------------------------------------------------------


def auth_middleware(secrets: Mapping[str, str], *, max_age_s: float | None) -> Middleware:
    """401 unless a bearer token verifies against `secrets` (api key -> secret).

    The healthcheck and export downloads need no token (a download URI is a capability, like a
    presigned URL); an unknown route is a 404 whether or not a token came with it.
    """

    verify = TokenVerifier(secrets, max_age_s=max_age_s)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _auth_free(request):
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
            verify(token.strip())
        except AuthError as exc:
            raise HttpError(401, f"Invalid token: {exc.detail}", headers=_CHALLENGE) from None
        return await handler(request)

    return auth


_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}


def _auth_free(request: web.Request) -> bool:
    if request.path.rstrip("/") == HEALTH_PATH or "/export_download/" in request.path:
        return True
    return request.match_info.http_exception is not None
