"""The one retry policy: which failures are tried again, and how long to wait first.

The scheduler (`runner.execute`), the preflight calls and the export jobs (`runner.export`)
all decide through `classify` and wait through `wait_before_retry`:

- retried: 429 and any status with `Retry-After`, 5xx, 408 (the server gave up waiting for us:
  as transient as a timeout), timeouts, dropped connections, and 2xx bodies that are not the
  documented JSON (a proxy's error page or a body cut short; a second try usually parses);
- final: every other 4xx; a 401 also ends the whole run (the credentials were refused), a 403
  only the requests of its kind (a feature disabled for the account).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from runner.api.pacer import Pacer
from runner.errors import ApiError, AuthError, BadBody, Throttled, TransportError, VlbenchError

__all__ = ["RetryPolicy", "call_with_retries", "classify", "wait_before_retry"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed HTTP request is tried again.

    The wait before attempt n+1 is drawn uniformly from 0..min(max_backoff_s, backoff_s * 2**(n-1))
    ("full jitter": retries of many workers spread out instead of returning in step).
    A server's `Retry-After` is obeyed up to `max_retry_after_s` (None: `max_backoff_s`).
    """

    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float | None = None

    @property
    def retry_after_cap(self) -> float:
        """The longest wait a server's `Retry-After` may impose on the run."""
        cap = self.max_retry_after_s
        return self.max_backoff_s if cap is None else cap

    def capped_note(self, asked: float | None) -> str | None:
        """What a page records when the server asked to wait longer than the cap (else None)."""
        if asked is None or asked <= self.retry_after_cap:
            return None
        return (
            f"the server asked Retry-After {_seconds(asked)} s; waited {self.retry_after_cap:g} s "
            "(retries.max_retry_after_s)"
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


def _seconds(value: float) -> str:
    """A wait as a person reads it: `0.5`, `3600`, `157,680,000` (a date years ahead)."""
    return f"{value:g}" if value < 1000 else f"{value:,.0f}"


@dataclass(frozen=True, slots=True)
class _Verdict:
    outcome: str
    status: int | None
    retryable: bool
    retry_after: float | None = None
    fatal: bool = False  # the whole run cannot go on (credentials refused)


def classify(exc: VlbenchError) -> _Verdict:
    """What a failed call means: its outcome for the store, and whether to try it again."""
    if isinstance(exc, AuthError):
        # 401: the credentials were refused, nothing can go on. 403: this kind of request is not
        # allowed (a feature disabled); the others may be, so it fails alone.
        return _Verdict("http_error", exc.status, retryable=False, fatal=exc.status != 403)
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
    call: Callable[[], Awaitable[_T]],
    retry: RetryPolicy,
    rng: random.Random,
    pacer: Pacer | None,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> _T:
    """`call()` (one client call), tried again as `classify` says, up to `retry.max_attempts`.

    The last failure is raised as it came. `sleep` is injectable so that tests never wait.
    """
    for attempt in itertools.count(1):
        try:
            return await call()
        except (ApiError, TransportError) as exc:
            verdict = classify(exc)
            if not verdict.retryable or attempt >= retry.max_attempts:
                raise
            await sleep(wait_before_retry(verdict, attempt, retry, rng, pacer))
    raise AssertionError("unreachable")  # itertools.count never ends
