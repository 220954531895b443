"""Minimal DER encoding (X.690) for the parts of a CRL that are built per entry.

cryptography's CRL builder costs several microseconds per revoked entry in
Python objects; a million-entry CRL is encoded here directly instead. Only
encoding lives here: signing and every check of the result use cryptography,
and the tests compare these bytes with cryptography's own encoder.
"""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC


def length(n: int) -> bytes:
    """DER length octets."""
    if n < 0x80:
        return bytes([n])
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
    return tlv(0x18, _utc(when).strftime("%Y%m%d%H%M%SZ").encode())


def time(when: dt.datetime) -> bytes:
    """RFC 5280 Time: UTCTime through 2049, GeneralizedTime from 2050."""
    when = _utc(when)
    if 1950 <= when.year <= 2049:
        return tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return generalized_time(when)


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
