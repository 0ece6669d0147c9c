"""What vlbench relies on in the Explore API's answers, and the checks that tell when it moved.

The checks are pure functions over what was seen, so that the same rules judge the probes of
`vlbench doctor` (`runner.api.doctor`) and the first answers of every run (`run_findings`, read
from the run's own tables and kept in its manifest). Each check gives one `Finding`:

- `ok`: the answer is what vlbench expects;
- `changed`: it is not (a field renamed, a score type flipped, cut-offs no longer nested): the
  service's contract moved, and the evidence says how;
- `failed`: the check could not be made (refused, unreachable, a feature disabled);
- `skipped`: nothing to check (a mode the suite does not use, a single cut-off).

What is expected comes from `explore-api.md`: caption and semantic scores are cosine distances
(lower is better) and a larger cut-off admits more; full-text scores have no documented type, so
any type that orders the results consistently is accepted; a page holds at most 100 clusters and
a page past the end is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import polars as pl

__all__ = [
    "CONTRACT_KEY",
    "EXPECTED_SCORE_TYPES",
    "Finding",
    "Status",
    "check_answer_shape",
    "check_cutoff_nesting",
    "check_pagination",
    "check_scores",
    "contract_changed",
    "findings_from_dicts",
    "run_findings",
]

Status = Literal["ok", "changed", "failed", "skipped"]

# The manifest key under which a run keeps its findings.
CONTRACT_KEY: Final = "api_contract"
# The score type each mode is documented to answer with; fts has none documented.
EXPECTED_SCORE_TYPES: Final[Mapping[str, str]] = {
    "caption": "cosine_distance",
    "semantic": "cosine_distance",
}
PAGE_SIZE: Final = 100
# Normalised scores may tie or wobble in the last digits; a rise smaller than this is no rise.
_TOLERANCE: Final = 1e-9
# Field -> the JSON types vlbench reads it as ("null" where the contract allows null).
_CLUSTER_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "cluster_id": ("str",),
    "n_images": ("int",),
    "relevance_score": ("number", "null"),
    "relevance_score_type": ("str", "null"),
    "previews": ("list", "null"),
}
_PREVIEW_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "media_id": ("str",),
    "relevance_score": ("number", "null"),
    "relevance_score_type": ("str", "null"),
}
_LEGACY_CLUSTER_KEYS: Final = frozenset({"id", "entity_type", "size", "media"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict: `check` names it (`scores:fts`), `evidence` says what was seen."""

    check: str
    status: Status
    evidence: str

    def line(self) -> str:
        """The one line a person reads: `changed  scores:semantic  type cosine_similarity ...`."""
        return f"{self.status:<8} {self.check:<18} {self.evidence}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def findings_from_dicts(items: object) -> list[Finding]:
    """Findings as a manifest stores them (a list of objects); anything else gives none."""
    if not isinstance(items, list):
        return []
    found = []
    for item in items:
        if isinstance(item, dict) and item.get("status") in ("ok", "changed", "failed", "skipped"):
            found.append(Finding(str(item["check"]), item["status"], str(item["evidence"])))
    return found


def contract_changed(findings: Iterable[Finding]) -> bool:
    """Whether any finding says the API is not the one vlbench expects."""
    return any(f.status == "changed" for f in findings)


# --- the checks ---------------------------------------------------------------------------------


def check_answer_shape(mode: str, body: object) -> Finding:
    """The first page of a search has the documented fields, of the documented JSON types."""
    check = f"shape:{mode}"
    if not isinstance(body, dict) or not isinstance(body.get("clusters"), list):
        return Finding(check, "changed", f"no `clusters` list in the answer: {_clip(body)}")
    clusters: list[Any] = body["clusters"]
    if not clusters:
        return Finding(check, "skipped", "the probe matched nothing, so no fields to check")
    first = clusters[0]
    if isinstance(first, dict) and _LEGACY_CLUSTER_KEYS <= first.keys():
        return Finding(check, "changed", "the legacy shape (id, entity_type, size, media)")
    problems = _field_problems(first, _CLUSTER_FIELDS, "cluster")
    previews = first.get("previews") if isinstance(first, dict) else None
    if isinstance(previews, list) and previews:
        problems += _field_problems(previews[0], _PREVIEW_FIELDS, "preview")
    if problems:
        return Finding(check, "changed", "; ".join(problems))
    return Finding(check, "ok", f"{len(clusters)} clusters with the documented fields")


def check_scores(
    mode: str, score_types: Iterable[str | None], ranked: Iterable[Sequence[float]]
) -> Finding:
    """The score type is the documented one and scores fall with rank once normalised.

    `ranked` holds, per request, the normalised (higher is better) score of each cluster in
    rank order: a type read the wrong way round shows as scores that rise with rank.
    """
    check = f"scores:{mode}"
    types = sorted({t for t in score_types if t is not None})
    expected = EXPECTED_SCORE_TYPES.get(mode)
    if expected is not None and types and types != [expected]:
        return Finding(check, "changed", f"score type {', '.join(types)} (expected {expected})")
    if len(types) > 1:
        return Finding(check, "changed", f"mixed score types in one mode: {', '.join(types)}")
    orders = [list(scores) for scores in ranked if len(scores) > 1]
    rising = sum(1 for scores in orders if _rises(scores))
    if orders and rising * 2 > len(orders):
        shown = types[0] if types else "untyped"
        return Finding(
            check, "changed", f"{rising} of {len(orders)} answers rank {shown} scores backwards"
        )
    if not types:
        return Finding(check, "skipped", "no scored answer to check")
    return Finding(check, "ok", f"{types[0]}, best first in {len(orders)} answers")


