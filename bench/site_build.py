"""Site build and deploy benchmark: a publication of N logged associations (default 100,000).

From one run:

1. the publish time (intake of signed CSV submissions, logging, commit);
2. a full ``mkdocs build`` (clean): seconds, files and bytes of the site, by kind;
3. one more submission published, then the incremental build (``mkdocs build --dirty``): seconds and what it
   rewrote; and a build over the unchanged publication;
4. unless ``--no-deploy``: a full deploy (``cpl-publisher deploy``) to SeaweedFS on 127.0.0.1 and the
   incremental deploy after the extra submission (objects, bytes, seconds), with the peer from the same run:
   a plain copy of every file with boto3 ``put_object`` (what "upload the whole site" costs, no guards).

Targets (issue #13): at 1,000,000 entries the site under 1 GB and 50,000 files; an incremental build after one
submission under 10 s; an incremental deploy uploads fewer than 50 objects.

    .venv/bin/python bench/site_build.py                          # 100,000 entries, 50 rows per submission
    .venv/bin/python bench/site_build.py --entries 1000000 --rows 1000 --json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the one SeaweedFS starter, with its loopback-only flags

from bench.options import add_run_options  # noqa: E402
from publisher import demo, parties, publication, scaffold  # noqa: E402
from publisher.config import load as load_config  # noqa: E402
from publisher.deploy import site_files  # noqa: E402
from publisher.publish import init_repository, publish  # noqa: E402
from publisher.site.state import cache_dir  # noqa: E402

MAKERS = 10
LIMIT = 2 * 1024 * 1024
QUIET = False


def log(msg: str) -> None:
    if not QUIET:
        print(msg, file=sys.stderr, flush=True)


class Publication:
    """The benchmark's publication: ten manufacturers and a supplier, submissions of ``rows`` rows."""

    def __init__(self, out: Path, rows: int) -> None:
        self.root = out / "publication"
        self.rows = rows
        scaffold.init_publication(self.root, out / "keys", "http://127.0.0.1:8000", "bench.example/log")
        init_repository(self.root)
        self.config = load_config(self.root)
        self.now = publication.now_utc()
        certs = out / "certs"
        self.makers = [
            parties.issue_party(self.config, f"Maker {k}", f"{1001 + k}", "Manufacturer", self.now, folder=certs)
            for k in range(MAKERS)
        ]
        self.supplier = parties.issue_party(self.config, "Supplier", "2001", "Supplier", self.now, folder=certs)
        publish(self.config, self.now)
        self.submissions = 0
        self.publishes = 1

    def submit(self, rows: int) -> None:
        s = self.submissions
        maker = self.makers[s % MAKERS]
        lines = [
            (maker.org_id, maker.name, f"M-{s}-{k}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(f"{s}/{k}"))
            for k in range(rows)
        ]
        demo.submit(self.root, f"B{s:06d}", lines, [maker, self.supplier])
        self.submissions += 1

    def publish(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        # Now, not a fixed time: a submission signed later than its approval (plus the skew) is refused.
        at = max(publication.now_utc(), self.now + dt.timedelta(seconds=self.publishes))
        result = publish(self.config, at, show_progress=not QUIET)
        self.publishes += 1
        if result.intake.rejected:
            raise SystemExit(f"rejected: {sorted(result.intake.rejected)[:5]}")
        accepted = sum(len(v) for v in result.intake.accepted.values())
        return {"entries": accepted, "log_size": result.size, "seconds": round(time.perf_counter() - t0, 2)}


def mkdocs(publication_root: Path, site: Path, dirty: bool) -> dict[str, Any]:
    env = {**os.environ, "CPL_PUBLICATION": str(publication_root), "NO_MKDOCS_2_WARNING": "1"}
    argv = [sys.executable, "-m", "mkdocs", "build", "--quiet", *(["--dirty"] if dirty else []), "-d", str(site)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mkdocs build failed:\n{proc.stdout}\n{proc.stderr}")
    report: dict[str, Any] = json.loads((cache_dir(site) / "last-build.json").read_text())
    return {"seconds": round(elapsed, 2), **{k: report[k] for k in report if k != "seconds"}}


def kind_of(rel: str) -> str:
    for prefix, kind in (
        ("log/tile/entries/", "entry bundles"),
        ("log/tile/", "hash tiles"),
        ("log/evidence/", "evidence"),
        ("log/lookup/", "lookup"),
        ("search/", "search shards"),
        ("firmware/", "firmware pages"),
        ("crl/", "CRLs"),
    ):
        if rel.startswith(prefix):
            return kind
    return "other (theme, pages, verifier)"


def measure_site(site: Path) -> dict[str, Any]:
    files = list(site_files(site))
    sizes = {p.relative_to(site).as_posix(): p.stat().st_size for p in files}
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for rel, n in sizes.items():
        count[kind_of(rel)] += 1
        size[kind_of(rel)] += n
    pages = [rel for rel in sizes if rel.endswith(".html")]
    largest = max(pages, key=lambda rel: sizes[rel])
    not_log = [rel for rel in sizes if not rel.startswith("log/")]
    largest_file = max(not_log, key=lambda rel: sizes[rel])
    du = subprocess.run(["du", "-sk", str(site)], capture_output=True, text=True, check=True).stdout.split()[0]
    total = sum(sizes.values())
    return {
        "files": len(files),
        "bytes": total,
        "du_kib": int(du),
        "html_pages": len(pages),
        "largest_page": f"{largest} ({sizes[largest]:,} bytes)",
        "largest_non_log_file": f"{largest_file} ({sizes[largest_file]:,} bytes)",
        "by_kind": {k: {"files": count[k], "bytes": size[k]} for k in sorted(count)},
        "target_files_met": len(files) < 50_000,
        "target_bytes_met": total < 10**9,
        "page_target_met": sizes[largest] <= LIMIT and sizes[largest_file] <= LIMIT,
    }


def deploy(site: Path, bucket: str, server: Any) -> dict[str, Any]:
    argv = [sys.executable, "-m", "publisher", "--json", "deploy", str(site), f"s3://{bucket}/cpl"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*argv, "--endpoint-url", server.endpoint], cwd=REPO, env=server.env(), capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"deploy failed: {proc.stderr}")
    report = json.loads(proc.stdout)
    return {
        "seconds": round(elapsed, 2),
        "objects_uploaded": report["uploaded"],
        "bytes_uploaded": report["uploaded_bytes"],
        "unchanged": report["unchanged"],
        "checkpoint": report["checkpoint"],
    }


def plain_copy(site: Path, bucket: str, server: Any) -> dict[str, Any]:
    """The peer: every file put with boto3, 8 threads, no listing, no conditions, no checks."""
    client = server.client()
    files = list(site_files(site))
    t0 = time.perf_counter()

    def put(path: Path) -> int:
        data = path.read_bytes()
        client.put_object(Bucket=bucket, Key="copy/" + path.relative_to(site).as_posix(), Body=data)
        return len(data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        sent = sum(pool.map(put, files))
    return {"seconds": round(time.perf_counter() - t0, 2), "objects": len(files), "bytes": sent}


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"entries": args.entries, "rows_per_submission": args.rows}
    pub = Publication(out, args.rows)
    subs = (args.entries + args.rows - 1) // args.rows
    log(f"writing {subs} submissions of {args.rows} rows")
    t0 = time.perf_counter()
    for s in range(subs):
        pub.submit(min(args.rows, args.entries - s * args.rows))
        if s % 500 == 0:
            log(f"  submissions written: {s}/{subs}")
    figures["prepare_s"] = round(time.perf_counter() - t0, 2)
    log("publishing")
    figures["publish"] = pub.publish()
    site = out / "site"
    log("full build (mkdocs build)")
    figures["full_build"] = mkdocs(pub.root, site, dirty=False)
    figures["site"] = measure_site(site)
    log(json.dumps(figures))
    server = bucket = None
    if args.deploy:
        from s3_fixtures import start_seaweedfs

        server = start_seaweedfs(out / "seaweedfs")
        bucket = server.new_bucket()
        log("full deploy")
        figures["full_deploy"] = deploy(site, bucket, server)
        log("peer: plain copy of every file")
        figures["peer_plain_copy"] = plain_copy(site, bucket, server)
        log(json.dumps({k: figures[k] for k in ("full_deploy", "peer_plain_copy")}))
    try:
        log(f"one more submission ({args.extra_rows} rows), published")
        pub.submit(args.extra_rows)
        figures["extra_publish"] = pub.publish()
        log("incremental build (mkdocs build --dirty)")
        figures["incremental_build"] = mkdocs(pub.root, site, dirty=True)
        figures["incremental_build"]["target_met"] = figures["incremental_build"]["seconds"] < 10
        log("build over the unchanged publication")
        figures["unchanged_build"] = mkdocs(pub.root, site, dirty=True)
        if server is not None and bucket is not None:
            log("incremental deploy")
            figures["incremental_deploy"] = deploy(site, bucket, server)
            figures["incremental_deploy"]["target_met"] = figures["incremental_deploy"]["objects_uploaded"] < 50
    finally:
        if server is not None:
            from s3_fixtures import stop_seaweedfs

            stop_seaweedfs(server)
    return figures


def main(argv: list[str] | None = None) -> int:
    global QUIET
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000, help="association entries (default 100,000)")
    parser.add_argument("--rows", type=int, default=50, help="rows per submission (default 50)")
    parser.add_argument("--extra-rows", type=int, default=5, help="rows of the one extra submission (default 5)")
    parser.add_argument("--no-deploy", dest="deploy", action="store_false", help="skip the SeaweedFS deploys")
    add_run_options(parser)
    args = parser.parse_args(argv)
    QUIET = args.quiet
    with tempfile.TemporaryDirectory(prefix="cpl-site-bench-", dir=args.dir) as tmp:
        figures = run(args, Path(tmp))
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        for key, value in flat(figures):
            print(f"{key:>48}: {value}")
    return 0


def flat(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key, value in figures.items():
        if isinstance(value, dict):
            out += flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", f"{value:,}" if isinstance(value, int) else value))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
