"""A search answer's page: what a run stores of it as one Arrow array, converted in C.

`parse_page(body, page_number)` parses the body with orjson and hands the clusters, as they
come, to `pyarrow.array(clusters, type=CLUSTER_TYPE)`: the per-preview work (hundreds of
previews a page, a page a request) is done by Arrow's converter instead of a Python loop, no
Python object is kept a hit, and the rows of the run are taken from that array by index
(`runner.execute._rows`). `CLUSTER_TYPE` holds what a run stores (the thumbnail URI included,
not the full media URI); `Page.clusters` reads the body again for everything the API said
(captions, media URIs, similarity thresholds).

Arrow's converter accepts a little more than the contract, silently: `true` as a number (1.0), a
fractional count (3.5 -> 3), a string as a list of its characters, a null inside a list. So the
fast path keeps its array only when none of that can have happened: every `n_images` is a plain
integer (looked at before converting, one look a cluster) and, looked at after on the array,
there is no score of exactly 0 or 1, no empty label list, no null or one-character label. Any
other page, and any page Arrow refuses, goes through the careful path: the tolerant Python
reading of every field (numeric strings, label objects, null previews, ...), which also names
what is wrong with a body that is not the contract. Both paths give the same array for the same
body; a page that only looks odd (a genuine score of 0) merely takes the slower path.

The legacy answer shape of older documentation (clusters as `{"id", "entity_type", "size",
"media": [{"id", "filename", "preview", "caption", "relevance_score"}]}`, `total_pages` and
`current_page` at the top) has no `cluster_id`, so it always takes the careful path, which reads
`id`, `size`, `media`, `filename` and `preview` as `cluster_id`, `n_images`, `previews`,
`file_name` and `media_uri`: the same rows as the current shape. A body with neither shape is a
bad body (`ValueError` here, `BadBody` from the client).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CLUSTER_TYPE",
    "PREVIEW_TYPE",
    "Cluster",
    "Page",
    "Preview",
    "parse_page",
]

_TEXT: Final = pa.string()
_TEXTS: Final = pa.list_(pa.string())

# What a run stores of a preview (a hit); the converter ignores every other key.
PREVIEW_TYPE: Final = pa.struct(
    [
        pa.field("media_id", _TEXT),
        pa.field("file_name", _TEXT),
        pa.field("caption", _TEXT),
        pa.field("relevance_score", pa.float64()),
        pa.field("relevance_score_type", _TEXT),
        pa.field("labels", _TEXTS),
        pa.field("media_thumb_uri", _TEXT),
    ]
)
# What a run stores of a cluster, its matching previews nested best first.
CLUSTER_TYPE: Final = pa.struct(
    [
        pa.field("cluster_id", _TEXT),
        pa.field("n_images", pa.int32()),
        pa.field("relevance_score", pa.float64()),
        pa.field("relevance_score_type", _TEXT),
        pa.field("labels", _TEXTS),
        pa.field("previews", pa.list_(PREVIEW_TYPE)),
    ]
)
# The types the converter reads exactly (see the module's docstring).
_COUNT: Final = frozenset({int})
_CONVERSION_ERRORS: Final = (pa.ArrowException, TypeError, ValueError, OverflowError)


@dataclass(frozen=True, slots=True)
class Preview:
    """One media item shown in a cluster: a hit."""

    media_id: str
    file_name: str | None
    caption: str | None
    relevance_score: float | None
    relevance_score_type: str | None
    media_uri: str | None = None
    labels: tuple[str, ...] | None = None
    media_thumb_uri: str | None = None


@dataclass(frozen=True, slots=True)
class Cluster:
    """One cluster of a search answer, with its matching members (`previews`) best first."""

    cluster_id: str
    n_images: int
    similarity_threshold: str | None
    relevance_score: float | None
    relevance_score_type: str | None
    previews: tuple[Preview, ...]
    captions: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a search: up to 100 clusters; `total_pages` when the API said so.

    `data` holds what a run stores of the clusters: one Arrow struct array of `CLUSTER_TYPE`, in
    the API's order, each with its previews nested best first (`cluster_id`, `n_images` and
    every `media_id` are never null; `previews` may be null for none). `clusters` gives every
    field the API sent as `Cluster` objects, read from `body` again on each access.
    """

    page_number: int
    data: pa.StructArray
    body: bytes = field(repr=False)  # the answer as received, for `clusters`
    total_pages: int | None = None

    @property
    def n_clusters(self) -> int:
        return len(self.data)

    @property
    def n_previews(self) -> int:
        """The hits on this page."""
        offsets = self.data.field("previews").offsets
        return int(offsets[-1].as_py() - offsets[0].as_py())

    @property
    def clusters(self) -> tuple[Cluster, ...]:
        """The clusters, best first, each with its previews (typed objects, made on access)."""
        clusters = orjson.loads(self.body)["clusters"]
        return tuple(_cluster(_clean_cluster(item)) for item in clusters)


