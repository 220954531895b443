"""The audit's refusal matrix: for every rule ``audit`` checks, a site whose log (signed with the real log
key) breaks exactly that rule, and the problem line the audit must print, with exit code 1.

Each case builds a small log from scratch (``craft``: entry dicts or bytes, evidence files, then any
tampering with the site's files), so only the rule under test fails: the test also checks that nothing
else is reported. The good variants (RSA PKCS#1 v1.5, RSA-PSS, a signer named by SubjectKeyIdentifier,
a countersignature, a log past 256 entries, a witness-cosigned checkpoint) must audit clean.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import shutil
import struct
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms as acms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from intake_fixtures import Party, countersign, drop_attr, edit_signed_attrs, set_attr
from verifier_fixtures import (
    COLUMNS,
    ISSUER,
    ORIGIN,
    World,
    build_world,
    csv_bytes,
    image_hash,
    row,
    tamper,
    xlsx_bytes,
)

from publisher import keys, parties, publication
from publisher.entries import canonical_json
from publisher.pki.crl import Revocation
from publisher.tlog import TileLog
from publisher.tlog.checkpoint import Checkpoint, parse_unverified
from publisher.tlog.note import Signer
from verifier.cpl_verify import ASSOCIATION_RULES, RULES, Cosigner, Lookup, describe_cert, main

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
VERIFIER = Path(__file__).resolve().parents[1] / "verifier" / "cpl_verify.py"


# =====================================================================================================
# The kit: the publication of verifier_fixtures, plus the parties the rules need
# =====================================================================================================


@dataclass
class Kit:
    world: World
    base: Path
    parties: dict[str, Party]
    witness: Cosigner
    crl_entries: list[dict[str, Any]]  # the world's crl/v1 entries: iki-root #1, ica #1, ica #2
    unpublished_ca: x509.Certificate  # carried only inside signatures: no CRL, not under /pki/

    def __getitem__(self, label: str) -> Party:
        return self.parties[label]

    def trust_file(self, witness: bool) -> Path:
        trust = self.world.trust()
        if witness:
            trust["log"]["policy"] = f"witness w {self.witness.verifier.vkey}\nquorum w\n"
        path = self.base / f"trust-{witness}.json"
        path.write_text(json.dumps(trust))
        return path


def _store(folder: Path, label: str, cert: x509.Certificate, key: Key) -> Party:
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{label}.pem", folder / f"{label}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Party(label, cert, key, cert_path, key_path)


def _issue(world: World, label: str, org: tuple[str, str, str], rsa_bits: int = 0) -> Party:
    """An IKI certificate issued by the world's CA (policy-checked, registered). Its organisations may
    hold several roles (configured so): the audit is under test here, not the CA."""
    now = publication.now_utc()
    key: Key = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    rules = dataclasses.replace(world.config.rules, multi_role_organisations=frozenset({org[1]}))
    config = dataclasses.replace(world.config, rules=rules)
    issued = parties.issue_party(config, *org, now, issuer=ISSUER, key=key, days=365)
    return _store(world.base / "matrix-parties", label, issued.cert, key)


def _mint(
    template: x509.Certificate,
    issuer: x509.Certificate,
    issuer_key: Any,
    subject: x509.Name | None = None,
    drop: Sequence[x509.ObjectIdentifier] = (),
    add: Sequence[x509.ExtensionType] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A copy of ``template`` with a fresh key, signed by ``issuer_key`` outside the CA's policy checks:
    what a CA that mis-issued would produce."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or template.subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(template.not_valid_before_utc)
        .not_valid_after(template.not_valid_after_utc)
    )
    for ext in template.extensions:
        value: x509.ExtensionType = ext.value
        if ext.oid in drop:
            continue
        if isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        elif isinstance(value, x509.AuthorityKeyIdentifier):
            value = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())
        builder = builder.add_extension(value, ext.critical)
    for value in add:
        builder = builder.add_extension(value, critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("audit-matrix")
    world = build_world(base / "world")
    parties = {label: Party(p.label, p.cert, p.key, p.cert_path, p.key_path) for label, p in world.parties.items()}
    parties["other"] = _issue(world, "other", ("Other Mfr", "1002", "Manufacturer"))
    parties["acme-supplier"] = _issue(world, "acme-supplier", ("Acme Meters", "1001", "Supplier"))
    parties["acme-rsa"] = _issue(world, "acme-rsa", ("Acme Meters", "1001", "Manufacturer"), rsa_bits=2048)
    parties["supplier-2"] = _issue(world, "supplier-2", ("Bright Energy Supply", "2001", "Supplier"))
    folder = base / "minted"
    dcc = world.party("dcc").cert
    ica, ica_key = world.ica_cert, world.ica_key
    eku, cdp = x509.oid.ExtensionOID.EXTENDED_KEY_USAGE, x509.oid.ExtensionOID.CRL_DISTRIBUTION_POINTS
    cert, key = _mint(dcc, ica, ica_key, drop=[eku])
    parties["dcc-no-eku"] = _store(folder, "dcc-no-eku", cert, key)
    elsewhere = x509.DistributionPoint(
        [x509.UniformResourceIdentifier("https://cpl.example.test/crl/nosuch.crl")], None, None, None
    )
    cert, key = _mint(dcc, ica, ica_key, drop=[cdp], add=[x509.CRLDistributionPoints([elsewhere])])
    parties["dcc-crl-elsewhere"] = _store(folder, "dcc-crl-elsewhere", cert, key)
    # A second issuing CA under the pinned root, published nowhere, and a DCC certificate it issued
    # without a CRL distribution point: nothing on the site can say whether it was revoked.
    root_key = keys.load_private_key(world.config.issuer("iki-root").key, world.config.root)
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Unpublished ICA")])
    unpublished, ca_key = _mint(ica, world.root_cert, root_key, subject=ca_name, drop=[cdp])
    cert, key = _mint(dcc, unpublished, ca_key, drop=[cdp])
    parties["dcc-unlisted-ca"] = _store(folder, "dcc-unlisted-ca", cert, key)
    cert_key = ec.generate_private_key(ec.SECP256R1())
    self_signed = (
        x509.CertificateBuilder()
        .subject_name(dcc.subject)
        .issuer_name(dcc.subject)
        .public_key(cert_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dcc.not_valid_before_utc)
        .not_valid_after(dcc.not_valid_after_utc)
    )
    for ext in dcc.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier | x509.SubjectKeyIdentifier):
            self_signed = self_signed.add_extension(ext.value, ext.critical)
    parties["dcc-self-signed"] = _store(
        folder, "dcc-self-signed", self_signed.sign(cert_key, hashes.SHA256()), cert_key
    )
    crl_entries = [e for e in map(json.loads, world.entries()) if e["type"] == "crl/v1"]
    assert [(e["issuer"], e["number"]) for e in crl_entries] == [("iki-root", 1), ("ica", 1), ("ica", 2)]
    return Kit(world, base, parties, Cosigner.generate("witness.example"), crl_entries, unpublished)


# =====================================================================================================
# Evidence, entries and sites
# =====================================================================================================


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(data: bytes, signers: Sequence[Party], pss: bool = False, extra: Sequence[x509.Certificate] = ()) -> bytes:
    """A detached DER SignedData by cryptography's builder: ECDSA, RSA PKCS#1 v1.5 or (``pss``) RSA-PSS."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
    for s in signers:
        if pss:
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
            builder = builder.add_signer(s.cert, s.key, hashes.SHA256(), rsa_padding=pad)
        else:
            builder = builder.add_signer(s.cert, s.key, hashes.SHA256())
    for cert in extra:
        builder = builder.add_certificate(cert)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(serialization.Encoding.DER, options)


