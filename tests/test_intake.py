"""CPL submission intake (SEC Appendix Z 4.1 to 4.3, MP168): what is accepted, what is refused and why.

Good submissions are made by real peers (``openssl cms -sign``/``-resign``,
cryptography's PKCS7 builder, a hand-built RFC 5652 countersignature) and must
be logged exactly; every bad one must be refused with its specific check name
in ``rejection.json`` and ``rejection.txt``, stay in ``inbox/``, and append
nothing to the log (all or nothing: one bad row among good ones logs nothing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import unicodedata
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from asn1crypto import cms as acms
from asn1crypto import x509 as ax509
from cryptography import x509
from intake_fixtures import (
    Pub,
    World,
    build_world,
    checks_of,
    cms_resign,
    cms_sign,
    csv_bytes,
    drop_attr,
    ecdsa_sign,
    edit_signed_attrs,
    image_hash,
    openssl,
    pkcs7_sign,
    rejection,
    rewrite_zip,
    row,
    set_attr,
    sign_folder,
    write_request,
    xlsx_bytes,
)

from publisher import publication
from publisher.cli import main
from publisher.demo import trust_of
from publisher.entries import association_entry, canonical_json
from publisher.intake.associations import AssociationIndex
from publisher.pki import crl_publish
from publisher.pki.profile import identity
from publisher.publish import operations
from publisher.site.export import export_tree
from publisher.tlog import TileLog
from publisher.tlog.signer import load_log_signer
from verifier.cpl_verify import (
    ASSOCIATION_RULES,
    MAX_SIGNING_SKEW,
    SubmissionError,
    judge_rows,
    read_submission,
    submission_inputs,
    submission_signers,
)
from verifier.cpl_verify import SHEET_COLUMNS as COLUMNS
from verifier.cpl_verify import Identity as VIdentity
from verifier.cpl_verify import main as verify_main

GOOD_REQUEST = {"submitter_ref": "SUB-1", "panel_ref": "PANEL-2024-01"}


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("intake-world"))


@pytest.fixture()
def pub(world: World, tmp_path: Path) -> Pub:
    return world.copy(tmp_path / "pub")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_state(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: (mtime_ns, SHA-256), to prove that nothing changed."""
    state = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            state[str(p.relative_to(root))] = (p.stat().st_mtime_ns, sha256(p.read_bytes()))
        else:
            state[str(p.relative_to(root))] = (0, "dir")
    return state


def assert_evidence(pub: Pub, entry: dict[str, object], files: dict[str, bytes]) -> None:
    """The entry's evidence digests are those of the submission's files, each stored under log/evidence/."""
    evidence = entry["evidence"]
    assert isinstance(evidence, dict)
    by_digest = {sha256(data): data for data in files.values()}
    digests = [evidence["spreadsheet"], evidence["request"], *evidence["signatures"]]
    assert sorted(digests) == sorted(by_digest)
    for d in digests:
        assert (pub.log_dir / "evidence" / d).read_bytes() == by_digest[d]


def accept(pub: Pub, folder: Path, rows: int = 1, now: dt.datetime | None = None) -> list[dict[str, object]]:
    """Run intake; the submission must be logged (``rows`` entries) with its evidence and moved to processed/."""
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    before = pub.log_size()
    report = pub.run(now=now)
    assert report.rejected == {}, {k: [str(f) for f in v] for k, v in report.rejected.items()}
    assert report.accepted == {folder.name: list(range(before, before + rows))}
    assert not folder.exists()
    moved = pub.processed / folder.name
    assert {p.name: p.read_bytes() for p in moved.iterdir()} == files
    raw = pub.raw_entries()
    assert len(raw) == before + rows
    entries = []
    for data in raw[before:]:
        entry = json.loads(data)
        assert data == canonical_json(entry)
        assert data == json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert entry["submission_id"] == folder.name
        assert_evidence(pub, entry, files)
        entries.append(entry)
    return entries


def party(world: World, label: str) -> dict[str, object]:
    org, org_id, role = {
        "acme": ("Acme Meters", "1001", "Manufacturer"),
        "supplier": ("Bright Energy Supply", "2001", "Supplier"),
        "dcc": ("Smart DCC Ltd", "9001", "DCC"),
    }[label]
    return {
        "organisation": org,
        "organisation_id": org_id,
        "role": role,
        "certificate_sha256": world[label].fingerprint,
    }


# -- accepted ----------------------------------------------------------------------------------------


def test_openssl_sign_and_resign_is_logged_with_evidence(pub: Pub, world: World) -> None:
    now = publication.now_utc()
    rows = [row("R-100"), row("R-200", device_type="GSME", hardware_version="HW2", firmware_version="FW9")]
    folder = pub.submit("sub-2024-001", rows, style="resign")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(files) == {"sheet.csv", "signature.p7s", "request.json"}
    entries = accept(pub, folder, rows=2, now=now)
    for entry, r in zip(entries, rows, strict=True):
        assert entry == {
            "type": "cpl-association/v1",
            "device_model": {
                "manufacturer_id": "1001",
                "model_id": r["model_id"],
                "hardware_version": r["hardware_version"],
                "firmware_version": r["firmware_version"],
            },
            "manufacturer_name": "Acme Meters",
            "device_type": r["device_type"],
            "smets_version": "SMETS2",
            "image_sha256": r["image_hash"],
            "manufacturer": party(world, "acme"),
            "endorser": party(world, "supplier"),
            "approved_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "panel_ref": "PANEL-2024-01",
            "submitter_ref": "SUB-1",
            "submission_id": "sub-2024-001",
            "evidence": {
                "spreadsheet": sha256(files["sheet.csv"]),
                "request": sha256(files["request.json"]),
                "signatures": [sha256(files["signature.p7s"])],
            },
        }
    # openssl itself agrees that both signatures verify over the exact spreadsheet bytes.
    moved = pub.processed / folder.name
    chain = pub.root.parent / "chain.pem"
    chain.write_bytes((pub.root / "pki" / "iki-root.pem").read_bytes() + (pub.root / "pki" / "ica.pem").read_bytes())
    openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", moved / "signature.p7s", "-content",
        moved / "sheet.csv", "-CAfile", chain, "-purpose", "any", "-out", os.devnull,
    )  # fmt: skip


def test_endorsement_as_separate_p7s(pub: Pub, world: World) -> None:
    folder = pub.submit("sep", [row("S-1")], style="separate")
    (entry,) = accept(pub, folder)
    assert entry["manufacturer"] == party(world, "acme")
    assert entry["endorser"] == party(world, "supplier")
    evidence = entry["evidence"]
    assert isinstance(evidence, dict)
    assert len(evidence["signatures"]) == 2


def test_endorsement_as_rfc5652_countersignature(pub: Pub, world: World) -> None:
    folder = pub.submit("counter", [row("C-1")], style="countersign")
    signed = acms.ContentInfo.load((folder / "signature.p7s").read_bytes())["content"]
    assert len(signed["signer_infos"]) == 1  # only the countersignature carries the endorsement
    (attr,) = signed["signer_infos"][0]["unsigned_attrs"]
    assert attr["type"].dotted == "1.2.840.113549.1.9.6"
    counter_attrs = {a["type"].native for a in attr["values"][0]["signed_attrs"]}
    assert counter_attrs == {"message_digest", "signing_time"}
    (entry,) = accept(pub, folder)
    assert entry["manufacturer"] == party(world, "acme")
    assert entry["endorser"] == party(world, "supplier")


def test_cryptography_pkcs7_builder_two_signers(pub: Pub, world: World) -> None:
    folder = pub.submit("pkcs7", [row("P-1")], style="pkcs7")
    (entry,) = accept(pub, folder)
    assert entry["manufacturer"] == party(world, "acme")
    assert entry["endorser"] == party(world, "supplier")


def test_pem_armoured_signatures(pub: Pub) -> None:
    folder = pub.submit("pem", [row("PEM-1")], style="pem")
    assert (folder / "manufacturer.p7s").read_bytes().startswith(b"-----BEGIN CMS-----")
    accept(pub, folder)


def test_xlsx_spreadsheet(pub: Pub) -> None:
    rows = [row("X-1"), row("X-2", device_type="PPMID")]
    folder = pub.submit("xlsx", rows, sheet_name="submission.xlsx")
    entries = accept(pub, folder, rows=2)
    assert [e["device_model"]["model_id"] for e in entries] == ["X-1", "X-2"]  # type: ignore[index]
    assert entries[1]["device_type"] == "PPMID"


def test_xlsx_integer_cells_read_as_text(pub: Pub) -> None:
    folder = pub.folder("xlsx-int")
    values: dict[str, object] = {**row("I-1"), "manufacturer_id": 1001}
    (folder / "s.xlsx").write_bytes(xlsx_bytes([values]))
    sign_folder(pub.world, folder, folder / "s.xlsx", "acme", "supplier", "resign")
    write_request(folder)
    (entry,) = accept(pub, folder)
    assert entry["device_model"]["manufacturer_id"] == "1001"  # type: ignore[index]


@pytest.mark.parametrize(
    ("overrides", "style"),
    [
        ({"smets_version": "SMETS1"}, "resign"),
        ({"smets_version": "SMETS1", "device_type": "GSME"}, "separate"),
        ({"device_type": "CHF"}, "resign"),
        ({"device_type": "GPF"}, "countersign"),
    ],
    ids=["smets1-esme", "smets1-gsme-separate", "chf", "gpf-countersigned"],
)
def test_dcc_endorsement_for_smets1_and_comms_hubs(
    pub: Pub, world: World, overrides: dict[str, str], style: str
) -> None:
    folder = pub.submit("dcc", [row("D-1", **overrides)], endorser="dcc", style=style)
    (entry,) = accept(pub, folder)
    assert entry["endorser"] == party(world, "dcc")
    assert entry["smets_version"] == overrides.get("smets_version", "SMETS2")
    assert entry["device_type"] == overrides.get("device_type", "ESME")


