"""Loading the log's Ed25519 signing key (note signer) under the same custody rules as CA keys."""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError, KeySource
from .note import NoteError, Signer
from .pki.keys import check_custody


def load_log_signer(source: KeySource, publication: Path | None = None) -> Signer:
    """The log signing key (Go ``PRIVATE+KEY+...`` form) from a file or an environment variable.

    With ``publication`` given, a key file inside it or tracked by git is refused.
    """
    if source.file is not None:
        if publication is not None:
            check_custody(source.file, publication)
        try:
            text = source.file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read log key {source.file}: {exc.strerror or exc}") from exc
    else:
        text = os.environ.get(source.env or "", "")
        if not text:
            raise ConfigError(f"environment variable {source.env} is empty or unset")
    try:
        return Signer.from_skey(text)
    except NoteError as exc:
        raise ConfigError(f"log signing key from {source.describe()}: {exc}") from exc
