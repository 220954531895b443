"""``cpl-publisher revoke``: add a record to the append-only revocation register."""

from __future__ import annotations

import datetime as dt
import re

from publisher.config import Config
from publisher.errors import Refused
from publisher.pki import registers
from publisher.pki.crl import FORBIDDEN_REASONS, REASONS
from publisher.pki.registers import RevocationRecord
from publisher.publication import Change, Operation, now_utc
from verifier.cpl_verify import iso_utc


class RevocationRefused(Refused, ValueError):
    """The revocation request breaks a rule; nothing was recorded."""


def parse_serial(text: str) -> int:
    """A certificate serial in hex (optional 0x, colons allowed), as OpenSSL prints it."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not re.fullmatch(r"[0-9a-f]+", cleaned) or len(cleaned.lstrip("0")) > 40:
        raise RevocationRefused(f"serial {text!r} is not a hexadecimal number of at most 20 bytes")
    value = int(cleaned, 16)
    if value.bit_length() > 159:
        raise RevocationRefused(f"serial {text!r} needs more than 20 octets in DER (RFC 5280 4.1.2.2)")
    if value == 0:
        raise RevocationRefused("serial 0 is not a valid certificate serial (RFC 5280 4.1.2.2)")
    return value


def revoke(
    op: Operation,
    config: Config,
    issuer: str,
    serial: int,
    reason: str,
    invalidity_date: dt.datetime | None = None,
    ref: str | None = None,
    unknown_serial: bool = False,
    now: dt.datetime | None = None,
) -> RevocationRecord:
    """Record a revocation after checking it, as one ``Change`` that ``op`` (the publication's writer:
    ``publisher.publish.operations.revoke``) applies; the next CRL refresh publishes it."""
    now = now or now_utc()
    config.issuer(issuer)  # unknown issuer -> ConfigError naming the configured ones
    if reason in FORBIDDEN_REASONS:
        raise RevocationRefused(f"reason {reason}: {FORBIDDEN_REASONS[reason]}")
    if reason not in REASONS:
        raise RevocationRefused(f"unknown reason {reason!r} (choose from {', '.join(REASONS)})")
    if invalidity_date is not None:
        if invalidity_date.tzinfo is None:
            invalidity_date = invalidity_date.replace(tzinfo=dt.UTC)
        if invalidity_date > now:
            raise RevocationRefused(f"invalidity date {iso_utc(invalidity_date)} is in the future")
    hex_serial = f"{serial:x}"
    issued = {(r.issuer, r.serial) for r in registers.load_issued(config.root)}
    if (issuer, hex_serial) not in issued and not unknown_serial:
        raise RevocationRefused(
            f"issuer {issuer} never issued serial {hex_serial} (use --unknown-serial for a certificate "
            "issued before this publisher existed)"
        )
    for r in registers.load_revocations(config.root):
        if r.issuer == issuer and r.serial == hex_serial:
            raise RevocationRefused(f"serial {hex_serial} of {issuer} is already revoked (since {r.revoked_at})")
    if ref is not None and (len(ref) > 200 or any(ord(c) < 0x20 for c in ref)):
        raise RevocationRefused("--ref must be at most 200 printable characters")
    record = RevocationRecord(
        issuer=issuer,
        serial=hex_serial,
        reason=reason,
        revoked_at=iso_utc(now),
        recorded_at=iso_utc(now_utc()),
        invalidity_date=iso_utc(invalidity_date) if invalidity_date else None,
        ref=ref,
        unknown_serial=unknown_serial and (issuer, hex_serial) not in issued,
    )
    change = Change(
        "revoke",
        f"revoke {issuer} serial {hex_serial} ({reason})",
        appends={registers.REVOCATIONS: registers.line_of(record)},
    )
    op.apply(change)
    return record
