"""The demo IKI certification authority: a root ICA, an issuing ICA, and end-entity IKI certificates.

``make demo`` and the tests use it; a real deployment brings its own CA
certificates and keys and only configures them in ``publisher.toml``.
Every issuance runs the policy checks first and is recorded in the register.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import fsio, transaction
from ..config import CONFIG_NAME, Config, ConfigError, load
from ..note import Signer
from ..tlog import TileLog
from . import keys, profile, registers
from .policy import CertFacts, Kind, Refusal, check, check_key_in_use, check_one_role
from .registers import IssuedRecord

PKI_DIR = "pki"
CERTS_DIR = "certs"


class PolicyRefused(ValueError):
    """Issuance refused by one or more policy rules."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        super().__init__("; ".join(str(r) for r in refusals))


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_utc() -> dt.datetime:
    """The current time, to the second (certificates and CRLs carry seconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM or DER certificate file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc.strerror or exc}") from exc
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM or DER certificate") from exc


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


def _record(issuer: str, cert: x509.Certificate, kind: Kind, role: str | None, ref: str | None) -> bytes:
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
            not_before=_iso(f.not_before),
            not_after=_iso(f.not_after),
            issued_at=_iso(now_utc()),
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
    config: Config,
    issuer_name: str,
    request: profile.IssueRequest,
    role: str | None = None,
    approval_ref: str | None = None,
    now: dt.datetime | None = None,
) -> Issued:
    """Check the policy, sign, record and store a certificate issued by a configured issuer."""
    now = now or now_utc()
    with transaction.session(config.root, "issue") as session:
        return _issue_locked(session, config, issuer_name, request, role, approval_ref, now)


def _issue_locked(
    session: transaction.Session,
    config: Config,
    issuer_name: str,
    request: profile.IssueRequest,
    role: str | None,
    approval_ref: str | None,
    now: dt.datetime,
) -> Issued:
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
    issuer_key = keys.load_private_key(issuer_cfg.key, config.root)
    cert = profile.build_certificate(request, config.profile, issuer_key, issuer_cert)
    rel = f"{CERTS_DIR}/{issuer_name}/{cert.serial_number:x}.pem"
    session.apply(
        transaction.Change(
            "issue",
            f"issue {request.kind.value} {cert.serial_number:x} ({role})",
            writes={rel: cert.public_bytes(serialization.Encoding.PEM)},
            appends={registers.ISSUED: _record(issuer_name, cert, request.kind, role, approval_ref)},
        )
    )
    return Issued(cert, config.root / rel)


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Hierarchy:
    """What ``init_publication`` created."""

    root_cert: x509.Certificate
    issuing_cert: x509.Certificate
    log_key_file: Path


def init_publication(
    publication: Path,
    keys_dir: Path,
    site_url: str,
    origin: str,
    algorithm: str = keys.DEFAULT_ALGORITHM,
    root_name: str = "iki-root",
    issuer_name: str = "ica",
    now: dt.datetime | None = None,
) -> Hierarchy:
    """Create a publication with a demo IKI hierarchy (root ICA + issuing ICA) and a log key.

    The keys go to ``keys_dir``, which must lie outside the publication.
    """
    now = now or now_utc()
    publication = publication.resolve()
    keys_dir = keys_dir.resolve()
    keys.check_key_destination(keys_dir, publication)
    if publication.exists() and any(publication.iterdir()):
        raise ConfigError(f"{publication} is not empty")
    for name in (root_name, issuer_name):
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", name):
            raise ConfigError(f"issuer name {name!r} must be lowercase letters, digits and '-'")
    publication.mkdir(parents=True, exist_ok=True)
    keys_dir.mkdir(parents=True, exist_ok=True)
    root_key, ica_key = keys.generate(algorithm), keys.generate(algorithm)
    root_key_file, ica_key_file = keys_dir / f"{root_name}.key", keys_dir / f"{issuer_name}.key"
    keys.write_private_key(root_key_file, root_key)
    keys.write_private_key(ica_key_file, ica_key)
    log_signer = Signer.generate(origin)
    log_key_file = keys_dir / "log.key"
    log_key_file.write_text(log_signer.skey + "\n")
    log_key_file.chmod(0o600)
    site = site_url.rstrip("/")
    text = f"""# Publication configuration (see the README, "Configuration").
[publication]
origin = {_toml_str(origin)}
site_url = {_toml_str(site)}

[log]
key_file = {_toml_str(str(log_key_file))}

[[issuers]]
name = {_toml_str(root_name)}
root = true
certificate = "{PKI_DIR}/{root_name}.pem"
key_file = {_toml_str(str(root_key_file))}
crl_lifetime_days = 365
refresh_fraction = 0.5

[[issuers]]
name = {_toml_str(issuer_name)}
certificate = "{PKI_DIR}/{issuer_name}.pem"
key_file = {_toml_str(str(ica_key_file))}
crl_lifetime_days = 7
refresh_fraction = 0.5

[trust]
anchors = ["{PKI_DIR}/{root_name}.pem"]

[profile]
extended_key_usage = "1.3.6.1.4.1.55555.1.1"
organisation_id_attribute = "organizationIdentifier"

[profile.roles]
Manufacturer = "Manufacturer"
Supplier = "Supplier"
DCC = "DCC"
"""
    (publication / CONFIG_NAME).write_text(text)
    config = load(publication)
    rules = config.rules
    root_req = profile.IssueRequest(
        Kind.ICA_ROOT,
        profile.ca_subject("IKI Root ICA (demo)"),
        root_key.public_key(),
        x509.random_serial_number(),
        now,
        now + dt.timedelta(days=rules.ica_root_max_days),
        # The root names its own ARL too, so that the ARL's distribution point covers it
        # (OpenSSL's -crl_check_all checks the root against the ARL's scope).
        config.crl_url(root_name),
    )
    refusals = check(profile.facts_of_request(root_req), existing_facts(config), rules)
    if refusals:
        raise PolicyRefused(refusals)
    root_cert = profile.build_certificate(root_req, config.profile, root_key, None)
    ica_req = profile.IssueRequest(
        Kind.ICA_ISSUING,
        profile.ca_subject("IKI Issuing ICA (demo)"),
        ica_key.public_key(),
        x509.random_serial_number(),
        now,
        now + dt.timedelta(days=rules.ica_issuing_max_days),
        config.crl_url(root_name),
    )
    refusals = check(profile.facts_of_request(ica_req), [profile.facts(root_cert, Kind.ICA_ROOT)], rules)
    if refusals:
        raise PolicyRefused(refusals)
    ica_cert = profile.build_certificate(ica_req, config.profile, root_key, root_cert)
    for name, cert in ((root_name, root_cert), (issuer_name, ica_cert)):
        fsio.write_file(publication / PKI_DIR / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    registers.append_line(publication, registers.ISSUED, _record("", root_cert, Kind.ICA_ROOT, None, None))
    registers.append_line(publication, registers.ISSUED, _record(root_name, ica_cert, Kind.ICA_ISSUING, None, None))
    TileLog.create(publication / "log", log_signer).close()
    return Hierarchy(root_cert, ica_cert, log_key_file)
