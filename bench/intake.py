"""Intake benchmark: signed CPL submissions per second, end to end (verification and log append).

Setup (not timed), in a temporary folder:

1. a publication made by ``authority.init_publication`` (demo root and issuing ICA, log key);
2. IKI certificates issued by ``authority.issue`` for five manufacturers (IDs 1001..1005),
   a supplier and the DCC; CRLs published with ``crl_publish.refresh``;
3. N submissions (default 1,000) of R rows (default 5) each, in the layout intake reads:
   ``<id>/sheet.csv``, ``<id>/sheet.csv.p7s``, ``<id>/request.json``. Every row names a new
   device model with a new image hash. The ``.p7s`` is a detached CMS SignedData with two
   SignerInfos (manufacturer, then endorser) made by cryptography's PKCS7SignatureBuilder.
   Every 10th submission is a batch of communications hubs, endorsed by the DCC; the
   others are meters endorsed by the supplier.

Timed, per repeat: a fresh log (``TileLog.create``) and a fresh copy of the inbox, then
``run_intake`` inside ``with TileLog.open(...)``: wall time from opening the log to closing
it. Every submission must be accepted and the log must hold N x R entries afterwards.
The breakdown comes from the same runs, by wrapping the functions intake calls (see
``PARTS``); a wrapped call nested in another one counts to the outer one.

Also measured:

* the same intake on a smaller inbox whose signatures were made by ``openssl cms -sign``
  (``--openssl-signed``), next to as many builder-signed submissions: same speed expected;
* the peer, as a reference: ``openssl cms -verify -binary -inform DER -content sheet
  -CAfile chain -purpose any``, one subprocess per submission, on a sample (``--sample``),
  and once more with the CRLs in the CAfile and ``-crl_check`` (the signer certificates' CRL). OpenSSL only verifies
  the signatures and chains: no spreadsheet rules, no log, nothing written.

Target (issue): at least 200 submissions per second.

    .venv/bin/python bench/intake.py                        # 1,000 submissions of 5 rows, 3 repeats
    .venv/bin/python bench/intake.py --submissions 200 --repeats 5 --json
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import gc
import hashlib
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cryptography
from cryptography.hazmat.primitives import serialization
from options import add_run_options

from publisher import fsio, parties, publication, scaffold
from publisher.config import Config, load
from publisher.intake import certcheck, run, submission
from publisher.pki import crl_publish
from publisher.tlog import TileLog
from publisher.tlog.signer import load_log_signer
from verifier import cpl_verify

SITE_URL = "http://127.0.0.1:8000"
ORIGIN = "bench.example/log"
ISSUER = "ica"
TARGET_RATE = 200.0  # submissions per second
DEFAULT_SUBMISSIONS = 1000
DEFAULT_ROWS = 5
DCC_EVERY = 10  # every 10th submission: communications hubs, endorsed by the DCC
SHEET = "sheet.csv"
MANUFACTURERS = (
    ("1001", "Acme Meters Ltd"),
    ("1002", "Brightwater Devices"),
    ("1003", "Cobalt Energy Systems"),
    ("1004", "Dunmore Metering"),
    ("1005", "Elgin Instruments"),
)
SUPPLIER = ("2001", "Northern Power Supply")
DCC = ("9001", "Smart DCC Ltd")
METER_TYPES = ("ESME", "GSME", "PPMID", "IHD")
HUB_TYPES = ("CHF", "GPF")

# The breakdown: (label, [(owner, attribute)]). Top-level parts count only when not nested in
# another wrapped call (so the log's own fsio.write_files calls count to "log append").
PARTS: tuple[tuple[str, tuple[tuple[object, str], ...]], ...] = (
    ("trust context + log index", ((run, "trust_context"), (run, "index_of"))),
    ("read submission files", ((run, "read_submission"),)),
    ("spreadsheet parsing", ((cpl_verify, "read_sheet"),)),
    ("CMS verification", ((cpl_verify, "verify_cms_detached"),)),
    ("certificate path validation", ((submission, "check_certificate"),)),
    ("evidence writing", ((fsio, "write_files"),)),
    ("log append", ((TileLog, "append"),)),
    ("folder moves", ((run, "_move"),)),
)
# Parts of the parts, timed inclusively wherever they are called from.
SUBPARTS: tuple[tuple[str, str, tuple[tuple[object, str], ...]], ...] = (
    ("CMS verification", "DER parse (cms_certificates)", ((cpl_verify, "cms_certificates"),)),
    ("CMS verification", "digest + signature (_verify_signer_info)", ((cpl_verify, "_verify_signer_info"),)),
    ("certificate path validation", "CRL checks (_revocation)", ((certcheck, "_revocation"),)),
)
OTHER = "other (request, identities, entries, index, ...)"
LOG_OPEN = "log open + close"


# -- helpers -----------------------------------------------------------------------------
def note(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def openssl_version() -> str:
    return subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True).stdout.strip()


class PartTimer:
    """Wraps functions so their time adds up per label; ``with timer.active():`` restores them."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._depth = 0

    def _wrap(self, fn: Callable[..., Any], label: str, top: bool) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if top and self._depth:
                return fn(*args, **kwargs)  # nested in another part: counts to that one
            if top:
                self._depth += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.times[label] = self.times.get(label, 0.0) + time.perf_counter() - t
                self.calls[label] = self.calls.get(label, 0) + 1
                if top:
                    self._depth -= 1

        return wrapper

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        saved: list[tuple[object, str, Any]] = []
        targets = [(owner, attr, label, True) for label, fns in PARTS for owner, attr in fns]
        targets += [(owner, attr, label, False) for _, label, fns in SUBPARTS for owner, attr in fns]
        for owner, attr, label, top in targets:
            fn = getattr(owner, attr, None)
            if fn is None:
                raise RuntimeError(f"{owner}.{attr} no longer exists; update PARTS in bench/intake.py")
            saved.append((owner, attr, fn))
            setattr(owner, attr, self._wrap(fn, label, top))
        try:
            yield
        finally:
            for owner, attr, fn in reversed(saved):
                setattr(owner, attr, fn)


