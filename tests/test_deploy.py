"""``cpl-publisher deploy``: a built site into a real S3 server (SeaweedFS on 127.0.0.1), then the verifier
against the bucket's public HTTP endpoint; the bucket's guards against a kill, two deployers and meddling."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from publication_fixtures import Pub, new_publication
from s3_fixtures import S3Server, anonymous_get, anonymous_put, s3_server  # noqa: F401 - the fixture ``s3``
from site_fixtures import REPO, build_site, write_submission
from workflow_lint import lint_workflow

from publisher import demo
from publisher.deploy import (
    CHECKPOINT_CACHE,
    IMMUTABLE_CACHE,
    PAGE_CACHE,
    Deployer,
    DeployRefused,
    Policy,
    Target,
    crl_cache,
    policy,
)
from publisher.publish import publish
from publisher.tlog import LogReader, read_vkey
from publisher.tlog.checkpoint import parse_unverified

VERIFY = [sys.executable, str(REPO / "verifier" / "cpl_verify.py")]
PUBLISHER = [sys.executable, "-m", "publisher"]
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


# -- the storage policy (pure) --------------------------------------------------------------------------------


def test_the_policy_of_each_kind_of_file() -> None:
    nu = {"ica": NOW + dt.timedelta(days=7)}
    for rel in ("log/tile/0/000", "log/tile/entries/x001/002.p/7", "log/evidence/" + "a" * 64, "crl/archive/ica/3.crl"):
        p = policy(rel, nu, NOW)
        assert p.immutable and p.cache_control == IMMUTABLE_CACHE, rel
    assert policy("log/vkey", nu, NOW).immutable
    cp = policy("log/checkpoint", nu, NOW)
    assert not cp.immutable and cp.cache_control == CHECKPOINT_CACHE and cp.content_type.startswith("text/plain")
    crl = policy("crl/ica.crl", nu, NOW)
    assert not crl.immutable and crl.content_type == "application/pkix-crl" and "max-age=300" in crl.cache_control
    assert policy("crl/archive/ica/3.crl", nu, NOW).content_type == "application/pkix-crl"
    assert policy("firmware/1001/index.html", nu, NOW).content_type == "text/html; charset=utf-8"
    assert not policy("log/lookup/hash/abc.json", nu, NOW).immutable
    assert policy("pki/ica.pem", nu, NOW).content_type == "application/x-pem-file"
    for rel, kind in [
        ("feeds/approvals.atom", "application/atom+xml"),
        ("feeds/crls.json", "application/feed+json"),
        ("feeds/manufacturer/m-0123456789ab.atom", "application/atom+xml"),
        ("feeds/manufacturer/1001.json", "application/feed+json"),
    ]:
        assert policy(rel, nu, NOW) == Policy(False, kind, PAGE_CACHE), rel
    assert policy("search/makers.json", nu, NOW).content_type == "application/json"  # a .json elsewhere: JSON


@given(st.integers(-(10**6), 10**8))
def test_a_current_crl_is_never_cached_near_or_past_its_next_update(left: int) -> None:
    value = crl_cache(NOW + dt.timedelta(seconds=left), NOW)
    if left <= 0:
        assert value == "no-cache"
    else:
        max_age = int(value.rsplit("=", 1)[1])
        assert 0 <= max_age <= 300 and max_age <= left // 4


@pytest.mark.parametrize("url", ["s3:/b", "http://b/p", "s3://", "s3://b/../x", "s3://b/a//c", "s3://b/p?x=1"])
def test_a_bad_destination_is_a_usage_error(url: str, tmp_path: Path) -> None:
    from publisher.errors import UsageError

    with pytest.raises(UsageError):
        Target.parse(url)
    assert Target.parse("s3://bucket/a/b/").key("log/checkpoint") == "a/b/log/checkpoint"
    assert Target.parse("s3://bucket").key("log/checkpoint") == "log/checkpoint"


# -- a publication, its site, a bucket ------------------------------------------------------------------------


@dataclass
class Setup:
    pub: Pub
    site: Path
    trust: Path
    tmp: Path
    rounds: int = 1

    def grow(self, rows: int = 3) -> None:
        """Publish another submission and rebuild the site incrementally (as the S3 workflow does)."""
        self.rounds += 1
        sub = f"S{self.rounds:03d}"
        write_submission(self.pub.root, sub, _rows(self.pub, sub, rows), [self.pub.maker, self.pub.supplier])
        result = publish(self.pub.config, self.pub.now + dt.timedelta(seconds=self.rounds))
        assert not result.intake.rejected
        built = build_site(self.pub.root, self.site, dirty=True)
        assert built.returncode == 0, built.stderr

    def snapshot(self, name: str) -> Path:
        copy = self.tmp / name
        shutil.copytree(self.site, copy)
        return copy


def _rows(p: Pub, sub: str, n: int) -> list[tuple[str, ...]]:
    return [
        (p.maker.org_id, "Acme", f"M-{sub}-{k}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(f"{sub}/{k}"))
        for k in range(n)
    ]


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    pub = new_publication(tmp_path, "deploy.example/log")
    write_submission(pub.root, "S001", _rows(pub, "S001", 5), [pub.maker, pub.supplier])
    publish(pub.config, pub.now + dt.timedelta(seconds=1))
    site = tmp_path / "site"
    built = build_site(pub.root, site)
    assert built.returncode == 0, built.stderr
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps(demo.trust_of(pub.config)))
    return Setup(pub, site, trust, tmp_path)


def deploy(s3: S3Server, site: Path, bucket: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [*PUBLISHER, "--json", "deploy", str(site), f"s3://{bucket}/cpl", "--endpoint-url", s3.endpoint, *extra]
    return subprocess.run(argv, cwd=REPO, env=s3.env(), capture_output=True, text=True, timeout=300, check=False)


def verify(s3: S3Server, bucket: str, trust: Path, *args: str, state: Path | None = None) -> dict[str, Any]:
    argv = [*VERIFY, "--json", "--trust", str(trust), "--site", s3.public_url(bucket, "cpl")]
    if state is not None:
        argv += ["--state", str(state)]
    result = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=300, check=False)
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def bucket_checkpoint(s3: S3Server, bucket: str) -> str:
    status, _, body = anonymous_get(s3.public_url(bucket, "cpl") + "log/checkpoint")
    assert status == 200
    return body.decode()


def site_log(site: Path) -> LogReader:
    key = read_vkey(site / "log")
    return LogReader(site / "log", key.name, [key])


# -- deploying and verifying ----------------------------------------------------------------------------------


def test_a_deployed_site_verifies_from_the_bucket_and_a_redeploy_uploads_what_changed(
    s3: S3Server, setup: Setup, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    first = deploy(s3, setup.site, bucket)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["checkpoint"] == "created" and report["uploaded"] == report["files"]
    base = s3.public_url(bucket, "cpl")
    # Headers as the rules say, served to anyone (anonymous read).
    status, headers, _ = anonymous_get(base + "log/tile/entries/000.p/" + str(site_log(setup.site).size % 256))
    assert status == 200 and headers["Cache-Control"] == IMMUTABLE_CACHE
    status, headers, _ = anonymous_get(base + "log/checkpoint")
    assert headers["Cache-Control"] == CHECKPOINT_CACHE
    status, headers, body = anonymous_get(base + "crl/ica.crl")
    assert headers["Content-Type"] == "application/pkix-crl" and body == (setup.site / "crl" / "ica.crl").read_bytes()
    status, headers, _ = anonymous_get(base + "index.html")
    assert headers["Content-Type"].startswith("text/html")
    assert anonymous_put(base + "log/checkpoint", b"forged") == 403  # the public reads, never writes
    # The verifier, against the bucket's HTTP endpoint.
    state = tmp_path / "state"
    assert verify(s3, bucket, setup.trust, "crl", state=state)["exit_code"] == 0
    image = demo.image_hash("S001/2")
    found = verify(s3, bucket, setup.trust, "inclusion", "--hash", image, state=state)
    assert found["exit_code"] == 0 and found["result"]["verdict"] == "current", found
    audit = verify(s3, bucket, setup.trust, "audit")
    assert audit["exit_code"] == 0, audit["result"].get("problems")

    # An unchanged site uploads nothing.
    again = json.loads(deploy(s3, setup.site, bucket).stdout)
    assert (again["uploaded"], again["checkpoint"]) == (0, "unchanged")

    # One more publish: only what changed goes up, the checkpoint last, and it is consistent with the last one.
    setup.grow()
    grown = deploy(s3, setup.site, bucket)
    assert grown.returncode == 0, grown.stderr
    report = json.loads(grown.stdout)
    assert report["checkpoint"] == "moved" and 0 < report["uploaded"] < 50
    assert report["uploaded_keys"][-1] == "log/checkpoint"
    assert not [k for k in report["uploaded_keys"] if k.startswith("log/tile/0/000.p/") and k.endswith("/5")]
    assert verify(s3, bucket, setup.trust, "consistency", state=state)["exit_code"] == 0
    image = demo.image_hash(f"S{setup.rounds:03d}/1")
    assert verify(s3, bucket, setup.trust, "inclusion", "--hash", image, state=state)["exit_code"] == 0


def test_a_changed_immutable_object_is_refused_and_a_changed_page_is_restored(s3: S3Server, setup: Setup) -> None:
    bucket = s3.new_bucket()
    assert deploy(s3, setup.site, bucket).returncode == 0
    client = s3.client()
    tile = "cpl/log/tile/0/000.p/" + str(site_log(setup.site).size)
    client.put_object(Bucket=bucket, Key=tile, Body=b"\0" * 32 * site_log(setup.site).size)
    client.put_object(Bucket=bucket, Key="cpl/index.html", Body=b"<h1>defaced</h1>")
    before = bucket_checkpoint(s3, bucket)
    setup.grow()
    refused = deploy(s3, setup.site, bucket)
    assert refused.returncode == 1
    assert f"s3://{bucket}/{tile} exists with other bytes" in refused.stderr
    assert bucket_checkpoint(s3, bucket) == before  # nothing moved
    assert anonymous_get(s3.public_url(bucket, "cpl") + "index.html")[2] == b"<h1>defaced</h1>"  # nothing uploaded
    # Put the tile back as it was: the deploy goes through and restores the page.
    client.put_object(Bucket=bucket, Key=tile, Body=(setup.snapshot("x") / tile.removeprefix("cpl/")).read_bytes())
    assert deploy(s3, setup.site, bucket).returncode == 0
    assert anonymous_get(s3.public_url(bucket, "cpl") + "index.html")[2] == (setup.site / "index.html").read_bytes()


def test_the_checkpoint_never_moves_back_nor_to_a_fork(s3: S3Server, setup: Setup, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    old = setup.snapshot("old")
    fork_pub = tmp_path / "fork"
    shutil.copytree(setup.pub.root, fork_pub / "publication", symlinks=True)
    setup.grow()
    assert deploy(s3, setup.site, bucket).returncode == 0
    newer = bucket_checkpoint(s3, bucket)
    back = deploy(s3, old, bucket)
    assert back.returncode == 1 and "never moves it back" in back.stderr
    assert bucket_checkpoint(s3, bucket) == newer
    # The same key, another history of the same size: a fork.
    import dataclasses

    from publisher.config import load as load_config

    config = load_config(fork_pub / "publication")
    other = dataclasses.replace(setup.pub, root=config.root, config=config)
    write_submission(config.root, "F002", _rows(other, "F002", 3), [other.maker, other.supplier])
    assert not publish(config, other.now + dt.timedelta(seconds=2)).intake.rejected
    fork_site = tmp_path / "fork-site"
    assert build_site(config.root, fork_site).returncode == 0
    assert parse_unverified((fork_site / "log" / "checkpoint").read_text()).size == parse_unverified(newer).size
    forked = deploy(s3, fork_site, bucket)
    assert forked.returncode == 1 and "does not extend the bucket's" in forked.stderr and "a fork" in forked.stderr
    assert bucket_checkpoint(s3, bucket) == newer


def test_the_same_tree_with_fewer_signatures_never_replaces_the_buckets(s3: S3Server, setup: Setup) -> None:
    from verifier.cpl_verify import Cosigner, parse_note

    bucket = s3.new_bucket()
    plain = setup.snapshot("plain")
    cosigned = setup.snapshot("cosigned")
    note = (cosigned / "log" / "checkpoint").read_text()
    witness = Cosigner.generate("witness.example/w")
    (cosigned / "log" / "checkpoint").write_text(note + witness.cosign(parse_note(note).text, int(time.time())))
    assert deploy(s3, plain, bucket).returncode == 0
    done = deploy(s3, cosigned, bucket)  # the late cosignature reaches the bucket
    assert done.returncode == 0 and json.loads(done.stdout)["checkpoint"] == "moved", done.stdout
    with_cosignature = bucket_checkpoint(s3, bucket)
    assert with_cosignature.startswith(note) and with_cosignature != note
    again = deploy(s3, plain, bucket)  # an older build of the same tree: the bucket keeps the cosignature
    assert again.returncode == 0 and json.loads(again.stdout)["checkpoint"] == "unchanged", again.stdout
    assert bucket_checkpoint(s3, bucket) == with_cosignature


def test_compare_and_swap_on_the_checkpoint(s3: S3Server, setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployer whose view of the checkpoint goes stale between its check and its swap loses the swap (the
    store refuses the stale ETag), looks again, and refuses to move the newer checkpoint back."""
    a = setup.snapshot("a")
    setup.grow()
    b = setup.snapshot("b")
    setup.grow()  # the site is now at size c > b > a
    bucket = s3.new_bucket()
    assert deploy(s3, a, bucket).returncode == 0
    real_put = Deployer._put
    attempts: list[dict[str, str]] = []

    def put_after_a_rival(self: Deployer, rel: str, data: bytes, pol: Any, **condition: str) -> str:
        if rel == "log/checkpoint":
            attempts.append(condition)
            if len(attempts) == 1:  # a rival deploys the newest site between this deployer's check and swap
                assert deploy(s3, setup.site, bucket).returncode == 0
        return real_put(self, rel, data, pol, **condition)

    monkeypatch.setattr(Deployer, "_put", put_after_a_rival)
    deployer = Deployer(s3.client(), b, Target(bucket, "cpl"))
    with pytest.raises(DeployRefused, match="never moves it back"):
        deployer._move_checkpoint(site_log(b))
    assert len(attempts) == 1 and "IfMatch" in attempts[0]  # the swap was tried once, with a's ETag, and lost
    assert bucket_checkpoint(s3, bucket) == (setup.site / "log" / "checkpoint").read_text()


