"""`python -m factory.cli`: the CLI without the console script (a Ray Job's entrypoint on a cluster's Python)."""

from factory.cli import main

main()
