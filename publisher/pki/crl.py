"""RFC 5280 CRLs for the IKI: building, signing and checking. Pure (no files, no clock).

Profile: v2; AKI by key identifier; CRL Number; thisUpdate and nextUpdate; an
Issuing Distribution Point naming the URL the certificates carry (only user
certificates on an issuing CA's CRL, only CA certificates on the root's ARL);
entries sorted by serial, with a reason code only when it is not
``unspecified`` and an invalidity date when known; no empty
revokedCertificates.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

from publisher.errors import Refused
from publisher.keys import IssuerKey, PrivateKey, PublicKey, as_issuer_key
from publisher.pki import der
from verifier.cpl_verify import VerifyFailed, iso_utc, verify_crl_signature

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
_OID_INVALIDITY_DER = der.oid("2.5.29.24")
# The reasonCode entry extension of each allowed reason, encoded once (none for unspecified).
_REASON_EXTENSIONS = {
    name: der.extension(_OID_REASON, False, der.enumerated(code)) if code else b"" for name, code in REASONS.items()
}


class CRLError(Refused, ValueError):
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


def signature_scheme(key: PublicKey | PrivateKey) -> SignatureScheme:
    """ECDSA P-256/SHA-256, ECDSA P-384/SHA-384, or RSA (3072 bits or more) PKCS#1 v1.5 with SHA-256."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return SignatureScheme(der.sequence(der.oid("1.2.840.10045.4.3.2")), hashes.SHA256())
        if isinstance(key.curve, ec.SECP384R1):
            return SignatureScheme(der.sequence(der.oid("1.2.840.10045.4.3.3")), hashes.SHA384())
        raise CRLError(f"unsupported curve {key.curve.name}; use P-256 or P-384")
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < 3072:
            raise CRLError(f"RSA key of {key.key_size} bits is too small; at least 3072 are required")
        return SignatureScheme(der.sequence(der.oid("1.2.840.113549.1.1.11"), b"\x05\x00"), hashes.SHA256())
    raise CRLError(f"unsupported key type {type(key).__name__}")


def _reason_extension(reason: str) -> bytes:
    """The reasonCode entry extension (empty for unspecified); refuses the reasons this profile forbids."""
    ext = _REASON_EXTENSIONS.get(reason)
    if ext is None:
        raise CRLError(FORBIDDEN_REASONS.get(reason, f"unknown revocation reason {reason!r}"))
    return ext


def _invalidity_extension(generalized_time: bytes) -> bytes:
    return der.sequence(_OID_INVALIDITY_DER, der.octet_string(generalized_time))


