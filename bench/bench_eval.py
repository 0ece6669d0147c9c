"""Time to evaluate 10,000 queries x 100 hits x 5 settings: vlbench (polars) vs ranx vs pytrec_eval.

Run: .venv/bin/python bench/bench_eval.py [--queries 10000] [--depth 100] [--settings 5]

The same seeded synthetic data (graded judgments 0..3, about 30 judged documents a query) goes
to all three, with the same measures: P@10, nDCG@10, AP, RR, R@100. vlbench starts from polars
frames (a run is Parquet) and the list of rankings asked for (as `evaluate_run` has it from
`requests.parquet`); the peers from their native inputs, whose construction from those frames
is timed separately ("+ conversion"). Wall and CPU seconds are both printed: on a shared
machine CPU seconds are the steadier figure (pytrec_eval and ranx's conversion are
single-threaded; polars and ranx's kernels use every core). ranx compiles its kernels with
numba on first use (then caches them on disk): "cold" is that first use (on a tiny run) plus
the full evaluation, "warm" the full evaluation once compiled. Per-setting means of the three
are checked to agree to 1e-9.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pytrec_eval
from ranx import Qrels, Run, evaluate

from runner.evaluate import compute_measures

MEASURES = ["P@10", "nDCG@10", "AP", "RR", "R@100"]
TREC = {
    "P@10": "P_10",
    "nDCG@10": "ndcg_cut_10",
    "AP": "map",
    "RR": "recip_rank",
    "R@100": "recall_100",
}
RANX = {
    "P@10": "precision@10",
    "nDCG@10": "ndcg@10",
    "AP": "map",
    "RR": "mrr",
    "R@100": "recall@100",
}
UNIVERSE = 300  # documents a query's rankings and judgments are drawn from
JUDGED = 30

T = TypeVar("T")


class Clock:
    """Wall and CPU seconds of one call (CPU: this process, all threads)."""

    def __init__(self, wall: float = 0.0, cpu: float = 0.0) -> None:
        self.wall, self.cpu = wall, cpu

    def __add__(self, other: Clock) -> Clock:
        return Clock(self.wall + other.wall, self.cpu + other.cpu)


def timed(fn: Callable[[], T]) -> tuple[T, Clock]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, Clock(time.perf_counter() - wall, time.process_time() - cpu)


def make_data(
    n_queries: int, depth: int, n_settings: int, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rankings (`mode, setting, query_id, pool, doc, rank`) and judgments (`query_id, pool,
    doc, grade`), seeded."""
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(UNIVERSE, dtype=np.int32), (n_queries, 1))
    query = pl.format("q{}", pl.col("q").cast(pl.String).str.zfill(5))
    doc = pl.format("d{}", pl.col("d").cast(pl.String).str.zfill(3))
    frames = []
    for s in range(n_settings):
        order = rng.permuted(base, axis=1)[:, :depth]  # each query: `depth` distinct docs
        frames.append(
            pl.DataFrame(
                {
                    "q": np.repeat(np.arange(n_queries, dtype=np.int32), depth),
                    "d": order.ravel(),
                    "rank": np.tile(np.arange(1, depth + 1, dtype=np.int32), n_queries),
                }
            ).select(
                pl.lit("bench").alias("mode"),
                pl.lit(f"s{s}").alias("setting"),
                query.alias("query_id"),
                pl.lit("").alias("pool"),
                doc.alias("doc"),
                "rank",
            )
        )
    judged = rng.permuted(base, axis=1)[:, :JUDGED]
    qrels = pl.DataFrame(
        {
            "q": np.repeat(np.arange(n_queries, dtype=np.int32), JUDGED),
            "d": judged.ravel(),
            "grade": rng.choice(
                np.array([0, 0, 1, 1, 2, 3], dtype=np.int32), size=n_queries * JUDGED
            ),
        }
    ).select(query.alias("query_id"), pl.lit("").alias("pool"), doc.alias("doc"), "grade")
    return pl.concat(frames), qrels


