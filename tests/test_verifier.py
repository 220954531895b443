"""The consumer verifier (verifier/cpl_verify.py) against a publication the tests build and serve over
HTTP on 127.0.0.1, and against real TLS endpoints: what verifies, and what every attack produces.

Every attack must fail with exit code 1 and a message that names what is wrong; network and usage
trouble gives exit code 2; a verified "no" (replaced, not found, revoked) gives exit code 3. The
verifier runs in-process (``main([...])``) except for one run of the downloadable file itself.
"""

from __future__ import annotations

import ast
import base64
import datetime as dt
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from verifier_fixtures import (
    ORIGIN,
    SiteServer,
    TLSServer,
    World,
    build_world,
    fresh_crl_times,
    image_hash,
    self_signed,
    tamper,
)

from publisher.entries import canonical_json
from publisher.publication import now_utc
from publisher.publish import operations
from publisher.site.export import export_tree
from publisher.tlog import TileLog
from publisher.tlog import checkpoint as pub_checkpoint
from publisher.tlog import merkle as pub_merkle
from publisher.tlog import note as pub_note
from publisher.tlog import tiles as pub_tiles
from publisher.tlog.checkpoint import Checkpoint
from publisher.tlog.note import Signer, sign_note
from publisher.tlog.signer import load_log_signer
from verifier import cpl_verify
from verifier.cpl_verify import main

REPO = Path(__file__).resolve().parents[1]
VERIFIER = REPO / "verifier" / "cpl_verify.py"


@dataclass
class Run:
    code: int
    out: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.out)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("verifier-world"))


@pytest.fixture()
def trust(world: World, srv: SiteServer, tmp_path: Path) -> Path:
    return world.write_trust(tmp_path / "trust.json", srv.url)


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str], trust: Path, tmp_path: Path) -> Any:
    """Run the verifier with the trust file and a per-test state folder; returns (code, stdout+stderr)."""

    def run(*args: object, state: bool = True, use_trust: bool = True) -> Run:
        argv = [str(a) for a in args]
        if use_trust:
            argv = ["--trust", str(trust), *argv]
        if state:
            argv = ["--state", str(tmp_path / "state"), *argv]
        code = main(argv)
        captured = capsys.readouterr()
        return Run(code, captured.out + captured.err)

    return run


def signed_checkpoint(signer: Signer, size: int, root: bytes, origin: str = ORIGIN) -> bytes:
    return sign_note(Checkpoint(origin, size, root).body(), [signer]).encode()


def site_bytes(world: World, rel: str) -> bytes:
    return (world.site / rel).read_bytes()


def current_size(world: World) -> int:
    return pub_checkpoint.parse_unverified(site_bytes(world, "log/checkpoint")).size


def lookup_shard(world: World, key: str, kind: str = "hash") -> str:
    return f"log/lookup/{kind}/{key[:3]}.json"


# =====================================================================================================
# The file itself: runs as downloaded, Python 3.9 syntax, one implementation shared with the publisher
# =====================================================================================================


