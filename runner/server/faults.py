"""Fault injection for the local server: latency, 429s, 5xx, dropped connections, bad bodies.

Everything is off by default. The draws come from one `random.Random(seed)` and every request
draws the same number of values whatever is switched on, so the same seed and the same request
order give the same faults: a failing run can be replayed.

    injector = FaultInjector(FaultConfig(fail_rate=0.2, seed=7))
    wait = injector.admit()          # None, or seconds until the rate limit lets a request in
    decision = injector.decide()     # which fault (if any) this request gets
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "FAIL_STATUSES",
    "Decision",
    "FaultConfig",
    "FaultInjector",
    "MalformedKind",
    "retry_after_header",
]

FAIL_STATUSES: Final = (500, 502, 503)
MalformedKind = Literal["truncated_json", "html"]
_MALFORMED_KINDS: Final[tuple[MalformedKind, ...]] = ("truncated_json", "html")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Which faults to inject; rates are probabilities per request (0..1).

    `rate_limit` is requests per second (a token bucket holding one second's worth, at least 1);
    requests over it get 429 with `Retry-After`. `latency_ms` is added before every request.
    """

    latency_ms: float = 0.0
    rate_limit: float | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}: {rate} is not within 0..1")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms: {self.latency_ms} is negative")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit: {self.rate_limit} is not positive")

    @property
    def enabled(self) -> bool:
        """Whether any fault is switched on."""
        return bool(
            self.latency_ms
            or self.rate_limit is not None
            or self.fail_rate
            or self.drop_rate
            or self.malformed_rate
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The faults one request gets: an error status, a dropped connection, a malformed body."""

    fail_status: int | None = None
    drop: bool = False
    malformed: MalformedKind | None = None


class FaultInjector:
    """Draws the faults of each request from a seeded RNG and keeps the rate-limit bucket.

    Not thread-safe: the server calls it from its event loop only. `clock` is injectable so that
    tests of the bucket need not sleep.
    """

    def __init__(self, config: FaultConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._clock = clock
        rate = config.rate_limit
        self._capacity = max(1.0, rate) if rate is not None else 0.0
        self._tokens = self._capacity
        self._last = clock()

    def admit(self) -> float | None:
        """Take one token of the rate limit: None when admitted, else the seconds to wait."""
        rate = self.config.rate_limit
        if rate is None:
            return None
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate

    def decide(self) -> Decision:
        """Draw this request's faults (always five draws, so the sequence is seed-stable)."""
        u_fail, u_status, u_drop, u_bad, u_kind = (self._rng.random() for _ in range(5))
        cfg = self.config
        if u_fail < cfg.fail_rate:
            return Decision(fail_status=FAIL_STATUSES[int(u_status * len(FAIL_STATUSES))])
        if u_drop < cfg.drop_rate:
            return Decision(drop=True)
        if u_bad < cfg.malformed_rate:
            return Decision(malformed=_MALFORMED_KINDS[int(u_kind * len(_MALFORMED_KINDS))])
        return Decision()


def retry_after_header(wait_s: float) -> str:
    """`Retry-After` in whole seconds, at least 1 (the header has no fractions)."""
    return str(max(1, math.ceil(wait_s)))
