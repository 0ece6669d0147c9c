"""A request as the plan knows it: `RequestSpec` (one query, one mode, one setting), the
`WireRequest` that specs with identical parameters share, and `wire_params`, the exact query string.

Keys: `RequestSpec.wire_key` is a hash of the dataset and the exact query-string parameters, so
two queries with the same text and filters share one wire request; `RequestSpec.key` adds the
query id, so evaluation rows stay per query (`spec_keys`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

import orjson

__all__ = ["RequestSpec", "WireRequest", "spec_keys", "wire_params"]

_KEY_VERSION: Final = "vlbench-plan-v1"


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join((_KEY_VERSION, *parts)).encode()).hexdigest()[:16]


def spec_keys(dataset: str, params: dict[str, str], query_id: str) -> tuple[str, str]:
    """(wire key, key) of a spec: the same on any machine, whatever the order of `params`."""
    canonical = orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()
    wire_key = _digest(dataset, canonical)
    return wire_key, _digest(wire_key, query_id)


def wire_params(
    text: str,
    op: Literal["fts", "semantic"] | None,
    entity_type: str,
    granularity: int,
    cutoff: float | None,
    labels: tuple[str, ...] | None,
    anchor: str | None = None,
) -> dict[str, str]:
    """The query string of a search: `anchor_media_id=` when there is an anchor (visual search),
    `caption=` when op is None, else a VQL text filter."""
    params = {"entity_type": entity_type, "threshold": str(granularity)}
    if anchor is not None:
        params["anchor_media_id"] = anchor
        params["anchor_type"] = "MEDIA"
        if labels:
            params["labels"] = _json(list(labels))
        return params
    if op is None:
        params["caption"] = text
        if cutoff is not None:
            params["textual_similarity_threshold"] = repr(cutoff)
        if labels:
            params["labels"] = _json(list(labels))
        return params
    text_filter: dict[str, object] = {"op": op, "value": text}
    if cutoff is not None and op == "semantic":
        text_filter["threshold"] = cutoff
    vql: list[dict[str, object]] = [{"text": text_filter}]
    if labels:
        vql.append({"labels": {"op": "one_of", "value": list(labels)}})
    params["vql"] = _json(vql)
    return params


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One query asked in one mode at one setting; what a row of requests/hits is keyed by.

    `threshold` is the clustering granularity (the API's name); `cutoff` is the score cut-off
    in the mode's own terms (caption: `textual_similarity_threshold`, semantic:
    `semantic_threshold`, else None). `labels_filter` is sorted, None when the query has none.
    A spec of an anchor mode (`via: anchor`) sends `anchor_media_id`; its `query_text` reads
    `anchor:<media id>`, so that the stored rows say what was asked.
    """

    key: str
    wire_key: str
    query_id: str
    query_text: str
    mode: str
    via: Literal["caption", "vql", "anchor"]
    op: Literal["fts", "semantic"] | None
    setting: str
    entity_type: str
    threshold: int
    textual_similarity_threshold: float | None
    semantic_threshold: float | None
    cutoff: float | None
    labels_filter: tuple[str, ...] | None
    anchor_media_id: str | None = None

    def params(self) -> dict[str, str]:
        """The exact query-string parameters, VQL JSON-encoded (page_number not included)."""
        op = None if self.via == "caption" else self.op
        return wire_params(
            self.query_text,
            op,
            self.entity_type,
            self.threshold,
            self.cutoff,
            self.labels_filter,
            self.anchor_media_id,
        )


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One unique request on the wire and every spec (query id) that shares it, in plan order."""

    wire_key: str
    specs: tuple[RequestSpec, ...]

    @property
    def mode(self) -> str:
        return self.specs[0].mode

    @property
    def setting(self) -> str:
        return self.specs[0].setting

    @property
    def query_ids(self) -> tuple[str, ...]:
        return tuple(spec.query_id for spec in self.specs)

    def params(self) -> dict[str, str]:
        """The query-string parameters (the same for every spec sharing this request)."""
        return self.specs[0].params()
