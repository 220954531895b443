"""Loading the log's Ed25519 signing key (note signer) under the same custody rules as CA keys."""

from __future__ import annotations

from pathlib import Path

from publisher.config import ConfigError, KeySource
from publisher.keys import read_key_material
from publisher.tlog.note import NoteError, Signer, check_key_name


def load_log_signer(source: KeySource, publication: Path | None = None, origin: str | None = None) -> Signer:
    """The log signing key: Go's ``PRIVATE+KEY+...`` form from a file or an environment variable, or an
    Ed25519 key in a PKCS#11 token, which signs as ``origin`` (a file key carries its own name).

    With ``publication`` given, a key or PIN file inside it or tracked by git is refused.
    """
    if source.token is not None:
        from publisher import hsm  # here: file keys need no PKCS#11 library

        if origin is None:
            raise ConfigError(f"the log key {source.describe()} needs the log's origin as its name")
        try:
            check_key_name(origin)
        except NoteError as exc:
            raise ConfigError(f"log origin {origin!r}: {exc}") from exc
        return Signer(origin, hsm.TokenEd25519Key.open(source.token, publication))
    text = read_key_material(source, publication).decode("utf-8", errors="replace")
    try:
        return Signer.from_skey(text)
    except NoteError as exc:
        raise ConfigError(f"log signing key from {source.describe()}: {exc}") from exc
