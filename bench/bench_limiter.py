"""Which rate limiter meets the runner's bar? asyncio-throttle, aiolimiter and vlbench's Pacer.

The bar (issue 4): over a run the achieved rate is >= 0.99 of the limit, no sliding one-second
window holds more than the limit, and admissions are spread evenly (no burst at the top of a
window). Each candidate is driven by 16 workers that acquire, then spend a few milliseconds on a
simulated request, for a few seconds at R=50 and R=200 requests a second; every admission time
is recorded the moment `acquire()` returns.

Printed per candidate and rate:
- achieved/limit: admissions in [start, start + T) divided by R*T;
- max 1 s / limit: the busiest sliding one-second window [t, t + 1) over R;
- max 100 ms / (R/10): the busiest sliding 100 ms window over its even share (1.0 = smooth);
- gap CV: coefficient of variation of the gaps between admissions (0 = perfectly even).

Run: .venv/bin/python bench/bench_limiter.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiolimiter import AsyncLimiter
from asyncio_throttle.throttler import Throttler

from runner.api.pacer import Pacer

WORKERS = 16
RATES = (50, 200)

Acquire = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Figures:
    """What one candidate achieved at one rate."""

    achieved: float
    max_second: float
    max_tenth: float
    gap_cv: float

    def meets_bar(self) -> bool:
        """Achieved >= 0.99 of the limit, no second over it, no 100 ms window over 2x its share."""
        return self.achieved >= 0.99 and self.max_second <= 1.0 and self.max_tenth <= 2.0


def busiest(times: list[float], width: float) -> int:
    """The most admissions in any half-open window [t, t + width) starting at an admission."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, bisect.bisect_left(times, start + width) - i)
    return best


def figures(times: list[float], start: float, seconds: float, rate: float) -> Figures:
    """Reduce admission times to the four figures printed."""
    times = sorted(times)
    inside = [t for t in times if start <= t < start + seconds]
    gaps = [b - a for a, b in zip(inside, inside[1:], strict=False)]
    mean_gap = statistics.fmean(gaps)
    return Figures(
        achieved=len(inside) / (rate * seconds),
        max_second=busiest(inside, 1.0) / rate,
        max_tenth=busiest(inside, 0.1) / (rate / 10),
        gap_cv=statistics.pstdev(gaps) / mean_gap,
    )


async def drive(acquire: Acquire, seconds: float, rng: random.Random) -> tuple[list[float], float]:
    """Run WORKERS workers against one limiter for `seconds`; return admission times and start."""
    times: list[float] = []
    start = time.monotonic()
    deadline = start + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            await acquire()
            times.append(time.monotonic())
            await asyncio.sleep(rng.uniform(0.002, 0.012))  # the request itself

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return times, start


def candidates(rate: int) -> dict[str, Acquire]:
    """Fresh limiters for one measurement, by the name printed."""
    throttler = Throttler(rate_limit=rate, period=1.0)
    bucket = AsyncLimiter(rate, 1)
    drip = AsyncLimiter(1, 1 / rate)
    pacer = Pacer(rate, 1.0)
    return {
        "asyncio-throttle Throttler(R, 1)": throttler.acquire,
        "aiolimiter AsyncLimiter(R, 1)": bucket.acquire,
        "aiolimiter AsyncLimiter(1, 1/R)": drip.acquire,
        "vlbench Pacer(R, 1)": pacer.acquire,
    }


async def main(seconds: float) -> None:
    rng = random.Random(7)
    print(f"{WORKERS} workers, {seconds:g} s per measurement")
    header = f"{'limiter':34} {'R':>4} {'achieved/limit':>15} {'max 1s/limit':>13}"
    print(header + f" {'max 100ms/(R/10)':>17} {'gap CV':>7}  bar")
    verdicts: dict[str, bool] = {}
    for rate in RATES:
        for name, acquire in candidates(rate).items():
            times, start = await drive(acquire, seconds, rng)
            f = figures(times, start, seconds, rate)
            ok = f.meets_bar()
            verdicts[name] = verdicts.get(name, True) and ok
            print(
                f"{name:34} {rate:>4} {f.achieved:>15.4f} {f.max_second:>13.3f}"
                f" {f.max_tenth:>17.2f} {f.gap_cv:>7.3f}  {'meets' if ok else 'fails'}"
            )
    kept = [name for name, ok in verdicts.items() if ok]
    print("meets the bar at every rate: " + (", ".join(kept) if kept else "none"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    asyncio.run(main(parser.parse_args().seconds))
