"""SoftHSM2 tokens for the tests: each test its own token in its own ``SOFTHSM2_CONF`` (``demo.new_softhsm_token``),
and the command line run against it as an operator would (a subprocess with the token's environment)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from publisher import demo
from publisher.config import TokenKey

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def need_softhsm() -> None:
    """Skip (fail under CI, which installs it from .ci/debian-packages) without SoftHSM2 and OpenSC."""
    missing = [tool for tool in ("softhsm2-util", "pkcs11-tool") if shutil.which(tool) is None]
    if missing or not any(m.is_file() for m in demo.SOFTHSM_MODULES):
        reason = f"SoftHSM2/OpenSC missing ({', '.join(missing) or 'module'}); .ci/debian-packages installs them"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Token:
    """A fresh SoftHSM2 token: where it lives, its PIN, and the environment that reaches it."""

    folder: Path
    key: TokenKey

    @property
    def conf(self) -> Path:
        return self.folder / "softhsm2.conf"

    @property
    def pin(self) -> str:
        return (self.folder / "user-pin").read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), "CPL_HSM_PIN": self.pin}

    def tool(self, *args: str, login: bool = True) -> subprocess.CompletedProcess[str]:
        """``pkcs11-tool`` (OpenSC, a second PKCS#11 client) on this token."""
        argv = ["pkcs11-tool", "--module", str(self.key.module), "--token-label", self.key.uri.path["token"]]
        argv += ["--login", "--pin", self.pin] if login else []
        return subprocess.run([*argv, *args], env=self.env, capture_output=True, text=True, check=False)

    def remove(self) -> Path:
        """Take the token away (its store moves aside); returns where it went, for ``restore``."""
        aside = self.folder / "removed"
        (self.folder / "tokens").rename(aside)
        (self.folder / "tokens").mkdir()
        return aside

    def restore(self, aside: Path) -> None:
        """Put a removed token back."""
        (self.folder / "tokens").rmdir()
        aside.rename(self.folder / "tokens")


@pytest.fixture(name="token")
def token_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Token]:
    """A fresh token for this test; ``SOFTHSM2_CONF`` points at it and ``CPL_HSM_PIN`` holds its PIN while the
    test runs."""
    need_softhsm()
    monkeypatch.setenv("SOFTHSM2_CONF", "")  # restored after the test; new_softhsm_token sets it
    folder = tmp_path / "hsm"
    made = Token(folder, demo.new_softhsm_token(folder, "cpl-test"))
    monkeypatch.setenv("CPL_HSM_PIN", made.pin)
    yield made


def cli(token: Token, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``cpl-publisher ARGS`` in a subprocess, with the token's environment (and ``env`` added)."""
    return subprocess.run(
        [str(VENV_BIN / "cpl-publisher"), *args],
        env={**token.env, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
