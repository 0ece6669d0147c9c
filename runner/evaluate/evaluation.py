"""The result of evaluating one run: a frozen bundle of polars DataFrames, and their columns.

`evaluate_run` builds an `Evaluation`; `write_evaluation` stores it in the run directory; the
report renders it and `compare` diffs two of them. Every frame has exactly the columns of its
schema below (in that order), so a reader can rely on them even when a frame is empty.

Vocabulary shared by the frames:
- `mode`, `setting`: one system of the run (a mode of the suite at one setting of its sweep);
  `cutoff` is the score cut-off that setting asked for (null for fts).
- `unit`: "media" (each preview is a ranked item) or "cluster" (each returned cluster is one).
- `measure`: ir_measures spelling, e.g. "nDCG@10" (see `runner.evaluate.measures`).
- `judged`: the query has at least one judgment; measures that need judgments are null for
  queries without, and means are taken over judged queries only (`NumRet`, `Judged@k` over all).
- `relevance`: "relevant" (grade >= 1), "non_relevant" (judged, grade < 1), "unjudged".
- `scale`: "raw" (the API's score) or "normalised" (higher is better: see
  `runner.schema.normalise_score`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import polars as pl

from runner.evaluate.judgments import QRELS_SCHEMA

__all__ = [
    "DISTRIBUTIONS_SCHEMA",
    "METRICS_SCHEMA",
    "OPERATING_POINTS_SCHEMA",
    "OVERLAP_SCHEMA",
    "PER_QUERY_SCHEMA",
    "QUANTILES_SCHEMA",
    "QUERIES_SCHEMA",
    "SUMMARY_SCHEMA",
    "SWEEP_SCHEMA",
    "THRESHOLD_CHECK_SCHEMA",
    "UNJUDGED_SCHEMA",
    "WINS_SCHEMA",
    "Evaluation",
]


def _schema(columns: Mapping[str, pl.DataType | type[pl.DataType]]) -> pl.Schema:
    return pl.Schema(columns)


# One row per (mode, setting, unit, query, measure).
PER_QUERY_SCHEMA: Final = _schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "cutoff": pl.Float64,
        "unit": pl.String,
        "query_id": pl.String,
        "measure": pl.String,
        "value": pl.Float64,  # null when the measure needs judgments and the query has none
        "judged": pl.Boolean,
    }
)

# One row per (mode, setting, unit, measure): the mean over the queries it is defined on.
SUMMARY_SCHEMA: Final = _schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "cutoff": pl.Float64,
        "unit": pl.String,
        "measure": pl.String,
        "value": pl.Float64,  # null when no query is judged
        "n_queries": pl.Int64,  # how many queries the mean is over
    }
)

# metrics.parquet: per_query and summary stacked; a summary row has query_id null, judged null.
METRICS_SCHEMA: Final = _schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "cutoff": pl.Float64,
        "unit": pl.String,
        "query_id": pl.String,
        "measure": pl.String,
        "value": pl.Float64,
        "judged": pl.Boolean,
        "n_queries": pl.Int64,
    }
)

# The precision-recall curve of each mode over its threshold grid (set measures, macro).
SWEEP_SCHEMA: Final = _schema(
    {
        "mode": pl.String,
        "cutoff": pl.Float64,
        "setting": pl.String,
        "unit": pl.String,
        "precision": pl.Float64,  # mean over judged queries of |relevant returned| / |returned|
        "recall": pl.Float64,  # mean over judged queries of |relevant returned| / |relevant|
        "f1": pl.Float64,  # 2PR / (P + R) of the two means above
        "hits": pl.Int64,  # items returned in this setting, over all queries
        "n_queries": pl.Int64,  # judged queries the means are over
    }
)

# The setting of each (mode, unit) that maximises the objective; setting null when none qualifies.
OPERATING_POINTS_SCHEMA: Final = _schema(
    {
        "mode": pl.String,
        "unit": pl.String,
        "objective": pl.String,  # "f1" or "precision@recall>=0.5"
        "setting": pl.String,
        "cutoff": pl.Float64,
        "value": pl.Float64,  # the objective's value at that setting
        "precision": pl.Float64,
        "recall": pl.Float64,
        "f1": pl.Float64,
    }
)

# Histograms with fixed bins per (score_type, scale); bins with count 0 are left out.
DISTRIBUTIONS_SCHEMA: Final = _schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "cutoff": pl.Float64,
        "score_type": pl.String,
        "relevance": pl.String,
        "scale": pl.String,
        "bin_lo": pl.Float64,  # -inf for the underflow bin
        "bin_hi": pl.Float64,  # +inf for the overflow bin
        "count": pl.Int64,
    }
)

QUANTILES_SCHEMA: Final = _schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "cutoff": pl.Float64,
        "score_type": pl.String,
        "relevance": pl.String,
        "scale": pl.String,
        "q": pl.Float64,  # 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95
        "value": pl.Float64,
    }
)

# One row per (mode, setting) that asked for a cut-off.
THRESHOLD_CHECK_SCHEMA: Final = _schema(
    {
        "mode": pl.String,
        "setting": pl.String,
        "cutoff": pl.Float64,
        "score_type": pl.String,
        "direction": pl.String,  # the contract's reading: "<=" (distances) or ">=" (similarities)
        "n_hits": pl.Int64,
        "n_violations": pl.Int64,  # hits outside the cut-off in the contract's reading
        "examples": pl.List(pl.String),  # up to 5 media ids of violations, worst first
        "n_violations_opposite": pl.Int64,  # violations if the cut-off meant the other direction
        "opposite_fits_better": pl.Boolean,
    }
)

# fts versus semantic (any two modes), per query at each pair of settings (media level).
OVERLAP_SCHEMA: Final = _schema(
    {
        "mode_a": pl.String,
        "mode_b": pl.String,
        "setting_a": pl.String,
        "setting_b": pl.String,
        "query_id": pl.String,
        "k": pl.Int64,  # depth of jaccard
        "n_a": pl.Int64,  # media returned by a
        "n_b": pl.Int64,
        "jaccard": pl.Float64,  # |A@k & B@k| / |A@k | B@k|; null when both are empty
        "rbo": pl.Float64,  # extrapolated RBO, p = 0.9, over the whole lists; null when both empty
        "only_a": pl.Int64,  # media returned by a and not by b
        "only_b": pl.Int64,
        "only_a_examples": pl.List(pl.String),  # up to 3, best-ranked first
        "only_b_examples": pl.List(pl.String),
    }
)

# Per-query wins / losses / ties of mode a against mode b on one measure (judged queries).
WINS_SCHEMA: Final = _schema(
    {
        "mode_a": pl.String,
        "mode_b": pl.String,
        "setting_a": pl.String,
        "setting_b": pl.String,
        "unit": pl.String,
        "measure": pl.String,
        "wins": pl.Int64,  # queries where a > b
        "losses": pl.Int64,
        "ties": pl.Int64,
        "n_queries": pl.Int64,
    }
)

UNJUDGED_SCHEMA: Final = _schema(
    {
        "query_id": pl.String,
        "mode": pl.String,
        "setting": pl.String,
        "k": pl.Int64,
        "n_hits": pl.Int64,  # media in the top k
        "n_unjudged": pl.Int64,  # of those, without a judgment
    }
)

# The queries of the run with their judgment coverage.
QUERIES_SCHEMA: Final = _schema(
    {
        "query_id": pl.String,
        "query_text": pl.String,
        "judged": pl.Boolean,
        "n_judged": pl.Int64,  # judged media (pooled for label judgments)
        "n_relevant": pl.Int64,  # of those, grade >= 1
    }
)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything `evaluate_run` measured on one run; each field a frame of the schema above.

    Frames: `per_query` (PER_QUERY_SCHEMA), `summary`, `sweep`, `operating_points`,
    `distributions`, `quantiles`, `threshold_check`, `overlap`, `wins`, `unjudged`, `queries`.
    `measures` are the measure names in the order asked for; `run_id` is the manifest's;
    `qrels` the resolved judgments (`query_id, media_id, grade`) the measures were taken with.
    """

    run_id: str | None
    measures: tuple[str, ...]
    per_query: pl.DataFrame
    summary: pl.DataFrame
    sweep: pl.DataFrame
    operating_points: pl.DataFrame
    distributions: pl.DataFrame
    quantiles: pl.DataFrame
    threshold_check: pl.DataFrame
    overlap: pl.DataFrame
    wins: pl.DataFrame
    unjudged: pl.DataFrame
    queries: pl.DataFrame
    # The media-level judgments the measures used (QRELS_SCHEMA), resolved once by evaluate_run:
    # the report marks hits relevant from these, never by resolving the judgments again.
    qrels: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=QRELS_SCHEMA))
