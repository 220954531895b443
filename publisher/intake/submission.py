"""Checking one CPL submission against SEC Appendix Z 4.1 to 4.3; turning it into log entries.

``read_submission`` is the only I/O here; ``evaluate`` is pure. Every
failure is a ``Finding`` whose ``check`` names the rule, so a rejection
report lists every failed check, row by row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from verifier.cpl_verify import COMMS_HUB_TYPES

from ..pki.profile import identity
from .associations import ASSOCIATION_TYPE, AssociationIndex
from .certcheck import TrustContext, check_certificate
from .cms import CMSError, Signer, verify_detached
from .spreadsheet import MAX_SHEET_BYTES, Row, SheetError, clean, read_rows

MAX_REQUEST_BYTES = 16 * 1024
MAX_FILES = 12
REPORT_FILES = ("rejection.json", "rejection.txt")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Finding:
    """One failed check; ``row`` is the spreadsheet row it concerns, if any."""

    check: str
    message: str
    row: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"check": self.check, "message": self.message, "row": self.row}

    def __str__(self) -> str:
        where = f"row {self.row}: " if self.row is not None else ""
        return f"{where}{self.check}: {self.message}"


class SubmissionError(ValueError):
    """The submission folder itself is unusable (files missing, too big, unexpected)."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__("; ".join(str(f) for f in findings))


@dataclass(frozen=True)
class SubmissionFiles:
    """The bytes of a submission, read once."""

    submission_id: str
    sheet_name: str
    sheet: bytes
    signatures: dict[str, bytes]
    request: bytes

    def digests(self) -> dict[str, str]:
        """SHA-256 of every input file, by name."""
        files = {self.sheet_name: self.sheet, "request.json": self.request, **self.signatures}
        return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


def folder_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file a submission folder holds (its reports aside), by name."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.name in REPORT_FILES:
            continue
        if p.is_symlink() or not p.is_file():  # recorded too, so removing one is a change
            out[p.name] = "symlink" if p.is_symlink() else "not a regular file"
            continue
        digest = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[p.name] = digest.hexdigest()
    return out


SYMLINK_CHECK = "symbolic link"
FUTURE_SIGNING_CHECK = "signing time in the future"
SELF_ENDORSEMENT_CHECK = "independent endorsement"
_LINK_RULE = "a submission holds regular files only, and nothing is read or written through a link"


def symlink_finding(path: Path) -> Finding:
    """The refusal of a symbolic link in the inbox (a submission folder, or a file in one)."""
    return Finding(SYMLINK_CHECK, f"{path.name} is a symbolic link; {_LINK_RULE}")


def _read_no_follow(path: Path) -> bytes:
    # O_NOFOLLOW: a file swapped for a link after the check above is refused, not followed.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_submission(folder: Path) -> SubmissionFiles:
    """Read a submission folder, enforcing size limits and the expected set of files."""
    findings = []
    if not _ID_RE.fullmatch(folder.name):
        findings.append(Finding("submission id", f"folder name {folder.name!r} is not a valid submission id"))
    entries = sorted(p for p in folder.iterdir() if p.name not in REPORT_FILES)
    if len(entries) > MAX_FILES:
        raise SubmissionError([Finding("files", f"{len(entries)} files; at most {MAX_FILES} are expected")])
    sheets, sigs, request = [], {}, None
    for p in entries:
        if p.is_symlink():
            findings.append(symlink_finding(p))
            continue
        if not p.is_file():
            findings.append(Finding("files", f"{p.name} is not a regular file"))
            continue
        size = p.stat().st_size
        lower = p.name.lower()
        if lower.endswith((".xlsx", ".csv")):
            limit = MAX_SHEET_BYTES
        elif lower.endswith(".p7s"):
            limit = 256 * 1024
        elif p.name == "request.json":
            limit = MAX_REQUEST_BYTES
        else:
            findings.append(Finding("files", f"unexpected file {p.name!r}"))
            continue
        if size > limit:
            findings.append(Finding("file size", f"{p.name} is {size} bytes; the limit is {limit}"))
            continue
        data = _read_no_follow(p)
        if lower.endswith((".xlsx", ".csv")):
            sheets.append((p.name, data))
        elif lower.endswith(".p7s"):
            sigs[p.name] = data
        else:
            request = data
    if len(sheets) != 1:
        findings.append(Finding("files", f"expected one spreadsheet (.xlsx or .csv), found {len(sheets)}"))
    if not sigs:
        findings.append(Finding("files", "no signature (.p7s) file"))
    if request is None:
        findings.append(Finding("request", "request.json is missing"))
    if findings:
        raise SubmissionError(findings)
    assert request is not None  # noqa: S101 - checked above; narrows the type
    return SubmissionFiles(folder.name, sheets[0][0], sheets[0][1], sigs, request)


