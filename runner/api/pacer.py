"""The global rate limiter: evenly spaced slots, never a burst, never over the limit.

`Pacer(requests, per_seconds)` admits one acquisition every `per_seconds / requests` seconds, in
the order they asked, k6 constant-arrival-rate style: each `acquire()` reserves the next free
slot, `next = max(now, next) + interval`, and sleeps until it. There is no burst credit, so a
pacer that sat idle does not fire a volley when work comes back, and a hosted API sees the same
spacing at the top of a second as in its middle.

Two guarantees, both measured in `bench/bench_limiter.py`:
- the long-run rate is the limit (slots are reserved back to back while callers wait, so a late
  wake-up of one caller does not push the others back);
- no window of `per_seconds` holds more than `ceil(requests)` admissions, even when the event loop
  wakes a caller late and its successor on time: a small log of the last admissions holds a
  caller back until the oldest one in the window has left it (by 0.1% of the period, so that
  a clock read a few microseconds later elsewhere agrees; the long-run rate gives up that 0.1%).

`slow_down(seconds)` (the API said `Retry-After`) moves every slot not yet admitted, reserved or
not, so that none is before `now + seconds`; the spacing after the pause is the same as before.

    pacer = Pacer(10)            # 10 requests a second
    async with pacer:            # wraps exactly one request (or one retry)
        await session.get(url)

The clock and the sleep are injectable so that tests run on virtual time and never sleep.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

__all__ = ["Pacer"]

Clock = Callable[[], float]
# The window guard's margin, as a share of the period (see `_window_opens`).
_WINDOW_MARGIN: Final = 1e-3
Sleep = Callable[[float], Awaitable[None]]


class Pacer:
    """Admit at most `requests` acquisitions per `per_seconds`, evenly spaced.

    One pacer is shared by every worker of a run and counts every page and every retry.
    Not thread-safe: use it from one event loop.
    """

    __slots__ = (
        "_clock",
        "_hold_until",
        "_interval",
        "_log",
        "_next",
        "_offset",
        "_pending",
        "_sleep",
        "_window_count",
        "per_seconds",
        "requests",
    )

    def __init__(
        self,
        requests: float,
        per_seconds: float = 1.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (requests > 0 and math.isfinite(requests)):
            raise ValueError(f"requests must be a positive number, got {requests!r}")
        if not (per_seconds > 0 and math.isfinite(per_seconds)):
            raise ValueError(f"per_seconds must be a positive number, got {per_seconds!r}")
        self.requests = float(requests)
        self.per_seconds = float(per_seconds)
        self._interval = per_seconds / requests
        self._clock = clock
        self._sleep = sleep
        # Slots are kept in "base" time; a slot's real time is base + _offset. slow_down() raises
        # the offset, which moves every reserved slot at once without waking anyone.
        self._offset = 0.0
        self._next = -math.inf  # base time of the next free slot
        # Reserved slots not yet admitted (base times, in increasing order: dicts keep insertion
        # order and slots are reserved in increasing order); the first is the front of the queue.
        self._pending: dict[float, None] = {}
        self._hold_until = -math.inf  # real time before which nothing is admitted
        # The last admissions (real times): a window of per_seconds holds at most this many.
        self._window_count = max(1, math.ceil(requests - 1e-9))
        self._log: deque[float] = deque(maxlen=self._window_count)

    @property
    def rate(self) -> float:
        """Admissions per second at the limit."""
        return self.requests / self.per_seconds

    @property
    def interval(self) -> float:
        """Seconds between two admissions at the limit."""
        return self._interval

    def reserve(self) -> float:
        """Reserve the next free slot and return its real time (no waiting).

        Callers normally use `acquire()`; this is the pure scheduling step, for tests and for
        estimating when work will be admitted.
        """
        now = self._clock()
        earliest = max(now, self._hold_until) - self._offset
        base = max(earliest, self._next)
        self._next = base + self._interval
        self._pending[base] = None
        return base + self._offset

    async def acquire(self) -> float:
        """Wait for this caller's slot and return the clock time at which it was admitted."""
        base = self.reserve() - self._offset
        try:
            while True:
                now = self._clock()
                due = max(base + self._offset, self._window_opens())
                if due <= now:
                    break
                await self._sleep(due - now)
        finally:
            # Admitted or cancelled, the slot is no longer waiting.
            del self._pending[base]
        self._log.append(now)
        return now

    def slow_down(self, seconds: float) -> None:
        """Admit nothing for `seconds` from now; every later slot moves back, spacing kept.

        Used when the API answers `Retry-After`: the whole run slows, not only the one request.
        A shorter pause than one already in force changes nothing.
        """
        if not seconds > 0:
            return
        until = self._clock() + seconds
        if until <= self._hold_until:
            return
        self._hold_until = until
        if self._pending:
            # Move the earliest waiting slot to `until`; every reserved slot behind it follows.
            front = next(iter(self._pending))
            self._offset += max(0.0, until - (front + self._offset))

    def _window_opens(self) -> float:
        """The earliest time the sliding window has room for one more admission."""
        if len(self._log) < self._window_count:
            return -math.inf
        # A hair more than the period: whoever timestamps the requests (the API) does so a few
        # microseconds after we do, and not always by the same few. Costs 0.1% of the rate.
        return self._log[0] + self.per_seconds * (1 + _WINDOW_MARGIN)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"Pacer(requests={self.requests!r}, per_seconds={self.per_seconds!r})"
