"""The generated pages of the site, as Markdown with raw-HTML tables. Pure: state in, text out.

Every string that came from a submission or a certificate is HTML-escaped
(after control and bidi characters are stripped) inside raw-HTML tables,
never put into a Markdown table: Markdown links, attribute lists and pipes
in names would otherwise be live.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable

from publisher.site import charts, feeds
from publisher.site.state import (
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
    R_REPLACED_BY,
    R_REPLACES,
    R_SIGNERS,
    R_SMETS,
    R_TYPE,
    Maker,
    Row,
)
from verifier.cpl_verify import Rule, Witnessing
from verifier.cpl_verify import clean_cell as clean


def safe(value: object) -> str:
    """Text for HTML: control and bidi characters removed, then escaped (quotes too)."""
    return html.escape(clean(str(value)), quote=True)


def table(headers: list[str], rows: Iterable[list[str]], css: str = "") -> str:
    """A raw-HTML table block that becomes one card per row on a phone (each cell labelled with its header);
    cells must already be safe HTML. The table's own class keeps Material's scrolling wrapper off it."""
    head = "".join(f'<th scope="col">{h}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td data-label="{h}">{c}</td>' for h, c in zip(headers, row, strict=True)) + "</tr>"
        for row in rows
    )
    return (
        f'\n<div class="cpl-table {css}"><table class="cpl-grid"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>\n"
    )


def _time(value: object) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _fresh(meta: dict[str, object], now: dt.datetime) -> str:
    """The CRL's status as of ``now`` (the build); status.js recomputes it when the page is viewed."""
    next_update = str(meta["next_update"])
    if _time(next_update) > now:
        text, css = "fresh", "cpl-ok"
    else:
        text, css = "EXPIRED: do not rely on it", "cpl-bad"
    return f'<span class="cpl-status {css}" data-cpl-next-update="{safe(next_update)}">{text}</span>'


LATE_FACTOR = 1.25  # a publish is late past its interval plus a quarter (a daily job: 30 h); status.js agrees


def _late(at: str, hours: float, now: dt.datetime) -> str:
    """The last publish's age as of ``now``; LATE past the schedule (status.js recomputes it when viewed)."""
    if not at:
        return '<span class="cpl-status cpl-bad">never published</span>'
    age = now - _time(at)
    late = age > dt.timedelta(hours=hours * LATE_FACTOR)
    text, css = ("LATE: the publish job has not run on schedule", "cpl-bad") if late else ("on schedule", "cpl-ok")
    return (
        f'<span class="cpl-status {css}" data-cpl-published="{safe(at)}" data-cpl-interval-hours="{hours:g}">'
        f"{text}</span>"
    )


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
            f'{safe(meta["next_update"])} <span class="cpl-until" data-cpl-until="{safe(meta["next_update"])}"></span>',
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
            feeds.visible_links([feeds.APPROVALS, feeds.REVOCATIONS, feeds.CRLS], ""),
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
            f"Checkpoint signed at the last publish, {safe(last.get('at', status.get('generated_at', '')))}"
            '<span class="cpl-checkpoint-age" data-cpl-checkpoint-age></span>.',
            "",
            "## Last publish",
            table(
                ["Time", "Schedule", "Accepted submissions", "Rejected submissions", "New CRLs"],
                [
                    [
                        safe(last.get("at", ""))
                        + f' <span class="cpl-ago" data-cpl-ago="{safe(last.get("at", ""))}"></span>',
                        _late(str(last.get("at", "")), float(str(status.get("publish_interval_hours", 24))), now),
                        safe(", ".join(last.get("accepted", [])) or "none"),
                        safe(", ".join(last.get("rejected", [])) or "none"),
                        safe(", ".join(f"{k} #{v}" for k, v in last.get("crls", {}).items()) or "none"),
                    ]
                ],
            ),
            "",
            f'<p class="cpl-as-of" data-cpl-as-of="{safe(now.strftime("%Y-%m-%dT%H:%M:%SZ"))}">'
            f"Status as of the last publish, {safe(now.strftime('%Y-%m-%d %H:%M:%S'))} UTC. With scripts on, "
            "your browser recomputes it from the published data when you view the page.</p>",
            "",
            'Machine-readable: <a href="status.json">status.json</a>. These dates are what the site says: the '
            "[verifier](verify.md) checks the CRLs' own signed dates and the log's signed checkpoint.",
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


