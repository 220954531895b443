"""Organisations with IKI certificates, and what they sign: the one way the demo, the tests and the
benchmarks issue a party (policy-checked, registered, committed by ``publish.operations.issue``) and sign
a submission spreadsheet (a detached CMS SignedData, binary, DER, one SignerInfo per signer)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from publisher import keys
from publisher.config import Config
from publisher.pki import profile
from publisher.pki.policy import Kind
from publisher.publish import operations


@dataclass(frozen=True)
class Party:
    """An organisation's IKI certificate and private key, and the files they were written to (if any)."""

    org_id: str
    name: str
    role: str
    cert: x509.Certificate
    key: keys.PrivateKey
    cert_path: Path | None = None
    key_path: Path | None = None


def iki_request(
    config: Config,
    name: str,
    org_id: str,
    role: str,
    public_key: keys.PublicKey,
    not_before: dt.datetime,
    days: int,
    issuer: str = "ica",
) -> profile.IssueRequest:
    """The request for an end-entity IKI certificate of organisation ``org_id`` in ``role``."""
    return profile.IssueRequest(
        Kind.IKI,
        profile.ee_subject(config.profile, name, org_id, role),
        public_key,
        x509.random_serial_number(),
        not_before,
        not_before + dt.timedelta(days=days),
        config.crl_url(issuer),
    )


def issue_party(
    config: Config,
    name: str,
    org_id: str,
    role: str,
    now: dt.datetime,
    *,
    issuer: str = "ica",
    key: keys.PrivateKey | None = None,
    not_before: dt.datetime | None = None,
    days: int = 730,
    approval_ref: str | None = None,
    folder: Path | None = None,
    stem: str | None = None,
) -> Party:
    """Issue an IKI certificate (a new P-256 key unless ``key``); with ``folder``, write its certificate
    (``<stem>.pem``) and key (``<stem>.key``, private) there, ``stem`` defaulting to ``<org id>-<role>``."""
    key = key or keys.generate()
    request = iki_request(config, name, org_id, role, key.public_key(), not_before or now, days, issuer)
    cert = operations.issue(config, issuer, request, role=role, approval_ref=approval_ref, now=now).certificate
    if folder is None:
        return Party(org_id, name, role, cert, key)
    stem = stem or f"{org_id}-{role.lower()}"
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    folder.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keys.write_private_key(key_path, key)
    return Party(org_id, name, role, cert, key, cert_path, key_path)


def sign_detached(data: bytes, signers: Sequence[Party]) -> bytes:
    """A detached CMS SignedData over ``data`` with one SignerInfo per signer (DER), as ``openssl cms -sign
    -binary`` makes: the submission format of the README."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
    for party in signers:
        builder = builder.add_signer(party.cert, party.key, hashes.SHA256())
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(serialization.Encoding.DER, options)
