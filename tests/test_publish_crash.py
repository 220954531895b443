"""Kill ``publish`` at any instant, or run it out of disk space: the next publish finishes by itself.

One publication lives through every trial in sequence. Before each trial a
good and a bad submission arrive and, in turn, a revocation (so CRLs are
signed) or an operator's ``crl refresh``. The publish then runs in a forked
child that SIGKILLs its whole process group (git included) at a fixed file
or process operation: write (torn in half), fsync, rename, unlink, mkdir or
the start of a git command. The kill points are deterministic: operation
``1 + (trial * STRIDE) % SPAN``, spread over the whole publish (CRL signing,
intake, log append, status, commit). Every tenth trial instead kills after a
random delay from a printed seed, so kills also land inside git itself.

After each trial a normal publish must succeed, and then: the log verifies
top-down and ends with its ``lookup/v1`` commitment to exactly the entries
before it, ``history verify`` passes, the verifier's ``crl --require-logged``
passes for every issuer, the work tree is clean, every good submission is
logged exactly once and sits in ``processed/``, every bad one is in the inbox
with its report, no CRL number ever had two different DERs, and every
archived CRL is logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import git
import pytest
from crash_child import install_kill_switch
from publication_fixtures import new_publication
from site_fixtures import write_submission

from publisher import demo, fsio, parties
from publisher.config import Config
from publisher.config import load as load_config
from publisher.intake.associations import AssociationIndex
from publisher.pki import crl_publish
from publisher.publish import operations, publish
from publisher.publish.history import verify_history
from publisher.tlog import LogReader
from publisher.tlog.signer import load_log_signer
from verifier.cpl_verify import main as verify_main

STRIDE = 37  # coprime with any span we see, so the kill points walk over the whole publish
TRIALS = 200  # kills that must land (trials that finish before their kill point do not count)
SEED = int(os.environ.get("PUBLISH_CRASH_SEED", "20261128"))
GIT_COMMANDS = [(git.cmd, "Popen")]  # every git command GitPython starts is a kill point too


@dataclasses.dataclass
class World:
    root: Path
    config: Config
    maker: parties.Party
    supplier: parties.Party
    trust: Path
    good: set[str] = dataclasses.field(default_factory=set)
    bad: set[str] = dataclasses.field(default_factory=set)
    crl_bytes: dict[tuple[str, int], str] = dataclasses.field(default_factory=dict)
    serial: int = 0x1000


def make_world(tmp: Path) -> World:
    p = new_publication(tmp, "crash.example/log")
    trust = tmp / "trust.json"
    trust.write_text(json.dumps(demo.trust_of(p.config)))
    return World(p.root, p.config, p.maker, p.supplier, trust)


def arrive(w: World, trial: int) -> None:
    """A good and a bad submission, and a revocation or an operator's CRL refresh."""
    good, bad = f"G{trial:04d}", f"B{trial:04d}"
    row = (w.maker.org_id, "Acme", f"ESME-{trial}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(good))
    write_submission(w.root, good, [row], [w.maker, w.supplier])
    write_submission(w.root, bad, [(*row[:7], "not-a-hash")], [w.maker, w.supplier])
    w.good.add(good)
    w.bad.add(bad)
    if trial % 3 == 0:
        w.serial += 1
        operations.revoke(w.config, "ica", w.serial, "superseded", unknown_serial=True)
    elif trial % 3 == 1:
        operations.refresh_crls(w.config, force=True)


def wait_group_gone(pgid: int) -> None:
    """Wait (up to 10 s) until no live process is left in group ``pgid``: SIGKILL lands asynchronously."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                alive |= int(fields[2]) == pgid and fields[0] != "Z"
        if not alive:
            return
        time.sleep(0.01)


def run_child(body: Callable[[], None], kill_at: int | None = None, delay: float | None = None) -> bool:
    """Run ``body`` in a forked child in its own process group; True if the child was killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.setpgid(0, 0)
            if kill_at is not None:
                install_kill_switch(kill_at, group=True, extra=GIT_COMMANDS)
            body()
        except BaseException:
            code = 3
        os._exit(code)
    if delay is not None:
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # orphaned git processes of a killed child
    wait_group_gone(pid)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, "the publish failed without being killed"
        return False
    return True


def count_operations(w: World) -> int:
    """How many file and process operations one publish of this workload makes (the kill-point span)."""
    counter = w.root.parent / "ops"

    def body() -> None:
        count = install_kill_switch(0, extra=GIT_COMMANDS)
        publish(w.config)
        counter.write_text(str(count()))

    assert not run_child(body)
    return int(counter.read_text())


def check_invariants(w: World, trial: int, how: str, history: bool = True) -> None:
    """Everything the module docstring promises; ``history verify`` (which walks every commit) when asked."""
    where = f"trial {trial} ({how}, seed {SEED})"
    repo = git.Repo(w.root)
    assert repo.git.status("--porcelain") == "", where
    signer = load_log_signer(w.config.log_key, w.root)
    log = LogReader(w.root / "log", w.config.origin, [signer.verifier])
    assert log.verify_all() == log.size, where
    if history:
        verify_history(repo, w.config.origin, [signer.verifier])
    logged: Counter[str] = Counter()
    crls: dict[tuple[str, int], str] = {}
    entries = list(log.entries())
    # the log ends with the commitment to exactly what precedes it (what verifiers' proofs rest on)
    assert entries[-1] == AssociationIndex.from_entries(entries[:-1]).lookup.commitment(), where
    for raw in entries:
        entry = json.loads(raw)
        if entry["type"] == "crl/v1":
            crls[(entry["issuer"], entry["number"])] = entry["sha256"]
        elif entry["type"] == "cpl-association/v1":
            logged[entry["submission_id"]] += 1
    assert set(logged) == w.good, where
    assert all(n == 1 for n in logged.values()), f"{where}: logged twice: {logged.most_common(3)}"
    assert {p.name for p in (w.root / "processed").iterdir()} == w.good, where
    inbox = {p.name for p in (w.root / "inbox").iterdir()}
    assert inbox == w.bad, where
    assert all((w.root / "inbox" / b / "rejection.json").exists() for b in w.bad), where
    for issuer in w.config.issuers:
        for number, path in crl_publish.archived(w.config, issuer.name):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            seen = w.crl_bytes.setdefault((issuer.name, number), digest)
            assert seen == digest, f"{where}: CRL {issuer.name} #{number} signed twice with different bytes"
            assert crls.get((issuer.name, number)) == digest, f"{where}: CRL {issuer.name} #{number} is not logged"
        site = ["--json", "--site", str(w.root), "--trust", str(w.trust)]
        code = verify_main([*site, "crl", "--issuer", issuer.name, "--require-logged"])
        assert code == 0, f"{where}: cpl-verify crl --issuer {issuer.name} --require-logged failed"


def test_publish_killed_at_any_instant_is_finished_by_the_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = make_world(tmp_path)
    spans, took = {}, 0.0
    for kind in (1, 2, 3):  # the three workloads of arrive(): CRL refresh committed, none, revocation
        arrive(w, kind)
        start = time.monotonic()
        spans[kind % 3] = count_operations(w)
        took = max(took, time.monotonic() - start)
    check_invariants(w, 3, "calibration")
    rng = random.Random(SEED)
    print(f"publish crash trials: seed {SEED}, operations per publish by workload {spans}, stride {STRIDE}")
    kills = completed = timed = 0
    trial = 3
    resumed: Counter[str] = Counter()
    while kills < TRIALS:
        trial += 1
        assert trial < TRIALS * 3 // 2, f"only {kills} of {trial} kills landed"
        arrive(w, trial)
        if trial % 10 == 0:
            delay = rng.uniform(0.0, took)
            how = f"kill after {delay:.3f} s"
            killed = run_child(lambda: publish(w.config), delay=delay)
            timed += killed
        else:
            point = 1 + (trial * STRIDE) % spans[trial % 3]
            how = f"kill at operation {point}"
            killed = run_child(lambda: publish(w.config), kill_at=point)
        kills += killed
        completed += not killed
        result = publish(w.config)
        resumed[str(result.resumed)] += 1
        check_invariants(w, trial, how, history=trial % 25 == 0)
    check_invariants(w, trial, "the end")
    with capsys.disabled():
        print(
            f"\npublish crash trials: {kills} kills ({timed} timed), {completed} runs finished before their kill, "
            f"seed {SEED}; the next publish resumed {dict(resumed)}"
        )
    assert resumed["publish"] >= TRIALS // 2  # most kills landed after the journal was written


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_publish_out_of_disk_space_is_finished_when_space_returns(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "8m"):
        pytest.skip("cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN); the ENOSPC trials did not run")
    try:
        w = make_world_on(disk, tmp_path)
        failures = 0
        for trial, free_kb in enumerate((4, 8, 16, 24, 32, 48, 64, 96, 128, 192), 1):
            arrive(w, trial)
            filler = disk / f"filler-{trial}"
            _fill(disk, filler, free_kb * 1024)
            try:
                publish(w.config)
            except OSError as exc:
                assert "No space left" in str(exc) or exc.errno == 28 or "space" in str(exc), exc
                failures += 1
            except git.GitCommandError as exc:
                assert "space" in str(exc).lower() or "write" in str(exc).lower(), exc
                failures += 1
            filler.unlink()
            publish(w.config)
            check_invariants(w, trial, f"ENOSPC with {free_kb} KB free")
        assert failures >= 3, f"only {failures} publishes ran out of space; the trials did not test ENOSPC"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def make_world_on(disk: Path, tmp: Path) -> World:
    """A world whose publication is on ``disk`` and whose keys are not."""
    w = make_world(tmp / "build")
    target = disk / "publication"
    shutil.copytree(w.root, target, symlinks=True)
    shutil.rmtree(w.root)
    w.root = target
    w.config = load_config(target)
    w.trust.write_text(json.dumps(demo.trust_of(w.config)))
    return w


def _fill(disk: Path, filler: Path, leave: int) -> None:
    """Fill the file system on ``disk`` until about ``leave`` bytes are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with filler.open("wb") as f:
        chunk = b"\0" * 65536
        remaining = max(0, free - leave)
        while remaining > 0:
            n = min(len(chunk), remaining)
            try:
                f.write(chunk[:n])
            except OSError:
                break
            remaining -= n
    fsio.fsync_dir(disk)


def test_a_git_lock_left_by_a_killed_read_is_removed_by_the_next_publish(tmp_path: Path) -> None:
    # git status refreshes the index under index.lock; a kill there leaves the
    # lock with no journal (the timed trials above found it on a CI runner).
    p = new_publication(tmp_path, "locks.example/log")
    row = (p.maker.org_id, "Acme", "ESME-L", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash("L"))
    write_submission(p.root, "L1", [row], [p.maker, p.supplier])
    (p.root / ".git" / "index.lock").write_text("")
    assert not (p.root / ".publisher" / "journal.json").exists()
    result = publish(p.config)
    assert result.committed and not (p.root / ".git" / "index.lock").exists()
