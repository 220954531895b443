"""``cpl-publisher``: the command line of the publisher job.

Exit codes: 0 success, 1 verification failed or request refused, 2 usage,
configuration or I/O error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from publisher import __version__
from publisher.cli import demo as cli_demo
from publisher.cli import deploy as cli_deploy
from publisher.cli import intake as cli_intake
from publisher.cli import log as cli_log
from publisher.cli import pki as cli_pki
from publisher.cli import publish as cli_publish
from publisher.cli.common import EXIT_FAILED, EXIT_USAGE
from publisher.errors import Refused, UsageError, VerificationFailed
from verifier.cpl_verify import CheckpointError, NoteError, ProofError, TileError

# The families (publisher.errors), and the verifier's errors as the publisher meets them.
FAILED = (VerificationFailed, ProofError, CheckpointError)
USAGE = (UsageError, TileError, NoteError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpl-publisher",
        description="Publisher of the GB smart metering IKI CRLs and the CPL transparency log.",
        epilog="Exit codes: 0 success, 1 verification failed, 2 usage or I/O error.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print a machine-readable summary"
    )
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    parser.add_argument("--version", action="version", version=f"cpl-publisher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    cli_log.register(sub, common)
    cli_pki.register(sub, common)
    cli_intake.register(sub, common)
    cli_publish.register(sub, common)
    cli_demo.register(sub, common)
    cli_deploy.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cpl-publisher``; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a nargs="*" positional at the first option; take the rest too.
    if extra and hasattr(args, "files") and not any(x.startswith("-") for x in extra):
        args.files += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code: int = args.func(args)
        return code
    except FAILED as exc:
        print(f"cpl-publisher: VERIFICATION FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Refused as exc:
        print(f"cpl-publisher: refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except USAGE as exc:
        print(f"cpl-publisher: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
