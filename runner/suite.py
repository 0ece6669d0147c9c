"""A query suite: the YAML file that says what to ask, how to send it, and how to judge the answers.

    suite = load_suite("queries/demo.yaml")
    suite.queries[0].text, suite.modes["caption"].via, suite.sweep.semantic_threshold

`load_suite` refuses a suite that cannot be run before anything is sent, with a `SuiteError`
whose message reads `file:line: key: what is wrong` (`demo.yaml:14: sweep.semantic_threshold[1]:
1.4 is not within 0..1`). A file the suite names (queries, qrels, labels) is checked the same way,
its own lines named.

Interpolation: `${VAR}` and `${VAR:-default}` are replaced in scalar values (never in keys) from
the environment; `:-` also applies when VAR is set but empty; `$$` is a literal `$`. An unquoted
value is typed after the replacement (`concurrency: ${N:-8}` is the integer 8); inside `[...]` or
`{...}` YAML needs quotes (`[0.5, "${T:-0.7}"]`), and numeric keys take numeric strings. An unset
variable with no default is an error.

`suite_hash` says what is asked and how it is judged (queries, modes, sweep, defaults, pages,
dataset, judgments), not how fast or where: rate limit, concurrency, retries, auth and base_url
do not change it. `judgments_table` gives every judgment in `JUDGMENTS_SCHEMA`.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import orjson
import pyarrow as pa
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from runner.errors import SuiteError
from runner.schema import JUDGMENTS_SCHEMA

__all__ = [
    "BUILTIN_MODES",
    "Auth",
    "Defaults",
    "Judgment",
    "Judgments",
    "Mode",
    "Pagination",
    "Query",
    "Retries",
    "Suite",
    "Sweep",
    "judgments_table",
    "load_suite",
    "parse_suite",
    "suite_hash",
]

_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_JWT_LIKE: Final = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")
# `$$`, a `${...}` reference, or a `${` that is never closed.
_REFERENCE: Final = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
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
# Keys that would put a credential into the suite; named so that the refusal can say why.
_CREDENTIAL_KEYS: Final = {"token", "jwt", "api_key", "api_secret", "secret", "password", "key"}
_EXPECTED: Final = {
    "int": "a whole number",
    "float": "a number",
    "string": "text",
    "bool": "true or false",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
}
_RENAMED: Final = {"threshold": "granularity", "image_caption": "caption"}

Path_ = tuple[str | int, ...]


# --- small validated types --------------------------------------------------------------------


def _fail(reason: str, *at: str | int) -> PydanticCustomError:
    """An error for the loader to place: `at` is the key path below the validated object."""
    return PydanticCustomError("suite", "{reason}", {"reason": reason, "at": at})


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
    if not _ENV_NAME.fullmatch(value):
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


def _id_from_number(value: object) -> object:
    # `id: 1` is a natural thing to write; ids are strings everywhere downstream.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _non_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _one_or_many(value: object) -> object:
    """Let a list-valued key take one value: `qrels: a.qrels` is `qrels: [a.qrels]`."""
    if value is None:
        return ()
    if isinstance(value, str | int | float):
        return [value]
    return value


def _not_bool(value: object) -> object:
    # `true` is not a number here, though Python says it is 1. Numeric strings are welcome:
    # a quoted "${T:-0.5}" (quoted because [ ] and { } need it) is still a number.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


Unit = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_within(0, 1))]
Granularity = Annotated[int, BeforeValidator(_not_bool), AfterValidator(_within(0, 4))]
PositiveInt = Annotated[int, BeforeValidator(_not_bool), AfterValidator(_positive)]
PositiveFloat = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_positive)]
NonNegativeFloat = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_not_negative)]
EnvName = Annotated[str, Strict(), AfterValidator(_env_name)]
QueryId = Annotated[str, BeforeValidator(_id_from_number), Strict(), AfterValidator(_word("id"))]
Label = Annotated[str, Strict(), AfterValidator(_non_blank)]
Text = Annotated[str, Strict(), AfterValidator(_non_blank)]
ModeName = Annotated[str, Strict(), AfterValidator(_word("a mode name"))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the models -------------------------------------------------------------------------------


class Auth(_Model):
    """Names of the environment variables that hold credentials (never the credentials).

    The client uses `token_env` when it is set, else mints tokens from `api_key_env` and
    `api_secret_env`.
    """

    token_env: EnvName = "VL_TOKEN"
    api_key_env: EnvName = "VL_API_KEY"
    api_secret_env: EnvName = "VL_API_SECRET"


class Retries(_Model):
    """How often a failed request is tried (`max_attempts` counts the first try), and the waits."""

    max_attempts: PositiveInt = 5
    backoff_s: NonNegativeFloat = 0.5
    max_backoff_s: PositiveFloat = 30.0


class Pagination(_Model):
    """Pages fetched per request: a number, or `all` (until an empty or short page)."""

    max_pages: int | Literal["all"] = 1

    @field_validator("max_pages", mode="before")
    @classmethod
    def _pages(cls, value: object) -> object:
        if value == "all":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        raise ValueError(f"{_show(value)} is not a page count; write a whole number >= 1, or all")


class Defaults(_Model):
    """What every request sends unless the sweep says otherwise.

    `granularity` is the clustering granularity 0 (finest) .. 4, sent as the API's `threshold`.
    """

    entity_type: Literal["IMAGES", "OBJECTS"] = "IMAGES"
    granularity: Granularity = 0

    @property
    def threshold(self) -> int:
        """The granularity under the API's name for it."""
        return self.granularity


