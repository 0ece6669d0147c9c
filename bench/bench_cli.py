"""How fast does the `vlbench` command start? Its help and a light command, against Python's own.

Each round runs every command once, in turn, as a child process (so that a busy moment of the
machine falls on all of them alike), and takes the child's CPU (user + system, from
`getrusage(RUSAGE_CHILDREN)`) and its wall time. Printed per command: the min and median over
the rounds, and the ratios of the medians against the two peers measured in the same run:

- `python -c pass`: the interpreter's floor, what no command can go under;
- `python -c "import typer"`: the floor of any Typer CLI (vlbench's help needs Typer and Rich).

The commands: `vlbench --help` (the command list), `vlbench run --help` (one command's options),
and two light commands that do their work without the API: `vlbench token` and
`vlbench validate queries/demo.yaml`.

Run: .venv/bin/python bench/bench_cli.py [--rounds 9] [--vlbench .venv/bin/vlbench]
(`VLBENCH_BENCH_SCALE=N` multiplies the rounds.)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _load import scale

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of one command: CPU seconds (user + system) and wall seconds."""

    cpu: float
    wall: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str]) -> Sample:
    """Run `argv` to its end, output discarded; a failure stops the benchmark."""
    cpu, wall = _children_cpu(), time.perf_counter()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return Sample(cpu=_children_cpu() - cpu, wall=time.perf_counter() - wall)


def measure(commands: dict[str, list[str]], rounds: int) -> dict[str, list[Sample]]:
    """`rounds` samples of each command, the commands interleaved within each round."""
    samples: dict[str, list[Sample]] = {name: [] for name in commands}
    for argv in commands.values():  # warm the file cache and the bytecode before measuring
        run_once(argv)
    for _ in range(rounds):
        for name, argv in commands.items():
            samples[name].append(run_once(argv))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--vlbench", default=str(Path(sys.executable).parent / "vlbench"), help="the command"
    )
    args = parser.parse_args()
    rounds = max(1, round(args.rounds * scale()))
    vlbench = args.vlbench
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import typer'": [sys.executable, "-c", "import typer"],
        "vlbench --help": [vlbench, "--help"],
        "vlbench run --help": [vlbench, "run", "--help"],
        "vlbench token": [vlbench, "token"],
        "vlbench validate demo.yaml": [vlbench, "validate", "queries/demo.yaml"],
    }
    os.environ.setdefault("COLUMNS", "100")  # the help's width, the same in every run
    samples = measure(commands, rounds)

    floor = statistics.median(s.cpu for s in samples["python -c pass"])
    typer_cpu = statistics.median(s.cpu for s in samples["python -c 'import typer'"])
    print(f"{rounds} rounds; CPU and wall in ms, min / median; ratios of the median CPU")
    print(f"{'command':<28} {'CPU':>13} {'wall':>13} {'/ python':>9} {'/ typer':>8}")
    for name, runs in samples.items():
        cpu = sorted(1000 * s.cpu for s in runs)
        wall = sorted(1000 * s.wall for s in runs)
        median_cpu = statistics.median(s.cpu for s in runs)
        print(
            f"{name:<28} {cpu[0]:5.0f} / {statistics.median(cpu):5.0f} "
            f"{wall[0]:5.0f} / {statistics.median(wall):5.0f} "
            f"{median_cpu / floor:9.2f} {median_cpu / typer_cpu:8.2f}"
        )


if __name__ == "__main__":
    main()
