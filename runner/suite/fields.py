"""The values a suite accepts, and the two records its YAML and its files both yield.

Bottom layer of the suite: `runner.suite` builds its models from these types, and
`runner.suite.files` reads `Query` and `Judgment` records from the files a suite names.

A check that must name a key below the validated object raises `fail(reason, *at)`; the loader
(`runner.suite.yaml_lines.place_error`) puts it on that key's line. `show(value)` renders a
value for
an error message without ever echoing something that looks like a token or a URL's userinfo
(`mask_userinfo`); `place_error` also names a value that came from `${VAR}` instead of showing it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ENV_NAME",
    "FAIL_TYPE",
    "EnvName",
    "Granularity",
    "Judgment",
    "Label",
    "MAX_CONCURRENCY",
    "MAX_GRADE",
    "MAX_PAGES",
    "MAX_QUERY_URL_BYTES",
    "MediaId",
    "ModeName",
    "NonNegativeFloat",
    "PositiveFloat",
    "PositiveInt",
    "Query",
    "QueryId",
    "Rate",
    "SuiteModel",
    "Text",
    "Unit",
    "fail",
    "id_from_number",
    "mask_userinfo",
    "one_or_many",
    "show",
]

ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The pydantic error type of `fail`, by which the loader knows that `ctx["at"]` places it.
FAIL_TYPE: Final = "suite"
_JWT_LIKE: Final = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")
# `scheme://user:password@`: everything up to the last `@` before a space or quote is userinfo
# (a password with a raw `@` or `/` in it is masked whole too; masking a path's `@` is harmless).
_USERINFO: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"]*@")
# A query text whose URL encoding is longer than this never reaches any deployment of the API:
# 8 KiB is the request-line limit of common proxies (nginx's default). The local server refuses
# texts over 2,048 characters (a 422 per request); the hosted API's own limit is undocumented,
# so the suite refuses only what no deployment can take.
MAX_QUERY_URL_BYTES: Final = 8192
# The most pages one request fetches (`runner.execute` takes it from here): a suite asking for
# more is refused when it is loaded, not silently cut short.
MAX_PAGES: Final = 1000
# Requests in flight at most: each is a task and a connection of the runner.
MAX_CONCURRENCY: Final = 1000
# The largest grade the judgments' int32 column holds.
MAX_GRADE: Final = 2**31 - 1
_MEDIA_ID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_RATE: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*/\s*(s|sec|second|min|minute|h|hour)")
_PER_SECONDS: Final = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
}


def fail(reason: str, *at: str | int) -> PydanticCustomError:
    """An error for the loader to place: `at` is the key path below the validated object."""
    return PydanticCustomError(FAIL_TYPE, "{reason}", {"reason": reason, "at": at})


def show(value: object) -> str:
    """A value as an error message may show it: short, and never a token."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str) and _JWT_LIKE.search(value):
        return "a value that looks like a token"
    text = mask_userinfo(repr(value))  # before shortening, which could cut the `@` off
    return text if len(text) <= 60 else text[:57] + "..."


def mask_userinfo(text: str) -> str:
    """`https://user:pass@host/x` -> `https://***@host/x`, wherever a URL occurs in `text`."""
    return _USERINFO.sub(r"\1***@", text)


