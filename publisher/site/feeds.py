"""The site's feeds: Atom 1.0 (RFC 4287) and JSON Feed 1.1 documents of the approvals and replacements (all,
and per manufacturer), the revocations and the CRLs. Pure: data in, bytes out.

    /feeds/approvals.atom, .json                   the newest approvals and replacements
    /feeds/manufacturer/<slug>.atom, .json         the same, of one manufacturer (slug as its page's)
    /feeds/revocations.atom, .json                 the newest revocations in the register
    /feeds/crls.atom, .json                        the newest CRLs in the log (crl/v1 entries)

A feed holds its newest ``FEED_ITEMS`` items, newest first. Its bytes depend only on the data: an item's
time is the one the data gives (approved, recorded, thisUpdate) and the feed's ``updated`` is its newest
item's (the epoch when it has none), never the build's clock, so a rebuild of an unchanged publication
writes the same bytes. An item's ID is the same in every feed and format that carries it (an approval is
in the global feed and in its manufacturer's), a URI under the site's URL that names the thing:

    <site>/log/entries/<index>              an approval or replacement: the log entry (a name, not a page)
    <site>/crl/<issuer>/revoked/<serial>    a revocation (a name, not a page)
    <site>/crl/archive/<issuer>/<n>.crl     a CRL: where the archived DER is served

Every string from a submission or a certificate is cleaned (control and format characters removed, as
on the pages, and the few characters XML 1.0 cannot carry), then only ever put into a document as a value:
ElementTree escapes it for XML, ``json`` for JSON, and the HTML content is made with ``html.escape`` (so
in Atom it is escaped twice, as ``type="html"`` requires). Page heads and visible feed links are built
from feed paths alone (fixed names and slugs), never from submitted text.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from publisher.pki.registers import RevocationRecord
from publisher.site.state import (
    C_ENTRIES,
    C_INDEX,
    C_ISSUER,
    C_NEXT_UPDATE,
    C_NUMBER,
    C_SHA256,
    C_THIS_UPDATE,
    FEED_ITEMS,
    R_APPROVED,
    R_ENDORSER,
    R_FIRMWARE,
    R_HARDWARE,
    R_HASH,
    R_INDEX,
    R_INVESTIGATION,
    R_MID,
    R_MODEL,
    R_ORG,
    R_PANEL,
    R_REPLACES,
    R_SMETS,
    R_SUBMISSION,
    R_TYPE,
    CrlRow,
    Maker,
    Row,
    slug_of,
)
from verifier.cpl_verify import clean_cell

ATOM_NS = "http://www.w3.org/2005/Atom"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ATOM, JSON = ".atom", ".json"
TYPES = {ATOM: "application/atom+xml", JSON: "application/feed+json"}  # the deployer's Content-Types too
FORMAT_NAMES = {ATOM: "Atom", JSON: "JSON Feed"}
APPROVALS, REVOCATIONS, CRLS = "feeds/approvals", "feeds/revocations", "feeds/crls"
MAKER_FEEDS = "feeds/manufacturer"
EPOCH = "1970-01-01T00:00:00Z"  # the ``updated`` of a feed with no items
_FEED_PATH = re.compile(r"feeds/(?:approvals|revocations|crls|manufacturer/[A-Za-z0-9-]+)")
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")  # what clean_cell keeps and XML 1.0 cannot carry


def maker_feed(slug: str) -> str:
    """The path (without extension) of a manufacturer's feeds."""
    return f"{MAKER_FEEDS}/{slug}"


@dataclass(frozen=True)
class Site:
    """Whose feeds: the site's URL (``site_url``, no trailing slash) and its name (the feeds' author)."""

    url: str
    name: str


@dataclass(frozen=True)
class Link:
    """A link of an item besides its page: an enclosure (a download) or a related document."""

    rel: str
    type: str
    href: str
    title: str


@dataclass(frozen=True)
class Item:
    """One feed item; ``facts`` (label, value) are its content, ``ext`` its JSON Feed ``_cpl`` object."""

    id: str
    title: str
    url: str
    page: str  # what ``url`` is, in words
    time: str
    summary: str
    facts: list[tuple[str, str]]
    ext: dict[str, object]
    order: int  # among items of the same time: a log index or a register position (higher is newer)
    links: list[Link] = field(default_factory=list)