def by_key_identifier(p7s: bytes, parties: Sequence[Party]) -> bytes:
    """Name every signer by SubjectKeyIdentifier (version 3) instead of issuer and serial number.

    The sid is not under the signature, so the signatures still verify.
    """
    info = acms.ContentInfo.load(p7s)
    signed = info["content"]
    for si in signed["signer_infos"]:
        serial = si["sid"].chosen["serial_number"].native
        (cert,) = [p.cert for p in parties if p.cert.serial_number == serial]
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        si["sid"] = acms.SignerIdentifier({"subject_key_identifier": ski})
        si["version"] = "v3"
    return bytes(acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def corrupt(p7s: bytes, counter: bool = False) -> bytes:
    """One bit flipped inside the first SignerInfo's signature value (or its countersignature's)."""
    si = acms.ContentInfo.load(p7s)["content"]["signer_infos"][0]
    if counter:
        si = si["unsigned_attrs"][0]["values"][0]
    value = si["signature"].native
    return tamper(p7s, p7s.index(value) + len(value) // 2)


@dataclass
class Submission:
    """One submission's evidence: the signed spreadsheet, request.json and the signature files."""

    sheet: bytes
    request: bytes
    signatures: list[bytes]

    @property
    def files(self) -> list[bytes]:
        return [self.sheet, self.request, *self.signatures]

    def digests(self) -> dict[str, Any]:
        return {
            "spreadsheet": sha(self.sheet),
            "request": sha(self.request),
            "signatures": sorted(sha(s) for s in self.signatures),
        }


REQUEST = {"submitter_ref": "REF-1", "panel_ref": "PANEL-1"}


def submit(
    kit: Kit,
    rows: Sequence[dict[str, str]],
    signers: Sequence[str] = ("acme", "supplier"),
    request: dict[str, Any] | bytes | None = None,
    separate: bool = False,
) -> Submission:
    """A CSV spreadsheet signed by ``signers`` (one file, or one file each), and its request."""
    sheet = csv_bytes(rows)
    parties = [kit[s] for s in signers]
    signatures = [sign(sheet, [p]) for p in parties] if separate else [sign(sheet, parties)]
    data = request if isinstance(request, bytes) else json.dumps(request or REQUEST).encode()
    return Submission(sheet, data, signatures)


def party(p: Party) -> dict[str, str]:
    """An entry's party object, as intake writes it from the certificate."""

    def attr(oid: x509.ObjectIdentifier) -> str:
        return str(p.cert.subject.get_attributes_for_oid(oid)[0].value)

    oid = x509.NameOID
    return {
        "organisation": attr(oid.ORGANIZATION_NAME),
        "organisation_id": attr(oid.ORGANIZATION_IDENTIFIER),
        "role": attr(oid.ORGANIZATIONAL_UNIT_NAME),
        "certificate_sha256": p.cert.fingerprint(hashes.SHA256()).hex(),
    }


def association(
    kit: Kit,
    sub: Submission,
    r: dict[str, str],
    manufacturer: str = "acme",
    endorser: str = "supplier",
    approved: dt.datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The cpl-association/v1 entry intake would log for row ``r`` (fields override any key)."""
    entry: dict[str, Any] = {
        "type": "cpl-association/v1",
        "device_model": {k: r[k] for k in ("manufacturer_id", "model_id", "hardware_version", "firmware_version")},
        "manufacturer_name": r["manufacturer_name"],
        "device_type": r["device_type"],
        "smets_version": r["smets_version"],
        "image_sha256": r["image_hash"],
        "manufacturer": party(kit[manufacturer]),
        "endorser": party(kit[endorser]),
        "approved_at": iso(approved or publication.now_utc()),
        "panel_ref": REQUEST["panel_ref"],
        "submitter_ref": REQUEST["submitter_ref"],
        "submission_id": "S1",
        "evidence": sub.digests(),
    }
    entry.update(fields)
    return entry


@dataclass
class Crafted:
    """A site to audit: the log's entries (signed by the log key), evidence files, then tampering."""

    entries: Sequence[dict[str, Any] | bytes]
    evidence: Sequence[bytes] = ()
    expect: Sequence[str] = ()  # every PROBLEM/FAILED line, each by a distinctive part
    tamper: Callable[[Path], None] | None = None  # applied to the built site folder
    witness: bool = False  # the trust file also pins the kit's witness key
    now: dt.datetime | None = None  # audit as of this time
    args: Sequence[str] = ()  # more options for the verifier


def craft(kit: Kit, crafted: Crafted, dest: Path) -> Path:
    """A site folder: the world's /pki/ and /crl/, and a new log holding exactly ``crafted.entries``."""
    for sub in ("pki", "crl"):
        shutil.copytree(kit.world.site / sub, dest / sub)  # copies: the world's files stay untouched
    with TileLog.create(dest / "log", kit.world.signer) as log:
        log.append([e if isinstance(e, bytes) else canonical_json(e) for e in crafted.entries])
    (dest / "log" / "evidence").mkdir()
    for data in crafted.evidence:
        (dest / "log" / "evidence" / sha(data)).write_bytes(data)
    if crafted.tamper is not None:
        crafted.tamper(dest)
    return dest


@dataclass
class Run:
    code: int
    out: str

    def lines(self, *prefixes: str) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith(prefixes)]


def audit(kit: Kit, site: Path, capsys: pytest.CaptureFixture[str], crafted: Crafted | None = None, *args: str) -> Run:
    witness = crafted is not None and crafted.witness
    argv = ["--trust", str(kit.trust_file(witness)), "--site", str(site)]
    if crafted is not None:
        argv += [*crafted.args, *(["--now", iso(crafted.now)] if crafted.now else [])]
    code = main([*argv, *args, "audit"])
    captured = capsys.readouterr()
    return Run(code, captured.out + captured.err)


def matches(line: str, expected: str) -> bool:
    """``expected`` is in ``line``; " … " separates parts that must appear in this order."""
    at = 0
    for part in expected.split(" … "):
        at = line.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def assert_reported(run: Run, expect: Sequence[str]) -> None:
    """Each PROBLEM/FAILED line matches one expected line, and each expected line one output line."""
    lines = run.lines("PROBLEM ", "FAILED: ")
    unmatched = list(expect)
    for line in lines:
        hit = next((e for e in unmatched if matches(line, e)), None)
        assert hit is not None, f"unexpected line {line!r}; expected {unmatched}\n{run.out}"
        unmatched.remove(hit)
    assert not unmatched, f"not reported: {unmatched}\n{run.out}"


def swap(site: Path, rel: str, data: bytes) -> None:
    path = site / rel
    path.unlink(missing_ok=True)
    path.write_bytes(data)


# =====================================================================================================
# The matrix
# =====================================================================================================

Build = Callable[[Kit], Crafted]
REFUSALS: list[Any] = []
ACCEPTS: list[Any] = []


def refused(name: str) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        REFUSALS.append(pytest.param(build, id=name))
        return build

    return register


def accepted(name: str) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        ACCEPTS.append(pytest.param(build, id=name))
        return build

    return register


def good(kit: Kit, model: str = "M1", **kw: Any) -> tuple[Submission, dict[str, Any]]:
    """One Acme SMETS2 ESME model, signed by Acme and endorsed by the Supplier, and its entry."""
    r = row(model, image_hash(model))
    sub = submit(kit, [r])
    return sub, association(kit, sub, r, **kw)


# -- the checkpoint and the tiles -----------------------------------------------------------------------


def _resign_checkpoint(kit: Kit, site: Path, signers: list[Signer], cosigners: list[Cosigner]) -> None:
    cp = parse_unverified((site / "log" / "checkpoint").read_bytes())
    text = Checkpoint(ORIGIN, cp.size, cp.root).body()
    lines = [s.signature_line(text) for s in signers] + [c.cosign(text, int(time.time())) for c in cosigners]
    swap(site, "log/checkpoint", (text + "\n" + "".join(lines)).encode())


@refused("checkpoint-signed-by-a-witness-only")
def witness_only(kit: Kit) -> Crafted:
    sub, e = good(kit)
    return Crafted(
        [e],
        sub.files,
        ["checkpoint carries no valid signature of the log key 'cpl.example.test/log'"],
        tamper=lambda site: _resign_checkpoint(kit, site, [], [kit.witness]),
        witness=True,
    )


@accepted("checkpoint-cosigned-by-a-witness")
def witness_cosigned(kit: Kit) -> Crafted:
    sub, e = good(kit)
    return Crafted(
        [e],
        sub.files,
        tamper=lambda site: _resign_checkpoint(kit, site, [kit.world.signer], [kit.witness]),
        witness=True,
    )


@refused("entries-reordered")
def reordered(kit: Kit) -> Crafted:
    (s1, e1), (s2, e2) = good(kit, "M1"), good(kit, "M2")

    def swap_entries(site: Path) -> None:  # both entries stay valid; only their order (and the root) changes
        rel = "log/tile/entries/000.p/2"
        a, b = canonical_json(e1), canonical_json(e2)
        swap(site, rel, b"".join(len(x).to_bytes(2, "big") + x for x in (b, a)))

    expect = "PROBLEM log: the entries do not hash to the signed root: entries were altered, added or removed"
    return Crafted([e1, e2], [*s1.files, *s2.files], [expect + " (entry bundles disagreeing"], swap_entries)


@refused("level-0-tile-altered")
def level0(kit: Kit) -> Crafted:
    sub, e = good(kit)

    def alter(site: Path) -> None:
        swap(site, "log/tile/0/000.p/1", tamper((site / "log/tile/0/000.p/1").read_bytes(), 5))

    line = "PROBLEM log: the hash tile tile/0/000.p/1 is wrong: it does not match the entries (the root is right)"
    return Crafted([e], sub.files, [line], alter)


@refused("entry-bundle-missing")
def no_bundle(kit: Kit) -> Crafted:
    sub, e = good(kit)
    tamper_ = lambda site: (site / "log/tile/entries/000.p/1").unlink()  # noqa: E731
    line = "FAILED: the site does not serve the entry bundle tile/entries/000.p/1; the log cannot be audited"
    return Crafted([e], sub.files, [line], tamper_)


@refused("entry-bundle-malformed")
def bad_bundle(kit: Kit) -> Crafted:
    sub, e = good(kit)
    tamper_ = lambda site: swap(site, "log/tile/entries/000.p/1", b"\xff\xff{}")  # noqa: E731
    return Crafted([e], sub.files, ["FAILED: the site serves a malformed entry bundle: "], tamper_)


BIG = 300  # one full bundle and tile, a partial one, and a level-1 tile


def big_log(kit: Kit) -> Crafted:
    """300 associations of 300 models from one submission."""
    rows = [row(f"B{i}", image_hash(f"b{i}")) for i in range(BIG)]
    sub = submit(kit, rows)
    approved = publication.now_utc()
    return Crafted([association(kit, sub, r, approved=approved) for r in rows], sub.files)


@accepted("log-past-256-entries")
def big_clean(kit: Kit) -> Crafted:
    return big_log(kit)


def _flip(rel: str, offset: int) -> Callable[[Path], None]:
    def alter(site: Path) -> None:
        assert (site / rel).exists(), rel
        swap(site, rel, tamper((site / rel).read_bytes(), offset))

    return alter


@refused("level-1-tile-altered-past-256-entries")
def big_level1(kit: Kit) -> Crafted:
    crafted = big_log(kit)
    crafted.tamper = _flip("log/tile/1/000.p/1", 7)
    crafted.expect = ["PROBLEM log: the hash tile tile/1/000.p/1 is wrong: it does not match the entries"]
    return crafted


@refused("full-level-0-tile-altered-past-256-entries")
def big_level0(kit: Kit) -> Crafted:
    crafted = big_log(kit)
    crafted.tamper = _flip("log/tile/0/000", 32 * 200 + 3)
    crafted.expect = ["PROBLEM log: the hash tile tile/0/000 is wrong: it does not match the entries"]
    return crafted


@refused("entry-altered-past-256-entries")
def big_entry(kit: Kit) -> Crafted:
    crafted = big_log(kit)

    def alter(site: Path) -> None:  # entry 270: model B270 becomes B27O (still valid JSON, its own row gone)
        rel = "log/tile/entries/001.p/44"
        data = (site / rel).read_bytes()
        swap(site, rel, data.replace(b'"model_id":"B270"', b'"model_id":"B27O"'))

    crafted.tamper = alter
    crafted.expect = [
        "PROBLEM log: the entries do not hash to the signed root: entries were altered, added or removed "
        "(entry bundles disagreeing with their level-0 tiles: tile/0/001.p/44)",
        "PROBLEM entry 270: evidence: the signed spreadsheet has no row for exactly this association",
    ]
    return crafted


# -- what an entry is ----------------------------------------------------------------------------------


def _entry_case(name: str, raw: bytes, line: str) -> None:
    REFUSALS.append(pytest.param(lambda kit: Crafted([raw], (), [f"PROBLEM entry 0: {line}"]), id=name))


_entry_case("entry-not-json", b"firmware ok", "not a JSON object: not an entry this log may hold")
_entry_case("entry-json-list", b'["cpl-association/v1"]', "not a JSON object: not an entry this log may hold")
_entry_case("entry-not-utf8", b'{"type":"\xff"}', "not a JSON object: not an entry this log may hold")
_entry_case("entry-nested-5000-deep", b"[" * 5000 + b"]" * 5000, "not a JSON object: not an entry this log may hold")
_entry_case("entry-lone-surrogate", b'{"type":"\\ud800"}', "not UTF-8 text: it holds a lone surrogate escape")
_entry_case("entry-unknown-type", b'{"type":"note/v1"}', "unknown entry type 'note/v1'")
_entry_case("entry-type-a-list", b'{"type":["crl/v1"]}', "unknown entry type ['crl/v1']")
_entry_case("entry-without-type", b'{"kind":"crl/v1"}', "unknown entry type None")


@refused("entry-not-canonical-json")
def not_canonical(kit: Kit) -> Crafted:
    sub, e = good(kit)
    raw = json.dumps(e, indent=1, sort_keys=True).encode()
    return Crafted([raw], sub.files, ["PROBLEM entry 0: not canonical JSON (sorted keys, no whitespace, UTF-8)"])


# -- cpl-association/v1 format: every field missing, malformed or of the wrong JSON type -----------------

FP = "ab" * 32
TEMPLATE: dict[str, Any] = {
    "type": "cpl-association/v1",
    "approved_at": "2026-01-01T00:00:00Z",
    "device_model": {"manufacturer_id": "1001", "model_id": "M1", "hardware_version": "HW1", "firmware_version": "FW1"},
    "device_type": "ESME",
    "endorser": {"organisation": "S", "organisation_id": "2001", "role": "Supplier", "certificate_sha256": FP},
    "evidence": {"spreadsheet": FP, "request": FP, "signatures": [FP]},
    "image_sha256": FP,
    "manufacturer": {"organisation": "A", "organisation_id": "1001", "role": "Manufacturer", "certificate_sha256": FP},
    "manufacturer_name": "Acme Meters",
    "panel_ref": "PANEL-1",
    "smets_version": "SMETS2",
    "submission_id": "S1",
    "submitter_ref": "REF-1",
}
MISSING = object()
MODEL = "format: device_model must have manufacturer_id, model_id, hardware_version, firmware_version"
MODEL_TEXT = "format: device_model fields must be non-empty text"
MAN = "format: manufacturer must have organisation, organisation_id, role, certificate_sha256"
END = "format: endorser must have organisation, organisation_id, role, certificate_sha256"
EVIDENCE = "format: evidence must name the spreadsheet, request and signatures by SHA-256"
REPLACES = "format: replaces must be {index, investigation_ref}"
HASH = "format: image_sha256 is not 64 lowercase hex digits"
MALFORMED: list[tuple[str, tuple[str, ...], Any, str]] = [
    ("no-endorser", ("endorser",), MISSING, "format: missing fields ['endorser'], unknown fields []"),
    ("unknown-field", ("colour",), "red", "format: missing fields [], unknown fields ['colour']"),
    ("device-type-list", ("device_type",), ["ESME"], "format: unknown device type ['ESME']"),
    ("device-type-object", ("device_type",), {"ESME": 1}, "format: unknown device type {'ESME': 1}"),
    ("device-type-number", ("device_type",), 7, "format: unknown device type 7"),
    ("device-type-unknown", ("device_type",), "KETTLE", "format: unknown device type 'KETTLE'"),
    ("smets-version-list", ("smets_version",), ["SMETS2"], "format: unknown SMETS version ['SMETS2']"),
    ("smets-version-unknown", ("smets_version",), "SMETS3", "format: unknown SMETS version 'SMETS3'"),
    ("device-model-list", ("device_model",), ["M1"], MODEL),
    ("device-model-extra-key", ("device_model", "colour"), "red", MODEL),
    ("model-id-number", ("device_model", "model_id"), 5, MODEL_TEXT),
    ("model-id-empty", ("device_model", "model_id"), "", MODEL_TEXT),
    ("model-id-list", ("device_model", "model_id"), ["M1"], MODEL_TEXT),
    ("manufacturer-text", ("manufacturer",), "Acme", MAN),
    ("manufacturer-role-list", ("manufacturer", "role"), ["Manufacturer"], MAN),
    ("manufacturer-fingerprint-number", ("manufacturer", "certificate_sha256"), int("1" * 64), MAN),
    ("endorser-organisation-id-number", ("endorser", "organisation_id"), 2001, END),
    ("endorser-fingerprint-upper-case", ("endorser", "certificate_sha256"), FP.upper(), END),
    ("image-hash-list", ("image_sha256",), [FP], HASH),
    ("image-hash-upper-case", ("image_sha256",), FP.upper(), HASH),
    ("approved-at-number", ("approved_at",), 1767225600, "format: approved_at: '1767225600' is not a UTC time"),
    ("approved-at-list", ("approved_at",), ["2026-01-01T00:00:00Z"], "format: approved_at: \"['2026-01-01"),
    ("approved-at-not-utc", ("approved_at",), "2026-01-01T00:00:00+01:00", "format: approved_at: '2026-01-01T"),
    ("evidence-text", ("evidence",), FP, EVIDENCE),
    ("evidence-signatures-text", ("evidence", "signatures"), FP, EVIDENCE),
    ("evidence-no-signatures", ("evidence", "signatures"), [], EVIDENCE),
    ("evidence-spreadsheet-number", ("evidence", "spreadsheet"), 5, EVIDENCE),
    ("replaces-number", ("replaces",), 0, REPLACES),
    ("replaces-index-text", ("replaces",), {"index": "0", "investigation_ref": "INV-1"}, REPLACES),
    ("replaces-index-bool", ("replaces",), {"index": True, "investigation_ref": "INV-1"}, REPLACES),
    ("replaces-index-list", ("replaces",), {"index": [0], "investigation_ref": "INV-1"}, REPLACES),
    ("replaces-no-reference", ("replaces",), {"index": 0, "investigation_ref": ""}, REPLACES),
    ("panel-ref-number", ("panel_ref",), 5, "format: panel_ref must be non-empty text"),
    ("submitter-ref-null", ("submitter_ref",), None, "format: submitter_ref must be non-empty text"),
    ("submission-id-list", ("submission_id",), ["S1"], "format: submission_id must be non-empty text"),
    ("manufacturer-name-object", ("manufacturer_name",), {"n": 1}, "format: manufacturer_name must be non-empty"),
]


def _malformed(path: tuple[str, ...], value: Any, line: str) -> Build:
    def build(kit: Kit) -> Crafted:
        entry = json.loads(json.dumps(TEMPLATE))
        holder = entry
        for key in path[:-1]:
            holder = holder[key]
        if value is MISSING:
            del holder[path[-1]]
        else:
            holder[path[-1]] = value
        return Crafted([entry], (), [f"PROBLEM entry 0: {line}"])

    return build


for _name, _path, _value, _line in MALFORMED:
    REFUSALS.append(pytest.param(_malformed(_path, _value, _line), id=f"association-{_name}"))


# -- SEC Appendix Z 4.1 to 4.3 and MP168's endorsement: the rule table's association rules ----------------


def _named(p: Party) -> str:
    """A party as the rule messages name it (``Party.named``): organisation, ID and role."""
    who = party(p)
    return f"{who['organisation']} (ID {who['organisation_id']}, {who['role']})"


@refused("4.3(a)-creator-is-another-manufacturer")
def rule_43a(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r], ["other", "supplier"])
    line = (
        "PROBLEM entry 0: Z4.3a-image-creator: the manufacturer signature is by Other Mfr (ID 1002), not by the "
        "manufacturer the row names (ID 1001)"
    )
    return Crafted([association(kit, sub, r, "other")], sub.files, [line])


@refused("4.1-creator-is-not-a-manufacturer")
def rule_41(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r], ["acme-supplier", "supplier"])
    line = (
        "PROBLEM entry 0: Z4.1-manufacturer-signature: the image creator's signature is by Acme Meters (ID 1001, "
        "Supplier), not by a Manufacturer certificate"
    )
    return Crafted([association(kit, sub, r, "acme-supplier")], sub.files, [line])