class Mode(_Model):
    """How a query is sent: `via: caption` (`?caption=`), or `via: vql` with `op: fts|semantic`."""

    via: Literal["caption", "vql"]
    op: Literal["fts", "semantic"] | None = None

    @model_validator(mode="after")
    def _op_fits_via(self) -> Mode:
        if self.via == "caption" and self.op is not None:
            raise _fail("via caption takes no op (it sends ?caption=...)", "op")
        if self.via == "vql" and self.op is None:
            raise _fail("via vql needs op: fts or semantic", "op")
        return self

    @property
    def kind(self) -> Literal["caption", "fts", "semantic"]:
        """caption, fts or semantic: which sweep list applies and how the request is built."""
        return "caption" if self.op is None else self.op


BUILTIN_MODES: Final[Mapping[str, Mode]] = {
    "caption": Mode(via="caption"),
    "fts": Mode(via="vql", op="fts"),
    "semantic": Mode(via="vql", op="semantic"),
}


class Sweep(_Model):
    """Values tried one by one, each a separate setting of the modes that use it.

    An empty list sends no such parameter (the server's default cut-off, setting `default`);
    an empty `granularity` uses `defaults.granularity`.
    """

    textual_similarity_threshold: tuple[Unit, ...] = ()  # caption modes
    semantic_threshold: tuple[Unit, ...] = ()  # vql semantic modes
    granularity: tuple[Granularity, ...] = ()  # every mode

    @field_validator("*", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        return _one_or_many(value)

    @model_validator(mode="after")
    def _no_repeats(self) -> Sweep:
        for name in ("textual_similarity_threshold", "semantic_threshold", "granularity"):
            values: tuple[float, ...] = getattr(self, name)
            for i, value in enumerate(values):
                if value in values[:i]:
                    raise _fail(f"{value!r} is listed twice", name, i)
        return self


class Query(_Model):
    """One query: an id (no whitespace), its text, and an optional labels filter ANDed with it."""

    id: QueryId
    text: Text
    labels: tuple[Label, ...] | None = None

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: object) -> object:
        value = _one_or_many(value) if isinstance(value, str) else value
        if isinstance(value, list | tuple) and not value:
            raise ValueError("an empty labels filter matches nothing; leave labels out")
        return value


