"""Behaviour of the log engine: create, open, append, locking, proofs and crash recovery from hand-made states."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from publisher import fsio
from publisher.fsio import LockHeld
from publisher.tlog import PENDING_FILE, STATE_FILE, CorruptLog, LogError, LogReader, TileLog, merkle
from publisher.tlog.checkpoint import CheckpointError, parse_tlog_proof, verify_tlog_proof
from publisher.tlog.note import Signer, b64encode
from publisher.tlog.tiles import (
    TILE_WIDTH,
    EntryTooLarge,
    Tile,
    parse_path,
    right_edge,
    root_from_right_edge,
    split_hashes,
)

ORIGIN = "test.example/log"
SIGNER = Signer.generate(ORIGIN)
REPO = Path(__file__).resolve().parent.parent


def make_entries(start: int, count: int, tag: bytes = b"e") -> list[bytes]:
    return [tag + b"-%06d-" % i + b"." * (i % 37) for i in range(start, start + count)]


def build(root: Path, *batch_sizes: int, tag: bytes = b"e") -> list[bytes]:
    """A closed log at ``root`` built from batches of the given sizes; returns all its entries."""
    entries: list[bytes] = []
    with TileLog.create(root, SIGNER) as log:
        for n in batch_sizes:
            batch = make_entries(len(entries), n, tag)
            log.append(batch)
            entries += batch
    return entries


def reader(root: Path) -> LogReader:
    return LogReader(root, ORIGIN, [SIGNER.verifier])


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stats(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def root_of_entries(entries: list[bytes]) -> bytes:
    return merkle.root_of([merkle.leaf_hash(e) for e in entries])


# -- create / open / append / close ---------------------------------------------
def test_create_gives_a_signed_empty_log(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with TileLog.create(root, SIGNER) as log:
        assert log.size == 0
        assert log.root_hash == merkle.EMPTY_ROOT
    assert (root / "vkey").read_text() == SIGNER.verifier.vkey + "\n"
    r = reader(root)
    assert (r.size, r.root_hash) == (0, merkle.EMPTY_ROOT)
    assert list(r.entries()) == []
    assert r.verify_all() == 0
    assert not (root / PENDING_FILE).exists()


def test_create_refuses_a_folder_that_holds_a_log(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 3)
    before = files(root)
    with pytest.raises(LogError, match="already holds a log"):
        TileLog.create(root, SIGNER)
    assert files(root) == before


def test_open_refuses_a_folder_without_a_log(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="create the log first"):
        TileLog.open(tmp_path, SIGNER)


def test_size_and_root_follow_every_append(tmp_path: Path) -> None:
    root = tmp_path / "log"
    entries: list[bytes] = []
    with TileLog.create(root, SIGNER) as log:
        for n in (1, 2, 253, 1, 256, 600, 7):
            batch = make_entries(len(entries), n)
            result = log.append(batch)
            assert result.first_index == len(entries)
            entries += batch
            assert result.size == log.size == len(entries)
            assert result.root == log.root_hash == root_of_entries(entries)
            assert result.checkpoint == (root / "checkpoint").read_text()
            r = reader(root)
            assert (r.size, r.root_hash) == (len(entries), result.root)
    assert reader(root).verify_all() == len(entries) == 1120


def test_reopen_after_close_continues_the_log(tmp_path: Path) -> None:
    root = tmp_path / "log"
    first = build(root, 300)
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 300
        assert log.root_hash == root_of_entries(first)
        more = make_entries(300, 50)
        assert log.append(more).first_index == 300
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 350
        assert list(log.entries()) == first + more
    assert reader(root).verify_all() == 350


def test_entries_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "log"
    odd = [b"", b"\x00", b"\n\n", bytes(range(256)), b"x" * 65_535, "caf\u00e9".encode()]
    entries = odd + make_entries(0, 600) + odd
    with TileLog.create(root, SIGNER) as log:
        log.append(entries[:5])
        log.append(entries[5:400])
        log.append(entries[400:])
    r = reader(root)
    assert list(r.entries()) == entries
    assert list(r.entries(250, 530)) == entries[250:530]
    assert list(r.entries(511, 512)) == [entries[511]]
    assert [r.entry(i) for i in (0, 4, 255, 256, len(entries) - 1)] == [
        entries[i] for i in (0, 4, 255, 256, len(entries) - 1)
    ]
    with pytest.raises(LogError, match="outside the log"):
        r.entry(len(entries))
    assert r.verify_all() == len(entries)


def test_entry_of_65536_bytes_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 10)
    before = stats(root)
    with TileLog.open(root, SIGNER) as log:
        with pytest.raises(EntryTooLarge, match="65536 bytes"):
            log.append([b"fine", b"x" * 65_536, b"also fine"])
        assert log.size == 10
        assert stats(root) == before
        # The log is still usable, and the largest allowed entry goes in.
        result = log.append([b"y" * 65_535])
        assert result.size == 11
    assert reader(root).entry(10) == b"y" * 65_535
    assert reader(root).verify_all() == 11


def test_empty_batch_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 300)
    before = stats(root)
    with TileLog.open(root, SIGNER) as log:
        result = log.append([])
        assert (result.first_index, result.size, result.files_written) == (300, 300, 0)
        assert result.root == log.root_hash
        assert result.checkpoint == (root / "checkpoint").read_text()
    assert stats(root) == before


# -- locking -------------------------------------------------------------------------
def test_second_writer_in_the_same_process_gets_lock_held(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 5)
    with TileLog.open(root, SIGNER) as log:
        with pytest.raises(LockHeld, match="locked by another writer") as info:
            TileLog.open(root, SIGNER)
        assert str(root / ".state" / "lock") in str(info.value)
        # Readers need no lock.
        assert reader(root).size == 5
        log.append([b"still the writer"])
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 6


CHILD_OPEN = """
import os, sys
from publisher.fsio import LockHeld
from publisher.tlog.note import Signer
from publisher.tlog import TileLog
signer = Signer.from_skey(os.environ["TEST_LOG_SKEY"])
try:
    log = TileLog.open(sys.argv[1], signer)
