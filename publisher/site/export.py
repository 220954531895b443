"""The machine-readable part of the site: what consumers and the verifier fetch at stable URLs.

Large trees (tiles, bundles, evidence, the CRL archive) are hard-linked from
the publication, not copied; generated files (lookup shards, ``status.json``)
are written. No file is written per entry: inclusion proofs are computed from
the tiles (``cpl-verify inclusion ... --save-proof FILE`` saves one for offline use).

    /crl/<issuer>.crl .pem .json, /crl/archive/<issuer>/<number>.crl
    /pki/<name>.pem
    /log/checkpoint, /log/vkey, /log/tile/..., /log/evidence/<sha256>
    /log/lookup/hash/<3 hex>.json, /log/lookup/model/<3 hex>.json, /log/lookup/tile/{0,1}/<3 digits>
    /status.json
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from publisher.config import Config
from publisher.publication import CRL_DIR, EVIDENCE_DIR, LOG_DIR, PKI_DIR, STATUS_FILE, status, status_bytes
from publisher.site.lookup import lookup_files
from publisher.tlog import open_log


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another filesystem: fall back to a copy
        shutil.copy2(src, dst)


def _public_files(tree: Path) -> Iterator[Path]:
    """Files under ``tree``, skipping hidden names (private state, temporaries)."""
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                yield Path(dirpath) / name


def link_tree(src: Path, dst: Path) -> int:
    """Hard-link every public file of ``src`` into ``dst``; returns the count."""
    count = 0
    for f in _public_files(src):
        _link(f, dst / f.relative_to(src))
        count += 1
    return count


def export_tree(config: Config, out: Path, generated_at: str) -> dict[str, object]:
    """Write the machine-readable site tree into ``out``; return ``status.json``'s content."""
    log = open_log(config)
    linked = 0
    for sub in (CRL_DIR, PKI_DIR):
        if (config.root / sub).is_dir():
            linked += link_tree(config.root / sub, out / sub)
    for name in ("checkpoint", "vkey"):
        _link(config.root / LOG_DIR / name, out / LOG_DIR / name)
    for sub in ("tile", EVIDENCE_DIR):
        if (config.root / LOG_DIR / sub).is_dir():
            linked += link_tree(config.root / LOG_DIR / sub, out / LOG_DIR / sub)

    generated = lookup_files(log.entries())
    for rel, data in generated.items():
        path = out / LOG_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    state = status(config, log, generated_at)
    (out / STATUS_FILE).write_bytes(status_bytes(state))
    return state
