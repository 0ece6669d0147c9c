"""The files a suite names: queries files, TREC qrels and labels files.

Each reader checks its file as the suite loader checks the YAML: a bad line raises `SuiteError`
naming the file (as `display` shows it) and the line, and the column or field when there is one.
`existing` resolves a path the suite gives; it runs inside validation, so a missing file is
placed on the suite's own line.

    path = existing(suite.judgments.qrels[0], base, "judgments", "qrels", 0)
    rows = list(read_qrels(path, base))   # Judgment records, in file order
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final, Literal, NamedTuple

from pydantic import ValidationError

from runner.errors import SuiteError
from runner.suite.fields import MAX_GRADE, Judgment, Query, fail

__all__ = [
    "QrelsLine",
    "display",
    "existing",
    "parse_qrels_lines",
    "read_labels",
    "read_qrels",
    "read_queries",
]

_GRADE: Final = re.compile(r"-?\d+")
_COLUMNS: Final = ("id", "text", "anchor", "labels")
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def existing(path: Path, base: Path, *at: str | int) -> Path:
    """`path` resolved against `base` (the suite's folder); `at` is the suite key naming it.

    Raises the validation error `fail` gives, so call it only while a model is validated.
    """
    resolved = (base / path.expanduser()).resolve()
    if not resolved.is_file():
        raise fail(f"no such file: {display(resolved)}", *at)
    return resolved


def display(path: Path) -> str:
    """A path as the user best recognises it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_queries(path: Path) -> list[tuple[int, Query]]:
    """Queries from a file, with the line each came from.

    `.tsv`/`.csv`: columns id, text, anchor and labels ("a,b"), named by a header row (one that
    starts with `id` or names id and text or anchor; it names id, text or anchor or both, and
    optionally labels) or, without one, id, text and optional labels in that order. An empty
    text or anchor cell is none. Any other file: one query text a line, ids q1, q2, ... in
    order. Blank and # lines are skipped.
    """
    where = display(path)
    if path.suffix.lower() not in (".tsv", ".csv"):
        return [
            (n, _query(where, n, {"id": f"q{i}", "text": text.strip()}))
            for i, (n, text) in enumerate(_text_lines(path), 1)
        ]
    header: list[str] | None = None
    rows: list[tuple[int, Query]] = []
    for number, row in _table_rows(path):
        if header is None and (
            row[0] == "id" or {"id", "text"} <= set(row) or {"id", "anchor"} <= set(row)
        ):
            header = row
            unknown = [h for h in header if h not in _COLUMNS]
            if "id" not in header or not {"text", "anchor"} & set(header) or unknown:
                found = ", ".join(header)
                reason = (
                    f"the header names id, text or anchor (or both), and optionally labels; "
                    f"found {found}"
                )
                raise SuiteError(reason, path=where, line=number)
            continue
        if header is None:
            header = ["id", "text", "labels"][: max(2, min(len(row), 3))]
        if len(row) != len(header):
            reason = f"expected {len(header)} columns ({', '.join(header)}), found {len(row)}"
            raise SuiteError(reason, path=where, line=number)
        cells: dict[str, object] = dict(zip(header, row, strict=True))
        cells["labels"] = _split_labels(str(cells.get("labels", ""))) or None
        for name, other in (("text", "anchor"), ("anchor", "text")):
            if cells.get(name) == "" and cells.get(other):  # the query gives the other one
                del cells[name]
        rows.append((number, _query(where, number, cells)))
    return rows


def _query(where: str, line: int, cells: dict[str, object]) -> Query:
    """A `Query` of one file line; a bad value is a `SuiteError` at that line, naming the column."""
    try:
        return Query.model_validate(cells)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        at = first["loc"] or tuple((first.get("ctx") or {}).get("at", ()))
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise SuiteError(reason, path=where, line=line, key=str(at[0]) if at else "") from None


class QrelsLine(NamedTuple):
    """One judged line of a TREC qrels file: its line number and its fields but the iteration."""

    line: int
    query_id: str
    doc: str
    grade: int


def parse_qrels_lines(lines: Iterable[str], *, path: str) -> Iterator[QrelsLine]:
    """The judged lines of TREC qrels `query_id iteration doc grade`: the one qrels line reader.

    Fields are separated by white space; the iteration field is ignored. A fifth field starting
    with `#` begins a trailing comment (the rest of the line is ignored). Blank lines and lines
    starting with `#` are skipped. A grade is a whole number (`-?\\d+`); a grade below 0 is "not
    judged yet" (the -1 placeholder of `vlbench judge-todo`) and its line is skipped. A malformed
    line raises `SuiteError` naming `path:line` (and the field, for a bad grade). `lines` are
    numbered from 1 and may keep their line breaks.
    """
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) > 4 and fields[4].startswith("#"):
            fields = fields[:4]
        if len(fields) != 4:
            raise SuiteError(
                f"expected 4 fields (query_id 0 doc grade), found {len(fields)}",
                path=path,
                line=number,
            )
        qid, _, doc, grade = fields
        if not _GRADE.fullmatch(grade):
            raise SuiteError(
                f"{grade!r} is not a whole number", path=path, line=number, key="grade"
            )
        if int(grade) > MAX_GRADE:  # would not fit the judgments' column
            raise SuiteError(
                f"{grade} is larger than the largest grade, {MAX_GRADE:,}",
                path=path,
                line=number,
                key="grade",
            )
        if int(grade) >= 0:
            yield QrelsLine(number, qid, doc, int(grade))