def test_mixed_submission_endorsed_by_supplier_and_dcc(pub: Pub, world: World) -> None:
    folder = pub.folder("mixed")
    sheet = folder / "sheet.csv"
    sheet.write_bytes(csv_bytes([row("MX-1"), row("MX-2", device_type="CHF")]))
    cms_sign(sheet, world["acme"], folder / "m.p7s")
    cms_resign(folder / "m.p7s", sheet, world["supplier"], folder / "ms.p7s")
    cms_resign(folder / "ms.p7s", sheet, world["dcc"], folder / "signature.p7s")
    (folder / "m.p7s").unlink()
    (folder / "ms.p7s").unlink()
    write_request(folder)
    esme, chf = accept(pub, folder, rows=2)
    assert esme["endorser"] == party(world, "supplier")
    assert chf["endorser"] == party(world, "dcc")


@pytest.mark.parametrize(
    ("signer", "options"),
    [
        ("acme-rsa", ()),
        ("acme-rsa", ("-keyopt", "rsa_padding_mode:pss")),
        ("acme", ("-keyid",)),
    ],
    ids=["rsa-pkcs1v15", "rsa-pss", "subject-key-identifier"],
)
def test_other_signature_forms(pub: Pub, world: World, signer: str, options: tuple[str, ...]) -> None:
    folder = pub.folder("forms")
    sheet = folder / "sheet.csv"
    sheet.write_bytes(csv_bytes([row("FORM-1")]))
    cms_sign(sheet, world[signer], folder / "manufacturer.p7s", False, *options)
    cms_sign(sheet, world["supplier"], folder / "endorsement.p7s", False, *[o for o in options if o == "-keyid"])
    write_request(folder)
    (entry,) = accept(pub, folder)
    assert entry["manufacturer"]["certificate_sha256"] == world[signer].fingerprint  # type: ignore[index]


def signer_serials(der: bytes) -> list[int]:
    signed = acms.ContentInfo.load(der)["content"]
    return [si["sid"].chosen["serial_number"].native for si in signed["signer_infos"]]


def test_roles_come_from_certificates_not_signer_order_openssl(pub: Pub, world: World) -> None:
    folder = pub.folder("order")
    sheet = folder / "sheet.csv"
    sheet.write_bytes(csv_bytes([row("O-1")]))
    cms_sign(sheet, world["supplier"], folder / "first.p7s")
    cms_resign(folder / "first.p7s", sheet, world["acme"], folder / "signature.p7s")
    (folder / "first.p7s").unlink()
    write_request(folder)
    (entry,) = accept(pub, folder)
    assert entry["manufacturer"] == party(world, "acme")
    assert entry["endorser"] == party(world, "supplier")


@pytest.mark.parametrize("first", ["supplier", "acme"])
def test_roles_come_from_certificates_whichever_signer_info_comes_first(pub: Pub, world: World, first: str) -> None:
    """SignerInfos are a DER SET OF, sorted by their encodings (whose lengths vary with the ECDSA signatures),
    so signing again until the wanted SignerInfo comes first makes both orders."""
    sheet = csv_bytes([row("O-2")])
    signers = [world["acme"], world["supplier"]]
    for _ in range(500):
        der = pkcs7_sign(sheet, signers)
        if signer_serials(der)[0] == world[first].cert.serial_number:
            break
    else:
        pytest.fail(f"no signature with the {first} SignerInfo first")
    folder = pub.folder("order")
    (folder / "sheet.csv").write_bytes(sheet)
    (folder / "signature.p7s").write_bytes(der)
    write_request(folder)
    (entry,) = accept(pub, folder)
    assert entry["manufacturer"] == party(world, "acme")
    assert entry["endorser"] == party(world, "supplier")


def test_uppercase_hash_is_logged_lowercase(pub: Pub) -> None:
    h = image_hash("upper")
    (entry,) = accept(pub, pub.submit("upper", [row("U-1", image_hash=h.upper())]))
    assert entry["image_sha256"] == h


def test_replacement_after_investigation(pub: Pub) -> None:
    (first,) = accept(pub, pub.submit("a-first", [row("RP-1")]))
    request = {**GOOD_REQUEST, "replacements": [{"replaces_index": 0, "investigation_ref": "INV-2024-17"}]}
    folder = pub.submit("b-replacement", [row("RP-1", image_hash=image_hash("RP-1 v2"))], request=request)
    (entry,) = accept(pub, folder)
    assert entry["replaces"] == {"index": 0, "investigation_ref": "INV-2024-17"}
    assert entry["image_sha256"] == image_hash("RP-1 v2")
    assert entry["device_model"] == first["device_model"]
    # The replacement is now current: replacing it again must name index 1.
    request = {**GOOD_REQUEST, "replacements": [{"replaces_index": 1, "investigation_ref": "INV-2024-18"}]}
    folder = pub.submit("c-again", [row("RP-1", image_hash=image_hash("RP-1 v3"))], request=request)
    (entry,) = accept(pub, folder)
    assert entry["replaces"] == {"index": 1, "investigation_ref": "INV-2024-18"}


def test_two_submissions_for_one_model_in_one_run(pub: Pub) -> None:
    pub.submit("a", [row("TWO-1")])
    pub.submit("b", [row("TWO-1", image_hash=image_hash("other"))])
    pub.submit("c", [row("TWO-1")])
    report = pub.run()
    assert report.accepted == {"a": [0]}
    assert set(report.rejected) == {"b", "c"}
    assert "Z4.3b-replacement-ref" in checks_of(pub.inbox / "b")
    assert "Z4.3b-not-current" in checks_of(pub.inbox / "c")
    assert pub.log_size() == 1


def test_formula_like_text_in_csv_is_kept_as_text(pub: Pub) -> None:
    hyperlink = '=HYPERLINK("http://evil.example/x","click")'
    r = row("-M1", manufacturer_name=hyperlink, hardware_version="+44", firmware_version="@SUM(A1:A9)")
    (entry,) = accept(pub, pub.submit("formula-text", [r]))
    assert entry["manufacturer_name"] == hyperlink
    assert entry["device_model"] == {
        "manufacturer_id": "1001",
        "model_id": "-M1",
        "hardware_version": "+44",
        "firmware_version": "@SUM(A1:A9)",
    }


def test_control_and_bidi_characters_are_stripped(pub: Pub) -> None:
    r = row("M\x1b[31mX\u200b", manufacturer_name="\u202eAcme\u202c Meters\x07\u2066", hardware_version="\tHW\x7f1")
    (entry,) = accept(pub, pub.submit("bidi", [r]))
    assert entry["manufacturer_name"] == "Acme Meters"
    assert entry["device_model"]["model_id"] == "M[31mX"  # type: ignore[index]
    assert entry["device_model"]["hardware_version"] == "HW1"  # type: ignore[index]

    def strings(value: object) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    for s in strings(entry):
        assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in s), s


