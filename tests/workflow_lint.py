"""Lint GitHub Actions workflows as `make test` lints the repository's own: GitHub's workflow schema
(check-jsonschema) and zizmor, offline. For the workflows the README gives users to copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def lint_workflow(path: Path, zizmor_args: list[str]) -> None:
    """Fail unless ``path`` passes the workflow schema and ``zizmor --offline`` (with ``zizmor_args``) passes
    on its folder."""
    schema = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)]
    done = subprocess.run(schema, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    zizmor = [str(BIN / "zizmor"), "--offline", "--quiet", *zizmor_args, str(path.parent)]
    done = subprocess.run(zizmor, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