def to_dicts(ranked: pl.DataFrame, qrels: pl.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per setting {query: {doc: score}} (score falls with rank) and {query: {doc: grade}}."""
    runs: dict[str, Any] = {}
    lists = (
        ranked.with_columns((1000.0 - pl.col("rank")).alias("score"))
        .group_by("setting", "query_id", maintain_order=True)
        .agg("doc", "score")
    )
    for setting, query_id, docs, scores in lists.iter_rows():
        runs.setdefault(setting, {})[query_id] = dict(zip(docs, scores, strict=True))
    judged_lists = qrels.group_by("query_id", maintain_order=True).agg("doc", "grade")
    judged = {
        q: dict(zip(docs, grades, strict=True)) for q, docs, grades in judged_lists.iter_rows()
    }
    return runs, judged


def ours(
    ranked: pl.DataFrame, qrels: pl.DataFrame, cells: pl.DataFrame
) -> dict[str, dict[str, float]]:
    values = compute_measures(ranked, qrels, MEASURES, cells=cells)
    means = values.group_by("setting", "measure").agg(pl.col("value").mean())
    out: dict[str, dict[str, float]] = {}
    for setting, measure, value in means.iter_rows():
        out.setdefault(setting, {})[measure] = value
    return out


def with_pytrec(runs: dict[str, Any], judged: dict[str, Any]) -> dict[str, dict[str, float]]:
    evaluator = pytrec_eval.RelevanceEvaluator(
        judged, {"P.10", "ndcg_cut.10", "map", "recip_rank", "recall.100"}
    )
    out = {}
    for setting, run in runs.items():
        per_query = evaluator.evaluate(run)
        out[setting] = {
            m: float(np.mean([v[TREC[m]] for v in per_query.values()])) for m in MEASURES
        }
    return out


def ranx_inputs(runs: dict[str, Any], judged: dict[str, Any]) -> tuple[dict[str, Run], Qrels]:
    return {s: Run.from_dict(run, name=s) for s, run in runs.items()}, Qrels.from_dict(judged)


def with_ranx(runs: dict[str, Run], qrels: Qrels) -> dict[str, dict[str, float]]:
    out = {}
    for setting, run in runs.items():
        means = evaluate(qrels, run, [RANX[m] for m in MEASURES])
        out[setting] = {m: float(means[RANX[m]]) for m in MEASURES}
    return out


def max_gap(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> float:
    return max(abs(a[s][m] - b[s][m]) for s in a for m in MEASURES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--settings", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    (ranked, qrels), t_make = timed(
        lambda: make_data(args.queries, args.depth, args.settings, args.seed)
    )
    # The rankings asked for, as evaluate_run takes them from requests.parquet.
    cells = ranked.select("mode", "setting", "query_id", "pool").unique()
    print(
        f"data: {args.queries:,} queries x {args.depth} hits x {args.settings} settings = "
        f"{ranked.height:,} ranked items, {qrels.height:,} judgments (made in {t_make.wall:.1f} s)"
    )
    print(f"measures: {', '.join(MEASURES)}; polars threads: {pl.thread_pool_size()}\n")

    ours(ranked.head(1000), qrels, cells.head(10))  # start polars' thread pool, as ranx is warmed
    mine, t_ours = timed(lambda: ours(ranked, qrels, cells))
    (runs, judged), t_dicts = timed(lambda: to_dicts(ranked, qrels))
    trec, t_trec = timed(lambda: with_pytrec(runs, judged))

    tiny = dict(list(runs["s0"].items())[:20])
    tiny_runs, tiny_qrels = ranx_inputs({"t": tiny}, {q: judged[q] for q in tiny})
    _, t_jit = timed(lambda: with_ranx(tiny_runs, tiny_qrels))
    (ranx_runs, ranx_qrels), t_ranx_in = timed(lambda: ranx_inputs(runs, judged))
    ranx_means, t_ranx = timed(lambda: with_ranx(ranx_runs, ranx_qrels))

    rows = [
        ("vlbench (polars)", t_ours, t_ours),
        ("pytrec_eval", t_trec, t_trec + t_dicts),
        ("ranx warm", t_ranx, t_ranx + t_dicts + t_ranx_in),
        ("ranx cold (+ JIT)", t_ranx + t_jit, t_ranx + t_jit + t_dicts + t_ranx_in),
    ]
    print(f"{'':18} {'evaluate: wall':>15} {'cpu':>7} {'+ conversion: wall':>19} {'cpu':>7}")
    for name, t_eval, t_all in rows:
        print(
            f"{name:18} {t_eval.wall:14.2f}s {t_eval.cpu:6.2f}s "
            f"{t_all.wall:18.2f}s {t_all.cpu:6.2f}s"
        )
    print("\nratio to vlbench (> 1: vlbench is faster)")
    print(f"{'':18} {'evaluate: wall':>15} {'cpu':>7} {'+ conversion: wall':>19} {'cpu':>7}")
    for name, t_eval, t_all in rows[1:]:
        print(
            f"{name:18} {t_eval.wall / t_ours.wall:14.1f}x {t_eval.cpu / t_ours.cpu:6.1f}x "
            f"{t_all.wall / t_ours.wall:18.1f}x {t_all.cpu / t_ours.cpu:6.1f}x"
        )
    print(
        f"\nconversion: frame -> dicts {t_dicts.wall:.2f} s, "
        f"dicts -> ranx Run/Qrels {t_ranx_in.wall:.2f} s; "
        f"ranx first use (numba JIT, or its on-disk cache) {t_jit.wall:.2f} s"
    )
    gaps = (max_gap(mine, trec), max_gap(mine, ranx_means))
    print(
        f"agreement of per-setting means: |vlbench - pytrec_eval| <= {gaps[0]:.1e}, "
        f"|vlbench - ranx| <= {gaps[1]:.1e}"
    )
    if max(gaps) > 1e-9:
        raise SystemExit("the implementations disagree")


if __name__ == "__main__":
    main()
