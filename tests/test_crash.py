"""Crash injection: SIGKILL a writer at random points; the log must hold exactly the acknowledged batches.

Every kill targets the same log folder, in sequence; each child continues from
the size it finds. After each kill the log is reopened (which runs recovery)
and checked in full: every tile verifies, and the entries are exactly the
acknowledged ones in order, optionally followed by the one batch that was in
flight (it may have committed just before its ACK was printed), never part
of a batch.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from publisher.fsio import TEMP_MARK
from publisher.tlog import PENDING_FILE, LogReader, TileLog, merkle
from publisher.tlog.note import Signer
from publisher.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, parse_path

ORIGIN = "crash.example/log"
SIGNER = Signer.generate(ORIGIN)
CHILD = Path(__file__).with_name("crash_child.py")
REPO = CHILD.parent.parent
SEED = int(os.environ.get("CRASH_SEED", "20261128"))  # fixed: a failure replays; CRASH_SEED explores others

_spec = importlib.util.spec_from_file_location("crash_child", CHILD)
assert _spec and _spec.loader
crash_child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_child)


@dataclass
class CrashLog:
    """The log under test and what the parent knows must be in it."""

    root: Path
    expected: list[bytes] = field(default_factory=list)
    signed: tuple[int, bytes] = (0, merkle.EMPTY_ROOT)
    signed_sizes: set[int] = field(default_factory=lambda: {0})
    generation: int = 0
    kills: int = 0
    mid_batch: int = 0  # kills that landed while an append was running
    in_flight_kept: int = 0
    in_flight_lost: int = 0
    during_open: int = 0


@pytest.fixture(scope="module")
def crash_log(tmp_path_factory: pytest.TempPathFactory) -> CrashLog:
    root = tmp_path_factory.mktemp("crash") / "log"
    TileLog.create(root, SIGNER).close()
    return CrashLog(root)


@dataclass
class ChildRun:
    ready: int | None
    acks: list[tuple[int, int]]
    in_flight: tuple[int, int] | None


def parse_output(out: str, generation: int) -> ChildRun:
    ready = None
    acks: list[tuple[int, int]] = []
    trying: tuple[int, int] | None = None
    for line in out.splitlines():
        word, *nums = line.split()
        values = tuple(int(n) for n in nums)
        if word == "READY":
            ready = values[0]
        elif word == "TRY":
            assert trying is None, f"child {generation}: TRY without ACK before {line!r}"
            trying = (values[0], values[1])
        elif word == "ACK":
            assert (values[0], values[1]) == trying, f"child {generation}: {line!r} does not match TRY {trying}"
            acks.append(trying)
            trying = None
        else:
            raise AssertionError(f"child {generation}: unexpected output {line!r}")
    return ChildRun(ready, acks, trying)


def start_child(state: CrashLog, kill_after: int, seed: int) -> subprocess.Popen[str]:
    state.generation += 1
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(state.root), str(state.generation), str(seed), str(kill_after)],
        env={**os.environ, "CRASH_LOG_SKEY": SIGNER.skey},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def account(state: CrashLog, proc: subprocess.Popen[str], out: str, err: str) -> ChildRun:
    """Check the child died by SIGKILL and fold its acknowledged batches into ``expected``."""
    assert proc.returncode == -signal.SIGKILL, f"child {state.generation} exited {proc.returncode}:\n{err}"
    state.kills += 1
    run = parse_output(out, state.generation)
    if run.ready is None:
        state.during_open += 1
    else:
        assert run.ready == len(state.expected), f"child {state.generation} opened the log at {run.ready}"
    for first, count in run.acks:
        assert first == len(state.expected), f"child {state.generation} appended at {first}"
        state.expected += [crash_child.entry(i, state.generation) for i in range(first, first + count)]
        state.signed_sizes.add(len(state.expected))
    if run.in_flight:
        state.mid_batch += 1
        assert run.in_flight[0] == len(state.expected)
    return run


def check_no_leftovers(root: Path, size: int, signed_sizes: set[int], context: str) -> None:
    """Nothing of a discarded batch remains: no temporaries, no tile beyond a signed size."""
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        assert TEMP_MARK not in path.name, f"{context}: temporary file {rel} left in the published folder"
        if not path.is_file() or not rel.startswith("tile/"):
            continue
        tile = parse_path(rel)
        shift = TILE_HEIGHT * max(tile.level, 0)
        if tile.full:
            assert (tile.index + 1) * TILE_WIDTH <= size >> shift, f"{context}: {rel} is beyond size {size}"
        else:
            width = tile.index * TILE_WIDTH + tile.width
            assert any(s >> shift == width for s in signed_sizes), f"{context}: {rel} belongs to no signed size"


def check_after_crash(state: CrashLog, run: ChildRun, root: Path) -> None:
    """Reopen ``root`` (recovery), verify everything, and compare with the acknowledged entries."""
    context = f"seed {SEED}, child {state.generation}"
    with TileLog.open(root, SIGNER) as log:
        size = log.size
    assert not (root / PENDING_FILE).exists(), context
    acked = len(state.expected)
    allowed = {acked}
    if run.in_flight:
        allowed.add(acked + run.in_flight[1])
    assert size in allowed, f"{context}: size {size} after the crash, expected one of {sorted(allowed)}"
    if size > acked:
        assert run.in_flight
        first, count = run.in_flight
        state.expected += [crash_child.entry(i, state.generation) for i in range(first, first + count)]
        state.signed_sizes.add(len(state.expected))
        state.in_flight_kept += 1
    elif run.in_flight:
        state.in_flight_lost += 1

    check_no_leftovers(root, size, state.signed_sizes, context)
    reader = LogReader(root, ORIGIN, [SIGNER.verifier])
    assert reader.verify_all() == size, context
    entries = list(reader.entries())
    assert len(entries) == len(state.expected), context
    for i, (got, want) in enumerate(zip(entries, state.expected, strict=True)):
        assert got == want, f"{context}: entry {i} is {got[:30]!r}, expected {want[:30]!r}"
    # The new checkpoint extends every checkpoint seen before the crash.
    old_size, old_root = state.signed
    proof = reader.consistency_proof(old_size)
    merkle.verify_consistency(old_size, size, old_root, reader.root_hash, proof)
    state.signed = (size, reader.root_hash)


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link tiles (the log never rewrites a file in place: it renames over it), copy the rest."""
    if "/tile/" in src:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for pipe in (proc.stdout, proc.stderr):
        if pipe:
            pipe.close()


