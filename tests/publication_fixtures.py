"""A small real publication for tests and benchmarks: the demo CA, a manufacturer, a supplier, one publish."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
from pathlib import Path

from publisher import parties, publication, scaffold
from publisher.config import Config
from publisher.config import load as load_config
from publisher.publish import init_repository, publish


@dataclasses.dataclass
class Pub:
    """A publication under git, its configuration, and two organisations that can sign submissions."""

    root: Path
    config: Config
    maker: parties.Party
    supplier: parties.Party
    now: dt.datetime


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` (with an identity for commits) and return its output; fail on error."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def new_publication(tmp: Path, origin: str) -> Pub:
    """``tmp/publication`` with its keys in ``tmp/keys`` and ``tmp/certs``, after its first publish."""
    root = tmp / "publication"
    scaffold.init_publication(root, tmp / "keys", "http://127.0.0.1:8000", origin)
    init_repository(root)
    config = load_config(root)
    now = publication.now_utc()
    maker = parties.issue_party(config, "Acme Meters Ltd", "1001", "Manufacturer", now, folder=tmp / "certs")
    supplier = parties.issue_party(config, "Northern Power Supply", "2001", "Supplier", now, folder=tmp / "certs")
    publish(config, now)
    return Pub(root, config, maker, supplier, now)
