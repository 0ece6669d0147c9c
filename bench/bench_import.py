"""How fast does `import_dataset` go, how much memory does 100,000 rows take, and is search exact?

Four measurements, in one run:

1. Caption encoding: the real all-MiniLM-L6-v2 encoder over 500 COCO captions (captions/s).
   It dominates a real import, so it is measured on its own.
2. The rest of the import at scale: `import_dataset` over ROWS synthetic rows (default 100,000)
   built from COCO captions (caption i of image j, with a numbered suffix so that rows differ),
   with an encoder that replays precomputed vectors: real MiniLM vectors of the captions, each
   mixed with a second caption's vector and noise so that no two rows are identical. Run in a
   child process so that its peak RSS is the import's own. Rows/s here excludes encoding; the
   end-to-end figure combines both: 1 / (1/encode_rate + 1/pipeline_rate).
3. Semantic search on that dataset against an exact brute-force search over the same vectors
   (numpy: one matrix product, full argsort): top-100 agreement (must be 1.0) and time per query,
   for the index (every match within the default cut-off 0.8, ranked and grouped into clusters)
   and for the peer (brute-force top-100 only, argpartition).
4. The local server over that dataset (`vlbench serve`, one worker): the workloads of
   `bench_server.py` for one short round each (req/s at concurrency 16, p99, the server's CPU per
   request, its resident memory), the healthcheck as the peer.

Run: .venv/bin/python bench/bench_import.py [--rows 100000] [--queries 30] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
from bench_server import bench, encoder_rate, report, served

from runner.server.dataset import import_dataset
from runner.server.demo import demo_images
from runner.server.encoder import load_encoder
from runner.server.index import SearchIndex
from runner.server.query import SearchRequest, TextQuery

F32 = npt.NDArray[np.float32]
BASE_CAPTIONS = 500
TOP_K = 100


class ReplayEncoder:
    """Gives the import precomputed vectors in order: stands in for MiniLM when timing the rest."""

    def __init__(self, vectors: F32) -> None:
        self._vectors = vectors
        self._next = 0

    def encode(self, texts: list[str]) -> F32:
        out = np.array(self._vectors[self._next : self._next + len(texts)], dtype=np.float32)
        self._next += len(texts)
        return out

    def encode_query(self, text: str) -> F32:
        raise NotImplementedError("the import never embeds queries")

    def knows(self, text: str) -> bool:
        return False


def synthetic_rows(n: int, captions: list[str], base: F32, seed: int = 0) -> tuple[list[str], F32]:
    """n captions and their vectors: caption a (+ suffix), vector of a mixed with b and noise."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(captions), n)
    b = rng.integers(0, len(captions), n)
    vectors = base[a] + 0.35 * base[b] + rng.normal(scale=0.02, size=(n, base.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"{captions[i]} (take {k})" for k, i in enumerate(a.tolist())]
    return texts, vectors.astype(np.float32)


def write_rows(rows: int, captions: list[str], base: F32, out_dir: Path) -> None:
    """The synthetic input file and the vectors the replay encoder will hand out."""
    texts, vectors = synthetic_rows(rows, captions, base)
    with (out_dir / "rows.jsonl").open("w", encoding="utf-8") as f:
        for k, text in enumerate(texts):
            labels = ["even"] if k % 2 == 0 else None
            row = {"file_name": f"img-{k:07d}.jpg", "caption": text, "labels": labels}
            f.write(json.dumps(row) + "\n")
    np.save(out_dir / "replay.npy", vectors)


def import_in_child(out_dir: str) -> dict[str, float]:
    """Import the rows with replayed vectors (memory-mapped); time and peak RSS of this process."""
    vectors = np.load(Path(out_dir) / "replay.npy", mmap_mode="r")
    rss_before = _peak_rss_mib()
    started = time.perf_counter()
    import_dataset(
        Path(out_dir) / "rows.jsonl", "bench", Path(out_dir) / "ds", encoder=ReplayEncoder(vectors)
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mib": _peak_rss_mib(), "rss_before_mib": rss_before}


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss keeps the parent's across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per server workload")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--vlbench",
        default=str(Path(sys.executable).parent / "vlbench"),
        help="the vlbench command",
    )
    args = parser.parse_args()

    images = demo_images()
    pool = [c for im in images for c in im.captions]
    captions = pool[:: max(1, len(pool) // BASE_CAPTIONS)][:BASE_CAPTIONS]
    encoder = load_encoder()
    started = time.perf_counter()
    base = encoder.encode(captions)
    encode_s = time.perf_counter() - started
    encode_rate = len(captions) / encode_s
    print(
        f"1. MiniLM caption encoding: {len(captions)} captions in {encode_s:.1f} s = "
        f"{encode_rate:.0f} captions/s"
    )

    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        write_rows(args.rows, captions, base, Path(tmp))
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool_exec:
            child = pool_exec.submit(import_in_child, tmp).result()
        pipeline_rate = args.rows / child["seconds"]
        end_to_end = 1.0 / (1.0 / encode_rate + 1.0 / pipeline_rate)
        meta = json.loads((Path(tmp) / "ds" / "dataset.json").read_text())
        print(
            f"2. import of {args.rows:,} rows without encoding: {child['seconds']:.1f} s = "
            f"{pipeline_rate:,.0f} rows/s; peak RSS {child['peak_rss_mib']:.0f} MiB "
            f"(child process; {child['rss_before_mib']:.0f} MiB before the import; "
            f"embeddings alone {args.rows * base.shape[1] * 4 / 2**20:.0f} MiB)"
        )
        print(
            f"   clusters per granularity 0..4: {meta['clusters']['counts']}; "
            f"duplicates: {meta['duplicates']}"
        )
        print(
            f"   end to end with MiniLM: ~{end_to_end:.0f} rows/s, so {args.rows:,} rows in "
            f"~{args.rows / end_to_end / 60:.0f} min (encoding is "
            f"{pipeline_rate / encode_rate:.0f}x slower than everything else)"
        )

        index = SearchIndex.open(Path(tmp) / "ds", encoder=encoder)
        vectors = np.asarray(np.load(Path(tmp) / "ds" / "embeddings.npy"))
        queries = [im.captions[-1] for im in images[: args.queries]]
        query_vectors = [encoder.encode_query(q) for q in queries]  # warm the query cache
        agree = []
        index_s = []
        peer_s = []
        for query, qv in zip(queries, query_vectors, strict=True):
            req = SearchRequest(text=TextQuery("semantic", query))
            t0 = time.perf_counter()
            rows, _, _ = index.matching_rows(req)
            index.search_page(req, 0)
            index_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sims = vectors @ qv
            top = np.argpartition(-sims, TOP_K)[:TOP_K]
            top = top[np.lexsort((top, -sims[top]))]
            peer_s.append(time.perf_counter() - t0)
            exact = np.lexsort((np.arange(sims.size), -sims))[:TOP_K]
            within = exact[1.0 - sims[exact] <= 0.8]  # the index answers within the cut-off
            agree.append(
                len(set(rows[:TOP_K].tolist()) & set(within.tolist())) / max(1, within.size)
            )
            assert np.array_equal(np.sort(top), np.sort(exact))
        index.close()
        ms_index = 1000 * float(np.median(index_s))
        ms_peer = 1000 * float(np.median(peer_s))
        print(
            f"3. semantic top-{TOP_K} over {args.rows:,} vectors, {len(queries)} queries: "
            f"agreement with exact brute force {min(agree):.3f} (min), {np.mean(agree):.3f} (mean)"
        )
        print(
            f"   per query (median): index {ms_index:.1f} ms (every match within 0.8, ranked, "
            f"grouped, first page built) vs numpy brute-force top-{TOP_K} {ms_peer:.1f} ms: "
            f"ratio {ms_index / ms_peer:.2f}"
        )
        serve_at_scale(Path(tmp) / "ds", args)


def serve_at_scale(dataset: Path, args: argparse.Namespace) -> None:
    """Section 4: the server's search rates and memory over the imported dataset."""
    texts = [c for image in demo_images() for c in image.captions[1:]]
    encoder_qps = encoder_rate(texts, seconds=1.0)
    options = argparse.Namespace(rounds=1, seconds=args.seconds, concurrency=args.concurrency)
    with served(args.vlbench, dataset, 1) as server:
        figures = asyncio.run(bench(server, texts, options, 1))
        rss = server.rss_mib()
    print(f"4. the local server over {args.rows:,} items (resident memory {rss:.0f} MiB):", end="")
    report(figures, 1, encoder_qps)


if __name__ == "__main__":
    main()