@dataclass(frozen=True)
class Feed:
    """A feed: its path (without extension), what it is, the page it follows, its items (any order)."""

    path: str
    title: str
    description: str
    home: str
    items: list[Item]

    def newest_first(self) -> list[Item]:
        return sorted(self.items, key=lambda i: (i.time, i.order), reverse=True)[:FEED_ITEMS]

    def updated(self) -> str:
        return max((i.time for i in self.items), default=EPOCH)


def text(value: object) -> str:
    """A value as feed text: control and format characters (bidi too) removed, as on the pages, then what
    XML 1.0 cannot carry (lone surrogates, U+FFFE, U+FFFF)."""
    return _NOT_XML.sub("", clean_cell("" if value is None else str(value)))


def rfc3339(value: object) -> str:
    """A time as RFC 3339 UTC to the second (``...Z``); the epoch when it is not a time."""
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return EPOCH
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    when = when.astimezone(dt.UTC)
    return f"{when.year:04d}-{when:%m-%dT%H:%M:%S}Z"


# -- the feeds ------------------------------------------------------------------------------------------------


def approvals(site: Site, rows: Sequence[Row]) -> Feed:
    """The newest approvals and replacements of every manufacturer (``rows``: any order)."""
    return Feed(
        APPROVALS,
        "Approved firmware: all manufacturers",
        "Firmware images the Panel associated with a device model, as logged, newest first; a replacement "
        "names the log entry it replaces.",
        f"{site.url}/firmware/",
        [_approval(site, r) for r in rows],
    )


def manufacturer(site: Site, mid: str, maker: Maker, rows: Sequence[Row]) -> Feed:
    """The newest approvals and replacements of one manufacturer (``rows``: any order)."""
    return Feed(
        maker_feed(maker.slug),
        f"Approved firmware: {text(maker.name)} ({text(mid)})",
        f"Firmware images the Panel associated with device models of manufacturer {text(mid)}, as logged, "
        "newest first; a replacement names the log entry it replaces.",
        f"{site.url}/firmware/{maker.slug}/",
        [_approval(site, r) for r in rows],
    )


def revocations(site: Site, records: Sequence[RevocationRecord]) -> Feed:
    """The newest revocations of the register (``records``: the whole register, in its order)."""
    first = max(len(records) - FEED_ITEMS, 0)
    return Feed(
        REVOCATIONS,
        "Certificate revocations",
        "Certificates revoked by the IKI issuing CAs, as recorded in the revocation register, newest first; "
        "each is in its issuer's next CRL.",
        f"{site.url}/",
        [_revocation(site, r, n) for n, r in enumerate(records[first:], first)],
    )


def crls(site: Site, rows: Sequence[CrlRow]) -> Feed:
    """The newest CRLs the log holds (``rows``: any order)."""
    return Feed(
        CRLS,
        "Certificate revocation lists",
        "Every CRL the IKI CAs issued, as logged (crl/v1 entries), newest first, with its download.",
        f"{site.url}/",
        [_crl(site, r) for r in rows],
    )