def test_sigkill_between_file_operations(crash_log: CrashLog, tmp_path: Path) -> None:
    """The child kills itself at its K-th file operation; sometimes the next child has to do the recovery."""
    rng = random.Random(SEED + 1)
    kills_before, during_open_before, mid_batch_before = crash_log.kills, crash_log.during_open, crash_log.mid_batch
    for n in range(40):
        # After a copy-checked crash (even n), the next child starts with recovery: aim some kills into it.
        kill_after = rng.randint(1, 20) if n % 4 == 1 else rng.randint(1, 150)
        proc = start_child(crash_log, kill_after, rng.randrange(1 << 30))
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            stop(proc)
        run = account(crash_log, proc, out, err)
        if n % 2:
            check_after_crash(crash_log, run, crash_log.root)
        else:
            # Check a copy and leave the crashed folder as it is: the next child's open must recover it.
            copy = tmp_path / f"copy{n}"
            shutil.copytree(crash_log.root, copy, copy_function=link_or_copy)
            check_after_crash(crash_log, run, copy)
            shutil.rmtree(copy)
    assert crash_log.kills - kills_before == 40
    assert crash_log.mid_batch > mid_batch_before
    assert crash_log.during_open > during_open_before, "no kill landed inside a recovery"
    print(
        f"seed {SEED}: {crash_log.kills} kills so far, {crash_log.mid_batch} mid-batch "
        f"({crash_log.in_flight_kept} kept, {crash_log.in_flight_lost} discarded), "
        f"{crash_log.during_open} during open, size {len(crash_log.expected)}"
    )


def test_sigkill_at_random_times(crash_log: CrashLog) -> None:
    rng = random.Random(SEED)
    kills_before, mid_batch_before = crash_log.kills, crash_log.mid_batch
    for _ in range(30):
        proc = start_child(crash_log, 0, rng.randrange(1 << 30))
        assert proc.stdout is not None and proc.stderr is not None
        try:
            ready = proc.stdout.readline()
            assert ready.startswith("READY"), f"child did not start: {ready!r}\n{proc.stderr.read()}"
            time.sleep(rng.uniform(0, 0.3))
            os.kill(proc.pid, signal.SIGKILL)
            # Read through the buffered file object that returned READY (communicate() would skip its buffer).
            rest = proc.stdout.read()
            err = proc.stderr.read()
        finally:
            stop(proc)
        run = account(crash_log, proc, ready + rest, err)
        check_after_crash(crash_log, run, crash_log.root)
    assert crash_log.kills - kills_before == 30
    assert crash_log.mid_batch > mid_batch_before
    print(
        f"seed {SEED}: {crash_log.kills} kills in total, {crash_log.mid_batch} mid-batch "
        f"({crash_log.in_flight_kept} kept, {crash_log.in_flight_lost} discarded), size {len(crash_log.expected)}"
    )


def test_log_is_sound_after_all_the_crashes(crash_log: CrashLog) -> None:
    assert crash_log.kills >= 70
    with TileLog.open(crash_log.root, SIGNER) as log:
        assert log.size == len(crash_log.expected)
        assert log.root_hash == merkle.root_of([merkle.leaf_hash(e) for e in crash_log.expected])
        # And it still takes appends.
        log.append([b"after the crashes"])
    reader = LogReader(crash_log.root, ORIGIN, [SIGNER.verifier])
    assert reader.verify_all() == len(crash_log.expected) + 1
