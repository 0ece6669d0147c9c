"""Importing media files into served datasets: formats, refusals, atomicity, the demo build."""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.errors import DatasetError
from runner.server import demo
from runner.server.dataset import (
    DATASET_FILE,
    EMBEDDINGS_FILE,
    FTS_FILE,
    FTS_TABLE,
    MEDIA_FILE,
    MEDIA_ID_NAMESPACE,
    derive_media_id,
    import_dataset,
    read_info,
)
from runner.server.encoder import Encoder, load_encoder

REPO = Path(__file__).resolve().parents[1]
TAG_A = str(uuid.uuid5(uuid.NAMESPACE_DNS, "tag-a"))
TAG_B = str(uuid.uuid5(uuid.NAMESPACE_DNS, "tag-b"))

ROWS: list[dict[str, Any]] = [
    {
        "media_id": "m-1",
        "file_name": "dog.jpg",
        "caption": "A dog runs on the beach.",
        "labels": ["dog"],
        "tags": [TAG_A],
        "width": 640,
        "height": 480,
        "media_uri": "https://cdn.example.com/dog.jpg",
    },
    {
        "file_name": "cats.jpg",
        "caption": "Two cats sleep on a red couch.",
        "labels": ["cat", "couch"],
        "tags": None,
        "width": 500,
        "height": 375,
    },
    {"file_name": "bare.jpg", "caption": None, "labels": None, "tags": [TAG_A, TAG_B]},
    {
        "media_id": "m-4",
        "file_name": "bus.jpg",
        "caption": 'A "double decker" bus, NEAR( the * station.',
        "labels": [],
        "width": 10,
        "height": 20,
    },
]
EXPECTED_COLUMNS = ("media_id", "file_name", "caption", "labels", "tags", "width", "height")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = ["media_id", "file_name", "caption", "labels", "tags", "width", "height", "media_uri"]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return path


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(value) if value else "[]"
    return str(value)


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = ["media_id", "file_name", "caption", "labels", "tags", "width", "height", "media_uri"]
    table = pa.table(
        {c: [r.get(c) for r in rows] for c in columns},
        schema=pa.schema(
            [
                ("media_id", pa.string()),
                ("file_name", pa.string()),
                ("caption", pa.string()),
                ("labels", pa.list_(pa.string())),
                ("tags", pa.list_(pa.string())),
                ("width", pa.int64()),
                ("height", pa.int64()),
                ("media_uri", pa.string()),
            ]
        ),
    )
    pq.write_table(table, path)
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


def expected_media_id(row: dict[str, Any]) -> str:
    return row.get("media_id") or str(uuid.uuid5(MEDIA_ID_NAMESPACE, row["file_name"]))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_every_format_imports_the_same_items(tmp_path: Path, fmt: str, encoder: Encoder) -> None:
    src = WRITERS[fmt](tmp_path / f"items.{fmt}", ROWS)
    info = import_dataset(src, "tiny", tmp_path / "ds", encoder=encoder, display_name="Tiny")

    media = pq.read_table(tmp_path / "ds" / MEDIA_FILE).to_pylist()
    assert [m["row"] for m in media] == list(range(len(ROWS)))
    assert [m["media_id"] for m in media] == [expected_media_id(r) for r in ROWS]
    for got, row in zip(media, ROWS, strict=True):
        for column in EXPECTED_COLUMNS[1:]:
            want = row.get(column)
            # An empty list and a missing list are the same thing in every format.
            assert (got[column] or None) == (want or None), column
        assert got["media_uri"] == row.get("media_uri")
    assert info == read_info(tmp_path / "ds")
    assert (info.id, info.display_name, info.n_images) == ("tiny", "Tiny", len(ROWS))
    assert info.enrichments == {"CAPTION_IMAGES", "IMAGE_TAGGING", "USER_TAGS"}
    assert info.labels == ("cat", "couch", "dog")
    assert info.tags == tuple(sorted({TAG_A, TAG_B}))
    assert info.created_at.tzinfo is not None


