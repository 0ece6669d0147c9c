"""Before the first search: can the dataset and the account serve every mode of the plan?

Three calls, each retried like a search: the dataset's status (searchable: READY, READ ONLY,
PARTIAL INDEX), the account's feature flags (`/user_config`, where the API has it) and the
dataset's enrichments. A plan that cannot be served is refused naming what is missing, before
any search is sent.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from runner.api.client import DatasetStatus, ExploreClient, FeatureFlags
from runner.api.prerequisites import LABEL_FILTERS, mode_needs
from runner.api.retry import RetryPolicy, call_with_retries
from runner.errors import ApiError
from runner.plan import RequestSpec

__all__ = ["Preflight", "preflight", "required_enrichments", "required_features"]


@dataclass(frozen=True, slots=True)
class Preflight:
    """What the preflight learnt: the dataset's status, and the features (None: not said)."""

    dataset: DatasetStatus
    features: FeatureFlags | None


def required_enrichments(specs: Sequence[RequestSpec]) -> dict[str, tuple[str, ...]]:
    """What the plan needs from the dataset: for each need, the enrichments that serve it
    (`runner.api.prerequisites`; fts needs none)."""
    needs: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        mode = mode_needs(spec.via, spec.op)
        if mode.enrichments:
            needs[f"mode {spec.mode} ({mode.what})"] = mode.enrichments
        if spec.labels_filter:
            needs[LABEL_FILTERS.what] = LABEL_FILTERS.enrichments
    return needs


def required_features(specs: Sequence[RequestSpec]) -> dict[str, tuple[str, ...]]:
    """The account features each mode needs, by the names `/user_config` may give them
    (`runner.api.prerequisites`); a 403 during the run fails only the requests it answers."""
    needs: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        needs[f"mode {spec.mode}"] = mode_needs(spec.via, spec.op).features
        if spec.labels_filter:
            needs[f"mode {spec.mode} ({LABEL_FILTERS.what})"] = LABEL_FILTERS.features
    return needs


async def preflight(
    client: ExploreClient,
    specs: Sequence[RequestSpec],
    *,
    retry: RetryPolicy | None = None,
    rng: random.Random | None = None,
) -> Preflight:
    """Refuse a plan the dataset or the account cannot serve, before any search is sent.

    Raises `ApiError`: status 409 when the dataset is not searchable (DRAFT, INDEXING, ERROR, a
    status vlbench does not know) or lacks an enrichment the plan needs; 403 when `/user_config`
    says a feature a mode needs is disabled (naming the mode and the feature). The API's own
    errors (404 unknown dataset, 401) pass through.
    """
    rng = rng or random.Random()
    retry = retry or RetryPolicy()
    dataset = await call_with_retries(client.get_dataset, retry, rng, client.pacer)
    if not dataset.searchable:
        advice = (
            "; wait until it is searchable, then run again"
            if dataset.status
            in (
                "DRAFT",
                "INDEXING",
            )
            else ""
        )
        raise ApiError(
            f"dataset {dataset.dataset_id} is {dataset.status}: searching needs READY, READ ONLY "
            f"or PARTIAL INDEX (the API said {dataset.reported}{advice})",
            status=409,
            detail=dataset.status,
        )
    features = await call_with_retries(client.get_user_config, retry, rng, client.pacer)
    if features is not None:
        _check_features(features, specs)
    context = await call_with_retries(client.get_enrichment_context, retry, rng, client.pacer)
    have = context.enrichments
    missing = [
        f"{need} needs {' or '.join(options)}"
        for need, options in required_enrichments(specs).items()
        if not have.intersection(options)
    ]
    if missing:
        has = ", ".join(sorted(have)) or "none"
        raise ApiError(
            f"dataset {dataset.dataset_id} cannot serve this suite: {'; '.join(missing)} "
            f"(its enrichments: {has})",
            status=409,
            detail=missing,
        )
    return Preflight(dataset, features)


def _check_features(features: FeatureFlags, specs: Sequence[RequestSpec]) -> None:
    refused = [
        f"{need} needs the feature {off}, which user_config says is disabled"
        for need, names in required_features(specs).items()
        if (off := features.disabled(*names)) is not None
    ]
    if refused:
        raise ApiError(
            f"the account cannot run this suite: {'; '.join(refused)} "
            "(enable the feature, or drop the mode)",
            status=403,
            detail=refused,
        )
