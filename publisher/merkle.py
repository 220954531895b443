"""RFC 9162 (RFC 6962) Merkle tree hashing and proofs, SHA-256.

Pure functions: no files, no clocks. Proof *generation* takes a callback that
returns the Merkle Tree Hash of a leaf range, so the same code serves an
in-memory list of leaf hashes and a tiled log on disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256

#: ``hash_range(start, end)`` returns MTH(D[start:end]) for ``0 <= start < end``.
HashRange = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof, hash or tree size does not verify."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly less than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of subtree hashes of equal size (leaf hashes or tile hashes).

    Iterative: keeps a stack of perfect subtrees, then folds the right edge,
    which equals the recursive RFC definition for a left-heavy tree.
    """
    if not hashes:
        return EMPTY_ROOT
    n = len(hashes)
    if n & (n - 1) == 0:  # perfect tree (every full tile): hash level by level
        level = list(hashes)
        while len(level) > 1:
            it = iter(level)
            level = [_sha256(b"\x01" + a + b).digest() for a, b in zip(it, it, strict=True)]
        return level[0]
    stack: list[tuple[int, bytes]] = []  # (height, hash)
    for h in hashes:
        height = 0
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            h = node_hash(left, h)
            height += 1
        stack.append((height, h))
    _, acc = stack.pop()
    while stack:
        _, left = stack.pop()
        acc = node_hash(left, acc)
    return acc


def list_hash_range(leaf_hashes: Sequence[bytes]) -> HashRange:
    """A ``HashRange`` over an in-memory list of leaf hashes."""

    def hash_range(start: int, end: int) -> bytes:
        return root_of(leaf_hashes[start:end])

    return hash_range


def inclusion_proof(index: int, size: int, hash_range: HashRange) -> list[bytes]:
    """RFC 9162 2.1.3.1 audit path for leaf ``index`` in a tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(hash_range(start + k, end))
            end = start + k
        else:
            path.append(hash_range(start, start + k))
            start = start + k
    path.reverse()  # RFC order: from the leaf's sibling upwards
    return path


def consistency_proof(old_size: int, new_size: int, hash_range: HashRange) -> list[bytes]:
    """RFC 9162 2.1.4.1 consistency proof between two tree sizes."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"cannot prove size {old_size} consistent with size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:end], complete), unrolled; items are produced leaf-side last.
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(hash_range(start, end))
            break
        k = split_point(n)
        if m <= k:
            proof.append(hash_range(start + k, end))
            end = start + k
        else:
            proof.append(hash_range(start, start + k))
            start, m, complete = start + k, m - k, False
    proof.reverse()
    return proof


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Recompute the root implied by an inclusion proof (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    if len(proof) != inner + border:
        raise ProofError(
            f"inclusion proof has {len(proof)} hashes, expected {inner + border} "
            f"for leaf {index} in a tree of size {size}"
        )
    acc = leaf
    for i, p in enumerate(proof[:inner]):
        acc = node_hash(p, acc) if (index >> i) & 1 else node_hash(acc, p)
    for p in proof[inner:]:
        acc = node_hash(p, acc)
    return acc


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``ProofError`` unless ``leaf`` is at ``index`` in the tree with ``root``."""
    _check_hash(root, "root")
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the tree root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ``ProofError`` unless the tree (old_size, old_root) is a prefix of (new_size, new_root).

    RFC 9162 2.1.4.2, in the closed form used by Go's transparency-dev/merkle.
    """
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")
    if new_size < old_size:
        raise ProofError(f"new size {new_size} is smaller than old size {old_size}")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise ProofError("a tree of size 0 must have the empty root (SHA-256 of nothing)")
    if old_size == new_size:
        if proof:
            raise ProofError("sizes are equal but the consistency proof is not empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        # Every tree extends the empty tree; nothing to prove.
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("consistency proof is empty")

    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    shift = (old_size & -old_size).bit_length() - 1  # trailing zeros of old_size
    inner -= shift
    seed, start = proof[0], 1
    if old_size == 1 << shift:  # old tree is a complete subtree: its root is the seed
        seed, start = old_root, 0
    rest = proof[start:]
    mask = (old_size - 1) >> shift
    border = bin(mask >> inner).count("1")
    if len(rest) != inner + border:
        raise ProofError(f"consistency proof has {len(proof)} hashes, wrong length for sizes {old_size} -> {new_size}")
    # Rebuild the old root from the left-side hashes only.
    acc = seed
    for i, p in enumerate(rest[:inner]):
        if (mask >> i) & 1:
            acc = node_hash(p, acc)
    for p in rest[inner:]:
        acc = node_hash(p, acc)
    if acc != old_root:
        raise ProofError(f"consistency proof does not lead to the old root (size {old_size})")
    # Rebuild the new root from all hashes.
    acc = seed
    for i, p in enumerate(rest[:inner]):
        acc = node_hash(p, acc) if (mask >> i) & 1 else node_hash(acc, p)
    for p in rest[inner:]:
        acc = node_hash(p, acc)
    if acc != new_root:
        raise ProofError(f"consistency proof does not lead to the new root (size {new_size})")
