"""The Pacer on virtual time: even slots, no bursts, windows within the limit, slow_down."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
from collections.abc import Sequence
from typing import Any

import pytest

from runner.api import pacer as pacer_module
from runner.api.pacer import Pacer

MARGIN = pacer_module._WINDOW_MARGIN  # the guard waits this share of a period past the window


class VirtualTime:
    """A clock and a sleep for the pacer: sleeping parks the task until `drive` reaches its time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.lateness = 0.0  # added to every wake-up, as a busy event loop would
        # (start, end): the loop is frozen then, as when the OS gives the CPU to another
        # process; a wake-up due inside happens at the end
        self.stall: tuple[float, float] | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        wake = self.now + max(0.0, seconds) + self.lateness
        if self.stall is not None and self.stall[0] < wake < self.stall[1]:
            wake = self.stall[1]
        heapq.heappush(self._sleepers, (wake, next(self._order), future))
        await future

    async def drive(self, tasks: Sequence[asyncio.Task[Any]]) -> None:
        """Advance time sleeper by sleeper until every task is done."""
        while not all(task.done() for task in tasks):
            for _ in range(10):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                if not future.done():
                    future.set_result(None)
        for task in tasks:
            task.result()


def busiest(times: list[float], width: float) -> int:
    """The most admissions in any half-open window [t, t + width)."""
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + width) - i for i, t in enumerate(ordered))


async def run_workers(
    pacer: Pacer, vt: VirtualTime, workers: int, per_worker: int, work_s: float = 0.0
) -> list[float]:
    """`workers` tasks each acquiring `per_worker` times; the admission times, in order."""
    admitted: list[float] = []

    async def worker() -> None:
        for _ in range(per_worker):
            admitted.append(await pacer.acquire())
            if work_s:
                await vt.sleep(work_s)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await vt.drive(tasks)
    return admitted


def test_reserve_spaces_slots_evenly() -> None:
    vt = VirtualTime()
    pacer = Pacer(20, clock=vt.clock, sleep=vt.sleep)
    slots = [pacer.reserve() for _ in range(5)]
    assert slots == pytest.approx([i / 20 for i in range(5)])


def test_no_burst_credit_after_idle() -> None:
    vt = VirtualTime()
    pacer = Pacer(10, clock=vt.clock, sleep=vt.sleep)
    pacer.reserve()
    vt.now = 100.0  # idle for a long time: no credit saved up
    assert [pacer.reserve() for _ in range(3)] == pytest.approx([100.0, 100.1, 100.2])


