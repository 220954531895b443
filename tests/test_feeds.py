"""The feeds (``publisher.site.feeds``): Atom 1.0 and JSON Feed 1.1 of the approvals and replacements (all,
and per manufacturer), the revocations and the CRLs, advertised in the pages' heads.

Atom is read with feedparser, a feed reader's parser that reports any XML fault as ``bozo``, and with
ElementTree; feedparser does not read JSON Feed, so that is checked against the JSON Feed 1.1 rules written
out as a JSON Schema. Hostile names must come out as text: no element, attribute or link of their own.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import feedparser
import jsonschema
import pytest
import test_site_incremental as incremental
from hypothesis import given, settings
from hypothesis import strategies as st
from publication_fixtures import Pub, new_publication
from site_fixtures import HOSTILE, HOSTILE_MAKERS, SiteBuild, demo_site, hostile_site, shown, write_submission

from publisher import demo, parties
from publisher.config import load as load_config
from publisher.entries import parse_entry
from publisher.pki.registers import RevocationRecord, load_revocations
from publisher.publish import operations
from publisher.site import feeds
from publisher.site import state as site_state
from publisher.site.state import FEED_ITEMS, Maker, Row, slug_of
from publisher.tlog import open_log

__all__ = ["demo_site", "hostile_site"]  # session fixtures, used by name

ATOM = "{http://www.w3.org/2005/Atom}"
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
SITE = feeds.Site("https://cpl.example/transparency", "GB smart metering PKI transparency")

# The JSON Feed 1.1 rules (https://jsonfeed.org/version/1.1) as a schema: required members, their types,
# ``authors`` (1.1) and not ``author`` (1.0, deprecated), an item's content as HTML or text, dates in RFC 3339,
# and extensions only as keys starting with an underscore.
_STR = {"type": "string"}
_URL = {"type": "string", "pattern": "^https?://"}
_DATE = {"type": "string", "pattern": RFC3339}
_AUTHORS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": _STR, "url": _URL, "avatar": _URL},
        "anyOf": [{"required": ["name"]}, {"required": ["url"]}, {"required": ["avatar"]}],
        "patternProperties": {"^_[A-Za-z]": {}},
        "additionalProperties": False,
    },
}
JSON_FEED_1_1 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "title", "items"],
    "properties": {
        "version": {"const": "https://jsonfeed.org/version/1.1"},
        "title": _STR,
        "home_page_url": _URL,
        "feed_url": _URL,
        "description": _STR,
        "user_comment": _STR,
        "next_url": _URL,
        "icon": _URL,
        "favicon": _URL,
        "authors": _AUTHORS,
        "language": _STR,
        "expired": {"type": "boolean"},
        "hubs": {"type": "array"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "anyOf": [{"required": ["content_html"]}, {"required": ["content_text"]}],
                "properties": {
                    "id": _STR,
                    "url": _URL,
                    "external_url": _URL,
                    "title": _STR,
                    "content_html": _STR,
                    "content_text": _STR,
                    "summary": _STR,
                    "image": _URL,
                    "banner_image": _URL,
                    "date_published": _DATE,
                    "date_modified": _DATE,
                    "authors": _AUTHORS,
                    "tags": {"type": "array", "items": _STR},
                    "language": _STR,
                    "attachments": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["url", "mime_type"],
                            "properties": {
                                "url": _URL,
                                "mime_type": _STR,
                                "title": _STR,
                                "size_in_bytes": {"type": "number"},
                                "duration_in_seconds": {"type": "number"},
                            },
                            "patternProperties": {"^_[A-Za-z]": {}},
                            "additionalProperties": False,
                        },
                    },
                },
                "patternProperties": {"^_[A-Za-z]": {"type": "object"}},
                "additionalProperties": False,
            },
        },
    },
    "patternProperties": {"^_[A-Za-z]": {"type": "object"}},
    "additionalProperties": False,
}
_JSON_FEED = jsonschema.Draft202012Validator(JSON_FEED_1_1)


def check_json_feed(data: bytes) -> dict[str, Any]:
    """A JSON Feed 1.1 document: valid under the rules, unique item IDs, and inert bytes (no '<', '>', '&')."""
    assert not re.search(rb"[<>&]", data)
    document: dict[str, Any] = json.loads(data)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _JSON_FEED.iter_errors(document)]
    assert errors == []
    ids = [i["id"] for i in document["items"]]
    assert len(ids) == len(set(ids))
    return document


def xml(data: bytes) -> ET.Element:
    """Our own feed's XML as ElementTree reads it (no DTD or entity in it: feedparser would report one)."""
    return ET.fromstring(data)  # noqa: S314 - the bytes under test, not input from elsewhere


