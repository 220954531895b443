"""The built site in a real headless Chromium (Debian's /usr/bin/chromium via Playwright).

Only local requests, the CRL table and log size on the home page, the firmware search by
model ID and by image hash, a CRL downloaded from the page that OpenSSL verifies, and hostile
names that render as inert text (no dialog ever fires).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from site_fixtures import HOSTILE, HOSTILE_MAKERS, SiteBuild, demo_site, hostile_site, shown

__all__ = ["demo_site", "hostile_site"]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (Debian package 'chromium'; .ci/debian-packages installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page whose every request and every dialog is recorded."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(accept_downloads=True)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))

        def dialog(d: Any) -> None:
            self.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        self.page.on("dialog", dialog)

    def foreign(self) -> list[str]:
        bad = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob"):
                continue
            if parts.scheme not in ("http", "https") or parts.hostname != "127.0.0.1":
                bad.append(url)
        return bad


@pytest.fixture()
def watched(browser: Any) -> Iterator[Watched]:
    w = Watched(browser)
    try:
        yield w
    finally:
        w.context.close()


def search(w: Watched, query: str) -> str:
    w.page.fill("#cpl-search", query)
    w.page.wait_for_function(
        "q => { const p = document.querySelector('#cpl-search-results p'); return p && p.textContent.includes(q); }",
        arg=shown(query).strip(),
        timeout=10_000,
    )
    return str(w.page.inner_text("#cpl-search-results"))


def test_home_page_shows_crls_and_log(demo_site: SiteBuild, watched: Watched) -> None:
    status = json.loads((demo_site.site / "status.json").read_text())
    watched.page.goto(demo_site.url)
    crls = watched.page.inner_text(".cpl-crls table")
    for name, meta in status["crls"].items():
        assert name in crls
        row = watched.page.locator(".cpl-crls table tr", has_text=f"{name}").first.inner_text()
        assert str(meta["number"]) in row
        assert "fresh" in row
    log = watched.page.inner_text(".cpl-log table")
    assert str(status["log"]["size"]) in log
    assert str(demo_site.info["size"]) in log
    assert not watched.dialogs
    assert not watched.foreign(), watched.foreign()


def test_one_search_box_finds_manufacturers_models_hashes_and_references(
    demo_site: SiteBuild, watched: Watched
) -> None:
    watched.page.goto(urljoin(demo_site.url, "firmware/"))
    text = search(watched, "ESME-100")
    assert "ESME-100" in text and "Log index" in text
    cards = watched.page.locator("#cpl-search-results tbody.cpl-assoc")
    assert cards.count() == 2  # the replaced approval and its replacement
    statuses = [cards.nth(i).locator("td").first.inner_text() for i in range(2)]
    assert statuses[0].startswith("current") and "replaces #" in statuses[0]  # newest first
    assert statuses[1].startswith("replaced by #")
    assert "ESME-100" in search(watched, "esme-100")  # case-insensitive
    image = cards.first.locator("code.cpl-hash").inner_text().strip()
    assert len(image) == 64
    assert image in search(watched, image)
    assert image in search(watched, image[:8])
    assert "0 associations" in search(watched, "NO-SUCH-MODEL")
    # A manufacturer by name (any part of it) or ID: links to its page.
    text = search(watched, "brightwater")
    assert "1 manufacturer" in text and "Brightwater Devices (1002)" in text
    link = watched.page.locator("#cpl-search-results .cpl-makers a").first.get_attribute("href")
    assert link is not None and link.endswith("/firmware/1002/")
    assert "1 manufacturer" in search(watched, "1003")
    # A Panel reference and a submission ID, matched whole.
    assert "1 association" in search(watched, "PANEL-S025") and "INV-2026-007" in watched.page.inner_text(
        "#cpl-search-results"
    )
    assert "3 associations" in search(watched, "s003")
    assert not watched.dialogs
    assert not watched.foreign(), watched.foreign()


def test_crl_downloaded_from_the_home_page_verifies(demo_site: SiteBuild, watched: Watched, tmp_path: Path) -> None:
    watched.page.goto(demo_site.url)
    link = watched.page.locator('.cpl-crls table a[href$="ica.crl"]').first
    der = tmp_path / "ica.crl"
    try:
        with watched.page.expect_download(timeout=10_000) as info:
            link.click()
        info.value.save_as(der)
    except Exception:  # the browser displayed it instead of downloading: fetch it from the page's URL
        href = link.get_attribute("href")
        assert href is not None
        der.write_bytes(watched.page.request.get(urljoin(demo_site.url, href)).body())
    assert der.read_bytes() == (demo_site.site / "crl" / "ica.crl").read_bytes()
    chain = tmp_path / "chain.pem"
    pki = demo_site.publication / "pki"
    chain.write_bytes((pki / "ica.pem").read_bytes() + (pki / "iki-root.pem").read_bytes())
    proc = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(der), "-CAfile", str(chain), "-noout", "-verify"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verify OK" in proc.stdout + proc.stderr
    assert not watched.foreign(), watched.foreign()


def test_every_page_makes_only_local_requests(demo_site: SiteBuild, watched: Watched) -> None:
    for path in ("", "firmware/", "firmware/1001/", "transparency-log/", "pki/", "verify/", "crl/ica/"):
        response = watched.page.goto(urljoin(demo_site.url, path))
        assert response is not None and response.ok, path
        watched.page.wait_for_load_state("networkidle")
    assert len(watched.requests) > 10
    assert not watched.foreign(), watched.foreign()
    assert not watched.dialogs


def _hostile_pages(site: SiteBuild) -> list[str]:
    pages = ["", "firmware/", "transparency-log/"]
    pages += [f"firmware/{p.name}/" for p in sorted((site.site / "firmware").iterdir()) if p.is_dir()]
    return pages


def test_hostile_names_render_as_inert_text(hostile_site: SiteBuild, watched: Watched) -> None:
    texts = []
    problems: list[object] = []
    for path in _hostile_pages(hostile_site):
        watched.page.goto(urljoin(hostile_site.url, path))
        watched.page.wait_for_load_state("networkidle")
        texts.append(watched.page.inner_text("body"))
        scripts = watched.page.eval_on_selector_all(
            "script", "els => els.map(e => e.src || ('inline:' + e.textContent.slice(0, 60)))"
        )
        problems += [(path, s) for s in scripts if s.startswith("inline:") and "alert" in s]
        problems += [(path, s) for s in scripts if not s.startswith(("inline:", hostile_site.url))]
        live = watched.page.eval_on_selector_all(
            "*", "els => els.filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).map(e => e.outerHTML)"
        )
        problems += [(path, e) for e in live]
        if watched.page.locator("a[href^='javascript:' i]").count():
            problems.append((path, "a javascript: link"))
        if watched.page.locator("img, iframe, object, embed").count():
            problems.append((path, "an img/iframe/object/embed element"))
    problems += [("dialog", d) for d in watched.dialogs]
    problems += [("request to another host", u) for u in watched.foreign()]
    assert not problems, "\n".join(map(str, problems))
    body = "\n".join(texts)
    for text in HOSTILE:
        assert shown(text) in body, text
    for name in HOSTILE_MAKERS:
        assert shown(name) in body, name
    assert not watched.foreign(), watched.foreign()


def test_hostile_model_ids_in_search_results_are_text(hostile_site: SiteBuild, watched: Watched) -> None:
    watched.page.goto(urljoin(hostile_site.url, "firmware/"))
    for text in ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "'><svg onload=alert(1)>"):
        results = search(watched, text)
        assert "1 association " in results, results
        cells = watched.page.locator("#cpl-search-results tbody td").all_inner_texts()
        assert any(shown(text) in c for c in cells), cells
        assert watched.page.locator("#cpl-search-results img, #cpl-search-results svg").count() == 0
        assert watched.page.locator("#cpl-search-results script").count() == 0
    assert not watched.dialogs, watched.dialogs
    assert not watched.foreign(), watched.foreign()


def _status_at(demo_site: SiteBuild, browser: Any, when: dt.datetime) -> dict[str, Any]:
    """The home page viewed with the browser's clock at ``when``: the CRL status cells, the publish's
    schedule cell, the as-of line."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.clock.install(time=when)
        page.goto(demo_site.url)
        page.wait_for_function("() => document.querySelector('[data-cpl-as-of]').textContent.includes('browser')")
        cells = page.locator("[data-cpl-next-update]")
        return {
            "crls": [(cells.nth(i).inner_text(), cells.nth(i).get_attribute("class")) for i in range(cells.count())],
            "publish": page.inner_text("[data-cpl-published]"),
            "publish_class": page.get_attribute("[data-cpl-published]", "class"),
            "as_of": page.inner_text("[data-cpl-as-of]"),
            "checkpoint": page.inner_text("[data-cpl-checkpoint-age]"),
        }
    finally:
        context.close()


