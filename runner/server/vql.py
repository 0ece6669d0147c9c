"""Parse and validate a search's query string (plain parameters and VQL) into a `SearchRequest`.

    parsed = parse_explore(request.query, index.info)   # ExploreQuery(request, page_number)

Every problem found is collected and raised together as `ValidationFailed` (422, FastAPI-style
items with `loc` such as `["query", "threshold"]` or `["query", "vql", 0, "text", "op"]`).
A request that is well formed but asks for something the dataset cannot serve raises
`HttpError(409)` naming the missing enrichment: `issues` filters (no quality-issue enrichment
here), `entity_type=OBJECTS` (no object detection), labels without IMAGE_TAGGING, text search,
duplicates or uniqueness without CAPTION_IMAGES (the embeddings are the captions').

Choices where the contract is silent (the README repeats them):
- `caption` wins over the deprecated `image_caption` when both are given.
- One text search a request: `caption` with a VQL text filter, or two VQL text filters, is a 422.
- `labels=[]` / `tags=[]` as plain parameters mean "no filter"; an empty VQL `value` list is a 422.
- A labels (or tags) filter given both as a parameter and in VQL is a 422: one-of sets cannot be
  ANDed into one one-of set.
- Text values: 1..2,048 characters, no NUL; `vql`, `labels`, `tags`: at most 20,000 characters.
- Filter objects reject unknown keys; a VQL fts `threshold` is validated and ignored (fts has no
  cut-off); `textual_similarity_threshold` is validated always and used with `caption` only.
- `entity_type` is required by explore (as documented) and defaults to IMAGES for exports.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import orjson

from runner.server.errors import HttpError, Issue, Loc, ValidationFailed
from runner.server.query import DatasetInfo, EntityType, SearchRequest, TextQuery

__all__ = [
    "MAX_JSON_CHARS",
    "MAX_TEXT_CHARS",
    "ExploreQuery",
    "ExportQuery",
    "check_servable",
    "parse_explore",
    "parse_export",
]

MAX_TEXT_CHARS: Final = 2048
MAX_JSON_CHARS: Final = 20_000
# page_number beyond this is refused rather than turned into a huge integer.
_MAX_PAGE: Final = 1_000_000_000
_INT_RE: Final = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT_RE: Final = re.compile(
    r"[+-]?([0-9]{1,12}(\.[0-9]{0,12})?|\.[0-9]{1,12})([eE][+-]?[0-9]{1,3})?"
)
_EXPORT_FORMATS: Final = ("parquet", "json")
_BOOLS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_FILTER_KINDS: Final = ("text", "labels", "tags", "issues", "duplicates", "uniqueness")


@dataclass(frozen=True, slots=True)
class ExploreQuery:
    """A parsed `GET /api/v1/explore/{dataset_id}`: the search and the (0-based) page."""

    request: SearchRequest
    page_number: int


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """A parsed `export_context_async`: the filters, the ZIP's format and name."""

    request: SearchRequest
    export_format: Literal["parquet", "json"]
    file_name: str | None
    include_images: bool


@dataclass(slots=True)
class _Parts:
    """What the query string asked for, gathered while validating."""

    issues: list[Issue] = field(default_factory=list)
    entity_type: EntityType = "IMAGES"
    granularity: int = 0
    text: TextQuery | None = None
    text_loc: Loc | None = None
    labels: tuple[str, ...] | None = None
    labels_loc: Loc | None = None
    tags: tuple[str, ...] | None = None
    tags_loc: Loc | None = None
    duplicates: float | None = None
    uniqueness: float | None = None
    wants_issues: bool = False

    def fail(self, type_: str, loc: Loc, msg: str, value: object) -> None:
        self.issues.append(Issue(type_, loc, msg, value))

    def request(self) -> SearchRequest:
        return SearchRequest(
            entity_type=self.entity_type,
            granularity=self.granularity,
            text=self.text,
            labels_one_of=self.labels,
            tags_is=self.tags,
            duplicates=self.duplicates,
            uniqueness=self.uniqueness,
        )