def id_from_number(value: object) -> object:
    """`id: 1` is a natural thing to write; ids are strings everywhere downstream."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def one_or_many(value: object) -> object:
    """Let a list-valued key take one value: `qrels: a.qrels` is `qrels: [a.qrels]`."""
    if value is None:
        return ()
    if isinstance(value, str | int | float):
        return [value]
    return value


def _within(lo: float, hi: float) -> Any:
    def check(value: float) -> float:
        if not lo <= value <= hi:
            raise ValueError(f"{value:g} is not within {lo:g}..{hi:g}")
        return value

    return check


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"{value:g} must be greater than 0")
    return value


def _not_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"{value:g} must not be negative")
    return value


def _env_name(value: str) -> str:
    # Never echo the value: it may be the very token the user meant to keep out of the file.
    if not ENV_NAME.fullmatch(value):
        raise ValueError(
            "must name an environment variable (letters, digits, _); "
            "a token, key or secret written into a suite is refused"
        )
    return value


def _word(what: str) -> Any:
    def check(value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"{what} must be non-empty with no whitespace")
        return value

    return check


def _non_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _media_id(value: str) -> str:
    value = value.strip()
    if not _MEDIA_ID.fullmatch(value):
        raise ValueError(
            f"{show(value)} is not a media id (a UUID like 300dad2c-1234-11f1-8483-5a879df30de4)"
        )
    return value.lower()


def _not_bool(value: object) -> object:
    # `true` is not a number here, though Python says it is 1. Numeric strings are welcome:
    # a quoted "${T:-0.5}" (quoted because [ ] and { } need it) is still a number.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _parse_rate(value: object) -> float:
    """10, "10/s", "600/min", "3600/h", {requests: 10, per_seconds: 1} -> requests per second.

    `unlimited` (or .inf) is infinity: no pacing (for benchmarks against a local server).
    """
    if isinstance(value, dict):
        unknown = set(value) - {"requests", "per_seconds"}
        if unknown:
            raise fail("unknown key; a rate is {requests: N, per_seconds: S}", sorted(unknown)[0])
        requests, per = value.get("requests"), value.get("per_seconds", 1)
        for name, number in (("requests", requests), ("per_seconds", per)):
            if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
                raise fail(f"{show(number)} must be a number greater than 0", name)
        return float(requests) / float(per)  # type: ignore[arg-type]
    if value == "unlimited":
        return math.inf
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str) and (match := _RATE.fullmatch(value.strip())):
        rate = float(match[1]) / _PER_SECONDS[match[2]]
    else:
        raise ValueError(
            f"{show(value)} is not a rate; write 10/s, 600/min, 3600/h, a number (per second), "
            "{requests: 10, per_seconds: 1} or unlimited"
        )
    if not rate > 0:  # also NaN
        raise ValueError(f"{show(value)} must be greater than 0")
    return rate


Unit = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_within(0, 1))]
Granularity = Annotated[int, BeforeValidator(_not_bool), AfterValidator(_within(0, 4))]
PositiveInt = Annotated[int, BeforeValidator(_not_bool), AfterValidator(_positive)]
PositiveFloat = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_positive)]
NonNegativeFloat = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_not_negative)]
EnvName = Annotated[str, Strict(), AfterValidator(_env_name)]
QueryId = Annotated[str, BeforeValidator(id_from_number), Strict(), AfterValidator(_word("id"))]
Label = Annotated[str, Strict(), AfterValidator(_non_blank)]
Text = Annotated[str, Strict(), AfterValidator(_non_blank)]
MediaId = Annotated[str, Strict(), AfterValidator(_media_id)]
ModeName = Annotated[str, Strict(), AfterValidator(_word("a mode name"))]
# requests per second; infinity (`unlimited`) is allowed here, where the models refuse it
Rate = Annotated[float, AllowInfNan(True), BeforeValidator(_parse_rate)]


class SuiteModel(BaseModel):
    """Base of every suite model: unknown keys and non-finite numbers are refused, and a
    validated model is frozen."""

    # NaN or infinity is no timeout, rate or cut-off (a NaN timeout_s would mean "never").
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Query(SuiteModel):
    """One query: an id (no whitespace), its text and/or an anchor, and an optional labels filter.

    `text` is what text modes (caption, fts, semantic) send; `anchor` is a media id (a UUID)
    that anchor modes (`via: anchor`, visual search) send as `anchor_media_id`. A query gives
    one or both; each mode asks the queries that give what it sends. The labels filter is
    ANDed with either.
    """

    id: QueryId
    text: Text | None = None
    anchor: MediaId | None = None
    labels: tuple[Label, ...] | None = None

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: object) -> object:
        value = one_or_many(value) if isinstance(value, str) else value
        if isinstance(value, list | tuple) and not value:
            raise ValueError("an empty labels filter matches nothing; leave labels out")
        return value

    @model_validator(mode="after")
    def _sendable(self) -> Query:
        if self.text is None and self.anchor is None:
            raise fail("is required (or an anchor: a media id, for visual search)", "text")
        if self.text is not None and "\x00" in self.text:
            raise fail(
                f"query {self.id!r}: the text holds a NUL character (the API refuses it)", "text"
            )
        if (
            self.text is not None
            and len(encoded := quote(self.text, safe="")) > MAX_QUERY_URL_BYTES
        ):
            raise fail(
                f"query {self.id!r}: the text is {len(self.text):,} characters "
                f"({len(encoded):,} bytes in a URL); no API takes more than "
                f"{MAX_QUERY_URL_BYTES:,} (a common proxy's request-line limit)",
                "text",
            )
        return self


@dataclass(frozen=True, slots=True)
class Judgment:
    """One judgment row (see `JUDGMENTS_SCHEMA`): kind media_id, file_name or label."""

    query_id: str
    kind: Literal["media_id", "file_name", "label"]
    value: str
    grade: int
    source: str
    line: int = field(default=0, compare=False)  # its line in its file; 0 when not from a file
