"""What the site's pages are made from, kept between builds so a build costs what the publish changed.

A build reads only the log entries added since the last build, adds their rows to the
manufacturer pages (chunks of ``ROWS_PER_PAGE``) and to the search shards, and marks
the rows of entries they replace; only the chunks and shards it touched are rewritten.
A full build is the same update from an empty state, so both paths are one code path.

The state lives in a cache folder beside the site (``.<site>.cache``; never inside the
site, which is published). It is used only when it describes this very site and a
prefix of this very log (the site's checkpoint is the one recorded, and the log proves
itself consistent with it), and when the generator (templates, hooks, verifier) is the
one that wrote it; otherwise the build starts again from an empty state.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.cpl_verify import ASSOCIATION_TYPE, CRL_TYPE

ROWS_PER_PAGE = 1000
RECENT = 50  # associations on the log page
FEED_ITEMS = 100  # items in a feed (publisher.site.feeds): the newest approvals, revocations or CRLs
FORMAT = 4  # 2: Panel reference and submission ID; 3: signers; 4: ref shards hold small rows

# A row: the fields the pages and the search box show, as a list (compact JSON).
# index, manufacturer ID, organisation, model, hardware, firmware, type, SMETS, image SHA-256, approved,
# replaced by (index or null), endorser, replaces (index or null), investigation reference, Panel reference,
# submission ID, the signers' certificates. site_src/javascripts/search.js reads rows by these positions too.
Row = list[Any]
R_INDEX, R_MID, R_ORG, R_MODEL, R_HASH, R_REPLACED_BY, R_ENDORSER, R_REPLACES = 0, 1, 2, 3, 8, 10, 11, 12
# R_SIGNERS: the first SIGNER_HEX hex digits of the manufacturer's and the endorser's certificate SHA-256 (enough
# to find them in /revocations.json; the entry page reads the whole hashes from the proved entry).
R_PANEL, R_SUBMISSION, R_SIGNERS = 14, 15, 16
SIGNER_HEX = 16
R_HARDWARE, R_FIRMWARE, R_TYPE, R_SMETS, R_APPROVED, R_INVESTIGATION = 4, 5, 6, 7, 9, 13

# A logged CRL (a crl/v1 entry), for the CRL feed: log index, issuer, CRL number, thisUpdate, nextUpdate,
# SHA-256 of the DER, and how many certificates it revokes (None until read from the archived DER).
CrlRow = list[Any]
C_INDEX, C_ISSUER, C_NUMBER, C_THIS_UPDATE, C_NEXT_UPDATE, C_SHA256, C_ENTRIES = range(7)
MAKERS_FILE = "search/makers.json"
REF_SHARDS = "search/ref/"  # every manufacturer: ID, name, page slug, associations


def row_of(index: int, entry: dict[str, Any]) -> Row:
    """The row of association entry ``index``."""

    def get(*path: str) -> str:
        value: Any = entry
        for key in path:
            value = value.get(key, "") if isinstance(value, dict) else ""
        return str(value)

    rep = entry.get("replaces")
    rep_index = rep.get("index") if isinstance(rep, dict) and type(rep.get("index")) is int else None
    return [
        index,
        get("device_model", "manufacturer_id"),
        get("manufacturer", "organisation"),
        get("device_model", "model_id"),
        get("device_model", "hardware_version"),
        get("device_model", "firmware_version"),
        get("device_type"),
        get("smets_version"),
        get("image_sha256"),
        get("approved_at"),
        None,
        get("endorser", "organisation"),
        rep_index,
        get("replaces", "investigation_ref") if rep_index is not None else "",
        get("panel_ref"),
        get("submission_id"),
        [get("manufacturer", "certificate_sha256")[:SIGNER_HEX], get("endorser", "certificate_sha256")[:SIGNER_HEX]],
    ]


def crl_row_of(index: int, entry: dict[str, Any]) -> CrlRow:
    """The CRL row of ``crl/v1`` entry ``index`` (how many it revokes is not in the entry: None)."""
    return [index, *(entry.get(k, "") for k in ("issuer", "number", "this_update", "next_update", "sha256")), None]


def cache_dir(site_dir: Path) -> Path:
    """The build cache of a site: a hidden folder beside it, never inside (the site is published)."""
    return site_dir.parent / f".{site_dir.name}.cache"


def slug_of(manufacturer_id: str) -> str:
    """A stable URL segment for a manufacturer ID (IDs that are not plain letters and digits are hashed)."""
    if manufacturer_id.isascii() and manufacturer_id.isalnum():
        return manufacturer_id
    return "m-" + hashlib.sha256(manufacturer_id.encode()).hexdigest()[:12]


def search_key(text: str) -> str:
    """The shard a search term is looked up in: the first two hex digits of SHA-256 of it, lower-cased (the
    search box computes the same in the browser)."""
    return hashlib.sha256(text.lower().encode()).hexdigest()[:2]


def search_shards_of(row: Row) -> list[str]:
    """The search shards a row is found in: by image hash prefix, by model ID, and by Panel reference and
    submission ID (one ``ref`` shard each; both are matched whole, case-insensitively)."""
    refs = {f"{REF_SHARDS}{search_key(str(r))}.json" for r in (row[R_PANEL], row[R_SUBMISSION]) if r}
    return [
        f"search/hash/{str(row[R_HASH])[:2]}.json",
        f"search/model/{search_key(str(row[R_MODEL]))}.json",
        *sorted(refs),
    ]


@dataclass
class Maker:
    """A manufacturer's pages: its name (from its certificate), its URL slug, and where each chunk starts."""

    name: str
    slug: str
    count: int = 0
    starts: list[int] = field(default_factory=list)  # the log index of each chunk's first row

    def chunk_of(self, index: int) -> int:
        """The chunk that holds the row of log ``index``."""
        return bisect.bisect_right(self.starts, index) - 1