def _entry(serial: int, revocation_date: bytes, reason_ext: bytes, invalidity_ext: bytes) -> bytes:
    """One revokedCertificates entry, built by concatenation (once per entry of a full rebuild).

    Every entry of this profile has short-form lengths (a 20-octet serial,
    GeneralizedTime and both extensions stay under 128 octets); ``der.length``
    looks those up.
    """
    if serial < 0:
        raise CRLError(f"serial -{-serial:x} is negative")
    content = serial.to_bytes(serial.bit_length() // 8 + 1, "big")  # minimal two's complement
    if reason_ext or invalidity_ext:
        exts = reason_ext + invalidity_ext
        body = b"\x02" + der.length(len(content)) + content + revocation_date + b"\x30" + der.length(len(exts)) + exts
    else:
        body = b"\x02" + der.length(len(content)) + content + revocation_date
    return b"\x30" + der.length(len(body)) + body


# Entries as (serial, DER of the entry); a list of them is kept sorted by serial.
Entry = tuple[int, bytes]
_serial_of = operator.itemgetter(0)
_der_of = operator.itemgetter(1)


def _sorted_unique(entries: list[Entry]) -> list[Entry]:
    """``entries`` sorted by serial in place (sorting the pairs beats looking a million keys up in a
    dict afterwards); refuses a serial twice."""
    entries.sort(key=_serial_of)
    serials = list(map(_serial_of, entries))
    if any(map(operator.eq, serials, serials[1:])):
        twice = next(a for a, b in itertools.pairwise(serials) if a == b)
        raise CRLError(f"serial {twice:x} appears twice")
    return entries


@dataclass(frozen=True)
class EncodedEntries:
    """revokedCertificates entries already in DER, sorted by serial: the field's content without its header."""

    body: bytes

    def field(self) -> bytes:
        """The revokedCertificates field; empty bytes when there are no entries (the field is then absent)."""
        return der.sequence(self.body) if self.body else b""


def join_entries(entries: list[Entry]) -> EncodedEntries:
    """Entries sorted by serial, as one revokedCertificates content."""
    return EncodedEntries(b"".join(map(_der_of, entries)))


def encode_revoked(revocations: Iterable[Revocation]) -> bytes:
    """The revokedCertificates field (empty bytes when there are none), entries sorted by serial.

    The time and extension encodings are shared between entries that have
    the same values.
    """
    time_cache: dict[dt.datetime, bytes] = {}
    invalidity_cache: dict[dt.datetime, bytes] = {}
    entries: list[Entry] = []
    for rev in revocations:
        t = time_cache.get(rev.revoked_at)
        if t is None:
            t = time_cache[rev.revoked_at] = der.time(rev.revoked_at)
        inv = b""
        if rev.invalidity_date is not None:
            inv = invalidity_cache.get(rev.invalidity_date, b"")
            if not inv:
                inv = invalidity_cache[rev.invalidity_date] = _invalidity_extension(
                    der.generalized_time(rev.invalidity_date)
                )
        entries.append((rev.serial, _entry(rev.serial, t, _reason_extension(rev.reason), inv)))
    return join_entries(_sorted_unique(entries)).field()


# One revocation as the register holds it: serial (hex), reason, revocation
# time and invalidity date (RFC 3339 UTC, to the second).
RevocationText = tuple[str, str, str, str | None]


def encode_records(records: Iterable[RevocationText]) -> list[Entry]:
    """Entries, sorted by serial, for revocations as text; refuses a serial twice and the forbidden reasons.

    Times are sliced from their text (see ``der.time_from_text``) rather than
    parsed; the invalidity extension is built once per distinct date.
    """
    invalidity_cache: dict[str, bytes] = {}
    entries: list[Entry] = []
    append = entries.append
    for serial_hex, reason, revoked_at, invalidity_date in records:
        try:
            serial = int(serial_hex, 16)
            revocation_date = der.time_from_text(revoked_at)
            inv = b""
            if invalidity_date is not None:
                inv = invalidity_cache.get(invalidity_date, b"")
                if not inv:
                    inv = invalidity_cache[invalidity_date] = _invalidity_extension(
                        der.generalized_time_from_text(invalidity_date)
                    )
        except ValueError as exc:
            raise CRLError(f"serial {serial_hex}: {exc}") from exc
        append((serial, _entry(serial, revocation_date, _reason_extension(reason), inv)))
    return _sorted_unique(entries)


def _serial_key(serial: int) -> bytes:
    """What ``entry_serials`` reads for ``serial``: the INTEGER's length and content octets."""
    return der.integer(serial)[1:]


def entry_serials(body: bytes, offsets: list[int] | None = None) -> list[bytes]:
    """The serial of each entry of a revokedCertificates content, as read from the DER.

    A serial comes back as its INTEGER's length octet and content octets
    (``_serial_key``): equal bytes are equal serials (DER is canonical), and for
    positive serials of fewer than 128 octets bytes order is serial order, so
    callers compare these without building ints. One Python step per entry,
    the headers read inline (short form first). With ``offsets``, the start of
    each entry is appended to it.
    """
    keys: list[bytes] = []
    append = keys.append
    pos, end = 0, len(body)
    try:
        while pos < end:
            if offsets is not None:
                offsets.append(pos)
            n = body[pos + 1]
            if body[pos] != 0x30:
                raise ValueError("an entry is not a SEQUENCE")
            if n < 0x80:
                first, nxt = pos + 2, pos + 2 + n
            else:
                _, first, nxt = der.read_header(body, pos)
            n = body[first + 1]
            if body[first] != 0x02:
                raise ValueError("an entry does not start with its serial")
            if n < 0x80:
                append(body[first + 1 : first + 2 + n])
            else:
                _, _, serial_end = der.read_header(body, first)
                append(body[first + 1 : serial_end])
            pos = nxt
    except (IndexError, ValueError) as exc:
        raise CRLError(f"not a DER CRL: malformed revokedCertificates ({exc or 'truncated'})") from exc
    if pos != end:
        raise CRLError("not a DER CRL: an entry runs past the end of revokedCertificates")
    return keys


def merge_entries(previous: EncodedEntries, new: list[Entry]) -> EncodedEntries:
    """``previous`` (sorted) with the ``new`` entries (sorted) inserted in serial order; refuses a serial on both.

    The previous entries are located by one walk and copied as whole runs
    between insertion points: a refresh after a few revocations costs a few
    insertions, not a re-encoding of every entry. (``check_crl`` checks the
    order of the result whatever the previous CRL held.)
    """
    if not new:
        return previous
    body = previous.body
    offsets: list[int] = []
    keys = entry_serials(body, offsets)
    offsets.append(len(body))
    parts: list[bytes] = []
    copied = 0  # body[:copied] is in parts
    for serial, entry in new:
        key = _serial_key(serial)
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            raise CRLError(f"serial {serial:x} appears twice")
        parts += (body[copied : offsets[i]], entry)
        copied = offsets[i]
    parts.append(body[copied:])
    return EncodedEntries(b"".join(parts))


def revoked_entries(data: bytes) -> EncodedEntries:
    """The revokedCertificates content of a DER CRL (empty when the field is absent)."""
    try:
        _, pos, _ = der.read_header(data, 0)  # CertificateList
        _, pos, tbs_end = der.read_header(data, pos)  # TBSCertList
        if data[pos] == 0x02:  # version (absent in v1)
            _, _, pos = der.read_header(data, pos)
        for _ in range(3):  # signature, issuer, thisUpdate
            _, _, pos = der.read_header(data, pos)
        if pos < tbs_end and data[pos] in (0x17, 0x18):  # nextUpdate
            _, _, pos = der.read_header(data, pos)
        if pos < tbs_end and data[pos] == 0x30:
            _, start, end = der.read_header(data, pos)
            return EncodedEntries(data[start:end])
    except (IndexError, ValueError) as exc:
        raise CRLError(f"not a DER CRL: {exc or 'truncated'}") from exc
    return EncodedEntries(b"")


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
    spec: CRLSpec,
    revocations: Iterable[Revocation] | EncodedEntries,
    key: IssuerKey | PrivateKey,
) -> bytes:
    """Build and sign a CRL from revocations or entries already encoded; returns its DER.

    Check it with ``check_crl`` before publishing.
    """
    key = as_issuer_key(key)
    if spec.issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CRLError("the signing key does not belong to the issuer certificate")
    if spec.this_update > spec.issuer.not_valid_after_utc:
        raise CRLError("the issuer certificate has expired: its key must not be used any more")
    scheme = signature_scheme(key.public_key())
    revoked = revocations.field() if isinstance(revocations, EncodedEntries) else encode_revoked(revocations)
    tbs = build_tbs(spec, revoked, scheme)
    return der.sequence(tbs, scheme.algorithm_der, der.bit_string(key.sign(tbs, scheme.hash)))


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
            "this_update": iso_utc(self.this_update),
            "next_update": iso_utc(self.next_update),
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
    """Serials on a CRL, in order (through cryptography's entry objects: for tests and small CRLs)."""
    return [r.serial_number for r in crl]


