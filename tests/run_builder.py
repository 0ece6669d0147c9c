"""Synthetic run directories for tests: write Parquet in `runner.schema`'s layout from a few dicts.

Shared by the evaluation, report and scale tests; keep the signature stable:

    run_dir = build_run(tmp_path, hits=[hit("q1", "m1"), hit("q1", "m2")],
                        judgments=[judgment("q1", "m1")])

A hit needs `query_id` and `media_id`; everything else has a default (see `HIT_DEFAULTS`):
mode "semantic", setting "default", rank = order of appearance within its (query, mode, setting),
each media its own cluster (`cluster_rank` = rank), `score` normalised from `raw_score`.
A request row is derived for every (query, mode, setting) that has hits; pass `requests` to add
more (e.g. a setting that returned nothing: `requests=[request("q2", setting="st=0.1")]`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from runner.schema import (
    HITS_FILE,
    HITS_SCHEMA,
    JUDGMENTS_FILE,
    JUDGMENTS_SCHEMA,
    MANIFEST_FILE,
    REQUESTS_FILE,
    REQUESTS_SCHEMA,
    SETTING_COLUMNS,
    normalise_score,
)

__all__ = ["HIT_DEFAULTS", "build_run", "hit", "judgment", "request"]

Row = Mapping[str, Any]

HIT_DEFAULTS: Final[Mapping[str, Any]] = {
    "mode": "semantic",
    "setting": "default",
    "entity_type": "IMAGES",
    "threshold": 0,
    "textual_similarity_threshold": None,
    "semantic_threshold": None,
    "cutoff": None,
    "labels_filter": None,
    "page": 0,
    "cluster_size": 1,
    "preview_rank": 1,
    "caption": None,
    "raw_score": None,
    "score_type": "cosine_distance",
    "labels": None,
}

_SENT_AT: Final = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def hit(query_id: str, media_id: str, **fields: Any) -> dict[str, Any]:
    """One hit row's fields (defaults are filled in by `build_run`)."""
    return {"query_id": query_id, "media_id": media_id, **fields}


def judgment(query_id: str, value: str, grade: int = 1, kind: str = "media_id") -> dict[str, Any]:
    """One judgment row: `value` names a media id, a file name, a TREC doc or a label (`kind`)."""
    return {"query_id": query_id, "kind": kind, "value": value, "grade": grade, "source": "test"}


def request(query_id: str, **fields: Any) -> dict[str, Any]:
    """One request row's fields (mode, setting, cutoff, query_text, outcome, ... default)."""
    return {"query_id": query_id, **fields}


def _request_key(row: Row) -> str:
    return f"{row['query_id']}|{row['mode']}|{row['setting']}"


def _full_hits(hits: Sequence[Row]) -> list[dict[str, Any]]:
    counters: dict[str, int] = {}
    out = []
    for given in hits:
        row = {**HIT_DEFAULTS, **given}
        key = _request_key(row)
        counters[key] = counters.get(key, 0) + 1
        row.setdefault("request_key", key)
        row.setdefault("rank", counters[key])
        row.setdefault("cluster_rank", row["rank"])
        row.setdefault("cluster_id", f"c-{row['media_id']}")
        row.setdefault("file_name", f"{row['media_id']}.jpg")
        row.setdefault("score", normalise_score(row["raw_score"], row["score_type"]))
        row.setdefault("cluster_score", row["score"])
        out.append(row)
    return out


def _full_requests(hits: list[dict[str, Any]], requests: Sequence[Row]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for given in requests:
        row = {**{c: HIT_DEFAULTS[c] for c in ("mode", *SETTING_COLUMNS)}, **given}
        rows[_request_key(row)] = row
    for h in hits:
        key = _request_key(h)
        if key not in rows:
            rows[key] = {c: h[c] for c in ("query_id", "mode", *SETTING_COLUMNS)}
        rows[key]["_previews"] = rows[key].get("_previews", 0) + 1
    out = []
    for key, row in rows.items():
        n = row.pop("_previews", 0)
        out.append(
            {
                "request_key": key,
                "query_text": f"text of {row['query_id']}",
                "page": 0,
                "outcome": "ok",
                "http_status": 200,
                "attempts": 1,
                "sent_at": _SENT_AT,
                "latency_ms": 1.0,
                "clusters": n,
                "previews": n,
                "error": None,
                **row,
            }
        )
    return out


def _write(path: Path, rows: Sequence[Row], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema
    )
    pq.write_table(table, path)


def build_run(
    tmp_path: Path,
    *,
    hits: Sequence[Row] = (),
    judgments: Sequence[Row] = (),
    requests: Sequence[Row] = (),
    run_id: str = "test-run",
    suite_name: str = "test",
    manifest: Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete run directory under `tmp_path` and return it."""
    run_dir = tmp_path / f"suite={suite_name}" / "run_date=2024-01-01" / f"run_id={run_id}"
    run_dir.mkdir(parents=True)
    full_hits = _full_hits(hits)
    full_requests = _full_requests(full_hits, requests)
    _write(run_dir / HITS_FILE, full_hits, HITS_SCHEMA)
    _write(run_dir / REQUESTS_FILE, full_requests, REQUESTS_SCHEMA)
    _write(run_dir / JUDGMENTS_FILE, [{"source": "test", **j} for j in judgments], JUDGMENTS_SCHEMA)
    base = {
        "run_id": run_id,
        "suite_name": suite_name,
        "suite_hash": "0" * 16,
        "tool_version": "0.1.0",
        "base_url": "http://127.0.0.1:0",
        "dataset_id": "test",
        "started_at": _SENT_AT.isoformat(),
        "ended_at": _SENT_AT.isoformat(),
        "status": "complete",
        "counts": {
            "requests_planned": len(full_requests),
            "requests_done": len(full_requests),
            "requests_failed": 0,
            "pages": len(full_requests),
            "hits": len(full_hits),
        },
        "modes": sorted({r["mode"] for r in full_requests}),
        "sweep": {},
        "shard": None,
    }
    (run_dir / MANIFEST_FILE).write_text(json.dumps({**base, **(manifest or {})}), encoding="utf-8")
    return run_dir
