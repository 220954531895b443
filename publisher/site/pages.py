"""The generated pages of the site, as Markdown with raw-HTML tables. Pure: state in, text out.

Every string that came from a submission or a certificate is HTML-escaped
(after control and bidi characters are stripped) inside raw-HTML tables,
never put into a Markdown table: Markdown links, attribute lists and pipes
in names would otherwise be live.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from verifier.cpl_verify import ASSOCIATION_TYPE, Rule
from verifier.cpl_verify import clean_cell as clean

ROWS_PER_PAGE = 1000


def safe(value: object) -> str:
    """Text for HTML: control and bidi characters removed, then escaped (quotes too)."""
    return html.escape(clean(str(value)), quote=True)


def table(headers: list[str], rows: Iterable[list[str]], css: str = "") -> str:
    """A raw-HTML table block; cells must already be safe HTML."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    # The class goes on the wrapper: Material styles only tables without a class of their own.
    return f'\n<div class="cpl-table {css}"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>\n'


@dataclass(frozen=True)
class Association:
    """A logged association as the pages show it."""

    index: int
    entry: dict[str, object]
    replaced_by: int | None

    def field(self, *path: str) -> str:
        value: object = self.entry
        for key in path:
            value = value.get(key, "") if isinstance(value, dict) else ""
        return str(value)


def associations(entries: Iterable[tuple[int, dict[str, object]]]) -> list[Association]:
    """Association entries with, for each, the later entry that replaced it (if any)."""
    found = [(i, e) for i, e in entries if e.get("type") == ASSOCIATION_TYPE]
    replaced: dict[int, int] = {}
    for i, e in found:
        rep = e.get("replaces")
        if isinstance(rep, dict) and isinstance(rep.get("index"), int):
            replaced[int(rep["index"])] = i
    return [Association(i, e, replaced.get(i)) for i, e in found]


def _fresh(meta: dict[str, object], now: dt.datetime) -> str:
    next_update = dt.datetime.fromisoformat(str(meta["next_update"]).replace("Z", "+00:00"))
    if next_update > now:
        return '<span class="cpl-ok">fresh</span>'
    return '<span class="cpl-bad">STALE: do not rely on it</span>'


def home(status: dict[str, object], now: dt.datetime) -> str:
    """The home page: CRL status, log status, last publish."""
    crls = status.get("crls", {})
    log = status.get("log", {})
    last = status.get("last_publish", {})
    assert isinstance(crls, dict) and isinstance(log, dict) and isinstance(last, dict)  # noqa: S101
    rows = [
        [
            f'<a href="crl/{safe(name)}/">{safe(name)}</a>',
            safe(meta["number"]),
            safe(meta["this_update"]),
            safe(meta["next_update"]),
            _fresh(meta, now),
            safe(meta["entries"]),
            f'<a href="crl/{safe(name)}.crl">DER</a> · <a href="crl/{safe(name)}.pem">PEM</a>',
        ]
        for name, meta in sorted(crls.items())
    ]
    return "\n".join(
        [
            "# GB smart metering PKI transparency",
            "",
            "The public IKI certificate revocation lists (SEC modification MP168) and an append-only,",
            "verifiable log of the firmware hashes approved on the Central Products List",
            "(SEC Appendix Z 4.1 to 4.3), each checked against the [submission rules](submission-rules.md).",
            "Nothing here needs an account; the [verifier](verify.md) checks everything without trusting this site.",
            "",
            "## Certificate revocation lists",
            table(
                ["Issuer", "CRL number", "thisUpdate", "nextUpdate", "Status", "Revoked", "Download"], rows, "cpl-crls"
            ),
            "## Transparency log",
            table(
                ["Origin", "Size", "Root hash", "Checkpoint"],
                [
                    [
                        safe(log.get("origin")),
                        safe(log.get("size")),
                        f"<code>{safe(log.get('root'))}</code>",
                        '<a href="log/checkpoint">checkpoint</a> · <a href="log/vkey">vkey</a>',
                    ]
                ],
                "cpl-log",
            ),
            f"Checkpoint signed at the last publish, {safe(last.get('at', status.get('generated_at', '')))}.",
            "",
            "## Last publish",
            table(
                ["Time", "Accepted submissions", "Rejected submissions", "New CRLs"],
                [
                    [
                        safe(last.get("at", "")),
                        safe(", ".join(last.get("accepted", [])) or "none"),
                        safe(", ".join(last.get("rejected", [])) or "none"),
                        safe(", ".join(f"{k} #{v}" for k, v in last.get("crls", {}).items()) or "none"),
                    ]
                ],
            ),
            "",
            'Machine-readable: <a href="status.json">status.json</a>.',
        ]
    )


