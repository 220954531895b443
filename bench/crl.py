"""CRL benchmark: the publisher's CRL refresh against ``openssl ca -gencrl`` on the same revocations.

For each size (default 10,000, 100,000 and 1,000,000 revoked serials) in one run:

1. ours: the issuing CA's CRL refresh end to end, as ``crl_publish.refresh`` does it for
   one issuer (``revocations_for`` + ``current`` + ``publish_one``): load the register,
   reserve a CRL number, build and sign, check (parse, verify, retention against the
   previous CRL), write ``crl/`` durably. The root's ARL is left out; one full
   ``refresh(force=True)`` (both issuers) runs untimed-for-the-target as the warm-up.
   A breakdown is taken from the same runs by timing the calls ``publish_one`` makes;
2. the peer: ``openssl ca -gencrl`` with the same key and certificate on an ``index.txt``
   holding the same revocations (same serials, dates, reasons and invalidity dates), wall
   time of the subprocess. openssl ca writes PEM and does not fsync.

Both CRLs are checked once per size (not timed): ``openssl crl -verify`` against the
publication's chain, and their revokedCertificates fields compared byte for byte.
Target (issue): at 1,000,000 entries, ours takes at most half of OpenSSL's time.

    .venv/bin/python bench/crl.py                       # 10k, 100k, 1M; 3 repeats each
    .venv/bin/python bench/crl.py --sizes 10000 --repeats 5 --json
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import datetime as dt
import gc
import hashlib
import io
import json
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cryptography
from options import add_run_options

from publisher import fsio, keys, publication
from publisher.config import Config, IssuerConfig, load
from publisher.pki import crl_publish, der, registers
from publisher.pki.registers import RevocationRecord
from publisher.publication import now_utc
from publisher.scaffold import init_publication

SITE_URL = "http://127.0.0.1:8000"
ORIGIN = "bench.example/log"
ISSUER = "ica"
ROOT = "iki-root"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
TARGET_SIZE = 1_000_000
TARGET_RATIO = 0.5
SEED = 20_240_601

# Reasons both sides can express: openssl ca's index has no privilegeWithdrawn or aACompromise.
# (reason, weight, share of records that also carry an invalidity date)
REASON_MIX = (
    ("unspecified", 40, 0.0),
    ("keyCompromise", 15, 0.5),
    ("cACompromise", 5, 0.5),
    ("affiliationChanged", 10, 0.0),
    ("superseded", 20, 0.0),
    ("cessationOfOperation", 10, 0.0),
)
# Our reason names -> openssl ca index names; with an invalidity date the index says
# keyTime / CAkeyTime (reason keyCompromise / cACompromise plus an invalidityDate entry extension).
OPENSSL_REASON = {
    "keyCompromise": "keyCompromise",
    "cACompromise": "CACompromise",
    "affiliationChanged": "affiliationChanged",
    "superseded": "superseded",
    "cessationOfOperation": "cessationOfOperation",
}
OPENSSL_REASON_WITH_DATE = {"keyCompromise": "keyTime", "cACompromise": "CAkeyTime"}
OPENSSL_MD = {"ec-p256": "sha256", "ec-p384": "sha384", "rsa-3072": "sha256", "rsa-4096": "sha256"}

# Labels of the calls timed inside publish_one (see ``timed_calls``).
PARTS = ("load", "sign", "check", "pem", "write", "other")


# -- helpers -----------------------------------------------------------------------------
def note(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def parse_sizes(text: str) -> list[int]:
    sizes = [int(x.replace("_", "").strip()) for x in text.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers, comma separated")
    return sorted(set(sizes))


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utctime(when: dt.datetime) -> str:
    return when.strftime("%y%m%d%H%M%SZ")


def _gentime(when: dt.datetime) -> str:
    return when.strftime("%Y%m%d%H%M%SZ")


# -- the revocations ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rev:
    serial: int
    revoked_at: dt.datetime
    reason: str
    invalidity_date: dt.datetime | None


def make_revocations(count: int, now: dt.datetime, seed: int = SEED) -> list[Rev]:
    """``count`` distinct revocations in random serial order: serials of 16-20 random bytes
    (positive, so they encode in at most that many octets), revocation times spread over the
    last two years to the second, the reason mix above, some invalidity dates."""
    rng = random.Random(seed)
    names = [r for r, _, _ in REASON_MIX]
    weights = [w for _, w, _ in REASON_MIX]
    dated = {r: p for r, _, p in REASON_MIX}
    span = 2 * 365 * 86400
    seen: set[int] = set()
    out = []
    reasons = rng.choices(names, weights, k=count)
    for reason in reasons:
        while True:
            nbytes = rng.randint(16, 20)
            serial = rng.getrandbits(8 * nbytes - 1)
            if serial and serial not in seen:
                break
        seen.add(serial)
        revoked_at = now - dt.timedelta(seconds=rng.randrange(3600, span))
        invalidity = None
        if dated[reason] and rng.random() < dated[reason]:
            invalidity = revoked_at - dt.timedelta(seconds=rng.randrange(60, 30 * 86400))
        out.append(Rev(serial, revoked_at, reason, invalidity))
    return out


def _record(rev: Rev) -> RevocationRecord:
    return RevocationRecord(
        issuer=ISSUER,
        serial=f"{rev.serial:x}",
        reason=rev.reason,
        revoked_at=_iso(rev.revoked_at),
        recorded_at=_iso(rev.revoked_at + dt.timedelta(seconds=1)),
        invalidity_date=_iso(rev.invalidity_date) if rev.invalidity_date else None,
        ref=None,
        unknown_serial=True,  # these serials are not in the issued register
    )


def register_lines(revs: Sequence[Rev]) -> bytes:
    """Canonical JSON Lines exactly as ``registers.append`` writes them (sorted keys, compact)."""
    first = _record(revs[0]) if revs else None
    if first is not None and vars(first) != dataclasses.asdict(first):
        raise AssertionError("RevocationRecord is not flat any more: use dataclasses.asdict")
    parts = []
    for rev in revs:
        parts.append(registers.line_of(_record(rev)))
    return b"".join(parts)


def index_lines(revs: Sequence[Rev], expiry: dt.datetime) -> bytes:
    """openssl ca database lines: ``R  expiry  revdate[,reason[,invalidity]]  SERIAL  unknown  /CN=...``."""
    exp = _utctime(expiry)
    out = []
    for rev in revs:
        revinfo = _utctime(rev.revoked_at)
        if rev.invalidity_date is not None:
            revinfo += f",{OPENSSL_REASON_WITH_DATE[rev.reason]},{_gentime(rev.invalidity_date)}"
        elif rev.reason != "unspecified":
            revinfo += f",{OPENSSL_REASON[rev.reason]}"
        serial = f"{rev.serial:X}"
        if len(serial) % 2:
            serial = "0" + serial  # openssl ca wants an even number of hex digits
        out.append(f"R\t{exp}\t{revinfo}\t{serial}\tunknown\t/CN=revoked\n")
    return "".join(out).encode()


# -- ours ----------------------------------------------------------------------------------
@contextlib.contextmanager
def timed_calls(timings: dict[str, float], targets: Sequence[tuple[object, str, str]]) -> Iterator[list[str]]:
    """Wrap ``owner.attr`` so the time spent in it adds up under ``label``; restore afterwards.

    Yields the labels that could not be wrapped (attribute missing).
    """
    saved: list[tuple[object, str, Callable[..., Any]]] = []
    missing = []
    for owner, attr, label in targets:
        fn = getattr(owner, attr, None)
        if fn is None:
            missing.append(label)
            continue

        def wrapper(*args: Any, _fn: Callable[..., Any] = fn, _label: str = label, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                timings[_label] = timings.get(_label, 0.0) + time.perf_counter() - t

        setattr(owner, attr, wrapper)
        saved.append((owner, attr, fn))
    try:
        yield missing
    finally:
        for owner, attr, fn in reversed(saved):
            setattr(owner, attr, fn)


def _targets() -> list[tuple[object, str, str]]:
    # fsio.write_files is every durable write publish_one makes (the CRL-number reservation,
    # the archive copy, then .crl/.pem/.json together).
    return [
        (crl_publish, "sign_crl", "sign"),
        (crl_publish, "check_crl", "check"),
        (crl_publish, "to_pem", "pem"),
        (fsio, "write_files", "write"),
    ]


def ours_once(config: Config, issuer: IssuerConfig, expect: int) -> dict[str, float]:
    """One refresh of the issuing CA's CRL; total seconds and the breakdown."""
    timings: dict[str, float] = {}
    gc.collect()
    with timed_calls(timings, _targets()):
        t0 = time.perf_counter()
        revs, digest = crl_publish.revocations_for(config, issuer.name)
        t1 = time.perf_counter()
        previous, _meta = crl_publish.current(config, issuer.name)
        info = crl_publish.publish_one(config, issuer, revs, digest, previous, now_utc())
        t2 = time.perf_counter()
    if info.entries != expect:
        raise AssertionError(f"our CRL has {info.entries} entries, expected {expect}")
    timings["load"] = t1 - t0
    timings["total"] = t2 - t0
    timings["other"] = timings["total"] - sum(timings.get(p, 0.0) for p in PARTS if p != "other")
    del revs, previous
    return timings


