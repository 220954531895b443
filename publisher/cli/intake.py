"""Command line: ``cpl-publisher intake`` and ``check-submission`` (CPL submissions)."""

from __future__ import annotations

import argparse
from pathlib import Path

from publisher.cli.common import EXIT_FAILED, EXIT_OK, PUBLICATION, emit
from publisher.config import load as load_config
from publisher.intake.run import check_folder, index_of, run_intake, trust_context
from publisher.intake.submission import entry_lines, signer_lines
from publisher.publication import now_utc
from publisher.tlog import open_log, open_log_for_writing


def cmd_intake(args: argparse.Namespace) -> int:
    config = load_config(Path(args.dir))
    with open_log_for_writing(config) as log:
        report = run_intake(config, log, show_progress=not args.json)
    lines = [f"accepted {k}: log indices {v[0]}..{v[-1]}" for k, v in report.accepted.items()]
    lines += [f"completed {k} (logged by an interrupted run)" for k in report.completed]
    lines += [f"rejected {k}: {len(v)} failed checks (see inbox/{k}/rejection.txt)" for k, v in report.rejected.items()]
    lines += [f"unchanged since its rejection: {k}" for k in report.skipped]
    emit(args, report.to_json(), "\n".join(lines) or "the inbox is empty")
    return EXIT_OK


def cmd_check_submission(args: argparse.Namespace) -> int:
    config = load_config(Path(args.dir))
    now = now_utc()
    index = index_of(open_log(config))
    decision = check_folder(Path(args.submission), trust_context(config, now), index, now)
    if decision.accepted:
        lines = [f"OK: {len(decision.entries)} associations would be logged:", *entry_lines(decision)]
    else:
        lines = ["REJECTED:", *(f"  - {f}" for f in decision.findings)]
    text = "\n".join([*lines, *signer_lines(decision.signers)])
    summary = {
        "accepted": decision.accepted,
        "rows": len(decision.entries),
        "findings": [f.to_json() for f in decision.findings],
        "signers": decision.signers,
        "entries": decision.entries,
    }
    emit(args, summary, text)
    return EXIT_OK if decision.accepted else EXIT_FAILED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add the ``intake`` and ``check-submission`` commands."""
    pub = PUBLICATION
    p = sub.add_parser("intake", parents=[common, pub], help="check the inbox and log the approved submissions")
    p.set_defaults(func=cmd_intake)
    p = sub.add_parser(
        "check-submission",
        parents=[common, pub],
        help="run every intake check on one submission, changing nothing",
    )
    p.add_argument("submission", help="the submission folder")
    p.set_defaults(func=cmd_check_submission)
