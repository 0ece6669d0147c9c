"""Paired significance of per-query differences: randomisation test, t-test, Holm, Cohen's d_z.

Every function takes the two runs' values of the same queries in the same order, a and b, and
looks at d = b - a. Formulas are in each docstring; degenerate cases (no pairs, no spread) are
defined rather than left to warnings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "cohens_dz",
    "differences",
    "holm",
    "paired_t_test",
    "randomisation_test",
    "randomisation_tests",
]

FloatArray = npt.NDArray[np.float64]

_CHUNK: Final = 2048  # sign vectors per matrix product: bounds memory at ~chunk x n floats
# Differences this small (relative to the values) are float noise, e.g. the same nDCG summed in
# another order by a second evaluation of the same run: they count as no difference at all.
_NOISE: Final = 1e-12


def differences(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> FloatArray:
    """d = b - a, with float noise (|d| <= 1e-12 * max(1, |a|, |b|)) set to exactly 0."""
    left = np.asarray(a, dtype=np.float64)
    right = np.asarray(b, dtype=np.float64)
    d = right - left
    scale = np.maximum(1.0, np.maximum(np.abs(left), np.abs(right)))
    return np.where(np.abs(d) <= _NOISE * scale, 0.0, d)


def _signs(n: int, n_permutations: int, rng: np.random.Generator) -> Iterable[FloatArray]:
    """Sign vectors in chunks: all 2^n of them when that is within budget, else random ones."""
    if 2**n <= n_permutations:
        codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)[None, :]
        yield ((codes & 1) * 2 - 1).astype(np.float64)
        return
    left = n_permutations
    while left > 0:
        size = min(_CHUNK, left)
        yield rng.integers(0, 2, size=(size, n)).astype(np.float64) * 2.0 - 1.0
        left -= size


def _randomisation_columns(
    deltas: FloatArray, *, n_permutations: int, seed: int
) -> npt.NDArray[np.float64]:
    """Two-sided sign-flip p-values for each column of `deltas` (n queries x g tests)."""
    n, g = deltas.shape
    observed = np.abs(deltas.sum(axis=0))
    # Ties count as at least as extreme; the tolerance absorbs summation-order rounding.
    tolerance = 1e-9 * np.maximum(np.abs(deltas).sum(axis=0), 1e-300)
    exact = 2**n <= n_permutations
    extreme = np.zeros(g, dtype=np.int64)
    total = 0
    for signs in _signs(n, n_permutations, np.random.default_rng(seed)):
        flipped = np.abs(signs @ deltas)
        extreme += (flipped >= observed - tolerance).sum(axis=0)
        total += signs.shape[0]
    p = extreme / total if exact else (extreme + 1) / (total + 1)
    p = np.where(observed <= tolerance, 1.0, p)  # no difference at all: nothing to find
    return np.minimum(p, 1.0)


def randomisation_test(
    a: Sequence[float] | FloatArray,
    b: Sequence[float] | FloatArray,
    *,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided paired randomisation (sign-flip) test of mean(b - a) = 0; its p-value.

    With n pairs, exact over all 2^n sign vectors when 2^n <= n_permutations (p = the share of
    sign vectors whose |sum| is at least the observed |sum|), else over n_permutations random
    ones drawn from `seed` (p = (1 + extreme) / (1 + n_permutations)). NaN for no pairs.
    """
    d = differences(a, b)
    if d.size == 0:
        return math.nan
    p = _randomisation_columns(d[:, None], n_permutations=n_permutations, seed=seed)
    return float(p[0])


def paired_t_test(
    a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray
) -> tuple[float, float]:
    """Paired t-test of b against a: (t, two-sided p), t = mean(d) / (sd(d) / sqrt(n)), d = b - a.

    The same numbers as `scipy.stats.ttest_rel(b, a)`, with the degenerate cases defined:
    fewer than 2 pairs gives (nan, nan); no spread gives (0, 1) when every difference is 0 and
    (+-inf, 0) when every query moved by the same non-zero amount.
    """
    d = differences(a, b)
    n = d.size
    if n < 2:
        return math.nan, math.nan
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(abs(mean), 1e-300) or sd == 0.0:
        if mean == 0.0 or abs(mean) < 1e-15:
            return 0.0, 1.0
        return math.copysign(math.inf, mean), 0.0
    t = mean / (sd / math.sqrt(n))
    p = 2.0 * float(stats.t.sf(abs(t), df=n - 1))
    return t, min(p, 1.0)


def cohens_dz(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> float:
    """Cohen's d_z for paired data: mean(d) / sd(d), d = b - a, sd with n - 1.

    NaN with fewer than 2 pairs; 0 when every difference is 0; +-inf when every query moved by
    the same non-zero amount.
    """
    d = differences(a, b)
    if d.size < 2:
        return math.nan
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / sd


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given; NaN stays NaN, not counted.

    With the m finite p-values sorted ascending p_(1) <= ... <= p_(m), the adjusted
    p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)).
    """
    finite = [(p, i) for i, p in enumerate(pvalues) if not math.isnan(p)]
    finite.sort()
    m = len(finite)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, index) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def randomisation_tests(
    arrays: Sequence[tuple[FloatArray, FloatArray]], *, n_permutations: int, seed: int
) -> list[float]:
    """`randomisation_test` of many (a, b) pairs at once: NaN where a pair is empty.

    Tests with the same number of queries share one set of sign vectors (one matrix product).
    """
    by_n: dict[int, list[int]] = {}
    for index, (a, _) in enumerate(arrays):
        by_n.setdefault(a.size, []).append(index)
    result = [math.nan] * len(arrays)
    for n, indices in by_n.items():
        if n == 0:
            continue
        deltas = np.stack([differences(*arrays[i]) for i in indices], axis=1)
        p = _randomisation_columns(deltas, n_permutations=n_permutations, seed=seed)
        for i, value in zip(indices, p.tolist(), strict=True):
            result[i] = float(value)
    return result