def profile_ours(config: Config, issuer: IssuerConfig, expect: int, lines: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    ours_once(config, issuer, expect)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    return out.getvalue()


# -- openssl -------------------------------------------------------------------------------
def openssl_config(workdir: Path, cert: Path, key: Path, md: str, crl_url: str) -> Path:
    text = f"""[ca]
default_ca = bench

[bench]
database = {workdir / "index.txt"}
crlnumber = {workdir / "crlnumber"}
certificate = {cert}
private_key = {key}
default_md = {md}
default_crl_days = 7
unique_subject = no
crl_extensions = crl_ext

[crl_ext]
authorityKeyIdentifier = keyid:always
issuingDistributionPoint = critical, @idp

[idp]
fullname = URI:{crl_url}
onlyuser = TRUE
"""
    path = workdir / "ca.cnf"
    path.write_text(text)
    (workdir / "crlnumber").write_text("01\n")
    return path


def openssl_once(conf: Path, out: Path) -> float:
    cmd = ["openssl", "ca", "-config", str(conf), "-gencrl", "-batch", "-out", str(out)]
    gc.collect()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, cwd=conf.parent, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"openssl ca -gencrl failed: {proc.stderr.decode(errors='replace')}")
    return elapsed


def openssl_version() -> str:
    return subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True).stdout.strip()


