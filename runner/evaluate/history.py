"""Each measure over time per mode, read by DuckDB from months of runs; the nights that moved.

    h = load_history("reports/suite=demo")              # or load_history("reports", suite="demo")
    print(render_text(h))
    write_history_html(h, "history.html")               # a table and a plot, self-contained

Where the numbers come from: every run writes `metrics.parquet` when it is evaluated (`vlbench
report`, or `evaluate_missing=True` here for local runs that have none yet). DuckDB reads them
all in place, hive-partitioned: `read_parquet('<suite dir>/run_date=*/run_id=*/metrics.parquet',
hive_partitioning = true)` for a local suite directory, and a `pyarrow.dataset` over the same
files on `s3://` or `gs://` (see `runner.store.locations`).
Only the summary rows (the mean over judged
queries, `query_id` null) and, for the paired test, per-query values of consecutive nights are
read; no file is loaded whole into Python. Only `complete` runs are plotted; others are named in
`notes`. A "night" is one run, in (run_date, run_id) order.

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

import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import matplotlib
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from matplotlib.figure import Figure
from scipy import stats

from runner.errors import RunError, UsageError
from runner.report.html import CSP, render_table
from runner.report.tables import Table
from runner.store import safe_suite_name
from runner.store.locations import Location, find_run_locations, read_run_manifest, resolve

__all__ = [
    "METRICS_FILE",
    "History",
    "HistoryRule",
    "load_history",
    "render_text",
    "write_history_html",
]

METRICS_FILE: Final = "metrics.parquet"
_SERIES: Final = ("mode", "setting", "unit", "measure")
_UP: Final = "▲"
_DOWN: Final = "▼"


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
    usable = runs.filter(pl.col("metrics").is_in(["present", "evaluated"]))
    if usable.is_empty():
        raise RunError(
            f"{suite_loc.uri}: no complete run has metrics.parquet "
            "(run `vlbench report RUN` on them, or pass --evaluate)"
        )
    with duckdb.connect() as con:
        con.execute("SET threads = 2")
        _register_metrics(con, suite_loc, usable)
        ordered = usable.sort("run_date", "run_id").with_columns(
            pl.int_range(pl.len()).alias("night"),
            pl.col("run_id").shift(1).alias("prev_run_id"),
        )
        con.register(
            "runs", ordered.select("run_date", "run_id", "night", "prev_run_id").to_arrow()
        )
        summary = _summary(con, unit, measures, modes)
        paired = _paired(con, unit, measures, modes)
    series = _flag(summary, paired, rule)
    if series.is_empty():
        notes.append(f"no summary rows for unit {unit!r} and the chosen measures/modes")
    return History(suite_loc.uri, runs, series, rule, tuple(notes))


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
            status = str(read_run_manifest(run.uri, allow_running=True)["status"])
        except RunError as exc:
            notes.append(f"{run.uri}: left out: {exc}")
            continue
        metrics = "present" if run.child(METRICS_FILE).is_file() else "missing"
        if status != "complete":
            metrics = "skipped"
            notes.append(f"run {run_id} ({run_date}) is {status}: left out")
        elif metrics == "missing" and evaluate_missing and not run.remote:
            _evaluate(Path(run.path))
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


def _evaluate(run_dir: Path) -> None:
    from runner.evaluate import evaluate_run, write_evaluation

    write_evaluation(evaluate_run(run_dir), run_dir)


# -- DuckDB ---------------------------------------------------------------------------------------


def _register_metrics(
    con: duckdb.DuckDBPyConnection, suite_loc: Location, usable: pl.DataFrame
) -> None:
    """A view `metrics` over every run's metrics.parquet, with run_date and run_id from the path."""
    if not suite_loc.remote:
        glob = f"{suite_loc.path.rstrip('/')}/run_date=*/run_id=*/{METRICS_FILE}".replace("'", "''")
        con.execute(
            "CREATE VIEW metrics AS SELECT * FROM read_parquet("
            f"'{glob}', hive_partitioning = true, union_by_name = true, "
            "hive_types = {'run_date': VARCHAR, 'run_id': VARCHAR})"
        )
        return
    paths = [
        f"{suite_loc.path.rstrip('/')}/run_date={d}/run_id={r}/{METRICS_FILE}"
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
        partition_base_dir=suite_loc.path.rstrip("/"),
    )
    con.register("metrics_dataset", dataset)  # scanned lazily, in batches
    con.execute("CREATE VIEW metrics AS SELECT * FROM metrics_dataset")


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