class Judgments(_Model):
    """Where relevance judgments come from; any number of each.

    `qrels`: TREC files `query_id 0 doc grade`, doc a media id (a UUID) or a file name.
    `by_labels`: query id -> labels; a hit carrying one of them is relevant (silver judgments).
    `labels_file`: TSV files `query_id<TAB>label,label`, the same as `by_labels`.
    Paths are relative to the suite file.
    """

    qrels: tuple[Path, ...] = ()
    by_labels: dict[QueryId, tuple[Label, ...]] = Field(default_factory=dict)
    labels_file: tuple[Path, ...] = ()

    @field_validator("qrels", "labels_file", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        return _one_or_many(value)

    @field_validator("by_labels", mode="before")
    @classmethod
    def _label_lists(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: _one_or_many(v) if isinstance(v, str) else v for k, v in value.items()}
        return value


@dataclass(frozen=True, slots=True)
class Judgment:
    """One judgment row (see `JUDGMENTS_SCHEMA`): kind media_id, file_name or label."""

    query_id: str
    kind: Literal["media_id", "file_name", "label"]
    value: str
    grade: int
    source: str


class Suite(_Model):
    """A whole suite. Build it with `load_suite(path)`; see `queries/example.yaml` for every key.

    `base_url` None means the embedded local server on the demo dataset; `dataset_id` None is
    allowed only then (the embedded server's dataset is used). `rate_limit` is in requests per
    second (math.inf: unlimited) and counts every page and retry. `queries` holds the inline
    queries followed by those of `queries_file` (already read).
    """

    name: Annotated[str, Strict()]
    description: str = ""
    dataset_id: str | None = None
    base_url: str | None = None
    auth: Auth = Auth()
    rate_limit: float = 10.0
    concurrency: PositiveInt = 8
    timeout_s: PositiveFloat = 30.0
    retries: Retries = Retries()
    pagination: Pagination = Pagination()
    defaults: Defaults = Defaults()
    modes: dict[ModeName, Mode] = Field(default_factory=lambda: dict(BUILTIN_MODES))
    sweep: Sweep = Sweep()
    queries: tuple[Query, ...] = ()
    queries_file: Path | None = None
    judgments: Judgments = Field(default_factory=Judgments)

    _source_path: Path | None = PrivateAttr(None)
    _judgments: tuple[Judgment, ...] = PrivateAttr(())

    @property
    def source_path(self) -> Path | None:
        """The YAML file this suite was loaded from (None when built in code)."""
        return self._source_path

    @property
    def judgments_rows(self) -> tuple[Judgment, ...]:
        """Every judgment of every source, in file order."""
        return self._judgments

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # The name becomes a directory (`suite=<name>`): keep it to a portable file name.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(
                f"{value!r} must be letters, digits, '.', '_' or '-' (it names a folder)"
            )
        return value

    @field_validator("dataset_id", mode="before")
    @classmethod
    def _dataset(cls, value: object) -> object:
        return None if value == "" else _id_from_number(value)

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url(cls, value: object) -> object:
        if value in (None, "", "embedded"):
            return None
        if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"{_show(value)} is not an http(s) URL (or embedded)")
        return value.rstrip("/")

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate(cls, value: object) -> float:
        return _parse_rate(value)

    @field_validator("modes", mode="before")
    @classmethod
    def _mode_list(cls, value: object) -> object:
        """`modes: [caption, fts]` names built-in modes; a mapping defines modes of any name."""
        if not isinstance(value, list):
            return value
        modes: dict[str, Mode] = {}
        for i, name in enumerate(value):
            if not isinstance(name, str) or name not in BUILTIN_MODES:
                known = ", ".join(BUILTIN_MODES)
                raise _fail(f"unknown mode {_show(name)}; the built-in modes are {known}", i)
            modes[name] = BUILTIN_MODES[name]
        return modes

    @field_validator("queries", mode="before")
    @classmethod
    def _bare_queries(cls, value: object) -> object:
        """A bare string in `queries` is a query with the id q<n> (n its 1-based position)."""
        if isinstance(value, list):
            return [
                {"id": f"q{i}", "text": q} if isinstance(q, str) else q
                for i, q in enumerate(value, 1)
            ]
        return _one_or_many(value) if value is None else value

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Suite:
        context = info.context if isinstance(info.context, dict) else {}
        base = Path(context.get("base_dir") or Path.cwd())
        self._source_path = context.get("source")
        self._check_target_and_modes()
        query_ids = self._gather_queries(base)
        self._judgments = tuple(self._read_judgments(base, query_ids))
        return self

    def _check_target_and_modes(self) -> None:
        if self.base_url is not None and self.dataset_id is None:
            raise _fail("a base_url needs a dataset_id (the dataset to search)", "base_url")
        if not self.modes:
            raise _fail("no modes: name at least one (caption, fts, semantic)", "modes")
        seen: dict[tuple[str, str | None], str] = {}
        for name, mode in self.modes.items():
            twin = seen.setdefault((mode.via, mode.op), name)
            if twin != name:
                raise _fail(f"sends the same requests as mode {twin!r}", "modes", name)

    def _gather_queries(self, base: Path) -> set[str]:
        """Check inline ids, append the queries of `queries_file`; every query id."""
        queries = list(self.queries)
        first: dict[str, int] = {}
        for i, query in enumerate(queries):
            if query.id in first:
                also = f"(also queries[{first[query.id]}])"
                raise _fail(f"duplicate query id {query.id!r} {also}", "queries", i, "id")
            first[query.id] = i
        inline = dict(first)
        if self.queries_file is not None:
            path = _existing(self.queries_file, base, "queries_file")
            for line, query in _read_queries(path):
                # The same query inline is no clash: a validated suite, dumped and validated
                # again, holds its file's queries inline already.
                if query.id in inline and queries[inline.pop(query.id)] == query:
                    continue
                if query.id in first:
                    where = _display(path)
                    reason = f"duplicate query id {query.id!r}"
                    raise SuiteError(reason, path=where, line=line, key="id")
                first[query.id] = len(queries)
                queries.append(query)
            # Validation finishes building the suite: the file's queries and the resolved path
            # are part of it, so every reader sees one complete, frozen suite.
            object.__setattr__(self, "queries_file", path)
            object.__setattr__(self, "queries", tuple(queries))
        if not queries:
            raise _fail("no queries: give queries or queries_file", "queries")
        return set(first)

    def _read_judgments(self, base: Path, query_ids: set[str]) -> Iterator[Judgment]:
        for qid, labels in self.judgments.by_labels.items():
            if qid not in query_ids:
                at = ("judgments", "by_labels", qid)
                raise _fail(f"{qid!r} is not a query id of this suite", *at)
            yield from (Judgment(qid, "label", label, 1, "by_labels") for label in labels)
        qrels = tuple(
            _existing(p, base, "judgments", "qrels", i) for i, p in enumerate(self.judgments.qrels)
        )
        labels_files = tuple(
            _existing(p, base, "judgments", "labels_file", i)
            for i, p in enumerate(self.judgments.labels_file)
        )
        object.__setattr__(self.judgments, "qrels", qrels)  # resolved, as above
        object.__setattr__(self.judgments, "labels_file", labels_files)
        for path in qrels:
            yield from _read_qrels(path, base)
        for path in labels_files:
            yield from _read_labels(path, base)