def issuer_page(name: str, meta: dict[str, object], revoked: list[dict[str, str]], archive: list[int]) -> str:
    """A CRL issuer's page: downloads, fingerprint, revoked certificates, CRL history."""
    rows = [
        [
            f"<code>{safe(r['serial'])}</code>",
            safe(r["revoked_at"]),
            safe(r["reason"]),
            safe(r.get("invalidity_date") or ""),
        ]
        for r in revoked
    ]
    history = [[f'<a href="../archive/{safe(name)}/{n}.crl">{n}</a>'] for n in sorted(archive, reverse=True)]
    return "\n".join(
        [
            f"# CRL of {safe(name)}",
            "",
            f"Current CRL number {safe(meta['number'])}, thisUpdate {safe(meta['this_update'])}, "
            f"nextUpdate {safe(meta['next_update'])}.",
            "",
            f'Downloads: <a href="../{safe(name)}.crl">DER</a> · '
            f'<a href="../{safe(name)}.pem">PEM</a> · <a href="../{safe(name)}.json">JSON</a>',
            "",
            f"SHA-256 of the CRL: <code>{safe(meta['sha256'])}</code><br>",
            f"SHA-256 of the issuer certificate: <code>{safe(meta['issuer_fingerprint'])}</code>",
            "",
            "## Revoked certificates",
            table(["Serial", "Revoked", "Reason", "Invalidity date"], rows) if rows else "None.",
            "## CRL history",
            table(["CRL number"], history),
        ]
    )


def firmware_pages(items: list[Association]) -> dict[str, str]:
    """Approved firmware: an index of manufacturers and their pages (``ROWS_PER_PAGE`` rows each)."""
    by_mfr: dict[str, list[Association]] = defaultdict(list)
    for a in items:
        by_mfr[a.field("device_model", "manufacturer_id")].append(a)
    pages: dict[str, str] = {}
    index_rows = []
    for mid in sorted(by_mfr):
        rows = by_mfr[mid]
        chunks = [rows[i : i + ROWS_PER_PAGE] for i in range(0, len(rows), ROWS_PER_PAGE)] or [[]]
        # A stable URL for IDs that are not plain letters and digits (hash() is salted per process).
        slug = mid if mid.isascii() and mid.isalnum() else "m-" + hashlib.sha256(mid.encode()).hexdigest()[:12]
        # The name from the manufacturer's certificate (checked at intake, re-checked by audit), never the
        # spreadsheet's free text: a manufacturer cannot title its page with another maker's name.
        name = rows[-1].field("manufacturer", "organisation")
        index_rows.append([f'<a href="{safe(slug)}/">{safe(mid)}</a>', safe(name), safe(len(rows))])
        for n, chunk in enumerate(chunks, 1):
            nav = " · ".join(
                f'<a href="../{"" if k == 1 else f"page-{k}/"}">{k}</a>' if k != n else f"<b>{k}</b>"
                for k in range(1, len(chunks) + 1)
            )
            body = table(
                [
                    "Log index",
                    "Model",
                    "Hardware",
                    "Firmware",
                    "Type",
                    "SMETS",
                    "Image SHA-256",
                    "Approved",
                    "Endorsed by",
                    "History",
                ],
                [_firmware_row(a) for a in chunk],
                "cpl-firmware",
            )
            path = f"firmware/{slug}/index.md" if n == 1 else f"firmware/{slug}/page-{n}/index.md"
            # The heading is raw HTML and the title fixed: a Markdown heading would render
            # Markdown inside a submitted name, and MkDocs puts heading text into <title> unescaped.
            pages[path] = "\n".join(
                [
                    "---",
                    f"title: Approved firmware, manufacturer page {len(pages) + 1}",
                    "search:",
                    "  exclude: true",
                    "---",
                    "",
                    f"<h1>{safe(name)} ({safe(mid)})</h1>",
                    "",
                    f"<p>Pages: {nav}</p>" if len(chunks) > 1 else "",
                    body,
                    OFFLINE_PROOF,
                ]
            )
    pages["firmware/index.md"] = "\n".join(
        [
            "# Approved firmware",
            "",
            "Every firmware hash the Panel associated with a device model, as logged. Each was submitted",
            "signed and endorsed, and passed the [submission rules](../submission-rules.md) before it was logged.",
            "Search by device model ID or by image hash (a full SHA-256 or its first 4+ hex digits):",
            "",
            '<div class="cpl-search"><input id="cpl-search" type="search" autocomplete="off" '
            'placeholder="model ID or image hash" aria-label="Search firmware">'
            '<div id="cpl-search-results" aria-live="polite"></div></div>',
            "",
            table(["Manufacturer ID", "Name", "Associations"], index_rows),
        ]
    )
    return pages


