"""`python -m analysis ...`: see [`analysis.cli.main`]."""

from .cli import main

main()
