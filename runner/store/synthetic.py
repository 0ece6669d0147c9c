"""Synthetic request units in the run schemas, for tests and benchmarks of anything that reads runs.

    requests, hits = synthetic_unit("k1", query_id="q1", pages=2, hits_per_page=50)
    writer.record(requests, hits)

Values are deterministic functions of the key and position, so a test can rebuild the expected
rows of any unit.
"""

from __future__ import annotations

import datetime as dt
import zlib
from typing import Final

import pyarrow as pa

from runner.schema import HITS_SCHEMA, REQUESTS_SCHEMA

__all__ = ["PREVIEWS_PER_CLUSTER", "synthetic_unit"]

PREVIEWS_PER_CLUSTER: Final = 4
_EPOCH: Final = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def synthetic_unit(
    key: str,
    *,
    query_id: str = "q1",
    mode: str = "caption",
    pages: int = 1,
    hits_per_page: int = 10,
    outcome: str = "ok",
) -> tuple[pa.Table, pa.Table]:
    """The request rows (one per page) and hit rows (in rank order) of one request unit.

    Scores fall with rank; cluster `c` of a page holds `PREVIEWS_PER_CLUSTER` previews. An
    `outcome` other than "ok" marks the last page as failed (no hits on it).
    """
    salt = zlib.crc32(key.encode())
    setting = {
        "setting": "tst=0.5",
        "entity_type": "IMAGES",
        "threshold": 0,
        "textual_similarity_threshold": 0.5,
        "semantic_threshold": None,
        "cutoff": 0.5,
        "labels_filter": None,
    }
    ok_pages = pages if outcome == "ok" else pages - 1
    requests = pa.Table.from_pylist(
        [
            {
                "request_key": key,
                "query_id": query_id,
                "query_text": f"query {query_id}",
                "mode": mode,
                **setting,
                "page": page,
                "outcome": "ok" if page < ok_pages else outcome,
                "http_status": 200 if page < ok_pages else 503,
                "attempts": 1 + (salt + page) % 3,
                "sent_at": _EPOCH + dt.timedelta(seconds=salt % 86_400, milliseconds=page),
                "latency_ms": float(10 + (salt + page) % 90),
                "clusters": -(-hits_per_page // PREVIEWS_PER_CLUSTER) if page < ok_pages else 0,
                "previews": hits_per_page if page < ok_pages else 0,
                "error": None if page < ok_pages else "HTTP 503",
            }
            for page in range(pages)
        ],
        schema=REQUESTS_SCHEMA,
    )
    n = ok_pages * hits_per_page
    rank = pa.array(range(1, n + 1), pa.int32())
    index = list(range(n))
    page_of = [i // hits_per_page for i in index]
    cluster_rank = [i // PREVIEWS_PER_CLUSTER + 1 for i in index]
    raw = [0.01 + i / (n + 1) * 0.49 for i in index]  # a cosine distance: grows with rank
    columns: dict[str, pa.Array] = {
        "request_key": pa.array([key] * n),
        "query_id": pa.array([query_id] * n),
        "mode": pa.array([mode] * n),
        **{
            name: pa.array([value] * n, HITS_SCHEMA.field(name).type)
            for name, value in setting.items()
        },
        "page": pa.array(page_of, pa.int32()),
        "cluster_rank": pa.array(cluster_rank, pa.int32()),
        "cluster_id": pa.array([f"c{(salt + c) % 100_000}" for c in cluster_rank]),
        "cluster_size": pa.array([PREVIEWS_PER_CLUSTER * 2] * n, pa.int32()),
        "cluster_score": pa.array([raw[(c - 1) * PREVIEWS_PER_CLUSTER] for c in cluster_rank]),
        "preview_rank": pa.array([i % PREVIEWS_PER_CLUSTER + 1 for i in index], pa.int32()),
        "rank": rank,
        "media_id": pa.array([f"m{(salt + i * 7919) % 1_000_003:07d}" for i in index]),
        "file_name": pa.array([f"img_{(salt + i) % 100_000:05d}.jpg" for i in index]),
        "caption": pa.array([f"a synthetic caption number {i}" for i in index]),
        "raw_score": pa.array(raw, pa.float64()),
        "score_type": pa.array(["cosine_distance"] * n),
        "score": pa.array([1.0 - r for r in raw], pa.float64()),
        "labels": pa.array([["cat", "indoor"] if i % 2 else ["dog"] for i in index]),
        "media_thumb_uri": pa.array(
            [f"https://cdn.invalid/t/{(salt + i) % 100_000:05d}.webp" for i in index]
        ),
    }
    hits = pa.Table.from_arrays([columns[f.name] for f in HITS_SCHEMA], schema=HITS_SCHEMA)
    return requests, hits
