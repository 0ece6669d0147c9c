"""`vlbench dataset import|demo`: build datasets the local Explore server serves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from runner.cli._app import app, command

__all__ = ["dataset_app"]

dataset_app = typer.Typer(
    help="Build datasets for the local Explore server (`vlbench serve --dataset DIR`).",
    no_args_is_help=True,
)
app.add_typer(dataset_app, name="dataset")


@command("import", group=dataset_app)
def import_(
    file: Annotated[Path, typer.Argument(help="JSON Lines (.jsonl), CSV (.csv) or Parquet file.")],
    dataset_id: Annotated[str, typer.Option("--id", help="Dataset id (used in API paths).")],
    out: Annotated[Path, typer.Option("--out", help="New directory to write the dataset to.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Display name (default: the id).")
    ] = None,
    image_embedding_column: Annotated[
        str,
        typer.Option(
            "--image-embedding-column",
            help="The column of precomputed image embeddings (lists of numbers), if the file "
            "has one: semantic and visual search rank by them (else by the caption's).",
        ),
    ] = "image_embedding",
) -> None:
    """Import media items (file_name, caption, labels, tags, width, height, ...) as a dataset.

    Builds the full-text index, caption embeddings (all-MiniLM-L6-v2), image embeddings (the
    file's own, or the caption's), clusters at the five granularities and the enrichment
    metadata. A bad row is refused with its line and field.

    Example: vlbench dataset import items.jsonl --id cars --out datasets/cars

    Example: vlbench dataset import items.parquet --id cars --out datasets/cars
    --image-embedding-column clip_vector
    """
    from runner.server.dataset import import_dataset

    started = time.perf_counter()
    info = import_dataset(
        file,
        dataset_id,
        out,
        display_name=name,
        image_embedding_field=image_embedding_column,
    )
    seconds = time.perf_counter() - started
    enrichments = ",".join(sorted(info.enrichments)) or "none"
    typer.echo(
        f"imported {info.n_images} items as dataset {info.id!r} into {out} "
        f"(enrichments: {enrichments}) in {seconds:.1f} s"
    )


@command("demo", group=dataset_app)
def demo() -> None:
    """Print the demo dataset's directory, building it first if needed (about a minute).

    The demo holds 2,537 COCO val2017 images with real captions; it is cached under
    $VLBENCH_CACHE (default ~/.cache/vlbench).

    Example: vlbench serve --dataset "$(vlbench dataset demo)"
    """
    from runner.server.demo import demo_dataset_dir

    typer.echo(str(demo_dataset_dir()))