@refused("endorsement-by-the-manufacturers-own-organisation")
def self_endorsed(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r], ["acme", "acme-supplier"])  # Acme's second certificate, with the Supplier role
    line = (
        "PROBLEM entry 0: MP168-independent-endorsement: endorsed by the manufacturer's own organisation (Acme "
        "Meters (ID 1001, Supplier)); the endorsement must come from another organisation"
    )
    return Crafted([association(kit, sub, r, endorser="acme-supplier")], sub.files, [line])


def _endorsed(
    kit: Kit, device: str, smets: str, endorser: str, signed: bool = True
) -> tuple[Submission, dict[str, Any]]:
    """One Acme row (``device``, ``smets``) whose entry names ``endorser``, who signed it only if ``signed``."""
    r = row("M1", image_hash("m1"), device, smets)
    sub = submit(kit, [r], ["acme", endorser] if signed else ["acme"])
    return sub, association(kit, sub, r, endorser=endorser)


def _endorsement_case(name: str, device: str, smets: str, endorser: str, line: str) -> None:
    """A row endorsed by ``endorser``: refused with ``line``, or (no line) accepted."""

    def build(kit: Kit) -> Crafted:
        sub, e = _endorsed(kit, device, smets, endorser)
        expect = [f"PROBLEM entry 0: {line.format(endorser=_named(kit[endorser]))}"] if line else []
        return Crafted([e], sub.files, expect)

    (REFUSALS if line else ACCEPTS).append(pytest.param(build, id=name))


BY_DCC = "must be endorsed by the DCC, not by {endorser}"
_endorsement_case(
    "4.3(c)-smets1-endorsed-by-a-supplier",
    "ESME",
    "SMETS1",
    "supplier",
    f"Z4.3c-dcc-endorsement: a SMETS1 device model {BY_DCC}",
)
# A SMETS1 communications hub is judged by 4.3(c) alone, not again by MP168's hub rule.
_endorsement_case(
    "4.3(c)-smets1-comms-hub-endorsed-by-a-supplier",
    "CHF",
    "SMETS1",
    "supplier",
    f"Z4.3c-dcc-endorsement: a communications hub {BY_DCC}",
)
_endorsement_case(
    "endorsement-comms-hub-by-a-supplier",
    "CHF",
    "SMETS2",
    "supplier",
    f"MP168-dcc-endorsement: a communications hub {BY_DCC}",
)
_endorsement_case(
    "endorsement-gas-proxy-hub-by-a-supplier",
    "GPF",
    "SMETS2",
    "supplier",
    f"MP168-dcc-endorsement: a communications hub {BY_DCC}",
)
_endorsement_case(
    "endorsement-meter-by-the-dcc",
    "ESME",
    "SMETS2",
    "dcc",
    "MP168-supplier-endorsement: a SMETS2 device model must be endorsed by a Supplier, not by {endorser}",
)
_endorsement_case("4.3(c)-smets1-endorsed-by-the-dcc", "ESME", "SMETS1", "dcc", "")
_endorsement_case("4.3(c)-smets1-comms-hub-endorsed-by-the-dcc", "CHF", "SMETS1", "dcc", "")
_endorsement_case("endorsement-comms-hub-by-the-dcc", "CHF", "SMETS2", "dcc", "")


