"""The deployment path, run as it runs: CI publishing from fresh clones, and the README's operator flow.

The CI rounds run the ``Publish`` step of ``.github/workflows/publish.yml``
itself (its ``run`` script, read from the workflow file) in a fresh clone of
a bare remote, with the keys in environment variables as the workflow's
secrets provide them. SECAS delivers submissions by pushing folders under
``inbox/``. The operator flow is the shell block of the README marked
``operator-flow``, run line by line as written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from publication_fixtures import git, new_publication
from site_fixtures import write_submission

from publisher import demo, keys, parties, publication, scaffold
from publisher.config import load as load_config
from publisher.entries import json_entries
from publisher.publish import init_repository, publish
from publisher.site.export import export_tree
from publisher.tlog import open_log
from verifier.cpl_verify import SHEET_COLUMNS

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
WORKFLOW = REPO / ".github" / "workflows" / "publish.yml"
KEY_ENVS = {"log": "CPL_LOG_KEY", "iki-root": "CPL_ROOT_KEY", "ica": "CPL_ICA_KEY"}


@dataclasses.dataclass
class Deployment:
    remote: Path
    keys: dict[str, str]  # environment variable -> PEM / skey, as the workflow's secrets
    maker: parties.Party
    supplier: parties.Party
    tmp: Path
    clones: int = 0

    def clone(self, who: str) -> Path:
        self.clones += 1
        where = self.tmp / f"{who}-{self.clones}"
        git(self.tmp, "clone", "-q", str(self.remote), str(where))
        return where


def publish_step_script() -> str:
    """The ``run`` script of the workflow's Publish step, exactly as CI runs it."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    [step] = [s for s in workflow["jobs"]["publish"]["steps"] if s.get("name") == "Publish"]
    assert set(step["env"]) == set(KEY_ENVS.values())
    return str(step["run"])