def test_downloaded_file_runs_and_shows_help() -> None:
    result = subprocess.run(
        [sys.executable, str(VERIFIER), "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("crl", "cert", "link", "inclusion", "consistency", "monitor", "audit"):
        assert command in result.stdout
    for code in (
        "0  verified, and the answer is yes",
        "1  verification failed",
        "2  usage",
        "3  verified, and the answer is no",
    ):
        assert code in result.stdout


def test_python39_compatible() -> None:
    source = VERIFIER.read_text()
    ast.parse(source, feature_version=(3, 9))  # no match, no parenthesised context managers, ...
    tree = ast.parse(source)
    in_annotations: set[int] = set()
    for node in ast.walk(tree):
        notes = [getattr(node, "annotation", None), getattr(node, "returns", None)]
        for note in notes:
            if note is not None:
                in_annotations.update(id(n) for n in ast.walk(note))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword):
            assert node.arg != "strict", "zip(strict=) is Python 3.10+"
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("bit_count", "pairwise", "UTC", "file_digest"), node.attr
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in in_annotations:
            # PEP 604 unions only inside annotations (strings under `from __future__ import annotations`)
            assert not (isinstance(node.left, ast.Name) and node.left.id in ("str", "int", "bytes", "None"))
    assert "from __future__ import annotations" in source
    imports: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            imports.update(a.name.split(".")[0] for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            imports.add((n.module or "").split(".")[0])
    third_party = {m for m in imports if m not in sys.stdlib_module_names and m != "__future__"}
    assert third_party == {"cryptography"}, third_party


def test_publisher_uses_the_verifiers_implementation() -> None:
    pairs = [
        (pub_merkle.verify_inclusion, cpl_verify.verify_inclusion),
        (pub_merkle.verify_consistency, cpl_verify.verify_consistency),
        (pub_merkle.root_from_inclusion_proof, cpl_verify.root_from_inclusion_proof),
        (pub_merkle.leaf_hash, cpl_verify.leaf_hash),
        (pub_merkle.ProofError, cpl_verify.ProofError),
        (pub_note.Verifier, cpl_verify.Verifier),
        (pub_note.open_note, cpl_verify.open_note),
        (pub_note.parse_note, cpl_verify.parse_note),
        (pub_note.NoteError, cpl_verify.NoteError),
        (pub_checkpoint.open_checkpoint, cpl_verify.open_checkpoint),
        (pub_checkpoint.parse_tlog_proof, cpl_verify.parse_tlog_proof),
        (pub_checkpoint.verify_tlog_proof, cpl_verify.verify_tlog_proof),
        (pub_checkpoint.CheckpointError, cpl_verify.CheckpointError),
        (pub_tiles.Tile, cpl_verify.Tile),
        (pub_tiles.tile_hash_range, cpl_verify.tile_hash_range),
        (pub_tiles.decode_bundle, cpl_verify.decode_bundle),
    ]
    for ours, theirs in pairs:
        assert ours is theirs


# =====================================================================================================
# crl
# =====================================================================================================


def test_crl_verifies_and_is_logged(cli: Any) -> None:
    r = cli("crl", "--require-logged")
    assert r.code == 0, r.out
    assert "CRL of ica: OK" in r.out and "CRL of iki-root: OK" in r.out
    assert "number:      2" in r.out and "entries:     1" in r.out
    assert "logged:      crl/v1 entry" in r.out


def test_crl_json_and_state(cli: Any, tmp_path: Path) -> None:
    r = cli("--json", "crl", "--issuer", "ica")
    assert r.code == 0
    out = r.json()
    assert out["ok"] is True and out["result"]["crls"][0]["number"] == 2
    state = json.loads((tmp_path / "state" / cpl_verify.STATE_FILE).read_text())
    assert [v["number"] for v in state["crls"].values()] == [2]


def test_crl_root_pinned_by_fingerprint_only(world: World, srv: SiteServer, tmp_path: Path, capsys: Any) -> None:
    trust = world.write_trust(tmp_path / "fp.json", srv.url, pem=False)
    assert main(["--trust", str(trust), "crl", "--issuer", "ica"]) == 0, capsys.readouterr().out


def test_attack_crl_signed_by_another_ca(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("crl/ica.crl", world.crl(7, *fresh_crl_times(), stranger=True))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1
    assert "signature does not verify under the key of" in r.out and "not issued by this CA" in r.out


def test_attack_old_crl_replayed(world: World, srv: SiteServer, cli: Any) -> None:
    assert cli("crl", "--issuer", "ica").code == 0  # the state now knows number 2
    srv.override("crl/ica.crl", site_bytes(world, "crl/archive/ica/1.crl"))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1
    assert "rollback: the site serves CRL number 1 of ica, but number 2 was seen" in r.out


def test_attack_crl_number_went_down(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("crl/ica.crl", world.crl(9, *fresh_crl_times()))
    assert cli("crl", "--issuer", "ica").code == 0  # the state now knows number 9
    srv.override("crl/ica.crl", world.crl(8, *fresh_crl_times()))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1 and "CRL number 8 of ica, but number 9 was seen" in r.out


def test_attack_same_number_different_crl(world: World, srv: SiteServer, cli: Any) -> None:
    assert cli("crl", "--issuer", "ica").code == 0
    this, nxt = fresh_crl_times()
    srv.override("crl/ica.crl", world.crl(2, this - dt.timedelta(seconds=5), nxt))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1 and "two different CRLs of ica carry the same number 2" in r.out


def test_attack_stale_crl(world: World, srv: SiteServer, cli: Any) -> None:
    now = now_utc()
    srv.override("crl/ica.crl", world.crl(5, now - dt.timedelta(days=10), now - dt.timedelta(days=3)))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1
    assert "the CRL of ica is stale: it expired 3 days ago" in r.out and "do not rely on it" in r.out


def test_attack_crl_from_the_future(world: World, srv: SiteServer, cli: Any) -> None:
    now = now_utc()
    srv.override("crl/ica.crl", world.crl(5, now + dt.timedelta(days=1), now + dt.timedelta(days=8)))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1 and "in the future" in r.out


def test_attack_crl_not_logged(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("crl/ica.crl", world.crl(5, *fresh_crl_times()))
    assert cli("crl", "--issuer", "ica").code == 0  # a valid CRL ...
    r = cli("crl", "--issuer", "ica", "--require-logged")
    assert r.code == 1  # ... that the log never saw
    assert "no crl/v1 entry for exactly these bytes" in r.out and "not logged" in r.out


def test_attack_issuer_certificate_swapped(world: World, srv: SiteServer, cli: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    srv.override("pki/ica.pem", world.stranger_ica_cert.public_bytes(serialization.Encoding.PEM))
    srv.override("crl/ica.crl", world.crl(5, *fresh_crl_times(), stranger=True))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1 and "not the pinned" in r.out
    r = cli(*legacy_trust(world, srv), "crl", "--issuer", "ica", use_trust=False)  # a trust file before crl_issuers
    assert r.code == 1
    assert "pki/ica.pem is not trusted" in r.out and "does not chain to a pinned IKI root" in r.out


def legacy_trust(world: World, srv: SiteServer) -> list[str]:
    """``--trust`` of a trust file from before 'crl_issuers' (in the test's temporary folder)."""
    trust = world.trust(srv.url)
    del trust["crl_issuers"]
    path = world.site.parent / "legacy-trust.json"
    path.write_text(json.dumps(trust))
    return ["--trust", str(path)]


def test_attack_root_swapped_when_pinned_by_fingerprint(
    world: World, srv: SiteServer, tmp_path: Path, capsys: Any
) -> None:
    srv.override("pki/iki-root.pem", site_bytes(world, "pki/ica.pem"))
    trust = world.write_trust(tmp_path / "fp.json", srv.url, pem=False)
    assert main(["--trust", str(trust), "crl", "--issuer", "ica"]) == 1
    out = capsys.readouterr().out
    assert "the site serves another root certificate" in out


def test_attack_crl_not_der(srv: SiteServer, cli: Any) -> None:
    srv.override("crl/ica.crl", b"-----BEGIN X509 CRL-----\nnot a crl\n")
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1 and "crl/ica.crl is not a DER CRL" in r.out


# =====================================================================================================
# cert and link (Device triage links): real TLS servers on 127.0.0.1
# =====================================================================================================


def test_link_with_a_good_iki_certificate_is_trusted(world: World, cli: Any) -> None:
    party = world.party("triage")
    with TLSServer(party.cert_path, party.key_path) as tls:
        r = cli("link", tls.url)
        assert r.code == 0, r.out
        assert "TRUSTED" in r.out and "Smart DCC Ltd" in r.out and "not revoked according to fresh CRLs" in r.out
        j = cli("--json", "link", tls.url).json()
    assert j["result"]["verdict"] == "trusted" and j["result"]["sha256"] == party.fingerprint
    assert j["result"]["revocation"][0]["crl"] == "ica"


def test_attack_link_revoked(world: World, cli: Any) -> None:
    party = world.party("triage-revoked")
    with TLSServer(party.cert_path, party.key_path) as tls:
        r = cli("--json", "link", tls.url)
        wrong_role = cli("--json", "link", tls.url, "--role", "Manufacturer")
    assert r.code == 3  # verified, and the answer is no
    res = r.json()["result"]
    assert res["verdict"] == "revoked" and res["revoked"]["reason"] == "keyCompromise"
    assert wrong_role.code == 3 and wrong_role.json()["result"]["verdict"] == "revoked"  # revocation comes first
    assert "was revoked on" in res["message"] and "Do not trust this endpoint" in res["message"]


def test_attack_link_expired(world: World, cli: Any) -> None:
    party = world.party("triage-expired")
    with TLSServer(party.cert_path, party.key_path) as tls:
        r = cli("link", tls.url)
    assert r.code == 3 and "EXPIRED" in r.out and "the certificate expired" in r.out


def test_attack_link_self_signed(cli: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with TLSServer(cert, key) as tls:
        r = cli("link", tls.url)
    assert r.code == 1 and "UNTRUSTED" in r.out
    assert "self-signed and not a pinned IKI root" in r.out


def test_attack_link_held_by_a_manufacturer(world: World, cli: Any) -> None:
    party = world.party("acme")  # a valid IKI certificate, but not the DCC's
    with TLSServer(party.cert_path, party.key_path) as tls:
        r = cli("link", tls.url)
        assert r.code == 3 and "WRONG-ROLE" in r.out and "not of the DCC" in r.out
        assert cli("link", tls.url, "--role", "any").code == 0
        assert cli("link", tls.url, "--role", "manufacturer").code == 0  # role names in any letter case
        r = cli("link", tls.url, "--role", "vendor")
        assert r.code == 2 and "--role vendor: not a role; use one of Manufacturer, Supplier, DCC, any" in r.out


def test_link_unreachable_is_a_network_error(cli: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("link", f"https://127.0.0.1:{port}/")
    assert r.code == 2 and "cannot connect" in r.out


def test_cert_files(world: World, cli: Any, srv: SiteServer) -> None:
    assert cli("cert", world.party("acme").cert_path).code == 0
    # pinning only the IKI root (no log key) still judges certificates, saying what it did not check
    root = world.site / "pki" / "iki-root.pem"
    r = cli("--site", srv.url, "--root", root, "cert", world.party("acme").cert_path, use_trust=False)
    assert r.code == 0 and "newer CRL of ica was not checked: no log key is pinned" in r.out
    r = cli("cert", world.party("triage-revoked").cert_path)
    assert r.code == 3 and "REVOKED" in r.out and "keyCompromise" in r.out
    # input mistakes are usage errors (2), not failed verifications (1)
    r = cli("cert", world.party("acme").key_path)
    assert r.code == 2 and "is a private key, not a certificate" in r.out
    r = cli("cert", world.site / "status.json")
    assert r.code == 2 and "is not a PEM or DER certificate" in r.out


def test_attack_cert_with_stale_crl_is_never_trusted(world: World, srv: SiteServer, cli: Any) -> None:
    now = now_utc()
    srv.override("crl/ica.crl", world.crl(5, now - dt.timedelta(days=10), now - dt.timedelta(days=3)))
    r = cli("--json", "cert", world.party("acme").cert_path)
    assert r.code == 1
    res = r.json()["result"]
    assert res["verdict"] == "crl-unavailable" and "cannot be trusted" in res["message"]


def test_cert_with_unreachable_crl_is_crl_unavailable(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("crl/ica.crl", ("status", 503))
    r = cli("--json", "cert", world.party("acme").cert_path)
    assert r.code == 2 and r.json()["result"]["verdict"] == "crl-unavailable"


# =====================================================================================================
# inclusion
# =====================================================================================================


def test_inclusion_by_hash_in_few_requests(world: World, cli: Any) -> None:
    r = cli("--json", "inclusion", "--hash", image_hash("e2"), state=False)
    assert r.code == 0, r.out
    out = r.json()
    (a,) = out["result"]["associations"]
    assert a["index"] == world.indices["e2"] and a["device_model"]["model_id"] == "E2"
    assert a["manufacturer"]["organisation"] == "Acme Meters" and a["endorser"]["role"] == "Supplier"
    assert a["replaced_by"] is None and a["current"] is True and a["verdict"] == "current"
    assert out["result"]["lookup"]["proven"] is True and out["result"]["verdict"] == "current"
    # checkpoint; the commitment copy + its hash tile; hash shard + its two lookup tiles; the entry (proof
    # file, bundle); the model shard + its tile; the signature file, CRL and ICA certificate (signers)
    assert out["requests"] <= 16, out


def test_inclusion_reports_a_later_replacement(world: World, cli: Any) -> None:
    r = cli("inclusion", "--hash", image_hash("e1"))
    assert r.code == 3  # verified, and no: not approved now
    assert f"REPLACED:      by log index {world.indices['e1-fixed']}" in r.out
    assert cli("inclusion", "--hash", image_hash("e1"), "--allow-replaced").code == 0  # a question about history
    r = cli("inclusion", "--hash", image_hash("e1-fixed"))
    assert r.code == 0 and f"replaces:      log index {world.indices['e1']} (investigation INV-1)" in r.out
    assert "CURRENT for its device model (proven" in r.out


def test_inclusion_from_tiles_only(world: World, cli: Any, srv: SiteServer) -> None:
    r = cli("--json", "inclusion", "--hash", image_hash("shared"))
    assert r.code == 0, r.out
    assert [a["device_model"]["model_id"] for a in r.json()["result"]["associations"]] == ["E3", "E4"]
    assert not any(p.startswith("log/proof/") for p in srv.requests)


def test_inclusion_by_file_and_by_model(cli: Any, tmp_path: Path) -> None:
    image = tmp_path / "firmware.bin"
    image.write_bytes(b"firmware image c1")
    r = cli("inclusion", "--file", image)
    assert r.code == 0 and "model 'C1'" in r.out and "(CHF, SMETS2)" in r.out
    r = cli("--json", "inclusion", "--model", "1001", "E1", "HW1", "FW1")
    assert r.code == 3 and r.json()["result"]["verdict"] == "mixed"  # the old image is replaced, the new current
    assert [a["image_sha256"] for a in r.json()["result"]["associations"]] == [
        image_hash("e1"),
        image_hash("e1-fixed"),
    ]


def test_inclusion_not_found(cli: Any) -> None:
    r = cli("--json", "inclusion", "--hash", "ab" * 32)
    assert r.code == 3 and r.json()["result"]["verdict"] == "not-found" and r.json()["result"]["lookup"]["proven"]
    r = cli("inclusion", "--hash", "ab" * 32)
    assert "NOT FOUND" in r.out and "proven by the log's signed lookup commitment" in r.out


def test_inclusion_for_another_model(cli: Any) -> None:
    r = cli("inclusion", "--hash", image_hash("c1"), "--model", "1001", "E1", "HW1", "FW1")
    assert r.code == 3 and "NOT APPROVED FOR THIS MODEL" in r.out and "is logged, but only for other device" in r.out
    assert "NOT FOUND" not in r.out


@pytest.mark.parametrize(
    "given",
    ["sha256:{h}", "{H}", "{h}  firmware.bin", "{h} *firmware.bin\n", "\\{h}  odd\\nname.bin"],
)
def test_inclusion_hash_as_users_paste_it(cli: Any, given: str) -> None:
    h = image_hash("e2")
    assert cli("inclusion", "--hash", given.format(h=h, H=h.upper())).code == 0


def test_inclusion_input_mistakes_are_usage_errors(cli: Any) -> None:
    r = cli("inclusion", "--hash", "ab" * 31)
    assert r.code == 2 and "got 62 characters, 62 of them hex digits" in r.out
    r = cli("inclusion", "--index", "-1")
    assert r.code == 2 and "--index must be a log index" in r.out
    r = cli("inclusion", "--index", "100000")
    assert r.code == 2 and "outside the log" in r.out


def test_inclusion_offline_proof(world: World, tmp_path: Path, capsys: Any) -> None:
    index = world.indices["l1"]
    proof = world.offline_proof(index, tmp_path / "l1.tlog-proof")
    entry = tmp_path / "entry.json"
    entry.write_bytes(world.entries()[index])
    trust = world.write_trust(tmp_path / "offline.json")  # no site: nothing is fetched
    argv = ["--trust", str(trust), "inclusion", "--proof", str(proof), "--entry", str(entry)]
    assert main(argv) == 3  # logged, but offline nothing says it is current
    out = capsys.readouterr().out
    assert "model 'L1'" in out and "NOT CHECKED:   later replacements" in out
    assert main([*argv, "--allow-replaced"]) == 0
    # offline means offline: an unreachable --site is never contacted
    assert main([*argv, "--allow-replaced", "--site", "http://127.0.0.1:9/"]) == 0
    capsys.readouterr()
    # an entry altered by one byte is refused
    entry.write_bytes(tamper(world.entries()[index], 30))
    assert main(argv) == 1
    assert "the entry is not proved to be at index" in capsys.readouterr().out
    # the entry rides in the proof file's 'extra' line (authenticated by the proof): the file alone works
    assert f"\nextra {base64.b64encode(world.entries()[index]).decode()}\n" in proof.read_text()
    assert main(["--trust", str(trust), "inclusion", "--proof", str(proof), "--allow-replaced"]) == 0
    # a proof of one image does not vouch for another
    capsys.readouterr()
    entry.write_bytes(world.entries()[index])
    assert main([*argv, "--hash", image_hash("e2")]) == 1
    assert "the proved entry is not for image" in capsys.readouterr().out


def test_inclusion_saves_a_proof_that_proves_the_entry_offline(
    world: World, srv: SiteServer, cli: Any, tmp_path: Path, capsys: Any
) -> None:
    """``--save-proof``: the manufacturer's offline proof (shipped with its firmware), computed from the tiles."""
    index = world.indices["l1"]
    saved = tmp_path / "l1.tlog-proof"
    r = cli("inclusion", "--hash", image_hash("l1"), "--allow-replaced", "--save-proof", str(saved))
    assert r.code == 0, r.out
    assert f"proof of entry {index} saved to {saved}" in r.out
    text = saved.read_text()
    assert text.startswith("c2sp.org/tlog-proof@v1\n")
    assert f"\nextra {base64.b64encode(world.entries()[index]).decode()}\n" in text
    trust = world.write_trust(tmp_path / "offline.json")  # no site: the file alone proves the entry
    capsys.readouterr()
    assert main(["--trust", str(trust), "inclusion", "--proof", str(saved), "--allow-replaced"]) == 0
    assert "model 'L1'" in capsys.readouterr().out
    lines = text.split("\n")
    hashes = [i for i, line in enumerate(lines) if i > 2 and line and not line.startswith(("index", "extra"))]
    lines[hashes[0]] = base64.b64encode(bytes(32)).decode()  # one proof hash changed
    saved.write_text("\n".join(lines))
    assert main(["--trust", str(trust), "inclusion", "--proof", str(saved), "--allow-replaced"]) == 1
    # by index too; a hash matching several entries must be narrowed down first
    r = cli("inclusion", "--index", str(index), "--allow-replaced", "--save-proof", str(saved))
    assert r.code == 0 and f"proof of entry {index} saved" in r.out
    r = cli("inclusion", "--hash", image_hash("l1"), "--save-proof", str(tmp_path / "nowhere" / "x.tlog-proof"))
    assert r.code == 2 and "--save-proof: cannot write" in r.out


def test_attack_lookup_points_at_the_wrong_index(world: World, srv: SiteServer, cli: Any) -> None:
    key = image_hash("e2")
    srv.override(lookup_shard(world, key), json.dumps({key: [world.indices["g1"]]}).encode())
    r = cli("inclusion", "--hash", key)
    assert r.code == 1
    assert f"the lookup shard {lookup_shard(world, key)[4:]} does not match the log's signed lookup commitment" in r.out


def test_attack_lookup_beyond_the_log(world: World, srv: SiteServer, cli: Any) -> None:
    key = image_hash("e2")
    srv.override(lookup_shard(world, key), json.dumps({key: [10**6]}).encode())
    r = cli("inclusion", "--hash", key)
    assert r.code == 1 and "does not match the log's signed lookup commitment" in r.out


def test_attack_entry_altered_in_its_bundle(world: World, srv: SiteServer, cli: Any) -> None:
    size = current_size(world)
    path = f"log/tile/entries/000.p/{size}"
    data = site_bytes(world, path)
    pos = data.index(b"Acme Meters") + 2  # inside entry 0's JSON
    srv.override(path, tamper(data, pos))
    r = cli("inclusion", "--hash", image_hash("e1"))
    assert r.code == 1
    assert f"the entry bundle tile/entries/000.p/{size} does not match the log: entry 0 was altered" in r.out


def test_attack_bundle_framing_altered(world: World, srv: SiteServer, cli: Any) -> None:
    size = current_size(world)
    path = f"log/tile/entries/000.p/{size}"
    srv.override(path, tamper(site_bytes(world, path), 0))  # the first entry's length prefix
    r = cli("inclusion", "--hash", image_hash("e2"))
    assert r.code == 1 and "malformed entry bundle" in r.out


def test_attack_oversize_response(srv: SiteServer, cli: Any) -> None:
    srv.override("log/checkpoint", ("oversize", 2 * 1024 * 1024))
    r = cli("inclusion", "--hash", image_hash("e2"))
    assert r.code == 1 and "larger than the 64.0 KiB allowed" in r.out


def test_attack_announced_oversize_response(srv: SiteServer, cli: Any) -> None:
    srv.override("log/checkpoint", b"x" * (65 * 1024))
    r = cli("consistency")
    assert r.code == 1 and "more than the 64.0 KiB allowed" in r.out


def test_attack_redirect_to_another_host(srv: SiteServer, cli: Any) -> None:
    srv.override("log/checkpoint", ("redirect", "http://evil.example.test/log/checkpoint"))
    r = cli("consistency")
    assert r.code == 1
    assert "outside the site" in r.out and "redirects are followed only within the same site" in r.out


def test_gzip_responses_are_accepted_within_the_cap(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("log/checkpoint", ("gzip", site_bytes(world, "log/checkpoint")))
    assert cli("consistency").code == 0
    srv.override("log/checkpoint", ("gzip", b"\n" * (10 * 1024 * 1024)))  # a small gzip bomb
    r = cli("consistency")
    assert r.code == 1 and "expands to more than the 64.0 KiB allowed" in r.out


def test_failures_in_json(srv: SiteServer, cli: Any) -> None:
    srv.override("log/checkpoint", ("redirect", "http://evil.example.test/"))
    out = cli("--json", "consistency").json()
    assert out["ok"] is False and out["exit_code"] == 1 and "outside the site" in out["error"]


def test_redirect_within_the_site_is_followed(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("log/checkpoint", ("redirect", "/log/moved-checkpoint"))
    srv.override("log/moved-checkpoint", site_bytes(world, "log/checkpoint"))
    assert cli("consistency").code == 0


def test_server_errors_are_retried_then_reported(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("log/checkpoint", ("status", 503, 1))
    assert cli("consistency").code == 0  # one 503, then the file
    srv.reset()
    srv.override("log/checkpoint", ("status", 500))
    r = cli("consistency")
    assert r.code == 2 and "HTTP 500" in r.out and "try again later" in r.out
    srv.reset()
    srv.override("log/checkpoint", ("status", 403))
    assert cli("consistency").code == 2  # a 4xx is not retried


# =====================================================================================================
# checkpoints: signatures, forks, rollbacks
# =====================================================================================================


def test_attack_checkpoint_signed_by_another_key(srv: SiteServer, cli: Any, world: World) -> None:
    cp = pub_checkpoint.parse_unverified(site_bytes(world, "log/checkpoint"))
    srv.override("log/checkpoint", signed_checkpoint(Signer.generate(ORIGIN), cp.size, cp.root))
    r = cli("consistency")
    assert r.code == 1
    assert "not signed by the pinned log key" in r.out and "Trust nothing the site says about the log" in r.out


def test_attack_checkpoint_with_a_bad_signature(srv: SiteServer, cli: Any, world: World) -> None:
    raw = site_bytes(world, "log/checkpoint").decode()
    body, sig = raw.rsplit("\u2014 ", 1)
    name, b64 = sig.split(" ")
    blob = base64.b64decode(b64)
    forged = blob[:4] + tamper(blob[4:], 10)  # the right key ID, a wrong signature
    srv.override("log/checkpoint", f"{body}\u2014 {name} {base64.b64encode(forged).decode()}\n".encode())
    r = cli("inclusion", "--hash", image_hash("e2"))
    assert r.code == 1
    assert "does not verify" in r.out and "forged or altered" in r.out


def test_attack_checkpoint_with_an_unknown_origin(srv: SiteServer, cli: Any, world: World) -> None:
    cp = pub_checkpoint.parse_unverified(site_bytes(world, "log/checkpoint"))
    srv.override("log/checkpoint", signed_checkpoint(world.signer, cp.size, cp.root, "other.example/log"))
    r = cli("consistency")
    assert r.code == 1 and "another log (unknown origin)" in r.out


def test_attack_fork_of_the_same_size(srv: SiteServer, cli: Any, world: World) -> None:
    assert cli("consistency").code == 0  # remember the real checkpoint
    cp = pub_checkpoint.parse_unverified(site_bytes(world, "log/checkpoint"))
    forged = signed_checkpoint(world.signer, cp.size, hashlib.sha256(b"another tree").digest())
    srv.override("log/checkpoint", forged)
    r = cli("consistency")
    assert r.code == 1
    assert "fork: two different trees of the same size" in r.out
    assert "SECURITY ERROR" in r.out and site_bytes(world, "log/checkpoint").decode().split("\n")[2] in r.out
    assert forged.decode().split("\n")[2] in r.out  # both checkpoints printed as evidence


def test_an_older_consistent_checkpoint_is_a_cache_not_an_attack(srv: SiteServer, cli: Any, world: World) -> None:
    # GitHub Pages caches for minutes: a client that saw size N may be served an older, valid checkpoint.
    assert cli("consistency").code == 0
    srv.override("log/checkpoint", world.checkpoints[0].encode())
    size = current_size(world)
    for command in (["consistency"], ["monitor"], ["inclusion", "--hash", image_hash("e2")]):
        r = cli(*command)
        assert r.code == 0, r.out
        assert "warning: the site serves an older checkpoint" in r.out and f"carrying on with size {size}" in r.out
        assert "SECURITY ERROR" not in r.out


def test_attack_older_checkpoint_of_another_history(srv: SiteServer, cli: Any, world: World) -> None:
    assert cli("consistency").code == 0
    older = pub_checkpoint.parse_unverified(world.checkpoints[0])
    forged = signed_checkpoint(world.signer, older.size, hashlib.sha256(b"another history").digest())
    srv.override("log/checkpoint", forged)
    r = cli("consistency")
    assert r.code == 1 and "SECURITY ERROR" in r.out and "the log rewrote its history" in r.out
    assert (
        forged.decode().split("\n")[2] in r.out and site_bytes(world, "log/checkpoint").decode().split("\n")[2] in r.out
    )


def test_an_older_checkpoint_without_the_newer_tiles_is_retried_later(srv: SiteServer, cli: Any, world: World) -> None:
    assert cli("consistency").code == 0
    srv.override("log/checkpoint", world.checkpoints[0].encode())
    size = current_size(world)
    srv.override(f"log/tile/0/000.p/{size}", ("status", 404))
    r = cli("consistency")
    assert r.code == 2 and "stale cache" in r.out and "SECURITY ERROR" not in r.out


def test_consistency_with_an_earlier_checkpoint(world: World, cli: Any, tmp_path: Path) -> None:
    older = tmp_path / "older.checkpoint"
    older.write_text(world.checkpoints[0])
    r = cli("consistency", "--against", older)
    assert r.code == 0 and "consistent with the earlier checkpoint of size" in r.out
    state = json.loads((tmp_path / "state" / cpl_verify.STATE_FILE).read_text())
    assert state["checkpoints"][ORIGIN] == site_bytes(world, "log/checkpoint").decode()


def test_monitor_remembers_and_repeats(cli: Any) -> None:
    r = cli("monitor", "--interval", "0.01", "--count", "2")
    assert r.code == 0 and r.out.count("checkpoint verified") == 2
    assert "same tree as before" in r.out


def test_attack_tile_altered_is_found_by_consistency(world: World, srv: SiteServer, cli: Any, tmp_path: Path) -> None:
    older = tmp_path / "older.checkpoint"
    older.write_text(world.checkpoints[0])
    size = current_size(world)
    path = f"log/tile/0/000.p/{size}"
    srv.override(path, tamper(site_bytes(world, path), 40))
    r = cli("consistency", "--against", older)
    assert r.code == 1
    assert "cannot prove consistency" in r.out and f"tile/0/000.p/{size}" in r.out


def test_attack_truncated_tile(world: World, srv: SiteServer, cli: Any, tmp_path: Path) -> None:
    older = tmp_path / "older.checkpoint"
    older.write_text(world.checkpoints[0])
    size = current_size(world)
    path = f"log/tile/0/000.p/{size}"
    srv.override(path, site_bytes(world, path)[:-7])
    r = cli("consistency", "--against", older)
    assert r.code == 1 and "truncated or padded hash tile" in r.out


# =====================================================================================================
# audit
# =====================================================================================================


def test_audit_passes_on_a_good_publication(cli: Any) -> None:
    r = cli("--json", "audit")
    assert r.code == 0, r.out
    res = r.json()["result"]
    assert res["structure_ok"] and res["problem_count"] == 0
    assert res["entries"] == {"associations": 8, "crls": 3, "commitments": 2, "other": 0}


def test_attack_tile_altered_is_found_by_audit(world: World, srv: SiteServer, cli: Any) -> None:
    size = current_size(world)
    path = f"log/tile/0/000.p/{size}"
    srv.override(path, tamper(site_bytes(world, path), 33))
    r = cli("audit")
    assert r.code == 1
    assert f"the hash tile tile/0/000.p/{size} is wrong: it does not match the entries" in r.out


def test_attack_entry_altered_is_found_by_audit(world: World, srv: SiteServer, cli: Any) -> None:
    size = current_size(world)
    path = f"log/tile/entries/000.p/{size}"
    data = site_bytes(world, path)
    srv.override(path, tamper(data, data.index(b"PANEL-S2") + 7))
    r = cli("audit")
    assert r.code == 1 and "the entries do not hash to the signed root" in r.out


def test_attack_evidence_swapped(world: World, srv: SiteServer, cli: Any) -> None:
    entry = json.loads(world.entries()[world.indices["e2"]])
    other = json.loads(world.entries()[world.indices["c1"]])
    target = entry["evidence"]["signatures"][0]
    srv.override(f"log/evidence/{target}", site_bytes(world, f"log/evidence/{other['evidence']['signatures'][0]}"))
    r = cli("audit")
    assert r.code == 1
    assert f"log/evidence/{target} does not have that SHA-256: swapped or altered" in r.out
    assert f"PROBLEM entry {world.indices['e2']}" in r.out


def test_attack_evidence_missing(world: World, srv: SiteServer, cli: Any) -> None:
    entry = json.loads(world.entries()[world.indices["c1"]])
    srv.override(f"log/evidence/{entry['evidence']['spreadsheet']}", ("status", 404))
    r = cli("audit")
    assert r.code == 1 and "is not published" in r.out


@pytest.fixture(scope="module")
def rogue_site(world: World, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A copy of the publication where the log holder (with the real log key) logged rule-breaking entries."""
    import shutil

    from publisher.config import load

    base = tmp_path_factory.mktemp("rogue")
    pub = base / "publication"
    shutil.copytree(world.config.root, pub, symlinks=True, ignore=shutil.ignore_patterns("lock"))
    config = load(pub)
    entries = [json.loads(e) for e in world.entries()]
    e2, l1, e3, c1 = (entries[world.indices[k]] for k in ("e2", "l1", "e3", "c1"))
    silent = dict(e2, image_sha256=image_hash("e2-silent"))
    # A SMETS1 model, with evidence that the Supplier (not the DCC) endorsed: E2's spreadsheet and signatures.
    smets1 = dict(
        l1, device_model=dict(l1["device_model"], model_id="L9"), endorser=e2["endorser"], evidence=e2["evidence"]
    )
    duplicate = dict(e3)
    wrong_sig = dict(c1, evidence=dict(c1["evidence"], signatures=e2["evidence"]["signatures"]))
    crafted = {"silent": silent, "smets1": smets1, "duplicate": duplicate, "wrong_sig": wrong_sig}
    signer = load_log_signer(config.log_key, pub)
    with TileLog.open(pub / "log", signer) as log:
        first = log.size
        log.append([canonical_json(e) for e in crafted.values()])
    export_tree(config, base / "site", "2026-01-01T00:00:00Z")
    return base / "site", {k: first + i for i, k in enumerate(crafted)}


def test_attack_audit_finds_broken_rules(
    world: World, rogue_site: tuple[Path, dict[str, int]], cli: Any, tmp_path: Path
) -> None:
    site, at = rogue_site
    r = cli("--site", site, "audit")
    assert r.code == 1
    silent = f"PROBLEM entry {at['silent']}: Z4.3b-replacement-ref: the device model already has hash"
    assert silent in r.out
    assert "; a replacement must name that index and its investigation" in r.out
    smets1 = f"PROBLEM entry {at['smets1']}: Z4.3c-dcc-endorsement: a SMETS1 device model must be endorsed by the DCC"
    assert f"{smets1}, not by Bright Energy Supply (ID 2001, Supplier)" in r.out
    duplicate = f"PROBLEM entry {at['duplicate']}: Z4.3b-not-current: this hash is already the device model's current"
    assert duplicate in r.out
    wrong_sig = f"PROBLEM entry {at['wrong_sig']}: evidence: Z4.1-signature: signature"
    assert wrong_sig in r.out and "messageDigest does not match the spreadsheet" in r.out
    assert f"PROBLEM entry {at['silent']}: evidence: the signed spreadsheet has no row" in r.out
    assert "AUDIT FAILED" in r.out


# =====================================================================================================
# trust handling
# =====================================================================================================


def test_tofu_pins_and_remembers(world: World, srv: SiteServer, tmp_path: Path, capsys: Any) -> None:
    state = tmp_path / "tofu-state"
    assert main(["--site", srv.url, "--state", str(state), "--tofu", "crl", "--issuer", "ica"]) == 0
    err = capsys.readouterr().err
    assert f"TOFU: pinned log key {world.signer.verifier.vkey}" in err
    assert "TOFU: pinned IKI root iki-root SHA-256" in err
    # later runs use the pinned material without --tofu
    assert main(["--site", srv.url, "--state", str(state), "inclusion", "--hash", image_hash("e2")]) == 0


def test_nothing_pinned_is_a_usage_error(srv: SiteServer, capsys: Any) -> None:
    assert main(["--site", srv.url, "consistency"]) == 2
    assert "no log verifier key is pinned" in capsys.readouterr().err
    assert main(["--site", srv.url, "crl"]) == 2
    assert "no IKI root is pinned" in capsys.readouterr().err


def test_options_after_the_command_and_folder_sites(world: World, tmp_path: Path, capsys: Any) -> None:
    trust = world.write_trust(tmp_path / "t.json")
    assert main(["crl", "--issuer", "ica", "--trust", str(trust), "--site", str(world.site)]) == 0
    assert main(["inclusion", "--hash", image_hash("g1"), "--site", str(world.site), "--trust", str(trust)]) == 0
    assert main(["bogus-command"]) == 2
    assert main(["--trust", str(tmp_path / "missing.json"), "crl"]) == 2
    capsys.readouterr()


def test_attack_altered_file_in_a_folder_site(world: World, tmp_path: Path, capsys: Any) -> None:
    site = world.copy_site(tmp_path / "site")
    size = current_size(world)
    bundle = site / f"log/tile/entries/000.p/{size}"
    data = bundle.read_bytes()
    bundle.unlink()  # hard links: never write through to the publication
    bundle.write_bytes(tamper(data, data.rindex(b"PANEL-S1") + 6))  # entry 1 (g1)
    trust = world.write_trust(tmp_path / "t.json")
    assert main(["--trust", str(trust), "--site", str(site), "inclusion", "--hash", image_hash("g1")]) == 1
    assert "does not match the log: entry" in capsys.readouterr().out


# =====================================================================================================
# Proven or labelled: the signed lookup commitment, the unproven fallback, --exhaustive
# =====================================================================================================


def _model_key_of(world: World, label: str) -> str:
    m = json.loads(world.entries()[world.indices[label]])["device_model"]
    return cpl_verify.model_lookup_key(
        m["manufacturer_id"], m["model_id"], m["hardware_version"], m["firmware_version"]
    )


def test_attack_model_lookup_hides_the_replacement(world: World, srv: SiteServer, cli: Any) -> None:
    key = _model_key_of(world, "e1")
    rel = lookup_shard(world, key, "model")
    table = json.loads(site_bytes(world, rel))
    table[key] = [world.indices["e1"]]  # the replacing entry dropped: e1 would look current
    srv.override(rel, json.dumps(table, sort_keys=True, separators=(",", ":")).encode())
    r = cli("--json", "inclusion", "--hash", image_hash("e1"))
    assert r.code == 1, r.out
    assert "does not match the log's signed lookup commitment" in r.json()["error"]


def test_attack_hash_shard_withheld(world: World, srv: SiteServer, cli: Any) -> None:
    key = image_hash("e2")
    srv.override(lookup_shard(world, key), ("status", 404))
    r = cli("inclusion", "--hash", key)
    assert r.code == 1 and "(the site does not serve it) does not match the log's signed lookup" in r.out
    assert "NOT FOUND" not in r.out


def test_attack_lookup_tile_altered(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("log/lookup/tile/1/000", tamper(site_bytes(world, "log/lookup/tile/1/000"), 5))
    r = cli("inclusion", "--hash", image_hash("e2"))
    assert r.code == 1 and "does not match the log's signed lookup commitment" in r.out


@pytest.fixture(scope="module")
def uncommitted_site(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log whose last entry is not a lookup commitment (a log from before commitments, or mid-change)."""
    import shutil

    from publisher.config import load

    base = tmp_path_factory.mktemp("uncommitted")
    pub = base / "publication"
    shutil.copytree(world.config.root, pub, symlinks=True, ignore=shutil.ignore_patterns("lock"))
    config = load(pub)
    e2 = json.loads(world.entries()[world.indices["e2"]])
    other = dict(e2, device_model=dict(e2["device_model"], model_id="E9"), image_sha256=image_hash("e9"))
    with TileLog.open(pub / "log", load_log_signer(config.log_key, pub)) as log:
        log.append([canonical_json(other)])
    export_tree(config, base / "site", "2026-01-01T00:00:00Z")
    return base / "site"


def test_without_a_commitment_answers_are_labelled_not_proven(
    world: World, uncommitted_site: Path, cli: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    shutil_copy(uncommitted_site, site)
    key = _model_key_of(world, "e1")
    shard = site / lookup_shard(world, key, "model")
    table = json.loads(shard.read_bytes())
    table[key] = [world.indices["e1"]]  # an unsigned hint can hide the replacement
    shard.write_text(json.dumps(table))
    hidden = cli("--json", "--site", site, "inclusion", "--hash", image_hash("e1"), "--exhaustive-max", "0")
    assert hidden.code == 3, hidden.out  # not 0: "current" rests on an unsigned hint
    res = hidden.json()["result"]
    assert res["verdict"] == "current-unproven" and res["lookup"]["proven"] is False
    assert "give --exhaustive to read every entry" in res["lookup"]["basis"]
    text = cli("--site", site, "inclusion", "--hash", image_hash("e1"), "--exhaustive-max", "0").out
    assert "NOT PROVEN" in text
    # reading every entry proves the truth; on a small log that is the default
    for extra in (["--exhaustive", "--exhaustive-max", "0"], []):
        r = cli("--json", "--site", site, "inclusion", "--hash", image_hash("e1"), *extra)
        assert r.code == 3 and r.json()["result"]["verdict"] == "replaced", r.out
        assert r.json()["result"]["lookup"]["basis"].startswith("every entry of the log, read and proved")
    absent = cli("--json", "--site", site, "inclusion", "--hash", "cd" * 32, "--exhaustive-max", "0")
    assert absent.code == 3 and absent.json()["result"]["verdict"] == "not-found-unproven"


def shutil_copy(src: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(src, dest)


def test_publish_ends_every_log_with_a_commitment_the_audit_recomputes(world: World, cli: Any) -> None:
    entries = world.entries()
    last = json.loads(entries[-1])
    assert last["type"] == "lookup/v1" and last["size"] == len(entries) - 1
    assert last["crls"]["ica"]["number"] == max(
        json.loads(e)["number"] for e in entries if json.loads(e)["type"] == "crl/v1"
    )
    r = cli("audit")
    assert r.code == 0 and "lookup commitments (each recomputed)" in r.out


def test_attack_commitment_that_lies(world: World, tmp_path: Path, cli: Any) -> None:
    """The log key signs a commitment that omits an entry: audit catches what clients were told."""
    import shutil

    from publisher.config import load

    pub = tmp_path / "publication"
    shutil.copytree(world.config.root, pub, symlinks=True, ignore=shutil.ignore_patterns("lock"))
    config = load(pub)
    lookup = cpl_verify.Lookup()
    entries = world.entries()
    for i, raw in enumerate(entries):
        if i != world.indices["e1-fixed"]:  # hide the replacement from the commitment
            lookup.add(i, cpl_verify.parse_entry(raw))
        else:
            lookup.add(i, None)
    with TileLog.open(pub / "log", load_log_signer(config.log_key, pub)) as log:
        log.append([lookup.commitment()])
    export_tree(config, tmp_path / "site", "2026-01-01T00:00:00Z")
    for rel, data in {**lookup.shard_files(), **lookup.tile_files()}.items():  # the site serves the lie too
        (tmp_path / "site" / "log" / rel).write_bytes(data)
    # clients trusting the commitment are misled (that is what the audit is for) unless they read everything
    assert cli("--site", tmp_path / "site", "inclusion", "--hash", image_hash("e1")).code == 0
    r = cli("--site", tmp_path / "site", "inclusion", "--hash", image_hash("e1"), "--exhaustive")
    assert r.code == 1 and f"the log's lookup commitment (entry {len(entries)}) does not match the entries" in r.out
    r = cli("--site", tmp_path / "site", "audit")
    assert r.code == 1
    assert f"PROBLEM entry {len(entries)}: lookup/v1: the commitment does not match the entries before it" in r.out


# =====================================================================================================
# The CRL set is pinned, not served
# =====================================================================================================


def test_crl_checks_every_pinned_issuer_whatever_status_json_says(world: World, srv: SiteServer, cli: Any) -> None:
    status = json.loads(site_bytes(world, "status.json"))
    status["crls"] = {"iki-root": status["crls"]["iki-root"]}  # the site "forgets" the ICA
    srv.override("status.json", json.dumps(status).encode())
    r = cli("--json", "crl")
    assert r.code == 0
    assert sorted(c["issuer"] for c in r.json()["result"]["crls"]) == ["ica", "iki-root"]
    srv.override("crl/ica.crl", ("status", 404))
    assert cli("crl").code == 2  # a pinned issuer's CRL missing is never skipped


def test_attack_root_arl_served_as_the_ica_crl(world: World, srv: SiteServer, cli: Any) -> None:
    srv.override("crl/ica.crl", site_bytes(world, "crl/iki-root.crl"))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1 and "it is another CA's CRL" in r.out
    srv.reset()
    srv.override("pki/ica.pem", site_bytes(world, "pki/iki-root.pem"))
    srv.override("crl/ica.crl", site_bytes(world, "crl/iki-root.crl"))
    r = cli("crl", "--issuer", "ica")
    assert r.code == 1 and "not the pinned" in r.out


def test_crl_of_an_unpinned_issuer_is_a_usage_error(cli: Any) -> None:
    r = cli("crl", "--issuer", "other-ca")
    assert r.code == 2 and "not a pinned issuer; the trust file pins ica, iki-root" in r.out


def test_attack_superseded_crl_is_refused_without_state(world: World, srv: SiteServer, cli: Any) -> None:
    this_update, next_update = fresh_crl_times()
    srv.override("crl/ica.crl", world.crl(1, this_update, next_update))  # validly signed, fresh, but old
    for args in (["crl", "--issuer", "ica", "--require-logged"], ["crl", "--issuer", "ica"]):
        r = cli(*args, state=False)
        assert r.code == 1 and "superseded: the site serves CRL number 1 of ica, but the log holds number" in r.out
    r = cli("--json", "cert", world.party("triage-revoked").cert_path, state=False)
    assert r.code == 1 and r.json()["result"]["verdict"] == "crl-unavailable"
    assert "superseded" in r.json()["result"]["message"]


# =====================================================================================================
# Pinning rules and the signers' standing
# =====================================================================================================


def test_attack_checkpoint_signed_only_by_another_pinned_key(
    world: World, srv: SiteServer, tmp_path: Path, capsys: Any
) -> None:
    other = Signer.generate("witness.example")
    cp = pub_checkpoint.parse_unverified(site_bytes(world, "log/checkpoint"))
    srv.override("log/checkpoint", signed_checkpoint(other, cp.size, cp.root))
    trust = world.trust(srv.url)
    trust["log"]["vkey"] = [world.signer.verifier.vkey, other.verifier.vkey]
    path = tmp_path / "two-keys.json"
    path.write_text(json.dumps(trust))
    assert main(["--trust", str(path), "consistency"]) == 1
    assert f"carries no valid signature of the log key '{ORIGIN}'" in capsys.readouterr().out
    trust["log"] = {"origin": ORIGIN, "vkey": [other.verifier.vkey]}  # only a key not named after the origin
    path.write_text(json.dumps(trust))
    assert main(["--trust", str(path), "consistency"]) == 1
    assert f"no trusted key is named after the origin '{ORIGIN}'" in capsys.readouterr().out


def test_signer_key_compromised_before_the_approval(world: World, tmp_path: Path, capsys: Any) -> None:
    import shutil

    from publisher.config import load
    from publisher.intake.associations import AssociationIndex
    from publisher.pki import crl_publish
    from publisher.publish import crl_entries

    pub = tmp_path / "publication"
    shutil.copytree(world.config.root, pub, symlinks=True, ignore=shutil.ignore_patterns("lock"))
    config = load(pub)
    e2 = json.loads(world.entries()[world.indices["e2"]])
    approved = cpl_verify.parse_iso(e2["approved_at"])
    supplier = world.party("supplier").cert
    assert e2["endorser"]["certificate_sha256"] == world.party("supplier").fingerprint
    operations.revoke(
        config, "ica", supplier.serial_number, "keyCompromise", invalidity_date=approved - dt.timedelta(minutes=1)
    )
    refreshed = crl_publish.refresh(config, force=True)
    with TileLog.open(pub / "log", load_log_signer(config.log_key, pub)) as log:
        log.append(crl_entries(refreshed))
        log.append([AssociationIndex.from_entries(log.entries()).lookup.commitment()])
    export_tree(config, tmp_path / "site", "2026-01-01T00:00:00Z")
    with SiteServer(tmp_path / "site") as srv:
        trust = world.write_trust(tmp_path / "trust.json", srv.url)
        code = main(["--trust", str(trust), "--json", "inclusion", "--hash", image_hash("e2")])
    out = json.loads(capsys.readouterr().out)
    assert code == 3
    (a,) = out["result"]["associations"]
    assert a["verdict"] == "signer-compromised" and a["current"] is True
    assert "the endorser's certificate was revoked (keyCompromise), its key invalid from" in a["signer_problems"][0]


def test_hostile_text_in_signed_entries_cannot_drive_the_terminal(world: World, tmp_path: Path, cli: Any) -> None:
    import shutil

    from publisher.config import load

    pub = tmp_path / "publication"
    shutil.copytree(world.config.root, pub, symlinks=True, ignore=shutil.ignore_patterns("lock"))
    config = load(pub)
    with TileLog.open(pub / "log", load_log_signer(config.log_key, pub)) as log:
        index = log.size
        log.append([canonical_json({"type": "note/v1", "text": "\x1b[2J\x1b]0;owned\x07\u202egnp.exe"})])
    export_tree(config, tmp_path / "site", "2026-01-01T00:00:00Z")
    r = cli("--site", tmp_path / "site", "inclusion", "--index", index)
    assert r.code == 0
    assert "\x1b" not in r.out and "\x07" not in r.out and "\u202e" not in r.out
    assert "\\u001b[2J" in r.out and "\\u202egnp.exe" in r.out


def test_a_cached_checkpoint_older_than_the_lookup_is_fetched_afresh(world: World, srv: SiteServer, cli: Any) -> None:
    # Right after a publish a CDN may serve the previous checkpoint while the lookup files are new: the
    # shard then disagrees with the old commitment. The verifier asks for the checkpoint past the cache
    # (a query string) and, given a newer consistent one, answers from it.
    served = iter([world.checkpoints[0].encode()])
    srv.override("log/checkpoint", lambda: next(served, site_bytes(world, "log/checkpoint")))
    r = cli("--json", "inclusion", "--hash", image_hash("e2"), state=False)
    assert r.code == 0, r.out
    assert any("the site's lookup is newer than the checkpoint first served" in w for w in r.json()["warnings"]), r.out
    assert r.json()["result"]["checkpoint"]["size"] == current_size(world)
    # the lookup files are asked for at the commitment's version, so caches key them by it
    assert any(p.startswith("log/lookup/hash/") for p in srv.requests)
    # a site that really is inconsistent with itself still fails
    srv.override("log/checkpoint", world.checkpoints[0].encode())
    r = cli("inclusion", "--hash", image_hash("e2"), state=False)
    assert r.code == 1 and "does not match the log's signed lookup commitment" in r.out