# --- files the suite names --------------------------------------------------------------------


def _existing(path: Path, base: Path, *at: str | int) -> Path:
    resolved = (base / path.expanduser()).resolve()
    if not resolved.is_file():
        raise _fail(f"no such file: {_display(resolved)}", *at)
    return resolved


def _display(path: Path) -> str:
    """A path as the user best recognises it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _source_name(path: Path, base: Path) -> str:
    # Stable across machines: relative to the suite's folder, not absolute.
    try:
        return path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) for every line that is not blank or a # comment."""
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if line and not line.startswith("#"):
                yield number, raw.rstrip("\r\n")


def _split_labels(text: str) -> tuple[str, ...]:
    return tuple(label.strip() for label in text.split(",") if label.strip())


def _read_queries(path: Path) -> list[tuple[int, Query]]:
    """Queries from a file, with the line each came from.

    `.tsv`/`.csv`: columns id, text and optional labels ("a,b"), named by a header row (one
    that starts with `id` or names id and text) or, without one, in that order. Any other
    file: one query a line, ids q1, q2, ... in order. Blank and # lines are skipped.
    """
    if path.suffix.lower() not in (".tsv", ".csv"):
        return [
            (n, Query(id=f"q{i}", text=text.strip()))
            for i, (n, text) in enumerate(_text_lines(path), 1)
        ]
    where = _display(path)
    header: list[str] | None = None
    rows: list[tuple[int, Query]] = []
    for number, row in _table_rows(path):
        if header is None and (row[0] == "id" or {"id", "text"} <= set(row)):
            header = row
            unknown = [h for h in header if h not in ("id", "text", "labels")]
            if "text" not in header or unknown:
                found = ", ".join(header)
                reason = f"the header names id, text and optionally labels; found {found}"
                raise SuiteError(reason, path=where, line=number)
            continue
        if header is None:
            header = ["id", "text", "labels"][: max(2, min(len(row), 3))]
        if len(row) != len(header):
            reason = f"expected {len(header)} columns ({', '.join(header)}), found {len(row)}"
            raise SuiteError(reason, path=where, line=number)
        cells = dict(zip(header, row, strict=True))
        labels = _split_labels(cells.get("labels", ""))
        try:
            query = Query(id=cells["id"], text=cells["text"], labels=labels or None)
        except ValidationError as exc:
            first = exc.errors()[0]
            reason = str(first["msg"]).removeprefix("Value error, ")
            raise SuiteError(reason, path=where, line=number, key=str(first["loc"][0])) from None
        rows.append((number, query))
    return rows