def test_freshness_is_computed_when_the_page_is_viewed(demo_site: SiteBuild, browser: Any) -> None:
    status = json.loads((demo_site.site / "status.json").read_text())
    published = dt.datetime.fromisoformat(status["last_publish"]["at"].replace("Z", "+00:00"))
    first_expiry = min(
        dt.datetime.fromisoformat(m["next_update"].replace("Z", "+00:00")) for m in status["crls"].values()
    )
    now = _status_at(demo_site, browser, published + dt.timedelta(hours=1))
    assert all(text == "fresh" and "cpl-ok" in str(css) for text, css in now["crls"]), now
    assert now["publish"].startswith("on schedule") and "cpl-ok" in str(now["publish_class"])
    assert "computed by your browser" in now["as_of"]
    assert "cosigned by 2 witnesses" in now["checkpoint"], now
    # 15 days past the first CRL's nextUpdate, with the page as it was built: red, and in words.
    later = _status_at(demo_site, browser, first_expiry + dt.timedelta(days=15))
    expired = [(t, c) for t, c in later["crls"] if t.startswith("EXPIRED 15 d")]
    assert expired and all("cpl-bad" in str(c) for _, c in expired), later
    assert later["publish"].startswith("LATE: no publish for") and "cpl-bad" in str(later["publish_class"])


