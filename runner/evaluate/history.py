"""Each measure over time per mode, read by DuckDB from months of runs; the nights that moved.

    h = load_history("reports/suite=demo")              # or load_history("reports", suite="demo")
    print(render_text(h))                               # runner.report.history: text and page
    write_history_html(h, "history.html")

Where the numbers come from: every run writes `metrics.parquet` when it is evaluated (`vlbench
report`, or `evaluate_missing=True` here for local runs that have none yet). DuckDB reads them in
place through one hive-partitioned `pyarrow.dataset` over the usable runs' files, on a local
disk or on `s3://` / `gs://` alike (runs are found by the one reader, `runner.store.reader`).
Only the summary rows (the mean over judged queries, `query_id` null) and, for the paired test,
per-query values of consecutive nights are read; no file is loaded whole into Python. Only
`complete` runs are plotted; others are named in `notes`. A "night" is one run, in (run_date,
run_id) order.

A night whose metrics.parquet is corrupt (not Parquet, truncated, or without the columns of
`METRICS_SCHEMA`) is LEFT OUT with a note naming the file, like a night still running: one
damaged night should not hide months of history, and the note says what to re-evaluate. When
no night is left, `RunError` (exit 2) names the suite.

The rule for a night that MOVED (`HistoryRule`; per series = mode, setting, unit, measure) is by
default that of `vlbench compare --noise` (`HistoryRule.rule == "noise"`): |delta| >= `min_delta`,
the paired t-test against the previous night significant after Holm across the measures of the
series' mode and setting, and |delta| above the noise floor of the earlier nights that did not
move (max of their largest |delta| and 1.96 standard errors of their paired differences; with
fewer than `min_history` quiet nights there is no floor yet and significance alone decides).
The older rule (`rule="either"`):
1. history: |value - previous night's value| > k × σ, where σ is the sample standard deviation
   of the series' values over all EARLIER nights (at least `min_history` of them), or
2. paired: the per-query values of this night and the previous one, paired by query id (at
   least `min_pairs` queries), differ by a two-sided paired t-test with p < `alpha`;
and in both cases |delta| >= `min_delta` (so a perfectly flat history does not flag noise of
1e-9). Many series are tested each night, so expect about alpha × (number of series) false
alarms from rule 2 per night; raise `alpha` strictness (`--alpha 0.001`) for large suites.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from scipy import stats

from runner.errors import RunError, UsageError
from runner.store import safe_suite_name
from runner.store.location import Location, resolve, scrub
from runner.store.reader import find_run_locations, read_manifest

__all__ = ["METRICS_FILE", "History", "HistoryRule", "load_history"]

METRICS_FILE: Final = "metrics.parquet"
_SERIES: Final = ("mode", "setting", "unit", "measure")
# The columns of metrics.parquet that history reads.
_COLUMNS: Final = ("mode", "setting", "unit", "measure", "query_id", "value", "n_queries")


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """When a night counts as moved (see the module doc)."""

    k: float = 3.0
    min_history: int = 3
    alpha: float = 0.01
    min_pairs: int = 5
    min_delta: float = 0.01
    # "noise": the rule of `vlbench compare --noise` (runner.evaluate.compare.noise): moved when
    # the paired test is significant after Holm (across the measures of a mode and setting that
    # night) AND |Δ| is above the noise floor of the earlier nights that did not move;
    # "either": the older rule, |Δ| > kσ OR a significant paired test.
    rule: str = "noise"

    def __post_init__(self) -> None:
        if self.rule not in ("noise", "either"):
            raise UsageError(f"--rule {self.rule}: use noise or either")

    def describe(self) -> str:
        if self.rule == "noise":
            return (
                f"A night moved when |Δ| ≥ {self.min_delta:g}, a paired t-test over at least "
                f"{self.min_pairs} queries against the previous night gives p < {self.alpha:g} "
                f"after Holm across measures, and |Δ| is above the noise floor: the larger of "
                f"the biggest |Δ| and 1.96 standard errors of the earlier nights that did not "
                f"move (needs {self.min_history} of them; the band is the previous value ± it)."
            )
        return (
            f"A night moved when |Δ| ≥ {self.min_delta:g} and either |Δ| > {self.k:g}σ "
            f"(σ: standard deviation over at least {self.min_history} earlier nights) or a "
            f"paired t-test over at least {self.min_pairs} queries against the previous night "
            f"gives p < {self.alpha:g}."
        )


@dataclass(frozen=True, slots=True)
class History:
    """A suite's measures over time.

    `runs`: run_date, run_id, status, metrics ("present", "evaluated", "missing", "skipped").
    `series`: run_date, run_id, night (0-based), mode, setting, unit, measure, value, n_queries,
    delta, hist_std, n_history, n_pairs, p_value, moved (bool), why (str, empty if not moved),
    floor, band_lo, band_hi (the noise band of the night; null with too few quiet nights).
    """

    suite_dir: str
    runs: pl.DataFrame
    series: pl.DataFrame
    rule: HistoryRule
    notes: tuple[str, ...] = field(default=())

    @property
    def moved(self) -> pl.DataFrame:
        """The rows of `series` that moved."""
        return self.series.filter(pl.col("moved"))


def load_history(
    location: str | os.PathLike[str],
    *,
    suite: str | None = None,
    measures: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    unit: str = "media",
    rule: HistoryRule = HistoryRule(),
    evaluate_missing: bool = False,
) -> History:
    """The history of one suite: `location` is its `suite=<name>` directory, or a root + `suite`.

    A root with one suite needs no `suite`. `evaluate_missing` evaluates local complete runs that
    have no metrics.parquet yet (and writes it into them, as `vlbench report` would).
    Raises `RunError` when there is no run, or no evaluated run, to read.
    """
    suite_loc = _suite_location(location, suite)
    notes: list[str] = []
    runs = _runs(suite_loc, evaluate_missing, notes)
    try:
        summary, paired = _read(suite_loc, _usable(suite_loc, runs, notes), unit, measures, modes)
    except (duckdb.Error, pa.ArrowException, OSError) as exc:
        # Damage past a sound footer (a page that does not decompress) shows only when read:
        # find the nights it is in, leave them out like the others, and read again.
        runs = _leave_out_unreadable(suite_loc, runs, notes)
        try:
            usable = _usable(suite_loc, runs, notes)
            summary, paired = _read(suite_loc, usable, unit, measures, modes)
        except (duckdb.Error, pa.ArrowException, OSError):
            why = scrub(str(exc))
            raise RunError(f"{suite_loc.uri}: cannot read metrics.parquet: {why}") from None
    series = _flag(summary, paired, rule)
    if series.is_empty():
        notes.append(f"no summary rows for unit {unit!r} and the chosen measures/modes")
    return History(suite_loc.uri, runs, series, rule, tuple(notes))


def _usable(suite_loc: Location, runs: pl.DataFrame, notes: list[str]) -> pl.DataFrame:
    """The nights to read, in order, with their night number and the previous night's run id."""
    usable = runs.filter(pl.col("metrics").is_in(["present", "evaluated"]))
    if usable.is_empty():
        corrupt = [n for n in notes if "corrupt" in n or "columns" in n]
        why = f"; {corrupt[0]}" if corrupt else ""
        raise RunError(
            f"{suite_loc.uri}: no complete run has metrics.parquet "
            f"(run `vlbench report RUN` on them, or pass --evaluate){why}"
        )
    return usable.sort("run_date", "run_id").with_columns(
        pl.int_range(pl.len()).alias("night"),
        pl.col("run_id").shift(1).alias("prev_run_id"),
    )