def test_check_submission_cli_changes_nothing(pub: Pub, capsys: pytest.CaptureFixture[str]) -> None:
    accept(pub, pub.submit("a-logged", [row("CLI-0")]))
    good = pub.submit("good", [row("CLI-1")])
    rows = [row("CLI-2", image_hash="abc"), row("CLI-3"), row("CLI-4", device_type="TOASTER")]
    bad = pub.submit("bad", rows, endorser=None)
    request = {**GOOD_REQUEST, "replacements": [{"replaces_index": 0, "investigation_ref": "INV-1"}]}
    replacing = pub.submit("replacing", [row("CLI-0", image_hash=image_hash("CLI-0b"))], request=request)
    before, size = tree_state(pub.root), pub.log_size()

    assert main(["check-submission", "--dir", str(pub.root), str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK: 1 associations would be logged:" in out
    assert f"  1001/CLI-1/HW1.0/FW2.3 (ESME, SMETS2): {image_hash('CLI-1')}" in out
    # who signed, in which role, with which certificate and when: what SECAS decides on
    acme, supplier = pub.world["acme"], pub.world["supplier"]
    assert f"  Manufacturer: Acme Meters (ID 1001), certificate {acme.fingerprint}, signed 20" in out
    assert f"  Supplier: Bright Energy Supply (ID 2001), certificate {supplier.fingerprint}, signed 20" in out
    assert main(["check-submission", "--dir", str(pub.root), str(replacing)]) == 0
    assert ", REPLACING log index 0 (investigation INV-1)" in capsys.readouterr().out
    assert main(["check-submission", "--dir", str(pub.root), str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("REJECTED")
    for check in ("Z4.2-row-values", "Z4.2-row-values", "MP168-supplier-endorsement"):
        assert check in out
    assert main(["--json", "check-submission", "--dir", str(pub.root), str(bad)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["accepted"] is False
    assert {"Z4.2-row-values", "MP168-supplier-endorsement"} <= {f["rule"] for f in summary["findings"]}

    assert tree_state(pub.root) == before
    assert pub.log_size() == size
    assert not (bad / "rejection.json").exists()


# -- rejected and skipped ----------------------------------------------------------------------------


def resubmit_files(pub: Pub, folder: Path, rows: list[dict[str, str]]) -> None:
    """Replace the spreadsheet and signatures of a folder (the submitter fixed it)."""
    for p in folder.glob("*.p7s"):
        p.unlink()
    pub.submit(folder.name, rows)


@pytest.mark.parametrize(
    "breakage",
    ["row", "signature", "folder"],
    ids=["bad-row", "missing-endorsement", "missing-request-json"],
)
def test_unchanged_rejection_is_skipped_then_rechecked_after_a_fix(pub: Pub, breakage: str) -> None:
    good = [row("SK-1")]
    if breakage == "row":
        folder = pub.submit("skip", [row("SK-1", image_hash="not-a-hash")])
    elif breakage == "signature":
        folder = pub.submit("skip", good, endorser=None)
    else:
        folder = pub.submit("skip", good)
        (folder / "request.json").unlink()
    first = pub.run()
    assert set(first.rejected) == {"skip"}
    report_json, report_txt = (folder / "rejection.json").read_bytes(), (folder / "rejection.txt").read_bytes()
    stamps = (folder / "rejection.json").stat().st_mtime_ns, (folder / "rejection.txt").stat().st_mtime_ns

    later = publication.now_utc() + dt.timedelta(hours=1)
    again = pub.run(now=later)
    assert again.skipped == ["skip"]
    assert again.rejected == {}
    assert (folder / "rejection.json").read_bytes() == report_json
    assert (folder / "rejection.txt").read_bytes() == report_txt
    assert ((folder / "rejection.json").stat().st_mtime_ns, (folder / "rejection.txt").stat().st_mtime_ns) == stamps

    resubmit_files(pub, folder, good)
    write_request(folder)
    report = pub.run()
    assert report.accepted == {"skip": [0]}
    assert (pub.processed / "skip").is_dir()


@pytest.mark.parametrize("extra", ["subfolder", "symlink"])
def test_removing_an_unexpected_entry_is_rechecked(pub: Pub, extra: str) -> None:
    """A submission refused for an extra sub-folder or symlink is fixed by removing it; the next run must
    check it again (the rejection's input digests must cover every entry, not only regular files)."""
    folder = pub.submit("extra", [row("XE-1")])
    entry = folder / ("attachments" if extra == "subfolder" else "copy.csv")
    if extra == "subfolder":
        entry.mkdir()
    else:
        entry.symlink_to(folder / "sheet.csv")
    assert set(pub.run().rejected) == {"extra"}
    assert ("Z4.2-folder" if extra == "subfolder" else "Z4.2-no-links") in checks_of(folder)
    if extra == "subfolder":
        entry.rmdir()
    else:
        entry.unlink()
    report = pub.run()
    assert report.skipped == []
    assert report.accepted == {"extra": [0]}


def test_refusal_for_a_stale_crl_is_rechecked_after_the_crls_are_refreshed(pub: Pub) -> None:
    later = publication.now_utc() + dt.timedelta(days=8)  # the issuing ICA's 7-day CRL has expired
    folder = pub.submit("stale", [row("ST-1")])
    assert set(pub.run(now=later).rejected) == {"stale"}
    assert "P-current-crl" in checks_of(folder)
    crl_publish.refresh(pub.config, now=later)
    assert pub.run(now=later).accepted == {"stale": [0]}


def test_changed_request_alone_is_rechecked(pub: Pub) -> None:
    folder = pub.submit("req", [row("RQ-1")], request={"submitter_ref": "SUB-1"})
    assert set(pub.run().rejected) == {"req"}
    assert "Z4.2-request" in checks_of(folder)
    write_request(folder)
    assert pub.run().accepted == {"req": [0]}


# -- refused: every check by name --------------------------------------------------------------------

Build = Callable[[Pub], Path]
CASES: list[object] = []


def case(name: str, *checks: str, absent: tuple[str, ...] = ()) -> Callable[[Build], Build]:
    """Register a bad submission: ``checks`` must all be reported, ``absent`` must not be."""

    def register(build: Build) -> Build:
        CASES.append(pytest.param(build, frozenset(checks), frozenset(absent), id=name))
        return build

    return register


def three(bad: dict[str, str]) -> list[dict[str, str]]:
    """Two good rows around a bad one: all or nothing."""
    return [row("GOOD-A"), bad, row("GOOD-C")]


def p7s(folder: Path, name: str = "signature.p7s") -> Path:
    return folder / name


def log_first(pub: Pub, model: str = "EX-1") -> None:
    """Log a first association for ``model`` (index 0)."""
    pub.submit("a-first", [row(model)])
    assert pub.run().accepted == {"a-first": [0]}


@case("tampered-spreadsheet", "Z4.1-signature", "Z4.1-manufacturer-signature")
def tampered(pub: Pub) -> Path:
    folder = pub.submit("s", [row("T-1")])
    (folder / "sheet.csv").write_bytes(csv_bytes([row("T-1", image_hash=image_hash("evil"))]))
    return folder


@case("tampered-one-byte-appended", "Z4.1-signature")
def tampered_byte(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("T-2")))
    with (folder / "sheet.csv").open("ab") as f:
        f.write(b"\n")
    return folder


@case("untrusted-ca-manufacturer", "Z4.3a-certificate")
def untrusted_m(pub: Pub) -> Path:
    return pub.submit("s", three(row("U-1")), manufacturer="acme-untrusted")


@case("untrusted-ca-endorser", "Z4.3a-certificate")
def untrusted_e(pub: Pub) -> Path:
    return pub.submit("s", three(row("U-2")), endorser="supplier-untrusted", style="separate")


@case("untrusted-ca-dcc", "Z4.3a-certificate")
def untrusted_dcc(pub: Pub) -> Path:
    return pub.submit("s", [row("U-3", smets_version="SMETS1")], endorser="dcc-untrusted")


@case("expired-manufacturer", "Z4.3a-certificate")
def expired_m(pub: Pub) -> Path:
    return pub.submit("s", three(row("E-1")), manufacturer="acme-expired")


@case("expired-endorser", "Z4.3a-certificate")
def expired_e(pub: Pub) -> Path:
    return pub.submit("s", three(row("E-2")), endorser="supplier-expired")


@case("expired-dcc-countersignature", "Z4.3a-certificate")
def expired_dcc(pub: Pub) -> Path:
    return pub.submit("s", [row("E-3", device_type="CHF")], endorser="dcc-expired", style="countersign")


@case("not-yet-valid-manufacturer", "Z4.3a-certificate")
def notyet_m(pub: Pub) -> Path:
    return pub.submit("s", three(row("N-1")), manufacturer="acme-notyet")


@case("not-yet-valid-endorser", "Z4.3a-certificate")
def notyet_e(pub: Pub) -> Path:
    return pub.submit("s", three(row("N-2")), endorser="supplier-notyet", style="pkcs7")


@case("revoked-manufacturer", "Z4.3a-certificate")
def revoked_m(pub: Pub) -> Path:
    return pub.submit("s", three(row("V-1")), manufacturer="acme-revoked")


@case("revoked-endorser", "Z4.3a-certificate")
def revoked_e(pub: Pub) -> Path:
    return pub.submit("s", three(row("V-2")), endorser="supplier-revoked")


@case("revoked-dcc", "Z4.3a-certificate")
def revoked_dcc(pub: Pub) -> Path:
    return pub.submit("s", [row("V-3", smets_version="SMETS1")], endorser="dcc-revoked", style="separate")


@case("revoked-endorser-countersignature", "Z4.3a-certificate")
def revoked_counter(pub: Pub) -> Path:
    return pub.submit("s", three(row("V-4")), endorser="supplier-revoked", style="countersign")


@case("manufacturer-of-another-organisation", "Z4.3a-image-creator")
def other_org(pub: Pub) -> Path:
    return pub.submit("s", three(row("O-1")), manufacturer="other")


@case("missing-endorsement", "MP168-supplier-endorsement")
def no_endorsement(pub: Pub) -> Path:
    return pub.submit("s", three(row("M-1")), endorser=None)


@case("endorsement-by-a-manufacturer", "MP168-supplier-endorsement")
def manufacturer_endorses(pub: Pub) -> Path:
    return pub.submit("s", three(row("M-2")), endorser="other")


@case("supplier-signs-alone", "Z4.1-manufacturer-signature")
def supplier_alone(pub: Pub) -> Path:
    return pub.submit("s", three(row("M-3")), manufacturer="supplier", endorser=None)


@case("smets1-endorsed-by-supplier", "Z4.3c-dcc-endorsement")
def smets1_supplier(pub: Pub) -> Path:
    return pub.submit("s", three(row("S1-1", smets_version="SMETS1")))


@case("smets1-without-endorsement", "Z4.3c-dcc-endorsement")
def smets1_alone(pub: Pub) -> Path:
    return pub.submit("s", [row("S1-2", smets_version="SMETS1")], endorser=None)


@case("chf-endorsed-by-supplier", "MP168-dcc-endorsement")
def chf_supplier(pub: Pub) -> Path:
    return pub.submit("s", three(row("CH-1", device_type="CHF")))


@case("gpf-endorsed-by-supplier", "MP168-dcc-endorsement")
def gpf_supplier(pub: Pub) -> Path:
    return pub.submit("s", three(row("CH-2", device_type="GPF")), style="countersign")


@case("chf-without-endorsement", "MP168-dcc-endorsement")
def chf_alone(pub: Pub) -> Path:
    return pub.submit("s", [row("CH-3", device_type="CHF")], endorser=None)


@case("endorsed-by-the-manufacturers-own-supplier-certificate", "MP168-independent-endorsement")
def self_endorsed(pub: Pub) -> Path:
    return pub.submit("s", [row("SE-1")], endorser="acme-supplier")


@case("esme-endorsed-by-dcc-only", "MP168-supplier-endorsement")
def esme_dcc(pub: Pub) -> Path:
    return pub.submit("s", [row("CH-4")], endorser="dcc")


@case("signing-time-60-days-ahead", "Z4.3a-signing-time")
def future_signing_time(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("FT-1")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    ahead = acms.Time({"utc_time": publication.now_utc() + dt.timedelta(days=60)})
    f.write_bytes(edit_signed_attrs(f.read_bytes(), pub.world["acme"], set_attr("signing_time", ahead)))
    return folder


def test_a_signing_time_within_the_configured_skew_is_accepted(pub: Pub) -> None:
    folder = pub.submit("skew", [row("FT-2")], style="separate")
    f = p7s(folder, "manufacturer.p7s")
    ahead = acms.Time({"utc_time": publication.now_utc() + dt.timedelta(minutes=2)})  # default skew: 300 s
    f.write_bytes(edit_signed_attrs(f.read_bytes(), pub.world["acme"], set_attr("signing_time", ahead)))
    assert pub.run().accepted == {"skew": [0]}


@case("wrong-message-digest", "Z4.1-signature", "Z4.1-manufacturer-signature")
def wrong_digest(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("MD-1")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    wrong = hashlib.sha256(b"another spreadsheet").digest()
    f.write_bytes(edit_signed_attrs(f.read_bytes(), pub.world["acme"], set_attr("message_digest", wrong)))
    return folder


@case("wrong-message-digest-second-signer", "Z4.1-signature")
def wrong_digest_resigned(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("MD-2")))
    f = p7s(folder)
    wrong = hashlib.sha256(b"x").digest()
    edit = set_attr("message_digest", wrong)
    f.write_bytes(edit_signed_attrs(f.read_bytes(), pub.world["supplier"], edit))
    return folder


@case("missing-message-digest", "Z4.2-cms-profile", absent=("Z4.1-signature",))
def missing_digest(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("MD-3")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    f.write_bytes(edit_signed_attrs(f.read_bytes(), pub.world["acme"], drop_attr("message_digest")))
    return folder


@case("wrong-content-type-attribute", "Z4.2-cms-profile", absent=("Z4.1-signature",))
def wrong_content_type(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("CT-1")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    f.write_bytes(edit_signed_attrs(f.read_bytes(), pub.world["acme"], set_attr("content_type", "signed_data")))
    return folder


@case("missing-content-type-attribute", "Z4.2-cms-profile", absent=("Z4.1-signature",))
def missing_content_type(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("CT-2")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    f.write_bytes(edit_signed_attrs(f.read_bytes(), pub.world["acme"], drop_attr("content_type")))
    return folder


@case("encapsulated-content-type-not-data", "Z4.2-cms-profile")
def encap_type(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("CT-3")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    info = acms.ContentInfo.load(f.read_bytes())
    signed = info["content"]
    signed["encap_content_info"] = {"content_type": "signed_data"}
    f.write_bytes(acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())
    return folder


@case("countersignature-with-content-type", "Z4.2-cms-profile")
def counter_content_type(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("CT-4")), style="countersign")
    f = p7s(folder)
    info = acms.ContentInfo.load(f.read_bytes())
    si = info["content"]["signer_infos"][0]
    counter = si["unsigned_attrs"][0]["values"][0]
    attrs = acms.CMSAttributes(
        [*counter["signed_attrs"], acms.CMSAttribute({"type": "content_type", "values": ["data"]})]
    )
    counter["signed_attrs"] = attrs
    counter["signature"] = ecdsa_sign(pub.world["supplier"].key, attrs.dump())
    f.write_bytes(info.dump(force=False))
    return folder


@case("countersignature-over-another-signature", "Z4.1-signature")
def counter_wrong_target(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("CT-5")), style="countersign")
    f = p7s(folder)
    info = acms.ContentInfo.load(f.read_bytes())
    counter = info["content"]["signer_infos"][0]["unsigned_attrs"][0]["values"][0]
    edit = set_attr("message_digest", hashlib.sha256(b"some other signature").digest())
    attrs = acms.CMSAttributes(edit(list(counter["signed_attrs"])))
    counter["signed_attrs"] = attrs
    counter["signature"] = ecdsa_sign(pub.world["supplier"].key, attrs.dump())
    f.write_bytes(info.dump())
    return folder


@case("signature-bytes-altered", "Z4.1-signature")
def altered_signature(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("SG-1")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    info = acms.ContentInfo.load(f.read_bytes())
    si = info["content"]["signer_infos"][0]
    other = pub.world["other"].key  # a valid ECDSA signature, by the wrong key
    si["signature"] = ecdsa_sign(other, b"\x31" + si["signed_attrs"].dump()[1:])
    f.write_bytes(info.dump())
    return folder


@case("signed-attributes-absent", "Z4.2-cms-profile")
def noattr(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("SG-2")), endorser=None)
    cms_sign(folder / "sheet.csv", pub.world["supplier"], folder / "endorsement.p7s")
    cms_sign(folder / "sheet.csv", pub.world["acme"], folder / "manufacturer.p7s", False, "-noattr")
    return folder


@case("sha1-digest", "Z4.2-cms-profile")
def sha1(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("SG-3")), endorser=None)
    cms_sign(folder / "sheet.csv", pub.world["supplier"], folder / "endorsement.p7s")
    openssl(
        "cms", "-sign", "-binary", "-md", "sha1", "-outform", "DER", "-in", folder / "sheet.csv",
        "-signer", pub.world["acme"].cert_path, "-inkey", pub.world["acme"].key_path,
        "-out", folder / "manufacturer.p7s",
    )  # fmt: skip
    return folder


@case("signer-certificate-not-included", "Z4.2-cms-profile")
def nocerts(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("SG-4")), endorser=None)
    cms_sign(folder / "sheet.csv", pub.world["supplier"], folder / "endorsement.p7s")
    cms_sign(folder / "sheet.csv", pub.world["acme"], folder / "manufacturer.p7s", False, "-nocerts")
    return folder


@case("truncated-p7s", "Z4.2-cms-profile")
def truncated(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("P-1")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    f.write_bytes(f.read_bytes()[:-40])
    return folder


@case("garbage-p7s", "Z4.2-cms-profile")
def garbage(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("P-2")), style="separate")
    p7s(folder, "manufacturer.p7s").write_bytes(os.urandom(700))
    return folder


@case("empty-p7s", "Z4.2-cms-profile")
def empty_p7s(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("P-3")), style="separate")
    p7s(folder, "manufacturer.p7s").write_bytes(b"")
    return folder


@case("bad-pem-armour", "Z4.2-cms-profile")
def bad_pem(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("P-4")), style="pem")
    p7s(folder, "manufacturer.p7s").write_bytes(b"-----BEGIN CMS-----\n!!!not base64!!!\n-----END CMS-----\n")
    return folder


@case("attached-signature", "Z4.2-cms-profile", "Z4.1-manufacturer-signature")
def attached(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("P-5")), endorser=None)
    cms_sign(folder / "sheet.csv", pub.world["supplier"], folder / "endorsement.p7s")
    cms_sign(folder / "sheet.csv", pub.world["acme"], folder / "manufacturer.p7s", False, "-nodetach")
    return folder


@case("not-signed-data", "Z4.2-cms-profile")
def not_signed_data(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("P-6")), style="separate")
    data = acms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()
    p7s(folder, "manufacturer.p7s").write_bytes(data)
    return folder


@case("hash-63-digits", "Z4.2-row-values")
def hash63(pub: Pub) -> Path:
    return pub.submit("s", three(row("H-1", image_hash=image_hash("x")[:63])))


@case("hash-65-digits", "Z4.2-row-values")
def hash65(pub: Pub) -> Path:
    return pub.submit("s", three(row("H-2", image_hash=image_hash("x") + "0")))


@case("hash-not-hex", "Z4.2-row-values")
def hash_nonhex(pub: Pub) -> Path:
    return pub.submit("s", three(row("H-3", image_hash="g" + image_hash("x")[1:])))


@case("hash-with-spaces", "Z4.2-row-values")
def hash_spaces(pub: Pub) -> Path:
    h = image_hash("x")
    return pub.submit("s", three(row("H-4", image_hash=f"{h[:32]} {h[32:63]}")))


@case("duplicate-rows", "Z4.2-row-values")
def duplicate_rows(pub: Pub) -> Path:
    return pub.submit("s", [row("DR-1"), row("DR-2"), row("DR-1", image_hash=image_hash("again"))])


@case("unknown-device-type", "Z4.2-row-values")
def device_type(pub: Pub) -> Path:
    return pub.submit("s", three(row("DT-1", device_type="TOASTER")))


@case("bad-smets-version", "Z4.2-row-values")
def smets(pub: Pub) -> Path:
    return pub.submit("s", three(row("SV-1", smets_version="SMETS3")))


@case("missing-value", "Z4.2-row-values")
def missing_value(pub: Pub) -> Path:
    return pub.submit("s", three(row("MV-1", firmware_version="")))


@case("value-too-long", "Z4.2-row-values")
def too_long(pub: Pub) -> Path:
    return pub.submit("s", three(row("L" * 65)))


@case("existing-model-without-replacement", "Z4.3b-replacement-ref")
def existing(pub: Pub) -> Path:
    log_first(pub, "EX-1")
    return pub.submit("s", [row("EX-1", image_hash=image_hash("EX-1 v2")), row("EX-NEW")])


@case("replacement-names-wrong-index", "Z4.3b-replacement-index", "Z4.3b-replacement-ref")
def wrong_index(pub: Pub) -> Path:
    log_first(pub, "EX-2")
    request = {**GOOD_REQUEST, "replacements": [{"replaces_index": 7, "investigation_ref": "INV-1"}]}
    return pub.submit("s", [row("EX-2", image_hash=image_hash("EX-2 v2"))], request=request)


@case("replacement-of-unrelated-model", "Z4.3b-replacement-index")
def unrelated_index(pub: Pub) -> Path:
    log_first(pub, "EX-3")
    request = {**GOOD_REQUEST, "replacements": [{"replaces_index": 0, "investigation_ref": "INV-1"}]}
    return pub.submit("s", [row("EX-OTHER")], request=request)


@case("replacement-without-investigation-ref", "Z4.2-request")
def no_investigation(pub: Pub) -> Path:
    log_first(pub, "EX-4")
    request = {**GOOD_REQUEST, "replacements": [{"replaces_index": 0}]}
    return pub.submit("s", [row("EX-4", image_hash=image_hash("EX-4 v2"))], request=request)


@case("replacement-with-empty-investigation-ref", "Z4.2-request")
def empty_investigation(pub: Pub) -> Path:
    log_first(pub, "EX-5")
    request = {**GOOD_REQUEST, "replacements": [{"replaces_index": 0, "investigation_ref": " "}]}
    return pub.submit("s", [row("EX-5", image_hash=image_hash("EX-5 v2"))], request=request)


@case("duplicate-of-logged-hash", "Z4.3b-not-current")
def duplicate_hash(pub: Pub) -> Path:
    log_first(pub, "EX-6")
    return pub.submit("s", [row("EX-6"), row("EX-6B")])


@case("xlsx-random-bytes", "Z4.2-spreadsheet")
def xlsx_random(pub: Pub) -> Path:
    return pub.submit("s", sheet=os.urandom(4096), sheet_name="sheet.xlsx")


@case("xlsx-zip-signature-but-not-zip", "Z4.2-spreadsheet")
def xlsx_pk(pub: Pub) -> Path:
    return pub.submit("s", sheet=b"PK\x03\x04" + os.urandom(4096), sheet_name="sheet.xlsx")


@case("xlsx-zip-without-workbook", "Z4.2-spreadsheet")
def xlsx_no_workbook(pub: Pub) -> Path:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("hello.txt", "not a workbook")
    return pub.submit("s", sheet=out.getvalue(), sheet_name="sheet.xlsx")


@case("csv-with-nul-bytes", "Z4.2-spreadsheet")
def csv_nul(pub: Pub) -> Path:
    return pub.submit("s", sheet=csv_bytes(three(row("NUL\x00-1"))))


@case("csv-invalid-utf8", "Z4.2-spreadsheet")
def csv_latin1(pub: Pub) -> Path:
    return pub.submit("s", sheet=csv_bytes(three(row("BAD-1"))).replace(b"BAD-1", b"BAD\xff\xfe-1"))


@case("csv-binary-garbage", "Z4.2-spreadsheet")
def csv_garbage(pub: Pub) -> Path:
    return pub.submit("s", sheet=b"\x89PNG\r\n\x1a\n\x00\x00" + os.urandom(2000))


@case("spreadsheet-wrong-extension", "Z4.2-folder")
def wrong_extension(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("EXT-1")))
    (folder / "sheet.csv").rename(folder / "sheet.ods")
    return folder


@case("xlsx-zip-bomb", "Z4.2-spreadsheet")
def zip_bomb(pub: Pub) -> Path:
    data = rewrite_zip(xlsx_bytes(three(row("ZB-1"))), {}, {"xl/media/image1.bin": bytes(60 * 1024 * 1024)})
    assert len(data) < 200_000
    return pub.submit("s", sheet=data, sheet_name="sheet.xlsx")


@case("xlsx-zip-bomb-in-worksheet", "Z4.2-spreadsheet")
def zip_bomb_sheet(pub: Pub) -> Path:
    x = xlsx_bytes(three(row("ZB-2")))
    body = zipfile.ZipFile(io.BytesIO(x)).read("xl/worksheets/sheet1.xml")
    padded = body.replace(b"<sheetData>", b"<sheetData>" + b" " * (8 * 1024 * 1024), 1)
    return pub.submit("s", sheet=rewrite_zip(x, {"xl/worksheets/sheet1.xml": padded}), sheet_name="sheet.xlsx")


@case("xlsx-too-many-members", "Z4.2-spreadsheet")
def zip_members(pub: Pub) -> Path:
    extra = {f"xl/media/m{i}.bin": b"x" for i in range(250)}
    return pub.submit("s", sheet=rewrite_zip(xlsx_bytes(three(row("ZB-3"))), {}, extra), sheet_name="sheet.xlsx")


BILLION_LAUGHS = (
    b'<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%s;" % (b"" if i == 1 else b"%d" % (i - 1)) for _ in range(10)))
        for i in range(1, 10)
    )
    + b"]>"
)