def read_qrels(path: Path, base: Path) -> Iterator[Judgment]:
    """The judgments of a TREC qrels file, read by `parse_qrels_lines`.

    A doc shaped like a UUID is a media id, anything else a file name. Lines graded below 0
    (not judged yet) are skipped.
    """
    source = f"qrels:{_source_name(path, base)}"
    lines = (text for _, text in _decoded_lines(path))
    for row in parse_qrels_lines(lines, path=display(path)):
        kind: Literal["media_id", "file_name"] = (
            "media_id" if _UUID.fullmatch(row.doc) else "file_name"
        )
        yield Judgment(row.query_id, kind, row.doc, row.grade, source, row.line)


def read_labels(path: Path, base: Path) -> Iterator[Judgment]:
    """`query_id<TAB>label,label` lines; an optional header `query_id<TAB>labels`."""
    source = f"labels_file:{_source_name(path, base)}"
    for number, line in _text_lines(path):
        fields = line.split("\t")
        if len(fields) != 2:
            raise SuiteError(
                f"expected 2 tab-separated fields (query_id, labels), found {len(fields)}",
                path=display(path),
                line=number,
            )
        qid, labels = fields[0].strip(), _split_labels(fields[1])
        if (qid, fields[1].strip()) == ("query_id", "labels"):
            continue
        if not qid or not labels:
            key = "query_id" if not qid else "labels"
            raise SuiteError("must not be empty", path=display(path), line=number, key=key)
        yield from (Judgment(qid, "label", label, 1, source, number) for label in labels)


def _source_name(path: Path, base: Path) -> str:
    # Stable across machines: relative to the suite's folder, not absolute.
    try:
        return path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text with its line break) of every line of a UTF-8 file (a BOM is dropped).

    A line that is not UTF-8, or a file that cannot be read, raises `SuiteError` naming the file
    (and the line): never a decoding error, which validation would place on the suite's line 1.
    """
    where = display(path)
    try:
        with path.open("rb") as handle:
            # Split at b"\n" only: it never occurs inside a UTF-8 multi-byte character.
            for number, raw in enumerate(handle, 1):
                try:
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    reason = (
                        f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                        "of the line); save the file as UTF-8"
                    )
                    raise SuiteError(reason, path=where, line=number) from None
    except OSError as exc:
        raise SuiteError(f"cannot be read: {exc.strerror or exc}", path=where) from None


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its line break) of every line not blank or a # comment."""
    for number, raw in _decoded_lines(path):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, raw.rstrip("\r\n")


def _split_labels(text: str) -> tuple[str, ...]:
    return tuple(label.strip() for label in text.split(",") if label.strip())


def _table_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line, stripped cells) of a TSV (no quoting: a quote is text) or CSV file.

    A CSV record is one line: a quote that is not closed on the line it opens on would swallow
    the lines after it into one query's text, so it is refused at that line.
    """
    where = display(path)
    lines = (text for _, text in _decoded_lines(path))
    if path.suffix.lower() == ".tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines, strict=True)
    start = 1  # the line the next record starts on
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "end of data" in str(exc):
                raise SuiteError(_UNCLOSED, path=where, line=start) from None
            raise SuiteError(f"not valid CSV: {exc}", path=where, line=reader.line_num) from None
        if reader.line_num > start:
            raise SuiteError(_UNCLOSED, path=where, line=start)
        cells = [cell.strip() for cell in row]
        if any(cells) and not cells[0].startswith("#"):
            yield start, cells
        start = reader.line_num + 1


_UNCLOSED: Final = (
    "a quote opened on this line is not closed on it (a query is one line); close it, "
    'and write a quote inside quotes as ""'
)
