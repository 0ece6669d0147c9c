"""What a live export found for each wire request: outcome records, verification, the rows.

`RequestOutcome` says how one wire request's IDs were obtained (export job or pagination, and
why); `settle_outcomes` completes them from the scratch files (IDs counted, the page cap noted,
and with verify the export job's IDs compared with pagination's); `id_rows` gives the hit-like
rows `runner.export.ids.write_ids` writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl

from runner.execute import PAGE_CAP
from runner.plan import Plan
from runner.store import scan_hits, scan_requests

__all__ = [
    "LiveExportResult",
    "Paged",
    "RequestOutcome",
    "id_rows",
    "replace_outcome",
    "settle_outcomes",
]

# Examples of IDs found one way and not the other, kept per request.
_EXAMPLES: Final = 5


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """How one wire request's IDs were obtained, and what verification found.

    `method`: "export_job" or "pagination"; `note`: why it fell back (or the job's message).
    `only_export` / `only_pagination`: with verify, IDs found by one way and not the other.
    """

    wire_key: str
    query_ids: tuple[str, ...]
    mode: str
    setting: str
    method: Literal["export_job", "pagination"]
    n_ids: int = 0
    job_id: str | None = None
    job_status: str | None = None
    entities_count: int | None = None
    note: str | None = None
    only_export: int | None = None
    only_pagination: int | None = None
    only_export_examples: tuple[str, ...] = ()
    only_pagination_examples: tuple[str, ...] = ()

    @property
    def differs(self) -> bool:
        return bool(self.only_export or self.only_pagination)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LiveExportResult:
    """What a live export wrote and how each request went."""

    path: Path | None
    manifest_path: Path | None
    rows: int
    outcomes: tuple[RequestOutcome, ...]
    verified: bool

    @property
    def differences(self) -> tuple[RequestOutcome, ...]:
        return tuple(o for o in self.outcomes if o.differs)

    @property
    def fallbacks(self) -> tuple[RequestOutcome, ...]:
        return tuple(o for o in self.outcomes if o.method == "pagination" and o.note)


def replace_outcome(outcome: RequestOutcome, **changes: Any) -> RequestOutcome:
    return RequestOutcome(**{**asdict(outcome), **changes})


@dataclass(frozen=True, slots=True)
class Paged:
    """The scratch run of the requests paged through in full (None: none were)."""

    run_dir: Path | None
    wire_keys: frozenset[str]


# -- ---------------------------------------------------------------------------------------


def settle_outcomes(
    plan: Plan,
    found: Sequence[RequestOutcome],
    paged: Paged,
    ids_path: Path,
    *,
    verify: bool,
) -> list[RequestOutcome]:
    """Each request's outcome completed: IDs counted for paged requests (and whether they hit
    the page cap); with `verify`, the export job's IDs compared with pagination's."""
    requests = {r.wire_key: r for r in plan.requests}
    out = []
    exported = pl.scan_parquet(ids_path)
    for outcome in found:
        request = requests[outcome.wire_key]
        if (
            outcome.method == "export_job"
            and verify
            and request.wire_key in paged.wire_keys
            and paged.run_dir
        ):
            key = request.wire_key
            mine = exported.filter(pl.col("wire_key") == key).select("media_id").unique()
            theirs = (
                scan_hits(paged.run_dir)
                .filter(pl.col("request_key").is_in([s.key for s in request.specs]))
                .select("media_id")
                .unique()
            )
            only_e = mine.join(theirs, on="media_id", how="anti").sort("media_id").collect()
            only_p = theirs.join(mine, on="media_id", how="anti").sort("media_id").collect()
            outcome = replace_outcome(
                outcome,
                only_export=only_e.height,
                only_pagination=only_p.height,
                only_export_examples=tuple(only_e["media_id"].head(_EXAMPLES).to_list()),
                only_pagination_examples=tuple(only_p["media_id"].head(_EXAMPLES).to_list()),
            )
        if outcome.method == "pagination" and paged.run_dir is not None:
            keys = [s.key for s in request.specs[:1]]
            n = (
                scan_hits(paged.run_dir)
                .filter(pl.col("request_key").is_in(keys))
                .select(pl.col("media_id").n_unique())
                .collect()
                .item()
            )
            pages = (
                scan_requests(paged.run_dir)
                .filter(pl.col("request_key").is_in(keys))
                .select(pl.len())
                .collect()
                .item()
            )
            note = outcome.note
            if pages >= PAGE_CAP:
                capped = f"pagination stopped at the cap of {PAGE_CAP} pages"
                note = f"{note}; {capped}" if note else capped
            outcome = replace_outcome(outcome, n_ids=int(n), note=note)
        out.append(outcome)
    return out


_ROW_COLUMNS: Final = {
    "query_id": pl.String,
    "mode": pl.String,
    "setting": pl.String,
    "media_id": pl.String,
    "file_name": pl.String,
    "score": pl.Float64,
    "raw_score": pl.Float64,
    "score_type": pl.String,
    "rank": pl.Int32,
}


def id_rows(
    plan: Plan, outcomes: Sequence[RequestOutcome], paged: Paged, ids_path: Path
) -> pl.LazyFrame:
    """Hit-like rows for `write_ids`: export-job IDs fanned out to their specs, paged hits."""
    spec_frame = pl.DataFrame(
        {
            "wire_key": [s.wire_key for s in plan.specs],
            "query_id": [s.query_id for s in plan.specs],
            "mode": [s.mode for s in plan.specs],
            "setting": [s.setting for s in plan.specs],
        }
    ).lazy()
    by_job = [o.wire_key for o in outcomes if o.method == "export_job"]
    frames = [
        pl.scan_parquet(ids_path)
        .filter(pl.col("wire_key").is_in(by_job))
        .join(spec_frame, on="wire_key", how="inner")
        .with_columns(
            pl.lit(None, pl.Float64).alias("score"),
            pl.lit(None, pl.Float64).alias("raw_score"),
            pl.lit(None, pl.String).alias("score_type"),
            pl.lit(None, pl.Int32).alias("rank"),
        )
        .select(list(_ROW_COLUMNS))
    ]
    by_pages = [o.wire_key for o in outcomes if o.method == "pagination"]
    if paged.run_dir is not None and by_pages:
        keys = [s.key for s in plan.specs if s.wire_key in set(by_pages)]
        frames.append(
            scan_hits(paged.run_dir)
            .filter(pl.col("request_key").is_in(keys))
            .select(list(_ROW_COLUMNS))
            .cast(_ROW_COLUMNS)  # type: ignore[arg-type]
        )
    return pl.concat(frames, how="vertical")