def parse_explore(query: Mapping[str, str], info: DatasetInfo) -> ExploreQuery:
    """Validate an explore query string; raise `ValidationFailed` (422) or `HttpError` (409)."""
    parts = _Parts()
    entity = query.get("entity_type")
    if entity is None:
        parts.fail("missing", ("query", "entity_type"), "Field required", None)
    else:
        _entity_type(parts, entity)
    threshold = _int_param(parts, query, "threshold", default=0, lo=0, hi=4)
    page = _int_param(parts, query, "page_number", default=0, lo=0, hi=_MAX_PAGE)
    _filters(parts, query)
    if parts.issues:
        raise ValidationFailed(parts.issues)
    parts.granularity = threshold
    request = parts.request()
    check_servable(request, info, wants_issues=parts.wants_issues)
    return ExploreQuery(request, page)


def parse_export(query: Mapping[str, str], info: DatasetInfo) -> ExportQuery:
    """Validate an export_context_async query string (`entity_type` defaults to IMAGES)."""
    parts = _Parts()
    _entity_type(parts, query.get("entity_type", "IMAGES"))
    export_format = query.get("export_format", "parquet")
    if export_format not in _EXPORT_FORMATS:
        parts.fail(
            "enum", ("query", "export_format"), "Input should be 'parquet' or 'json'", export_format
        )
    file_name = query.get("file_name")
    if file_name is not None and not _good_text(parts, ("query", "file_name"), file_name):
        file_name = None
    include = query.get("include_images", "false")
    if include.lower() not in _BOOLS:
        parts.fail(
            "bool_parsing", ("query", "include_images"), "Input should be a valid boolean", include
        )
    _filters(parts, query)
    if parts.issues:
        raise ValidationFailed(parts.issues)
    request = parts.request()
    check_servable(request, info, wants_issues=parts.wants_issues)
    fmt: Literal["parquet", "json"] = "json" if export_format == "json" else "parquet"
    return ExportQuery(request, fmt, file_name, _BOOLS.get(include.lower(), False))


def check_servable(
    request: SearchRequest, info: DatasetInfo, *, wants_issues: bool = False
) -> None:
    """Raise `HttpError(409)` naming the enrichment the dataset lacks for `request`."""
    if wants_issues:
        raise _missing(info, "ISSUES", "issues filters need quality-issue detection")
    if request.entity_type == "OBJECTS":
        raise _missing(info, "OBJECT_DETECTION", "entity_type=OBJECTS needs detected objects")
    has_captions = "CAPTION_IMAGES" in info.enrichments
    if request.text is not None and not has_captions:
        raise _missing(info, "CAPTION_IMAGES", f"{request.text.op} search needs captions")
    if (request.duplicates is not None or request.uniqueness is not None) and not has_captions:
        raise _missing(info, "CAPTION_IMAGES", "duplicates/uniqueness need caption embeddings")
    if request.labels_one_of is not None and "IMAGE_TAGGING" not in info.enrichments:
        raise _missing(info, "IMAGE_TAGGING", "labels filters need image tagging")


def _missing(info: DatasetInfo, enrichment: str, why: str) -> HttpError:
    return HttpError(409, f"Dataset {info.id} has no {enrichment} enrichment: {why}")


def _entity_type(parts: _Parts, value: str) -> None:
    if value == "IMAGES":
        parts.entity_type = "IMAGES"
    elif value == "OBJECTS":
        parts.entity_type = "OBJECTS"
    else:
        parts.fail("enum", ("query", "entity_type"), "Input should be 'IMAGES' or 'OBJECTS'", value)


def _int_param(
    parts: _Parts, query: Mapping[str, str], name: str, *, default: int, lo: int, hi: int
) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    loc: Loc = ("query", name)
    if not _INT_RE.fullmatch(raw.strip()):
        msg = "Input should be a valid integer, unable to parse string as an integer"
        parts.fail("int_parsing", loc, msg, raw)
        return default
    value = int(raw.strip())
    if value < lo:
        parts.fail("greater_than_equal", loc, f"Input should be greater than or equal to {lo}", raw)
    elif value > hi:
        parts.fail("less_than_equal", loc, f"Input should be less than or equal to {hi}", raw)
    return value


