"""The IKI certificate profile: building certificates and reading identities back. Pure.

End-entity IKI certificate (what intake and the verifier expect):
  subject O = organisation name, organizationIdentifier (or serialNumber) =
  organisation ID (SEC party ID or manufacturer ID), OU = role (configurable
  values for Manufacturer, Supplier, DCC), CN = organisation name;
  keyUsage digitalSignature (critical); extendedKeyUsage = the configured OID;
  certificatePolicies = the configured policy OID, if any; CRL distribution
  point = the issuer's CRL URL on the site; SKI and AKI; basicConstraints CA:FALSE.
ICA certificates: basicConstraints CA (critical; pathLen 0 on the issuing ICA),
keyUsage keyCertSign + cRLSign (critical), SKI (and AKI and the root's ARL
URL on the issuing ICA).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from publisher.config import Profile
from publisher.errors import UsageError
from publisher.keys import FileIssuerKey, IssuerKey, PrivateKey, PublicKey, as_issuer_key, spki_sha256
from publisher.pki import der
from publisher.pki.policy import CertFacts, Kind

MAX_NAME = 128


class ProfileError(UsageError, ValueError):
    """A certificate or request does not fit the profile."""


def signing_hash(key: PublicKey | PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-384 for P-384 keys, SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


@functools.cache
def _stand_in(kind: type[PublicKey]) -> PrivateKey:
    """A throwaway key of one family (made once per process), used by ``sign_certificate`` only to get
    the TBSCertificate out of ``cryptography``'s builder; nothing it signs is kept."""
    if kind is ec.EllipticCurvePublicKey:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(65537, 2048)


def sign_certificate(builder: x509.CertificateBuilder, key: IssuerKey | PrivateKey) -> x509.Certificate:
    """Sign the certificate ``builder`` describes with ``key``, wherever the key lives.

    ``cryptography``'s builder signs only with its own key objects. For any other key (a token's), the
    builder signs with a stand-in key of the same family: the TBSCertificate, signature algorithm
    included, depends only on the family and the hash, never on the key. That TBSCertificate is then
    signed by ``key`` and the certificate assembled; its signature is verified before it is returned.
    """
    key = as_issuer_key(key)
    algorithm = signing_hash(key.public_key())
    if isinstance(key, FileIssuerKey):
        return builder.sign(key.private, algorithm)
    family = ec.EllipticCurvePublicKey if isinstance(key.public_key(), ec.EllipticCurvePublicKey) else rsa.RSAPublicKey
    draft = builder.sign(_stand_in(family), algorithm).public_bytes(serialization.Encoding.DER)
    _, body, _ = der.read_header(draft, 0)
    _, _, tbs_end = der.read_header(draft, body)
    _, _, algorithm_end = der.read_header(draft, tbs_end)
    tbs, algorithm_der = draft[body:tbs_end], draft[tbs_end:algorithm_end]
    return x509.load_der_x509_certificate(der.sequence(tbs, algorithm_der, der.bit_string(key.sign(tbs, algorithm))))


def _check_text(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ProfileError(f"{what} must be 1 to {MAX_NAME} printable characters")
    return value


def ee_subject(profile: Profile, org_name: str, org_id: str, role: str) -> x509.Name:
    """Subject of an end-entity IKI certificate."""
    if role not in profile.roles:
        raise ProfileError(f"unknown role {role!r} (choose from {', '.join(profile.roles)})")
    id_oid = (
        NameOID.ORGANIZATION_IDENTIFIER
        if profile.organisation_id_attribute == "organizationIdentifier"
        else (NameOID.SERIAL_NUMBER)
    )
    org_name = _check_text(org_name, "organisation name")
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, profile.roles[role]),
            x509.NameAttribute(id_oid, _check_text(org_id, "organisation ID")),
            x509.NameAttribute(NameOID.COMMON_NAME, org_name[:64]),
        ]
    )