def test_outputs_hold_the_index_the_embeddings_and_the_clusters(
    tmp_path: Path, encoder: Encoder
) -> None:
    import_dataset(
        write_jsonl(tmp_path / "i.jsonl", ROWS), "tiny", tmp_path / "ds", encoder=encoder
    )
    captions = [r["caption"] for r in ROWS]

    vectors = np.load(tmp_path / "ds" / EMBEDDINGS_FILE)
    assert vectors.dtype == np.float32 and vectors.shape == (len(ROWS), encoder.dim)
    with_caption = [i for i, c in enumerate(captions) if c is not None]
    expected = encoder.encode([captions[i] for i in with_caption])
    np.testing.assert_allclose(vectors[with_caption], expected, atol=1e-6)
    assert not vectors[[i for i, c in enumerate(captions) if c is None]].any()

    db = sqlite3.connect(tmp_path / "ds" / FTS_FILE)
    indexed = dict(db.execute(f"SELECT rowid, caption FROM {FTS_TABLE}").fetchall())
    db.close()
    assert indexed == {i: captions[i] for i in with_caption}

    media = pq.read_table(tmp_path / "ds" / MEDIA_FILE)
    levels = np.stack([media.column(f"cluster_{g}").to_numpy() for g in range(5)], axis=1)
    assert_nested(levels)
    duplicate = media.column("duplicate").to_numpy()
    np.testing.assert_allclose(media.column("uniqueness").to_numpy(), 1 - duplicate, atol=1e-6)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_allclose(duplicate, np.clip(sims.max(axis=1), 0, 1), atol=1e-6)
    meta = json.loads((tmp_path / "ds" / DATASET_FILE).read_text())
    assert meta["duplicates"] == "exact" and meta["embedding_dim"] == encoder.dim


def assert_nested(levels: npt.NDArray[np.integer[Any]]) -> None:
    """Every cluster at granularity g lies inside one cluster at g + 1."""
    for g in range(4):
        pairs = {(int(a), int(b)) for a, b in zip(levels[:, g], levels[:, g + 1], strict=True)}
        parents: dict[int, int] = {}
        for child, parent in pairs:
            assert parents.setdefault(child, parent) == parent, f"level {g} cluster {child}"


def test_enrichments_follow_what_the_rows_hold(tmp_path: Path, encoder: Encoder) -> None:
    rows = [{"file_name": "a.jpg", "caption": "a red car"}, {"file_name": "b.jpg", "caption": "x"}]
    info = import_dataset(
        write_jsonl(tmp_path / "i.jsonl", rows), "plain", tmp_path / "d", encoder=encoder
    )
    assert info.enrichments == {"CAPTION_IMAGES"}
    no_captions = [{"file_name": "a.jpg", "labels": ["car"]}]
    info = import_dataset(
        write_jsonl(tmp_path / "n.jsonl", no_captions), "nocap", tmp_path / "e", encoder=encoder
    )
    assert info.enrichments == {"IMAGE_TAGGING"}


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.csv"])
def test_a_byte_order_mark_is_skipped(tmp_path: Path, name: str, encoder: Encoder) -> None:
    body = '{"file_name": "a.jpg"}\n' if name.endswith("jsonl") else "file_name\na.jpg\n"
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())
    info = import_dataset(tmp_path / name, "bom", tmp_path / "ds", encoder=encoder)
    assert info.n_images == 1


def test_derived_media_ids_are_stable(tmp_path: Path, encoder: Encoder) -> None:
    rows = [{"file_name": f"img-{i}.jpg", "caption": f"picture {i}"} for i in range(3)]
    src = write_jsonl(tmp_path / "i.jsonl", rows)
    import_dataset(src, "a", tmp_path / "a", encoder=encoder)
    import_dataset(src, "b", tmp_path / "b", encoder=encoder)
    ids_a = pq.read_table(tmp_path / "a" / MEDIA_FILE).column("media_id").to_pylist()
    ids_b = pq.read_table(tmp_path / "b" / MEDIA_FILE).column("media_id").to_pylist()
    assert ids_a == ids_b == [derive_media_id(r["file_name"]) for r in rows]
    assert ids_a[0] == str(uuid.uuid5(MEDIA_ID_NAMESPACE, "img-0.jpg"))


