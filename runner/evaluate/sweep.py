"""Threshold sweeps: each mode's precision-recall curve over its settings, and the best setting.

Precision and recall here are SET measures over everything a setting returned (no rank cut-off:
a score threshold decides the set), MACRO-averaged: the mean over the judged queries of the
suite of each query's precision |rel & ret| / |ret| and recall |rel & ret| / |rel|. A query that
returned nothing at a setting has precision 0 and recall 0 there (an empty answer is penalised,
not skipped), so every setting of a mode is averaged over the same queries. F1 is the harmonic
mean of the two macro means, 2PR / (P + R), so a curve point and its F1 agree. Recall of label
judgments is against the run's pool (see `runner.evaluate.judgments`).
"""

from __future__ import annotations

import re
from typing import Final

import polars as pl

from runner.errors import UsageError
from runner.evaluate.evaluation import OPERATING_POINTS_SCHEMA, SWEEP_SCHEMA
from runner.evaluate.measures import Measure

__all__ = ["SWEEP_MEASURES", "choose_operating_point", "threshold_sweep"]

# The per-query measures a sweep is built from.
SWEEP_MEASURES: Final = (Measure("P"), Measure("R"), Measure("NumRet"))

_MIN_RECALL: Final = re.compile(r"^precision@recall>=([0-9]*\.?[0-9]+)$")


def threshold_sweep(per_query: pl.DataFrame) -> pl.DataFrame:
    """The sweep (SWEEP_SCHEMA) from per-query "P", "R" and "NumRet" values (PER_QUERY_SCHEMA).

    One row per (mode, setting, unit), ordered by mode, unit and cut-off. `hits` counts the
    items returned over all queries, judged or not; `n_queries` the judged queries averaged.
    """
    keys = ["mode", "setting", "cutoff", "unit"]
    if per_query.is_empty():
        return pl.DataFrame(schema=SWEEP_SCHEMA)
    wide = per_query.pivot(on="measure", index=[*keys, "query_id", "judged"], values="value")
    precision, recall = pl.col("precision"), pl.col("recall")
    sweep = (
        wide.group_by(keys)
        .agg(
            pl.col("P").filter(pl.col("judged")).mean().alias("precision"),
            pl.col("R").filter(pl.col("judged")).mean().alias("recall"),
            pl.col("NumRet").sum().cast(pl.Int64).alias("hits"),
            pl.col("judged").sum().cast(pl.Int64).alias("n_queries"),
        )
        .with_columns(
            pl.when(precision + recall > 0)
            .then(2 * precision * recall / (precision + recall))
            .otherwise(pl.when(precision.is_not_null()).then(0.0))
            .alias("f1")
        )
    )
    return (
        sweep.select(SWEEP_SCHEMA.names())
        .cast(SWEEP_SCHEMA)
        .sort("mode", "unit", "cutoff", "setting", nulls_last=True)
    )


def choose_operating_point(sweep: pl.DataFrame, objective: str = "f1") -> pl.DataFrame:
    """The setting of each (mode, unit) that maximises `objective` (OPERATING_POINTS_SCHEMA).

    `objective` is "f1" or "precision@recall>=X" (the highest precision among the settings
    whose recall is at least X). Ties go to the higher recall, then the higher precision, then
    the setting name. A (mode, unit) where no setting qualifies gets a row with setting null.

    >>> choose_operating_point(ev.sweep, "precision@recall>=0.5")  # doctest: +SKIP
    """
    objective = objective.strip().replace(" ", "")
    if objective == "f1":
        value = pl.col("f1")
        eligible = pl.col("f1").is_not_null()
    elif (match := _MIN_RECALL.match(objective)) is not None:
        value = pl.col("precision")
        eligible = pl.col("precision").is_not_null() & (pl.col("recall") >= float(match.group(1)))
    else:
        raise UsageError(f"unknown objective {objective!r}: use 'f1' or 'precision@recall>=0.5'")
    best = (
        sweep.filter(eligible)
        .with_columns(value.alias("value"))
        .sort(["value", "recall", "precision", "setting"], descending=[True, True, True, False])
        .group_by("mode", "unit", maintain_order=True)
        .first()
    )
    groups = sweep.select("mode", "unit").unique()
    points = groups.join(best, on=["mode", "unit"], how="left").with_columns(
        pl.lit(objective).alias("objective")
    )
    return (
        points.select(OPERATING_POINTS_SCHEMA.names())
        .cast(OPERATING_POINTS_SCHEMA)
        .sort("mode", "unit")
    )
