"""RFC 5280 CRLs for the IKI: building, signing and checking. Pure (no files, no clock).

Profile: v2; AKI by key identifier; CRL Number; thisUpdate and nextUpdate; an
Issuing Distribution Point naming the URL the certificates carry (only user
certificates on an issuing CA's CRL, only CA certificates on the root's ARL);
entries sorted by serial, with a reason code only when it is not
``unspecified`` and an invalidity date when known; no empty
revokedCertificates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtensionOID

from . import der

# RFC 5280 5.3.1 reason codes; certificateHold (6) and removeFromCRL (8) are not
# allowed: revocation is final in this profile.
REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "cACompromise": 2,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "privilegeWithdrawn": 9,
    "aACompromise": 10,
}
REASON_NAMES = {code: name for name, code in REASONS.items()}
FORBIDDEN_REASONS = {
    "certificateHold": "certificateHold is not allowed: revocation is final in this profile",
    "removeFromCRL": "removeFromCRL is only for delta CRLs (RFC 5280 5.3.1) and revocation is final",
}
_OID_REASON = "2.5.29.21"
_OID_INVALIDITY = "2.5.29.24"


class CRLError(ValueError):
    """A CRL failed a check; the message names the check."""


@dataclass(frozen=True)
class Revocation:
    """One revoked certificate as it appears on a CRL."""

    serial: int
    revoked_at: dt.datetime
    reason: str = "unspecified"
    invalidity_date: dt.datetime | None = None


@dataclass(frozen=True)
class SignatureScheme:
    """How an issuer key signs: the AlgorithmIdentifier DER and the hash."""

    algorithm_der: bytes
    hash: hashes.HashAlgorithm


def signature_scheme(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> SignatureScheme:
    """ECDSA P-256/SHA-256, ECDSA P-384/SHA-384, or RSA (3072 bits or more) PKCS#1 v1.5 with SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return SignatureScheme(der.sequence(der.oid("1.2.840.10045.4.3.2")), hashes.SHA256())
        if isinstance(key.curve, ec.SECP384R1):
            return SignatureScheme(der.sequence(der.oid("1.2.840.10045.4.3.3")), hashes.SHA384())
        raise CRLError(f"unsupported curve {key.curve.name}; use P-256 or P-384")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 3072:
            raise CRLError(f"RSA key of {key.key_size} bits is too small; at least 3072 are required")
        return SignatureScheme(der.sequence(der.oid("1.2.840.113549.1.1.11"), b"\x05\x00"), hashes.SHA256())
    raise CRLError(f"unsupported key type {type(key).__name__}")