def _table_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line, stripped cells) of a TSV (no quoting: a quote is text) or CSV file."""
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".tsv":
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(handle)
        for row in reader:
            cells = [cell.strip() for cell in row]
            if any(cells) and not cells[0].startswith("#"):
                yield reader.line_num, cells


def _read_qrels(path: Path, base: Path) -> Iterator[Judgment]:
    """TREC qrels: `query_id iteration doc grade`, whitespace-separated; # lines skipped."""
    source = f"qrels:{_source_name(path, base)}"
    for number, line in _text_lines(path):
        fields = line.split()
        if len(fields) != 4:
            raise SuiteError(
                f"expected 4 fields (query_id 0 doc grade), found {len(fields)}",
                path=_display(path),
                line=number,
            )
        qid, _, doc, grade = fields
        if not re.fullmatch(r"-?\d+", grade):
            raise SuiteError(
                f"{grade!r} is not a whole number", path=_display(path), line=number, key="grade"
            )
        kind: Literal["media_id", "file_name"] = "media_id" if _UUID.fullmatch(doc) else "file_name"
        yield Judgment(qid, kind, doc, int(grade), source)


def _read_labels(path: Path, base: Path) -> Iterator[Judgment]:
    """`query_id<TAB>label,label` lines; an optional header `query_id<TAB>labels`."""
    source = f"labels_file:{_source_name(path, base)}"
    for number, line in _text_lines(path):
        fields = line.split("\t")
        if len(fields) != 2:
            raise SuiteError(
                f"expected 2 tab-separated fields (query_id, labels), found {len(fields)}",
                path=_display(path),
                line=number,
            )
        qid, labels = fields[0].strip(), _split_labels(fields[1])
        if (qid, fields[1].strip()) == ("query_id", "labels"):
            continue
        if not qid or not labels:
            key = "query_id" if not qid else "labels"
            raise SuiteError("must not be empty", path=_display(path), line=number, key=key)
        yield from (Judgment(qid, "label", label, 1, source) for label in labels)


def _parse_rate(value: object) -> float:
    """10, "10/s", "600/min", "3600/h", {requests: 10, per_seconds: 1} -> requests per second.

    `unlimited` (or .inf) is infinity: no pacing (for benchmarks against a local server).
    """
    if isinstance(value, dict):
        unknown = set(value) - {"requests", "per_seconds"}
        if unknown:
            raise _fail("unknown key; a rate is {requests: N, per_seconds: S}", sorted(unknown)[0])
        requests, per = value.get("requests"), value.get("per_seconds", 1)
        for name, number in (("requests", requests), ("per_seconds", per)):
            if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
                raise _fail(f"{_show(number)} must be a number greater than 0", name)
        return float(requests) / float(per)  # type: ignore[arg-type]
    if value == "unlimited":
        return math.inf
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str) and (match := _RATE.fullmatch(value.strip())):
        rate = float(match[1]) / _PER_SECONDS[match[2]]
    else:
        raise ValueError(
            f"{_show(value)} is not a rate; write 10/s, 600/min, 3600/h, a number (per second), "
            "{requests: 10, per_seconds: 1} or unlimited"
        )
    if not rate > 0:  # also NaN
        raise ValueError(f"{_show(value)} must be greater than 0")
    return rate


# --- YAML with line numbers and interpolation -------------------------------------------------


@dataclass(slots=True)
class _Document:
    """The YAML data with where each key came from: (key path -> line) and interpolated paths."""

    data: object
    lines: dict[Path_, int]
    interpolated: set[Path_]


