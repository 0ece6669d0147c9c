"""Every `vlbench` command by name: the module that defines it and the first line of its help.

`vlbench --help` lists the commands from this table without importing them (their modules pull
in pyarrow, pandas, aiohttp and the server: over a second of CPU); a command's module is
imported when that command runs or shows its own help. A new command gets a line here, in the
order `vlbench --help` lists it; tests/test_cli_help.py checks that this table and the commands
registered on `app` agree, name for name and word for word.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["COMMANDS", "Listing"]


class Listing(NamedTuple):
    """What `vlbench --help` knows of a command before its module is imported."""

    module: str  # the module of `runner.cli` whose `@command()` registers it
    summary: str  # the first paragraph of its help


COMMANDS: dict[str, Listing] = {
    "serve": Listing(
        "serve", "Serve the Explore API locally until Ctrl-C, printing its base URL and dataset id."
    ),
    "token": Listing(
        "token",
        "Print a fresh HS256 token from VL_API_KEY/VL_API_SECRET, else the local demo key.",
    ),
    "validate": Listing(
        "plan", "Check a suite and every file it names; send nothing, write nothing."
    ),
    "plan": Listing(
        "plan",
        "Show what a run of a suite will cost: requests, settings, pages, time at the rate limit.",
    ),
    "run": Listing(
        "run", "Run a suite against the API (or the embedded local server) and store every hit."
    ),
    "report": Listing(
        "evaluate", "Evaluate a run and write its report; print the path of report.html."
    ),
    "compare": Listing(
        "evaluate",
        "Compare run B with run A: deltas, paired significance, regressions, drift; gate on them.",
    ),
    "judge-todo": Listing(
        "evaluate",
        "Write the run's unjudged top-k media as a TREC qrels file to label; print its path.",
    ),
    "export": Listing(
        "export",
        "Write the media IDs a run matched, deduplicated, with file name, best score and queries.",
    ),
    "merge": Listing(
        "export",
        "Join the runs of `vlbench run --shard k/N` workers into one run, as if unsharded.",
    ),
    "push": Listing(
        "export",
        "Copy a finished run to object storage, keeping its hive layout (manifest uploaded last).",
    ),
    "history": Listing(
        "history",
        "Show each measure over time per mode, flag the nights that moved, write an HTML page.",
    ),
    "doctor": Listing(
        "doctor", "Send ~20 fixed probes and check what vlbench relies on; one line a check."
    ),
    "judge": Listing(
        "judge",
        "Grade the run's unjudged top-k hits in a local web page; print its URL; Ctrl-C closes it.",
    ),
    "dataset": Listing(
        "dataset", "Build datasets for the local Explore server (`vlbench serve --dataset DIR`)."
    ),
}