def with_dtd(xml: bytes) -> bytes:
    """The billion laughs DTD inserted before the root element (after any XML declaration)."""
    at = xml.index(b"?>") + 2 if xml.startswith(b"<?xml") else 0
    return xml[:at] + BILLION_LAUGHS + xml[at:]


def laughs_in(member: str, model: str) -> Build:
    """An otherwise valid .xlsx whose ``member`` declares the billion laughs entities and uses the last one."""

    def build(pub: Pub) -> Path:
        x = xlsx_bytes(three(row(model)))
        body = zipfile.ZipFile(io.BytesIO(x)).read(member)
        if member.endswith("sheet1.xml"):
            cell = b'<row r="9"><c r="A9" t="inlineStr"><is><t>&lol9;</t></is></c></row>'
            body = body.replace(b"</sheetData>", cell + b"</sheetData>")
        elif member.endswith("workbook.xml"):
            body = body.replace(b'name="Sheet"', b'name="&lol9;"')
        assert body.count(b"&lol9;") == (0 if member.endswith(".rels") else 1)
        return pub.submit("s", sheet=rewrite_zip(x, {member: with_dtd(body)}), sheet_name="sheet.xlsx")

    return build


case("xlsx-billion-laughs-in-worksheet", "Z4.2-spreadsheet")(laughs_in("xl/worksheets/sheet1.xml", "BL-1"))
case("xlsx-billion-laughs-in-workbook", "Z4.2-spreadsheet")(laughs_in("xl/workbook.xml", "BL-2"))
case("xlsx-entities-in-workbook-rels", "Z4.2-spreadsheet")(laughs_in("xl/_rels/workbook.xml.rels", "BL-3"))


