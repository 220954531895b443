"""The demo publication that ``make demo`` builds from built-in sample data."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .config import load as load_config
from .log_key import load_log_signer
from .note import b64encode
from .pki import authority, crl_publish, keys, profile, revocation
from .pki.policy import Kind
from .tlog import TileLog

DEMO_ORIGIN = "demo.cpl-transparency.example/log"
DEMO_SITE = "http://127.0.0.1:8000"
MARKER = ".cpl-demo"
_DEVICE_TYPES = ["ESME", "GSME", "CHF", "GPF", "PPMID", "IHD", "HCALCS"]
_MANUFACTURERS = [("1001", "Acme Meters Ltd"), ("1002", "Brightwater Devices"), ("1003", "Cobalt Energy Systems")]
_ORGANISATIONS = [
    *((mid, name, "Manufacturer") for mid, name in _MANUFACTURERS),
    ("2001", "Northern Power Supply", "Supplier"),
    ("2002", "Southern Gas & Electric", "Supplier"),
    ("9001", "Smart DCC Ltd", "DCC"),
]


def sample_entry(i: int) -> bytes:
    """A deterministic sample record in canonical JSON (sorted keys, no whitespace)."""
    mid, name = _MANUFACTURERS[i % len(_MANUFACTURERS)]
    record = {
        "type": "demo-sample/v1",
        "manufacturer_id": mid,
        "manufacturer_name": name,
        "model_id": f"M{i % 17:03d}",
        "hardware_version": f"{1 + i % 3}.0",
        "firmware_version": f"{i // 17}.{i % 10}",
        "device_type": _DEVICE_TYPES[i % len(_DEVICE_TYPES)],
        "image_hash": hashlib.sha256(f"demo image {i}".encode()).hexdigest(),
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def _fresh_dir(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not a demo folder; refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("built by cpl-publisher demo; safe to delete\n")


def build(out: Path, entries: int) -> dict[str, object]:
    """Build the demo publication under ``out``; return what was made.

    ``out/publication`` holds what is published (CA certificates, CRLs,
    registers, the log); ``out/keys`` the private keys, which never go there;
    ``out/certs`` the organisations' certificates and keys.
    """
    _fresh_dir(out)
    pub, keys_dir, org_dir = out / "publication", out / "keys", out / "certs"
    authority.init_publication(pub, keys_dir, DEMO_SITE, DEMO_ORIGIN)
    config = load_config(pub)
    now = authority.now_utc()
    issued = []
    for org_id, name, role in _ORGANISATIONS:
        key = keys.generate()
        request = profile.IssueRequest(
            Kind.IKI,
            profile.ee_subject(config.profile, name, org_id, role),
            key.public_key(),
            x509.random_serial_number(),
            now,
            now + dt.timedelta(days=730),
            config.crl_url("ica"),
        )
        cert = authority.issue(config, "ica", request, role=role).certificate
        stem = f"{org_id}-{role.lower()}"
        keys.write_private_key(org_dir / f"{stem}.key", key)
        (org_dir / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.append(cert)
    # Two revocations: a compromised manufacturer key and a superseded supplier certificate.
    revocation.revoke(config, "ica", issued[2].serial_number, "keyCompromise", now - dt.timedelta(days=2), "DEMO-1")
    revocation.revoke(config, "ica", issued[4].serial_number, "superseded", ref="DEMO-2")
    crls = crl_publish.refresh(config)

    signer = load_log_signer(config.log_key, pub)
    log_dir = pub / "log"
    batch = max(1, entries // 4)
    with TileLog.open(log_dir, signer) as log:
        for start in range(0, entries, batch):
            log.append([sample_entry(i) for i in range(start, min(entries, start + batch))])
        size, root = log.size, log.root_hash
        sample = min(42, size - 1) if size else None
        if sample is not None:
            (out / "sample-entry.json").write_bytes(log.entry(sample))
            (out / "sample-entry.tlog-proof").write_text(log.tlog_proof(sample).encode())
    return {
        "publication": str(pub),
        "log": str(log_dir),
        "key_file": str(config.log_key.file),
        "vkey": signer.verifier.vkey,
        "size": size,
        "root": b64encode(root),
        "sample_index": sample,
        "crls": {c.issuer: {"number": c.info.number, "entries": c.info.entries} for c in crls},
        "root_sha256": authority.load_certificate(pub / "pki" / "iki-root.pem").fingerprint(hashes.SHA256()).hex(),
    }


def describe(info: dict[str, object]) -> str:
    """Human-readable summary: where the files are and how to verify them."""
    out = Path(str(info["log"])).parent.parent
    pub = info["publication"]
    lines = [
        f"Demo publication: {pub}  (private keys in {out}/keys, never published)",
        f"  IKI root ICA: {pub}/pki/iki-root.pem  SHA-256 {info['root_sha256']}",
        f"  CRLs: {pub}/crl/ica.crl, {pub}/crl/iki-root.crl  ({info['crls']})",
        f"  Log: {info['log']} ({info['size']} entries, root {info['root']})",
        "Verify the issuing ICA's CRL with OpenSSL:",
        f"  cat {pub}/pki/iki-root.pem {pub}/pki/ica.pem > /tmp/iki-chain.pem",
        f"  openssl crl -inform DER -in {pub}/crl/ica.crl -CAfile /tmp/iki-chain.pem -noout -verify",
        "Verify every tile and bundle of the log against its signed checkpoint:",
        f"  .venv/bin/cpl-publisher log verify {info['log']} --vkey '{info['vkey']}'",
    ]
    if info.get("sample_index") is not None:
        lines += [
            f"Verify the offline inclusion proof of entry {info['sample_index']}:",
            f"  .venv/bin/cpl-publisher log check-proof {out}/sample-entry.tlog-proof "
            f"--entry {out}/sample-entry.json --vkey '{info['vkey']}'",
        ]
    return "\n".join(lines)
