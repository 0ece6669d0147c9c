"""What one rater judges: the run's unjudged top-k hits, one query at a time, and their grades.

The hits are those `vlbench judge-todo` writes (`runner.evaluate.unjudged.judge_todo`), taken
against the run's own judgments and any qrels files, not against the store: so a rater who comes
back finds the hits they graded with their grades, and resumes at the first one left.
Several raters split the work: a rater is shown the hits no other rater graded yet (and their
own); with `overlap`, the hits other raters graded instead, without their grades, so that the
two sets of grades can be compared (`runner.judge.agreement`).

A run on object storage is judged in place: the labels log beside it (`store.labels_log`) is
first added to the store of its local folder (`reports/suite=…/_judgments/`), where the labels
are appended as they are given, and closing the session sends that store's lines back to it. So
raters on several machines share one log through the bucket, as `vlbench push` shares it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import polars as pl

from runner.errors import RunError, UsageError
from runner.evaluate.judgments import load_run_judgments
from runner.evaluate.unjudged import judge_todo, query_texts
from runner.judge.labels import (
    GRADE_NAMES,
    GRADES,
    LOG_FILE,
    Label,
    append_label,
    check_grade,
    check_rater,
    compact,
    rater_stacks,
    read_log,
    standing_labels,
    store_dir,
)
from runner.store import Location, open_run, resolve
from runner.store.labels_log import pull_suite_log, suite_log, sync_log
from runner.store.reader import local_dir

__all__ = ["Item", "JudgeSession", "image_origin", "open_session"]

THUMB_COLUMN: Final = "media_thumb_uri"
# The origins a thumbnail may come from, as they go into the page's Content-Security-Policy: a
# scheme, a host name or an IPv4/IPv6 address, a port. Anything else (a `;` or a space would add a
# directive) is not loaded; the page shows the caption instead.
_ORIGIN: Final = re.compile(
    r"https?://(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)
# A data: URI the page may show: an image in base64 (no `data:text/html`), at most 256 KiB.
_DATA_IMAGE: Final = re.compile(r"data:image/(?:png|jpeg|gif|webp|avif);base64,[A-Za-z0-9+/=]+")
_MAX_DATA_URI: Final = 256 * 1024


def image_origin(uri: str) -> str | None:
    """The origin of an http(s) thumbnail URI (`https://cdn.example.com:8443`), None if it has
    none fit for a Content-Security-Policy source."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return None
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin if _ORIGIN.fullmatch(origin) else None


@dataclass(frozen=True, slots=True)
class Item:
    """One hit to grade: a media in the top k of some mode and setting of its query."""

    query_id: str
    media_id: str
    file_name: str | None
    caption: str | None
    best_rank: int
    ranks: dict[str, int]  # mode -> best rank over its settings
    thumb: str | None  # a local file path, an http(s) or data: image URI; None: the caption


