"""Run A against run B: deltas with paired significance, rank displacement, drift, gates.

`compare_runs(ev_a, ev_b)` pairs the two evaluations' per-query values by query id, for each
(mode, setting, unit, measure) present in both, and tests whether B differs from A:

- delta = mean_B - mean_A over the paired queries (B better when positive for every measure but
  NumRet, which has no better direction);
- a paired randomisation test (two-sided; the sign of each per-query difference flipped at random;
  exact over all 2^n sign vectors when 2^n <= `n_permutations`, else `n_permutations` seeded
  random ones, p = (1 + #{|sum| >= observed}) / (1 + N));
- a paired t-test, t = mean(d) / (sd(d) / sqrt(n)) with n - 1 degrees of freedom;
- Holm's step-down correction of both p-values across the measures of one (mode, setting, unit);
- Cohen's d_z = mean(d) / sd(d) (sd with n - 1), the paired effect size.

A query is paired when both runs have a value for it (a measure that needs judgments has none for
an unjudged query); the queries of one run only are counted as unpaired. Where judgments are
missing, `rank_displacement` and `score_drift` compare what the two runs returned: rank-biased
overlap and mean absolute rank change per query, and the two-sample Kolmogorov-Smirnov statistic
and quantile shifts of the normalised scores per (mode, setting).

Settings that differ are compared with a `Pairing` (`settings`): A's caption at tst=0.4 against
B's at tst=0.6, or each mode's only setting in A against its only one in B; A and B may be one
run. Such a row's `setting` reads "tst=0.4 → tst=0.6" and `setting_a` / `setting_b` hold the two.
`compare_run_dirs` judges both runs against one pool (the union of their media-level qrels):
label judgments are pooled from a run's own hits, and unequal pools would move recall alone.

Gates for nightly jobs: `parse_gate("nDCG@10<-0.02")` and `check_gates(comparison, gates)`.
"""

from __future__ import annotations

from runner.evaluate.compare.gates import Gate, GateFailure, check_gates, parse_gate
from runner.evaluate.compare.rankings import (
    DISPLACEMENT_SCHEMA,
    DRIFT_QUANTILES,
    DRIFT_SCHEMA,
    rank_displacement,
    score_drift,
)
from runner.evaluate.compare.runs import (
    COMPARISON_SCHEMA,
    PAIRED_SCHEMA,
    Comparison,
    compare_run_dirs,
    compare_runs,
    same_run,
)
from runner.evaluate.compare.settings import (
    Pairing,
    SettingPair,
    describe_pairs,
    describe_settings,
    pair_settings,
    pairing_from_options,
    settings_by_mode,
    unpaired_modes,
)
from runner.evaluate.compare.significance import (
    cohens_dz,
    holm,
    paired_t_test,
    randomisation_test,
    randomisation_tests,
)

__all__ = [
    "COMPARISON_SCHEMA",
    "DISPLACEMENT_SCHEMA",
    "DRIFT_QUANTILES",
    "DRIFT_SCHEMA",
    "PAIRED_SCHEMA",
    "Comparison",
    "Gate",
    "GateFailure",
    "Pairing",
    "SettingPair",
    "check_gates",
    "cohens_dz",
    "compare_run_dirs",
    "compare_runs",
    "describe_pairs",
    "describe_settings",
    "holm",
    "pair_settings",
    "paired_t_test",
    "pairing_from_options",
    "parse_gate",
    "randomisation_test",
    "randomisation_tests",
    "rank_displacement",
    "same_run",
    "score_drift",
    "settings_by_mode",
    "unpaired_modes",
]
