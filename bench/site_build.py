"""Site build benchmark: a 100,000-entry publication.

From one run: the publish time (intake of signed CSV submissions of 50 rows each, logging,
commit), the ``mkdocs build`` time, the largest page, the total site size and file count.
Targets: build under 60 s, no page over 2 MB (log data excepted).

    .venv/bin/python bench/site_build.py                 # 100,000 entries
    .venv/bin/python bench/site_build.py --entries 5000 --json
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from publisher import (  # noqa: E402
    demo,
    parties,
    publication,
    scaffold,
)
from publisher.config import load as load_config  # noqa: E402
from publisher.publish import init_repository, publish  # noqa: E402

MAKERS = 10
LIMIT = 2 * 1024 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_publication(out: Path, entries: int, per_sub: int) -> dict[str, float]:
    pub = out / "publication"
    scaffold.init_publication(pub, out / "keys", "http://127.0.0.1:8000", "bench.example/log")
    init_repository(pub)
    config = load_config(pub)
    now = publication.now_utc()
    certs = out / "certs"
    makers = [
        parties.issue_party(config, f"Maker {k}", f"{1001 + k}", "Manufacturer", now, folder=certs)
        for k in range(MAKERS)
    ]
    supplier = parties.issue_party(config, "Supplier", "2001", "Supplier", now, folder=certs)
    publish(config, now)
    t0 = time.perf_counter()
    subs = (entries + per_sub - 1) // per_sub
    made = 0
    for s in range(subs):
        maker = makers[s % MAKERS]
        n = min(per_sub, entries - made)
        rows: list[tuple[str, ...]] = [
            (maker.org_id, maker.name, f"M-{s}-{k}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(f"{s}/{k}"))
            for k in range(n)
        ]
        demo.submit(pub, f"B{s:06d}", rows, [maker, supplier])
        made += n
        if s % 500 == 0:
            log(f"  submissions written: {s}/{subs}")
    prepare = time.perf_counter() - t0
    log(f"publishing {subs} submissions ({made} rows)")
    t0 = time.perf_counter()
    result = publish(config, now + dt.timedelta(seconds=1))
    elapsed = time.perf_counter() - t0
    accepted = sum(len(v) for v in result.intake.accepted.values())
    if result.intake.rejected:
        log(f"  rejected: {sorted(result.intake.rejected)[:5]}")
    return {
        "submissions": subs,
        "entries_logged": accepted,
        "log_size": result.size,
        "prepare_s": round(prepare, 2),
        "publish_s": round(elapsed, 2),
        "publish_entries_per_s": round(accepted / elapsed, 1) if elapsed else 0.0,
    }


def build_site(publication: Path, site: Path) -> dict[str, object]:
    env = {**os.environ, "CPL_PUBLICATION": str(publication), "NO_MKDOCS_2_WARNING": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--quiet", "-d", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mkdocs build failed:\n{proc.stdout}\n{proc.stderr}")
    files = [p for p in site.rglob("*") if p.is_file()]
    pages = [p for p in files if p.suffix == ".html"]
    largest = max(pages, key=lambda p: p.stat().st_size)
    not_log = [p for p in files if not p.relative_to(site).as_posix().startswith("log/")]
    largest_file = max(not_log, key=lambda p: p.stat().st_size)
    du = subprocess.run(["du", "-sk", str(site)], capture_output=True, text=True, check=True).stdout.split()[0]
    apparent = sum(p.stat().st_size for p in files)
    return {
        "build_s": round(elapsed, 2),
        "files": len(files),
        "html_pages": len(pages),
        "largest_page": largest.relative_to(site).as_posix(),
        "largest_page_bytes": largest.stat().st_size,
        "largest_non_log_file": largest_file.relative_to(site).as_posix(),
        "largest_non_log_file_bytes": largest_file.stat().st_size,
        "site_bytes": apparent,
        "site_du_kib": int(du),
        "build_target_met": elapsed < 60,
        "page_target_met": largest.stat().st_size <= LIMIT and largest_file.stat().st_size <= LIMIT,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000, help="association entries (default 100,000)")
    parser.add_argument("--rows", type=int, default=50, help="rows per submission (default 50)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cpl-site-bench-") as tmp:
        out = Path(tmp)
        log(f"building a publication of {args.entries} entries in {out}")
        figures: dict[str, object] = {"entries": args.entries, "rows_per_submission": args.rows}
        figures.update(make_publication(out, args.entries, args.rows))
        log("mkdocs build")
        figures.update(build_site(out / "publication", out / "site"))
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        for key, value in figures.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