# -- setup -------------------------------------------------------------------------------
Org = parties.Party


def issue_org(config: Config, org_dir: Path, org_id: str, name: str, role: str, now: dt.datetime) -> Org:
    return parties.issue_party(
        config, name, org_id, role, now, issuer=ISSUER, not_before=now - dt.timedelta(minutes=5), days=365,
        approval_ref="BENCH", folder=org_dir,
    )  # fmt: skip


@dataclass(frozen=True)
class Setup:
    config: Config
    manufacturers: tuple[Org, ...]
    supplier: Org
    dcc: Org
    chain_file: Path  # root + issuing ICA (PEM), the openssl -CAfile
    chain_crl_file: Path  # the same plus both CRLs (PEM), for -crl_check


def make_setup(base: Path) -> Setup:
    pub, keys_dir, org_dir = base / "publication", base / "keys", base / "orgs"
    hierarchy = scaffold.init_publication(pub, keys_dir, SITE_URL, ORIGIN)
    config = load(pub)
    org_dir.mkdir()
    now = publication.now_utc()
    manufacturers = tuple(issue_org(config, org_dir, i, n, "Manufacturer", now) for i, n in MANUFACTURERS)
    supplier = issue_org(config, org_dir, *SUPPLIER, "Supplier", now)
    dcc = issue_org(config, org_dir, *DCC, "DCC", now)
    crl_publish.refresh(config)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (hierarchy.root_cert, hierarchy.issuing_cert))
    chain_file = base / "chain.pem"
    chain_file.write_bytes(chain)
    crls = b"".join((pub / publication.CRL_DIR / f"{i.name}.pem").read_bytes() for i in config.issuers)
    chain_crl_file = base / "chain-crls.pem"
    chain_crl_file.write_bytes(chain + crls)
    return Setup(config, manufacturers, supplier, dcc, chain_file, chain_crl_file)


def make_sheet(n: int, rows: int, manufacturer: Org, hubs: bool, tag: str) -> bytes:
    """Rows for submission ``n``: new device models, new image hashes."""
    lines = [",".join(cpl_verify.SHEET_COLUMNS)]
    types = HUB_TYPES if hubs else METER_TYPES
    for r in range(rows):
        image = hashlib.sha256(f"bench image {tag}{n} {r}".encode()).hexdigest()
        lines.append(
            f"{manufacturer.org_id},{manufacturer.name},{tag.upper()}M{n:06d},{1 + r % 3}.0,{r // 3}.{r % 10}.1,"
            f"{types[r % len(types)]},SMETS2,{image}"
        )
    return ("\r\n".join(lines) + "\r\n").encode()


def builder_sign(sheet: bytes, signers: Sequence[Org]) -> bytes:
    return parties.sign_detached(sheet, signers)


