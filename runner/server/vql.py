"""Parse and validate a search's query string (plain parameters and VQL) into a `SearchRequest`.

    parsed = parse_explore(request.query, index.info)   # ExploreQuery(request, page_number)

Every problem found is collected and raised together as `ValidationFailed` (422, FastAPI-style
items with `loc` such as `["query", "threshold"]` or `["query", "vql", 0, "text", "op"]`).
A request that is well formed but asks for something the dataset cannot serve raises
`HttpError(409)` naming the missing enrichment: `issues` filters (no quality-issue enrichment
here), `entity_type=OBJECTS` or `anchor_type=OBJECT` (no object detection), labels without
IMAGE_TAGGING, caption search, duplicates or uniqueness without CAPTION_IMAGES, fts without any
captions (imported ones do: fts needs no enrichment), semantic search without
MULTIMODEL_IMAGE_ENCODING or CAPTION_IMAGES, visual search without MULTIMODEL_IMAGE_ENCODING.

Choices where the contract is silent (the README repeats them):
- `caption` wins over the deprecated `image_caption` when both are given.
- One ranking a request: two of `caption`, a VQL text filter, `anchor_media_id` are a 422.
- A parameter the endpoint does not know is a 422 (`extra_forbidden`, naming it): silently
  ignoring, say, `page_size` or a misspelt `anchor_media_id` would change the answer unseen.
- A filter object holds one filter key and may carry an `"id"` (a string: the client's name for
  it, ignored). Labels ops: `one_of` (a list), `is` / `is_not` (a string or a list),
  `not_one_of` (a list); see `runner.server.query.LabelRule` for their meaning.
- `anchor_type` is MEDIA (the default), UPLOAD or OBJECT; whether the anchor exists is the app's
  question (404 naming it). `textual_similarity_threshold` is the visual search's distance
  cut-off too (default 0.8), so a suite sweeps it as for caption search.
- `labels=[]` / `tags=[]` as plain parameters mean "no filter"; an empty VQL `value` list is a 422.
- A one-of labels (or tags) filter given both as a parameter and in VQL is a 422: one-of sets
  cannot be ANDed into one one-of set. Labels rules (`is`, `is_not`, `not_one_of`) AND freely.
- Text values: 1..2,048 characters, no NUL; `vql`, `labels`, `tags`: at most 20,000 characters.
- Filter objects reject unknown keys; a VQL fts `threshold` is validated and ignored (fts has no
  cut-off); `textual_similarity_threshold` is validated always and used with `caption` and
  `anchor_media_id` only.
- `entity_type` is required by explore (as documented) and defaults to IMAGES for exports;
  exports require `file_name` and `export_format` (as documented).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from runner.server.errors import HttpError, Loc, ValidationFailed
from runner.server.params import (
    Parts,
    good_text,
    int_param,
    json_param,
    label,
    set_list,
    string_list,
    tag_id,
    unit_float,
)
from runner.server.query import (
    LABEL_OPS,
    DatasetInfo,
    LabelRule,
    SearchRequest,
    TextQuery,
)

__all__ = [
    "EXPLORE_PARAMS",
    "EXPORT_PARAMS",
    "ExploreQuery",
    "ExportQuery",
    "check_servable",
    "parse_explore",
    "parse_export",
]

# page_number beyond this is refused rather than turned into a huge integer.
_MAX_PAGE: Final = 1_000_000_000
_EXPORT_FORMATS: Final = ("parquet", "json")
_BOOLS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_FILTER_KINDS: Final = ("text", "labels", "tags", "issues", "duplicates", "uniqueness")
_ANCHOR_TYPES: Final = ("MEDIA", "UPLOAD", "OBJECT")
_FILTER_PARAMS: Final = (
    "caption",
    "image_caption",
    "textual_similarity_threshold",
    "labels",
    "tags",
    "vql",
    "anchor_media_id",
    "anchor_type",
)
EXPLORE_PARAMS: Final = ("entity_type", "threshold", "page_number", *_FILTER_PARAMS)
EXPORT_PARAMS: Final = (
    "entity_type",
    "export_format",
    "file_name",
    "include_images",
    *_FILTER_PARAMS,
)


@dataclass(frozen=True, slots=True)
class ExploreQuery:
    """A parsed `GET /api/v1/explore/{dataset_id}`: the search and the (0-based) page.

    `anchor_type` is set with a visual search (`request.text.op == "visual"`).
    """

    request: SearchRequest
    page_number: int
    anchor_type: str | None = None


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """A parsed `export_context_async`: the filters, the ZIP's format and name."""

    request: SearchRequest
    export_format: Literal["parquet", "json"]
    file_name: str
    include_images: bool
    anchor_type: str | None = None


