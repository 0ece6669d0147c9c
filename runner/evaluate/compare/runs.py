"""Two evaluations compared: paired per-query values, the verdict table, regressions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from runner.errors import UsageError
from runner.evaluate.bootstrap import bootstrap_intervals
from runner.evaluate.compare.rankings import (
    DISPLACEMENT_SCHEMA,
    DRIFT_SCHEMA,
    rank_displacement,
    score_drift,
)
from runner.evaluate.compare.settings import Pairing, SettingPair, pair_settings, pairs_frame
from runner.evaluate.compare.significance import (
    FloatArray,
    cohens_dz,
    differences,
    holm,
    paired_t_test,
    randomisation_tests,
)
from runner.evaluate.evaluation import Evaluation
from runner.evaluate.judgments import load_run_judgments
from runner.evaluate.measures import DEFAULT_MEASURES, parse_measure
from runner.evaluate.run import evaluate_run
from runner.store.reader import RunInfo, RunRef, open_run, scan_hits

__all__ = [
    "COMPARISON_SCHEMA",
    "PAIRED_SCHEMA",
    "Comparison",
    "compare_run_dirs",
    "compare_runs",
    "same_run",
]

_KEYS: Final = ["mode", "setting", "unit", "measure"]

# One row per compared (mode, setting, unit, measure) that both runs measured. `setting` names
# the pair: the setting itself, or "<setting of A> → <setting of B>" across settings.
COMPARISON_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "setting_a": pl.String,  # the setting of run A that was compared
        "setting_b": pl.String,  # the setting of run B it was compared with
        "unit": pl.String,
        "measure": pl.String,
        "cutoff": pl.Float64,  # cutoff_a, else cutoff_b
        "cutoff_a": pl.Float64,
        "cutoff_b": pl.Float64,
        "n_pairs": pl.Int64,  # queries with a value in both runs
        "n_only_a": pl.Int64,  # queries with a value in A only (unpaired)
        "n_only_b": pl.Int64,
        "mean_a": pl.Float64,  # over the paired queries
        "mean_b": pl.Float64,
        "delta": pl.Float64,  # mean_b - mean_a (the mean of the per-query differences)
        "ci_lo": pl.Float64,  # paired bootstrap interval of delta (runner.evaluate.bootstrap)
        "ci_hi": pl.Float64,
        "t": pl.Float64,
        "p_t": pl.Float64,
        "p_randomisation": pl.Float64,
        "p_t_holm": pl.Float64,  # Holm across the measures of one (mode, setting, unit)
        "p_randomisation_holm": pl.Float64,
        "effect_size": pl.Float64,  # Cohen's d_z
        "significant": pl.Boolean,  # p_randomisation_holm < alpha
    }
)

# One row per paired (mode, setting, unit, measure, query); `setting` as in COMPARISON_SCHEMA.
PAIRED_SCHEMA: Final = pl.Schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "setting_a": pl.String,
        "setting_b": pl.String,
        "unit": pl.String,
        "measure": pl.String,
        "query_id": pl.String,
        "value_a": pl.Float64,
        "value_b": pl.Float64,
        "delta": pl.Float64,
    }
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """What `compare_runs` found: polars frames of fixed schemas, and the parameters used.

    `measures` (COMPARISON_SCHEMA) is the verdict table; `per_query` (PAIRED_SCHEMA) the paired
    values; `regressions` the `top_regressions` most negative per-query deltas of each row of
    `measures` (PAIRED_SCHEMA); `displacement` (DISPLACEMENT_SCHEMA) and `drift` (DRIFT_SCHEMA,
    both in `rankings`) are empty unless hits were given. `pairs` are the settings compared
    (`settings.pair_settings`): equal labels unless a `Pairing` said otherwise.
    """

    run_a: str
    run_b: str
    measures: pl.DataFrame
    per_query: pl.DataFrame
    regressions: pl.DataFrame
    displacement: pl.DataFrame
    drift: pl.DataFrame
    alpha: float
    n_permutations: int
    seed: int
    pairs: tuple[SettingPair, ...] = ()

    @property
    def crossed(self) -> bool:
        """Whether some setting of A was compared with a differently named setting of B."""
        return any(p.crossed for p in self.pairs)


def _relabel(frame: pl.DataFrame | pl.LazyFrame, pairs: pl.DataFrame, side: str) -> pl.LazyFrame:
    """The rows of one side's paired settings, `setting` renamed to the pair's label.

    A setting in several pairs (A's 0.4 against B's 0.5 and B's 0.6) is repeated, once a label.
    """
    labels = pairs.lazy().select("mode", pl.col(f"setting_{side}").alias("setting"), "label")
    return (
        frame.lazy()
        .join(labels, on=["mode", "setting"], how="inner")
        .with_columns(pl.col("label").alias("setting"))
        .drop("label")
    )


def _paired_values(
    ev_a: Evaluation, ev_b: Evaluation, measures: Sequence[str] | None, pairs: pl.DataFrame
) -> pl.DataFrame:
    """Full join of the two per-query frames on (mode, pair label, unit, measure, query)."""
    cols = [*_KEYS, "cutoff", "query_id", "value"]
    a = _relabel(ev_a.per_query.select(cols).drop_nulls("value"), pairs, "a").collect()
    b = _relabel(ev_b.per_query.select(cols).drop_nulls("value"), pairs, "b").collect()
    if measures is not None:
        wanted = [str(parse_measure(m)) for m in measures]
        a = a.filter(pl.col("measure").is_in(wanted))
        b = b.filter(pl.col("measure").is_in(wanted))
    # Only rows of (mode, setting, unit, measure) that both runs measured are compared.
    common = a.select(_KEYS).unique().join(b.select(_KEYS).unique(), on=_KEYS, how="inner")
    a = a.join(common, on=_KEYS, how="semi")
    b = b.join(common, on=_KEYS, how="semi")
    return a.join(b, on=[*_KEYS, "query_id"], how="full", coalesce=True, suffix="_b")


def _verdicts(
    joined: pl.DataFrame, pairs: pl.DataFrame, *, n_permutations: int, seed: int, alpha: float
) -> pl.DataFrame:
    """The verdict table (COMPARISON_SCHEMA) from the joined per-query values."""
    paired = joined.filter(pl.col("value").is_not_null() & pl.col("value_b").is_not_null())
    counts = joined.group_by(_KEYS).agg(
        pl.col("cutoff").drop_nulls().first().alias("cutoff_a"),
        pl.col("cutoff_b").drop_nulls().first(),
        (pl.col("value").is_not_null() & pl.col("value_b").is_null()).sum().alias("n_only_a"),
        (pl.col("value").is_null() & pl.col("value_b").is_not_null()).sum().alias("n_only_b"),
    )
    groups = (
        paired.sort("query_id")
        .group_by(_KEYS, maintain_order=True)
        .agg(pl.col("value").alias("a"), pl.col("value_b").alias("b"))
    )
    rows: list[dict[str, object]] = []
    arrays: list[tuple[FloatArray, FloatArray]] = []
    for row in groups.iter_rows(named=True):
        arrays.append(
            (np.asarray(row["a"], dtype=np.float64), np.asarray(row["b"], dtype=np.float64))
        )
        rows.append({key: row[key] for key in _KEYS})
    p_rand = randomisation_tests(arrays, n_permutations=n_permutations, seed=seed)
    intervals = bootstrap_intervals([differences(a, b) for a, b in arrays], seed=seed)
    for row, (a, b), p_r, (lo, hi) in zip(rows, arrays, p_rand, intervals, strict=True):
        t, p_t = paired_t_test(a, b)
        row.update(
            n_pairs=a.size,
            mean_a=float(a.mean()) if a.size else math.nan,
            mean_b=float(b.mean()) if b.size else math.nan,
            # The mean of the per-query differences: mean_b - mean_a without the float noise.
            delta=float(differences(a, b).mean()) if a.size else math.nan,
            ci_lo=lo,
            ci_hi=hi,
            t=t,
            p_t=p_t,
            p_randomisation=p_r,
            effect_size=cohens_dz(a, b),
        )
    table = pl.DataFrame(
        rows,
        schema={
            **{k: pl.String for k in _KEYS},
            "n_pairs": pl.Int64,
            "mean_a": pl.Float64,
            "mean_b": pl.Float64,
            "delta": pl.Float64,
            "ci_lo": pl.Float64,
            "ci_hi": pl.Float64,
            "t": pl.Float64,
            "p_t": pl.Float64,
            "p_randomisation": pl.Float64,
            "effect_size": pl.Float64,
        },
    )
    table = (
        counts.join(table, on=_KEYS, how="left")
        .join(_pair_columns(pairs), on=["mode", "setting"], how="left")
        .with_columns(
            pl.coalesce("cutoff_a", "cutoff_b").alias("cutoff"),
            pl.col("n_pairs").fill_null(0),
        )
    )
    table = _with_holm(table.sort(_KEYS))
    return (
        table.with_columns(
            (pl.col("p_randomisation_holm") < alpha).fill_null(False).alias("significant")
        )
        .select(COMPARISON_SCHEMA.names())
        .cast(COMPARISON_SCHEMA)
    )


def _with_holm(table: pl.DataFrame) -> pl.DataFrame:
    """Add p_t_holm and p_randomisation_holm, Holm across measures within (mode, setting, unit)."""
    family = ["mode", "setting", "unit"]
    parts = []
    for _, part in table.group_by(family, maintain_order=True):
        parts.append(
            part.with_columns(
                pl.Series("p_t_holm", holm(_floats(part["p_t"])), dtype=pl.Float64),
                pl.Series(
                    "p_randomisation_holm", holm(_floats(part["p_randomisation"])), dtype=pl.Float64
                ),
            )
        )
    if not parts:
        return table.with_columns(
            pl.lit(None, dtype=pl.Float64).alias("p_t_holm"),
            pl.lit(None, dtype=pl.Float64).alias("p_randomisation_holm"),
        )
    return pl.concat(parts)


def _pair_columns(pairs: pl.DataFrame) -> pl.DataFrame:
    """mode, setting (the pair's label), setting_a, setting_b: to join onto compared rows."""
    return pairs.select("mode", pl.col("label").alias("setting"), "setting_a", "setting_b")


def _floats(series: pl.Series) -> list[float]:
    return [math.nan if v is None else float(v) for v in series.to_list()]


def compare_runs(
    ev_a: Evaluation,
    ev_b: Evaluation,
    *,
    measures: Sequence[str] | None = None,
    hits_a: pl.LazyFrame | pl.DataFrame | None = None,
    hits_b: pl.LazyFrame | pl.DataFrame | None = None,
    n_permutations: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
    top_regressions: int = 5,
    depth: int = 100,
    pairing: Pairing | None = None,
) -> Comparison:
    """Compare run B (the candidate) with run A (the baseline); see the module docstring.

    `measures` restricts the comparison (default: every measure both evaluations have).
    `hits_a` / `hits_b` (the runs' hits) add rank displacement and score drift. The same
    seed gives the same p-values. `pairing` compares settings that differ (default: each
    (mode, setting) with the same one in B); A and B may then be one run. Raises `UsageError`
    for a pairing that names a mode or setting a run does not have.

    >>> cmp = compare_runs(evaluate_run(a), evaluate_run(b), hits_a=..., hits_b=...)
    >>> cmp.measures.filter(pl.col("significant"))
    >>> compare_runs(ev, ev, pairing=Pairing(settings=(("tst=0.4", "tst=0.6"),)))
    """
    if n_permutations < 1:
        raise UsageError(f"n_permutations must be at least 1, got {n_permutations}")
    pairs = pair_settings(ev_a, ev_b, pairing)
    pair_table = pairs_frame(pairs)
    joined = _paired_values(ev_a, ev_b, measures, pair_table)
    table = _verdicts(joined, pair_table, n_permutations=n_permutations, seed=seed, alpha=alpha)
    paired = joined.filter(pl.col("value").is_not_null() & pl.col("value_b").is_not_null())
    per_query = (
        paired.select(*_KEYS, "query_id", pl.col("value").alias("value_a"), "value_b")
        .with_columns(
            pl.Series(
                "delta",
                differences(paired["value"].to_numpy(), paired["value_b"].to_numpy()),
                dtype=pl.Float64,
            )
        )
        .join(_pair_columns(pair_table), on=["mode", "setting"], how="left")
        .sort([*_KEYS, "query_id"])
        .select(PAIRED_SCHEMA.names())
        .cast(PAIRED_SCHEMA)
    )
    regressions = (
        per_query.filter(pl.col("delta") < 0)
        .sort([*_KEYS, "delta", "query_id"])
        .group_by(_KEYS, maintain_order=True)
        .head(top_regressions)
        .select(PAIRED_SCHEMA.names())
    )
    if hits_a is not None and hits_b is not None:
        if pairing is not None and not pairing.is_default:
            # Each run's hits of its paired settings only, under the pairs' labels, so that
            # rankings and scores are matched the way the measures were.
            hits_a, hits_b = _relabel(hits_a, pair_table, "a"), _relabel(hits_b, pair_table, "b")
        judged = set(_judged_queries(ev_a)) & set(_judged_queries(ev_b))
        displacement = rank_displacement(hits_a, hits_b, depth=depth, judged=judged)
        drift = score_drift(hits_a, hits_b)
    else:
        displacement = pl.DataFrame(schema=DISPLACEMENT_SCHEMA)
        drift = pl.DataFrame(schema=DRIFT_SCHEMA)
    return Comparison(
        run_a=ev_a.run_id or "A",
        run_b=ev_b.run_id or "B",
        measures=table,
        per_query=per_query,
        regressions=regressions,
        displacement=displacement,
        drift=drift,
        alpha=alpha,
        n_permutations=n_permutations,
        seed=seed,
        pairs=pairs,
    )


def compare_run_dirs(
    run_a: RunRef,
    run_b: RunRef,
    *,
    measures: Sequence[str] | None = None,
    extra_judgments: Sequence[Path | str] | None = None,
    n_permutations: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
    top_regressions: int = 5,
    pairing: Pairing | None = None,
    shared_pool: bool = True,
) -> tuple[Evaluation, Evaluation, Comparison]:
    """Evaluate two run directories and compare them, hits included; returns (ev_a, ev_b, cmp).

    `extra_judgments` (qrels files) are added to both runs' own judgments. With `shared_pool`
    each run is also judged with the other's media-level qrels, so that both are scored
    against the same relevant set: label judgments are pooled from a run's own hits, and a run
    whose other modes returned more labelled media would otherwise have a larger |R| for the
    same query (lower recall and AP for identical rankings). `pairing` as in `compare_runs`;
    run_a and run_b may be the same directory (evaluated once), e.g. to compare two of its
    settings. Raises `RunError` for a directory that is not a readable run, `UsageError` for
    a pairing the runs cannot meet.
    """
    dirs = (open_run(run_a), open_run(run_b))
    same = same_run(dirs[0], dirs[1])
    # Each run's judgments are resolved once; with a shared pool both are scored against it.
    pool = _shared_pool(dirs, extra_judgments) if shared_pool and not same else None
    wanted = DEFAULT_MEASURES if measures is None else measures
    evaluations = [
        evaluate_run(run, measures=wanted, extra_judgments=extra_judgments, qrels=pool)
        for run in (dirs[:1] if same else dirs)
    ]
    ev_a, ev_b = evaluations[0], evaluations[-1]
    comparison = compare_runs(
        ev_a,
        ev_b,
        measures=measures,
        hits_a=scan_hits(dirs[0]),
        hits_b=scan_hits(dirs[1]),
        n_permutations=n_permutations,
        seed=seed,
        alpha=alpha,
        top_regressions=top_regressions,
        pairing=pairing,
    )
    return ev_a, ev_b, comparison


def same_run(a: RunInfo, b: RunInfo) -> bool:
    """Whether two opened runs are one and the same run directory (however each was named)."""
    if a.location.remote or b.location.remote:
        return a.location.uri.rstrip("/") == b.location.uri.rstrip("/")
    return a.path.resolve() == b.path.resolve()


def _shared_pool(runs: Sequence[RunInfo], extra: Sequence[Path | str] | None) -> pl.DataFrame:
    """Both runs' media-level qrels (their own plus `extra`), merged by the maximum grade."""
    return (
        pl.concat([load_run_judgments(run, extra)[1] for run in runs])
        .group_by("query_id", "media_id")
        .agg(pl.col("grade").max())
        .sort("query_id", "media_id")
    )


def _judged_queries(ev: Evaluation) -> list[str]:
    return ev.queries.filter(pl.col("judged"))["query_id"].to_list()