def check_atom(data: bytes) -> Any:
    """An Atom 1.0 document, as feedparser reads it: well formed (no ``bozo``), RFC 3339 dates, unique IDs,
    newest first, absolute links."""
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    root = xml(data)
    assert root.tag == f"{ATOM}feed"
    for element in root.iter():
        assert element.tag.startswith(ATOM), element.tag  # nothing but Atom's own elements
        if element.tag in (f"{ATOM}updated", f"{ATOM}published"):
            assert re.match(RFC3339, element.text or ""), element.text
    assert parsed.feed.title and parsed.feed.id and parsed.feed.updated
    ids = [e.id for e in parsed.entries]
    assert len(ids) == len(set(ids))
    times = [e.updated for e in parsed.entries]
    assert times == sorted(times, reverse=True)
    assert parsed.feed.updated == (times[0] if times else feeds.EPOCH)
    for e in parsed.entries:
        assert all(link.href.startswith(("http://", "https://")) for link in e.links)
        assert e.published == e.updated
    return parsed


class _Tags(HTMLParser):
    """The start tags of an HTML fragment and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def inert(fragment: str, site_url: str) -> str:
    """An item's HTML content holds only the feed's own markup and links; returns its text."""
    parser = _Tags()
    parser.feed(fragment)
    parser.close()
    for tag, attrs in parser.tags:
        assert tag in ("p", "table", "tr", "th", "td", "a"), tag
        assert set(attrs) <= {"href"}, attrs
        assert tag != "a" or str(attrs["href"]).startswith(site_url + "/"), attrs
    return "".join(parser.text)


def both(site: Path, base: str) -> tuple[Any, dict[str, Any]]:
    """A feed's Atom (as feedparser reads it) and JSON Feed documents, checked and agreeing item for item."""
    atom = check_atom((site / f"{base}.atom").read_bytes())
    document = check_json_feed((site / f"{base}.json").read_bytes())
    assert [e.id for e in atom.entries] == [i["id"] for i in document["items"]]
    assert [e.title for e in atom.entries] == [i["title"] for i in document["items"]]
    assert [e.published for e in atom.entries] == [i["date_published"] for i in document["items"]]
    assert atom.feed.title == document["title"]
    return atom, document


def _site_file(site: Path, site_url: str, url: str) -> Path:
    rel = url.removeprefix(site_url + "/")
    assert rel != url, url
    return site / (rel + "index.html" if rel.endswith("/") or not rel else rel)


# -- the demo's feeds --------------------------------------------------------------------------------------------


