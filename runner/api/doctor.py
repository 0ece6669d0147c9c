"""`vlbench doctor`: a few fixed probes that tell whether the API is still the one vlbench expects.

    report = await diagnose(client, probe_text="a dog")
    for finding in report.findings:
        print(finding.line())
    sys.exit(report.exit_code)

About twenty requests, paced by the client's own pacer: auth and the dataset, its enrichments,
the feature flags (`user_config`, where the API has it), then for each mode one search whose
answer shape and score order are checked, a page far past the end, two cut-offs whose results
must nest (caption and semantic), and an export job whose metadata must parse. The verdicts are
`runner.api.contract`'s, the same rules a run applies to its own first answers.

Exit codes: 0 every check passed (a disabled feature is shown, not an error), 1 the contract
changed, 2 the API cannot be reached, refuses the credentials, or has no searchable dataset.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson
import pyarrow.compute as pc

from runner.api.answers import FeatureFlags
from runner.api.auth import TokenSource
from runner.api.client import ExploreClient
from runner.api.contract import (
    Finding,
    check_answer_shape,
    check_cutoff_nesting,
    check_pagination,
    check_scores,
    contract_changed,
)
from runner.api.pacer import Pacer
from runner.api.pages import parse_page
from runner.api.prerequisites import ModeNeeds, mode_needs
from runner.errors import ApiError, AuthError, ExportError, TransportError, VlbenchError
from runner.plan import wire_params
from runner.schema import normalise_score

__all__ = ["DEFAULT_PROBE", "DoctorReport", "diagnose", "diagnose_url"]


DEFAULT_PROBE: Final = "a dog"
PROBE_RATE: Final = 5.0
# Two cut-offs a caption/semantic probe is sent with; small, so that both end within a few pages.
_PROBE_CUTOFFS: Final = (0.35, 0.55)
_PAST_THE_END: Final = 10_000
_MAX_PROBE_PAGES: Final = 4
_EXPORT_DEADLINE_S: Final = 60.0
_EXPORT_POLL_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every finding in the order checked, and the exit code they add up to."""

    findings: tuple[Finding, ...]
    unreachable: bool

    @property
    def exit_code(self) -> int:
        if self.unreachable:
            return 2
        return 1 if contract_changed(self.findings) else 0


async def diagnose(
    client: ExploreClient,
    *,
    probe_text: str = DEFAULT_PROBE,
    modes: tuple[str, ...] = ("caption", "fts", "semantic"),
    export: bool = True,
) -> DoctorReport:
    """Probe the API behind `client` and judge every answer (see the module's docstring)."""
    findings: list[Finding] = []
    reachable = await _dataset_findings(client, findings)
    if not reachable:
        return DoctorReport(tuple(findings), unreachable=True)
    servable = await _enrichment_findings(client, modes, findings)
    features = await _feature_findings(client, findings)
    for mode in modes:
        if mode not in servable:
            continue
        off = features.disabled(*_needs(mode).features) if features is not None else None
        if off is not None:
            findings.append(Finding(f"shape:{mode}", "skipped", f"{off} is off"))
            continue
        findings += await _mode_findings(client, mode, probe_text)
    if export:
        findings.append(await _export_finding(client, probe_text))
    return DoctorReport(tuple(findings), unreachable=False)


async def diagnose_url(
    base_url: str,
    dataset_id: str,
    *,
    environ: Mapping[str, str] | None = None,
    probe_text: str = DEFAULT_PROBE,
    export: bool = True,
) -> DoctorReport:
    """`diagnose` the API at `base_url`, with credentials from `VL_TOKEN` or `VL_API_KEY`/`_SECRET`.

    Probes go at most `PROBE_RATE` a second: well under any rate limit a service would set.
    """
    auth = TokenSource.from_env(environ)
    async with ExploreClient(base_url, dataset_id, auth=auth, pacer=Pacer(PROBE_RATE)) as client:
        return await diagnose(client, probe_text=probe_text, export=export)


async def _dataset_findings(client: ExploreClient, findings: list[Finding]) -> bool:
    try:
        dataset = await client.get_dataset()
    except AuthError as exc:
        findings.append(Finding("auth", "failed", f"HTTP {exc.status}: credentials refused"))
        return False
    except ApiError as exc:
        findings.append(Finding("auth", "ok", "credentials accepted"))
        findings.append(Finding("dataset", "failed", f"HTTP {exc.status}: {exc}"))
        return False
    except TransportError as exc:
        findings.append(Finding("reach", "failed", f"{client.base_url}: {exc}"))
        return False
    findings.append(Finding("auth", "ok", "credentials accepted"))
    size = f", {dataset.n_images} images" if dataset.n_images is not None else ""
    if not dataset.searchable:
        findings.append(Finding("dataset", "failed", f"status {dataset.status}: not searchable"))
        return False
    findings.append(Finding("dataset", "ok", f"status {dataset.status}{size}"))
    return True


async def _enrichment_findings(
    client: ExploreClient, modes: tuple[str, ...], findings: list[Finding]
) -> set[str]:
    try:
        context = await client.get_enrichment_context()
    except VlbenchError as exc:
        findings.append(Finding("enrichments", "failed", str(exc)))
        return set(modes)
    have = context.enrichments
    servable = {m for m in modes if not _needs(m).enrichments or have & set(_needs(m).enrichments)}
    missing = sorted(set(modes) - servable)
    evidence = ", ".join(sorted(have)) or "none"
    if missing:
        evidence += f"; cannot serve {', '.join(missing)}"
    findings.append(Finding("enrichments", "failed" if missing else "ok", evidence))
    return servable


