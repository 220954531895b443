"""Certificate issuance policy: SEC Appendix B 6.3.2 (as changed by MP261) and Section L11.4.

Pure rules over facts about certificates; every refusal names its rule. The
publisher runs them before it issues a certificate, and ``cpl-publisher
policy check`` runs them on any certificate files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from publisher.config import PolicyRules
from verifier.cpl_verify import organisation_key


class Kind(StrEnum):
    """Certificate kinds the SEC rules distinguish."""

    IKI = "iki"  # IKI end-entity certificate
    ICA_ISSUING = "ica-issuing"
    ICA_ROOT = "ica-root"
    ORGANISATION = "organisation"
    OCA_ISSUING = "oca-issuing"
    OCA_ROOT = "oca-root"
    DEVICE = "device"
    DCA = "dca"


# L11.4: a public key may be in only one certificate of the same family.
FAMILY = {
    Kind.IKI: "IKI/ICA",
    Kind.ICA_ISSUING: "IKI/ICA",
    Kind.ICA_ROOT: "IKI/ICA",
    Kind.ORGANISATION: "Organisation/OCA",
    Kind.OCA_ISSUING: "Organisation/OCA",
    Kind.OCA_ROOT: "Organisation/OCA",
    Kind.DEVICE: "Device/DCA",
    Kind.DCA: "Device/DCA",
}
_L11_4_LETTER = {"Device/DCA": "a", "Organisation/OCA": "b", "IKI/ICA": "c"}

# L11.4A/B: the only Remote Party Role codes for which the SMKI PMA may approve
# an Organisation Certificate that reuses an existing certificate's key.
SHARED_KEY_ROLES = frozenset({"recovery", "transitionalCoS", "wanProvider", "accessControlBroker"})


@dataclass(frozen=True)
class CertFacts:
    """What the rules need to know about one certificate."""

    kind: Kind
    serial: int
    subject: str
    key_sha256: str  # SHA-256 of the DER SubjectPublicKeyInfo, hex
    not_before: dt.datetime
    not_after: dt.datetime
    cert_sha256: str
    role: str | None = None  # Remote Party Role code (Organisation certificates)
    approval_ref: str | None = None  # SMKI PMA approval reference, if any


@dataclass(frozen=True)
class Refusal:
    """A failed rule: ``rule`` cites the clause, ``message`` explains."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


def add_years(when: dt.datetime, years: int) -> dt.datetime:
    """Same calendar date ``years`` later (29 February becomes 28 February)."""
    try:
        return when.replace(year=when.year + years)
    except ValueError:
        return when.replace(year=when.year + years, day=28)


def _period(facts: CertFacts) -> dt.timedelta:
    return facts.not_after - facts.not_before


def _fixed_years(facts: CertFacts, years: int, rules: PolicyRules) -> bool:
    """True when the validity period is ``years`` calendar years (RFC 5280 end second allowed)."""
    expected = add_years(facts.not_before, years)
    return abs(facts.not_after - expected) <= rules.tolerance


def check_validity(facts: CertFacts, rules: PolicyRules) -> list[Refusal]:
    """Appendix B 6.3.2 validity periods (Organisation/OCA) and the configured IKI/ICA maxima."""
    if facts.not_after <= facts.not_before:
        return [Refusal("RFC 5280 4.1.2.5", "notAfter is not after notBefore")]
    days = _period(facts).days
    if facts.kind is Kind.ORGANISATION:
        if not _fixed_years(facts, rules.organisation_years, rules) and not facts.approval_ref:
            return [
                Refusal(
                    "SEC Appendix B 6.3.2 (MP261)",
                    f"an Organisation Certificate is valid for {rules.organisation_years} years; this one is "
                    f"valid for {days} days and no SMKI PMA approval reference was given",
                )
            ]
    elif facts.kind in (Kind.OCA_ISSUING, Kind.OCA_ROOT):
        years = rules.oca_issuing_years if facts.kind is Kind.OCA_ISSUING else rules.oca_root_years
        name = "an Issuing OCA" if facts.kind is Kind.OCA_ISSUING else "a Root OCA"
        if not _fixed_years(facts, years, rules):
            return [
                Refusal(
                    "SEC Appendix B 6.3.2 (MP261)",
                    f"{name} certificate is valid for {years} years; this one is valid for {days} days",
                )
            ]
    elif facts.kind in (Kind.IKI, Kind.ICA_ISSUING, Kind.ICA_ROOT):
        limit = {
            Kind.IKI: rules.iki_max_days,
            Kind.ICA_ISSUING: rules.ica_issuing_max_days,
            Kind.ICA_ROOT: rules.ica_root_max_days,
        }[facts.kind]
        if _period(facts) > dt.timedelta(days=limit):
            return [
                Refusal(
                    "IKI validity (publisher.toml [policy])",
                    f"a {facts.kind.value} certificate may be valid for at most {limit} days; this one is "
                    f"valid for {days} days",
                )
            ]
    return []


