"""``cpl-verify watch``: alerts for manufacturers. Every entry since the last run that names a manufacturer or
uses its certificates, proved; exit 4 when something new appeared, 5 when one is flagged (an unexpected signer);
the position kept in --state only after a verified run; forks and altered bundles fail (exit 1). Also the
README's scheduled GitHub Actions workflow: linted, and its watch step's script run as written."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]
from publication_fixtures import Pub, new_publication
from site_fixtures import REPO, write_submission
from workflow_lint import lint_workflow

from publisher import demo, parties
from publisher.publish import publish
from publisher.site.export import export_tree
from publisher.tlog import TileLog
from publisher.tlog.note import Signer
from verifier import cpl_verify
from verifier.cpl_verify import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_NOT_APPROVED,
    EXIT_OK,
    canonical_json,
    cert_sha256,
    open_checkpoint,
    verify_inclusion,
)

NEW, FLAGGED = cpl_verify.EXIT_NEW_ENTRIES, cpl_verify.EXIT_UNEXPECTED
STAMP = "2026-01-01T00:00:00Z"


# -- a publication with two manufacturers, exported to a site folder ------------------------------------------


@dataclasses.dataclass
class World:
    """A publication (Acme 1001 and its supplier, Zenith 1002), its site folder and the trust file."""

    pub: Pub
    zenith: parties.Party
    tmp: Path
    site: Path
    trust: Path
    rounds: int = 0

    @property
    def acme(self) -> parties.Party:
        return self.pub.maker

    def submit(
        self, sub_id: str, maker: parties.Party, n: int, signer: parties.Party | None = None, org_id: str = ""
    ) -> None:
        """``n`` new device models of ``maker`` (or of ``org_id``), signed by ``signer`` (default ``maker``)."""
        mid = org_id or maker.org_id
        rows = [(mid, maker.name, f"M-{sub_id}-{k}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(f"{sub_id}/{k}"))
                for k in range(n)]  # fmt: skip
        write_submission(self.pub.root, sub_id, rows, [signer or maker, self.pub.supplier])

    def publish(self) -> dict[str, list[int]]:
        """Publish what is in the inbox and export the site again; the log indices accepted, per submission."""
        self.rounds += 1
        result = publish(self.pub.config, self.pub.now + dt.timedelta(seconds=self.rounds))
        assert not result.intake.rejected, result.intake.rejected
        self.export()
        return {k: list(v) for k, v in result.intake.accepted.items()}

    def export(self) -> None:
        shutil.rmtree(self.site, ignore_errors=True)
        export_tree(self.pub.config, self.site, STAMP)


@pytest.fixture()
def world(tmp_path: Path) -> World:
    pub = new_publication(tmp_path, "watch.example/log")
    zenith = parties.issue_party(
        pub.config, "Zenith Meters", "1002", "Manufacturer", pub.now, folder=tmp_path / "certs"
    )
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps(demo.trust_of(pub.config)))
    w = World(pub, zenith, tmp_path, tmp_path / "site", trust)
    w.submit("S1", w.acme, 3)
    w.submit("S2", zenith, 2)
    assert w.publish() == {"S1": [3, 4, 5], "S2": [6, 7]}
    return w


def watch(
    capsys: pytest.CaptureFixture[str], world: World, state: Path | None, *args: str
) -> tuple[int, dict[str, Any]]:
    """``cpl-verify --json watch ARGS`` against the world's site folder: the exit code and the JSON."""
    given = ["--state", str(state)] if state is not None else []
    argv = ["--trust", str(world.trust), "--site", str(world.site), *given, "--json", "watch", *args]
    code = cpl_verify.main(argv)
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == code
    return code, out


def indices(out: dict[str, Any]) -> list[int]:
    return [m["index"] for m in out["result"]["matches"]]


