"""Intake over the inbox: check every submission, log the approved ones, report the rejected ones.

Order, for crash safety: rejection reports; evidence files (content-addressed
under ``log/evidence/``); one log append for every approved row of the run
(the commit point); then approved folders move to ``processed/``. A crash
before the append loses nothing (the submissions are still in the inbox); a
crash after it is finished on the next run, which finds the submission
already logged and only moves it. Nothing is ever deleted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from publisher import fsio
from publisher.config import Config
from publisher.entries import canonical_json
from publisher.errors import OperationRefused
from publisher.intake.associations import AssociationIndex
from publisher.intake.certcheck import TrustContext
from publisher.intake.submission import (
    REPORT_FILES,
    Decision,
    Finding,
    SubmissionError,
    SubmissionFiles,
    evaluate,
    folder_digests,
    previous_report,
    read_submission,
    report_text,
    symlink_finding,
)
from publisher.pki.registers import load_revocations
from publisher.progress import Progress
from publisher.publication import CRL_DIR, EVIDENCE_DIR, INBOX, PROCESSED, load_certificate, now_utc
from publisher.tlog.engine import LogReader, TileLog
from verifier.cpl_verify import R_FOLDER, R_PUBLISHER_CRL, R_SPREADSHEET, iso_utc, parse_iso


def trust_context(config: Config, now: dt.datetime) -> TrustContext:
    """Trust anchors and intermediates from the configuration, CRLs from the publication."""
    anchors = tuple(load_certificate(p) for p in config.trust_anchors)
    intermediates = tuple(
        load_certificate(i.certificate) for i in config.issuers if not i.is_root and i.certificate.exists()
    )
    crls = []
    crl_dir = config.root / CRL_DIR
    subjects = {}
    for issuer in config.issuers:
        path = crl_dir / f"{issuer.name}.crl"
        if path.exists():
            crls.append(x509.load_der_x509_crl(path.read_bytes()))
        if issuer.certificate.exists():
            subjects[issuer.name] = load_certificate(issuer.certificate).subject.public_bytes()
    # A registered revocation counts at once: intake never approves with a certificate the publisher has
    # revoked but not yet put on a CRL (audit, reading the later CRL, would refuse that approval forever).
    registered = {
        (subjects[r.issuer], int(r.serial, 16)): (parse_iso(r.revoked_at), r.reason)
        for r in load_revocations(config.root)
        if r.issuer in subjects
    }
    return TrustContext(
        anchors, intermediates, tuple(crls), config.profile, now, config.signing_skew, registered=registered
    )


def index_of(log: LogReader) -> AssociationIndex:
    """What the log holds: current association per device model, logged submissions."""
    index = AssociationIndex.from_entries(log.entries())
    index.size = log.size
    return index


def check_folder(folder: Path, ctx: TrustContext, index: AssociationIndex, now: dt.datetime) -> Decision:
    """Every check on one submission folder (changes nothing)."""
    try:
        files = read_submission(folder)
    except SubmissionError as exc:
        return Decision(folder.name, findings=list(exc.findings), inputs=folder_digests(folder))
    return _evaluate(files, ctx, index, now)


def _evaluate(files: SubmissionFiles, ctx: TrustContext, index: AssociationIndex, now: dt.datetime) -> Decision:
    try:
        return evaluate(files, ctx, index, now)
    except Exception as exc:  # one unreadable submission must never block the rest of the inbox
        finding = Finding(R_FOLDER.id, f"the submission could not be checked ({type(exc).__name__}: {exc})")
        return Decision(files.submission_id, findings=[finding], inputs=files.digests())


@dataclass
class IntakeReport:
    """What one intake run did."""

    accepted: dict[str, list[int]] = field(default_factory=dict)  # submission -> log indices
    rejected: dict[str, list[Finding]] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)  # logged by an earlier, interrupted run
    skipped: list[str] = field(default_factory=list)  # unchanged since their rejection
    signers: dict[str, list[dict[str, object]]] = field(default_factory=dict)  # accepted submission -> who signed

    def to_json(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "rejected": {k: [f.to_json() for f in v] for k, v in self.rejected.items()},
            "completed": self.completed,
            "skipped": self.skipped,
            "signers": self.signers,
        }


def _unchanged_since_rejection(folder: Path, inputs: dict[str, str]) -> bool:
    previous = previous_report(folder)
    if previous is None or previous.get("retry"):  # retry: refused for the publisher's own state (its CRLs)
        return False
    return bool(previous.get("inputs") == inputs)


def _move(root: Path, folders: list[Path]) -> None:
    """Move submission folders to ``processed/``; one directory fsync each side at the end."""
    if not folders:
        return
    (root / PROCESSED).mkdir(parents=True, exist_ok=True)
    for folder in folders:
        target = root / PROCESSED / folder.name
        n = 1
        while target.exists():  # the same id used again after an earlier acceptance
            n += 1
            target = root / PROCESSED / f"{folder.name}.{n}"
        os.replace(folder, target)
    fsio.fsync_dir(root / PROCESSED)
    fsio.fsync_dir(root / INBOX)


def _rejection_json(decision: Decision, now: dt.datetime) -> bytes:
    report = {
        "submission_id": decision.submission_id,
        "status": "rejected",
        "checked_at": iso_utc(now),
        "findings": [f.to_json() for f in decision.findings],
        "inputs": decision.inputs,
        # A stale or missing CRL is the publisher's problem: check such a submission again next run.
        "retry": any(f.rule == R_PUBLISHER_CRL.id for f in decision.findings),
    }
    return json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def _write_rejection(folder: Path, decision: Decision, now: dt.datetime, prefix: str = "") -> None:
    json_name, text_name = (prefix + name for name in REPORT_FILES)
    fsio.write_files(folder, {json_name: _rejection_json(decision, now), text_name: report_text(decision).encode()})


def _write_link_rejection(link: Path, now: dt.datetime) -> None:
    """The report of a symbolic link in the inbox, beside it (``<name>.rejection.json``), written once."""
    if (link.parent / f"{link.name}.{REPORT_FILES[0]}").exists():
        return  # unchanged: the report names the link, and rewriting it would only change its time
    decision = Decision(link.name, findings=[symlink_finding(link)], inputs={link.name: "symlink"})
    _write_rejection(link.parent, decision, now, f"{link.name}.")


def run_intake(
    config: Config,
    log: TileLog,
    now: dt.datetime | None = None,
    show_progress: bool = False,
    index: AssociationIndex | None = None,
) -> IntakeReport:
    """Process every submission in ``inbox/`` (sorted by folder name) under the log's writer lock.

    ``index`` is ``index_of(log)`` when the caller has it already; it is updated with what is logged.
    """
    now = (now or now_utc()).replace(microsecond=0)  # the approval time, logged to the second
    report = IntakeReport()
    inbox = config.root / INBOX
    if inbox.is_symlink():
        raise OperationRefused(f"{inbox} is a symbolic link; the inbox must be a folder of the publication")
    items = sorted(inbox.iterdir()) if inbox.is_dir() else []
    for link in (p for p in items if p.is_symlink()):  # refused by name; nothing read or written through it
        report.rejected[link.name] = [symlink_finding(link)]
        _write_link_rejection(link, now)
    folders = [p for p in items if p.is_dir() and not p.is_symlink()]
    if not folders:
        return report
    ctx = trust_context(config, now)
    index = index if index is not None else index_of(log)
    progress = Progress("checking submissions", enabled=show_progress)
    approved: list[tuple[Path, Decision]] = []
    for n, folder in enumerate(folders, 1):
        progress.update(n, len(folders))
        try:
            files: SubmissionFiles | None = read_submission(folder)  # read once, for every step below
        except SubmissionError as exc:
            files, refused = None, list(exc.findings)
        inputs = files.digests() if files is not None else folder_digests(folder)
        if files is not None and files.evidence_key() in index.submissions.get(folder.name, set()):
            _move(config.root, [folder])  # an earlier run logged exactly this and stopped before moving it
            report.completed.append(folder.name)
            continue
        if _unchanged_since_rejection(folder, inputs):
            report.skipped.append(folder.name)
            continue
        if files is None:
            decision = Decision(folder.name, findings=refused, inputs=inputs)
        else:
            decision = _evaluate(files, ctx, index, now)
        if not decision.accepted:
            if not decision.findings:
                decision.findings.append(Finding(R_SPREADSHEET.id, "the submission holds no rows to log"))
            try:
                _write_rejection(folder, decision, now)
            except OSError as exc:  # e.g. a folder where the report goes: the refusal stands, unreported there
                decision.findings.append(Finding(R_FOLDER.id, f"its rejection report cannot be written ({exc})"))
            report.rejected[folder.name] = decision.findings
            continue
        first = index.size
        for i, entry in enumerate(decision.entries):
            index.add(first + i, entry)  # later submissions of this run see these associations
        approved.append((folder, decision))
        report.accepted[folder.name] = list(range(first, first + len(decision.entries)))
        report.signers[folder.name] = decision.signers
    progress.done()
    if approved:
        evidence = {f"{EVIDENCE_DIR}/{h}": data for _, d in approved for h, data in d.evidence.items()}
        fresh = {p: data for p, data in evidence.items() if log.storage.read(p) is None}
        log.storage.write(fresh, immutable=True)  # content-addressed: written once, never changed
        log.append([canonical_json(e) for _, d in approved for e in d.entries])
        _move(config.root, [folder for folder, _ in approved])
    return report