GOOD = '{"file_name": "ok.jpg", "caption": "fine"}'


@pytest.mark.parametrize(
    "name, text, line, field",
    [
        pytest.param("a.jsonl", f'{GOOD}\n{{"caption": "x"}}\n', 2, "file_name", id="no-file-name"),
        pytest.param(
            "a.jsonl", f'{GOOD}\n\n{{"file_name": ""}}\n', 3, "file_name", id="empty-name"
        ),
        pytest.param(
            "a.jsonl", f'{GOOD}\n{{"file_name": "b", "width": -1}}\n', 2, "width", id="neg-width"
        ),
        pytest.param(
            "a.jsonl", f'{GOOD}\n{{"file_name": "b", "height": 1.5}}\n', 2, "height", id="frac"
        ),
        pytest.param(
            "a.jsonl", f'{GOOD}\n{{"file_name": "b", "width": true}}\n', 2, "width", id="bool"
        ),
        pytest.param(
            "a.jsonl", f'{GOOD}\n{{"file_name": "b", "labels": "dog"}}\n', 2, "labels", id="str"
        ),
        pytest.param(
            "a.jsonl", f'{GOOD}\n{{"file_name": "b", "tags": [1]}}\n', 2, "tags", id="int-tag"
        ),
        pytest.param(
            "a.jsonl", f'{GOOD}\n{{"file_name": "b", "caption": 3}}\n', 2, "caption", id="num"
        ),
        pytest.param(
            "a.jsonl", f'{GOOD}\n{{"file_name": "b", "media_id": []}}\n', 2, "media_id", id="id"
        ),
        pytest.param("a.jsonl", f"{GOOD}\n{GOOD[:-1]}\n", 2, "", id="bad-json"),
        pytest.param("a.jsonl", f"{GOOD}\n[1, 2]\n", 2, "", id="not-object"),
        pytest.param(
            "a.csv", 'file_name,caption\nok.jpg,"two\nlines"\nb.jpg,x,extra\n', 4, "", id="csv-cols"
        ),
        pytest.param(
            "a.csv", "file_name,width\nok.jpg,1\n\nb.jpg,wide\n", 4, "width", id="csv-width"
        ),
        pytest.param(
            "a.csv", 'file_name,labels\nok.jpg,\nb.jpg,"[1,"\n', 3, "labels", id="csv-labels"
        ),
    ],
)
def test_a_bad_row_is_refused_with_its_line_and_field(
    tmp_path: Path, name: str, text: str, line: int, field: str, encoder: Encoder
) -> None:
    src = tmp_path / name
    src.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        import_dataset(src, "bad", tmp_path / "out", encoder=encoder)
    assert (caught.value.line, caught.value.field) == (line, field)
    assert str(caught.value).startswith(f"{src}:{line}: {field + ': ' if field else ''}")
    assert not (tmp_path / "out").exists()


def test_a_bad_parquet_row_is_named_by_row_number(tmp_path: Path, encoder: Encoder) -> None:
    table = pa.table({"file_name": ["a.jpg", "b.jpg", "c.jpg"], "width": ["1", "2", "3"]})
    pq.write_table(table, tmp_path / "a.parquet")
    with pytest.raises(DatasetError) as caught:
        import_dataset(tmp_path / "a.parquet", "bad", tmp_path / "out", encoder=encoder)
    assert (caught.value.line, caught.value.field) == (1, "width")


