"""``cpl-publisher publish``: advance the publication by one step and commit it with git.

Under the log's writer lock: check the work tree and the stored log against
the last committed checkpoint; refresh the CRLs that are due (first, so that
a revocation registered since the last run already counts when submissions
are checked); run intake over the inbox; log one ``crl/v1`` entry per newly
signed CRL; check the new checkpoint is consistent with the committed one;
write ``status.json``; commit. One publish is one commit. With nothing to do
it changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import git

from . import gitstate
from .checkpoint import CheckpointError, open_checkpoint
from .config import Config
from .intake.associations import CRL_TYPE, canonical_json
from .intake.run import IntakeReport, run_intake
from .log_key import load_log_signer
from .merkle import ProofError, verify_consistency
from .note import b64encode
from .pki import crl_publish
from .pki.authority import now_utc
from .site.export import status
from .tlog import LogError, TileLog

STATE_PATHS = ("log", "crl", "registers", "pki", "certs", "processed", "status.json")
STATUS_FILE = "status.json"


class PublishRefused(RuntimeError):
    """The publication is not in a state that may be published from."""


@dataclass
class PublishResult:
    """What one publish did."""

    committed: str | None = None
    size: int = 0
    root: str = ""
    crls: dict[str, int] = field(default_factory=dict)
    intake: IntakeReport = field(default_factory=IntakeReport)
    message: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "commit": self.committed,
            "size": self.size,
            "root": self.root,
            "crls": self.crls,
            "intake": self.intake.to_json(),
        }


def _repo(config: Config) -> git.Repo:
    repo = gitstate.repository(config.root)
    if repo is None:
        raise PublishRefused(f"{config.root} is not the root of a git repository; run 'git init' there first")
    return repo


def committed_checkpoint(repo: git.Repo) -> str | None:
    """``log/checkpoint`` as committed in HEAD (None before the first publish)."""
    if not repo.head.is_valid():
        return None
    try:
        return bytes(repo.head.commit.tree["log/checkpoint"].data_stream.read()).decode()
    except KeyError:
        return None


def check_clean(repo: git.Repo) -> None:
    """Refuse uncommitted changes in the state folders (the inbox may change freely)."""
    dirty = repo.git.status("--porcelain", "--untracked-files=all", "--", *STATE_PATHS)
    if dirty:
        lines = dirty.splitlines()
        more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
        raise PublishRefused(
            "the state folders have uncommitted changes; commit or restore them first:\n  "
            + "\n  ".join(lines[:5])
            + more
        )


def _message(result: PublishResult) -> str:
    report = result.intake
    lines = [f"publish: log size {result.size}, root {result.root}"]
    if result.crls:
        lines.append("CRLs: " + ", ".join(f"{k} #{v}" for k, v in sorted(result.crls.items())))
    if report.accepted:
        lines.append("accepted: " + ", ".join(f"{k} ({len(v)} rows)" for k, v in report.accepted.items()))
    if report.completed:
        lines.append("completed: " + ", ".join(report.completed))
    if report.rejected:
        lines.append("rejected: " + ", ".join(sorted(report.rejected)))
    return lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n"


def crl_entries(refreshed: list[crl_publish.Refreshed]) -> list[bytes]:
    """One ``crl/v1`` log entry per newly signed CRL, so anyone can check the CRL they were served."""
    return [
        canonical_json(
            {
                "type": CRL_TYPE,
                "issuer": r.issuer,
                "number": r.info.number,
                "this_update": r.info.to_json()["this_update"],
                "next_update": r.info.to_json()["next_update"],
                "sha256": r.info.sha256,
            }
        )
        for r in refreshed
    ]


def publish(config: Config, now: dt.datetime | None = None, show_progress: bool = False) -> PublishResult:
    """Run one publish (see the module docstring); returns what it did."""
    now = now or now_utc()
    repo = _repo(config)
    if repo.head.is_valid():  # the first publish commits the new publication as it is
        check_clean(repo)
    head_note = committed_checkpoint(repo)
    signer = load_log_signer(config.log_key, config.root)
    result = PublishResult()
    with TileLog.open(config.root / "log", signer) as log:
        if head_note is not None and log.signed.raw != head_note:
            raise PublishRefused("log/checkpoint differs from the one committed in HEAD")
        start_size, start_root = log.size, log.root_hash
        refreshed = crl_publish.refresh(config, now)
        result.intake = run_intake(config, log, now, show_progress)
        log.append(crl_entries(refreshed))
        result.crls = {r.issuer: r.info.number for r in refreshed}
        result.size, result.root = log.size, b64encode(log.root_hash)
        if head_note is not None:
            try:
                old = open_checkpoint(head_note, config.origin, log.verifiers).checkpoint
                verify_consistency(old.size, log.size, old.root, log.root_hash, log.consistency_proof(old.size))
            except (CheckpointError, ProofError, LogError) as exc:
                raise PublishRefused(f"the new checkpoint is not consistent with HEAD's: {exc}") from exc
        changed = log.size != start_size or log.root_hash != start_root or bool(refreshed)
        moved = bool(result.intake.completed)
        if not changed and not moved and head_note is not None:
            return result  # nothing to do: nothing changes
        state = status(config, log, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        state["last_publish"] = {
            "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "accepted": sorted(result.intake.accepted),
            "rejected": sorted(result.intake.rejected),
            "crls": result.crls,
        }
        (config.root / STATUS_FILE).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    result.message = _message(result)
    # The configuration goes with the state it produced (edits to it are not "dirty state").
    present = [*STATE_PATHS, "publisher.toml", ".gitignore"]
    result.committed = gitstate.commit(repo, present, result.message)
    return result


def init_repository(publication: Path) -> git.Repo:
    """Make a publication folder a git repository with a .gitignore for the private parts."""
    repo = git.Repo.init(publication)
    ignore = publication / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# private to the publisher, never published\nlog/.state/\n*.key\n")
    return repo