def test_the_demo_feeds_parse_and_carry_what_was_logged(demo_site: SiteBuild) -> None:
    site, config = demo_site.site, load_config(demo_site.publication)
    url = config.site_url
    entries = [(i, parse_entry(raw)) for i, raw in enumerate(open_log(config).entries())]
    associations = {i: e for i, e in entries if e is not None and e.get("type") == "cpl-association/v1"}
    logged_crls = {i: e for i, e in entries if e is not None and e.get("type") == "crl/v1"}
    assert 0 < len(associations) <= FEED_ITEMS and len(logged_crls) >= 2

    atom, document = both(site, "feeds/approvals")
    assert atom.feed.title == "Approved firmware: all manufacturers"
    assert {link.rel: link.href for link in atom.feed.links}["self"] == f"{url}/feeds/approvals.atom"
    assert document["feed_url"] == f"{url}/feeds/approvals.json"
    assert [i["_cpl"]["log_index"] for i in document["items"]] == sorted(associations, reverse=True)
    for item in document["items"]:
        entry = associations[item["_cpl"]["log_index"]]
        assert item["id"] == f"{url}/log/entries/{item['_cpl']['log_index']}"
        assert item["_cpl"]["image_sha256"] == entry["image_sha256"]
        assert item["_cpl"]["submission_id"] == entry["submission_id"]
        assert item["_cpl"]["panel_ref"] == entry["panel_ref"]
        assert item["date_published"] == entry["approved_at"]
        assert _site_file(site, url, item["url"]).is_file()
        assert entry["image_sha256"] in inert(item["content_html"], url)
        if "replaces" in entry:  # a replacement says which entry it replaces
            replaced = entry["replaces"]["index"]
            assert item["_cpl"]["kind"] == "replacement" and item["_cpl"]["replaces"]["log_index"] == replaced
            assert f"replaces log entry {replaced}" in item["title"]
    assert any(i["_cpl"]["kind"] == "replacement" for i in document["items"])

    makers = {e["device_model"]["manufacturer_id"] for e in associations.values()}
    for mid in makers:
        atom, document = both(site, feeds.maker_feed(slug_of(mid)))
        mine = sorted((i for i, e in associations.items() if e["device_model"]["manufacturer_id"] == mid), reverse=True)
        assert [i["_cpl"]["log_index"] for i in document["items"]] == mine
        assert document["home_page_url"] == f"{url}/firmware/{slug_of(mid)}/"

    atom, document = both(site, "feeds/revocations")
    register = load_revocations(demo_site.publication)
    assert len(register) >= 2 and len(document["items"]) == len(register)
    assert {i["_cpl"]["serial"] for i in document["items"]} == {r.serial for r in register}
    for item in document["items"]:
        assert _site_file(site, url, item["url"]).is_file()  # the issuer's page

    atom, document = both(site, "feeds/crls")
    assert sorted(i["_cpl"]["log_index"] for i in document["items"]) == sorted(logged_crls)
    for item in document["items"]:
        ext = item["_cpl"]
        der = _site_file(site, url, ext["download"])
        assert item["id"] == ext["download"] and item["attachments"][0]["url"] == ext["download"]
        assert hashlib.sha256(der.read_bytes()).hexdigest() == ext["sha256"] == logged_crls[ext["log_index"]]["sha256"]
        current = json.loads((site / "crl" / f"{ext['issuer']}.json").read_text())
        if current["number"] == ext["number"]:
            assert ext["entries"] == current["entries"]
        assert isinstance(ext["entries"], int)
    assert [e.enclosures[0].type for e in atom.entries] == ["application/pkix-crl"] * len(atom.entries)