# What people came for first: is it current, and who endorsed it; then the model, when, and where in the log.
# The image hash has a row of its own, in full on one line (site_src/javascripts/search.js builds the same).
FIRMWARE_HEADERS = ["Status", "Endorsed by", "Device model", "Approved (UTC)", "Log index"]


def chunk_page_path(maker: Maker, n: int) -> str:
    """Where a manufacturer's chunk ``n`` is shown: its newest chunk on its own page, older ones as pages."""
    last = len(maker.starts) - 1
    return f"firmware/{maker.slug}/index.md" if n == last else f"firmware/{maker.slug}/page-{n + 1}/index.md"


def _title_text(name: str) -> str:
    """A submitted name reduced to what a browser title may safely carry: letters, digits, spaces and a few
    marks (MkDocs copies the title into ``<title>`` and the YAML front matter unescaped)."""
    kept = "".join(c for c in clean(name) if c.isalnum() or c in " .,&'()-")
    return " ".join(kept.split())[:60] or "Manufacturer"


def chunk_page(mid: str, maker: Maker, n: int, rows: list[Row]) -> str:
    """One page of a manufacturer's associations (``ROWS_PER_PAGE`` rows, oldest first).

    The newest chunk is the manufacturer's own page, with links to every older page; an older page
    links only to its neighbours, so a publish rewrites the pages it adds rows to, not all of them."""
    last = len(maker.starts) - 1
    first, end = rows[0][R_INDEX] if rows else 0, rows[-1][R_INDEX] if rows else 0
    if n == last:
        older = " · ".join(f'<a href="page-{k + 1}/">{maker.starts[k]}…</a>' for k in range(last))
        nav = f"<p>Older associations, by first log index: {older}</p>" if last else ""
        heading = f"<h1>{safe(maker.name)} ({safe(mid)})</h1>"
        title = f"{_title_text(maker.name)} ({maker.slug}): approved firmware"
    else:
        newer = "../" if n + 1 == last else f"../page-{n + 2}/"
        back = f'<a href="../page-{n}/">older</a> · ' if n > 0 else ""
        nav = f'<p>{back}<a href="{newer}">newer</a> · <a href="../">{safe(maker.name)}: newest</a></p>'
        heading = f"<h1>{safe(maker.name)} ({safe(mid)}): log indices {first} to {end}</h1>"
        title = f"{_title_text(maker.name)} ({maker.slug}): approved firmware, page {n + 1}"
    # The heading is raw HTML and the title built from the slug (letters, digits, a hash): a Markdown
    # heading would render Markdown inside a submitted name, and MkDocs puts heading text into <title>.
    return "\n".join(
        [
            "---",
            f'title: "{title}"',  # quoted: a colon inside would end the YAML value
            "---",
            "",
            heading,
            "",
            f"<p>{maker.count} associations in all.</p>" if n == last else "",
            nav,
            RAW_HTML_PLACEHOLDER,
            "",
            OFFLINE_PROOF,
            RAW_HTML_MARKER,
            firmware_table(rows, up="../../" if n == last else "../../../"),
        ]
    )


# A page's HTML block that Markdown need not parse (a table of a thousand escaped rows is most of the build
# time): the page's Markdown ends at RAW_HTML_MARKER, the block follows it, and the hooks put it in place of
# RAW_HTML_PLACEHOLDER's paragraph after Markdown has run (``split_raw_html``, ``join_raw_html``).
RAW_HTML_MARKER = "<!-- cpl:raw-html -->"
RAW_HTML_PLACEHOLDER = "CPL-RAW-HTML-BLOCK"


def split_raw_html(markdown: str) -> tuple[str, str | None]:
    """A page's Markdown and the raw HTML block after its marker (None when it has none)."""
    head, marker, raw = markdown.partition("\n" + RAW_HTML_MARKER + "\n")
    return (head, raw) if marker else (markdown, None)


