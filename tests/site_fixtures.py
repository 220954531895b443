"""Shared fixtures for the site tests: the demo publication and a hostile-names publication,
each built once per test session, its site built once with ``mkdocs build`` and served on
127.0.0.1 by a local HTTP server.

Session fixtures defined here are imported by several test modules; pytest would build a
fixture imported into two modules twice, so the builds are memoised at module level.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from publisher import demo, parties, publication, scaffold
from publisher.config import load as load_config
from publisher.publish import init_repository, publish
from verifier.cpl_verify import clean_cell as clean

REPO = Path(__file__).resolve().parents[1]

# Names a hostile (or careless) submitter could put in a CPL spreadsheet. Each is at most
# 64 characters (the model ID limit) and passes intake; the site must show each as text.
HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "javascript:alert(1)",
    '{: onclick="alert(1)" }',
    "a | b | c",
    "**bold**",
    "`code`",
    "\u202egnp.exe",
    "line\nbreak",
    "&lt;b&gt;",
    '" onmouseover="alert(1)',
    "'><svg onload=alert(1)>",
    "<!--",
    "]]>",
    "${{ secrets }}",
    "{{ config.extra }}",
    "{% raw %}x",
    "=cmd|' /C calc'!A0",
    "-1+1",
    "@SUM(A1)",
    "</td></tr></table><script>alert(2)</script>",
    "<a href=javascript:alert(3)>x</a>",
    "_under_ *em* ~~del~~",
    "\\<script\\>",
    "<style>body{display:none}</style>",
    "&#60;script&#62;alert(4)",
    "<iframe src=//evil.example>",
    "![img](https://evil.example/x.png)",
    "<https://evil.example/>",
]
# Manufacturer names (in the manufacturers' certificates and spreadsheets), shown on their pages and in headings.
HOSTILE_MAKERS = [
    "[click](javascript:alert(1))",
    "**bold** `code` <script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '{: onclick="alert(1)" }',
    "![img](https://evil.example/x.png) a | b",
    "'><svg onload=alert(1)> ${{ secrets }}",
    "</title><script>alert(5)</script>",
]


def shown(value: str) -> str:
    """What the site must display for a submitted value (control and bidi characters stripped)."""
    return clean(value)


@dataclasses.dataclass
class SiteBuild:
    """A publication, its built site and where it is served."""

    root: Path
    publication: Path
    site: Path
    url: str
    build: subprocess.CompletedProcess[str]
    info: dict[str, Any]


def site_env(publication: Path) -> dict[str, str]:
    return {**os.environ, "CPL_PUBLICATION": str(publication), "NO_MKDOCS_2_WARNING": "1"}


def build_site(
    publication: Path, site: Path, tool: str = "mkdocs", dirty: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -m <tool> build [--dirty] -d site`` from the repository root (mkdocs.yml: strict)."""
    argv = [sys.executable, "-m", tool, "build", *(["--dirty"] if dirty else []), "-d", str(site)]
    if tool != "mkdocs":
        argv += ["-f", str(REPO / "mkdocs.yml")]
    return subprocess.run(
        argv, cwd=REPO, env=site_env(publication), capture_output=True, text=True, check=False, timeout=600
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(site: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    """Serve ``site`` on 127.0.0.1 (a free port) from a daemon thread; returns the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


def _built(root: Path, publication: Path, info: dict[str, Any]) -> SiteBuild:
    site = root / "site"
    proc = build_site(publication, site)
    if proc.returncode != 0:
        pytest.fail(f"mkdocs build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    url, _ = serve(site)
    return SiteBuild(root, publication, site, url, proc, info)


_CACHE: dict[str, SiteBuild] = {}


def demo_build(factory: pytest.TempPathFactory) -> SiteBuild:
    """The demo publication (``publisher.demo.build``) and its site, built once per session."""
    if "demo" not in _CACHE:
        root = factory.mktemp("demo-site")
        info = demo.build(root / "demo")
        _CACHE["demo"] = _built(root, Path(info["publication"]), info)  # type: ignore[arg-type]
    return _CACHE["demo"]


def write_submission(pub: Path, sub_id: str, rows: Sequence[Sequence[str]], signers: list[parties.Party]) -> Path:
    """Like ``demo.submit`` but writes the CSV with proper quoting, so any text survives."""
    folder = pub / "inbox" / sub_id
    folder.mkdir(parents=True)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(demo.HEADER.split(","))
    writer.writerows(rows)
    sheet = buf.getvalue().encode()
    (folder / "submission.csv").write_bytes(sheet)
    (folder / "signatures.p7s").write_bytes(parties.sign_detached(sheet, signers))
    (folder / "request.json").write_text(json.dumps({"submitter_ref": f"REF-{sub_id}", "panel_ref": "P"}))
    return folder


def hostile_rows(makers: list[parties.Party]) -> dict[str, list[tuple[str, ...]]]:
    """One submission per manufacturer; every hostile string is a model ID (and a version)."""
    subs: dict[str, list[tuple[str, ...]]] = {m.org_id: [] for m in makers}
    for i, text in enumerate(HOSTILE):
        maker = makers[i % len(makers)]
        hw = text if i % 3 == 0 else "1.0"
        row = (maker.org_id, "Maker " + maker.org_id, text, hw, f"{i}.0", "ESME", "SMETS2", demo.image_hash(f"h{i}"))
        subs[maker.org_id].append(row)
    for maker, name in zip(makers, HOSTILE_MAKERS, strict=True):
        # The last row of each manufacturer carries its hostile manufacturer name.
        subs[maker.org_id].append(
            (maker.org_id, name, f"NAME-{maker.org_id}", "1.0", "1.0", "GSME", "SMETS2", demo.image_hash(name))
        )
    return subs


def make_hostile_publication(out: Path) -> dict[str, Any]:
    """A small publication whose manufacturer names and model IDs are hostile strings."""
    pub, keys_dir, org_dir = out / "publication", out / "keys", out / "certs"
    scaffold.init_publication(pub, keys_dir, "http://127.0.0.1:8000", "hostile.example/log")
    init_repository(pub)
    config = load_config(pub)
    now = publication.now_utc()
    makers = [
        parties.issue_party(
            config, name, f"{1001 + k}", "Manufacturer", now, folder=org_dir
        )  # the certificate names it
        for k, name in enumerate(HOSTILE_MAKERS)
    ]
    supplier = parties.issue_party(config, "Northern Power Supply", "2001", "Supplier", now, folder=org_dir)
    publish(config, now)
    rows = hostile_rows(makers)
    for maker in makers:
        write_submission(pub, f"H{maker.org_id}", rows[maker.org_id], [maker, supplier])
    result = publish(config, now + dt.timedelta(seconds=1))
    if result.intake.rejected:
        reports = {k: (pub / "inbox" / k / "rejection.txt").read_text() for k in result.intake.rejected}
        pytest.fail(f"hostile submissions were rejected: {reports}")
    return {"publication": str(pub), "size": result.size, "accepted": sorted(result.intake.accepted)}


def hostile_build(factory: pytest.TempPathFactory) -> SiteBuild:
    """The hostile-names publication and its site, built once per session."""
    if "hostile" not in _CACHE:
        root = factory.mktemp("hostile-site")
        info = make_hostile_publication(root / "hostile")
        _CACHE["hostile"] = _built(root, Path(info["publication"]), info)
    return _CACHE["hostile"]


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> SiteBuild:
    return demo_build(tmp_path_factory)


@pytest.fixture(scope="session")
def hostile_site(tmp_path_factory: pytest.TempPathFactory) -> SiteBuild:
    return hostile_build(tmp_path_factory)


def html_pages(site: Path) -> Iterator[Path]:
    yield from sorted(site.rglob("*.html"))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
