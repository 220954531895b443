"""Append benchmark for the tile-based transparency log, with pymerkle's in-memory tree as the peer.

Measures, in one run:

1. bulk append of N entries (~200 bytes each) into a fresh on-disk log, persisted
   (the engine fsyncs every file and signs a checkpoint per batch);
2. appending 1 entry to that log, with the log open and including ``TileLog.open``,
   and how many files each append writes;
3. appending 1,000 entries to that log, and the files written;
4. pymerkle ``InmemoryTree`` appending the same entries (in memory, nothing persisted).

Small measurements are repeated (the machine may be shared and noisy); the
median and the best (min time / max rate) are printed.

    .venv/bin/python bench/log_append.py                 # full size, 1,000,000 entries
    .venv/bin/python bench/log_append.py --entries 100000 --json
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from options import add_run_options

from publisher.tlog import TileLog
from publisher.tlog.note import Signer

ORIGIN = "bench.example/log"
ENTRY_SIZE = 200
DEFAULT_ENTRIES = 1_000_000
DEFAULT_BATCH = 65_536
SMALL_BATCH = 1_000

# Targets from the brief.
TARGET_BULK_RATE = 200_000  # entries/s, persisted
TARGET_APPEND1_MS = 50.0
TARGET_APPEND1_FILES = 8
TARGET_APPEND1K_MS = 200.0

PEER_BUDGET_S = 60.0  # measure pymerkle on a prefix if the full run would take longer
PEER_PREFIX = 100_000
PEER_CALIBRATION = 20_000

_DEVICE_TYPES = ("ESME", "GSME", "CHF", "GPF", "PPMID", "IHD", "HCALCS")


# -- entries -----------------------------------------------------------------------------
def make_entry(i: int) -> bytes:
    """Entry ``i``: a canonical JSON record (sorted keys, no whitespace) padded to exactly 200 bytes."""
    digest = hashlib.sha256(i.to_bytes(8, "big")).hexdigest()
    head = (
        f'{{"device_type":"{_DEVICE_TYPES[i % len(_DEVICE_TYPES)]}",'
        f'"firmware_version":"{i // 17}.{i % 10}","image_hash":"{digest}","index":{i},"pad":"'
    )
    tail = '","type":"bench-entry/v1"}'
    pad = ENTRY_SIZE - len(head) - len(tail)
    if pad < 0:
        raise ValueError(f"entry {i} does not fit in {ENTRY_SIZE} bytes")
    return (head + "." * pad + tail).encode()


def make_entries(start: int, count: int) -> list[bytes]:
    return [make_entry(i) for i in range(start, start + count)]


def _check_entry_format() -> None:
    for i in (0, 1, 123_456, 10**9):
        raw = make_entry(i)
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
        if raw != canonical or len(raw) != ENTRY_SIZE:
            raise AssertionError(f"entry {i} is not {ENTRY_SIZE}-byte canonical JSON")


# -- helpers -----------------------------------------------------------------------------
class StderrProgress:
    """``label: done/total (pct) rate`` on stderr; rewrites one line on a terminal, throttled otherwise."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = sys.stderr.isatty()
        self.interval = 0.25 if self.tty else 2.0
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < self.interval and done < self.total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        msg = f"{self.label}: {done:,}/{self.total:,} ({100 * done / self.total:.0f}%) {done / elapsed:,.0f} entries/s"
        end = "\r" if self.tty and done < self.total else "\n"
        print(msg.ljust(78) if self.tty else msg, end=end, file=sys.stderr, flush=True)


