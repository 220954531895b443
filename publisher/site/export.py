"""The machine-readable part of the site: what consumers and the verifier fetch at stable URLs.

Large trees (tiles, bundles, evidence, the CRL archive) are hard-linked from
the publication, not copied; generated files (lookup shards, ``status.json``)
are written only when their bytes change. No file is written per entry:
inclusion proofs are computed from the tiles (``cpl-verify inclusion ...
--save-proof FILE`` saves one for offline use).

    /crl/<issuer>.crl .pem .json, /crl/archive/<issuer>/<number>.crl
    /pki/<name>.pem
    /log/checkpoint, /log/vkey, /log/tile/..., /log/evidence/<sha256>
    /log/lookup/hash/<3 hex>.json, /log/lookup/model/<3 hex>.json, /log/lookup/tile/{0,1}/<3 digits>
    /status.json

An export ``since`` an earlier size (of a site that export wrote) touches only what
the entries after it change: their tiles, bundles and evidence, the lookup shards
they add to. The checkpoint is written last, so an export cut short leaves the
site's old checkpoint, and the next export (from that size) completes it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from publisher.config import Config
from publisher.entries import ASSOCIATION_TYPE, parse_entry
from publisher.errors import Refused, UsageError
from publisher.pki.registers import load_issued, load_revocations
from publisher.publication import CRL_DIR, EVIDENCE_DIR, LOG_DIR, PKI_DIR, STATUS_FILE, status, status_bytes
from publisher.site.state import write_if_changed
from publisher.tlog import LogReader, open_log
from publisher.tlog.checkpoint import CheckpointError, Witnessing, open_witnessed
from publisher.tlog.tiles import new_tiles
from verifier.cpl_verify import (
    HASH_SIZE,
    LOOKUP_COMMITMENT,
    LOOKUP_LEAVES,
    LOOKUP_TILES,
    LOOKUP_TYPE,
    TILE_WIDTH,
    Lookup,
    SiteError,
    lookup_tile_path,
    parse_commitment,
    shard_leaf_path,
)


@dataclass
class Export:
    """What an export wrote: ``status.json``'s content and how many files it linked or wrote."""

    status: dict[str, object]
    linked: int = 0
    written: int = 0
    lookup_resumed: bool = False


