"""Crash injection for intake: SIGKILL a child running ``run_intake`` at random points.

Each round puts 10 to 20 valid submissions in the inbox and starts a child
that runs intake over them. The child is killed either by the parent after a
random delay, or by itself: it wraps ``os.replace``, ``os.fsync`` and the
``publisher.fsio`` primitives (and ``TileLog.append`` to know the phase) and
SIGKILLs itself at the K-th call of a chosen phase: writing the evidence
files, the log append, or the moves to ``processed/``. Half the time the
next child is killed early too (in the log's recovery, or while it completes
the moves of submissions already logged). After each kill the state must be
consistent; then intake runs again in the parent until the inbox is empty,
and every submission must be logged exactly once (all its rows, with its
submission id), moved to ``processed/`` with its files unchanged, with its
evidence stored, and the log must verify. ``CRASH_SEED`` replays a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from intake_fixtures import Pub, World, build_world, row, sign_folder, write_request

from publisher.entries import ASSOCIATION_TYPE
from verifier.cpl_verify import SHEET_COLUMNS as COLUMNS

SEED = int(os.environ.get("CRASH_SEED", "20261128"))  # fixed: a failure replays; CRASH_SEED explores others
REPO = Path(__file__).resolve().parent.parent
MIN_KILLS = 24
TIME_BUDGET = 60.0  # seconds of kill rounds at most; it stops at MIN_KILLS kills and 3 in each phase

CHILD = """
import json, os, signal, sys, threading, time
from pathlib import Path

root, target = Path(sys.argv[1]), sys.argv[2]
target_phase, _, target_k = target.partition(":")
lock = threading.Lock()
phase = "open"
counts = {}


def tick():
    with lock:
        counts[phase] = counts.get(phase, 0) + 1
        if phase == target_phase and counts[phase] >= int(target_k):
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)


def wrap(owner, name):
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        tick()
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


from publisher import fsio
from publisher.tlog import TileLog

for name in ("replace", "fsync"):
    wrap(os, name)
for name in ("write_files", "write_file", "fsync_dir", "remove_files"):
    wrap(fsio, name)
real_append = TileLog.append


def append(self, entries):
    global phase
    phase = "append"
    result = real_append(self, entries)
    phase = "move"
    return result


TileLog.append = append

from publisher.config import load
from publisher.intake.run import run_intake
from publisher.tlog.signer import load_log_signer

config = load(root)
signer = load_log_signer(config.log_key, config.root)
print("READY", flush=True)
with TileLog.open(root / "log", signer) as log:
    phase = "evidence"
    report = run_intake(config, log)
print("DONE", json.dumps(counts, separators=(",", ":")), json.dumps(report.to_json()), flush=True)
"""


@dataclass
class Expected:
    """What the parent knows it submitted (submission id -> image hashes of its rows), and kill statistics."""

    rows: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # submission id -> file name -> SHA-256
    rounds: int = 0
    kills: int = 0
    by_phase: dict[str, int] = field(default_factory=dict)  # deterministic kills per phase
    by_delay: int = 0
    logged_not_moved: int = 0  # kills that left logged submissions in the inbox
    completed: int = 0  # submissions a later run found logged and only moved


@dataclass
class Child:
    returncode: int
    ops: dict[str, int]
    report: dict[str, object] | None
    elapsed: float  # from READY to exit


def run_child(script: Path, pub: Pub, target: str = "none:0", delay: float | None = None) -> Child:
    """Run intake in a child; it kills itself at ``phase:k`` (k-th file operation of the phase), or the
    parent kills it ``delay`` seconds after it is ready."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(pub.root), target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    start = time.monotonic()
    if ready.strip() != "READY":
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"child did not start: {ready!r} {err}")
    if delay is not None:
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - start
    ops: dict[str, int] = {}
    report = None
    for line in out.splitlines():
        if line.startswith("DONE "):
            _, counts, data = line.split(" ", 2)
            ops, report = json.loads(counts), json.loads(data)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}): {err}")
    return Child(proc.returncode, ops, report, elapsed)