# Proofs are computed from the tiles, not published per entry (a file per entry grows the site with the log).
OFFLINE_PROOF = (
    "<p>To prove an entry offline (for example to ship with a firmware image), save its proof with the "
    "verifier: <code>cpl-verify inclusion --index N --save-proof N.tlog-proof</code>.</p>"
)


def _firmware_row(a: Association) -> list[str]:
    history = []
    rep = a.entry.get("replaces")
    if isinstance(rep, dict):
        history.append(f"replaces #{safe(rep.get('index'))} ({safe(rep.get('investigation_ref'))})")
    if a.replaced_by is not None:
        history.append(f"replaced by #{a.replaced_by}")
    return [
        str(a.index),
        safe(a.field("device_model", "model_id")),
        safe(a.field("device_model", "hardware_version")),
        safe(a.field("device_model", "firmware_version")),
        safe(a.field("device_type")),
        safe(a.field("smets_version")),
        f"<code>{safe(a.field('image_sha256'))}</code>",
        safe(a.field("approved_at")),
        safe(a.field("endorser", "organisation")),
        "<br>".join(history) or "current",
    ]


def search_shards(items: list[Association]) -> dict[str, bytes]:
    """Search data for the firmware search box, sharded so one search fetches one small file.

    ``search/hash/<2 hex>.json``: rows by image hash prefix; ``search/model/<2 hex>.json``:
    rows by SHA-256 of the lower-cased model ID (exact, case-insensitive model search).
    """
    shards: dict[str, list[list[object]]] = defaultdict(list)
    for a in items:
        row: list[object] = [
            a.index,
            a.field("device_model", "manufacturer_id"),
            a.field("manufacturer", "organisation"),
            a.field("device_model", "model_id"),
            a.field("device_model", "hardware_version"),
            a.field("device_model", "firmware_version"),
            a.field("device_type"),
            a.field("smets_version"),
            a.field("image_sha256"),
            a.field("approved_at"),
            a.replaced_by,
        ]
        shards[f"search/hash/{a.field('image_sha256')[:2]}.json"].append(row)
        key = hashlib.sha256(a.field("device_model", "model_id").lower().encode()).hexdigest()[:2]
        shards[f"search/model/{key}.json"].append(row)
    return {k: json.dumps(v, separators=(",", ":")).encode() for k, v in shards.items()}