# -- checks (not timed) --------------------------------------------------------------------
def verify_with_openssl(crl: Path, fmt: str, chain: Path) -> tuple[bool, str]:
    cmd = ["openssl", "crl", "-inform", fmt, "-in", str(crl), "-CAfile", str(chain), "-noout", "-verify"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    msg = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0 and "verify OK" in proc.stdout + proc.stderr, msg[-1] if msg else ""


def pem_to_der(pem: Path, out: Path) -> bytes:
    cmd = ["openssl", "crl", "-in", str(pem), "-outform", "DER", "-out", str(out)]
    subprocess.run(cmd, capture_output=True, check=True)
    return out.read_bytes()


def revoked_field(data: bytes) -> bytes:
    """The revokedCertificates field of a DER CRL (empty if absent)."""
    _, pos, _ = der.read_header(data, 0)  # CertificateList
    _, pos, tbs_end = der.read_header(data, pos)  # TBSCertList
    for _ in range(3):  # version, signature, issuer
        _, _, pos = der.read_header(data, pos)
    for _ in range(2):  # thisUpdate, nextUpdate (UTCTime or GeneralizedTime)
        if pos < tbs_end and data[pos] in (0x17, 0x18):
            _, _, pos = der.read_header(data, pos)
    if pos < tbs_end and data[pos] == 0x30:
        _, _, end = der.read_header(data, pos)
        return data[pos:end]
    return b""


# -- the run ---------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    progress = not args.quiet
    sizes: list[int] = args.sizes
    base = Path(tempfile.mkdtemp(prefix="crl-bench-", dir=args.dir))
    out: dict[str, Any] = {
        "sizes": sizes,
        "repeats": args.repeats,
        "algorithm": args.algorithm,
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "openssl": openssl_version(),
        "cpus": os.cpu_count(),
        "dir": str(base),
        "results": [],
    }
    try:
        pub, keys_dir, ossl = base / "publication", base / "keys", base / "openssl"
        note(progress, f"creating a publication ({args.algorithm}) in {base} ...")
        init_publication(pub, keys_dir, SITE_URL, ORIGIN, algorithm=args.algorithm)
        config = load(pub)
        issuer = config.issuer(ISSUER)
        chain = base / "chain.pem"
        chain.write_bytes((pub / "pki" / f"{ROOT}.pem").read_bytes() + (pub / "pki" / f"{ISSUER}.pem").read_bytes())
        ossl.mkdir()
        conf = openssl_config(
            ossl,
            issuer.certificate,
            keys_dir / f"{ISSUER}.key",
            OPENSSL_MD[args.algorithm],
            config.crl_url(ISSUER),
        )

        now = now_utc()
        note(progress, f"generating {max(sizes):,} revocations ...")
        t = time.perf_counter()
        revs = make_revocations(max(sizes), now)
        note(progress, f"generated in {time.perf_counter() - t:.1f} s")
        register = pub / registers.REVOCATIONS
        register.parent.mkdir(parents=True, exist_ok=True)
        index = ossl / "index.txt"
        expiry = now + dt.timedelta(days=365)
        written = 0
        for n in sizes:
            # The sets are nested (each size extends the previous one), so the retention check
            # against the previous CRL holds when the register grows.
            note(progress, f"[{n:,}] writing {n - written:,} more register records and index lines ...")
            with register.open("ab") as f:
                f.write(register_lines(revs[written:n]))
            with index.open("ab") as f:
                f.write(index_lines(revs[written:n], expiry))
            written = n
            os.sync()  # no dirty setup data left for the timed fsyncs to flush
            res: dict[str, Any] = {"size": n, "register_bytes": register.stat().st_size}

            # Warm-up, also the first CRL at this size: the full refresh (both issuers), one run.
            gc.collect()
            t = time.perf_counter()
            done = crl_publish.refresh(config, force=True)
            res["full_refresh_1_run_s"] = time.perf_counter() - t
            entries = {r.issuer: r.info.entries for r in done}
            if entries.get(ISSUER) != n:
                raise AssertionError(f"refresh published {entries}, expected {n} entries for {ISSUER}")
            note(progress, f"[{n:,}] refresh(force=True), both issuers, warm-up: {res['full_refresh_1_run_s']:.2f} s")

            runs = []
            for r in range(args.repeats):
                runs.append(ours_once(config, issuer, n))
                note(progress, f"[{n:,}] ours run {r + 1}/{args.repeats}: {runs[-1]['total']:.2f} s")
            res["ours"] = {k: summary([x.get(k, 0.0) for x in runs]) for k in ("total", *PARTS)}

            openssl_out = ossl / f"crl-{n}.pem"
            openssl_once(conf, openssl_out)  # warm-up
            peer = []
            for r in range(args.repeats):
                peer.append(openssl_once(conf, openssl_out))
                note(progress, f"[{n:,}] openssl run {r + 1}/{args.repeats}: {peer[-1]:.2f} s")
            res["openssl"] = summary(peer)
            res["ratio"] = res["ours"]["total"]["median"] / res["openssl"]["median"]

            # Checks and sizes, not timed.
            ours_der_path = pub / publication.CRL_DIR / f"{ISSUER}.crl"
            ours_der = ours_der_path.read_bytes()
            peer_der = pem_to_der(openssl_out, ossl / f"crl-{n}.der")
            ok_ours, msg_ours = verify_with_openssl(ours_der_path, "DER", chain)
            ok_peer, msg_peer = verify_with_openssl(openssl_out, "PEM", chain)
            ours_revoked, peer_revoked = revoked_field(ours_der), revoked_field(peer_der)
            res["ours_der_bytes"] = len(ours_der)
            res["ours_pem_bytes"] = (pub / publication.CRL_DIR / f"{ISSUER}.pem").stat().st_size
            res["openssl_der_bytes"] = len(peer_der)
            res["openssl_pem_bytes"] = openssl_out.stat().st_size
            res["ours_verifies"] = {"ok": ok_ours, "openssl_says": msg_ours}
            res["openssl_verifies"] = {"ok": ok_peer, "openssl_says": msg_peer}
            res["revoked_entries_identical"] = ours_revoked == peer_revoked
            res["revoked_field_sha256"] = hashlib.sha256(ours_revoked).hexdigest()
            note(
                progress,
                f"[{n:,}] verify ours: {msg_ours}; openssl's: {msg_peer}; "
                f"revokedCertificates identical: {res['revoked_entries_identical']}",
            )
            out["results"].append(res)

        if args.profile:
            n = sizes[-1]
            note(progress, f"[{n:,}] profiling one more of our runs (cProfile) ...")
            out["profile"] = profile_ours(config, issuer, n, args.profile)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        out["cleaned_up"] = not base.exists()

    at_target = [r for r in out["results"] if r["size"] == TARGET_SIZE]
    out["target"] = {
        "size": TARGET_SIZE,
        "max_ratio": TARGET_RATIO,
        "measured": bool(at_target),
        "met": bool(at_target) and at_target[0]["ratio"] <= TARGET_RATIO,
    }
    return out


# -- output ----------------------------------------------------------------------------
def render(r: dict[str, Any]) -> str:
    lines = [
        f"CRL benchmark: {r['algorithm']}, {r['repeats']} timed run{'s' if r['repeats'] != 1 else ''} per size "
        "and side (median, min), "
        f"Python {r['python']}, cryptography {r['cryptography']}, {r['openssl']}, {r['cpus']} CPUs",
        "",
    ]
    headers = ("size", "ours median (min) s", "openssl median (min) s", "ours/openssl", "our DER B", "openssl DER B")
    rows = []
    for x in r["results"]:
        o, p = x["ours"]["total"], x["openssl"]
        rows.append(
            (
                f"{x['size']:,}",
                f"{o['median']:.3f} ({o['min']:.3f})",
                f"{p['median']:.3f} ({p['min']:.3f})",
                f"{x['ratio']:.2f}",
                f"{x['ours_der_bytes']:,}",
                f"{x['openssl_der_bytes']:,}",
            )
        )
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    lines.append(fmt.format(*headers))
    lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
    lines += [fmt.format(*row) for row in rows]
    lines.append("")
    lines.append("breakdown of ours, median s per part (load = register -> revocations; other = key/cert load,")
    lines.append("previous CRL read, number reservation logic, JSON; write = every durable write incl. fsync):")
    bh = ("size", *PARTS, "full refresh x1")
    brow = [
        (
            f"{x['size']:,}",
            *(f"{x['ours'][p]['median']:.3f}" for p in PARTS),
            f"{x['full_refresh_1_run_s']:.3f}",
        )
        for x in r["results"]
    ]
    bw = [max(len(row[i]) for row in [bh, *brow]) for i in range(len(bh))]
    bfmt = "  ".join(f"{{:>{w}}}" for w in bw)
    lines.append(bfmt.format(*bh))
    lines += [bfmt.format(*row) for row in brow]
    lines.append("")
    for x in r["results"]:
        lines.append(
            f"{x['size']:,}: openssl crl -verify ours: {x['ours_verifies']['openssl_says']!r}, "
            f"openssl's: {x['openssl_verifies']['openssl_says']!r}; revokedCertificates byte-identical: "
            f"{x['revoked_entries_identical']}; PEM bytes ours {x['ours_pem_bytes']:,}, "
            f"openssl {x['openssl_pem_bytes']:,}; register {x['register_bytes']:,} B"
        )
    t = r["target"]
    if t["measured"]:
        ratio = next(x["ratio"] for x in r["results"] if x["size"] == t["size"])
        verdict = "PASS" if t["met"] else "FAIL"
        lines.append(
            f"target: at {t['size']:,} entries ours <= {t['max_ratio']:.1f} x openssl: ratio {ratio:.2f} -> {verdict}"
        )
    else:
        lines.append(f"target: applies at {t['size']:,} entries (not measured in this run)")
    lines.append(
        "ours: revocations_for + current + publish_one for the issuing CA (reserve number, build, sign, "
        "check_crl, write .crl/.pem/.json + archive, fsynced); full refresh x1 = refresh(force=True), "
        "both issuers, the untimed warm-up."
    )
    lines.append(
        "openssl: `openssl ca -gencrl` wall time (parses index.txt, sorts, signs, writes PEM; no fsync), "
        "same key, certificate, entries and CRL extensions."
    )
    lines.append(f"temp dir {r['dir']} removed: {r['cleaned_up']}")
    if r.get("profile"):
        lines.append("")
        lines.append(r["profile"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark the publisher's CRL refresh against `openssl ca -gencrl` on the same revocations.",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        metavar="N1,N2",
        help="revoked serials per CRL (default 10000,100000,1000000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size and side (default %(default)s)")
    parser.add_argument(
        "--algorithm",
        choices=keys.ALGORITHMS,
        default=keys.DEFAULT_ALGORITHM,
        help="issuer key algorithm (default %(default)s)",
    )
    add_run_options(parser, "after the timings, cProfile one more of our runs at the largest size and print LINES rows")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if shutil.which("openssl") is None:
        parser.error("openssl is not on PATH")

    result = run(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
