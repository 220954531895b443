"""C2SP signed notes (signed-note v1.0.0) with Ed25519 (0x01) and Ed25519 cosignatures (0x04).

Pure logic on strings and bytes; the cryptography comes from ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import unicodedata
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIG_ED25519 = 0x01
SIG_COSIGNATURE_ED25519 = 0x04
EM_DASH = "\u2014"
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16


class NoteError(ValueError):
    """A note, key or signature is malformed or does not verify."""


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), padding required, nothing else allowed."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def check_key_name(name: str) -> None:
    """Key names are non-empty, contain no Unicode whitespace and no ``+``."""
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"invalid key name {name!r}")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise NoteError(f"invalid key name {name!r}")


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """Key ID: first 4 bytes of SHA-256(name || 0x0A || type || public key), big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """A trusted public key: Ed25519 note signatures (0x01) or Ed25519 cosignatures (0x04)."""

    name: str
    key_id: int
    sig_type: int
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<8 hex key id>+<base64(type || key)>`` (split at the first two ``+``)."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key must be <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        check_key_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise NoteError(f"verifier key ID {hex_id!r} is not 8 lowercase hex digits")
        raw = b64decode_strict(b64, "verifier key")
        if not raw:
            raise NoteError("verifier key is empty")
        sig_type, public_key = raw[0], raw[1:]
        if sig_type not in (SIG_ED25519, SIG_COSIGNATURE_ED25519):
            raise NoteError(f"unsupported verifier key type 0x{sig_type:02x}")
        if len(public_key) != 32:
            raise NoteError(f"Ed25519 public key is {len(public_key)} bytes, expected 32")
        expected = key_id(name, sig_type, public_key)
        if int(hex_id, 16) != expected:
            raise NoteError(f"verifier key ID {hex_id} does not match the key (expected {expected:08x})")
        return cls(name, expected, sig_type, public_key)

    @property
    def vkey(self) -> str:
        """The verifier key string."""
        return f"{self.name}+{self.key_id:08x}+{b64encode(bytes([self.sig_type]) + self.public_key)}"

    def verify(self, text: str, signature: bytes) -> None:
        """Raise ``NoteError`` unless ``signature`` (without key ID) signs ``text``."""
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        message = text.encode()
        if self.sig_type == SIG_COSIGNATURE_ED25519:
            if len(signature) != 72:
                raise NoteError(f"cosignature by {self.name} is {len(signature)} bytes, expected 72")
            (timestamp,) = struct.unpack(">Q", signature[:8])
            if timestamp >= 1 << 63:
                raise NoteError(f"cosignature by {self.name} has an invalid timestamp")
            message = f"cosignature/v1\ntime {timestamp}\n".encode() + message
            signature = signature[8:]
        elif len(signature) != 64:
            raise NoteError(f"signature by {self.name} is {len(signature)} bytes, expected 64")
        try:
            key.verify(signature, message)
        except InvalidSignature as exc:
            raise NoteError(f"signature by {self.name} (key {self.key_id:08x}) does not verify") from exc


@dataclass(frozen=True)
class Signer:
    """An Ed25519 note signer (type 0x01)."""

    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Signer:
        check_key_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parse Go's ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`` form."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise NoteError("signer key must be PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts[2], parts[3], parts[4]
        check_key_name(name)
        raw = b64decode_strict(b64, "signer key")
        if len(raw) != 33 or raw[0] != SIG_ED25519:
            raise NoteError("signer key is not an Ed25519 (type 0x01) seed")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id) or int(hex_id, 16) != signer.verifier.key_id:
            raise NoteError("signer key ID does not match the key")
        return signer

    @property
    def skey(self) -> str:
        """The private key string (keep secret)."""
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        v = self.verifier
        return f"PRIVATE+KEY+{self.name}+{v.key_id:08x}+{b64encode(bytes([SIG_ED25519]) + seed)}"

    @property
    def verifier(self) -> Verifier:
        pub = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Verifier(self.name, key_id(self.name, SIG_ED25519, pub), SIG_ED25519, pub)

    def signature_line(self, text: str) -> str:
        """The ``— name base64`` line (with newline) signing ``text``."""
        sig = self.private_key.sign(text.encode())
        payload = self.verifier.key_id.to_bytes(4, "big") + sig
        return f"{EM_DASH} {self.name} {b64encode(payload)}\n"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    signature: bytes  # without the 4-byte key ID


@dataclass(frozen=True)
class Note:
    """A parsed signed note; ``verified_by`` lists the trusted keys that verified it."""

    text: str
    signatures: tuple[Signature, ...]
    verified_by: tuple[Verifier, ...] = field(default=())


def _check_chars(note: str) -> None:
    for i, c in enumerate(note):
        if c != "\n" and unicodedata.category(c) == "Cc":
            raise NoteError(f"note contains control character U+{ord(c):04X} at offset {i}")


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note without verifying it (strict about the format)."""
    if isinstance(data, bytes):
        try:
            note = data.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
    else:
        note = data
    _check_chars(note)
    if not note.endswith("\n"):
        raise NoteError("note does not end with a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise NoteError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    sigs = []
    for n, line in enumerate(lines, 1):
        if not line.startswith(EM_DASH + " "):
            raise NoteError(f"signature line {n} does not start with an em dash and a space")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise NoteError(f"signature line {n} must be '— <name> <base64>'")
        name, b64 = fields
        check_key_name(name)
        raw = b64decode_strict(b64, f"signature line {n}")
        if len(raw) < 5:
            raise NoteError(f"signature line {n} is too short")
        sigs.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, tuple(sigs))


def open_note(data: bytes | str, verifiers: list[Verifier]) -> Note:
    """Parse and verify a note: unknown signers are ignored, a known signer that fails rejects.

    At least one trusted key must verify the note.
    """
    note = parse_note(data)
    by_id = {(v.name, v.key_id): v for v in verifiers}
    verified: list[Verifier] = []
    for sig in note.signatures:
        v = by_id.get((sig.name, sig.key_id))
        if v is None:
            continue
        v.verify(note.text, sig.signature)
        if v not in verified:
            verified.append(v)
    if not verified:
        names = ", ".join(v.name for v in verifiers) or "none"
        raise NoteError(f"note is not signed by any trusted key (trusted: {names})")
    return Note(note.text, note.signatures, tuple(verified))


def sign_note(text: str, signers: list[Signer]) -> str:
    """Sign ``text`` (which must end in a newline) and return the whole note."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_chars(text)
    return text + "\n" + "".join(s.signature_line(text) for s in signers)
