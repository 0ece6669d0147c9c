"""A query suite: its models, their field types, the files it names, YAML read with line numbers.

Rooms: `load` (`load_suite`: a file read into a `Suite`), `models` (the pydantic suite),
`modes` (how queries are sent: text and anchor modes, the sweep), `fields` (constrained field
types and the messages they fail with), `files` (queries, qrels and labels files), `judging`
(grade conflicts, judgments of unknown queries), `yaml_lines` (YAML with `${ENV}`
interpolation and every node's line, so errors land on their line), `yaml_aliases` (what YAML
aliases may repeat), `record` (what a run records of its suite: the content hash and the
judgments table).
"""

from runner.suite.load import load_suite, parse_suite
from runner.suite.models import (
    BUILTIN_MODES,
    Auth,
    Defaults,
    Judgment,
    Judgments,
    Mode,
    Pagination,
    Query,
    Retries,
    Suite,
    Sweep,
)
from runner.suite.record import judgments_table, suite_hash

__all__ = [
    "BUILTIN_MODES",
    "Auth",
    "Defaults",
    "Judgment",
    "Judgments",
    "Mode",
    "Pagination",
    "Query",
    "Retries",
    "Suite",
    "Sweep",
    "judgments_table",
    "load_suite",
    "parse_suite",
    "suite_hash",
]
