"""The JSON the local server answers with: explore pages and the dataset record, and the
deliberate contract changes (`vlbench serve --fault contract=...`) that contract checkers test on.

    body = explore_body(clusters, "IMAGES", page_number=0, total_pages=3, changes=frozenset())

Contract changes (none by default; several may be on at once):

- `score-type-flip`: cosine scores are reported as `cosine_similarity` = 1 - d (higher is
  better) instead of `cosine_distance` d: same ranking, opposite direction.
- `score-as-string`: every `relevance_score` is a JSON string ("0.63") instead of a number.
- `rename-field`: `relevance_score` is called `score` (clusters and previews).
- `legacy-shape`: the older documentation's answer: clusters as `{"id", "entity_type", "size",
  "relevance_score", "relevance_score_type", "media": [previews]}` and `total_pages` /
  `current_page` at the top.
- `legacy-status`: the dataset record carries the legacy `status` (NEW, INDEXING, READY,
  FATAL_ERROR) and no `status_new`.
- `image-filename`: export files call `file_name` `image_filename` (runner.server.exports).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from runner.server.query import ClusterMatch, MemberMatch

__all__ = ["LEGACY_STATUS", "cluster_json", "dataset_body", "explore_body", "preview_json"]

# status_new -> the legacy `status` the older API answered with.
LEGACY_STATUS: Final = {
    "DRAFT": "NEW",
    "INDEXING": "INDEXING",
    "READ ONLY": "READY",
    "PARTIAL INDEX": "READY",
    "READY": "READY",
    "ERROR": "FATAL_ERROR",
}


def explore_body(
    clusters: Sequence[ClusterMatch],
    entity_type: str,
    *,
    page_number: int,
    total_pages: int,
    changes: frozenset[str],
) -> dict[str, Any]:
    """One explore page; `total_pages` is shown by the legacy shape only."""
    shaped = [_changed(cluster_json(c, entity_type), changes) for c in clusters]
    if "legacy-shape" in changes:
        return {
            "clusters": [_legacy_cluster(c) for c in shaped],
            "total_pages": total_pages,
            "current_page": page_number,
        }
    return {"clusters": shaped, "metadata": {"used_duckdb": True}}


def dataset_body(record: dict[str, Any], status: str, changes: frozenset[str]) -> dict[str, Any]:
    """The dataset record with its status, as `status_new` or (legacy-status) `status`."""
    if "legacy-status" in changes:
        return record | {"status": LEGACY_STATUS[status]}
    return record | {"status_new": status}


def cluster_json(cluster: ClusterMatch, entity_type: str) -> dict[str, Any]:
    """A cluster as documented; `captions` is null when no member has one."""
    members = cluster.members
    captions = list(dict.fromkeys(m.caption for m in members if m.caption))
    return {
        "cluster_id": cluster.cluster_id,
        "type": entity_type,
        "n_images": cluster.n_images,
        # Datasets here hold images only.
        "n_objects": 0,
        "n_videos": 0,
        "similarity_threshold": str(cluster.granularity),
        "relevance_score": cluster.score,
        "relevance_score_type": cluster.score_type,
        "captions": captions or None,
        "previews": [preview_json(m) for m in members],
        "labels": _union(m.labels for m in members),
        "user_tags": _union(m.tags for m in members),
    }


def preview_json(member: MemberMatch) -> dict[str, Any]:
    """A preview as documented, plus `labels` (a local extension: the item's own labels)."""
    return {
        "type": "IMAGE",
        "media_id": member.media_id,
        "media_uri": member.media_uri,
        # No thumbnails are made locally: the thumbnail is the image itself.
        "media_thumb_uri": member.media_uri,
        "caption": member.caption,
        "file_name": member.file_name,
        # Only object previews carry a box; these are images.
        "bounding_box": None,
        "relevance_score": member.score,
        "relevance_score_type": member.score_type,
        "width": member.width,
        "height": member.height,
        "labels": list(member.labels) if member.labels else None,
    }


def _union(groups: Iterator[tuple[str, ...] | None]) -> list[str] | None:
    """The sorted union of the groups, or None when there is nothing (as the API's null)."""
    items = {item for group in groups if group for item in group}
    return sorted(items) if items else None


def _changed(cluster: dict[str, Any], changes: frozenset[str]) -> dict[str, Any]:
    if not changes:
        return cluster
    cluster = _scored(cluster, changes)
    cluster["previews"] = [_scored(p, changes) for p in cluster["previews"]]
    return cluster


def _scored(item: dict[str, Any], changes: frozenset[str]) -> dict[str, Any]:
    """`item` (a cluster or preview) with its score changed as `changes` say."""
    item = dict(item)
    score = item["relevance_score"]
    if "score-type-flip" in changes and item["relevance_score_type"] == "cosine_distance":
        item["relevance_score_type"] = "cosine_similarity"
        score = 1.0 - score
    if "score-as-string" in changes:
        score = f"{score:g}"
    del item["relevance_score"]
    item["score" if "rename-field" in changes else "relevance_score"] = score
    return item


def _legacy_cluster(cluster: dict[str, Any]) -> dict[str, Any]:
    score_key = "score" if "score" in cluster else "relevance_score"
    return {
        "id": cluster["cluster_id"],
        "entity_type": cluster["type"],
        "size": cluster["n_images"],
        score_key: cluster[score_key],
        "relevance_score_type": cluster["relevance_score_type"],
        "media": cluster["previews"],
    }