def ca_subject(common_name: str) -> x509.Name:
    """Subject of an ICA certificate."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Smart DCC Ltd"),
            x509.NameAttribute(NameOID.COMMON_NAME, _check_text(common_name, "CA name")[:64]),
        ]
    )


@dataclass(frozen=True)
class IssueRequest:
    """One certificate to issue."""

    kind: Kind
    subject: x509.Name
    public_key: PublicKey
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    crl_url: str | None  # the CRL (or for the root itself, the ARL) that covers this certificate


def build_certificate(
    request: IssueRequest,
    profile: Profile,
    issuer_key: IssuerKey | PrivateKey,
    issuer: x509.Certificate | None,
) -> x509.Certificate:
    """Sign a certificate of this profile (``issuer`` None: self-signed root) with ``issuer_key``, which must be
    the key of ``issuer`` (of the request, for a root); the signature is verified before it is returned."""
    if request.kind not in (Kind.IKI, Kind.ICA_ISSUING, Kind.ICA_ROOT):
        raise ProfileError(f"this publisher issues IKI and ICA certificates, not {request.kind.value}")
    if (issuer is None) != (request.kind is Kind.ICA_ROOT):
        raise ProfileError("only the root ICA certificate is self-signed")
    if issuer is not None and request.not_after > issuer.not_valid_after_utc:
        raise ProfileError("the certificate would outlive its issuer's certificate")
    ski = x509.SubjectKeyIdentifier.from_public_key(request.public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(issuer.subject if issuer else request.subject)
        .public_key(request.public_key)
        .serial_number(request.serial)
        .not_valid_before(request.not_before)
        .not_valid_after(request.not_after)
        .add_extension(ski, critical=False)
    )
    if issuer is not None:
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
        )
    if request.crl_url:
        dp = x509.DistributionPoint([x509.UniformResourceIdentifier(request.crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([dp]), critical=False)
    if request.kind is Kind.IKI:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(profile.extended_key_usage)]), critical=False)
        )
        if profile.policy_oid:
            policy = x509.PolicyInformation(ObjectIdentifier(profile.policy_oid), None)
            builder = builder.add_extension(x509.CertificatePolicies([policy]), critical=False)
    else:
        path_length = 0 if request.kind is Kind.ICA_ISSUING else None
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    signer = as_issuer_key(issuer_key)
    expected = issuer.public_key() if issuer is not None else request.public_key
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if signer.public_key().public_bytes(*spki) != expected.public_bytes(*spki):
        raise ProfileError(
            "the signing key is not the issuer certificate's key (a token key replaced, or the wrong key named)"
        )
    cert = sign_certificate(builder, signer)
    try:
        cert.verify_directly_issued_by(issuer if issuer is not None else cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ProfileError(f"the new certificate does not verify against its issuer: {exc}") from exc
    return cert


def facts_of_request(request: IssueRequest, role: str | None = None, approval_ref: str | None = None) -> CertFacts:
    """Policy facts about a certificate before it is signed."""
    return CertFacts(
        kind=request.kind,
        serial=request.serial,
        subject=request.subject.rfc4514_string(),
        key_sha256=spki_sha256(request.public_key),
        not_before=request.not_before,
        not_after=request.not_after,
        cert_sha256="",
        role=role,
        approval_ref=approval_ref,
    )


def public_key_of(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ProfileError("certificate key is neither ECDSA nor RSA")
    return key


def classify(cert: x509.Certificate, profile: Profile) -> Kind | None:
    """The IKI kind of a certificate of this profile, or None if it is not one."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is not None and bc.ca:
        return Kind.ICA_ROOT if cert.issuer == cert.subject else Kind.ICA_ISSUING
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return Kind.IKI if ObjectIdentifier(profile.extended_key_usage) in eku else None


@dataclass(frozen=True)
class Identity:
    """Who an end-entity IKI certificate belongs to."""

    organisation: str
    organisation_id: str
    role: str | None  # Manufacturer, Supplier, DCC, or None if the OU is not a configured role


def identity(cert: x509.Certificate, profile: Profile) -> Identity:
    """Organisation name, identifier and role from the subject, as the profile defines them."""
    return name_identity(cert.subject, profile)


def name_identity(subject: x509.Name, profile: Profile) -> Identity:
    """Organisation name, identifier and role from a subject name, as the profile defines them."""

    def one(oid: ObjectIdentifier) -> str:
        values = subject.get_attributes_for_oid(oid)
        return str(values[0].value) if len(values) == 1 else ""

    id_oid = (
        NameOID.ORGANIZATION_IDENTIFIER
        if profile.organisation_id_attribute == "organizationIdentifier"
        else (NameOID.SERIAL_NUMBER)
    )
    return Identity(one(NameOID.ORGANIZATION_NAME), one(id_oid), profile.role_of(one(NameOID.ORGANIZATIONAL_UNIT_NAME)))


def facts(cert: x509.Certificate, kind: Kind, role: str | None = None, approval_ref: str | None = None) -> CertFacts:
    """Policy facts about a certificate."""
    return CertFacts(
        kind=kind,
        serial=cert.serial_number,
        subject=cert.subject.rfc4514_string(),
        key_sha256=spki_sha256(public_key_of(cert)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        cert_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        role=role,
        approval_ref=approval_ref,
    )
