"""Static lookup shards: from image hash (or a CRL's SHA-256) and from device model to log indices. Pure.

A lookup key is a 64-hex string: the image hash itself, or for a device model
SHA-256 of ``manufacturer_id \\n model_id \\n hardware_version \\n
firmware_version`` (UTF-8). Shards are named by the key's first
``SHARD_HEX`` hex digits and hold ``{"<key>": [index, ...]}``; with 3 digits
(4,096 shards) a shard of a million-entry log is about 20 KB. A missing shard
means no entry has a key with that prefix.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable

SHARD_HEX = 3
HASH_DIR = "lookup/hash"
MODEL_DIR = "lookup/model"


def model_lookup_key(manufacturer_id: str, model_id: str, hardware_version: str, firmware_version: str) -> str:
    """The lookup key of a CPL device model."""
    text = "\n".join((manufacturer_id, model_id, hardware_version, firmware_version))
    return hashlib.sha256(text.encode()).hexdigest()


def shard_path(directory: str, key: str) -> str:
    """Relative path of the shard holding ``key``."""
    return f"{directory}/{key[:SHARD_HEX]}.json"


def build_shards(entries: Iterable[tuple[int, dict[str, object]]]) -> dict[str, bytes]:
    """Shard files (relative path -> JSON bytes) for the association entries of a log."""
    by_hash: dict[str, dict[str, list[int]]] = defaultdict(dict)
    by_model: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for index, entry in entries:
        if entry.get("type") == "crl/v1" and isinstance(entry.get("sha256"), str):
            # A CRL's SHA-256 finds its crl/v1 entry (the verifier's --require-logged).
            digest = str(entry["sha256"])
            by_hash[shard_path(HASH_DIR, digest)].setdefault(digest, []).append(index)
            continue
        if entry.get("type") != "cpl-association/v1":
            continue
        model = entry.get("device_model")
        image = entry.get("image_sha256")
        if not isinstance(model, dict) or not isinstance(image, str):
            continue
        key = model_lookup_key(
            str(model.get("manufacturer_id")),
            str(model.get("model_id")),
            str(model.get("hardware_version")),
            str(model.get("firmware_version")),
        )
        by_hash[shard_path(HASH_DIR, image)].setdefault(image, []).append(index)
        by_model[shard_path(MODEL_DIR, key)].setdefault(key, []).append(index)
    out = {}
    for shards in (by_hash, by_model):
        for path, table in shards.items():
            out[path] = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    return out
