"""The media items of an import file, read and validated chunk by chunk (`vlbench dataset import`).

    for chunk in validated_chunks(Path("items.jsonl"), 4096, {}, "image_embedding"):
        writer.write_batch(chunk.batch())

JSON Lines, CSV (a header; empty means null; labels/tags a JSON array or `a|b`; an embedding a JSON
array) or Parquet; the fields are those of `runner.server.dataset`'s module docstring. A bad row
raises `DatasetError` naming the file, the row's line (1-based line in JSON Lines and CSV, 1-based
row in Parquet) and the field; a repeated `media_id` is refused with both lines.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import DatasetError

__all__ = [
    "IMAGE_EMBEDDING_FIELD",
    "INPUT_FIELDS",
    "MEDIA_ID_NAMESPACE",
    "STAGING_SCHEMA",
    "RowChunk",
    "derive_media_id",
    "validated_chunks",
]

# media_id of a row that has none: uuid5(MEDIA_ID_NAMESPACE, file_name).
MEDIA_ID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://vlbench.invalid/media")
IMAGE_EMBEDDING_FIELD: Final = "image_embedding"
INPUT_FIELDS: Final = (
    "media_id",
    "file_name",
    "caption",
    "labels",
    "tags",
    "width",
    "height",
    "media_uri",
)

STAGING_SCHEMA: Final = pa.schema(
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


def derive_media_id(file_name: str) -> str:
    """The media_id given to a row without one: stable across imports and machines."""
    return str(uuid.uuid5(MEDIA_ID_NAMESPACE, file_name))


@dataclass(slots=True)
class RowChunk:
    """One chunk of validated rows, column by column (`batch()`: the staged Parquet columns)."""

    media_id: list[str] = field(default_factory=list)
    file_name: list[str] = field(default_factory=list)
    caption: list[str | None] = field(default_factory=list)
    labels: list[list[str] | None] = field(default_factory=list)
    tags: list[list[str] | None] = field(default_factory=list)
    width: list[int | None] = field(default_factory=list)
    height: list[int | None] = field(default_factory=list)
    media_uri: list[str | None] = field(default_factory=list)
    # Not staged in Parquet: checked against the embedding width, then written beside it.
    image_embedding: list[npt.NDArray[np.float32] | None] = field(default_factory=list)
    line: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.media_id)

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict(
            {name: getattr(self, name) for name in INPUT_FIELDS}, schema=STAGING_SCHEMA
        )


def validated_chunks(
    src: Path, chunk_rows: int, seen: dict[str, int], image_field: str
) -> Iterator[RowChunk]:
    chunk = RowChunk()
    for line, raw in _raw_rows(src):
        _append(chunk, raw, src, line, seen, image_field)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = RowChunk()
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
    """CSV has only strings: empty means null; labels/tags are a JSON array or `a|b`; ints.

    A value that looks like a JSON array of numbers (an image embedding) is decoded.
    """
    if value == "":
        return None
    if value.startswith("[") and key not in ("labels", "tags"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value  # refused with its field by the validator, if it is one checked
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
    chunk: RowChunk,
    raw: dict[str, Any],
    src: Path,
    line: int,
    seen: dict[str, int],
    image_field: str = IMAGE_EMBEDDING_FIELD,
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
    chunk.image_embedding.append(_vector(raw, image_field, bad))
    chunk.line.append(line)


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


def _vector(raw: dict[str, Any], name: str, bad: Any) -> npt.NDArray[np.float32] | None:
    """An image embedding: a list of finite numbers, not all zero, returned L2-normalised."""
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not value:
        raise bad(name, f"must be a non-empty list of numbers or null; got {_show(value)}")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise bad(name, "must hold numbers only")
    vector = np.asarray(value, dtype=np.float64)
    norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else float("nan")
    if not np.isfinite(norm) or norm == 0.0:
        raise bad(name, "must hold finite numbers, not all zero")
    normalised: npt.NDArray[np.float32] = (vector / norm).astype(np.float32)
    return normalised


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
