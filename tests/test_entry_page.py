"""The entry page, /entry/?i=<log index>, in Debian's Chromium: the entry proved in the browser, every field,
its history both ways, its evidence, its signers' revocations, and an offline proof the Python verifier
accepts; a tampered bundle fails, and a log index the log does not have is said so."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from site_fixtures import SiteBuild, demo_site, serve
from test_browser import Watched, browser
from test_check_page import tamper_bundle

from publisher.config import load as load_config
from publisher.entries import json_entries
from publisher.tlog import open_log

__all__ = ["browser", "demo_site"]

REPO = Path(__file__).resolve().parents[1]


def _entries(site: SiteBuild) -> dict[int, dict[str, Any]]:
    return dict(json_entries(open_log(load_config(site.publication)).entries()))


def _open(w: Watched, base: str, index: str) -> tuple[str, str]:
    w.page.goto(urljoin(base, f"entry/?i={index}"))
    w.page.wait_for_function(
        "() => { const r = document.getElementById('cpl-entry-result'); return r && r.dataset.verdict; }",
        timeout=30_000,
    )
    return str(w.page.get_attribute("#cpl-entry-result", "data-verdict")), w.page.inner_text("#cpl-entry-result")


def test_an_entry_shows_its_fields_history_evidence_and_signers(demo_site: SiteBuild, browser: Any) -> None:
    entries = _entries(demo_site)
    new, old = next((i, e["replaces"]["index"]) for i, e in entries.items() if "replaces" in e)
    w = Watched(browser)
    try:
        verdict, text = _open(w, demo_site.url, str(old))
        assert verdict == "replaced" and f"log index {new}" in text, text
        verdict, text = _open(w, demo_site.url, str(new))
        assert verdict == "current" and f"It replaces log index {old}" in text and "INV-2026-007" in text, text
        entry = entries[new]
        for value in (entry["image_sha256"], entry["submission_id"], entry["panel_ref"], entry["approved_at"]):
            assert value in text
        assert "device_model.model_id" in text  # every field, nested ones by their dotted names
        # The evidence links serve files whose SHA-256 is their name.
        hrefs = w.page.eval_on_selector_all("#cpl-entry-result a[href*='/evidence/']", "els => els.map(e => e.href)")
        assert len(hrefs) >= 3
        for href in hrefs:
            body = w.page.request.get(href).body()
            assert hashlib.sha256(body).hexdigest() == href.rsplit("/", 1)[1]
        # The history links go to the other entry's page.
        w.page.click(f"#cpl-entry-result a[href='?i={old}']")
        w.page.wait_for_function(f"() => location.search === '?i={old}'")
        assert not w.dialogs and not w.foreign(), w.foreign()
    finally:
        w.context.close()


def test_a_signer_revoked_since_is_shown_revoked(demo_site: SiteBuild, browser: Any) -> None:
    revoked = json.loads((demo_site.site / "revocations.json").read_text())
    assert len(revoked) == 2 and all(len(r["certificate_sha256"] or "") == 64 for r in revoked)
    certs = {r["certificate_sha256"] for r in revoked}
    index = next(
        i
        for i, e in _entries(demo_site).items()
        if e.get("type") == "cpl-association/v1" and e["endorser"]["certificate_sha256"] in certs
    )
    w = Watched(browser)
    try:
        _, text = _open(w, demo_site.url, str(index))
        assert "REVOKED by ica" in text and "superseded" in text, text
        assert "not revoked" in text  # the manufacturer's certificate
    finally:
        w.context.close()


def test_the_offline_proof_downloaded_from_the_page_verifies_in_python(
    demo_site: SiteBuild, browser: Any, tmp_path: Path
) -> None:
    w = Watched(browser)
    try:
        _open(w, demo_site.url, "5")
        with w.page.expect_download() as info:
            w.page.click("#cpl-entry-proof")
        proof = tmp_path / "5.tlog-proof"
        info.value.save_as(proof)
    finally:
        w.context.close()
    trust = Path(str(demo_site.info["trust"]))
    done = subprocess.run(
        [sys.executable, str(REPO / "verifier" / "cpl_verify.py"), "--trust", str(trust), "--json",
         "inclusion", "--proof", str(proof)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    out = json.loads(done.stdout)
    assert done.returncode in (0, 3) and out["result"]["index"] == 5, done.stdout + done.stderr
    assert out["result"]["witnessing"]["satisfied"]


def test_a_tampered_bundle_fails_and_an_index_beyond_the_log_is_said_so(
    demo_site: SiteBuild, browser: Any, tmp_path: Path
) -> None:
    copy = tmp_path / "site"
    shutil.copytree(demo_site.site, copy)
    expected = tamper_bundle(copy)
    index = next(i for i, e in _entries(demo_site).items() if e.get("panel_ref") == "PANEL-S025")
    url, server = serve(copy)
    w = Watched(browser)
    try:
        verdict, text = _open(w, url, str(index))
        assert verdict == "failed" and expected in text, text
        verdict, text = _open(w, demo_site.url, "999999")
        assert verdict == "not-found" and "there is no entry 999999" in text
        verdict, _ = _open(w, demo_site.url, "abc")
        assert verdict == "usage"
    finally:
        w.context.close()
        server.shutdown()


def test_every_log_index_on_the_site_links_to_its_entry_page(demo_site: SiteBuild) -> None:
    page = (demo_site.site / "firmware" / "1001" / "index.html").read_text()
    assert 'href="../../entry/?i=3"' in page
    assert (demo_site.site / "entry" / "index.html").exists()