def parse_explore(query: Mapping[str, str], info: DatasetInfo) -> ExploreQuery:
    """Validate an explore query string; raise `ValidationFailed` (422) or `HttpError` (409)."""
    parts = Parts()
    _known(parts, query, EXPLORE_PARAMS)
    entity = query.get("entity_type")
    if entity is None:
        parts.fail("missing", ("query", "entity_type"), "Field required", None)
    else:
        _entity_type(parts, entity)
    threshold = int_param(parts, query, "threshold", default=0, lo=0, hi=4)
    page = int_param(parts, query, "page_number", default=0, lo=0, hi=_MAX_PAGE)
    _filters(parts, query)
    if parts.issues:
        raise ValidationFailed(parts.issues)
    parts.granularity = threshold
    request = parts.request()
    check_servable(request, info, wants_issues=parts.wants_issues, anchor_type=parts.anchor_type)
    return ExploreQuery(request, page, parts.anchor_type)


def parse_export(query: Mapping[str, str], info: DatasetInfo) -> ExportQuery:
    """Validate an export_context_async query string (`entity_type` defaults to IMAGES)."""
    parts = Parts()
    _known(parts, query, EXPORT_PARAMS)
    _entity_type(parts, query.get("entity_type", "IMAGES"))
    export_format = query.get("export_format")
    if export_format is None:
        parts.fail("missing", ("query", "export_format"), "Field required", None)
    elif export_format not in _EXPORT_FORMATS:
        parts.fail(
            "enum", ("query", "export_format"), "Input should be 'parquet' or 'json'", export_format
        )
    file_name = query.get("file_name")
    if file_name is None:
        parts.fail("missing", ("query", "file_name"), "Field required", None)
    else:
        good_text(parts, ("query", "file_name"), file_name)
    include = query.get("include_images", "false")
    if include.lower() not in _BOOLS:
        parts.fail(
            "bool_parsing", ("query", "include_images"), "Input should be a valid boolean", include
        )
    _filters(parts, query)
    if parts.issues:
        raise ValidationFailed(parts.issues)
    request = parts.request()
    check_servable(request, info, wants_issues=parts.wants_issues, anchor_type=parts.anchor_type)
    fmt: Literal["parquet", "json"] = "json" if export_format == "json" else "parquet"
    return ExportQuery(
        request, fmt, file_name or "", _BOOLS.get(include.lower(), False), parts.anchor_type
    )


def check_servable(
    request: SearchRequest,
    info: DatasetInfo,
    *,
    wants_issues: bool = False,
    anchor_type: str | None = None,
) -> None:
    """Raise `HttpError(409)` naming the enrichment the dataset lacks for `request`."""
    if wants_issues:
        raise _missing(info, "ISSUES", "issues filters need quality-issue detection")
    if request.entity_type == "OBJECTS":
        raise _missing(info, "OBJECT_DETECTION", "entity_type=OBJECTS needs detected objects")
    if anchor_type == "OBJECT":
        raise _missing(info, "OBJECT_DETECTION", "anchor_type=OBJECT needs detected objects")
    has_captions = "CAPTION_IMAGES" in info.enrichments
    has_image_encoding = "MULTIMODEL_IMAGE_ENCODING" in info.enrichments
    has_images = has_captions or has_image_encoding
    has_text = info.has_captions
    text = request.text
    if text is not None and text.op == "semantic" and not has_images:
        raise _missing(
            info,
            "MULTIMODEL_IMAGE_ENCODING or CAPTION_IMAGES",
            "semantic search needs image embeddings",
        )
    # Visual search compares images with images: captions alone do not make it (the client's
    # preflight asks the same, runner.execute._preflight).
    if text is not None and text.op == "visual" and not has_image_encoding:
        raise _missing(info, "MULTIMODEL_IMAGE_ENCODING", "visual search needs image embeddings")
    if text is not None and text.op == "caption" and not has_captions:
        raise _missing(info, "CAPTION_IMAGES", "caption search needs AI captions")
    if text is not None and text.op == "fts" and not has_text:
        # Any captions do, imported ones included; the enrichment is not needed.
        raise HttpError(
            409,
            f"Dataset {info.id} has no captions (imported or CAPTION_IMAGES): fts search needs "
            "captions",
        )
    if (request.duplicates is not None or request.uniqueness is not None) and not has_captions:
        raise _missing(info, "CAPTION_IMAGES", "duplicates/uniqueness need caption embeddings")
    has_labels = request.labels_one_of is not None or request.label_rules
    if has_labels and "IMAGE_TAGGING" not in info.enrichments:
        raise _missing(info, "IMAGE_TAGGING", "labels filters need image tagging")