def note(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


FileState = tuple[int, int, int, int]  # inode, mtime_ns, ctime_ns, size


def snapshot(root: Path) -> dict[str, FileState]:
    """Every file under ``root`` with what changes when it is written or replaced."""
    state: dict[str, FileState] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            state[rel] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
    return state


@dataclass
class FileDiff:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return len(self.new) + len(self.changed)


def diff(before: dict[str, FileState], after: dict[str, FileState]) -> FileDiff:
    d = FileDiff()
    for rel, st in after.items():
        if rel not in before:
            d.new.append(rel)
        elif before[rel] != st:
            d.changed.append(rel)
    d.removed = [rel for rel in before if rel not in after]
    return d


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def parse_batch(text: str) -> int:
    """A batch size; ``all`` (or 0) means the whole set in one append."""
    if text.strip().lower() in ("all", "0"):
        return 0
    value = int(text.replace("_", "").replace(",", ""))
    if value < 0:
        raise argparse.ArgumentTypeError("batch size must be positive (or 'all')")
    return value


def batch_label(batch: int) -> str:
    return "all at once" if batch == 0 else f"{batch:,}"


# -- measurements ----------------------------------------------------------------------
def bulk_append(root: Path, signer: Signer, entries: list[bytes], batch: int, label: str, progress: bool) -> float:
    """Append ``entries`` to a fresh log at ``root`` in batches; return the seconds taken (appends only)."""
    step = batch or len(entries)
    log = TileLog.create(root, signer)
    try:
        bar = StderrProgress(label, len(entries), progress)
        gc.collect()
        t0 = time.perf_counter()
        for pos in range(0, len(entries), step):
            result = log.append(entries[pos : pos + step])
            bar.update(result.size)
        elapsed = time.perf_counter() - t0
        if log.size != len(entries):
            raise AssertionError(f"log size {log.size}, expected {len(entries)}")
        return elapsed
    finally:
        log.close()


@dataclass
class SmallAppend:
    ms: list[float] = field(default_factory=list)
    open_ms: list[float] = field(default_factory=list)
    engine_files: list[int] = field(default_factory=list)
    observed_files: list[int] = field(default_factory=list)
    removed_files: list[int] = field(default_factory=list)
    example_paths: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ms": summary(self.ms),
            "files_written_engine": summary(self.engine_files),
            "files_written_observed": summary(self.observed_files),
            "files_removed_observed": summary(self.removed_files),
            "example_written_paths": self.example_paths,
        }
        if self.open_ms:
            out["open_ms"] = summary(self.open_ms)
        return out


def small_appends(
    root: Path, signer: Signer, next_index: int, count: int, repeats: int, *, reopen: bool, log: TileLog | None
) -> tuple[SmallAppend, int]:
    """Append ``count`` entries ``repeats`` times; time each (optionally including ``TileLog.open``)."""
    res = SmallAppend()
    for _ in range(repeats):
        batch = make_entries(next_index, count)
        next_index += count
        before = snapshot(root)
        gc.collect()
        if reopen:
            t0 = time.perf_counter()
            opened = TileLog.open(root, signer)
            t1 = time.perf_counter()
            try:
                result = opened.append(batch)
                t2 = time.perf_counter()
            finally:
                opened.close()
            res.open_ms.append((t1 - t0) * 1e3)
            res.ms.append((t2 - t0) * 1e3)
        else:
            assert log is not None
            t0 = time.perf_counter()
            result = log.append(batch)
            t2 = time.perf_counter()
            res.ms.append((t2 - t0) * 1e3)
        d = diff(before, snapshot(root))
        res.engine_files.append(result.files_written)
        res.observed_files.append(d.written)
        res.removed_files.append(len(d.removed))
        if not res.example_paths:
            res.example_paths = sorted(d.new + d.changed)
        if result.size != next_index:
            raise AssertionError(f"log size {result.size}, expected {next_index}")
    return res, next_index


def peer_rate(entries: list[bytes], progress: bool) -> float:
    """pymerkle InmemoryTree.append_entries on a fresh tree; entries/s."""
    from pymerkle import InmemoryTree

    tree = InmemoryTree()
    gc.collect()
    t0 = time.perf_counter()
    tree.append_entries(entries)
    elapsed = time.perf_counter() - t0
    if tree.get_size() != len(entries):
        raise AssertionError("pymerkle tree has the wrong size")
    del tree
    gc.collect()
    note(progress, f"pymerkle: {len(entries):,} entries in {elapsed:.2f} s ({len(entries) / elapsed:,.0f} entries/s)")
    return len(entries) / elapsed


