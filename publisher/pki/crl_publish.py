"""Refreshing the published CRLs: decide which are due, sign, check, write ``crl/``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .. import fsio
from ..config import Config, IssuerConfig
from . import keys, registers
from .authority import load_certificate, now_utc
from .crl import CRLInfo, CRLSpec, Revocation, check_crl, crl_number, sign_crl, to_pem
from .policy import check_key_in_use

CRL_DIR = "crl"


class CRLRefused(RuntimeError):
    """A CRL could not be issued; nothing was published."""


@dataclass(frozen=True)
class Refreshed:
    """One newly published CRL."""

    issuer: str
    info: CRLInfo
    reason: str


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def revocations_for(config: Config, issuer: str) -> tuple[list[Revocation], str]:
    """The issuer's revocations from the register, and a digest that changes when they do."""
    digest = hashlib.sha256()
    out = []
    for r in registers.load_revocations(config.root):
        if r.issuer != issuer:
            continue
        digest.update(f"{r.serial} {r.reason} {r.revoked_at} {r.invalidity_date}\n".encode())
        out.append(
            Revocation(
                int(r.serial, 16),
                parse_time(r.revoked_at),
                r.reason,
                parse_time(r.invalidity_date) if r.invalidity_date else None,
            )
        )
    return out, digest.hexdigest()


def current(config: Config, issuer: str) -> tuple[bytes | None, dict[str, object] | None]:
    """The published CRL of an issuer and its JSON description, each if present.

    The DER file is the truth: retention and numbering are checked against
    it even when its description is missing or stale.
    """
    base = config.root / CRL_DIR
    try:
        data = (base / f"{issuer}.crl").read_bytes()
    except FileNotFoundError:
        data = None
    try:
        meta = json.loads((base / f"{issuer}.json").read_text())
    except (FileNotFoundError, ValueError):
        meta = None
    return data, meta if isinstance(meta, dict) else None


def due(
    issuer: IssuerConfig, crl: bytes | None, meta: dict[str, object] | None, register_digest: str, now: dt.datetime
) -> str | None:
    """Why a new CRL is due, or None: no CRL yet, files out of step, register changed, or threshold passed."""
    if crl is None:
        return "no CRL published yet"
    if meta is None or meta.get("sha256") != hashlib.sha256(crl).hexdigest():
        return "the CRL's description is missing or out of step (an interrupted write)"
    if meta.get("register_sha256") != register_digest:
        return "the revocation register changed"
    this_update = parse_time(str(meta["this_update"]))
    next_update = parse_time(str(meta["next_update"]))
    if now >= this_update + (next_update - this_update) * issuer.refresh_fraction:
        return f"{issuer.refresh_fraction:.0%} of the CRL's lifetime has passed"
    return None


def refresh(config: Config, now: dt.datetime | None = None, force: bool = False) -> list[Refreshed]:
    """Sign, check and publish every CRL that is due (all of them with ``force``)."""
    now = now or now_utc()
    done = []
    for issuer in config.issuers:
        revocations, digest = revocations_for(config, issuer.name)
        previous, meta = current(config, issuer.name)
        why = due(issuer, previous, meta, digest, now) or ("forced" if force else None)
        if why is None:
            continue
        done.append(Refreshed(issuer.name, publish_one(config, issuer, revocations, digest, previous, now), why))
    return done


def publish_one(
    config: Config,
    issuer: IssuerConfig,
    revocations: list[Revocation],
    digest: str,
    previous: bytes | None,
    now: dt.datetime,
) -> CRLInfo:
    """Reserve a number, sign, check against the previous CRL, and write the files (archive first)."""
    cert = load_certificate(issuer.certificate)
    expired = check_key_in_use(cert.not_valid_after_utc, now, f"issuer {issuer.name}'s certificate")
    if expired:
        raise CRLRefused(str(expired[0]))
    key = keys.load_private_key(issuer.key, config.root)
    floor = 1
    if previous is not None:
        floor = crl_number(x509.load_der_x509_crl(previous)) + 1
    number = registers.reserve_crl_number(config.root, issuer.name, at_least=floor)
    spec = CRLSpec(cert, number, now, now + issuer.crl_lifetime, config.crl_url(issuer.name), issuer.is_root)
    data = sign_crl(spec, revocations, key)
    info = check_crl(data, cert, previous, now)
    meta = {**info.to_json(), "issuer": issuer.name, "url": config.crl_url(issuer.name), "register_sha256": digest}
    base = Path(CRL_DIR)
    fsio.write_files(config.root, {str(base / "archive" / issuer.name / f"{number}.crl"): data})
    fsio.write_files(
        config.root,
        {
            str(base / f"{issuer.name}.crl"): data,
            str(base / f"{issuer.name}.pem"): to_pem(data),
            str(base / f"{issuer.name}.json"): json.dumps(meta, sort_keys=True, indent=1).encode() + b"\n",
        },
    )
    return info
