"""Loading the log's Ed25519 signing key (note signer) under the same custody rules as CA keys."""

from __future__ import annotations

from pathlib import Path

from publisher.config import ConfigError, KeySource
from publisher.keys import read_key_material
from publisher.tlog.note import NoteError, Signer


def load_log_signer(source: KeySource, publication: Path | None = None) -> Signer:
    """The log signing key (Go ``PRIVATE+KEY+...`` form) from a file or an environment variable.

    With ``publication`` given, a key file inside it or tracked by git is refused.
    """
    text = read_key_material(source, publication).decode("utf-8", errors="replace")
    try:
        return Signer.from_skey(text)
    except NoteError as exc:
        raise ConfigError(f"log signing key from {source.describe()}: {exc}") from exc
