"""``cpl-publisher publish``: advance the publication by one step and commit it with git.

A publish is a resumable operation (``transaction``): under the
publication's lock, and journalled, it checks the work tree is clean (unless
it is finishing an interrupted publish) and that the committed log's entries
hash to HEAD's signed checkpoint; refreshes the CRLs that are due (first, so
that a revocation registered since the last run already counts when
submissions are checked); runs intake over the inbox; logs one ``crl/v1``
entry for every archived CRL the log does not hold yet, whichever command
signed it; ends the log with a ``lookup/v1`` entry committing to the lookup
shards (what is current, what is absent, the newest CRL of each issuer) unless
the last entry already is one; checks the new checkpoint is consistent with HEAD's; writes
``status.json``; and commits everything, the inbox included (moves to
``processed/`` and rejection reports), in one commit. Every step is
idempotent, so a publish killed at any instant is finished by the next one.
With nothing to do it changes nothing. Then, with ``[witnessing]``, it asks
the witnesses for the cosignatures the committed checkpoint lacks
(``witnessing``), which ``cpl-publisher witness`` also does on its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import git

from publisher.config import Config
from publisher.entries import crl_entry
from publisher.errors import Refused
from publisher.intake.associations import AssociationIndex
from publisher.intake.run import IntakeReport, run_intake
from publisher.pki import crl_publish
from publisher.publication import (
    CHECKPOINT,
    CONFIG_NAME,
    INBOX,
    LOG_DIR,
    LOG_STATE,
    STATE_PATHS,
    STATUS_FILE,
    now_utc,
    public_files,
    status,
    status_bytes,
)
from publisher.publish import gitstate, transaction, witnessing
from publisher.tlog import open_log_for_writing
from publisher.tlog.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from publisher.tlog.engine import CorruptLog, LogError, LogReader
from publisher.tlog.merkle import ProofError
from publisher.tlog.note import Verifier, b64encode
from publisher.tlog.signer import load_log_signer
from verifier.cpl_verify import iso_utc

# What a publish commits: the state, the inbox (moves and rejection reports), and the configuration
# that produced them (edits to it are not "dirty state").
COMMITTED = [*STATE_PATHS, INBOX, CONFIG_NAME, ".gitignore"]


class PublishRefused(Refused):
    """The publication is not in a state that may be published from."""


@dataclass
class PublishResult:
    """What one publish did."""

    committed: str | None = None
    resumed: str | None = None  # the interrupted operation this publish finished
    size: int = 0
    root: str = ""
    crls: dict[str, int] = field(default_factory=dict)
    intake: IntakeReport = field(default_factory=IntakeReport)
    message: str = ""
    witnessing: witnessing.WitnessReport | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "commit": self.committed,
            "resumed": self.resumed,
            "size": self.size,
            "root": self.root,
            "crls": self.crls,
            "intake": self.intake.to_json(),
            "witnessing": self.witnessing.to_json() if self.witnessing else None,
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
        return bytes(repo.head.commit.tree[CHECKPOINT].data_stream.read()).decode()
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
    if result.resumed:
        lines.append(f"finished an interrupted {result.resumed}")
    if result.crls:
        lines.append("CRLs: " + ", ".join(f"{k} #{v}" for k, v in sorted(result.crls.items())))
    for k, v in report.accepted.items():
        # who signed, in the commit itself: the approval's record in git history names its parties
        signed = "; ".join(
            f"{s['role']} {s['organisation']} (ID {s['organisation_id']}, "
            f"certificate {str(s['certificate_sha256'])[:16]})"
            for s in report.signers.get(k, [])
        )
        lines.append(f"accepted: {k} ({len(v)} rows; signed by {signed or 'nobody recorded'})")
    if report.completed:
        lines.append("completed: " + ", ".join(report.completed))
    if report.rejected:
        lines.append("rejected: " + ", ".join(sorted(report.rejected)))
    return lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n"


def crl_entries(refreshed: list[crl_publish.Refreshed]) -> list[bytes]:
    """The ``crl/v1`` entries of newly signed CRLs."""
    return [crl_entry(r.issuer, r.info) for r in refreshed]


def unlogged_crls(config: Config, index: AssociationIndex) -> dict[str, list[tuple[int, bytes]]]:
    """``crl/v1`` entries for every archived CRL the log does not hold, by issuer: (number, entry)."""
    found: dict[str, list[tuple[int, bytes]]] = {}
    for issuer in config.issuers:
        for number, path in crl_publish.archived(config, issuer.name):
            if (issuer.name, number) not in index.crls:
                info = crl_publish.archived_info(config, issuer, number, path)
                found.setdefault(issuer.name, []).append((number, crl_entry(issuer.name, info)))
    return found


def check_head(
    config: Config, verifier: Verifier, head_note: str | None, index: AssociationIndex | None = None
) -> SignedCheckpoint | None:
    """HEAD's checkpoint, after checking every committed entry, tile and partial hashes to its signed root.

    The committed files are those in the work tree (the state is clean, or an
    interrupted publish only added files beside them), so this reads them
    there; a rewrite anywhere, not only at the right edge, is refused. The
    authenticated entries go into ``index`` as they are checked, so a publish
    reads each entry once.
    """
    if head_note is None:
        return None
    try:
        head = open_checkpoint(head_note, config.origin, [verifier])
    except CheckpointError as exc:
        raise PublishRefused(f"log/checkpoint committed in HEAD: {exc}") from exc
    try:
        sink = index.add_raw if index is not None else None
        LogReader(config.root / LOG_DIR, config.origin, [verifier], head).verify_all(entries=sink)
    except CorruptLog as exc:
        raise PublishRefused(
            f"the log committed in HEAD does not hash to its signed checkpoint (size {head.checkpoint.size}): {exc}"
        ) from exc
    return head


def _dirty(repo: git.Repo) -> bool:
    return bool(repo.git.status("--porcelain", "--untracked-files=all", "--", *COMMITTED))


def publish(
    config: Config, now: dt.datetime | None = None, show_progress: bool = False, witness: bool = True
) -> PublishResult:
    """Run one publish (see the module docstring), finishing an interrupted one first, then (with
    ``[witnessing]`` and ``witness``) ask the witnesses; returns what it did."""
    now = now or now_utc()
    repo = _repo(config)
    with transaction.session(config.root, "publish") as session:
        result = _publish(session, repo, config, now, show_progress)
        if witness and config.witnessing is not None:
            result.witnessing = witnessing.witness(session, config, config.witnessing)
        return result


def witness(config: Config) -> witnessing.WitnessReport | None:
    """``cpl-publisher witness``: ask the witnesses for the cosignatures HEAD's checkpoint lacks, and commit
    them (the work tree's state must be HEAD's). None without ``[witnessing]``: nobody to ask."""
    if config.witnessing is None:
        return None
    repo = _repo(config)
    with transaction.session(config.root, "witness") as session:
        if not repo.head.is_valid():
            raise PublishRefused("nothing is committed yet: publish first")
        check_clean(repo)
        return witnessing.witness(session, config, config.witnessing)


def _publish(
    session: transaction.Session, repo: git.Repo, config: Config, now: dt.datetime, show_progress: bool
) -> PublishResult:
    result = PublishResult(resumed=session.interrupted)
    if repo.head.is_valid() and session.interrupted is None:
        check_clean(repo)
    signer = load_log_signer(config.log_key, config.root, config.origin)
    head_note = committed_checkpoint(repo)
    index = AssociationIndex()
    head = check_head(config, signer.verifier, head_note, index)
    planned = crl_publish.plan(config, now)  # every due key usable before anything is journalled
    session.begin()
    with open_log_for_writing(config, signer) as log:
        if head is not None and session.interrupted is None and log.signed.raw != head.raw:
            raise PublishRefused("log/checkpoint differs from the one committed in HEAD")
        refreshed = crl_publish.sign_planned(config, planned)
        index.add_raw(index.size, log.entries(index.size))  # what an interrupted publish logged after HEAD
        index.size = log.size
        result.intake = run_intake(config, log, now, show_progress, index)
        crls = unlogged_crls(config, index)
        log.append([entry for issuer in sorted(crls) for _, entry in crls[issuer]])
        index.add_raw(index.size, log.entries(index.size))
        if not index.committed:  # end with the commitment to what is logged (the verifier's proven lookups)
            log.append([index.lookup.commitment()])
            index.add_raw(index.size, log.entries(index.size))
        result.crls = {issuer: numbers[-1][0] for issuer, numbers in crls.items()}
        for r in refreshed:
            result.crls.setdefault(r.issuer, r.info.number)
        result.size, result.root = log.size, b64encode(log.root_hash)
        if head is not None:
            try:
                log.check_extends(head.checkpoint)
            except (ProofError, LogError) as exc:
                raise PublishRefused(f"the new checkpoint is not consistent with HEAD's: {exc}") from exc
        if head is not None and log.signed.raw == head.raw and not _dirty(repo):
            session.clear()
            return result  # nothing to do: nothing changes
        stamp = iso_utc(now)
        state = status(config, log, stamp)
        state["last_publish"] = {
            "at": stamp,
            "accepted": sorted(result.intake.accepted),
            "rejected": sorted(result.intake.rejected),
            "crls": result.crls,
        }
        public_files(config.root).write({STATUS_FILE: status_bytes(state)})
    result.message = _message(result)
    result.committed = session.commit(COMMITTED, result.message, first=True)
    return result


IGNORED = f"# private to the publisher, never published\n{LOG_STATE}/\n{transaction.PRIVATE_DIR}/\n*.key\n"


def init_repository(publication: Path) -> git.Repo:
    """Make a publication folder a git repository with a .gitignore for the private parts."""
    repo = git.Repo.init(publication)
    ignore = publication / ".gitignore"
    if not ignore.exists():
        ignore.write_text(IGNORED)
    return repo
