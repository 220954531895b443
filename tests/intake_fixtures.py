"""Shared helpers for the intake tests: a publication with IKI certificates for every party, and submissions.

world = build_world(base)                 # once per session: CA, parties, CRLs (a template publication)
pub = world.copy(tmp_path / "pub")        # a private copy per test (own inbox and log)
folder = pub.submit("s1", [row("M1")])    # CSV signed by Acme (openssl cms -sign) and endorsed (-resign)
report = pub.run()                        # run_intake under the log's writer lock

Submissions are signed with the real ``openssl cms`` (sign, resign), with
cryptography's PKCS7 builder, or crafted with asn1crypto (countersignatures,
edited signed attributes) for the cases no tool makes.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asn1crypto import cms as acms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from publisher import parties, publication, scaffold
from publisher.config import Config, load
from publisher.entries import ASSOCIATION_TYPE
from publisher.intake.run import IntakeReport, run_intake
from publisher.pki import crl_publish
from publisher.publish import operations
from publisher.tlog import LogReader, TileLog, read_vkey
from publisher.tlog.signer import load_log_signer
from verifier.cpl_verify import SHEET_COLUMNS as COLUMNS

OPENSSL = "/usr/bin/openssl"
SITE_URL = "http://127.0.0.1:8000"
ORIGIN = "test.example/log"
ISSUER = "ica"

# label -> (organisation name, organisation id, role)
ORGS = {
    "acme": ("Acme Meters", "1001", "Manufacturer"),
    "other": ("Other Mfr", "1002", "Manufacturer"),
    "supplier": ("Bright Energy Supply", "2001", "Supplier"),
    "dcc": ("Smart DCC Ltd", "9001", "DCC"),
    "acme-supplier": ("Acme Meters", "1001", "Supplier"),  # the manufacturer's own second certificate
}


@dataclass(frozen=True)
class Party:
    """An end-entity IKI certificate and its key, also as PEM files for ``openssl``."""

    label: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _write_party(
    folder: Path, label: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> Party:
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{label}.pem", folder / f"{label}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return Party(label, cert, key, cert_path, key_path)


def issue_party(
    config: Config,
    folder: Path,
    label: str,
    org: str,
    now: dt.datetime,
    not_before: dt.datetime | None = None,
    days: int = 365,
    rsa_bits: int = 0,
) -> Party:
    """Issue (policy-checked, registered) an IKI certificate for organisation ``org`` (a key of ORGS).

    The key is ECDSA P-256, or RSA with ``rsa_bits``.
    """
    name, org_id, role = ORGS[org]
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    key = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    issued = parties.issue_party(
        config, name, org_id, role, now, issuer=ISSUER, key=key, not_before=not_before or now, days=days
    )
    return _write_party(folder, label, issued.cert, key)


@dataclass
class World:
    """The template publication and every party's certificate (session-wide, read only)."""

    base: Path
    template: Path
    parties: dict[str, Party]
    revoked_serials: set[int] = field(default_factory=set)

    def __getitem__(self, label: str) -> Party:
        return self.parties[label]

    def copy(self, dest: Path) -> Pub:
        """A private copy of the publication (same keys, own inbox and log)."""
        shutil.copytree(self.template, dest, symlinks=True)
        return Pub(load(dest), self)


def build_world(base: Path) -> World:
    """The template publication, and certificates for the good parties and for every bad variant."""
    now = publication.now_utc()
    template = base / "template"
    scaffold.init_publication(template, base / "keys", SITE_URL, ORIGIN)
    # Acme also holds a Supplier certificate (to show it cannot endorse its own images): a second role
    # for one organisation is allowed only where the configuration says so.
    config = load(template)
    config = dataclasses.replace(
        config, rules=dataclasses.replace(config.rules, multi_role_organisations=frozenset({"1001"}))
    )
    folder = base / "parties"
    parties: dict[str, Party] = {}
    for label in ORGS:
        parties[label] = issue_party(config, folder, label, label, now)
    # An RSA manufacturer key (PKCS#1 v1.5 and PSS signatures).
    parties["acme-rsa"] = issue_party(config, folder, "acme-rsa", "acme", now, rsa_bits=2048)
    years_ago = now - dt.timedelta(days=3 * 365)
    next_year = now + dt.timedelta(days=365)
    for org in ("acme", "supplier", "dcc"):
        parties[f"{org}-expired"] = issue_party(config, folder, f"{org}-expired", org, now, years_ago, 365)
        parties[f"{org}-notyet"] = issue_party(config, folder, f"{org}-notyet", org, now, next_year, 365)
        parties[f"{org}-revoked"] = issue_party(config, folder, f"{org}-revoked", org, now)
    revoked = set()
    for org in ("acme", "supplier", "dcc"):
        serial = parties[f"{org}-revoked"].cert.serial_number
        operations.revoke(config, ISSUER, serial, "keyCompromise", ref="TEST-REVOKE")
        revoked.add(serial)
    crl_publish.refresh(config, force=True)
    crl_publish.refresh(config)
    # An untrusted CA: a second, separate publication with the same organisation names and IDs.
    stranger = base / "stranger"
    scaffold.init_publication(stranger, base / "stranger-keys", SITE_URL, "stranger.example/log")
    sconfig = load(stranger)
    for org in ("acme", "supplier", "dcc"):
        parties[f"{org}-untrusted"] = issue_party(sconfig, folder, f"{org}-untrusted", org, now)
    return World(base, template, parties, revoked)


