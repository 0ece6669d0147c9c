"""Which setting of run A is compared with which setting of run B, per mode.

By default a (mode, setting) of A is compared with the same (mode, setting) of B: two runs of
one suite, tonight's against last night's. To compare settings that differ (two suites at
different cut-offs, or two settings of one run) a `Pairing` names them:

>>> Pairing(settings=(("tst=0.4", "tst=0.6"),))   # caption at 0.4 in A against 0.6 in B
>>> Pairing(across=True)                           # each mode's only setting in A and in B

`pair_settings(ev_a, ev_b, pairing)` resolves a pairing against what the two runs hold, into
`SettingPair`s, and raises `UsageError` naming the settings that do exist when it asks for
one that does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from runner.errors import UsageError
from runner.evaluate.evaluation import Evaluation

__all__ = [
    "pairing_from_options",
    "PAIR_ARROW",
    "Pairing",
    "SettingPair",
    "describe_pairs",
    "describe_settings",
    "pair_settings",
    "settings_by_mode",
    "unpaired_modes",
]

# Between the two settings of a pair in its label: "tst=0.4 → tst=0.6" reads "A's → B's".
PAIR_ARROW: Final = " → "


@dataclass(frozen=True, slots=True)
class SettingPair:
    """One mode's setting in run A compared with its setting in run B."""

    mode: str
    setting_a: str
    setting_b: str

    @property
    def crossed(self) -> bool:
        """Whether the two settings differ (a comparison across settings)."""
        return self.setting_a != self.setting_b

    @property
    def label(self) -> str:
        """The setting's name in a comparison: the setting itself, or "A's → B's" when crossed."""
        return f"{self.setting_a}{PAIR_ARROW}{self.setting_b}" if self.crossed else self.setting_a

    def __str__(self) -> str:
        return f"{self.mode}: {self.label}"


@dataclass(frozen=True, slots=True)
class Pairing:
    """Which settings to compare; the default pairs equal (mode, setting) labels only.

    `settings`: (setting of A, setting of B) pairs, each applied in every mode that has the
    first in A and the second in B. `across`: a mode with exactly one setting in each run
    pairs those two whatever their labels. `modes` (None: all) limits where `settings` and
    `across` apply. A mode that neither reaches keeps the default pairing, except when A and
    B are one run: each of its settings would only meet itself, so it is left out.
    """

    settings: tuple[tuple[str, str], ...] = ()
    modes: tuple[str, ...] | None = None
    across: bool = False

    @property
    def is_default(self) -> bool:
        return not self.settings and not self.across


def pairing_from_options(
    settings_a: Sequence[str] | None,
    settings_b: Sequence[str] | None,
    modes: Sequence[str] | None,
    across: bool,
) -> Pairing | None:
    """The pairing `--setting-a/--setting-b/--mode/--across-settings` ask for; None: default.

    Raises `UsageError` for settings that do not go in pairs, or `--mode` with nothing to apply.
    """
    a, b = list(settings_a or ()), list(settings_b or ())
    if len(a) != len(b):
        raise UsageError(
            f"--setting-a and --setting-b go in pairs: got {len(a)} --setting-a and "
            f"{len(b)} --setting-b"
        )
    if modes and not (a or across):
        raise UsageError("--mode says where --setting-a/--setting-b or --across-settings apply")
    if not a and not across:
        return None
    return Pairing(
        settings=tuple(zip(a, b, strict=True)), modes=tuple(modes) if modes else None, across=across
    )


def settings_by_mode(ev: Evaluation) -> dict[str, tuple[str, ...]]:
    """Each mode of an evaluation and its settings, in the order of their cut-offs."""
    frame = (
        ev.per_query.select("mode", "setting", "cutoff")
        .unique()
        .sort("mode", "cutoff", "setting", nulls_last=False)
    )
    out: dict[str, list[str]] = {}
    for mode, setting in frame.select("mode", "setting").iter_rows():
        if setting not in out.setdefault(mode, []):
            out[mode].append(setting)
    return {mode: tuple(settings) for mode, settings in out.items()}


def describe_settings(known: Mapping[str, Sequence[str]]) -> str:
    """'caption: tst=0.4, tst=0.6; fts: default' (or 'none')."""
    return "; ".join(f"{m}: {', '.join(s)}" for m, s in known.items()) or "none"


def describe_pairs(pairs: Iterable[SettingPair]) -> str:
    """'caption tst=0.4 → tst=0.6; fts default': each mode's compared settings, A's → B's."""
    by_mode: dict[str, list[str]] = {}
    for pair in pairs:
        by_mode.setdefault(pair.mode, []).append(pair.label)
    return "; ".join(f"{mode} {', '.join(labels)}" for mode, labels in by_mode.items())


def _in_modes(known: Mapping[str, Sequence[str]], modes: Iterable[str]) -> dict[str, Sequence[str]]:
    wanted = set(modes)
    return {m: s for m, s in known.items() if m in wanted}