def test_without_scripts_the_status_says_as_of_when(demo_site: SiteBuild, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(demo_site.url)
        assert "Status as of the last publish" in page.inner_text("[data-cpl-as-of]")
        assert page.inner_text("[data-cpl-next-update]") == "fresh"
    finally:
        context.close()


PAGES = ["", "firmware/", "firmware/1001/", "firmware/1003/", "transparency-log/", "pki/", "crl/ica/",
         "submission-rules/", "verify/", "verify/download/", "check/", "entry/?i=47"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (390, 844)])
def test_no_page_scrolls_sideways_and_screenshots_are_kept(
    demo_site: SiteBuild, browser: Any, width: int, height: int
) -> None:
    """Every page at a laptop's and a phone's width: nothing wider than the window (the firmware tables turn
    into cards on a phone). A screenshot of each is written to build/screenshots/ for a reviewer."""
    context = browser.new_context(viewport={"width": width, "height": height})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    wide = []
    try:
        page = context.new_page()
        for path in PAGES:
            assert page.goto(urljoin(demo_site.url, path)).ok, path  # type: ignore[union-attr]
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 0:
                wide.append((path, overflow))
            # Nor does an association table scroll inside itself (what people look for, hidden to the right).
            inner = page.evaluate(
                "() => Math.max(0, ...[...document.querySelectorAll('.cpl-firmware')]"
                ".map(e => e.scrollWidth - e.clientWidth))"
            )
            if inner > 0:
                wide.append((path + " (association table)", inner))
            if path.startswith("entry/"):  # proved in the page: wait for the verdict before measuring
                page.wait_for_selector("#cpl-entry-result[data-verdict]")
            name = (path.split("?")[0].strip("/").replace("/", "-") or "home") + f"-{width}.png"
            page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
        if width < 600:  # cards: the labels are shown beside the values
            page.goto(urljoin(demo_site.url, "firmware/1001/"))
            label = page.evaluate(
                "() => getComputedStyle(document.querySelector('.cpl-firmware td'), '::before').content"
            )
            assert "Status" in label
            assert (
                page.evaluate("() => getComputedStyle(document.querySelector('.cpl-firmware thead')).display") == "none"
            )
    finally:
        context.close()
    assert not wide, f"pages wider than {width} px (path, extra px): {wide}"


def test_a_hash_is_shown_whole_on_one_line_and_copied_with_one_click(demo_site: SiteBuild, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=demo_site.url.rstrip("/"))
    try:
        page = context.new_page()
        page.goto(urljoin(demo_site.url, "firmware/1001/"))
        code = page.locator("code.cpl-hash").first
        digest = code.inner_text()
        assert len(digest) == 64
        box = code.bounding_box()
        line = page.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 0", code.element_handle())
        assert box is not None and box["height"] < 2 * max(line, 10), "the hash stays on one line"
        page.locator("button.cpl-copy").first.click()
        page.wait_for_function("() => document.querySelector('button.cpl-copy').textContent === 'Copied'")
        assert page.evaluate("() => navigator.clipboard.readText()") == digest
    finally:
        context.close()


def test_a_signer_revoked_since_is_marked_on_the_tables_and_in_search(demo_site: SiteBuild, watched: Watched) -> None:
    """The demo revoked a supplier's certificate (superseded) after it endorsed, and a manufacturer's with
    an invalidity date before its approvals (keyCompromise): the tables say so, in words."""
    watched.page.goto(urljoin(demo_site.url, "firmware/1003/"))
    watched.page.wait_for_selector(".cpl-revoked")
    cards = watched.page.locator("tbody.cpl-assoc")
    texts = [cards.nth(i).locator("td").first.inner_text() for i in range(cards.count())]
    assert texts and all("before this approval" in t and "keyCompromise" in t for t in texts), texts
    watched.page.goto(urljoin(demo_site.url, "firmware/1001/"))
    watched.page.wait_for_selector(".cpl-revoked")
    endorsers = watched.page.locator("tbody.cpl-assoc tr:first-child td:nth-child(2)").all_inner_texts()
    statuses = watched.page.locator("tbody.cpl-assoc tr:first-child td:nth-child(1)").all_inner_texts()
    for endorser, status in zip(endorsers, statuses, strict=True):
        assert ("signer revoked since" in status) == (endorser == "Southern Gas & Electric"), (endorser, status)
    watched.page.goto(urljoin(demo_site.url, "firmware/"))
    assert "3 associations" in search(watched, "PPMID-102")  # Cobalt's, in the search results too
    watched.page.wait_for_selector("#cpl-search-results .cpl-revoked")
    assert "before this approval" in watched.page.inner_text("#cpl-search-results")
    assert not watched.foreign(), watched.foreign()