def log_page(checkpoint: str, vkey: str, recent: list[Association]) -> str:
    """The log page: checkpoint, key, how proofs work, recent entries."""
    rows = [
        [
            str(a.index),
            safe(a.field("device_model", "manufacturer_id")),
            safe(a.field("device_model", "model_id")),
            f"<code>{safe(a.field('image_sha256'))}</code>",
        ]
        for a in recent
    ]
    return "\n".join(
        [
            "# The transparency log",
            "",
            "An append-only Merkle log (RFC 9162 hashing) stored as [C2SP tlog-tiles](https://c2sp.org/tlog-tiles),",
            "with checkpoints signed as [C2SP signed notes](https://c2sp.org/signed-note) (Ed25519).",
            "",
            "## Current checkpoint",
            f'<pre class="cpl-checkpoint">{safe_block(checkpoint)}</pre>',
            "",
            "## Verifier key",
            f"<pre>{safe(vkey.strip())}</pre>",
            "Pin this key from a source you trust (not only this page), then check any proof with it.",
            "",
            "## How proofs work",
            "The [verifier](verify.md) proves an entry's inclusion, and the consistency of two checkpoints, from",
            "the tiles under `/log/tile/`, so nobody can remove or rewrite an entry without it showing.",
            "`cpl-verify inclusion ... --save-proof FILE` saves an entry's proof as a",
            "[c2sp.org/tlog-proof](https://c2sp.org/tlog-proof) file: the entry, its index, the hashes that lead",
            "from it to the tree root and the signed checkpoint. Anyone holding it and the pinned key can check",
            "it offline.",
            "",
            "## Most recent associations",
            table(["Index", "Manufacturer", "Model", "Image SHA-256"], rows) if rows else "None yet.",
        ]
    )


def safe_block(text: str) -> str:
    """Escape a multi-line block, keeping its newlines."""
    return "\n".join(safe(line) for line in text.rstrip("\n").split("\n"))


def pki_page(anchors: list[tuple[str, str, str]], intermediates: list[tuple[str, str, str]]) -> str:
    """Trust anchors and CA certificates: name, subject, SHA-256 fingerprint."""

    def rows(items: list[tuple[str, str, str]]) -> list[list[str]]:
        return [[f'<a href="{safe(n)}.pem">{safe(n)}.pem</a>', safe(s), f"<code>{safe(f)}</code>"] for n, s, f in items]

    return "\n".join(
        [
            "# PKI",
            "",
            "Pin the IKI root by its SHA-256 fingerprint, obtained from the DCC through a channel you trust.",
            "",
            "## Trust anchors (IKI root ICA)",
            table(["Certificate", "Subject", "SHA-256"], rows(anchors)),
            "## Issuing CAs",
            table(["Certificate", "Subject", "SHA-256"], rows(intermediates)),
        ]
    )


RULES_PAGE = "submission-rules.md"


def rules_page(rules: Iterable[Rule]) -> str:
    """The CPL submission rules (the verifier's ``RULES``, in order): stable ID, clause, what it requires."""
    rows = [[f'<code id="{safe(r.id)}">{safe(r.id)}</code>', safe(r.clause), safe(r.statement)] for r in rules]
    return "\n".join(
        [
            "# Submission rules",
            "",
            "The rules every CPL submission must meet: SEC Appendix Z 4.1 to 4.3, the MP168 endorsement and",
            "input hygiene. The publisher's intake checks a submission against all of them before anything is",
            "logged, and [`cpl-verify audit`](verify.md) checks every logged entry against the same rules, from",
            "the same table in the [verifier](verify/download.md). Each rule keeps its ID: a rejection report",
            "(`rejection.txt`, and `rejection.json`, whose findings name it under `rule`) and the findings of",
            "`cpl-verify audit` quote these IDs.",
            "",
            table(["ID", "Clause", "What it requires"], rows, "cpl-rules"),
            "## Check a submission before you submit it",
            "",
            "Manufacturers can get intake's verdict on a submission folder first, with the pinned trust file",
            "of the [verification guide](verify.md) and this site's URL:",
            "",
            "```sh",
            "cpl-verify check-submission DIR --trust trust.json --site URL",
            "```",
            "",
            "(`python cpl_verify.py check-submission ...` with the downloaded file.) It applies these rules to the",
            "folder against the log and CRLs this site publishes, and names every rule the folder breaks by its ID.",
        ]
    )
