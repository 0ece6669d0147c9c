"""Query-string values checked one at a time, and the parts of a search gathered while checking.

`runner.server.vql` parses a request with these: each checker records a FastAPI-style `Issue` in
`Parts.issues` (type, loc, msg, input) instead of raising, so that every problem of a request is
reported together in one 422.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson

from runner.server.errors import Issue, Loc
from runner.server.query import EntityType, LabelRule, SearchRequest, TextQuery

__all__ = [
    "MAX_JSON_CHARS",
    "MAX_TEXT_CHARS",
    "Parts",
    "good_text",
    "int_param",
    "json_param",
    "label",
    "set_list",
    "string_list",
    "tag_id",
    "unit_float",
]

MAX_TEXT_CHARS: Final = 2048
MAX_JSON_CHARS: Final = 20_000
_INT_RE: Final = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT_RE: Final = re.compile(
    r"[+-]?([0-9]{1,12}(\.[0-9]{0,12})?|\.[0-9]{1,12})([eE][+-]?[0-9]{1,3})?"
)


@dataclass(slots=True)
class Parts:
    """What the query string asked for, gathered while validating."""

    issues: list[Issue] = field(default_factory=list)
    entity_type: EntityType = "IMAGES"
    granularity: int = 0
    text: TextQuery | None = None
    text_loc: Loc | None = None
    labels: tuple[str, ...] | None = None
    labels_loc: Loc | None = None
    label_rules: list[LabelRule] = field(default_factory=list)
    anchor_type: str | None = None
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
            label_rules=tuple(self.label_rules),
            tags_is=self.tags,
            duplicates=self.duplicates,
            uniqueness=self.uniqueness,
        )


def int_param(
    parts: Parts, query: Mapping[str, str], name: str, *, default: int, lo: int, hi: int
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


def unit_float(parts: Parts, loc: Loc, raw: object) -> float | None:
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


def good_text(parts: Parts, loc: Loc, value: object, *, limit: int = MAX_TEXT_CHARS) -> bool:
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


def json_param(parts: Parts, query: Mapping[str, str], name: str) -> object:
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


def label(parts: Parts, loc: Loc, value: object) -> str | None:
    return value if good_text(parts, loc, value, limit=256) and isinstance(value, str) else None


def tag_id(parts: Parts, loc: Loc, value: object) -> str | None:
    if not isinstance(value, str):
        parts.fail("string_type", loc, "Input should be a valid string", value)
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        parts.fail("uuid_parsing", loc, "Input should be a valid UUID", value)
        return None


def string_list(
    parts: Parts,
    loc: Loc,
    value: object,
    convert: Callable[[Parts, Loc, object], str | None],
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


def set_list(parts: Parts, name: str, items: tuple[str, ...], loc: Loc) -> None:
    earlier = parts.labels_loc if name == "labels" else parts.tags_loc
    if earlier is not None:
        msg = f"Value error, a {name} filter is already given at {'.'.join(map(str, earlier))}"
        parts.fail("value_error", loc, msg, list(items))
        return
    if name == "labels":
        parts.labels, parts.labels_loc = items, loc
    else:
        parts.tags, parts.tags_loc = items, loc
