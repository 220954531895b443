"""C2SP checkpoints (tlog-checkpoint v1.0.0) and c2sp.org/tlog-proof@v1 files. Pure logic.

One implementation: parsing and verification live in the consumer verifier
(``verifier/cpl_verify.py``) and are re-exported here.
"""

from __future__ import annotations

from verifier.cpl_verify import (
    PROOF_HEADER,
    Checkpoint,
    CheckpointError,
    SignedCheckpoint,
    TlogProof,
    open_checkpoint,
    parse_body,
    parse_tlog_proof,
    parse_unverified,
    verify_tlog_proof,
)

__all__ = [
    "PROOF_HEADER",
    "Checkpoint",
    "CheckpointError",
    "SignedCheckpoint",
    "TlogProof",
    "open_checkpoint",
    "parse_body",
    "parse_tlog_proof",
    "parse_unverified",
    "verify_tlog_proof",
]