def _key_serial(key: bytes) -> int:
    """The serial of an ``entry_serials`` key."""
    tlv = b"\x02" + key
    _, start, end = der.read_header(tlv, 0)
    return int.from_bytes(tlv[start:end], "big", signed=True)


def verify_signature(data: bytes, issuer: x509.Certificate) -> None:
    """Verify a DER CRL's signature over its TBSCertList bytes as received.

    The consumer verifier's implementation: one implementation of each check.
    """
    try:
        verify_crl_signature(data, issuer)
    except VerifyFailed as exc:
        raise CRLError(f"signature: {exc}") from exc


def check_crl(
    data: bytes,
    issuer: x509.Certificate,
    previous: bytes | None,
    now: dt.datetime,
    max_skew: dt.timedelta = dt.timedelta(minutes=5),
) -> CRLInfo:
    """The checks a CRL passes before it is published; each failure names its check.

    Signature under the issuer's key, CRL number greater than the previous
    CRL's, entries in serial order and no serial twice, every serial of the
    previous CRL still present (RFC 5280 3.3), thisUpdate not in the future.
    cryptography parses both CRLs whole; the serials are then read from the
    DER (``entry_serials``), not through an object per entry.
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
    entries = revoked_entries(data)
    listed = entry_serials(entries.body)
    if len(listed) != len(crl):
        raise CRLError("not a DER CRL: the entries read do not match cryptography's count")
    if any(map(operator.ge, listed, listed[1:])):
        if len(set(listed)) != len(listed):
            raise CRLError("duplicate serial: a serial number appears twice")
        raise CRLError("order: the entries are not sorted by serial")
    if previous is not None:
        try:
            old = x509.load_der_x509_crl(previous)
        except ValueError as exc:
            raise CRLError(f"previous CRL: not a DER CRL: {exc}") from exc
        old_number = crl_number(old)
        if number <= old_number:
            raise CRLError(f"CRL number: {number} is not greater than the previous CRL's {old_number}")
        old_entries = revoked_entries(previous)
        if old_entries != entries:  # the same entries byte for byte (no new revocation): none can be missing
            missing = set(entry_serials(old_entries.body)).difference(listed)
            if missing:
                gone = ", ".join(f"{s:x}" for s in sorted(map(_key_serial, missing))[:5])
                raise CRLError(f"retention: entries of the previous CRL disappeared (serials {gone})")
    fingerprint = issuer.fingerprint(hashes.SHA256()).hex()
    return CRLInfo(number, this_update, next_update, hashlib.sha256(data).hexdigest(), len(listed), fingerprint)


def to_pem(data: bytes) -> bytes:
    """PEM armour of a DER CRL, byte for byte what cryptography writes (64-character lines).

    The DER is armoured as it is, not parsed again: pass a CRL that
    ``check_crl`` accepted.
    """
    text = base64.b64encode(data)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"".join((b"-----BEGIN X509 CRL-----\n", b"\n".join(lines), b"\n-----END X509 CRL-----\n"))