def _unendorsed_case(name: str, device: str, smets: str, endorser: str) -> None:
    """The entry names ``endorser``, whose signature is not in the evidence: the missing signature is the problem
    (the rules judge the role the entry claims, which is the right one)."""

    def build(kit: Kit) -> Crafted:
        sub, e = _endorsed(kit, device, smets, endorser, signed=False)
        return Crafted([e], sub.files, [no_signature(party(kit[endorser])["certificate_sha256"], "endorser")])

    REFUSALS.append(pytest.param(build, id=name))


_unendorsed_case("endorser-did-not-sign", "ESME", "SMETS2", "supplier")
_unendorsed_case("endorser-did-not-sign-comms-hub", "CHF", "SMETS2", "dcc")
_unendorsed_case("endorser-did-not-sign-smets1", "ESME", "SMETS1", "dcc")
_unendorsed_case("endorser-did-not-sign-smets1-comms-hub", "CHF", "SMETS1", "dcc")


def _history(kit: Kit, *steps: tuple[str, int | None, int | None]) -> Crafted:
    """Entries of one device model: (image label, index it replaces, index the request asks to replace)."""
    entries, files = [], []
    for label, replaces, asked in steps:
        r = row("M1", image_hash(label))
        request = dict(REQUEST)
        if asked is not None:
            request["replacements"] = [{"replaces_index": asked, "investigation_ref": "INV-1"}]
        sub = submit(kit, [r], request=request)
        fields = {"replaces": {"index": replaces, "investigation_ref": "INV-1"}} if replaces is not None else {}
        entries.append(association(kit, sub, r, **fields))
        files += sub.files
    return Crafted(entries, files)


@accepted("4.3(b)-replacement-naming-the-current-association")
def replacement_ok(kit: Kit) -> Crafted:
    return _history(kit, ("v1", None, None), ("v2", 0, 0), ("v3", 1, 1))


def unused(index: int, replaced: int = 0) -> str:
    """The line of a signed request that asks to replace ``replaced``, judged at the submission's first entry."""
    return (
        f"PROBLEM entry {index}: Z4.3b-replacement-index: log index {replaced} is not the current association of any "
        "row's device model"
    )


def _asks_to_replace_0(kit: Kit, replaces: bool) -> Crafted:
    """M1's association (entry 0), then a submission of another model, M2, whose request asks to replace entry 0
    (and whose entry names it as replaced if ``replaces``)."""
    crafted = _history(kit, ("v1", None, None))
    r = row("M2", image_hash("m2"))
    sub = submit(kit, [r], request={**REQUEST, "replacements": [{"replaces_index": 0, "investigation_ref": "INV-1"}]})
    fields = {"replaces": {"index": 0, "investigation_ref": "INV-1"}} if replaces else {}
    crafted.entries = [*crafted.entries, association(kit, sub, r, **fields)]
    crafted.evidence = [*crafted.evidence, *sub.files]
    return crafted


@refused("4.3(b)-replaces-a-model-without-association")
def replaces_nothing(kit: Kit) -> Crafted:
    crafted = _asks_to_replace_0(kit, replaces=True)
    crafted.expect = [unused(1)]
    return crafted


@refused("4.3(b)-request-asks-to-replace-another-models-association")
def asks_for_another_model(kit: Kit) -> Crafted:
    crafted = _asks_to_replace_0(kit, replaces=False)
    crafted.expect = [unused(1)]
    return crafted


@refused("4.3(b)-silent-replacement")
def silent(kit: Kit) -> Crafted:
    crafted = _history(kit, ("v1", None, None), ("v2", None, None))
    crafted.expect = [
        f"PROBLEM entry 1: Z4.3b-replacement-ref: the device model already has hash {image_hash('v1')[:16]}... at log "
        "index 0; a replacement must name that index and its investigation"
    ]
    return crafted


@refused("4.3(b)-replaces-an-association-no-longer-current")
def stale_replacement(kit: Kit) -> Crafted:
    crafted = _history(kit, ("v1", None, None), ("v2", 0, 0), ("v3", 0, 0))
    line = (
        f"PROBLEM entry 2: Z4.3b-replacement-ref: the device model already has hash {image_hash('v2')[:16]}... at log "
        "index 1; a replacement must name that index and its investigation"
    )
    crafted.expect = [unused(2), line]
    return crafted


DUPLICATE = "Z4.3b-not-current: this hash is already the device model's current association (log index 0)"


@refused("duplicate-of-the-current-association")
def duplicate(kit: Kit) -> Crafted:
    crafted = _history(kit, ("v1", None, None), ("v1", None, None))
    crafted.expect = [f"PROBLEM entry 1: {DUPLICATE}"]
    return crafted


@refused("duplicate-named-as-a-replacement")
def duplicate_replacement(kit: Kit) -> Crafted:
    # Nothing is replaced: the request's replacement is unused.
    crafted = _history(kit, ("v1", None, None), ("v1", 0, 0))
    crafted.expect = [f"PROBLEM entry 1: {DUPLICATE}", unused(1)]
    return crafted


@refused("approved-in-the-future")
def future(kit: Kit) -> Crafted:
    when = publication.now_utc() + dt.timedelta(days=1)
    sub, e = good(kit, approved=when)
    return Crafted([e], sub.files, [f"PROBLEM entry 0: approved_at {iso(when)} is in the future"])


# -- evidence files ------------------------------------------------------------------------------------


@refused("evidence-file-not-published")
def unpublished(kit: Kit) -> Crafted:
    sub, e = good(kit)
    d = sha(sub.request)
    line = f"PROBLEM entry 0: evidence: the file {d} is not published (log/evidence/{d})"
    return Crafted([e], [sub.sheet, *sub.signatures], [line])


@refused("evidence-file-swapped")
def swapped(kit: Kit) -> Crafted:
    sub, e = good(kit)
    d = sha(sub.signatures[0])
    tamper_ = lambda site: swap(site, f"log/evidence/{d}", sub.request)  # noqa: E731
    # The only signature file is unusable: neither party signed, as far as the evidence shows.
    expect = [
        f"PROBLEM entry 0: evidence: log/evidence/{d} does not have that SHA-256: swapped or altered",
    ]
    return Crafted([e], sub.files, expect, tamper_)


def _request_case(name: str, request: bytes, *lines: str) -> None:
    def build(kit: Kit) -> Crafted:
        r = row("M1", image_hash("m1"))
        sub = submit(kit, [r], request=request)
        return Crafted([association(kit, sub, r)], sub.files, [f"PROBLEM entry 0: {x}" for x in lines])

    REFUSALS.append(pytest.param(build, id=name))


BREAKS = "evidence: the signed request.json breaks Z4.2-request: "
REFS = "evidence: panel_ref or submitter_ref is not the one in the signed request"
_request_case("request-not-json", b"panel_ref = PANEL-1", BREAKS + "request.json is not valid JSON")
_request_case("request-nested-5000-deep", b"[" * 5000, BREAKS + "request.json is not valid JSON")
_request_case("request-a-list", b'["PANEL-1", "REF-1"]', BREAKS + "request.json must be a JSON object")
_request_case(
    "request-empty-object",
    b"{}",
    BREAKS + "'submitter_ref' must be a non-empty string of at most 128 characters",
    BREAKS + "'panel_ref' must be a non-empty string of at most 128 characters",
)
_request_case("request-other-panel", b'{"panel_ref": "PANEL-2", "submitter_ref": "REF-1"}', REFS)
_request_case("request-other-submitter", b'{"panel_ref": "PANEL-1", "submitter_ref": "REF-9"}', REFS)
_request_case(
    "request-panel-a-list",
    b'{"panel_ref": ["PANEL-1"], "submitter_ref": "REF-1"}',
    BREAKS + "'panel_ref' must be a non-empty string of at most 128 characters",
)
_request_case(
    "request-unknown-field",
    b'{"panel_ref": "PANEL-1", "submitter_ref": "REF-1", "colour": "red"}',
    BREAKS + "unknown fields: colour",
)
_request_case(
    "request-replacements-not-a-list",
    b'{"panel_ref": "PANEL-1", "submitter_ref": "REF-1", "replacements": 5}',
    BREAKS + "'replacements' must be a list",
)
_request_case(
    "request-replacement-without-investigation",
    b'{"panel_ref": "PANEL-1", "submitter_ref": "REF-1", "replacements": [{"replaces_index": 0}]}',
    BREAKS + "each replacement needs exactly replaces_index and investigation_ref",
)
_request_case(
    "request-replaces-an-index-twice",
    json.dumps(
        {
            **REQUEST,
            "replacements": [
                {"replaces_index": 0, "investigation_ref": "INV-1"},
                {"replaces_index": 0, "investigation_ref": "INV-2"},
            ],
        }
    ).encode(),
    BREAKS + "log index 0 is replaced twice",
)


@refused("request-does-not-ask-for-the-replacement")
def replacement_not_asked(kit: Kit) -> Crafted:
    crafted = _history(kit, ("v1", None, None), ("v2", 0, None))
    line = "PROBLEM entry 1: evidence: the request does not ask to replace log index 0 under investigation INV-1"
    crafted.expect = [line]
    return crafted


@refused("request-replacement-index-a-list")
def replacement_index_list(kit: Kit) -> Crafted:
    crafted = _history(kit, ("v1", None, None))
    r = row("M1", image_hash("v2"))
    request = {**REQUEST, "replacements": [{"replaces_index": [0], "investigation_ref": "INV-1"}]}
    sub = submit(kit, [r], request=request)
    crafted.entries = [*crafted.entries, association(kit, sub, r, replaces={"index": 0, "investigation_ref": "INV-1"})]
    crafted.evidence = [*crafted.evidence, *sub.files]
    crafted.expect = [f"PROBLEM entry 1: {BREAKS}replaces_index must be a log index"]
    return crafted


UNREADABLE = "evidence: the signed spreadsheet breaks Z4.2-spreadsheet: the .xlsx file cannot be read"


@refused("spreadsheet-unreadable")
def unreadable(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r])
    sub.sheet = b"PK\x03\x04 not a zip archive"
    sub.signatures = [sign(sub.sheet, [kit["acme"], kit["supplier"]])]
    line = f"PROBLEM entry 0: {UNREADABLE} (BadZipFile)"
    return Crafted([association(kit, sub, r)], sub.files, [line])


@refused("spreadsheet-has-no-such-row")
def no_row(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r])
    e = association(kit, sub, r, image_sha256=image_hash("m1-other"))
    return Crafted([e], sub.files, ["PROBLEM entry 0: evidence: the signed spreadsheet has no row for exactly this"])


# -- CMS signatures ------------------------------------------------------------------------------------

NOT_VERIFIED = "the signature does not verify over its signed attributes"


def no_signature(fp: str, who: str = "manufacturer") -> str:
    return f"PROBLEM entry 0: evidence: no valid signature over the spreadsheet by the {who}'s certificate {fp[:16]}..."


