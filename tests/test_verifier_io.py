"""The verifier's fetching under hostile or unusual conditions: servers that drip bytes, a command that
runs out of time, gzip-encoded sites and gzip bombs, local site folders holding FIFOs or symbolic links
out of the folder, unreachable URLs, an old ``cryptography``, and ``--version``.

Each case ends promptly with the documented exit code and a message that names the URL or path; no
traceback reaches the user. Runs that could hang on a broken verifier run the downloadable file in a
subprocess with a timeout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from verifier_fixtures import SiteServer, World, iter_files, shared_world

import publisher
from publisher.cli import main as publisher_main
from verifier import cpl_verify
from verifier.cpl_verify import main

REPO = Path(__file__).resolve().parents[1]
VERIFIER = REPO / "verifier" / "cpl_verify.py"
OLD_CRYPTOGRAPHY_LOCK = REPO / "tests" / "old-cryptography.lock"
OLD_CRYPTOGRAPHY_VENV = REPO / ".venv-old-crypto"  # kept between runs; ignored by git


@dataclass
class Run:
    code: int
    out: str
    seconds: float


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.getbasetemp() / "shared-verifier-world"
    base.mkdir(exist_ok=True)
    return shared_world(str(base))


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[SiteServer]:
    with SiteServer(world.site) as srv:
        yield srv


@pytest.fixture()
def srv(server: SiteServer) -> Iterator[SiteServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture()
def trust(world: World, tmp_path: Path) -> Path:
    """A trust file without a site: each test names the site with --site."""
    return world.write_trust(tmp_path / "trust.json")


def run_file(*args: object, timeout: float = 30) -> Run:
    """The downloadable file in a fresh process; a hang fails the test instead of the suite."""
    start = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, str(VERIFIER), *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the verifier was still running after {timeout} s: {args}")
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    return Run(result.returncode, out, time.monotonic() - start)


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> Run:
    start = time.monotonic()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()  # an uncaught exception would have failed the test already
    return Run(code, captured.out + captured.err, time.monotonic() - start)


def site_files(world: World) -> dict[str, bytes]:
    return {p.relative_to(world.site).as_posix(): p.read_bytes() for p in iter_files(world.site)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# =====================================================================================================
# cryptography too old: a clear message, not an AttributeError
# =====================================================================================================

_NETWORK_TROUBLE = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
    "Connection refused",
    "ConnectTimeoutError",
)


def _old_cryptography_python() -> Path:
    """A venv with cryptography 41.0.7 from the hash-pinned lock file, built once and kept."""
    lock = OLD_CRYPTOGRAPHY_LOCK.read_bytes()
    key = hashlib.sha256(lock + sys.version.encode()).hexdigest()
    python = OLD_CRYPTOGRAPHY_VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = OLD_CRYPTOGRAPHY_VENV / ".lock-sha256"
    if stamp.exists() and stamp.read_text() == key and python.exists():
        return python
    building = OLD_CRYPTOGRAPHY_VENV.with_name(OLD_CRYPTOGRAPHY_VENV.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True, timeout=300)
    new_python = building / python.relative_to(OLD_CRYPTOGRAPHY_VENV)
    pip = subprocess.run(
        [str(new_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--require-hashes", "--only-binary", ":all:", "-r", str(OLD_CRYPTOGRAPHY_LOCK)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if pip.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        if any(marker in pip.stderr for marker in _NETWORK_TROUBLE):
            pytest.skip(f"pip cannot reach the package index to install cryptography 41.0.7: {pip.stderr[-500:]}")
        pytest.fail(f"pip could not install {OLD_CRYPTOGRAPHY_LOCK.name}: {pip.stderr}")
    (building / ".lock-sha256").write_text(key)
    shutil.rmtree(OLD_CRYPTOGRAPHY_VENV, ignore_errors=True)
    building.rename(OLD_CRYPTOGRAPHY_VENV)
    return python


def test_an_old_cryptography_is_refused_with_a_clear_message(trust: Path, tmp_path: Path) -> None:
    python = _old_cryptography_python()
    version = subprocess.run(
        [str(python), "-c", "import cryptography; print(cryptography.__version__)"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert version == "41.0.7"
    for command in (["crl"], ["cert", str(tmp_path / "any.pem")], ["audit"], ["--help"]):
        result = subprocess.run(
            [str(python), str(VERIFIER), "--trust", str(trust), *command],
            capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr == "cpl-verify needs cryptography >= 42.0; found 41.0.7: pip install -U cryptography\n"


def test_the_installed_command_checks_cryptography_first(
    monkeypatch: pytest.MonkeyPatch, trust: Path, capsys: Any
) -> None:
    import cryptography

    monkeypatch.setattr(cryptography, "__version__", "38.0.4")  # Debian 12's
    r = run_main(capsys, "--trust", trust, "crl")
    assert r.code == 2
    assert r.out == "cpl-verify needs cryptography >= 42.0; found 38.0.4: pip install -U cryptography\n"


# =====================================================================================================
# --version: the verifier, the script and the publisher say the package's version
# =====================================================================================================


def test_versions_agree_with_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert cpl_verify.__version__ == version == publisher.__version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"cpl-verify {version}\n"

    r = run_file("--version")
    assert (r.code, r.out) == (0, f"cpl-verify {version}\n")

    with pytest.raises(SystemExit) as exit_:
        publisher_main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"cpl-publisher {version}\n"
