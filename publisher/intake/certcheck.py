"""Checking a signer's certificate: chain to a configured IKI trust anchor, validity, key usage,
extended key usage, and revocation on the publisher's own current CRLs. Pure: everything is passed in.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ObjectIdentifier

from ..config import Profile


@dataclass(frozen=True)
class CertProblem:
    check: str
    message: str


@dataclass(frozen=True)
class TrustContext:
    """What certificates are checked against.

    ``chains`` caches path validation and revocation per certificate for one
    intake run (the same few signer certificates sign most submissions).
    """

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]
    profile: Profile
    now: dt.datetime
    signing_skew: dt.timedelta = dt.timedelta(minutes=5)  # how far a signingTime may be ahead of ``now``
    chains: dict[tuple[bytes, ...], tuple[list[x509.Certificate], list[CertProblem]]] = field(
        default_factory=dict, compare=False, repr=False
    )


def describe(cert: x509.Certificate) -> str:
    """How messages name a certificate: subject and serial."""
    return f"'{cert.subject.rfc4514_string()}' (serial {cert.serial_number:x})"


def _ee_policy(profile: Profile) -> xv.ExtensionPolicy:
    eku = ObjectIdentifier(profile.extended_key_usage)

    def check_ku(policy: object, cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
        if ext is None or not ext.digital_signature:
            raise ValueError("keyUsage lacks digitalSignature")

    def check_eku(policy: object, cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None) -> None:
        if ext is None or eku not in ext:
            raise ValueError(f"extendedKeyUsage lacks {profile.extended_key_usage}")

    return (
        xv.ExtensionPolicy.permit_all()
        .require_present(x509.KeyUsage, xv.Criticality.AGNOSTIC, check_ku)
        .require_present(x509.ExtendedKeyUsage, xv.Criticality.AGNOSTIC, check_eku)
    )


def _revocation(cert: x509.Certificate, issuer: x509.Certificate, ctx: TrustContext) -> CertProblem | None:
    crl = next((c for c in ctx.crls if c.issuer == issuer.subject), None)
    if crl is None:
        return CertProblem("revocation", f"no CRL of {describe(issuer)} is available to check {describe(cert)}")
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        return CertProblem("revocation", f"the CRL of {describe(issuer)} does not verify")
    if crl.next_update_utc is None or crl.next_update_utc < ctx.now:
        return CertProblem("revocation", f"the CRL of {describe(issuer)} is stale; refresh the CRLs first")
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return None
    try:
        code = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        code = "unspecified"
    return CertProblem(
        "revoked certificate",
        f"{describe(cert)} was revoked on {entry.revocation_date_utc:%Y-%m-%d} ({code})",
    )


def check_certificate(
    cert: x509.Certificate,
    extra_intermediates: list[x509.Certificate],
    ctx: TrustContext,
) -> tuple[list[x509.Certificate], list[CertProblem]]:
    """Validate a signer certificate at ``ctx.now``; returns its chain (leaf first) and the problems found.

    (Its validity at the signing time is the rule Z4.3a-signing-time, judged with the other rules.)"""
    problems = []
    name = describe(cert)
    if ctx.now < cert.not_valid_before_utc:
        start = cert.not_valid_before_utc
        problems.append(CertProblem("not yet valid", f"{name} is not valid before {start:%Y-%m-%d}"))
    if ctx.now > cert.not_valid_after_utc:
        problems.append(CertProblem("expired certificate", f"{name} expired on {cert.not_valid_after_utc:%Y-%m-%d}"))
    if problems:
        return [], problems
    key = tuple(c.fingerprint(hashes.SHA256()) for c in (cert, *extra_intermediates))
    if key not in ctx.chains:
        ctx.chains[key] = _chain_and_revocation(cert, extra_intermediates, ctx)
    return ctx.chains[key]


def _chain_and_revocation(
    cert: x509.Certificate, extra_intermediates: list[x509.Certificate], ctx: TrustContext
) -> tuple[list[x509.Certificate], list[CertProblem]]:
    name = describe(cert)
    problems: list[CertProblem] = []
    builder = (
        xv.PolicyBuilder()
        .store(xv.Store(list(ctx.anchors)))
        .time(ctx.now)
        .extension_policies(ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=_ee_policy(ctx.profile))
    )
    try:
        chain = builder.build_client_verifier().verify(cert, [*ctx.intermediates, *extra_intermediates]).chain
    except xv.VerificationError as exc:
        return [], [CertProblem("certificate chain", f"{name} does not chain to a configured IKI trust anchor: {exc}")]
    for child, issuer in itertools.pairwise(chain):
        problem = _revocation(child, issuer, ctx)
        if problem:
            problems.append(problem)
    return list(chain), problems