except LockHeld as exc:
    print("LockHeld:", exc)
    sys.exit(3)
log.append([b"from the child"])
log.close()
print("appended")
"""


def run_child_open(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_LOG_SKEY": SIGNER.skey}
    return subprocess.run(
        [sys.executable, "-c", CHILD_OPEN, str(root)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_second_writer_in_another_process_gets_lock_held(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 5)
    with TileLog.open(root, SIGNER) as log:
        proc = run_child_open(root)
        assert proc.returncode == 3, proc.stderr
        assert "LockHeld:" in proc.stdout
        assert "locked by another writer" in proc.stdout
        assert str(root) in proc.stdout
        assert log.size == 5
    # Once the first writer has closed, the other process can write.
    proc = run_child_open(root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "appended"
    assert reader(root).size == 6
    assert reader(root).entry(5) == b"from the child"


def test_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 5)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os,sys,time\n"
            "from publisher.tlog.note import Signer\nfrom publisher.tlog import TileLog\n"
            "log = TileLog.open(sys.argv[1], Signer.from_skey(os.environ['TEST_LOG_SKEY']))\n"
            "print('holding', flush=True)\ntime.sleep(60)\n",
            str(root),
        ],
        env={**os.environ, "TEST_LOG_SKEY": SIGNER.skey},
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(LockHeld):
            TileLog.open(root, SIGNER)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 5


# -- what an append touches ---------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "new_paths"),
    [
        (3000, {"tile/0/011.p/185", "tile/entries/011.p/185"}),
        (3071, {"tile/0/011", "tile/entries/011", "tile/1/000.p/12"}),
        (3072, {"tile/0/012.p/1", "tile/entries/012.p/1"}),
        (65_535, {"tile/0/255", "tile/entries/255", "tile/1/000", "tile/2/000.p/1"}),
    ],
)
def test_appending_one_entry_writes_only_the_right_edge(tmp_path: Path, size: int, new_paths: set[str]) -> None:
    root = tmp_path / "log"
    build(root, size // 3, size - size // 3)
    before = stats(root)
    with TileLog.open(root, SIGNER) as log:
        result = log.append([b"one more"])
    after = stats(root)
    assert result.size == size + 1
    assert result.files_written <= 8
    assert set(before) - set(after) == set()
    assert set(after) - set(before) == new_paths
    changed = {rel for rel in before if before[rel] != after[rel]}
    assert changed == {"checkpoint", STATE_FILE}
    assert reader(root).entry(size) == b"one more"


def test_partial_tiles_of_every_signed_size_remain(tmp_path: Path) -> None:
    """A client holding an older checkpoint can still fetch that size's right edge."""
    root = tmp_path / "log"
    signed: list[tuple[int, bytes]] = []
    entries: list[bytes] = []
    with TileLog.create(root, SIGNER) as log:
        for n in (1, 100, 155, 1, 300, 255, 1, 700, 1):
            batch = make_entries(len(entries), n)
            entries += batch
            result = log.append(batch)
            signed.append((result.size, result.root))
    for size, root_hash in signed:
        edge = {}
        for tile in right_edge(size):
            path = root / tile.path
            assert path.is_file(), f"size {size}: {tile.path} is gone"
            edge[tile.level] = split_hashes(path.read_bytes(), tile)
        assert root_from_right_edge(size, edge) == root_hash
        if size % TILE_WIDTH:
            bundle = Tile(-1, size // TILE_WIDTH, size % TILE_WIDTH)
            assert (root / bundle.path).is_file(), f"size {size}: {bundle.path} is gone"
            assert [merkle.leaf_hash(e) for e in reader(root).read_bundle(bundle)] == edge[0]
        r = reader(root)
        for index in (0, size // 2, size - 1):
            proof = r.inclusion_proof(index, size)
            merkle.verify_inclusion(index, size, merkle.leaf_hash(entries[index]), proof, root_hash)
    # Every partial file on disk is the right edge of some signed size (no leftovers).
    sizes = [s for s, _ in signed]
    for p in (root / "tile").rglob("*"):
        if p.is_file() and ".p/" in p.relative_to(root).as_posix():
            tile = parse_path(p.relative_to(root).as_posix())
            unit = TILE_WIDTH ** max(tile.level, 0)
            assert any(s // unit == tile.index * TILE_WIDTH + tile.width for s in sizes), p


def test_tlog_proof_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "log"
    entries = build(root, 700, 3)
    r = reader(root)
    for index in (0, 1, 255, 256, 511, 702):
        proof = r.tlog_proof(index)
        parsed = parse_tlog_proof(proof.encode().encode())
        assert parsed == proof
        signed = verify_tlog_proof(parsed, merkle.leaf_hash(entries[index]), ORIGIN, [SIGNER.verifier])
        assert (signed.checkpoint.size, signed.checkpoint.root) == (703, r.root_hash)
        with pytest.raises(CheckpointError):
            verify_tlog_proof(parsed, merkle.leaf_hash(entries[index] + b"x"), ORIGIN, [SIGNER.verifier])
        with pytest.raises(CheckpointError):
            verify_tlog_proof(parsed, merkle.leaf_hash(entries[index]), ORIGIN, [Signer.generate(ORIGIN).verifier])
    # A proof stays valid after the log grows: it carries its own checkpoint.
    old = r.tlog_proof(5).encode()
    with TileLog.open(root, SIGNER) as log:
        log.append([b"later"])
    signed = verify_tlog_proof(parse_tlog_proof(old), merkle.leaf_hash(entries[5]), ORIGIN, [SIGNER.verifier])
    assert signed.checkpoint.size == 703


# -- keys ---------------------------------------------------------------------
def test_open_with_the_wrong_signing_key_fails(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 20)
    before = stats(root)
    with pytest.raises(CorruptLog, match="right signing key"):
        TileLog.open(root, Signer.generate(ORIGIN))
    with pytest.raises(LogError):
        TileLog.open(root, Signer.generate("other.example/log"))
    assert stats(root) == before
    with pytest.raises(CorruptLog, match="checkpoint"):
        LogReader(root, ORIGIN, [Signer.generate(ORIGIN).verifier])
    # The lock was released by the failed opens.
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 20


# -- recovery from hand-made crash states --------------------------------------------
def new_tile_files(before: Path, after: Path) -> dict[str, bytes]:
    old = files(before)
    return {rel: data for rel, data in files(after).items() if rel.startswith("tile/") and rel not in old}


@pytest.mark.parametrize("written", ["all", "some", "none"])
def test_recovery_discards_an_uncommitted_batch(tmp_path: Path, written: str) -> None:
    root = tmp_path / "log"
    first = build(root, 100, 200)
    before = files(root)
    # What the batch would have written: append it to a copy.
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with TileLog.open(copy, SIGNER) as log:
        result = log.append(make_entries(300, 500, b"lost"))
    batch_files = new_tile_files(root, copy)
    assert len(batch_files) >= 5  # bundles and tiles at levels 0 and 1
    # The crash state: the journal, then some of the batch's files (and a stray temporary).
    journal = {"old_size": 300, "new_size": 800, "root": b64encode(result.root), "paths": sorted(batch_files)}
    (root / PENDING_FILE).write_text(json.dumps(journal))
    keep = {"all": sorted(batch_files), "some": sorted(batch_files)[::2], "none": []}[written]
    for rel in keep:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(batch_files[rel])
    stray = root / "tile/0/001"
    stray = stray.with_name(f".001{fsio.TEMP_MARK}99999")
    stray.write_bytes(b"half a tile")

    with TileLog.open(root, SIGNER) as log:
        assert log.size == 300
        assert files(root) == before
        assert not stray.exists()
        assert reader(root).verify_all() == 300
        other = make_entries(300, 500, b"kept")
        log.append(other)
    assert list(reader(root).entries()) == first + other
    assert reader(root).verify_all() == 800


def test_recovery_completes_a_committed_batch_whose_checkpoint_was_not_published(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with TileLog.create(root, SIGNER) as log:
        log.append(make_entries(0, 300))
        old_checkpoint = (root / "checkpoint").read_bytes()
        result = log.append(make_entries(300, 400))
    committed = json.loads((root / STATE_FILE).read_text())
    assert committed["checkpoint"] == result.checkpoint
    # Crash after the commit point: the journal is still there and the public checkpoint is the old one.
    journal = {"old_size": 300, "new_size": 700, "root": b64encode(result.root), "paths": ["tile/0/002.p/188"]}
    (root / PENDING_FILE).write_text(json.dumps(journal))
    (root / "checkpoint").write_bytes(old_checkpoint)
    assert reader(root).size == 300  # readers see the old, still valid, checkpoint
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 700
        assert log.root_hash == result.root
    assert (root / "checkpoint").read_text() == committed["checkpoint"]
    assert (root / "tile/0/002.p/188").exists()
    assert not (root / PENDING_FILE).exists()
    assert reader(root).verify_all() == 700


def test_recovery_publishes_a_missing_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 10)
    expected = (root / "checkpoint").read_bytes()
    (root / "checkpoint").unlink()
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 10
    assert (root / "checkpoint").read_bytes() == expected


def test_a_stale_cache_behind_the_public_checkpoint_is_brought_forward(tmp_path: Path) -> None:
    # What a `git pull` does: the public files move ahead of this machine's private state.
    root = tmp_path / "log"
    with TileLog.create(root, SIGNER) as log:
        log.append(make_entries(0, 10))
        old_state = (root / STATE_FILE).read_bytes()
        log.append(make_entries(10, 10))
    (root / STATE_FILE).write_bytes(old_state)
    newer = (root / "checkpoint").read_bytes()
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 20
        log.append(make_entries(20, 1))
    assert json.loads((root / STATE_FILE).read_text())["size"] == 21
    assert reader(root).verify_all() == 21
    assert newer != (root / "checkpoint").read_bytes()


def test_a_public_checkpoint_forked_from_the_cache_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 10)
    other = tmp_path / "other"
    build(other, 12, tag=b"x")  # same key, different entries: a fork of a larger size
    shutil.rmtree(root / "tile")
    shutil.copytree(other / "tile", root / "tile")
    shutil.copyfile(other / "checkpoint", root / "checkpoint")
    with pytest.raises(CorruptLog, match=r"size 12 is not an extension of the one of size 10 .*\(a fork\)"):
        TileLog.open(root, SIGNER)


def test_a_fresh_clone_without_private_state_opens_and_appends(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 300)
    shutil.rmtree(root / ".state")
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 300
        log.append(make_entries(300, 5))
    state = json.loads((root / STATE_FILE).read_text())
    assert state["size"] == 305
    assert state["checkpoint"] == (root / "checkpoint").read_text()
    assert reader(root).verify_all() == 305


def test_a_cache_ahead_whose_tiles_were_removed_yields_to_the_public_checkpoint(tmp_path: Path) -> None:
    # A restore after a crash past the commit point: the public checkpoint and tiles are the committed ones.
    root = tmp_path / "log"
    build(root, 10)
    public = (root / "checkpoint").read_bytes()
    tiles = {p: p.read_bytes() for p in (root / "tile").rglob("*") if p.is_file()}
    with TileLog.open(root, SIGNER) as log:
        log.append(make_entries(10, 5))
    for p in (root / "tile").rglob("*"):
        if p.is_file() and p not in tiles:
            p.unlink()
    (root / "checkpoint").write_bytes(public)
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 10
        log.append(make_entries(10, 2, tag=b"y"))
    assert reader(root).verify_all() == 12


def test_a_tampered_cache_is_refused_with_the_way_out(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 10)
    state = json.loads((root / STATE_FILE).read_text())
    state["checkpoint"] = state["checkpoint"].replace("\n10\n", "\n11\n")
    (root / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(CorruptLog, match=r"tree\.json: .*signature.*remove .*tree\.json and it is rebuilt"):
        TileLog.open(root, SIGNER)
    (root / STATE_FILE).unlink()
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 10


def test_a_torn_journal_is_discarded_and_the_log_continues(tmp_path: Path) -> None:
    root = tmp_path / "log"
    build(root, 10)
    (root / PENDING_FILE).write_bytes(b'{"old_size": 10, "new_si')
    with TileLog.open(root, SIGNER) as log:
        assert log.size == 10
        assert not (root / PENDING_FILE).exists()
        log.append(make_entries(10, 3))
    assert reader(root).verify_all() == 13


# -- misuse must not hang or fork the log ---------------------------------------------
ENTRIES_BEYOND_END = """
import sys
from publisher.tlog import LogError, LogReader, read_vkey
vkey = read_vkey(sys.argv[1])
reader = LogReader(sys.argv[1], vkey.name, [vkey])
try:
    got = list(reader.entries(5, 20))
except LogError as exc:
    print("LogError", exc)
else:
    print("returned", len(got))
"""


def test_entries_beyond_the_end_do_not_hang(tmp_path: Path) -> None:
    """``entries(5, 20)`` on a 10-entry log must stop (or raise LogError), not spin forever."""
    root = tmp_path / "log"
    build(root, 10)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", ENTRIES_BEYOND_END, str(root)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("LogReader.entries(5, 20) on a log of 10 entries did not return within 10 s")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(("LogError", "returned 5")), proc.stdout


def test_a_closed_writer_cannot_append(tmp_path: Path) -> None:
    """After close() the lock is gone: appending through the old handle would bypass it and fork the log."""
    root = tmp_path / "log"
    build(root, 1)
    stale = TileLog.open(root, SIGNER)
    stale.close()
    with TileLog.open(root, SIGNER) as log:
        log.append(make_entries(1, 5, b"second writer"))
    signed = (root / "checkpoint").read_bytes()
    with pytest.raises(LogError):
        stale.append([b"through a closed handle"])
    assert (root / "checkpoint").read_bytes() == signed
    assert reader(root).size == 6


@pytest.mark.parametrize("batches", [(1,), (255,), (256,), (257,), (300, 212), (200, 200, 113, 1)])
def test_verify_all_hands_over_every_authenticated_entry_once_in_order(
    tmp_path: Path, batches: tuple[int, ...]
) -> None:
    root = tmp_path / "log"
    expected = build(root, *batches)
    seen: list[tuple[int, list[bytes]]] = []
    assert reader(root).verify_all(entries=lambda first, entries: seen.append((first, entries))) == len(expected)
    assert [first for first, _ in seen] == list(range(0, len(expected), TILE_WIDTH))
    assert [e for _, entries in seen for e in entries] == expected


def test_verify_extension_checks_what_growth_added_and_blames_the_file(tmp_path: Path) -> None:
    """``verify_extension(old)`` recomputes the tiles and bundles that growing from ``old`` made (as the deployer
    does before uploading them create-only); it reads nothing of the log before ``old``."""
    root = tmp_path / "log"
    build(root, 300, 200, 70_000)
    log = reader(root)
    assert log.verify_extension(log.size) == log.size % TILE_WIDTH
    assert log.verify_extension(500) == log.verify_all() - 500 // TILE_WIDTH * TILE_WIDTH
    # Damage before the old size goes unread; damage after it is named.
    early = root / Tile(-1, 0, TILE_WIDTH).path
    early.write_bytes(b"\0" + early.read_bytes()[1:])
    assert reader(root).verify_extension(70_000) >= 0
    late = root / Tile(0, 274, TILE_WIDTH).path  # full tiles 273 and 274 are what growing from 70,000 made
    late.write_bytes(late.read_bytes()[:-1] + b"\1")
    with pytest.raises(CorruptLog, match=r"tile/0/274: does not match its hash in the level above"):
        reader(root).verify_extension(70_000)
    with pytest.raises(LogError):
        log.verify_extension(log.size + 1)