@case("xlsx-formula-cell", "Z4.2-row-values")
def formula_cell(pub: Pub) -> Path:
    return pub.submit("s", three(row("=1+1")), sheet_name="sheet.xlsx")


@case("xlsx-formula-cell-in-hash", "Z4.2-row-values")
def formula_hash(pub: Pub) -> Path:
    return pub.submit("s", three(row("FH-1", image_hash='=REPT("a",64)')), sheet_name="sheet.xlsx")


@case("xlsx-number-cell", "Z4.2-row-values")
def number_cell(pub: Pub) -> Path:
    folder = pub.folder("s")
    values: list[Mapping[str, object]] = [row("GOOD-A"), {**row("NC-1"), "hardware_version": 1.5}]
    (folder / "sheet.xlsx").write_bytes(xlsx_bytes(values))
    sign_folder(pub.world, folder, folder / "sheet.xlsx", "acme", "supplier", "resign")
    write_request(folder)
    return folder


@case("oversized-spreadsheet", "Z4.2-folder")
def big_sheet(pub: Pub) -> Path:
    sheet = csv_bytes(three(row("BIG-1"))) + b"\r\n" * (5 * 1024 * 1024)
    return pub.submit("s", sheet=sheet)


@case("oversized-p7s", "Z4.2-folder")
def big_p7s(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("BP-1")), style="separate")
    f = p7s(folder, "manufacturer.p7s")
    f.write_bytes(f.read_bytes() + bytes(256 * 1024))
    return folder


@case("oversized-request-json", "Z4.2-folder")
def big_request(pub: Pub) -> Path:
    request = {**GOOD_REQUEST, "submitter_ref": "x" * (17 * 1024)}
    return pub.submit("s", three(row("BR-1")), request=request)


@case("missing-request-json", "Z4.2-folder")
def no_request(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("RJ-1")))
    (folder / "request.json").unlink()
    return folder


@case("request-not-json", "Z4.2-request")
def request_not_json(pub: Pub) -> Path:
    return pub.submit("s", three(row("RJ-2")), request=b"panel_ref = PANEL-1\n")


@case("request-json-not-an-object", "Z4.2-request")
def request_list(pub: Pub) -> Path:
    return pub.submit("s", three(row("RJ-3")), request=b'["PANEL-1"]')


@case("request-missing-panel-ref", "Z4.2-request")
def request_no_panel(pub: Pub) -> Path:
    return pub.submit("s", three(row("RJ-4")), request={"submitter_ref": "SUB-1"})


@case("request-unknown-field", "Z4.2-request")
def request_unknown(pub: Pub) -> Path:
    return pub.submit("s", three(row("RJ-5")), request={**GOOD_REQUEST, "approved": True})