def sign(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, data: bytes, scheme: SignatureScheme) -> bytes:
    """Sign ``data`` with the issuer key under ``scheme``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(scheme.hash))
    return key.sign(data, padding.PKCS1v15(), scheme.hash)


def _entry_extensions(rev: Revocation) -> bytes:
    exts = []
    if rev.reason not in REASONS:
        raise CRLError(FORBIDDEN_REASONS.get(rev.reason, f"unknown revocation reason {rev.reason!r}"))
    if rev.reason != "unspecified":
        exts.append(der.extension(_OID_REASON, False, der.enumerated(REASONS[rev.reason])))
    if rev.invalidity_date is not None:
        exts.append(der.extension(_OID_INVALIDITY, False, der.generalized_time(rev.invalidity_date)))
    return der.sequence(*exts) if exts else b""


def encode_revoked(revocations: Iterable[Revocation]) -> bytes:
    """The revokedCertificates field (empty bytes when there are none), entries sorted by serial.

    One pass; the time and extension encodings are shared between entries
    that have the same values.
    """
    time_cache: dict[dt.datetime, bytes] = {}
    ext_cache: dict[tuple[str, dt.datetime | None], bytes] = {}
    parts = []
    seen = -1
    for rev in sorted(revocations, key=lambda r: r.serial):
        if rev.serial == seen:
            raise CRLError(f"serial {rev.serial:x} appears twice")
        seen = rev.serial
        t = time_cache.get(rev.revoked_at)
        if t is None:
            t = time_cache[rev.revoked_at] = der.time(rev.revoked_at)
        key = (rev.reason, rev.invalidity_date)
        e = ext_cache.get(key)
        if e is None:
            e = ext_cache[key] = _entry_extensions(rev)
        parts.append(der.sequence(der.integer(rev.serial), t, e))
    return der.sequence(*parts) if parts else b""


@dataclass(frozen=True)
class CRLSpec:
    """Everything that goes into one CRL except the revoked entries and the key."""

    issuer: x509.Certificate
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    distribution_point: str
    only_ca_certs: bool  # True for the root's ARL


def _key_identifier(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def build_tbs(spec: CRLSpec, revoked_der: bytes, scheme: SignatureScheme) -> bytes:
    """The DER TBSCertList."""
    if spec.next_update <= spec.this_update:
        raise CRLError("nextUpdate must be after thisUpdate")
    aki = x509.AuthorityKeyIdentifier(_key_identifier(spec.issuer), None, None)
    idp = x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(spec.distribution_point)],
        relative_name=None,
        only_contains_user_certs=not spec.only_ca_certs,
        only_contains_ca_certs=spec.only_ca_certs,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    extensions = der.sequence(
        der.extension(ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string, False, aki.public_bytes()),
        der.extension(ExtensionOID.CRL_NUMBER.dotted_string, False, x509.CRLNumber(spec.number).public_bytes()),
        der.extension(ExtensionOID.ISSUING_DISTRIBUTION_POINT.dotted_string, True, idp.public_bytes()),
    )
    return der.sequence(
        der.integer(1),  # v2
        scheme.algorithm_der,
        spec.issuer.subject.public_bytes(),
        der.time(spec.this_update),
        der.time(spec.next_update),
        revoked_der,
        der.explicit(0, extensions),
    )


def sign_crl(
    spec: CRLSpec, revocations: Iterable[Revocation], key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> bytes:
    """Build and sign a CRL; returns its DER. Check it with ``check_crl`` before publishing."""
    if spec.issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CRLError("the signing key does not belong to the issuer certificate")
    if spec.this_update > spec.issuer.not_valid_after_utc:
        raise CRLError("the issuer certificate has expired: its key must not be used any more")
    scheme = signature_scheme(key)
    tbs = build_tbs(spec, encode_revoked(revocations), scheme)
    return der.sequence(tbs, scheme.algorithm_der, der.bit_string(sign(key, tbs, scheme)))


@dataclass(frozen=True)
class CRLInfo:
    """What the publication says about a CRL (``<issuer>.json``)."""

    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    sha256: str
    entries: int
    issuer_fingerprint: str

    def to_json(self) -> dict[str, object]:
        return {
            "number": self.number,
            "this_update": self.this_update.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "next_update": self.next_update.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sha256": self.sha256,
            "entries": self.entries,
            "issuer_fingerprint": self.issuer_fingerprint,
        }


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound as exc:
        raise CRLError("CRL has no CRL Number") from exc


def serials(crl: x509.CertificateRevocationList) -> list[int]:
    """Serials on a CRL, in order."""
    return [r.serial_number for r in crl]


_SCHEMES = {
    der.sequence(der.oid("1.2.840.10045.4.3.2")): hashes.SHA256(),
    der.sequence(der.oid("1.2.840.10045.4.3.3")): hashes.SHA384(),
    der.sequence(der.oid("1.2.840.113549.1.1.11"), b"\x05\x00"): hashes.SHA256(),
    der.sequence(der.oid("1.2.840.113549.1.1.12"), b"\x05\x00"): hashes.SHA384(),
}


def verify_signature(data: bytes, issuer: x509.Certificate) -> None:
    """Verify a DER CRL's signature over its TBSCertList bytes exactly as received.

    (cryptography's ``is_signature_valid`` re-encodes the TBSCertList, which
    takes seconds on a million entries; the bytes are sliced here instead and
    the signature is checked with cryptography.)
    """
    try:
        _, pos, _ = der.read_header(data, 0)  # CertificateList
        _, _, tbs_end = der.read_header(data, pos)
        tbs = data[pos:tbs_end]
        _, _, alg_end = der.read_header(data, tbs_end)
        algorithm = data[tbs_end:alg_end]
        tag, sig_start, sig_end = der.read_header(data, alg_end)
        _, inner, _ = der.read_header(tbs, 0)
        _, _, inner = der.read_header(tbs, inner)  # skip version
        _, _, inner_end = der.read_header(tbs, inner)
    except (IndexError, ValueError) as exc:
        raise CRLError(f"not a DER CRL: {exc}") from exc
    hash_alg = _SCHEMES.get(algorithm)
    if hash_alg is None or tag != 0x03 or data[sig_start] != 0:
        raise CRLError("signature: unsupported or malformed signature algorithm")
    if tbs[inner:inner_end] != algorithm:
        raise CRLError("signature: the inner and outer signature algorithms differ")
    signature = data[sig_start + 1 : sig_end]
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, tbs, ec.ECDSA(hash_alg))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, tbs, padding.PKCS1v15(), hash_alg)
        else:
            raise CRLError("signature: unsupported issuer key type")
    except InvalidSignature as exc:
        raise CRLError("signature: the CRL does not verify under the issuer certificate's key") from exc


def check_crl(
    data: bytes,
    issuer: x509.Certificate,
    previous: bytes | None,
    now: dt.datetime,
    max_skew: dt.timedelta = dt.timedelta(minutes=5),
) -> CRLInfo:
    """The checks a CRL passes before it is published; each failure names its check.

    Signature under the issuer's key, CRL number greater than the previous
    CRL's, no serial twice, every serial of the previous CRL still present
    (RFC 5280 3.3), thisUpdate not in the future.
    """
    try:
        crl = x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CRLError(f"not a DER CRL: {exc}") from exc
    verify_signature(data, issuer)
    if crl.issuer != issuer.subject:
        raise CRLError("issuer: the CRL issuer name is not the issuer certificate's subject")
    number = crl_number(crl)
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if next_update is None:
        raise CRLError("nextUpdate: missing")
    if this_update > now + max_skew:
        raise CRLError(f"thisUpdate: {this_update:%Y-%m-%d %H:%M:%S}Z is in the future")
    listed = serials(crl)
    if len(set(listed)) != len(listed):
        raise CRLError("duplicate serial: a serial number appears twice")
    if previous is not None:
        old = x509.load_der_x509_crl(previous)
        old_number = crl_number(old)
        if number <= old_number:
            raise CRLError(f"CRL number: {number} is not greater than the previous CRL's {old_number}")
        missing = set(serials(old)) - set(listed)
        if missing:
            gone = ", ".join(f"{s:x}" for s in sorted(missing)[:5])
            raise CRLError(f"retention: entries of the previous CRL disappeared (serials {gone})")
    fingerprint = issuer.fingerprint(hashes.SHA256()).hex()
    return CRLInfo(number, this_update, next_update, hashlib.sha256(data).hexdigest(), len(listed), fingerprint)


def to_pem(data: bytes) -> bytes:
    """PEM armour of a DER CRL."""
    return x509.load_der_x509_crl(data).public_bytes(serialization.Encoding.PEM)
