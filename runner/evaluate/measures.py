"""IR measures in ir_measures' spelling, computed with polars over many rankings at once.

A `Measure` is a name and an optional cut-off k: `parse_measure("nDCG@10")`, and
`str(measure)` gives the canonical spelling back. Relevance for the binary measures is
grade >= 1; nDCG's gain is the grade itself. Positions are the ranks given (1-based); items
beyond the cut-off are ignored. With R = the set of judged items of grade >= 1 for the query,
ret@k = the returned items at ranks <= k, and rel(i) = 1 when item i has grade >= 1:

- P@k = sum_{i in ret@k} rel(i) / k, dividing by k even when fewer are returned (trec_eval P.k);
  P = sum_{i in ret} rel(i) / |ret|, 0 when nothing is returned (set_P).
- R@k = sum_{i in ret@k} rel(i) / |R|, 0 when |R| = 0 (recall.k); R over all of ret (set_recall).
- nDCG@k = DCG@k / IDCG@k with DCG@k = sum_{i in ret@k} grade(i) / log2(rank(i) + 1) and IDCG@k
  the same sum over the judgments sorted by grade: the ideal ranking comes from the judgments,
  not from what was returned (a threshold truncates it); 0 when IDCG is 0 (ndcg_cut.k; ndcg).
- AP@k = sum_{i in ret@k, rel(i)} P(i) / |R|, P(i) = |{j in ret: rel(j), rank(j) <= rank(i)}|
  / rank(i); divided by every relevant judged item, returned or not (map_cut.k; AP is map).
- RR@k = 1 / rank of the first relevant item in ret@k, 0 if none; its mean is MRR (recip_rank).
- Success@k = 1 if a relevant item is in ret@k, else 0 (success.k).
- NumRet = |ret| (num_ret).
- Judged@k = |{i in ret@k: i has a judgment, any grade}| / k (ir_measures' Judged).

Differences from trec_eval: trec_eval skips a query that has judgments but is absent from the
run; here such a query is scored (0 for every measure but NumRet = 0), because a threshold that
returns nothing must be penalised. trec_eval keeps only the first 1,000 items of a ranking; here
there is no such depth limit. trec_eval orders items by score (ties by docno, descending); here
by the rank the API gave.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from runner.errors import UsageError

__all__ = [
    "DEFAULT_MEASURES",
    "MEASURE_NAMES",
    "Measure",
    "compute_measures",
    "parse_measure",
    "parse_measures",
]

MEASURE_NAMES: Final = ("P", "R", "nDCG", "AP", "RR", "Success", "NumRet", "Judged")

_ALIASES: Final = {
    "p": "P",
    "precision": "P",
    "r": "R",
    "recall": "R",
    "ndcg": "nDCG",
    "ap": "AP",
    "map": "AP",
    "rr": "RR",
    "mrr": "RR",
    "success": "Success",
    "numret": "NumRet",
    "judged": "Judged",
}
_NEEDS_CUTOFF: Final = frozenset({"Success", "Judged"})
_NO_CUTOFF: Final = frozenset({"NumRet"})
_NO_JUDGMENTS: Final = frozenset({"NumRet", "Judged"})
_SPELLING: Final = re.compile(r"^\s*([A-Za-z]+)\s*(?:@\s*(\d+))?\s*$")


@dataclass(frozen=True, slots=True)
class Measure:
    """One measure: `name` (one of MEASURE_NAMES) and an optional cut-off `k`.

    >>> str(parse_measure("ndcg@10"))
    'nDCG@10'
    """

    name: str
    k: int | None = None

    def __str__(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"

    @property
    def needs_judgments(self) -> bool:
        """False for measures defined without judgments (NumRet; Judged@k counts them)."""
        return self.name not in _NO_JUDGMENTS


def parse_measure(text: str | Measure) -> Measure:
    """Parse ir_measures' spelling: "P@10", "nDCG@10", "AP", "RR", "MRR", "Success@1", ...

    Case is ignored and a few aliases are accepted (MRR and RR, MAP and AP, Recall and R);
    `str()` of the result is the canonical spelling. Raises `UsageError` for anything else.
    """
    if isinstance(text, Measure):
        return text
    match = _SPELLING.match(text)
    name = _ALIASES.get(match.group(1).lower()) if match else None
    if match is None or name is None:
        raise UsageError(
            f"unknown measure {text!r} (known: {', '.join(MEASURE_NAMES)}, e.g. nDCG@10)"
        )
    k = int(match.group(2)) if match.group(2) is not None else None
    if k is None and name in _NEEDS_CUTOFF:
        raise UsageError(f"measure {text!r} needs a cut-off, e.g. {name}@10")
    if k is not None and name in _NO_CUTOFF:
        raise UsageError(f"measure {text!r} takes no cut-off")
    if k is not None and k < 1:
        raise UsageError(f"measure {text!r}: the cut-off must be at least 1")
    return Measure(name, k)


def parse_measures(texts: Iterable[str | Measure]) -> tuple[Measure, ...]:
    """Parse several measures, keeping their order and dropping repeats."""
    return tuple(dict.fromkeys(parse_measure(text) for text in texts))


DEFAULT_MEASURES: Final = parse_measures(
    ["P@10", "R@100", "nDCG@10", "AP", "RR", "Success@10", "NumRet", "Judged@10"]
)

_INF: Final = 2**31 - 1  # a cut-off beyond any rank: "the whole ranking"
_ITEM: Final = ("query_id", "pool", "doc")


def _within(k: int | None) -> pl.Expr:
    return pl.col("rank") <= (_INF if k is None else k)


def _tag(k: int | None) -> str:
    return "all" if k is None else str(k)


def _hash(columns: Sequence[str], seed: int) -> pl.Expr:
    """A 64-bit key of a tuple of columns (each position hashed with its own seed, then xor-ed)."""
    keys = [pl.col(c).hash(seed * 101 + i) for i, c in enumerate(columns)]
    combined = keys[0]
    for key in keys[1:]:
        combined = combined ^ key
    return combined


def _judged_sums(measures: Sequence[Measure]) -> list[pl.Expr]:
    """Per-ranking sums over its JUDGED items (the only ones that add to any measure)."""
    rel = pl.col("grade") >= 1
    gain = pl.when(pl.col("grade") > 0).then(pl.col("grade")).otherwise(0).cast(pl.Float64)
    discount = (pl.col("rank").cast(pl.Float64) + 1.0).log(2)
    exprs: dict[str, pl.Expr] = {"_first": pl.col("rank").filter(rel).min()}
    for m in measures:
        tag = _tag(m.k)
        if m.name in ("P", "R"):
            exprs[f"_rel@{tag}"] = (rel & _within(m.k)).sum()
        elif m.name == "nDCG":
            exprs[f"_dcg@{tag}"] = pl.when(_within(m.k)).then(gain / discount).otherwise(0.0).sum()
        elif m.name == "Judged":
            exprs[f"_judged@{tag}"] = _within(m.k).sum()
    return [expr.alias(name) for name, expr in exprs.items()]


def _average_precision(judged: pl.LazyFrame, measures: Sequence[Measure]) -> pl.LazyFrame:
    """Sum of precision at each relevant item, per ranking and AP cut-off (before / |R|)."""
    cutoffs = sorted({m.k or _INF for m in measures if m.name == "AP"})
    relevant = judged.filter(pl.col("grade") >= 1).with_columns(
        # The j-th relevant item of a ranking contributes j / rank.
        (pl.col("rank").rank("ordinal").over("_cell").cast(pl.Float64) / pl.col("rank")).alias(
            "_prec"
        )
    )
    return relevant.group_by("_cell").agg(
        pl.col("_prec")
        .filter(pl.col("rank") <= k)
        .sum()
        .alias(f"_ap@{_tag(None if k == _INF else k)}")
        for k in cutoffs
    )


def _ideal(qrels: pl.LazyFrame, measures: Sequence[Measure]) -> pl.LazyFrame:
    """Per (query, pool): |R| and the ideal DCG at each nDCG cut-off, from the judgments alone."""
    positive = qrels.filter(pl.col("grade") > 0).with_columns(
        pl.col("grade").rank("ordinal", descending=True).over("query_id", "pool").alias("rank")
    )
    gain = pl.col("grade").cast(pl.Float64) / (pl.col("rank").cast(pl.Float64) + 1.0).log(2)
    exprs = [(pl.col("grade") >= 1).sum().cast(pl.Int64).alias("_num_rel")]
    exprs += [
        pl.when(_within(m.k)).then(gain).otherwise(0.0).sum().alias(f"_idcg@{_tag(m.k)}")
        for m in dict.fromkeys(m for m in measures if m.name == "nDCG")
    ]
    return positive.group_by("query_id", "pool").agg(exprs)


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num.cast(pl.Float64) / den).otherwise(0.0)


def _value(m: Measure) -> pl.Expr:
    """The measure from the per-ranking sums, nulls (nothing returned) read as 0."""
    tag = _tag(m.k)
    num_rel = pl.col("_num_rel")
    first = pl.col("_first")
    if m.name == "P":
        den = pl.lit(float(m.k)) if m.k is not None else pl.col("_n")
        return _ratio(pl.col(f"_rel@{tag}"), den)
    if m.name == "R":
        return _ratio(pl.col(f"_rel@{tag}"), num_rel)
    if m.name == "nDCG":
        return _ratio(pl.col(f"_dcg@{tag}"), pl.col(f"_idcg@{tag}"))
    if m.name == "AP":
        return _ratio(pl.col(f"_ap@{tag}"), num_rel)
    if m.name == "RR":
        hit = first.is_not_null() & (first <= (m.k or _INF))
        return pl.when(hit).then(1.0 / first.cast(pl.Float64)).otherwise(0.0)
    if m.name == "Success":
        return (first.is_not_null() & (first <= (m.k or _INF))).cast(pl.Float64)
    if m.name == "NumRet":
        return pl.col("_n").cast(pl.Float64)
    if m.name == "Judged":
        return pl.col(f"_judged@{tag}").cast(pl.Float64) / float(m.k or 1)
    raise UsageError(f"unknown measure {m}")  # pragma: no cover - parse_measure rejects it


def _judged_items(ranked: pl.DataFrame, qrels: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """The ranked items that have a judgment: `*keys, rank, grade`.

    Items are matched to judgments on a 64-bit hash of (query_id, pool, doc) and each match is
    then confirmed on the strings, so a hash collision can cost time but never a wrong grade.
    """
    item = _hash(_ITEM, 3).alias("_ik")
    mine = ranked.lazy().select(item, "rank").with_row_index("_row")
    theirs = qrels.lazy().select(item, "grade").with_row_index("_qrow")
    matched = (
        mine.join(theirs, on="_ik")
        .select("_row", "_qrow", "rank", "grade")
        .collect(engine="streaming")
    )
    found = ranked.select(*keys, "doc")[matched["_row"]]
    judged = qrels.select(_ITEM)[matched["_qrow"]]
    same = pl.repeat(True, matched.height, dtype=pl.Boolean, eager=True)
    for column in _ITEM:
        same = same & (found.get_column(column) == judged.get_column(column))
    return found.select(keys).with_columns(matched["rank"], matched["grade"]).filter(same)


def _lengths(ranked: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """`*keys, _n`: every ranking in `ranked` and its number of items."""
    lengths = ranked.lazy().group_by(keys).agg(pl.len().cast(pl.Int64).alias("_n"))
    return lengths.collect(engine="streaming")  # the streaming engine groups strings fastest


def compute_measures(
    ranked: pl.LazyFrame | pl.DataFrame,
    qrels: pl.LazyFrame | pl.DataFrame,
    measures: Sequence[Measure | str],
    *,
    group: Sequence[str] = ("mode", "setting"),
    cells: pl.LazyFrame | pl.DataFrame | None = None,
    judged: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every measure for every ranking, in one vectorised pass: long frame, one row a value.

    - `ranked`: columns `*group, query_id, pool, doc, rank`; one row per returned item, `doc`
      unique within a ranking (a ranking is one `(*group, query_id, pool)`), `rank` 1-based.
    - `qrels`: `query_id, pool, doc, grade`; a ranking is scored against the judgments of its
      query in its pool (`pool` separates judgment sets, e.g. one per clustering granularity).
      A repeated (query_id, pool, doc) keeps its highest grade.
    - `cells`: `*group, query_id, pool`: the rankings to score, including those that returned
      nothing (they score 0); default: the rankings present in `ranked`.
    - `judged`: `query_id` of the queries that have judgments; default: those in `qrels`.
      For the others, measures that need judgments are null.

    Speed: only judged items add to a measure, so the work over every ranked item is one hash
    join that finds them; the rest runs on the judged items and one row per ranking. Without
    `cells`, or for NumRet and P without cut-off, the rankings are also counted (one group-by).

    Returns `*group, query_id, measure, value, judged`, sorted by group and query, measures in
    the order given.
    """
    wanted = parse_measures(measures)
    keys = [*group, "query_id", "pool"]
    ranked_df = ranked.lazy().select(*keys, "doc", pl.col("rank").cast(pl.Int64)).collect()
    qrels_df = (
        qrels.lazy()
        .select(*_ITEM, pl.col("grade").cast(pl.Int64))
        .group_by(_ITEM)
        .agg(pl.col("grade").max())
        .collect()
    )
    judged_df = (
        (qrels_df if judged is None else judged.lazy().collect()).select("query_id").unique()
    )

    # Number the rankings asked for; from here on a ranking is an integer `_cell`.
    if cells is None:
        asked = _lengths(ranked_df, keys)
    else:
        asked = cells.lazy().select(keys).unique(maintain_order=True).collect()
        if any(m.name == "NumRet" or (m.name == "P" and m.k is None) for m in wanted):
            asked = asked.join(_lengths(ranked_df, keys), on=keys, how="left", nulls_equal=True)
    asked = asked.with_row_index("_cell")
    items = (
        _judged_items(ranked_df, qrels_df, keys)
        .join(asked.select(*keys, "_cell"), on=keys, how="inner", nulls_equal=True)
        .select("_cell", "rank", "grade")
        .lazy()
    )
    sums = items.group_by("_cell").agg(_judged_sums(wanted))
    if any(m.name == "AP" for m in wanted):
        sums = sums.join(_average_precision(items, wanted), on="_cell", how="left")
    table = asked.lazy().join(sums, on="_cell", how="left")
    table = (
        table.join(
            _ideal(qrels_df.lazy(), wanted), on=["query_id", "pool"], how="left", nulls_equal=True
        )
        .join(
            judged_df.lazy().with_columns(pl.lit(True).alias("judged")), on="query_id", how="left"
        )
        .with_columns(pl.col("judged").fill_null(False))
    )
    filled = [
        c
        for c in table.collect_schema().names()
        if c.startswith("_") and c not in ("_first", "_cell")
    ]
    table = table.with_columns(pl.col(filled).fill_null(0))
    names = [str(m) for m in wanted]
    values = [
        (_value(m) if not m.needs_judgments else pl.when(pl.col("judged")).then(_value(m)))
        .cast(pl.Float64)
        .alias(str(m))
        for m in wanted
    ]
    wide = table.select(*group, "query_id", "judged", *values).sort([*group, "query_id"])
    # Long, ranking by ranking with the measures in the order asked for (no sort of the long frame).
    return (
        wide.select(
            *group,
            "query_id",
            pl.lit(names, dtype=pl.List(pl.String)).alias("measure"),
            pl.concat_list(names).alias("value"),
            "judged",
        )
        .explode("measure", "value")
        .collect(engine="streaming")
    )
