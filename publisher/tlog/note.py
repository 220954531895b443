"""C2SP signed notes (signed-note v1.0.0) with Ed25519 (0x01) and Ed25519 cosignatures (0x04).

Parsing and verification (``Verifier``, ``parse_note``, ``open_note``, key
IDs, base64) live in the consumer verifier, ``verifier/cpl_verify.py``, and
are re-exported here: one implementation of each check. The publisher adds
signing. Pure logic on strings and bytes; the cryptography comes from
``cryptography``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from verifier.cpl_verify import (
    EM_DASH,
    MAX_SIGNATURES,
    SIG_COSIGNATURE_ED25519,
    SIG_ED25519,
    Note,
    NoteError,
    Signature,
    Verifier,
    b64decode_strict,
    b64encode,
    check_key_name,
    key_id,
    open_note,
    parse_note,
)
from verifier.cpl_verify import check_note_chars as _check_chars

__all__ = [
    "EM_DASH",
    "MAX_SIGNATURES",
    "SIG_COSIGNATURE_ED25519",
    "SIG_ED25519",
    "Note",
    "NoteError",
    "Signature",
    "Signer",
    "Verifier",
    "b64decode_strict",
    "b64encode",
    "check_key_name",
    "key_id",
    "open_note",
    "parse_note",
    "sign_note",
]


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


def sign_note(text: str, signers: list[Signer]) -> str:
    """Sign ``text`` (which must end in a newline) and return the whole note."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_chars(text)
    return text + "\n" + "".join(s.signature_line(text) for s in signers)
