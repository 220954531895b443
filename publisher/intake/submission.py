"""Checking one CPL submission against the submission rules; turning it into log entries.

The rules (SEC Appendix Z 4.1 to 4.3, the MP168 endorsement, input hygiene)
are the verifier's table, the one ``audit`` judges the log by:
``evaluate`` applies them (``folder_digests`` is the only I/O here).
Every failure is a ``Finding`` naming a rule by its stable ID, so a rejection
report lists every broken rule, row by row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from publisher.entries import association_entry
from publisher.intake.associations import AssociationIndex
from publisher.intake.certcheck import TrustContext, check_certificate
from publisher.pki.profile import identity
from verifier.cpl_verify import (
    MAX_SHEET_BYTES,
    R_CERTIFICATE,
    R_PUBLISHER_CRL,
    REPORT_FILES,
    Association,
    CmsSigner,
    Identity,
    SafeFolder,
    SubmissionError,
    SubmissionFiles,
    collapse_findings,
    judge_rows,
    read_submission,
    signer_lines,
    signer_summary,
    submission_inputs,
    submission_signers,
    symlink_finding,
)
from verifier.cpl_verify import RuleFinding as Finding

__all__ = [
    "REPORT_FILES",
    "Decision",
    "Finding",
    "SubmissionError",
    "SubmissionFiles",
    "entry_lines",
    "evaluate",
    "folder_digests",
    "previous_report",
    "read_submission",
    "report_text",
    "signer_lines",
    "symlink_finding",
]


REPORT_BYTES = 1 << 20  # a report intake wrote is far smaller; a bigger file is not one of its reports


def folder_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file a submission folder holds (its reports aside), by name, read as
    ``read_submission`` reads them (never through a link; a file over its limit counts by its first bytes)."""
    out = {}
    try:
        with SafeFolder(folder) as d:
            for name in d.names():
                if name in REPORT_FILES:
                    continue
                mode = d.lstat(name).st_mode
                if not stat.S_ISREG(mode):  # recorded too, so removing one is a change
                    out[name] = "symlink" if stat.S_ISLNK(mode) else "not a regular file"
                    continue
                out[name] = hashlib.sha256(d.read(name, MAX_SHEET_BYTES)).hexdigest()
    except (SubmissionError, OSError):
        return {folder.name: "unreadable"}
    return out


def previous_report(folder: Path) -> dict[str, object] | None:
    """The rejection.json intake wrote into ``folder`` last time, if it is one (a regular file, not a link)."""
    try:
        with SafeFolder(folder) as d:
            if not stat.S_ISREG(d.lstat(REPORT_FILES[0]).st_mode):
                return None
            report = json.loads(d.read(REPORT_FILES[0], REPORT_BYTES))
    except (SubmissionError, OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


@dataclass
class Decision:
    """The outcome for one submission."""

    submission_id: str
    findings: list[Finding] = field(default_factory=list)
    entries: list[dict[str, object]] = field(default_factory=list)
    evidence: dict[str, bytes] = field(default_factory=dict)  # sha256 hex -> bytes
    inputs: dict[str, str] = field(default_factory=dict)  # file name -> sha256 hex
    signers: list[dict[str, object]] = field(default_factory=list)  # every valid signer's summary

    @property
    def accepted(self) -> bool:
        return not self.findings and bool(self.entries)


def _certificate_findings(ctx: TrustContext, signer: CmsSigner, extra: list[x509.Certificate]) -> list[Finding]:
    """Rule Z4.3a-certificate against the publication's anchors and its own CRLs (P-current-crl if stale)."""
    problems = check_certificate(signer.certificate, extra, ctx)[1]
    rule = {"revocation": R_PUBLISHER_CRL.id}
    return [Finding(rule.get(p.check, R_CERTIFICATE.id), f"{signer.where}: {p.message}") for p in problems]


def _identify(ctx: TrustContext, cert: x509.Certificate) -> Identity:
    who = identity(cert, ctx.profile)
    return Identity(who.organisation, who.organisation_id, who.role)


def evaluate(files: SubmissionFiles, ctx: TrustContext, index: AssociationIndex, approved_at: dt.datetime) -> Decision:
    """Run every rule; when all pass, build the log entries (one per row)."""
    at = approved_at.replace(microsecond=0)  # as logged: audit judges the entry at exactly this time
    decision = Decision(files.submission_id, inputs=files.digests())
    request, rows, findings = submission_inputs(files)
    signers, signer_findings = submission_signers(
        files,
        lambda cert: _identify(ctx, cert),
        lambda signer, extra: _certificate_findings(ctx, signer, extra),
        at,
        ctx.signing_skew,
    )
    findings += signer_findings
    decision.signers = [signer_summary(p) for p in signers]

    def current_of(model: tuple[str, str, str, str]) -> tuple[int, str] | None:
        held = index.current.get(model)
        return (held.index, held.image_hash) if held is not None else None

    associations: list[Association] = []
    if rows:
        judged, associations = judge_rows(rows, signers, request, current_of, at, ctx.signing_skew)
        findings.extend(judged)
    decision.findings = collapse_findings(findings)
    if decision.findings or request is None or not associations:
        return decision

    evidence = {files.sheet_name: files.sheet, "request.json": files.request, **files.signatures}
    decision.evidence = {hashlib.sha256(d).hexdigest(): d for d in evidence.values()}
    digests = files.digests()
    for a in associations:
        decision.entries.append(association_entry(a, at, request, files, digests))
    return decision


def entry_lines(decision: Decision) -> list[str]:
    """What would be logged: each device model and hash, and what it replaces."""
    lines = []
    for e in decision.entries:
        m = e["device_model"]
        assert isinstance(m, dict)  # noqa: S101 - built by evaluate
        model = "/".join(str(m[k]) for k in ("manufacturer_id", "model_id", "hardware_version", "firmware_version"))
        line = f"  {model} ({e['device_type']}, {e['smets_version']}): {e['image_sha256']}"
        rep = e.get("replaces")
        if isinstance(rep, dict):
            line += f", REPLACING log index {rep['index']} (investigation {rep['investigation_ref']})"
        lines.append(line)
    return lines


def report_text(decision: Decision) -> str:
    """The human-readable rejection report."""
    lines = [f"Submission {decision.submission_id} was REJECTED. Failed checks:"]
    lines += [f"  - {f}" for f in decision.findings]
    lines += signer_lines(decision.signers)
    lines += ["Input files (SHA-256):"] + [f"  {name}: {digest}" for name, digest in decision.inputs.items()]
    return "\n".join(lines) + "\n"
