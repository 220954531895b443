"""Hostile inbox layouts: symbolic links are refused by a named check and nothing is read or written
through them; every report stays inside the publication."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from publication_fixtures import Pub, git, new_publication
from site_fixtures import write_submission

from publisher import demo
from publisher.cli import main as publisher_main
from publisher.entries import json_entries
from publisher.publish import publish
from publisher.tlog import open_log


@pytest.fixture()
def pub(tmp_path: Path) -> Pub:
    return new_publication(tmp_path, "links.example/log")


def _row(pub: Pub, label: str) -> tuple[str, ...]:
    return (pub.maker.org_id, "Acme", f"ESME-{label}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(label))


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        digest.update(p.relative_to(folder).as_posix().encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


def _logged_submissions(pub: Pub) -> set[str]:
    return {str(e["submission_id"]) for _, e in json_entries(open_log(pub.config).entries()) if "submission_id" in e}


def test_a_symlinked_submission_folder_is_refused_and_left_untouched(pub: Pub, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_submission(outside, "S1", [_row(pub, "s1")], [pub.maker, pub.supplier])  # valid, but elsewhere
    shutil.move(str(outside / "inbox" / "S1"), str(outside / "S1"))
    before = _tree_digest(outside)
    (pub.root / "inbox").mkdir(exist_ok=True)
    (pub.root / "inbox" / "S1").symlink_to(outside / "S1", target_is_directory=True)
    result = publish(pub.config)
    assert [f.rule for f in result.intake.rejected["S1"]] == ["Z4.2-no-links"]
    assert "S1" not in _logged_submissions(pub)
    assert _tree_digest(outside) == before  # nothing read into the log, nothing written there
    report = json.loads((pub.root / "inbox" / "S1.rejection.json").read_text())
    assert report["findings"][0]["rule"] == "Z4.2-no-links"
    assert not (pub.root / "processed" / "S1").exists()
    # the next publish changes nothing (the report is not rewritten)
    head = git(pub.root, "rev-parse", "HEAD")
    publish(pub.config)
    assert git(pub.root, "rev-parse", "HEAD") == head


def test_a_symlinked_file_in_a_submission_is_refused_without_reading_it(pub: Pub, tmp_path: Path) -> None:
    folder = write_submission(pub.root, "S2", [_row(pub, "s2")], [pub.maker, pub.supplier])
    secret = tmp_path / "secret.p7s"
    secret.write_bytes((folder / "signatures.p7s").read_bytes())
    (folder / "signatures.p7s").unlink()
    (folder / "signatures.p7s").symlink_to(secret)
    result = publish(pub.config)
    assert "Z4.2-no-links" in [f.rule for f in result.intake.rejected["S2"]]
    assert "signatures.p7s is a symbolic link" in (folder / "rejection.txt").read_text()
    assert (folder / "signatures.p7s").is_symlink() and secret.read_bytes()  # the link and its target as they were


def test_an_inbox_that_is_a_symlink_is_refused(pub: Pub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(pub.root / "inbox", ignore_errors=True)
    (pub.root / "inbox").symlink_to(elsewhere, target_is_directory=True)
    assert publisher_main(["publish", "--dir", str(pub.root)]) == 1
    assert "inbox is a symbolic link" in capsys.readouterr().err


def test_the_publish_commit_names_who_signed_each_accepted_submission(pub: Pub) -> None:
    write_submission(pub.root, "S3", [_row(pub, "s3")], [pub.maker, pub.supplier])
    result = publish(pub.config)
    message = git(pub.root, "log", "-1", "--format=%B")
    assert "accepted: S3 (1 rows; signed by " in message
    assert f"Manufacturer Acme Meters Ltd (ID {pub.maker.org_id}, certificate " in message
    assert "Supplier Northern Power Supply (ID 2001" in message
    assert result.to_json()["intake"]["signers"]["S3"][0]["certificate_sha256"]  # type: ignore[index]