def watch_record(state: Path) -> dict[str, Any]:
    [(_origin, records)] = json.loads((state / cpl_verify.STATE_FILE).read_text())["watch"].items()
    [record] = records.values()
    return dict(record)


# -- what it reports, and when ---------------------------------------------------------------------------------


def test_the_first_run_reports_the_history_then_nothing_then_only_what_is_new(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    state = world.tmp / "state"
    code, out = watch(capsys, world, state, "--manufacturer", "1001")
    assert code == NEW and indices(out) == [3, 4, 5]
    res = out["result"]
    assert (res["first_run"], res["range"], res["new"], res["flagged"]) == (True, {"start": 0, "end": 9}, 3, 0)
    assert res["watch"] == {"manufacturers": ["1001"], "certificates": []}
    m = res["matches"][0]
    assert set(m) >= {"index", "image_sha256", "device_model", "approved_at", "submission_id", "panel_ref",
                      "manufacturer", "endorser", "replaces", "matched_by", "flags", "proof"}  # fmt: skip
    assert m["device_model"]["manufacturer_id"] == "1001" and m["submission_id"] == "S1"
    assert m["image_sha256"] == demo.image_hash("S1/0") and m["replaces"] is None and m["flags"] == []
    assert m["matched_by"] == ["device_model.manufacturer_id", "manufacturer.organisation_id"]
    assert m["manufacturer"] == {
        "organisation": "Acme Meters Ltd",
        "organisation_id": "1001",
        "role": "Manufacturer",
        "certificate_sha256": cert_sha256(world.acme.cert),
    }
    assert m["endorser"]["certificate_sha256"] == cert_sha256(world.pub.supplier.cert)
    # The proof in the JSON stands on its own: the signed checkpoint, the leaf hash and the audit path.
    cp = res["checkpoint"]
    signed = open_checkpoint(cp["note"], cp["origin"], json_trust_verifiers(world))
    assert m["proof"]["checkpoint_size"] == signed.checkpoint.size == 9
    hashes = [cpl_verify.b64decode_strict(h, "proof") for h in m["proof"]["hashes"]]
    leaf = cpl_verify.b64decode_strict(m["proof"]["leaf_hash"], "leaf")
    verify_inclusion(3, 9, leaf, hashes, signed.checkpoint.root)
    assert watch_record(state)["next_index"] == 9

    # Nothing new: exit 0, and the text says so.
    code, out = watch(capsys, world, state, "--manufacturer", "1001")
    assert (code, out["result"]["new"], out["result"]["first_run"], out["ok"]) == (EXIT_OK, 0, False, True)

    # One more publish: only its entries of 1001 are reported.
    world.submit("S3", world.acme, 2)
    world.submit("S4", world.zenith, 1)
    accepted = world.publish()
    code, out = watch(capsys, world, state, "--manufacturer", "1001")
    assert code == NEW and indices(out) == accepted["S3"]
    assert out["result"]["range"]["start"] == 9

    # Another watch in the same state folder keeps its own position: its first run reports all of 1002's.
    code, out = watch(capsys, world, state, "--manufacturer", "1002")
    assert code == NEW and indices(out) == [6, 7, *accepted["S4"]]
    code, out = watch(capsys, world, state, "--manufacturer", "1001")
    assert code == EXIT_OK


def json_trust_verifiers(world: World) -> list[cpl_verify.Verifier]:
    return cpl_verify.parse_trust(json.loads(world.trust.read_text()), "trust").verifiers


def test_the_text_report(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    state = world.tmp / "state"
    argv = ["--trust", str(world.trust), "--site", str(world.site), "--state", str(state), "watch"]
    assert cpl_verify.main([*argv, "--manufacturer", "1001"]) == NEW
    text = capsys.readouterr().out
    assert "first run with this state folder: reading the whole history (9 entries)" in text
    assert "NEW: 3 entries" in text and "log index 3: image " + demo.image_hash("S1/0") in text
    assert f"certificates:  manufacturer {cert_sha256(world.acme.cert)}" in text
    assert "(Panel reference P, submission S1)" in text and "proof:         leaf hash " in text
    assert cpl_verify.main([*argv, "--manufacturer", "1001"]) == EXIT_OK
    assert "NOTHING NEW for manufacturer 1001: no entry added since size 9" in capsys.readouterr().out


def test_since_now_skips_the_history(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    state = world.tmp / "state"
    code, out = watch(capsys, world, state, "--manufacturer", "1001", "--since-now")
    assert (code, indices(out), out["result"]["range"]) == (EXIT_OK, [], {"start": 9, "end": 9})
    world.submit("S3", world.acme, 1)
    accepted = world.publish()
    code, out = watch(capsys, world, state, "--manufacturer", "1001", "--since-now")  # no effect once it has run
    assert code == NEW and indices(out) == accepted["S3"]


def test_a_replacement_says_what_it_replaces(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    state = world.tmp / "state"
    assert watch(capsys, world, state, "--manufacturer", "1001")[0] == NEW
    row = ("1001", world.acme.name, "M-S1-1", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash("S1/1 fixed"))
    replacing = [{"replaces_index": 4, "investigation_ref": "INV-1"}]
    request: dict[str, object] = {"submitter_ref": "REF-R", "panel_ref": "P-R", "replacements": replacing}
    demo.submit(world.pub.root, "R1", [row], [world.acme, world.pub.supplier], request)
    [index] = world.publish()["R1"]
    code, out = watch(capsys, world, state, "--manufacturer", "1001")
    assert code == NEW and indices(out) == [index]
    assert out["result"]["matches"][0]["replaces"] == {"index": 4, "investigation_ref": "INV-1"}


# -- certificates and the flags -------------------------------------------------------------------------------


def test_certificates_match_and_another_signer_is_flagged(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A second Manufacturer certificate in Acme's name signs a submission: with Acme's certificate listed,
    its entries are UNEXPECTED SIGNER (exit 5); without a list they are plain news (exit 4)."""
    acme_fp = cert_sha256(world.acme.cert)
    other_acme = parties.issue_party(world.pub.config, "Acme Meters Ltd", "1001", "Manufacturer", world.pub.now,
                                     folder=world.tmp / "certs", stem="1001-second")  # fmt: skip
    world.submit("S3", world.acme, 2, signer=other_acme)
    accepted = world.publish()["S3"]
    pasted = "sha256:" + ":".join(acme_fp[i : i + 2] for i in range(0, 64, 2)).upper()  # as users paste it
    state = world.tmp / "state"
    code, out = watch(capsys, world, state, "--manufacturer", "1001", "--certificate", pasted)
    assert code == FLAGGED and indices(out) == [3, 4, 5, *accepted]
    res = out["result"]
    assert res["watch"]["certificates"] == [acme_fp] and res["flagged"] == len(accepted)
    by_index = {m["index"]: m for m in res["matches"]}
    assert by_index[3]["flags"] == []
    assert "manufacturer.certificate_sha256" in by_index[3]["matched_by"]
    for i in accepted:
        [flag] = by_index[i]["flags"]
        assert flag["flag"] == "unexpected-signer" and cert_sha256(other_acme.cert) in flag["message"]
        assert by_index[i]["manufacturer"]["certificate_sha256"] == cert_sha256(other_acme.cert)
    assert watch_record(state)["next_index"] == res["range"]["end"]  # a flag is reported once, like any news
    assert watch(capsys, world, state, "--manufacturer", "1001", "--certificate", acme_fp)[0] == EXIT_OK

    # The text marks it.
    argv = ["--trust", str(world.trust), "--site", str(world.site), "--state", str(world.tmp / "text-state")]
    assert cpl_verify.main([*argv, "watch", "--manufacturer", "1001", "--certificate", acme_fp]) == FLAGGED
    text = capsys.readouterr().out
    assert text.count("UNEXPECTED SIGNER: ") == len(accepted) and "2 FLAGGED" in text

    # Without a certificate list there is nothing to compare the signer with: news, not a flag.
    code, out = watch(capsys, world, world.tmp / "state2", "--manufacturer", "1001")
    assert code == NEW and out["result"]["flagged"] == 0


def test_a_watched_certificate_used_for_another_manufacturer_is_flagged(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Zenith watches 1002 and lists the supplier's certificate too: the supplier's endorsements of Acme's
    models match by that certificate and are flagged OTHER MANUFACTURER."""
    supplier_fp = cert_sha256(world.pub.supplier.cert)
    zenith_fp = cert_sha256(world.zenith.cert)
    code, out = watch(capsys, world, world.tmp / "state", "--manufacturer", "1002", "--certificate", zenith_fp,
                      "--certificate", supplier_fp)  # fmt: skip
    assert code == FLAGGED and indices(out) == [3, 4, 5, 6, 7]
    by_index = {m["index"]: m for m in out["result"]["matches"]}
    assert by_index[3]["matched_by"] == ["endorser.certificate_sha256"]
    assert [f["flag"] for f in by_index[3]["flags"]] == ["other-manufacturer"]
    assert by_index[6]["flags"] == [] and "manufacturer.certificate_sha256" in by_index[6]["matched_by"]


def test_certificate_fingerprints_as_users_paste_them() -> None:
    fp = hashlib.sha256(b"x").hexdigest()
    pairs = ":".join(fp[i : i + 2] for i in range(0, 64, 2))
    for given in (fp, fp.upper(), "sha256:" + fp, pairs, f"sha256 Fingerprint={pairs.upper()}", f"SHA256:{pairs}"):
        assert cpl_verify.parse_certificate_sha256(given) == fp, given
    for bad in ("", fp[:-1], fp + "0", "sha1:" + fp, "zz" * 32):
        with pytest.raises(cpl_verify.UsageError, match="--certificate"):
            cpl_verify.parse_certificate_sha256(bad)


# -- proofs ---------------------------------------------------------------------------------------------------


def test_saved_proofs_prove_each_entry_offline(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    proofs = world.tmp / "proofs"
    code, out = watch(capsys, world, world.tmp / "state", "--manufacturer", "1002", "--save-proofs", str(proofs))
    assert code == NEW
    assert sorted(p.name for p in proofs.iterdir()) == ["6.tlog-proof", "7.tlog-proof"]
    for m in out["result"]["matches"]:
        path = proofs / f"{m['index']}.tlog-proof"
        assert m["proof"]["saved"] == str(path)
        base = ["--trust", str(world.trust), "--json", "inclusion", "--proof", str(path)]
        assert cpl_verify.main(base) == EXIT_NOT_APPROVED  # offline: logged, but "current" cannot be judged
        offline = json.loads(capsys.readouterr().out)
        assert offline["result"]["index"] == m["index"]
        assert offline["result"]["associations"][0]["image_sha256"] == m["image_sha256"]
        assert cpl_verify.main([*base, "--allow-replaced"]) == EXIT_OK
        capsys.readouterr()


# -- failures: nothing is advanced ----------------------------------------------------------------------------


def replace_file(path: Path, data: bytes) -> None:
    """New bytes for a site file without touching the publication (the export hard-links its files)."""
    path.unlink()
    path.write_bytes(data)


def test_an_altered_bundle_fails_and_the_position_stays(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    state = world.tmp / "state"
    assert watch(capsys, world, state, "--manufacturer", "1001")[0] == NEW
    world.submit("S3", world.acme, 2)
    accepted = world.publish()["S3"]
    size = cpl_verify.parse_unverified((world.site / "log/checkpoint").read_text()).size
    bundle = world.site / f"log/tile/entries/000.p/{size}"
    data = bundle.read_bytes()
    image = demo.image_hash("S3/1").encode()
    assert data.count(image) == 1
    replace_file(bundle, data.replace(image, image[:-1] + (b"0" if image[-1:] != b"0" else b"1")))
    code, out = watch(capsys, world, state, "--manufacturer", "1001")
    assert code == EXIT_FAILED and "not proved to be in the log" in out["error"]
    assert "was altered" in out["error"]
    assert watch_record(state)["next_index"] == 9
    # The site repaired, the same entries are reported (they were never reported as verified).
    world.export()
    code, out = watch(capsys, world, state, "--manufacturer", "1001")
    assert code == NEW and indices(out) == accepted


def test_without_state_or_manufacturer_it_refuses(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = watch(capsys, world, None, "--manufacturer", "1001")
    assert code == EXIT_ERROR and "watch needs --state DIR" in out["error"]
    assert "remembers there which entries it has already reported" in out["error"]
    code, out = watch(capsys, world, world.tmp / "state", "--manufacturer", "1001", "--certificate", "abc")
    assert code == EXIT_ERROR and "--certificate" in out["error"]
    saved = world.tmp / "state" / cpl_verify.STATE_FILE
    assert not saved.exists() or "watch" not in json.loads(saved.read_text())
    argv = ["--trust", str(world.trust), "--site", str(world.site), "--state", str(world.tmp / "s"), "watch"]
    assert cpl_verify.main(argv) == EXIT_ERROR  # argparse: --manufacturer is required
    assert "--manufacturer" in capsys.readouterr().err


def test_help_lists_the_command_and_its_exit_codes() -> None:
    text = cpl_verify.build_parser().format_help()
    assert "watch" in text
    assert "4  watch: verified, and new entries" in text and "5  watch: verified, new entries appeared" in text
    assert "watch" in (cpl_verify.__doc__ or "") and "4 new entries" in (cpl_verify.__doc__ or "")


# -- a log of several bundles, and forks (a log signed here) -------------------------------------------------

SIGNER = Signer.generate("synthetic.example/log")
MAKERS = ("1001", "1002", "1003")


def synthetic_entry(i: int) -> bytes:
    """An association-shaped entry (watch reads only the fields it matches on and reports)."""
    mid = MAKERS[i % 3]
    fp = hashlib.sha256(f"cert of {mid}".encode()).hexdigest()
    return canonical_json({
        "type": cpl_verify.ASSOCIATION_TYPE,
        "device_model": {"manufacturer_id": mid, "model_id": f"M{i}", "hardware_version": "1", "firmware_version": "1"},
        "manufacturer": {"organisation": f"Maker {mid}", "organisation_id": mid, "role": "Manufacturer",
                         "certificate_sha256": fp},
        "endorser": {"organisation": "Supplier", "organisation_id": "2001", "role": "Supplier",
                     "certificate_sha256": "e" * 64},
        "image_sha256": hashlib.sha256(b"image %d" % i).hexdigest(),
        "approved_at": "2026-01-01T00:00:00Z", "panel_ref": "P", "submitter_ref": "R", "submission_id": f"S{i}",
    })  # fmt: skip


def synthetic_log(root: Path, sizes: tuple[int, ...], entry: Any = synthetic_entry) -> Path:
    """A site folder whose log grew to each of ``sizes`` in turn."""
    with TileLog.create(root / "log", SIGNER) as log:
        for start, end in zip((0, *sizes[:-1]), sizes, strict=True):
            log.append([entry(i) for i in range(start, end)])
    return root


def synthetic_watch(
    capsys: pytest.CaptureFixture[str], site: Path, state: Path, *args: str
) -> tuple[int, dict[str, Any]]:
    argv = ["--vkey", SIGNER.verifier.vkey, "--site", str(site), "--state", str(state), "--json", "watch", *args]
    code = cpl_verify.main(argv)
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, out


def test_several_bundles_are_read_once_each_and_only_from_where_it_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = synthetic_log(tmp_path / "site", (600,))
    state = tmp_path / "state"
    code, out = synthetic_watch(capsys, site, state, "--manufacturer", "1001")
    assert code == NEW and indices(out) == list(range(0, 600, 3))
    assert out["requests"] < 20  # 3 bundles, a few hash tiles, the checkpoint

    with TileLog.open(site / "log", SIGNER) as log:
        log.append([synthetic_entry(i) for i in range(600, 700)])
    code, out = synthetic_watch(capsys, site, state, "--manufacturer", "1001")
    assert code == NEW and indices(out) == list(range(600, 700, 3)) and out["result"]["range"]["start"] == 600
    assert out["requests"] < 10  # the last bundle and the tiles on its proof's path

    # An entry altered in a full bundle in the middle of the log: the first run of another watch fails on it.
    bundle = site / "log/tile/entries/001"
    data = bundle.read_bytes()
    old = hashlib.sha256(b"image %d" % 300).hexdigest().encode()
    bundle.write_bytes(data.replace(old, old[::-1]))
    code, out = synthetic_watch(capsys, site, state, "--manufacturer", "1002")
    assert code == EXIT_FAILED and "entries 256 to 511 are not proved" in out["error"]
    # The bundle holding new entries is authenticated whole, entries before the position included.
    with TileLog.open(site / "log", SIGNER) as log:
        log.append([synthetic_entry(i) for i in range(700, 710)])
    edge = site / "log/tile/entries/002.p/198"
    old = hashlib.sha256(b"image %d" % 520).hexdigest().encode()
    edge.write_bytes(edge.read_bytes().replace(old, old[::-1]))
    code, out = synthetic_watch(capsys, site, state, "--manufacturer", "1001")
    assert code == EXIT_FAILED and "entries 512 to 709 are not proved" in out["error"]
    assert watch_record(state)["next_index"] == 700


def forked_entry(i: int) -> bytes:
    return synthetic_entry(i) if i != 5 else synthetic_entry(8)


def test_a_fork_fails_with_evidence_and_the_position_stays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The log key signs another history (entry 5 differs) after the watch read the first one: exit 1, both
    checkpoints as evidence, by the state's checkpoint and, without it, by where the watch stopped."""
    honest = synthetic_log(tmp_path / "honest", (300,))
    forked = synthetic_log(tmp_path / "forked", (310,), forked_entry)
    state = tmp_path / "state"
    assert synthetic_watch(capsys, honest, state, "--manufacturer", "1003")[0] == NEW
    code, out = synthetic_watch(capsys, forked, state, "--manufacturer", "1003")
    assert code == EXIT_FAILED and "fork" in out["error"] and "SECURITY ERROR" in out["evidence"]
    assert watch_record(state)["next_index"] == 300
    # The state's own checkpoint gone (another tool reset it): the watch's record still catches the fork.
    data = json.loads((state / cpl_verify.STATE_FILE).read_text())
    data["checkpoints"] = {}
    (state / cpl_verify.STATE_FILE).write_text(json.dumps(data))
    code, out = synthetic_watch(capsys, forked, state, "--manufacturer", "1003")
    assert code == EXIT_FAILED and "where this watch stopped" in out["evidence"]
    assert watch_record(state)["next_index"] == 300


# -- the README: the scheduled GitHub Actions workflow ----------------------------------------------------------


def workflow_text() -> str:
    """The workflow the README documents (the YAML block after ``<!-- watch-workflow -->``)."""
    m = re.search(r"<!-- watch-workflow -->\s*```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert m, "README.md has no YAML block marked watch-workflow"
    return m.group(1)


def test_the_readme_watch_workflow_lints_as_a_workflow(tmp_path: Path) -> None:
    """A whole workflow, scheduled, with no default permissions and every action pinned by commit (the
    version in a comment), clean for check-jsonschema and for zizmor's strictest persona."""
    text = workflow_text()
    flow = yaml.safe_load(text)
    assert flow["permissions"] == {} and flow["jobs"]["watch"]["permissions"] == {"contents": "read"}
    assert flow[True]["schedule"][0]["cron"]  # YAML 1.1 reads the key 'on' as True
    uses = re.findall(r"uses: (\S+)@(\S+)( # v[0-9.]+)?", text)
    assert uses and all(re.fullmatch("[0-9a-f]{40}", ref) and comment for _, ref, comment in uses), uses
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "cpl-watch.yml").write_text(text)
    lint_workflow(folder / "cpl-watch.yml", ["--persona", "pedantic"])


def run_step(step: dict[str, Any], work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A step's ``run`` as GitHub runs it on Linux (``bash --noprofile --norc -eo pipefail``)."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=work,
                          env={**os.environ, **{k: str(v) for k, v in step.get("env", {}).items()}, **env},
                          capture_output=True, text=True, check=False, timeout=120)  # fmt: skip


def test_the_readme_watch_step_runs_as_written(world: World, tmp_path: Path) -> None:
    """The watch step's script, verbatim, in a checkout holding cpl_verify.py and trust.json (the site a
    folder here), then the Alert step on what it recorded: news fails the job, then nothing new does not,
    then an unexpected signer fails it with an error."""
    steps = {s.get("id") or s.get("name"): s for s in yaml.safe_load(workflow_text())["jobs"]["watch"]["steps"]}
    step, alert = steps["watch"], steps["Alert"]
    assert alert["if"] == "steps.watch.outputs.code != '0'"
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "cpl_verify.py").symlink_to(REPO / "verifier" / "cpl_verify.py")
    trust = json.loads(world.trust.read_text())
    trust["site"] = str(world.site)
    (work / "trust.json").write_text(json.dumps(trust))
    bin_ = tmp_path / "bin"  # what setup-python and the Install step provide: python with cryptography
    bin_.mkdir()
    (bin_ / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_ / "python").chmod(0o755)
    outputs, summary = tmp_path / "github-output", tmp_path / "step-summary"
    env = {
        "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        "MANUFACTURER_ID": "1001",
        "CERTIFICATES": f"sha256:{cert_sha256(world.acme.cert)}",
    }

    def run_watch() -> str:
        outputs.write_text("")
        done = run_step(step, work, env)
        assert done.returncode == 0, done.stdout + done.stderr  # the step records the code; Alert acts on it
        codes = re.findall(r"^code=(\d+)$", outputs.read_text(), re.M)
        assert len(codes) == 1, outputs.read_text()
        code = str(codes[0])
        if code == "0":  # the Alert step's condition
            return code + "\n" + done.stdout
        alerted = run_step(alert, work, {"CODE": code})
        assert alerted.returncode == 1  # the job fails: GitHub notifies
        return code + "\n" + done.stdout + alerted.stdout

    said = run_watch()
    assert said.startswith("4\n") and "NEW: 3 entries" in said and "::warning title=New CPL entries::" in said
    assert sorted(p.name for p in (work / "proofs").iterdir()) == ["3.tlog-proof", "4.tlog-proof", "5.tlog-proof"]
    assert "cpl-verify watch: exit code 4" in summary.read_text()
    assert (work / "report.txt").read_text() in said
    assert run_watch().startswith("0\nwatching manufacturer 1001")

    other = parties.issue_party(world.pub.config, "Acme Meters Ltd", "1001", "Manufacturer", world.pub.now,
                                folder=world.tmp / "certs", stem="1001-second")  # fmt: skip
    world.submit("S3", world.acme, 1, signer=other)
    world.publish()
    said = run_watch()
    assert said.startswith("5\n") and "UNEXPECTED SIGNER: " in said and "::error title=UNEXPECTED SIGNER::" in said
