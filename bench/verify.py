"""Consumer verifier benchmark: a 1,000,000-entry log with real evidence, served over HTTP on 127.0.0.1.

Builds, in a temporary folder, a publication whose log holds N ``cpl-association/v1`` entries (default
1,000,000) made from real signed submissions (1,000 rows per CSV spreadsheet, each signed by a
manufacturer and a supplier with cryptography's PKCS7 builder, so ``audit`` re-verifies real CMS
signatures, certificate chains and rows), a 100,000-entry CRL of the issuing ICA logged as ``crl/v1``,
and the exported site tree; serves it with ``http.server`` (HTTP/1.1) on 127.0.0.1; then runs the
downloadable verifier file as a separate process, as a user would, and measures from one run:

1. ``inclusion --hash``: HTTP requests, bytes fetched, wall time including interpreter start
   (median of several hashes), the proof computed from the tiles: a proven "current" verdict (the
   log's lookup/v1 commitment, the signers' standing on the ICA CRL); a proven absence (an image
   that is not logged); and ``--exhaustive`` (every entry read), once;
2. ``crl --issuer ica`` on the 100,000-entry CRL (and with ``--require-logged``), with
   ``openssl crl -verify`` on the same file as the peer;
3. ``audit``: entries per second over the whole log (structure, evidence and rules).

    .venv/bin/python bench/verify.py                  # full size
    .venv/bin/python bench/verify.py --entries 100000 --json
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import http.server
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from publisher import keys, parties, publication, scaffold
from publisher.config import load
from publisher.demo import trust_of
from publisher.entries import ASSOCIATION_TYPE, canonical_json
from publisher.entries import crl_entry as entries_crl_entry
from publisher.intake.associations import AssociationIndex
from publisher.pki import crl_publish
from publisher.pki.crl import CRLSpec, Revocation, check_crl, sign_crl, to_pem
from publisher.site.export import export_tree
from publisher.tlog import TileLog
from publisher.tlog.signer import load_log_signer
from verifier.cpl_verify import SHEET_COLUMNS as COLUMNS
from verifier.cpl_verify import Party as VParty
from verifier.cpl_verify import cert_sha256, iso_utc

REPO = Path(__file__).resolve().parents[1]
VERIFIER = REPO / "verifier" / "cpl_verify.py"
OPENSSL = "/usr/bin/openssl"
ORIGIN = "bench.example/cpl/log"
SITE_URL = "https://bench.example/cpl"
ROWS_PER_SHEET = 1000
BATCH = 65_536
# checkpoint; the commitment copy + its right-edge hash tiles (3 at 1M); hash shard + 2 lookup tiles; the
# entry's bundle; model shard + tile; the signers' signature file, ICA CRL and certificate
TARGET_INCLUSION_REQUESTS = 18
TARGET_INCLUSION_SECONDS = 0.5
TARGET_AUDIT_RATE = 5000


def log(msg: str) -> None:
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


# -- building the publication ------------------------------------------------------------------------------


def build(base: Path, entries: int, crl_entries: int) -> dict[str, Any]:
    now = publication.now_utc()
    pub = base / "publication"
    scaffold.init_publication(pub, base / "keys", SITE_URL, ORIGIN)
    config = load(pub)
    acme = parties.issue_party(config, "Acme Meters", "1001", "Manufacturer", now, days=365)
    supplier = parties.issue_party(config, "Bright Energy Supply", "2001", "Supplier", now, days=365)
    crl_publish.refresh(config, now)  # the root's ARL and a first ICA CRL
    signer = load_log_signer(config.log_key, pub)
    evidence_dir = pub / "log" / "evidence"
    evidence_dir.mkdir(parents=True)
    approved = iso_utc(now)

    def party(p: parties.Party) -> dict[str, object]:
        return VParty(p.name, p.org_id, p.role, cert_sha256(p.cert)).to_json()

    man, end = party(acme), party(supplier)
    images: list[str] = []
    started = time.monotonic()
    with TileLog.open(pub / "log", signer) as tlog:
        pending: list[bytes] = []
        for sub in range((entries + ROWS_PER_SHEET - 1) // ROWS_PER_SHEET):
            count = min(ROWS_PER_SHEET, entries - sub * ROWS_PER_SHEET)
            rows = []
            for r in range(count):
                image = hashlib.sha256(f"bench image {sub} {r}".encode()).hexdigest()
                rows.append(("1001", "Acme Meters", f"M{sub}-{r}", "HW1", "FW1", "ESME", "SMETS2", image))
                images.append(image)
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(COLUMNS)
            writer.writerows(rows)
            sheet = out.getvalue().encode()
            sig = parties.sign_detached(sheet, [acme, supplier])
            sid = f"B{sub:05d}"
            request = json.dumps({"submitter_ref": f"REF-{sid}", "panel_ref": f"PANEL-{sid}"}).encode()
            digests = {}
            for name, data in (("sheet", sheet), ("sig", sig), ("request", request)):
                digests[name] = hashlib.sha256(data).hexdigest()
                (evidence_dir / digests[name]).write_bytes(data)
            for row in rows:
                entry = {
                    "type": ASSOCIATION_TYPE,
                    "device_model": {
                        "manufacturer_id": row[0],
                        "model_id": row[2],
                        "hardware_version": row[3],
                        "firmware_version": row[4],
                    },
                    "manufacturer_name": row[1],
                    "device_type": row[5],
                    "smets_version": row[6],
                    "image_sha256": row[7],
                    "manufacturer": man,
                    "endorser": end,
                    "approved_at": approved,
                    "panel_ref": f"PANEL-{sid}",
                    "submitter_ref": f"REF-{sid}",
                    "submission_id": sid,
                    "evidence": {
                        "spreadsheet": digests["sheet"],
                        "request": digests["request"],
                        "signatures": [digests["sig"]],
                    },
                }
                pending.append(canonical_json(entry))
            if len(pending) >= BATCH:
                tlog.append(pending)
                pending = []
                log(f"log: {tlog.size:,} entries ({time.monotonic() - started:.0f} s)")
        # The big CRL: crl_entries revoked serials (none of them the parties'), logged as crl/v1.
        ica_cfg = config.issuer("ica")
        ica_cert = publication.load_certificate(ica_cfg.certificate)
        ica_key = keys.load_private_key(ica_cfg.key, pub)
        rng = random.Random(1)
        revoked = [
            Revocation(rng.getrandbits(127) | 1 << 126, now - dt.timedelta(days=1), "keyCompromise")
            for _ in range(crl_entries)
        ]
        previous = (pub / "crl" / "ica.crl").read_bytes()
        number = 1 + int(json.loads((pub / "crl" / "ica.json").read_text())["number"])
        spec = CRLSpec(ica_cert, number, now, now + dt.timedelta(days=7), config.crl_url("ica"), False)
        big = sign_crl(spec, revoked, ica_key)
        info = check_crl(big, ica_cert, previous, now)
        (pub / "crl" / "archive" / "ica" / f"{number}.crl").write_bytes(big)
        (pub / "crl" / "ica.crl").write_bytes(big)
        (pub / "crl" / "ica.pem").write_bytes(to_pem(big))
        meta = {**info.to_json(), "issuer": "ica", "url": config.crl_url("ica")}
        (pub / "crl" / "ica.json").write_text(json.dumps(meta, indent=1))
        pending.append(entries_crl_entry("ica", info))
        tlog.append(pending)
        t0 = time.monotonic()
        tlog.append([AssociationIndex.from_entries(tlog.entries()).lookup.commitment()])  # as publish ends
        log(f"lookup commitment computed over {tlog.size - 1:,} entries in {time.monotonic() - t0:.1f} s")
        size = tlog.size
    log(f"log: {size:,} entries built in {time.monotonic() - started:.0f} s")
    site = base / "site"
    t0 = time.monotonic()
    export_tree(config, site, iso_utc(now))
    log(f"site exported (lookup shards) in {time.monotonic() - t0:.0f} s")
    trust = trust_of(config)
    trust["site"] = ""
    return {"config": config, "site": site, "size": size, "images": images, "trust": trust}


# -- serving and measuring ----------------------------------------------------------------------------------


class Quiet(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # As production web servers do (nginx tcp_nodelay): without it, a kept-alive connection stalls
    # ~40 ms per response on Nagle's algorithm meeting the client's delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return None


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = lambda *a, **kw: Quiet(*a, directory=str(site), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def verifier(trust: Path, *args: str, expect: int = 0) -> tuple[float, dict[str, Any]]:
    """Run the downloadable file in a fresh interpreter; (wall seconds including start-up, --json output)."""
    argv = [sys.executable, str(VERIFIER), "--trust", str(trust), "--json", *args]
    t0 = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    try:
        out = json.loads(result.stdout)
    except ValueError:
        raise SystemExit(f"verifier failed: {result.stdout}\n{result.stderr}") from None
    if out["exit_code"] != expect:
        raise SystemExit(f"verifier failed: {json.dumps(out)[:2000]}")
    return wall, out


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    built = build(work, args.entries, args.crl_entries)
    rng = random.Random(7)
    sample = sorted(rng.sample(range(len(built["images"])), args.samples))
    httpd, url = serve(built["site"])
    try:
        trust_obj = dict(built["trust"], site=url)
        trust = work / "trust.json"
        trust.write_text(json.dumps(trust_obj))
        results: dict[str, Any] = {"entries": built["size"], "crl_entries": args.crl_entries}
        startup = min(verifier_help() for _ in range(3))  # interpreter + imports alone, for reference
        results["interpreter_start_s"] = round(startup, 3)
        runs = []
        for index in sample:
            wall, out = verifier(trust, "inclusion", "--hash", built["images"][index])
            assert out["result"]["associations"][0]["index"] == index
            assert out["result"]["verdict"] == "current" and out["result"]["lookup"]["proven"]
            runs.append((wall, out["requests"], out["bytes"]))
        results["inclusion"] = _summary(runs)
        absent = []
        for n in range(args.samples):
            image = hashlib.sha256(f"not logged {n}".encode()).hexdigest()
            wall, out = verifier(trust, "inclusion", "--hash", image, expect=3)
            assert out["result"]["verdict"] == "not-found" and out["result"]["lookup"]["proven"]
            absent.append((wall, out["requests"], out["bytes"]))
        results["inclusion (proven absence)"] = _summary(absent)
        wall, out = verifier(trust, "inclusion", "--hash", built["images"][sample[0]], "--exhaustive")
        results["inclusion (--exhaustive)"] = _summary([(wall, out["requests"], out["bytes"])])
        crl_runs = [verifier(trust, "crl", "--issuer", "ica") for _ in range(3)]
        logged = verifier(trust, "crl", "--issuer", "ica", "--require-logged")
        assert crl_runs[0][1]["result"]["crls"][0]["entries"] == args.crl_entries
        results["crl"] = {
            "wall_s_median": round(statistics.median(w for w, _ in crl_runs), 3),
            "with_require_logged_s": round(logged[0], 3),
            "bytes": crl_runs[0][1]["bytes"],
        }
        results["crl peer: openssl crl -verify"] = {"wall_s": round(openssl_crl(built, work), 3)}
        wall, out = verifier(trust, "audit")
        res = out["result"]
        assert res["problem_count"] == 0, res["problems"][:5]
        results["audit"] = {
            "entries": res["size"],
            "seconds": res["seconds"],
            "entries_per_second": round(res["entries_per_second"]),
            "wall_s": round(wall, 1),
            "requests": res["requests"],
            "mbytes": round(res["bytes"] / 1e6, 1),
        }
        return results
    finally:
        httpd.shutdown()
        httpd.server_close()


def _summary(runs: list[tuple[float, int, int]]) -> dict[str, Any]:
    return {
        "wall_s_median": round(statistics.median(r[0] for r in runs), 3),
        "wall_s_max": round(max(r[0] for r in runs), 3),
        "requests_max": max(r[1] for r in runs),
        "bytes_median": int(statistics.median(r[2] for r in runs)),
    }


def verifier_help() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(VERIFIER), "--version"], capture_output=True, check=True)
    return time.perf_counter() - t0


def openssl_crl(built: dict[str, Any], work: Path) -> float:
    pub = built["config"].root
    chain = work / "chain.pem"
    chain.write_bytes((pub / "pki" / "iki-root.pem").read_bytes() + (pub / "pki" / "ica.pem").read_bytes())
    argv = [OPENSSL, "crl", "-inform", "DER", "-in", str(pub / "crl" / "ica.crl"), "-CAfile", str(chain)]
    t0 = time.perf_counter()
    result = subprocess.run([*argv, "-noout", "-verify"], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if "verify OK" not in result.stdout + result.stderr:
        raise SystemExit(f"openssl crl -verify failed: {result.stderr}")
    return wall


def report(results: dict[str, Any]) -> str:
    inc = results["inclusion"]
    absent = results["inclusion (proven absence)"]
    exhaustive = results["inclusion (--exhaustive)"]
    audit = results["audit"]
    lines = [
        f"Verifier benchmark: {results['entries']:,}-entry log, {results['crl_entries']:,}-entry CRL, "
        "HTTP on 127.0.0.1",
        f"  interpreter start + imports (--version):       {results['interpreter_start_s']:.3f} s",
        f"  inclusion --hash: {inc['requests_max']} requests, {inc['bytes_median']:,} bytes, "
        f"{inc['wall_s_median']:.3f} s median / {inc['wall_s_max']:.3f} s max wall "
        f"(targets <= {TARGET_INCLUSION_REQUESTS} requests, < {TARGET_INCLUSION_SECONDS} s)",
        f"  inclusion --hash, proven absence: {absent['requests_max']} requests, {absent['bytes_median']:,} bytes, "
        f"{absent['wall_s_median']:.3f} s median / {absent['wall_s_max']:.3f} s max wall",
        f"  inclusion --hash --exhaustive (every entry): {exhaustive['requests_max']:,} requests, "
        f"{exhaustive['bytes_median'] / 1e6:,.1f} MB, {exhaustive['wall_s_median']:.1f} s wall",
        f"  crl --issuer ica ({results['crl_entries']:,} entries, {results['crl']['bytes']:,} bytes): "
        f"{results['crl']['wall_s_median']:.3f} s wall; with --require-logged "
        f"{results['crl']['with_require_logged_s']:.3f} s",
        f"  peer: openssl crl -verify on the same CRL: {results['crl peer: openssl crl -verify']['wall_s']:.3f} s",
        f"  audit: {audit['entries']:,} entries in {audit['seconds']:.1f} s = {audit['entries_per_second']:,} "
        f"entries/s (target >= {TARGET_AUDIT_RATE:,}); {audit['requests']:,} requests, {audit['mbytes']:,} MB; "
        f"{audit['wall_s']:.1f} s wall",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--crl-entries", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=7, help="inclusion queries per mode")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR and keep it")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cpl-verify-bench-"))
    if args.keep and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = measure(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1) if args.json else report(results))
    ok = (
        results["inclusion"]["requests_max"] <= TARGET_INCLUSION_REQUESTS
        and results["inclusion"]["wall_s_median"] < TARGET_INCLUSION_SECONDS
        and results["audit"]["entries_per_second"] >= TARGET_AUDIT_RATE
    )
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
