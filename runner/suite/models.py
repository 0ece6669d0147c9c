"""A query suite's models: the YAML file that says what to ask, how to send it, how to judge.

    suite.queries[0].text, suite.modes["caption"].via, suite.sweep.semantic_threshold

A `Suite` refuses, when validated, a suite that cannot be run before anything is sent; the
files it names (queries, qrels, labels) are read and checked then, each error naming its own
file's line. The front door that reads a suite file is `runner.suite.load`; the rest lives
beside this module: `runner.suite.fields` (the value types, `Query`, `Judgment`),
`runner.suite.modes` (`Mode`, `Sweep`), `runner.suite.files` (reading queries, qrels and labels
files), `runner.suite.judging` (grade conflicts, judgments of unknown queries),
`runner.suite.yaml_lines` (YAML with lines, interpolation, and validation errors put on their
line) and `runner.suite.record` (`suite_hash`, `judgments_table`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from runner.errors import SuiteError
from runner.suite.fields import (
    MAX_CONCURRENCY,
    MAX_PAGES,
    EnvName,
    Granularity,
    Judgment,
    Label,
    ModeName,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Query,
    QueryId,
    Rate,
    SuiteModel,
    fail,
    id_from_number,
    one_or_many,
    show,
)
from runner.suite.files import display, existing, read_labels, read_qrels, read_queries
from runner.suite.judging import Judged, OnConflict, foreign_queries, merge_grades
from runner.suite.modes import BUILTIN_MODES, TEXT_MODES, Mode, Sweep

__all__ = [
    "BUILTIN_MODES",
    "Auth",
    "Defaults",
    "FusionSpec",
    "Judgment",
    "Judgments",
    "Mode",
    "Pagination",
    "Query",
    "Retries",
    "Suite",
    "Sweep",
]


# --- the models -------------------------------------------------------------------------------


class Auth(SuiteModel):
    """Names of the environment variables that hold credentials (never the credentials).

    The client uses `token_env` when it is set, else mints tokens from `api_key_env` and
    `api_secret_env`.
    """

    token_env: EnvName = "VL_TOKEN"
    api_key_env: EnvName = "VL_API_KEY"
    api_secret_env: EnvName = "VL_API_SECRET"


class Retries(SuiteModel):
    """How often a failed request is tried (`max_attempts` counts the first try), and the waits."""

    max_attempts: PositiveInt = 5
    backoff_s: NonNegativeFloat = 0.5
    max_backoff_s: PositiveFloat = 30.0
    # The longest wait a server's Retry-After may impose (None: max_backoff_s); a hostile
    # `Retry-After: 3600` must not freeze a nightly run.
    max_retry_after_s: PositiveFloat | None = None


class Pagination(SuiteModel):
    """Pages fetched per request: a number up to `MAX_PAGES`, or `all` (until an empty or short
    page, `MAX_PAGES` at most): the client fetches no more, so a suite may not ask for more.
    """

    max_pages: int | Literal["all"] = 1

    @field_validator("max_pages", mode="before")
    @classmethod
    def _pages(cls, value: object) -> object:
        if value == "all":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PAGES:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_PAGES:
            raise ValueError(
                f"{value} pages is more than the {MAX_PAGES:,} a request fetches at most "
                f"({MAX_PAGES * 100:,} clusters); write at most {MAX_PAGES}, or all"
            )
        raise ValueError(f"{show(value)} is not a page count; write a whole number >= 1, or all")


class Defaults(SuiteModel):
    """What every request sends unless the sweep says otherwise.

    `granularity` is the clustering granularity 0 (finest) .. 4, sent as the API's `threshold`.
    """

    entity_type: Literal["IMAGES", "OBJECTS"] = "IMAGES"
    granularity: Granularity = 0

    @property
    def threshold(self) -> int:
        """The granularity under the API's name for it."""
        return self.granularity


class FusionSpec(SuiteModel):
    """A fusion the report evaluates from the stored hits (`runner.evaluate.fusion`).

    `fusions: [{method: rrf, modes: [fts, semantic], k: 60}]`; methods rrf, combsum, combmnz.
    """

    method: Literal["rrf", "combsum", "combmnz"]
    modes: tuple[ModeName, ...]
    k: PositiveInt = 60

    @model_validator(mode="after")
    def _two_modes(self) -> FusionSpec:
        if len(set(self.modes)) < 2 or len(set(self.modes)) != len(self.modes):
            raise fail("a fusion needs two or more different modes", "modes")
        return self