def _unit_float(parts: _Parts, loc: Loc, raw: object) -> float | None:
    """A number in 0..1 from a query string or a JSON value, or None after recording why not."""
    if isinstance(raw, str):
        if not _FLOAT_RE.fullmatch(raw.strip()):
            parts.fail(
                "float_parsing",
                loc,
                "Input should be a valid number, unable to parse string as a number",
                raw,
            )
            return None
        value = float(raw.strip())
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        parts.fail("float_type", loc, "Input should be a valid number", raw)
        return None
    if not 0.0 <= value <= 1.0:
        parts.fail("value_error", loc, "Value error, should be within 0.0 and 1.0", raw)
        return None
    return value


def _good_text(parts: _Parts, loc: Loc, value: object, *, limit: int = MAX_TEXT_CHARS) -> bool:
    if not isinstance(value, str):
        parts.fail("string_type", loc, "Input should be a valid string", value)
        return False
    if not value.strip():
        parts.fail("string_too_short", loc, "String should have at least 1 character", value)
        return False
    if len(value) > limit:
        parts.fail("string_too_long", loc, f"String should have at most {limit} characters", value)
        return False
    if "\x00" in value:
        parts.fail("value_error", loc, "Value error, must not contain NUL characters", value)
        return False
    return True


def _json_param(parts: _Parts, query: Mapping[str, str], name: str) -> object:
    """The decoded JSON of parameter `name`, None when absent or bad (recorded)."""
    raw = query.get(name)
    if raw is None:
        return None
    loc: Loc = ("query", name)
    if len(raw) > MAX_JSON_CHARS:
        msg = f"String should have at most {MAX_JSON_CHARS} characters"
        parts.fail("string_too_long", loc, msg, raw)
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        parts.fail("json_invalid", loc, f"Invalid JSON: {exc}", raw)
        return None


def _filters(parts: _Parts, query: Mapping[str, str]) -> None:
    _caption(parts, query)
    for name, convert in (("labels", _label), ("tags", _tag_id)):
        value = _json_param(parts, query, name)
        if value is None:
            continue
        items = _string_list(parts, ("query", name), value, convert, allow_empty=True)
        if items:
            _set_list(parts, name, items, ("query", name))
    vql = _json_param(parts, query, "vql")
    if vql is None:
        return
    if not isinstance(vql, list):
        parts.fail("list_type", ("query", "vql"), "Input should be a valid list", vql)
        return
    for position, item in enumerate(vql):
        _vql_filter(parts, ("query", "vql", position), item)


def _caption(parts: _Parts, query: Mapping[str, str]) -> None:
    # The cut-off is validated even without a caption (a client bug worth hearing about), but
    # only a caption search uses it.
    cutoff = None
    raw_cutoff = query.get("textual_similarity_threshold")
    if raw_cutoff is not None:
        cutoff = _unit_float(parts, ("query", "textual_similarity_threshold"), raw_cutoff)
    name = "caption" if "caption" in query else "image_caption"
    value = query.get(name)
    if value is None:
        return
    loc: Loc = ("query", name)
    if _good_text(parts, loc, value):
        parts.text, parts.text_loc = TextQuery("caption", value, cutoff), loc


def _label(parts: _Parts, loc: Loc, value: object) -> str | None:
    return value if _good_text(parts, loc, value, limit=256) and isinstance(value, str) else None


def _tag_id(parts: _Parts, loc: Loc, value: object) -> str | None:
    if not isinstance(value, str):
        parts.fail("string_type", loc, "Input should be a valid string", value)
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        parts.fail("uuid_parsing", loc, "Input should be a valid UUID", value)
        return None


def _string_list(
    parts: _Parts,
    loc: Loc,
    value: object,
    convert: Callable[[_Parts, Loc, object], str | None],
    *,
    allow_empty: bool,
) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        parts.fail("list_type", loc, "Input should be a valid list", value)
        return None
    if not value and not allow_empty:
        parts.fail(
            "too_short", loc, "List should have at least 1 item after validation, not 0", value
        )
        return None
    before = len(parts.issues)
    items = [convert(parts, (*loc, i), v) for i, v in enumerate(value)]
    if len(parts.issues) > before:
        return None
    # Keep the first occurrence of each, in the order given.
    return tuple(dict.fromkeys(v for v in items if v is not None))