def _approval(site: Site, r: Row) -> Item:
    index, mid, org, model = int(r[R_INDEX]), text(r[R_MID]), text(r[R_ORG]), text(r[R_MODEL])
    hardware, firmware, image = text(r[R_HARDWARE]), text(r[R_FIRMWARE]), text(r[R_HASH])
    replaces = r[R_REPLACES] if isinstance(r[R_REPLACES], int) else None
    investigation = text(r[R_INVESTIGATION]) if replaces is not None else ""
    device = f"{model} (hardware {hardware}, firmware {firmware})"
    facts = [
        ("Log index", str(index)),
        ("Manufacturer", f"{org} ({mid})"),
        ("Model", model),
        ("Hardware version", hardware),
        ("Firmware version", firmware),
        ("Device type", text(r[R_TYPE])),
        ("SMETS version", text(r[R_SMETS])),
        ("Image SHA-256", image),
        ("Approved at", text(r[R_APPROVED])),
        ("Endorsed by", text(r[R_ENDORSER])),
        ("Submission ID", text(r[R_SUBMISSION])),
        ("Panel reference", text(r[R_PANEL])),
    ]
    if replaces is None:
        title = f"Approved: {org} {device}"
        summary = f"Log entry {index}: image {image} approved for {org} ({mid}) {device}."
    else:
        title = f"Replacement: {org} {device}, replaces log entry {replaces}"
        summary = (
            f"Log entry {index}: image {image} approved for {org} ({mid}) {device}, replacing log entry "
            f"{replaces} (investigation {investigation}), which is no longer current."
        )
        facts.append(("Replaces", f"log entry {replaces} (investigation {investigation})"))
    ext: dict[str, object] = {
        "kind": "approval" if replaces is None else "replacement",
        "log_index": index,
        "manufacturer_id": mid,
        "manufacturer": org,
        "model_id": model,
        "hardware_version": hardware,
        "firmware_version": firmware,
        "device_type": text(r[R_TYPE]),
        "smets_version": text(r[R_SMETS]),
        "image_sha256": image,
        "approved_at": text(r[R_APPROVED]),
        "endorser": text(r[R_ENDORSER]),
        "submission_id": text(r[R_SUBMISSION]),
        "panel_ref": text(r[R_PANEL]),
        "replaces": None if replaces is None else {"log_index": replaces, "investigation_ref": investigation},
    }
    return Item(
        f"{site.url}/log/entries/{index}",
        title,
        f"{site.url}/firmware/{slug_of(str(r[R_MID]))}/",
        "the manufacturer's approved firmware",
        rfc3339(r[R_APPROVED]),
        summary,
        facts,
        ext,
        index,
    )


def _revocation(site: Site, r: RevocationRecord, position: int) -> Item:
    issuer, serial, reason = text(r.issuer), text(r.serial), text(r.reason)
    facts = [
        ("Issuer", issuer),
        ("Serial", serial),
        ("Reason", reason),
        ("Revoked at", text(r.revoked_at)),
        ("Invalidity date", text(r.invalidity_date or "none")),
        ("Recorded at", text(r.recorded_at)),
        ("Reference", text(r.ref or "none")),
    ]
    if r.unknown_serial:
        facts.append(("Issued here", "no: a serial the register of issued certificates does not hold"))
    ext: dict[str, object] = {
        "kind": "revocation",
        "issuer": issuer,
        "serial": serial,
        "reason": reason,
        "revoked_at": text(r.revoked_at),
        "invalidity_date": text(r.invalidity_date) or None,
        "recorded_at": text(r.recorded_at),
        "ref": text(r.ref) or None,
        "unknown_serial": bool(r.unknown_serial),
    }
    segment = quote(r.issuer, safe="")
    return Item(
        f"{site.url}/crl/{segment}/revoked/{quote(r.serial, safe='')}",
        f"Revoked: {issuer} serial {serial} ({reason})",
        f"{site.url}/crl/{segment}/",
        "the issuer's CRL page",
        rfc3339(r.recorded_at),
        f"{issuer} revoked the certificate with serial {serial} ({reason}) at {text(r.revoked_at)}.",
        facts,
        ext,
        position,
    )


