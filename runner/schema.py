"""The columns of a run directory's Parquet files: the contract between the runner and its readers.

The runner (`runner.store`) writes these; evaluation, reports, export, history and merge read
them. A column added here is added for all of them, so change the schema in this one place.

Scores: `raw_score` and `score_type` are what the API said; `score` is normalised so that higher
is always better (`cosine_distance` d -> 1 - d; similarities and bm25 as they are).
`cutoff` is the score threshold the request asked for in its own mode's terms (caption:
`textual_similarity_threshold`, semantic: the VQL `threshold`, fts: null).

Optional columns (`OPTIONAL_COLUMNS`) were added after runs were first written: a file without one
is still a run, read as if the column held nulls (`missing_columns`, `conform`). A new column
goes at the end of its schema and into `OPTIONAL_COLUMNS`, so that every older run stays readable.
"""

from __future__ import annotations

from typing import Final, TypeVar

import pyarrow as pa

__all__ = [
    "HITS_FILE",
    "HITS_SCHEMA",
    "JUDGMENTS_FILE",
    "JUDGMENTS_SCHEMA",
    "MANIFEST_FILE",
    "OPTIONAL_COLUMNS",
    "OUTCOMES",
    "REQUESTS_FILE",
    "REQUESTS_SCHEMA",
    "RUN_STATUSES",
    "SETTING_COLUMNS",
    "conform",
    "missing_columns",
    "normalise_score",
]

MANIFEST_FILE: Final = "manifest.json"
REQUESTS_FILE: Final = "requests.parquet"
HITS_FILE: Final = "hits.parquet"
JUDGMENTS_FILE: Final = "judgments.parquet"

RUN_STATUSES: Final = ("running", "complete", "partial", "failed")
OUTCOMES: Final = ("ok", "http_error", "timeout", "transport_error", "bad_body")

# The columns that, with query_id and mode, identify one setting of a request.
SETTING_COLUMNS: Final = (
    "setting",
    "entity_type",
    "threshold",
    "textual_similarity_threshold",
    "semantic_threshold",
    "cutoff",
    "labels_filter",
)

_SETTING_FIELDS: Final = [
    pa.field("setting", pa.string(), nullable=False),  # readable label, e.g. "tst=0.5" or "default"
    pa.field("entity_type", pa.string(), nullable=False),
    pa.field("threshold", pa.int8(), nullable=False),  # clustering granularity 0..4
    pa.field("textual_similarity_threshold", pa.float64()),
    pa.field("semantic_threshold", pa.float64()),
    pa.field("cutoff", pa.float64()),
    pa.field("labels_filter", pa.list_(pa.string())),
]

REQUESTS_SCHEMA: Final = pa.schema(
    [
        pa.field("request_key", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query_text", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        *_SETTING_FIELDS,
        pa.field("page", pa.int32(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # one of OUTCOMES
        pa.field("http_status", pa.int16()),
        pa.field("attempts", pa.int16(), nullable=False),
        pa.field("sent_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("clusters", pa.int32(), nullable=False),
        pa.field("previews", pa.int32(), nullable=False),
        pa.field("error", pa.string()),
    ]
)

HITS_SCHEMA: Final = pa.schema(
    [
        pa.field("request_key", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        *_SETTING_FIELDS,
        pa.field("page", pa.int32(), nullable=False),
        pa.field("cluster_rank", pa.int32(), nullable=False),  # 1-based, across pages
        pa.field("cluster_id", pa.string(), nullable=False),
        pa.field("cluster_size", pa.int32(), nullable=False),
        pa.field("cluster_score", pa.float64()),
        pa.field("preview_rank", pa.int32(), nullable=False),  # 1-based within its cluster
        pa.field("rank", pa.int32(), nullable=False),  # 1-based over the whole request
        pa.field("media_id", pa.string(), nullable=False),
        pa.field("file_name", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("raw_score", pa.float64()),
        pa.field("score_type", pa.string()),
        pa.field("score", pa.float64()),  # normalised: higher is better
        pa.field("labels", pa.list_(pa.string())),
        # The API's thumbnail of the hit (a URL, a data: URI, or null); runs before it lack it.
        pa.field("media_thumb_uri", pa.string()),
    ]
)

# Judgments copied into the run at its start, so a run evaluates with no suite beside it.
# kind: "media_id" or "file_name" (value names one item) or "label" (silver: an item carrying
# the label `value` is relevant with `grade`).
JUDGMENTS_SCHEMA: Final = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("grade", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)


_Rows = TypeVar("_Rows", pa.Table, pa.RecordBatch)

# Columns a file written before they existed may lack (each nullable, at the end of its schema).
OPTIONAL_COLUMNS: Final = frozenset({"media_thumb_uri"})


def missing_columns(found: pa.Schema, schema: pa.Schema) -> tuple[list[str], list[str]]:
    """How the columns of a file (`found`) fall short of `schema`: (wrong, absent optional).

    `wrong` names the columns missing or of another type (the file is not of this schema);
    `absent` the optional ones it lacks (an older file, read with them as nulls).
    """
    wrong: list[str] = []
    absent: list[str] = []
    for f in schema:
        index = found.get_field_index(f.name)  # -1: absent, or there twice
        if f.name not in found.names:
            (absent if f.name in OPTIONAL_COLUMNS else wrong).append(f.name)
        elif index < 0 or not found.field(index).type.equals(f.type):
            wrong.append(f.name)
    return wrong, absent


def conform(rows: _Rows, schema: pa.Schema) -> _Rows:
    """`rows` as `schema`: the optional columns it lacks added as nulls, columns in schema order.

    For rows of an older file (see `OPTIONAL_COLUMNS`); rows already of `schema` are returned as
    they are.
    """
    if rows.schema.equals(schema, check_metadata=False):
        return rows
    columns = [
        rows.column(f.name) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
        for f in schema
    ]
    return type(rows).from_arrays(columns, schema=schema)


def normalise_score(raw: float | None, score_type: str | None) -> float | None:
    """Map an API score onto one scale where higher is better.

    `cosine_distance` d becomes 1 - d; every other type (similarity, bm25) is already
    higher-is-better and is kept as it is.
    """
    if raw is None:
        return None
    if score_type == "cosine_distance":
        return 1.0 - raw
    return raw