@case("request-replaces-index-not-an-integer", "Z4.2-request")
def request_bad_index(pub: Pub) -> Path:
    request = {**GOOD_REQUEST, "replacements": [{"replaces_index": True, "investigation_ref": "INV"}]}
    return pub.submit("s", three(row("RJ-6")), request=request)


@case("no-p7s", "Z4.2-folder")
def no_signature(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("F-1")), style="separate")
    for f in folder.glob("*.p7s"):
        f.unlink()
    return folder


@case("two-spreadsheets", "Z4.2-folder")
def two_sheets(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("F-2")))
    (folder / "other.xlsx").write_bytes(xlsx_bytes(three(row("F-2"))))
    return folder


@case("unexpected-extra-file", "Z4.2-folder")
def extra_file(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("F-3")))
    (folder / "notes.txt").write_text("please approve")
    return folder


@case("subfolder-in-submission", "Z4.2-folder")
def subfolder(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("F-4")))
    (folder / "more").mkdir()
    return folder


@case("symlinked-spreadsheet", "Z4.2-no-links")
def symlinked(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("F-5")))
    real = pub.root.parent / "outside.csv"
    (folder / "sheet.csv").rename(real)
    (folder / "sheet.csv").symlink_to(real)
    return folder


@case("too-many-files", "Z4.2-folder")
def many_files(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("F-6")), style="separate")
    for i in range(12):
        (folder / f"extra{i}.p7s").write_bytes((folder / "manufacturer.p7s").read_bytes())
    return folder


@case("invalid-submission-id", "Z4.2-folder")
def bad_id(pub: Pub) -> Path:
    return pub.submit("bad id!", three(row("F-7")))


@case("rows-name-two-manufacturers", "Z4.1-one-manufacturer")
def two_manufacturers(pub: Pub) -> Path:
    return pub.submit("s", [row("TM-1"), row("TM-2", manufacturer_id="1002", manufacturer_name="Other Mfr")])


@case("rows-name-another-manufacturer", "Z4.3a-image-creator")
def rows_other(pub: Pub) -> Path:
    return pub.submit("s", [row("TM-3", manufacturer_id="1002", manufacturer_name="Other Mfr")])


@case("empty-spreadsheet", "Z4.2-spreadsheet")
def empty_sheet(pub: Pub) -> Path:
    return pub.submit("s", sheet=b"")


@case("blank-lines-only", "Z4.2-spreadsheet")
def blank_sheet(pub: Pub) -> Path:
    return pub.submit("s", sheet=b",,,\r\n\r\n , \r\n")


@case("header-only", "Z4.2-spreadsheet")
def header_only(pub: Pub) -> Path:
    return pub.submit("s", [])


@case("header-only-xlsx", "Z4.2-spreadsheet")
def header_only_xlsx(pub: Pub) -> Path:
    return pub.submit("s", [], sheet_name="sheet.xlsx")


@case("missing-column", "Z4.2-spreadsheet")
def missing_column(pub: Pub) -> Path:
    columns = [c for c in COLUMNS if c != "smets_version"]
    return pub.submit("s", sheet=csv_bytes(three(row("MC-1")), columns))


@case("missing-column-xlsx", "Z4.2-spreadsheet")
def missing_column_xlsx(pub: Pub) -> Path:
    columns = [c for c in COLUMNS if c != "image_hash"]
    return pub.submit("s", sheet=xlsx_bytes(three(row("MC-2")), columns), sheet_name="sheet.xlsx")


@case("too-many-rows", "Z4.2-spreadsheet")
def too_many_rows(pub: Pub) -> Path:
    return pub.submit("s", [row(f"TR-{i}") for i in range(1001)])


@case("stale-crl", "P-current-crl")
def stale_crl(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("CRL-1")))
    meta = json.loads((pub.root / "crl" / "ica.json").read_text())
    assert meta["next_update"]
    return folder


@case("missing-crl", "P-current-crl")
def missing_crl(pub: Pub) -> Path:
    folder = pub.submit("s", three(row("CRL-2")))
    (pub.root / "crl" / "ica.crl").unlink()
    return folder


def run_time(build: Build) -> dt.datetime | None:
    """The intake time for a case (the stale CRL case runs after the issuing ICA's CRL expired)."""
    return publication.now_utc() + dt.timedelta(days=8) if build is stale_crl else None


@pytest.mark.parametrize(("build", "expected", "absent"), CASES)
def test_bad_submission_is_refused_and_nothing_is_logged(
    pub: Pub, build: Build, expected: frozenset[str], absent: frozenset[str]
) -> None:
    folder = build(pub)
    size, entries, evidence = pub.log_size(), pub.raw_entries(), sorted((pub.log_dir).rglob("evidence/*"))
    report = pub.run(now=run_time(build))

    assert report.accepted == {}
    assert set(report.rejected) == {folder.name}
    reported = {f.rule for f in report.rejected[folder.name]}
    assert folder.is_dir() and folder.parent == pub.inbox
    assert not (pub.processed / folder.name).exists()
    checks = checks_of(folder)
    assert checks == reported
    assert expected <= checks, f"expected {sorted(expected)}, got {sorted(checks)}"
    assert not absent & checks, f"unexpected {sorted(absent & checks)} in {sorted(checks)}"
    report_json = rejection(folder)
    assert report_json["status"] == "rejected"
    assert report_json["submission_id"] == folder.name
    text = (folder / "rejection.txt").read_text()
    assert "REJECTED" in text
    for check in expected:
        assert check in text
    assert pub.log_size() == size
    assert pub.raw_entries() == entries
    assert sorted((pub.log_dir).rglob("evidence/*")) == evidence


