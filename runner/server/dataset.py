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
| `image_embedding` | list of numbers or null | precomputed image-level embedding, see below |

`image_embedding` (another column with `image_embedding_field`) is any scale, normalised on
import, as wide as the caption embeddings; in CSV a JSON array. Other fields are ignored. A bad
row raises `DatasetError` naming the file, its line and the field (see `runner.server.media_rows`).

Output, a directory (see `SearchIndex` for reading it):

    dataset.json     id, display name, n_images, enrichments, created_at, labels, tags, build facts
    media.parquet    one row per item in input order: the fields above plus `row`, `duplicate`,
                     `uniqueness` and `cluster_0`..`cluster_4` (see `runner.server.clusters`)
    fts.sqlite       SQLite FTS5 table `captions(caption)`, tokenizer `porter unicode61`,
                     rowid = row
    embeddings.npy   float32 (n, d) L2-normalised caption embeddings (zeros for items without one)
    image_embeddings.npy  float32 (n, d) L2-normalised image-level embeddings: the imported one,
                     else the caption's (what semantic and visual search rank by); the dataset has
                     MULTIMODEL_IMAGE_ENCODING when at least one was imported

The import streams the input in chunks (`chunk_rows`), so memory grows with the embeddings (n * d
* 4 bytes) and the columnar media table, not with Python objects per row. It builds into a hidden
temporary directory beside `out` and renames it into place at the end: an import that fails or is
interrupted leaves no `out` behind (a killed process may leave the hidden `.<name>.partial-*`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from runner.errors import DatasetError
from runner.server.clusters import (
    EXACT_DUPLICATE_LIMIT,
    LEVEL_SIZES,
    NEAR_DUPLICATE_SIMILARITY,
    build_clusters,
)
from runner.server.media_rows import (
    IMAGE_EMBEDDING_FIELD,
    INPUT_FIELDS,
    MEDIA_ID_NAMESPACE,
    STAGING_SCHEMA,
    RowChunk,
    derive_media_id,
    validated_chunks,
)
from runner.server.query import DatasetInfo

__all__ = [
    "DATASET_FILE",
    "EMBEDDINGS_FILE",
    "FORMAT_VERSION",
    "FTS_FILE",
    "FTS_TABLE",
    "FTS_TOKENIZER",
    "IMAGE_EMBEDDINGS_FILE",
    "IMAGE_EMBEDDING_FIELD",
    "MEDIA_FILE",
    "MEDIA_ID_NAMESPACE",
    "MEDIA_SCHEMA",
    "TextEncoder",
    "derive_media_id",
    "import_dataset",
    "read_info",
]

# 2: image_embeddings.npy beside the caption embeddings.
FORMAT_VERSION: Final = 2
DATASET_FILE: Final = "dataset.json"
MEDIA_FILE: Final = "media.parquet"
FTS_FILE: Final = "fts.sqlite"
EMBEDDINGS_FILE: Final = "embeddings.npy"
IMAGE_EMBEDDINGS_FILE: Final = "image_embeddings.npy"
FTS_TABLE: Final = "captions"
FTS_TOKENIZER: Final = "porter unicode61"
_DATASET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MEDIA_SCHEMA: Final = pa.schema(
    [
        pa.field("row", pa.int32(), nullable=False),
        *STAGING_SCHEMA,
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

    def knows(self, text: str) -> bool:
        """Whether `encode_query(text)` is cached (costs nothing now)."""
        ...


def import_dataset(
    src: Path,
    dataset_id: str,
    out: Path,
    *,
    encoder: TextEncoder | None = None,
    display_name: str | None = None,
    chunk_rows: int = 4096,
    image_embedding_field: str = IMAGE_EMBEDDING_FIELD,
) -> DatasetInfo:
    """Turn `src` into a served dataset directory `out`; see the module docstring.

    `out` must not exist (or be an empty directory). `encoder` defaults to the real MiniLM
    encoder (`runner.server.encoder.load_encoder()`). `image_embedding_field` is the input
    column holding precomputed image embeddings (absent: none are imported). Raises
    `DatasetError` for an unreadable file, a bad row (with its line and field), a repeated
    media_id, an empty input, or an `out` that already holds something.

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
        info = _build(
            src,
            dataset_id,
            display_name or dataset_id,
            tmp,
            encoder,
            chunk_rows,
            image_embedding_field,
        )
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
            n_captions=int(meta["n_captions"]),
        )
    except OSError as exc:
        raise DatasetError(f"not a dataset directory ({exc.strerror})", path=str(path)) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"unreadable dataset.json ({exc!r})", path=str(meta_path)) from exc


# --- the build --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Stats:
    n: int = 0
    captions: int = 0
    labels: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    dim: int | None = None
    image_embeddings: int = 0


def _build(
    src: Path,
    dataset_id: str,
    display_name: str,
    tmp: Path,
    encoder: TextEncoder,
    chunk_rows: int,
    image_field: str,
) -> DatasetInfo:
    stats = _Stats()
    seen: dict[str, int] = {}  # media_id -> line, to name both lines of a repeat
    raw_path = tmp / "embeddings.f32"
    raw_image_path = tmp / "image_embeddings.f32"
    staging_path = tmp / "staging.parquet"
    fts = _open_fts(tmp / FTS_FILE)
    with (
        pq.ParquetWriter(staging_path, STAGING_SCHEMA) as writer,
        raw_path.open("wb") as raw,
        raw_image_path.open("wb") as raw_image,
    ):
        for chunk in validated_chunks(src, chunk_rows, seen, image_field):
            writer.write_batch(chunk.batch())
            _index_captions(fts, stats.n, chunk.caption)
            vectors = _embed(encoder, chunk.caption, stats)
            raw.write(vectors.tobytes())
            raw_image.write(_image_vectors(vectors, chunk, stats, src, image_field).tobytes())
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
    images = np.fromfile(raw_image_path, dtype=np.float32).reshape(stats.n, dim)
    np.save(tmp / IMAGE_EMBEDDINGS_FILE, images)
    del images
    raw_image_path.unlink()
    clustering = build_clusters(embeddings)
    del embeddings
    staged = pq.read_table(staging_path, schema=STAGING_SCHEMA)
    media = pa.table(
        {
            "row": pa.array(np.arange(stats.n, dtype=np.int32)),
            **{name: staged.column(name) for name in INPUT_FIELDS},
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
                ("MULTIMODEL_IMAGE_ENCODING", stats.image_embeddings > 0),
                ("IMAGE_TAGGING", bool(stats.labels)),
                ("USER_TAGS", bool(stats.tags)),
            )
            if present
        ),
        created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        labels=tuple(sorted(stats.labels)),
        tags=tuple(sorted(stats.tags)),
        n_captions=stats.captions,
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
        "image_embeddings": {
            "imported": stats.image_embeddings,
            "field": image_field,
            "others": "the caption embedding (zeros without a caption)",
        },
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


def _image_vectors(
    captions: npt.NDArray[np.float32], chunk: RowChunk, stats: _Stats, src: Path, name: str
) -> npt.NDArray[np.float32]:
    """The chunk's image embeddings: the imported ones (normalised), else the caption's."""
    out = captions.copy()
    for i, vector in enumerate(chunk.image_embedding):
        if vector is None:
            continue
        if vector.shape != (stats.dim,):
            raise DatasetError(
                f"has {vector.size} numbers; the caption embeddings have {stats.dim}",
                path=str(src),
                line=chunk.line[i],
                field=name,
            )
        out[i] = vector
        stats.image_embeddings += 1
    return out


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
