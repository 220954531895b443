"""MkDocs hooks (``hooks:`` in mkdocs.yml): generate the pages from the publication's committed
state, then link the machine-readable trees into the built site.

The publication folder is ``$CPL_PUBLICATION`` or ``extra.publication`` in mkdocs.yml.

``mkdocs build --dirty`` is an incremental build: it reads only the log entries added
since the last build (``publisher.site.state``), rewrites only the manufacturer pages,
search and lookup shards those entries touch, and MkDocs re-renders only pages whose
Markdown changed (and those in the navigation, a few). When the cache beside the site does not
describe this site and a prefix of this log, the dirty build starts from a clean site.
``mkdocs build`` (clean) is always a full build. Each build leaves a report of what it
did in ``last-build.json`` in the cache folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.utils import clean_directory

from publisher.config import Config
from publisher.config import load as load_config
from publisher.entries import parse_entry
from publisher.errors import Refused
from publisher.pki.crl import CRLError, entry_serials, revoked_entries
from publisher.pki.der import parse_time
from publisher.pki.registers import load_revocations
from publisher.publication import CRL_DIR, LOG_DIR, STATUS_FILE, VKEY, load_certificate, now_utc
from publisher.site import check_page, feeds, pages
from publisher.site.export import export_tree, witnessing_of
from publisher.site.state import (
    C_ENTRIES,
    C_ISSUER,
    C_NUMBER,
    C_SHA256,
    FEED_ITEMS,
    MAKERS_FILE,
    RECENT,
    SiteState,
    cache_dir,
    write_if_changed,
)
from publisher.tlog import LogReader, open_log, read_vkey
from publisher.tlog.checkpoint import parse_unverified
from publisher.tlog.merkle import ProofError, verify_consistency
from verifier.cpl_verify import RULES, iso_utc

_state: dict[str, Any] = {}
REPO = Path(__file__).resolve().parents[2]
VERIFIER = REPO / "verifier" / "cpl_verify.py"
DIRTY_WARNING = "A 'dirty' build is being performed"


def _publication(config: Any) -> Config:
    where = os.environ.get("CPL_PUBLICATION") or config.get("extra", {}).get("publication")
    if not where:
        raise SystemExit("set CPL_PUBLICATION or extra.publication to the publication folder")
    base = Path(config["config_file_path"]).parent
    return load_config((base / where).resolve())


def _now(pub: Config) -> dt.datetime:
    # Pages describe the committed state as of its last publish, so builds are reproducible.
    status = pub.root / STATUS_FILE
    if status.exists():
        at = json.loads(status.read_text()).get("generated_at")
        if at:
            return parse_time(str(at))
    return now_utc()


def _generator(config: Any) -> str:
    """What the pages are made with (by content, not by where it is): a change here makes every page stale."""
    digest = hashlib.sha256()
    docs = Path(config["docs_dir"])
    sources = [("mkdocs.yml", Path(config["config_file_path"])), ("verifier", VERIFIER)]
    sources += [(f"site/{p.name}", p) for p in sorted((REPO / "publisher" / "site").glob("*.py"))]
    sources += [(f"docs/{p.relative_to(docs).as_posix()}", p) for p in sorted(docs.rglob("*")) if p.is_file()]
    for name, path in sources:
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for package in ("mkdocs", "mkdocs-material", "Markdown", "pymdown-extensions"):
        digest.update(importlib.metadata.version(package).encode())
    return digest.hexdigest()


class _DirtyBuildIsManaged(logging.Filter):
    """MkDocs warns that a dirty build may leave stale navigation; these hooks handle that (the navigation
    is fixed, generated pages are rewritten when their content changes, an unknown site is cleaned first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(DIRTY_WARNING)


_DIRTY_FILTER = _DirtyBuildIsManaged()


def on_startup(command: str, dirty: bool) -> None:
    _state["dirty"] = dirty
    if dirty:
        logging.getLogger("mkdocs.commands.build").addFilter(_DIRTY_FILTER)


def on_config(config: Any) -> Any:
    _state["pub"] = _publication(config)
    return config


def _usable(state: SiteState | None, log: LogReader, site: Path, generator: str) -> bool:
    """Whether ``state`` describes ``site`` and a prefix of ``log``, made by this generator."""
    if state is None or state.generator != generator or state.size > log.size:
        return False
    try:
        if (site / LOG_DIR / "checkpoint").read_text() != state.checkpoint:
            return False
        old = parse_unverified(state.checkpoint)
        verify_consistency(old.size, log.size, old.root, log.root_hash, log.consistency_proof(old.size))
    except (OSError, ValueError, ProofError):
        return False
    return bool(state.size == old.size)


def on_files(files: Files, config: Any) -> Files:
    started = time.monotonic()
    pub: Config = _state["pub"]
    site = Path(config["site_dir"])
    log = open_log(pub)
    try:
        witnessing = witnessing_of(pub, log)  # before anything is written: a refused checkpoint changes nothing
    except Refused as exc:
        raise PluginError(str(exc)) from exc
    generator = _generator(config)
    dirty = bool(_state.get("dirty"))
    state = SiteState.load(cache_dir(site)) if dirty else None
    if state is None or not _usable(state, log, site, generator):
        if dirty:  # a site this cache does not describe: start clean, as a clean build would
            clean_directory(str(site))
        state = SiteState.empty(cache_dir(site))
    since = state.size
    changes = state.add(
        ((i, parse_entry(raw)) for i, raw in enumerate(log.entries(since), since)),
        lambda i: parse_entry(log.entry(i)),
    )
    _count_crl_entries(pub, state)

    # The manufacturer pages: rewritten when touched, rendered by MkDocs only when their Markdown changed.
    touched = changes.pages(state.makers)
    page_src = cache_dir(site) / "pages"
    rewritten = 0
    for mid, n in sorted(touched):
        maker = state.makers[mid]
        text = pages.chunk_page(mid, maker, n, state.chunk(mid, n))
        text = feeds.advertise(
            text, [feeds.maker_feed(maker.slug), feeds.APPROVALS], _up(pages.chunk_page_path(maker, n), config)
        )
        rewritten += write_if_changed(page_src / pages.chunk_page_path(maker, n), text.encode())
    for maker in state.makers.values():
        for n in range(len(maker.starts)):
            path = pages.chunk_page_path(maker, n)
            files.append(File(path, str(page_src), config["site_dir"], config["use_directory_urls"]))

    status_path = pub.root / STATUS_FILE
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    generated: dict[str, str] = {"index.md": pages.home(status, _now(pub))}
    revocations = load_revocations(pub.root)
    for issuer in pub.issuers:
        meta_path = pub.root / CRL_DIR / f"{issuer.name}.json"
        if not meta_path.exists():
            continue
        revoked = [
            {
                "serial": r.serial,
                "revoked_at": r.revoked_at,
                "reason": r.reason,
                "invalidity_date": r.invalidity_date or "",
            }
            for r in revocations
            if r.issuer == issuer.name
        ]
        archive_dir = pub.root / CRL_DIR / "archive" / issuer.name
        archive = [int(p.stem) for p in archive_dir.glob("*.crl")] if archive_dir.is_dir() else []
        generated[f"crl/{issuer.name}.md"] = pages.issuer_page(
            issuer.name, json.loads(meta_path.read_text()), revoked, archive
        )
    generated["firmware/index.md"] = pages.firmware_index(state.makers)
    generated["transparency-log.md"] = pages.log_page(
        log.signed.raw, (pub.root / VKEY).read_text(), state.recent[-RECENT:][::-1], witnessing, state.months
    )

    def described(path: Path) -> tuple[str, str, str]:
        cert = load_certificate(path)
        return path.stem, cert.subject.rfc4514_string(), cert.fingerprint(hashes.SHA256()).hex()

    anchors = [described(p) for p in pub.trust_anchors]
    others = [described(i.certificate) for i in pub.issuers if i.certificate not in pub.trust_anchors]
    by_issuer: dict[str, list[str]] = {}
    for r in revocations:
        by_issuer.setdefault(r.issuer, []).append(r.revoked_at)
    generated["pki.md"] = pages.pki_page(anchors, others, by_issuer)
    # The check page: the log's key and the witness policy built in, as the verifier's trust file pins them.
    log_key = read_vkey(pub.root / LOG_DIR)
    policy = check_page.client_policy(pub.witnessing.policy if pub.witnessing else None, log_key)
    generated[check_page.CHECK_PAGE] = check_page.check_page(pub.origin, log_key.vkey, policy)
    generated[check_page.ENTRY_PAGE] = check_page.entry_page(pub.origin, log_key.vkey, policy)
    # From the verifier's table itself, never a copy: the page cannot drift from what intake and audit run.
    generated[pages.RULES_PAGE] = pages.rules_page(RULES)
    if VERIFIER.exists():
        digest = hashlib.sha256(VERIFIER.read_bytes()).hexdigest()
    else:
        digest = "(the verifier is not part of this build)"
    generated["verify/download.md"] = "\n".join(
        [
            "# Download the verifier",
            "",
            '<a href="../cpl_verify.py">cpl_verify.py</a> (Python 3.9+, needs only `cryptography` 42.0 or later).',
            "",
            f"SHA-256: <code>{digest}</code>",
            "",
            "Check the digest before you run it: `sha256sum cpl_verify.py`.",
            *check_page.digests_section(check_page.script_digests(Path(config["docs_dir"]))),
        ]
    )
    for uri, content in generated.items():
        if uri in PAGE_FEEDS or uri.startswith("crl/"):  # the issuer pages: crl/<issuer>.md
            paths = PAGE_FEEDS.get(uri, [feeds.REVOCATIONS, feeds.CRLS])
            content = feeds.advertise(content, paths, _up(uri, config), visible=uri != "index.md")
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))
    _state["feeds"] = _feed_documents(pub, config, state, {mid for mid, _ in touched}, revocations)
    _state.update(
        state=state,
        since=since,
        shards=changes.shards,
        generator=generator,
        built=(log.size, log.signed.raw),
        report={"mode": "incremental" if since else "full", "from_size": since, "to_size": log.size,
                "entries_read": changes.entries, "pages_rewritten": rewritten, "pages_touched": len(touched)},
        started=started,
    )  # fmt: skip
    return files


