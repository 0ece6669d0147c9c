"""A search answer's page: what a run stores of it as one Arrow array, decoded typed in C.

`parse_page(body, page_number)` decodes the body with msgspec straight into small typed structs
(`_StoredCluster`, each with its `_StoredPreview` hits best first: what a run stores, every
other key skipped unread), reading the JSON and checking every stored field's type in one C
pass, and hands them to `pyarrow.array` as nested tuples in one call, while the page is still
in the CPU's cache. No Python dict is made a cluster or a preview, and the structs die young.
The rows of the run are taken from that array by index (`runner.execute._rows`). `Page.clusters`
reads the body again for everything the API said (captions, media URIs, similarity thresholds).

Measured by bench/bench_client.py's last lines ("a page to what a run stores"): about 1.4 x the
CPU of `orjson.loads` alone, against ~1.8 x for `orjson.loads` + `pa.array` of the dicts (the
former way, which also needed seven checks after it) and ~2.7 x for `pyarrow.json`. Making the
structs into Arrow at each flush instead, many pages in one go, cost more: by then their
strings have left the cache.

The typed decoding is exact: a boolean is not a score, `3.5` or `3.0` is not a count, a string
is not a list of labels, a label is not null, a count fits an int32. Any body it refuses goes
through the careful path: the tolerant Python reading of every field (numeric strings, label
objects, null previews, whole-number floats, ...) whose result the same typed structs then
check, which also names what is wrong with a body that is not the contract. Both paths give the
same structs for the same body; a page that merely looks odd takes the slower path.

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
from typing import Annotated, Any, Final

import msgspec
import orjson
import pyarrow as pa
from msgspec.structs import astuple

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

# What a run stores of a preview (a hit), as Arrow.
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
# A count must fit the int32 column it is stored in.
_Count = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]


class _StoredPreview(msgspec.Struct, frozen=True, gc=False):
    """What a run stores of a preview (a hit): `PREVIEW_TYPE`'s fields in its order."""

    media_id: str
    file_name: str | None = None
    caption: str | None = None
    relevance_score: float | None = None
    relevance_score_type: str | None = None
    labels: list[str] | None = None
    media_thumb_uri: str | None = None


class _StoredCluster(msgspec.Struct, frozen=True, gc=False):
    """What a run stores of a cluster: `CLUSTER_TYPE`'s fields in its order, `previews` last."""

    cluster_id: str
    n_images: _Count
    relevance_score: float | None = None
    relevance_score_type: str | None = None
    labels: list[str] | None = None
    previews: list[_StoredPreview] | None = None


class _Answer(msgspec.Struct, gc=False):
    clusters: list[_StoredCluster]
    total_pages: _Count | None = None


_DECODER: Final = msgspec.json.Decoder(_Answer)


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
        answer = _DECODER.decode(body)
    except msgspec.DecodeError:  # not the contract to the letter (or not JSON): read it slowly
        stored, total = _careful(body)
        return Page(page_number, _stored_array(stored), body, total)
    return Page(page_number, _stored_array(answer.clusters), body, answer.total_pages)


def _careful(body: bytes) -> tuple[list[_StoredCluster], int | None]:
    """Read every field the tolerant way, then check it typed; `ValueError` off the contract."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON ({len(body)} bytes: {exc.msg})") from None
    root = mapping(data, "body")
    clusters = root.get("clusters")
    if not isinstance(clusters, list):
        raise ValueError("body has no clusters list")
    total = opt_int(root.get("total_pages"), "total_pages")
    cleaned = [_clean_cluster(item) for item in clusters]
    try:
        return msgspec.convert(cleaned, list[_StoredCluster]), total
    except msgspec.ValidationError as exc:
        raise ValueError(f"cluster values out of range: {exc}") from None


# -- to Arrow -----------------------------------------------------------------------------------


def _stored_array(clusters: list[_StoredCluster]) -> pa.StructArray:
    """The clusters as one Arrow array of `CLUSTER_TYPE`: nested tuples, one `pa.array` call.

    A struct's tuple holds its fields in the Arrow type's order (checked at import below).
    """
    array = pa.array(list(map(_cluster_row, clusters)), CLUSTER_TYPE)
    assert isinstance(array, pa.StructArray)
    return array


def _cluster_row(cluster: _StoredCluster) -> tuple[Any, ...]:
    previews = cluster.previews
    return (*astuple(cluster)[:-1], None if previews is None else list(map(astuple, previews)))


assert _StoredPreview.__struct_fields__ == tuple(PREVIEW_TYPE.names)
assert _StoredCluster.__struct_fields__ == tuple(CLUSTER_TYPE.names)


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