def check_cutoff_nesting(mode: str, by_cutoff: Mapping[float, frozenset[str]]) -> Finding:
    """A larger cut-off returns a superset of a smaller one's media (a distance cut-off)."""
    check = f"cutoff:{mode}"
    if len(by_cutoff) < 2:
        return Finding(check, "skipped", "fewer than two cut-offs to compare")
    cutoffs = sorted(by_cutoff)
    for low, high in zip(cutoffs, cutoffs[1:], strict=False):
        strict, loose = by_cutoff[low], by_cutoff[high]
        if strict <= loose:
            continue
        if loose < strict:
            return Finding(
                check,
                "changed",
                f"{high:g} returns fewer media than {low:g}: the cut-off now reads as a "
                "minimum similarity",
            )
        extra = sorted(strict - loose)
        return Finding(
            check, "changed", f"{low:g} returns {len(extra)} media that {high:g} does not"
        )
    sizes = ", ".join(f"{c:g}: {len(by_cutoff[c])}" for c in cutoffs)
    return Finding(check, "ok", f"nested, larger cut-off admits more ({sizes})")


def check_pagination(mode: str, first_page: int, past_the_end: int | None) -> Finding:
    """A page holds at most 100 clusters and a page far past the end comes back empty."""
    check = f"pages:{mode}"
    if first_page > PAGE_SIZE:
        return Finding(check, "changed", f"a page holds {first_page} clusters (at most 100)")
    if past_the_end is None:
        return Finding(check, "skipped", "no page past the end was asked for")
    if past_the_end > 0:
        return Finding(check, "changed", f"a page past the end holds {past_the_end} clusters")
    return Finding(check, "ok", "a page past the end is empty")


# --- a run's own answers ------------------------------------------------------------------------


def run_findings(requests: pl.DataFrame, hits: pl.DataFrame) -> list[Finding]:
    """The checks a run's stored answers already show: score types, order, nesting, bodies.

    Costs one pass over the run's tables; sends nothing.
    """
    findings: list[Finding] = []
    for mode in sorted(requests["mode"].unique().to_list()):
        mode_requests = requests.filter(pl.col("mode") == mode)
        mode_hits = hits.filter(pl.col("mode") == mode)
        findings.append(_bodies_finding(mode, mode_requests))
        findings.append(_stored_scores(mode, mode_hits))
        findings.append(_stored_nesting(mode, mode_requests, mode_hits))
    return [f for f in findings if f.status != "skipped"]


def _bodies_finding(mode: str, requests: pl.DataFrame) -> Finding:
    bad = requests.filter(pl.col("outcome") == "bad_body")
    if bad.is_empty():
        return Finding(f"shape:{mode}", "ok", f"{requests.height} answers parsed")
    first = bad["error"].drop_nulls().head(1).to_list()
    why = f": {first[0]}" if first else ""
    return Finding(f"shape:{mode}", "changed", f"{bad.height} answers were not the contract{why}")


def _stored_scores(mode: str, hits: pl.DataFrame) -> Finding:
    clusters = (
        hits.filter(pl.col("preview_rank") == 1)
        .sort("request_key", "cluster_rank")
        .group_by("request_key", maintain_order=True)
        .agg(pl.col("score"))
    )
    ranked = [[s for s in scores if s is not None] for scores in clusters["score"].to_list()]
    return check_scores(mode, hits["score_type"].unique().to_list(), ranked)


def _stored_nesting(mode: str, requests: pl.DataFrame, hits: pl.DataFrame) -> Finding:
    """Nesting over the requests that ended by themselves (a page cap would cut the looser)."""
    ended = (
        requests.group_by("request_key")
        .agg(
            pl.col("clusters").sort_by("page").last().alias("last"),
            (pl.col("outcome") == "ok").all().alias("ok"),
        )
        .filter(pl.col("ok") & (pl.col("last") < PAGE_SIZE))["request_key"]
    )
    group = ["query_id", "entity_type", "threshold", "labels_filter"]
    sets = (
        hits.filter(pl.col("cutoff").is_not_null() & pl.col("request_key").is_in(ended.to_list()))
        .group_by([*group, "cutoff"])
        .agg(pl.col("media_id").unique())
    )
    worst: Finding | None = None
    for _, per_query in sets.group_by(group):
        by_cutoff = {
            float(c): frozenset(ids)
            for c, ids in zip(per_query["cutoff"], per_query["media_id"], strict=True)
        }
        finding = check_cutoff_nesting(mode, by_cutoff)
        if finding.status == "changed":
            return finding
        worst = worst or (finding if finding.status == "ok" else None)
    return worst or Finding(f"cutoff:{mode}", "skipped", "no swept cut-off to compare")


# --- helpers ------------------------------------------------------------------------------------


def _rises(scores: Sequence[float]) -> bool:
    return any(b > a + _TOLERANCE for a, b in zip(scores, scores[1:], strict=False))


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    return "object" if isinstance(value, dict) else type(value).__name__


def _field_problems(item: object, fields: Mapping[str, tuple[str, ...]], what: str) -> list[str]:
    if not isinstance(item, dict):
        return [f"a {what} is a {_json_type(item)}, not an object"]
    problems = []
    for name, allowed in fields.items():
        if name not in item:
            problems.append(f"{what} field `{name}` is missing")
            continue
        seen = _json_type(item[name])
        number = seen in ("int", "float") and "number" in allowed
        if seen not in allowed and not number:
            problems.append(f"{what} field `{name}` is {seen} (expected {' or '.join(allowed)})")
    return problems


def _clip(body: object) -> str:
    text = repr(body)
    return text if len(text) <= 120 else text[:117] + "..."
