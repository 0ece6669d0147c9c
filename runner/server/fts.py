"""Full-text search over captions: SQLite FTS5, porter stemming, bm25, OR of the query's terms.

User text never reaches FTS5 as syntax: `fts_match_expression` splits it into word terms itself
and writes each as a quoted FTS5 string joined by OR, so `"`, `NEAR(`, `*`, `-`, `:`, `^`, NUL
bytes and 5,000-character values are plain words or nothing. A query without a usable term
matches nothing (never an error). The score is -bm25() (FTS5 default weights k1=1.2, b=0.75),
higher is better.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_TERMS", "FtsIndex", "fts_match_expression", "fts_terms"]

# A query's distinct terms beyond this many are dropped (a 5,000-character value stays cheap).
MAX_TERMS: Final = 64
# Runs of letters and digits: the characters FTS5's unicode61 tokenizer keeps in a token.
_TERM = re.compile(r"[^\W_]+")


def fts_terms(text: str) -> list[str]:
    """The distinct lower-cased word terms of `text`, in order, at most `MAX_TERMS`."""
    out: list[str] = []
    seen: set[str] = set()
    for match in _TERM.finditer(text):
        term = match.group().lower()
        if term not in seen:
            seen.add(term)
            out.append(term)
            if len(out) == MAX_TERMS:
                break
    return out


def fts_match_expression(text: str) -> str | None:
    """The FTS5 MATCH expression for `text`: `"t1" OR "t2" ...`, or None when it has no term."""
    terms = fts_terms(text)
    if not terms:
        return None
    # Terms hold only letters and digits, so quoting cannot be escaped; '"' is doubled anyway.
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


class FtsIndex:
    """A read-only FTS5 table `table(caption)` whose rowid is the media row.

    Safe to share between threads (one connection behind a lock; queries are short).
    """

    def __init__(self, path: Path, table: str) -> None:
        uri = f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._table = table
        self._lock = threading.Lock()

    def search(self, text: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Rows whose caption holds any term of `text`, and their -bm25 scores (unordered)."""
        expression = fts_match_expression(text)
        if expression is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        sql = f"SELECT rowid, -bm25({self._table}) FROM {self._table} WHERE {self._table} MATCH ?"
        with self._lock:
            found = self._db.execute(sql, (expression,)).fetchall()
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        rows, scores = zip(*found, strict=True)
        return np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float64)

    def close(self) -> None:
        with self._lock:
            self._db.close()
