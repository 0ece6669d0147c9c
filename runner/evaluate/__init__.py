"""Evaluation of a run directory: judgments, measures, sweeps, distributions, overlap.

ev = evaluate_run(run_dir)                  # an Evaluation: frozen bundle of polars frames
write_evaluation(ev, run_dir)               # metrics.parquet, distributions.parquet
write_judge_todo(run_dir, "todo.qrels")     # unjudged top hits, to label by hand
"""

from __future__ import annotations

from runner.evaluate.distributions import (
    BINS,
    QUANTILES,
    label_relevance,
    score_histograms,
    score_quantiles,
    threshold_check,
)
from runner.evaluate.evaluation import (
    DISTRIBUTIONS_SCHEMA,
    METRICS_SCHEMA,
    OPERATING_POINTS_SCHEMA,
    OVERLAP_SCHEMA,
    PER_QUERY_SCHEMA,
    QUANTILES_SCHEMA,
    QUERIES_SCHEMA,
    SUMMARY_SCHEMA,
    SWEEP_SCHEMA,
    THRESHOLD_CHECK_SCHEMA,
    UNJUDGED_SCHEMA,
    WINS_SCHEMA,
    Evaluation,
)
from runner.evaluate.judgments import (
    QRELS_SCHEMA,
    load_qrels,
    load_run_judgments,
    parse_qrels,
    resolve_judgments,
)
from runner.evaluate.measures import (
    DEFAULT_MEASURES,
    MEASURE_NAMES,
    Measure,
    compute_measures,
    parse_measure,
    parse_measures,
)
from runner.evaluate.overlap import RBO_P, jaccard_at, mode_overlap, mode_pairs, rbo, wins_losses
from runner.evaluate.run import (
    DISTRIBUTIONS_FILE,
    METRICS_FILE,
    evaluate_run,
    read_metrics,
    write_evaluation,
)
from runner.evaluate.sweep import choose_operating_point, threshold_sweep
from runner.evaluate.unjudged import count_unjudged, judge_todo, write_judge_todo

__all__ = [
    "BINS",
    "DEFAULT_MEASURES",
    "DISTRIBUTIONS_FILE",
    "DISTRIBUTIONS_SCHEMA",
    "MEASURE_NAMES",
    "METRICS_FILE",
    "METRICS_SCHEMA",
    "OPERATING_POINTS_SCHEMA",
    "OVERLAP_SCHEMA",
    "PER_QUERY_SCHEMA",
    "QRELS_SCHEMA",
    "QUANTILES",
    "QUANTILES_SCHEMA",
    "QUERIES_SCHEMA",
    "RBO_P",
    "SUMMARY_SCHEMA",
    "SWEEP_SCHEMA",
    "THRESHOLD_CHECK_SCHEMA",
    "UNJUDGED_SCHEMA",
    "WINS_SCHEMA",
    "Evaluation",
    "Measure",
    "choose_operating_point",
    "compute_measures",
    "count_unjudged",
    "evaluate_run",
    "jaccard_at",
    "judge_todo",
    "label_relevance",
    "load_qrels",
    "load_run_judgments",
    "mode_overlap",
    "mode_pairs",
    "parse_measure",
    "parse_measures",
    "parse_qrels",
    "rbo",
    "read_metrics",
    "resolve_judgments",
    "score_histograms",
    "score_quantiles",
    "threshold_check",
    "threshold_sweep",
    "wins_losses",
    "write_evaluation",
    "write_judge_todo",
]
