"""The records between the local server's HTTP layer and its search index.

The app parses a request (query string, VQL) into a `SearchRequest`; `SearchIndex.search` answers
with `ClusterMatch`es, best first, each holding its matching `MemberMatch`es, best first.
`DatasetInfo` describes a dataset on disk (its `dataset.json`).

Score semantics (the README documents them; keep to them):

- `caption`: `score_type == "cosine_distance"`, score d = 1 - cos(query, caption) of the
  L2-normalised MiniLM embeddings of the query and of each item's one (AI) caption, lower is
  better; `cutoff` is a distance cut-off, a hit is kept when d <= cutoff (None ->
  `DEFAULT_CUTOFF`), so a stricter cut-off gives a subset.
- `semantic`: the same, with each item's image-level embedding in place of its caption's (see
  `runner.server.dataset`: imported, or the caption's when an item has none).
- `visual`: the same distance between the anchor item's image embedding (`value` is its media id)
  and every item's image embedding; the anchor itself is included (d = 0).
- `fts`: `score_type == "bm25"`, score = -bm25() of SQLite FTS5 (higher is better), OR of the
  query's terms, porter stemming, no cut-off (`cutoff` is ignored).
- no text: every item that passes the filters, `score_type == "none"`, score 0.0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DEFAULT_CUTOFF",
    "ENRICHMENTS",
    "GRANULARITIES",
    "LABEL_OPS",
    "ClusterMatch",
    "DatasetInfo",
    "EntityType",
    "LabelOp",
    "LabelRule",
    "MemberMatch",
    "ScoreType",
    "SearchRequest",
    "TextOp",
    "TextQuery",
]

TextOp = Literal["caption", "fts", "semantic", "visual"]
LabelOp = Literal["is", "is_not", "not_one_of"]
EntityType = Literal["IMAGES", "OBJECTS"]
ScoreType = Literal["cosine_distance", "bm25", "none"]

# The distance cut-off of caption and semantic search when a request gives none (the vendor
# client's "medium" preset).
DEFAULT_CUTOFF: Final = 0.8
# Clustering granularities, 0 finest .. 4 coarsest; each level's clusters are unions of the finer's.
GRANULARITIES: Final = (0, 1, 2, 3, 4)
# The enrichment names a dataset may carry: captions, image embeddings, labels (tagging), user tags.
ENRICHMENTS: Final = ("CAPTION_IMAGES", "MULTIMODEL_IMAGE_ENCODING", "IMAGE_TAGGING", "USER_TAGS")
# The VQL labels ops beside `one_of` (which is `SearchRequest.labels_one_of`).
LABEL_OPS: Final[tuple[LabelOp, ...]] = ("is", "is_not", "not_one_of")


@dataclass(frozen=True, slots=True)
class TextQuery:
    """The ranking part of a search: `caption` (= `image_caption`), VQL `fts` or `semantic`, or
    `visual` (`anchor_media_id`: `value` is the anchor's media id, known to the index).

    `cutoff` is the distance cut-off for `caption`/`semantic`/`visual` (keep d <= cutoff; None ->
    0.8); `fts` ignores it. `value` is the user's string as sent: the index makes it safe.
    """

    op: TextOp
    value: str
    cutoff: float | None = None


@dataclass(frozen=True, slots=True)
class LabelRule:
    """A VQL labels filter other than `one_of`, over an item's labels (none: the empty set).

    `is`: holds every value (one value: holds it); `is_not`: the negation of `is`;
    `not_one_of`: holds none of the values (the negation of `one_of`).
    """

    op: LabelOp
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One search over a dataset: every filter is ANDed; None means "no such filter".

    `granularity` is the API's `threshold` (0..4). `labels_one_of` keeps items holding any of the
    labels (the `labels` parameter and VQL `one_of`); every rule of `label_rules` must hold too.
    `tags_is` keeps items holding any of the tag ids. `duplicates` keeps items whose best
    similarity to another item is >= the value; `uniqueness` keeps items whose uniqueness score
    (1 - that best similarity) is >= the value.
    """

    entity_type: EntityType = "IMAGES"
    granularity: int = 0
    text: TextQuery | None = None
    labels_one_of: tuple[str, ...] | None = None
    label_rules: tuple[LabelRule, ...] = ()
    tags_is: tuple[str, ...] | None = None
    duplicates: float | None = None
    uniqueness: float | None = None


@dataclass(frozen=True, slots=True)
class MemberMatch:
    """One matching media item of a cluster, with its own score (see the module docstring)."""

    row: int
    media_id: str
    file_name: str
    caption: str | None
    score: float
    score_type: ScoreType
    width: int | None
    height: int | None
    media_uri: str | None
    labels: tuple[str, ...] | None
    tags: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class ClusterMatch:
    """A cluster at the asked granularity holding at least one match.

    `n_images` is the cluster's size in the dataset (not the number of matches); `score` is its
    best member's; `members` are the matching items, best first (ties by row).
    """

    cluster_id: str
    granularity: int
    n_images: int
    score: float
    score_type: ScoreType
    members: tuple[MemberMatch, ...]


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What `dataset.json` says about a dataset on disk.

    `created_at` is timezone-aware UTC. `labels` and `tags` are every distinct label / tag id in
    the dataset, sorted.

    `enrichments` holds names from `ENRICHMENTS`: CAPTION_IMAGES when items have captions,
    MULTIMODEL_IMAGE_ENCODING when any item has an imported image embedding, IMAGE_TAGGING when
    any item has labels, USER_TAGS when any item has tags. A server may hide some
    (`ServerConfig.hidden_enrichments`); `n_captions` still says whether the items have captions
    (None: unknown, then CAPTION_IMAGES says it).
    """

    id: str
    display_name: str
    n_images: int
    enrichments: frozenset[str]
    created_at: dt.datetime
    labels: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    n_captions: int | None = None

    @property
    def has_captions(self) -> bool:
        """Whether the items have captions (what full-text search needs), enrichment or not."""
        if self.n_captions is None:
            return "CAPTION_IMAGES" in self.enrichments
        return self.n_captions > 0

    @property
    def dataset_id(self) -> str:
        """The same as `id`."""
        return self.id