def _link(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` at ``dst`` unless it is already that file; True if linked (or copied)."""
    try:
        if os.path.samefile(src, dst):
            return False
    except FileNotFoundError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another filesystem: fall back to a copy
        shutil.copy2(src, dst)
    return True


def public_files(tree: Path) -> Iterator[Path]:
    """Files under ``tree`` in sorted order, skipping hidden names (private state, caches, temporaries); a
    symbolic link is refused (linking or uploading it would publish whatever it points to). The one walk of
    what is published: the export's from the publication, the deploy's from the site."""
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in [*dirnames, *sorted(f for f in filenames if not f.startswith("."))]:
            path = Path(dirpath) / name
            if path.is_symlink():
                raise UsageError(f"{path} is a symbolic link: only the publication's own files are published")
            if name not in dirnames:
                yield path


def link_tree(src: Path, dst: Path) -> int:
    """Hard-link every public file of ``src`` into ``dst``; returns how many were not there already."""
    return sum(_link(f, dst / f.relative_to(src)) for f in public_files(src))


class NotWitnessed(Refused):
    """The checkpoint is below the witness quorum and ``[witnessing] below_quorum`` is ``refuse``."""


def witnessing_of(config: Config, log: LogReader) -> Witnessing | None:
    """The witness policy's verdict on the log's checkpoint (None without ``[witnessing]``); ``NotWitnessed``
    when it is below the quorum and the configuration refuses to publish such a checkpoint."""
    if config.witnessing is None:
        return None
    now = int(dt.datetime.now(dt.UTC).timestamp())
    try:
        _, verdict = open_witnessed(log.signed.raw, config.origin, log.verifiers, config.witnessing.policy, now)
    except CheckpointError as exc:
        raise NotWitnessed(f"{LOG_DIR}/checkpoint: {exc}") from exc
    if not verdict.satisfied and config.witnessing.below_quorum == "refuse":
        who = ", ".join(c.name for c in verdict.cosigned) or "no witness"
        raise NotWitnessed(
            f"the checkpoint of size {log.size} is cosigned by {who}; the witness quorum {verdict.quorum} is not met "
            f"(missing: {', '.join(verdict.missing)}) and [witnessing] below_quorum = refuse: not published. "
            "Run 'cpl-publisher witness' when the witnesses are back"
        )
    return verdict


def export_tree(config: Config, out: Path, generated_at: str, since: int = 0) -> Export:
    """Write the machine-readable site tree into ``out``; ``since``: the log size ``out`` was exported at
    (0: everything). ``NotWitnessed`` (nothing written) when the witness policy forbids publishing it."""
    log = open_log(config)
    witnessing_of(config, log)
    since = min(since, log.size)
    result = Export({})
    for sub in (CRL_DIR, PKI_DIR):  # a few files a day: walked whole
        if (config.root / sub).is_dir():
            result.linked += link_tree(config.root / sub, out / sub)
    log_src, log_out = config.root / LOG_DIR, out / LOG_DIR
    if since == 0:
        for sub in ("tile", EVIDENCE_DIR):
            if (log_src / sub).is_dir():
                result.linked += link_tree(log_src / sub, log_out / sub)
    else:
        for tile in new_tiles(since, log.size):
            # The tile, and the partials of every size the log signed on the way (all stay published).
            full = tile.as_full().path
            if (log_src / full).is_file():
                result.linked += _link(log_src / full, log_out / full)
            if (log_src / f"{full}.p").is_dir():
                result.linked += link_tree(log_src / f"{full}.p", log_out / f"{full}.p")
        for raw in log.entries(since):
            for digest in _evidence(raw):
                result.linked += _link(log_src / EVIDENCE_DIR / digest, log_out / EVIDENCE_DIR / digest)

    lookup, result.lookup_resumed = _lookup(log, log_out, since)
    generated = {**lookup.shard_files(touched_only=result.lookup_resumed), **lookup.tile_files()}
    if lookup.last_type == LOOKUP_TYPE:
        generated[LOOKUP_COMMITMENT] = log.entry(log.size - 1)
    else:  # the log no longer ends with a commitment: an old copy would claim one
        (log_out / LOOKUP_COMMITMENT).unlink(missing_ok=True)
    for rel, data in generated.items():
        result.written += write_if_changed(log_out / rel, data)
    result.written += write_if_changed(out / REVOKED_FILE, revoked_certificates(config.root))
    # The publication's own status.json (what its last publish recorded), else one made now.
    result.status = status(config, log, generated_at)
    published = config.root / STATUS_FILE
    data = published.read_bytes() if published.exists() else status_bytes(result.status)
    result.written += write_if_changed(out / STATUS_FILE, data)
    for name in ("vkey", "checkpoint"):  # the checkpoint last: it vouches for everything above
        result.linked += _link(log_src / name, log_out / name)
    return result


REVOKED_FILE = "revocations.json"  # beside status.json: no issuer's name can collide with it


def revoked_certificates(root: Path) -> bytes:
    """``/revocations.json``: every revoked certificate this publisher issued, by its SHA-256 (what a log entry
    names its signers by), with issuer, serial, time, reason and invalidity date, from the registers. For the
    pages; the signed CRLs remain the authority."""
    issued = {(r.issuer, r.serial): r.cert_sha256 for r in load_issued(root)}
    rows = [
        {
            "certificate_sha256": issued.get((r.issuer, r.serial)),
            "issuer": r.issuer,
            "serial": r.serial,
            "revoked_at": r.revoked_at,
            "reason": r.reason,
            "invalidity_date": r.invalidity_date,
        }
        for r in load_revocations(root)
    ]
    return (json.dumps(rows, indent=0, sort_keys=True) + "\n").encode()


def _evidence(raw: bytes) -> list[str]:
    entry = parse_entry(raw)
    if entry is None or entry.get("type") != ASSOCIATION_TYPE or not isinstance(entry.get("evidence"), dict):
        return []
    evidence = entry["evidence"]
    digests = [evidence.get("spreadsheet"), evidence.get("request"), *(evidence.get("signatures") or [])]
    return [d for d in digests if isinstance(d, str) and len(d) == 64 and all(c in "0123456789abcdef" for c in d)]


def _lookup(log: LogReader, log_out: Path, since: int) -> tuple[Lookup, bool]:
    """The log's lookup, continued from the site's files at ``since`` when they match the log's commitment
    there (True), else built from every entry (False)."""
    resumed = _resumed_lookup(log, log_out, since) if since else None
    if resumed is not None:
        try:
            for index, raw in enumerate(log.entries(resumed.size), resumed.size):
                resumed.add(index, parse_entry(raw))
            return resumed, True
        except (ValueError, OSError):  # a shard the new entries touch does not match the commitment: start again
            pass
    lookup = Lookup()
    for index, raw in enumerate(log.entries()):
        lookup.add(index, parse_entry(raw))
    return lookup, False


def _resumed_lookup(log: LogReader, log_out: Path, since: int) -> Lookup | None:
    """The lookup the site's files hold for the log at ``since``, checked against the log's commitment there
    (None when the log did not end with one at ``since``, or the site's files do not match it)."""
    try:
        commitment = parse_commitment(since - 1, log.entry(since - 1))
    except SiteError:  # a malformed commitment: the audit reports it; the site's lookup is built afresh
        return None
    if commitment is None:
        return None
    try:
        leaves: list[bytes] = []
        for t in range(LOOKUP_TILES):
            data = (log_out / lookup_tile_path(0, t)).read_bytes()
            leaves.extend(data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))
        if len(leaves) != LOOKUP_LEAVES or len(leaves) % TILE_WIDTH:
            return None

        def read_shard(leaf: int) -> bytes:
            path = log_out / shard_leaf_path(leaf)
            return path.read_bytes() if path.exists() else b"{}"

        lookup = Lookup.resume(commitment, leaves, read_shard)
    except (OSError, ValueError):
        return None
    return lookup