def make_batch(pub: Pub, expected: Expected, number: int, rng: random.Random) -> None:
    """Put ``number`` valid submissions (1 to 3 rows each, new device models) in the inbox."""
    styles = ["pkcs7"] * 6 + ["resign", "separate", "countersign", "pem"]
    for i in range(number):
        sid = f"r{expected.rounds:02d}-s{i:02d}"
        rows = [row(f"{sid}-m{j}") for j in range(rng.randint(1, 3))]
        folder = pub.folder(sid)
        sheet = folder / "sheet.csv"
        lines = [",".join(COLUMNS)] + [",".join(r[c] for c in COLUMNS) for r in rows]
        sheet.write_bytes("\r\n".join(lines).encode() + b"\r\n")
        sign_folder(pub.world, folder, sheet, "acme", "supplier", rng.choice(styles))
        write_request(folder, {"submitter_ref": f"SUB-{sid}", "panel_ref": "PANEL-CRASH"})
        expected.rows[sid] = [r["image_hash"] for r in rows]
        expected.files[sid] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def check_state(pub: Pub, expected: Expected, complete: bool) -> int:
    """Every submission is logged exactly once with all its rows (and moved) or not at all (and in the inbox).

    Returns how many logged submissions are still in the inbox (a kill between the append and the moves).
    """
    reader = pub.reader()
    if complete:
        assert reader.verify_all() == reader.size
    entries = [json.loads(e) for e in reader.entries()]
    assert all(e["type"] == ASSOCIATION_TYPE for e in entries)
    logged: dict[str, list[str]] = {}
    for e in entries:
        logged.setdefault(e["submission_id"], []).append(e["image_sha256"])
        evidence = e["evidence"]
        for digest in [evidence["spreadsheet"], evidence["request"], *evidence["signatures"]]:
            data = (pub.log_dir / "evidence" / digest).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest
    assert set(logged) <= set(expected.rows), "the log holds a submission nobody made"
    models = [tuple(e["device_model"].values()) for e in entries]
    assert len(models) == len(set(models)), "a device model was logged twice"
    not_moved = 0
    for sid, hashes in expected.rows.items():
        in_inbox, in_processed = (pub.inbox / sid).exists(), (pub.processed / sid).exists()
        assert in_inbox != in_processed, f"{sid}: inbox {in_inbox}, processed {in_processed} (lost or duplicated)"
        assert not (pub.processed / f"{sid}.2").exists(), f"{sid} was moved twice"
        if sid in logged:
            assert logged[sid] == hashes, f"{sid}: logged rows {logged[sid]} != submitted {hashes}"
            not_moved += in_inbox
        else:
            assert in_inbox, f"{sid} is in processed/ but not in the log"
        if complete:
            assert in_processed and sid in logged, f"{sid} was not logged by a complete run"
        folder = pub.inbox / sid if in_inbox else pub.processed / sid
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        assert files == expected.files[sid], f"{sid}: files changed (a rejection report, a lost or stray file)"
    return not_moved


def after_kill(pub: Pub, expected: Expected) -> None:
    expected.kills += 1
    if check_state(pub, expected, complete=False):
        expected.logged_not_moved += 1


def finish(pub: Pub, expected: Expected) -> None:
    """Run intake in the parent until the inbox is empty; then everything must be logged exactly once."""
    for _ in range(3):
        report = pub.run()
        assert report.rejected == {}, {k: [str(f) for f in v] for k, v in report.rejected.items()}
        expected.completed += len(report.completed)
        if not any(pub.inbox.iterdir()):
            break
    assert not any(pub.inbox.iterdir())
    check_state(pub, expected, complete=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("crash-world"))


PHASES = ("evidence", "append", "move")  # the durable steps of a run after the log is open


def test_intake_survives_sigkill_anywhere(world: World, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    script = tmp_path / "intake_child.py"
    script.write_text(CHILD)
    pub = world.copy(tmp_path / "pub")
    expected = Expected()

    # Calibration: one full, unkilled run counts the file operations of each phase and times the run.
    make_batch(pub, expected, 12, rng)
    full = run_child(script, pub)
    assert full.returncode == 0 and full.report is not None
    assert len(full.report["accepted"]) == 12  # type: ignore[arg-type]
    assert all(full.ops.get(p, 0) > 0 for p in PHASES), full.ops
    check_state(pub, expected, complete=True)

    started = time.monotonic()
    while time.monotonic() - started < TIME_BUDGET and (
        expected.kills < MIN_KILLS or min(expected.by_phase.get(p, 0) for p in PHASES) < 3
    ):
        expected.rounds += 1
        number = rng.randint(10, 20)
        make_batch(pub, expected, number, rng)
        if expected.rounds % 4 == 0:
            child = run_child(script, pub, delay=rng.uniform(0, full.elapsed * 1.2))
            if child.returncode == -signal.SIGKILL:
                expected.by_delay += 1
        else:
            phase = PHASES[expected.rounds % 3]
            scale = number / 12 if phase != "append" else 1.0
            k = rng.randint(1, max(1, int(full.ops[phase] * scale)))
            child = run_child(script, pub, f"{phase}:{k}")
            if child.returncode == -signal.SIGKILL:
                expected.by_phase[phase] = expected.by_phase.get(phase, 0) + 1
        if child.returncode == -signal.SIGKILL:
            after_kill(pub, expected)
            if rng.random() < 0.5:  # kill the next run early too: in the log's recovery or while completing
                second = run_child(script, pub, f"{rng.choice(['open', 'evidence'])}:{rng.randint(1, 8)}")
                if second.returncode == -signal.SIGKILL:
                    after_kill(pub, expected)
                elif second.report is not None:
                    expected.completed += len(second.report["completed"])  # type: ignore[arg-type]
        finish(pub, expected)

    summary = (
        f"seed {SEED}: {expected.rounds} rounds, {len(expected.rows)} submissions, {expected.kills} kills "
        f"(at an operation: {expected.by_phase}; after a random delay: {expected.by_delay}); "
        f"{expected.logged_not_moved} kills left logged submissions in the inbox, "
        f"{expected.completed} submissions completed by a later run; calibration ops {full.ops}"
    )
    print(summary)
    assert expected.kills >= MIN_KILLS, summary
    assert all(expected.by_phase.get(p, 0) >= 3 for p in PHASES), summary
    assert expected.logged_not_moved > 0 and expected.completed > 0, summary