def _crl(site: Site, c: CrlRow) -> Item:
    issuer, number, digest = text(c[C_ISSUER]), text(c[C_NUMBER]), text(c[C_SHA256])
    entries = c[C_ENTRIES] if isinstance(c[C_ENTRIES], int) else None
    segment = quote(str(c[C_ISSUER]), safe="")
    der = f"{site.url}/crl/archive/{segment}/{quote(str(c[C_NUMBER]), safe='')}.crl"
    facts = [
        ("Issuer", issuer),
        ("CRL number", number),
        ("thisUpdate", text(c[C_THIS_UPDATE])),
        ("nextUpdate", text(c[C_NEXT_UPDATE])),
        ("Certificates revoked", "unknown" if entries is None else str(entries)),
        ("SHA-256", digest),
        ("Log index", str(c[C_INDEX])),
    ]
    ext: dict[str, object] = {
        "kind": "crl",
        "issuer": issuer,
        "number": int(c[C_NUMBER]) if str(c[C_NUMBER]).isdigit() else number,
        "this_update": text(c[C_THIS_UPDATE]),
        "next_update": text(c[C_NEXT_UPDATE]),
        "entries": entries,
        "sha256": digest,
        "log_index": c[C_INDEX],
        "download": der,
    }
    return Item(
        der,
        f"CRL {number} of {issuer}",
        f"{site.url}/crl/{segment}/",
        "the issuer's CRL page",
        rfc3339(c[C_THIS_UPDATE]),
        f"{issuer} issued CRL {number} (thisUpdate {text(c[C_THIS_UPDATE])}, nextUpdate "
        f"{text(c[C_NEXT_UPDATE])}), logged at index {c[C_INDEX]}.",
        facts,
        ext,
        int(c[C_INDEX]),
        [Link("enclosure", "application/pkix-crl", der, f"CRL {number} (DER)")],
    )


# -- the documents --------------------------------------------------------------------------------------------


def documents(site: Site, feed: Feed) -> dict[str, bytes]:
    """A feed's two files, by path under the site: Atom and JSON Feed."""
    items = _rendered(feed)
    return {f"{feed.path}{ATOM}": atom(site, feed, items), f"{feed.path}{JSON}": json_feed(site, feed, items)}


def _rendered(feed: Feed) -> list[tuple[Item, str]]:
    """The items a feed shows, newest first, each with its HTML content (made once for both formats)."""
    return [(item, content_html(item)) for item in feed.newest_first()]


def content_html(item: Item) -> str:
    """An item's content as HTML: every value escaped."""
    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in item.facts)
    links = [f'<a href="{e(item.url)}">{e(item.page)}</a>'] + [
        f'<a href="{e(x.href)}">{e(x.title)}</a>' for x in item.links
    ]
    return f"<p>{e(item.summary)}</p><table>{rows}</table><p>{' · '.join(links)}</p>"


def content_text(item: Item) -> str:
    """An item's content as plain text."""
    lines = [item.summary, "", *(f"{k}: {v}" for k, v in item.facts), "", f"{item.page}: {item.url}"]
    lines += [f"{x.title}: {x.href}" for x in item.links]
    return "\n".join(lines)


