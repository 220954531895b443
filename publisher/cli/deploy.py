"""Command line: ``cpl-publisher deploy SITE_DIR s3://BUCKET/PREFIX``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from publisher.cli.common import EXIT_OK, UsageError, emit
from publisher.deploy import deploy


def cmd_deploy(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    def progress(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    try:
        report = deploy(Path(args.site), args.url, args.endpoint_url, progress, wait=args.wait)
    except (BotoCoreError, ClientError) as exc:  # credentials, network, permissions: the store's words
        raise UsageError(f"the object store refused or could not be reached: {exc}") from exc
    text = (
        f"deployed {args.site} to {args.url}: {report.uploaded} objects uploaded ({report.uploaded_bytes:,} bytes), "
        f"{report.unchanged} unchanged; checkpoint {report.checkpoint} (log size {report.size}) in {report.seconds} s"
    )
    emit(args, report.to_json(), text)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add the ``deploy`` command."""
    p = sub.add_parser(
        "deploy",
        parents=[common],
        help="upload a built site to an S3-compatible bucket: append-only, checkpoint last",
        description=(
            "Upload what changed since the bucket's state. Tiles, bundles, evidence and archived CRLs are "
            "create-only and cached for a year; an existing one with other bytes is refused. The checkpoint goes "
            "last, by compare-and-swap, only forward. Credentials and region come from the standard AWS "
            "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, or a profile). "
            "Exit codes: 0 deployed (or nothing to do), 1 refused (an immutable object differs, the bucket's "
            "checkpoint is ahead or on another tree, another deploy holds the lock), 2 usage, credential or "
            "network error."
        ),
    )
    p.add_argument("site", help="the built site folder (mkdocs build -d SITE_DIR)")
    p.add_argument("url", help="s3://BUCKET or s3://BUCKET/PREFIX")
    p.add_argument("--endpoint-url", help="the S3 endpoint of an S3-compatible store (default: AWS)")
    p.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for another deploy's lock (default: 0, refuse)"
    )
    p.set_defaults(func=cmd_deploy)
