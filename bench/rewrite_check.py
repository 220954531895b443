"""Cost of the rewrite checks on a 1,000,000-entry publication, against a whole publish and ``git fsck``.

Builds a real publication (demo CA, two organisations, git), appends N
association entries to its log and commits them, then measures, each the
median of a few runs:

1. ``publish``'s HEAD check: every committed entry bundle, tile and stale
   partial recomputed top-down from HEAD's signed root (``check_head``),
   feeding the association index as publish does;
2. the pass it shares its reading with: the association index built from
   the log's entries alone (what publish did before the check); the
   difference 1. - 2. is what the check adds to a publish;
3. a whole ``publish`` taking in one new submission (which includes 1.);
4. ``history verify`` over the repository (every commit; entries hashed once);
5. the HEAD check alone, and the peer ``git fsck --full`` on the same
   repository (git's own hashing of every object).

    .venv/bin/python bench/rewrite_check.py                  # 1,000,000 entries
    .venv/bin/python bench/rewrite_check.py --entries 100000 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import git

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from publication_fixtures import new_publication
from site_fixtures import write_submission

from publisher import demo
from publisher.entries import ASSOCIATION_TYPE, canonical_json
from publisher.intake.associations import AssociationIndex
from publisher.intake.run import index_of
from publisher.publish import check_head, committed_checkpoint, publish
from publisher.publish.history import verify_history
from publisher.tlog import TileLog, open_log
from publisher.tlog.signer import load_log_signer

BATCH = 65_536


def entry(i: int) -> bytes:
    return canonical_json(
        {
            "type": ASSOCIATION_TYPE,
            "submission_id": f"BULK{i // 50:06d}",
            "device_model": {
                "manufacturer_id": "1001",
                "model_id": f"M{i}",
                "hardware_version": "1.0",
                "firmware_version": "1.0",
            },
            "image_sha256": f"{i:064x}",
            "evidence": {"spreadsheet": f"{i // 50:064x}"},
        }
    )


def timed(fn: Any, runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        p = new_publication(tmp, "bench.example/log")
        pub, config, maker, supplier = p.root, p.config, p.maker, p.supplier
        repo = git.Repo(pub)
        signer = load_log_signer(config.log_key, pub)
        print(f"building a {args.entries:,}-entry log ...", file=sys.stderr)
        with TileLog.open(pub / "log", signer) as log:
            for start in range(0, args.entries, BATCH):
                log.append([entry(i) for i in range(start, min(start + BATCH, args.entries))])
        repo.git.add("--all", "log")
        repo.git.execute(["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-qm", "bulk"])
        head_note = committed_checkpoint(repo)

        check, check_runs = timed(lambda: check_head(config, signer.verifier, head_note, AssociationIndex()), args.runs)
        index_only, _ = timed(lambda: index_of(open_log(config)), args.runs)
        alone, _ = timed(lambda: check_head(config, signer.verifier, head_note), args.runs)
        added = check - index_only
        counter = iter(range(10**6))

        def one_publish() -> None:
            n = next(counter)
            row = (maker.org_id, "Acme", f"NEW-{n}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(f"new{n}"))
            write_submission(pub, f"NEW{n:04d}", [row], [maker, supplier])
            assert publish(config).committed

        whole, publish_runs = timed(one_publish, args.runs)
        history, _ = timed(lambda: verify_history(repo, config.origin, [signer.verifier]), 1)
        fsck, _ = timed(lambda: subprocess.run(["git", "fsck", "--full", "--no-progress"], cwd=pub, check=True), 1)

    result = {
        "entries": args.entries,
        "check_head_s": round(check, 3),
        "check_head_runs": [round(t, 3) for t in check_runs],
        "publish_s": round(whole, 3),
        "publish_runs": [round(t, 3) for t in publish_runs],
        "index_only_s": round(index_only, 3),
        "check_adds_s": round(added, 3),
        "check_share_of_publish": round(added / whole, 3),
        "history_verify_s": round(history, 3),
        "peer_git_fsck_s": round(fsck, 3),
        "check_alone_s": round(alone, 3),
        "check_alone_vs_git_fsck": round(alone / fsck, 3),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(
            f"Rewrite checks on a {args.entries:,}-entry publication (medians of {args.runs}):\n"
            f"  HEAD check + association index (one pass)      {check:.3f} s\n"
            f"  association index alone (the shared reading)   {index_only:.3f} s\n"
            f"  what the check adds                            {added:.3f} s\n"
            f"  whole publish of one submission                {whole:.3f} s "
            f"(the check adds {added / whole:.0%} to it)\n"
            f"  history verify (all commits)                   {history:.3f} s\n"
            f"  HEAD check alone (no index)                    {alone:.3f} s\n"
            f"  peer: git fsck --full                          {fsck:.3f} s "
            f"(check alone / fsck = {alone / fsck:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