async def test_sixteen_workers_hold_the_rate_exactly() -> None:
    vt = VirtualTime()
    rate = 50
    pacer = Pacer(rate, clock=vt.clock, sleep=vt.sleep)
    admitted = await run_workers(pacer, vt, workers=16, per_worker=40, work_s=0.007)
    n = 16 * 40
    assert len(admitted) == n
    # n admissions, the first at 0, evenly spaced, each full window's worth held back by the
    # guard's margin: admission i at i / rate + (i // rate) * margin
    assert sorted(admitted) == pytest.approx([i / rate + (i // rate) * MARGIN for i in range(n)])
    gaps = [b - a for a, b in itertools.pairwise(sorted(admitted))]
    assert min(gaps) == pytest.approx(1 / rate)
    assert busiest(admitted, 1.0) == rate
    # slots are sums of 1/rate: allow a hair of float error at the window's edge
    assert busiest(admitted, 0.1 - 1e-9) == math.ceil(rate / 10)


async def test_late_wakeups_never_overfill_a_window() -> None:
    """A loop that wakes every sleeper late must not let a second hold more than the limit."""
    vt = VirtualTime()
    vt.lateness = 0.003
    rate = 200
    pacer = Pacer(rate, clock=vt.clock, sleep=vt.sleep)
    admitted = await run_workers(pacer, vt, workers=16, per_worker=50)
    assert busiest(admitted, 1.0) <= rate
    # lateness delays admissions, not the schedule: the rate stays close to the limit
    achieved = (len(admitted) - 1) / (max(admitted) - min(admitted))
    assert achieved >= 0.99 * rate


def catch_up_gap(rate: float) -> float:
    """The pacer's catch-up spacing: a 100 ms window's allowance spread evenly, at least half
    an interval; the first catch-up admission may come a quarter of it after a stall ends."""
    return max(0.5 / rate, 0.1 / (math.ceil(rate / 10) + 1))


@pytest.mark.parametrize("rate", [50, 200])
async def test_a_stalled_loop_catches_up_spread_out_never_at_once(rate: int) -> None:
    """A 200 ms stall makes R/5 slots overdue: they go out spread, a little above the rate."""
    vt = VirtualTime()
    vt.stall = (1.0, 1.2)
    pacer = Pacer(rate, clock=vt.clock, sleep=vt.sleep)
    admitted = sorted(await run_workers(pacer, vt, workers=16, per_worker=rate // 4, work_s=0.003))
    n = len(admitted)
    assert not [t for t in admitted if 1.0 < t < 1.2]  # frozen: nobody admitted
    gap = catch_up_gap(rate)
    after = [t for t in admitted if t >= 1.2]
    # never at once: the old pacer fired every overdue slot at 1.2 in the same instant
    assert after[:3] == pytest.approx([1.2, 1.2 + gap / 4, 1.2 + gap / 4 + gap], abs=1e-3)
    assert min(b - a for a, b in itertools.pairwise(after)) >= gap / 4 * (1 - 1e-6)
    assert busiest(admitted, 0.1) <= math.ceil(rate / 10) + 1
    assert busiest(admitted, 1.0) <= rate
    # what the period's window cannot absorb is forgiven, not fired later as a burst: a second
    # after the stall the schedule is even again, behind by the stall and the guard's margins
    late = [t for t in admitted if t > 2.3]
    assert [b - a for a, b in itertools.pairwise(late)] == pytest.approx(
        [1 / rate] * (len(late) - 1), abs=2 * MARGIN
    )
    assert max(admitted) == pytest.approx((n - 1) / rate + 0.2, abs=(n / rate + 1) * 2 * MARGIN)


async def test_a_short_stall_is_caught_up_spread_and_in_full() -> None:
    """The loop wakes 60 ms late once at 50/s: the three overdue slots go out spread, and the
    schedule is met again within a few hundred milliseconds (nothing lost)."""
    vt = VirtualTime()
    rate = 50
    pacer = Pacer(rate, clock=vt.clock, sleep=vt.sleep)
    vt.stall = (0.5, 0.56)
    admitted = sorted(await run_workers(pacer, vt, workers=8, per_worker=8))
    gap = catch_up_gap(rate)
    caught_up = [t for t in admitted if 0.56 <= t < 0.6]
    expected = [0.56, 0.56 + gap / 4, 0.56 + gap / 4 + gap, 0.56 + gap / 4 + 2 * gap]
    assert caught_up == pytest.approx(expected, abs=1e-3)
    assert busiest(admitted, 0.1) <= 6  # R/10 + 1
    assert max(admitted) == pytest.approx(63 / rate, abs=2 * MARGIN)  # on schedule again


async def test_fractional_rate_per_period() -> None:
    vt = VirtualTime()
    pacer = Pacer(5, per_seconds=2, clock=vt.clock, sleep=vt.sleep)  # 2.5 a second
    admitted = await run_workers(pacer, vt, workers=4, per_worker=5)
    assert sorted(admitted) == pytest.approx([i * 2 / 5 + (i // 5) * 2 * MARGIN for i in range(20)])
    assert busiest(admitted, 2.0) == 5


async def test_slow_down_pushes_every_waiting_slot_back_keeping_spacing() -> None:
    vt = VirtualTime()
    rate = 10
    pacer = Pacer(rate, clock=vt.clock, sleep=vt.sleep)
    admitted: list[float] = []

    async def one() -> None:
        admitted.append(await pacer.acquire())

    tasks = [asyncio.create_task(one()) for _ in range(5)]
    for _ in range(3):
        await asyncio.sleep(0)  # all five reserve slots 0.0 .. 0.4; the first is admitted at 0
    pacer.slow_down(2.0)  # Retry-After: 2 at time 0
    await vt.drive(tasks)
    later = sorted(admitted)[1:]
    # the four waiting slots start at 2.0 and keep their 0.1 s spacing
    assert later == pytest.approx([2.0 + i / rate for i in range(4)])
    # new work after the pause queues behind them
    assert pacer.reserve() == pytest.approx(2.0 + 4 / rate)


async def test_slow_down_when_idle_holds_new_work() -> None:
    vt = VirtualTime()
    pacer = Pacer(10, clock=vt.clock, sleep=vt.sleep)
    await run_workers(pacer, vt, workers=1, per_worker=1)
    vt.now = 5.0
    pacer.slow_down(1.5)
    assert pacer.reserve() == pytest.approx(6.5)


async def test_shorter_slow_down_changes_nothing() -> None:
    vt = VirtualTime()
    pacer = Pacer(10, clock=vt.clock, sleep=vt.sleep)
    pacer.slow_down(3.0)
    pacer.slow_down(1.0)
    assert pacer.reserve() == pytest.approx(3.0)


async def test_cancelled_waiter_gives_up_its_slot_cleanly() -> None:
    vt = VirtualTime()
    pacer = Pacer(10, clock=vt.clock, sleep=vt.sleep)
    first = asyncio.create_task(pacer.acquire())
    second = asyncio.create_task(pacer.acquire())
    await asyncio.sleep(0)
    second.cancel()
    await vt.drive([first])
    with pytest.raises(asyncio.CancelledError):
        await second
    assert first.result() == 0.0
    # the pacer still works, and a pause moves only real waiters
    pacer.slow_down(1.0)
    assert pacer.reserve() == pytest.approx(1.0)


async def test_context_manager_acquires_once() -> None:
    vt = VirtualTime()
    pacer = Pacer(4, clock=vt.clock, sleep=vt.sleep)

    async def two() -> None:
        async with pacer:
            pass
        async with pacer:
            pass

    task = asyncio.create_task(two())
    await vt.drive([task])
    assert vt.now == pytest.approx(0.25)


@pytest.mark.parametrize(
    "requests, per_seconds",
    [
        pytest.param(0, 1, id="zero-rate"),
        pytest.param(-1, 1, id="negative-rate"),
        pytest.param(1, 0, id="zero-period"),
        pytest.param(float("inf"), 1, id="infinite-rate"),
    ],
)
def test_rejects_unusable_rates(requests: float, per_seconds: float) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        Pacer(requests, per_seconds)
