"""Import a file of media items into a dataset directory that the local Explore server serves.

Input: JSON Lines (`.jsonl`, `.ndjson`), CSV (`.csv`, with a header) or Parquet (`.parquet`),
one media item a row:

| field | type | notes |
|---|---|---|
| `file_name` | string, required | |
| `media_id` | string | absent or empty -> `derive_media_id(file_name)` (uuid5, stable) |
| `caption` | string or null | the item's (AI) caption: full-text index and embedding |
| `labels` | list of strings or null | tagging labels; in CSV a JSON array or `a|b|c` |
| `tags` | list of strings or null | user tag ids; in CSV as labels |
| `width`, `height` | int >= 0 or null | |
| `media_uri` | string or null | |

Other fields are ignored. A bad row raises `DatasetError` naming the file, the row's line (1-based
line in JSON Lines and CSV, 1-based row in Parquet) and the field; a repeated `media_id` is refused.

Output, a directory (see `SearchIndex` for reading it):

    dataset.json     id, display name, n_images, enrichments, created_at, labels, tags, build facts
    media.parquet    one row per item in input order: the fields above plus `row`, `duplicate`,
                     `uniqueness` and `cluster_0`..`cluster_4` (see `runner.server.clusters`)
    fts.sqlite       SQLite FTS5 table `captions(caption)`, tokenizer `porter unicode61`,
                     rowid = row
    embeddings.npy   float32 (n, d) L2-normalised caption embeddings (zeros for items without one)

The import streams the input in chunks (`chunk_rows`), so memory grows with the embeddings (n * d
* 4 bytes) and the columnar media table, not with Python objects per row. It builds into a hidden
temporary directory beside `out` and renames it into place at the end: an import that fails or is
interrupted leaves no `out` behind (a killed process may leave the hidden `.<name>.partial-*`).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import DatasetError
from runner.server.clusters import (
    EXACT_DUPLICATE_LIMIT,
    LEVEL_SIZES,
    NEAR_DUPLICATE_SIMILARITY,
    build_clusters,
)
from runner.server.query import DatasetInfo

__all__ = [
    "DATASET_FILE",
    "EMBEDDINGS_FILE",
    "FORMAT_VERSION",
    "FTS_FILE",
    "FTS_TABLE",
    "FTS_TOKENIZER",
    "MEDIA_FILE",
    "MEDIA_ID_NAMESPACE",
    "MEDIA_SCHEMA",
    "TextEncoder",
    "derive_media_id",
    "import_dataset",
    "read_info",
]

FORMAT_VERSION: Final = 1
DATASET_FILE: Final = "dataset.json"
MEDIA_FILE: Final = "media.parquet"
FTS_FILE: Final = "fts.sqlite"
EMBEDDINGS_FILE: Final = "embeddings.npy"
FTS_TABLE: Final = "captions"
FTS_TOKENIZER: Final = "porter unicode61"
# media_id of a row that has none: uuid5(MEDIA_ID_NAMESPACE, file_name).
MEDIA_ID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://vlbench.invalid/media")
_DATASET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_INPUT_FIELDS: Final = (
    "media_id",
    "file_name",
    "caption",
    "labels",
    "tags",
    "width",
    "height",
    "media_uri",
)

_STAGING_SCHEMA: Final = pa.schema(
    [
        pa.field("media_id", pa.string(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("media_uri", pa.string()),
    ]
)
MEDIA_SCHEMA: Final = pa.schema(
    [
        pa.field("row", pa.int32(), nullable=False),
        *_STAGING_SCHEMA,
        pa.field("duplicate", pa.float32(), nullable=False),
        pa.field("uniqueness", pa.float32(), nullable=False),
        *(pa.field(f"cluster_{g}", pa.int32(), nullable=False) for g in range(5)),
    ]
)


class TextEncoder(Protocol):
    """What the import and the index need of `runner.server.encoder.load_encoder()`."""

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """(len(texts), d) float32, each row L2-normalised."""
        ...

    def encode_query(self, text: str) -> npt.NDArray[np.float32]:
        """(d,) float32, L2-normalised; implementations cache it."""
        ...


def derive_media_id(file_name: str) -> str:
    """The media_id given to a row without one: stable across imports and machines."""
    return str(uuid.uuid5(MEDIA_ID_NAMESPACE, file_name))


def import_dataset(
    src: Path,
    dataset_id: str,
    out: Path,
    *,
    encoder: TextEncoder | None = None,
    display_name: str | None = None,
    chunk_rows: int = 4096,
) -> DatasetInfo:
    """Turn `src` into a served dataset directory `out`; see the module docstring.

    `out` must not exist (or be an empty directory). `encoder` defaults to the real MiniLM
    encoder (`runner.server.encoder.load_encoder()`). Raises `DatasetError` for an unreadable
    file, a bad row (with its line and field), a repeated media_id, an empty input, or an `out`
    that already holds something.

    Example: `import_dataset(Path("items.jsonl"), "cars", Path("datasets/cars"))`
    """
    src = Path(src)
    out = Path(out)
    if not _DATASET_ID.fullmatch(dataset_id):
        raise DatasetError(
            f"{dataset_id!r} is not a dataset id (letters, digits, '.', '_', '-'; at most 128)",
            path=str(src),
            field="id",
        )
    if not src.is_file():
        raise DatasetError("no such file", path=str(src))
    _check_free(out)
    if encoder is None:
        from runner.server.encoder import load_encoder

        encoder = load_encoder()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        info = _build(src, dataset_id, display_name or dataset_id, tmp, encoder, chunk_rows)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def read_info(path: Path) -> DatasetInfo:
    """Read `dataset.json` of a dataset directory; `DatasetError` when it is missing or bad."""
    meta_path = Path(path) / DATASET_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"format_version {meta.get('format_version')!r} is not {FORMAT_VERSION}; "
                "import the dataset again",
                path=str(meta_path),
            )
        return DatasetInfo(
            id=str(meta["id"]),
            display_name=str(meta["display_name"]),
            n_images=int(meta["n_images"]),
            enrichments=frozenset(str(e) for e in meta["enrichments"]),
            created_at=dt.datetime.fromisoformat(meta["created_at"]),
            labels=tuple(str(x) for x in meta["labels"]),
            tags=tuple(str(x) for x in meta["tags"]),
        )
    except OSError as exc:
        raise DatasetError(f"not a dataset directory ({exc.strerror})", path=str(path)) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"unreadable dataset.json ({exc!r})", path=str(meta_path)) from exc


# --- the build --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Columns:
    """One chunk of validated rows, column by column."""

    media_id: list[str] = field(default_factory=list)
    file_name: list[str] = field(default_factory=list)
    caption: list[str | None] = field(default_factory=list)
    labels: list[list[str] | None] = field(default_factory=list)
    tags: list[list[str] | None] = field(default_factory=list)
    width: list[int | None] = field(default_factory=list)
    height: list[int | None] = field(default_factory=list)
    media_uri: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.media_id)

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict(
            {name: getattr(self, name) for name in _INPUT_FIELDS}, schema=_STAGING_SCHEMA
        )


@dataclass(slots=True)
class _Stats:
    n: int = 0
    captions: int = 0
    labels: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    dim: int | None = None


def _build(
    src: Path,
    dataset_id: str,
    display_name: str,
    tmp: Path,
    encoder: TextEncoder,
    chunk_rows: int,
) -> DatasetInfo:
    stats = _Stats()
    seen: dict[str, int] = {}  # media_id -> line, to name both lines of a repeat
    raw_path = tmp / "embeddings.f32"
    staging_path = tmp / "staging.parquet"
    fts = _open_fts(tmp / FTS_FILE)
    with (
        pq.ParquetWriter(staging_path, _STAGING_SCHEMA) as writer,
        raw_path.open("wb") as raw,
    ):
        for chunk in _validated_chunks(src, chunk_rows, seen):
            writer.write_batch(chunk.batch())
            _index_captions(fts, stats.n, chunk.caption)
            raw.write(_embed(encoder, chunk.caption, stats).tobytes())
            stats.n += len(chunk)
            stats.captions += sum(c is not None for c in chunk.caption)
            stats.labels.update(x for xs in chunk.labels if xs for x in xs)
            stats.tags.update(x for xs in chunk.tags if xs for x in xs)
    fts.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('optimize')")
    fts.commit()
    fts.close()
    if stats.n == 0:
        raise DatasetError("no media items", path=str(src))
    dim = stats.dim or 0
    embeddings = np.fromfile(raw_path, dtype=np.float32).reshape(stats.n, dim)
    np.save(tmp / EMBEDDINGS_FILE, embeddings)
    raw_path.unlink()
    clustering = build_clusters(embeddings)
    del embeddings
    staged = pq.read_table(staging_path, schema=_STAGING_SCHEMA)
    media = pa.table(
        {
            "row": pa.array(np.arange(stats.n, dtype=np.int32)),
            **{name: staged.column(name) for name in _INPUT_FIELDS},
            "duplicate": pa.array(clustering.duplicate),
            "uniqueness": pa.array((1.0 - clustering.duplicate).astype(np.float32)),
            **{f"cluster_{g}": pa.array(clustering.levels[:, g]) for g in range(5)},
        },
        schema=MEDIA_SCHEMA,
    )
    pq.write_table(media, tmp / MEDIA_FILE, row_group_size=65_536)
    staging_path.unlink()
    info = DatasetInfo(
        id=dataset_id,
        display_name=display_name,
        n_images=stats.n,
        enrichments=frozenset(
            name
            for name, present in (
                ("CAPTION_IMAGES", stats.captions > 0),
                ("IMAGE_TAGGING", bool(stats.labels)),
                ("USER_TAGS", bool(stats.tags)),
            )
            if present
        ),
        created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        labels=tuple(sorted(stats.labels)),
        tags=tuple(sorted(stats.tags)),
    )
    meta = {
        "format_version": FORMAT_VERSION,
        "id": info.id,
        "display_name": info.display_name,
        "n_images": info.n_images,
        "enrichments": sorted(info.enrichments),
        "created_at": info.created_at.isoformat(),
        "labels": list(info.labels),
        "tags": list(info.tags),
        "n_captions": stats.captions,
        "source": src.name,
        "encoder": getattr(encoder, "name", type(encoder).__name__),
        "embedding_dim": dim,
        "fts_tokenizer": FTS_TOKENIZER,
        "clusters": {
            "scheme": "top-down spherical k-means; level 0 near-duplicate groups",
            "level_sizes": {str(k): v for k, v in LEVEL_SIZES.items()},
            "near_duplicate_similarity": NEAR_DUPLICATE_SIMILARITY,
            "counts": [int(clustering.levels[:, g].max()) + 1 for g in range(5)],
        },
        "duplicates": "exact" if clustering.exact_duplicates else "within level-4 cluster",
        "exact_duplicate_limit": EXACT_DUPLICATE_LIMIT,
    }
    (tmp / DATASET_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return info


def _check_free(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError("already exists and is not empty; choose another --out", path=str(out))


def _move_into_place(tmp: Path, out: Path) -> None:
    try:
        if out.is_dir():
            out.rmdir()  # empty, checked before the build
        os.rename(tmp, out)
    except OSError as exc:
        # Another process (a racing demo build, a second import) got there first.
        raise DatasetError(f"cannot move the dataset into place ({exc})", path=str(out)) from exc


def _open_fts(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    # The file is renamed into place only when complete, so no journal is needed while building.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute(
        f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(caption, tokenize = '{FTS_TOKENIZER}')"
    )
    return db


def _index_captions(db: sqlite3.Connection, first_row: int, captions: Sequence[str | None]) -> None:
    db.executemany(
        f"INSERT INTO {FTS_TABLE}(rowid, caption) VALUES (?, ?)",
        ((first_row + i, c) for i, c in enumerate(captions) if c is not None),
    )


def _embed(
    encoder: TextEncoder, captions: Sequence[str | None], stats: _Stats
) -> npt.NDArray[np.float32]:
    """Embed the chunk's captions; rows without a caption get a zero vector."""
    present = [i for i, c in enumerate(captions) if c is not None]
    texts = [c for c in captions if c is not None]
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32) if texts else None
    if vectors is not None:
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise DatasetError(
                f"encoder returned shape {vectors.shape} for {len(texts)} captions", path="encoder"
            )
        if stats.dim is None:
            stats.dim = int(vectors.shape[1])
    if stats.dim is None:
        # No caption seen yet: the width is unknown until one is, so ask the encoder once.
        stats.dim = int(np.asarray(encoder.encode(["dimension probe"])).shape[1])
    out = np.zeros((len(captions), stats.dim), dtype=np.float32)
    if vectors is not None:
        out[present] = vectors
    return out


