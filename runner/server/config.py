"""What the local server is told: the dataset to serve, where to listen, auth and fault switches.

    config = ServerConfig("demo", port=0, fail_rate=0.1, seed=7)

`runner.server.lifecycle` starts a server from a `ServerConfig`; `runner.server.app` answers by it.
Invalid values raise `ValueError` naming the field (the CLI turns it into a usage error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from runner.api.auth import Credentials
from runner.server.faults import FaultConfig
from runner.server.query import ENRICHMENTS

__all__ = [
    "CONTRACT_CHANGES",
    "DATASET_STATUSES",
    "EXPORT_FAULTS",
    "FEATURES",
    "SEARCHABLE_STATUSES",
    "ServerConfig",
    "fault_fields",
]

DATASET_STATUSES: Final = ("DRAFT", "INDEXING", "READ ONLY", "PARTIAL INDEX", "READY", "ERROR")
# READ ONLY: browsing and search still work; PARTIAL INDEX: new media searchable, not re-clustered.
SEARCHABLE_STATUSES: Final = ("READY", "READ ONLY", "PARTIAL INDEX")
# What `GET /api/v1/user_config` lists. The first three are the documented "text search of images"
# features; full_text_search and visual_search are this server's names for the other two kinds.
FEATURES: Final = (
    "captions_search",
    "semantic_search",
    "labels_search",
    "full_text_search",
    "visual_search",
)
# `--fault export=...`: how every export job ends (see runner.server.exports).
EXPORT_FAULTS: Final = ("failed", "rejected", "canceled", "cancelled", "error", "id-only")
# `--fault contract=...`: a deliberate change of the answers' contract, for contract checkers
# (see runner.server.shapes).
CONTRACT_CHANGES: Final = (
    "score-type-flip",
    "score-as-string",
    "rename-field",
    "legacy-shape",
    "legacy-status",
    "image-filename",
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How to run the local server.

    `dataset_dir` is a directory made by `vlbench dataset import`, or "demo" for the shipped demo
    dataset. `port=0` picks a free port. `auth=False` is the on-premises mode (no token needed);
    otherwise tokens must verify against `credentials` (None: `VL_API_KEY`/`VL_API_SECRET` from
    the environment, else the demo pair). `token_ttl_s` treats a token older than that (from its
    `iat`) as expired. The fault switches are those of `FaultConfig`. `dataset_status` is what
    the dataset endpoint reports; search answers 409 unless it is READY. Exports of more than
    `export_max_entities` rows are REJECTED; `export_fault` (one of `EXPORT_FAULTS`) ends every
    export job that way and `export_delay_ms` holds each job IN_PROGRESS that long.
    `disabled_features` (names from `FEATURES`) are off in `user_config` and their requests get
    403. `contract_changes` (names from `CONTRACT_CHANGES`) alter the answers on purpose.
    `hidden_enrichments` (names from `ENRICHMENTS`) are left out of the dataset's enrichments,
    as on a dataset whose captions were imported rather than made by CAPTION_IMAGES: caption
    search then answers 409, full-text search still works.
    """

    dataset_dir: Path | str = "demo"
    host: str = "127.0.0.1"
    port: int = 0
    auth: bool = True
    latency_ms: float = 0.0
    rate_limit: float | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    token_ttl_s: float | None = None
    seed: int = 0
    dataset_status: str = "READY"
    export_max_entities: int = 100_000
    export_fault: str | None = None
    export_delay_ms: float = 0.0
    credentials: Credentials | None = None
    disabled_features: frozenset[str] = frozenset()
    reuse_port: bool = False  # SO_REUSEPORT: processes share the port (runner.server.workers)
    # Where export jobs and their ZIPs live; None: a temporary directory of this process. The
    # workers of `vlbench serve --workers N` share one, so any of them answers for any job.
    exports_dir: Path | None = None
    contract_changes: frozenset[str] = frozenset()
    hidden_enrichments: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _one_of("dataset_status", self.dataset_status, DATASET_STATUSES)
        if self.export_fault is not None:
            _one_of("export_fault", self.export_fault, EXPORT_FAULTS)
        for name in sorted(self.disabled_features):
            _one_of("disabled_features", name, FEATURES)
        for name in sorted(self.contract_changes):
            _one_of("contract_changes", name, CONTRACT_CHANGES)
        for name in sorted(self.hidden_enrichments):
            _one_of("hidden_enrichments", name, ENRICHMENTS)
        self.faults()  # validates the rates

    def faults(self) -> FaultConfig:
        """The fault switches of this config."""
        return FaultConfig(
            latency_ms=self.latency_ms,
            rate_limit=self.rate_limit,
            fail_rate=self.fail_rate,
            drop_rate=self.drop_rate,
            malformed_rate=self.malformed_rate,
            seed=self.seed,
        )


def fault_fields(specs: Sequence[str]) -> dict[str, Any]:
    """`ServerConfig` fields from `--fault KIND=VALUE` specs (`vlbench serve --fault`).

    `export=<one of EXPORT_FAULTS>` (the last one wins) and `contract=<one of CONTRACT_CHANGES>`
    (they add up). Raises `ValueError` naming the spec.

        >>> fault_fields(["export=canceled", "contract=rename-field"])
        {'export_fault': 'canceled', 'contract_changes': frozenset({'rename-field'})}
    """
    fields: dict[str, Any] = {}
    changes: set[str] = set()
    for spec in specs:
        kind, _, value = spec.partition("=")
        if kind == "export":
            _one_of(f"--fault {spec}", value, EXPORT_FAULTS)
            fields["export_fault"] = value
        elif kind == "contract":
            _one_of(f"--fault {spec}", value, CONTRACT_CHANGES)
            changes.add(value)
        else:
            raise ValueError(f"--fault {spec}: expected export=VALUE or contract=VALUE")
    if changes:
        fields["contract_changes"] = frozenset(changes)
    return fields


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
