"""Before the first search: is the dataset READY, and can it serve every mode of the plan?"""

from __future__ import annotations

import random
from collections.abc import Sequence

from runner.api.client import ExploreClient
from runner.api.retry import RetryPolicy, call_with_retries
from runner.errors import ApiError
from runner.plan import RequestSpec

__all__ = ["preflight", "required_enrichments"]


def required_enrichments(specs: Sequence[RequestSpec]) -> dict[str, tuple[str, ...]]:
    """What the plan needs from the dataset: for each need, the enrichments that serve it.

    caption and fts need CAPTION_IMAGES; semantic needs CAPTION_IMAGES or
    MULTIMODEL_IMAGE_ENCODING; a labels filter needs IMAGE_TAGGING.
    """
    needs: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        if spec.via == "caption":
            needs[f"mode {spec.mode} (caption search)"] = ("CAPTION_IMAGES",)
        elif spec.op == "fts":
            needs[f"mode {spec.mode} (full-text search over captions)"] = ("CAPTION_IMAGES",)
        elif spec.op == "semantic":
            needs[f"mode {spec.mode} (semantic search)"] = (
                "CAPTION_IMAGES",
                "MULTIMODEL_IMAGE_ENCODING",
            )
        if spec.labels_filter:
            needs["label filters"] = ("IMAGE_TAGGING",)
    return needs


async def preflight(
    client: ExploreClient,
    specs: Sequence[RequestSpec],
    *,
    retry: RetryPolicy | None = None,
    rng: random.Random | None = None,
) -> None:
    """Refuse a plan the dataset cannot serve, before any search is sent.

    Raises `ApiError` (status 409) when the dataset is not READY or lacks an enrichment the plan
    needs, naming it; the API's own errors (404 unknown dataset, 401) pass through. The two calls
    are retried like searches.
    """
    rng = rng or random.Random()
    retry = retry or RetryPolicy()
    dataset = await call_with_retries(client.get_dataset, retry, rng, client.pacer)
    if dataset.status != "READY":
        raise ApiError(
            f"dataset {dataset.dataset_id} is {dataset.status}: searching needs READY "
            "(wait for indexing to finish, then run again)",
            status=409,
            detail=dataset.status,
        )
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
