"""End to end: the demo publication built into the site with ``mkdocs build --strict``.

Links resolve, the stable machine-readable URLs exist and agree with the publication,
proofs verify, no private key material is published, and hostile names stay text.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from site_fixtures import (
    HOSTILE,
    HOSTILE_MAKERS,
    REPO,
    SiteBuild,
    build_site,
    demo_site,
    hostile_site,
    html_pages,
    shown,
)

from publisher import demo
from publisher.config import load as load_config
from publisher.entries import json_entries
from publisher.site.lookup import model_lookup_key, shard_path
from publisher.tlog import open_log
from publisher.tlog.checkpoint import open_checkpoint
from publisher.tlog.note import Verifier, b64encode
from verifier.cpl_verify import RULES

__all__ = ["demo_site", "hostile_site"]  # session fixtures shared with test_browser.py

DOC_HOSTS = {"c2sp.org"}
MAX_FILE = 2 * 1024 * 1024


class Links(HTMLParser):
    """Every URL an HTML page refers to, with the tag and attribute, and the page's elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.urls.append((tag, name, value))

        if tag == "script":
            self._script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = False

    def handle_data(self, data: str) -> None:
        if self._script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


class Regions(HTMLParser):
    """A page's link targets by region: inside ``<nav>`` (the site navigation) and inside ``<article>``
    (the page's own content)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.nav: list[str] = []
        self.content: list[str] = []
        self._depth = {"nav": 0, "article": 0}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._depth:
            self._depth[tag] += 1
        href = dict(attrs).get("href")
        if tag == "a" and href is not None:
            if self._depth["nav"]:
                self.nav.append(href)
            if self._depth["article"]:
                self.content.append(href)

    def handle_endtag(self, tag: str) -> None:
        if self._depth.get(tag):
            self._depth[tag] -= 1


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def page_url(site: Path, page: Path) -> str:
    return "http://site.invalid/" + page.relative_to(site).as_posix()


def local_target(site: Path, base: str, ref: str) -> Path | None:
    """The file a relative URL on a page leads to (None for a URL to another host)."""
    url = urlsplit(urljoin(base, ref))
    if url.netloc != "site.invalid":
        return None
    path = unquote(url.path).lstrip("/")
    target = site / path
    if path == "" or path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target


# -- the build ----------------------------------------------------------------------------------


def test_mkdocs_strict_build_has_no_warnings(demo_site: SiteBuild) -> None:
    assert demo_site.build.returncode == 0
    output = demo_site.build.stdout + demo_site.build.stderr
    assert not [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line], output
    assert "strict: true" in (REPO / "mkdocs.yml").read_text()
    assert (demo_site.site / "index.html").is_file()


def test_properdocs_builds_the_same_pages(demo_site: SiteBuild, tmp_path: Path) -> None:
    other = tmp_path / "properdocs-site"
    proc = build_site(demo_site.publication, other, tool="properdocs")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    ours = {p.relative_to(demo_site.site) for p in demo_site.site.rglob("*") if p.is_file()}
    theirs = {p.relative_to(other) for p in other.rglob("*") if p.is_file()}
    assert ours == theirs
    assert (other / "log" / "checkpoint").read_bytes() == (demo_site.site / "log" / "checkpoint").read_bytes()


# -- links --------------------------------------------------------------------------------------


def test_every_relative_link_resolves_and_nothing_loads_from_another_host(demo_site: SiteBuild) -> None:
    site = demo_site.site
    broken, foreign = [], []
    pages = list(html_pages(site))
    assert len(pages) >= 10
    for page in pages:
        base = page_url(site, page)
        for tag, attr, ref in parse(page).urls:
            if ref.startswith(("#", "mailto:", "data:")):
                continue
            scheme = urlsplit(ref).scheme
            if scheme and scheme not in ("http", "https"):
                foreign.append((page, tag, ref))
                continue
            target = local_target(site, base, ref)
            if target is None:
                host = urlsplit(urljoin(base, ref)).hostname
                if tag != "a" or host not in DOC_HOSTS:
                    foreign.append((page, tag, ref))
            elif not target.is_file():
                broken.append((page.relative_to(site).as_posix(), tag, attr, ref))
    assert not broken, broken
    assert not foreign, foreign


def test_the_submission_rules_page_is_the_verifiers_table_and_in_the_navigation(demo_site: SiteBuild) -> None:
    site = demo_site.site
    rules_page = site / "submission-rules" / "index.html"
    raw = rules_page.read_text(encoding="utf-8")
    table = re.search(r'class="cpl-table cpl-rules"><table class="cpl-grid">.*?<tbody>(.*?)</tbody>', raw, re.S)
    assert table, "no rules table on the page"
    rows = [
        re.findall(r'<td data-label="[^"]*">(.*?)</td>', row, re.S)
        for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    ]
    # Every rule of the verifier's table, in its order, each cell HTML-escaped (no copy to drift).
    assert [[re.sub(r"<[^>]+>", "", cell) for cell in row] for row in rows] == [
        [html.escape(r.id, quote=True), html.escape(r.clause, quote=True), html.escape(r.statement, quote=True)]
        for r in RULES
    ]
    text = " ".join("".join(parse(rules_page).text).split())
    assert "cpl-verify check-submission DIR --trust trust.json --site URL" in text
    assert "rejection report" in text and "cpl-verify audit" in text
    # Reachable from the site navigation on every page, and linked from the pages that explain submissions.
    for page in html_pages(site):
        regions = Regions()
        regions.feed(page.read_text(encoding="utf-8"))
        base = page_url(site, page)
        assert rules_page in {local_target(site, base, ref) for ref in regions.nav}, page
        if page.relative_to(site).as_posix() in ("index.html", "firmware/index.html", "verify/index.html"):
            assert rules_page in {local_target(site, base, ref) for ref in regions.content}, page


# -- stable URLs --------------------------------------------------------------------------------


def _level0_tiles(size: int) -> list[str]:
    full, partial = divmod(size, 256)
    names = [_tile_index(n) for n in range(full)]
    if partial:
        names.append(f"{_tile_index(full)}.p/{partial}")
    return names


def _tile_index(n: int) -> str:
    digits = f"{n:03d}"
    if len(digits) % 3:
        digits = digits.zfill(len(digits) + 3 - len(digits) % 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join(f"x{g}" for g in groups[:-1]) + ("/" if len(groups) > 1 else "") + groups[-1]


def test_stable_urls_exist(demo_site: SiteBuild) -> None:
    site, pub = demo_site.site, demo_site.publication
    config = load_config(pub)
    for issuer in config.issuers:
        for ext in ("crl", "pem", "json"):
            assert (site / "crl" / f"{issuer.name}.{ext}").read_bytes() == (
                pub / "crl" / f"{issuer.name}.{ext}"
            ).read_bytes()
        meta = json.loads((pub / "crl" / f"{issuer.name}.json").read_text())
        for n in range(1, int(meta["number"]) + 1):
            archived = pub / "crl" / "archive" / issuer.name / f"{n}.crl"
            if archived.exists():
                assert (site / "crl" / "archive" / issuer.name / f"{n}.crl").read_bytes() == archived.read_bytes()
        assert (site / "crl" / "archive" / issuer.name / f"{meta['number']}.crl").is_file()
    assert (site / "crl" / "ica.crl").is_file()
    assert (site / "crl" / "ica.pem").is_file()
    assert (site / "crl" / "ica.json").is_file()
    assert (site / "pki" / "iki-root.pem").read_bytes() == (pub / "pki" / "iki-root.pem").read_bytes()
    assert (site / "log" / "checkpoint").read_bytes() == (pub / "log" / "checkpoint").read_bytes()
    assert (site / "log" / "vkey").read_text().strip() == demo_site.info["vkey"]
    size = int(demo_site.info["size"])
    for name in _level0_tiles(size):
        assert (site / "log" / "tile" / "0" / name).is_file(), name
        assert (site / "log" / "tile" / "entries" / name).is_file(), name
    # Nothing private: the log's state folder and lock stay out of the site.
    assert not list(site.rglob(".state"))
    assert not [p for p in site.rglob("*") if p.name.startswith(".")]


def test_evidence_and_lookup_shards_and_no_file_per_entry(demo_site: SiteBuild) -> None:
    site = demo_site.site
    config = load_config(demo_site.publication)
    log = open_log(config)
    entries = list(log.entries())
    assert len(entries) == log.size == demo_site.info["size"]
    associations = 0
    for index, raw in enumerate(entries):
        entry = json.loads(raw)
        if entry["type"] != "cpl-association/v1":
            continue
        associations += 1
        evidence = entry["evidence"]
        for digest in [evidence["spreadsheet"], evidence["request"], *evidence["signatures"]]:
            data = (site / "log" / "evidence" / digest).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest
        image = entry["image_sha256"]
        shard = json.loads((site / "log" / shard_path("hash", image)).read_text())
        assert index in shard[image]
        model = entry["device_model"]
        key = model_lookup_key(
            model["manufacturer_id"], model["model_id"], model["hardware_version"], model["firmware_version"]
        )
        assert index in json.loads((site / "log" / shard_path("model", key)).read_text())[key]
    assert associations >= 24
    # Proofs are computed from the tiles: no file per entry that every build would rewrite.
    assert not (site / "log" / "proof").exists()


def test_status_json_matches_the_publication(demo_site: SiteBuild) -> None:
    site, pub = demo_site.site, demo_site.publication
    config = load_config(pub)
    status = json.loads((site / "status.json").read_text())
    verifier = Verifier.from_vkey(str(demo_site.info["vkey"]))
    checkpoint = open_checkpoint((site / "log" / "checkpoint").read_bytes(), config.origin, [verifier]).checkpoint
    assert status["log"]["size"] == checkpoint.size == demo_site.info["size"]
    assert status["log"]["root"] == b64encode(checkpoint.root) == demo_site.info["root"]
    assert status["log"]["origin"] == config.origin
    assert status["log"]["checkpoint_sha256"] == hashlib.sha256((site / "log" / "checkpoint").read_bytes()).hexdigest()
    for issuer in config.issuers:
        meta = json.loads((pub / "crl" / f"{issuer.name}.json").read_text())
        assert status["crls"][issuer.name]["number"] == meta["number"]
        assert (
            status["crls"][issuer.name]["sha256"]
            == hashlib.sha256((site / "crl" / f"{issuer.name}.crl").read_bytes()).hexdigest()
        )


def test_verifier_download_and_its_digest(demo_site: SiteBuild) -> None:
    source = REPO / "verifier" / "cpl_verify.py"
    if not source.exists():
        pytest.skip("verifier/cpl_verify.py is not in this checkout")
    site = demo_site.site
    published = (site / "verify" / "cpl_verify.py").read_bytes()
    assert published == source.read_bytes()
    digest = hashlib.sha256(published).hexdigest()
    assert (site / "verify" / "cpl_verify.py.sha256").read_text() == f"{digest}  cpl_verify.py\n"
    assert digest in (site / "verify" / "download" / "index.html").read_text()


# -- nothing secret, nothing huge ---------------------------------------------------------------


def test_no_private_key_material_in_the_site(demo_site: SiteBuild) -> None:
    # A PEM private key, or a C2SP note signer key (the log's, a witness's): PRIVATE+KEY+name+id+base64 seed.
    # (The published verifier names the note key format in its help, without any key in it.)
    note_key = re.compile(rb"PRIVATE\+KEY\+[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}")
    leaks = [
        p.relative_to(demo_site.site).as_posix()
        for p in demo_site.site.rglob("*")
        if p.is_file() and (b"PRIVATE KEY" in p.read_bytes() or note_key.search(p.read_bytes()))
    ]
    assert not leaks
    # The pattern finds real ones: the demo's log key and its two witnesses' keys, kept outside the site.
    note_keys = [
        k for k in demo.private_dir(demo_site.root / "demo").rglob("*.key") if b"PRIVATE+KEY" in k.read_bytes()
    ]
    assert len(note_keys) == 3 and all(note_key.search(k.read_bytes()) for k in note_keys)


def test_no_private_key_material_in_the_git_history(demo_site: SiteBuild) -> None:
    history = subprocess.run(
        ["git", "log", "-p", "--all", "--binary"],
        cwd=demo_site.publication,
        capture_output=True,
        check=True,
    ).stdout
    assert len(history) > 10_000
    assert b"PRIVATE KEY" not in history
    assert b"PRIVATE+KEY" not in history
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=demo_site.publication, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [t for t in tracked if t.endswith(".key") or t.startswith("log/.state")]


def test_no_file_over_2mb_except_log_data(demo_site: SiteBuild) -> None:
    site = demo_site.site
    big = [
        p.relative_to(site).as_posix()
        for p in site.rglob("*")
        if p.is_file() and p.stat().st_size > MAX_FILE and not p.relative_to(site).as_posix().startswith("log/")
    ]
    assert not big


# -- hostile names ------------------------------------------------------------------------------


def _site_assets(site: Path, page: Path, src: str) -> bool:
    target = local_target(site, page_url(site, page), src)
    return target is not None and target.is_file()


def test_hostile_names_are_escaped_everywhere(hostile_site: SiteBuild) -> None:
    site = hostile_site.site
    pages = list(html_pages(site))
    texts: list[str] = []
    raw_all = []
    problems = []
    for page in pages:
        raw = page.read_text(encoding="utf-8")
        raw_all.append(raw)
        links = parse(page)
        texts.append("".join(links.text))
        rel = page.relative_to(site).as_posix()
        for tag, attrs in links.tags:
            for name, value in attrs.items():
                if name.startswith("on"):
                    problems.append((rel, f"<{tag} {name}=...>"))
                if name in ("href", "src") and value and value.strip().lower().startswith("javascript:"):
                    problems.append((rel, f"<{tag} {name}={value}>"))
            if tag in ("img", "iframe", "style", "object", "embed") or (tag == "svg" and "xmlns" not in attrs):
                problems.append((rel, f"<{tag} {attrs}>"))
            if tag == "script" and attrs.get("src") and not _site_assets(site, page, attrs["src"] or ""):
                problems.append((rel, f"<script {attrs}>"))
        # The theme's inline scripts are its own; none may hold submitted text.
        problems.extend((rel, f"inline script: {s[:80]!r}") for s in links.scripts if "alert(" in s)
        for bad in ("<script>alert", "<strong>bold</strong>", "<code>code</code>", "<em>em</em>", "<del>"):
            if bad in raw:
                problems.append((rel, f"raw {bad!r}"))
        title = re.search(r"<title>(.*?)</title>", raw, re.S)
        if title and ("<" in title.group(1) or ">" in title.group(1)):
            problems.append((rel, f"unescaped <title>: {title.group(1)!r}"))
    assert not problems, "\n".join(f"{p}: {what}" for p, what in problems)
    all_text = "\n".join(texts)
    all_raw = "\n".join(raw_all)
    for text in HOSTILE + HOSTILE_MAKERS:
        assert shown(text) in all_text, text
        assert html.escape(shown(text), quote=True) in all_raw, text
    assert "linebreak" in all_text
    assert "gnp.exe" in all_text and "\u202e" not in all_raw


def test_hostile_manufacturer_names_in_headings_are_text(hostile_site: SiteBuild) -> None:
    for k, name in enumerate(HOSTILE_MAKERS):
        page = hostile_site.site / "firmware" / f"{1001 + k}" / "index.html"
        heading = re.search(r"<h1[^>]*>(.*?)</h1>", page.read_text(encoding="utf-8"), re.S)
        assert heading is not None
        assert heading.group(1).startswith(html.escape(shown(name), quote=True)), (name, heading.group(1))


def test_hostile_search_shards_hold_the_names_as_data(hostile_site: SiteBuild) -> None:
    rows = []
    for shard in (hostile_site.site / "search" / "model").glob("*.json"):
        rows.extend(json.loads(shard.read_text()))
    models = {r[3] for r in rows}
    for text in HOSTILE:
        assert shown(text) in models


def test_a_manufacturer_page_is_titled_by_its_certificate_not_its_spreadsheet(tmp_path: Path) -> None:
    # The spreadsheet's manufacturer_name is free text: a manufacturer could title its page with another
    # maker's name. The page shows the organisation its IKI certificate names (checked at intake).
    from publication_fixtures import new_publication
    from site_fixtures import build_site, write_submission

    from publisher import demo
    from publisher.publish import publish

    p = new_publication(tmp_path, "names.example/log")
    row = (p.maker.org_id, "Famous Meters plc", "NB-1", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash("NB-1"))
    write_submission(p.root, "NB1", [row], [p.maker, p.supplier])
    assert publish(p.config).intake.accepted
    done = build_site(p.root, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "site" / "firmware" / p.maker.org_id / "index.html").read_text(encoding="utf-8")
    heading = re.search(r"<h1[^>]*>(.*?)</h1>", page, re.S)
    assert heading is not None and heading.group(1).startswith("Acme Meters Ltd"), heading
    assert "Famous Meters plc" not in re.sub(r"<[^>]+>", "", heading.group(1))


def test_the_readme_first_steps_check_the_demo_firmware(demo_site: SiteBuild, tmp_path: Path) -> None:
    """The sample images: one current, one replaced, one never submitted, checked as the README says."""
    from test_deployment import VENV_BIN, readme_block

    out = Path(str(demo_site.info["trust"])).parent
    assert sorted(p.name for p in (out / "firmware").iterdir()) == sorted(demo.SAMPLE_FIRMWARE)
    work = tmp_path / "build" / "demo"
    work.mkdir(parents=True)
    shutil.copy(out / "trust.json", work / "trust.json")
    shutil.copytree(out / "firmware", work / "firmware")
    (work / "site").symlink_to(demo_site.site)
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    verdicts = []
    for line in readme_block("first-steps"):
        done = subprocess.run(["bash", "-e", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
        json_line = line.split(" || ")[0].replace("cpl-verify ", "cpl-verify --json ", 1)
        raw = subprocess.run(["bash", "-c", json_line], cwd=tmp_path, env=env, capture_output=True, text=True)
        verdicts.append(json.loads(raw.stdout)["result"]["verdict"])
    assert verdicts == ["current", "replaced", "not-found"]


def test_charts_explain_the_history_with_their_numbers_beside_them(demo_site: SiteBuild) -> None:
    """Inline SVG drawn at build time (no script), named and described for screen readers, with the same
    numbers in a table: the log's size and approvals by month, and each CRL's revocations."""
    log_page = (demo_site.site / "transparency-log" / "index.html").read_text()
    svgs = re.findall(r'<svg class="cpl-chart"[^>]*role="img"[^>]*>(.*?)</svg>', log_page, re.S)
    assert len(svgs) == 2 and all("<title" in s and "<desc" in s and "<script" not in s for s in svgs)
    tables = re.findall(r'<table class="cpl-numbers">.*?<tbody>(.*?)</tbody>', log_page, re.S)
    sizes = [int(c.replace(",", "")) for c in re.findall(r"<tr><td>[^<]*</td><td>([^<]*)</td></tr>", tables[0])]
    approvals = [int(c.replace(",", "")) for c in re.findall(r"<tr><td>[^<]*</td><td>([^<]*)</td></tr>", tables[1])]
    assert sizes[-1] == demo_site.info["size"]
    entries = json_entries(open_log(load_config(demo_site.publication)).entries())
    assert sum(approvals) == sum(1 for _, e in entries if e.get("type") == "cpl-association/v1")
    pki = (demo_site.site / "pki" / "index.html").read_text()
    assert 'aria-labelledby="revoked-title revoked-desc"' in pki
    assert "<td>ica</td>" not in pki and ">ica</text>" in pki  # the series is named in the legend


def test_chart_axes_are_round_and_labels_escaped() -> None:
    from publisher.site import charts

    assert charts._ticks(0) == [0] and charts._ticks(7) == [0, 2, 4, 6, 8]
    assert charts._ticks(123) == [0, 50, 100, 150] and len(charts._ticks(10**9 + 1)) <= 6
    svg = charts.bar_chart("x", "<script>", [("<b>", 1)], "u&v")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg
