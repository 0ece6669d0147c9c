"""`python -m runner`: the `vlbench` command without its console script."""

from runner.cli import main

main()
