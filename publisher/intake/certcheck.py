"""Checking a signer's certificate against the publication's own trust material: the verifier's chain
and profile checks (the same ``build_chain`` and ``check_end_entity`` that ``audit`` and ``cpl-verify``
run) to a configured IKI trust anchor, then revocation on the publisher's own current CRLs and on the
revocations it has registered but not yet published. Pure: everything is passed in.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from publisher.config import Profile
from verifier.cpl_verify import ChainError, build_chain, check_end_entity
from verifier.cpl_verify import describe_cert as describe


@dataclass(frozen=True)
class CertProblem:
    check: str
    message: str


@dataclass(frozen=True)
class TrustContext:
    """What certificates are checked against.

    ``registered`` holds the revocations in the registers, by issuer subject (DER) and serial: a revocation
    counts from the moment it is registered, before a CRL carries it. ``chains`` caches path validation and
    revocation per certificate for one intake run (the same few signer certificates sign most submissions).
    """

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]
    profile: Profile
    now: dt.datetime
    signing_skew: dt.timedelta = dt.timedelta(minutes=5)  # how far a signingTime may be ahead of ``now``
    registered: dict[tuple[bytes, int], tuple[dt.datetime, str]] = field(default_factory=dict)
    chains: dict[tuple[bytes, ...], tuple[list[x509.Certificate], list[CertProblem]]] = field(
        default_factory=dict, compare=False, repr=False
    )


def _revocation(cert: x509.Certificate, issuer: x509.Certificate, ctx: TrustContext) -> CertProblem | None:
    held = ctx.registered.get((issuer.subject.public_bytes(), cert.serial_number))
    if held is not None:
        return CertProblem("revoked certificate", f"{describe(cert)} was revoked on {held[0]:%Y-%m-%d} ({held[1]})")
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
    try:
        chain = build_chain(cert, [*ctx.intermediates, *extra_intermediates], ctx.anchors, ctx.now)
        check_end_entity(cert, ctx.profile.extended_key_usage)
    except ChainError as exc:
        return [], [CertProblem("certificate chain", f"{exc} (configured IKI trust anchors)")]
    problems = [p for child, issuer in itertools.pairwise(chain) if (p := _revocation(child, issuer, ctx))]
    return list(chain), problems
