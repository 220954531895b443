"""The publication folder: its layout, its clock, its certificates and ``status.json``; and the shape of
an operator's change (``Change``), which whoever holds the publication applies (``Operation``).

Every path of the publication is named here. (``publisher.tlog.open_log`` opens its log.) Importing this
module loads neither git nor the log engine: the IKI side relies on that.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography import x509

from publisher.config import CONFIG_NAME, Config, ConfigError
from publisher.storage import LocalStorage, Storage
from verifier.cpl_verify import b64encode

if TYPE_CHECKING:  # a type only: the layout, and so the IKI side, never loads the log engine
    from publisher.tlog.engine import LogReader

__all__ = [
    "CERTS_DIR",
    "CHECKPOINT",
    "CONFIG_NAME",
    "CRL_ARCHIVE",
    "CRL_DIR",
    "EVIDENCE_DIR",
    "INBOX",
    "LOG_DIR",
    "LOG_STATE",
    "PKI_DIR",
    "PROCESSED",
    "REGISTERS_DIR",
    "STATE_PATHS",
    "STATUS_FILE",
    "VKEY",
    "Change",
    "Operation",
    "load_certificate",
    "now_utc",
    "public_files",
    "status",
    "status_bytes",
]

PKI_DIR = "pki"  # CA certificates, public
CERTS_DIR = "certs"  # every issued certificate, by issuer and serial
CRL_DIR = "crl"  # current CRLs and their archive
REGISTERS_DIR = "registers"  # append-only issued and revoked registers
LOG_DIR = "log"  # the transparency log (C2SP tlog-tiles)
EVIDENCE_DIR = "evidence"  # under LOG_DIR: every approved submission's files, by SHA-256
INBOX = "inbox"  # submissions waiting for intake
PROCESSED = "processed"  # approved submissions, moved out of the inbox
CHECKPOINT = f"{LOG_DIR}/checkpoint"  # the log's signed checkpoint, as committed
VKEY = f"{LOG_DIR}/vkey"  # the log's verifier key, as committed
LOG_STATE = f"{LOG_DIR}/.state"  # this machine's private log state (tlog.engine.STATE_DIR), never published
CRL_ARCHIVE = f"{CRL_DIR}/archive"  # every CRL ever published, by issuer and number
STATUS_FILE = "status.json"
# Everything a publish commits (the publication's whole public state).
STATE_PATHS = (LOG_DIR, CRL_DIR, REGISTERS_DIR, PKI_DIR, CERTS_DIR, PROCESSED, STATUS_FILE)


def now_utc() -> dt.datetime:
    """The current time, to the second (certificates, CRLs and approvals carry seconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM or DER certificate file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc.strerror or exc}") from exc
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM or DER certificate") from exc


def status(config: Config, log: LogReader, generated_at: str) -> dict[str, object]:
    """``status.json``: the CRLs' state and the log's size, root and checkpoint."""
    crls: dict[str, object] = {}
    for issuer in config.issuers:
        meta_path = config.root / CRL_DIR / f"{issuer.name}.json"
        if meta_path.exists():
            crls[issuer.name] = json.loads(meta_path.read_text())
    return {
        "generated_at": generated_at,
        "publish_interval_hours": config.publish_interval_hours,
        "log": {
            "origin": config.origin,
            "size": log.size,
            "root": b64encode(log.root_hash),
            "checkpoint_sha256": hashlib.sha256(log.signed.raw.encode()).hexdigest(),
        },
        "crls": crls,
    }


def status_with_checkpoint(root: Path, note: str) -> bytes | None:
    """The committed ``status.json`` naming ``note`` as the checkpoint (the same tree with cosignatures
    added), or None when the publication has none yet."""
    path = root / STATUS_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    state["log"]["checkpoint_sha256"] = hashlib.sha256(note.encode()).hexdigest()
    return status_bytes(state)


def public_files(root: Path) -> Storage:
    """Where the publication at ``root`` keeps its public files (the one place a ``Storage`` is chosen)."""
    return LocalStorage(root)


def status_bytes(state: dict[str, object]) -> bytes:
    """``status.json`` as written: indented, sorted keys, a final newline."""
    return (json.dumps(state, indent=1, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Change:
    """An operator's change, known in full before anything is written, so that a crash can be redone."""

    op: str
    message: str
    writes: dict[str, bytes] = field(default_factory=dict)  # publication-relative path -> whole file
    appends: dict[str, bytes] = field(default_factory=dict)  # register path -> one complete line

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "change",
            "op": self.op,
            "message": self.message,
            "writes": {k: base64.b64encode(v).decode() for k, v in self.writes.items()},
            "appends": {k: v.decode() for k, v in self.appends.items()},
        }

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> Change:
        """The change a journal holds (``ValueError`` if it is not one)."""
        writes, appends = obj.get("writes"), obj.get("appends")
        if not isinstance(writes, dict) or not isinstance(appends, dict):
            raise ValueError("a change without its writes and appends")
        return cls(
            str(obj.get("op")),
            str(obj.get("message")),
            {str(k): base64.b64decode(str(v)) for k, v in writes.items()},
            {str(k): str(v).encode() for k, v in appends.items()},
        )

    @property
    def paths(self) -> list[str]:
        return sorted({*self.writes, *self.appends})


class Operation(Protocol):
    """The single writer of a publication for one operation (``publisher.publish.transaction.session``).

    ``apply`` makes a ``Change`` durable and committed, or, after a crash anywhere, redone by the next
    operation: it is never half there. ``begin`` marks a resumable operation under way; ``commit``
    commits its paths once all its idempotent steps are done.
    """

    def apply(self, change: Change) -> str | None: ...

    def begin(self) -> None: ...

    def commit(self, paths: list[str], message: str, first: bool = False) -> str | None: ...
