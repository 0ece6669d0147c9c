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

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from runner.errors import RunError, UsageError
from runner.evaluate.history_rule import HistoryRule, flag_nights
from runner.store import safe_suite_name
from runner.store.location import Location, resolve, scrub
from runner.store.reader import find_run_locations, read_manifest

__all__ = ["METRICS_FILE", "History", "HistoryRule", "load_history"]

METRICS_FILE: Final = "metrics.parquet"
_DEFAULT_RULE: Final = HistoryRule()
# The columns of metrics.parquet that history reads.
_COLUMNS: Final = ("mode", "setting", "unit", "measure", "query_id", "value", "n_queries")


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
    rule: HistoryRule = _DEFAULT_RULE,
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
    series = flag_nights(summary, paired, rule)
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
