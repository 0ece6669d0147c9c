"""The global rate limiter: evenly spaced slots, never a burst, never over the limit.

`Pacer(requests, per_seconds)` admits one acquisition every `per_seconds / requests` seconds, in
the order they asked, k6 constant-arrival-rate style: each `acquire()` reserves the next free
slot, `next = max(now, next) + interval`, and sleeps until it. There is no burst credit, so a
pacer that sat idle does not fire a volley when work comes back, and a hosted API sees the same
spacing at the top of a second as in its middle.

Three guarantees, measured in `bench/bench_limiter.py` (alone and end to end, on a busy machine):
- the long-run rate is the limit (slots are reserved back to back while callers wait, so a late
  wake-up of one caller does not push the others back);
- no window of `per_seconds` holds more than `ceil(requests)` admissions, even when the event loop
  wakes a caller late and its successor on time: a small log of the last admissions holds a
  caller back until the oldest one in the window has left it (by 0.1% of the period, so that
  a clock read a few microseconds later elsewhere agrees; the long-run rate gives up that 0.1%);
- a late wake-up is caught up spread out, never at once. A loop that stalled 100 ms at 50/s
  used to release the five overdue requests in the same millisecond (a burst a hosted API
  answers with 429s). Now no 100 ms window holds more than its even share plus one
  (`ceil(rate / 10) + 1`: one below the bar R/10 + 2, so that the jitter between the
  admission and the moment the request leaves cannot push a window over it), and a backlog
  goes out evenly at that share's pace (its gap is 100 ms / share, at least half an interval;
  the first one after a stall may come a quarter gap early): at most 20% above the rate at
  50/s, 5% at 200/s, until the schedule is met again. What the period's window cannot absorb
  (a stall of more than a few tens of milliseconds) is forgiven: the schedule moves back
  instead of repeating the catch-up as a burst and a pause every period.

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
# Catch-up after a late wake-up: no window of _BURST_WINDOW_S holds more than its even share +
# _BURST_EXTRA, and admissions keep a catch-up gap (see `Pacer.__init__`); a wake-up up to
# _LATE_TOLERANCE of that gap late does not count as catching up.
_BURST_WINDOW_S: Final = 0.1
_BURST_EXTRA: Final = 1
_MIN_GAP: Final = 0.5  # of an interval
_LATE_TOLERANCE: Final = 0.75  # of the gap
Sleep = Callable[[float], Awaitable[None]]


class _Window:
    """A sliding window [t, t + width) that holds at most `count` admissions (a log of them)."""

    __slots__ = ("log", "width")

    def __init__(self, width: float, count: int) -> None:
        self.width = width
        self.log: deque[float] = deque(maxlen=count)

    def opens(self) -> float:
        """The earliest time this window has room for one more admission."""
        if len(self.log) < (self.log.maxlen or 0):
            return -math.inf
        # A hair more than the width: whoever timestamps the requests (the API) does so a few
        # microseconds after we do, and not always by the same few. Costs 0.1% of the rate.
        return self.log[0] + self.width * (1 + _WINDOW_MARGIN)


class Pacer:
    """Admit at most `requests` acquisitions per `per_seconds`, evenly spaced.

    One pacer is shared by every worker of a run and counts every page and every retry.
    Not thread-safe: use it from one event loop.
    """

    __slots__ = (
        "_clock",
        "_hold_until",
        "_catch_up",
        "_gap",
        "_interval",
        "_next",
        "_offset",
        "_pending",
        "_sleep",
        "_tolerance",
        "_windows",
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
        # The windows every admission must fit: the period (the limit itself), a short burst
        # window and the catch-up gap (a window of half an interval holding one).
        rate = requests / per_seconds
        burst = math.ceil(rate * _BURST_WINDOW_S - 1e-9) + _BURST_EXTRA
        # The windows every admission must fit: the period (the limit itself) and the burst one.
        self._windows = (
            _Window(per_seconds, max(1, math.ceil(requests - 1e-9))),
            _Window(_BURST_WINDOW_S, burst),
        )
        # The catch-up clock: the time the last admission counts as, for spacing the next.
        # It advances by the gap (a burst window's allowance spread evenly over it, at least
        # half an interval) and never lags the real admission by more than the tolerance, so a
        # backlog goes out at the gap's rate however late the loop wakes each caller, while one
        # caller woken a little late (less than the tolerance) is not held back at all.
        self._gap = max(self._interval * _MIN_GAP, _BURST_WINDOW_S / burst)
        self._tolerance = self._gap * _LATE_TOLERANCE
        self._catch_up = -math.inf

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
        return self._reserve_base() + self._offset

    def _reserve_base(self) -> float:
        """Reserve the next free slot; its base time is also its key in `_pending`."""
        now = self._clock()
        earliest = max(now, self._hold_until) - self._offset
        base = max(earliest, self._next)
        self._next = base + self._interval
        self._pending[base] = None
        return base

    async def acquire(self) -> float:
        """Wait for this caller's slot and return the clock time at which it was admitted."""
        base = self._reserve_base()
        try:
            while True:
                now = self._clock()
                self._forgive_lost_slots()
                slot = base + self._offset
                due = max(slot, self._window_opens(), self._catch_up + self._gap)
                if due <= now:
                    break
                await self._sleep(due - now)
        finally:
            # Admitted or cancelled, the slot is no longer waiting.
            del self._pending[base]
        for window in self._windows:
            window.log.append(now)
        self._catch_up = max(slot, self._catch_up + self._gap, now - self._tolerance)
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

    def _forgive_lost_slots(self) -> None:
        """Move the schedule back when the period's window, not the slot, holds the front back.

        Then the slots the loop overslept cannot be caught up without breaking the limit: they
        are lost, and keeping them would make every later second a burst followed by a pause
        (the window remembers the catch-up). The schedule resumes evenly from the window's room.
        """
        if not self._pending:
            return
        front = next(iter(self._pending)) + self._offset
        opens = self._windows[0].opens()
        if opens > front:
            self._offset += opens - front

    def _window_opens(self) -> float:
        """The earliest time every sliding window has room for one more admission."""
        return max(window.opens() for window in self._windows)

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
