"""Shared helpers for tests of the IKI side: a demo publication in temporary folders, and end-entity certificates.

pub = make_publication(tmp_path, algorithm="ec-p384")
ee = issue_ee(pub)                      # an IKI certificate from the issuing ICA, recorded in the register
key = issuer_key(pub, pub.issuer_name)  # the issuing ICA's private key (for crafting test CRLs)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from publisher import keys, publication, scaffold
from publisher.config import CONFIG_NAME, Config, load
from publisher.pki import authority, profile
from publisher.pki.policy import Kind
from publisher.publish import operations

SITE_URL = "https://crl.example.test/cpl"
ORIGIN = "example.test/cpl/log"


@dataclass
class Publication:
    """A publication made by ``init_publication`` (keys in a sibling folder, outside it)."""

    config: Config
    keys_dir: Path
    hierarchy: scaffold.Hierarchy
    root_name: str = "iki-root"
    issuer_name: str = "ica"

    @property
    def root(self) -> Path:
        return self.config.root

    def reload(self) -> Config:
        """Re-read ``publisher.toml`` (after a test edited it)."""
        self.config = load(self.root)
        return self.config

    def edit_config(self, old: str, new: str) -> Config:
        """Replace every occurrence of an exact piece of ``publisher.toml`` and reload it."""
        path = self.root / CONFIG_NAME
        text = path.read_text()
        if old not in text:
            raise AssertionError(f"{old!r} is not in {path}")
        path.write_text(text.replace(old, new))
        return self.reload()

    def chain_pem(self) -> bytes:
        """Root then issuing ICA certificate, PEM (an ``openssl -CAfile``)."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.hierarchy.root_cert, self.hierarchy.issuing_cert)
        )


def make_publication(
    base: Path, algorithm: str = keys.DEFAULT_ALGORITHM, now: dt.datetime | None = None
) -> Publication:
    """A new publication in ``base/publication`` with its keys in ``base/keys``."""
    hierarchy = scaffold.init_publication(
        base / "publication", base / "keys", SITE_URL, ORIGIN, algorithm=algorithm, now=now
    )
    return Publication(load(base / "publication"), (base / "keys").resolve(), hierarchy)


def issuer_key(pub: Publication, name: str) -> keys.PrivateKey:
    """The private key of a configured issuer, loaded under the custody rules."""
    return keys.load_private_key(pub.config.issuer(name).key, pub.root)


def ee_request(
    pub: Publication,
    issuer: str | None = None,
    org: str = "Acme Meters Ltd",
    org_id: str = "00-11-22-33",
    role: str = "Manufacturer",
    days: int = 365,
    now: dt.datetime | None = None,
    serial: int | None = None,
) -> profile.IssueRequest:
    """A request for an end-entity IKI certificate with a fresh P-256 key."""
    now = now or publication.now_utc()
    issuer = issuer or pub.issuer_name
    return profile.IssueRequest(
        Kind.IKI,
        profile.ee_subject(pub.config.profile, org, org_id, role),
        keys.generate("ec-p256").public_key(),
        serial or x509.random_serial_number(),
        now,
        now + dt.timedelta(days=days),
        pub.config.crl_url(issuer),
    )


def issue_ee(
    pub: Publication,
    issuer: str | None = None,
    role: str = "Manufacturer",
    now: dt.datetime | None = None,
    **kw: object,
) -> authority.Issued:
    """Issue (policy-checked, recorded in the register) an end-entity IKI certificate."""
    issuer = issuer or pub.issuer_name
    request = ee_request(pub, issuer, role=role, now=now, **kw)  # type: ignore[arg-type]
    return operations.issue(pub.config, issuer, request, role=role, now=now)
