"""Shared pieces of the command line: exit codes, errors, output, and the options several commands take
(each defined once here: ``PUBLICATION`` for ``--dir``, ``pinned_verifier`` for ``--vkey``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from publisher.errors import UsageError
from publisher.tlog.note import Verifier
from verifier.cpl_verify import NoteError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PUBLICATION",
    "UsageError",
    "emit",
    "pinned_verifier",
    "vkey_option",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def emit(args: argparse.Namespace, summary: Mapping[str, object], text: str) -> None:
    print(json.dumps(summary, sort_keys=True) if args.json else text)


#: The ``--dir`` option of every command that works on a publication.
PUBLICATION = argparse.ArgumentParser(add_help=False)
PUBLICATION.add_argument("--dir", default=".", help="the publication folder holding publisher.toml (default: .)")

VKEY_HELP = "the log's verifier key to pin: the key string, or a file holding it"


def vkey_option(p: argparse.ArgumentParser, required: bool = False, default: str = "") -> None:
    """Add ``--vkey``, the same option with the same meaning wherever a log is verified."""
    p.add_argument("--vkey", required=required, help=VKEY_HELP + (f" (default: {default})" if default else ""))


def pinned_verifier(vkey: str) -> Verifier:
    """The verifier key ``--vkey`` names: the key string itself, or a file holding it."""
    text = Path(vkey).read_text() if Path(vkey).is_file() else vkey
    try:
        return Verifier.from_vkey(text.strip())
    except NoteError as exc:
        raise UsageError(f"--vkey: {exc}") from exc