# The feeds each generated page names (home: in its head only, its visible line is for ``home()`` to place);
# each issuer page (crl/<issuer>.md) the revocations and CRLs; a manufacturer's pages its own and all approvals.
PAGE_FEEDS = {
    "index.md": [feeds.APPROVALS, feeds.REVOCATIONS, feeds.CRLS],
    "firmware/index.md": [feeds.APPROVALS],
    "transparency-log.md": [feeds.APPROVALS, feeds.CRLS],
    "pki.md": [feeds.REVOCATIONS, feeds.CRLS],
}


def _up(uri: str, config: Any) -> str:
    """From the page of ``uri`` to the site's root (``../`` per level of its URL)."""
    return "../" * File(uri, "", config["site_dir"], config["use_directory_urls"]).url.count("/")


def _count_crl_entries(pub: Config, state: SiteState) -> None:
    """How many certificates each newly logged CRL revokes (a crl/v1 entry does not say), read once from its
    archived DER when that is the DER the entry names; otherwise left unknown and tried again next build."""
    issuers = {i.name for i in pub.issuers}
    for row in state.crls:
        if row[C_ENTRIES] is not None or row[C_ISSUER] not in issuers or not isinstance(row[C_NUMBER], int):
            continue
        try:
            der = (pub.root / CRL_DIR / "archive" / row[C_ISSUER] / f"{row[C_NUMBER]}.crl").read_bytes()
            if hashlib.sha256(der).hexdigest() == row[C_SHA256]:
                row[C_ENTRIES] = len(entry_serials(revoked_entries(der).body))
        except (OSError, CRLError):
            pass