@pytest.fixture()
def deployment(tmp_path: Path) -> Deployment:
    """A publication configured with key_env, as a real deployment is, pushed to a bare remote."""
    p = new_publication(tmp_path, "deploy.example/log")
    keys_dir = tmp_path / "keys"
    toml = (p.root / "publisher.toml").read_text()
    for name, env in KEY_ENVS.items():
        toml = toml.replace(f'key_file = "{keys_dir / (name + ".key")}"', f'key_env = "{env}"')
    assert "key_file" not in toml
    (p.root / "publisher.toml").write_text(toml)
    git(p.root, "commit", "-q", "-m", "keys from the CI secrets", "publisher.toml")
    keys = {env: (keys_dir / f"{name}.key").read_text() for name, env in KEY_ENVS.items()}
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    branch = git(p.root, "rev-parse", "--abbrev-ref", "HEAD").strip()
    git(remote, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
    git(p.root, "push", "-q", str(remote), branch)
    return Deployment(remote, keys, p.maker, p.supplier, tmp_path)


def ci_run(d: Deployment) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The scheduled publish job: a fresh clone, the Install step's venv, the Publish step's script."""
    work = d.clone("ci")
    (work / ".venv").symlink_to(REPO / ".venv")  # what the Install step builds from requirements.lock
    with (work / ".git" / "info" / "exclude").open("a") as f:
        f.write("/.venv\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        ["bash", "-e", "-c", publish_step_script()],
        cwd=work,
        env={**env, **d.keys},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return work, done


def secas_pushes(d: Deployment, good: str, bad: str | None = None) -> None:
    work = d.clone("secas")
    row = (d.maker.org_id, "Acme", f"ESME-{good}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(good))
    write_submission(work, good, [row], [d.maker, d.supplier])
    if bad is not None:
        write_submission(work, bad, [(*row[:7], "0" * 63)], [d.maker, d.supplier])
    git(work, "add", "inbox")
    git(work, "commit", "-q", "-m", f"submissions {good} {bad or ''}")
    git(work, "push", "-q")


def logged_submissions(pub: Path) -> list[str]:
    """The submissions a clone's log holds, after the verifier's full audit of it."""
    out = subprocess.run(
        [VENV_BIN / "cpl-verify", "--json", "--site", str(pub), "--tofu", "audit"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    entries = json_entries(open_log(load_config(pub)).entries())
    return [str(e["submission_id"]) for _, e in entries if e.get("type") == "cpl-association/v1"]


def test_ci_publishes_from_fresh_clones_and_submissions_make_the_round_trip(deployment: Deployment) -> None:
    d = deployment
    secas_pushes(d, "G001", "B001")
    _, first = ci_run(d)
    assert "committed" in first.stdout and "accepted: G001" in first.stdout and "rejected: B001" in first.stdout
    assert "OK:" in first.stdout  # the step's history verify

    view = d.clone("view")
    assert (view / "processed" / "G001").is_dir() and not (view / "inbox" / "G001").exists()
    report = view / "inbox" / "B001" / "rejection.txt"
    assert report.exists(), "the rejection report must reach the repository, where SECAS reads it"
    assert "image_hash" in report.read_text() or "hash" in report.read_text()
    assert logged_submissions(view) == ["G001"]

    head = git(d.remote, "rev-parse", "HEAD")
    _, second = ci_run(d)  # nothing new: neither submission is seen again, nothing is committed
    assert "nothing to publish" in second.stdout
    assert git(d.remote, "rev-parse", "HEAD") == head

    secas_pushes(d, "G002")
    _, third = ci_run(d)
    assert "accepted: G002" in third.stdout and "B001" not in third.stdout.split("\n\n")[-1]

    final = d.clone("auditor")
    assert logged_submissions(final) == ["G001", "G002"]
    done = subprocess.run(
        [VENV_BIN / "cpl-publisher", "--json", "history", "verify", "--dir", str(final)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["commits"] == 3  # bootstrap, G001, G002
    secrets = subprocess.run(["git", "grep", "-I", "-l", "PRIVATE", "HEAD"], cwd=final, capture_output=True)
    assert secrets.returncode == 1, secrets.stdout  # no key ever reached the repository
    assert not any((final / p).exists() for p in ("log/.state", ".publisher"))


def readme_block(marker: str) -> list[str]:
    """The commands of the README's shell block that follows ``<!-- marker -->``."""
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```sh\n(.*?)```", text, re.S)
    assert m, f"README.md has no shell block marked {marker}"
    return [line for line in m.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_operator_flow_runs_verbatim(tmp_path: Path) -> None:
    p = new_publication(tmp_path, "operator.example/log")
    pub, org = p.root, p.maker
    (tmp_path / "trust.json").write_text(json.dumps(demo.trust_of(p.config)))
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "PUB": str(pub),
        "SERIAL": f"{org.cert.serial_number:x}",
    }
    for line in readme_block("operator-flow"):
        done = subprocess.run(["bash", "-e", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
    assert git(pub, "status", "--porcelain") == ""
    subjects = git(pub, "log", "--format=%s").splitlines()
    assert subjects[0].startswith("publish: ")
    assert subjects[1].startswith("crl refresh: ica #")
    assert subjects[2].startswith(f"revoke ica serial {env['SERIAL']} (keyCompromise)")


def test_the_readme_manufacturer_flow_runs_verbatim(tmp_path: Path) -> None:
    """Sign, endorse, pre-check with the verifier: then intake accepts exactly what the pre-check accepted."""
    p = new_publication(tmp_path, "maker.example/log")
    (tmp_path / "trust.json").write_text(json.dumps(demo.trust_of(p.config)))
    for name, org in (("acme", p.maker), ("supplier", p.supplier)):
        (tmp_path / f"{name}.pem").write_bytes(org.cert.public_bytes(serialization.Encoding.PEM))
        keys.write_private_key(tmp_path / f"{name}.key", org.key)
    row = (p.maker.org_id, "Acme", "ESME-RM", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash("readme"))
    (tmp_path / "sheet.csv").write_text(",".join(SHEET_COLUMNS) + "\r\n" + ",".join(row) + "\r\n")
    (tmp_path / "request.json").write_text(json.dumps({"submitter_ref": "ACME-9", "panel_ref": "PANEL-9"}))
    export_tree(p.config, tmp_path / "site", publication.now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"))
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "SITE": str(tmp_path / "site")}
    for line in readme_block("manufacturer-flow"):
        done = subprocess.run(["bash", "-e", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
    assert "would ACCEPT it" in done.stdout and "Supplier: Northern Power Supply (ID 2001)" in done.stdout
    shutil.copytree(tmp_path / "S100", p.root / "inbox" / "S100")
    report = publish(p.config, publication.now_utc())
    assert list(report.intake.accepted) == ["S100"], report.intake.rejected


def test_keys_are_never_written_into_a_git_work_tree_or_the_publication(tmp_path: Path) -> None:
    pub = tmp_path / "publication"
    scaffold.init_publication(pub, tmp_path / "keys", "http://127.0.0.1:8000", "keys.example/log")
    init_repository(pub)
    project = tmp_path / "project"
    git(tmp_path, "init", "-q", str(project))
    issue = [VENV_BIN / "cpl-publisher", "ca", "issue", "--dir", str(pub), "--issuer", "ica", "--org", "Acme"]
    issue += ["--org-id", "1001", "--role", "Manufacturer"]
    for out, why in ((project / "certs", "inside the git work tree"), (pub / "certs", "inside the publication")):
        done = subprocess.run([*issue, "--out", str(out)], capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert why in done.stderr
        assert not out.exists() or not list(out.rglob("*.key"))
    done = subprocess.run([*issue, "--out", str(tmp_path / "acme")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "acme").glob("*.key"))) == 1
    init = [VENV_BIN / "cpl-publisher", "ca", "init", "--dir", str(tmp_path / "p2"), "--site-url", "http://x"]
    done = subprocess.run(
        [*init, "--origin", "x/log", "--keys-dir", str(project / "keys")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "inside the git work tree" in done.stderr


def test_demo_refuses_to_delete_a_publication_it_did_not_make(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo.build(out)
    demo.build(out)  # untouched: rebuilt
    pub = out / "publication"
    (pub / "inbox" / "MINE").mkdir()
    (pub / "inbox" / "MINE" / "note.txt").write_text("work of my own")
    with pytest.raises(demo.DemoRefused, match="changes the demo did not make"):
        demo.build(out)
    assert (pub / "inbox" / "MINE" / "note.txt").exists()
    git(pub, "add", "inbox")
    git(pub, "commit", "-q", "-m", "my own commit")
    with pytest.raises(demo.DemoRefused, match="refusing to delete them"):
        demo.build(out)
    assert (pub / "inbox" / "MINE" / "note.txt").exists()
