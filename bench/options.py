"""Command-line options every benchmark takes, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run_options(parser: argparse.ArgumentParser, profile_help: str | None = None) -> None:
    """``--dir`` (where the temporary folder goes), ``--json``, ``--quiet`` and, with ``profile_help``,
    ``--profile LINES``."""
    if profile_help is not None:
        parser.add_argument("--profile", type=int, default=0, metavar="LINES", help=profile_help)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder (default: system temp)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