def join_raw_html(html: str, raw: str) -> str:
    """The rendered page with the raw HTML block where its placeholder paragraph is."""
    rendered = f"<p>{RAW_HTML_PLACEHOLDER}</p>"
    if html.count(rendered) != 1:
        raise ValueError("a page with a raw HTML block must render its placeholder exactly once")
    return html.replace(rendered, raw)


def firmware_index(makers: dict[str, Maker]) -> str:
    """Approved firmware: the search box and every manufacturer with its count."""
    rows = [
        [f'<a href="{safe(m.slug)}/">{safe(mid)}</a>', safe(m.name), safe(m.count)] for mid, m in sorted(makers.items())
    ]
    return "\n".join(
        [
            "# Approved firmware",
            "",
            "Every firmware hash the Panel associated with a device model, as logged. Each was submitted",
            "signed and endorsed, and passed the [submission rules](../submission-rules.md) before it was logged.",
            "Search by manufacturer name or ID, device model ID, image hash (a full SHA-256 or its first 4+ hex",
            "digits), Panel reference or submission ID:",
            "",
            '<div class="cpl-search"><input id="cpl-search" type="search" autocomplete="off" '
            'placeholder="manufacturer, model, image hash, Panel reference or submission ID" '
            'aria-label="Search firmware">'
            '<div id="cpl-search-results" aria-live="polite"></div></div>',
            "",
            table(["Manufacturer ID", "Name", "Associations"], rows),
        ]
    )


# Proofs are computed from the tiles, not published per entry (a file per entry grows the site with the log).
OFFLINE_PROOF = (
    "<p>To prove an entry offline (for example to ship with a firmware image), save its proof with the "
    "verifier: <code>cpl-verify inclusion --index N --save-proof N.tlog-proof</code>.</p>"
)


def firmware_table(rows: Iterable[Row], up: str, with_maker: bool = False) -> str:
    """Associations as a table that becomes cards on a phone: one ``tbody`` each, a row of what people look
    for first and a row with the full image hash and a copy button (shown when scripts run); ``with_maker``:
    the manufacturer too (where rows of several are shown); ``up``: the way from the page to the site's root
    (each log index links to its entry page)."""
    head = "".join(f'<th scope="col">{h}</th>' for h in FIRMWARE_HEADERS)
    return (
        f'\n<div class="cpl-firmware"><table class="cpl-assoc-table"><thead><tr>{head}</tr></thead>'
        + "".join(_association(r, up, with_maker) for r in rows)
        + "</table></div>\n"
    )


def _association(r: Row, up: str, with_maker: bool) -> str:
    if r[R_REPLACED_BY] is not None:
        status = f'<span class="cpl-bad">replaced</span> by #{safe(r[R_REPLACED_BY])}'
    else:
        status = '<span class="cpl-ok">current</span>'
    if r[R_REPLACES] is not None:
        status += f"<br>replaces #{safe(r[R_REPLACES])} ({safe(r[R_INVESTIGATION])})"
    model = " · ".join(
        [
            f"<strong>{safe(r[R_MODEL])}</strong>",
            f"hw {safe(r[R_HARDWARE])}",
            f"fw {safe(r[R_FIRMWARE])}",
            safe(r[R_TYPE]),
            safe(r[R_SMETS]),
        ]
        + ([f"{safe(r[R_ORG])} ({safe(r[R_MID])})"] if with_maker else [])
    )
    cells = [
        status,
        safe(r[R_ENDORSER]),
        model,
        safe(str(r[R_APPROVED]).replace("T", " ").rstrip("Z")),
        f'<a href="{up}entry/?i={safe(r[R_INDEX])}">{safe(r[R_INDEX])}</a>',
    ]
    # Labels for the cards come from the stylesheet and copy buttons from copy.js: a thousand rows a page.
    first = "".join(f"<td>{c}</td>" for c in cells)
    hash_row = f'<td colspan="{len(FIRMWARE_HEADERS)}"><code class="cpl-hash">{safe(r[R_HASH])}</code></td>'
    # signers.js marks the status of an association whose signer's certificate was revoked since (or before).
    signers = " ".join(safe(s) for s in (r[R_SIGNERS] if len(r) > R_SIGNERS else []))
    return (
        f'<tbody class="cpl-assoc" data-signers="{signers}" data-approved="{safe(r[R_APPROVED])}">'
        f'<tr>{first}</tr><tr class="cpl-hash-row">{hash_row}</tr></tbody>'
    )


