"""Property tests of the Merkle tree and the on-disk log against an independent RFC 6962 implementation.

The reference is ``pymerkle`` (its in-memory tree, SHA-256 with the RFC 6962
0x00/0x01 domain-separation prefixes). Its consistency proofs use a longer,
non-RFC layout, so ours are compared with a literal transcription of the RFC
6962 section 2.1.2 recursion over pymerkle's subtree hashes instead, and
pymerkle's own proofs are checked to verify against our roots.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from pathlib import Path

import pymerkle  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from publisher.tlog import LogReader, TileLog, merkle
from publisher.tlog.note import Signer
from publisher.tlog.tiles import TILE_WIDTH, Tile, right_edge

ORIGIN = "test.example/log"
SIGNER = Signer.generate(ORIGIN)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DISK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- strategies ----------------------------------------------------------------
def make_entries(n: int, salt: bytes) -> list[bytes]:
    """``n`` deterministic entries of varied length (0..40 bytes, some duplicates when salt is short)."""
    out = []
    for i in range(n):
        digest = hashlib.sha256(salt + i.to_bytes(4, "big")).digest()
        out.append((digest + digest)[: digest[0] % 41])
    return out


def entry_lists(min_size: int, max_size: int) -> st.SearchStrategy[list[bytes]]:
    """Arbitrary small lists (hypothesis shrinks these well) or generated lists up to ``max_size``."""
    small = st.lists(st.binary(max_size=24), min_size=min(min_size, 30), max_size=min(max_size, 30))
    generated = st.builds(make_entries, st.integers(min_size, max_size), st.binary(max_size=4))
    return st.one_of(small, generated)


# -- the reference ----------------------------------------------------------------
def reference_tree(entries: list[bytes]) -> pymerkle.InmemoryTree:
    tree = pymerkle.InmemoryTree.init_from_entries(entries, algorithm="sha256")
    assert tree.security  # RFC 6962 0x00 / 0x01 prefixes
    return tree


def reference_root(tree: pymerkle.InmemoryTree, size: int) -> bytes:
    return bytes(tree.get_root(size)) if size else hashlib.sha256(b"").digest()


def rfc6962_consistency(tree: pymerkle.InmemoryTree, m: int, n: int) -> list[bytes]:
    """RFC 6962 2.1.2 PROOF(m, D[n]) transcribed literally; MTH comes from pymerkle's subtree roots."""

    def mth(start: int, end: int) -> bytes:
        return bytes(tree._get_root(start, end))

    def subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [mth(start, end)]
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return [*subproof(m, start, start + k, complete), mth(start + k, end)]
        return [*subproof(m - k, start + k, end, False), mth(start, start + k)]

    if m == 0 or m == n:
        return []
    return subproof(m, 0, n, True)


def leaves(entries: list[bytes]) -> list[bytes]:
    return [merkle.leaf_hash(e) for e in entries]


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def test_reference_hashes_like_rfc6962() -> None:
    tree = reference_tree([b"a", b"b"])
    assert tree.get_leaf(1) == hashlib.sha256(b"\x00a").digest()
    expected = hashlib.sha256(b"\x01" + hashlib.sha256(b"\x00a").digest() + hashlib.sha256(b"\x00b").digest())
    assert tree.get_root() == expected.digest()


# -- pure Merkle functions against pymerkle ------------------------------------------
@FAST
@given(entries=entry_lists(0, 600), data=st.data())
def test_root_matches_pymerkle(entries: list[bytes], data: st.DataObject) -> None:
    tree = reference_tree(entries)
    hashes = leaves(entries)
    assert merkle.root_of(hashes) == reference_root(tree, len(entries))
    assert [bytes(tree.get_leaf(i + 1)) for i in range(len(entries))] == hashes
    for size in data.draw(st.lists(st.integers(0, len(entries)), max_size=5)):
        assert merkle.root_of(hashes[:size]) == reference_root(tree, size)


