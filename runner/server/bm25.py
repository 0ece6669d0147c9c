"""Okapi BM25 in numpy, equal to SQLite FTS5's `bm25()` over the same full-text index.

    matrix = Bm25Matrix.from_fts(db, "captions", n_docs)     # once, when the index opens
    rows, scores = matrix.score(["dog", "beach"])             # stems, as FTS5 tokenizes them

The matrix is built from the FTS5 index itself (`fts5vocab`), so its terms are FTS5's tokens
(porter stems of unicode61 tokens) and its counts are FTS5's counts. The score of document d for
a query of phrases p_1..p_k (one token each) is FTS5's, term for term and in the same order of
floating-point operations, so that the ranking is the same and the scores equal to the last bit
on the same platform (`tests/test_bm25.py` checks both against SQLite):

    score(d) = sum_i idf_i * (f_i * (k1 + 1)) / (f_i + k1 * (1 - b + b * |d| / avgdl))
    idf_i    = log((N - n_i + 0.5) / (n_i + 0.5)), or 1e-6 when that is <= 0

with k1 = 1.2, b = 0.75, f_i the count of p_i in d, |d| the tokens of d, avgdl the mean tokens of
a row, N the rows of the table and n_i the rows holding p_i. The query-independent factor
f_i (k1 + 1) / (f_i + ...) of every (term, document) pair is computed once, so a query costs one
slice and one multiply-add per phrase. The scores are `-bm25()` (higher is better), as the index
ranks them.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from runner.errors import DatasetError

if TYPE_CHECKING:  # imported when a matrix is built: `vlbench --help` stays free of scipy
    import scipy.sparse

__all__ = ["B", "K1", "Bm25Matrix"]

K1: Final = 1.2
B: Final = 0.75
# The floor FTS5 puts under a term's idf (a term in more than half of the rows).
_MIN_IDF: Final = 1e-6

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class Bm25Matrix:
    """The term x document matrix of an FTS5 table's single column, weighted for BM25."""

    def __init__(self, terms: dict[str, int], weights: scipy.sparse.csr_array, n_rows: int) -> None:
        """`terms` maps a token to its row of `weights` (term x document, one column a media row,
        each entry f (k1 + 1) / (f + k1 (1 - b + b |d| / avgdl))); `n_rows` is N, the table's rows.
        """
        self._terms = terms
        self._weights = weights
        self._n_rows = n_rows
        self._indptr: I64 = np.asarray(weights.indptr, dtype=np.int64)
        self._docs: I64 = np.asarray(weights.indices, dtype=np.int64)
        self._values: F64 = np.asarray(weights.data, dtype=np.float64)
        self._df: I64 = np.diff(self._indptr)

    @classmethod
    def from_fts(cls, db: sqlite3.Connection, table: str, n_docs: int) -> Bm25Matrix:
        """Read the FTS5 table `table` of `db` (rowid = media row < n_docs) into a matrix.

        Reads every token instance once, streamed into numpy (no Python object per instance).
        """
        row_vocab, instances = f"temp.{table}_bm25_rows", f"temp.{table}_bm25_instances"
        db.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {row_vocab} USING fts5vocab(main, {table}, 'row')"
        )
        db.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {instances} "
            f"USING fts5vocab(main, {table}, 'instance')"
        )
        vocab = db.execute(f"SELECT term, doc, cnt FROM {row_vocab} ORDER BY term").fetchall()
        n_rows = int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        terms = {term: i for i, (term, _, _) in enumerate(vocab)}
        df = np.fromiter((d for _, d, _ in vocab), dtype=np.int64, count=len(vocab))
        counts = np.fromiter((c for _, _, c in vocab), dtype=np.int64, count=len(vocab))
        total = int(counts.sum())
        # The instance table lists term by term (the index's order, = ORDER BY term), each term's
        # documents in rowid order: so the term of every instance follows from the counts.
        docs = np.fromiter(
            (d for (d,) in db.execute(f"SELECT doc FROM {instances}")), dtype=np.int64, count=total
        )
        term_of = np.repeat(np.arange(len(vocab), dtype=np.int64), counts)
        weights = _weights(term_of, docs, df, n_docs, n_rows)
        return cls(terms, weights, n_rows)

    @property
    def n_terms(self) -> int:
        return len(self._terms)

    @property
    def matrix(self) -> scipy.sparse.csr_array:
        """The weights, term x document."""
        return self._weights

    def idf(self, token: str) -> float:
        """FTS5's idf of a token (a token absent from every row: log((N + 0.5) / 0.5))."""
        term = self._terms.get(token)
        n_hit = 0 if term is None else int(self._df[term])
        idf = math.log((self._n_rows - n_hit + 0.5) / (n_hit + 0.5))
        return idf if idf > 0.0 else _MIN_IDF

    def score(self, phrases: Sequence[str]) -> tuple[I64, F64]:
        """Rows holding any of the one-token phrases (ascending) and their scores (-bm25).

        A token given twice counts twice, as FTS5 counts two phrases with the same token.
        """
        found = [self._terms.get(p) for p in phrases]
        terms = [t for t in found if t is not None]
        if not terms:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        n_docs = self._weights.shape[1]
        total = np.zeros(n_docs, dtype=np.float64)
        hit = np.zeros(n_docs, dtype=bool)
        # Phrase by phrase, in the query's order: the order FTS5 adds them in (a phrase a row
        # lacks adds 0.0, which changes nothing).
        for phrase, term in zip(phrases, found, strict=True):
            if term is None:
                continue
            lo, hi = self._indptr[term], self._indptr[term + 1]
            docs = self._docs[lo:hi]
            total[docs] += self.idf(phrase) * self._values[lo:hi]
            hit[docs] = True
        rows = np.flatnonzero(hit)
        return rows.astype(np.int64, copy=False), total[rows]


def _weights(term_of: I64, docs: I64, df: I64, n_docs: int, n_rows: int) -> scipy.sparse.csr_array:
    """The BM25 term-frequency factor of every (term, document) pair, as a CSR matrix."""
    import scipy.sparse

    if docs.size and (int(docs.max()) >= n_docs or int(docs.min()) < 0):
        raise DatasetError(f"the full-text index has rowids outside 0..{n_docs - 1}", path="fts")
    # Instances of one (term, document) pair are adjacent: each run's length is the frequency.
    key = term_of * max(n_docs, 1) + docs
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1]))) if key.size else key
    freq = np.diff(np.concatenate((starts, [key.size]))).astype(np.float64)
    pair_terms, pair_docs = term_of[starts], docs[starts]
    if not np.array_equal(np.bincount(pair_terms, minlength=df.size), df):
        raise DatasetError("the full-text index's vocabulary does not add up", path="fts")
    length = np.bincount(docs, minlength=n_docs).astype(np.float64)  # |d|: tokens of the row
    avgdl = float(docs.size) / float(max(n_rows, 1))
    # Written as FTS5 writes it, operation by operation, so the doubles come out the same.
    norm = K1 * ((1 - B) + (B * length[pair_docs]) / avgdl)
    values = (freq * (K1 + 1.0)) / (freq + norm)
    indptr = np.concatenate(([0], np.cumsum(df))).astype(np.int64)
    return scipy.sparse.csr_array(
        (values, pair_docs.astype(np.int32), indptr), shape=(df.size, max(n_docs, 0))
    )
