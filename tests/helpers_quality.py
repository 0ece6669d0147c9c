"""Runs of a small three-mode suite against the local server, for the quality features' tests.

    run_dir = served_run(demo_server, tmp_path)            # caption, fts, semantic; a sweep
    run_dir = served_run(demo_server, tmp_path, fusions=[{"method": "rrf", "modes": [...]}])

Queries over the demo dataset judged by label (silver judgments pooled from the run's hits), so
every mode has relevant and non-relevant hits and the caption/semantic cut-offs matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from helpers_exec import run_sync, write_suite

from runner.server.lifecycle import ServerThread

__all__ = ["LABEL_QUERIES", "served_run"]

LABEL_QUERIES: Final = (
    ("dog", "a dog running on the grass", "dog"),
    ("cat", "a cat sleeping on a couch", "cat"),
    ("pizza", "a pizza on a plate", "pizza"),
    ("train", "a train at the station", "train"),
    ("giraffe", "a giraffe eating leaves", "giraffe"),
    ("elephant", "elephants walking in a field", "elephant"),
    ("surf", "a man riding a surfboard on a wave", "surfboard"),
    ("kite", "people flying kites on a beach", "kite"),
    ("umbrella", "a woman holding an umbrella in the rain", "umbrella"),
    ("toilet", "a white toilet in a bathroom", "toilet"),
    ("clock", "a clock on a tower", "clock"),
    ("motorcycle", "a man on a motorcycle", "motorcycle"),
)


def served_run(
    server: ServerThread,
    folder: Path,
    *,
    name: str = "quality",
    fusions: Sequence[dict[str, Any]] = (),
    queries: Sequence[tuple[str, str, str]] = LABEL_QUERIES,
) -> Path:
    """Run the suite against `server` into `folder` (no report) and return the run directory."""
    folder.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"fusions": list(fusions)} if fusions else {}
    suite = write_suite(
        folder,
        server,
        name=name,
        queries=[{"id": q, "text": text} for q, text, _ in queries],
        modes=["caption", "fts", "semantic"],
        sweep={
            "textual_similarity_threshold": [0.4, 0.5, 0.6],
            "semantic_threshold": [0.5, 0.6, 0.7],
        },
        pagination={"max_pages": 1},
        judgments={"by_labels": {q: [label] for q, _, label in queries}},
        **extra,
    )
    result = run_sync(suite, folder / "reports")
    assert result.status == "complete", result
    return result.run_dir