def witnesses_section(w: Witnessing | None) -> list[str]:
    """Who cosigned the current checkpoint and when, against the policy's quorum."""
    if w is None:
        return ["## Witnesses", "This log's checkpoints are signed by the log alone: no witness is configured.", ""]
    rows = [[safe(c.name), f"<code>{safe(c.vkey)}</code>", safe(c.to_json()["time"])] for c in w.cosigned]
    verdict = (
        f"The witness quorum, {safe(w.quorum)}, is **met**."
        if w.satisfied
        else f"**Below the witness quorum** ({safe(w.quorum)}): no cosignature yet from {safe(', '.join(w.missing))}. "
        "Clients that enforce the policy refuse this checkpoint until the cosignatures arrive."
    )
    return [
        "## Witnesses",
        "Independent witnesses cosign a checkpoint ([C2SP tlog-cosignature](https://c2sp.org/tlog-cosignature))",
        "only after checking it extends every checkpoint of this log they cosigned before, so the log cannot",
        "show different histories to different people. The verifier requires the quorum in its trust file's",
        "policy ([C2SP tlog-policy](https://c2sp.org/tlog-policy)).",
        "",
        table(["Witness", "Key", "Cosigned at (UTC)"], rows) if rows else "No witness has cosigned it yet.",
        "",
        verdict,
        "",
    ]


def history_charts(months: dict[str, list[int]]) -> list[str]:
    """The log's size and the approvals, month by month (every month from the first, gaps shown as zero)."""
    if not months:
        return []
    labels = _month_range(min(months), max(months))
    size, sizes = 0, []
    for m in labels:
        size = months.get(m, [0, size])[1] or size
        sizes.append(size)
    return [
        "## The log over time",
        charts.line_chart(
            "log-size", "Log size (entries) at the end of each month", labels, {"entries": sizes}, "entries"
        ),
        charts.bar_chart(
            "approvals", "Approvals per month", [(m, months.get(m, [0, 0])[0]) for m in labels], "approvals"
        ),
    ]


def revocation_chart(revoked: dict[str, list[str]]) -> list[str]:
    """How many certificates each issuer's CRL lists, at the end of each month (revocations are final, so
    the count only grows). ``revoked``: issuer -> the revocation dates (RFC 3339)."""
    dates = [d[:7] for ds in revoked.values() for d in ds]
    if not dates:
        return []
    labels = _month_range(min(dates), max(dates))
    series = {issuer: [sum(d[:7] <= m for d in ds) for m in labels] for issuer, ds in sorted(revoked.items())}
    return [
        "## Revocations over time",
        charts.line_chart("revoked", "Certificates on each CRL, by month", labels, series, "revoked"),
    ]


def _month_range(first: str, last: str) -> list[str]:
    """Every "YYYY-MM" from ``first`` to ``last``."""
    year, month = int(first[:4]), int(first[5:7])
    out: list[str] = []
    while f"{year:04d}-{month:02d}" <= last and len(out) < 1200:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def log_page(
    checkpoint: str,
    vkey: str,
    recent: list[Row],
    witnessing: Witnessing | None = None,
    months: dict[str, list[int]] | None = None,
) -> str:
    """The log page: checkpoint, its witnesses, key, how proofs work, the log over time, recent entries."""
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
            *witnesses_section(witnessing),
            "## Verifier key",
            f'<pre class="cpl-key">{safe(vkey.strip())}</pre>',
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
            *history_charts(months or {}),
            "## Most recent associations",
            firmware_table(recent, "../", with_maker=True) if recent else "None yet.",
        ]
    )


def safe_block(text: str) -> str:
    """Escape a multi-line block, keeping its newlines."""
    return "\n".join(safe(line) for line in text.rstrip("\n").split("\n"))


def pki_page(
    anchors: list[tuple[str, str, str]],
    intermediates: list[tuple[str, str, str]],
    revoked: dict[str, list[str]] | None = None,
) -> str:
    """Trust anchors and CA certificates: name, subject, SHA-256 fingerprint; revocations over time."""

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
            *revocation_chart(revoked or {}),
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
