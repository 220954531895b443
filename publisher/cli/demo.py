"""Command line: ``cpl-publisher demo`` (the demo publication from built-in sample data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from publisher import demo
from publisher.cli.common import EXIT_OK, emit


def cmd_demo(args: argparse.Namespace) -> int:
    info = demo.build(Path(args.out), hsm=args.hsm)
    emit(args, info, demo.describe(info))
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser("demo", parents=[common], help="build the demo publication from built-in sample data")
    p.add_argument("--out", default="build/demo", help="output folder (default: build/demo)")
    p.add_argument(
        "--hsm",
        action="store_true",
        help="make the CA and log keys inside a fresh SoftHSM2 token in OUT/token (needs Debian's softhsm2)",
    )
    p.set_defaults(func=cmd_demo)
