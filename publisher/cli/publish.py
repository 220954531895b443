"""Command line: ``cpl-publisher publish`` and ``history verify``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import git

from publisher.cli.common import EXIT_FAILED, EXIT_OK, PUBLICATION, UsageError, emit, pinned_verifier, vkey_option
from publisher.config import load as load_config
from publisher.publication import VKEY
from publisher.publish.history import verify_history
from publisher.publish.job import publish, witness
from publisher.publish.witnessing import WitnessReport
from publisher.tlog.note import Verifier


def _witness_exit(report: WitnessReport | None) -> int:
    """Exit 1 when the checkpoint is below the quorum and the configuration refuses to publish it."""
    below = report is not None and not report.verdict.satisfied and report.below_quorum == "refuse"
    return EXIT_FAILED if below else EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    config = load_config(Path(args.dir))
    result = publish(config, show_progress=not args.json, witness=not args.no_witness)
    if result.committed:
        text = f"committed {result.committed[:12]}: {result.message.strip()}"
    else:
        text = f"nothing to publish (log size {result.size})"
    if result.witnessing is not None:
        text += "\n" + "\n".join(result.witnessing.lines())
    emit(args, result.to_json(), text)
    return _witness_exit(result.witnessing)


def cmd_witness(args: argparse.Namespace) -> int:
    report = witness(load_config(Path(args.dir)))
    if report is None:
        emit(args, {"witnessing": None}, "no [witnessing] table in publisher.toml: no witness to ask")
        return EXIT_OK
    text = "\n".join(report.lines())
    if report.committed:
        text += f"\ncommitted {report.committed[:12]}"
    emit(args, report.to_json(), text)
    return _witness_exit(report)


def cmd_history_verify(args: argparse.Namespace) -> int:
    config = load_config(Path(args.dir))
    try:
        repo = git.Repo(config.root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise UsageError(f"{config.root} is not a git repository") from exc
    if args.vkey:
        verifier = pinned_verifier(args.vkey)
        how = "pinned with --vkey"
    else:
        verifier = Verifier.from_vkey(repo.head.commit.tree[VKEY].data_stream.read().decode())
        how = "from log/vkey in HEAD (pass --vkey to pin it)"
    policy = config.witnessing.policy if config.witnessing else None
    report = verify_history(repo, config.origin, [verifier], policy, int(time.time()))
    text = (
        f"OK: {report.walked} commits append-only; {report.commits} moved the checkpoint, each consistent with "
        f"the one before, {report.files_checked} added tiles and bundles hash to their signed roots "
        f"(log size {report.final_size}; key {how})"
    )
    summary: dict[str, object] = {
        "verified": True,
        "commits": report.commits,
        "walked": report.walked,
        "files_checked": report.files_checked,
        "size": report.final_size,
        "trees": report.trees,
    }
    final = report.final_witnessing
    if final is not None:
        who = ", ".join(f"{c.name} ({c.to_json()['time']})" for c in final.cosigned) or "no witness"
        state = "met" if final.satisfied else f"NOT met (missing: {', '.join(final.missing)})"
        text += (
            f"\nwitnesses: every cosignature by a [witnessing] witness verifies; {report.witnessed} of "
            f"{report.trees} trees reached the quorum {final.quorum}; HEAD's checkpoint is cosigned by {who}: "
            f"quorum {state}"
        )
        summary["witnessed_trees"] = report.witnessed
        summary["witnessing"] = final.to_json()
    emit(args, summary, text)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add the ``publish`` and ``history`` commands."""
    pub = PUBLICATION
    p = sub.add_parser("publish", parents=[common, pub], help="refresh CRLs, take in submissions, log, commit")
    p.add_argument(
        "--no-witness",
        action="store_true",
        help="commit without asking the witnesses (then push, and run 'witness': where the work tree does not "
        "outlive the job, a witness must only see a checkpoint that is pushed)",
    )
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser(
        "witness",
        parents=[common, pub],
        help="ask the [witnessing] witnesses to cosign the committed checkpoint; commit their cosignatures "
        "(exit 1: below the quorum with below_quorum = refuse)",
    )
    p.set_defaults(func=cmd_witness)
    hist = sub.add_parser("history", parents=[common], help="the publication's git history").add_subparsers(
        dest="history_command", required=True
    )
    p = hist.add_parser("verify", parents=[common, pub], help="prove every committed checkpoint append-only")
    vkey_option(p, default="log/vkey in HEAD, not pinned")
    p.set_defaults(func=cmd_history_verify)