def _read(
    suite_loc: Location,
    usable: pl.DataFrame,
    unit: str,
    measures: Sequence[str] | None,
    modes: Sequence[str] | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(summary rows, paired differences) of the usable nights, through DuckDB."""
    with duckdb.connect() as con:
        con.execute("SET threads = 2")
        _register_metrics(con, suite_loc, usable)
        con.register("runs", usable.select("run_date", "run_id", "night", "prev_run_id").to_arrow())
        return _summary(con, unit, measures, modes), _paired(con, unit, measures, modes)


def _leave_out_unreadable(
    suite_loc: Location, runs: pl.DataFrame, notes: list[str]
) -> pl.DataFrame:
    """`runs` with each night whose metrics values cannot be read marked "corrupt" (and noted)."""
    bad = set()
    for run_date, run_id in (
        runs.filter(pl.col("metrics").is_in(["present", "evaluated"]))
        .select("run_date", "run_id")
        .iter_rows()
    ):
        metrics = suite_loc.child(f"run_date={run_date}", f"run_id={run_id}", METRICS_FILE)
        try:
            pq.read_table(metrics.path, columns=list(_COLUMNS), filesystem=metrics.fs)
        except (OSError, pa.ArrowException) as exc:
            bad.add(run_id)
            notes.append(
                f"run {run_id} ({run_date}) left out: {metrics.uri}: corrupt Parquet file "
                f"({scrub(str(exc))})"
            )
    return runs.with_columns(
        pl.when(pl.col("run_id").is_in(list(bad)))
        .then(pl.lit("corrupt"))
        .otherwise(pl.col("metrics"))
        .alias("metrics")
    )


# -- finding runs ---------------------------------------------------------------------------------


def _suite_location(location: str | os.PathLike[str], suite: str | None) -> Location:
    loc = resolve(location)
    name = loc.path.rstrip("/").rsplit("/", 1)[-1]
    if name.startswith("suite="):
        if suite is not None and name != f"suite={safe_suite_name(suite)}":
            raise UsageError(f"{loc.uri}: is {name}, not suite {suite!r}")
        return loc
    if suite is not None:
        return loc.child(f"suite={safe_suite_name(suite)}")
    suites = sorted({r.path.rstrip("/").split("/")[-3] for r in find_run_locations(loc)})
    if len(suites) != 1:
        found = ", ".join(s.removeprefix("suite=") for s in suites) or "none"
        raise UsageError(f"{loc.uri}: name a suite with --suite (suites here: {found})")
    return loc.child(suites[0])


def _runs(suite_loc: Location, evaluate_missing: bool, notes: list[str]) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    for run in find_run_locations(suite_loc):
        parts = run.path.rstrip("/").split("/")
        run_date, run_id = parts[-2].removeprefix("run_date="), parts[-1].removeprefix("run_id=")
        try:
            status = str(read_manifest(run)["status"])
        except RunError as exc:
            notes.append(f"{run.uri}: left out: {exc}")
            continue
        metrics = "present" if run.child(METRICS_FILE).is_file() else "missing"
        if status == "complete" and metrics == "present":
            problem = _metrics_problem(run.child(METRICS_FILE))
            if problem:
                metrics = "corrupt"
                notes.append(f"run {run_id} ({run_date}) left out: {problem}")
        if status != "complete":
            metrics = "skipped"
            notes.append(f"run {run_id} ({run_date}) is {status}: left out")
        elif metrics == "missing" and evaluate_missing and not run.remote:
            _evaluate(run)
            metrics = "evaluated"
            notes.append(f"run {run_id} ({run_date}) had no metrics.parquet: evaluated now")
        elif metrics == "missing":
            how = "evaluate it locally" if run.remote else "pass --evaluate"
            notes.append(
                f"run {run_id} ({run_date}) has no metrics.parquet: left out "
                f"(run `vlbench report` on it, or {how})"
            )
        rows.append({"run_date": run_date, "run_id": run_id, "status": status, "metrics": metrics})
    if not rows:
        raise RunError(f"{suite_loc.uri}: no runs here")
    return pl.DataFrame(
        rows, schema={k: pl.String for k in ("run_date", "run_id", "status", "metrics")}
    )


def _metrics_problem(metrics: Location) -> str:
    """Why a metrics.parquet cannot be read (naming it), or "" when its footer and columns are
    sound. Read from the footer only: nothing is loaded."""
    try:
        names = pq.read_schema(metrics.path, filesystem=metrics.fs).names
    except (OSError, pa.ArrowException) as exc:
        return f"{metrics.uri}: corrupt Parquet file ({scrub(str(exc))})"
    missing = [c for c in _COLUMNS if c not in names]
    return f"{metrics.uri}: columns {missing} are missing" if missing else ""


def _evaluate(run: Location) -> None:
    from runner.evaluate.run import evaluate_run, write_evaluation

    write_evaluation(evaluate_run(run), run.path)


# -- DuckDB ---------------------------------------------------------------------------------------


def _register_metrics(
    con: duckdb.DuckDBPyConnection, suite_loc: Location, usable: pl.DataFrame
) -> None:
    """A view `metrics` over the usable runs' metrics.parquet, run_date and run_id from the path.

    One hive-partitioned `pyarrow.dataset` over exactly those files (never a glob, which would
    also take a running or corrupt night), scanned lazily in batches, locally or remote.
    """
    base = suite_loc.path.rstrip("/")
    paths = [
        f"{base}/run_date={d}/run_id={r}/{METRICS_FILE}"
        for d, r in usable.select("run_date", "run_id").iter_rows()
    ]
    partitioning = ds.partitioning(
        pa.schema([("run_date", pa.string()), ("run_id", pa.string())]), flavor="hive"
    )
    dataset = ds.dataset(
        paths,
        filesystem=suite_loc.fs,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=base,
    )
    con.register("metrics_dataset", dataset)
    columns = ", ".join([*_COLUMNS, "run_date", "run_id"])
    con.execute(f"CREATE VIEW metrics AS SELECT {columns} FROM metrics_dataset")


def _filters(measures: Sequence[str] | None, modes: Sequence[str] | None) -> tuple[str, list[Any]]:
    sql, params = "", []
    if measures:
        sql += f" AND m.measure IN ({', '.join('?' * len(measures))})"
        params += list(measures)
    if modes:
        sql += f" AND m.mode IN ({', '.join('?' * len(modes))})"
        params += list(modes)
    return sql, params


def _summary(
    con: duckdb.DuckDBPyConnection,
    unit: str,
    measures: Sequence[str] | None,
    modes: Sequence[str] | None,
) -> pl.DataFrame:
    extra, params = _filters(measures, modes)
    query = f"""
        SELECT r.run_date, r.run_id, r.night, m.mode, m.setting, m.unit, m.measure,
               m.value, m.n_queries
        FROM metrics m JOIN runs r ON m.run_id = r.run_id AND m.run_date = r.run_date
        WHERE m.query_id IS NULL AND m.unit = ?{extra}
        ORDER BY m.mode, m.setting, m.unit, m.measure, r.night
    """
    frame: pl.DataFrame = con.sql(query, params=[unit, *params]).pl()
    return frame


def _paired(
    con: duckdb.DuckDBPyConnection,
    unit: str,
    measures: Sequence[str] | None,
    modes: Sequence[str] | None,
) -> pl.DataFrame:
    """Per (night, series): paired differences of per-query values against the previous night."""
    extra, params = _filters(measures, modes)
    query = f"""
        WITH pq AS (
            SELECT m.run_id, m.mode, m.setting, m.unit, m.measure, m.query_id, m.value
            FROM metrics m
            WHERE m.query_id IS NOT NULL AND m.value IS NOT NULL AND m.unit = ?{extra}
        )
        SELECT r.run_id, b.mode, b.setting, b.unit, b.measure,
               count(*) AS n_pairs,
               avg(b.value - a.value) AS mean_d,
               stddev_samp(b.value - a.value) AS sd_d
        FROM runs r
        JOIN pq b ON b.run_id = r.run_id
        JOIN pq a ON a.run_id = r.prev_run_id AND a.mode = b.mode AND a.setting = b.setting
                 AND a.unit = b.unit AND a.measure = b.measure AND a.query_id = b.query_id
        GROUP BY r.run_id, b.mode, b.setting, b.unit, b.measure
    """
    frame: pl.DataFrame = con.sql(query, params=[unit, *params]).pl()
    return frame


# -- the rule --------------------------------------------------------------------------------


def _p_value(n: int, mean_d: float | None, sd_d: float | None) -> float | None:
    """Two-sided paired t-test p from the differences' n, mean and sd (None under 2 pairs)."""
    if n < 2 or mean_d is None:
        return None
    if sd_d is None or sd_d == 0.0 or not math.isfinite(sd_d):
        return 1.0 if abs(mean_d) < 1e-15 else 0.0
    t = mean_d / (sd_d / math.sqrt(n))
    return min(1.0, 2.0 * float(stats.t.sf(abs(t), df=n - 1)))


def _holm_by_family(paired: pl.DataFrame) -> dict[tuple[Any, ...], tuple[int, float | None, float]]:
    """(run_id, *series) -> (n_pairs, p, p after Holm across the measures of its family)."""
    from runner.evaluate.compare.significance import holm

    raw: dict[tuple[Any, ...], tuple[int, float | None]] = {}
    for row in paired.iter_rows(named=True):
        key = (row["run_id"], *(row[c] for c in _SERIES))
        raw[key] = (int(row["n_pairs"]), _p_value(int(row["n_pairs"]), row["mean_d"], row["sd_d"]))
    families: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for key in raw:
        families.setdefault(key[:4], []).append(key)  # run_id, mode, setting, unit
    out = {}
    for keys in families.values():
        pvalues = [raw[k][1] for k in keys]
        adjusted = holm([math.nan if p is None else float(p) for p in pvalues])
        out.update({k: (raw[k][0], raw[k][1], adj) for k, adj in zip(keys, adjusted, strict=True)})
    return out


def _floor(quiet: Sequence[tuple[float, float | None, int]], rule: HistoryRule) -> float | None:
    """The noise floor from earlier quiet nights' (delta, sd of paired differences, n)."""
    if len(quiet) < rule.min_history:
        return None
    from runner.evaluate.compare.noise import Z

    largest = max(abs(d) for d, _, _ in quiet)
    variances = [(sd or 0.0) ** 2 / n for _, sd, n in quiet if n > 0]
    band = Z * math.sqrt(sum(variances) / len(variances)) if variances else 0.0
    return max(largest, band)


def _flag(summary: pl.DataFrame, paired: pl.DataFrame, rule: HistoryRule) -> pl.DataFrame:
    tests = _holm_by_family(paired)
    spread = {
        (row["run_id"], *(row[c] for c in _SERIES)): row["sd_d"]
        for row in paired.iter_rows(named=True)
    }
    out: list[dict[str, Any]] = []
    for _, group in summary.group_by(list(_SERIES), maintain_order=True):
        earlier: list[float] = []
        quiet: list[tuple[float, float | None, int]] = []  # nights that did not move
        for row in group.sort("night").iter_rows(named=True):
            value = row["value"]
            prev = earlier[-1] if earlier else None
            delta = value - prev if value is not None and prev is not None else None
            finite = [v for v in earlier if v is not None and math.isfinite(v)]
            std = _std(finite) if len(finite) >= rule.min_history else None
            key = (row["run_id"], *(row[c] for c in _SERIES))
            n_pairs, p, p_holm = tests.get(key, (0, None, math.nan))
            floor = _floor(quiet, rule)
            if rule.rule == "noise":
                why = _why_noise(delta, std, len(finite), n_pairs, p_holm, floor, rule)
            else:
                why = _why(delta, std, len(finite), n_pairs, p, rule)
            out.append(
                {
                    **row,
                    "delta": delta,
                    "hist_std": std,
                    "n_history": len(finite),
                    "n_pairs": n_pairs,
                    "p_value": p,
                    "moved": bool(why),
                    "why": why,
                    "floor": floor,
                    "band_lo": prev - floor if prev is not None and floor is not None else None,
                    "band_hi": prev + floor if prev is not None and floor is not None else None,
                }
            )
            if delta is not None and math.isfinite(delta) and not why:
                quiet.append((delta, spread.get(key), n_pairs))
            earlier.append(value)
    schema: dict[str, Any] = {
        **dict(summary.schema),
        "delta": pl.Float64,
        "hist_std": pl.Float64,
        "n_history": pl.Int64,
        "n_pairs": pl.Int64,
        "p_value": pl.Float64,
        "moved": pl.Boolean,
        "why": pl.String,
        "floor": pl.Float64,  # the noise floor the night was held to (None: too few nights)
        "band_lo": pl.Float64,  # previous value - floor
        "band_hi": pl.Float64,
    }
    return pl.DataFrame(out, schema=schema)


def _why_noise(
    delta: float | None,
    std: float | None,
    n_history: int,
    n_pairs: int,
    p_holm: float,
    floor: float | None,
    rule: HistoryRule,
) -> str:
    """The noise rule (see `HistoryRule.rule`): significant after Holm AND above the floor."""
    if delta is None or not math.isfinite(delta) or abs(delta) < rule.min_delta:
        return ""
    if n_pairs < rule.min_pairs or math.isnan(p_holm) or p_holm >= rule.alpha:
        return ""
    if floor is not None and abs(delta) <= floor:
        return ""
    sigma = f"; σ {std:.3g} over {n_history} nights" if std is not None else ""
    above = (
        f"|Δ| {abs(delta):.3g} > noise floor {floor:.3g}" if floor is not None else "no floor yet"
    )
    return f"paired t-test p(Holm) {p_holm:.2g} over {n_pairs} queries; {above}{sigma}"


def _std(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _why(
    delta: float | None,
    std: float | None,
    n_history: int,
    n_pairs: int,
    p: float | None,
    rule: HistoryRule,
) -> str:
    if delta is None or not math.isfinite(delta) or abs(delta) < rule.min_delta:
        return ""
    reasons = []
    if std is not None and abs(delta) > rule.k * std:
        reasons.append(f"|Δ| {abs(delta):.3g} > {rule.k:g}σ (σ {std:.3g} over {n_history} nights)")
    if p is not None and n_pairs >= rule.min_pairs and p < rule.alpha:
        reasons.append(f"paired t-test p {p:.2g} over {n_pairs} queries")
    return "; ".join(reasons)
