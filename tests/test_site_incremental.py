"""The incremental site build (``mkdocs build --dirty``): a publish that adds k entries costs what they
touch, an unchanged publication writes nothing new, and the result is always the full build's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mkdocs.commands.build import build
from mkdocs.config import load_config
from publication_fixtures import Pub, new_publication
from site_fixtures import REPO, write_submission

from publisher import demo, parties
from publisher.publish import publish
from publisher.site import state as site_state
from publisher.site.state import cache_dir
from publisher.tlog import open_log
from verifier.cpl_verify import LOOKUP_TILES, Lookup, lookup_tile_path, parse_commitment, shard_leaf_path

PER_PAGE = 3  # small pages, so a few submissions make several of them


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(site_state, "ROWS_PER_PAGE", PER_PAGE)


def make(site: Path, publication: Path, monkeypatch: pytest.MonkeyPatch, dirty: bool) -> dict[str, Any]:
    """Build as ``mkdocs build [--dirty] -d site`` does (in this process, so the page size above applies)."""
    monkeypatch.setenv("CPL_PUBLICATION", str(publication))
    config = load_config(str(REPO / "mkdocs.yml"), site_dir=str(site))
    config.plugins.on_startup(command="build", dirty=dirty)
    try:
        build(config, dirty=dirty)
    finally:
        config.plugins.on_shutdown()
    report: dict[str, Any] = json.loads((cache_dir(site) / "last-build.json").read_text())
    return report


def submit(p: Pub, sub_id: str, n: int, replaces: int | None = None) -> None:
    rows: list[tuple[str, ...]] = [
        (p.maker.org_id, "Acme", f"ESME-{sub_id}-{k}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(f"{sub_id}{k}"))
        for k in range(n)
    ]
    request: dict[str, object] | None = None
    if replaces is not None:
        entry = json.loads(open_log(p.config).entry(replaces))
        model = entry["device_model"]
        fields = [model["model_id"], model["hardware_version"], model["firmware_version"], "ESME", "SMETS2"]
        rows = [(p.maker.org_id, "Acme", *fields, demo.image_hash(f"{sub_id}-fixed"))]
        request = {"replacements": [{"replaces_index": replaces, "investigation_ref": f"INV-{sub_id}"}]}
    if request is None:
        write_submission(p.root, sub_id, rows, [p.maker, p.supplier])
    else:
        demo.submit(p.root, sub_id, rows, [p.maker, p.supplier], {"submitter_ref": "R", "panel_ref": "P", **request})


def publish_now(p: Pub, seconds: int) -> None:
    import datetime as dt

    result = publish(p.config, p.now + dt.timedelta(seconds=seconds))
    assert not result.intake.rejected, result.intake.rejected


def files_of(site: Path) -> dict[str, bytes]:
    return {p.relative_to(site).as_posix(): p.read_bytes() for p in sorted(site.rglob("*")) if p.is_file()}


def stamps(site: Path) -> dict[str, int]:
    return {p.relative_to(site).as_posix(): p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}


def same_site(a: Path, b: Path) -> None:
    """Two builds are the same site: the same files with the same bytes (MkDocs' sitemap dates aside)."""
    fa, fb = files_of(a), files_of(b)
    assert sorted(fa) == sorted(fb)
    differ = [rel for rel in fa if fa[rel] != fb[rel] and not rel.startswith("sitemap.xml")]
    assert differ == []


@pytest.fixture()
def pub(tmp_path: Path) -> Pub:
    p = new_publication(tmp_path, "incremental.example/log")
    submit(p, "S001", 4)
    publish_now(p, 1)
    return p


def test_an_incremental_build_reads_only_new_entries_and_equals_a_full_build(
    pub: Pub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    first = make(site, pub.root, monkeypatch, dirty=False)
    assert first["mode"] == "full"
    size = open_log(pub.config).size
    before = stamps(site)
    submit(pub, "S002", 5)
    first_row = next(i for i, raw in enumerate(open_log(pub.config).entries()) if b"cpl-association/v1" in raw)
    submit(pub, "S003", 1, replaces=first_row)  # marks an old row "replaced by", on an older page
    publish_now(pub, 2)
    grown = open_log(pub.config).size
    report = make(site, pub.root, monkeypatch, dirty=True)
    assert report["mode"] == "incremental" and report["lookup_resumed"] is True
    assert (report["from_size"], report["to_size"], report["entries_read"]) == (size, grown, grown - size)
    # Six new rows fill two pages; the replaced row's page and its neighbours change; no more.
    assert report["pages_touched"] <= 6
    after = stamps(site)
    untouched_tiles = [r for r in before if r.startswith("log/tile/") and before[r] == after.get(r)]
    assert untouched_tiles, "tiles that did not change are not linked again"
    full = tmp_path / "full"
    assert make(full, pub.root, monkeypatch, dirty=False)["mode"] == "full"
    same_site(site, full)
    # The replaced row says so on its page.
    page = (site / "firmware" / "1001" / "page-1" / "index.html").read_text()
    assert re.search(r"replaced</span> by #\d+", page)


def test_a_build_over_an_unchanged_publication_writes_nothing_new(
    pub: Pub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    make(site, pub.root, monkeypatch, dirty=False)
    make(site, pub.root, monkeypatch, dirty=True)
    before, content = stamps(site), files_of(site)
    report = make(site, pub.root, monkeypatch, dirty=True)
    assert (report["entries_read"], report["pages_rewritten"], report["files_written"], report["files_linked"]) == (
        0,
        0,
        0,
        0,
    )
    assert files_of(site) == content
    rewritten = sorted(r for r, t in stamps(site).items() if before[r] != t)
    # MkDocs renders the pages in the navigation and the search index every time (same bytes): a handful.
    assert len(rewritten) <= 16, rewritten
    assert not [r for r in rewritten if r.startswith(("log/", "crl/archive/", "firmware/1001/"))], rewritten


@pytest.mark.parametrize("damage", ["site deleted", "shard altered", "generator changed", "cache for another log"])
def test_a_site_the_cache_does_not_describe_is_built_whole(
    pub: Pub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    site = tmp_path / "site"
    make(site, pub.root, monkeypatch, dirty=False)
    submit(pub, "S002", 2)
    publish_now(pub, 2)
    state_file = cache_dir(site) / "state.json"
    meta = json.loads(state_file.read_text())
    if damage == "site deleted":
        for path in sorted(site.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    elif damage == "shard altered":  # one the new entries add to: an incremental build trusts what it does not touch
        shard = site / "log" / "lookup" / "hash" / f"{demo.image_hash('S0020')[:3]}.json"
        shard.write_bytes(b'{"' + demo.image_hash("S0020").encode() + b'":[9999]}')
    elif damage == "generator changed":
        state_file.write_text(json.dumps({**meta, "generator": "another"}))
    else:
        other = new_publication(tmp_path / "other", "incremental.example/log")
        checkpoint = (other.root / "log" / "checkpoint").read_text()
        state_file.write_text(json.dumps({**meta, "checkpoint": checkpoint}))
        (site / "log" / "checkpoint").write_text(checkpoint)
    report = make(site, pub.root, monkeypatch, dirty=True)
    if damage == "shard altered":  # pages continue; the lookup does not trust the altered shard
        assert report["mode"] == "incremental" and report["lookup_resumed"] is False
    else:
        assert report["mode"] == "full"
    full = tmp_path / "full"
    make(full, pub.root, monkeypatch, dirty=False)
    same_site(site, full)


def test_page_links_lead_to_pages_that_exist(pub: Pub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    make(site, pub.root, monkeypatch, dirty=False)
    for n in range(2, 5):
        submit(pub, f"S00{n}", 4)
        publish_now(pub, n)
        make(site, pub.root, monkeypatch, dirty=True)
    pages = list(_firmware_pages(site))
    assert len(pages) >= 5
    for page in pages:
        for href in re.findall(r'href="([^"#]+/)"', page.read_text()):
            if href.startswith(("http", "/")):
                continue
            target = (page.parent / href / "index.html").resolve()
            assert target.is_file(), (page, href)


@pytest.mark.parametrize("rows", [PER_PAGE * 2 + 1, PER_PAGE, 1])
def test_builds_that_add_several_pages_or_rename_a_manufacturer_equal_a_full_build(
    pub: Pub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """Pages gained several at a time (the older neighbours' links change), and a manufacturer whose
    certificate now carries another name (every one of its pages shows it)."""
    site = tmp_path / "site"
    make(site, pub.root, monkeypatch, dirty=False)
    for n in range(2, 5):
        submit(pub, f"S00{n}", rows)
        publish_now(pub, n)
        assert make(site, pub.root, monkeypatch, dirty=True)["mode"] == "incremental"
    renamed = parties.issue_party(pub.config, "Acme Renamed Ltd", "1001", "Manufacturer", pub.now, folder=tmp_path)
    write_submission(pub.root, "S009", [(renamed.org_id, "Acme", "R-1", "1.0", "1.0", "ESME", "SMETS2",
                                         demo.image_hash("renamed"))], [renamed, pub.supplier])  # fmt: skip
    publish_now(pub, 9)
    report = make(site, pub.root, monkeypatch, dirty=True)
    assert report["mode"] == "incremental"
    full = tmp_path / "full"
    make(full, pub.root, monkeypatch, dirty=False)
    same_site(site, full)
    assert "Acme Renamed Ltd" in (site / "firmware" / "1001" / "page-1" / "index.html").read_text()


def _firmware_pages(site: Path) -> Iterator[Path]:
    yield from sorted((site / "firmware" / "1001").rglob("index.html"))


def test_a_build_cut_short_while_saving_its_state_is_redone_whole(
    pub: Pub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state is saved all or nothing: a crash mid-save leaves none, so rows are never counted twice."""
    site = tmp_path / "site"
    make(site, pub.root, monkeypatch, dirty=False)
    submit(pub, "S002", 2)
    publish_now(pub, 2)
    real_write = site_state._write
    writes: list[Path] = []

    def write_then_crash(path: Path, data: bytes) -> None:
        real_write(path, data)
        if path.is_relative_to(cache_dir(site) / "rows"):  # a chunk of rows: written only by save
            writes.append(path)
        if len(writes) == 1:
            raise KeyboardInterrupt  # as a kill would, after some chunk files and before state.json

    monkeypatch.setattr(site_state, "_write", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        make(site, pub.root, monkeypatch, dirty=True)
    monkeypatch.setattr(site_state, "_write", real_write)
    assert not (cache_dir(site) / "state.json").exists()
    assert make(site, pub.root, monkeypatch, dirty=True)["mode"] == "full"
    full = tmp_path / "full"
    make(full, pub.root, monkeypatch, dirty=False)
    same_site(site, full)


# -- Lookup.resume (verifier): continuing the lookup from the site's files is the lookup built whole ----------


def _entries(hashes: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "type": "cpl-association/v1",
            "image_sha256": f"{h:064x}",
            "device_model": {
                "manufacturer_id": "1",
                "model_id": f"M{h % 7}",
                "hardware_version": "1",
                "firmware_version": "1",
            },
        }
        for h in hashes
    ]


@settings(max_examples=40, deadline=None)
@given(
    first=st.lists(st.integers(0, 2**256 - 1), max_size=30),
    then=st.lists(st.integers(0, 2**256 - 1), max_size=30),
)
def test_a_resumed_lookup_is_the_lookup_built_whole(first: list[int], then: list[int]) -> None:
    whole = Lookup()
    for i, e in enumerate(_entries(first)):
        whole.add(i, e)
    raw = whole.commitment()
    whole.add(len(first), json.loads(raw))
    files = {**whole.shard_files(), **whole.tile_files()}
    leaves = b"".join(files[lookup_tile_path(0, t)] for t in range(LOOKUP_TILES))
    commitment = parse_commitment(len(first), raw)
    assert commitment is not None
    read: list[int] = []

    def read_shard(leaf: int) -> bytes:
        read.append(leaf)
        return files.get(shard_leaf_path(leaf), b"{}")

    resumed = Lookup.resume(commitment, [leaves[i : i + 32] for i in range(0, len(leaves), 32)], read_shard)
    for i, e in enumerate(_entries(then), len(first) + 1):
        whole.add(i, e)
        resumed.add(i, e)
    assert resumed.commitment() == whole.commitment()
    assert len(set(read)) <= 2 * len(then)  # only the shards the new entries touch are read
    touched = resumed.shard_files(touched_only=True)
    assert touched == {k: v for k, v in whole.shard_files().items() if k in touched}
    assert resumed.shard_files() == whole.shard_files()  # and the untouched ones read back as they were


def test_a_resumed_lookup_refuses_leaves_or_shards_that_do_not_match() -> None:
    lookup = Lookup()
    for i, e in enumerate(_entries([5, 6])):
        lookup.add(i, e)
    raw = lookup.commitment()
    commitment = parse_commitment(2, raw)
    assert commitment is not None
    files = lookup.tile_files()
    leaves = b"".join(files[lookup_tile_path(0, t)] for t in range(LOOKUP_TILES))
    hashes = [leaves[i : i + 32] for i in range(0, len(leaves), 32)]
    with pytest.raises(ValueError, match="do not hash to the root"):
        Lookup.resume(commitment, [b"\0" * 32, *hashes[1:]], lambda leaf: b"{}")
    resumed = Lookup.resume(commitment, hashes, lambda leaf: b'{"altered":[1]}')
    with pytest.raises(ValueError, match="does not match the committed tree"):
        resumed.add(3, _entries([5])[0])


def test_the_table_bypasses_markdown_and_a_hostile_name_cannot_move_it() -> None:
    """The rows' HTML goes round Markdown (most of the build time) and into the placeholder's place; names
    that imitate the marker or the placeholder stay escaped text."""
    from publisher.site import pages
    from publisher.site.state import Maker

    name = f"{pages.RAW_HTML_PLACEHOLDER}\n{pages.RAW_HTML_MARKER}\n<p>{pages.RAW_HTML_PLACEHOLDER}</p>"
    maker = Maker(name, "1001", 1, [7])
    row = [7, "1001", name, "M", "1", "1", "ESME", "SMETS2", "ab" * 32, "2026-11-29T00:00:00Z", None, name, None, ""]
    head, raw = pages.split_raw_html(pages.chunk_page("1001", maker, 0, [row]))
    assert raw is not None and raw.lstrip().startswith('<div class="cpl-firmware">')
    assert pages.RAW_HTML_MARKER not in raw and "&lt;!-- cpl:raw-html --&gt;" in raw
    # Its own line, twice escaped in the heading, and twice in the title (reduced to letters, digits and
    # dashes there, it cannot form the placeholder's paragraph).
    assert head.count(pages.RAW_HTML_PLACEHOLDER) == 5
    assert head.count(f"<p>{pages.RAW_HTML_PLACEHOLDER}</p>") == 0
    rendered = f"<h1>{pages.safe(name)}</h1><p>{pages.RAW_HTML_PLACEHOLDER}</p><p>after</p>"
    assert pages.join_raw_html(rendered, raw) == f"<h1>{pages.safe(name)}</h1>{raw}<p>after</p>"
    with pytest.raises(ValueError, match="exactly once"):
        pages.join_raw_html(rendered * 2, raw)
    assert pages.split_raw_html("# no table\n") == ("# no table\n", None)
