"""The publication's registers (committed to git): issued certificates, revocations, CRL numbers.

The two registers are append-only JSON Lines files. An append is one write of
one whole line followed by fsync; a line torn by a crash (no final newline)
belongs to an append that never returned, so readers ignore it and the next
append cuts it off first.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import fsio

ISSUED = "registers/issued.jsonl"
REVOCATIONS = "registers/revocations.jsonl"
CRL_NUMBERS = "registers/crl-numbers.json"


class RegisterError(ValueError):
    """A register file is malformed."""


@dataclass(frozen=True)
class IssuedRecord:
    """A certificate this publisher issued."""

    issuer: str  # issuer name in publisher.toml ("" for a self-signed root)
    serial: str  # lowercase hex
    kind: str
    subject: str
    key_sha256: str
    cert_sha256: str
    not_before: str
    not_after: str
    issued_at: str
    role: str | None = None
    approval_ref: str | None = None


@dataclass(frozen=True)
class RevocationRecord:
    """One revocation, final."""

    issuer: str
    serial: str  # lowercase hex
    reason: str
    revoked_at: str  # RFC 3339 UTC, seconds
    recorded_at: str
    invalidity_date: str | None = None
    ref: str | None = None
    unknown_serial: bool = False


def _canonical(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def append(root: Path, rel: str, record: IssuedRecord | RevocationRecord) -> None:
    """Append one record durably."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            last = os.pread(fd, 1, size - 1)
            if last != b"\n":  # a torn line from a crashed append: cut it off
                data = os.pread(fd, size, 0)
                os.ftruncate(fd, data.rfind(b"\n") + 1)
        os.write(fd, _canonical(asdict(record)))
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines(root: Path, rel: str) -> list[dict[str, object]]:
    path = root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    data = data[: data.rfind(b"\n") + 1]  # ignore a torn last line
    if not data:
        return []
    try:
        # One parse of the whole file is several times faster than a parse per line.
        rows = json.loads(b"[" + data.rstrip(b"\n").replace(b"\n", b",") + b"]")
    except ValueError as exc:
        raise RegisterError(f"{path}: not valid JSON Lines ({exc})") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RegisterError(f"{path}: every line must be a JSON object")
    return [dict(r) for r in rows]


def load_issued(root: Path) -> list[IssuedRecord]:
    try:
        return [IssuedRecord(**r) for r in _lines(root, ISSUED)]  # type: ignore[arg-type]
    except TypeError as exc:
        raise RegisterError(f"{root / ISSUED}: unexpected fields ({exc})") from exc


def load_revocations(root: Path) -> list[RevocationRecord]:
    try:
        return [RevocationRecord(**r) for r in _lines(root, REVOCATIONS)]  # type: ignore[arg-type]
    except TypeError as exc:
        raise RegisterError(f"{root / REVOCATIONS}: unexpected fields ({exc})") from exc


def last_crl_numbers(root: Path) -> dict[str, int]:
    """The last CRL number reserved per issuer."""
    path = root / CRL_NUMBERS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise RegisterError(f"{path}: not valid JSON") from exc
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise RegisterError(f"{path}: must map issuer names to integers")
    return data


def reserve_crl_number(root: Path, issuer: str, at_least: int = 1) -> int:
    """Durably reserve the next CRL number of ``issuer`` before anything is signed with it.

    A crash after this leaves a gap in the numbers, never a reuse.
    """
    numbers = last_crl_numbers(root)
    number = max(numbers.get(issuer, 0) + 1, at_least)
    numbers[issuer] = number
    fsio.write_file(root / CRL_NUMBERS, json.dumps(numbers, sort_keys=True, indent=1).encode() + b"\n")
    return number
