"""A publication for the consumer verifier's tests, its exported site served over HTTP on 127.0.0.1,
and TLS servers that present IKI certificates (the Device triage links).

world = build_world(base)          # once per session: CA, parties, submissions, CRLs, crl/v1 entries, export
with SiteServer(world.site) as srv:    # the exported tree over HTTP/1.1 on 127.0.0.1:<port>
    srv.override("log/checkpoint", data)   # serve other bytes (or a redirect, a 5xx, an oversize body)
with TLSServer(world.party("triage")) as tls:   # a TLS endpoint presenting that party's certificate
    ...

Submissions are signed with cryptography's PKCS7SignatureBuilder (detached, DER) and taken in by the
real intake (``run_intake``); the crl/v1 entries are appended as the publish job does.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from publisher import keys, parties, publication, scaffold
from publisher.config import Config, load
from publisher.intake.associations import AssociationIndex
from publisher.intake.run import run_intake
from publisher.pki import crl_publish
from publisher.pki.crl import CRLSpec, Revocation, sign_crl
from publisher.publish import crl_entries, operations
from publisher.site.export import export_tree
from publisher.tlog import TileLog
from publisher.tlog.note import Signer
from publisher.tlog.signer import load_log_signer
from verifier.cpl_verify import SHEET_COLUMNS as COLUMNS

SITE_URL = "https://cpl.example.test"  # only the CRL distribution point names come from it
ORIGIN = "cpl.example.test/log"
ISSUER = "ica"

# label -> (organisation, organisation id, role)
ORGS = {
    "acme": ("Acme Meters", "1001", "Manufacturer"),
    "supplier": ("Bright Energy Supply", "2001", "Supplier"),
    "dcc": ("Smart DCC Ltd", "9001", "DCC"),
    "triage": ("Smart DCC Ltd", "9001", "DCC"),
}


def image_hash(label: str) -> str:
    return hashlib.sha256(f"firmware image {label}".encode()).hexdigest()


@dataclass(frozen=True)
class Party:
    label: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path  # PEM: the certificate, then the issuing ICA's
    key_path: Path

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def _issue(
    config: Config,
    folder: Path,
    label: str,
    org: str,
    now: dt.datetime,
    start: dt.datetime | None = None,
    days: int = 365,
) -> Party:
    name, org_id, role = ORGS[org]
    key = ec.generate_private_key(ec.SECP256R1())
    issued = parties.issue_party(
        config, name, org_id, role, now, issuer=ISSUER, key=key, not_before=start or now, days=days
    )
    cert = issued.cert
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{label}.pem", folder / f"{label}.key"
    ica = (config.root / "pki" / f"{ISSUER}.pem").read_bytes()
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ica)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return Party(label, cert, key, cert_path, key_path)


def csv_bytes(rows: Sequence[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r[c] for c in COLUMNS])
    return out.getvalue().encode()


def xlsx_bytes(rows: Sequence[dict[str, str]]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(COLUMNS))
    for r in rows:
        sheet.append([r[c] for c in COLUMNS])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def pkcs7_sign(data: bytes, signers: Sequence[Party]) -> bytes:
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
    for s in signers:
        builder = builder.add_signer(s.cert, s.key, hashes.SHA256())
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])


def row(model: str, image: str, device_type: str = "ESME", smets: str = "SMETS2", **kw: str) -> dict[str, str]:
    values = {
        "manufacturer_id": "1001",
        "manufacturer_name": "Acme Meters",
        "model_id": model,
        "hardware_version": "HW1",
        "firmware_version": "FW1",
        "device_type": device_type,
        "smets_version": smets,
        "image_hash": image,
    }
    values.update(kw)
    return values


@dataclass
class World:
    """The publication, its exported site and everything the tests need to attack it."""

    base: Path
    config: Config
    site: Path
    signer: Signer
    parties: dict[str, Party]
    ica_key: keys.PrivateKey
    ica_cert: x509.Certificate
    root_cert: x509.Certificate
    stranger_ica_key: keys.PrivateKey
    stranger_ica_cert: x509.Certificate
    indices: dict[str, int] = field(default_factory=dict)  # image label -> log index
    checkpoints: list[str] = field(default_factory=list)  # every checkpoint signed, oldest first

    def party(self, label: str) -> Party:
        return self.parties[label]

    def trust(self, site_url: str | None = None, pem: bool = True) -> dict[str, Any]:
        root: dict[str, Any] = {"name": "iki-root", "sha256": self.root_cert.fingerprint(hashes.SHA256()).hex()}
        if pem:
            root["pem"] = self.root_cert.public_bytes(serialization.Encoding.PEM).decode()
        out: dict[str, Any] = {
            "log": {"origin": ORIGIN, "vkey": self.signer.verifier.vkey},
            "iki_roots": [root],
            "crl_issuers": [{"name": ISSUER, "sha256": self.ica_cert.fingerprint(hashes.SHA256()).hex()}],
            "extended_key_usage": self.config.profile.extended_key_usage,
        }
        if site_url:
            out["site"] = site_url
        return out

    def write_trust(self, path: Path, site_url: str | None = None, pem: bool = True) -> Path:
        path.write_text(json.dumps(self.trust(site_url, pem), indent=1))
        return path

    def offline_proof(self, index: int, dest: Path) -> Path:
        """Entry ``index``'s c2sp.org/tlog-proof@v1 file, written by the publisher's ``log proof`` command."""
        from publisher.cli import main as publisher_main

        assert publisher_main(["log", "proof", str(self.config.root / "log"), str(index), "-o", str(dest)]) == 0
        return dest

    def copy_site(self, dest: Path) -> Path:
        """A private copy of the exported site (to tamper with files directly)."""
        shutil.copytree(self.site, dest)
        return dest

    def crl(
        self,
        number: int,
        this_update: dt.datetime,
        next_update: dt.datetime,
        revoked: Sequence[Revocation] = (),
        stranger: bool = False,
    ) -> bytes:
        """A CRL of the issuing ICA (or of the stranger's ICA, same name, other key) with these fields."""
        cert, key = (self.stranger_ica_cert, self.stranger_ica_key) if stranger else (self.ica_cert, self.ica_key)
        spec = CRLSpec(cert, number, this_update, next_update, self.config.crl_url(ISSUER), False)
        return sign_crl(spec, revoked, key)

    def entries(self) -> list[bytes]:
        from publisher.tlog import LogReader, read_vkey

        log_dir = self.config.root / "log"
        return list(LogReader(log_dir, ORIGIN, [read_vkey(log_dir)]).entries())


def _submit(
    config: Config,
    sid: str,
    rows: Sequence[dict[str, str]],
    signers: Sequence[Party],
    request: dict[str, Any] | None = None,
    xlsx: bool = False,
) -> None:
    folder = config.root / "inbox" / sid
    folder.mkdir(parents=True)
    sheet = xlsx_bytes(rows) if xlsx else csv_bytes(rows)
    (folder / ("sheet.xlsx" if xlsx else "sheet.csv")).write_bytes(sheet)
    (folder / "signature.p7s").write_bytes(pkcs7_sign(sheet, signers))
    (folder / "request.json").write_text(
        json.dumps(request or {"submitter_ref": f"REF-{sid}", "panel_ref": f"PANEL-{sid}"})
    )


def _publish_step(config: Config, signer: Signer, now: dt.datetime, world: World) -> dict[str, list[int]]:
    """One publish, as the publish job does it: CRLs due, intake, one crl/v1 entry per new CRL, the lookup/v1."""
    with TileLog.open(config.root / "log", signer) as log:
        refreshed = crl_publish.refresh(config, now)
        report = run_intake(config, log, now=now)
        if report.rejected:
            raise AssertionError(f"fixture submissions rejected: {report.rejected}")
        log.append(crl_entries(refreshed))
        log.append([AssociationIndex.from_entries(log.entries()).lookup.commitment()])
        world.checkpoints.append(log.signed.raw)
    return report.accepted


def build_world(base: Path) -> World:
    """The publication (two publishes and a revocation), exported to ``base/site``."""
    now = publication.now_utc()
    pub = base / "publication"
    scaffold.init_publication(pub, base / "keys", SITE_URL, ORIGIN)
    config = load(pub)
    folder = base / "parties"
    parties = {label: _issue(config, folder, label, label, now) for label in ("acme", "supplier", "dcc", "triage")}
    parties["triage-revoked"] = _issue(config, folder, "triage-revoked", "triage", now)
    parties["triage-expired"] = _issue(config, folder, "triage-expired", "triage", now, now - dt.timedelta(days=800))
    signer = load_log_signer(config.log_key, pub)
    stranger = base / "stranger"
    scaffold.init_publication(stranger, base / "stranger-keys", SITE_URL, "stranger.example/log")
    sconfig = load(stranger)
    world = World(
        base,
        config,
        base / "site",
        signer,
        parties,
        keys.load_private_key(config.issuer(ISSUER).key, pub),
        publication.load_certificate(pub / "pki" / f"{ISSUER}.pem"),
        publication.load_certificate(pub / "pki" / "iki-root.pem"),
        keys.load_private_key(sconfig.issuer(ISSUER).key, stranger),
        publication.load_certificate(stranger / "pki" / f"{ISSUER}.pem"),
    )
    acme, supplier, dcc = parties["acme"], parties["supplier"], parties["dcc"]

    # Round 1: CSV and .xlsx, device models, a comms hub and a SMETS1 model (DCC endorsed).
    _submit(config, "S1", [row("E1", image_hash("e1")), row("G1", image_hash("g1"), "GSME")], [acme, supplier])
    _submit(config, "S2", [row("E2", image_hash("e2"))], [acme, supplier], xlsx=True)
    _submit(config, "S3", [row("C1", image_hash("c1"), "CHF")], [acme, dcc])
    _submit(config, "S4", [row("L1", image_hash("l1"), smets="SMETS1")], [acme, dcc])
    _submit(config, "S5", [row("E3", image_hash("shared")), row("E4", image_hash("shared"))], [acme, supplier])
    accepted = _publish_step(config, signer, now, world)
    for sid, labels in (("S1", ["e1", "g1"]), ("S2", ["e2"]), ("S3", ["c1"]), ("S4", ["l1"]), ("S5", ["e3", "e4"])):
        for label, index in zip(labels, accepted[sid], strict=True):
            world.indices[label] = index

    # Round 2: a replacement after an investigation; a revocation (a new CRL and its crl/v1 entry).
    operations.revoke(config, ISSUER, parties["triage-revoked"].cert.serial_number, "keyCompromise", ref="T-1")
    request = {
        "submitter_ref": "REF-S6",
        "panel_ref": "PANEL-S6",
        "replacements": [{"replaces_index": world.indices["e1"], "investigation_ref": "INV-1"}],
    }
    _submit(config, "S6", [row("E1", image_hash("e1-fixed"))], [acme, supplier], request)
    accepted = _publish_step(config, signer, now + dt.timedelta(seconds=1), world)
    world.indices["e1-fixed"] = accepted["S6"][0]
    export_tree(config, world.site, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return world


@functools.cache
def shared_world(base: str) -> World:
    return build_world(Path(base))


# -- an HTTP server for the exported tree, with attacks on demand ---------------------------------------

Override = bytes | tuple[Any, ...] | Callable[[], bytes]


class SiteServer:
    """The exported site over HTTP/1.1 on 127.0.0.1; ``override`` serves something else at one path.

    Overrides: bytes (200 with that body), ("redirect", location), ("status", code[, times]) for the
    first ``times`` requests (then the file), ("oversize", n) a body of ``n`` bytes without a length,
    ("gzip", data) ``data`` sent with ``Content-Encoding: gzip``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.overrides: dict[str, Override] = {}
        self.counts: dict[str, int] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as production servers do; see bench/verify.py

            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, directory=str(server.root), **kw)

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].lstrip("/")
                server.requests.append(path)
                action = server.overrides.get(path)
                if action is None:
                    super().do_GET()
                    return
                n = server.counts[path] = server.counts.get(path, 0) + 1
                if callable(action):
                    action = action()
                if isinstance(action, bytes):
                    self._send(200, action)
                elif action[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", action[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif action[0] == "status":
                    times = action[2] if len(action) > 2 else 1 << 30
                    if n <= times:
                        self._send(action[1], b"unavailable")
                    else:
                        super().do_GET()
                elif action[0] == "gzip":
                    body = gzip.compress(action[1])
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif action[0] == "oversize":
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    chunk = b"\0" * 65536
                    try:
                        for _ in range(action[1] // len(chunk) + 1):
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                else:
                    raise AssertionError(f"unknown override {action!r}")

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def override(self, path: str, action: Override) -> None:
        self.overrides[path] = action

    def reset(self) -> None:
        self.overrides.clear()
        self.counts.clear()
        self.requests.clear()

    def __enter__(self) -> SiteServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- TLS endpoints (Device triage links) ----------------------------------------------------------------


class SocketServer:
    """A listening socket on 127.0.0.1 while the ``with`` block lasts; each connection goes to ``_handle``
    in a thread of its own."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the 0.2 s accept timeout included: check ``stop`` again
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


class TLSServer(SocketServer):
    """A TLS server on 127.0.0.1 presenting a certificate chain; answers each connection with a line."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert_path), str(key_path))
        super().__init__()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.sock.getsockname()[1]}/triage"

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (ssl.SSLError, OSError):
            conn.close()


def self_signed(folder: Path, name: str = "self-signed") -> tuple[Path, Path]:
    """A self-signed certificate with the IKI subject and extensions (not chained to the IKI)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "GB"),
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Smart DCC Ltd"),
            x509.NameAttribute(x509.NameOID.ORGANIZATIONAL_UNIT_NAME, "DCC"),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, "Smart DCC Ltd"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier("1.3.6.1.4.1.55555.1.1")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def tamper(data: bytes, offset: int) -> bytes:
    """``data`` with one byte flipped."""
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def fresh_crl_times(now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    now = now or publication.now_utc()
    return now - dt.timedelta(minutes=1), now + dt.timedelta(days=7)


def iter_files(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name