def _check_modes(
    modes: Sequence[str], known_a: Mapping[str, Sequence[str]], known_b: Mapping[str, Sequence[str]]
) -> None:
    for mode in modes:
        for side, known in (("A", known_a), ("B", known_b)):
            if mode not in known:
                raise UsageError(
                    f"run {side} has no mode {mode!r}; its modes: {', '.join(known) or 'none'}"
                )


def _explicit(
    setting_a: str,
    setting_b: str,
    candidates: Sequence[str],
    known_a: Mapping[str, Sequence[str]],
    known_b: Mapping[str, Sequence[str]],
) -> list[SettingPair]:
    """The pairs (setting_a in A, setting_b in B) in every candidate mode that has both."""
    where = "" if len(candidates) == len(known_a.keys() | known_b.keys()) else " in those modes"
    for side, setting, known in (("A", setting_a, known_a), ("B", setting_b, known_b)):
        scope = _in_modes(known, candidates)
        if not any(setting in settings for settings in scope.values()):
            raise UsageError(
                f"run {side} has no setting {setting!r}{where}; "
                f"its settings: {describe_settings(scope)}"
            )
    pairs = [
        SettingPair(mode, setting_a, setting_b)
        for mode in candidates
        if setting_a in known_a.get(mode, ()) and setting_b in known_b.get(mode, ())
    ]
    if not pairs:
        raise UsageError(
            f"no mode has setting {setting_a!r} in run A and {setting_b!r} in run B; "
            f"run A: {describe_settings(_in_modes(known_a, candidates))}; "
            f"run B: {describe_settings(_in_modes(known_b, candidates))}"
        )
    return pairs


def pair_settings(
    ev_a: Evaluation, ev_b: Evaluation, pairing: Pairing | None = None
) -> tuple[SettingPair, ...]:
    """The (mode, setting of A, setting of B) triples to compare, in mode order.

    Explicit settings first, then `across` for the modes they leave, then equal labels for
    the rest (a mode may end with no pair: nothing of it is compared) unless the two
    evaluations are of one run (same run id) and a pairing was asked. Raises `UsageError`,
    listing what the runs hold, for a mode or setting a run does not have, a pair no mode
    has, or `across` when no mode has one setting in each run.
    """
    pairing = pairing or Pairing()
    known_a, known_b = settings_by_mode(ev_a), settings_by_mode(ev_b)
    all_modes = sorted(known_a.keys() | known_b.keys())
    if pairing.modes is not None:
        _check_modes(pairing.modes, known_a, known_b)
    candidates = all_modes if pairing.modes is None else sorted(set(pairing.modes))
    pairs: list[SettingPair] = []
    for setting_a, setting_b in pairing.settings:
        pairs += _explicit(setting_a, setting_b, candidates, known_a, known_b)
    covered = {p.mode for p in pairs}
    if pairing.across:
        left = [m for m in candidates if m not in covered]
        single = [m for m in left if len(known_a.get(m, ())) == 1 and len(known_b.get(m, ())) == 1]
        if left and not single:
            raise UsageError(
                "--across-settings pairs a mode's only setting in run A with its only setting "
                "in run B, but no mode has exactly one in each; "
                f"run A: {describe_settings(_in_modes(known_a, left))}; "
                f"run B: {describe_settings(_in_modes(known_b, left))}"
            )
        pairs += [SettingPair(m, known_a[m][0], known_b[m][0]) for m in single]
        covered |= set(single)
    same_run = ev_a.run_id is not None and ev_a.run_id == ev_b.run_id
    for mode in [] if same_run and not pairing.is_default else all_modes:
        if mode not in covered:
            shared = [s for s in known_a.get(mode, ()) if s in known_b.get(mode, ())]
            pairs += [SettingPair(mode, s, s) for s in shared]
    order = {m: i for i, m in enumerate(all_modes)}
    unique = dict.fromkeys(sorted(pairs, key=lambda p: order[p.mode]))  # stable within a mode
    return tuple(unique)


def unpaired_modes(
    ev_a: Evaluation, ev_b: Evaluation, pairs: Iterable[SettingPair]
) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Modes both runs hold that no pair compares: mode -> (settings of A, settings of B)."""
    known_a, known_b = settings_by_mode(ev_a), settings_by_mode(ev_b)
    paired = {p.mode for p in pairs}
    return {
        mode: (known_a[mode], known_b[mode])
        for mode in known_a
        if mode in known_b and mode not in paired
    }


def pairs_frame(pairs: Sequence[SettingPair]) -> pl.DataFrame:
    """The pairs as a frame: mode, setting_a, setting_b, label (the comparison's setting)."""
    return pl.DataFrame(
        {
            "mode": [p.mode for p in pairs],
            "setting_a": [p.setting_a for p in pairs],
            "setting_b": [p.setting_b for p in pairs],
            "label": [p.label for p in pairs],
        },
        schema={
            "mode": pl.String,
            "setting_a": pl.String,
            "setting_b": pl.String,
            "label": pl.String,
        },
    )