def _missing(info: DatasetInfo, enrichment: str, why: str) -> HttpError:
    return HttpError(409, f"Dataset {info.id} has no {enrichment} enrichment: {why}")


def _known(parts: Parts, query: Mapping[str, str], known: tuple[str, ...]) -> None:
    for name in dict.fromkeys(query):
        if name not in known:
            msg = f"Extra inputs are not permitted; this endpoint takes: {', '.join(known)}"
            parts.fail("extra_forbidden", ("query", name), msg, query[name])


def _entity_type(parts: Parts, value: str) -> None:
    if value == "IMAGES":
        parts.entity_type = "IMAGES"
    elif value == "OBJECTS":
        parts.entity_type = "OBJECTS"
    else:
        parts.fail("enum", ("query", "entity_type"), "Input should be 'IMAGES' or 'OBJECTS'", value)


def _filters(parts: Parts, query: Mapping[str, str]) -> None:
    cutoff = _caption(parts, query)
    _anchor(parts, query, cutoff)
    for name, convert in (("labels", label), ("tags", tag_id)):
        value = json_param(parts, query, name)
        if value is None:
            continue
        items = string_list(parts, ("query", name), value, convert, allow_empty=True)
        if items:
            set_list(parts, name, items, ("query", name))
    vql = json_param(parts, query, "vql")
    if vql is None:
        return
    if not isinstance(vql, list):
        parts.fail("list_type", ("query", "vql"), "Input should be a valid list", vql)
        return
    for position, item in enumerate(vql):
        _vql_filter(parts, ("query", "vql", position), item)


def _caption(parts: Parts, query: Mapping[str, str]) -> float | None:
    """Record a caption search; return `textual_similarity_threshold` (caption and visual)."""
    # The cut-off is validated even without a caption (a client bug worth hearing about), but
    # only a caption or visual search uses it.
    cutoff = None
    raw_cutoff = query.get("textual_similarity_threshold")
    if raw_cutoff is not None:
        cutoff = unit_float(parts, ("query", "textual_similarity_threshold"), raw_cutoff)
    name = "caption" if "caption" in query else "image_caption"
    value = query.get(name)
    if value is None:
        return cutoff
    loc: Loc = ("query", name)
    if good_text(parts, loc, value):
        parts.text, parts.text_loc = TextQuery("caption", value, cutoff), loc
    return cutoff


def _ranked_already(parts: Parts, loc: Loc, what: str, value: object) -> bool:
    """Whether an earlier parameter gives the request its ranking (then a 422 issue at `loc`).

    A request is ranked by one thing: a caption, an anchor or one VQL text filter.
    """
    if parts.text_loc is None:
        return False
    where = ".".join(map(str, parts.text_loc))
    msg = f"Value error, one {what} a request; {where} already gives one"
    parts.fail("value_error", loc, msg, value)
    return True


def _anchor(parts: Parts, query: Mapping[str, str], cutoff: float | None) -> None:
    anchor, anchor_type = query.get("anchor_media_id"), query.get("anchor_type")
    if anchor_type is not None and anchor_type not in _ANCHOR_TYPES:
        expected = " or ".join(repr(t) for t in _ANCHOR_TYPES)
        parts.fail("enum", ("query", "anchor_type"), f"Input should be {expected}", anchor_type)
        return
    if anchor is None:
        if anchor_type is not None:
            msg = "Value error, anchor_type needs anchor_media_id"
            parts.fail("value_error", ("query", "anchor_type"), msg, anchor_type)
        return
    loc: Loc = ("query", "anchor_media_id")
    if not good_text(parts, loc, anchor, limit=256):
        return
    if _ranked_already(parts, loc, "ranking", anchor):
        return
    parts.text, parts.text_loc = TextQuery("visual", anchor.strip(), cutoff), loc
    parts.anchor_type = anchor_type or "MEDIA"


