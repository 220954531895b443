"""``cpl-publisher history verify``: prove the publication's git history append-only, commit by commit.

Every commit is visited, parents before children, and compared with each
parent:

* nothing published is modified or removed: the log's tiles, entry bundles,
  evidence and verifier key, the archived CRLs and the issued certificates
  are only ever added; the two registers only ever grow at the end;
* its ``log/checkpoint`` verifies with the pinned key and is consistent with
  each parent's (a proof built from the tiles as committed in this commit);
* every tile and entry bundle it adds hashes as its signed root requires,
  and the right edge of its tree hashes to that root;
* with a witness policy, every cosignature by one of its witnesses verifies;
  the report says which trees reached the quorum and who cosigned HEAD's.

Files a commit did not add were checked by the commit that added them and
are unchanged since (the first rule), so the work is proportional to what
each commit adds: entries are hashed once over the whole history, and a
rewritten entry is named with the first commit that holds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import git

from publisher.errors import VerificationFailed
from publisher.pki import registers
from publisher.publication import CERTS_DIR, CRL_ARCHIVE, EVIDENCE_DIR, LOG_DIR, VKEY
from publisher.tlog.checkpoint import CheckpointError, SignedCheckpoint, Witnessing, open_checkpoint
from publisher.tlog.engine import LogError, LogReader
from publisher.tlog.merkle import ProofError, leaf_hash, root_of
from publisher.tlog.note import Verifier
from publisher.tlog.tiles import (
    TILE_WIDTH,
    Tile,
    TileError,
    decode_bundle,
    level_width,
    parse_path,
    split_hashes,
    tile_for,
)
from verifier.cpl_verify import Policy, check_witnessing

LOG = LOG_DIR
CHECKPOINT = f"{LOG}/checkpoint"
TILES = f"{LOG}/tile/"
# Published files that never change once committed, and registers that only grow at the end.
IMMUTABLE = (TILES, f"{LOG}/{EVIDENCE_DIR}/", VKEY, f"{CRL_ARCHIVE}/", f"{CERTS_DIR}/")
APPEND_ONLY = (registers.ISSUED, registers.REVOCATIONS)


class HistoryBroken(VerificationFailed):
    """The history is not append-only; the message names the first bad commit and file."""


@dataclass(frozen=True)
class HistoryReport:
    """What ``verify_history`` checked."""

    commits: int  # commits that moved the checkpoint
    final_size: int
    walked: int = 0  # every commit compared with its parents
    files_checked: int = 0  # tiles and bundles hashed
    trees: int = 0  # distinct trees (sizes) committed
    witnessed: int = 0  # of those, how many some commit showed with the policy's quorum of cosignatures
    final_witnessing: Witnessing | None = None  # HEAD's checkpoint, judged by the policy


@dataclass(frozen=True)
class _Diff:
    status: str  # A, M, D, T
    path: str
    old_blob: str
    new_blob: str


class CommitTree:
    """A ``TileSource``: the log as committed in one commit, read from git objects."""

    def __init__(self, commit: git.Commit) -> None:
        self.commit = commit
        self._dirs: dict[str, dict[str, bytes]] = {}  # folder -> file name -> blob id (a tile folder is parsed once)

    def __str__(self) -> str:
        return LOG  # messages name the commit themselves

    def read(self, rel: str, cap: int) -> bytes | None:
        folder, _, name = f"{LOG}/{rel}".rpartition("/")
        listing = self._dirs.get(folder)
        if listing is None:
            try:
                tree = self.commit.tree[folder]
            except KeyError:
                tree = None
            listing = self._dirs[folder] = (
                {item.name: item.binsha for item in tree.blobs} if isinstance(tree, git.Tree) else {}
            )
        blob = listing.get(name)
        if blob is None:
            return None
        stream = self.commit.repo.odb.stream(blob)
        if stream.size > cap:
            raise HistoryBroken(f"{LOG}/{rel} is larger than {cap} bytes, more than any log file holds")
        return bytes(stream.read())


def _diff(repo: git.Repo, parent: str | None, sha: str) -> list[_Diff]:
    """Raw, rename-free changes from ``parent`` (None: the empty tree) to ``sha``."""
    args = ["-r", "--no-renames", "--raw", "-z", "--no-commit-id", "--full-index"]
    out = repo.git.diff_tree(*args, parent, sha) if parent else repo.git.diff_tree(*args, "--root", sha)
    fields = out.split("\0")
    changes = []
    for i in range(0, len(fields) - 1, 2):
        meta, path = fields[i], fields[i + 1]
        if not meta.startswith(":"):
            continue
        _, _, old_blob, new_blob, status = meta[1:].split(" ")
        changes.append(_Diff(status[0], path, old_blob, new_blob))
    return changes


def _blob(repo: git.Repo, sha: str) -> bytes:
    return bytes(repo.odb.stream(bytes.fromhex(sha)).read())


def _check_append_only(repo: git.Repo, sha: str, changes: list[_Diff]) -> None:
    where = f"commit {sha[:12]}"
    for c in changes:
        if c.status == "A":
            continue
        if c.path.startswith(IMMUTABLE):
            verb = "removed" if c.status == "D" else "modified"
            raise HistoryBroken(f"{where}: {c.path}: {verb}, but published files never change once committed")
        if c.path in APPEND_ONLY:
            if c.status == "D":
                raise HistoryBroken(f"{where}: {c.path}: removed, but the register is append-only")
            if not _blob(repo, c.new_blob).startswith(_blob(repo, c.old_blob)):
                raise HistoryBroken(f"{where}: {c.path}: rewritten, but the register only grows at the end")
        if c.path == CHECKPOINT and c.status == "D":
            raise HistoryBroken(f"{where}: deleted {CHECKPOINT}")


def _check_added_file(log: LogReader, rel: str) -> None:
    """An added tile or bundle must be (a prefix of) what the signed tree authenticates at its position."""
    size = log.size
    try:
        tile = parse_path(rel)
    except TileError as exc:
        raise HistoryBroken(f"{LOG}/{rel}: {exc}") from exc
    name = f"{LOG}/{tile.path}"
    covered = level_width(size, max(tile.level, 0)) - tile.index * TILE_WIDTH
    if covered < tile.width:
        raise HistoryBroken(f"{name}: holds data beyond the signed tree size {size}")
    auth = tile_for(tile.level, tile.index, size)
    data = log.read_file(tile.path)
    if tile.level < 0:
        actual = [leaf_hash(e) for e in decode_bundle(data, tile.width, name)]
        expected = log.read_tile(tile_for(0, tile.index, size))
    else:
        actual = split_hashes(data, tile)
        if tile.level == 0:
            expected = [leaf_hash(e) for e in log.read_bundle(Tile(-1, tile.index, auth.width))]
        else:
            first = tile.index * TILE_WIDTH
            expected = [root_of(log.read_tile(Tile(tile.level - 1, first + i, TILE_WIDTH))) for i in range(auth.width)]
    if actual != expected[: tile.width]:
        what = "entries" if tile.level < 0 else "hashes"
        raise HistoryBroken(f"{name}: its {what} do not hash to the signed root of size {size}")


def _checkpoint(commit: git.Commit, origin: str, verifiers: list[Verifier]) -> SignedCheckpoint | None:
    try:
        note = commit.tree[CHECKPOINT].data_stream.read()
    except KeyError:
        return None
    try:
        return open_checkpoint(note, origin, verifiers)
    except CheckpointError as exc:
        raise HistoryBroken(f"commit {commit.hexsha[:12]}: {CHECKPOINT}: {exc}") from exc


@dataclass
class _Walk:
    checkpoints: dict[str, SignedCheckpoint | None] = field(default_factory=dict)
    moved: int = 0
    files: int = 0


def _check_commit(repo: git.Repo, walk: _Walk, sha: str, origin: str, verifiers: list[Verifier]) -> None:
    commit = repo.commit(sha)
    parents: list[str | None] = [p.hexsha for p in commit.parents] or [None]
    added_tiles: set[str] = set()
    for parent in parents:
        changes = _diff(repo, parent, sha)
        _check_append_only(repo, sha, changes)
        added_tiles.update(c.path[len(LOG) + 1 :] for c in changes if c.status == "A" and c.path.startswith(TILES))
    signed = _checkpoint(commit, origin, verifiers)
    walk.checkpoints[sha] = signed
    befores = [walk.checkpoints.get(p) if p else None for p in parents]
    if signed is None:
        if any(b is not None for b in befores):
            raise HistoryBroken(f"commit {sha[:12]} deleted {CHECKPOINT}")
        if added_tiles:
            raise HistoryBroken(f"commit {sha[:12]}: adds log tiles without a checkpoint")
        return
    if all(b is not None and b.raw == signed.raw for b in befores) and not added_tiles:
        return
    walk.moved += 1
    log = LogReader(CommitTree(commit), origin, verifiers, signed)
    where = f"commit {sha[:12]}"
    try:
        log.check_right_edge()
        for before, parent in zip(befores, parents, strict=True):
            if before is None:
                continue
            try:
                log.check_extends(before.checkpoint)
            except ProofError as exc:
                raise HistoryBroken(
                    f"not an append-only extension of commit {str(parent)[:12]} "
                    f"(size {before.checkpoint.size} -> {log.size}): {exc}"
                ) from exc
        for rel in sorted(added_tiles):
            _check_added_file(log, rel)
            walk.files += 1
    except (LogError, TileError, HistoryBroken) as exc:
        raise HistoryBroken(f"{where}: {exc}") from exc


def verify_history(
    repo: git.Repo, origin: str, verifiers: list[Verifier], policy: Policy | None = None, now: int = 0
) -> HistoryReport:
    """Check every commit of HEAD's history (see the module docstring); raise ``HistoryBroken`` at the first
    fault. With ``policy``, cosignatures are verified and judged as of ``now`` (POSIX seconds)."""
    shas = repo.git.rev_list("--reverse", "--topo-order", "HEAD").split()
    walk = _Walk()
    keys = [*verifiers, *(w.verifier for w in policy.witnesses)] if policy else verifiers
    for sha in shas:
        _check_commit(repo, walk, sha, origin, keys)
    final = walk.checkpoints.get(shas[-1]) if shas else None
    trees = {c.checkpoint.size for c in walk.checkpoints.values() if c is not None}
    report = HistoryReport(walk.moved, final.checkpoint.size if final else 0, len(shas), walk.files, len(trees))
    if policy is None:
        return report
    met = {
        c.checkpoint.size
        for c in walk.checkpoints.values()
        if c is not None and check_witnessing(c.note, policy, now).satisfied
    }
    judged = check_witnessing(final.note, policy, now) if final else None
    return dataclasses.replace(report, witnessed=len(met), final_witnessing=judged)
