"""What the local server is told: the dataset to serve, where to listen, auth and fault switches.

    config = ServerConfig("demo", port=0, fail_rate=0.1, seed=7)

`runner.server.lifecycle` starts a server from a `ServerConfig`; `runner.server.app` answers by it.
Invalid values raise `ValueError` naming the field (the CLI turns it into a usage error).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runner.api.auth import Credentials
from runner.server.faults import FaultConfig

__all__ = ["DATASET_STATUSES", "ServerConfig"]

DATASET_STATUSES: Final = ("DRAFT", "INDEXING", "READ ONLY", "PARTIAL INDEX", "READY", "ERROR")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How to run the local server.

    `dataset_dir` is a directory made by `vlbench dataset import`, or "demo" for the shipped demo
    dataset. `port=0` picks a free port. `auth=False` is the on-premises mode (no token needed);
    otherwise tokens must verify against `credentials` (None: `VL_API_KEY`/`VL_API_SECRET` from
    the environment, else the demo pair). `token_ttl_s` treats a token older than that (from its
    `iat`) as expired. The fault switches are those of `FaultConfig`. `dataset_status` is what
    the dataset endpoint reports; search answers 409 unless it is READY. Exports of more than
    `export_max_entities` rows are REJECTED; `export_fail` makes every export job FAILED and
    `export_delay_ms` holds each job IN_PROGRESS that long.
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
    export_fail: bool = False
    export_delay_ms: float = 0.0
    credentials: Credentials | None = None

    def __post_init__(self) -> None:
        if self.dataset_status not in DATASET_STATUSES:
            raise ValueError(
                f"dataset_status: {self.dataset_status!r} is not one of {DATASET_STATUSES}"
            )
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