def _vql_filter(parts: Parts, loc: Loc, item: object) -> None:
    if not isinstance(item, dict):
        parts.fail("dict_type", loc, "Input should be a valid dictionary", item)
        return
    keys = [k for k in item if k != "id"]
    if len(keys) != 1 or keys[0] not in _FILTER_KINDS:
        kinds = ", ".join(_FILTER_KINDS)
        msg = f"Value error, a filter is an object with exactly one key of: {kinds} (and an id)"
        parts.fail("value_error", loc, msg, item)
        return
    if "id" in item and not isinstance(item["id"], str):
        parts.fail("string_type", (*loc, "id"), "Input should be a valid string", item["id"])
        return
    kind, body = keys[0], item[keys[0]]
    here: Loc = (*loc, kind)
    if not isinstance(body, dict):
        parts.fail("dict_type", here, "Input should be a valid dictionary", body)
        return
    _VQL_PARSERS[kind](parts, here, body)


def _fields(
    parts: Parts,
    loc: Loc,
    body: dict[str, object],
    op: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> bool:
    """Check `op` is one of `op` and that only value/op/optional keys are present."""
    ok = True
    for key in body:
        if key not in ("op", "value", *optional):
            parts.fail("extra_forbidden", (*loc, key), "Extra inputs are not permitted", body[key])
            ok = False
    for key in ("op", "value"):
        if key not in body:
            parts.fail("missing", (*loc, key), "Field required", None)
            ok = False
    if "op" in body and body["op"] not in op:
        expected = " or ".join(repr(o) for o in op)
        parts.fail("literal_error", (*loc, "op"), f"Input should be {expected}", body["op"])
        ok = False
    return ok


def _vql_text(parts: Parts, loc: Loc, body: dict[str, object]) -> None:
    if not _fields(parts, loc, body, ("fts", "semantic"), ("threshold",)):
        return
    value = body["value"]
    cutoff = None
    if body["op"] == "semantic" and body.get("threshold") is not None:
        cutoff = unit_float(parts, (*loc, "threshold"), body["threshold"])
        if cutoff is None:
            return
    elif body.get("threshold") is not None:
        # fts has no cut-off; still refuse a threshold that is not a number at all.
        if unit_float(parts, (*loc, "threshold"), body["threshold"]) is None:
            return
    if not good_text(parts, (*loc, "value"), value) or not isinstance(value, str):
        return
    if _ranked_already(parts, loc, "text search", body):
        return
    op: Literal["fts", "semantic"] = "fts" if body["op"] == "fts" else "semantic"
    parts.text, parts.text_loc = TextQuery(op, value, cutoff), loc


def _vql_tags(parts: Parts, loc: Loc, body: dict[str, object]) -> None:
    if not _fields(parts, loc, body, ("is",)):
        return
    items = string_list(parts, (*loc, "value"), body["value"], tag_id, allow_empty=False)
    if items:
        set_list(parts, "tags", items, loc)


def _vql_labels(parts: Parts, loc: Loc, body: dict[str, object]) -> None:
    if not _fields(parts, loc, body, ("one_of", *LABEL_OPS)):
        return
    op, value = body["op"], body["value"]
    if op in ("is", "is_not") and isinstance(value, str):
        value = [value]  # `is` and `is_not` name one label, or a list of them
    items = string_list(parts, (*loc, "value"), value, label, allow_empty=False)
    if not items:
        return
    for rule_op in LABEL_OPS:
        if op == rule_op:
            parts.label_rules.append(LabelRule(rule_op, items))
            return
    set_list(parts, "labels", items, loc)


def _vql_issues(parts: Parts, loc: Loc, body: dict[str, object]) -> None:
    if not _fields(parts, loc, body, ("issue",), ("mode",)):
        return
    good_text(parts, (*loc, "value"), body["value"], limit=256)
    mode = body.get("mode", "in")
    if mode not in ("in", "out"):
        parts.fail("literal_error", (*loc, "mode"), "Input should be 'in' or 'out'", mode)
    parts.wants_issues = True


def _vql_score(name: str) -> Callable[[Parts, Loc, dict[str, object]], None]:
    def parse(parts: Parts, loc: Loc, body: dict[str, object]) -> None:
        if not _fields(parts, loc, body, (name,)):
            return
        value = unit_float(parts, (*loc, "value"), body["value"])
        if value is None:
            return
        if getattr(parts, name) is not None:
            msg = f"Value error, a {name} filter is given twice"
            parts.fail("value_error", loc, msg, body)
            return
        setattr(parts, name, value)

    return parse


_VQL_PARSERS: Final[dict[str, Callable[[Parts, Loc, dict[str, object]], None]]] = {
    "text": _vql_text,
    "labels": _vql_labels,
    "tags": _vql_tags,
    "issues": _vql_issues,
    "duplicates": _vql_score("duplicates"),
    "uniqueness": _vql_score("uniqueness"),
}