# -- spreadsheets -------------------------------------------------------------------------------------


def image_hash(label: str) -> str:
    """A distinct, valid image hash per label."""
    return hashlib.sha256(f"firmware image {label}".encode()).hexdigest()


def row(model: str, **overrides: str) -> dict[str, str]:
    """One spreadsheet row for Acme's SMETS2 ESME model ``model``; override any column."""
    values = {
        "manufacturer_id": "1001",
        "manufacturer_name": "Acme Meters",
        "model_id": model,
        "hardware_version": "HW1.0",
        "firmware_version": "FW2.3",
        "device_type": "ESME",
        "smets_version": "SMETS2",
        "image_hash": image_hash(model),
    }
    values.update(overrides)
    return values


def csv_bytes(rows: Iterable[dict[str, str]], columns: Sequence[str] = COLUMNS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([r.get(c, "") for c in columns])
    return out.getvalue().encode()


def xlsx_bytes(rows: Iterable[Mapping[str, object]], columns: Sequence[str] = COLUMNS) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(columns))
    for r in rows:
        sheet.append([r.get(c, "") for c in columns])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def rewrite_zip(data: bytes, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> bytes:
    """A copy of a zip archive with some members replaced and others added."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info)))
        for name, member in (add or {}).items():
            dst.writestr(name, member)
    return out.getvalue()


# -- signatures ---------------------------------------------------------------------------------------


def openssl(*args: object) -> None:
    result = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed: {result.stderr.decode()}")


def cms_sign(sheet: Path, signer: Party, out: Path, pem: bool = False, *extra: str) -> Path:
    """``openssl cms -sign -binary``: a detached SignedData over the exact bytes of ``sheet``."""
    openssl(
        "cms", "-sign", "-binary", "-md", "sha256", "-outform", "PEM" if pem else "DER", "-in", sheet,
        "-signer", signer.cert_path, "-inkey", signer.key_path, "-out", out, *extra,
    )  # fmt: skip
    return out


def cms_resign(p7s: Path, sheet: Path, signer: Party, out: Path) -> Path:
    """``openssl cms -resign``: add a second SignerInfo to the same SignedData."""
    openssl(
        "cms", "-resign", "-binary", "-inform", "DER", "-in", p7s, "-md", "sha256", "-outform", "DER",
        "-signer", signer.cert_path, "-inkey", signer.key_path, "-content", sheet, "-out", out,
    )  # fmt: skip
    return out


def pkcs7_sign(sheet: bytes, signers: Sequence[Party]) -> bytes:
    """cryptography's PKCS7SignatureBuilder: detached, binary, DER, one SignerInfo per signer."""
    return parties.sign_detached(sheet, [parties.Party("", s.label, "", s.cert, s.key) for s in signers])


def ecdsa_sign(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, data: bytes) -> bytes:
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _signed_data(der: bytes) -> tuple[acms.ContentInfo, acms.SignedData]:
    info = acms.ContentInfo.load(der)
    return info, info["content"]


def countersign(der: bytes, endorser: Party, signer_index: int = 0, when: dt.datetime | None = None) -> bytes:
    """Add an RFC 5652 11.4 counterSignature (unsigned attribute) by ``endorser`` to a SignerInfo.

    Its signed attributes: messageDigest = SHA-256 of the countersigned signature's octets and
    signingTime; no contentType. The endorser's certificate joins the SignedData's certificates.
    """
    _, signed = _signed_data(der)
    si = signed["signer_infos"][signer_index]
    when = when or dt.datetime.now(dt.UTC).replace(microsecond=0)
    attrs = acms.CMSAttributes(
        [
            acms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(si["signature"].native).digest()]}),
            acms.CMSAttribute({"type": "signing_time", "values": [acms.Time({"utc_time": when})]}),
        ]
    )
    cert = ax509.Certificate.load(endorser.der)
    counter = acms.SignerInfo(
        {
            "version": "v1",
            "sid": acms.SignerIdentifier(
                {
                    "issuer_and_serial_number": acms.IssuerAndSerialNumber(
                        {"issuer": cert.issuer, "serial_number": cert.serial_number}
                    )
                }
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": ecdsa_sign(endorser.key, attrs.dump()),
        }
    )
    si["unsigned_attrs"] = acms.CMSAttributes([acms.CMSAttribute({"type": "counter_signature", "values": [counter]})])
    certs = list(signed["certificates"] or [])
    certs.append(acms.CertificateChoices({"certificate": cert}))
    signed["certificates"] = acms.CertificateSet(certs)
    return bytes(acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


AttrEdit = Callable[[list[acms.CMSAttribute]], list[acms.CMSAttribute]]


def edit_signed_attrs(der: bytes, signer: Party, edit: AttrEdit) -> bytes:
    """Change the signed attributes of ``signer``'s SignerInfo and re-sign them with its key (a valid signature).

    The SignerInfo is found by certificate serial: the order of SignerInfos (a DER SET OF) is not the signing order.
    """
    _, signed = _signed_data(der)
    (si,) = [s for s in signed["signer_infos"] if s["sid"].chosen["serial_number"].native == signer.cert.serial_number]
    attrs = acms.CMSAttributes(edit(list(si["signed_attrs"])))
    si["signed_attrs"] = attrs
    si["signature"] = ecdsa_sign(signer.key, attrs.dump())
    return bytes(acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def set_attr(name: str, value: object) -> AttrEdit:
    def edit(attrs: list[acms.CMSAttribute]) -> list[acms.CMSAttribute]:
        return [acms.CMSAttribute({"type": name, "values": [value]}) if a["type"].native == name else a for a in attrs]

    return edit


def drop_attr(name: str) -> AttrEdit:
    def edit(attrs: list[acms.CMSAttribute]) -> list[acms.CMSAttribute]:
        return [a for a in attrs if a["type"].native != name]

    return edit


# -- a publication under test -------------------------------------------------------------------------

SIGNING_STYLES = ("resign", "separate", "countersign", "pkcs7", "pem")


@dataclass
class Pub:
    """One test's copy of the publication."""

    config: Config
    world: World

    @property
    def root(self) -> Path:
        return self.config.root

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def reader(self) -> LogReader:
        return LogReader(self.log_dir, self.config.origin, [read_vkey(self.log_dir)])

    def log_size(self) -> int:
        return self.reader().size

    def entries(self) -> list[dict[str, object]]:
        return [json.loads(e) for e in self.reader().entries()]

    def raw_entries(self) -> list[bytes]:
        return list(self.reader().entries())

    def run(self, now: dt.datetime | None = None) -> IntakeReport:
        signer = load_log_signer(self.config.log_key, self.config.root)
        with TileLog.open(self.log_dir, signer) as log:
            return run_intake(self.config, log, now=now)

    def folder(self, sid: str) -> Path:
        path = self.inbox / sid
        path.mkdir(parents=True, exist_ok=True)
        return path

    def submit(
        self,
        sid: str,
        rows: Sequence[dict[str, str]] | None = None,
        *,
        sheet: bytes | None = None,
        sheet_name: str = "sheet.csv",
        manufacturer: str = "acme",
        endorser: str | None = "supplier",
        style: str = "resign",
        request: Mapping[str, object] | bytes | None = None,
    ) -> Path:
        """Write a submission folder: spreadsheet, signatures in ``style``, request.json."""
        folder = self.folder(sid)
        if sheet is None:
            assert rows is not None
            sheet = xlsx_bytes(rows) if sheet_name.endswith(".xlsx") else csv_bytes(rows)
        sheet_path = folder / sheet_name
        sheet_path.write_bytes(sheet)
        sign_folder(self.world, folder, sheet_path, manufacturer, endorser, style)
        write_request(folder, request)
        return folder


def write_request(folder: Path, request: Mapping[str, object] | bytes | None = None) -> None:
    if request is None:
        request = {"submitter_ref": "SUB-1", "panel_ref": "PANEL-2024-01"}
    data = request if isinstance(request, bytes) else json.dumps(request).encode()
    (folder / "request.json").write_bytes(data)


def sign_folder(
    world: World, folder: Path, sheet_path: Path, manufacturer: str, endorser: str | None, style: str
) -> None:
    """Sign ``sheet_path`` into ``folder`` by the manufacturer and (unless None) the endorser."""
    m = world[manufacturer]
    e = world[endorser] if endorser else None
    sheet = sheet_path.read_bytes()
    if style == "pkcs7":
        (folder / "signature.p7s").write_bytes(pkcs7_sign(sheet, [m, *([e] if e else [])]))
        return
    if style == "pem":
        cms_sign(sheet_path, m, folder / "manufacturer.p7s", True)
        if e:
            cms_sign(sheet_path, e, folder / "endorsement.p7s", True)
        return
    if style == "separate" or e is None:
        cms_sign(sheet_path, m, folder / "manufacturer.p7s")
        if e:
            cms_sign(sheet_path, e, folder / "endorsement.p7s")
        return
    first = cms_sign(sheet_path, m, folder / ".first.p7s.tmp")
    try:
        if style == "resign":
            cms_resign(first, sheet_path, e, folder / "signature.p7s")
        elif style == "countersign":
            (folder / "signature.p7s").write_bytes(countersign(first.read_bytes(), e))
        else:
            raise ValueError(f"unknown signing style {style!r}")
    finally:
        first.unlink()


def rejection(folder: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads((folder / "rejection.json").read_text())
    return report


def checks_of(folder: Path) -> set[str]:
    """The check names of a rejection report."""
    findings = rejection(folder)["findings"]
    assert isinstance(findings, list)
    return {str(f["rule"]) for f in findings}


def association_entries(entries: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in entries if e.get("type") == ASSOCIATION_TYPE]
