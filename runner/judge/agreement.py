"""Agreement between raters: Cohen's κ for two, Krippendorff's α (ordinal) for two or more.

Both take the raters' standing labels (`rater, query_id, media_id, grade`) and are computed over
the items at least two raters graded (α) or both raters graded (κ), per query and overall. A
value is None where it is undefined: fewer than two such items, or no variation at all to
disagree about (expected disagreement 0).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

__all__ = ["Agreement", "PairKappa", "agreement", "cohen_kappa", "krippendorff_alpha_ordinal"]


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Cohen's κ of two raters' grades of the same items: (p_o − p_e) / (1 − p_e).

    p_o is the share of items on which they agree; p_e = Σ_c p_a(c)·p_b(c), the agreement
    expected by chance from each rater's own distribution of grades.
    """
    if len(a) != len(b):
        raise ValueError("cohen_kappa: both raters must grade the same items")
    n = len(a)
    if n < 2:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha_ordinal(units: Sequence[Sequence[int]]) -> float | None:
    """Krippendorff's α with the ordinal metric: 1 − D_o / D_e.

    `units` holds, per item, the grades its raters gave (any number; items with fewer than two
    are not pairable and left out). From the coincidence matrix o_ck = Σ_u (pairs (c, k) in u) /
    (m_u − 1), with n_c = Σ_k o_ck and n = Σ n_c, the ordinal distance is
    δ²_ck = (Σ_{g from c to k} n_g − (n_c + n_k)/2)², and
    α = 1 − (n − 1) · Σ o_ck δ²_ck / Σ_{c,k} n_c n_k δ²_ck (Krippendorff 2011).
    """
    pairable = [list(u) for u in units if len(u) >= 2]
    coincidence: dict[tuple[int, int], float] = defaultdict(float)
    for grades in pairable:
        m = len(grades)
        for i, c in enumerate(grades):
            for j, k in enumerate(grades):
                if i != j:
                    coincidence[(c, k)] += 1.0 / (m - 1)
    values = sorted({c for c, _ in coincidence})
    n_c = {c: sum(coincidence.get((c, k), 0.0) for k in values) for c in values}
    n = sum(n_c.values())
    if n <= 1 or len(values) < 2:
        return None
    position = {c: i for i, c in enumerate(values)}

    def delta2(c: int, k: int) -> float:
        lo, hi = sorted((position[c], position[k]))
        between = sum(n_c[values[g]] for g in range(lo, hi + 1))
        return float((between - (n_c[c] + n_c[k]) / 2.0) ** 2)

    observed = sum(o * delta2(c, k) for (c, k), o in coincidence.items())
    expected = sum(n_c[c] * n_c[k] * delta2(c, k) for c in values for k in values)
    if expected == 0.0:
        return None
    return 1.0 - (n - 1) * observed / expected


@dataclass(frozen=True, slots=True)
class PairKappa:
    """Cohen's κ of two raters over the items both graded."""

    rater_a: str
    rater_b: str
    n_items: int
    kappa: float | None


@dataclass(frozen=True, slots=True)
class Agreement:
    """Agreement overall and per query; `kappa` only when exactly two raters graded.

    `pairs` holds κ for every pair of raters that graded an item in common (with two raters,
    the one pair's κ is `kappa`): with three or more, it shows who disagrees with whom.
    """

    raters: tuple[str, ...]
    n_items: int  # items graded by at least two raters
    kappa: float | None
    alpha: float | None
    per_query: pl.DataFrame  # query_id, n_items, kappa, alpha
    pairs: tuple[PairKappa, ...] = ()


def _units(standing: pl.DataFrame) -> pl.DataFrame:
    return (
        standing.group_by("query_id", "media_id")
        .agg(pl.col("rater"), pl.col("grade"))
        .filter(pl.col("grade").list.len() >= 2)
        .sort("query_id", "media_id")
    )


def _measure(
    units: Sequence[tuple[Sequence[str], Sequence[int]]], pair: tuple[str, str] | None
) -> tuple[float | None, float | None]:
    alpha = krippendorff_alpha_ordinal([grades for _, grades in units])
    if pair is None:
        return None, alpha
    return _pair(units, pair).kappa, alpha


def _pair(units: Sequence[tuple[Sequence[str], Sequence[int]]], pair: tuple[str, str]) -> PairKappa:
    both: list[Mapping[str, int]] = [
        dict(zip(raters, grades, strict=True))
        for raters, grades in units
        if pair[0] in raters and pair[1] in raters
    ]
    kappa = cohen_kappa([u[pair[0]] for u in both], [u[pair[1]] for u in both])
    return PairKappa(pair[0], pair[1], len(both), kappa)


def agreement(standing: pl.DataFrame) -> Agreement:
    """Agreement of the raters in `standing` (see the module docstring)."""
    raters = tuple(sorted(set(standing["rater"].to_list())))
    pair = (raters[0], raters[1]) if len(raters) == 2 else None
    units = _units(standing)
    rows: dict[str, list[tuple[list[str], list[int]]]] = {}
    for query_id, raters_of, grades in units.select("query_id", "rater", "grade").iter_rows():
        rows.setdefault(query_id, []).append((raters_of, grades))
    per_query = pl.DataFrame(
        [
            (query_id, len(items), *_measure(items, pair))
            for query_id, items in sorted(rows.items())
        ],
        schema={
            "query_id": pl.String,
            "n_items": pl.Int64,
            "kappa": pl.Float64,
            "alpha": pl.Float64,
        },
        orient="row",
    )
    everything = [item for items in rows.values() for item in items]
    kappa, alpha = _measure(everything, pair)
    pairs = (_pair(everything, two) for two in itertools.combinations(raters, 2))
    shared = tuple(p for p in pairs if p.n_items)
    return Agreement(raters, len(everything), kappa, alpha, per_query, shared)
