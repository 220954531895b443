"""The check page (/check/, issue #15) in Debian's Chromium: a firmware file hashed in the browser and checked
against the log as ``cpl-verify inclusion --file`` checks it.

The demo's sample images give ``current``, ``replaced`` and ``not-found``; copies of the site with a tampered
hash tile, entry bundle or checkpoint signature, or a checkpoint below the witness quorum, give ``failed``. The
checkpoint remembered in the browser is proved extended on the next visit; a fork fails loudly, an older
checkpoint served (a cache) is proved a prefix of the remembered one. No request leaves 127.0.0.1, every
request is a GET, and the file is never sent. The scripts' digests on the download page are the served files'.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from site_fixtures import SiteBuild, demo_site, serve
from test_browser import Watched, browser

from publisher.config import load as load_config
from publisher.site.check_page import SCRIPTS
from publisher.tlog.checkpoint import Checkpoint
from publisher.tlog.note import Signer, sign_note
from publisher.tlog.signer import load_log_signer
from verifier.cpl_verify import (
    CheckpointError,
    Cosigner,
    ForgedCheckpoint,
    ForgedCosignature,
    NoLogSignature,
    NoteError,
    PolicyError,
    ProofError,
    UntrustedCheckpoint,
    UsageError,
    Verifier,
    WrongOrigin,
    b64decode_strict,
    b64encode,
    consistency_proof,
    inclusion_proof,
    list_hash_range,
    model_lookup_key,
    open_checkpoint,
    parse_image_hash,
    parse_policy,
    parse_unverified,
    root_of,
    verify_consistency,
    verify_inclusion,
)

__all__ = ["browser", "demo_site"]

VERDICTS = ("current", "replaced", "mixed", "not-found", "failed")
STORE = "cpl-check/checkpoint/"


def sample(site: SiteBuild, prefix: str) -> Path:
    """The demo's first sample image whose file name starts with ``prefix``."""
    return next(Path(p) for p in sorted(site.info["firmware"]) if Path(p).name.startswith(prefix))


class CheckPage:
    """The check page of a served site in one browser context (its local storage lives as long as it)."""

    def __init__(self, browser: Any, url: str) -> None:
        self.url = urljoin(url, "check/")
        self.watched = Watched(browser)
        self.page = self.watched.page
        self.posts: list[str] = []  # every request that is not a GET, or carries a body
        self.page.on("request", self._request)

    def _request(self, request: Any) -> None:
        if request.method != "GET" or request.post_data_buffer:
            self.posts.append(f"{request.method} {request.url}")

    def open(self) -> None:
        response = self.page.goto(self.url)
        assert response is not None and response.ok
        self.page.wait_for_selector("#cpl-check[data-ready='true']", timeout=10_000)

    def check(self, file: Path) -> str:
        """Choose ``file``; the verdict once the page has reached one."""
        self.page.locator("#cpl-check-result").evaluate("e => e.setAttribute('data-verdict', '')")
        self.page.set_input_files("#cpl-check-file", str(file))
        return self.verdict()

    def verdict(self) -> str:
        self.page.wait_for_function(
            "v => v.includes(document.querySelector('#cpl-check-result').getAttribute('data-verdict'))",
            arg=list(VERDICTS),
            timeout=30_000,
        )
        return str(self.page.get_attribute("#cpl-check-result", "data-verdict"))

    def text(self) -> str:
        return str(self.page.inner_text("#cpl-check-result"))

    def consistency(self) -> tuple[str | None, str]:
        return self.page.get_attribute("#cpl-check-log", "data-consistency"), self.page.inner_text("#cpl-check-log")

    def remember(self, origin: str, checkpoint: str) -> None:
        """Seed the checkpoint this browser remembers for the log, as a last visit would have."""
        self.page.evaluate("([k, v]) => localStorage.setItem(k, v)", [STORE + origin, checkpoint])

    def remembered(self, origin: str) -> str | None:
        value = self.page.evaluate("k => localStorage.getItem(k)", STORE + origin)
        return None if value is None else str(value)

    def close(self) -> None:
        problems = [*self.watched.foreign(), *self.posts, *self.watched.dialogs]
        self.watched.context.close()
        assert not problems, problems


