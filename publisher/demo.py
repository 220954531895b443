"""The demo publication that ``make demo`` builds from built-in sample data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .note import Signer, b64encode
from .tlog import TileLog

DEMO_ORIGIN = "demo.cpl-transparency.example/log"
MARKER = ".cpl-demo"
_DEVICE_TYPES = ["ESME", "GSME", "CHF", "GPF", "PPMID", "IHD", "HCALCS"]
_MANUFACTURERS = [("1001", "Acme Meters Ltd"), ("1002", "Brightwater Devices"), ("1003", "Cobalt Energy Systems")]


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
    """Build a demo log of ``entries`` sample entries under ``out``; return what was made."""
    _fresh_dir(out)
    key_file = out / "keys" / "log.key"
    key_file.parent.mkdir()
    signer = Signer.generate(DEMO_ORIGIN)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.skey + "\n")
    log_dir = out / "log"
    # Several batches, so the log has signed several sizes (and their partial tiles).
    batch = max(1, entries // 4)
    with TileLog.create(log_dir, signer) as log:
        for start in range(0, entries, batch):
            log.append([sample_entry(i) for i in range(start, min(entries, start + batch))])
        size, root = log.size, log.root_hash
        sample = min(42, size - 1) if size else None
        if sample is not None:
            (out / "sample-entry.json").write_bytes(log.entry(sample))
            (out / "sample-entry.tlog-proof").write_text(log.tlog_proof(sample).encode())
    return {
        "log": str(log_dir),
        "key_file": str(key_file),
        "vkey": signer.verifier.vkey,
        "size": size,
        "root": b64encode(root),
        "sample_index": sample,
    }


def describe(info: dict[str, object]) -> str:
    """Human-readable summary: where the files are and how to verify them."""
    out = Path(str(info["log"])).parent
    lines = [
        f"Demo log: {info['log']} ({info['size']} entries, root {info['root']})",
        f"  checkpoint: {info['log']}/checkpoint   verifier key: {info['log']}/vkey",
        f"  signing key (demo only, never published): {info['key_file']}",
        "Verify every tile and bundle against the signed checkpoint:",
        f"  .venv/bin/cpl-publisher log verify {info['log']} --vkey '{info['vkey']}'",
    ]
    if info.get("sample_index") is not None:
        lines += [
            f"Verify the offline inclusion proof of entry {info['sample_index']}:",
            f"  .venv/bin/cpl-publisher log check-proof {out}/sample-entry.tlog-proof "
            f"--entry {out}/sample-entry.json --vkey '{info['vkey']}'",
        ]
    return "\n".join(lines)
