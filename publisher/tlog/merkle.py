"""RFC 9162 (RFC 6962) Merkle tree hashing and proofs, SHA-256.

One implementation: the functions live in the consumer verifier
(``verifier/cpl_verify.py``, which users download and run) and are
re-exported here, so the publisher checks its output with exactly the code
its users run. Proof generation takes a callback that returns the Merkle
Tree Hash of a leaf range, so the same code serves an in-memory list of leaf
hashes, a tiled log on disk, and a client fetching tiles over HTTP.
"""

from __future__ import annotations

from verifier.cpl_verify import (
    EMPTY_ROOT,
    HASH_SIZE,
    HashRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_hash_range,
    node_hash,
    root_from_inclusion_proof,
    root_of,
    split_point,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "HashRange",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "list_hash_range",
    "node_hash",
    "root_from_inclusion_proof",
    "root_of",
    "split_point",
    "verify_consistency",
    "verify_inclusion",
]