def _styled(kit: Kit, manufacturer: str, style: str, broken: bool) -> Crafted:
    """Acme's signature in one file (style: ecdsa, rsa, pss, ski), the Supplier's in another."""
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r], [manufacturer, "supplier"], separate=True)
    creator = kit[manufacturer]
    p7s = sign(sub.sheet, [creator], pss=style == "pss")
    if style == "ski":
        p7s = by_key_identifier(p7s, [creator])
    if broken:
        p7s = corrupt(p7s)
    sub.signatures[0] = p7s
    fp = party(creator)["certificate_sha256"]
    expect = [
        f"PROBLEM entry 0: evidence: Z4.1-signature: signature {sha(p7s)[:12]} signer 1: {NOT_VERIFIED}",
        no_signature(fp),
    ]
    return Crafted([association(kit, sub, r, manufacturer)], sub.files, expect if broken else [])


STYLES = [("ecdsa", "acme"), ("rsa-pkcs1v15", "acme-rsa"), ("rsa-pss", "acme-rsa"), ("signer-by-key-id", "acme")]
for _style, _who in STYLES:
    _s = {"rsa-pkcs1v15": "rsa", "rsa-pss": "pss", "signer-by-key-id": "ski"}.get(_style, _style)
    ACCEPTS.append(pytest.param(lambda kit, w=_who, s=_s: _styled(kit, w, s, False), id=f"cms-{_style}"))
    REFUSALS.append(pytest.param(lambda kit, w=_who, s=_s: _styled(kit, w, s, True), id=f"cms-{_style}-corrupted"))


def _countersigned(kit: Kit, broken: bool) -> Crafted:
    """Acme signs; the Supplier countersigns Acme's signature (an unsigned attribute)."""
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r], ["acme"])
    p7s = countersign(sub.signatures[0], kit["supplier"])
    if broken:
        p7s = corrupt(p7s, counter=True)
    sub.signatures = [p7s]
    # One bad SignerInfo refuses the whole file: Acme's signature in it counts no more than the Supplier's.
    expect = [
        f"PROBLEM entry 0: evidence: Z4.1-signature: signature {sha(p7s)[:12]} signer 1 countersignature 1: "
        + NOT_VERIFIED,
    ]
    return Crafted([association(kit, sub, r)], sub.files, expect if broken else [])


ACCEPTS.append(pytest.param(lambda kit: _countersigned(kit, False), id="cms-countersignature"))
REFUSALS.append(pytest.param(lambda kit: _countersigned(kit, True), id="cms-countersignature-corrupted"))


@refused("cms-signature-over-another-file")
def other_file(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r])
    sub.signatures = [sign(sub.sheet + b"\r\n", [kit["acme"], kit["supplier"]])]
    line = f"Z4.1-signature: signature {sha(sub.signatures[0])[:12]} signer 1: messageDigest does not match the "
    line += "spreadsheet"
    expect = [f"PROBLEM entry 0: evidence: {line}"]
    return Crafted([association(kit, sub, r)], sub.files, expect)


@refused("cms-key-id-of-no-certificate-carried")
def unknown_key_id(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r], ["acme"])
    info = acms.ContentInfo.load(sub.signatures[0])
    info["content"]["signer_infos"][0]["sid"] = acms.SignerIdentifier({"subject_key_identifier": b"\x01" * 20})
    sub.signatures = [bytes(info.dump(force=True))]
    line = (
        f"Z4.2-cms-profile: signature {sha(sub.signatures[0])[:12]} signer 1: the signer's certificate is not in the "
        "SignedData; embed it (drop `openssl cms -nocerts`): the publication checks and logs the certificate the file "
        "was signed with, never one it would look up"
    )
    expect = [f"PROBLEM entry 0: evidence: {line}"]
    return Crafted([association(kit, sub, r)], sub.files, expect)


@refused("entry-claims-another-organisation")
def other_identity(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r])
    e = association(kit, sub, r)
    e["manufacturer"]["organisation"] = "Acme Meters Ltd"
    line = (
        "PROBLEM entry 0: evidence: the manufacturer's certificate names Acme Meters (ID 1001, Manufacturer), "
        "not Acme Meters Ltd (ID 1001, Manufacturer)"
    )
    return Crafted([e], sub.files, [line])


def _edited(
    kit: Kit, edit: Any, edited: str = "acme", endorser: str = "supplier", device: str = "ESME"
) -> tuple[Submission, dict[str, Any]]:
    """One row, each party's signature in its own file; ``edited``'s signed attributes changed and re-signed."""
    r = row("M1", image_hash("m1"), device)
    sub = submit(kit, [r], ["acme", endorser], separate=True)
    i = 0 if edited == "acme" else 1
    sub.signatures[i] = edit_signed_attrs(sub.signatures[i], kit[edited], edit)
    return sub, association(kit, sub, r, endorser=endorser)


ACME, SUPPLIER = "Acme Meters (ID 1001, Manufacturer)", "Bright Energy Supply (ID 2001, Supplier)"


@refused("signed-after-the-approval")
def signed_late(kit: Kit) -> Crafted:
    approved = publication.now_utc()
    later = approved + dt.timedelta(minutes=30)
    sub, e = _edited(kit, set_attr("signing_time", acms.Time({"utc_time": later})))
    e["approved_at"] = iso(approved)
    line = (
        f"PROBLEM entry 0: Z4.3a-signing-time: signature {sha(sub.signatures[0])[:12]} signer 1 ({ACME}): signed at "
        f"{iso(later)}, later than the approval time {iso(approved)} (at most 300 s of clock skew is allowed): "
        "correct the signer's clock and sign again"
    )
    return Crafted([e], sub.files, [line])


@accepted("signed-within-the-clock-skew-of-the-approval")
def signed_within_skew(kit: Kit) -> Crafted:
    approved = publication.now_utc()
    later = acms.Time({"utc_time": approved + dt.timedelta(minutes=4)})
    sub, e = _edited(kit, set_attr("signing_time", later))
    e["approved_at"] = iso(approved)
    return Crafted([e], sub.files)


def _validity(cert: x509.Certificate) -> str:
    return f"(valid {iso(cert.not_valid_before_utc)} to {iso(cert.not_valid_after_utc)})"


@refused("certificate-not-valid-at-the-signing-time")
def signed_before_validity(kit: Kit) -> Crafted:
    early = acms.Time({"utc_time": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)})
    sub, e = _edited(kit, set_attr("signing_time", early))
    line = (
        f"PROBLEM entry 0: Z4.3a-signing-time: signature {sha(sub.signatures[0])[:12]} signer 1 ({ACME}): the "
        f"certificate was not valid at the signing time 2020-01-01T00:00:00Z {_validity(kit['acme'].cert)}"
    )
    return Crafted([e], sub.files, [line])


@refused("endorser-certificate-not-valid-at-the-signing-time")
def endorser_signed_before_validity(kit: Kit) -> Crafted:
    # The Supplier's signature is dated a day before its certificate was issued.
    early = acms.Time({"utc_time": kit["supplier"].cert.not_valid_before_utc - dt.timedelta(days=1)})
    sub, e = _edited(kit, set_attr("signing_time", early), edited="supplier")
    when = iso(kit["supplier"].cert.not_valid_before_utc - dt.timedelta(days=1))
    line = (
        f"PROBLEM entry 0: Z4.3a-signing-time: signature {sha(sub.signatures[1])[:12]} signer 1 ({SUPPLIER}): the "
        f"certificate was not valid at the signing time {when} {_validity(kit['supplier'].cert)}"
    )
    return Crafted([e], sub.files, [line])


DCC = "Smart DCC Ltd (ID 9001, DCC)"


def signer_cert(sub: Submission, rule: str = "Z4.3a-certificate", n: int = -1, who: str = DCC) -> str:
    """The start of a problem line about the certificate of the signer of ``sub``'s signature file ``n`` (by
    default the endorser's, the last): the rule it breaks (P-current-crl: revocation the site's CRLs cannot tell)."""
    return f"PROBLEM entry 0: {rule}: signature {sha(sub.signatures[n])[:12]} signer 1 ({who}):"


@refused("certificate-not-valid-at-the-approval")
def expired(kit: Kit) -> Crafted:
    sub, e = _edited(kit, drop_attr("signing_time"), "triage-expired", "triage-expired", "CHF")
    cert = describe_cert(kit["triage-expired"].cert)
    line = f"{signer_cert(sub)} {cert} was not valid at the approval time {e['approved_at']}"
    return Crafted([e], sub.files, [line])


def _dcc_endorsed(kit: Kit, endorser: str, extra: Sequence[x509.Certificate] = ()) -> tuple[Submission, dict[str, Any]]:
    """A comms hub model endorsed by ``endorser`` (its signature file also carries ``extra``)."""
    r = row("C1", image_hash("c1"), "CHF")
    sheet = csv_bytes([r])
    signatures = [sign(sheet, [kit["acme"]]), sign(sheet, [kit[endorser]], extra=extra)]
    sub = Submission(sheet, json.dumps(REQUEST).encode(), signatures)
    return sub, association(kit, sub, r, endorser=endorser)


@refused("certificate-not-chained-to-the-pinned-root")
def self_signed(kit: Kit) -> Crafted:
    sub, e = _dcc_endorsed(kit, "dcc-self-signed")
    cert = describe_cert(kit["dcc-self-signed"].cert)
    line = f"{signer_cert(sub)} {cert} does not chain to a pinned IKI root: {cert} is self-signed and not a pinned IKI "
    line += "root"
    return Crafted([e], sub.files, [line])


@refused("certificate-without-the-iki-eku")
def no_eku(kit: Kit) -> Crafted:
    sub, e = _dcc_endorsed(kit, "dcc-no-eku")
    cert = describe_cert(kit["dcc-no-eku"].cert)
    line = f"{signer_cert(sub)} {cert} lacks the IKI extended key usage 1.3.6.1.4.1.55555.1.1"
    return Crafted([e], sub.files, [line])


@refused("certificate-names-no-crl-on-the-site")
def no_crl(kit: Kit) -> Crafted:
    sub, e = _dcc_endorsed(kit, "dcc-unlisted-ca", [kit.unpublished_ca])
    cert = describe_cert(kit["dcc-unlisted-ca"].cert)
    line = f"{signer_cert(sub, 'P-current-crl')} {cert} names no CRL on this site; revocation cannot be checked"
    return Crafted([e], sub.files, [line])


@refused("certificate-crl-not-on-the-site")
def crl_elsewhere(kit: Kit) -> Crafted:
    sub, e = _dcc_endorsed(kit, "dcc-crl-elsewhere")
    cert = describe_cert(kit["dcc-crl-elsewhere"].cert)
    line = f"{signer_cert(sub, 'P-current-crl')} revocation of {cert} cannot be checked: the CRL of nosuch is "
    line += "unavailable: CRL of "
    line += "nosuch: … /crl/nosuch.crl does not exist"
    return Crafted([e], sub.files, [line])


