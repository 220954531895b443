"""Detached CMS (RFC 5652) signatures over a submission spreadsheet. Pure: bytes in, signers out.

``asn1crypto`` parses the structures and keeps the signed attributes exactly
as received (the signature covers those bytes, re-tagged as a SET, RFC 5652
5.4); every digest and signature is checked with ``cryptography``. Signers
are returned with their certificates; roles are decided from certificates
later, never from the order of signers.

Accepted endorsement forms: a second SignerInfo in the same SignedData
(``openssl cms -resign``), a separate ``.p7s``, or an RFC 5652 11.4
countersignature attribute on a SignerInfo.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from asn1crypto import cms as acms
from asn1crypto import pem
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

MAX_P7S_BYTES = 256 * 1024
_HASHES: dict[str, tuple[hashes.HashAlgorithm, str]] = {
    "sha256": (hashes.SHA256(), "sha256"),
    "sha384": (hashes.SHA384(), "sha384"),
    "sha512": (hashes.SHA512(), "sha512"),
}


class CMSError(ValueError):
    """A signature file failed a check; ``check`` names it."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(message)


@dataclass(frozen=True)
class Signer:
    """A signature that verified over the spreadsheet (or, for a countersignature, over a signature)."""

    certificate: x509.Certificate
    signing_time: dt.datetime | None
    source: str  # file name, and signer position for messages
    countersigns: x509.Certificate | None = None  # the certificate of the signer it countersigns


def load_signed_data(data: bytes, name: str) -> acms.SignedData:
    """Parse a ``.p7s`` (DER, or PEM armoured) into its SignedData."""
    if len(data) > MAX_P7S_BYTES:
        raise CMSError("file size", f"{name} is {len(data)} bytes; the limit is {MAX_P7S_BYTES}")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            _, _, data = pem.unarmor(data.strip())
        except ValueError as exc:
            raise CMSError("CMS format", f"{name}: bad PEM armour") from exc
    try:
        info = acms.ContentInfo.load(data, strict=True)
        if info["content_type"].native != "signed_data":
            raise CMSError("CMS format", f"{name}: not a CMS SignedData (content type {info['content_type'].native})")
        signed = info["content"]
        # Parse every level now, so a truncated or malformed file fails here, without
        # converting it all to Python values (.native costs ~1.6 ms per file).
        signed._parse_children(recurse=True)
    except CMSError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CMSError("CMS format", f"{name}: not a valid DER CMS SignedData ({exc.__class__.__name__})") from exc
    if not isinstance(signed, acms.SignedData):
        raise CMSError("CMS format", f"{name}: not a CMS SignedData")
    if signed["encap_content_info"]["content_type"].native != "data":
        raise CMSError("content type", f"{name}: encapsulated content type is not id-data")
    if signed["encap_content_info"]["content"].native is not None:
        raise CMSError("CMS format", f"{name}: signature must be detached (the spreadsheet is a separate file)")
    return signed


def _certificates(signed: acms.SignedData) -> list[x509.Certificate]:
    out = []
    for choice in signed["certificates"] or []:
        if choice.name == "certificate":
            out.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    return out


def _find_cert(sid: acms.SignerIdentifier, certs: list[x509.Certificate], where: str) -> x509.Certificate:
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"].dump()
        serial = sid.chosen["serial_number"].native
        for cert in certs:
            if cert.serial_number == serial and cert.issuer.public_bytes() == issuer:
                return cert
    else:
        ski = sid.chosen.native
        for cert in certs:
            try:
                if cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == ski:
                    return cert
            except x509.ExtensionNotFound:
                continue
    raise CMSError(
        "signer certificate",
        f"{where}: the signer's certificate is not in the SignedData; embed it (drop `openssl cms -nocerts`): the "
        "publication checks and logs the certificate the file was signed with, never one it would look up",
    )


def _as_crlf(content: bytes) -> bytes:
    """The bytes a text-mode signer (``openssl cms`` without ``-binary``) digests: every line ending CRLF."""
    return content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _attr(attrs: acms.CMSAttributes, name: str, where: str, required: bool = True) -> object:
    found = [a for a in attrs if a["type"].native == name]
    if not found:
        if required:
            raise CMSError(name, f"{where}: the signed attribute {name} is missing")
        return None
    if len(found) > 1 or len(found[0]["values"]) != 1:
        raise CMSError(name, f"{where}: the signed attribute {name} must occur exactly once with one value")
    return found[0]["values"][0]


