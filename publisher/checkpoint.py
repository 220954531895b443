"""C2SP tlog-checkpoint bodies and c2sp.org/tlog-proof@v1 files. Pure logic."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .merkle import HASH_SIZE, ProofError, verify_inclusion
from .note import Note, NoteError, Verifier, b64decode_strict, b64encode, open_note, parse_note

PROOF_HEADER = "c2sp.org/tlog-proof@v1"


class CheckpointError(ValueError):
    """A checkpoint or proof file is malformed or does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint body: origin, tree size and root hash (extension lines kept verbatim)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The note text this checkpoint signs (ends with a newline)."""
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")


def parse_body(text: str) -> Checkpoint:
    """Parse a checkpoint body (the note text), strictly."""
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs an origin, a tree size and a root hash")
    origin, size_text, root_text, *ext = lines
    if not origin or any(c.isspace() for c in origin):
        raise CheckpointError(f"invalid checkpoint origin {origin!r}")
    if not _SIZE_RE.fullmatch(size_text) or int(size_text) >= 1 << 63:
        raise CheckpointError(f"invalid tree size {size_text!r}")
    try:
        root = b64decode_strict(root_text, "checkpoint root hash")
    except NoteError as exc:
        raise CheckpointError(str(exc)) from exc
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, expected {HASH_SIZE}")
    if any(not line for line in ext):
        raise CheckpointError("checkpoint has an empty extension line")
    return Checkpoint(origin, int(size_text), root, tuple(ext))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A verified signed checkpoint and the note text it came from."""

    checkpoint: Checkpoint
    note: Note
    raw: str


def open_checkpoint(data: bytes | str, origin: str, verifiers: list[Verifier]) -> SignedCheckpoint:
    """Verify a signed checkpoint for ``origin`` with the trusted ``verifiers``.

    When a trusted key is named after the origin (C2SP: the log's key name
    SHOULD be the origin), that log key must have signed; otherwise (a user
    who trusts only witnesses) a valid cosignature from a trusted key suffices.
    """
    try:
        raw = data.decode("utf-8") if isinstance(data, bytes) else data
        note = open_note(raw, verifiers)
    except (NoteError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint: {exc}") from exc
    cp = parse_body(note.text)
    if cp.origin != origin:
        raise CheckpointError(f"checkpoint is for origin {cp.origin!r}, expected {origin!r}")
    if any(v.name == origin for v in verifiers) and not any(v.name == origin for v in note.verified_by):
        raise CheckpointError(f"checkpoint carries no valid signature of the log key {origin!r}")
    return SignedCheckpoint(cp, note, raw)


def parse_unverified(data: bytes | str) -> Checkpoint:
    """Read the body of a signed checkpoint without checking signatures (for diagnostics)."""
    try:
        return parse_body(parse_note(data).text)
    except NoteError as exc:
        raise CheckpointError(f"checkpoint: {exc}") from exc


@dataclass(frozen=True)
class TlogProof:
    """A c2sp.org/tlog-proof@v1 file: leaf index, inclusion proof and signed checkpoint."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None

    def encode(self) -> str:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64encode(h) for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint


def parse_tlog_proof(data: bytes | str) -> TlogProof:
    """Parse a ``.tlog-proof`` file (without verifying it)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise CheckpointError("proof file is not valid UTF-8") from exc
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise CheckpointError("proof file has no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise CheckpointError(f"proof file does not start with {PROOF_HEADER!r}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        try:
            extra = b64decode_strict(lines[pos][6:], "proof extra data")
        except NoteError as exc:
            raise CheckpointError(str(exc)) from exc
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise CheckpointError("proof file has no 'index' line")
    index_text = lines[pos][6:]
    if not _SIZE_RE.fullmatch(index_text):
        raise CheckpointError(f"invalid index {index_text!r} in proof file")
    hashes = []
    for n, line in enumerate(lines[pos + 1 :], 1):
        try:
            h = b64decode_strict(line, f"proof hash {n}")
        except NoteError as exc:
            raise CheckpointError(str(exc)) from exc
        if len(h) != HASH_SIZE:
            raise CheckpointError(f"proof hash {n} is {len(h)} bytes, expected {HASH_SIZE}")
        hashes.append(h)
    return TlogProof(int(index_text), tuple(hashes), checkpoint, extra)


def verify_tlog_proof(proof: TlogProof, leaf: bytes, origin: str, verifiers: list[Verifier]) -> SignedCheckpoint:
    """Verify a tlog-proof for an entry whose RFC 9162 leaf hash is ``leaf``.

    Checks the checkpoint signature (log key named ``origin``) and the
    inclusion proof against its root; returns the verified checkpoint.
    """
    signed = open_checkpoint(proof.checkpoint, origin, verifiers)
    try:
        verify_inclusion(proof.index, signed.checkpoint.size, leaf, proof.proof, signed.checkpoint.root)
    except ProofError as exc:
        raise CheckpointError(str(exc)) from exc
    return signed