def _feed_documents(
    pub: Config, config: Any, state: SiteState, makers: set[str], revocations: list[Any]
) -> dict[str, bytes]:
    """The feeds' files: the global ones (a hundred items each, whatever the log's size) every build, and the
    feeds of the manufacturers whose pages this build touched (rows added or marked, or renamed): the others'
    newest rows and names are unchanged, so are their feeds, and the site keeps their files. Regenerating all
    would cost a chunk read per manufacturer per build (a thousand at a million entries); this costs what the
    publish changed. An unchanged file is not rewritten (``write_if_changed``)."""
    site = feeds.Site(pub.site_url, str(config["site_name"]))
    out = {
        **feeds.documents(site, feeds.approvals(site, state.recent[-FEED_ITEMS:])),
        **feeds.documents(site, feeds.revocations(site, revocations)),
        **feeds.documents(site, feeds.crls(site, state.crls)),
    }
    for mid in sorted(makers):
        maker = state.makers[mid]
        out.update(feeds.documents(site, feeds.manufacturer(site, mid, maker, state.newest(mid, FEED_ITEMS))))
    return out


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    head, raw = pages.split_raw_html(markdown)
    if raw is not None:
        _state.setdefault("raw", {})[page.file.src_uri] = raw
    return head


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    raw = _state.get("raw", {}).pop(page.file.src_uri, None)
    return html if raw is None else pages.join_raw_html(html, raw)