@pytest.mark.parametrize(
    "rows, line, first",
    [
        pytest.param(
            [{"file_name": "a", "media_id": "x"}, {"file_name": "b", "media_id": "x"}],
            2,
            1,
            id="given",
        ),
        pytest.param(
            [{"file_name": "a"}, {"file_name": "b"}, {"file_name": "a"}], 3, 1, id="derived"
        ),
    ],
)
def test_a_repeated_media_id_is_refused(
    tmp_path: Path, rows: list[dict[str, Any]], line: int, first: int, encoder: Encoder
) -> None:
    with pytest.raises(DatasetError, match=f"repeats the row at line {first}") as caught:
        import_dataset(
            write_jsonl(tmp_path / "d.jsonl", rows), "dup", tmp_path / "o", encoder=encoder
        )
    assert (caught.value.line, caught.value.field) == (line, "media_id")


class FailingEncoder:
    """The real encoder, failing on its n-th call, as an import interrupted mid-way would."""

    def __init__(self, inner: Encoder, fail_on_call: int, exc: BaseException) -> None:
        self.inner = inner
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.exc = exc

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise self.exc
        return self.inner.encode(texts)

    def encode_query(self, text: str) -> npt.NDArray[np.float32]:
        return self.inner.encode_query(text)

    def knows(self, text: str) -> bool:
        return self.inner.knows(text)


@pytest.mark.parametrize("exc", [RuntimeError("encoder died"), KeyboardInterrupt()], ids=repr)
def test_an_interrupted_import_leaves_nothing(
    tmp_path: Path, exc: BaseException, encoder: Encoder
) -> None:
    rows = [{"file_name": f"{i}.jpg", "caption": f"a photo of {i} apples"} for i in range(12)]
    failing = FailingEncoder(encoder, fail_on_call=3, exc=exc)
    parent = tmp_path / "datasets"
    parent.mkdir()
    with pytest.raises(type(exc)):
        import_dataset(
            write_jsonl(tmp_path / "i.jsonl", rows),
            "x",
            parent / "x",
            encoder=failing,
            chunk_rows=4,
        )
    assert failing.calls == 3  # two chunks were written before the failure
    assert list(parent.iterdir()) == []


def test_an_existing_dataset_is_not_overwritten(tmp_path: Path, encoder: Encoder) -> None:
    src = write_jsonl(tmp_path / "i.jsonl", [{"file_name": "a.jpg", "caption": "a cat"}])
    (tmp_path / "empty").mkdir()
    import_dataset(src, "x", tmp_path / "empty", encoder=encoder)  # an empty directory is fine
    before = (tmp_path / "empty" / DATASET_FILE).read_bytes()
    with pytest.raises(DatasetError, match="already exists"):
        import_dataset(src, "x", tmp_path / "empty", encoder=encoder)
    assert (tmp_path / "empty" / DATASET_FILE).read_bytes() == before


@pytest.mark.parametrize(
    "name, text, dataset_id, match",
    [
        pytest.param("e.jsonl", "\n\n", "x", "no media items", id="empty"),
        pytest.param("e.txt", GOOD, "x", "unknown format", id="suffix"),
        pytest.param("e.jsonl", GOOD, "../up", "not a dataset id", id="id"),
        pytest.param("e.parquet", "not parquet", "x", "unreadable Parquet", id="parquet"),
    ],
)
def test_unusable_inputs_are_refused(
    tmp_path: Path, name: str, text: str, dataset_id: str, match: str, encoder: Encoder
) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=match):
        import_dataset(tmp_path / name, dataset_id, tmp_path / "out", encoder=encoder)
    assert not (tmp_path / "out").exists()


# --- the demo --------------------------------------------------------------------------------


def test_checked_in_demo_queries_are_what_the_builder_writes(tmp_path: Path) -> None:
    for path in demo.write_demo_queries(tmp_path):
        assert path.read_text() == (REPO / "queries" / path.name).read_text(), path.name


def test_demo_queries_are_known_items_and_labels() -> None:
    queries, qrels, labels = demo.demo_queries()
    images = {im.media_id: im for im in demo.demo_images()}
    texts = dict(queries)
    assert len(texts) == len(queries) == 60 + len(demo.DEMO_LABEL_QUERIES)
    for qid, media_id, grade in qrels:
        image = images[media_id]
        assert (qid, grade) == (f"known-{image.image_id}", 2)
        assert texts[qid] == " ".join(image.captions[1].split())  # another caption than indexed
    assert {qid for qid, _ in labels} == {qid for qid, _, _ in demo.DEMO_LABEL_QUERIES}
    assert all(label in demo.COCO_CATEGORIES for _, label in labels)