@dataclass(frozen=True)
class Request:
    submitter_ref: str
    panel_ref: str
    replacements: dict[int, str]  # log index replaced -> investigation reference


def _text_field(obj: dict[str, object], key: str, findings: list[Finding], required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not clean(value) or len(value) > 128:
        findings.append(Finding("request", f"'{key}' must be a non-empty string of at most 128 characters"))
        return ""
    return clean(value)


def parse_request(data: bytes) -> tuple[Request | None, list[Finding]]:
    """Parse ``request.json``: submitter and Panel references, and replacements under 4.3(b)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, [Finding("request", "request.json is not valid JSON")]
    if not isinstance(obj, dict):
        return None, [Finding("request", "request.json must be a JSON object")]
    findings: list[Finding] = []
    unknown = set(obj) - {"submitter_ref", "panel_ref", "replacements"}
    if unknown:
        findings.append(Finding("request", f"unknown fields: {', '.join(sorted(unknown))}"))
    submitter, panel = _text_field(obj, "submitter_ref", findings), _text_field(obj, "panel_ref", findings)
    replacements: dict[int, str] = {}
    raw = obj.get("replacements", [])
    if not isinstance(raw, list):
        findings.append(Finding("request", "'replacements' must be a list"))
        raw = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"replaces_index", "investigation_ref"}:
            findings.append(Finding("request", "each replacement needs exactly replaces_index and investigation_ref"))
            continue
        index = item["replaces_index"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            findings.append(Finding("request", "replaces_index must be a log index"))
            continue
        ref = _text_field(item, "investigation_ref", findings)
        if index in replacements:
            findings.append(Finding("request", f"log index {index} is replaced twice"))
        replacements[index] = ref
    if findings:
        return None, findings
    return Request(submitter, panel, replacements), []


@dataclass(frozen=True)
class ValidSigner:
    """A signer whose signature and certificate both passed."""

    signer: Signer
    organisation: str
    organisation_id: str
    role: str | None
    fingerprint: str

    def party(self) -> dict[str, object]:
        return {
            "organisation": self.organisation,
            "organisation_id": self.organisation_id,
            "role": self.role,
            "certificate_sha256": self.fingerprint,
        }

    def summary(self) -> dict[str, object]:
        """Who signed, in which role, when: what a decision-maker reads before approving."""
        when = self.signer.signing_time
        return {**self.party(), "signing_time": when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None}


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


def _signers(files: SubmissionFiles, ctx: TrustContext, findings: list[Finding]) -> list[ValidSigner]:
    valid: dict[str, ValidSigner] = {}
    for name, data in sorted(files.signatures.items()):
        try:
            signers, extra = verify_detached(data, files.sheet, name)
        except CMSError as exc:
            findings.append(Finding(exc.check, str(exc)))
            continue
        for s in signers:
            if s.signing_time is not None and s.signing_time > ctx.now + ctx.signing_skew:
                findings.append(
                    Finding(
                        FUTURE_SIGNING_CHECK,
                        f"{s.source}: signed at {s.signing_time:%Y-%m-%dT%H:%M:%SZ}, later than the intake time "
                        f"{ctx.now:%Y-%m-%dT%H:%M:%SZ} (at most {ctx.signing_skew.total_seconds():.0f} s of clock "
                        "skew is allowed): correct the signer's clock and sign again",
                    )
                )
                continue
            _, problems = check_certificate(s.certificate, extra, ctx, s.signing_time)
            if problems:
                findings.extend(Finding(p.check, f"{s.source}: {p.message}") for p in problems)
                continue
            who = identity(s.certificate, ctx.profile)
            fp = s.certificate.fingerprint(hashes.SHA256()).hex()
            valid.setdefault(fp, ValidSigner(s, who.organisation, who.organisation_id, who.role, fp))
    return list(valid.values())


def _needs_dcc(row: Row) -> bool:
    return row.device_type in COMMS_HUB_TYPES or row.smets_version == "SMETS1"


def _endorsement(
    rows: list[Row], signers: list[ValidSigner], findings: list[Finding]
) -> tuple[ValidSigner | None, ValidSigner | None, ValidSigner | None]:
    """Apply 4.1/4.3(a), the endorsement rule and 4.3(c); return manufacturer, supplier, DCC signers."""
    manufacturer_ids = {r.manufacturer_id for r in rows}
    manufacturers = [s for s in signers if s.role == "Manufacturer"]
    creator = next((s for s in manufacturers if s.organisation_id in manufacturer_ids), None)
    if len(manufacturer_ids) > 1:
        findings.append(
            Finding("4.1 manufacturer", "the rows name several manufacturers; submit one manufacturer's images")
        )
    if creator is None:
        if manufacturers:
            other = manufacturers[0]
            findings.append(
                Finding(
                    "4.3(a) manufacturer signer",
                    f"the manufacturer signature is by {other.organisation} (ID {other.organisation_id}), "
                    f"not by the manufacturer the rows name ({', '.join(sorted(manufacturer_ids))})",
                )
            )
        else:
            findings.append(Finding("4.1 manufacturer signature", "no valid signature by a Manufacturer certificate"))
    for s in manufacturers:
        if s is not creator and s.organisation_id not in manufacturer_ids and creator is not None:
            findings.append(
                Finding("endorsement by a manufacturer", f"{s.organisation} is a manufacturer and cannot endorse")
            )
    for r in rows:
        if creator is not None and r.manufacturer_id != creator.organisation_id:
            findings.append(Finding("4.3(a) manufacturer signer", "manufacturer ID does not match the signer's", r.row))
    # An endorsement is another party's: a certificate of the manufacturer's own organisation with the
    # Supplier (or DCC) role does not count (SEC Appendix Z: endorsed by a Supplier, i.e. someone else).
    own = creator.organisation_id if creator is not None else None
    for s in signers:
        if s.role in ("Supplier", "DCC") and s.organisation_id == own:
            findings.append(
                Finding(
                    SELF_ENDORSEMENT_CHECK,
                    f"{s.organisation} (ID {s.organisation_id}) signs as {s.role} for its own images; the "
                    "endorsement must come from another organisation",
                )
            )
    supplier = next((s for s in signers if s.role == "Supplier" and s.organisation_id != own), None)
    dcc = next((s for s in signers if s.role == "DCC" and s.organisation_id != own), None)
    endorsing_manufacturers = [s for s in manufacturers if s is not creator]
    for r in rows:
        if _needs_dcc(r) and dcc is None:
            if r.smets_version == "SMETS1":
                check = "4.3(c) SMETS1 endorsed by a supplier" if supplier else "4.3(c) missing DCC endorsement"
                findings.append(Finding(check, "a SMETS1 device model must be endorsed by the DCC", r.row))
            else:
                check = "comms hub endorsed by a supplier" if supplier else "missing DCC endorsement"
                findings.append(Finding(check, "a communications hub must be endorsed by the DCC", r.row))
        elif not _needs_dcc(r) and supplier is None:
            check = "endorsement by a manufacturer" if endorsing_manufacturers else "missing supplier endorsement"
            findings.append(Finding(check, "a device model must be endorsed by a Supplier", r.row))
    return creator, supplier, dcc


def evaluate(files: SubmissionFiles, ctx: TrustContext, index: AssociationIndex, approved_at: dt.datetime) -> Decision:
    """Run every check; when all pass, build the log entries (one per row)."""
    decision = Decision(files.submission_id, inputs=files.digests())
    findings = decision.findings
    request, request_findings = parse_request(files.request)
    findings.extend(request_findings)
    try:
        rows, problems = read_rows(files.sheet, files.sheet_name)
    except SheetError as exc:
        findings.append(Finding(exc.check, str(exc)))
        rows, problems = [], []
    findings.extend(Finding(p.check, p.message, p.row) for p in problems)
    signers = _signers(files, ctx, findings)
    decision.signers = [s.summary() for s in signers]
    if not rows:
        return decision
    creator, supplier, dcc = _endorsement(rows, signers, findings)

    used: set[int] = set()
    replaces: dict[int, tuple[int, str]] = {}
    for r in rows:
        current = index.current.get(r.device_model)
        if current is None:
            continue
        if current.image_hash == r.image_hash:
            where = f"log index {current.index}"
            findings.append(
                Finding("duplicate", f"this hash is already associated with the device model ({where})", r.row)
            )
            continue
        if request is None:
            continue
        if current.index not in request.replacements:
            named = ", ".join(str(i) for i in sorted(request.replacements)) or "none"
            findings.append(
                Finding(
                    "4.3(b) existing association",
                    f"the device model already has hash {current.image_hash[:16]}... at log index {current.index}; "
                    f"a replacement must name that index and its investigation (request names: {named})",
                    r.row,
                )
            )
            continue
        used.add(current.index)
        replaces[r.row] = (current.index, request.replacements[current.index])
    if request is not None:
        for i in sorted(set(request.replacements) - used):
            findings.append(
                Finding("4.3(b) replacement index", f"log index {i} is not the current association of any row's model")
            )
    if findings or request is None or creator is None:
        return decision

    evidence = {files.sheet_name: files.sheet, "request.json": files.request, **files.signatures}
    decision.evidence = {hashlib.sha256(d).hexdigest(): d for d in evidence.values()}
    digests = files.digests()
    for r in rows:
        endorser = dcc if _needs_dcc(r) else supplier
        assert endorser is not None  # noqa: S101 - the endorsement rule passed
        entry: dict[str, object] = {
            "type": ASSOCIATION_TYPE,
            "device_model": {
                "manufacturer_id": r.manufacturer_id,
                "model_id": r.model_id,
                "hardware_version": r.hardware_version,
                "firmware_version": r.firmware_version,
            },
            "manufacturer_name": r.manufacturer_name,
            "device_type": r.device_type,
            "smets_version": r.smets_version,
            "image_sha256": r.image_hash,
            "manufacturer": creator.party(),
            "endorser": endorser.party(),
            "approved_at": approved_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "panel_ref": request.panel_ref,
            "submitter_ref": request.submitter_ref,
            "submission_id": files.submission_id,
            "evidence": {
                "spreadsheet": digests[files.sheet_name],
                "request": digests["request.json"],
                "signatures": sorted(digests[n] for n in files.signatures),
            },
        }
        if r.row in replaces:
            old, ref = replaces[r.row]
            entry["replaces"] = {"index": old, "investigation_ref": ref}
        decision.entries.append(entry)
    return decision


def signer_lines(decision: Decision) -> list[str]:
    """Who signed (organisation, ID, role, certificate fingerprint, signing time), one line each."""
    if not decision.signers:
        return ["Signed by: no valid signature"]
    return ["Signed by:"] + [
        f"  {s['role'] or 'no role'}: {s['organisation']} (ID {s['organisation_id']}), certificate "
        f"{s['certificate_sha256']}, signed {s['signing_time'] or 'at an unstated time'}"
        for s in decision.signers
    ]


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
    lines += signer_lines(decision)
    lines += ["Input files (SHA-256):"] + [f"  {name}: {digest}" for name, digest in decision.inputs.items()]
    return "\n".join(lines) + "\n"
