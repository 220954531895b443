"""Tamper detection: a changed, truncated or missing file is found and named, by the library and the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher.cli import main
from publisher.tlog import CorruptLog, LogReader, TileLog, merkle
from publisher.tlog.note import Signer

ORIGIN = "test.example/log"
SIGNER = Signer.generate(ORIGIN)
REPO = Path(__file__).resolve().parent.parent

# Built from batches of 100, 250 and 350 entries (sizes 100, 350, 700), the log holds:
FULL_TILE = "tile/0/000"
EDGE_TILE = "tile/0/002.p/188"
LEVEL1_EDGE_TILE = "tile/1/000.p/2"
FULL_BUNDLE = "tile/entries/000"
EDGE_BUNDLE = "tile/entries/002.p/188"
STALE_TILE = "tile/0/001.p/94"  # right edge of size 350
STALE_BUNDLE = "tile/entries/000.p/100"  # right edge of size 100
STALE_LEVEL1_TILE = "tile/1/000.p/1"  # right edge of size 350, level 1
RIGHT_EDGE = {EDGE_TILE, LEVEL1_EDGE_TILE, EDGE_BUNDLE}
ALL_DATA_FILES = [
    FULL_TILE,
    "tile/0/001",
    EDGE_TILE,
    LEVEL1_EDGE_TILE,
    FULL_BUNDLE,
    "tile/entries/001",
    EDGE_BUNDLE,
    STALE_TILE,
    "tile/0/000.p/100",
    STALE_BUNDLE,
    "tile/entries/001.p/94",
    STALE_LEVEL1_TILE,
]


def entry(i: int) -> bytes:
    return b"tamper-test entry %05d " % i + bytes([i % 251]) * (i % 23)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "log"
    with TileLog.create(root, SIGNER) as log:
        for start, end in ((0, 100), (100, 350), (350, 700)):
            log.append([entry(i) for i in range(start, end)])
    return root


@pytest.fixture()
def log(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "log"
    shutil.copytree(pristine, copy)
    return copy


def reader(root: Path) -> LogReader:
    return LogReader(root, ORIGIN, [SIGNER.verifier])


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def delete(path: Path) -> None:
    path.unlink()


def test_layout_is_as_expected(pristine: Path) -> None:
    on_disk = {p.relative_to(pristine).as_posix() for p in (pristine / "tile").rglob("*") if p.is_file()}
    assert on_disk == set(ALL_DATA_FILES)
    assert reader(pristine).verify_all() == 700
    with TileLog.open(pristine, SIGNER) as opened:
        assert opened.size == 700


# -- one flipped byte in each kind of file ------------------------------------------
@pytest.mark.parametrize("offset", [0, -1], ids=["first-byte", "last-byte"])
@pytest.mark.parametrize(
    "rel",
    [FULL_TILE, EDGE_TILE, LEVEL1_EDGE_TILE, FULL_BUNDLE, EDGE_BUNDLE, STALE_TILE, STALE_BUNDLE, STALE_LEVEL1_TILE],
)
def test_flipped_byte_is_found_and_named(log: Path, rel: str, offset: int) -> None:
    flip_byte(log / rel, offset)
    with pytest.raises(CorruptLog) as info:
        reader(log).verify_all()
    assert str(log / rel) in str(info.value)


@pytest.mark.parametrize("rel", sorted(RIGHT_EDGE))
@pytest.mark.parametrize("damage", [lambda p: flip_byte(p, 40), truncate, delete], ids=["flip", "truncate", "delete"])
def test_writer_refuses_a_damaged_right_edge(log: Path, rel: str, damage: Callable[[Path], None]) -> None:
    damage(log / rel)
    before = sorted(p.relative_to(log).as_posix() for p in log.rglob("*"))
    with pytest.raises(CorruptLog) as info:
        TileLog.open(log, SIGNER)
    assert str(log / rel) in str(info.value)
    assert sorted(p.relative_to(log).as_posix() for p in log.rglob("*")) == before


@pytest.mark.parametrize("rel", [FULL_TILE, "tile/0/001", FULL_BUNDLE, EDGE_TILE, LEVEL1_EDGE_TILE, EDGE_BUNDLE])
@pytest.mark.parametrize("damage", [truncate, delete], ids=["truncate", "delete"])
def test_truncated_or_deleted_file_is_found_and_named(log: Path, rel: str, damage: Callable[[Path], None]) -> None:
    damage(log / rel)
    with pytest.raises(CorruptLog) as info:
        reader(log).verify_all()
    assert str(log / rel) in str(info.value)


def test_tampered_stale_level1_tile_breaks_proofs_at_its_size_and_verify_must_say_so(log: Path) -> None:
    """A client holding the size-350 checkpoint is served tile/1/000.p/1: `verify` must vouch for it."""
    root_350 = merkle.root_of([merkle.leaf_hash(entry(i)) for i in range(350)])
    proof = reader(log).inclusion_proof(300, 350)
    merkle.verify_inclusion(300, 350, merkle.leaf_hash(entry(300)), proof, root_350)
    flip_byte(log / STALE_LEVEL1_TILE, 0)
    bad_proof = reader(log).inclusion_proof(300, 350)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(300, 350, merkle.leaf_hash(entry(300)), bad_proof, root_350)
    with pytest.raises(CorruptLog) as info:
        reader(log).verify_all()
    assert str(log / STALE_LEVEL1_TILE) in str(info.value)


# -- the checkpoint ---------------------------------------------------------------------
def checkpoint_offset(root: Path, line: int, column: int) -> int:
    text = (root / "checkpoint").read_bytes()
    lines = text.split(b"\n")
    return sum(len(x) + 1 for x in lines[:line]) + column


@pytest.mark.parametrize(
    ("line", "column"),
    [(2, 5), (4, 40)],  # a byte of the root hash; a byte inside the base64 signature
    ids=["root-line", "signature"],
)
def test_tampered_checkpoint_is_refused(log: Path, line: int, column: int) -> None:
    lines = (log / "checkpoint").read_bytes().split(b"\n")
    assert lines[1] == b"700" and lines[4].startswith("\u2014 ".encode() + ORIGIN.encode())
    flip_byte(log / "checkpoint", checkpoint_offset(log, line, column))
    with pytest.raises(CorruptLog) as info:
        reader(log)
    assert str(log / "checkpoint") in str(info.value)
    with pytest.raises(CorruptLog) as info:
        TileLog.open(log, SIGNER)
    assert str(log / "checkpoint") in str(info.value)


def test_checkpoint_signed_by_another_key_is_refused(log: Path) -> None:
    with pytest.raises(CorruptLog, match="checkpoint"):
        LogReader(log, ORIGIN, [Signer.generate(ORIGIN).verifier])


# -- the append-only guard -----------------------------------------------------------
@pytest.mark.parametrize("rel", ["tile/0/002", "tile/entries/002"])
def test_append_refuses_to_overwrite_a_different_full_tile(log: Path, rel: str) -> None:
    # Appending 68 entries fills tile 2 (188 + 68 = 256): the append would write `rel` as a full file.
    bogus = bytes(range(256)) * 32
    (log / rel).write_bytes(bogus)
    batch = [entry(i) for i in range(700, 768)]
    public = {p.relative_to(log).as_posix(): p.read_bytes() for p in log.rglob("*") if p.is_file()}
    for attempt in ("first", "after reopening"):
        with TileLog.open(log, SIGNER) as opened:
            assert (log / rel).is_file() and (log / rel).read_bytes() == bogus, (
                f"{attempt}: opening the log removed or changed {rel}"
            )
            with pytest.raises(CorruptLog) as info:
                opened.append(batch)
            assert str(log / rel) in str(info.value)
            assert "refusing" in str(info.value)
            assert opened.size == 700
        assert (log / rel).is_file() and (log / rel).read_bytes() == bogus, (
            f"{attempt}: the refused append changed {rel}"
        )
        assert reader(log).verify_all() == 700
    # Nothing else changed either (the private .state folder aside).
    after = {p.relative_to(log).as_posix(): p.read_bytes() for p in log.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if not k.startswith(".state/")} == {
        k: v for k, v in public.items() if not k.startswith(".state/")
    }


def test_append_accepts_an_identical_existing_full_tile(log: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(log, other)
    batch = [entry(i) for i in range(700, 768)]
    with TileLog.open(other, SIGNER) as opened:
        expected = opened.append(batch)
    (log / "tile/0/002").write_bytes((other / "tile/0/002").read_bytes())
    with TileLog.open(log, SIGNER) as opened:
        assert opened.append(batch).root == expected.root
    assert reader(log).verify_all() == 768


# -- the command line ------------------------------------------------------------
def cli_verify(capsys: pytest.CaptureFixture[str], root: Path, vkey: str) -> tuple[int, str, str]:
    code = main(["log", "verify", str(root), "--vkey", vkey])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("rel", [FULL_TILE, EDGE_BUNDLE, STALE_TILE, "checkpoint"])
def test_cli_verify_fails_on_a_tampered_copy(log: Path, rel: str, capsys: pytest.CaptureFixture[str]) -> None:
    vkey = SIGNER.verifier.vkey
    assert cli_verify(capsys, log, vkey)[0] == 0
    flip_byte(log / rel, 41)
    code, out, err = cli_verify(capsys, log, vkey)
    assert code == 1
    assert "VERIFICATION FAILED" in err
    assert str(log / rel) in err
    assert "OK" not in out


def test_cli_verify_passes_a_clean_log(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_verify(capsys, log, SIGNER.verifier.vkey)
    assert code == 0
    assert "OK: all 700 entries" in out
    assert "pinned with --vkey" in out
    assert "FAILED" not in err


def test_cli_verify_with_another_pinned_key_fails(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli_verify(capsys, log, Signer.generate(ORIGIN).verifier.vkey)
    assert code == 1
    assert "VERIFICATION FAILED" in err
    assert str(log / "checkpoint") in err


def cli_commands() -> list[list[str]]:
    commands = [[sys.executable, "-m", "publisher"]]
    script = Path(sys.executable).parent / "cpl-publisher"
    if script.exists():
        commands.append([str(script)])
    return commands


@pytest.mark.parametrize("command", cli_commands(), ids=lambda c: Path(c[-1]).name)
def test_cli_verify_in_a_subprocess(log: Path, tmp_path: Path, command: list[str]) -> None:
    vkey_file = tmp_path / "log.vkey"
    vkey_file.write_text(SIGNER.verifier.vkey + "\n")
    args = [*command, "log", "verify", str(log), "--vkey", str(vkey_file)]
    clean = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert clean.returncode == 0, clean.stderr
    assert "OK: all 700 entries" in clean.stdout
    flip_byte(log / EDGE_TILE, 100)
    bad = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert "VERIFICATION FAILED" in bad.stderr
    assert str(log / EDGE_TILE) in bad.stderr