def _load_yaml(text: str, where: str, env: Mapping[str, str]) -> _Document:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SuiteError("the suite is empty", path=where, line=1)
        doc = _Document(None, {(): root.start_mark.line + 1}, set())
        _walk(root, (), doc, where, env, loader, set())
        doc.data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # Only the parser's words: its snippet of the line could show a value meant to stay private.
        reason = ": ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise SuiteError(
            f"not valid YAML: {reason}", path=where, line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"not valid YAML: {type(exc).__name__}", path=where) from None
    finally:
        loader.dispose()
    if not isinstance(doc.data, dict):
        raise SuiteError("a suite is a mapping of keys (name:, queries:, ...)", path=where, line=1)
    return doc


def _walk(
    node: yaml.Node,
    path: Path_,
    doc: _Document,
    where: str,
    env: Mapping[str, str],
    loader: yaml.SafeLoader,
    done: set[int],
) -> None:
    """Record the line of every key and item, refuse duplicate keys, interpolate scalars."""
    if id(node) in done:  # an alias: interpolated once, where it was defined
        return
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise SuiteError(
                    "a key must be a plain word", path=where, line=line, key=_key(path)
                )
            key: str | int = key_node.value
            if (*path, key) in doc.lines:
                first = doc.lines[(*path, key)]
                raise SuiteError(
                    f"duplicate key (first at line {first})",
                    path=where,
                    line=line,
                    key=_key((*path, key)),
                )
            doc.lines[(*path, key)] = line
            _walk(value_node, (*path, key), doc, where, env, loader, done)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            doc.lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), doc, where, env, loader, done)
    elif isinstance(node, yaml.ScalarNode) and "$" in node.value:
        line = node.start_mark.line + 1
        value = _interpolate(
            node.value,
            env,
            lambda reason: SuiteError(reason, path=where, line=line, key=_key(path)),
        )
        if value != node.value:
            doc.interpolated.add(path)
        if node.style is None:  # plain: type the result as YAML would have (8 -> int)
            node.tag = loader.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        node.value = value