def openssl_sign(sheet_file: Path, signers: Sequence[Org], out: Path) -> None:
    cmd = ["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER"]
    for org in signers:
        cmd += ["-signer", str(org.cert_path), "-inkey", str(org.key_path)]
    cmd += ["-in", str(sheet_file), "-out", str(out)]
    subprocess.run(cmd, capture_output=True, check=True)


def make_inbox(setup: Setup, folder: Path, count: int, rows: int, tag: str, signer: str, show: bool) -> list[Path]:
    """``count`` submission folders under ``folder``; returns them in name order."""
    folder.mkdir(parents=True)
    out = []
    t0 = time.perf_counter()
    for n in range(count):
        manufacturer = setup.manufacturers[n % len(setup.manufacturers)]
        hubs = n % DCC_EVERY == DCC_EVERY - 1
        sheet = make_sheet(n, rows, manufacturer, hubs, tag)
        sub = folder / f"{tag}{n:06d}"
        sub.mkdir()
        (sub / SHEET).write_bytes(sheet)
        signers = (manufacturer, setup.dcc if hubs else setup.supplier)
        if signer == "openssl":
            openssl_sign(sub / SHEET, signers, sub / f"{SHEET}.p7s")
        else:
            (sub / f"{SHEET}.p7s").write_bytes(builder_sign(sheet, signers))
        request = {"submitter_ref": f"BENCH-{tag}{n:06d}", "panel_ref": f"PANEL-{n // 100:04d}"}
        (sub / "request.json").write_bytes(json.dumps(request).encode())
        out.append(sub)
        if show and (n + 1) % max(count // 4, 1) == 0:
            rate = (n + 1) / (time.perf_counter() - t0)
            note(True, f"  {signer}-signed inbox: {n + 1:,}/{count:,} submissions ({rate:,.0f}/s)")
    return out


# -- the timed intake --------------------------------------------------------------------
def reset(config: Config) -> None:
    """A fresh, empty log and no inbox or processed folder (not timed)."""
    root = config.root
    for name in ("log", run.INBOX, run.PROCESSED):
        shutil.rmtree(root / name, ignore_errors=True)
    TileLog.create(root / "log", load_log_signer(config.log_key, root)).close()


def intake_once(
    config: Config, template: Path, expect: int, rows: int, profiler: cProfile.Profile | None = None
) -> dict[str, Any]:
    """One timed intake over a fresh copy of ``template`` into a fresh log."""
    reset(config)
    shutil.copytree(template, config.root / run.INBOX)
    timer = PartTimer()
    gc.collect()
    with timer.active():
        if profiler:
            profiler.enable()
        c0, t0 = time.process_time(), time.perf_counter()
        with TileLog.open(config.root / "log", load_log_signer(config.log_key, config.root)) as log:
            t1 = time.perf_counter()
            report = run.run_intake(config, log)
            t2 = time.perf_counter()
            size = log.size
        t3, c3 = time.perf_counter(), time.process_time()
        if profiler:
            profiler.disable()
    if report.rejected or len(report.accepted) != expect or size != expect * rows:
        first = next(iter(report.rejected.items()), None)
        raise AssertionError(
            f"intake accepted {len(report.accepted)} of {expect} submissions, log size {size} "
            f"(expected {expect * rows}); first rejection: {first}"
        )
    left = list((config.root / run.INBOX).iterdir())
    if left:
        raise AssertionError(f"{len(left)} folders left in the inbox after intake")
    parts = {label: timer.times.get(label, 0.0) for label, _ in PARTS}
    parts[OTHER] = (t2 - t1) - sum(parts.values())
    parts[LOG_OPEN] = (t3 - t0) - (t2 - t1)
    sub = {f"{parent}: {label}": timer.times.get(label, 0.0) for parent, label, _ in SUBPARTS}
    return {"total": t3 - t0, "cpu": c3 - c0, "parts": parts, "subparts": sub}


def intake_runs(
    config: Config, template: Path, expect: int, rows: int, repeats: int, what: str, show: bool
) -> list[dict[str, Any]]:
    out = []
    for k in range(repeats):
        r = intake_once(config, template, expect, rows)
        note(
            show,
            f"  {what} run {k + 1}/{repeats}: {r['total']:.3f} s, {expect / r['total']:,.1f} submissions/s "
            f"(CPU {r['cpu']:.3f} s)",
        )
        out.append(r)
    return out


def rates(runs: Sequence[dict[str, Any]], subs: int, rows: int) -> dict[str, Any]:
    totals = [r["total"] for r in runs]
    return {
        "seconds": summary(totals),
        "cpu_seconds": summary([r["cpu"] for r in runs]),
        "submissions_per_s": {"median": subs / statistics.median(totals), "best": subs / min(totals)},
        "rows_per_s": {"median": subs * rows / statistics.median(totals), "best": subs * rows / min(totals)},
    }


def profile_once(config: Config, template: Path, expect: int, rows: int, lines: int) -> str:
    profiler = cProfile.Profile()
    intake_once(config, template, expect, rows, profiler)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    return out.getvalue()


# -- the peer ----------------------------------------------------------------------------
def openssl_verify(folders: Sequence[Path], ca_file: Path, crl_check: bool) -> dict[str, Any]:
    """``openssl cms -verify`` once per submission (a subprocess each); seconds per call."""
    times, failures = [], []
    for sub in folders:
        cmd = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(sub / f"{SHEET}.p7s")]
        cmd += ["-content", str(sub / SHEET), "-CAfile", str(ca_file), "-purpose", "any", "-out", os.devnull]
        if crl_check:
            cmd.append("-crl_check")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0 or b"Verification successful" not in proc.stderr:
            failures.append(f"{sub.name}: {' '.join(proc.stderr.decode(errors='replace').split())[:300]}")
    return {
        "seconds": summary(times),
        "mean": statistics.fmean(times),
        "ok": len(folders) - len(failures),
        "failures": failures[:3],
    }


