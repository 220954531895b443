"""C2SP signed notes (signed-note v1.0.0) with Ed25519 (0x01) and Ed25519 cosignatures (0x04).

Parsing and verification (``Verifier``, ``parse_note``, ``open_note``, key
IDs, base64) live in the consumer verifier, ``verifier/cpl_verify.py``, and
are re-exported here: one implementation of each check. The publisher adds
signing. Pure logic on strings and bytes; the cryptography comes from
``cryptography``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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
    format_skey,
    key_id,
    open_note,
    parse_note,
    parse_skey,
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


class Ed25519Key(Protocol):
    """What signs for a ``Signer``: an ``Ed25519PrivateKey``, or a key in a token (``publisher.hsm``)."""

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data``."""
        ...

    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        ...


@dataclass(frozen=True)
class Signer:
    """An Ed25519 note signer (type 0x01)."""

    name: str
    private_key: Ed25519Key

    @classmethod
    def generate(cls, name: str) -> Signer:
        check_key_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parse Go's ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`` form."""
        return cls(*parse_skey(skey, SIG_ED25519))

    @property
    def skey(self) -> str:
        """The private key string (keep secret); none for a key in a token."""
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise NoteError(f"the key of {self.name} lives in a token: it has no private key string")
        return format_skey(self.name, SIG_ED25519, self.private_key)

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
