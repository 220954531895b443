"""Shared pieces of the command line: exit codes, errors, output, and the options several commands take
(each defined once here: ``PUBLICATION`` for ``--dir``, ``pinned_verifier`` for ``--vkey``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from publisher.config import TokenKey, token_key
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
    "token_from_args",
    "token_options",
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


def token_options(p: argparse.ArgumentParser, what: str, example: str = "pkcs11:token=dcc-cpl;object=log") -> None:
    """Add ``--pkcs11 URI``, ``--pkcs11-module`` and ``--pin-env``/``--pin-file``: a key in a PKCS#11 token."""
    g = p.add_argument_group("PKCS#11 token (the key never leaves it)")
    g.add_argument("--pkcs11", metavar="URI", help=f"RFC 7512 URI of {what}, e.g. '{example}'")
    g.add_argument("--pkcs11-module", metavar="PATH", help="the token's PKCS#11 library (or module-path in the URI)")
    pin = g.add_mutually_exclusive_group()
    pin.add_argument("--pin-env", metavar="VAR", help="environment variable holding the token's user PIN")
    pin.add_argument("--pin-file", metavar="FILE", help="file holding the token's user PIN (outside the publication)")


def token_from_args(args: argparse.Namespace, names_key: bool = True) -> TokenKey | None:
    """The token key ``token_options`` describe (with ``names_key`` false, just the token), or None without
    ``--pkcs11``."""
    if not args.pkcs11:
        if args.pkcs11_module or args.pin_env or args.pin_file:
            raise UsageError("--pkcs11-module, --pin-env and --pin-file go with --pkcs11 URI")
        return None
    return token_key(args.pkcs11, "--pkcs11", Path.cwd(), args.pkcs11_module, args.pin_env, args.pin_file, names_key)


def pinned_verifier(vkey: str) -> Verifier:
    """The verifier key ``--vkey`` names: the key string itself, or a file holding it."""
    text = Path(vkey).read_text() if Path(vkey).is_file() else vkey
    try:
        return Verifier.from_vkey(text.strip())
    except NoteError as exc:
        raise UsageError(f"--vkey: {exc}") from exc