def _cluster(item: dict[str, Any]) -> Cluster:
    previews = tuple(
        Preview(
            p["media_id"],
            p["file_name"],
            p["caption"],
            p["relevance_score"],
            p["relevance_score_type"],
            p["media_uri"],
            p["labels"],
            p["media_thumb_uri"],
        )
        for p in item["previews"]
    )
    return Cluster(
        item["cluster_id"],
        item["n_images"],
        item["similarity_threshold"],
        item["relevance_score"],
        item["relevance_score_type"],
        previews,
        item["captions"],
        item["labels"],
    )


# -- parsing ------------------------------------------------------------------------------------


def parse_page(body: bytes, page_number: int) -> Page:
    """Parse a search answer's body into a `Page`.

    Raises `ValueError` (the client turns it into `BadBody`) for a body that is not JSON or has
    no `clusters` list, or a cluster without an id or a preview without a media id.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON ({len(body)} bytes: {exc.msg})") from None
    root = mapping(data, "body")
    clusters = root.get("clusters")
    if not isinstance(clusters, list):
        raise ValueError("body has no clusters list")
    total = opt_int(root.get("total_pages"), "total_pages")
    array = _fast(clusters)
    if array is None:
        array = _careful(clusters)
    return Page(page_number, array, body, total)


def _fast(clusters: list[Any]) -> pa.StructArray | None:
    """The clusters converted by Arrow as they are, or None when the careful path must read them."""
    try:
        # The one leniency that cannot be seen afterwards: a fractional count is truncated.
        if not set(map(type, map(dict.get, clusters, repeat("n_images")))) <= _COUNT:
            return None
        array = pa.array(clusters, type=CLUSTER_TYPE)
    except _CONVERSION_ERRORS:  # also a cluster or a preview that is not an object
        return None
    assert isinstance(array, pa.StructArray)
    previews = array.field("previews").flatten()
    if array.null_count or array.field("cluster_id").null_count:
        return None
    if previews.null_count or previews.field("media_id").null_count:
        return None
    if _maybe_bool(array.field("relevance_score")) or _maybe_bool(
        previews.field("relevance_score")
    ):
        return None
    if _maybe_text(array.field("labels")) or _maybe_text(previews.field("labels")):
        return None
    return array


def _maybe_bool(scores: pa.Array) -> bool:
    """Whether a score may have been a JSON boolean (read as 0.0 or 1.0)."""
    values = scores.to_numpy(zero_copy_only=False)
    return bool(((values == 0.0) | (values == 1.0)).any())


def _maybe_text(lists: pa.ListArray) -> bool:
    """Whether a list of labels may have been a string, or held a null.

    A string is read as the list of its characters ("" as the empty list), so an empty list or a
    one-character label sends the page the careful way, which refuses a string.
    """
    if pc.min(pc.list_value_length(lists)).as_py() == 0:
        return True
    labels = lists.flatten()
    if not len(labels):
        return False
    return bool(labels.null_count) or pc.min(pc.utf8_length(labels)).as_py() <= 1


def _careful(clusters: list[Any]) -> pa.StructArray:
    """Read every field the tolerant way, then convert; `ValueError` for a body off the contract."""
    cleaned = [_clean_cluster(item) for item in clusters]
    try:
        array = pa.array(cleaned, type=CLUSTER_TYPE)
    except _CONVERSION_ERRORS as exc:
        raise ValueError(f"cluster values out of range: {exc}") from None
    assert isinstance(array, pa.StructArray)
    return array


def _clean_cluster(item: object) -> dict[str, Any]:
    """Every field of a cluster, the tolerant way (`ValueError` for what cannot be read)."""
    if type(item) is not dict:
        raise ValueError(f"cluster is {type(item).__name__}, not an object")
    get = item.get
    # The legacy shape names them `id`, `media` and `size` (see the module's docstring).
    cluster_id = _either(item, "cluster_id", "id")
    if cluster_id is None:
        raise ValueError("cluster has no cluster_id")
    cluster_id = text(cluster_id, "cluster_id")
    previews = _either(item, "previews", "media") or ()
    if type(previews) is not list and previews != ():
        raise ValueError("previews is not a list")
    cleaned = [_clean_preview(preview) for preview in previews]
    n_images = opt_int(_either(item, "n_images", "size"), "n_images")
    captions = get("captions") or ()
    return {
        "cluster_id": cluster_id,
        "n_images": len(cleaned) if n_images is None else n_images,
        "similarity_threshold": _str_or_none(get("similarity_threshold")),
        "relevance_score": opt_float(get("relevance_score"), "cluster relevance_score"),
        "relevance_score_type": _str_or_none(get("relevance_score_type")),
        "captions": tuple([str(c) for c in captions]) if type(captions) is list else (),
        "labels": _labels(get("labels")),
        "previews": cleaned,
    }


def _clean_preview(preview: object) -> dict[str, Any]:
    if type(preview) is not dict:
        raise ValueError(f"preview is {type(preview).__name__}, not an object")
    get = preview.get
    media_id = _either(preview, "media_id", "id")
    if media_id is None:
        raise ValueError("preview has no media_id")
    return {
        "media_id": text(media_id, "media_id"),
        "file_name": _str_or_none(_either(preview, "file_name", "filename")),
        "caption": _str_or_none(get("caption")),
        "relevance_score": opt_float(get("relevance_score"), "preview relevance_score"),
        "relevance_score_type": _str_or_none(get("relevance_score_type")),
        "media_uri": _str_or_none(_either(preview, "media_uri", "preview")),
        "labels": _labels(get("labels")),
        "media_thumb_uri": _str_or_none(get("media_thumb_uri")),
    }


def _either(item: dict[str, Any], key: str, legacy: str) -> Any:
    """`item[key]`, else the legacy shape's `item[legacy]`, else None."""
    value = item.get(key)
    return item.get(legacy) if value is None else value


# -- the tolerant readers of one value (the client's other answers use them too) ----------------


def text(value: object, what: str) -> str:
    """A string, or a number as its string; `ValueError` for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{what} is {type(value).__name__}, not a string")


def opt_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(value)


def opt_float(value: object, what: str) -> float | None:
    """A score that may come as a number, a numeric string or null."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{what} {value[:40]!r} is not a number") from None
    raise ValueError(f"{what} is {type(value).__name__}, not a number")


def opt_int(value: object, what: str) -> int | None:
    number = opt_float(value, what)
    if number is None:
        return None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{what} {value!r} is not an integer")
    return int(number)


def mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is {type(value).__name__}, not an object")
    return value


def _labels(value: object) -> tuple[str, ...] | None:
    """Labels as strings: null stays None; objects give their name (`name`, `label`, `value`)."""
    if value is None:
        return None
    if type(value) is not list:
        raise ValueError(f"labels is {type(value).__name__}, not a list")
    out: list[str] = []
    for item in value:
        if isinstance(item, dict):
            name = item.get("name", item.get("label", item.get("value")))
            out.append(str(name))
        else:
            out.append(str(item))
    return tuple(out)


def _str_or_none(value: object) -> str | None:
    return value if value is None or type(value) is str else str(value)
