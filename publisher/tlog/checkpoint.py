"""C2SP checkpoints (tlog-checkpoint v1.0.0), c2sp.org/tlog-proof@v1 files, and witness cosignatures judged
by a C2SP tlog-policy. Pure logic.

One implementation: parsing and verification live in the consumer verifier
(``verifier/cpl_verify.py``) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

from verifier.cpl_verify import (
    PROOF_HEADER,
    Checkpoint,
    CheckpointError,
    Policy,
    SignedCheckpoint,
    TlogProof,
    Verifier,
    Witnessing,
    check_witnessing,
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
    "Witnessing",
    "open_checkpoint",
    "open_witnessed",
    "parse_body",
    "parse_tlog_proof",
    "parse_unverified",
    "verify_tlog_proof",
]


def open_witnessed(
    note: str | bytes, origin: str, log_keys: Sequence[Verifier], policy: Policy, now: int
) -> tuple[SignedCheckpoint, Witnessing]:
    """A checkpoint verified with the log's key and every witness key of ``policy`` (a cosignature by one of
    them that does not verify is ``CheckpointError``), and the policy's verdict on it as of ``now``. A policy
    that names logs (a file shared with other tools) must name this one."""
    if policy.logs and not {v.vkey for v, _ in policy.logs} & {v.vkey for v in log_keys}:
        raise CheckpointError("the witness policy's 'log' lines name other log keys than this log's")
    signed = open_checkpoint(note, origin, [*log_keys, *(w.verifier for w in policy.witnesses)])
    return signed, check_witnessing(signed.note, policy, now)