def check_inclusion(tree: pymerkle.InmemoryTree, hashes: list[bytes], index: int, size: int) -> None:
    ours = merkle.inclusion_proof(index, size, merkle.list_hash_range(hashes))
    theirs = tree.prove_inclusion(index + 1, size)  # pymerkle counts leaves from 1
    root = merkle.root_of(hashes[:size])
    # pymerkle's path is the leaf hash followed by the RFC audit path.
    assert theirs.path[0] == hashes[index]
    assert ours == theirs.path[1:]
    merkle.verify_inclusion(index, size, hashes[index], ours, reference_root(tree, size))
    merkle.verify_inclusion(index, size, hashes[index], theirs.path[1:], root)
    pymerkle.verify_inclusion(hashes[index], root, theirs, index=index + 1, size=size)
    # Any altered hash in the proof, or a wrong leaf, must fail.
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, size, flip(hashes[index]), ours, root)
    if ours:
        pos = index % len(ours)
        bad = [*ours[:pos], flip(ours[pos]), *ours[pos + 1 :]]
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(index, size, hashes[index], bad, root)


def check_consistency(tree: pymerkle.InmemoryTree, hashes: list[bytes], old: int, new: int) -> None:
    ours = merkle.consistency_proof(old, new, merkle.list_hash_range(hashes))
    old_root, new_root = merkle.root_of(hashes[:old]), merkle.root_of(hashes[:new])
    assert old_root == reference_root(tree, old)
    assert new_root == reference_root(tree, new)
    assert ours == rfc6962_consistency(tree, old, new)
    merkle.verify_consistency(old, new, old_root, new_root, ours)
    if old > 0:
        theirs = tree.prove_consistency(old, new)
        pymerkle.verify_consistency(old_root, new_root, theirs, prior_size=old, later_size=new)
    if 0 < old < new:
        pos = old % len(ours)
        bad = [*ours[:pos], flip(ours[pos]), *ours[pos + 1 :]]
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, new, old_root, new_root, bad)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, new, flip(old_root), new_root, ours)


@FAST
@given(entries=entry_lists(1, 600), data=st.data())
def test_inclusion_proofs_match_pymerkle(entries: list[bytes], data: st.DataObject) -> None:
    tree = reference_tree(entries)
    hashes = leaves(entries)
    for _ in range(6):
        size = data.draw(st.integers(1, len(entries)), label="size")
        index = data.draw(st.integers(0, size - 1), label="index")
        check_inclusion(tree, hashes, index, size)


@FAST
@given(entries=entry_lists(0, 600), data=st.data())
def test_consistency_proofs_match_rfc6962_and_pymerkle(entries: list[bytes], data: st.DataObject) -> None:
    tree = reference_tree(entries)
    hashes = leaves(entries)
    for _ in range(6):
        new = data.draw(st.integers(0, len(entries)), label="new")
        old = data.draw(st.integers(0, new), label="old")
        check_consistency(tree, hashes, old, new)


@FEW
@given(n=st.integers(1000, 2100), salt=st.binary(min_size=4, max_size=4), data=st.data())
def test_proofs_match_pymerkle_for_larger_trees(n: int, salt: bytes, data: st.DataObject) -> None:
    entries = make_entries(n, salt)
    tree = reference_tree(entries)
    hashes = leaves(entries)
    assert merkle.root_of(hashes) == reference_root(tree, n)
    for _ in range(10):
        size = data.draw(st.integers(1, n), label="size")
        check_inclusion(tree, hashes, data.draw(st.integers(0, size - 1), label="index"), size)
        check_consistency(tree, hashes, data.draw(st.integers(0, size), label="old"), size)
    # The edges: first and last leaf, and a power-of-two old size.
    check_inclusion(tree, hashes, 0, n)
    check_inclusion(tree, hashes, n - 1, n)
    check_consistency(tree, hashes, 1024 if n >= 1024 else 512, n)


def test_proofs_at_every_size_of_a_small_tree() -> None:
    """Exhaustive for sizes up to 40: every (index, size) and every (old, new)."""
    entries = make_entries(40, b"exhaustive")
    tree = reference_tree(entries)
    hashes = leaves(entries)
    for new in range(41):
        for old in range(new + 1):
            check_consistency(tree, hashes, old, new)
        for index in range(new):
            check_inclusion(tree, hashes, index, new)