async def _feature_findings(client: ExploreClient, findings: list[Finding]) -> FeatureFlags | None:
    """What `user_config` says the account may use (None where the API has no `user_config`)."""
    try:
        features = await client.get_user_config()
    except VlbenchError as exc:
        findings.append(Finding("features", "failed", str(exc)))
        return None
    if features is None:
        findings.append(Finding("features", "ok", "no user_config here: all assumed on"))
        return None
    if not features.flags:
        findings.append(Finding("features", "changed", "user_config holds no feature flags"))
        return features
    disabled = sorted(name for name, on in features.flags.items() if not on)
    shown = ", ".join(disabled) if disabled else "none"
    findings.append(Finding("features", "ok", f"{len(features.flags)} flags, disabled: {shown}"))
    return features


def _needs(mode: str) -> ModeNeeds:
    """What a built-in mode (caption, fts, semantic) needs of the dataset and the account."""
    return mode_needs("caption" if mode == "caption" else "vql", mode)


async def _mode_findings(client: ExploreClient, mode: str, probe_text: str) -> list[Finding]:
    params = _params(mode, probe_text, None)
    try:
        body = await _search(client, params, 0)
    except ApiError as exc:
        return [Finding(f"shape:{mode}", "failed", f"HTTP {exc.status}: {exc}")]
    except TransportError as exc:
        return [Finding(f"shape:{mode}", "failed", str(exc))]
    findings = [check_answer_shape(mode, body), _score_finding(mode, body)]
    findings.append(await _pages_finding(client, mode, params, body))
    if mode in ("caption", "semantic"):
        findings.append(await _cutoff_finding(client, mode, probe_text))
    return findings


def _score_finding(mode: str, body: object) -> Finding:
    try:
        page = parse_page(orjson.dumps(body), 0)
    except ValueError as exc:
        return Finding(f"scores:{mode}", "changed", f"answer does not parse: {exc}")
    raw = page.data.field("relevance_score").to_pylist()
    types = page.data.field("relevance_score_type").to_pylist()
    normalised = [normalise_score(r, t) for r, t in zip(raw, types, strict=True)]
    return check_scores(mode, types, [[s for s in normalised if s is not None]])


async def _pages_finding(
    client: ExploreClient, mode: str, params: dict[str, str], first: object
) -> Finding:
    first_page = len(first["clusters"]) if isinstance(first, dict) else 0
    try:
        past = await _search(client, params, _PAST_THE_END)
    except VlbenchError as exc:
        return Finding(f"pages:{mode}", "failed", f"page {_PAST_THE_END}: {exc}")
    clusters = past.get("clusters") if isinstance(past, dict) else None
    return check_pagination(mode, first_page, len(clusters) if isinstance(clusters, list) else 1)


async def _cutoff_finding(client: ExploreClient, mode: str, probe_text: str) -> Finding:
    by_cutoff: dict[float, frozenset[str]] = {}
    for cutoff in _PROBE_CUTOFFS:
        try:
            media = await _all_media(client, _params(mode, probe_text, cutoff))
        except VlbenchError as exc:
            return Finding(f"cutoff:{mode}", "failed", f"cut-off {cutoff:g}: {exc}")
        if media is None:
            return Finding(f"cutoff:{mode}", "skipped", f"cut-off {cutoff:g} fills every page")
        by_cutoff[cutoff] = media
    return check_cutoff_nesting(mode, by_cutoff)


async def _all_media(client: ExploreClient, params: dict[str, str]) -> frozenset[str] | None:
    """Every media id of a search that ends within a few pages; None when it does not."""
    media: set[str] = set()
    for page_number in range(_MAX_PROBE_PAGES):
        page = await client.search_page(params, page_number)
        ids = pc.list_flatten(page.data.field("previews")).field("media_id")
        media.update(ids.to_pylist())
        if page.n_clusters < 100:
            return frozenset(media)
    return None


async def _export_finding(client: ExploreClient, probe_text: str) -> Finding:
    """An export job of the fts probe starts, completes and its metadata parses."""
    from runner.export.jobs import JobOptions, download_ids, run_export_job

    search = _params("fts", probe_text, None)
    params = {
        "vql": search["vql"],
        "entity_type": search["entity_type"],
        "export_format": "parquet",
        "file_name": "vlbench-doctor",
        "include_images": "false",
    }
    options = JobOptions(poll_interval_s=_EXPORT_POLL_S, max_wait_s=_EXPORT_DEADLINE_S)
    try:
        end = await run_export_job(client, params, what="export probe", options=options)
        if end.status == "UNAVAILABLE":
            return Finding("export", "skipped", end.describe())
        if end.status != "COMPLETED":
            return Finding("export", "failed", end.describe())
        with tempfile.TemporaryDirectory(prefix="vlbench-doctor-") as scratch:
            ids = download_ids(client, end, Path(scratch), what="export probe", options=options)
            rows = sum([table.num_rows async for table in ids])
    except ExportError as exc:
        return Finding("export", "changed", str(exc))
    except VlbenchError as exc:
        return Finding("export", "failed", str(exc))
    return Finding("export", "ok", f"job completed, metadata lists {rows} media")


async def _search(client: ExploreClient, params: dict[str, str], page: int) -> Any:
    query = {**params, "page_number": str(page)}
    return await client.get_json(f"/explore/{client.dataset_id}", query, what=f"probe page {page}")


def _params(mode: str, text: str, cutoff: float | None) -> dict[str, str]:
    op: Literal["fts", "semantic"] | None = None
    if mode != "caption":
        op = "fts" if mode == "fts" else "semantic"
    return wire_params(text, op, "IMAGES", 0, cutoff, None)
