"""Shared pieces of the command line: exit codes, errors, output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

from publisher.errors import UsageError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageError", "emit"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def emit(args: argparse.Namespace, summary: Mapping[str, object], text: str) -> None:
    print(json.dumps(summary, sort_keys=True) if args.json else text)