@pytest.mark.parametrize(
    "text, labels",
    [
        ("Two men ride bikes past a stop sign.", ["person", "bicycle", "stop sign"]),
        ("A teddy bear sits on a bed", ["bed", "teddy bear"]),
        ("puppies and kittens", ["cat", "dog"]),
        ("an orange bus with skis on the roof", ["bus", "skis"]),
        ("A cluttered desk.", []),
    ],
)
def test_labels_are_the_coco_categories_a_caption_mentions(text: str, labels: list[str]) -> None:
    assert demo.labels_mentioned([text]) == labels


def test_demo_dataset_holds_the_shipped_images(demo_dataset_dir: Path) -> None:
    info = read_info(demo_dataset_dir)
    images = demo.demo_images()
    assert (info.id, info.n_images) == (demo.DEMO_DATASET_ID, len(images))
    assert info.enrichments == {
        "CAPTION_IMAGES",
        "MULTIMODEL_IMAGE_ENCODING",
        "IMAGE_TAGGING",
        "USER_TAGS",
    }
    assert set(info.tags) == set(demo.DEMO_TAGS.values())
    media = pq.read_table(demo_dataset_dir / MEDIA_FILE).to_pylist()
    for row, image in zip(media, images, strict=True):
        assert row["media_id"] == image.media_id
        assert row["caption"] == image.captions[0]
        assert (row["labels"] or []) == demo.labels_mentioned(image.captions)
        assert (demo.DEMO_TAGS["favourite"] in (row["tags"] or [])) == (image.image_id % 7 == 0)


class HashEncoder:
    """A fast deterministic stand-in: only for the race test, where vectors do not matter."""

    dim = 8

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.ones((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i, zlib.crc32(text.encode()) % self.dim] += 1.0
        normalised: npt.NDArray[np.float32] = out / np.linalg.norm(out, axis=1, keepdims=True)
        return normalised

    def encode_query(self, text: str) -> npt.NDArray[np.float32]:
        vector: npt.NDArray[np.float32] = self.encode([text])[0]
        return vector

    def knows(self, text: str) -> bool:
        return False


def test_racing_demo_builds_share_one_complete_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path / "cache"))
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(demo.demo_dataset_dir(encoder=HashEncoder()))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    datasets = tmp_path / "cache" / "datasets"
    assert [p.name for p in datasets.iterdir()] == [results[0].name]
    assert read_info(results[0]).n_images == len(demo.demo_images())
    assert demo.demo_dataset_dir(encoder=HashEncoder()) == results[0]  # built once, reused


# --- the command line -------------------------------------------------------------------------


def test_cli_import_and_demo(
    tmp_path: Path, demo_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from runner.cli import app

    runner = CliRunner()
    src = write_jsonl(tmp_path / "items.jsonl", ROWS)
    result = runner.invoke(
        app, ["dataset", "import", str(src), "--id", "cli", "--out", str(tmp_path / "ds")]
    )
    assert result.exit_code == 0, result.output
    assert f"imported {len(ROWS)} items as dataset 'cli'" in result.output
    assert read_info(tmp_path / "ds").n_images == len(ROWS)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file_name": "a"}\n{"file_name": 7}\n', encoding="utf-8")
    result = runner.invoke(
        app, ["dataset", "import", str(bad), "--id", "x", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == DatasetError.exit_code
    assert f"error: {bad}:2: file_name:" in result.output
    assert not (tmp_path / "x").exists()

    monkeypatch.setenv("VLBENCH_CACHE", str(demo_dataset_dir.parents[1]))
    result = runner.invoke(app, ["dataset", "demo"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(demo_dataset_dir)
