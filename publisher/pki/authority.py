"""The IKI certification authority's issuance: policy checks, signing, the issued register.

Every issuance runs the policy checks first and is recorded in the register, as one ``Change`` that
the publication's writer applies (the IKI side never commits, nor touches the log). ``make demo`` and
the tests issue with it; a real deployment brings its own CA certificates and keys and only configures
them in ``publisher.toml`` (``publisher.scaffold`` makes a demo hierarchy).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from publisher import keys
from publisher.config import Config
from publisher.errors import Refused
from publisher.pki import profile, registers
from publisher.pki.policy import CertFacts, Kind, Refusal, check, check_key_in_use, check_one_role
from publisher.pki.registers import IssuedRecord
from publisher.publication import CERTS_DIR, Change, Operation, load_certificate, now_utc
from verifier.cpl_verify import iso_utc


class PolicyRefused(Refused):
    """Issuance refused by one or more policy rules."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        super().__init__("; ".join(str(r) for r in refusals))


def existing_facts(config: Config) -> list[CertFacts]:
    """Policy facts of every certificate in the issued register."""
    return [
        CertFacts(
            kind=Kind(r.kind),
            serial=int(r.serial, 16),
            subject=r.subject,
            key_sha256=r.key_sha256,
            not_before=dt.datetime.fromisoformat(r.not_before),
            not_after=dt.datetime.fromisoformat(r.not_after),
            cert_sha256=r.cert_sha256,
            role=r.role,
            approval_ref=r.approval_ref,
        )
        for r in registers.load_issued(config.root)
    ]


def record_line(issuer: str, cert: x509.Certificate, kind: Kind, role: str | None, ref: str | None) -> bytes:
    """The issued-register line for ``cert``."""
    f = profile.facts(cert, kind, role, ref)
    return registers.line_of(
        IssuedRecord(
            issuer=issuer,
            serial=f"{cert.serial_number:x}",
            kind=kind.value,
            subject=f.subject,
            key_sha256=f.key_sha256,
            cert_sha256=f.cert_sha256,
            not_before=iso_utc(f.not_before),
            not_after=iso_utc(f.not_after),
            issued_at=iso_utc(now_utc()),
            role=role,
            approval_ref=ref,
        )
    )


@dataclass(frozen=True)
class Issued:
    """A certificate issued by ``issue``."""

    certificate: x509.Certificate
    path: Path  # the public copy in the publication


def issue(
    op: Operation,
    config: Config,
    issuer_name: str,
    request: profile.IssueRequest,
    role: str | None = None,
    approval_ref: str | None = None,
    now: dt.datetime | None = None,
) -> Issued:
    """Check the policy, sign, record and store a certificate issued by a configured issuer, as one
    ``Change`` applied by ``op`` (the publication's writer: ``publisher.publish.operations.issue``)."""
    now = now or now_utc()
    issuer_cfg = config.issuer(issuer_name)
    issuer_cert = load_certificate(issuer_cfg.certificate)
    refusals = check_key_in_use(issuer_cert.not_valid_after_utc, now)
    probe = profile.facts_of_request(request, role, approval_ref)
    existing = existing_facts(config)
    refusals += check(probe, existing, config.rules)
    if request.kind is Kind.IKI:
        who = profile.name_identity(request.subject, config.profile)
        issued = [
            (i.organisation_id, i.role, f.serial)
            for f in existing
            if f.kind is Kind.IKI
            for i in [profile.name_identity(x509.Name.from_rfc4514_string(f.subject), config.profile)]
        ]
        refusals += check_one_role(who.organisation_id, who.role, issued, config.rules)
    if refusals:
        raise PolicyRefused(refusals)
    issuer_key = keys.load_issuer_key(issuer_cfg.key, config.root)
    cert = profile.build_certificate(request, config.profile, issuer_key, issuer_cert)
    rel = f"{CERTS_DIR}/{issuer_name}/{cert.serial_number:x}.pem"
    op.apply(
        Change(
            "issue",
            f"issue {request.kind.value} {cert.serial_number:x} ({role})",
            writes={rel: cert.public_bytes(serialization.Encoding.PEM)},
            appends={registers.ISSUED: record_line(issuer_name, cert, request.kind, role, approval_ref)},
        )
    )
    return Issued(cert, config.root / rel)
