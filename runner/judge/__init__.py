"""Judging in the browser: `vlbench judge RUN` and what it writes.

- `labels`: the judgments store beside the suite (append-only log, Parquet, TREC qrels).
- `session`: the hits one rater walks through (the run's unjudged top k) and their grades.
- `app`: the local web page and its JSON endpoints (aiohttp, 127.0.0.1).
- `agreement`: Cohen's κ and Krippendorff's α (ordinal).
- `section`: the report's agreement section.

Nothing is imported here: the evaluation reads `labels` without loading the web page's code.
"""

__all__: list[str] = []