@dataclass
class Changes:
    """What one update touched."""

    chunks: set[tuple[str, int]] = field(default_factory=set)  # (manufacturer ID, chunk)
    shards: set[str] = field(default_factory=set)
    chunks_before: dict[str, int] = field(default_factory=dict)  # manufacturers that gained chunks: how many before
    renamed: set[str] = field(default_factory=set)  # manufacturers whose name changed (every page shows it)
    entries: int = 0

    def pages(self, makers: dict[str, Maker]) -> set[tuple[str, int]]:
        """Every chunk whose page changed: those rows were added to or marked in; when a manufacturer gained
        chunks, its pages from the one before its old newest to its new newest (the old newest becomes an
        older page, the one before it links to it); all of a renamed manufacturer's pages."""
        touched = set(self.chunks)
        for mid, before in self.chunks_before.items():
            touched |= {(mid, n) for n in range(max(before - 2, 0), len(makers[mid].starts))}
        for mid in self.renamed:
            touched |= {(mid, n) for n in range(len(makers[mid].starts))}
        return touched


class SiteState:
    """The rows behind the pages, in a cache folder; chunks and shards are loaded only when touched."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.size = 0
        self.checkpoint = ""
        self.generator = ""
        self.makers: dict[str, Maker] = {}
        self.recent: list[Row] = []  # the newest max(RECENT, FEED_ITEMS) associations, oldest first
        self.crls: list[CrlRow] = []  # the newest FEED_ITEMS logged CRLs, oldest first
        # The log by month ("YYYY-MM", from the entries' own times): [approvals, log size at its end].
        self.months: dict[str, list[int]] = {}
        self._chunks: dict[tuple[str, int], list[Row]] = {}
        self._shards: dict[str, list[Row]] = {}

    # -- the cache folder ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, cache: Path) -> SiteState | None:
        """The state recorded in ``cache``, or None when there is none (or it is not one this code wrote)."""
        try:
            meta = json.loads((cache / "state.json").read_text())
            state = cls(cache)
            if meta["format"] != FORMAT:
                return None
            state.size, state.checkpoint, state.generator = int(meta["size"]), meta["checkpoint"], meta["generator"]
            state.makers = {mid: Maker(**m) for mid, m in meta["makers"].items()}
            state.recent, state.crls, state.months = meta["recent"], meta["crls"], meta["months"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state

    @classmethod
    def empty(cls, cache: Path) -> SiteState:
        """A new state in ``cache`` (whatever it held is removed)."""
        if cache.exists():
            shutil.rmtree(cache)
        cache.mkdir(parents=True)
        return cls(cache)

    def save(self, size: int, checkpoint: str, generator: str) -> None:
        """Write the touched chunks and shards, then the state that names them (last: a crash mid-save
        leaves no state, and the next build starts from scratch)."""
        (self.cache / "state.json").unlink(missing_ok=True)
        for (mid, n), rows in self._chunks.items():
            _write(self.cache / "rows" / self.makers[mid].slug / f"{n}.json", _dumps(rows))
        for rel, rows in self._shards.items():
            _write(self.cache / rel, _dumps(rows))
        self.size, self.checkpoint, self.generator = size, checkpoint, generator
        meta = {
            "format": FORMAT,
            "size": size,
            "checkpoint": checkpoint,
            "generator": generator,
            "makers": {mid: m.__dict__ for mid, m in sorted(self.makers.items())},
            "recent": self.recent,
            "crls": self.crls,
            "months": self.months,
        }
        _write(self.cache / "state.json", json.dumps(meta, indent=0).encode())

    def chunk(self, mid: str, n: int) -> list[Row]:
        """Chunk ``n`` of a manufacturer's rows (loaded once)."""
        key = (mid, n)
        if key not in self._chunks:
            path = self.cache / "rows" / self.makers[mid].slug / f"{n}.json"
            self._chunks[key] = json.loads(path.read_bytes()) if path.exists() else []
        return self._chunks[key]

    def newest(self, mid: str, n: int) -> list[Row]:
        """A manufacturer's newest ``n`` rows, newest first: its newest chunk, and the ones before while they
        hold fewer (read without keeping them: ``save`` writes back only the chunks an update loaded)."""
        maker, out = self.makers[mid], list[Row]()
        for k in range(len(maker.starts) - 1, -1, -1):
            if len(out) >= n:
                break
            rows = self._chunks.get((mid, k))
            if rows is None:
                path = self.cache / "rows" / maker.slug / f"{k}.json"
                rows = json.loads(path.read_bytes()) if path.exists() else []
            out.extend(reversed(rows))
        return out[:n]

    def shard(self, rel: str) -> list[Row]:
        """A search shard's rows (loaded once)."""
        if rel not in self._shards:
            path = self.cache / rel
            self._shards[rel] = json.loads(path.read_bytes()) if path.exists() else []
        return self._shards[rel]

    def shard_bytes(self, rel: str) -> bytes:
        """A search shard as the site serves it."""
        return _dumps(self.shard(rel))

    def makers_bytes(self) -> bytes:
        """``MAKERS_FILE``: every manufacturer as [ID, name, slug, associations], by ID."""
        return _dumps([[mid, m.name, m.slug, m.count] for mid, m in sorted(self.makers.items())])

    # -- the update ----------------------------------------------------------------------------------------
    def add(self, entries: Iterable[tuple[int, dict[str, Any] | None]], read_entry: Any) -> Changes:
        """Account for log entries in order from ``self.size``; ``read_entry(index)`` returns an earlier
        entry (parsed) when a new one replaces it."""
        changes = Changes()
        for index, entry in entries:
            changes.entries += 1
            self._count(index, entry)
            if entry is not None and entry.get("type") == CRL_TYPE:
                self.crls.append(crl_row_of(index, entry))
                del self.crls[:-FEED_ITEMS]
            if entry is None or entry.get("type") != ASSOCIATION_TYPE:
                continue
            row = row_of(index, entry)
            mid = str(row[R_MID])
            maker = self.makers.get(mid)
            if maker is None:
                maker = self.makers[mid] = Maker(str(row[R_ORG]), slug_of(mid))
            elif maker.name != row[R_ORG]:
                maker.name = str(row[R_ORG])  # the newest certificate's name
                changes.renamed.add(mid)
            if maker.count % ROWS_PER_PAGE == 0:
                changes.chunks_before.setdefault(mid, len(maker.starts))
                maker.starts.append(index)
            n = len(maker.starts) - 1
            self.chunk(mid, n).append(row)
            maker.count += 1
            changes.chunks.add((mid, n))
            for rel in search_shards_of(row):
                # A reference shard points at the row in its hash shard: [index, Panel ref, submission ID, hash].
                ref = [row[R_INDEX], row[R_PANEL], row[R_SUBMISSION], row[R_HASH]]
                self.shard(rel).append(ref if rel.startswith(REF_SHARDS) else list(row))
                changes.shards.add(rel)
            self.recent.append(row)
            del self.recent[: -max(RECENT, FEED_ITEMS)]
            replaced = row[R_REPLACES]
            if isinstance(replaced, int) and 0 <= replaced < index:
                self._mark_replaced(replaced, index, read_entry, changes)
        return changes

    def _count(self, index: int, entry: dict[str, Any] | None) -> None:
        """Month by month: approvals, and the log's size (an entry without a time of its own, such as a
        lookup commitment, counts in the month of the entry before it)."""
        when = (entry or {}).get("approved_at") or (entry or {}).get("this_update")
        month = str(when)[:7] if isinstance(when, str) and len(when) >= 7 else max(self.months, default="")
        if not month:
            return
        counts = self.months.setdefault(month, [0, 0])
        counts[1] = max(counts[1], index + 1)
        if entry is not None and entry.get("type") == ASSOCIATION_TYPE:
            counts[0] += 1

    def _mark_replaced(self, replaced: int, by: int, read_entry: Any, changes: Changes) -> None:
        old = read_entry(replaced)
        if not isinstance(old, dict) or old.get("type") != ASSOCIATION_TYPE:
            return
        old_row = row_of(replaced, old)
        mid = str(old_row[R_MID])
        if mid not in self.makers:
            return
        n = self.makers[mid].chunk_of(replaced)
        shards = [rel for rel in search_shards_of(old_row) if not rel.startswith(REF_SHARDS)]
        places = [(self.chunk(mid, n), None)] + [(self.shard(rel), rel) for rel in shards]
        for rows, rel in places:
            for r in rows:
                if r[R_INDEX] == replaced:
                    r[R_REPLACED_BY] = by
            if rel is not None:
                changes.shards.add(rel)
        changes.chunks.add((mid, n))
        for r in self.recent:
            if r[R_INDEX] == replaced:
                r[R_REPLACED_BY] = by


def _dumps(rows: list[Row]) -> bytes:
    return json.dumps(rows, separators=(",", ":")).encode()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` (atomically, by rename) unless it already holds exactly that; True if written.

    Unchanged files keep their modification time, which is what tells MkDocs and a deploy that they
    did not change."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    _write(path, data)
    return True


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
