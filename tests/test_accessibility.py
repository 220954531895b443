"""Accessibility of every main page, checked by axe-core (Deque's engine, vendored for the tests in
tests/vendor/) in Debian's Chromium at a laptop's and a phone's width: no serious or critical violation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from site_fixtures import SiteBuild, demo_site
from test_browser import PAGES, browser

__all__ = ["browser", "demo_site"]

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"


def test_the_vendored_axe_core_is_the_published_one() -> None:
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256


@pytest.mark.parametrize("width", [1366, 390])
def test_no_serious_or_critical_accessibility_violation(demo_site: SiteBuild, browser: Any, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    found = []
    try:
        page = context.new_page()
        for path in [*PAGES, "firmware/#search"]:
            page.goto(urljoin(demo_site.url, path))
            page.wait_for_load_state("networkidle")
            if path.endswith("#search"):  # the search results, as the box renders them
                page.fill("#cpl-search", "ESME-100")
                page.wait_for_selector("#cpl-search-results tbody.cpl-assoc")
            if path.startswith("entry/"):
                page.wait_for_selector("#cpl-entry-result[data-verdict]")
            page.add_script_tag(path=str(AXE))
            result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
            for v in result["violations"]:
                if v["impact"] in ("serious", "critical"):
                    targets = [n["target"] for n in v["nodes"]][:3]
                    found.append(f"{path} [{width}px] {v['id']} ({v['impact']}): {v['help']} at {targets}")
    finally:
        context.close()
    assert not found, "\n".join(found)