@pytest.mark.parametrize("kill_after", ["lock", 1, 60])
def test_a_killed_deploy_leaves_a_bucket_that_verifies_and_the_next_one_completes(
    s3: S3Server, setup: Setup, tmp_path: Path, kill_after: int | str
) -> None:
    """SIGKILL mid-deploy (once the lock is taken, after the first upload, mid-way): the bucket's checkpoint
    still verifies against its tiles (the whole log audited from the bucket), and the next deploy completes."""
    bucket = s3.new_bucket()
    assert deploy(s3, setup.site, bucket).returncode == 0
    before_checkpoint = bucket_checkpoint(s3, bucket)
    before = set(_keys(s3, bucket))
    setup.grow(rows=120)
    argv = [*PUBLISHER, "deploy", str(setup.site), f"s3://{bucket}/cpl", "--endpoint-url", s3.endpoint]
    proc = subprocess.Popen(argv, cwd=REPO, env=s3.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            keys = set(_keys(s3, bucket))
            lock = any(k.endswith(".cpl-deploy.lock") for k in keys)
            new = len(keys - before) - lock
            if (kill_after == "lock" and lock) or (isinstance(kill_after, int) and new >= kill_after):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the deploy finished before the kill: the test did not test"
    assert bucket_checkpoint(s3, bucket) == before_checkpoint  # the checkpoint goes last
    audit = verify(s3, bucket, setup.trust, "audit")
    assert audit["exit_code"] == 0, audit["result"].get("problems")
    again = deploy(s3, setup.site, bucket)  # takes over the killed deployer's lock at once (same host, no pid)
    assert again.returncode == 0, again.stderr
    assert bucket_checkpoint(s3, bucket) == (setup.site / "log" / "checkpoint").read_text()
    audit = verify(s3, bucket, setup.trust, "audit")
    assert audit["exit_code"] == 0, audit["result"].get("problems")
    image = demo.image_hash(f"S{setup.rounds:03d}/7")
    assert verify(s3, bucket, setup.trust, "inclusion", "--hash", image)["exit_code"] == 0
    old_image = demo.image_hash("S001/2")  # the lookup is whole again: an old entry is proven current
    assert verify(s3, bucket, setup.trust, "inclusion", "--hash", old_image)["exit_code"] == 0


def test_two_deployers_at_once_end_with_the_newer_checkpoint(s3: S3Server, setup: Setup) -> None:
    bucket = s3.new_bucket()
    assert deploy(s3, setup.site, bucket).returncode == 0
    setup.grow(rows=30)
    old = setup.snapshot("old")
    setup.grow(rows=30)
    procs = []
    for site in (setup.site, old, setup.site):
        argv = [*PUBLISHER, "--json", "deploy", str(site), f"s3://{bucket}/cpl", "--endpoint-url", s3.endpoint]
        procs.append(
            subprocess.Popen(
                [*argv, "--wait", "120"], cwd=REPO, env=s3.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    outcomes = [(p.wait(timeout=300), p.stderr.read().decode() if p.stderr else "") for p in procs]
    assert outcomes[0][0] == 0 and outcomes[2][0] == 0, outcomes
    # The older site either went first, or was refused for being behind: never the last word.
    assert outcomes[1][0] == 0 or "never moves it back" in outcomes[1][1], outcomes
    assert bucket_checkpoint(s3, bucket) == (setup.site / "log" / "checkpoint").read_text()
    index = anonymous_get(s3.public_url(bucket, "cpl") + "index.html")[2]
    if outcomes[1][0] == 0:  # the older one went first: the newer one's pages are the ones left
        assert index == (setup.site / "index.html").read_bytes()
    assert not [k for k in _keys(s3, bucket) if k.endswith(".cpl-deploy.lock")]


def test_a_live_lock_is_respected(s3: S3Server, setup: Setup) -> None:
    bucket = s3.new_bucket()
    holder = Deployer(s3.client(), setup.site, Target(bucket, "cpl"))
    holder.acquire()
    try:
        blocked = deploy(s3, setup.site, bucket)
        assert blocked.returncode == 1 and "another deploy holds the lock" in blocked.stderr
    finally:
        holder.release()
    assert deploy(s3, setup.site, bucket).returncode == 0


def test_deploy_errors_are_clear(s3: S3Server, setup: Setup, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    r = deploy(s3, tmp_path, bucket)
    assert r.returncode == 2 and "not a built site" in r.stderr
    env = {**s3.env(), "AWS_SECRET_ACCESS_KEY": "wrong"}
    argv = [*PUBLISHER, "deploy", str(setup.site), f"s3://{bucket}/cpl", "--endpoint-url", s3.endpoint]
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "the object store refused or could not be reached" in r.stderr
    r = subprocess.run(
        [*argv[:-1], "http://127.0.0.1:9"], cwd=REPO, env=s3.env(), capture_output=True, text=True, check=False
    )
    assert r.returncode == 2, r.stderr


def _keys(s3: S3Server, bucket: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


# -- the README's GitHub Actions job for a bucket ---------------------------------------------------------------


def s3_workflow_text() -> str:
    """The job the README documents (the YAML block after ``<!-- s3-workflow -->``), as text."""
    import re

    m = re.search(r"<!-- s3-workflow -->\s*```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert m, "README.md has no YAML block marked s3-workflow"
    return m.group(1)


def s3_workflow_job() -> dict[str, Any]:
    import yaml

    job: dict[str, Any] = yaml.safe_load(s3_workflow_text())
    return job


def test_the_readme_s3_workflow_lints_as_a_workflow(tmp_path: Path) -> None:
    """publish.yml with its build and deploy jobs replaced by the README's job, as the README says."""
    text = (REPO / ".github" / "workflows" / "publish.yml").read_text()
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "publish-s3.yml").write_text(text[: text.index("\n  build:\n") + 1] + "\n" + s3_workflow_text())
    lint_workflow(folder / "publish-s3.yml", ["--no-config"])


def test_the_readme_s3_workflow_builds_and_deploys_from_a_clone(s3: S3Server, setup: Setup, tmp_path: Path) -> None:
    """Its Build and Deploy scripts, verbatim, in a fresh clone of the publication (the code beside it, as in
    the repository CI checks out), twice: the second run builds incrementally from the kept cache."""
    [(job_name, job)] = s3_workflow_job().items()
    steps = {s.get("name"): s for s in job["steps"]}
    build, deploy_step = steps["Build the site (no signing secrets here)"], steps["Deploy to the bucket"]
    # What the Install lines build is this repository's .venv, linked in as the deployment tests do.
    build_script = "\n".join(
        line for line in build["run"].splitlines() if not line.startswith(("python -m venv", ".venv/bin/pip"))
    )
    bucket = s3.new_bucket()
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(setup.pub.root), str(remote)], check=True)
    for round_ in range(2):
        work = tmp_path / f"ci-{round_}"
        subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True)
        for part in (".venv", "mkdocs.yml", "site_src", "publisher", "verifier"):
            (work / part).symlink_to(REPO / part)
        if round_:  # what actions/cache restores: the last run's site and its build cache
            shutil.copytree(tmp_path / "kept", work / "build", symlinks=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        done = subprocess.run(
            ["bash", "-e", "-c", build_script], cwd=work, env={**env, **build["env"]}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads((work / "build" / ".site.cache" / "last-build.json").read_text())
        assert report["mode"] == ("incremental" if round_ else "full")
        secrets_ = {"S3_ENDPOINT": s3.endpoint, "S3_DESTINATION": f"s3://{bucket}/cpl", "AWS_REGION": "us-east-1"}
        done = subprocess.run(
            ["bash", "-e", "-c", deploy_step["run"]], cwd=work, env={**s3.env(), **secrets_}, capture_output=True,
            text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert bucket_checkpoint(s3, bucket) == (setup.pub.root / "log" / "checkpoint").read_text()
        assert verify(s3, bucket, setup.trust, "audit")["exit_code"] == 0
        if round_ == 0:
            shutil.copytree(work / "build", tmp_path / "kept", symlinks=True)
            setup.grow()  # the next scheduled publish, pushed
            subprocess.run(["git", "-C", str(setup.pub.root), "push", "-q", str(remote), "HEAD"], check=True)
    assert job_name == "deploy-to-bucket"


def test_what_the_site_cannot_vouch_for_is_not_uploaded(s3: S3Server, setup: Setup, tmp_path: Path) -> None:
    """A symbolic link, evidence whose bytes are not its name, a tile that does not hash to the checkpoint:
    refused before anything is uploaded (an immutable object, once up, can never be replaced)."""
    bucket = s3.new_bucket()
    link = setup.snapshot("link")
    (link / "innocent.txt").symlink_to("/proc/self/environ")
    r = deploy(s3, link, bucket)
    assert r.returncode == 2 and "is a symbolic link" in r.stderr and not _keys(s3, bucket)

    evidence = setup.snapshot("evidence")
    victim = next(iter(sorted((evidence / "log" / "evidence").iterdir())))
    victim.unlink()  # the site's files are hard links to the publication: replace, never write through
    victim.write_bytes(b"forged evidence")
    r = deploy(s3, evidence, bucket)
    assert r.returncode == 1 and "do not hash to its name" in r.stderr
    assert not [k for k in _keys(s3, bucket) if k.endswith(victim.name) or k.endswith("log/checkpoint")]

    setup.grow(rows=300)  # full tiles beyond the bucket's size (none yet: it is empty)
    bad = setup.snapshot("bad-tile")
    bundle = bad / "log" / "tile" / "entries" / "000"
    data = bundle.read_bytes()
    bundle.unlink()
    bundle.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    r = deploy(s3, bad, s3.new_bucket())
    assert r.returncode == 1 and "does not match its leaf hash" in r.stderr


def test_a_store_that_ignores_conditional_writes_is_refused(
    s3: S3Server, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = Deployer._put

    def unconditional(self: Deployer, rel: str, data: bytes, pol: Any, **condition: str) -> str:
        return real_put(self, rel, data, pol)  # as a store that drops If-None-Match / If-Match would

    monkeypatch.setattr(Deployer, "_put", unconditional)
    bucket = s3.new_bucket()
    with pytest.raises(DeployRefused, match="ignores conditional writes"):
        Deployer(s3.client(), setup.site, Target(bucket, "cpl")).run()
    assert not [k for k in _keys(s3, bucket) if not k.endswith(".cpl-deploy.lock")]


def test_the_s3_server_binds_loopback_only_and_leaves_nothing_running(tmp_path: Path) -> None:
    """What the session fixture does, checked end to end on a server of its own."""
    from s3_fixtures import _listening, start_seaweedfs, stop_seaweedfs

    server = start_seaweedfs(tmp_path / "weed")
    try:
        addresses = _listening(server.process.pid)
        assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
        assert anonymous_get(f"{server.endpoint}/")[0] in (200, 403)
    finally:
        stop_seaweedfs(server)
    assert server.process.poll() is not None
    assert not _listening(server.process.pid)
    assert not [p for port in server.ports for p in Path("/tmp").glob(f"*{port}*.sock")]