def pre_check(pub: Pub, folder: Path, now: dt.datetime, tmp: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """``cpl-verify check-submission`` on ``folder``, against the publication's site exported at ``now``."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    site = tmp / "site"
    shutil.rmtree(site, ignore_errors=True)
    export_tree(pub.config, site, stamp)
    trust = tmp / "trust.json"
    trust.write_text(json.dumps(trust_of(pub.config)))
    capsys.readouterr()
    code = verify_main(["check-submission", str(folder), "--trust", str(trust), "--site", str(site), "--json",
                        "--now", stamp])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == code
    return dict(out)


@pytest.mark.parametrize(("build", "expected", "absent"), CASES)
def test_the_manufacturers_pre_check_refuses_by_the_same_rules_as_intake(
    pub: Pub, build: Build, expected: frozenset[str], absent: frozenset[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The verifier's ``check-submission`` (the site's CRLs and log, the verifier's own CMS and chain code)
    and intake (the publisher's CRLs and log) refuse every bad submission by exactly the same rules."""
    folder = build(pub)
    now = run_time(build) or publication.now_utc().replace(microsecond=0)
    out = pre_check(pub, folder, now, tmp_path, capsys)
    pre = {f["rule"] for f in out["result"]["findings"]}
    report = pub.run(now=now)
    assert out["exit_code"] == 1 and out["result"]["verdict"] == "refuse"
    assert pre == {f.rule for f in report.rejected[folder.name]}, out["result"]["findings"]


AUDIT_RULE = re.compile(r"PROBLEM entry \d+: (?:evidence: (?:the signed \S+ breaks )?)?([A-Z][A-Za-z0-9.]*-[a-z0-9-]+)")
ASSOCIATION_RULE_IDS = {rule.id for rule, _ in ASSOCIATION_RULES} | {"Z4.1-one-manufacturer"}
MISSING_PARTY = {"Z4.1-manufacturer-signature", "MP168-supplier-endorsement", "MP168-dcc-endorsement",
                 "Z4.3c-dcc-endorsement"}  # fmt: skip


def force_log(pub: Pub, folder: Path, now: dt.datetime) -> bool:
    """Log what a careless publisher would have logged for a refused submission: every row, vouched for by
    every signer whose signature verifies, whatever their certificates. False if nothing can be logged."""
    try:
        files = read_submission(folder)
    except SubmissionError:
        return False
    request, rows, _ = submission_inputs(files)

    def identify(cert: x509.Certificate) -> VIdentity:
        who = identity(cert, pub.config.profile)
        return VIdentity(who.organisation, who.organisation_id, who.role)

    signers, _ = submission_signers(files, identify, lambda signer, extra: [], now, MAX_SIGNING_SKEW)
    index = AssociationIndex.from_entries(pub.raw_entries())

    def current_of(model: tuple[str, str, str, str]) -> tuple[int, str] | None:
        held = index.current.get(model)
        return (held.index, held.image_hash) if held else None

    _, associations = judge_rows(rows, signers, request, current_of, now, MAX_SIGNING_SKEW)
    if request is None or not associations or any(a.manufacturer is None or a.endorser is None for a in associations):
        return False
    digests = files.digests()
    entries = [canonical_json(association_entry(a, now, request, files, digests)) for a in associations]
    evidence = pub.log_dir / "evidence"
    evidence.mkdir(exist_ok=True)
    for data in (files.sheet, files.request, *files.signatures.values()):
        (evidence / sha256(data)).write_bytes(data)
    with TileLog.open(pub.log_dir, load_log_signer(pub.config.log_key, pub.config.root)) as log:
        log.append(entries)
    return True


@pytest.mark.parametrize(("build", "expected", "absent"), CASES)
def test_audit_refuses_by_the_same_rules_what_intake_refused(
    pub: Pub, build: Build, expected: frozenset[str], absent: frozenset[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Intake and ``audit`` disagree on no fixture: every refused submission, logged anyway (as a careless or
    dishonest publisher would), fails the audit, by the same rules where they concern the logged entries."""
    folder = build(pub)
    now = run_time(build) or publication.now_utc().replace(microsecond=0)
    intake = {f.rule for f in pub.run(now=now).rejected[folder.name]}
    if not force_log(pub, folder, now):
        # Nothing an entry could record (no readable row or request, or nobody to vouch): intake must say why.
        assert intake - ASSOCIATION_RULE_IDS or intake & MISSING_PARTY, intake
        return
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    site, trust = tmp_path / "site", tmp_path / "trust.json"
    export_tree(pub.config, site, stamp)
    trust.write_text(json.dumps(trust_of(pub.config)))
    capsys.readouterr()
    code = verify_main(["audit", "--trust", str(trust), "--site", str(site), "--now", stamp])
    text = capsys.readouterr().out
    audit = set(AUDIT_RULE.findall(text))
    assert code == 1 and audit, text
    assert audit & intake, (sorted(intake), text)
    if intake <= ASSOCIATION_RULE_IDS:
        assert audit == intake, (sorted(intake), text)


@pytest.mark.parametrize("style", ["resign", "separate", "countersign", "pem", "pkcs7"])
def test_the_manufacturers_pre_check_accepts_what_intake_logs(
    pub: Pub, style: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = pub.submit("first", [row("PC-1"), row("PC-2", device_type="CHF")], endorser="supplier", style=style)
    shutil.rmtree(first)  # the comms hub needs the DCC: logged separately below
    pub.submit("first", [row("PC-1")], style=style)
    pub.submit("hub", [row("PC-2", device_type="CHF")], endorser="dcc", style=style)
    assert set(pub.run().accepted) == {"first", "hub"}
    replacement = pub.submit(
        "second", [row("PC-1", image_hash=hashlib.sha256(b"v2").hexdigest())], style=style,
        request={"submitter_ref": "S", "panel_ref": "P", "replacements": [{"replaces_index": 0,
                 "investigation_ref": "INV-1"}]},
    )  # fmt: skip
    now = publication.now_utc().replace(microsecond=0)
    out = pre_check(pub, replacement, now, tmp_path, capsys)
    assert out["exit_code"] == 0 and out["result"]["verdict"] == "accept", out["result"]
    assert out["result"]["not_checked"] == []
    assert [a["replaces"] for a in out["result"]["associations"]] == [{"index": 0, "investigation_ref": "INV-1"}]
    report = pub.run(now=now)
    assert list(report.accepted) == ["second"]
    assert out["result"]["signers"] == report.signers["second"]
    logged = pub.entries()[-1]
    assert logged["replaces"] == {"index": 0, "investigation_ref": "INV-1"}
    assert out["result"]["associations"][0]["image_sha256"] == logged["image_sha256"]


def test_the_pre_check_without_a_site_says_what_it_did_not_check(
    pub: Pub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = pub.submit("s", [row("NS-1")])
    trust = tmp_path / "trust.json"
    body = trust_of(pub.config)
    del body["site"]
    trust.write_text(json.dumps(body))
    capsys.readouterr()
    code = verify_main(["check-submission", str(folder), "--trust", str(trust)])
    text = capsys.readouterr().out
    assert code == 3, text  # nothing refused, but not a yes: some rules could not be judged
    assert "intake at " in text and "would ACCEPT it, IF the checks not run pass" in text
    assert "NOT CHECKED: revocation of" in text
    assert "NOT CHECKED: 4.3(b): the device models' current associations (no --site" in text
    assert "  Manufacturer: Acme Meters (ID 1001)" in text


def test_at_least_forty_refusal_cases() -> None:
    assert len(CASES) >= 40


def test_all_or_nothing_one_bad_row_among_many(pub: Pub) -> None:
    rows = [row(f"AN-{i}") for i in range(20)]
    rows[13] = row("AN-13", device_type="KETTLE")
    folder = pub.submit("s", rows)
    assert len(csv_bytes(rows).splitlines()) == 21
    report = pub.run()
    assert report.accepted == {}
    findings = report.rejected["s"]
    assert [(f.rule, f.row) for f in findings] == [("Z4.2-row-values", 15)]  # header is row 1
    assert pub.log_size() == 0
    assert folder.is_dir()


# -- bugs: malformed input must be refused, not crash the whole intake run -------------------------


def deep_json(pub: Pub) -> Path:
    """request.json nested 5,000 deep (5 KB): json.loads raises RecursionError, not ValueError."""
    return pub.submit("bad", [row("BUG-1")], request=b"[" * 5000)


def bad_crc_xlsx(pub: Pub) -> Path:
    """An .xlsx whose worksheet member fails its CRC: zipfile raises BadZipFile while _check_zip reads it."""
    x = xlsx_bytes([row("BUG-2")])
    src = zipfile.ZipFile(io.BytesIO(x))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_STORED)
    data = bytearray(out.getvalue())
    at = data.index(b"<sheetData>")
    data[at + 1] = ord("S")  # one byte changed, CRC not updated
    return pub.submit("bad", sheet=bytes(data), sheet_name="sheet.xlsx")


def unknown_signature_algorithm(pub: Pub) -> Path:
    """A SignerInfo whose signatureAlgorithm is an unknown OID: asn1crypto's signature_algo raises ValueError."""
    folder = pub.submit("bad", [row("BUG-3")], style="separate")
    f = folder / "manufacturer.p7s"
    info = acms.ContentInfo.load(f.read_bytes())
    info["content"]["signer_infos"][0]["signature_algorithm"] = {"algorithm": "1.2.3.4"}
    f.write_bytes(info.dump())
    return folder


def certificate_cryptography_rejects(pub: Pub) -> Path:
    """A SignedData carrying an X.509 v2 certificate: x509.load_der_x509_certificate raises InvalidVersion."""
    folder = pub.submit("bad", [row("BUG-4")], style="separate")
    f = folder / "manufacturer.p7s"
    info = acms.ContentInfo.load(f.read_bytes())
    signed = info["content"]
    cert = ax509.Certificate.load(pub.world["other"].der)
    cert["tbs_certificate"]["version"] = "v2"
    odd = ax509.Certificate.load(cert.dump(force=True))
    extra = acms.CertificateChoices({"certificate": odd})
    signed["certificates"] = acms.CertificateSet([*signed["certificates"], extra])
    f.write_bytes(acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())
    return folder


def malformed_signing_time(pub: Pub) -> Path:
    """A validly signed signingTime attribute whose UTCTime is not a time: its .native raises ValueError.

    (Refused as "CMS format" before load_signed_data stopped calling .native on the whole SignedData.)
    """
    folder = pub.submit("bad", [row("BUG-5")], style="separate")
    f = folder / "manufacturer.p7s"

    def garble(attrs: list[acms.CMSAttribute]) -> list[acms.CMSAttribute]:
        out = []
        for a in attrs:
            if a["type"].native == "signing_time":
                raw = a.dump()
                at = raw.index(b"\x17\x0d")  # UTCTime, 13 characters
                a = acms.CMSAttribute.load(raw[: at + 2] + b"ZZZZZZZZZZZZZ" + raw[at + 15 :])
            out.append(a)
        return out

    f.write_bytes(edit_signed_attrs(f.read_bytes(), pub.world["acme"], garble))
    return folder


@pytest.mark.parametrize(
    "build",
    [deep_json, bad_crc_xlsx, unknown_signature_algorithm, certificate_cryptography_rejects, malformed_signing_time],
    ids=[
        "deeply-nested-request-json",
        "xlsx-bad-crc",
        "unknown-signature-algorithm",
        "x509-v2-certificate",
        "malformed-signing-time",
    ],
)
def test_malformed_submission_does_not_stop_intake(pub: Pub, build: Build) -> None:
    good = pub.submit("good", [row("GOOD-1")])
    folder = build(pub)
    report = pub.run()  # must not raise: one bad folder must not block every other submission
    assert report.accepted == {"good": [0]}
    assert set(report.rejected) == {folder.name}
    assert (folder / "rejection.json").exists()
    assert not good.exists()


def test_row_problems_are_not_reported_as_too_many_rows(pub: Pub) -> None:
    """600 rows with two problems each: the report must name the row problems, not claim > 1000 rows."""
    rows = [row(f"RC-{i}", image_hash="nothex", device_type="KETTLE") for i in range(600)]
    folder = pub.submit("s", rows)
    pub.run()
    checks = checks_of(folder)
    assert "Z4.2-row-values" in checks
    assert "Z4.2-spreadsheet" not in checks, rejection(folder)["findings"]


# -- the documented signature profile, with the tools submitters use --------------------------------

CERTTOOL = shutil.which("certtool")
needs_certtool = pytest.mark.skipif(CERTTOOL is None, reason="GnuTLS certtool (Debian gnutls-bin) is not installed")


def certtool_sign(sheet: Path, signer: object, out: Path, *extra: str) -> Path:
    """GnuTLS: ``certtool --p7-detached-sign`` over the exact bytes of ``sheet`` (DER output)."""
    assert CERTTOOL is not None
    subprocess.run(
        [CERTTOOL, "--p7-detached-sign", *extra, "--hash", "SHA256", "--load-privkey", str(signer.key_path),  # type: ignore[attr-defined]
         "--load-certificate", str(signer.cert_path), "--infile", str(sheet), "--outfile", str(out), "--outder"],  # type: ignore[attr-defined]
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def _messages(folder: Path) -> list[str]:
    return [str(f["message"]) for f in rejection(folder)["findings"]]  # type: ignore[index,union-attr]


@needs_certtool
def test_gnutls_certtool_signatures_with_p7_time_are_accepted(pub: Pub, world: World) -> None:
    folder = pub.folder("gnutls")
    sheet = folder / "sheet.csv"
    sheet.write_bytes(csv_bytes([row("GT-1")]))
    certtool_sign(sheet, world["acme"], folder / "manufacturer.p7s", "--p7-time")
    certtool_sign(sheet, world["supplier"], folder / "endorsement.p7s", "--p7-time")
    write_request(folder)
    (entry,) = accept(pub, folder)
    assert entry["manufacturer"]["certificate_sha256"] == world["acme"].fingerprint  # type: ignore[index]


@needs_certtool
def test_gnutls_certtool_without_p7_time_is_refused_with_the_fix(pub: Pub, world: World) -> None:
    folder = pub.folder("gnutls-noattr")
    sheet = folder / "sheet.csv"
    sheet.write_bytes(csv_bytes([row("GT-2")]))
    certtool_sign(sheet, world["acme"], folder / "manufacturer.p7s")
    certtool_sign(sheet, world["supplier"], folder / "endorsement.p7s", "--p7-time")
    write_request(folder)
    assert set(pub.run().rejected) == {"gnutls-noattr"}
    assert any("has no signed attributes" in m and "without `--p7-time`" in m for m in _messages(folder))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("-noattr",), "sign with them: the messageDigest attribute binds the signature to this spreadsheet"),
        (("-nocerts",), "embed it (drop `openssl cms -nocerts`)"),
    ],
    ids=["noattr", "nocerts"],
)
def test_openssl_profile_refusals_say_what_to_change(
    pub: Pub, world: World, options: tuple[str, ...], expected: str
) -> None:
    folder = pub.folder("profile")
    sheet = folder / "sheet.csv"
    sheet.write_bytes(csv_bytes([row("PR-1")]))
    cms_sign(sheet, world["acme"], folder / "manufacturer.p7s", False, *options)
    cms_sign(sheet, world["supplier"], folder / "endorsement.p7s")
    write_request(folder)
    assert set(pub.run().rejected) == {"profile"}
    assert any(expected in m for m in _messages(folder)), _messages(folder)


def test_text_mode_signing_is_recognised_and_the_fix_named(pub: Pub, world: World) -> None:
    folder = pub.folder("textmode")
    sheet = folder / "sheet.csv"
    sheet.write_bytes(csv_bytes([row("TM-1")]).replace(b"\r\n", b"\n"))  # LF line endings, as editors save
    out = folder / "manufacturer.p7s"
    subprocess.run(
        [
            "openssl",
            "cms",
            "-sign",
            "-md",
            "sha256",
            "-outform",
            "DER",
            "-in",
            str(sheet),
            "-signer",
            str(world["acme"].cert_path),
            "-inkey",
            str(world["acme"].key_path),
            "-out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip  (no -binary: OpenSSL signs the text with CRLF line endings)
    cms_sign(sheet, world["supplier"], folder / "endorsement.p7s")
    write_request(folder)
    assert set(pub.run().rejected) == {"textmode"}
    assert any("signed in text mode" in m and "-binary" in m for m in _messages(folder)), _messages(folder)


def test_a_rejection_report_says_who_signed_in_which_role(pub: Pub, world: World) -> None:
    folder = pub.submit("self", [row("SE-2")], endorser="acme-supplier")
    assert set(pub.run().rejected) == {"self"}
    text = (folder / "rejection.txt").read_text()
    assert f"  Manufacturer: Acme Meters (ID 1001), certificate {world['acme'].fingerprint}, signed 20" in text
    assert f"  Supplier: Acme Meters (ID 1001), certificate {world['acme-supplier'].fingerprint}, signed 20" in text
    assert (
        "MP168-independent-endorsement: endorsed by the manufacturer's own organisation (Acme Meters (ID 1001, "
        "Supplier))" in text
    )


# -- found in review: intake and audit must not disagree, and the inbox must not be able to stall intake ------


def audit_of(pub: Pub, now: dt.datetime, tmp: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    site, trust = tmp / "site", tmp / "trust.json"
    shutil.rmtree(site, ignore_errors=True)
    export_tree(pub.config, site, stamp)
    trust.write_text(json.dumps(trust_of(pub.config)))
    capsys.readouterr()
    code = verify_main(["audit", "--trust", str(trust), "--site", str(site), "--now", stamp])
    return code, capsys.readouterr().out


def test_a_registered_revocation_counts_before_any_crl_carries_it(pub: Pub) -> None:
    """``cpl-publisher intake`` between ``revoke`` and the next CRL: the approval would fail every later audit."""
    operations.revoke(pub.config, "ica", pub.world["acme"].cert.serial_number, "keyCompromise")
    folder = pub.submit("rv", [row("RV-1")])
    report = pub.run()
    assert report.accepted == {}
    assert "Z4.3a-certificate" in checks_of(folder)
    assert "was revoked on" in (folder / "rejection.txt").read_text()


def test_every_signerinfo_signing_time_is_judged_whichever_file_comes_first(
    pub: Pub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One certificate signs twice, once dated two days ahead: intake, the pre-check and audit all refuse."""
    folder = pub.folder("dup")
    sheet = folder / "sheet.csv"
    sheet.write_bytes(csv_bytes([row("DUP-1")]))
    maker, supplier = pub.world["acme"], pub.world["supplier"]
    first = tmp_path / "m.p7s"
    cms_sign(sheet, maker, first)
    cms_resign(first, sheet, supplier, folder / "a.p7s")
    ahead = publication.now_utc().replace(microsecond=0) + dt.timedelta(days=2)
    later = edit_signed_attrs(first.read_bytes(), maker, set_attr("signing_time", acms.Time({"utc_time": ahead})))
    (folder / "z.p7s").write_bytes(later)
    write_request(folder, GOOD_REQUEST)
    now = publication.now_utc().replace(microsecond=0)
    pre = pre_check(pub, folder, now, tmp_path, capsys)
    report = pub.run(now=now)
    assert report.accepted == {}
    assert {f.rule for f in report.rejected["dup"]} == {"Z4.3a-signing-time"}
    assert {f["rule"] for f in pre["result"]["findings"]} == {"Z4.3a-signing-time"}
    assert force_log(pub, folder, now)
    code, out = audit_of(pub, now, tmp_path, capsys)
    assert code == 1 and "Z4.3a-signing-time: signature" in out and "later than the approval time" in out


def test_audit_judges_every_signer_not_only_the_two_logged(
    pub: Pub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A third signature, by a revoked certificate: intake refuses, and so does the audit of a log holding it."""
    folder = pub.submit("xr", [row("XR-1")])
    cms_sign(folder / "sheet.csv", pub.world["supplier-revoked"], folder / "zz-extra.p7s")
    now = publication.now_utc().replace(microsecond=0) + dt.timedelta(seconds=2)  # after the revocation's second
    assert "Z4.3a-certificate" in {f.rule for f in pub.run(now=now).rejected["xr"]}
    assert force_log(pub, folder, now)
    code, out = audit_of(pub, now, tmp_path, capsys)
    assert code == 1 and "PROBLEM entry 0: Z4.3a-certificate: signature" in out and "was revoked on" in out, out


@pytest.mark.parametrize("kind", ["link", "folder", "fifo"])
def test_a_report_name_that_is_not_a_regular_file_is_refused_without_stalling_intake(
    pub: Pub, tmp_path: Path, kind: str
) -> None:
    folder = pub.submit("rp", [row("RP-1")])
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"inputs": None}))
    report_path = folder / "rejection.json"
    if kind == "link":
        report_path.symlink_to(outside)
    elif kind == "folder":
        report_path.mkdir()
    else:
        os.mkfifo(report_path)
    report = pub.run()  # returns: a FIFO is never opened for a blocking read
    assert report.accepted == {}
    rules = {f.rule for f in report.rejected["rp"]}
    assert rules >= ({"Z4.2-no-links"} if kind == "link" else {"Z4.2-folder"})
    assert outside.read_text() == json.dumps({"inputs": None})  # nothing written through the link


def test_a_reused_submission_id_with_new_evidence_is_judged_not_taken_as_logged(pub: Pub) -> None:
    pub.submit("S", [row("RU-1")])
    assert pub.run().accepted == {"S": [0]}
    replaced = {**GOOD_REQUEST, "replacements": [{"replaces_index": 0, "investigation_ref": "INV-1"}]}
    pub.submit("T", [row("RU-1", image_hash=image_hash("RU-1 v2"))], request=replaced)
    assert pub.run().accepted == {"T": [1]}
    again = {**GOOD_REQUEST, "replacements": [{"replaces_index": 1, "investigation_ref": "INV-2"}]}
    pub.submit("S", [row("RU-1")], request=again)  # the same spreadsheet as S, a new request
    report = pub.run()
    assert report.completed == [] and report.accepted == {"S": [2]}
    assert pub.entries()[2]["replaces"] == {"index": 1, "investigation_ref": "INV-2"}


def test_the_pre_check_names_the_folder_it_was_given_as_dot(
    pub: Pub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = pub.submit("S7", [row("DOT-1")])
    monkeypatch.chdir(folder)
    out = pre_check(pub, Path("."), publication.now_utc().replace(microsecond=0), tmp_path, capsys)
    assert out["result"]["submission_id"] == "S7" and out["result"]["verdict"] == "accept", out["result"]
