"""The check page, ``/check/``: a firmware file checked against the log in the browser (issue #15). Pure.

The page's scripts (``site_src/javascripts/tlog.js``, ``check.js`` and the vendored SHA-256 of
``@noble/hashes``) verify the checkpoint, its cosignatures, the inclusion proofs and the lookup as
``verifier/cpl_verify.py`` does. The log's key and the witness policy are built into the page here, as
data attributes (no inline script), from the publication the site is built from; the verify/download
page lists the scripts' SHA-256 (``script_digests``).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from pathlib import Path

from publisher.site.pages import RAW_HTML_MARKER, RAW_HTML_PLACEHOLDER
from verifier.cpl_verify import Policy, PolicyWitness, Verifier

CHECK_PAGE = "check.md"
ENTRY_PAGE = "entry.md"
NOBLE = "vendor/noble-hashes-2.4.0"
#: What the page runs, relative to the site (and to ``site_src``): check.js imports the others.
SCRIPTS = (
    "javascripts/check.js",
    "javascripts/entry.js",
    "javascripts/tlog.js",
    f"{NOBLE}/sha2.js",
    f"{NOBLE}/_md.js",
    f"{NOBLE}/_u64.js",
    f"{NOBLE}/utils.js",
)


def client_policy(policy: Policy | None, log: Verifier) -> str | None:
    """The witness policy a client enforces, as a tlog-policy text: the log's key and the publisher's witnesses
    and quorum, without the witnesses' submission URLs (which only the log uses); None without witnesses."""
    if policy is None:
        return None
    witnesses = tuple(PolicyWitness(w.name, w.verifier) for w in policy.witnesses)
    return Policy(((log, None),), witnesses, policy.groups, policy.quorum).text()


def _attr(value: str) -> str:
    return html.escape(value, quote=True).replace("\n", "&#10;")


def check_page(origin: str, vkey: str, policy: str | None) -> str:
    """The page's Markdown: what it proves and what it cannot, then the raw HTML of the checker."""
    vkey = vkey.strip()
    quorum = (
        "and cosigned as this witness policy requires (the policy the verifier's trust file holds):"
        if policy
        else "(this log has no witnesses yet: the log's signature alone is checked)."
    )
    widget = "".join(
        [
            f'<div id="cpl-check" class="cpl-check" data-log="../log/" data-origin="{_attr(origin)}" '
            f'data-vkey="{_attr(vkey)}" data-policy="{_attr(policy or "")}">',
            '<p><label for="cpl-check-file"><strong>Firmware image:</strong></label> '
            '<input type="file" id="cpl-check-file"></p>',
            '<form id="cpl-check-hash-form"><label for="cpl-check-hash">or its SHA-256:</label> '
            '<input type="text" id="cpl-check-hash" size="66" autocomplete="off" spellcheck="false" '
            'placeholder="64 hex digits, sha256:HEX or a sha256sum line"> '
            '<button type="submit" class="md-button">Check</button></form>',
            '<p id="cpl-check-progress" aria-live="polite"></p>',
            '<div id="cpl-check-result" aria-live="polite"><p>Choose a file: its SHA-256 is computed here, in your '
            "browser; the file is never uploaded.</p></div>",
            '<div id="cpl-check-log"></div>',
            '<p><button type="button" id="cpl-check-forget" class="md-button">Forget the remembered checkpoint'
            "</button></p>",
            "</div>",
            "<noscript><p><strong>This page needs JavaScript.</strong> Without it, check the file with the Python "
            'verifier (<a href="../verify/">verification guide</a>).</p></noscript>',
            '<script type="module" src="../javascripts/check.js"></script>',
        ]
    )
    return "\n".join(
        [
            "---",
            'title: "Check a firmware file"',
            "---",
            "",
            "# Check a firmware file",
            "",
            "Choose a Manufacturer Image: this page computes its SHA-256 in your browser (the file is read in",
            "pieces and never leaves your computer) and asks the log whether that hash is on the Central Products",
            "List: **approved and current** (with the entry), **replaced** (with the entry that replaced it) or",
            "**not found**. Every answer is proved from the log's signed files, the same way the",
            "[Python verifier](verify.md) proves it.",
            "",
            RAW_HTML_PLACEHOLDER,
            "",
            "## What this page proves",
            "",
            "The log's **checkpoint** must be signed by the log key built into this page,",
            f'<code class="cpl-check-key">{html.escape(vkey)}</code>, {quorum}',
            "",
            *([f'<pre class="cpl-key">{html.escape(policy.rstrip())}</pre>', ""] if policy else []),
            "- The log's last entry, its **lookup commitment**, is proved included under that checkpoint, and the",
            "  lookup file for your hash is checked against the commitment's Merkle root. So the list of log entries",
            "  holding your hash is complete: **not found** is a proof of absence, not a missing search result.",
            "- Each entry found is fetched and **proved included** (RFC 9162 inclusion proof from the log's tiles),",
            "  and so is every later entry for the same device model: **current** means no later association of",
            "  the model exists; **replaced** names the entry that replaced it.",
            "- This browser remembers the last checkpoint it verified (in its local storage, for this site only).",
            "  On your next visit the page proves the new checkpoint **extends** it (a consistency proof), and",
            "  fails loudly if the log forked or rolled back.",
            "",
            "## What it cannot prove",
            "",
            "- The key and the policy above come from this site, with the page. If the site itself were altered,",
            "  the page could be too, key included. **For an independent check, pin the log's key from a source",
            "  you trust and run the [Python verifier](verify.md)**: `cpl-verify inclusion --file IMAGE`.",
            "  The SHA-256 of this page's scripts is published on the [download page](verify/download.md).",
            "- It does not check the signers' certificates against the CRLs (whether the manufacturer's or the",
            "  endorser's key was revoked before the approval); the Python verifier does.",
            "- A checkpoint remembered in this browser protects only later visits from this browser.",
            "",
            RAW_HTML_MARKER,
            widget,
        ]
    )


