"""The consumer verifier against logs other software wrote (tests/vectors: Tessera, Sunlight) with
their published keys, and against plain logs in local folders: a three-level tree for proofs computed
from tiles, and two logs that share a prefix (a fork of a larger size).
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from verifier_fixtures import tamper

from publisher.tlog import TileLog
from publisher.tlog.note import Signer
from verifier.cpl_verify import main

VECTORS = Path(__file__).resolve().parent / "vectors"
TESSERA = VECTORS / "tessera-testdata-log"
SUNLIGHT = VECTORS / "sunlight-mirror-300"
TESSERA_VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"
SUNLIGHT_ORIGIN = "rome2026h1.example.org"
SUNLIGHT_COSIGNER = "mirror.example.org+3fb148ef+BAAjjch9GyYz0sJsJx7ALhbdAtz2ov0unbzSl1vMp94O"
TESSERA_ENTRIES = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eit",
    "nain",
    "ten",
    "ileven",
    "twelf",
    "threeten",
    "fourten",
    "fivten",
]


@pytest.fixture(autouse=True)
def _require_vectors() -> None:
    if not VECTORS.is_dir():
        pytest.fail(f"test vectors not found at {VECTORS} (tests/vectors/ in the repository)", pytrace=False)


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


# -- Tessera ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("old", [0, 1, 2, 7, 8, 14, 15])
def test_tessera_checkpoints_are_consistent(old: int, tmp_path: Path, capsys: Any) -> None:
    earlier = writable_copy(TESSERA, tmp_path / "earlier")
    shutil.copy(TESSERA / f"checkpoint.{old}", earlier / "checkpoint")
    state = tmp_path / "state"
    assert run(capsys, "--log", earlier, "--vkey", TESSERA_VKEY, "--state", state, "consistency")[0] == 0
    code, out = run(capsys, "--log", TESSERA, "--vkey", TESSERA_VKEY, "--state", state, "--json", "consistency")
    assert code == 0, out
    result = json.loads(out)["result"]
    assert result["previous"]["size"] == old and result["checkpoint"]["size"] == 15


def test_tessera_every_entry_is_included(capsys: Any) -> None:
    for index, word in enumerate(TESSERA_ENTRIES):
        code, out = run(capsys, "--log", TESSERA, "--vkey", TESSERA_VKEY, "--json", "inclusion", "--index", index)
        assert code == 0, out
        assert json.loads(out)["result"]["entry"] == __import__("base64").b64encode(word.encode()).decode()


def test_tessera_audit_structure(capsys: Any) -> None:
    code, out = run(capsys, "--log", TESSERA, "--vkey", TESSERA_VKEY, "audit", "--structure-only")
    assert code == 0 and "root matches the signed checkpoint" in out


def test_tessera_with_a_cpl_audit_reports_foreign_entries(capsys: Any) -> None:
    code, out = run(capsys, "--log", TESSERA, "--vkey", TESSERA_VKEY, "audit")
    assert code == 2 and "no site" in out  # evidence and CRLs live on a site: the full audit needs one


def test_attack_tessera_tile_altered(tmp_path: Path, capsys: Any) -> None:
    log = writable_copy(TESSERA, tmp_path / "log")
    tile = log / "tile/0/000.p/15"
    tile.write_bytes(tamper(tile.read_bytes(), 100))
    code, out = run(capsys, "--log", log, "--vkey", TESSERA_VKEY, "audit", "--structure-only")
    assert code == 1 and "the hash tile tile/0/000.p/15 is wrong" in out
    entry = tmp_path / "three"
    entry.write_bytes(b"three")  # entry 2: its proof uses the altered hash of entry 3
    code, out = run(capsys, "--log", log, "--vkey", TESSERA_VKEY, "inclusion", "--index", 2, "--entry", entry)
    assert code == 1 and "right-edge hash tiles (tile/0/000.p/15) do not lead to the signed root" in out


def test_attack_tessera_wrong_key(capsys: Any) -> None:
    other = Signer.generate("example.com/log/testdata").verifier.vkey
    code, out = run(capsys, "--log", TESSERA, "--vkey", other, "consistency")
    assert code == 1 and "not signed by the pinned log key" in out


# -- Sunlight (hash tiles and a cosigned checkpoint; no entry bundles) ---------------------------------


def test_sunlight_mirror_cosignature_alone_is_not_the_log_key(capsys: Any) -> None:
    # The vector's checkpoint carries only a mirror's cosignature: the commands require the log's own
    # signature (the pinned key named after the origin), so pinning the mirror alone is refused.
    base = ["--log", SUNLIGHT, "--origin", SUNLIGHT_ORIGIN, "--vkey", SUNLIGHT_COSIGNER]
    code, out = run(capsys, *base, "consistency")
    assert code == 1 and f"no trusted key is named after the origin '{SUNLIGHT_ORIGIN}'" in out
    assert "other keys count only as cosigners" in out


# -- a three-level log in a folder: proofs computed from tiles ------------------------------------------

SIZE = 70_000  # level 0: 273 full tiles + 273.p/112; level 1: 000 + 001.p/17; level 2: 000.p/1


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Signer]:
    root = tmp_path_factory.mktemp("big") / "log"
    signer = Signer.generate("big.example/log")
    with TileLog.create(root, signer) as log:
        log.append([f"entry {i}".encode() for i in range(SIZE)])
    return root, signer


def test_inclusion_from_tiles_in_a_three_level_tree(big_log: tuple[Path, Signer], capsys: Any) -> None:
    root, signer = big_log
    for index in (0, 5, 65_535, 65_536, 69_999):
        code, out = run(capsys, "--log", root, "--vkey", signer.verifier.vkey, "--json", "inclusion", "--index", index)
        assert code == 0, out
        doc = json.loads(out)
        assert __import__("base64").b64decode(doc["result"]["entry"]) == f"entry {index}".encode()


def test_attack_inner_tile_altered(big_log: tuple[Path, Signer], tmp_path: Path, capsys: Any) -> None:
    root, signer = big_log
    log = writable_copy(root, tmp_path / "log")
    tile = log / "tile/1/000"
    tile.write_bytes(tamper(tile.read_bytes(), 5 * 32))
    code, out = run(capsys, "--log", log, "--vkey", signer.verifier.vkey, "inclusion", "--index", 5)
    assert code == 1 and "the hash tile tile/1/000 does not match its hash in the level above" in out


def test_attack_truncated_edge_tile(big_log: tuple[Path, Signer], tmp_path: Path, capsys: Any) -> None:
    root, signer = big_log
    log = writable_copy(root, tmp_path / "log")
    tile = log / "tile/1/001.p/17"
    tile.write_bytes(tile.read_bytes()[:-32])
    code, out = run(capsys, "--log", log, "--vkey", signer.verifier.vkey, "inclusion", "--index", 5)
    assert code == 1 and "truncated or padded hash tile" in out and "tile/1/001.p/17" in out


def test_attack_missing_tile(big_log: tuple[Path, Signer], tmp_path: Path, capsys: Any) -> None:
    root, signer = big_log
    log = writable_copy(root, tmp_path / "log")
    (log / "tile/1/000").unlink()
    code, out = run(capsys, "--log", log, "--vkey", signer.verifier.vkey, "inclusion", "--index", 5)
    assert code == 1 and "does not serve tile/1/000, which its signed checkpoint" in out


def test_attack_entry_altered_in_a_full_bundle(big_log: tuple[Path, Signer], tmp_path: Path, capsys: Any) -> None:
    root, signer = big_log
    log = writable_copy(root, tmp_path / "log")
    bundle = log / "tile/entries/000"
    data = bundle.read_bytes()
    bundle.write_bytes(tamper(data, data.index(b"entry 7") + 6))
    code, out = run(capsys, "--log", log, "--vkey", signer.verifier.vkey, "inclusion", "--index", 7)
    assert code == 1 and "the entry bundle tile/entries/000 does not match the log: entry 7 was altered" in out


# -- two logs with one key that share a prefix: a fork of a larger size ----------------------------------


def test_attack_fork_of_a_larger_size(tmp_path: Path, capsys: Any) -> None:
    signer = Signer.generate("fork.example/log")
    with TileLog.create(tmp_path / "a", signer) as log:
        log.append([f"entry {i}".encode() for i in range(10)])
    with TileLog.create(tmp_path / "b", signer) as log:
        log.append([f"entry {i}".encode() for i in range(5)] + [f"other {i}".encode() for i in range(10)])
    state = tmp_path / "state"
    base = ["--vkey", signer.verifier.vkey, "--state", state]
    assert run(capsys, *base, "--log", tmp_path / "a", "consistency")[0] == 0
    code, out = run(capsys, *base, "--log", tmp_path / "b", "consistency")
    assert code == 1
    assert "fork: the checkpoint of size 15 does not extend the one of size 10" in out
    assert "SECURITY ERROR" in out and "consistency proof computed from the site's tiles" in out
    # and the honest continuation of the first log is accepted
    with TileLog.open(tmp_path / "a", signer) as log:
        log.append([b"entry 10"])
    assert run(capsys, *base, "--log", tmp_path / "a", "consistency")[0] == 0
