"""`vlbench export`, `vlbench merge`, `vlbench push`: matched media IDs; runs across machines."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import IO, Annotated

import typer

from runner.cli._app import command
from runner.errors import UsageError
from runner.export.formats import GROUPINGS, ExportFormat, choose_format

__all__ = ["export", "merge", "push"]


@command()
def export(
    source: Annotated[
        str,
        typer.Argument(
            help="A run directory (or s3:// / gs:// URI); with --live, a suite YAML file.",
            show_default=False,
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Output file; - is stdout.")] = "-",
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="csv, jsonl, parquet or txt (default: from --out); trec: a TREC run file per"
            " mode and setting, and qrels.txt, into the directory --out.",
        ),
    ] = None,
    group_by: Annotated[
        str, typer.Option("--group-by", "-g", help=f"One of: {', '.join(GROUPINGS)}.")
    ] = "merged",
    mode: Annotated[
        list[str] | None, typer.Option("--mode", help="Only this mode (repeat).")
    ] = None,
    query: Annotated[
        list[str] | None, typer.Option("--query", help="Only this query id (repeat).")
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score", help="Keep hits whose NORMALISED score (higher is better) >= it."
        ),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Keep the first k hits of each request.")
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Ask the API: export jobs, else full pagination.")
    ] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="With --live: also page through; record differences.")
    ] = False,
    no_fallback: Annotated[
        bool,
        typer.Option("--no-fallback", help="With --live: a REJECTED job is an error, not paged."),
    ] = False,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="With --live: seconds between status polls.")
    ] = 2.0,
    max_wait: Annotated[
        float, typer.Option("--max-wait", help="With --live: longest wait for one job, seconds.")
    ] = 600.0,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest", help="With --live: where the outcomes go (default OUT.manifest.json)."
        ),
    ] = None,
) -> None:
    """Write the media IDs a run matched, deduplicated, with file name, best score and queries.

    --min-score applies to the normalised score (higher is better: 1 - cosine distance, bm25
    as it is), never to the raw score, whose direction depends on its type.
    Example: vlbench export reports/suite=demo/run_date=2024-11-24/run_id=... -o ids.csv
    Also:    vlbench export RUN --mode semantic --min-score 0.6 -f txt | wc -l
    Live:    vlbench export --live queries/demo.yaml -o all.parquet --verify
    TREC:    vlbench export RUN --format trec --out trec/   (trec_eval trec/qrels.txt trec/*.run)
    """
    from runner.export.ids import export_run  # polars and the reader: not for --help

    if fmt == "trec":
        _export_trec(source, out, mode, live=live)
        return
    chosen = choose_format(fmt, out)
    target: Path | IO[bytes] = sys.stdout.buffer if out == "-" else Path(out)
    if live:
        if mode or query or min_score is not None or top_k is not None:
            raise UsageError(
                "--live exports every match: --mode/--query/--min-score/--top-k do not apply"
            )
        _live(
            source, target, chosen, group_by, manifest, poll_interval, max_wait, verify, no_fallback
        )
        return
    if verify or no_fallback:
        raise UsageError("--verify and --no-fallback need --live")
    done = export_run(
        source,
        target,
        fmt=chosen,
        group_by=group_by,
        modes=mode,
        queries=query,
        min_score=min_score,
        top_k=top_k,
    )
    typer.echo(f"{done.rows} rows to {done.path or 'stdout'}", err=True)


def _export_trec(source: str, out: str, modes: list[str] | None, *, live: bool) -> None:
    """`--format trec`: the run's rankings as TREC run files, one a mode and setting."""
    from runner.export.trec import write_trec_runs

    if live or out == "-":
        raise UsageError(
            "--format trec writes a file per mode and setting: give a run and --out DIR (no --live)"
        )
    paths = write_trec_runs(source, out, modes=modes)
    typer.echo(f"{len(paths) - 1} TREC run files and {paths[-1].name} in {out}", err=True)
    for path in paths:
        typer.echo(str(path))


def _live(
    suite: str,
    target: Path | IO[bytes],
    fmt: ExportFormat,
    group_by: str,
    manifest: Path | None,
    poll_interval: float,
    max_wait: float,
    verify: bool,
    no_fallback: bool,
) -> None:
    """`export --live`: the API's export jobs; print the fallbacks and differences it noted."""
    from runner.export.live import LiveOptions, live_export  # the executor, aiohttp
    from runner.suite import load_suite

    options = LiveOptions(
        poll_interval_s=poll_interval, max_wait_s=max_wait, verify=verify, fallback=not no_fallback
    )
    result = asyncio.run(
        live_export(
            load_suite(suite),
            target,
            fmt=fmt,
            group_by=group_by,
            options=options,
            manifest_path=manifest,
        )
    )
    for outcome in result.fallbacks:
        typer.echo(
            f"note: {', '.join(outcome.query_ids)} ({outcome.mode}): {outcome.note}", err=True
        )
    for outcome in result.differences:
        typer.echo(
            f"difference: {', '.join(outcome.query_ids)} ({outcome.mode}): "
            f"{outcome.only_export} only in the export job, "
            f"{outcome.only_pagination} only in pagination",
            err=True,
        )
    where = result.path or "stdout"
    manifest_note = f"; manifest {result.manifest_path}" if result.manifest_path else ""
    typer.echo(f"{result.rows} rows to {where}{manifest_note}", err=True)


@command()
def merge(
    run_dirs: Annotated[
        list[str],
        typer.Argument(
            help="The shard runs, directories or s3:// / gs:// URIs (all N of them).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The root the merged run goes under.")] = Path(
        "reports"
    ),
) -> None:
    """Join the runs of `vlbench run --shard k/N` workers into one run, as if unsharded.

    Refuses shards of different suites, missing or repeated shards, and unfinished runs.
    Rows are in canonical order: requests by (request_key, page), hits by (request_key, rank).
    Example: vlbench merge w1/suite=demo/run_date=.../run_id=... w2/suite=demo/... --out reports
    """
    from runner.store.merge import merge_runs

    result = merge_runs(run_dirs, out)
    counts = result.counts
    typer.echo(
        f"merged {len(result.shards)} shards: {counts.requests_done} requests, "
        f"{counts.pages} pages, {counts.hits} hits"
        + (f", {result.labels} new label(s) of the suite" if result.labels else "")
    )
    typer.echo(f"run_dir: {result.run_dir}")


@command()
def push(
    run_dir: Annotated[
        str,
        typer.Argument(
            help="A finished run: a directory, or an s3:// / gs:// URI.", show_default=False
        ),
    ],
    dest: Annotated[
        str,
        typer.Argument(
            help="A root: s3://bucket/prefix, gs://bucket/prefix or a path.", show_default=False
        ),
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run if it is already there.")
    ] = False,
) -> None:
    """Copy a finished run to object storage, keeping its hive layout (manifest uploaded last).

    S3 settings come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
    Example: vlbench push reports/suite=demo/run_date=2024-11-24/run_id=... s3://nightly/vlbench
    """
    from runner.store.push import push_run

    result = push_run(run_dir, dest, overwrite=overwrite)
    labels = f", {result.labels} new label(s) of the suite" if result.labels else ""
    if result.labels_received:
        labels += f", {result.labels_received} label(s) received from there"
    typer.echo(f"pushed {len(result.files)} files ({result.bytes} bytes){labels} to {result.uri}")