def _verify_signer_info(
    si: acms.SignerInfo, content: bytes, certs: list[x509.Certificate], where: str, counter: bool
) -> tuple[x509.Certificate, dt.datetime | None]:
    digest_name = si["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        accepted = ", ".join(sorted(_HASHES))
        raise CMSError(
            "digest algorithm", f"{where}: digest algorithm {digest_name} is not accepted; sign with one of {accepted}"
        )
    hash_alg, hashlib_name = _HASHES[digest_name]
    cert = _find_cert(si["sid"], certs, where)
    attrs = si["signed_attrs"]
    if not attrs:
        raise CMSError(
            "message_digest",
            f"{where}: the signature has no signed attributes (as `openssl cms -noattr`, or GnuTLS `certtool "
            "--p7-detached-sign` without `--p7-time`, make); sign with them: the messageDigest attribute binds the "
            "signature to this spreadsheet and signingTime dates it",
        )
    content_type = _attr(attrs, "content_type", where, required=not counter)
    if counter and content_type is not None:
        raise CMSError("content_type", f"{where}: a countersignature must not carry a contentType (RFC 5652 11.4)")
    if not counter and getattr(content_type, "native", None) != "data":
        raise CMSError("content_type", f"{where}: contentType is not id-data")
    digest = _attr(attrs, "message_digest", where)
    if getattr(digest, "native", None) != hashlib.new(hashlib_name, content).digest():
        what = "the signature it countersigns" if counter else "the spreadsheet"
        hint = ""
        if not counter and getattr(digest, "native", None) == hashlib.new(hashlib_name, _as_crlf(content)).digest():
            hint = "; it was signed in text mode (line endings changed to CRLF): sign with `openssl cms -binary`"
        raise CMSError("message_digest", f"{where}: messageDigest does not match {what}{hint}")
    when = _attr(attrs, "signing_time", where, required=False)
    signing_time = getattr(when, "native", None)
    # The signature covers the DER of the attributes exactly as received, as a SET OF.
    received = attrs.dump()
    signed_bytes = b"\x31" + received[1:]
    signature = si["signature"].native
    algo = si["signature_algorithm"].signature_algo
    key = cert.public_key()
    try:
        if algo == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed_bytes, ec.ECDSA(hash_alg))
        elif algo == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed_bytes, padding.PKCS1v15(), hash_alg)
        elif algo == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            params = si["signature_algorithm"]["parameters"]
            pss_hash = _HASHES.get(params["hash_algorithm"]["algorithm"].native, (None, ""))[0]
            if pss_hash is None:
                raise CMSError("signature algorithm", f"{where}: RSA-PSS hash is not accepted")
            pss = padding.PSS(padding.MGF1(pss_hash), params["salt_length"].native)
            key.verify(signature, hashlib.new(pss_hash.name, signed_bytes).digest(), pss, Prehashed(pss_hash))
        else:
            raise CMSError("signature algorithm", f"{where}: signature algorithm {algo} does not fit the key")
    except InvalidSignature as exc:
        raise CMSError("signature", f"{where}: the signature does not verify over its signed attributes") from exc
    if isinstance(signing_time, dt.datetime) and signing_time.tzinfo is None:
        signing_time = signing_time.replace(tzinfo=dt.UTC)
    return cert, signing_time if isinstance(signing_time, dt.datetime) else None


def verify_detached(data: bytes, content: bytes, name: str) -> tuple[list[Signer], list[x509.Certificate]]:
    """Verify every SignerInfo (and countersignature) of a detached ``.p7s`` over ``content``.

    Returns the signers and every certificate the file carries (intermediates for path validation).
    Any malformed part (unknown algorithm, bad certificate, bad time) is a ``CMSError``.
    """
    try:
        return _verify_detached(data, content, name)
    except CMSError:
        raise
    except Exception as exc:  # asn1crypto and cryptography raise many types on malformed input
        raise CMSError("CMS format", f"{name}: malformed CMS structure ({type(exc).__name__}: {exc})") from exc


def _verify_detached(data: bytes, content: bytes, name: str) -> tuple[list[Signer], list[x509.Certificate]]:
    signed = load_signed_data(data, name)
    certs = _certificates(signed)
    infos = list(signed["signer_infos"])
    if not infos:
        raise CMSError("signer", f"{name}: no signers")
    signers = []
    for n, si in enumerate(infos, 1):
        where = f"{name} signer {n}"
        cert, when = _verify_signer_info(si, content, certs, where, counter=False)
        signers.append(Signer(cert, when, where))
        for attr in si["unsigned_attrs"] or []:
            if attr["type"].native != "counter_signature":
                continue
            for m, counter in enumerate(attr["values"], 1):
                cwhere = f"{where} countersignature {m}"
                counter_si = counter if isinstance(counter, acms.SignerInfo) else acms.SignerInfo.load(counter.dump())
                ccert, cwhen = _verify_signer_info(counter_si, si["signature"].native, certs, cwhere, counter=True)
                signers.append(Signer(ccert, cwhen, cwhere, countersigns=cert))
    return signers, certs
