"""Masks of the VQL labels rules beyond `one_of` (`is`, `is_not`, `not_one_of`), in numpy.

    mask &= label_rules_mask(request.label_rules, labels_per_row)

An item without labels holds the empty set: `is` never matches it, `is_not` and `not_one_of`
always do. Rules are ANDed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from runner.server.query import LabelRule

__all__ = ["label_rules_mask"]


def label_rules_mask(
    rules: Sequence[LabelRule], labels: Sequence[tuple[str, ...] | None]
) -> npt.NDArray[np.bool_]:
    """Which rows (of `labels`, each row's labels or None) satisfy every rule."""
    n = len(labels)
    mask = np.ones(n, dtype=bool)
    for rule in rules:
        # Per distinct label set, not per row: datasets repeat a few hundred sets many times.
        wanted = frozenset(rule.values)
        verdict: dict[tuple[str, ...] | None, bool] = {}
        keep = np.empty(n, dtype=bool)
        for row, held in enumerate(labels):
            ok = verdict.get(held)
            if ok is None:
                ok = verdict[held] = _holds(rule, wanted, frozenset(held or ()))
            keep[row] = ok
        mask &= keep
    return mask


def _holds(rule: LabelRule, wanted: frozenset[str], held: frozenset[str]) -> bool:
    if rule.op == "is":
        return wanted <= held
    if rule.op == "is_not":
        return not wanted <= held
    return not wanted & held  # not_one_of
