"""The scheduler: a plan's requests, paced, bounded, retried and paginated, into a run directory.

    result = await run_suite(load_suite("queries/demo.yaml"))           # end to end
    result = await run_plan(plan, writer, client=client, options=ExecuteOptions(...))

How a run goes:
- `preflight` first: the dataset must be searchable (READY, READ ONLY, PARTIAL INDEX; the
  latter two are noted in the manifest), the account's feature flags must allow every mode,
  and the dataset's enrichments must serve every mode and filter of the plan, else `ApiError`
  naming what is missing, before any search is sent.
- A 403 during the run (a feature disabled for that kind of request) fails the requests of
  that mode alone: the first is sent, the rest are recorded as failed without being sent; the
  rest of the suite runs, and the run ends `partial` with one line per refused mode.
- Requests that go on the wire identically (same `wire_key`, different query ids) are sent once;
  their pages are fanned out to every spec sharing them, as one unit of the store.
- `concurrency` workers pull units from one iterator (not a task per request: a plan may hold
  100k). Every HTTP request, each page and each retry, waits for the client's pacer.
- A page that fails is retried on 429, 5xx, timeouts, dropped connections and bodies that do
  not parse, with exponential backoff and full jitter, up to `max_attempts`; `Retry-After` slows
  the whole run (`Pacer.slow_down`). Other 4xx are final. A final failure ends the request: the
  pages so far and the failed page are recorded with their outcome.
- Pages are fetched up to `max_pages` (None: all), until an empty page, a short page (fewer
  than 100 clusters) or `total_pages`; `PAGE_CAP` bounds "all" so that a run cannot loop forever.
- Each completed unit goes to the store (`RunWriter.record`) whole, a few units a call; keys the
  store has already (a resumed run) are skipped. `retry_failed` (with a resume): the store first
  withdraws the keys that failed for good, so they are sent again and their new rows replace the
  old; a complete run with no failure is left as it is.
- `RunControl.stop()` (Ctrl-C, SIGTERM) stops taking new units; units in flight get
  `stop_grace_s` (0.5 s) to complete and are then cancelled, whatever they wait for (the pacer, a
  backoff, a slow answer); `abort()` cancels them at once. Either way the writer is finished
  `partial`, and a resume does what is left. A `Retry-After` is obeyed up to the suite's
  `retries.max_retry_after_s` (default `max_backoff_s`); a longer ask is noted on the page's row.

Rooms: `_types` (options, results, controls; retries follow `runner.api.retry`),
`_preflight`, `_schedule` (workers, pages, the run's end), `_rows` (rows for the store),
`_suite` (a suite end to end, `suite_client`: its API or the embedded server).
"""

from runner.execute._preflight import (
    Preflight,
    preflight,
    required_enrichments,
    required_features,
)
from runner.execute._schedule import run_plan, wire_units
from runner.execute._suite import make_pacer, run_suite, suite_client
from runner.execute._types import (
    EXIT_INTERRUPTED,
    PAGE_CAP,
    PAGE_SIZE,
    ExecuteOptions,
    ProgressSink,
    RetryPolicy,
    RunControl,
    RunInterrupted,
    RunResult,
    RunSink,
    RunStats,
)

__all__ = [
    "EXIT_INTERRUPTED",
    "PAGE_CAP",
    "PAGE_SIZE",
    "ExecuteOptions",
    "Preflight",
    "ProgressSink",
    "RetryPolicy",
    "RunControl",
    "RunInterrupted",
    "RunResult",
    "RunSink",
    "RunStats",
    "make_pacer",
    "preflight",
    "required_enrichments",
    "required_features",
    "run_plan",
    "run_suite",
    "suite_client",
    "wire_units",
]
