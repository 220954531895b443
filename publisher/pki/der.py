"""Minimal DER encoding (X.690) for the parts of a CRL that are built per entry.

cryptography's CRL builder costs several microseconds per revoked entry in
Python objects; a million-entry CRL is encoded here directly instead. Only
encoding (and reading the headers it wrote) lives here: signing and every
check of the result use cryptography, and the tests compare these bytes with
cryptography's own encoder.
"""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC

# Short-form length octets, looked up rather than built: the per-entry encoder
# needs several per entry, a million times.
SHORT_LENGTHS = tuple(bytes([n]) for n in range(0x80))


def length(n: int) -> bytes:
    """DER length octets."""
    if n < 0x80:
        return SHORT_LENGTHS[n]
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    """One tag-length-value (single-byte tags only)."""
    return bytes([tag]) + length(len(value)) + value


def sequence(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def integer(n: int) -> bytes:
    """INTEGER, minimal two's complement."""
    if n < 0:
        raise ValueError("negative integers are not used in this profile")
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def enumerated(n: int) -> bytes:
    return tlv(0x0A, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def boolean(value: bool) -> bytes:
    return tlv(0x01, b"\xff" if value else b"\x00")


def octet_string(data: bytes) -> bytes:
    return tlv(0x04, data)


def bit_string(data: bytes) -> bytes:
    return tlv(0x03, b"\x00" + data)


def oid(dotted: str) -> bytes:
    """OBJECT IDENTIFIER from its dotted form."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2:
        raise ValueError(f"bad OID {dotted!r}")
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def explicit(number: int, value: bytes) -> bytes:
    """[number] EXPLICIT (constructed, context-specific)."""
    return tlv(0xA0 | number, value)


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return when.astimezone(UTC)


def generalized_time(when: dt.datetime) -> bytes:
    when = _utc(when)
    # Not strftime's %Y, which writes the years before 1000 with fewer than four digits.
    return tlv(0x18, f"{when.year:04d}".encode() + when.strftime("%m%d%H%M%SZ").encode())


def time(when: dt.datetime) -> bytes:
    """RFC 5280 Time: UTCTime through 2049, GeneralizedTime from 2050."""
    when = _utc(when)
    if 1950 <= when.year <= 2049:
        return tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return generalized_time(when)


def _compact_time(text: str) -> str | None:
    """``YYYYMMDDHHMMSSZ`` for a valid ``YYYY-MM-DDTHH:MM:SSZ``; None for any other form.

    Registers write that one form; slicing it is several times faster than
    parsing and formatting a datetime. The separators are checked because
    ``fromisoformat`` also takes other 20-character forms (week dates, basic
    format with fractions); it then checks the digits and ranges (month 13,
    30 February).
    """
    if len(text) != 20 or text[4::3] != "--T::Z":  # the separators, at 4, 7, 10, 13, 16 and 19
        return None
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return text.replace("-", "").replace("T", "").replace(":", "")


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time as registers and CRL descriptions hold it."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def time_from_text(text: str) -> bytes:
    """``time`` of an RFC 3339 time, without a datetime when it is in the registers' UTC form."""
    compact = _compact_time(text)
    if compact is None:
        return time(parse_time(text))
    if "1950" <= compact[:4] <= "2049":  # four ASCII digits compare as the year does
        return b"\x17\x0d" + compact[2:].encode("ascii")
    return b"\x18\x0f" + compact.encode("ascii")


def generalized_time_from_text(text: str) -> bytes:
    """``generalized_time`` of an RFC 3339 time (see ``time_from_text``)."""
    compact = _compact_time(text)
    if compact is None:
        return generalized_time(parse_time(text))
    return b"\x18\x0f" + compact.encode("ascii")


def extension(extn_id: str, critical: bool, value_der: bytes) -> bytes:
    """Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue OCTET STRING }."""
    return sequence(oid(extn_id), boolean(True) if critical else b"", octet_string(value_der))


def read_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """Parse the tag and length at ``pos``; return (tag, start of value, end of value)."""
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        n = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + n
    if end > len(data):
        raise ValueError("DER value runs past the end of the data")
    return tag, pos, end
