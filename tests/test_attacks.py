"""Issue 11's attack list, driven as a hostile and a clumsy user would: the real `vlbench` command
in a subprocess, real files, real mounts, the local server over 127.0.0.1.

Every case asserts what the user sees: no Python traceback, the documented exit code (README's
"Exit codes everywhere": 0 done, 1 something failed, 2 bad input, 130 interrupted), one line
naming the file (and line and key) or the cause, no temp file left in any folder involved, and,
for runs, the rows of an uninterrupted run after `--resume`.

The refusals of bad suites are independent, so they are started at once (one process each) and
checked one test a case; each process costs a few seconds of imports, most of this module's time.
Every `timeout=` here guards against a hang; nothing is timed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import polars.testing
import pytest
from helpers_exec import DEMO_ENV, QUERIES, write_suite
from helpers_hostile import AN_HOUR, YEARS_AHEAD, Hostile

from runner.server.lifecycle import ServerThread
from runner.store import read_manifest, scan_hits, scan_requests

VLBENCH = [sys.executable, "-m", "runner"]
TRACEBACK = "Traceback (most recent call last)"
REPO = Path(__file__).resolve().parents[1]
# Columns that say when and how fast a request went: they differ between any two runs.
TIMING = ("sent_at", "latency_ms", "attempts")
# Temp names of the store's one atomic write (`.<name>.tmp-<hex>`), of dataset imports
# (`.<name>.partial-<hex>`), and anything else hidden a crash could strand.
TEMP_NAME = re.compile(r"^\.|\.tmp-[0-9a-f]+$|\.partial-[0-9a-f]+$|\.tmp$")
# A run in progress keeps these beside its Parquet files; a finished run has neither.
UNFINISHED = ("_journal", "_parts", "_finalise.json")
LATIN1 = "caf\xe9 au lait".encode("latin-1")  # 0xe9 alone is not UTF-8


# --- the command, its output, its leftovers ---------------------------------------------------


def environ(**extra: str) -> dict[str, str]:
    """This process's environment without any VL_ variable, plus the test servers' credentials."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VL_")}
    return {**base, "PYTHONPATH": str(REPO), **DEMO_ENV, **extra}


