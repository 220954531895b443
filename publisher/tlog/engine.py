"""The tile-based transparency log on disk: reading, proofs, checking, and crash-safe appends.

Layout of a log folder (the public part follows C2SP tlog-tiles):

    checkpoint            signed note, written last
    vkey                  the log's verifier key string
    tile/<L>/<N>[.p/<W>]  hash tiles
    tile/entries/<N>[.p/<W>]  entry bundles
    .state/tree.json      private: last signed size, root and checkpoint (the commit point)
    .state/pending.json   private: the batch being written, until it is committed
    .state/lock           private: the single-writer lock

The public files (committed to git) are the truth; ``.state/`` is a cache of
this machine's last commit point and may be absent (a fresh clone): opening
rebuilds it from the signed public checkpoint and the tiles. It is ahead of
the public checkpoint only between an append's commit point and its
checkpoint write, which recovery finishes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from publisher import fsio
from publisher.errors import UsageError, VerificationFailed
from publisher.storage import ImmutableObjectChanged, LocalStorage
from publisher.tlog.checkpoint import Checkpoint, CheckpointError, SignedCheckpoint, TlogProof, open_checkpoint
from publisher.tlog.merkle import (
    EMPTY_ROOT,
    HashRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
)
from publisher.tlog.note import Signer, Verifier, b64encode, sign_note
from publisher.tlog.tiles import (
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    EntryTooLarge,
    Tile,
    TileError,
    decode_bundle,
    encode_bundle,
    level_width,
    new_tiles,
    right_edge,
    root_from_right_edge,
    split_hashes,
    tile_for,
    tile_hash_range,
)
from verifier.cpl_verify import TileSource, fetch_tile

STATE_DIR = ".state"
MAX_LOG_FILE = 1 << 26  # no file of a log is this big (a full entry bundle is at most 256 x 64 KiB)
STATE_FILE = f"{STATE_DIR}/tree.json"
PENDING_FILE = f"{STATE_DIR}/pending.json"
LOCK_FILE = f"{STATE_DIR}/lock"

Progress = Callable[[int, int], None]
EntrySink = Callable[[int, list[bytes]], None]  # (index of the first entry, entries)
_TILE_CACHE_SIZE = 1024  # tiles (8 KB each at most)
_RANGE_CACHE_SIZE = 1 << 20  # subtree hashes


class LogError(UsageError, RuntimeError):
    """The log cannot be opened or appended to; the message says why and which file."""


class CorruptLog(VerificationFailed, LogError):
    """Stored data disagrees with the signed checkpoint (tampering or disk corruption)."""


class MissingData(CorruptLog):
    """A file the signed checkpoint needs is absent."""


def _no_progress(done: int, total: int) -> None:
    return None


def _no_entries(first: int, entries: list[bytes]) -> None:
    return None


@dataclass(frozen=True)
class AppendResult:
    """Where a batch landed and the checkpoint that covers it."""

    first_index: int
    size: int
    root: bytes
    checkpoint: str
    files_written: int


class LogReader:
    """Read access to a log at its signed checkpoint: entries, tiles, proofs, checks. The log is read from
    a ``TileSource`` (a folder, given as its path, or e.g. a git commit's tree)."""

    def __init__(
        self,
        source: Path | str | TileSource,
        origin: str,
        verifiers: Sequence[Verifier],
        signed: SignedCheckpoint | None = None,
    ) -> None:
        """Read the log at its public checkpoint, or at ``signed`` when given (already verified)."""
        if isinstance(source, (str, Path)):
            source = LocalStorage(Path(source))
        self.source: TileSource = source
        # The folder, when the log is one: stale partial tiles are looked for only there.
        self.folder = source.root if isinstance(source, LocalStorage) else None
        self.origin = origin
        self.verifiers = list(verifiers)
        self._tile_cache: dict[Tile, list[bytes]] = {}
        self._ranges_size = -1
        self._ranges: dict[tuple[int, int], bytes] = {}
        self.signed = signed if signed is not None else self._load_checkpoint()

    # -- loading -------------------------------------------------------------
    def _load_checkpoint(self) -> SignedCheckpoint:
        path = self.where("checkpoint")
        data = self._load("checkpoint")
        if data is None:
            raise LogError(f"{path}: no checkpoint; is this a log folder?")
        try:
            return open_checkpoint(data, self.origin, self.verifiers)
        except CheckpointError as exc:
            raise CorruptLog(f"{path}: {exc}") from exc

    @property
    def size(self) -> int:
        return self.signed.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.signed.checkpoint.root

    # -- tiles ---------------------------------------------------------------
    def where(self, rel: str) -> str:
        """How messages name the log file ``rel``."""
        return f"{self.source}/{rel}"

    def _load(self, rel: str) -> bytes | None:
        """The bytes of the log file ``rel``, or None if it is absent (the one place files are read)."""
        return self.source.read(rel, MAX_LOG_FILE)

    def read_file(self, rel: str) -> bytes:
        """The bytes of the log file ``rel``; ``MissingData`` if it is absent."""
        data = self._load(rel)
        if data is None:
            raise MissingData(f"{self.where(rel)}: missing, but the checkpoint needs it")
        return data

    def _read_tile_bytes(self, tile: Tile) -> bytes:
        """A tile's bytes; a partial tile may be cut from the full one once it exists (the verifier's
        ``fetch_tile``, the one partial-tile reader)."""
        data = fetch_tile(self.source, tile)
        return data if data is not None else self.read_file(tile.path)

    def read_tile(self, tile: Tile) -> list[bytes]:
        """The hashes of a hash tile, checked for length.

        Cached: a tile of a given width never changes, and proofs for
        neighbouring entries share most of their tiles.
        """
        cached = self._tile_cache.get(tile)
        if cached is not None:
            return cached
        try:
            hashes = split_hashes(self._read_tile_bytes(tile), tile)
        except TileError as exc:
            raise CorruptLog(f"{self.where(tile.path)}: {exc}") from exc
        if len(self._tile_cache) >= _TILE_CACHE_SIZE:
            self._tile_cache.clear()
        self._tile_cache[tile] = hashes
        return hashes

    def read_bundle(self, tile: Tile) -> list[bytes]:
        """The entries of an entry bundle, checked for count."""
        try:
            return decode_bundle(self._read_tile_bytes(tile), tile.width, self.where(tile.path))
        except TileError as exc:
            raise CorruptLog(str(exc)) from exc

    def entry(self, index: int) -> bytes:
        """Entry ``index`` (not authenticated; use ``inclusion_proof`` for that)."""
        if not 0 <= index < self.size:
            raise LogError(f"entry {index} is outside the log (size {self.size})")
        bundle = self.read_bundle(tile_for(-1, index // TILE_WIDTH, self.size))
        return bundle[index % TILE_WIDTH]

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Entries ``start..end`` in order, one bundle read at a time."""
        end = self.size if end is None else end
        if not 0 <= start <= end <= self.size:
            raise LogError(f"entries {start}..{end} are outside the log (size {self.size})")
        index = start
        while index < end:
            bundle = self.read_bundle(tile_for(-1, index // TILE_WIDTH, self.size))
            offset = index % TILE_WIDTH
            for entry in bundle[offset : offset + end - index]:
                yield entry
                index += 1

    # -- proofs --------------------------------------------------------------
    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof for entry ``index`` in the tree of ``size`` (default: current)."""
        size = self.size if size is None else size
        if size > self.size:
            raise LogError(f"tree size {size} is beyond the signed size {self.size}")
        return inclusion_proof(index, size, self._hash_range(size))

    def _hash_range(self, size: int) -> HashRange:
        """Subtree hashes for a tree of ``size``, memoised: proofs for neighbouring
        entries share most of their subtrees (writing a proof per entry would
        otherwise rehash each tile hundreds of times)."""
        if self._ranges_size != size:
            self._ranges_size, self._ranges = size, {}
        cache, compute = self._ranges, tile_hash_range(size, self.read_tile)

        def hash_range(start: int, end: int) -> bytes:
            value = cache.get((start, end))
            if value is None:
                if len(cache) > _RANGE_CACHE_SIZE:
                    cache.clear()
                value = cache[(start, end)] = compute(start, end)
            return value

        return hash_range

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size`` (default: current)."""
        new_size = self.size if new_size is None else new_size
        if new_size > self.size:
            raise LogError(f"tree size {new_size} is beyond the signed size {self.size}")
        return consistency_proof(old_size, new_size, tile_hash_range(new_size, self.read_tile))

    def check_extends(self, old: Checkpoint) -> None:
        """Prove from the stored tiles that this log's checkpoint extends ``old``; ``ProofError`` if it does not."""
        verify_consistency(old.size, self.size, old.root, self.root_hash, self.consistency_proof(old.size))

    def tlog_proof(self, index: int) -> TlogProof:
        """A self-contained c2sp.org/tlog-proof@v1 for entry ``index`` at the current checkpoint."""
        return TlogProof(index, tuple(self.inclusion_proof(index)), self.signed.raw)

    # -- checking ------------------------------------------------------------
    def _edge(self, size: int) -> dict[int, list[bytes]]:
        return {t.level: self.read_tile(t) for t in right_edge(size)}

    def check_right_edge(self) -> tuple[dict[int, list[bytes]], list[bytes]]:
        """Check the right-edge tiles and partial bundle against the checkpoint.

        Cheap (one tile per level). Returns the edge hashes and the partial
        bundle's entries, which an append continues from.
        """
        size, root = self.size, self.root_hash
        edge = self._edge(size)
        tail: list[bytes] = []
        if size % TILE_WIDTH:
            bundle = tile_for(-1, size // TILE_WIDTH, size)
            tail = self.read_bundle(bundle)
            if [leaf_hash(e) for e in tail] != edge[0] and root_from_right_edge(size, edge) == root:
                raise CorruptLog(f"{self.where(bundle.path)}: entries do not match tile/0 hashes")
        if root_from_right_edge(size, edge) != root:
            raise CorruptLog(self._blame_edge(size, edge, tail))
        return edge, tail

    def _blame_edge(self, size: int, edge: dict[int, list[bytes]], tail: list[bytes]) -> str:
        """Name the right-edge file that disagrees with the data below it."""
        for tile in right_edge(size):
            if tile.level == 0:
                children = [leaf_hash(e) for e in tail]
            else:
                first = tile.index * TILE_WIDTH
                children = [
                    root_of(self.read_tile(tile_for(tile.level - 1, first + i, size))) for i in range(tile.width)
                ]
            if children != edge[tile.level]:
                return f"{self.where(tile.path)}: does not match the data below it or the checkpoint root"
        return f"{self.where('checkpoint')}: root hash does not match the stored tiles"

    def verify_all(self, progress: Progress = _no_progress, entries: EntrySink | None = None) -> int:
        """Recompute every tile and bundle from the signed root downwards; return entries checked.

        Each file is authenticated by its parent, so a mismatch names the file
        that is wrong. Stale partial tiles of older sizes must be prefixes of
        the authenticated data. ``entries``, if given, receives each bundle's
        entries once they are authenticated, in log order (first index,
        entries), so a caller that needs every entry reads them only once.
        """
        size = self.size
        sink: EntrySink = entries or _no_entries
        edge, _ = self.check_right_edge()
        for tile in right_edge(size):
            self._check_stale_partials(tile, edge[tile.level])
        top = max(edge) if edge else -1  # the top level only ever holds a partial tile
        parent: list[bytes] = edge.get(top, [])
        for level in range(top - 1, -1, -1):
            full = level_width(size, level) // TILE_WIDTH
            level_hashes: list[bytes] = []
            for index in range(full):
                tile = Tile(level, index, TILE_WIDTH)
                hashes = self.read_tile(tile)
                if root_of(hashes) != parent[index]:
                    raise CorruptLog(f"{self.where(tile.path)}: does not match its hash in the level above")
                if level == 0:
                    sink(index * TILE_WIDTH, self._check_bundle(tile, hashes))
                    progress((index + 1) * TILE_WIDTH, size)
                else:
                    level_hashes.extend(hashes)
                self._check_stale_partials(tile, hashes)
            parent = level_hashes + edge.get(level, [])
        if size % TILE_WIDTH:  # the partial bundle of the right edge, last so that entries arrive in order
            sink(size - size % TILE_WIDTH, self._check_bundle(tile_for(0, size // TILE_WIDTH, size), edge[0]))
        progress(size, size)
        return size

    def verify_extension(self, old_size: int) -> int:
        """Recompute what growing from ``old_size`` created or grew (every such tile and bundle, and the
        partials of the sizes on the way) against the signed root; return the entries checked.

        Each new full tile is authenticated by its parent, itself new or on the right edge, which
        ``check_right_edge`` authenticates against the root: the work follows the growth, not the log.
        """
        size = self.size
        if not 0 <= old_size <= size:
            raise LogError(f"cannot check growth from size {old_size} to size {size}")
        edge, _ = self.check_right_edge()
        for tile in right_edge(size):
            self._check_stale_partials(tile, edge[tile.level])
        checked = size % TILE_WIDTH
        for tile in new_tiles(old_size, size):
            if tile.level < 0 or not tile.full:  # bundles with their hash tile; partials are the right edge
                continue
            hashes = self.read_tile(tile)
            parent = self.read_tile(tile_for(tile.level + 1, tile.index // TILE_WIDTH, size))
            if root_of(hashes) != parent[tile.index % TILE_WIDTH]:
                raise CorruptLog(f"{self.where(tile.path)}: does not match its hash in the level above")
            if tile.level == 0:
                self._check_bundle(tile, hashes)
                checked += TILE_WIDTH
            self._check_stale_partials(tile, hashes)
        return checked

    def _check_bundle(self, tile: Tile, hashes: list[bytes]) -> list[bytes]:
        """The entries of level-0 ``tile``'s bundle, checked against its ``hashes`` (and its stale partials)."""
        bundle = Tile(-1, tile.index, tile.width)
        raw = self._read_tile_bytes(bundle)
        try:
            entries = decode_bundle(raw, bundle.width, self.where(bundle.path))
            leaves = [leaf_hash(e) for e in entries]
        except TileError as exc:
            raise CorruptLog(str(exc)) from exc
        if leaves != hashes:
            i = next(i for i, (a, b) in enumerate(zip(leaves, hashes, strict=True)) if a != b)
            where = tile.index * TILE_WIDTH + i
            raise CorruptLog(f"{self.where(bundle.path)}: entry {where} does not match its leaf hash")
        self._check_stale_partials(bundle, hashes, raw)
        return entries

    def _check_stale_partials(self, tile: Tile, hashes: list[bytes], raw: bytes | None = None) -> None:
        """Partial files left for older checkpoints must be prefixes of the authenticated tile.

        Both formats are plain concatenations, so a partial is a byte prefix of
        the authenticated tile (``raw`` for a bundle): no entry is hashed twice.
        """
        authenticated = raw if raw is not None else b"".join(hashes)

        if self.folder is None:
            return  # partial files left behind are a folder's matter (a git tree holds only what was committed)
        pdir = self.folder / (tile.as_full().path + ".p")
        if not pdir.is_dir():
            return
        for f in pdir.iterdir():
            if f.name.startswith("."):
                continue
            width = int(f.name) if f.name.isdigit() else 0
            if not 0 < width <= tile.width:
                if width > tile.width:
                    continue  # an unsigned leftover beyond the checkpoint; never served
                raise CorruptLog(f"{f}: not a valid partial tile name")
            data = f.read_bytes()
            ok = authenticated.startswith(data)
            if ok and tile.level < 0:
                try:  # a byte prefix that ends mid-entry, or holds another count, is not this partial
                    decode_bundle(data, width)
                except TileError:
                    ok = False
            elif ok:
                ok = len(data) == width * 32
            if not ok:
                raise CorruptLog(f"{f}: partial tile disagrees with the authenticated data")


class TileLog(LogReader):
    """The single writer of a log folder. Open it with ``TileLog.open`` and close it when done."""

    def __init__(self, root: Path, signer: Signer, lock: fsio.WriterLock) -> None:
        self.signer = signer
        self._lock = lock
        self.root = Path(root)
        self.storage = LocalStorage(self.root)  # the public files; private state stays in self.root
        super().__init__(self.storage, signer.name, [signer.verifier])
        self._edge_hashes, self._tail = self.check_right_edge()

    # -- creation and opening --------------------------------------------------
    @classmethod
    def create(cls, root: Path, signer: Signer) -> TileLog:
        """Create an empty log (size 0, signed) in ``root``, which must not hold a log yet."""
        root = Path(root)
        if (root / "checkpoint").exists() or (root / STATE_FILE).exists():
            raise LogError(f"{root}: already holds a log")
        lock = fsio.WriterLock(root / LOCK_FILE, f"log {root}")
        try:
            note = sign_note(Checkpoint(signer.name, 0, EMPTY_ROOT).body(), [signer])
            public = LocalStorage(root)
            public.write({"vkey": (signer.verifier.vkey + "\n").encode()})
            _commit(root, 0, EMPTY_ROOT, note)
            public.write({"checkpoint": note.encode()})
            return cls(root, signer, lock)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def open(cls, root: Path, signer: Signer) -> TileLog:
        """Take the writer lock, recover (see ``_recover``), and check the right edge.

        Works on a fresh clone: the private state is rebuilt from the public checkpoint.
        """
        root = Path(root)
        if not (root / STATE_FILE).exists() and not (root / "checkpoint").exists():
            raise LogError(f"{root}: no checkpoint; create the log first")
        lock = fsio.WriterLock(root / LOCK_FILE, f"log {root}")
        try:
            _recover(root, signer)
            return cls(root, signer, lock)
        except BaseException:
            lock.close()
            raise

    def close(self) -> None:
        self._lock.close()

    def __enter__(self) -> TileLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appending ------------------------------------------------------------
    def append(self, entries: Sequence[bytes]) -> AppendResult:
        """Append a batch atomically: after a crash either all of it or none of it is in the log.

        Costs O(len(entries) + log n): only the right edge is read, and only new
        or grown tiles and bundles are written, then the checkpoint.
        """
        for i, e in enumerate(entries):
            if len(e) > MAX_ENTRY_SIZE:
                raise EntryTooLarge(
                    f"entry {i} of the batch is {len(e)} bytes; log entries are at most {MAX_ENTRY_SIZE} bytes"
                )
        if self._lock.closed:
            raise LogError(f"log {self.root} was closed; open it again to append")
        old_size = self.size
        if not entries:
            return AppendResult(old_size, old_size, self.root_hash, self.signed.raw, 0)
        new_size = old_size + len(entries)
        paths = sorted(t.path for t in new_tiles(old_size, new_size))
        # 1. journal the files this batch creates, so recovery can discard them if it
        # never commits. Files that already exist are not listed: recovery must never
        # delete what it did not write (the guard below checks them instead).
        created = [p for p in paths if not (self.root / p).exists()]
        journal = {"old_size": old_size, "new_size": new_size, "paths": created}
        fsio.write_file(self.root / PENDING_FILE, _json(journal))
        try:
            new_root, note, new_edge, new_tail, written = self._write_batch(entries, paths)
        except BaseException:
            # Nothing was committed: undo exactly what recovery would (journal last).
            fsio.remove_files(self.root, [*created, PENDING_FILE])
            raise

        # 3. the commit point, 4. the public checkpoint, then the journal goes.
        _commit(self.root, new_size, new_root, note)
        self.storage.write({"checkpoint": note.encode()})
        fsio.remove_files(self.root, [PENDING_FILE])

        self.signed = open_checkpoint(note, self.origin, self.verifiers)
        self._edge_hashes, self._tail = new_edge, new_tail
        return AppendResult(old_size, new_size, new_root, note, written + 3)

    def _write_batch(
        self, entries: Sequence[bytes], paths: list[str]
    ) -> tuple[bytes, str, dict[int, list[bytes]], list[bytes], int]:
        """Compute and durably write the batch's tiles and bundles; sign the new checkpoint."""
        old_size = self.size
        new_size = old_size + len(entries)

        # 2. tiles and bundles, written (in background threads) as they are computed.
        written: list[str] = []
        new_edge: dict[int, list[bytes]] = {}
        with self.storage.writer(immutable=True) as batch:

            def put(tile: Tile, data: bytes) -> None:
                try:
                    batch.add(tile.path, data)
                except ImmutableObjectChanged as exc:
                    raise CorruptLog(str(exc)) from exc
                written.append(tile.path)

            # Entry bundles: the partial bundle's entries plus the batch, cut at 256.
            bundle_index = old_size // TILE_WIDTH
            pending = list(self._tail) + list(entries)
            for pos in range(0, len(pending), TILE_WIDTH):
                chunk = pending[pos : pos + TILE_WIDTH]
                put(Tile(-1, bundle_index + pos // TILE_WIDTH, len(chunk)), encode_bundle(chunk))
            new_tail = pending[len(pending) - len(pending) % TILE_WIDTH :]

            # Hash tiles, level by level: full tiles feed their root to the level above.
            carried = [leaf_hash(e) for e in entries]
            level = 0
            while level_width(new_size, level) > 0:
                existing = self._edge_hashes.get(level, [])
                if not carried:
                    if existing:
                        new_edge[level] = existing
                    level += 1
                    continue
                first = level_width(old_size, level) // TILE_WIDTH
                hashes = existing + carried
                carried = []
                for pos in range(0, len(hashes), TILE_WIDTH):
                    chunk = hashes[pos : pos + TILE_WIDTH]
                    put(Tile(level, first + pos // TILE_WIDTH, len(chunk)), b"".join(chunk))
                    if len(chunk) == TILE_WIDTH:
                        carried.append(root_of(chunk))
                    else:
                        new_edge[level] = chunk
                level += 1
            if sorted(written) != paths:
                raise LogError("internal error: the batch wrote other files than it journalled")
            new_root = root_from_right_edge(new_size, new_edge)
            note = sign_note(Checkpoint(self.origin, new_size, new_root).body(), [self.signer])
            batch.commit()
        return new_root, note, new_edge, new_tail, len(written)


def _json(obj: object) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def _commit(root: Path, size: int, tree_root: bytes, note: str) -> None:
    """The commit point: once this rename is durable, the batch is in the log."""
    fsio.write_file(root / STATE_FILE, _json({"size": size, "root": b64encode(tree_root), "checkpoint": note}))


def _read_json(path: Path) -> dict[str, object]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LogError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(obj, dict):
        raise LogError(f"{path}: not a JSON object")
    return obj


def _signed_note(data: str | bytes, signer: Signer, where: Path) -> SignedCheckpoint:
    try:
        return open_checkpoint(data, signer.name, [signer.verifier])
    except CheckpointError as exc:
        raise CorruptLog(f"{where}: {exc}; is this the right signing key?") from exc


def _read_cache(root: Path, signer: Signer) -> SignedCheckpoint | None:
    """This machine's last commit point, if it has one; a cache that fails its checks is refused, not ignored."""
    path = root / STATE_FILE
    if not path.exists():
        return None
    hint = f"; if this machine's private state is damaged, remove {path} and it is rebuilt from the public checkpoint"
    try:
        state = _read_json(path)
    except LogError as exc:
        raise CorruptLog(f"{exc}{hint}") from exc
    note = state.get("checkpoint")
    if not isinstance(note, str):
        raise CorruptLog(f"{path}: has no checkpoint{hint}")
    try:
        signed = open_checkpoint(note, signer.name, [signer.verifier])
    except CheckpointError as exc:
        raise CorruptLog(f"{path}: {exc}; is this the right signing key?{hint}") from exc
    if signed.checkpoint.size != state.get("size") or b64encode(signed.checkpoint.root) != state.get("root"):
        raise CorruptLog(f"{path}: size or root disagrees with its checkpoint{hint}")
    return signed


def _consistent(root: Path, signer: Signer, old: SignedCheckpoint, new: SignedCheckpoint) -> None:
    """Prove ``new`` extends ``old`` from the tiles on disk; raise ``CorruptLog`` (``MissingData``) if not."""
    a, b = old.checkpoint, new.checkpoint
    try:
        LogReader(root, signer.name, [signer.verifier], new).check_extends(a)
    except ProofError as exc:
        raise CorruptLog(
            f"{root}: the checkpoint of size {b.size} is not an extension of the one of size {a.size} "
            f"this log also signed (a fork): {exc}"
        ) from exc


def _recover(root: Path, signer: Signer) -> None:
    """Bring the private cache and the public checkpoint in line after a crash, a restore or a fresh clone.

    A journalled batch that reached the commit point is completed (its files
    were durable before the commit); one that did not is discarded, so no
    entry is ever half-present or duplicated. Then the newer of the cache and
    the public checkpoint wins when the tiles prove it extends the other: a
    cache ahead of the public file is an append that crashed before its
    checkpoint write (finished here), unless its tiles are gone (a restore:
    the public checkpoint stands); a public file ahead of the cache came from
    git (a pull). Two checkpoints that are not consistent are a fork: refused.
    """
    cache = _read_cache(root, signer)
    public_path = root / "checkpoint"
    public = _signed_note(public_path.read_bytes(), signer, public_path) if public_path.exists() else None

    pending_path = root / PENDING_FILE
    if pending_path.exists():
        try:
            journal = _read_json(pending_path)
        except LogError:
            journal = {}  # torn journal: written before any data file, nothing to undo
        paths = journal.get("paths", [])
        committed = cache or public
        if committed is not None and journal.get("new_size") != committed.checkpoint.size and isinstance(paths, list):
            fsio.remove_files(root, [str(p) for p in paths])
        fsio.remove_files(root, [PENDING_FILE])

    # Temporaries of the fixed files must not linger (the log folder is published).
    fsio.remove_files(root, ["checkpoint", "vkey", STATE_FILE, PENDING_FILE], keep=True)
    target = _choose(root, signer, cache, public)
    if cache is None or cache.raw != target.raw:
        _commit(root, target.checkpoint.size, target.checkpoint.root, target.raw)
    if public is None or public.raw != target.raw:
        LocalStorage(root).write({"checkpoint": target.raw.encode()})


def _choose(
    root: Path, signer: Signer, cache: SignedCheckpoint | None, public: SignedCheckpoint | None
) -> SignedCheckpoint:
    if cache is None or public is None:
        chosen = cache or public
        if chosen is None:
            raise LogError(f"{root}: no checkpoint; create the log first")
        return chosen
    if cache.raw == public.raw:
        return cache
    if cache.checkpoint.size > public.checkpoint.size:
        try:
            _consistent(root, signer, public, cache)
        except MissingData:
            return public  # the unpublished append's tiles were removed (a restore): the public checkpoint stands
        return cache
    _consistent(root, signer, cache, public)
    return public


def read_vkey(root: Path) -> Verifier:
    """The verifier key published beside a log's checkpoint."""
    path = Path(root) / "vkey"
    try:
        return Verifier.from_vkey(path.read_text())
    except FileNotFoundError as exc:
        raise LogError(f"{path}: missing") from exc