# -- rendering -------------------------------------------------------------------------------


def _label(mode: str, setting: str, single: bool) -> str:
    return mode if single else f"{mode} {setting}"


def _labelled(series: pl.DataFrame) -> pl.DataFrame:
    settings = series.group_by("mode").agg(pl.col("setting").n_unique().alias("n_settings"))
    joined = series.join(settings, on="mode", how="left")
    return joined.with_columns(
        pl.when(pl.col("n_settings") == 1)
        .then(pl.col("mode"))
        .otherwise(pl.concat_str("mode", pl.lit(" "), "setting"))
        .alias("label"),
        pl.concat_str("run_date", pl.lit(" "), pl.col("run_id").str.slice(0, 24)).alias(
            "night_label"
        ),
    )


def _tables(history: History, max_nights: int) -> list[tuple[str, Table]]:
    series = _labelled(history.series)
    tables = []
    for (measure,), group in series.group_by("measure", maintain_order=True):
        labels = sorted(group["label"].unique().to_list())
        nights = group.select("night", "night_label").unique().sort("night").tail(max_nights)
        cells = {(r["night"], r["label"]): r for r in group.iter_rows(named=True)}
        rows, marks = [], []
        for night, night_label in nights.iter_rows():
            row, mark = [night_label], [""]
            for label in labels:
                cell = cells.get((night, label))
                if cell is None or cell["value"] is None:
                    row.append("–")
                    mark.append("")
                    continue
                arrow = ""
                if cell["moved"]:
                    arrow = f" {_UP if (cell['delta'] or 0) > 0 else _DOWN}"
                row.append(f"{cell['value']:.3f}{arrow}")
                mark.append(("up" if (cell["delta"] or 0) > 0 else "down") if cell["moved"] else "")
            rows.append(tuple(row))
            marks.append(tuple(mark))
        shown = nights.height
        total = group["night"].n_unique()
        note = f"last {shown} of {total} nights" if shown < total else ""
        table = Table(
            headers=("night", *labels),
            rows=tuple(rows),
            numeric=frozenset(range(1, len(labels) + 1)),
            marks=tuple(marks),
            note=note,
        )
        tables.append((str(measure), table))
    return tables


def _bands(history: History, measure: str) -> str:
    """Each series' noise floor on its last night: how far a quiet night may move it."""
    last = (
        _labelled(history.series.filter(pl.col("measure") == measure))
        .sort("night")
        .group_by("label", maintain_order=True)
        .last()
        .sort("label")
    )
    parts = [
        f"{r['label']} ±{r['floor']:.3f}"
        if r["floor"] is not None
        else f"{r['label']} (no band yet)"
        for r in last.iter_rows(named=True)
    ]
    return "band: " + ", ".join(parts)


def render_text(history: History, *, max_nights: int = 30) -> str:
    """Plain-text tables, one per measure: nights down, series across, ▲/▼ where a night moved."""
    lines = [f"history of {history.suite_dir} ({len(history.runs)} runs)", history.rule.describe()]
    for measure, table in _tables(history, max_nights):
        widths = [
            max(len(h), *(len(r[i]) for r in table.rows)) for i, h in enumerate(table.headers)
        ]
        lines.append("")
        lines.append(measure)
        lines.append("  ".join(h.ljust(w) for h, w in zip(table.headers, widths, strict=True)))
        for row in table.rows:
            cells = [
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells))
        if table.note:
            lines.append(f"({table.note})")
        lines.append(_bands(history, measure))
    moved = history.moved
    lines.append("")
    lines.append(f"{moved.height} series-nights moved")
    for m in moved.iter_rows(named=True):
        lines.append(
            f"  {m['run_date']} {m['run_id']} {m['mode']} {m['setting']} {m['measure']}: "
            f"{m['value']:.3f} (Δ {m['delta']:+.3f}): {m['why']}"
        )
    lines.extend(f"note: {n}" for n in history.notes)
    return "\n".join(lines)


_RC: Final[Mapping[str, Any]] = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
_PALETTE: Final = ("#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22")


