"""The publication's git history: publish commits, refusals, and ``history verify`` naming a rewrite."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from publication_fixtures import Pub, git, new_publication
from site_fixtures import write_submission

from publisher import demo
from publisher.cli import main
from publisher.publish import publish
from publisher.tlog import TileLog, open_log
from publisher.tlog.checkpoint import Checkpoint
from publisher.tlog.note import Signer, sign_note
from publisher.tlog.signer import load_log_signer


def head(pub: Path) -> str:
    return git(pub, "rev-parse", "HEAD").strip()


def submit(p: Pub, sub_id: str, n: int) -> None:
    rows = [
        (p.maker.org_id, "Acme", f"ESME-{sub_id}-{k}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(f"{sub_id}{k}"))
        for k in range(n)
    ]
    write_submission(p.root, sub_id, rows, [p.maker, p.supplier])


@pytest.fixture()
def pub(tmp_path: Path) -> Pub:
    p = new_publication(tmp_path, "history.example/log")
    submit(p, "S001", 3)
    assert publish(p.config, p.now + dt.timedelta(seconds=1)).committed
    return p


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_two_publishes_verify_and_json_output_parses(pub: Pub, capsys: pytest.CaptureFixture[str]) -> None:
    submit(pub, "S002", 2)
    code, out, err = cli(capsys, "--json", "publish", "--dir", str(pub.root))
    assert code == 0, err
    result = json.loads(out)
    assert result["commit"] == head(pub.root)
    assert result["size"] == open_log(pub.config).size
    assert "S002" in result["intake"]["accepted"]
    code, out, err = cli(capsys, "history", "verify", "--dir", str(pub.root))
    assert code == 0, err
    assert "OK:" in out
    vkey = (pub.root / "log" / "vkey").read_text().strip()
    code, out, err = cli(capsys, "--json", "history", "verify", "--dir", str(pub.root), "--vkey", vkey)
    assert code == 0, err
    assert json.loads(out)["verified"] is True
    assert json.loads(out)["commits"] >= 3


def test_publish_with_nothing_to_do_makes_no_commit(pub: Pub, capsys: pytest.CaptureFixture[str]) -> None:
    before = head(pub.root)
    count = git(pub.root, "rev-list", "--count", "HEAD")
    code, out, _ = cli(capsys, "publish", "--dir", str(pub.root))
    assert code == 0
    assert "nothing to publish" in out
    code, out, _ = cli(capsys, "--json", "publish", "--dir", str(pub.root))
    assert code == 0
    assert json.loads(out)["commit"] is None
    assert head(pub.root) == before
    assert git(pub.root, "rev-list", "--count", "HEAD") == count
    assert git(pub.root, "status", "--porcelain") == ""


@pytest.mark.parametrize("where", ["crl/ica.json", "log/checkpoint", "log/extra-untracked", "registers/issued.jsonl"])
def test_publish_refuses_a_dirty_tree(pub: Pub, capsys: pytest.CaptureFixture[str], where: str) -> None:
    before = head(pub.root)
    path = pub.root / where
    with path.open("a") as f:
        f.write("\n")
    submit(pub, "S009", 1)
    code, _, err = cli(capsys, "publish", "--dir", str(pub.root))
    assert code == 1
    assert "refused" in err
    assert "uncommitted changes" in err
    assert where in err
    assert head(pub.root) == before
    assert (pub.root / "inbox" / "S009").is_dir()  # nothing was taken in


def test_publish_refuses_when_heads_checkpoint_is_not_the_logs(pub: Pub, capsys: pytest.CaptureFixture[str]) -> None:
    # Commit a checkpoint, properly signed with the log key, for a tree the log does not hold.
    signer = load_log_signer(pub.config.log_key, pub.root)
    log = open_log(pub.config)
    forged = sign_note(Checkpoint(pub.config.origin, log.size + 5, b"\x11" * 32).body(), [signer])
    (pub.root / "log" / "checkpoint").write_text(forged)
    git(pub.root, "commit", "-q", "-am", "forged checkpoint")
    before = head(pub.root)
    code, _, err = cli(capsys, "publish", "--dir", str(pub.root))
    assert code == 1
    # publish's own HEAD check refuses, before the log engine is opened
    assert err.startswith(
        f"cpl-publisher: refused: the log committed in HEAD does not hash to its signed checkpoint "
        f"(size {log.size + 5}): "
    )
    assert "log/tile/" in err and "missing" in err
    assert head(pub.root) == before


def test_history_verify_names_the_commit_that_rewrote_an_entry(
    pub: Pub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = open_log(pub.config)
    entries = list(log.entries())
    assert len(entries) >= 4
    good = head(pub.root)
    # Rebuild the log with the same key, a different entry 0 and the same later entries, plus one.
    signer = load_log_signer(pub.config.log_key, pub.root)
    forged_dir = tmp_path / "forged-log"
    with TileLog.create(forged_dir, signer) as forged:
        forged.append([b'{"type":"forged/v1"}', *entries[1:], b'{"type":"extra/v1"}'])
    shutil.rmtree(pub.root / "log" / "tile")
    shutil.copytree(forged_dir / "tile", pub.root / "log" / "tile")
    shutil.copyfile(forged_dir / "checkpoint", pub.root / "log" / "checkpoint")
    git(pub.root, "add", "--all", "log")
    git(pub.root, "commit", "-q", "-m", "rewrite entry 0")
    bad = head(pub.root)
    assert bad != good
    code, _, err = cli(capsys, "history", "verify", "--dir", str(pub.root))
    assert code == 1
    assert "VERIFICATION FAILED" in err
    assert f"commit {bad[:12]}: log/tile/" in err
    assert "published files never change once committed" in err


REWRITE_ENTRY_0 = """
import pathlib
for f in pathlib.Path("log/tile/entries").rglob("*"):
    if f.is_file():
        f.write_bytes(f.read_bytes().replace(b'"issuer":"iki-root"', b'"issuer":"iki-r00t"', 1))