def check_key_reuse(facts: CertFacts, existing: Iterable[CertFacts]) -> list[Refusal]:
    """L11.4 one key, one certificate of a family; L11.4A/B's narrow approved exception."""
    family = FAMILY[facts.kind]
    clause = f"SEC L11.4({_L11_4_LETTER[family]})"
    refusals = []
    for other in existing:
        if other.key_sha256 != facts.key_sha256 or other.cert_sha256 == facts.cert_sha256:
            continue
        if FAMILY[other.kind] != family:
            continue
        if facts.kind is Kind.OCA_ROOT and other.kind is Kind.OCA_ROOT:
            continue  # L11.4(b) leaves Root OCA re-issuance to the certificate policy
        if facts.kind is Kind.ORGANISATION and other.kind is Kind.ORGANISATION:
            if facts.approval_ref and facts.role in SHARED_KEY_ROLES:
                continue
            if not facts.approval_ref:
                why = "and no SMKI PMA approval reference was given"
            else:
                roles = ", ".join(sorted(SHARED_KEY_ROLES))
                why = f"and role {facts.role!r} is not one of {roles}"
            refusals.append(
                Refusal(
                    "SEC L11.4A/B",
                    f"the public key is already in Organisation Certificate {other.serial:x} ({other.subject}) {why}",
                )
            )
            continue
        refusals.append(
            Refusal(
                clause,
                f"the public key is already in {other.kind.value} certificate {other.serial:x} ({other.subject}); "
                f"a key may be in only one {family} certificate",
            )
        )
    return refusals


def check_one_role(
    organisation_id: str, role: str | None, existing: Iterable[tuple[str, str | None, int]], rules: PolicyRules
) -> list[Refusal]:
    """One organisation, one IKI role: a manufacturer given a Supplier certificate could endorse its own images.

    ``existing`` holds (organisation ID, role, serial) of the IKI certificates issued so far; an
    organisation listed in ``rules.multi_role_organisations`` may hold several roles.
    """
    key = organisation_key(organisation_id)
    if not key or key in {organisation_key(o) for o in rules.multi_role_organisations}:
        return []
    for other_id, other_role, serial in existing:
        if organisation_key(other_id) == key and other_role != role:
            return [
                Refusal(
                    "IKI roles",
                    f"organisation ID {organisation_id} already holds a {other_role or 'role-less'} IKI certificate "
                    f"({serial:x}); one organisation may hold several roles only when [policy] "
                    "multi_role_organisations lists it",
                )
            ]
    return []


def check(facts: CertFacts, existing: Iterable[CertFacts], rules: PolicyRules) -> list[Refusal]:
    """Every rule for one certificate against the certificates already issued."""
    return check_validity(facts, rules) + check_key_reuse(facts, existing)


def check_key_in_use(
    signer_not_after: dt.datetime, now: dt.datetime, what: str = "the issuer certificate"
) -> list[Refusal]:
    """A private key is never used after the end of its certificate's validity period."""
    if now > signer_not_after:
        return [Refusal("SEC Appendix B (key usage period)", f"{what} expired on {signer_not_after:%Y-%m-%d}")]
    return []