def _interpolate(value: str, env: Mapping[str, str], error: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        if match[1] is None:
            raise error("'${' is not closed; write $$ for a literal $")
        name, has_default, default = match[1].partition(":-")
        if not _ENV_NAME.fullmatch(name):
            raise error(f"${{{match[1]}}} does not name an environment variable")
        found = env.get(name)
        if found:
            return found
        if has_default:
            return default
        if found is None:
            raise error(
                f"environment variable {name} is not set and has no default "
                f"(write ${{{name}:-default}})"
            )
        return found

    return _REFERENCE.sub(replace, value)


# --- validation errors placed on their line ---------------------------------------------------


def _key(path: Path_) -> str:
    """("sweep", "semantic_threshold", 1) -> "sweep.semantic_threshold[1]"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _data_path(loc: Path_, at: Path_, data: object, missing: bool) -> Path_:
    """Turn pydantic's `loc` (+ our `at`) into a key path of the YAML data.

    pydantic adds steps that are not keys (union branches like `int`, a list index under a
    value given as one item); those are dropped. A key that is not in the data is kept only
    where it is the point of the error (a missing key, or one our own check named).
    """
    path: list[str | int] = []
    node: object = data
    steps = [(step, False) for step in loc] + [(step, True) for step in at]
    for i, (step, ours) in enumerate(steps):
        if isinstance(node, dict) and step in node:
            path.append(step)
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            path.append(step)
            node = node[step]
        elif isinstance(step, str) and (ours or (missing and i == len(steps) - 1)):
            path.append(step)
            node = None
    return tuple(path)


def _line_of(path: Path_, lines: Mapping[Path_, int]) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _model_at(path: Path_) -> type[BaseModel] | None:
    """The model class whose keys live at `path` (for "did you mean"), if any."""
    tp: Any = Suite
    for step in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(step) if isinstance(step, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (tuple, dict, list):
            args = [a for a in get_args(tp) if a is not Ellipsis]
            tp = args[0] if get_origin(tp) is not dict else args[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) in (Union, UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str) and _JWT_LIKE.search(value):
        return "a value that looks like a token"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(path: Path_) -> str:
    key = path[-1]
    if str(key).lower() in _CREDENTIAL_KEYS:
        return (
            "a credential in a suite is refused: keep it in an environment variable and name "
            "that variable with auth.token_env, auth.api_key_env or auth.api_secret_env"
        )
    model = _model_at(path[:-1])
    known = list(model.model_fields) if model else []
    if key in _RENAMED and _RENAMED[str(key)] in known:
        return f"unknown key {key!r}; it is spelled {_RENAMED[str(key)]!r} here"
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}" + (f"; expected one of {', '.join(known)}" if known else "")


def _describe(error: Mapping[str, Any], path: Path_, hide_input: bool) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    shown = "a value not shown here" if hide_input else _show(error.get("input"))
    if kind == "suite":
        return str(ctx["reason"])
    if kind == "extra_forbidden":
        return _unknown_key(path)
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        name = next((p for p in reversed(path) if isinstance(p, str)), "value")
        return f"unknown {name} {shown}; expected {ctx.get('expected')}"
    expected = _EXPECTED.get(kind.removesuffix("_parsing").removesuffix("_type"))
    if kind == "int_from_float":
        expected = "a whole number"
    if expected is None:
        return str(error["msg"]).replace("Input should be", "expected")
    return f"expected {expected}, got {shown}"


def _placed(exc: ValidationError, doc: _Document, where: str) -> SuiteError:
    """The first error (by line) of a ValidationError, as `file:line: key: reason`."""
    found: list[tuple[int, str, Path_]] = []
    for error in exc.errors(include_url=False):
        at = tuple((error.get("ctx") or {}).get("at", ()))
        path = _data_path(tuple(error["loc"]), at, doc.data, error["type"] == "missing")
        hide = path in doc.interpolated or (bool(path) and path[0] == "auth")
        found.append((_line_of(path, doc.lines), _describe(error, path, hide), path))
    line, reason, path = min(found, key=lambda item: item[0])
    return SuiteError(reason, path=where, line=line, key=_key(path))


# --- the front door ---------------------------------------------------------------------------


def load_suite(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Suite:
    """Read, interpolate and check a suite file; every referenced file is read and checked too.

    `env` replaces `os.environ` for `${VAR}` (tests). Raises `SuiteError` (`file:line: key: ...`).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = (
            "no such file"
            if isinstance(exc, FileNotFoundError)
            else f"cannot be read ({type(exc).__name__})"
        )
        raise SuiteError(reason, path=str(path)) from None
    return parse_suite(text, path=file, env=env)


def parse_suite(
    text: str, *, path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> Suite:
    """Like `load_suite` for text in hand; `path` names it in errors and anchors relative paths."""
    file = Path(path)
    doc = _load_yaml(text, str(path), os.environ if env is None else env)
    context = {"base_dir": file.resolve().parent, "source": file.resolve()}
    try:
        return Suite.model_validate(doc.data, context=context)
    except ValidationError as exc:
        raise _placed(exc, doc, str(path)) from None


def suite_hash(suite: Suite) -> str:
    """16 hex digits over what the suite asks and how it is judged; stable across machines.

    Independent of key order, of query order and of where the files lie; the rate limit,
    concurrency, retries, timeouts, auth and base_url are not part of it.
    """
    content = {
        "version": 1,
        "name": suite.name,
        "dataset_id": suite.dataset_id,
        "defaults": suite.defaults.model_dump(),
        "pagination": suite.pagination.model_dump(),
        "modes": {name: mode.model_dump() for name, mode in suite.modes.items()},
        "sweep": suite.sweep.model_dump(),
        "queries": sorted([q.id, q.text, list(q.labels or ())] for q in suite.queries),
        "judgments": sorted([j.query_id, j.kind, j.value, j.grade] for j in suite.judgments_rows),
    }
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def judgments_table(suite: Suite) -> pa.Table:
    """Every judgment of the suite as a table in `JUDGMENTS_SCHEMA` (the run copies it in)."""
    rows = suite.judgments_rows
    columns = {
        "query_id": [j.query_id for j in rows],
        "kind": [j.kind for j in rows],
        "value": [j.value for j in rows],
        "grade": [j.grade for j in rows],
        "source": [j.source for j in rows],
    }
    return pa.Table.from_pydict(columns, schema=JUDGMENTS_SCHEMA)