def process_start(count: int) -> dict[str, Any]:
    """``openssl version`` wall time: what a subprocess costs before any work."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        subprocess.run(["openssl", "version"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return {"seconds": summary(times), "mean": statistics.fmean(times)}


# -- the run -----------------------------------------------------------------------------
def bench(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    show = not args.quiet
    n, rows = args.submissions, args.rows
    note(show, f"setup: publication, {len(MANUFACTURERS) + 2} IKI certificates, CRLs in {base}")
    setup = make_setup(base)
    config = setup.config
    note(show, f"setup: {n:,} submissions of {rows} rows, signed with PKCS7SignatureBuilder")
    template = base / "inbox-builder"
    folders = make_inbox(setup, template, n, rows, "b", "builder", show)

    note(show, "check: a small builder-signed run is accepted")
    small = base / "inbox-check"
    small.mkdir()
    for f in folders[: min(n, DCC_EVERY)]:
        shutil.copytree(f, small / f.name)
    intake_once(config, small, min(n, DCC_EVERY), rows)

    note(show, f"timed: {args.repeats} intake runs of {n:,} submissions, fresh log and inbox each")
    runs = intake_runs(config, template, n, rows, args.repeats, "intake", show)
    main = rates(runs, n, rows)
    labels = [label for label, _ in PARTS] + [OTHER, LOG_OPEN]
    breakdown = {label: summary([r["parts"][label] for r in runs]) for label in labels}
    breakdown.update({key: summary([r["subparts"][key] for r in runs]) for key in runs[0]["subparts"]})

    ossl_signed: dict[str, Any] | None = None
    m = min(args.openssl_signed, n)
    if m > 0:
        note(show, f"setup: {m} submissions signed by `openssl cms -sign`, and {m} builder-signed ones")
        o_template = base / "inbox-openssl"
        make_inbox(setup, o_template, m, rows, "o", "openssl", show)
        b_template = base / "inbox-builder-small"
        b_template.mkdir()
        for f in folders[:m]:
            shutil.copytree(f, b_template / f.name)
        o_runs, b_runs = [], []
        for k in range(args.repeats):  # interleaved, so drift on a shared machine hits both
            b_runs += intake_runs(config, b_template, m, rows, 1, f"builder-signed x{m} ({k + 1})", show)
            o_runs += intake_runs(config, o_template, m, rows, 1, f"openssl-signed x{m} ({k + 1})", show)
        ossl_signed = {"submissions": m, "builder": rates(b_runs, m, rows), "openssl": rates(o_runs, m, rows)}

    peer: dict[str, Any] | None = None
    if args.sample > 0:
        k = min(args.sample, n)
        sample = [folders[i * n // k] for i in range(k)]
        note(show, f"peer: openssl cms -verify on {k} submissions, one subprocess each (then with CRL checks)")
        peer = {
            "sample": k,
            "verify": openssl_verify(sample, setup.chain_file, crl_check=False),
            "verify_crl": openssl_verify(sample, setup.chain_crl_file, crl_check=True),
            "process_start": process_start(k),
        }

    prof = ""
    if args.profile:
        note(show, "profile: one more intake run under cProfile")
        prof = profile_once(config, template, n, rows, args.profile)

    sig_sizes = [len((f / f"{SHEET}.p7s").read_bytes()) for f in folders]
    return {
        "submissions": n,
        "rows": rows,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl": openssl_version(),
        "cpus": os.cpu_count(),
        "p7s_bytes_mean": statistics.fmean(sig_sizes),
        "sheet_bytes_mean": statistics.fmean(len((f / SHEET).read_bytes()) for f in folders),
        "dcc_endorsed": sum(1 for i in range(n) if i % DCC_EVERY == DCC_EVERY - 1),
        "intake": main,
        "breakdown_s": breakdown,
        "breakdown_parts": labels,
        "load_average": os.getloadavg(),
        "openssl_signed": ossl_signed,
        "peer": peer,
        "target": {
            "submissions_per_s": TARGET_RATE,
            "met": main["submissions_per_s"]["median"] >= TARGET_RATE,
            "applies": n == DEFAULT_SUBMISSIONS and rows == DEFAULT_ROWS,
        },
        "profile": prof,
    }


# -- output ------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = "  ".join(f"{{:<{w}}}" if i < left else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*headers), "-" * (sum(widths) + 2 * (len(widths) - 1)), *(fmt.format(*r) for r in rows)]


def render(r: dict[str, Any]) -> str:
    n, rows = r["submissions"], r["rows"]
    lines = [
        f"Intake benchmark: {n:,} signed submissions x {rows} rows ({r['dcc_endorsed']} endorsed by the DCC, "
        f"the rest by a supplier), {r['repeats']} timed runs",
        f"Python {r['python']}, cryptography {r['cryptography']}, {r['openssl']}, "
        f"{r['cpus']} CPUs, load average {r['load_average'][0]:.2f} at the end",
        f".p7s {r['p7s_bytes_mean']:,.0f} B (DER; 2 SignerInfos, 2 certificates, P-256), "
        f".csv {r['sheet_bytes_mean']:,.0f} B; wall time from TileLog.open to its close",
        "",
    ]
    i = r["intake"]
    headers = ("end to end", "median", "best")
    table = [
        ("wall time, s", f"{i['seconds']['median']:.3f}", f"{i['seconds']['min']:.3f}"),
        ("CPU time, s (all threads)", f"{i['cpu_seconds']['median']:.3f}", f"{i['cpu_seconds']['min']:.3f}"),
        (
            "submissions/s",
            f"{i['submissions_per_s']['median']:,.1f}",
            f"{i['submissions_per_s']['best']:,.1f}",
        ),
        ("rows/s", f"{i['rows_per_s']['median']:,.0f}", f"{i['rows_per_s']['best']:,.0f}"),
        ("ms per submission", f"{1000 * i['seconds']['median'] / n:.2f}", f"{1000 * i['seconds']['min'] / n:.2f}"),
    ]
    lines += _table(headers, table)
    lines.append("runs, s: " + ", ".join(f"{x:.3f}" for x in i["seconds"]["runs"]))
    lines.append("")

    b = r["breakdown_s"]
    top = r["breakdown_parts"]
    total = sum(b[label]["median"] for label in top)
    brows = []

    def brow(label: str, x: dict[str, Any]) -> tuple[str, ...]:
        share = f"{100 * x['median'] / total:.1f}%"
        return (label, f"{x['median']:.3f}", f"{x['min']:.3f}", f"{1000 * x['median'] / n:.3f}", share)

    for label in top:
        brows.append(brow(label, b[label]))
        for key, x in b.items():
            parent, _, sub = key.partition(": ")
            if parent == label and sub:
                brows.append(brow(f"  of which {sub}", x))
    brows.append(("sum of the medians", f"{total:.3f}", "", f"{1000 * total / n:.3f}", "100.0%"))
    lines.append("breakdown of the same runs (wrapped functions; a call nested in another part counts to that part):")
    lines += _table(("part", "median s", "best s", "ms/submission", "share"), brows)
    lines.append("")

    o = r["openssl_signed"]
    if o:
        m = o["submissions"]
        lines.append(f"signature maker, intake of {m} submissions each (fresh log each, interleaved runs):")
        orows = []
        for name, key in (("cryptography PKCS7SignatureBuilder", "builder"), ("openssl cms -sign", "openssl")):
            x = o[key]
            orows.append(
                (
                    name,
                    f"{x['seconds']['median']:.3f}",
                    f"{x['submissions_per_s']['median']:,.1f}",
                    f"{x['submissions_per_s']['best']:,.1f}",
                )
            )
        lines += _table(("signed by", "median s", "median subm/s", "best subm/s"), orows)
        lines.append("")

    p = r["peer"]
    if p:
        k = p["sample"]
        ours_ms = 1000 * i["seconds"]["median"] / n
        lines.append(f"peer (reference): openssl cms -verify, one subprocess per submission, sample of {k}:")
        prows = []
        for name, x in (
            ("openssl cms -verify -purpose any", p["verify"]),
            ("  ... with the CRLs in -CAfile, -crl_check", p["verify_crl"]),
            ("  (openssl version: process start only)", p["process_start"]),
        ):
            prows.append(
                (
                    name,
                    f"{1000 * x['mean']:.2f}",
                    f"{1000 * x['seconds']['median']:.2f}",
                    f"{1000 * x['seconds']['min']:.2f}",
                    f"{1 / x['mean']:,.1f}",
                    f"{x['ok']}/{k}" if "ok" in x else "",
                )
            )
        prows.append(("ours, end to end (median run)", f"{ours_ms:.2f}", "", "", f"{1000 / ours_ms:,.1f}", ""))
        lines += _table(("", "mean ms", "median ms", "min ms", "per s", "verified"), prows)
        for x in (p["verify"], p["verify_crl"]):
            for failure in x["failures"]:
                lines.append(f"  openssl failure: {failure}")
        lines.append(
            "  openssl checks the signatures and chains only (no spreadsheet rules, no log append, no files "
            "written, no fsync)."
        )
        lines.append(
            "  -crl_check: the signer certificates against the ICA's CRL (-crl_check_all fails at the root with "
            "'different CRL scope': the root has no CRL distribution point, the ARL an IDP)."
        )
        lines.append("")

    t = r["target"]
    verdict = "PASS" if t["met"] else "FAIL"
    where = "" if t["applies"] else f" (the target is for {DEFAULT_SUBMISSIONS:,} x {DEFAULT_ROWS} rows)"
    lines.append(
        f"target: >= {t['submissions_per_s']:.0f} submissions/s end to end: median "
        f"{i['submissions_per_s']['median']:,.1f}/s -> {verdict}{where}"
    )
    lines.append(f"temp dir {r['dir']} removed: {r['cleaned_up']}")
    if r.get("profile"):
        lines += ["", r["profile"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark submission intake end to end (CMS and certificate checks, spreadsheet rules, "
            "evidence, log append, moves), with `openssl cms -verify` as a reference."
        ),
    )
    parser.add_argument(
        "--submissions", type=int, default=DEFAULT_SUBMISSIONS, help="submissions per run (default %(default)s)"
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows per submission (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed intake runs (default %(default)s)")
    parser.add_argument(
        "--openssl-signed",
        type=int,
        default=100,
        metavar="N",
        help="also time intake of N submissions signed by `openssl cms -sign` against N builder-signed ones "
        "(0: skip; default %(default)s)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=50,
        help="submissions verified by `openssl cms -verify` for the reference (0: skip; default %(default)s)",
    )
    add_run_options(
        parser, "after the timings, cProfile one more intake run and print LINES rows (cumulative, then tottime)"
    )
    args = parser.parse_args(argv)
    if args.submissions < 1:
        parser.error("--submissions must be at least 1")
    if not 1 <= args.rows <= cpl_verify.MAX_ROWS:
        parser.error(f"--rows must be between 1 and {cpl_verify.MAX_ROWS}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.openssl_signed < 0 or args.sample < 0 or args.profile < 0:
        parser.error("--openssl-signed, --sample and --profile must not be negative")
    if shutil.which("openssl") is None and (args.openssl_signed or args.sample):
        parser.error("openssl is not on PATH (use --openssl-signed 0 --sample 0)")

    base = Path(tempfile.mkdtemp(prefix="bench-intake-", dir=args.dir))
    try:
        result = bench(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result["dir"] = str(base)
    result["cleaned_up"] = not base.exists()
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