# -- the on-disk engine ----------------------------------------------------------
def partial_paths(size: int) -> set[str]:
    """The partial hash tiles and partial entry bundle a tree of ``size`` leaves publishes."""
    paths = {t.path for t in right_edge(size)}
    if size % TILE_WIDTH:
        paths.add(Tile(-1, size // TILE_WIDTH, size % TILE_WIDTH).path)
    return paths


def tile_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in (root / "tile").rglob("*") if p.is_file()}


def is_partial(rel: str) -> bool:
    return ".p/" in rel


def batches_from_cuts(entries: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    bounds = [0, *sorted(cuts), len(entries)]
    return [entries[a:b] for a, b in itertools.pairwise(bounds)]


def build_log(root: Path, batches: list[list[bytes]]) -> list[int]:
    """Append ``batches`` to a new log; return the signed sizes (including 0)."""
    sizes = [0]
    with TileLog.create(root, SIGNER) as log:
        for batch in batches:
            result = log.append(batch)
            assert result.first_index == sizes[-1]
            assert result.size == sizes[-1] + len(batch)
            assert result.root == log.root_hash
            if result.size != sizes[-1]:
                sizes.append(result.size)
    return sizes


def check_engine_against_reference(entries: list[bytes], cuts: list[int], proof_picks: st.DataObject) -> None:
    tree = reference_tree(entries)
    hashes = leaves(entries)
    n = len(entries)
    with tempfile.TemporaryDirectory() as tmp:
        one, split = Path(tmp, "one"), Path(tmp, "split")
        build_log(one, [entries])
        sizes = build_log(split, batches_from_cuts(entries, cuts))
        assert sizes[-1] == n

        a, b = tile_files(one), tile_files(split)
        full_a = {k: v for k, v in a.items() if not is_partial(k)}
        full_b = {k: v for k, v in b.items() if not is_partial(k)}
        assert full_a == full_b, "full tiles and bundles differ between batch splits"
        final = partial_paths(n)
        assert {k for k in a if is_partial(k)} == final
        for rel in final:
            assert b[rel] == a[rel], f"{rel} differs between batch splits"
        # Every signed size keeps its partial tiles, and nothing else is left behind.
        assert {k for k in b if is_partial(k)} == set().union(*(partial_paths(s) for s in sizes))
        # Ed25519 is deterministic: the same tree gives the same signed checkpoint.
        assert (one / "checkpoint").read_bytes() == (split / "checkpoint").read_bytes()

        reader = LogReader(split, ORIGIN, [SIGNER.verifier])
        assert reader.size == n
        assert reader.root_hash == reference_root(tree, n)
        assert list(reader.entries()) == entries
        assert reader.verify_all() == n

        in_memory = merkle.list_hash_range(hashes)
        for size in sizes[1:]:
            root = reference_root(tree, size)
            for index in {0, size - 1, proof_picks.draw(st.integers(0, size - 1), label="index")}:
                proof = reader.inclusion_proof(index, size)
                assert proof == merkle.inclusion_proof(index, size, in_memory)
                merkle.verify_inclusion(index, size, hashes[index], proof, root)
            for old in sizes:
                if old > size:
                    break
                proof = reader.consistency_proof(old, size)
                assert proof == merkle.consistency_proof(old, size, in_memory)
                merkle.verify_consistency(old, size, reference_root(tree, old), root, proof)
            old = proof_picks.draw(st.integers(0, size), label="old")
            proof = reader.consistency_proof(old, size)
            assert proof == merkle.consistency_proof(old, size, in_memory)
            merkle.verify_consistency(old, size, reference_root(tree, old), root, proof)


@DISK
@given(
    entries=st.builds(make_entries, st.integers(0, 700), st.binary(min_size=4, max_size=4)),
    data=st.data(),
)
def test_batch_splits_give_identical_files(entries: list[bytes], data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(entries)), max_size=12), label="cuts")
    check_engine_against_reference(entries, cuts, data)


@FEW
@given(
    entries=st.builds(make_entries, st.integers(1000, 2100), st.binary(min_size=4, max_size=4)),
    data=st.data(),
)
def test_batch_splits_give_identical_files_larger(entries: list[bytes], data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(entries)), min_size=1, max_size=10), label="cuts")
    check_engine_against_reference(entries, cuts, data)


@settings(max_examples=1, deadline=None)
@given(data=st.data())
def test_batch_splits_across_the_second_tile_level(data: st.DataObject) -> None:
    """65,536 leaves fill a level-1 tile: the tree grows a level-2 tile; splits around that edge."""
    entries = make_entries(65_536 + 300, b"level2")
    cuts = [65_535, 65_536, 65_537, 65_536 + 256]
    check_engine_against_reference(entries, cuts, data)
