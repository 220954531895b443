"""RFC 7512 PKCS#11 URIs: parsing and formatting. Pure (no token, no files).

``pkcs11:token=DCC%20CPL;object=ica?module-path=/usr/lib/softhsm/libsofthsm2.so``
names a key by the token's attributes (path) and says how to reach it (query).
A PIN in the URI (``pin-value``) is refused: a PIN comes from an environment
variable or a file outside the publication, never from text that is committed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from publisher.errors import UsageError

SCHEME = "pkcs11:"
# RFC 7512 2.3: the path attributes this publisher matches on, and the ones it accepts and ignores.
TOKEN_ATTRIBUTES = ("token", "manufacturer", "serial", "model")
OBJECT_ATTRIBUTES = ("object", "id", "type")
SLOT_ATTRIBUTES = ("slot-id", "slot-description", "slot-manufacturer")
LIBRARY_ATTRIBUTES = ("library-manufacturer", "library-description", "library-version")
PATH_ATTRIBUTES = TOKEN_ATTRIBUTES + OBJECT_ATTRIBUTES + SLOT_ATTRIBUTES + LIBRARY_ATTRIBUTES
QUERY_ATTRIBUTES = ("module-path", "module-name", "pin-source", "pin-value")
OBJECT_TYPES = ("public", "private", "cert", "secret-key", "data")
# RFC 7512 2.3: pk11-res-avail and pk11-path-res-avail / pk11-query-res-avail (pct-encoding apart).
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~:\[\]@!$'()*+,=&%]*")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~:\[\]@!$'()*+,=/?|%]*")
_ATTR_NAME = re.compile(r"[a-z][a-z0-9_-]*")  # RFC 7512's vendor attributes may use '_'


class Pkcs11UriError(UsageError, ValueError):
    """A PKCS#11 URI is malformed or asks for something refused (the message says which)."""


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed PKCS#11 URI: path and query attributes, values pct-decoded (``id`` stays bytes)."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    id: bytes | None = None

    @property
    def token(self) -> dict[str, str]:
        """The token-selecting attributes given (token label, manufacturer, serial, model)."""
        return {k: v for k, v in self.path.items() if k in TOKEN_ATTRIBUTES}

    @property
    def object(self) -> str | None:
        """The key's label (CKA_LABEL), if given."""
        return self.path.get("object")

    def __str__(self) -> str:
        return format_uri(self)


def _decode(value: str, where: str) -> bytes:
    if re.search(r"%(?![0-9A-Fa-f]{2})", value):
        raise Pkcs11UriError(f"PKCS#11 URI: {where}: a '%' must start a two-digit hex escape")
    return unquote_to_bytes(value)


def _attributes(part: str, sep: str, chars: re.Pattern[str], allowed: tuple[str, ...], kind: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    if not part:
        return found
    for item in part.split(sep):
        name, eq, value = item.partition("=")
        if not eq or not _ATTR_NAME.fullmatch(name):
            raise Pkcs11UriError(f"PKCS#11 URI: {item!r} is not a {kind} attribute name=value")
        if not chars.fullmatch(value):
            raise Pkcs11UriError(f"PKCS#11 URI: the value of {name!r} has characters that must be pct-encoded")
        if name not in allowed and not name.startswith("x-"):
            known = ", ".join(allowed)
            raise Pkcs11UriError(f"PKCS#11 URI: unknown {kind} attribute {name!r} (RFC 7512 defines {known})")
        if name in found:
            raise Pkcs11UriError(f"PKCS#11 URI: attribute {name!r} appears twice")
        found[name] = _decode(value, name)
    return found


def _text(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Pkcs11UriError(f"PKCS#11 URI: the value of {name!r} is not UTF-8") from exc


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse a PKCS#11 URI (RFC 7512); refuses a PIN inside it, unknown attributes and repeated ones."""
    if not text.startswith(SCHEME):
        raise Pkcs11UriError(f"not a PKCS#11 URI (it must start with {SCHEME!r}): {text!r}")
    if any(c.isspace() for c in text):
        raise Pkcs11UriError("PKCS#11 URI: whitespace must be pct-encoded (%20)")
    path_part, _, query_part = text[len(SCHEME) :].partition("?")
    path = _attributes(path_part, ";", _PATH_CHARS, PATH_ATTRIBUTES, "path")
    query = _attributes(query_part, "&", _QUERY_CHARS, QUERY_ATTRIBUTES, "query")
    if "pin-value" in query:
        raise Pkcs11UriError(
            "PKCS#11 URI: a PIN in the URI (pin-value) is refused: the URI is configuration, which is committed; "
            "give the PIN with pin_env or pin_file"
        )
    if "type" in path and _text("type", path["type"]) not in OBJECT_TYPES:
        raise Pkcs11UriError(f"PKCS#11 URI: type must be one of {', '.join(OBJECT_TYPES)}")
    key_id = path.pop("id", None)
    return Pkcs11Uri(
        {k: _text(k, v) for k, v in path.items()},
        {k: _text(k, v) for k, v in query.items()},
        key_id,
    )


def format_uri(uri: Pkcs11Uri) -> str:
    """The URI's text, attributes in RFC 7512's order, values pct-encoded where they must be."""
    items = [f"{k}={quote(v, safe='')}" for k, v in uri.path.items()]
    if uri.id is not None:
        items.append("id=" + "".join(f"%{b:02x}" for b in uri.id))
    text = SCHEME + ";".join(items)
    if uri.query:
        text += "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in uri.query.items())
    return text
