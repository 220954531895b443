"""The publication's registers (committed to git): issued certificates, revocations, CRL numbers.

The two registers are append-only JSON Lines files. An append is one write of
one whole line followed by fsync; a line torn by a crash (no final newline)
belongs to an append that never returned, so readers ignore it and the next
append cuts it off first.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from publisher import fsio
from publisher.errors import UsageError
from publisher.publication import REGISTERS_DIR
from verifier.cpl_verify import canonical_json

ISSUED = f"{REGISTERS_DIR}/issued.jsonl"
REVOCATIONS = f"{REGISTERS_DIR}/revocations.jsonl"
CRL_NUMBERS = f"{REGISTERS_DIR}/crl-numbers.json"


class RegisterError(UsageError, ValueError):
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
    return canonical_json(obj) + b"\n"


def line_of(record: IssuedRecord | RevocationRecord) -> bytes:
    """The register line of ``record`` (canonical JSON and a newline)."""
    return _canonical(asdict(record))


def append(root: Path, rel: str, record: IssuedRecord | RevocationRecord) -> None:
    """Append one record durably."""
    append_line(root, rel, line_of(record))


def append_line(root: Path, rel: str, line: bytes, unless_last: bool = False) -> None:
    """Append one complete line durably; with ``unless_last``, not if it is the last line already (a redo)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            last = os.pread(fd, 1, size - 1)
            if last != b"\n":  # a torn line from a crashed append: cut it off
                data = os.pread(fd, size, 0)
                size = data.rfind(b"\n") + 1
                os.ftruncate(fd, size)
            start = size - len(line)
            if (
                unless_last
                and start >= 0
                and os.pread(fd, len(line) + 1, start - 1 if start else 0) in (line, b"\n" + line)
            ):
                return
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_complete_lines(path: Path) -> bytes:
    """A register's bytes up to its last newline (empty if it does not exist): a torn last line is not read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[: data.rfind(b"\n") + 1]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: bulk parsing allocates a million containers and none are cyclic.

    Left on, the collector runs full passes over all of them again and again
    as they accumulate (a large share of a register load).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_lines(data: bytes, name: str | Path) -> list[dict[str, object]]:
    """The records of complete JSON Lines, one per line."""
    if not data:
        return []
    try:
        # One parse of the whole file is several times faster than a parse per line.
        with gc_paused():
            rows = json.loads(b"[" + data.rstrip(b"\n").replace(b"\n", b",") + b"]")
    except ValueError as exc:
        raise RegisterError(f"{name}: not valid JSON Lines ({exc})") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RegisterError(f"{name}: every line must be a JSON object")
    return rows


def _lines(root: Path, rel: str) -> list[dict[str, object]]:
    path = root / rel
    return parse_lines(read_complete_lines(path), path)


@dataclass(frozen=True)
class Prefix:
    """The first ``length`` bytes of a register and their SHA-256 (hex): the register state a CRL was built from.

    The registers are append-only, so a later register that still starts with
    these bytes holds everything they held, plus what follows.
    """

    length: int
    sha256: str


class Snapshot:
    """A register's complete lines as read once, with the digests of its prefixes and its records.

    Every issuer's CRL refresh asks about the same bytes, so the digests are
    computed in one pass (each continues from the longest shorter prefix
    already hashed) and the records are parsed once, from the earliest offset
    asked for.
    """

    def __init__(self, name: str | Path, data: bytes) -> None:
        self.name = name
        self.data = data
        self._hashes: dict[int, hashlib._Hash] = {0: hashlib.sha256()}
        self._parsed_from: int | None = None
        self._rows: list[dict[str, object]] = []

    @classmethod
    def read(cls, root: Path, rel: str) -> Snapshot:
        path = root / rel
        return cls(path, read_complete_lines(path))

    def _digest(self, length: int) -> str:
        done = self._hashes.get(length)
        if done is None:
            starts = sorted(self._hashes)
            start = starts[bisect.bisect_right(starts, length) - 1]
            done = self._hashes[start].copy()
            done.update(memoryview(self.data)[start:length])
            self._hashes[length] = done
        return done.hexdigest()

    @property
    def whole(self) -> Prefix:
        """All of it."""
        return Prefix(len(self.data), self._digest(len(self.data)))

    def starts_with(self, prefix: Prefix) -> bool:
        """Whether these bytes begin with exactly the bytes ``prefix`` describes (whole lines)."""
        length = prefix.length
        if not 0 <= length <= len(self.data) or (length and self.data[length - 1] != ord("\n")):
            return False
        return self._digest(length) == prefix.sha256

    def records_from(self, offset: int) -> list[dict[str, object]]:
        """The records of the lines from byte ``offset`` (a line start) on."""
        if self._parsed_from is None or offset < self._parsed_from:
            self._rows = parse_lines(self.data[offset:], self.name)
            self._parsed_from = offset
        # One record per line, so the lines before ``offset`` say how many records to skip.
        return self._rows[self.data.count(b"\n", self._parsed_from, offset) :]


def load_issued(root: Path) -> list[IssuedRecord]:
    try:
        return [IssuedRecord(**r) for r in _lines(root, ISSUED)]  # type: ignore[arg-type]
    except TypeError as exc:
        raise RegisterError(f"{root / ISSUED}: unexpected fields ({exc})") from exc


# (serial, reason, revoked_at, invalidity_date) of a RevocationRecord.
RevocationFields = tuple[str, str, str, str | None]


def revocations_of(records: list[dict[str, object]], issuer: str) -> list[RevocationFields]:
    """The fields a CRL entry needs of each revocation by ``issuer`` among register records.

    The CRL path reads a million records: plain tuples, not RevocationRecords.
    """
    out: list[RevocationFields] = []
    append = out.append
    for r in records:
        named = r.get("issuer")
        if named != issuer:
            if not isinstance(named, str):  # a revocation of no issuer must not pass unnoticed
                raise RegisterError(f"a revocation names no issuer: {r}")
            continue
        try:
            serial, reason, revoked_at = r["serial"], r["reason"], r["revoked_at"]
        except KeyError as exc:
            raise RegisterError(f"a revocation of {issuer} has no {exc}") from exc
        invalidity_date = r.get("invalidity_date")
        if not (
            isinstance(serial, str)
            and isinstance(reason, str)
            and isinstance(revoked_at, str)
            and (invalidity_date is None or isinstance(invalidity_date, str))
        ):
            raise RegisterError(f"revocation of {issuer} serial {serial!r}: a field is not a string")
        append((serial, reason, revoked_at, invalidity_date))
    return out


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