def atom(site: Site, feed: Feed, items: list[tuple[Item, str]] | None = None) -> bytes:
    """The Atom 1.0 document of ``feed``."""
    url = f"{site.url}/{feed.path}"
    root = ET.Element("feed", {"xmlns": ATOM_NS, "{http://www.w3.org/XML/1998/namespace}lang": "en"})
    _sub(root, "id", f"{url}{ATOM}")
    _sub(root, "title", text(feed.title))
    _sub(root, "subtitle", feed.description)
    _sub(root, "updated", feed.updated())
    author = _sub(root, "author")
    _sub(author, "name", site.name)
    _sub(author, "uri", f"{site.url}/")
    _sub(root, "link", rel="self", type=TYPES[ATOM], href=f"{url}{ATOM}")
    _sub(root, "link", rel="alternate", type="text/html", href=feed.home)
    _sub(root, "link", rel="alternate", type=TYPES[JSON], href=f"{url}{JSON}")
    for item, content in _rendered(feed) if items is None else items:
        entry = _sub(root, "entry")
        _sub(entry, "id", item.id)
        _sub(entry, "title", item.title)
        _sub(entry, "updated", item.time)
        _sub(entry, "published", item.time)
        _sub(entry, "link", rel="alternate", type="text/html", href=item.url)
        for link in item.links:
            _sub(entry, "link", rel=link.rel, type=link.type, href=link.href, title=link.title)
        _sub(entry, "summary", item.summary, type="text")
        _sub(entry, "content", content, type="html")
    ET.indent(root, space=" ")
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def _sub(parent: ET.Element, tag: str, value: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = value
    return element


def json_feed(site: Site, feed: Feed, items: list[tuple[Item, str]] | None = None) -> bytes:
    """The JSON Feed 1.1 document of ``feed`` (each item's structured fields in its ``_cpl`` object)."""
    shown = []
    for item, content in _rendered(feed) if items is None else items:
        out: dict[str, object] = {
            "id": item.id,
            "url": item.url,
            "title": item.title,
            "summary": item.summary,
            "content_html": content,
            "content_text": content_text(item),
            "date_published": item.time,
        }
        if item.links:
            out["attachments"] = [{"url": x.href, "mime_type": x.type, "title": x.title} for x in item.links]
        out["_cpl"] = item.ext
        shown.append(out)
    document = {
        "version": JSON_FEED_VERSION,
        "title": text(feed.title),
        "description": feed.description,
        "home_page_url": feed.home,
        "feed_url": f"{site.url}/{feed.path}{JSON}",
        "language": "en",
        "authors": [{"name": site.name, "url": f"{site.url}/"}],
        "items": shown,
    }
    data = json.dumps(document, ensure_ascii=True, separators=(",", ":"))  # compact: json's C encoder
    # Inert even if some client sniffed it as HTML: no '<', '>' or '&' outside an escape.
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (data + "\n").encode()


# -- advertising them -----------------------------------------------------------------------------------------


def label(path: str) -> str:
    """What a feed is, in words made only of its path (it goes into page heads and links)."""
    if not _FEED_PATH.fullmatch(path):
        raise ValueError(f"not a feed: {path!r}")
    if path.startswith(f"{MAKER_FEEDS}/"):
        return f"Approvals of manufacturer {path.rsplit('/', 1)[1]}"
    return {APPROVALS: "All approvals", REVOCATIONS: "Revocations", CRLS: "CRLs"}[path]


def advertised(value: object) -> list[str]:
    """The feed paths a page's ``feeds`` front matter names (anything else in it is ignored)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str) and _FEED_PATH.fullmatch(v)]


def front_matter(paths: Iterable[str]) -> list[str]:
    """The YAML lines (inside a page's front matter) that make the hooks advertise ``paths`` in its head."""
    paths = list(paths)
    for path in paths:
        label(path)  # a feed path, nothing YAML could read otherwise
    return ["feeds:", *(f"  - {p}" for p in paths)]


def head_links(paths: Iterable[str], up: str) -> str:
    """``<link rel="alternate">`` tags for a page's head, so feed readers find the feeds (``up``: from the
    page to the site's root, such as ``../``)."""
    return "".join(
        f'<link rel="alternate" type="{mime}" title="{html.escape(f"{label(p)} ({FORMAT_NAMES[ext]})")}" '
        f'href="{html.escape(up + p + ext)}">'
        for p in paths
        for ext, mime in TYPES.items()
    )


def visible_links(paths: Iterable[str], up: str) -> str:
    """A paragraph that links a page's feeds: "Feeds: All approvals (Atom · JSON Feed); ..."."""
    parts = [
        f"{html.escape(label(p))} ("
        + " · ".join(
            f'<a href="{html.escape(up + p + ext)}" type="{TYPES[ext]}">{FORMAT_NAMES[ext]}</a>' for ext in TYPES
        )
        + ")"
        for p in paths
    ]
    return f'<p class="cpl-feeds">Feeds: {"; ".join(parts)}.</p>'


def advertise(page: str, paths: Sequence[str], up: str, visible: bool = True) -> str:
    """A generated page's Markdown with its feeds: named in its front matter (the hooks put them in its head,
    ``head_links``) and, when ``visible``, linked in a line under its first heading (``# `` or ``<h1``)."""
    names = "\n".join(front_matter(paths)) + "\n"
    # Into the page's own front matter when it has one, else a front matter of its own.
    page = "---\n" + names + page[4:] if page.startswith("---\n") else f"---\n{names}---\n\n{page}"
    if not visible:
        return page
    lines = page.split("\n")
    end = lines.index("---", 1)  # the end of the front matter
    for n in range(end + 1, len(lines)):
        if lines[n].startswith(("# ", "<h1")):
            lines[n + 1 : n + 1] = ["", visible_links(paths, up), ""]
            break
    else:
        lines += ["", visible_links(paths, up)]
    return "\n".join(lines)
