"""How fast the numpy MiniLM encoder embeds queries and captions.

    .venv/bin/python bench/bench_encoder.py [--captions 2000] [--queries 200]

Prints single-query latency (p50/p99, uncached and cached) and batch throughput over real COCO
captions, each against a peer measured in the same run:
- batch: `Encoder.encode` (length-bucketed batches on a thread per core) against the same forward
  pass over batches in input order (padded to each batch's longest caption), on one thread, and
  against embedding the captions one at a time;
- the BLAS floor: the time of the dense matrix products alone for the same tokens, the part no
  implementation of this model on this CPU avoids.
sentence-transformers (torch) is not in `.venv`; its figure, measured in a scratch venv with
`tests/data/make_minilm_reference.py --latency`, is in the README.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runner.server.encoder import Encoder, load_encoder

CAPTIONS = Path(__file__).resolve().parent.parent / "runner/server/data/coco-val2017-captions.jsonl"


def captions(n: int, which: int) -> list[str]:
    """The `which`-th caption of the first n images (distinct images, so distinct texts)."""
    with CAPTIONS.open(encoding="utf-8") as f:
        rows = [json.loads(line)["captions"] for line in f if line.strip()]
    return [caps[which % len(caps)] for caps in rows[:n]]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[round(q * (len(ordered) - 1))]


def single_queries(encoder: Encoder, queries: list[str]) -> None:
    for q in captions(20, 4):
        encoder.encode_query(q)  # warm-up, other texts than the timed ones
    cold = [timed(functools.partial(encoder.encode_query, q)) * 1000 for q in queries]
    warm = [timed(functools.partial(encoder.encode_query, q)) * 1000 for q in queries]
    print(
        f"single query (uncached): p50 {statistics.median(cold):.2f} ms, "
        f"p99 {percentile(cold, 0.99):.2f} ms over {len(cold)} COCO captions"
    )
    print(
        f"single query (cached):   p50 {statistics.median(warm) * 1000:.1f} us, "
        f"{statistics.median(cold) / statistics.median(warm):.0f}x faster than uncached"
    )


def unsorted_batches(encoder: Encoder, texts: list[str], batch_size: int) -> None:
    """The peer: fixed-size batches in input order, each padded to its longest text."""
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encoder._embed([e.ids for e in encoder._tokenizer.encode_batch(chunk)])


def blas_floor(encoder: Encoder, texts: list[str]) -> float:
    """Seconds of the dense products alone (QKV, output, feed-forward) for these texts' tokens."""
    n_tokens = sum(len(e.ids) for e in encoder._tokenizer.encode_batch(texts))
    rows = 64 * 14  # a typical bucketed batch of captions
    x = np.random.default_rng(0).standard_normal((rows, encoder.dim)).astype(np.float32)
    start = time.perf_counter()
    for layer in encoder._layers:
        x @ layer.qkv_w
        x @ layer.attn_out_w
        (x @ layer.ff_in_w) @ layer.ff_out_w
    return (time.perf_counter() - start) * n_tokens / rows


def batches(encoder: Encoder, texts: list[str], n_peer: int, n_single: int) -> None:
    cores = os.cpu_count() or 1
    encoder.encode(texts[:64])  # warm-up
    n = len(texts)
    ours = timed(lambda: encoder.encode(texts))
    print(f"batch: encode() of {n} COCO captions, {cores} workers: {n / ours:.0f} captions/s")
    # The peers are slower: they run on a subset, against encode() on the same subset.
    sub = texts[:n_peer]
    ours_1 = timed(lambda: encoder.encode(sub, workers=1)) / len(sub)
    peer = timed(lambda: unsorted_batches(encoder, sub, 64)) / len(sub)
    singles = sub[:n_single]
    one_by_one = timed(lambda: [encoder._encode_one(t) for t in singles]) / len(singles)
    floor = blas_floor(encoder, sub) / len(sub)
    print(f"on {len(sub)} of them, one thread, captions/s:")
    print(f"  encode(), length-bucketed batches of <= 64: {1 / ours_1:7.0f}")
    print(f"  peer: batches of 64 in input order:         {1 / peer:7.0f}")
    print(f"  peer: one caption at a time ({len(singles)}):        {1 / one_by_one:7.0f}")
    print(f"  BLAS floor (the dense products alone):      {1 / floor:7.0f}")
    print(f"ratio length bucketing / input-order batches: {peer / ours_1:.2f}x")
    print(f"ratio batched / one at a time:                {one_by_one / ours_1:.2f}x")
    print(f"ratio {cores} workers / 1 worker:                  {ours_1 * n / ours:.2f}x")
    print(f"share of the BLAS floor reached (1 thread):   {floor / ours_1:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=2000, help="captions to embed in batches")
    parser.add_argument("--queries", type=int, default=200, help="single queries to time")
    args = parser.parse_args()
    load_s = timed(load_encoder)
    encoder = load_encoder()
    print(f"load: {load_s:.2f} s; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    single_queries(encoder, captions(args.queries, 1))
    n_peer = min(args.captions, 600)
    batches(encoder, captions(args.captions, 0), n_peer, min(100, n_peer))


if __name__ == "__main__":
    main()
