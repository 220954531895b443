"""MkDocs hooks (``hooks:`` in mkdocs.yml): generate the pages from the publication's committed
state, then link the machine-readable trees into the built site.

The publication folder is ``$CPL_PUBLICATION`` or ``extra.publication`` in mkdocs.yml.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from mkdocs.structure.files import File, Files

from publisher.config import Config
from publisher.config import load as load_config
from publisher.entries import json_entries
from publisher.pki.der import parse_time
from publisher.pki.registers import load_revocations
from publisher.publication import CRL_DIR, LOG_DIR, STATUS_FILE, load_certificate, now_utc, status_bytes
from publisher.site import pages
from publisher.site.export import export_tree
from publisher.tlog import open_log
from verifier.cpl_verify import RULES, iso_utc

_state: dict[str, Any] = {}
VERIFIER = Path(__file__).resolve().parents[2] / "verifier" / "cpl_verify.py"


def _publication(config: Any) -> Config:
    where = os.environ.get("CPL_PUBLICATION") or config.get("extra", {}).get("publication")
    if not where:
        raise SystemExit("set CPL_PUBLICATION or extra.publication to the publication folder")
    base = Path(config["config_file_path"]).parent
    return load_config((base / where).resolve())


def _now(pub: Config) -> dt.datetime:
    # Pages describe the committed state as of its last publish, so builds are reproducible.
    status = pub.root / STATUS_FILE
    if status.exists():
        at = json.loads(status.read_text()).get("generated_at")
        if at:
            return parse_time(str(at))
    return now_utc()


def on_config(config: Any) -> Any:
    _state["pub"] = _publication(config)
    return config


def on_files(files: Files, config: Any) -> Files:
    pub: Config = _state["pub"]
    log = open_log(pub)
    status_path = pub.root / STATUS_FILE
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    items = pages.associations(json_entries(log.entries()))
    generated: dict[str, str] = {"index.md": pages.home(status, _now(pub))}
    revocations = load_revocations(pub.root)
    for issuer in pub.issuers:
        meta_path = pub.root / CRL_DIR / f"{issuer.name}.json"
        if not meta_path.exists():
            continue
        revoked = [
            {
                "serial": r.serial,
                "revoked_at": r.revoked_at,
                "reason": r.reason,
                "invalidity_date": r.invalidity_date or "",
            }
            for r in revocations
            if r.issuer == issuer.name
        ]
        archive_dir = pub.root / CRL_DIR / "archive" / issuer.name
        archive = [int(p.stem) for p in archive_dir.glob("*.crl")] if archive_dir.is_dir() else []
        generated[f"crl/{issuer.name}.md"] = pages.issuer_page(
            issuer.name, json.loads(meta_path.read_text()), revoked, archive
        )
    generated.update(pages.firmware_pages(items))
    generated["transparency-log.md"] = pages.log_page(
        log.signed.raw, (pub.root / LOG_DIR / "vkey").read_text(), items[-50:][::-1]
    )

    def described(path: Path) -> tuple[str, str, str]:
        cert = load_certificate(path)
        return path.stem, cert.subject.rfc4514_string(), cert.fingerprint(hashes.SHA256()).hex()

    anchors = [described(p) for p in pub.trust_anchors]
    others = [described(i.certificate) for i in pub.issuers if i.certificate not in pub.trust_anchors]
    generated["pki.md"] = pages.pki_page(anchors, others)
    # From the verifier's table itself, never a copy: the page cannot drift from what intake and audit run.
    generated[pages.RULES_PAGE] = pages.rules_page(RULES)
    if VERIFIER.exists():
        digest = hashlib.sha256(VERIFIER.read_bytes()).hexdigest()
    else:
        digest = "(the verifier is not part of this build)"
    generated["verify/download.md"] = "\n".join(
        [
            "# Download the verifier",
            "",
            '<a href="../cpl_verify.py">cpl_verify.py</a> (Python 3.9+, needs only `cryptography` 42.0 or later).',
            "",
            f"SHA-256: <code>{digest}</code>",
            "",
            "Check the digest before you run it: `sha256sum cpl_verify.py`.",
        ]
    )
    for uri, content in generated.items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))
    _state["search"] = pages.search_shards(items)
    return files


def on_post_build(config: Any) -> None:
    pub: Config = _state["pub"]
    site = Path(config["site_dir"])
    state = export_tree(pub, site, iso_utc(_now(pub)))
    status_path = pub.root / STATUS_FILE
    if status_path.exists():
        shutil.copyfile(status_path, site / STATUS_FILE)
    else:
        (site / STATUS_FILE).write_bytes(status_bytes(state))
    for rel, data in _state.get("search", {}).items():
        out = site / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    if VERIFIER.exists():
        (site / "verify").mkdir(exist_ok=True)
        shutil.copyfile(VERIFIER, site / "verify" / "cpl_verify.py")
        digest = hashlib.sha256(VERIFIER.read_bytes()).hexdigest()
        (site / "verify" / "cpl_verify.py.sha256").write_text(f"{digest}  cpl_verify.py\n")
    (site / "_headers").write_text(HEADERS)


# For hosts that honour a headers file (Netlify, Cloudflare Pages); GitHub Pages does not.
HEADERS = """/log/checkpoint
  Content-Type: text/plain; charset=utf-8
  Cache-Control: public, max-age=5
/log/tile/*
  Content-Type: application/octet-stream
  Cache-Control: public, max-age=31536000, immutable
/log/evidence/*
  Cache-Control: public, max-age=31536000, immutable
/crl/archive/*
  Cache-Control: public, max-age=31536000, immutable
/crl/*
  Cache-Control: public, max-age=300
/status.json
  Cache-Control: public, max-age=60
"""