@pytest.fixture()
def check_page(browser: Any, demo_site: SiteBuild) -> Iterator[CheckPage]:
    page = CheckPage(browser, demo_site.url)
    try:
        page.open()
        yield page
    finally:
        page.close()


def origin_of(site: SiteBuild) -> str:
    return parse_unverified((site.site / "log" / "checkpoint").read_text()).origin


def older_checkpoint(site: SiteBuild) -> str:
    """An older checkpoint the log signed (from the publication's git history): a tree the current one extends."""
    size = parse_unverified((site.site / "log" / "checkpoint").read_text()).size
    revs = subprocess.run(
        ["git", "-C", str(site.publication), "rev-list", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.split()
    for rev in revs:
        text = subprocess.run(
            ["git", "-C", str(site.publication), "show", f"{rev}:log/checkpoint"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if text and 1 < parse_unverified(text).size < size:
            return text
    raise AssertionError("the demo's history has no older checkpoint")


def forged_checkpoint(site: SiteBuild, size: int) -> str:
    """A checkpoint of ``size`` over a tree the log does not hold, signed with the log's own key: a fork."""
    config = load_config(site.publication)
    signer = load_log_signer(config.log_key, config.root)
    return sign_note(Checkpoint(config.origin, size, hashlib.sha256(b"another history").digest()).body(), [signer])


def test_demo_images_get_their_verdicts(check_page: CheckPage, demo_site: SiteBuild) -> None:
    current = sample(demo_site, "current-acme")
    assert check_page.check(current) == "current"
    text = check_page.text()
    digest = hashlib.sha256(current.read_bytes()).hexdigest()
    assert digest in text and "APPROVED AND CURRENT" in text
    # The entry's fields, the checkpoint's size and who cosigned it.
    for field in ("ESME-100", "Acme Meters Ltd (ID 1001)", "Northern Power Supply (ID 2001, Supplier)", "S025",
                  "PANEL-S025", "Approved (UTC)", "Log index"):  # fmt: skip
        assert field in text, field
    assert check_page.page.get_attribute(".cpl-check-entry", "data-entry-verdict") == "current"
    size = demo_site.info["size"]
    assert f"checkpoint of size {size}" in text
    assert "Cosigned by secas" in text and "ssc" in text and "all of (secas, ssc), is met" in text
    kind, log = check_page.consistency()
    assert kind == "first" and f"size {size}" in log, log

    assert check_page.check(sample(demo_site, "replaced-")) == "replaced"
    text = check_page.text()
    index = int(check_page.page.get_attribute(".cpl-check-entry", "data-index") or "-1")
    m = re.search(r"replaced by log index (\d+)", text)
    assert m and int(m.group(1)) > index, text
    assert f"The entry that replaced it, log index {m.group(1)}" in text and "INV-2026-007" in text

    assert check_page.check(sample(demo_site, "unknown-")) == "not-found"
    text = check_page.text()
    assert "This absence is proved" in text and "signed lookup commitment" in text, text

    assert check_page.check(sample(demo_site, "current-brightwater")) == "current"
    assert check_page.consistency()[0] == "same"  # the page remembered the checkpoint it verified first


def test_the_hash_is_streamed_and_agrees_with_webcrypto(check_page: CheckPage, tmp_path: Path) -> None:
    # The vendored SHA-256, fed in uneven pieces, against the browser's own, for sizes around block boundaries.
    mismatches = check_page.page.evaluate(
        """async () => {
            const { sha256 } = await import('../vendor/noble-hashes-2.4.0/sha2.js');
            const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
            const bad = [];
            for (const n of [0, 1, 55, 56, 63, 64, 65, 1000, 65536, 1048577]) {
                const data = new Uint8Array(n).map((_, i) => (i * 31 + n) & 255);
                const h = sha256.create();
                for (let pos = 0, step = 1; pos < n; pos += step, step = step * 3 + 1) {
                    h.update(data.subarray(pos, pos + step));
                }
                const ours = hex(h.digest());
                const theirs = hex(new Uint8Array(await crypto.subtle.digest('SHA-256', data)));
                if (ours !== theirs) { bad.push([n, ours, theirs]); }
            }
            return bad;
        }"""
    )
    assert mismatches == []
    # A file larger than the page's 4 MiB pieces: the digest shown is the file's (and it is not in the log).
    big = tmp_path / "big-image.bin"
    big.write_bytes(random.Random(15).randbytes(9 * 1024 * 1024 + 123))
    assert check_page.check(big) == "not-found"
    assert hashlib.sha256(big.read_bytes()).hexdigest() in check_page.text()


def test_a_pasted_hash_is_checked_too(check_page: CheckPage, demo_site: SiteBuild) -> None:
    digest = hashlib.sha256(sample(demo_site, "current-acme").read_bytes()).hexdigest()
    check_page.page.fill("#cpl-check-hash", f"{digest.upper()}  firmware.bin")
    check_page.page.click("#cpl-check-hash-form button")
    assert check_page.verdict() == "current"


def tamper_tile(site: Path) -> str:
    cp = parse_unverified((site / "log" / "checkpoint").read_text())
    path = site / "log" / "tile" / "0" / (f"000.p/{cp.size}" if cp.size < 256 else "000")
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01
    path.write_bytes(bytes(data))
    return "do not lead to the signed root"


def tamper_bundle(site: Path) -> str:
    cp = parse_unverified((site / "log" / "checkpoint").read_text())
    path = site / "log" / "tile" / "entries" / (f"000.p/{cp.size}")
    data = path.read_bytes()
    assert data.count(b"PANEL-S025") == 1
    path.write_bytes(data.replace(b"PANEL-S025", b"PANEL-S052"))
    return "does not match the log: entry"


def tamper_signature(site: Path) -> str:
    path = site / "log" / "checkpoint"
    text = path.read_text()
    origin = parse_unverified(text).origin
    line = next(x for x in text.splitlines() if x.startswith(f"\u2014 {origin} "))
    sig = line.rsplit(" ", 1)[1]
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    path.write_text(text.replace(line, line.rsplit(" ", 1)[0] + " " + flipped))
    return "does not verify"


def drop_cosignature(site: Path) -> str:
    path = site / "log" / "checkpoint"
    lines = path.read_text().splitlines(keepends=True)
    witness = [x for x in lines if x.startswith("\u2014 ssc.")]
    assert len(witness) == 1
    path.write_text("".join(x for x in lines if x not in witness))
    return "the witness policy needs all of (secas, ssc). Missing: ssc"


def _edit_shard(path: Path, edit: Any) -> None:
    table = json.loads(path.read_bytes())
    edit(table)
    path.write_bytes(json.dumps(table, sort_keys=True, separators=(",", ":")).encode())


def hide_hash(site: Path, image: str) -> str:
    """The image's entries taken out of its hash shard: "not found" would be a lie."""
    _edit_shard(site / "log" / "lookup" / "hash" / f"{image[:3]}.json", lambda t: t.pop(image))
    return "does not match the log's signed lookup commitment"


def hide_replacement(site: Path, image: str) -> str:
    """The replacing entry taken out of the model's shard: "current" would be a lie."""
    key = model_lookup_key("1001", "ESME-100", "1.0", "2.0")
    _edit_shard(site / "log" / "lookup" / "model" / f"{key[:3]}.json", lambda t: t[key].pop())
    return "does not match the log's signed lookup commitment"


@pytest.mark.parametrize(
    ("tamper", "image"),
    [
        (tamper_tile, "current-acme"),
        (tamper_bundle, "current-acme"),
        (tamper_signature, "current-acme"),
        (drop_cosignature, "current-acme"),
        (hide_hash, "current-acme"),
        (hide_replacement, "replaced-"),
    ],
)
def test_a_tampered_site_copy_fails(
    browser: Any, demo_site: SiteBuild, tmp_path: Path, tamper: Any, image: str
) -> None:
    copy = tmp_path / "site"
    shutil.copytree(demo_site.site, copy)
    file = sample(demo_site, image)
    if tamper in (hide_hash, hide_replacement):
        expected = tamper(copy, hashlib.sha256(file.read_bytes()).hexdigest())
    else:
        expected = tamper(copy)
    url, server = serve(copy)
    page = CheckPage(browser, url)
    try:
        page.open()
        assert page.check(file) == "failed"
        text = page.text()
        assert "FAILED" in text and "Verification failed" in text and expected in text, text
        if tamper in (tamper_signature, drop_cosignature):  # a checkpoint that does not verify is not remembered
            assert page.remembered(origin_of(demo_site)) is None
    finally:
        page.close()
        server.shutdown()


def test_the_next_visit_proves_the_log_only_grew(check_page: CheckPage, demo_site: SiteBuild) -> None:
    origin = origin_of(demo_site)
    older = older_checkpoint(demo_site)
    check_page.remember(origin, older)  # the last visit saw an older tree
    check_page.open()
    assert check_page.check(sample(demo_site, "current-acme")) == "current"
    kind, log = check_page.consistency()
    old_size, size = parse_unverified(older).size, demo_site.info["size"]
    assert kind == "proved" and f"size {old_size} remembered from your last visit" in log and f"size {size}" in log
    assert check_page.remembered(origin) == (demo_site.site / "log" / "checkpoint").read_text()
    check_page.open()  # and the visit after that
    assert check_page.check(sample(demo_site, "unknown-")) == "not-found"
    assert check_page.consistency()[0] == "same"


@pytest.mark.parametrize("fork_size", ["same", "smaller"])
def test_a_fork_fails_loudly_and_is_kept(check_page: CheckPage, demo_site: SiteBuild, fork_size: str) -> None:
    origin = origin_of(demo_site)
    size = demo_site.info["size"]
    forged = forged_checkpoint(
        demo_site, size if fork_size == "same" else parse_unverified(older_checkpoint(demo_site)).size
    )
    check_page.remember(origin, forged)
    check_page.open()
    assert check_page.check(sample(demo_site, "current-acme")) == "failed"
    text = check_page.text()
    assert "FORK OR ROLLBACK" in text and "fork:" in text, text
    assert forged.splitlines()[2] in text  # both checkpoints shown as evidence
    assert check_page.remembered(origin) == forged  # the evidence stays; nothing served replaces it


def test_an_older_checkpoint_served_is_proved_a_prefix_of_the_remembered_one(
    browser: Any, demo_site: SiteBuild, tmp_path: Path
) -> None:
    copy = tmp_path / "site"
    shutil.copytree(demo_site.site, copy)
    current = (copy / "log" / "checkpoint").read_text()
    url, server = serve(copy)
    page = CheckPage(browser, url)
    try:
        page.open()
        assert page.check(sample(demo_site, "current-acme")) == "current"  # remembers the current checkpoint
        older = older_checkpoint(demo_site)
        (copy / "log" / "checkpoint").write_text(older)  # then a cache serves an older one
        page.open()
        assert page.check(sample(demo_site, "current-acme")) == "current"
        kind, log = page.consistency()
        assert kind == "older-served" and f"older checkpoint (size {parse_unverified(older).size})" in log, log
        assert f"size {demo_site.info['size']}" in log and "all of (secas, ssc), is met" in log, log
        assert page.remembered(origin_of(demo_site)) == current
    finally:
        page.close()
        server.shutdown()


def test_the_download_page_lists_the_scripts_digests(demo_site: SiteBuild, check_page: CheckPage) -> None:
    check_page.page.goto(urljoin(demo_site.url, "verify/download/"))
    table = check_page.page.inner_text(".cpl-check-scripts")
    for rel in SCRIPTS:
        served = check_page.page.request.get(urljoin(demo_site.url, rel)).body()
        assert f"{rel}\t{hashlib.sha256(served).hexdigest()}" in table, rel
    # The page loads exactly these scripts of its own (and the theme's).
    check_page.open()
    loaded = {u[len(demo_site.url) :] for u in check_page.watched.requests if u.endswith(".js")}
    assert {r for r in loaded if not r.startswith("assets/")} >= set(SCRIPTS) - {"javascripts/entry.js"}
    assert {r for r in loaded if r.startswith(("javascripts/", "vendor/"))} <= {
        *SCRIPTS,
        "javascripts/search.js",
        "javascripts/status.js",
        "javascripts/copy.js",
        "javascripts/signers.js",
    }


# ---- tlog.js against the Python verifier, on the cases where a loose reading would differ ----------------------

ORIGIN = "check.example/log"


def _kind(exc: Exception) -> str:
    """The tlog.js error kind of a Python verifier exception."""
    for cls, kind in (
        (ForgedCosignature, "forged-cosignature"),
        (ForgedCheckpoint, "forged-checkpoint"),
        (NoLogSignature, "no-log-signature"),
        (UntrustedCheckpoint, "untrusted"),
        (WrongOrigin, "wrong-origin"),
        (CheckpointError, "checkpoint"),
    ):
        if isinstance(exc, cls):
            return kind
    raise exc


def _notes() -> tuple[list[str], list[tuple[str, bytes]]]:
    """The keys (log, witness) and notes, each with what open_checkpoint makes of it."""
    log, other = Signer.generate(ORIGIN), Signer.generate(ORIGIN)
    witness = Cosigner.generate("witness.example/w")
    root = b64encode(hashlib.sha256(b"root").digest())
    body = f"{ORIGIN}\n5\n{root}\n"

    def sig(key: Signer | Cosigner, text: str, mangle: Any = None, ts: int = 1_700_000_000) -> str:
        line = key.cosign(text, ts) if isinstance(key, Cosigner) else key.signature_line(text)
        if mangle is None:
            return line
        name, b64 = line[2:-1].split(" ")
        return f"\u2014 {name} {b64encode(mangle(b64decode_strict(b64, 'x')))}\n"

    def flip(raw: bytes) -> bytes:
        return raw[:-1] + bytes([raw[-1] ^ 1])

    good = body + "\n" + sig(log, body)
    future_ts = witness.cosign(body, 1)  # the timestamp field rewritten to 2**63 below: a malformed cosignature
    name, b64 = future_ts[2:-1].split(" ")
    raw = b64decode_strict(b64, "x")
    bad_ts = f"\u2014 {name} {b64encode(raw[:4] + (1 << 63).to_bytes(8, 'big') + raw[12:])}\n"

    def signed(text: str) -> str:
        return text + "\n" + sig(log, text)

    notes = [
        good,
        good + sig(witness, body),
        good + sig(other, body),  # an unknown key of the same name: ignored
        body + "\n" + sig(log, body, flip),
        good + sig(witness, body, flip),
        good + sig(witness, body, lambda r: r[:68]),  # a known key's malformed line fails like a bad signature
        good + bad_ts,
        body + "\n" + sig(witness, body),
        body + "\n" + sig(other, body),
        body + "\n" + sig(log, body, lambda r: r[:3]),
        signed(f"{ORIGIN}\n5\n{root}\rx\n"),
        signed(f"{ORIGIN}\n5\n{root}\tx\n"),
        signed(f"{ORIGIN}\n5\n{root}\u0085\n"),
        signed(f"{ORIGIN}\n5\n{root}\nextension \u2028 line\n"),
        signed(f"other.example/log\n5\n{root}\n"),
        signed(f"{ORIGIN}\u2028\n5\n{root}\n"),
        signed(f"{ORIGIN}\n05\n{root}\n"),
        signed(f"{ORIGIN}\n-5\n{root}\n"),
        signed(f"{ORIGIN}\n9223372036854775808\n{root}\n"),
        signed(f"{ORIGIN}\n5\n{root[:-4]}\n"),
        signed(f"{ORIGIN}\n5\n{root}====\n"),
        signed(f"{ORIGIN}\n5\n{root}\n\n"),
        signed(f"{ORIGIN}\n5\n"),
        good[:-1],
        good.replace("\u2014", "-"),
        good.replace(f"\u2014 {ORIGIN} ", f"\u2014 {ORIGIN}  "),
        good + f"\u2014 bad\u00a0name {b64encode(b'12345')}\n",
        good + f"\u2014 bad+name {b64encode(b'12345')}\n",
        good + f"\u2014 short {b64encode(b'1234')}\n",
        good + f"\u2014 padding {b64encode(b'12345')}==\n",
        good + "".join(f"\u2014 n{i} {b64encode(b'12345')}\n" for i in range(100)),
        body + "\n",
        body + "\n\n" + sig(log, body),
    ]
    cases = [(n, n.encode()) for n in notes]
    cases.append(("bom", b"\xef\xbb\xbf" + good.encode()))
    cases.append(("latin-1", good.encode().replace(b"\n5\n", b"\n5\xff\n")))
    return [log.verifier.vkey, witness.verifier.vkey], [(label, data) for label, data in cases]


def test_tlog_js_reads_notes_as_the_python_verifier_does(check_page: CheckPage) -> None:
    vkeys, cases = _notes()
    verifiers = [Verifier.from_vkey(v) for v in vkeys]
    expected = []
    for _, data in cases:
        try:
            open_checkpoint(data, ORIGIN, verifiers)
            expected.append("ok")
        except CheckpointError as exc:
            expected.append(_kind(exc))
    got = check_page.page.evaluate(
        """async ([vkeys, origin, notes]) => {
            const t = await import('../javascripts/tlog.js');
            const verifiers = [];
            for (const v of vkeys) { verifiers.push(await t.parseVkey(v)); }
            const out = [];
            for (const hexNote of notes) {
                try { await t.openCheckpoint(t.fromHex(hexNote), origin, verifiers); out.push('ok'); }
                catch (e) { out.push(e.kind || String(e)); }
            }
            return out;
        }""",
        [vkeys, ORIGIN, [data.hex() for _, data in cases]],
    )
    differ = [(label, want, have) for (label, _), want, have in zip(cases, expected, got, strict=True) if want != have]
    assert not differ, differ
    assert expected.count("ok") >= 4 and len(set(expected)) >= 6  # the cases reach every outcome


def test_tlog_js_base64_policy_and_hash_parsing_match_python(check_page: CheckPage) -> None:
    b64 = ["", "AA==", "AB==", "AAA=", "AAAA", "AAA", "AA=", "A===", "AAAA====", "AAAA=", "AA==AA==", "=AAA",
           "AA=A", " AAAA", "AAAA\n", "AAAAAA==", "ABC=", "ABD=", "A", "AAAAA", "AA-_", "AA\u00e9=", "////",
           "++++"]  # fmt: skip
    want_b64 = []
    for text in b64:
        try:
            want_b64.append(b64decode_strict(text, "x").hex())
        except NoteError:
            want_b64.append(None)
    w1, w2, w3 = (Cosigner.generate(f"w{i}.example/w").verifier.vkey for i in range(3))
    log = Signer.generate(ORIGIN).verifier.vkey
    policies = [
        f"log {log}\nwitness a {w1}\nwitness b {w2}\ngroup both all a b\nquorum both\n",
        f"witness a {w1}\nwitness b {w2}\nwitness c {w3}\ngroup two 2 a b c\nquorum two\n",
        f"witness a {w1}\n# a comment\n\t witness b {w2} https://b.example\ngroup g any a b\nquorum g",
        f"witness a {w1}\ngroup g1 1 a\ngroup g2 all g1\nquorum g2\n",
        "quorum none\n",
        f"witness a {w1}\nquorum b\n",
        f"witness a {w1}\nwitness a {w2}\nquorum a\n",
        f"witness a {w1}\nwitness b {w1}\nquorum a\n",
        f"witness a {w1}\nwitness b {w2}\ngroup g 3 a b\nquorum g\n",
        f"witness a {w1}\nwitness b {w2}\ngroup g 0 a b\nquorum g\n",
        f"witness a {w1}\nwitness b {w2}\ngroup g1 1 a b\ngroup g2 2 g1 a\nquorum g2\n",
        f"witness a {w1}\nquorum a\nquorum a\n",
        f"witness a {w1}\r\nquorum a\n",
        f"witness a {log}\nquorum a\n",
        f"log {w1}\nquorum none\n",
        f"witness none {w1}\nquorum none\n",
        f"witness a {w1}\n",
        f"witness a {w1} x y\nquorum a\n",
        f"witness a {w1[:-2]}AA\nquorum a\n",
    ]
    want_policy = []
    for text in policies:
        try:
            p = parse_policy(text)
            want_policy.append([p.describe(), p.counted(), p.satisfied(["a"]), p.satisfied(["a", "b"])])
        except PolicyError:
            want_policy.append(None)
    hashes = ["ab" * 32, "AB" * 32, f"sha256:{'ab' * 32}", f"SHA256:{'ab' * 32}", f"{'ab' * 32}  file.bin",
              f"\\{'ab' * 32}  odd\\nname", f"  {'ab' * 32}\u00a0x", "ab" * 31, "g" * 64, ""]  # fmt: skip
    want_hash = []
    for text in hashes:
        try:
            want_hash.append(parse_image_hash(text))
        except UsageError:
            want_hash.append(None)
    got = check_page.page.evaluate(
        """async ([b64, policies, hashes]) => {
            const t = await import('../javascripts/tlog.js');
            const out = { b64: [], policy: [], hash: hashes.map(t.parseImageHash) };
            for (const s of b64) {
                try { out.b64.push(t.hex(t.b64decodeStrict(s, 'x'))); } catch (e) { out.b64.push(null); }
            }
            for (const s of policies) {
                try {
                    const p = await t.parsePolicy(s);
                    out.policy.push([p.describe(), p.counted(), p.satisfied(['a']), p.satisfied(['a', 'b'])]);
                } catch (e) { out.policy.push(e.kind === 'policy' ? null : String(e)); }
            }
            return out;
        }""",
        [b64, policies, hashes],
    )
    assert got["b64"] == want_b64
    assert got["policy"] == want_policy
    assert got["hash"] == want_hash


def test_tlog_js_merkle_proofs_match_python(check_page: CheckPage) -> None:
    rng = random.Random(9162)
    leaves = [hashlib.sha256(b"leaf %d" % i).digest() for i in range(600)]
    hash_range = list_hash_range(leaves)
    cases = []
    pairs = [(1, 1), (1, 2), (3, 7), (4, 8), (8, 9), (255, 256), (256, 257), (257, 600), (511, 512), (512, 600)]
    pairs += [tuple(sorted(rng.sample(range(1, 601), 2))) for _ in range(20)]  # type: ignore[misc]
    for m, n in pairs:
        proof = consistency_proof(m, n, hash_range)
        old, new = root_of(leaves[:m]), root_of(leaves[:n])
        cases.append(["consistency", m, n, old.hex(), new.hex(), [p.hex() for p in proof], True])
        if proof:
            bad = [*proof[:-1], bytes(32)]
            cases.append(["consistency", m, n, old.hex(), new.hex(), [p.hex() for p in bad], False])
            cases.append(["consistency", m, n, old.hex(), new.hex(), [p.hex() for p in proof[:-1]], False])
        index = rng.randrange(n)
        ip = inclusion_proof(index, n, hash_range)
        cases.append(["inclusion", index, n, leaves[index].hex(), new.hex(), [p.hex() for p in ip], True])
        cases.append(["inclusion", (index + 1) % n, n, leaves[index].hex(), new.hex(), [p.hex() for p in ip], n == 1])
    for c in cases:  # what the Python verifier says of each
        f = verify_consistency if c[0] == "consistency" else verify_inclusion
        args = (c[1], c[2], bytes.fromhex(c[3]), bytes.fromhex(c[4]), [bytes.fromhex(p) for p in c[5]])
        try:
            f(*(args if c[0] == "consistency" else (c[1], c[2], args[2], args[4], args[3])))  # type: ignore[operator]
            c[6] = True
        except ProofError:
            c[6] = False
    got = check_page.page.evaluate(
        """async (cases) => {
            const t = await import('../javascripts/tlog.js');
            const out = [];
            for (const [kind, a, b, x, y, proof] of cases) {
                const p = proof.map(t.fromHex);
                try {
                    if (kind === 'consistency') { await t.verifyConsistency(a, b, t.fromHex(x), t.fromHex(y), p); }
                    else { await t.verifyInclusion(a, b, t.fromHex(x), p, t.fromHex(y)); }
                    out.push(true);
                } catch (e) { out.push(e.kind === 'proof' ? false : String(e)); }
            }
            return out;
        }""",
        cases,
    )
    assert got == [c[6] for c in cases]
    assert any(c[6] for c in cases) and not all(c[6] for c in cases)