def entry_page(origin: str, vkey: str, policy: str | None) -> str:
    """``/entry/?i=<log index>``: one entry, proved in the browser (``entry.js``), with its history, evidence,
    signers and offline proof. One page for every entry: the site keeps no file per entry (it grows with the
    tiles, not with the entries), so the index is in the address's query."""
    widget = (
        f'<div id="cpl-entry" data-log="../log/" data-origin="{_attr(origin)}" data-vkey="{_attr(vkey.strip())}" '
        f'data-policy="{_attr(policy or "")}"><div id="cpl-entry-result" aria-live="polite" aria-busy="true">'
        "<p>Proving the entry…</p></div></div>"
        "<noscript><p><strong>This page needs JavaScript.</strong> Without it: "
        "<code>cpl-verify inclusion --index N</code> (see the verification guide).</p></noscript>"
        '<script type="module" src="../javascripts/entry.js"></script>'
    )
    return "\n".join(
        [
            "---",
            'title: "Log entry"',
            "---",
            "",
            "# Log entry",
            "",
            "The entry whose log index ends this page's address (`?i=<index>`), proved included in the log's",
            "signed checkpoint in your browser, as on the [check page](check.md) (what that proves, and what it",
            "cannot, is said there).",
            "",
            RAW_HTML_PLACEHOLDER,
            "",
            RAW_HTML_MARKER,
            widget,
        ]
    )


def script_digests(docs: Path, scripts: Sequence[str] = SCRIPTS) -> list[tuple[str, str]]:
    """``(path, SHA-256)`` of each script the check page runs, read from the site's sources."""
    return [(rel, hashlib.sha256((docs / rel).read_bytes()).hexdigest()) for rel in scripts if (docs / rel).is_file()]


def digests_section(digests: Sequence[tuple[str, str]]) -> list[str]:
    """The download page's lines naming the check page's scripts and their SHA-256."""
    if not digests:
        return []
    rows = "".join(
        f'<tr><td><a href="../../{html.escape(rel)}"><code>{html.escape(rel)}</code></a></td>'
        f'<td><code class="cpl-hash">{digest}</code></td></tr>'
        for rel, digest in digests
    )
    return [
        "",
        "## The check page's scripts",
        "",
        "Besides the scripts every page of the site loads, the [check page](../check.md) and the entry page run",
        "these files. The",
        f"four under `{NOBLE}/` are the SHA-256 implementation of `@noble/hashes` 2.4.0 (MIT licence), unchanged",
        "from its npm package. The SHA-256 of each:",
        "",
        f'<div class="cpl-table cpl-check-scripts"><table><thead><tr><th>File</th><th>SHA-256</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>",
        "",
        "Check them with `sha256sum` on the downloaded files. They prove what the page does, not that the page you",
        "were served runs them: the Python verifier remains the independent check.",
    ]