def _set_list(parts: _Parts, name: str, items: tuple[str, ...], loc: Loc) -> None:
    earlier = parts.labels_loc if name == "labels" else parts.tags_loc
    if earlier is not None:
        msg = f"Value error, a {name} filter is already given at {'.'.join(map(str, earlier))}"
        parts.fail("value_error", loc, msg, list(items))
        return
    if name == "labels":
        parts.labels, parts.labels_loc = items, loc
    else:
        parts.tags, parts.tags_loc = items, loc


def _vql_filter(parts: _Parts, loc: Loc, item: object) -> None:
    if not isinstance(item, dict):
        parts.fail("dict_type", loc, "Input should be a valid dictionary", item)
        return
    if len(item) != 1 or next(iter(item)) not in _FILTER_KINDS:
        kinds = ", ".join(_FILTER_KINDS)
        msg = f"Value error, a filter is an object with exactly one key of: {kinds}"
        parts.fail("value_error", loc, msg, item)
        return
    kind, body = next(iter(item.items()))
    here: Loc = (*loc, kind)
    if not isinstance(body, dict):
        parts.fail("dict_type", here, "Input should be a valid dictionary", body)
        return
    _VQL_PARSERS[kind](parts, here, body)


def _fields(
    parts: _Parts,
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


def _vql_text(parts: _Parts, loc: Loc, body: dict[str, object]) -> None:
    if not _fields(parts, loc, body, ("fts", "semantic"), ("threshold",)):
        return
    value = body["value"]
    cutoff = None
    if body["op"] == "semantic" and body.get("threshold") is not None:
        cutoff = _unit_float(parts, (*loc, "threshold"), body["threshold"])
        if cutoff is None:
            return
    elif body.get("threshold") is not None:
        # fts has no cut-off; still refuse a threshold that is not a number at all.
        if _unit_float(parts, (*loc, "threshold"), body["threshold"]) is None:
            return
    if not _good_text(parts, (*loc, "value"), value) or not isinstance(value, str):
        return
    if parts.text_loc is not None:
        where = ".".join(map(str, parts.text_loc))
        msg = f"Value error, one text search a request; {where} already gives one"
        parts.fail("value_error", loc, msg, body)
        return
    op: Literal["fts", "semantic"] = "fts" if body["op"] == "fts" else "semantic"
    parts.text, parts.text_loc = TextQuery(op, value, cutoff), loc


def _vql_list(name: str) -> Callable[[_Parts, Loc, dict[str, object]], None]:
    op, convert = ("one_of", _label) if name == "labels" else ("is", _tag_id)

    def parse(parts: _Parts, loc: Loc, body: dict[str, object]) -> None:
        if not _fields(parts, loc, body, (op,)):
            return
        items = _string_list(parts, (*loc, "value"), body["value"], convert, allow_empty=False)
        if items:
            _set_list(parts, name, items, loc)

    return parse


def _vql_issues(parts: _Parts, loc: Loc, body: dict[str, object]) -> None:
    if not _fields(parts, loc, body, ("issue",), ("mode",)):
        return
    _good_text(parts, (*loc, "value"), body["value"], limit=256)
    mode = body.get("mode", "in")
    if mode not in ("in", "out"):
        parts.fail("literal_error", (*loc, "mode"), "Input should be 'in' or 'out'", mode)
    parts.wants_issues = True


def _vql_score(name: str) -> Callable[[_Parts, Loc, dict[str, object]], None]:
    def parse(parts: _Parts, loc: Loc, body: dict[str, object]) -> None:
        if not _fields(parts, loc, body, (name,)):
            return
        value = _unit_float(parts, (*loc, "value"), body["value"])
        if value is None:
            return
        if getattr(parts, name) is not None:
            msg = f"Value error, a {name} filter is given twice"
            parts.fail("value_error", loc, msg, body)
            return
        setattr(parts, name, value)

    return parse


_VQL_PARSERS: Final[dict[str, Callable[[_Parts, Loc, dict[str, object]], None]]] = {
    "text": _vql_text,
    "labels": _vql_list("labels"),
    "tags": _vql_list("tags"),
    "issues": _vql_issues,
    "duplicates": _vql_score("duplicates"),
    "uniqueness": _vql_score("uniqueness"),
}