class Judgments(SuiteModel):
    """Where relevance judgments come from; any number of each.

    `qrels`: TREC files `query_id 0 doc grade`, doc a media id (a UUID) or a file name.
    `by_labels`: query id -> labels; a hit carrying one of them is relevant (silver judgments).
    `labels_file`: TSV files `query_id<TAB>label,label`, the same as `by_labels`.
    `on_conflict`: what to do when qrels lines grade one (query, doc) differently: `error`
    (refuse, naming both lines), or keep the `max`, the `min` or the `last` grade read.
    Paths are relative to the suite file.
    """

    qrels: tuple[Path, ...] = ()
    by_labels: dict[QueryId, tuple[Label, ...]] = Field(default_factory=dict)
    labels_file: tuple[Path, ...] = ()
    on_conflict: OnConflict = "error"

    @field_validator("qrels", "labels_file", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        return one_or_many(value)

    @field_validator("by_labels", mode="before")
    @classmethod
    def _label_lists(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: one_or_many(v) if isinstance(v, str) else v for k, v in value.items()}
        return value


class Suite(SuiteModel):
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
    rate_limit: Rate = 10.0
    concurrency: PositiveInt = 8
    timeout_s: PositiveFloat = 30.0
    retries: Retries = Retries()
    pagination: Pagination = Pagination()
    defaults: Defaults = Defaults()
    modes: dict[ModeName, Mode] = Field(
        default_factory=lambda: {name: BUILTIN_MODES[name] for name in TEXT_MODES}
    )
    sweep: Sweep = Sweep()
    queries: tuple[Query, ...] = ()
    queries_file: Path | None = None
    judgments: Judgments = Field(default_factory=Judgments)
    fusions: tuple[FusionSpec, ...] = ()  # report only: not part of suite_hash

    _source_path: Path | None = PrivateAttr(None)
    _judgments: tuple[Judgment, ...] = PrivateAttr(())
    _warnings: tuple[str, ...] = PrivateAttr(())

    @property
    def source_path(self) -> Path | None:
        """The YAML file this suite was loaded from (None when built in code)."""
        return self._source_path

    @property
    def judgments_rows(self) -> tuple[Judgment, ...]:
        """Every judgment of every source, in file order."""
        return self._judgments

    @property
    def warnings(self) -> tuple[str, ...]:
        """What loading noticed but did not refuse, one line each (the CLI prints `warning: `)."""
        return self._warnings

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # The name becomes a directory (`suite=<name>`): keep it to a portable file name.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(
                f"{value!r} must be letters, digits, '.', '_' or '-' (it names a folder)"
            )
        return value

    @field_validator("concurrency")
    @classmethod
    def _workers(cls, value: int) -> int:
        # One task and up to two connections a worker: 100,000,000 would exhaust the memory.
        if value > MAX_CONCURRENCY:
            raise ValueError(f"{value:,} is more than {MAX_CONCURRENCY:,} requests at once")
        return value

    @field_validator("dataset_id", mode="before")
    @classmethod
    def _dataset(cls, value: object) -> object:
        return None if value == "" else id_from_number(value)

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url(cls, value: object) -> object:
        if value in (None, "", "embedded"):
            return None
        if not isinstance(value, str) or not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"{show(value)} is not an http(s) URL (or embedded)")
        if "@" in urlsplit(value).netloc:
            # A credential in the URL would travel into logs and manifests; auth has its own keys.
            raise ValueError(
                f"{show(value)} carries a user name or password; "
                "give credentials through auth's environment variables"
            )
        return value.rstrip("/")

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
                raise fail(f"unknown mode {show(name)}; the built-in modes are {known}", i)
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
        return one_or_many(value) if value is None else value

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Suite:
        context = info.context if isinstance(info.context, dict) else {}
        base = Path(context.get("base_dir") or Path.cwd())
        self._source_path = context.get("source")
        self._check_target_and_modes()
        file_lines = self._gather_queries(base)
        self._pair_modes_and_queries(file_lines)
        self._judgments = tuple(self._read_judgments(base, {q.id for q in self.queries}))
        return self

    def _check_target_and_modes(self) -> None:
        if self.base_url is not None and self.dataset_id is None:
            raise fail("a base_url needs a dataset_id (the dataset to search)", "base_url")
        if not self.modes:
            raise fail("no modes: name at least one (caption, fts, semantic, visual)", "modes")
        seen: dict[tuple[str, str | None], str] = {}
        for name, mode in self.modes.items():
            twin = seen.setdefault((mode.via, mode.op), name)
            if twin != name:
                raise fail(f"sends the same requests as mode {twin!r}", "modes", name)
        for i, fusion in enumerate(self.fusions):
            for j, mode_name in enumerate(fusion.modes):
                if mode_name not in self.modes:
                    known = ", ".join(self.modes)
                    raise fail(
                        f"unknown mode {mode_name!r} (modes: {known})", "fusions", i, "modes", j
                    )

    def _gather_queries(self, base: Path) -> dict[str, tuple[str, int]]:
        """Check inline ids, append the queries of `queries_file`; (file, line) of those."""
        queries = list(self.queries)
        first: dict[str, int] = {}
        for i, query in enumerate(queries):
            if query.id in first:
                also = f"(also queries[{first[query.id]}])"
                raise fail(f"duplicate query id {query.id!r} {also}", "queries", i, "id")
            first[query.id] = i
        inline = dict(first)
        file_lines: dict[str, tuple[str, int]] = {}
        if self.queries_file is not None:
            path = existing(self.queries_file, base, "queries_file")
            for line, query in read_queries(path):
                # The same query inline is no clash: a validated suite, dumped and validated
                # again, holds its file's queries inline already.
                if query.id in inline and queries[inline.pop(query.id)] == query:
                    continue
                if query.id in first:
                    where = display(path)
                    reason = f"duplicate query id {query.id!r}"
                    raise SuiteError(reason, path=where, line=line, key="id")
                first[query.id] = len(queries)
                file_lines[query.id] = (display(path), line)
                queries.append(query)
            # Validation finishes building the suite: the file's queries and the resolved path
            # are part of it, so every reader sees one complete, frozen suite.
            object.__setattr__(self, "queries_file", path)
            object.__setattr__(self, "queries", tuple(queries))
        if not queries:
            raise fail("no queries: give queries or queries_file", "queries")
        return file_lines

    def _pair_modes_and_queries(self, file_lines: Mapping[str, tuple[str, int]]) -> None:
        """Every mode has queries to send, and every query a mode that sends it.

        A suite that names no modes gets the text modes when a query gives a text, and
        `visual` when one gives an anchor.
        """
        if "modes" not in self.model_fields_set:
            names = [*(TEXT_MODES if any(q.text for q in self.queries) else ())]
            names += ["visual"] if any(q.anchor for q in self.queries) else []
            object.__setattr__(self, "modes", {name: BUILTIN_MODES[name] for name in names})
        for name, mode in self.modes.items():
            if not any(_gives(query, mode.sends) for query in self.queries):
                what = "an anchor (a media id)" if mode.sends == "anchor" else "a text"
                raise fail(f"no query gives {what} for this mode to send", "modes", name)
        sent = {mode.sends for mode in self.modes.values()}
        for i, query in enumerate(self.queries):
            if any(_gives(query, what) for what in sent):
                continue
            what = "an anchor" if query.anchor else "a text"
            fix = "add a mode with via: anchor (e.g. visual)" if query.anchor else "add a text mode"
            reason = f"query {query.id!r} gives {what}, but no mode sends one: {fix}"
            key = "anchor" if query.anchor else "text"
            if query.id in file_lines:
                where, line = file_lines[query.id]
                raise SuiteError(reason, path=where, line=line, key=key)
            raise fail(reason, "queries", i, key)

    def _read_judgments(self, base: Path, query_ids: set[str]) -> Iterator[Judgment]:
        """by_labels, then qrels (grades merged by `on_conflict`), then labels files."""
        for qid, labels in self.judgments.by_labels.items():
            if qid not in query_ids:
                at = ("judgments", "by_labels", qid)
                raise fail(f"{qid!r} is not a query id of this suite", *at)
            yield from (Judgment(qid, "label", label, 1, "by_labels") for label in labels)
        qrels = tuple(
            existing(p, base, "judgments", "qrels", i) for i, p in enumerate(self.judgments.qrels)
        )
        labels_files = tuple(
            existing(p, base, "judgments", "labels_file", i)
            for i, p in enumerate(self.judgments.labels_file)
        )
        object.__setattr__(self.judgments, "qrels", qrels)  # resolved, as above
        object.__setattr__(self.judgments, "labels_file", labels_files)
        graded = [Judged(display(p), j) for p in qrels for j in read_qrels(p, base)]
        labelled = [Judged(display(p), j) for p in labels_files for j in read_labels(p, base)]
        warning = foreign_queries(graded + labelled, query_ids)
        self._warnings += (warning,) if warning else ()
        yield from merge_grades(graded, self.judgments.on_conflict)
        yield from (row.judgment for row in labelled)


def _gives(query: Query, what: Literal["text", "anchor"]) -> bool:
    return (query.anchor if what == "anchor" else query.text) is not None