def peer_check_root(entries: list[bytes], ours_root: bytes) -> bool:
    """Both implement RFC 9162 hashing, so pymerkle's root must equal ours on the same entries."""
    from pymerkle import InmemoryTree

    tree = InmemoryTree()
    tree.append_entries(entries)
    root: bytes = tree.get_root()
    return root == ours_root


# -- the run ---------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.entries
    progress = not args.quiet
    _check_entry_format()
    signer = Signer.generate(ORIGIN)

    note(progress, f"generating {n:,} entries of {ENTRY_SIZE} bytes ...")
    t = time.perf_counter()
    entries = make_entries(0, n)
    note(progress, f"generated in {time.perf_counter() - t:.1f} s")

    base = Path(tempfile.mkdtemp(prefix="tlog-bench-", dir=args.dir))
    out: dict[str, Any] = {
        "entries": n,
        "entry_bytes": ENTRY_SIZE,
        "batch": min(args.batch, n) or n,
        "batch_label": batch_label(args.batch),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "dir": str(base),
    }
    try:
        # 1. Bulk append: repeated into fresh logs; the last one is kept for the small appends.
        times = []
        log_root = base / "log-0"
        for r in range(args.bulk_repeats):
            if r:
                shutil.rmtree(log_root)
                os.sync()  # let the deletion's journal work finish before the next timed run
                log_root = base / f"log-{r}"
            label = f"bulk append run {r + 1}/{args.bulk_repeats} (batch {batch_label(args.batch)})"
            times.append(bulk_append(log_root, signer, entries, args.batch, label, progress))
        rates = [n / s for s in times]
        out["bulk"] = {
            "seconds": summary(times),
            "rate": {"median": statistics.median(rates), "best": max(rates), "runs": rates},
            "target_rate": TARGET_BULK_RATE,
            "met": statistics.median(rates) >= TARGET_BULK_RATE,
        }

        # Batch-size comparison (one run each at full size).
        compare = []
        for b in args.compare_batches:
            if b == args.batch:
                continue
            root = base / f"cmp-{b}"
            s = bulk_append(root, signer, entries, b, f"compare batch {batch_label(b)}", progress)
            shutil.rmtree(root)
            os.sync()
            compare.append({"batch": b or n, "batch_label": batch_label(b), "seconds": s, "rate": n / s})
        out["batch_comparison"] = compare

        # 2./3. Small appends to the full log.
        next_index = n
        log = TileLog.open(log_root, signer)
        try:
            ours_root = log.root_hash
            out["log_files"] = sum(1 for p in log_root.rglob("*") if p.is_file())
            note(progress, f"appending 1 entry x{args.repeats} to the {n:,}-entry log (open) ...")
            one, next_index = small_appends(log_root, signer, next_index, 1, args.repeats, reopen=False, log=log)
            note(progress, f"appending {SMALL_BATCH:,} entries x{args.repeats} (open) ...")
            thousand, next_index = small_appends(
                log_root, signer, next_index, SMALL_BATCH, args.repeats, reopen=False, log=log
            )
        finally:
            log.close()
        note(progress, f"TileLog.open + append 1 entry + close x{args.repeats} ...")
        one_open, next_index = small_appends(log_root, signer, next_index, 1, args.repeats, reopen=True, log=None)
        out["append_1"] = one.as_dict() | {
            "target_ms": TARGET_APPEND1_MS,
            "target_files": TARGET_APPEND1_FILES,
            "met": statistics.median(one.ms) < TARGET_APPEND1_MS
            and max(one.engine_files + one.observed_files) <= TARGET_APPEND1_FILES,
        }
        out["append_1_with_open"] = one_open.as_dict()
        out["append_1000"] = thousand.as_dict() | {
            "target_ms": TARGET_APPEND1K_MS,
            "met": statistics.median(thousand.ms) < TARGET_APPEND1K_MS,
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
        out["cleaned_up"] = not base.exists()

    # 4. The peer: pymerkle's in-memory tree, on the same entries.
    calib = min(n, PEER_CALIBRATION)
    calib_rate = peer_rate(entries[:calib], progress=False)
    projected = n / calib_rate
    prefix = n if projected <= args.peer_budget else min(n, PEER_PREFIX)
    note(progress, f"pymerkle: projected {projected:.0f} s for {n:,} entries; measuring {prefix:,}")
    peer = [peer_rate(entries[:prefix], progress) for _ in range(args.peer_repeats)]
    roots_agree = peer_check_root(entries[: min(n, 4096)], _root_of_prefix(entries[: min(n, 4096)]))
    out["peer"] = {
        "name": "pymerkle.InmemoryTree",
        "version": _pymerkle_version(),
        "entries_measured": prefix,
        "prefix_only": prefix < n,
        "projected_full_seconds": projected,
        "rate": {"median": statistics.median(peer), "best": max(peer), "runs": peer},
        "roots_agree_with_ours": roots_agree,
        "note": "in memory, nothing persisted or signed",
    }
    out["ratio_ours_over_peer"] = out["bulk"]["rate"]["median"] / out["peer"]["rate"]["median"]
    out["root_after_bulk"] = ours_root.hex()
    return out


def _root_of_prefix(entries: list[bytes]) -> bytes:
    from publisher.tlog.merkle import leaf_hash, root_of

    return root_of([leaf_hash(e) for e in entries])


def _pymerkle_version() -> str:
    import pymerkle

    return str(pymerkle.__version__)


# -- output ----------------------------------------------------------------------------
def _ok(met: bool) -> str:
    return "PASS" if met else "MISS"


def render(r: dict[str, Any]) -> str:
    n = r["entries"]
    lines = [
        f"tlog append benchmark: {n:,} entries x {r['entry_bytes']} B, batch {r['batch_label']}, "
        f"Python {r['python']}, {r['cpus']} CPUs",
        "",
    ]
    rows: list[tuple[str, str, str, str, str]] = []

    def add(what: str, median: str, best: str, target: str, status: str) -> None:
        rows.append((what, median, best, target, status))

    b = r["bulk"]
    add(
        f"1. bulk append {n:,} (persisted, signed), x{len(b['seconds']['runs'])}",
        f"{b['rate']['median']:,.0f} /s",
        f"{b['rate']['best']:,.0f} /s",
        f">= {b['target_rate']:,} /s",
        _ok(b["met"]),
    )
    add("   ... wall time", f"{b['seconds']['median']:.2f} s", f"{b['seconds']['min']:.2f} s", "", "")
    add("   ... each run", ", ".join(f"{x / 1000:,.0f}k" for x in b["rate"]["runs"]), "", "", "")
    for c in r["batch_comparison"]:
        add(f"   batch {c['batch_label']} (1 run, for comparison)", f"{c['rate']:,.0f} /s", "", "", "")

    a1 = r["append_1"]
    k = len(a1["ms"]["runs"])
    add(
        f"2. append 1 entry, log open, x{k}",
        f"{a1['ms']['median']:.2f} ms",
        f"{a1['ms']['min']:.2f} ms",
        f"< {a1['target_ms']:.0f} ms",
        _ok(a1["met"]),
    )
    add(
        "   files written (engine count / observed on disk)",
        f"{a1['files_written_engine']['median']:.0f} / {a1['files_written_observed']['median']:.0f}",
        f"max {a1['files_written_engine']['max']} / {a1['files_written_observed']['max']}",
        f"<= {a1['target_files']}",
        "",
    )
    ao = r["append_1_with_open"]
    add(
        "   append 1 entry incl. TileLog.open + close",
        f"{ao['ms']['median']:.2f} ms",
        f"{ao['ms']['min']:.2f} ms",
        "",
        "",
    )
    add("   ... of which TileLog.open", f"{ao['open_ms']['median']:.2f} ms", f"{ao['open_ms']['min']:.2f} ms", "", "")
    add(
        "   files written incl. open (engine / observed)",
        f"{ao['files_written_engine']['median']:.0f} / {ao['files_written_observed']['median']:.0f}",
        f"max {ao['files_written_engine']['max']} / {ao['files_written_observed']['max']}",
        "",
        "",
    )
    a3 = r["append_1000"]
    add(
        f"3. append 1,000 entries, log open, x{len(a3['ms']['runs'])}",
        f"{a3['ms']['median']:.2f} ms",
        f"{a3['ms']['min']:.2f} ms",
        f"< {a3['target_ms']:.0f} ms",
        _ok(a3["met"]),
    )
    add(
        "   files written (engine count / observed on disk)",
        f"{a3['files_written_engine']['median']:.0f} / {a3['files_written_observed']['median']:.0f}",
        f"max {a3['files_written_engine']['max']} / {a3['files_written_observed']['max']}",
        "",
        "",
    )
    p = r["peer"]
    scope = f"prefix {p['entries_measured']:,} of {n:,}" if p["prefix_only"] else f"{p['entries_measured']:,}"
    add(
        f"4. pymerkle {p['version']} InmemoryTree, {scope}, x{len(p['rate']['runs'])}",
        f"{p['rate']['median']:,.0f} /s",
        f"{p['rate']['best']:,.0f} /s",
        "",
        "",
    )
    add("   ratio ours (persisted) / pymerkle (in memory)", f"{r['ratio_ours_over_peer']:.2f}x", "", "", "")

    headers = ("measurement", "median", "best", "target", "")
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(5)]
    fmt = f"{{:<{widths[0]}}}  {{:>{widths[1]}}}  {{:>{widths[2]}}}  {{:<{widths[3]}}}  {{}}"
    lines.append(fmt.format(*headers).rstrip())
    lines.append("-" * (sum(widths) + 8))
    lines += [fmt.format(*row).rstrip() for row in rows]
    lines.append("")
    lines.append(
        f"log after bulk: {r['log_files']:,} files; 1-entry append wrote: {', '.join(a1['example_written_paths'])}"
    )
    lines.append(
        "files written: 'engine' is AppendResult.files_written (includes .state/pending.json, which is "
        "removed again); 'observed' counts files new or replaced under the log folder (inode/mtime/size)."
    )
    if p["prefix_only"]:
        lines.append(
            f"pymerkle measured on the first {p['entries_measured']:,} entries only: the full {n:,} "
            f"was projected at {p['projected_full_seconds']:.0f} s (budget {PEER_BUDGET_S:.0f} s)."
        )
    lines.append(
        f"pymerkle's root equals ours on the same entries: {p['roots_agree_with_ours']}. "
        "'best' is the fastest run (min time / max rate)."
    )
    lines.append(f"temp dir {r['dir']} removed: {r['cleaned_up']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark appends to the tile-based transparency log against pymerkle's in-memory tree.",
    )
    parser.add_argument(
        "--entries", type=int, default=DEFAULT_ENTRIES, help="entries in the bulk append (default %(default)s)"
    )
    parser.add_argument(
        "--batch",
        type=parse_batch,
        default=DEFAULT_BATCH,
        help="entries per append call in the bulk append, or 'all' (default %(default)s)",
    )
    parser.add_argument(
        "--compare-batches",
        type=lambda s: [parse_batch(x) for x in s.split(",") if x.strip()],
        default=[parse_batch("all")],
        metavar="B1,B2",
        help="other batch sizes to run once each for comparison ('' for none; default: all)",
    )
    parser.add_argument("--repeats", type=int, default=11, help="repeats of the small appends (default %(default)s)")
    parser.add_argument("--bulk-repeats", type=int, default=3, help="repeats of the bulk append (default %(default)s)")
    parser.add_argument("--peer-repeats", type=int, default=3, help="repeats of the pymerkle run (default %(default)s)")
    parser.add_argument(
        "--peer-budget",
        type=float,
        default=PEER_BUDGET_S,
        help=f"measure pymerkle on the first {PEER_PREFIX:,} entries if all would take longer (s, default %(default)s)",
    )
    add_run_options(parser)
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON results to this file")
    args = parser.parse_args(argv)
    if args.entries < 1 or args.repeats < 1 or args.bulk_repeats < 1 or args.peer_repeats < 1:
        parser.error("--entries and the repeat counts must be at least 1")

    result = run(args)
    text = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