@dataclass(slots=True)
class JudgeSession:
    """The items of one rater and their grades; `grade` and `undo` append to the store."""

    run_id: str
    rater: str
    k: int
    overlap: bool
    store: Path
    items: list[Item]
    texts: dict[str, str]
    # This rater's standing grades, oldest first, as `rater_stacks` replays them from the log;
    # kept in step with every label this session appends (undo pops the last).
    stack: list[tuple[str, str, int]] = field(default_factory=list)
    # For a run on object storage: the log beside it, which `close` sends this store's lines to.
    shared: Location | None = None
    sent: int = 0  # lines `close` added to `shared`
    _index: dict[tuple[str, str], int] = field(default_factory=dict)
    _queries: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self._index = {(it.query_id, it.media_id): i for i, it in enumerate(self.items)}
        self._queries = frozenset(it.query_id for it in self.items)

    def grades(self) -> dict[tuple[str, str], int]:
        """This rater's standing grade of each item graded (in this run's items or not)."""
        return {(q, m): g for q, m, g in self.stack}

    def progress(self) -> tuple[int, int]:
        """(items of this session graded by this rater, items of this session)."""
        graded = self.grades()
        return sum(key in graded for key in self._index), len(self.items)

    def item(self, query_id: object, media_id: object) -> Item:
        """The item of that query and media, or UsageError naming the parameter."""
        if not isinstance(query_id, str) or query_id not in self._queries:
            raise UsageError(f"query_id: {query_id!r} is not a query of this judging session")
        found = self._index.get((query_id, media_id)) if isinstance(media_id, str) else None
        if found is None:
            raise UsageError(f"media_id: {media_id!r} is not a hit to judge of query {query_id!r}")
        return self.items[found]

    def grade(self, query_id: object, media_id: object, grade: object) -> Item:
        """Record a grade (appended and synced to the log before this returns)."""
        value = check_grade(grade)
        it = self.item(query_id, media_id)
        append_label(
            self.store,
            Label(
                rater=self.rater,
                query_id=it.query_id,
                media_id=it.media_id,
                grade=value,
                run_id=self.run_id,
                best_rank=it.best_rank,
                ranks=it.ranks,
            ),
        )
        self.stack.append((it.query_id, it.media_id, value))
        return it

    def undo(self) -> tuple[str, str] | None:
        """Take back this rater's latest standing grade; the (query, media) it was, or None."""
        if not self.stack:
            return None
        query_id, media_id, _ = self.stack[-1]
        append_label(
            self.store,
            Label(
                rater=self.rater,
                query_id=query_id,
                media_id=media_id,
                grade=None,
                op="undo",
                run_id=self.run_id,
            ),
        )
        self.stack.pop()
        return query_id, media_id

    def close(self) -> None:
        """Compact the log into labels.parquet and the qrels files; with `shared`, add the
        log's lines to it (how many: `sent`)."""
        compact(self.store)
        if self.shared is not None:
            self.sent = sync_log(resolve(self.store / LOG_FILE), self.shared)

    def state(self, thumb_url: Callable[[int, Item], str | None]) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data; `thumb_url(index, item)` names the
        thumbnail of an item that has one."""
        graded = self.grades()
        queries: list[dict[str, Any]] = []
        for i, it in enumerate(self.items):
            if not queries or queries[-1]["query_id"] != it.query_id:
                text = self.texts.get(it.query_id, "")
                queries.append({"query_id": it.query_id, "text": text, "items": []})
            queries[-1]["items"].append(
                {
                    "media_id": it.media_id,
                    "file_name": it.file_name,
                    "caption": it.caption,
                    "best_rank": it.best_rank,
                    "ranks": it.ranks,
                    "thumb": thumb_url(i, it) if it.thumb else None,
                    "grade": graded.get((it.query_id, it.media_id)),
                }
            )
        done, total = self.progress()
        return {
            "run_id": self.run_id,
            "rater": self.rater,
            "k": self.k,
            "overlap": self.overlap,
            "scale": [{"grade": g, "name": n} for g, n in zip(GRADES, GRADE_NAMES, strict=True)],
            "queries": queries,
            "done": done,
            "total": total,
        }


def _thumb(uri: str | None, file_name: str | None, images: Path | None) -> str | None:
    """Where the thumbnail can be loaded from: an http(s) URI with a plain origin, a data: image
    URI, or a local file that exists (else a file of that name in `images`)."""
    if uri:
        parts = urlsplit(uri)
        if parts.scheme in ("http", "https") and image_origin(uri) is not None:
            return uri
        if len(uri) <= _MAX_DATA_URI and _DATA_IMAGE.fullmatch(uri):
            return uri
        path = Path(unquote(parts.path)) if parts.scheme == "file" else Path(uri)
        if not parts.scheme or parts.scheme == "file":
            if path.is_file():
                return str(path)
    if images is not None and file_name and Path(file_name).name == file_name:
        path = images / file_name
        if path.is_file():
            return str(path)
    return None


def _items(hits: pl.LazyFrame, todo: pl.DataFrame, images: Path | None) -> list[Item]:
    wanted = todo.lazy().select("query_id", "media_id")
    mine = hits.join(wanted, on=["query_id", "media_id"], how="semi")
    ranks: dict[tuple[str, str], dict[str, int]] = {}
    per_mode = mine.group_by("query_id", "media_id", "mode").agg(pl.col("rank").min())
    for q, m, mode, rank in per_mode.sort("mode").collect().iter_rows():
        ranks.setdefault((q, m), {})[mode] = rank
    # Every run has the column (the reader gives an older run's as nulls).
    found = mine.group_by("query_id", "media_id").agg(pl.col(THUMB_COLUMN).drop_nulls().first())
    thumbs = {(q, m): t for q, m, t in found.collect().iter_rows() if t}
    return [
        Item(
            query_id=row["query_id"],
            media_id=row["media_id"],
            file_name=row["file_name"],
            caption=row["caption"],
            best_rank=row["best_rank"],
            ranks=ranks.get((row["query_id"], row["media_id"]), {}),
            thumb=_thumb(thumbs.get((row["query_id"], row["media_id"])), row["file_name"], images),
        )
        for row in todo.iter_rows(named=True)
    ]


def _select(todo: pl.DataFrame, standing: pl.DataFrame, rater: str, overlap: bool) -> pl.DataFrame:
    """The todo rows this rater walks (see the module docstring)."""
    keys = ["query_id", "media_id"]
    others = standing.filter(pl.col("rater") != rater).select(keys).unique()
    own = standing.filter(pl.col("rater") == rater).select(keys).unique()
    if overlap:
        return todo.join(others, on=keys, how="semi")
    fresh = todo.join(others, on=keys, how="anti")
    return (
        pl.concat([fresh, todo.join(own, on=keys, how="semi")])
        .unique(keys, keep="first", maintain_order=True)
        .sort("query_id", "best_rank", "media_id")
    )


def open_session(
    run_dir: Path | str,
    *,
    rater: str,
    k: int = 10,
    overlap: bool = False,
    extra_judgments: Sequence[Path | str] | None = None,
    images: Path | str | None = None,
) -> JudgeSession:
    """The hits `rater` judges in this run, with the grades they already gave.

    Raises UsageError for a bad rater name or k, RunError for a run that cannot be read or
    that holds no hits; an empty session (nothing left to judge) is not an error.
    """
    check_rater(rater)
    if k < 1:
        raise UsageError(f"--k: {k} is not a depth: use 1 or more")
    image_dir = Path(images) if images is not None else None
    if image_dir is not None and not image_dir.is_dir():
        raise UsageError(f"--images: {image_dir} is not a directory")
    info = open_run(run_dir)
    hits, qrels = load_run_judgments(info, extra_judgments, judgments_store=False)
    if hits.select(pl.len()).collect().item() == 0:
        raise RunError(f"{info.uri}: the run has no hits: nothing to judge")
    local = local_dir(info)
    shared = suite_log(info.location) if info.location.remote else None
    if shared is not None:  # the team's labels beside the run join the local store first
        pull_suite_log(info.location, local)
    store = store_dir(local)
    log = read_log(store)
    standing = standing_labels(log)
    todo = _select(judge_todo(hits, qrels, k=k), standing, rater, overlap)
    return JudgeSession(
        run_id=info.run_id,
        rater=rater,
        k=k,
        overlap=overlap,
        store=store,
        items=_items(hits, todo, image_dir),
        texts=query_texts(info),
        stack=rater_stacks(log).get(rater, []),
        shared=shared,
    )
