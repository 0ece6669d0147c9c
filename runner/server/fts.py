"""Full-text search over captions: SQLite FTS5, porter stemming, bm25, OR of the query's terms.

User text never reaches FTS5 as syntax: `fts_match_expression` splits it into word terms itself
and writes each as a quoted FTS5 string joined by OR, so `"`, `NEAR(`, `*`, `-`, `:`, `^`, NUL
bytes and 5,000-character values are plain words or nothing. A query without a usable term
matches nothing (never an error). The score is -bm25() (FTS5 default weights k1=1.2, b=0.75),
higher is better, computed in numpy by `runner.server.bm25` equal to FTS5's own.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from runner.server.bm25 import Bm25Matrix

__all__ = ["MAX_TERMS", "FtsIndex", "QueryTokenizer", "fts_match_expression", "fts_terms"]

# A query's distinct terms beyond this many are dropped (a 5,000-character value stays cheap).
MAX_TERMS: Final = 64
# Runs of letters and digits: the characters FTS5's unicode61 tokenizer keeps in a token.
_TERM = re.compile(r"[^\W_]+")
# Query terms whose tokens are remembered (a term is a word: the vocabulary of queries is small).
_TOKEN_CACHE_SIZE: Final = 65_536
_PRIME_BATCH: Final = 4096
# The FTS5 table's one column (see runner.server.dataset).
_COLUMN: Final = "caption"


def fts_terms(text: str) -> list[str]:
    """The distinct lower-cased word terms of `text`, in order, at most `MAX_TERMS`."""
    out: list[str] = []
    seen: set[str] = set()
    for term in _words(text):
        if term not in seen:
            seen.add(term)
            out.append(term)
            if len(out) == MAX_TERMS:
                break
    return out


def _words(text: str) -> Iterator[str]:
    """Every lower-cased word term of `text`, repeats included."""
    for match in _TERM.finditer(text):
        yield match.group().lower()


def fts_match_expression(text: str) -> str | None:
    """The FTS5 MATCH expression for `text`: `"t1" OR "t2" ...`, or None when it has no term."""
    terms = fts_terms(text)
    if not terms:
        return None
    # Terms hold only letters and digits, so quoting cannot be escaped; '"' is doubled anyway.
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


class QueryTokenizer:
    """The tokens FTS5 makes of each query term: the dataset's tokenizer run in memory, cached.

    Each term is tokenized as FTS5 tokenizes a quoted string of a MATCH expression (unicode61
    folds case and strips diacritics, porter stems), so a term's tokens are the index's own.
    Safe to share between threads.
    """

    def __init__(self, tokenizer: str, cache_size: int = _TOKEN_CACHE_SIZE) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(f"CREATE VIRTUAL TABLE terms USING fts5(term, tokenize = '{tokenizer}')")
        self._db.execute("CREATE VIRTUAL TABLE tokens USING fts5vocab(terms, 'instance')")
        self._cache: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def tokens(self, terms: list[str]) -> list[tuple[str, ...]]:
        """Each term's tokens in order (a term may give none, or several: a phrase)."""
        with self._lock:
            found: dict[str, tuple[str, ...]] = {}
            for term in terms:
                hit = self._cache.get(term)
                if hit is not None:
                    self._cache.move_to_end(term)
                    found[term] = hit
            missing = [t for t in dict.fromkeys(terms) if t not in found]
            if missing:
                # Kept aside: adding them may evict other terms of this very query.
                found.update(self._tokenize(missing))
            return [found[term] for term in terms]

    def prime(self, terms: Iterable[str]) -> None:
        """Tokenize `terms` ahead of queries (as many as the cache holds), in large batches."""
        batch: list[str] = []
        for n, term in enumerate(dict.fromkeys(terms)):
            if n == self._cache_size:
                break
            batch.append(term)
            if len(batch) == _PRIME_BATCH:
                with self._lock:
                    self._tokenize(batch)
                batch = []
        if batch:
            with self._lock:
                self._tokenize(batch)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tokenize(self, terms: list[str]) -> dict[str, tuple[str, ...]]:
        """Tokenize `terms` (none of them cached) and cache them; their tokens by term."""
        db = self._db
        db.executemany("INSERT INTO terms(rowid, term) VALUES (?, ?)", enumerate(terms))
        found: dict[int, list[str]] = {}
        for token, row in db.execute("SELECT term, doc FROM tokens ORDER BY doc, offset"):
            found.setdefault(row, []).append(token)
        db.execute("DELETE FROM terms")
        out = {term: tuple(found.get(row, ())) for row, term in enumerate(terms)}
        self._cache.update(out)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out


class FtsIndex:
    """A read-only FTS5 table `table(caption)` whose rowid is the media row (< `n_docs`).

    `search` scores in numpy (`Bm25Matrix`, built from the table when it opens) and gives what
    `search_sqlite` gives, FTS5's own `bm25()`; a query term that FTS5 would read as a phrase of
    several tokens (or of none) is answered by SQLite itself. `tokenizer` must be the table's.
    Safe to share between threads.
    """

    def __init__(self, path: Path, table: str, *, n_docs: int, tokenizer: str) -> None:
        uri = f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._table = table
        self._lock = threading.Lock()
        try:
            self._bm25 = Bm25Matrix.from_fts(self._db, table, n_docs)
            self._tokenizer = QueryTokenizer(tokenizer)
            # Query words are mostly the captions' own words: tokenize those once, now, rather
            # than a few on each query (a miss costs ~0.2 ms of SQLite statements).
            captions = self._db.execute(f"SELECT {_COLUMN} FROM {table}")
            self._tokenizer.prime(w for (caption,) in captions if caption for w in _words(caption))
        except BaseException:
            self._db.close()
            raise

    @property
    def bm25(self) -> Bm25Matrix:
        return self._bm25

    def search(self, text: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Rows whose caption holds any term of `text` (ascending), and their -bm25 scores."""
        terms = fts_terms(text)
        if not terms:
            return _nothing()
        tokens = self._tokenizer.tokens(terms)
        if any(len(t) != 1 for t in tokens):
            rows, scores = self.search_sqlite(text)
            order = np.argsort(rows)
            return rows[order], scores[order]
        return self._bm25.score([t[0] for t in tokens])

    def search_sqlite(self, text: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """What `search` gives, asked of SQLite (rows unordered): the reference it keeps to."""
        expression = fts_match_expression(text)
        if expression is None:
            return _nothing()
        sql = f"SELECT rowid, -bm25({self._table}) FROM {self._table} WHERE {self._table} MATCH ?"
        with self._lock:
            found = self._db.execute(sql, (expression,)).fetchall()
        if not found:
            return _nothing()
        rows, scores = zip(*found, strict=True)
        return np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float64)

    def close(self) -> None:
        self._tokenizer.close()
        with self._lock:
            self._db.close()


def _nothing() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