@refused("certificate-crl-stale")
def crl_stale(kit: Kit) -> Crafted:
    sub, e = _dcc_endorsed(kit, "dcc")
    past = publication.now_utc() - dt.timedelta(days=30)
    stale = kit.world.crl(7, past, past + dt.timedelta(days=7))
    line = (
        "{} revocation of {} cannot be checked: the CRL of ica is "
        f"stale: it expired 23 days ago (nextUpdate {iso(past + dt.timedelta(days=7))}); do not rely on it. "
        "Revocations made since may be missing."
    )
    expect = [
        line.format(signer_cert(sub, "P-current-crl", n, who), describe_cert(kit[label].cert))
        for n, who, label in [(0, ACME, "acme"), (1, DCC, "dcc")]
    ]
    return Crafted([e], sub.files, expect, tamper=lambda site: swap(site, "crl/ica.crl", stale))


@refused("certificate-revoked-before-the-approval")
def revoked(kit: Kit) -> Crafted:
    cert = kit["triage-revoked"].cert
    crl = x509.load_der_x509_crl((kit.world.site / "crl/ica.crl").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    sub, e = _dcc_endorsed(kit, "triage-revoked")
    e["approved_at"] = iso(entry.revocation_date_utc + dt.timedelta(minutes=1))
    line = (
        f"{signer_cert(sub)} the certificate of Smart DCC Ltd (serial {cert.serial_number:x}) was revoked on "
        f"{iso(entry.revocation_date_utc)} (keyCompromise), before this approval at {e['approved_at']}"
    )
    return Crafted([e], sub.files, [line])


def duplicated_extensions(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` with every extension twice (its signature no longer verifies; cryptography loads it)."""
    a = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    exts = list(a["tbs_certificate"]["extensions"])
    a["tbs_certificate"]["extensions"] = ax509.Extensions(exts + exts)
    return x509.load_der_x509_certificate(a.dump(force=True))


def carried(p7s: bytes, old: x509.Certificate, new: x509.Certificate) -> bytes:
    """The SignedData with certificate ``old`` replaced by ``new`` (the SignerInfos untouched)."""
    info = acms.ContentInfo.load(p7s)
    signed = info["content"]
    old_der, new_der = (c.public_bytes(serialization.Encoding.DER) for c in (old, new))
    certs = [
        acms.CertificateChoices({"certificate": ax509.Certificate.load(new_der)}) if c.chosen.dump() == old_der else c
        for c in signed["certificates"]
    ]
    signed["certificates"] = acms.CertificateSet(certs)
    return bytes(acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


@refused("cms-signer-key-of-an-unknown-algorithm")
def unknown_key(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r], separate=True)
    a = ax509.Certificate.load(kit["acme"].cert.public_bytes(serialization.Encoding.DER))
    a["tbs_certificate"]["subject_public_key_info"]["algorithm"]["algorithm"] = "1.2.3.4"
    odd = x509.load_der_x509_certificate(a.dump(force=True))
    sub.signatures[0] = carried(sub.signatures[0], kit["acme"].cert, odd)
    expect = [
        f"PROBLEM entry 0: evidence: Z4.2-cms-profile: signature {sha(sub.signatures[0])[:12]} signer 1: the signer's "
        "public key cannot be used (",
        no_signature(party(kit["acme"])["certificate_sha256"]),
    ]
    return Crafted([association(kit, sub, r)], sub.files, expect)


@refused("cms-signer-certificate-with-duplicated-extensions")
def signer_duplicated_extensions(kit: Kit) -> Crafted:
    r = row("C1", image_hash("c1"), "CHF")
    sheet = csv_bytes([r])
    dcc = kit["dcc"]
    odd = duplicated_extensions(dcc.cert)
    endorsement = carried(sign(sheet, [dcc]), dcc.cert, odd)
    sub = Submission(sheet, json.dumps(REQUEST).encode(), [sign(sheet, [kit["acme"]]), endorsement])
    e = association(kit, sub, r, endorser="dcc")
    e["endorser"]["certificate_sha256"] = odd.fingerprint(hashes.SHA256()).hex()
    line = f"{signer_cert(sub)} {describe_cert(odd)} has malformed extensions ("
    return Crafted([e], sub.files, [line])


@refused("cms-intermediate-with-duplicated-extensions")
def intermediate_duplicated_extensions(kit: Kit) -> Crafted:
    # A carried CA certificate that cryptography cannot read is named, and the audit goes on to the next entry.
    odd = duplicated_extensions(kit.unpublished_ca)
    sub, e = _dcc_endorsed(kit, "dcc-unlisted-ca", [odd])
    sub2, e2 = good(kit, "M2")
    line = f"{signer_cert(sub)} {describe_cert(odd)} has malformed extensions (Duplicate"
    return Crafted([e, e2], [*sub.files, *sub2.files], [line])


def _xlsx_case(name: str, edit: Callable[[bytes], bytes], error: str) -> None:
    def build(kit: Kit) -> Crafted:
        r = row("M1", image_hash("m1"))
        sheet = edit(xlsx_bytes([r]))
        sub = Submission(sheet, json.dumps(REQUEST).encode(), [sign(sheet, [kit["acme"], kit["supplier"]])])
        line = f"PROBLEM entry 0: {UNREADABLE} ({error})"
        return Crafted([association(kit, sub, r)], sub.files, [line])

    REFUSALS.append(pytest.param(build, id=name))


SHEET = "xl/worksheets/sheet1.xml"


def _rewritten(data: bytes, payload: bytes) -> bytes:
    """The workbook with the worksheet replaced by ``payload`` (deflated)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, payload if info.filename == SHEET else src.read(info))
    return out.getvalue()


def _bad_deflate(data: bytes) -> bytes:
    """The worksheet's deflate stream starts with a reserved block type (CRCs untouched)."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(SHEET)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    return data[:start] + b"\xff" * 4 + data[start + 4 :]


def _unknown_method(data: bytes) -> bytes:
    """The worksheet's central directory entry names compression method 99 (WinZip AES)."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46 : at + 46 + len(SHEET)] != SHEET.encode():
        at = data.index(b"PK\x01\x02", at + 4)
    return data[: at + 10] + struct.pack("<H", 99) + data[at + 12 :]


_xlsx_case("xlsx-malformed-xml", lambda d: _rewritten(d, b"<worksheet><sheetData><row>"), "ParseError")
_xlsx_case("xlsx-bad-deflate-stream", _bad_deflate, "error")
_xlsx_case("xlsx-unknown-compression-method", _unknown_method, "NotImplementedError")


# -- the signed spreadsheet, read again by the intake's reader (Z4.2-spreadsheet, -row-values, Z4.1) ---------


def _workbook(rows: Sequence[Sequence[Any]]) -> bytes:
    """An .xlsx file of ``rows`` as openpyxl types them: text, numbers, booleans, errors ("#N/A"), formulas ("=")."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    for values in rows:
        sheet.append(list(values))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _zip_edit(data: bytes, drop: Sequence[str] = (), add: dict[str, bytes] | None = None) -> bytes:
    """The .xlsx archive without the members ``drop``, with the members ``add`` (deflated)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename not in drop:
                dst.writestr(info.filename, src.read(info))
        for name, payload in (add or {}).items():
            dst.writestr(name, payload)
    return out.getvalue()


def _sheet_case(name: str, sheet: Callable[[dict[str, str]], bytes], *breaks: str) -> None:
    """The entry is row M1 (``r``) of a spreadsheet ``sheet(r)``, signed by both parties, that breaks a rule
    as ``breaks`` says. A spreadsheet that breaks a rule as a whole shows no rows (and no "no row" line);
    one whose other row breaks it still shows row M1."""

    def build(kit: Kit) -> Crafted:
        r = row("M1", image_hash("m1"))
        data = sheet(r)
        sub = Submission(data, json.dumps(REQUEST).encode(), [sign(data, [kit["acme"], kit["supplier"]])])
        expect = [f"PROBLEM entry 0: evidence: the signed spreadsheet breaks {b}" for b in breaks]
        return Crafted([association(kit, sub, r)], sub.files, expect)

    REFUSALS.append(pytest.param(build, id=name))


def _values(r: dict[str, str], **change: Any) -> list[Any]:
    return [change.get(c, r[c]) for c in COLUMNS]


def _bad_row(**change: Any) -> Callable[[dict[str, str]], bytes]:
    """A CSV spreadsheet: row 2 the entry's, row 3 model M2 with ``change``."""
    return lambda r: csv_bytes([r, {**r, "model_id": "M2", "image_hash": image_hash("m2"), **change}])


def _bad_cell(value: Any) -> Callable[[dict[str, str]], bytes]:
    """An .xlsx spreadsheet: row 2 the entry's, row 3 model M2 whose firmware_version cell is ``value``."""
    return lambda r: _workbook(
        [COLUMNS, _values(r), _values(r, model_id="M2", image_hash=image_hash("m2"), firmware_version=value)]
    )


ROW = "Z4.2-row-values (row 3): "
SPREADSHEET = "Z4.2-spreadsheet: "
# Z4.2-folder: the size limit is the folder's (a logged spreadsheet over it is refused like one in the inbox).
_sheet_case(
    "spreadsheet-over-5-mib",
    lambda r: csv_bytes([r]) + b"\r\n" * (5 * 1024 * 1024 // 2),
    f"Z4.2-folder: the spreadsheet is {len(csv_bytes([row('M1', image_hash('m1'))])) + 5 * 1024 * 1024} bytes; "
    "the limit is 5242880",
)
_sheet_case("spreadsheet-empty", lambda r: b"\r\n,,\r\n", SPREADSHEET + "the spreadsheet is empty (no header row)")
_sheet_case(
    "spreadsheet-header-only", lambda r: csv_bytes([]), SPREADSHEET + "the spreadsheet has a header but no rows"
)
_sheet_case(
    "spreadsheet-header-missing-a-column",
    lambda r: csv_bytes([r]).replace(b"image_hash", b"image", 1),
    SPREADSHEET + "row 1 must be the header; missing columns: image_hash",
)
_sheet_case(
    "spreadsheet-over-1000-rows",
    lambda r: csv_bytes([{**r, "model_id": f"M{i}"} for i in range(1, 1002)]),
    SPREADSHEET + "more than 1000 rows",
)
_sheet_case(
    "csv-not-utf8",
    lambda r: csv_bytes([r, {**r, "model_id": "M2", "manufacturer_name": "Acme Meters GmbH"}]).replace(
        b"GmbH", b"G\xe9"
    ),
    SPREADSHEET + "the .csv file is not UTF-8",
)
_sheet_case(
    "csv-nul-byte",
    lambda r: csv_bytes([r]) + b"\x00\r\n",
    SPREADSHEET + "the .csv file contains NUL bytes; is it really CSV?",
)
_sheet_case(
    "csv-field-over-the-csv-limit",
    lambda r: csv_bytes([r, {**r, "model_id": "M2", "manufacturer_name": "x" * 200_000}]),
    SPREADSHEET + "the .csv file is malformed: field larger than field limit (131072)",
)
_sheet_case(
    "xlsx-declares-a-dtd",
    lambda r: _rewritten(xlsx_bytes([r]), b'<!DOCTYPE worksheet [<!ENTITY e "M1">]><worksheet/>'),
    SPREADSHEET + "xl/worksheets/sheet1.xml declares a DTD or entities",
)
_sheet_case(
    "xlsx-without-a-worksheet",
    lambda r: _zip_edit(xlsx_bytes([r]), drop=[SHEET]),
    SPREADSHEET + "the .xlsx file has no first worksheet",
)
_sheet_case(
    "xlsx-over-200-members",
    lambda r: _zip_edit(xlsx_bytes([r]), add={f"xl/media/{i}.txt": b"x" for i in range(200)}),
    SPREADSHEET + "the .xlsx archive has more than 200 members or expands beyond 52428800",
)


def _zip_bomb(r: dict[str, str]) -> bytes:
    return _zip_edit(xlsx_bytes([r]), add={"xl/media/zeros.bin": bytes(2 * 1024 * 1024)})


def _bomb_ratio() -> int:
    info = zipfile.ZipFile(io.BytesIO(_zip_bomb(row("M1", image_hash("m1"))))).getinfo("xl/media/zeros.bin")
    return info.file_size // info.compress_size


_sheet_case(
    "xlsx-zip-bomb", _zip_bomb, SPREADSHEET + f"member 'xl/media/zeros.bin' compresses {_bomb_ratio()}:1 (a zip bomb?)"
)
_sheet_case(
    "spreadsheet-rows-of-two-manufacturers",
    _bad_row(manufacturer_id="1002", manufacturer_name="Other Mfr"),
    "Z4.1-one-manufacturer: the rows name 2 manufacturers (1001, 1002); submit one manufacturer's images",
)
_sheet_case(
    "row-value-too-long",
    _bad_row(manufacturer_name="x" * 129),
    ROW + "manufacturer_name is longer than 128 characters",
)
_sheet_case("row-value-empty", _bad_row(hardware_version=" "), ROW + "hardware_version is empty")
_sheet_case(
    "row-image-hash-not-hex", _bad_row(image_hash="z" * 64), ROW + f"image_hash '{'z' * 64}' is not 64 hex digits"
)
_sheet_case("row-device-type-unknown", _bad_row(device_type="KETTLE"), ROW + "unknown device type 'KETTLE'")
_sheet_case("row-smets-version-unknown", _bad_row(smets_version="SMETS3"), ROW + "'SMETS3' is not SMETS1 or SMETS2")
_sheet_case(
    "row-repeats-a-device-model",
    lambda r: csv_bytes([r, {**r, "image_hash": image_hash("m1-again")}]),
    ROW + "repeats the device model of row 2",
)
_sheet_case("xlsx-formula-cell", _bad_cell("=1+1"), ROW + "firmware_version is a formula; submit values only")
_sheet_case("xlsx-boolean-cell", _bad_cell(True), ROW + "firmware_version is a boolean cell; format the column as text")
_sheet_case("xlsx-error-cell", _bad_cell("#N/A"), ROW + "firmware_version is an error cell; format the column as text")
_sheet_case("xlsx-number-cell", _bad_cell(1.5), ROW + "firmware_version is the number 1.5; format the column as text")


@accepted("xlsx-integer-cell")
def integer_cell(kit: Kit) -> Crafted:
    # A plain integer reads the same as typed: the row is FW 7's.
    r = row("M1", image_hash("m1"), firmware_version="7")
    sheet = _workbook([COLUMNS, _values(r, firmware_version=7)])
    sub = Submission(sheet, json.dumps(REQUEST).encode(), [sign(sheet, [kit["acme"], kit["supplier"]])])
    return Crafted([association(kit, sub, r)], sub.files)


@refused("evidence-file-over-8-mib")
def oversized(kit: Kit) -> Crafted:
    r = row("M1", image_hash("m1"))
    sub = submit(kit, [r], request=b" " * (8 * 1024 * 1024 + 1) + json.dumps(REQUEST).encode())
    line = f"PROBLEM entry 0: evidence: evidence {sha(sub.request)}: … is larger than the 8.0 MiB allowed for it"
    return Crafted([association(kit, sub, r)], sub.files, [line])


@refused("crl-archive-over-the-size-limit")
def crl_oversized(kit: Kit) -> Crafted:
    line = "PROBLEM entry 0: CRL: … crl/archive/ica/1.crl is larger than the 100 bytes allowed for it"
    return Crafted([_crl(kit, 1)], (), [line], args=["--max-crl-bytes", "100"])


# -- crl/v1 entries ------------------------------------------------------------------------------------


def _crl_case(name: str, edit: Callable[[Kit], list[dict[str, Any]]], line: str) -> None:
    def build(kit: Kit) -> Crafted:
        return Crafted(edit(kit), (), [line])

    REFUSALS.append(pytest.param(build, id=name))


def _crl(kit: Kit, n: int, **fields: Any) -> dict[str, Any]:
    return {**kit.crl_entries[n], **fields}


FIELDS = "['issuer', 'next_update', 'number', 'sha256', 'this_update', 'type']"
CRL_FORMAT = "PROBLEM entry 0: format: issuer must be an issuer name and number a CRL number"
for _name, _fields in [
    ("number-text", {"number": "1"}),
    ("number-bool", {"number": True}),
    ("number-negative", {"number": -1}),
    ("number-beyond-20-octets", {"number": 2**160}),
    ("issuer-path", {"issuer": "../ica"}),
    ("issuer-number", {"issuer": 5}),
]:
    _crl_case(f"crl-{_name}", lambda kit, f=_fields: [_crl(kit, 1, **f)], CRL_FORMAT)
_crl_case(
    "crl-sha256-number",
    lambda kit: [_crl(kit, 1, sha256=5)],
    "PROBLEM entry 0: format: sha256 is not 64 lowercase hex digits",
)
_crl_case(
    "crl-field-missing",
    lambda kit: [{k: v for k, v in _crl(kit, 1).items() if k != "next_update"}],
    f"PROBLEM entry 0: format: a crl/v1 entry has exactly the fields {FIELDS}",
)
_crl_case(
    "crl-numbers-out-of-order",
    lambda kit: [_crl(kit, 2), _crl(kit, 1)],
    "PROBLEM entry 1: CRL number 1 of ica is not above number 2 logged at entry 0",
)
_crl_case(
    "crl-number-repeated",
    lambda kit: [_crl(kit, 1), _crl(kit, 1)],
    "PROBLEM entry 1: CRL number 1 of ica is not above number 1 logged at entry 0",
)
_crl_case(
    "crl-archive-missing",
    lambda kit: [_crl(kit, 1, number=9)],
    "PROBLEM entry 0: the archived CRL crl/archive/ica/9.crl is not published",
)
_crl_case(
    "crl-archive-altered",
    lambda kit: [_crl(kit, 1, sha256=FP)],
    "PROBLEM entry 0: crl/archive/ica/1.crl does not have the logged SHA-256: altered or swapped",
)
_crl_case(
    "crl-fields-differ",
    lambda kit: [_crl(kit, 1, this_update="2020-01-01T00:00:00Z")],
    "PROBLEM entry 0: the logged fields do not match the archived CRL ica #1",
)
_crl_case(
    "crl-time-a-list",
    lambda kit: [_crl(kit, 1, next_update=[_crl(kit, 1)["next_update"]])],
    "PROBLEM entry 0: the logged fields do not match the archived CRL ica #1",
)


@refused("crl-archived-by-another-ca")
def crl_forged(kit: Kit) -> Crafted:
    now = publication.now_utc()
    forged = kit.world.crl(5, now, now + dt.timedelta(days=7), stranger=True)
    entry = _crl(
        kit, 1, number=5, sha256=sha(forged), this_update=iso(now), next_update=iso(now + dt.timedelta(days=7))
    )
    return Crafted(
        [entry],
        (),
        ["PROBLEM entry 0: the archived CRL ica #5 does not verify: the CRL's signature does not verify under the key"],
        tamper=lambda site: swap(site, "crl/archive/ica/5.crl", forged),
    )


@accepted("crl-entries-in-order")
def crl_ok(kit: Kit) -> Crafted:
    return Crafted(list(kit.crl_entries))


# -- lookup/v1: the commitment clients' proven verdicts rest on -------------------------------------------


def _commitment(entries: Sequence[dict[str, Any]], **change: Any) -> dict[str, Any]:
    lookup = Lookup()
    for i, e in enumerate(entries):
        lookup.add(i, e)
    return {**json.loads(lookup.commitment()), **change}


@accepted("lookup-commitment-after-crl-entries")
def commitment_ok(kit: Kit) -> Crafted:
    return Crafted([*kit.crl_entries, _commitment(kit.crl_entries)])


@refused("lookup-commitment-hides-an-association")
def commitment_hides(kit: Kit) -> Crafted:
    sub, e = good(kit)
    lie = _commitment([])  # as if the association were not logged: clients would be told "not found"
    line = (
        "lookup/v1: the commitment does not match the entries before it (verifiers trusting it would get wrong "
        "answers); expected"
    )
    return Crafted([e, {**lie, "size": 1}], sub.files, [f"PROBLEM entry 1: {line}"])


@refused("lookup-commitment-names-an-older-crl")
def commitment_old_crl(kit: Kit) -> Crafted:
    older = _commitment(kit.crl_entries[:2])
    line = "lookup/v1: the commitment does not match the entries before it"
    n = len(kit.crl_entries)
    return Crafted([*kit.crl_entries, {**older, "size": n}], (), [f"PROBLEM entry {n}: {line}"])


# =====================================================================================================
# The tests
# =====================================================================================================


@pytest.mark.parametrize("build", REFUSALS)
def test_audit_reports_the_broken_rule(
    kit: Kit, build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crafted = build(kit)
    assert crafted.expect
    r = audit(kit, craft(kit, crafted, tmp_path / "site"), capsys, crafted)
    assert r.code == 1, r.out
    assert_reported(r, crafted.expect)
    if r.lines("PROBLEM "):
        assert "AUDIT FAILED" in r.out


@pytest.mark.parametrize("build", ACCEPTS)
def test_audit_passes_the_good_variant(
    kit: Kit, build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crafted = build(kit)
    site = craft(kit, crafted, tmp_path / "site")
    r = audit(kit, site, capsys, crafted)
    assert r.code == 0, r.out
    assert not r.lines("PROBLEM ", "FAILED", "warning")
    assert "AUDIT PASSED\n" in r.out
    assert f"audit of {site / 'log'} at size {len(crafted.entries)}" in r.out


def _single_assignments(func: ast.FunctionDef) -> dict[str, ast.expr]:
    """The local names ``func`` assigns exactly once, by a plain ``name = value``: their values."""
    stores: dict[str, int] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stores[node.id] = stores.get(node.id, 0) + 1
    return {
        node.targets[0].id: node.value
        for node in ast.walk(func)
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and stores[node.targets[0].id] == 1
    }


def message_parts(node: ast.expr, names: dict[str, ast.expr]) -> tuple[list[str], list[list[str]]]:
    """The literal parts of a message expression (not the expressions inside its placeholders), and the
    alternatives of its conditional parts (``a if c else b``, in place or through a local name assigned
    once): each alternative the literal parts of one branch."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value], []
    if isinstance(node, ast.Name) and node.id in names:
        return message_parts(names[node.id], names)
    if isinstance(node, ast.JoinedStr | ast.BinOp):
        pieces = node.values if isinstance(node, ast.JoinedStr) else [node.left, node.right]
        fixed: list[str] = []
        alternatives: list[list[str]] = []
        for piece in pieces:
            f, a = message_parts(piece.value if isinstance(piece, ast.FormattedValue) else piece, names)
            fixed += f
            alternatives += a
        return fixed, alternatives
    if isinstance(node, ast.IfExp):
        return [], [v for branch in (node.body, node.orelse) for v in message_variants(branch, names)]
    return [], []


def message_variants(node: ast.expr, names: dict[str, ast.expr]) -> list[list[str]]:
    """What the expected lines must show of a message: its literal parts, with each alternative once."""
    fixed, alternatives = message_parts(node, names)
    return [fixed + a for a in alternatives] or [fixed]


def messages(func: ast.FunctionDef) -> list[list[str]]:
    """Every message ``func`` reports, as ``message_variants``: the text of ``self.problem``, ``RuleFinding``,
    ``VerifyFailed``, ``SheetError`` and ``bad`` (``parse_request``'s), of what it adds to its ``problems``,
    ``findings`` or ``out``, and of the lists of messages it returns (the association rules')."""
    names = _single_assignments(func)
    found: list[ast.expr] = []
    for node in ast.walk(func):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.List):
            found += node.value.elts
        if not isinstance(node, ast.Call) or not node.args:
            continue
        call = ast.unparse(node.func)
        receiver, _, method = call.rpartition(".")
        if call in ("self.problem", "RuleFinding") and len(node.args) > 1:
            found.append(node.args[1])
        elif call in ("VerifyFailed", "SheetError", "bad"):
            found.append(node.args[0])
        elif method in ("append", "extend") and receiver.rpartition(".")[2] in ("problems", "findings", "out"):
            arg = node.args[0]
            found.append(arg.elt if isinstance(arg, ast.GeneratorExp | ast.ListComp) else arg)
    out = []
    for message in found:
        for variant in message_variants(message, names):
            parts = [p.strip() for p in variant if len(p.strip()) >= 4]
            if parts:
                out.append(parts)
    return out


#: The rule check functions the audit runs besides ``ASSOCIATION_RULES``' (each with what it calls); any other
#: function ``Auditor`` calls that returns ``RuleFinding``s is scanned too.
RULE_FUNCTIONS = ("signing_time_problems", "one_manufacturer", "parse_request", "read_sheet")
#: Messages of those that no audit can report, and why.
NOT_BY_THE_AUDIT = {
    # read_sheet checks a file name where there is one (intake, check-submission); logged evidence has none.
    "the spreadsheet must be .xlsx or .csv": "no file name",
    "an .xlsx file is a zip archive, a .csv file plain text": "no file name",
    # A logged entry always names both parties: the rules judge what it claims, and a party whose signature is
    # missing is an evidence problem ("no valid signature ... by the endorser's certificate"). Intake's cases
    # (tests/test_intake.py) reach these.
    "; no endorsement found": "an entry always names its endorser",
    "no valid signature by a Manufacturer certificate": "an entry always names its manufacturer",
}
#: Rules only intake can find broken: the audit reads no inbox.
INTAKE_ONLY_RULES = {"Z4.2-no-links"}


def _rule_functions(tree: ast.Module, auditor: ast.ClassDef) -> list[ast.FunctionDef]:
    """The association rules' check functions, ``RULE_FUNCTIONS`` and the functions returning ``RuleFinding``s
    that ``auditor`` calls, with every module function they call."""
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    called = {n.func.id for n in ast.walk(auditor) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    returns = {name: ast.unparse(f.returns) if f.returns else "" for name, f in functions.items()}
    findings = sorted(f for f in called & set(functions) if "RuleFinding" in returns[f])
    todo = [check.__name__ for _, check in ASSOCIATION_RULES] + list(RULE_FUNCTIONS) + findings
    seen: dict[str, ast.FunctionDef] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = functions[name]
        todo += [
            n.func.id
            for n in ast.walk(functions[name])
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions
        ]
    return list(seen.values())


def test_every_problem_the_audit_reports_has_a_case(kit: Kit) -> None:
    """The matrix grows with the audit: the fixed text of every problem ``Auditor`` (and the
    ``association_shape`` it calls) can report, and of every audit failure, is in an expected line; so is
    every message of the submission rules the audit judges again (each branch of a conditional part in some
    line), and the ID of every rule but the intake's own."""
    tree = ast.parse(VERIFIER.read_text())
    scopes = [n for n in tree.body if getattr(n, "name", None) in ("Auditor", "association_shape")]
    audit = [m for scope in scopes for f in ast.walk(scope) if isinstance(f, ast.FunctionDef) for m in messages(f)]
    assert len(audit) >= 45
    (auditor,) = [n for n in scopes if isinstance(n, ast.ClassDef)]
    rules = [m for f in _rule_functions(tree, auditor) for m in messages(f)]
    assert len(rules) >= 50
    exempt = [m for m in rules if any(text in part for text in NOT_BY_THE_AUDIT for part in m)]
    assert {text for text in NOT_BY_THE_AUDIT if any(text in part for m in exempt for part in m)} == set(
        NOT_BY_THE_AUDIT
    ), "an exemption no longer names a message"
    expected = [line for case in REFUSALS for line in case.values[0](kit).expect]
    wanted = audit + [m for m in rules if m not in exempt]
    missing = [parts for parts in wanted if not any(all(p in line for p in parts) for line in expected)]
    assert not missing, f"no matrix case reports {missing}"
    ids = {rule.id for rule in RULES}
    assert ids >= INTAKE_ONLY_RULES, "an intake-only rule is no rule"
    unreported = sorted(
        i
        for i in ids - INTAKE_ONLY_RULES
        if not any(re.search(rf" {re.escape(i)}( \(row \d+\))?: ", x) for x in expected)
    )
    assert not unreported, f"no matrix case reports a problem of rule {unreported}"


def test_warnings_about_one_certificate_are_one_line(
    kit: Kit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A certificate revoked after the approvals it signed, its key declared invalid from before them:
    one warning naming it and listing its entries (not one per entry), and a list in --json."""
    t = publication.now_utc()
    approved, revoked_at = t + dt.timedelta(hours=1), t + dt.timedelta(days=1)
    rows = [row(f"W{i}", image_hash(f"w{i}")) for i in range(3)]
    sub = submit(kit, rows, ["acme", "supplier-2"])
    entries = [association(kit, sub, r, endorser="supplier-2", approved=approved) for r in rows]
    other, e3 = good(kit, "W3", approved=approved)  # endorsed by another certificate: no warning
    endorser, creator = kit["supplier-2"].cert, kit["acme"].cert
    crl = kit.world.crl(
        3,
        revoked_at,
        revoked_at + dt.timedelta(days=7),
        [
            Revocation(endorser.serial_number, revoked_at, "keyCompromise", invalidity_date=t),
            Revocation(creator.serial_number, revoked_at, "superseded"),  # the approvals stand: no warning
        ],
    )
    crafted = Crafted(
        [*entries, e3],
        [*sub.files, *other.files],
        tamper=lambda site: swap(site, "crl/ica.crl", crl),
        now=t + dt.timedelta(days=2),
    )
    site = craft(kit, crafted, tmp_path / "site")
    text = (
        f"the certificate of Bright Energy Supply (serial {endorser.serial_number:x}) was revoked on "
        f"{iso(revoked_at)} (keyCompromise), after these approvals, but its key was declared invalid from {iso(t)}"
    )

    r = audit(kit, site, capsys, crafted)
    assert r.code == 0, r.out
    assert r.lines("warning") == [f"warning: {text}: entries 0-2"]
    assert "AUDIT PASSED with 1 warning" in r.out
    assert "1 signer certificate(s) were revoked after the approvals they signed" in r.out

    r = audit(kit, site, capsys, crafted, "--json")
    out = json.loads(r.out)
    assert out["warnings"] == [f"{text}: entries 0-2"]
    assert out["result"]["warning_count"] == 1
    assert out["result"]["warnings"] == [
        {
            "certificate_sha256": endorser.fingerprint(hashes.SHA256()).hex(),
            "certificate": describe_cert(endorser),
            "warning": text,
            "entries": [0, 1, 2],
        }
    ]


def test_inclusion_proof_of_another_image_fails(kit: Kit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``inclusion --proof F --hash H``: F proves its own entry; for any other image the answer is no."""
    world = kit.world
    proof = world.offline_proof(world.indices["e2"], tmp_path / "e2.tlog-proof")
    trust = str(kit.trust_file(witness=False))
    own = ["--trust", trust, "inclusion", "--proof", str(proof), "--hash", image_hash("e2"), "--allow-replaced"]
    assert main(own) == 0
    assert f"entry {world.indices['e2']} is in the log" in capsys.readouterr().out
    assert main(["--trust", trust, "inclusion", "--proof", str(proof), "--hash", image_hash("g1")]) == 1
    assert f"FAILED: the proved entry is not for image {image_hash('g1')}" in capsys.readouterr().out


def test_cert_with_duplicated_extensions_is_refused_without_a_traceback(
    kit: Kit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = duplicated_extensions(kit["acme"].cert)
    path = tmp_path / "odd.pem"
    path.write_bytes(odd.public_bytes(serialization.Encoding.PEM))
    assert main(["--trust", str(kit.trust_file(witness=False)), "--site", str(kit.world.site), "cert", str(path)]) == 1
    assert "has malformed extensions (Duplicate" in capsys.readouterr().out
