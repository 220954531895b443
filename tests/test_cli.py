"""The ``cpl-publisher`` command line: the commands a log operator and an auditor run."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from publisher.cli import main
from publisher.tlog.note import Signer


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def log_with_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path, str]:
    key = tmp_path / "secret" / "log.key"
    code, out, _ = run(capsys, "--json", "log", "keygen", "--origin", "cli.example/log", "--out", str(key))
    assert code == 0
    vkey = json.loads(out)["vkey"]
    log = tmp_path / "log"
    assert run(capsys, "log", "init", str(log), "--key-file", str(key))[0] == 0
    files = []
    for i in range(5):
        f = tmp_path / f"e{i}.json"
        f.write_bytes(b'{"n":%d}' % i)
        files.append(str(f))
    code, out, _ = run(capsys, "log", "append", str(log), "--key-file", str(key), "--json", *files)
    assert code == 0
    assert json.loads(out) == {
        "first_index": 0,
        "appended": 5,
        "size": 5,
        "root": json.loads(out)["root"],
    }
    return log, key, vkey


def test_keygen_writes_private_key_readable_only_by_owner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k"
    assert run(capsys, "log", "keygen", "--origin", "a.example/log", "--out", str(key))[0] == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Signer.from_skey(key.read_text()).name == "a.example/log"
    code, _, err = run(capsys, "log", "keygen", "--origin", "a.example/log", "--out", str(key))
    assert code == 2
    assert "refusing to overwrite" in err


def test_keygen_rejects_origin_with_plus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "log", "keygen", "--origin", "bad+name", "--out", str(tmp_path / "k"))
    assert code == 2
    assert "invalid key name" in err


def test_append_verify_proof_round_trip(
    log_with_entries: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, vkey = log_with_entries
    code, out, _ = run(capsys, "log", "verify", str(log), "--vkey", vkey, "--json")
    assert code == 0
    assert json.loads(out)["verified"] is True
    assert json.loads(out)["size"] == 5
    proof = tmp_path / "3.tlog-proof"
    assert run(capsys, "log", "proof", str(log), "3", "-o", str(proof))[0] == 0
    entry = tmp_path / "e3.json"
    # The entry rides in the proof's extra line (before the index, as c2sp.org/tlog-proof orders them).
    extra = base64.b64encode(entry.read_bytes()).decode()
    assert proof.read_text().startswith(f"c2sp.org/tlog-proof@v1\nextra {extra}\nindex 3\n")
    code, out, _ = run(capsys, "log", "check-proof", str(proof), "--entry", str(entry), "--vkey", vkey)
    assert code == 0
    assert "entry 3 is in cli.example/log at size 5" in out


def test_proof_for_an_index_outside_the_log_is_a_usage_error(
    log_with_entries: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, _ = log_with_entries
    code, _, err = run(capsys, "log", "proof", str(log), "7")
    assert code == 2
    assert "entry 7 is not in the log (size 5)" in err


def test_check_proof_fails_for_another_entry_or_key(
    log_with_entries: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, vkey = log_with_entries
    proof = tmp_path / "p"
    run(capsys, "log", "proof", str(log), "3", "-o", str(proof))
    code, _, err = run(capsys, "log", "check-proof", str(proof), "--entry", str(tmp_path / "e2.json"), "--vkey", vkey)
    assert code == 1
    assert "VERIFICATION FAILED" in err
    other = Signer.generate("cli.example/log").verifier.vkey
    code, _, err = run(capsys, "log", "check-proof", str(proof), "--entry", str(tmp_path / "e3.json"), "--vkey", other)
    assert code == 1
    assert "not signed by any trusted key" in err


def test_missing_or_bad_key_is_a_usage_error(
    log_with_entries: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, key, _ = log_with_entries
    code, _, err = run(capsys, "log", "append", str(log), str(key))
    assert code == 2
    assert "--key-file FILE, --key-env VAR or --pkcs11 URI" in err
    code, _, err = run(capsys, "log", "append", str(log), "--key-env", "CPL_TEST_UNSET_KEY_VAR", str(key))
    assert code == 2
    assert "CPL_TEST_UNSET_KEY_VAR is empty or unset" in err
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    code, _, err = run(capsys, "log", "append", str(log), "--key-file", str(bad), str(key))
    assert code == 2
    assert "log signing key" in err


def test_key_from_environment(
    log_with_entries: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log, key, _ = log_with_entries
    monkeypatch.setenv("CPL_LOG_KEY", key.read_text())
    code, out, _ = run(capsys, "log", "append", str(log), "--key-env", "CPL_LOG_KEY", "--lines", str(key))
    assert code == 0
    assert "size 6" in out


def test_wrong_signing_key_refuses_to_append(
    log_with_entries: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _, _ = log_with_entries
    other = tmp_path / "other.key"
    other.write_text(Signer.generate("cli.example/log").skey)
    code, _, err = run(capsys, "log", "append", str(log), "--key-file", str(other), str(other))
    assert code == 1
    assert "right signing key" in err


def test_demo_builds_a_publication_whose_printed_commands_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "demo"
    code, out, _ = run(capsys, "--json", "demo", "--out", str(out_dir))
    assert code == 0
    info = json.loads(out)
    assert len(info["accepted"]) >= 24
    assert {"X001", "X002", "X003", "X004", "X005", "X006"} <= set(info["rejected"])
    publication = Path(info["publication"])
    published = [p for p in publication.rglob("*") if p.is_file() and ".git" not in p.parts]
    assert (publication / "crl" / "ica.crl").is_file()
    assert (publication / "inbox" / "X003" / "rejection.txt").is_file()
    # No private key material anywhere in what is published, nor under the output folder.
    assert not any(b"PRIVATE" in p.read_bytes() for p in published)
    assert list((Path(info["keys"]) / "keys").glob("*.key"))
    assert not list(out_dir.rglob("*.key"))
    assert run(capsys, "log", "verify", info["log"], "--vkey", info["vkey"])[0] == 0
    assert run(capsys, "history", "verify", "--dir", info["publication"], "--vkey", info["vkey"])[0] == 0
    trust = json.loads((out_dir / "trust.json").read_text())
    assert trust["log"]["vkey"] == info["vkey"]
    # Rebuilding replaces the demo folder; a folder that is not a demo is never deleted.
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    code, _, err = run(capsys, "demo", "--out", str(precious))
    assert code == 2
    assert "is not a demo folder" in err
    assert (precious / "keep.txt").exists()


def test_python_dash_m_and_help() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "publisher", "log", "--help"], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0
    assert "verify" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "publisher"], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2
