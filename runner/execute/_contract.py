"""A finished run's own answers judged by the API contract checks, kept in its manifest.

The checks are `runner.api.contract`'s, the ones `vlbench doctor` applies to its probes; here
they read only the first requests of each mode, so that a run of millions of hits pays little.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import polars as pl

from runner.api.contract import CONTRACT_KEY, Finding, run_findings
from runner.store import read_manifest, scan_hits, scan_requests, write_manifest

__all__ = ["record_contract"]

# Request keys per mode whose answers are checked: enough to see a flipped type or order.
_SAMPLE_REQUESTS: Final = 200
_HIT_COLUMNS: Final = (
    "request_key",
    "query_id",
    "mode",
    "entity_type",
    "threshold",
    "labels_filter",
    "cutoff",
    "cluster_rank",
    "preview_rank",
    "media_id",
    "score",
    "score_type",
)


def record_contract(run_dir: Path) -> list[Finding]:
    """Judge the run's first answers and store the findings under the manifest's `api_contract`."""
    requests = (
        scan_requests(run_dir)
        .select("request_key", "mode", "page", "outcome", "clusters", "error")
        .collect()
    )
    sample = (
        requests.select("mode", "request_key")
        .unique(maintain_order=True)
        .group_by("mode", maintain_order=True)
        .head(_SAMPLE_REQUESTS)["request_key"]
    )
    requests = requests.filter(pl.col("request_key").is_in(sample.to_list()))
    hits = (
        scan_hits(run_dir)
        .select(_HIT_COLUMNS)
        .filter(pl.col("request_key").is_in(sample.to_list()))
    )
    findings = run_findings(requests, hits.collect())
    manifest = read_manifest(run_dir)
    manifest[CONTRACT_KEY] = [f.to_dict() for f in findings]
    write_manifest(run_dir, manifest)
    return findings