def start(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*VLBENCH, *args],
        cwd=cwd,
        env=dict(environ() if env is None else env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass(frozen=True)
class Done:
    """A finished `vlbench` process."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"vlbench {' '.join(self.args)} -> {self.returncode}\n{self.stdout}\n{self.stderr}"


def finish(process: subprocess.Popen[str], args: Sequence[str], timeout: float = 180) -> Done:
    try:
        stdout, stderr = process.communicate(timeout=timeout)  # a hang guard
    finally:
        process.kill()
    return Done(tuple(args), process.returncode, stdout, stderr)


def vlbench(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Done:
    return finish(start(*args, cwd=cwd, env=env), args)


def assert_exit(done: Done, code: int, line: str | re.Pattern[str] | None = None) -> None:
    """Exit `code`, no traceback anywhere, and (when given) one output line starting so."""
    assert TRACEBACK not in done.stderr + done.stdout, done
    assert done.returncode == code, done
    if line is not None:
        lines = (done.stderr + done.stdout).splitlines()
        pattern = line if isinstance(line, re.Pattern) else re.compile(re.escape(line))
        assert [x for x in lines if pattern.match(x)], f"no line {pattern.pattern!r} in {done}"


def leftovers(*folders: Path) -> list[Path]:
    """Temp files (hidden ones included) anywhere under `folders`."""
    return [p for f in folders if f.exists() for p in f.rglob("*") if TEMP_NAME.search(p.name)]


def rows(run_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A run's request and hit rows without the timing columns, in a canonical order."""
    requests = scan_requests(run_dir).collect().drop(TIMING).sort("request_key", "page")
    hits = scan_hits(run_dir).collect().sort("request_key", "rank")
    return requests, hits


def assert_same_rows(run_dir: Path, expected: Path) -> None:
    got, want = rows(run_dir), rows(expected)
    polars.testing.assert_frame_equal(got[0], want[0])
    polars.testing.assert_frame_equal(got[1], want[1])


def the_run(out: Path) -> Path:
    (run_dir,) = out.glob("suite=*/run_date=*/run_id=*")
    return run_dir


# --- a clean run of the suite every run case compares with -------------------------------------

SUITE = {"name": "attack", "queries": QUERIES, "concurrency": 2}


@pytest.fixture(scope="module")
def clean(demo_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the suite straight against the local server, with its report."""
    folder = tmp_path_factory.mktemp("clean")
    suite = write_suite(folder, demo_server, **SUITE)  # type: ignore[arg-type]
    done = vlbench("run", str(suite), "--out", str(folder / "out"), "--quiet", cwd=folder)
    assert_exit(done, 0)
    run_dir = the_run(folder / "out")
    assert (run_dir / "metrics.parquet").exists() and read_manifest(run_dir)["status"] == "complete"
    return run_dir


# --- defect 1: a hostile Retry-After, and a signal while it waits ------------------------------


HEADERS = [pytest.param(AN_HOUR, id="an-hour"), pytest.param(YEARS_AHEAD, id="years-ahead")]


def hostile_suite(folder: Path, front: Hostile, server: ServerThread, **retries: Any) -> Path:
    suite = write_suite(folder, server, **SUITE)  # type: ignore[arg-type]
    data = json.loads(suite.read_text(encoding="utf-8"))
    data["base_url"] = front.base_url
    data["retries"] = {"max_attempts": 5, "backoff_s": 0.005, **retries}
    suite.write_text(json.dumps(data), encoding="utf-8")
    return suite


@pytest.mark.parametrize("header", HEADERS)
def test_a_hostile_retry_after_is_capped_and_the_run_completes(
    header: str, clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    """Two 429s asking for an hour (or years): each wait is the suite's cap, not the server's."""
    with Hostile(demo_server.base_url, header, pass_first=2, limit=2) as front:
        suite = hostile_suite(tmp_path, front, demo_server, max_backoff_s=0.2)
        done = vlbench(
            "run", str(suite), "--out", str(tmp_path / "out"), "--no-report", cwd=tmp_path
        )
        assert front.throttled == 2
    assert_exit(
        done,
        0,
        re.compile(
            r"the server asked \d+ time\(s\) to wait longer than retries\.max_retry_after_s"
        ),
    )
    run_dir = the_run(tmp_path / "out")
    requests, hits = rows(run_dir)
    want_requests, want_hits = rows(clean)
    polars.testing.assert_frame_equal(hits, want_hits)
    noted = requests.filter(pl.col("error").is_not_null())
    assert noted.height >= 1  # the throttled pages (one or two, fanned out), each noted ...
    assert noted["error"].str.contains(r"waited 0\.2 s \(retries\.max_retry_after_s\)").all()
    for asked in noted["error"].str.extract(r"asked Retry-After ([\d,]+) s").to_list():
        assert int(asked.replace(",", "")) >= 3600, "the record says what the server asked"
    # ... and otherwise the rows of the clean run
    polars.testing.assert_frame_equal(requests.drop("error"), want_requests.drop("error"))
    assert leftovers(tmp_path) == []


STOPS = [
    pytest.param(signal.SIGTERM, AN_HOUR, 2, id="SIGTERM-an-hour-twice"),
    pytest.param(signal.SIGTERM, YEARS_AHEAD, 1, id="SIGTERM-years-ahead"),
    pytest.param(signal.SIGKILL, YEARS_AHEAD, 1, id="SIGKILL-years-ahead"),
]


def stop_while_waiting(front: Hostile, args: Sequence[str], out: Path, sig: int) -> Done:
    """Start `vlbench ARGS`, send `sig` once a 429 was answered and the run directory exists."""
    front.throttled = 0
    process = start(*args, cwd=out.parent)
    try:
        deadline = time.monotonic() + 120  # a guard against a run that never starts
        while not (front.throttled and list(out.glob("suite=*/run_date=*/run_id=*"))):
            assert process.poll() is None, finish(process, args)
            assert time.monotonic() < deadline, "no 429 was ever answered"
            time.sleep(0.05)
        process.send_signal(sig)
        process.wait(timeout=20)  # a hang guard, not a speed limit
    finally:
        done = finish(process, args)
    return done


@pytest.mark.parametrize("sig, header, rounds", STOPS)
def test_a_signal_during_a_hostile_wait_ends_the_run_and_resume_gives_the_clean_rows(
    sig: signal.Signals,
    header: str,
    rounds: int,
    clean: Path,
    demo_server: ServerThread,
    tmp_path: Path,
) -> None:
    """The cap is 300 s: only a cancellable wait lets SIGTERM end the run (exit 130); a resume
    stopped the same way stays resumable.

    SIGKILL cannot be answered: the run is left `running`, and resume must take it as it is.
    """
    out = tmp_path / "out"
    with Hostile(demo_server.base_url, header, pass_first=4, limit=None) as front:
        suite = hostile_suite(tmp_path, front, demo_server, max_backoff_s=300)
        args = ("run", str(suite), "--out", str(out), "--no-report")
        for round_ in range(rounds):
            done = stop_while_waiting(front, [*args, *(["--resume"] if round_ else [])], out, sig)
            run_dir = the_run(out)
            manifest = read_manifest(run_dir)
            if sig == signal.SIGKILL:
                assert done.returncode == -signal.SIGKILL and manifest["status"] == "running"
            else:
                assert_exit(done, 130, "stopped: interrupted")
                assert manifest["status"] == "partial"
                assert manifest["counts"]["requests_done"] < manifest["counts"]["requests_planned"]
            assert leftovers(tmp_path) == []

        front.hostile = False  # the server behaves from now on
        resumed = vlbench(*args, "--resume", "--quiet", cwd=tmp_path)
    assert_exit(resumed, 0)
    assert read_manifest(run_dir)["status"] == "complete"
    assert_same_rows(run_dir, clean)
    assert [p.name for p in run_dir.iterdir() if p.name in UNFINISHED] == []
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_server_never_answers_ends_the_run(
    sig: signal.Signals, demo_server: ServerThread, tmp_path: Path
) -> None:
    """Stuck in the preflight (the first request hangs, timeout_s 600): a signal still ends it."""
    out = tmp_path / "out"
    with Hostile(demo_server.base_url, AN_HOUR, pass_first=0, limit=None) as front:
        front.hang = True
        suite = hostile_suite(tmp_path, front, demo_server, max_backoff_s=300)
        data = json.loads(suite.read_text(encoding="utf-8"))
        suite.write_text(json.dumps({**data, "timeout_s": 600}), encoding="utf-8")
        args = ("run", str(suite), "--out", str(out), "--no-report")
        process = start(*args, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 120  # a guard against a run that never starts
            while not front.seen:
                assert process.poll() is None, finish(process, args)
                assert time.monotonic() < deadline, "the server was never asked"
                time.sleep(0.05)
            process.send_signal(sig)
            process.wait(timeout=20)  # a hang guard, not a speed limit
        finally:
            done = finish(process, args)
    assert_exit(done, 130, "error: interrupted before the first search; nothing was written")
    assert not out.exists() and leftovers(tmp_path) == []


# --- defects 2, 5, 6 and the smaller suite items: bad input, refused at its file and line -------


@dataclass(frozen=True)
class Case:
    """One bad suite: its files, the command run on it, and what the user must see."""

    files: Mapping[str, str | bytes]
    command: str = "validate"
    code: int = 2
    line: str = ""  # the expected line's start; {dir} is the case's folder, from the one above
    absent: str = "Traceback"  # a word the output must not hold


def bomb() -> str:
    """Nine levels of nine aliases: "billion laughs" (9**9 = 387,420,489 leaves)."""
    lines = ["name: bomb", "a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join([*lines, "queries: [a dog on a beach]", ""])


HUGE = "a dog " * 17_000  # 102 KB
JUDGED = "name: t\nqueries: [dog, cat]\njudgments: {qrels: [j.qrels]}\n"
CASES: dict[str, Case] = {
    "alias-bomb-validate": Case({"suite.yaml": bomb()}, line="error: {dir}/suite.yaml:10: a8[0]: "),
    "alias-bomb-run": Case(
        {"suite.yaml": bomb()}, command="run", line="error: {dir}/suite.yaml:10: a8[0]: "
    ),
    "not-utf8-queries-tsv": Case(
        {"suite.yaml": "name: t\nqueries_file: q.tsv\n", "q.tsv": b"a\tdog\nb\t" + LATIN1 + b"\n"},
        line="error: {dir}/q.tsv:2: ",
        absent="suite.yaml",
    ),
    "not-utf8-queries-csv": Case(
        {"suite.yaml": "name: t\nqueries_file: q.csv\n", "q.csv": b"id,text\na," + LATIN1 + b"\n"},
        line="error: {dir}/q.csv:2: ",
        absent="suite.yaml",
    ),
    "not-utf8-qrels": Case(
        {"suite.yaml": JUDGED, "j.qrels": b"q1 0 a.jpg 1\nq1 0 " + LATIN1[:5] + b".jpg 1\n"},
        line="error: {dir}/j.qrels:2: ",
        absent="suite.yaml",
    ),
    "not-utf8-labels": Case(
        {
            "suite.yaml": "name: t\nqueries: [dog]\njudgments: {labels_file: l.tsv}\n",
            "l.tsv": b"q1\tdog\nq1\t" + LATIN1 + b"\n",
        },
        command="run",
        line="error: {dir}/l.tsv:2: ",
        absent="suite.yaml",
    ),
    "csv-unclosed-quote": Case(
        {"suite.yaml": "name: t\nqueries_file: q.csv\n", "q.csv": 'id,text\na,"a dog\nb,a cat\n'},
        line="error: {dir}/q.csv:2: ",
    ),
    "query-text-100kb": Case(
        {"suite.yaml": "name: t\nqueries_file: q.tsv\n", "q.tsv": f"ok\tdog\nbig\t{HUGE}\n"},
        line="error: {dir}/q.tsv:2: text: query 'big'",
    ),
    "query-text-nul": Case(
        {
            "suite.yaml": "name: t\nqueries:\n  - {id: ok, text: dog}\n"
            '  - {id: nul, text: "a\\0b"}\n'
        },
        line="error: {dir}/suite.yaml:4: queries[1].text: query 'nul'",
    ),
    "max-pages-100000-plan": Case(
        {"suite.yaml": "name: t\nqueries: [dog]\npagination: {max_pages: 100000}\n"},
        command="plan",
        line="error: {dir}/suite.yaml:3: pagination.max_pages: ",
        absent="300,000",
    ),
    "qrels-conflict": Case(
        {"suite.yaml": JUDGED, "j.qrels": "q1 0 x.jpg 2\nq2 0 x.jpg 1\nq1 0 x.jpg 0\n"},
        line="error: {dir}/j.qrels:3: grade: ",
    ),
    "qrels-grade-out-of-range": Case(
        {"suite.yaml": JUDGED, "j.qrels": "q1 0 x.jpg 1\nq2 0 y.jpg 99999999999999999999\n"},
        command="run",
        line="error: {dir}/j.qrels:2: grade: 99999999999999999999 is larger than the largest",
    ),
    "concurrency-100000000": Case(
        {"suite.yaml": "name: t\nqueries: [dog]\nconcurrency: 100000000\n"},
        command="run",
        line="error: {dir}/suite.yaml:3: concurrency: 100,000,000 is more than 1,000",
    ),
    "timeout-nan": Case(
        {"suite.yaml": "name: t\nqueries: [dog]\ntimeout_s: .nan\n"},
        line="error: {dir}/suite.yaml:3: timeout_s: expected a finite number",
    ),
    "qrels-unknown-query-ids": Case(
        {"suite.yaml": JUDGED, "j.qrels": "q1 0 x.jpg 1\nq9 0 x.jpg 1\nq8 0 y.jpg 1\n"},
        code=0,
        line="warning: {dir}/j.qrels:2: 2 judgment line(s) name 2 query id(s) this suite does "
        "not have (the first: 'q9')",
    ),
}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Done]]:
    """Every case's folder and what `vlbench <command>` printed there (all run side by side)."""
    started: dict[str, tuple[Path, list[str], subprocess.Popen[str]]] = {}
    for name, case in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        for file, content in case.files.items():
            path = folder / file
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        # From the folder above, as one runs a suite from a repository's root: paths in messages
        # are the ones the user can open from there.
        args = [case.command, f"{folder.name}/suite.yaml"]
        if case.command == "run":
            args += ["--out", f"{folder.name}/out"]
        started[name] = (folder, args, start(*args, cwd=folder.parent))
    return {name: (folder, finish(p, args)) for name, (folder, args, p) in started.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_at_its_file_and_line(
    refusals: dict[str, tuple[Path, Done]], name: str
) -> None:
    case = CASES[name]
    folder, done = refusals[name]
    assert_exit(done, case.code, case.line.format(dir=folder.name))
    assert case.absent not in done.stderr + done.stdout, done
    if case.command == "run":
        assert not (folder / "out").exists(), "a refused suite starts no run"
    assert sorted(p.name for p in folder.iterdir()) == sorted(case.files), "nothing written"


def test_a_suite_that_is_a_device_is_refused_not_read_forever(tmp_path: Path) -> None:
    """`vlbench validate /dev/zero` read until the memory ran out (a MemoryError traceback)."""
    done = vlbench("validate", "/dev/zero", cwd=tmp_path)
    assert_exit(done, 2, "error: /dev/zero: not a regular file")


# --- no credentials -----------------------------------------------------------------------------


def test_no_credentials_names_the_unset_variables(
    demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server)
    unset = {k: v for k, v in environ().items() if k not in DEMO_ENV}
    done = vlbench("run", str(suite), "--out", str(tmp_path / "out"), cwd=tmp_path, env=unset)
    assert_exit(
        done, 1, re.compile(r"error: .*VL_TOKEN is unset, and VL_API_KEY and VL_API_SECRET")
    )
    assert not (tmp_path / "out").exists()


# --- defect 3: history over a corrupt metrics.parquet -------------------------------------------


def nights(clean: Path, root: Path, count: int) -> list[Path]:
    """`count` nights of the clean run (its metrics included) under root/suite=attack/."""
    dated = []
    for n in range(count):
        night = root / "suite=attack" / f"run_date=2026-01-0{n + 1}" / f"run_id=night-{n}"
        shutil.copytree(clean, night)
        dated.append(night)
    return dated


def test_history_leaves_a_corrupt_night_out_and_names_it(clean: Path, tmp_path: Path) -> None:
    first, bad, _ = nights(clean, tmp_path, 3)
    (bad / "metrics.parquet").write_bytes(b"PAR1 not parquet at all PAR1")
    done = vlbench("history", str(tmp_path / "suite=attack"), cwd=tmp_path)
    assert_exit(
        done, 0, f"note: run night-1 (2026-01-02) left out: {bad / 'metrics.parquet'}: corrupt"
    )
    assert leftovers(tmp_path) == []


def test_history_of_only_corrupt_nights_exits_2_naming_the_file(
    clean: Path, tmp_path: Path
) -> None:
    (night,) = nights(clean, tmp_path, 1)
    metrics = night / "metrics.parquet"
    metrics.write_bytes(metrics.read_bytes()[:-30])  # truncated
    done = vlbench("history", str(tmp_path / "suite=attack"), cwd=tmp_path)
    assert_exit(done, 2, re.compile(rf".*{re.escape(str(metrics))}: corrupt Parquet file"))
    assert leftovers(tmp_path) == []


# --- defect 4: report on a full disk ------------------------------------------------------------


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount`, unmounted after; skipped only where mounting is refused."""
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs was refused: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_report_on_a_full_disk_names_the_file_and_works_once_freed(
    clean: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        out = disk / "report"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 24 * 1024))
        done = vlbench("report", str(clean), "--out", str(out), cwd=tmp_path)
        assert_exit(
            done,
            1,
            re.compile(
                rf"error: {re.escape(str(out))}/[\w.]+: cannot write: no space left on device"
            ),
        )
        assert leftovers(disk, clean) == []
        assert [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0] == []

        filler.unlink()
        done = vlbench("report", str(clean), "--out", str(out), cwd=tmp_path)
        assert_exit(done, 0)
        assert (out / "report.html").read_text(encoding="utf-8").rstrip().endswith("</html>")
        assert leftovers(disk, clean) == []


def test_run_on_a_full_disk_stops_naming_the_file_and_resumes_to_the_clean_rows(
    clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server, **SUITE)  # type: ignore[arg-type]
    size = sum(p.stat().st_size for p in clean.rglob("*") if p.is_file())
    with tmpfs(tmp_path / "disk", "4m") as disk:
        out = disk / "out"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - size // 3))
        args = ("run", str(suite), "--out", str(out), "--quiet", "--no-report")
        done = vlbench(*args, cwd=tmp_path)
        assert_exit(done, 1, re.compile(r"error: .*: cannot write: no space left on device"))
        assert leftovers(disk) == []
        filler.unlink()
        resumed = vlbench(*args, "--resume", cwd=tmp_path)
        assert_exit(resumed, 0)
        run_dir = the_run(out)
        assert_same_rows(run_dir, clean)
        assert [p.name for p in run_dir.iterdir() if p.name in UNFINISHED] == []
        assert leftovers(disk) == []


def test_every_writer_on_a_full_disk_exits_1_naming_the_file_and_leaves_no_temp(
    clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server, **SUITE)  # type: ignore[arg-type]
    with tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "filler").write_bytes(b"\0" * shutil.disk_usage(disk).free)  # full
        commands = {
            "run": ("run", str(suite), "--out", f"{disk}/runs", "-q"),
            "export-trec": ("export", str(clean), "--format", "trec", "--out", f"{disk}/trec"),
            "export-csv": ("export", str(clean), "--format", "csv", "--out", f"{disk}/ids.csv"),
            "judge-todo": ("judge-todo", str(clean), "--out", f"{disk}/todo"),
        }
        started = {name: start(*args, cwd=tmp_path) for name, args in commands.items()}
        for name, process in started.items():
            done = finish(process, commands[name])
            where = re.escape(commands[name][-2 if name == "run" else -1])
            line = re.compile(rf"error: {where}\S*: cannot write: no space left on device")
            assert_exit(done, 1, line)
        assert leftovers(disk, clean) == []
        assert not (disk / "runs").exists()  # no run without manifest, no empty suite= folders


# --- clumsy paths and damaged runs: every command that takes them ------------------------------


def test_an_out_that_is_a_file_is_refused_and_the_file_kept(
    clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server, **SUITE)  # type: ignore[arg-type]
    afile = tmp_path / "afile"
    afile.write_bytes(b"mine")
    commands = {
        "run": ("run", str(suite), "--out", "afile", "--no-report"),
        "report": ("report", str(clean), "--out", "afile"),
    }
    started = {name: start(*args, cwd=tmp_path) for name, args in commands.items()}
    done = {name: finish(process, commands[name]) for name, process in started.items()}
    assert_exit(
        done["run"], 1, re.compile(r"error: afile/suite=attack/\S*: cannot write: not a dir")
    )
    assert_exit(done["report"], 1, "error: afile: cannot write: ")
    assert afile.read_bytes() == b"mine"
    assert leftovers(tmp_path, clean) == []


def test_a_corrupt_run_is_refused_by_every_command_and_nothing_is_written(
    clean: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / clean.relative_to(clean.parents[2])
    shutil.copytree(clean, run_dir)
    hits = run_dir / "hits.parquet"
    hits.write_bytes(hits.read_bytes()[:-50])  # truncated
    out = tmp_path / "out"
    commands = {
        "report": ("report", str(run_dir), "--out", str(out)),
        "export": ("export", str(run_dir), "--format", "trec", "--out", str(out)),
        "push": ("push", str(run_dir), str(out)),
    }
    started = {name: start(*args, cwd=tmp_path) for name, args in commands.items()}
    for name, process in started.items():
        done = finish(process, commands[name])
        assert_exit(done, 2, f"error: {hits}: corrupt Parquet file")
    assert not out.exists()
    assert leftovers(tmp_path, clean) == []


# --- merge: a full disk, then a corrupt shard (the smaller item): nothing is left ---------------


def test_merge_on_a_full_disk_or_with_a_corrupt_shard_leaves_nothing(
    clean: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, demo_server, **SUITE)  # type: ignore[arg-type]
    shards = []
    for k in (1, 2):
        args = ("run", str(suite), "--shard", f"{k}/2", "--out", str(tmp_path / f"w{k}"), "-q")
        shards.append((args, start(*args, "--no-report", cwd=tmp_path)))
    for args, process in shards:
        assert_exit(finish(process, args), 0)
    one, two = the_run(tmp_path / "w1"), the_run(tmp_path / "w2")

    with tmpfs(tmp_path / "disk", "2m") as disk:
        out = disk / "merged"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 32 * 1024))
        done = vlbench("merge", str(one), str(two), "--out", str(out), cwd=tmp_path)
        assert_exit(
            done,
            1,
            re.compile(rf"error: {re.escape(str(out))}/suite=attack/\S+: cannot write: no space"),
        )
        assert sorted(disk.iterdir()) == [filler]  # no scratch run, no suite=/run_date= folders
        filler.unlink()
        done = vlbench("merge", str(one), str(two), "--out", str(out), cwd=tmp_path)
        assert_exit(done, 0)
        assert_same_rows(the_run(out), clean)  # the shards, merged, are the unsharded run

    hits = two / "hits.parquet"
    hits.write_bytes(hits.read_bytes()[:-40])  # truncated
    out = tmp_path / "merged"
    done = vlbench("merge", str(one), str(two), "--out", str(out), cwd=tmp_path)
    assert_exit(done, 2, re.compile(rf"error: .*{re.escape(str(hits))}: corrupt Parquet"))
    assert not out.exists()  # no suite=/run_date= folders either
    assert leftovers(tmp_path) == []