class _Head(HTMLParser):
    """The feed links of a page: ``<link rel="alternate">`` in its head, and the links of its feeds line."""

    def __init__(self) -> None:
        super().__init__()
        self.in_head = self.in_feeds = False
        self.head: list[tuple[str, str]] = []
        self.visible: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "head":
            self.in_head = True
        elif tag == "link" and a.get("rel") == "alternate":
            assert self.in_head, "a feed link outside the head"
            self.head.append((a["type"], a["href"]))
        elif tag == "p" and "cpl-feeds" in a.get("class", ""):
            self.in_feeds = True
        elif tag == "a" and self.in_feeds:
            self.visible.append((a["type"], a["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.in_head = False
        elif tag == "p":
            self.in_feeds = False


@pytest.mark.parametrize(
    ("page", "names", "visible"),
    [
        ("index.html", ["approvals", "revocations", "crls"], False),
        ("firmware/index.html", ["approvals"], True),
        ("firmware/1001/index.html", ["manufacturer/1001", "approvals"], True),
        ("crl/ica/index.html", ["revocations", "crls"], True),
        ("pki/index.html", ["revocations", "crls"], True),
        ("transparency-log/index.html", ["approvals", "crls"], True),
    ],
)
def test_pages_advertise_their_feeds(demo_site: SiteBuild, page: str, names: list[str], visible: bool) -> None:
    """Feed readers find the feeds from the page's head; people from the line under its heading."""
    path = demo_site.site / page
    parser = _Head()
    parser.feed(path.read_text())
    expected = [(feeds.TYPES[ext], f"feeds/{n}{ext}") for n in names for ext in (feeds.ATOM, feeds.JSON)]
    # Home's visible line is for home() to place: its links, if any, must lead to feeds too.
    for found in (parser.head, parser.visible) if visible else (parser.head,):
        assert [(t, (path.parent / h).resolve()) for t, h in found] == [
            (t, (demo_site.site / rel).resolve()) for t, rel in expected
        ]
    assert all((path.parent / h).is_file() for _, h in parser.head + parser.visible)


def test_a_page_without_feeds_names_none(demo_site: SiteBuild) -> None:
    parser = _Head()
    parser.feed((demo_site.site / "submission-rules" / "index.html").read_text())
    assert parser.head == [] and parser.visible == []


# -- hostile names ------------------------------------------------------------------------------------------------


def test_hostile_names_come_out_of_the_feeds_as_text(hostile_site: SiteBuild) -> None:
    site, url = hostile_site.site, load_config(hostile_site.publication).site_url
    files = sorted((site / "feeds").rglob("*.atom"))
    assert len(files) == 3 + len(HOSTILE_MAKERS)
    for path in files:
        base = path.relative_to(site).as_posix().removesuffix(".atom")
        atom, document = both(site, base)
        for entry, item in zip(atom.entries, document["items"], strict=True):
            # Atom content (type="html") is the same escaped HTML as JSON Feed's content_html.
            content = xml(path.read_bytes()).find(f"{ATOM}entry[{ATOM}id='{item['id']}']/{ATOM}content")
            assert content is not None and content.text == item["content_html"]
            inert(item["content_html"], url)
            assert entry.title == item["title"]
    _, document = both(site, "feeds/approvals")
    models = {i["_cpl"]["model_id"] for i in document["items"]}
    assert {shown(text) for text in HOSTILE} <= models
    names = {i["_cpl"]["manufacturer"] for i in document["items"]}
    assert {shown(name) for name in HOSTILE_MAKERS} <= names
    for k, name in enumerate(HOSTILE_MAKERS):
        atom, document = both(site, feeds.maker_feed(str(1001 + k)))
        assert atom.feed.title == f"Approved firmware: {shown(name)} ({1001 + k})"
        assert shown(name) in inert(document["items"][0]["content_html"], url)


def _row(index: int, value: str, replaces: int | None = None, mid: str | None = None) -> Row:
    """A row with ``value`` in every submitted field (``mid``: another manufacturer ID)."""
    return [
        index, value if mid is None else mid, value, value, value, value, "ESME", "SMETS2", "ab" * 32,
        "2026-11-29T03:27:21Z", None, value, replaces, value if replaces is not None else "", value, value,
    ]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.booleans())
def test_any_submitted_text_makes_well_formed_feeds(value: str, replacement: bool) -> None:
    row = _row(7, value, 3 if replacement else None)
    for feed in (feeds.approvals(SITE, [row]), feeds.manufacturer(SITE, value, Maker(value, "m-x"), [row])):
        docs = feeds.documents(SITE, feed)
        atom = check_atom(docs[f"{feed.path}.atom"])
        document = check_json_feed(docs[f"{feed.path}.json"])
        clean = feeds.text(value)
        assert document["items"][0]["_cpl"]["model_id"] == clean
        title = xml(docs[f"{feed.path}.atom"]).findtext(f"{ATOM}entry/{ATOM}title") or ""
        assert title == document["items"][0]["title"] and clean in title
        assert atom.entries[0].id == f"{SITE.url}/log/entries/7"
        assert clean in inert(document["items"][0]["content_html"], SITE.url)


@pytest.mark.parametrize("value", ["\ud800", "\ufffe\uffff", "a\x00b\x1b[0m\u202e", "]]>", "<![CDATA[x]]>"])
def test_what_xml_cannot_carry_is_dropped(value: str) -> None:
    # (Not in the manufacturer ID: its page's slug hashes its UTF-8, which a lone surrogate has not.)
    docs = feeds.documents(SITE, feeds.approvals(SITE, [_row(1, value, mid="1001")]))
    check_atom(docs["feeds/approvals.atom"])
    document = check_json_feed(docs["feeds/approvals.json"])
    assert document["items"][0]["_cpl"]["model_id"] == feeds.text(value)
    assert not re.search("[\x00-\x1f\u202e\ud800-\udfff\ufffe\uffff]", json.dumps(document, ensure_ascii=False))


# -- what the bytes depend on --------------------------------------------------------------------------------------


def test_a_feed_depends_only_on_its_data() -> None:
    rows = [_row(i, f"M{i}") for i in range(FEED_ITEMS + 50)]
    for k, r in enumerate(rows):
        r[site_state.R_APPROVED] = f"2026-11-{1 + k // 10:02d}T00:00:00Z"  # ten a day: ties broken by log index
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    docs = feeds.documents(SITE, feeds.approvals(SITE, rows))
    assert feeds.documents(SITE, feeds.approvals(SITE, shuffled)) == docs
    atom = check_atom(docs["feeds/approvals.atom"])
    assert [e.id for e in atom.entries] == [f"{SITE.url}/log/entries/{i}" for i in range(149, 49, -1)]
    assert atom.feed.updated == "2026-11-15T00:00:00Z"
    empty = feeds.documents(SITE, feeds.revocations(SITE, []))
    assert check_atom(empty["feeds/revocations.atom"]).feed.updated == feeds.EPOCH
    assert check_json_feed(empty["feeds/revocations.json"])["items"] == []


def test_revocations_are_the_newest_of_the_register() -> None:
    register = [
        RevocationRecord("ica", f"{n:x}", "keyCompromise", f"2026-11-{1 + n // 50:02d}T00:00:00Z",
                         f"2026-11-{1 + n // 50:02d}T00:00:00Z", None, None, n % 7 == 0)
        for n in range(FEED_ITEMS + 20)
    ]  # fmt: skip
    document = check_json_feed(feeds.documents(SITE, feeds.revocations(SITE, register))["feeds/revocations.json"])
    assert [i["_cpl"]["serial"] for i in document["items"]] == [f"{n:x}" for n in range(FEED_ITEMS + 19, 19, -1)]
    assert document["items"][0]["id"] == f"{SITE.url}/crl/ica/revoked/{FEED_ITEMS + 19:x}"


def test_times_are_rfc3339_utc() -> None:
    assert feeds.rfc3339("2026-11-29T03:27:21Z") == "2026-11-29T03:27:21Z"
    assert feeds.rfc3339("2026-11-29T04:27:21+01:00") == "2026-11-29T03:27:21Z"
    assert feeds.rfc3339("2026-11-29T03:27:21.5") == "2026-11-29T03:27:21Z"
    assert feeds.rfc3339("yesterday") == feeds.rfc3339(None) == feeds.EPOCH


def test_pages_name_feeds_by_path_alone() -> None:
    page = "---\ntitle: x\n---\n\n<h1>Name</h1>\n\nrest"
    out = feeds.advertise(page, [feeds.APPROVALS], "../")
    assert out.startswith("---\nfeeds:\n  - feeds/approvals\ntitle: x\n---\n\n<h1>Name</h1>\n\n<p class=")
    assert out.endswith("\n\nrest") and 'href="../feeds/approvals.atom"' in out
    out = feeds.advertise("# Title\n\ntext", [feeds.CRLS], "", visible=False)
    assert out == "---\nfeeds:\n  - feeds/crls\n---\n\n# Title\n\ntext"
    for bad in ["feeds/../x", "feeds/manufacturer/<b>", "feeds/approvals.atom", "https://evil.example/f"]:
        with pytest.raises(ValueError, match="not a feed"):
            feeds.label(bad)
    assert feeds.advertised(["feeds/crls", "feeds/x y", 3, "javascript:alert(1)"]) == ["feeds/crls"]
    assert feeds.advertised("feeds/crls") == []
    assert feeds.head_links([feeds.maker_feed("m-0123abcd")], "../../").count("<link ") == 2


# -- incremental builds ----------------------------------------------------------------------------------------------


@pytest.fixture()
def pub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pub:
    monkeypatch.setattr(site_state, "ROWS_PER_PAGE", 3)  # a manufacturer's feed spans several pages of rows
    return new_publication(tmp_path, "feeds.example/log")


def test_an_incremental_build_updates_the_feeds_as_a_full_build_would(
    pub: Pub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = parties.issue_party(pub.config, "Bright Meters plc", "1002", "Manufacturer", pub.now, folder=tmp_path)
    incremental.submit(pub, "S001", 4)
    rows = [("1002", "Bright", f"B-{k}", "1.0", "1.0", "GSME", "SMETS2", demo.image_hash(f"b{k}")) for k in range(2)]
    write_submission(pub.root, "S002", rows, [other, pub.supplier])
    incremental.publish_now(pub, 1)
    site = tmp_path / "site"
    incremental.make(site, pub.root, monkeypatch, dirty=False)
    before = incremental.stamps(site)

    incremental.submit(pub, "S003", 5)
    first = min(i for i, e in enumerate(open_log(pub.config).entries()) if b"cpl-association/v1" in e)
    incremental.submit(pub, "S004", 1, replaces=first)
    operations.revoke(pub.config, "ica", other.cert.serial_number, "superseded", ref="FEED-REV-1")
    incremental.publish_now(pub, 2)
    report = incremental.make(site, pub.root, monkeypatch, dirty=True)
    assert report["mode"] == "incremental"
    full = tmp_path / "full"
    incremental.make(full, pub.root, monkeypatch, dirty=False)
    built, whole = incremental.files_of(site), incremental.files_of(full)
    assert {r: b for r, b in built.items() if r.startswith("feeds/")} == {
        r: b for r, b in whole.items() if r.startswith("feeds/")
    }
    after = incremental.stamps(site)
    # The other manufacturer's feeds were not touched; this one's, and the global feeds, were.
    for rel in ("feeds/manufacturer/1002.atom", "feeds/manufacturer/1002.json"):
        assert after[rel] == before[rel], rel
    for rel in ("feeds/manufacturer/1001.atom", "feeds/approvals.json", "feeds/revocations.atom", "feeds/crls.json"):
        assert after[rel] != before[rel], rel

    _, document = both(site, "feeds/manufacturer/1001")
    assert len(document["items"]) == 4 + 5 + 1  # from every page of its rows
    assert document["items"][0]["_cpl"]["replaces"]["log_index"] == first
    _, document = both(site, "feeds/revocations")
    assert [i["_cpl"]["ref"] for i in document["items"]] == ["FEED-REV-1"]
    _, document = both(site, "feeds/crls")
    newest = document["items"][0]["_cpl"]
    assert newest["issuer"] == "ica" and newest["entries"] == 1

    # Over the unchanged publication nothing in feeds/ is written again.
    incremental.make(site, pub.root, monkeypatch, dirty=True)
    again = incremental.stamps(site)
    assert {r: t for r, t in again.items() if r.startswith("feeds/")} == {
        r: t for r, t in after.items() if r.startswith("feeds/")
    }
