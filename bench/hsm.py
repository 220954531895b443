"""HSM benchmark: signing through a PKCS#11 token (SoftHSM2) against file keys, in one run.

1. CRL refresh of the issuing CA at 100,000 revoked serials (the size can be changed), end to end as
   ``bench/crl.py`` times it (load the register, build, sign, check, write durably), for two
   publications holding the same register: one whose CA keys are files, one whose CA keys are inside a
   fresh SoftHSM2 token. The breakdown's ``sign`` part is the whole of ``sign_crl`` (encoding included);
   ``token`` is the time spent inside the token call (session, login, C_Sign). The peer's figure,
   ``openssl ca -gencrl`` with the file key on the same revocations, is taken in the same run.
2. Checkpoint signing: one Ed25519 note signature (``Signer.signature_line``) with the log key from a
   file against the log key in the token.
3. A bare signature: ECDSA P-256 over a CRL-sized TBS with the file key against the token.

The issue's claim to check: a CRL refresh through the token stays dominated by encoding, not by the token.

    .venv/bin/python bench/hsm.py                        # 100,000 entries; 3 CRL runs, 200 signatures each
    .venv/bin/python bench/hsm.py --size 10000 --repeats 5 --json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cryptography
from crl import (
    ISSUER,
    OPENSSL_MD,
    ORIGIN,
    ROOT,
    SITE_URL,
    index_lines,
    make_revocations,
    note,
    openssl_config,
    openssl_once,
    openssl_version,
    ours_once,
    register_lines,
    summary,
    timed_calls,
    verify_with_openssl,
)
from cryptography.hazmat.primitives import hashes
from options import add_run_options

from publisher import demo, hsm, keys, publication
from publisher.config import Config, TokenKey, load
from publisher.pki import crl_publish, registers
from publisher.publication import now_utc
from publisher.scaffold import init_publication
from publisher.tlog.checkpoint import Checkpoint
from publisher.tlog.merkle import EMPTY_ROOT
from publisher.tlog.signer import load_log_signer

PIN_ENV = "CPL_BENCH_HSM_PIN"


def _register(config: Config, lines: bytes) -> None:
    register = config.root / registers.REVOCATIONS
    register.parent.mkdir(parents=True, exist_ok=True)
    register.write_bytes(lines)


def _crl_runs(config: Config, size: int, repeats: int, label: str, progress: bool) -> dict[str, Any]:
    issuer = config.issuer(ISSUER)
    crl_publish.refresh(config, force=True)  # warm-up and the first CRL (the next ones check against it)
    runs, token = [], []
    for r in range(repeats):
        inside: dict[str, float] = {}
        with timed_calls(inside, [(hsm, "_sign", "token")]):
            runs.append(ours_once(config, issuer, size))
        token.append(inside.get("token", 0.0))
        note(progress, f"[{label}] CRL run {r + 1}/{repeats}: {runs[-1]['total']:.2f} s (token {token[-1]:.4f} s)")
    result = {k: summary([x[k] for x in runs]) for k in ("total", "sign", "check", "write", "load")}
    result["token"] = summary(token)
    return result


def _per_call(fn: Callable[[], object], count: int) -> dict[str, Any]:
    fn()  # warm-up
    times = []
    for _ in range(count):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3, "count": count}


def run(args: argparse.Namespace) -> dict[str, Any]:
    progress = not args.quiet
    base = Path(tempfile.mkdtemp(prefix="hsm-bench-", dir=args.dir))
    out: dict[str, Any] = {
        "size": args.size,
        "repeats": args.repeats,
        "signatures": args.signatures,
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "openssl": openssl_version(),
        "softhsm_module": str(demo.softhsm_module()),
        "cpus": os.cpu_count(),
    }
    saved = os.environ.get("SOFTHSM2_CONF")
    try:
        note(progress, f"creating two publications (file keys, SoftHSM2 token) in {base} ...")
        files_pub = base / "files" / "publication"
        init_publication(files_pub, base / "files" / "keys", SITE_URL, ORIGIN)
        made = demo.new_softhsm_token(base / "token", "bench")
        os.environ[PIN_ENV] = (base / "token" / "user-pin").read_text().strip()
        token = TokenKey(made.uri, made.module, pin_env=PIN_ENV)  # the PIN from the environment, as in CI
        token_pub = base / "token-pub" / "publication"
        init_publication(token_pub, None, SITE_URL, ORIGIN, token=token)
        file_config, token_config = load(files_pub), load(token_pub)

        note(progress, f"generating {args.size:,} revocations ...")
        now = now_utc()
        revs = make_revocations(args.size, now)
        lines = register_lines(revs)
        for config in (file_config, token_config):
            _register(config, lines)
        os.sync()
        out["crl"] = {
            "files": _crl_runs(file_config, args.size, args.repeats, "file keys", progress),
            "token": _crl_runs(token_config, args.size, args.repeats, "SoftHSM2", progress),
        }
        ossl = base / "openssl"
        ossl.mkdir()
        (ossl / "index.txt").write_bytes(index_lines(revs, now + dt.timedelta(days=365)))
        conf = openssl_config(
            ossl,
            file_config.issuer(ISSUER).certificate,
            base / "files" / "keys" / f"{ISSUER}.key",
            OPENSSL_MD[keys.DEFAULT_ALGORITHM],
            file_config.crl_url(ISSUER),
        )
        openssl_once(conf, ossl / "crl.pem")
        peer = [openssl_once(conf, ossl / "crl.pem") for _ in range(args.repeats)]
        out["crl"]["openssl"] = summary(peer)
        note(progress, f"[openssl ca -gencrl] median {statistics.median(peer):.2f} s")
        chain = base / "chain.pem"
        chain.write_bytes(b"".join((token_pub / "pki" / f"{n}.pem").read_bytes() for n in (ROOT, ISSUER)))
        out["crl"]["token_crl_verifies"] = verify_with_openssl(
            token_pub / publication.CRL_DIR / f"{ISSUER}.crl", "DER", chain
        )

        note(
            progress, f"timing {args.signatures} checkpoint signatures and {args.signatures} ECDSA signatures each ..."
        )
        text = Checkpoint(ORIGIN, args.size, EMPTY_ROOT).body()
        file_log = load_log_signer(file_config.log_key, file_config.root, file_config.origin)
        token_log = load_log_signer(token_config.log_key, token_config.root, token_config.origin)
        out["checkpoint"] = {
            "files": _per_call(lambda: file_log.signature_line(text), args.signatures),
            "token": _per_call(lambda: token_log.signature_line(text), args.signatures),
        }
        tbs = (token_pub / publication.CRL_DIR / f"{ISSUER}.crl").read_bytes()
        file_ica = keys.load_issuer_key(file_config.issuer(ISSUER).key, file_config.root)
        token_ica = keys.load_issuer_key(token_config.issuer(ISSUER).key, token_config.root)
        out["ecdsa_over_crl"] = {
            "bytes": len(tbs),
            "files": _per_call(lambda: file_ica.sign(tbs, hashes.SHA256()), args.signatures),
            "token": _per_call(lambda: token_ica.sign(tbs, hashes.SHA256()), args.signatures),
        }
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved
        os.environ.pop(PIN_ENV, None)
        shutil.rmtree(base, ignore_errors=True)
        out["cleaned_up"] = not base.exists()
    crl = out["crl"]
    out["token_share_of_refresh"] = crl["token"]["token"]["median"] / crl["token"]["total"]["median"]
    out["refresh_ratio_token_to_files"] = crl["token"]["total"]["median"] / crl["files"]["total"]["median"]
    return out


def render(r: dict[str, Any]) -> str:
    c = r["crl"]
    f, t = c["files"], c["token"]
    return "\n".join(
        [
            f"HSM benchmark: SoftHSM2 ({r['softhsm_module']}) against file keys; Python {r['python']}, "
            f"cryptography {r['cryptography']}, {r['openssl']}, {r['cpus']} CPUs; medians (min)",
            "",
            f"CRL refresh, {r['size']:,} entries, {r['repeats']} runs each:",
            f"  file keys      {f['total']['median']:.3f} s ({f['total']['min']:.3f})"
            f"  sign_crl {f['sign']['median']:.3f} s",
            f"  SoftHSM2 token {t['total']['median']:.3f} s ({t['total']['min']:.3f})"
            f"  sign_crl {t['sign']['median']:.3f} s, of which in the token {t['token']['median'] * 1e3:.1f} ms",
            f"  openssl ca -gencrl (file key) {c['openssl']['median']:.3f} s ({c['openssl']['min']:.3f})",
            f"  token/file refresh ratio {r['refresh_ratio_token_to_files']:.3f}; "
            f"the token's share of the refresh {100 * r['token_share_of_refresh']:.2f}%",
            f"  openssl verifies the token's CRL: {c['token_crl_verifies'][1]!r}",
            "",
            f"Checkpoint signature (Ed25519), {r['checkpoint']['files']['count']} each:"
            f" file key {r['checkpoint']['files']['median_ms']:.3f} ms,"
            f" token {r['checkpoint']['token']['median_ms']:.3f} ms",
            f"ECDSA P-256 over the {r['ecdsa_over_crl']['bytes']:,}-byte CRL:"
            f" file key {r['ecdsa_over_crl']['files']['median_ms']:.3f} ms,"
            f" token {r['ecdsa_over_crl']['token']['median_ms']:.3f} ms",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="revoked serials on the CRL (default: 100,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed CRL refreshes per key store (default: 3)")
    parser.add_argument("--signatures", type=int, default=200, help="timed signatures per key store (default: 200)")
    add_run_options(parser)
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