def history_plot(history: History) -> str | None:
    """One panel per measure, one line per mode (and setting), moved nights circled in red.

    Returns an inline `<svg>` (text stays text, no external reference), None with nothing to draw.
    """
    series = _labelled(history.series).filter(pl.col("value").is_not_null())
    if series.is_empty():
        return None
    measures = series["measure"].unique(maintain_order=True).to_list()
    labels = sorted(series["label"].unique().to_list())
    colours = {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}
    nights = series.select("night", "run_date").unique().sort("night")
    with matplotlib.rc_context(dict(_RC)):  # type: ignore[arg-type]
        fig = Figure(figsize=(7.5, 2.4 * len(measures) + 0.6), layout="constrained")
        axes = fig.subplots(len(measures), 1, squeeze=False, sharex=True)
        for ax, measure in zip(axes[:, 0], measures, strict=True):
            for label in labels:
                line = series.filter((pl.col("measure") == measure) & (pl.col("label") == label))
                if line.is_empty():
                    continue
                line = line.sort("night")
                ax.plot(
                    line["night"],
                    line["value"],
                    marker="o",
                    ms=3,
                    lw=1.2,
                    label=label,
                    color=colours[label],
                )
                banded = line.filter(pl.col("band_lo").is_not_null())
                if not banded.is_empty():  # the noise band each night was held to
                    ax.fill_between(
                        banded["night"],
                        banded["band_lo"],
                        banded["band_hi"],
                        color=colours[label],
                        alpha=0.12,
                        linewidth=0,
                    )
                moved = line.filter(pl.col("moved"))
                if not moved.is_empty():
                    ax.scatter(
                        moved["night"],
                        moved["value"],
                        s=90,
                        facecolors="none",
                        edgecolors="#c62828",
                        linewidths=1.5,
                        zorder=3,
                    )
            ax.set_ylabel(measure)
        axes[-1, 0].set_xticks(
            nights["night"].to_list(), nights["run_date"].to_list(), rotation=45, ha="right"
        )
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    if start != -1 and end != -1:
        text = text[:start] + text[end + len("</metadata>") :]
    return text.replace("<svg ", '<svg class="plot" role="img" aria-label="measures over time" ', 1)


_CSS: Final = """
body { margin: 0; font: 14px/1.45 system-ui, "DejaVu Sans", sans-serif; color: #1d232a; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h2 { font-size: 18px; border-bottom: 2px solid #d9dee3; padding-bottom: 4px; margin-top: 32px; }
p.note, p.more { color: #5b6672; font-size: 13px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #d9dee3; text-align: left; }
th { background: #f5f7f9; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.up { color: #17803d; font-weight: 700; } td.down { color: #c62828; font-weight: 700; }
svg.plot { display: block; max-width: 100%; height: auto; }
"""


def write_history_html(
    history: History, path: str | os.PathLike[str], *, max_nights: int = 60
) -> Path:
    """A self-contained HTML page (inline CSS and SVG, no script, nothing fetched), atomically."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>vlbench history: {e(history.suite_dir)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>History of {e(history.suite_dir)}</h1>",
        f"<p class='note'>{len(history.runs)} runs; {e(history.rule.describe())}</p>",
    ]
    plot = history_plot(history)
    parts.append("<h2>Measures over time</h2>")
    parts.append(plot if plot is not None else "<p class='note'>Nothing to plot.</p>")
    moved = history.moved
    parts.append(f"<h2>Nights that moved ({moved.height})</h2>")
    moved_table = Table(
        headers=("night", "mode", "setting", "measure", "value", "Δ", "why"),
        rows=tuple(
            (
                f"{r['run_date']} {r['run_id']}",
                r["mode"],
                r["setting"],
                r["measure"],
                f"{r['value']:.3f}",
                f"{r['delta']:+.3f}",
                r["why"],
            )
            for r in moved.iter_rows(named=True)
        ),
        numeric=frozenset({4, 5}),
    )
    parts.append(render_table(moved_table))
    for measure, table in _tables(history, max_nights):
        parts.append(f"<h2>{e(measure)}</h2>")
        parts.append(render_table(table))
    if history.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts.extend(f"<li>{e(n)}</li>" for n in history.notes)
        parts.append("</ul>")
    parts.append("</main></body></html>")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text("".join(parts), encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