# --- reading and validating rows ------------------------------------------------------------


def _validated_chunks(src: Path, chunk_rows: int, seen: dict[str, int]) -> Iterator[_Columns]:
    chunk = _Columns()
    for line, raw in _raw_rows(src):
        _append(chunk, raw, src, line, seen)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = _Columns()
    if len(chunk):
        yield chunk


def _raw_rows(src: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    suffix = src.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows(src)
    if suffix == ".csv":
        return _csv_rows(src)
    if suffix in (".parquet", ".pq"):
        return _parquet_rows(src)
    raise DatasetError(
        f"unknown format {suffix or '(no suffix)'!r}; use .jsonl, .csv or .parquet", path=str(src)
    )


def _jsonl_rows(src: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with src.open("rb") as f:
        for line, text in enumerate(f, start=1):
            if line == 1:
                text = text.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
            if not text.strip():
                continue
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise DatasetError(f"not valid JSON ({exc})", path=str(src), line=line) from exc
            if not isinstance(obj, dict):
                raise DatasetError(
                    f"expected a JSON object, got {type(obj).__name__}", path=str(src), line=line
                )
            yield line, obj


def _csv_rows(src: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with src.open(encoding="utf-8-sig", newline="") as f:  # -sig: skip a byte-order mark
        reader = csv.reader(f)
        line = 1
        try:
            header = next(reader, None)
            if header is None:
                return
            if len(set(header)) != len(header):
                raise DatasetError("repeated column name in header", path=str(src), line=1)
            while True:
                line = reader.line_num + 1  # a record may span lines; name its first
                record = next(reader, None)
                if record is None:
                    return
                if not record:
                    continue
                if len(record) != len(header):
                    raise DatasetError(
                        f"{len(record)} values for {len(header)} columns", path=str(src), line=line
                    )
                yield line, {k: _csv_value(k, v) for k, v in zip(header, record, strict=True)}
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DatasetError(f"unreadable CSV ({exc})", path=str(src), line=line) from exc


def _csv_value(key: str, value: str) -> Any:
    """CSV has only strings: empty means null; labels/tags are a JSON array or `a|b`; ints."""
    if value == "":
        return None
    if key in ("labels", "tags"):
        if value.lstrip().startswith("["):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return value  # refused with its field by the validator
        return [part.strip() for part in value.split("|")]
    if key in ("width", "height"):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _parquet_rows(src: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        parquet = pq.ParquetFile(src)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"unreadable Parquet ({exc})", path=str(src)) from exc
    row = 0
    with parquet:
        for batch in parquet.iter_batches(batch_size=4096):
            for item in batch.to_pylist():
                row += 1
                yield row, item


def _append(
    chunk: _Columns, raw: dict[str, Any], src: Path, line: int, seen: dict[str, int]
) -> None:
    def bad(name: str, why: str) -> DatasetError:
        return DatasetError(why, path=str(src), line=line, field=name)

    file_name = raw.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        raise bad("file_name", f"required, a non-empty string; got {_show(file_name)}")
    media_id = raw.get("media_id")
    if media_id is None or media_id == "":
        media_id = derive_media_id(file_name)
    elif isinstance(media_id, int) and not isinstance(media_id, bool):
        media_id = str(media_id)
    elif not isinstance(media_id, str) or not media_id.strip():
        raise bad("media_id", f"must be a non-empty string; got {_show(media_id)}")
    if media_id in seen:
        raise bad("media_id", f"{media_id!r} repeats the row at line {seen[media_id]}")
    seen[media_id] = line
    chunk.media_id.append(media_id)
    chunk.file_name.append(file_name)
    chunk.caption.append(_optional_str(raw, "caption", bad))
    chunk.labels.append(_string_list(raw, "labels", bad))
    chunk.tags.append(_string_list(raw, "tags", bad))
    chunk.width.append(_size(raw, "width", bad))
    chunk.height.append(_size(raw, "height", bad))
    chunk.media_uri.append(_optional_str(raw, "media_uri", bad))


def _optional_str(raw: dict[str, Any], name: str, bad: Any) -> str | None:
    value = raw.get(name)
    if value is None or isinstance(value, str):
        return value
    raise bad(name, f"must be a string or null; got {_show(value)}")


def _string_list(raw: dict[str, Any], name: str, bad: Any) -> list[str] | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise bad(name, f"must be a list of strings or null; got {_show(value)}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise bad(name, f"must hold non-empty strings; got {_show(item)}")
        if item not in out:
            out.append(item)
    return out


def _size(raw: dict[str, Any], name: str, bad: Any) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise bad(name, f"must be a whole number of pixels >= 0 or null; got {_show(value)}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