def on_post_page(output: str, page: Any, config: Any) -> str:
    """The page's feeds (its ``feeds`` front matter) as ``<link rel="alternate">`` in its head."""
    paths = feeds.advertised(page.meta.get("feeds"))
    if not paths:
        return output
    return output.replace("</head>", feeds.head_links(paths, "../" * page.url.count("/")) + "</head>", 1)


def on_post_build(config: Any) -> None:
    pub: Config = _state["pub"]
    site = Path(config["site_dir"])
    state: SiteState = _state["state"]
    report: dict[str, Any] = _state["report"]
    export = export_tree(pub, site, iso_utc(_now(pub)), since=_state["since"])
    written = export.written
    for rel in sorted(_state["shards"]):
        written += write_if_changed(site / rel, state.shard_bytes(rel))
    written += write_if_changed(site / MAKERS_FILE, state.makers_bytes())
    for rel, data in sorted(_state["feeds"].items()):
        written += write_if_changed(site / rel, data)
    if VERIFIER.exists():
        data = VERIFIER.read_bytes()
        written += write_if_changed(site / "verify" / "cpl_verify.py", data)
        line = f"{hashlib.sha256(data).hexdigest()}  cpl_verify.py\n"
        written += write_if_changed(site / "verify" / "cpl_verify.py.sha256", line.encode())
    written += write_if_changed(site / "_headers", HEADERS.encode())
    size, checkpoint = _state["built"]
    state.save(size, checkpoint, _state["generator"])
    report.update(
        files_linked=export.linked,
        files_written=written,
        lookup_resumed=export.lookup_resumed,
        seconds=round(time.monotonic() - _state["started"], 3),
    )
    write_if_changed(cache_dir(site) / "last-build.json", json.dumps(report, indent=1).encode())
    logging.getLogger("mkdocs").info(
        "cpl: %s build, log %d -> %d: %d pages rewritten, %d files linked, %d written",
        report["mode"],
        report["from_size"],
        report["to_size"],
        report["pages_rewritten"],
        export.linked,
        written,
    )


# For hosts that honour a headers file (Netlify, Cloudflare Pages); GitHub Pages does not.
HEADERS = """/log/checkpoint
  Content-Type: text/plain; charset=utf-8
  Cache-Control: public, max-age=5
/log/tile/*
  Content-Type: application/octet-stream
  Cache-Control: public, max-age=31536000, immutable
/log/evidence/*
  Cache-Control: public, max-age=31536000, immutable
/crl/archive/*
  Cache-Control: public, max-age=31536000, immutable
/crl/*
  Cache-Control: public, max-age=300
/status.json
  Cache-Control: public, max-age=60
/feeds/*
  Cache-Control: public, max-age=300
/feeds/approvals.atom
  Content-Type: application/atom+xml
/feeds/approvals.json
  Content-Type: application/feed+json
/feeds/revocations.atom
  Content-Type: application/atom+xml
/feeds/revocations.json
  Content-Type: application/feed+json
/feeds/crls.atom
  Content-Type: application/atom+xml
/feeds/crls.json
  Content-Type: application/feed+json
"""