"""


def test_an_entry_rewritten_in_every_commit_is_named_and_refused(
    pub: Pub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The attack the append-only rule cannot see: history rewritten from the commit that logged
    # the entry onwards, bundles changed, hash tiles and signed checkpoints left as they were.
    # The first publish logs two CRLs and the lookup commitment: its bundle is 000.p/3.
    script = tmp_path / "rewrite.py"
    script.write_text(REWRITE_ENTRY_0)
    subprocess.run(
        ["git", "filter-branch", "-f", "--tree-filter", f"python3 {script}", "HEAD"],
        cwd=pub.root,
        capture_output=True,
        check=True,
        env={**os.environ, "FILTER_BRANCH_SQUELCH_WARNING": "1"},
    )
    first = git(pub.root, "rev-list", "--max-parents=0", "HEAD").strip()
    assert (
        b"iki-r00t"
        in subprocess.run(
            ["git", "show", f"{first}:log/tile/entries/000.p/3"], cwd=pub.root, capture_output=True, check=True
        ).stdout
    )
    before = head(pub.root)
    code, _, err = cli(capsys, "history", "verify", "--dir", str(pub.root))
    assert code == 1
    assert f"commit {first[:12]}: log/tile/entries/000.p/3: entries do not match tile/0 hashes" in err
    submit(pub, "S010", 1)
    code, _, err = cli(capsys, "publish", "--dir", str(pub.root))
    assert code == 1
    assert "refused: the log committed in HEAD does not hash to its signed checkpoint" in err
    assert "log/tile/entries/000" in err
    assert head(pub.root) == before


def test_history_verify_refuses_checkpoints_signed_by_another_key(pub: Pub, capsys: pytest.CaptureFixture[str]) -> None:
    other = Signer.generate(pub.config.origin)  # same origin, another key: a different log
    first = git(pub.root, "rev-list", "--max-parents=0", "HEAD").strip()
    code, _, err = cli(capsys, "history", "verify", "--dir", str(pub.root), "--vkey", other.verifier.vkey)
    assert code == 1
    assert f"commit {first[:12]}: log/checkpoint: " in err
    assert "not signed by any trusted key" in err


def test_a_commit_message_longer_than_an_argument_may_be_is_committed(tmp_path: Path) -> None:
    """A publish of thousands of submissions names them all: the message must not go through argv
    (Linux refuses one argument over 128 KiB)."""
    from publisher.publish import gitstate, init_repository

    repo = init_repository(tmp_path)
    (tmp_path / "state").write_text("x")
    message = "publish: accepted " + ", ".join(f"SUB-{i:06d}" for i in range(20_000))
    assert len(message) > 200_000
    commit = gitstate.commit(repo, ["state"], message)
    assert commit is not None
    assert (
        subprocess.run(
            ["git", "-C", str(tmp_path), "log", "-1", "--format=%B"], capture_output=True, text=True, check=True
        ).stdout.strip()
        == message
    )
