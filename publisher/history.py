"""``cpl-publisher history verify``: prove the log append-only across the publication's git history.

Every commit that changed ``log/checkpoint`` is visited oldest first; each
checkpoint's signature is verified with the pinned (or committed) key, and
each successive pair is proved consistent with a consistency proof built
from the tiles *as committed in the newer commit*. A commit that rewrote an
old entry therefore fails its own pair, and is named.
"""

from __future__ import annotations

from dataclasses import dataclass

import git

from .checkpoint import CheckpointError, open_checkpoint
from .merkle import HashRange, ProofError, consistency_proof, verify_consistency
from .note import Verifier
from .tiles import Tile, TileError, split_hashes, tile_hash_range


class HistoryBroken(RuntimeError):
    """The history is not append-only; the message names the first bad commit."""


@dataclass(frozen=True)
class HistoryReport:
    commits: int
    final_size: int


def _tile_reader(commit: git.Commit, size: int) -> HashRange:
    def read_tile(tile: Tile) -> list[bytes]:
        for candidate in (tile, tile.as_full()):
            try:
                data = commit.tree[f"log/{candidate.path}"].data_stream.read()
            except KeyError:
                continue
            if candidate.full and not tile.full:
                data = data[: tile.width * 32]
            return split_hashes(data, tile)
        raise HistoryBroken(f"commit {commit.hexsha[:12]}: log/{tile.path} is missing")

    return tile_hash_range(size, read_tile)


def verify_history(repo: git.Repo, origin: str, verifiers: list[Verifier]) -> HistoryReport:
    """Check every committed checkpoint and every successive pair; raise ``HistoryBroken``."""
    shas = repo.git.log("--format=%H", "--reverse", "--", "log/checkpoint").split()
    previous = None
    for sha in shas:
        commit = repo.commit(sha)
        try:
            note = commit.tree["log/checkpoint"].data_stream.read()
        except KeyError:
            raise HistoryBroken(f"commit {sha[:12]} deleted log/checkpoint") from None
        try:
            current = open_checkpoint(note, origin, verifiers).checkpoint
        except CheckpointError as exc:
            raise HistoryBroken(f"commit {sha[:12]}: {exc}") from exc
        if previous is not None:
            old, old_sha = previous
            try:
                proof = consistency_proof(old.size, current.size, _tile_reader(commit, current.size))
                verify_consistency(old.size, current.size, old.root, current.root, proof)
            except (ProofError, TileError) as exc:
                raise HistoryBroken(
                    f"commit {sha[:12]} is not an append-only extension of commit {old_sha[:12]} "
                    f"(size {old.size} -> {current.size}): {exc}"
                ) from exc
        previous = (current, sha)
    return HistoryReport(len(shas), previous[0].size if previous else 0)
