"""`vlbench serve`: the local Explore API server over a dataset directory or the demo."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runner.cli._app import command, fail
from runner.errors import UsageError
from runner.server.config import (
    CONTRACT_CHANGES,
    EXPORT_FAULTS,
    FEATURES,
    ServerConfig,
    fault_fields,
)

if TYPE_CHECKING:
    from runner.server.lifecycle import RunningServer

__all__ = ["serve"]

_FEATURE_HELP = (
    f"Turn a feature off (repeatable): {', '.join(FEATURES)}. user_config says so and the "
    "requests that use it get 403."
)
_HIDE_HELP = (
    "Leave an enrichment out of the dataset's (repeatable), e.g. CAPTION_IMAGES: captions then "
    "count as imported, so caption search answers 409 and full-text search still works."
)
_FAULT_HELP = (
    "A named fault (repeatable). export=VALUE ends every export job so: "
    f"{', '.join(EXPORT_FAULTS)}. contract=VALUE changes the answers' contract on purpose, for "
    f"contract checkers: {', '.join(CONTRACT_CHANGES)} (score-type-flip: cosine_similarity = "
    "1 - distance instead of cosine_distance; score-as-string: scores as strings; rename-field: "
    "relevance_score is called score; legacy-shape: clusters as id/entity_type/size/media with "
    "total_pages/current_page; legacy-status: the dataset's legacy status, no status_new; "
    "image-filename: export files call file_name image_filename)."
)


@command()
def serve(
    dataset: str = typer.Option(
        "demo", help="A dataset directory (vlbench dataset import) or 'demo'."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8765, help="Port to listen on (0: a free one)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="On-premises mode: no token needed."),
    latency_ms: float = typer.Option(0.0, help="Fault: added latency per request, in ms."),
    rate_limit: float | None = typer.Option(
        None, help="Fault: 429 with Retry-After above N req/s."
    ),
    fail_rate: float = typer.Option(0.0, help="Fault: share of requests answered 500/502/503."),
    drop_rate: float = typer.Option(0.0, help="Fault: share of connections closed mid-response."),
    malformed_rate: float = typer.Option(0.0, help="Fault: share of 200s with a body not JSON."),
    token_ttl: float | None = typer.Option(
        None, help="Treat tokens older than this (s) as expired."
    ),
    seed: int = typer.Option(0, help="Seed of the fault draws (same seed, same faults)."),
    dataset_status: str = typer.Option(
        "READY",
        help="The dataset's status_new: READY, READ ONLY and PARTIAL INDEX are searchable; "
        "DRAFT, INDEXING and ERROR answer searches 409.",
    ),
    disable_feature: Annotated[
        list[str] | None, typer.Option("--disable-feature", help=_FEATURE_HELP)
    ] = None,
    fault: Annotated[list[str] | None, typer.Option("--fault", help=_FAULT_HELP)] = None,
    hide_enrichment: Annotated[
        list[str] | None, typer.Option("--hide-enrichment", help=_HIDE_HELP)
    ] = None,
    workers: int = typer.Option(
        1, min=1, help="Processes sharing the port (SO_REUSEPORT), e.g. one a core."
    ),
) -> None:
    """Serve the Explore API locally until Ctrl-C, printing its base URL and dataset id.

    Example: vlbench serve --dataset demo --port 8765 --fail-rate 0.1 --seed 7

    Example: vlbench serve --dataset-status "READ ONLY" --disable-feature semantic_search
    --fault export=canceled --fault contract=score-type-flip
    """
    from runner.server.workers import serve as serve_processes  # the server: not for --help

    if dataset != "demo" and not Path(dataset).is_dir():
        fail(UsageError(f"--dataset: {dataset} is not a directory (or 'demo')"))
    try:
        config = ServerConfig(
            dataset_dir=dataset,
            host=host,
            port=port,
            auth=not no_auth,
            latency_ms=latency_ms,
            rate_limit=rate_limit,
            fail_rate=fail_rate,
            drop_rate=drop_rate,
            malformed_rate=malformed_rate,
            token_ttl_s=token_ttl,
            seed=seed,
            dataset_status=dataset_status,
            disabled_features=frozenset(disable_feature or ()),
            hidden_enrichments=frozenset(hide_enrichment or ()),
            **fault_fields(fault or ()),
        )
    except ValueError as exc:
        fail(UsageError(str(exc)))
    try:
        serve_processes(config, workers=workers, ready=_announce)
    except OSError as exc:
        fail(UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))


def _announce(server: RunningServer) -> None:
    auth = "bearer token (vlbench token)" if server.config.auth else "none (on-premises mode)"
    typer.echo(f"base_url: {server.base_url}")
    typer.echo(f"dataset_id: {server.dataset_id}")
    typer.echo(f"auth: {auth}")
