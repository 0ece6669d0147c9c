"""Which failures are tried again, and how long to wait first (backoff, Retry-After)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from runner.api.client import BadBody, Throttled
from runner.api.pacer import Pacer
from runner.errors import ApiError, AuthError, TransportError, VlbenchError
from runner.execute._types import RetryPolicy

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Verdict:
    outcome: str
    status: int | None
    retryable: bool
    retry_after: float | None = None
    fatal: bool = False  # the whole run cannot go on (credentials refused)


def classify(exc: VlbenchError) -> _Verdict:
    if isinstance(exc, AuthError):
        return _Verdict("http_error", exc.status, retryable=False, fatal=True)
    if isinstance(exc, Throttled):
        return _Verdict("http_error", exc.status, retryable=True, retry_after=exc.retry_after)
    if isinstance(exc, ApiError):
        return _Verdict("http_error", exc.status, retryable=exc.status >= 500 or exc.status == 408)
    if isinstance(exc, BadBody):
        return _Verdict("bad_body", exc.status, retryable=True)
    if isinstance(exc, TransportError):
        return _Verdict(exc.kind, None, retryable=True)
    return _Verdict("transport_error", None, retryable=False)


def wait_before_retry(
    verdict: _Verdict, attempt: int, retry: RetryPolicy, rng: random.Random, pacer: Pacer | None
) -> float:
    """Seconds to sleep before the next attempt; a Retry-After is handed to the pacer instead.

    A Retry-After is obeyed up to the policy's cap (a server asking for an hour gets the cap).
    """
    if verdict.retry_after is not None:
        wait = min(verdict.retry_after, retry.retry_after_cap)
        if pacer is not None:
            pacer.slow_down(wait)  # every later request waits, this one too
            return 0.0
        return wait
    return retry.backoff(attempt, rng)


async def call_with_retries(
    call: Callable[[], Awaitable[_T]], retry: RetryPolicy, rng: random.Random, pacer: Pacer | None
) -> _T:
    for attempt in itertools.count(1):
        try:
            return await call()
        except (ApiError, TransportError) as exc:
            verdict = classify(exc)
            if not verdict.retryable or attempt >= retry.max_attempts:
                raise
            await asyncio.sleep(wait_before_retry(verdict, attempt, retry, rng, pacer))
    raise AssertionError("unreachable")  # itertools.count never ends
