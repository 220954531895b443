"""``cpl-publisher revoke`` and ``ca issue``: the two commands that write the registers.

A refused revocation appends nothing to registers/revocations.jsonl; an
accepted one appends exactly one line and never rewrites earlier bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from publisher import publication, scaffold
from publisher.cli import main
from publisher.config import CONFIG_NAME, Config, ConfigError, Profile, load
from publisher.pki import profile, registers
from publisher.pki.crl import FORBIDDEN_REASONS
from publisher.pki.policy import Kind
from publisher.pki.revocation import RevocationRefused, parse_serial
from publisher.publish import operations
from publisher.publish.operations import revoke

SITE = "https://dcc.example/cpl/"
EKU = "1.3.6.1.4.1.55555.1.1"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture()
def pub(tmp_path: Path) -> Path:
    root = tmp_path / "pub"
    scaffold.init_publication(root, tmp_path / "keys", SITE, "dcc.example/cpl/log")
    return root


def issue_iki(config: Config, org_id: str = "00AB12") -> x509.Certificate:
    now = publication.now_utc()
    request = profile.IssueRequest(
        Kind.IKI,
        profile.ee_subject(config.profile, "Acme Meters Ltd", org_id, "Manufacturer"),
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        x509.random_serial_number(),
        now,
        now + dt.timedelta(days=365),
        config.crl_url("ica"),
    )
    return operations.issue(config, "ica", request).certificate


@pytest.fixture()
def issued(pub: Path) -> tuple[Path, int]:
    """A publication and the serial of one IKI certificate its issuing ICA issued."""
    return pub, issue_iki(load(pub)).serial_number


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def revocations_file(pub: Path) -> Path:
    return pub / registers.REVOCATIONS


def register_bytes(pub: Path) -> bytes:
    path = revocations_file(pub)
    return path.read_bytes() if path.exists() else b""


def cli_revoke(capsys: pytest.CaptureFixture[str], pub: Path, *args: str) -> tuple[int, str, str]:
    return run(capsys, "revoke", "--dir", str(pub), *args)


# --- happy path --------------------------------------------------------------------------------


def test_revoke_records_the_fields(issued: tuple[Path, int], capsys: pytest.CaptureFixture[str]) -> None:
    pub, serial = issued
    code, out, err = cli_revoke(
        capsys,
        pub,
        "--issuer",
        "ica",
        "--serial",
        f"{serial:x}",
        "--reason",
        "keyCompromise",
        "--invalidity-date",
        "2025-01-02T03:04:05Z",
        "--ref",
        "INC-4711",
    )
    assert code == 0, err
    assert out.strip() == f"revoked serial {serial:x} of ica (keyCompromise); the next CRL refresh publishes it"
    lines = revocations_file(pub).read_bytes().splitlines(keepends=True)
    assert len(lines) == 1
    assert lines[0].endswith(b"}\n")
    row = json.loads(lines[0])
    assert set(row) == {
        "issuer",
        "serial",
        "reason",
        "revoked_at",
        "recorded_at",
        "invalidity_date",
        "ref",
        "unknown_serial",
    }
    assert row["issuer"] == "ica"
    assert row["serial"] == f"{serial:x}"
    assert row["reason"] == "keyCompromise"
    assert ISO.fullmatch(row["revoked_at"])
    assert ISO.fullmatch(row["recorded_at"])
    assert row["invalidity_date"] == "2025-01-02T03:04:05Z"
    assert row["ref"] == "INC-4711"
    assert row["unknown_serial"] is False
    [record] = registers.load_revocations(pub)
    assert record == registers.RevocationRecord(**row)


def test_revoke_json_output_and_optional_fields(issued: tuple[Path, int], capsys: pytest.CaptureFixture[str]) -> None:
    pub, serial = issued
    code, out, _ = cli_revoke(
        capsys, pub, "--json", "--issuer", "ica", "--serial", f"{serial:x}", "--reason", "superseded"
    )
    assert code == 0
    assert json.loads(out) == {"issuer": "ica", "serial": f"{serial:x}", "reason": "superseded"}
    [record] = registers.load_revocations(pub)
    assert record.invalidity_date is None
    assert record.ref is None
    assert record.unknown_serial is False


def test_revoke_api_uses_the_given_time(issued: tuple[Path, int]) -> None:
    pub, serial = issued
    now = dt.datetime(2026, 1, 15, 10, 0, 0, 999, tzinfo=dt.UTC)
    naive = dt.datetime(2026, 1, 14, 8, 0, 0)  # taken as UTC
    record = revoke(load(pub), "ica", serial, "cessationOfOperation", invalidity_date=naive, now=now)
    assert record.revoked_at == "2026-01-15T10:00:00Z"
    assert record.invalidity_date == "2026-01-14T08:00:00Z"
    assert registers.load_revocations(pub) == [record]


def test_revoking_an_ica_certificate_under_the_root(pub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ica = publication.load_certificate(load(pub).issuer("ica").certificate)
    code, _, err = cli_revoke(
        capsys, pub, "--issuer", "iki-root", "--serial", f"{ica.serial_number:x}", "--reason", "cACompromise"
    )
    assert code == 0, err
    assert [(r.issuer, r.reason) for r in registers.load_revocations(pub)] == [("iki-root", "cACompromise")]


# --- refusals: nothing appended ------------------------------------------------------------------


def test_unknown_issuer_exits_2_and_names_the_configured_issuers(
    issued: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    pub, serial = issued
    code, out, err = cli_revoke(capsys, pub, "--issuer", "nope", "--serial", f"{serial:x}", "--reason", "superseded")
    assert code == 2
    assert out == ""
    assert "unknown issuer 'nope' (configured: iki-root, ica)" in err
    assert not revocations_file(pub).exists()
    with pytest.raises(ConfigError, match="configured: iki-root, ica"):
        revoke(load(pub), "nope", serial, "superseded")


def test_serial_never_issued_is_refused(issued: tuple[Path, int], capsys: pytest.CaptureFixture[str]) -> None:
    pub, serial = issued
    code, _, err = cli_revoke(capsys, pub, "--issuer", "ica", "--serial", "1234abcd", "--reason", "superseded")
    assert code == 1
    assert "refused: issuer ica never issued serial 1234abcd" in err
    assert "--unknown-serial" in err
    # A serial issued by the issuing ICA is not a serial of the root.
    code, _, err = cli_revoke(capsys, pub, "--issuer", "iki-root", "--serial", f"{serial:x}", "--reason", "superseded")
    assert code == 1
    assert f"issuer iki-root never issued serial {serial:x}" in err
    assert not revocations_file(pub).exists()


def test_unknown_serial_is_accepted_and_marked(issued: tuple[Path, int], capsys: pytest.CaptureFixture[str]) -> None:
    pub, serial = issued
    code, _, err = cli_revoke(
        capsys, pub, "--issuer", "ica", "--serial", "1234abcd", "--reason", "keyCompromise", "--unknown-serial"
    )
    assert code == 0, err
    # --unknown-serial on a serial the register does know: not marked.
    code, _, err = cli_revoke(
        capsys, pub, "--issuer", "ica", "--serial", f"{serial:x}", "--reason", "superseded", "--unknown-serial"
    )
    assert code == 0, err
    records = registers.load_revocations(pub)
    assert [(r.serial, r.unknown_serial) for r in records] == [("1234abcd", True), (f"{serial:x}", False)]


def test_duplicate_revocation_is_refused(issued: tuple[Path, int], capsys: pytest.CaptureFixture[str]) -> None:
    pub, serial = issued
    assert cli_revoke(capsys, pub, "--issuer", "ica", "--serial", f"{serial:x}", "--reason", "superseded")[0] == 0
    before = register_bytes(pub)
    revoked_at = registers.load_revocations(pub)[0].revoked_at
    # The same serial written differently, with a different reason: still the same certificate.
    code, _, err = cli_revoke(capsys, pub, "--issuer", "ica", "--serial", f"0X{serial:X}", "--reason", "keyCompromise")
    assert code == 1
    assert f"serial {serial:x} of ica is already revoked (since {revoked_at})" in err
    assert register_bytes(pub) == before
    # An unknown serial cannot be revoked twice either.
    assert (
        cli_revoke(capsys, pub, "--issuer", "ica", "--serial", "77", "--reason", "superseded", "--unknown-serial")[0]
        == 0
    )
    before = register_bytes(pub)
    code, _, err = cli_revoke(
        capsys, pub, "--issuer", "ica", "--serial", "77", "--reason", "superseded", "--unknown-serial"
    )
    assert code == 1
    assert "already revoked" in err
    assert register_bytes(pub) == before


@pytest.mark.parametrize("reason", ["removeFromCRL", "certificateHold"])
def test_forbidden_reasons_are_refused(
    issued: tuple[Path, int], capsys: pytest.CaptureFixture[str], reason: str
) -> None:
    pub, serial = issued
    code, _, err = cli_revoke(capsys, pub, "--issuer", "ica", "--serial", f"{serial:x}", "--reason", reason)
    assert code == 1
    assert f"refused: reason {reason}: {FORBIDDEN_REASONS[reason]}" in err
    assert "revocation is final" in err
    assert not revocations_file(pub).exists()


@pytest.mark.parametrize("reason", ["compromised", "KeyCompromise", "", "8"])
def test_unknown_reason_is_refused(issued: tuple[Path, int], capsys: pytest.CaptureFixture[str], reason: str) -> None:
    pub, serial = issued
    code, _, err = cli_revoke(capsys, pub, "--issuer", "ica", "--serial", f"{serial:x}", "--reason", reason)
    assert code == 1
    assert f"unknown reason {reason!r} (choose from unspecified, keyCompromise, cACompromise" in err
    assert not revocations_file(pub).exists()


def test_invalidity_date_in_the_future_is_refused(issued: tuple[Path, int], capsys: pytest.CaptureFixture[str]) -> None:
    pub, serial = issued
    future = (publication.now_utc() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, _, err = cli_revoke(
        capsys,
        pub,
        "--issuer",
        "ica",
        "--serial",
        f"{serial:x}",
        "--reason",
        "keyCompromise",
        "--invalidity-date",
        future,
    )
    assert code == 1
    assert f"invalidity date {future} is in the future" in err
    assert not revocations_file(pub).exists()
    with pytest.raises(RevocationRefused, match="is in the future"):
        revoke(load(pub), "ica", serial, "keyCompromise", invalidity_date=dt.datetime(2999, 1, 1))


def test_invalidity_date_that_is_not_a_date_exits_2(
    issued: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    pub, serial = issued
    code, _, err = cli_revoke(
        capsys,
        pub,
        "--issuer",
        "ica",
        "--serial",
        f"{serial:x}",
        "--reason",
        "keyCompromise",
        "--invalidity-date",
        "yesterday",
    )
    assert code == 2
    assert "--invalidity-date: 'yesterday' is not an ISO 8601 date or time" in err
    assert not revocations_file(pub).exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("xyz", "serial 'xyz' is not a hexadecimal number of at most 20 bytes"),
        ("0", "serial 0 is not a valid certificate serial (RFC 5280 4.1.2.2)"),
        ("00:00", "serial 0 is not a valid certificate serial"),
        ("0x", "is not a hexadecimal number"),
        ("-12", "is not a hexadecimal number"),
        ("1" * 41, "is not a hexadecimal number of at most 20 bytes"),
    ],
)
def test_bad_serial_text_is_refused(
    issued: tuple[Path, int], capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    pub, _ = issued
    code, _, err = cli_revoke(
        capsys, pub, "--issuer", "ica", "--serial", text, "--reason", "superseded", "--unknown-serial"
    )
    assert code == 2  # a malformed argument is a usage error
    assert message in err
    assert not revocations_file(pub).exists()
    with pytest.raises(RevocationRefused, match=re.escape(message)):
        parse_serial(text)


@pytest.mark.parametrize("ref", ["x" * 201, "line\nbreak", "tab\there"])
def test_bad_reference_is_refused(issued: tuple[Path, int], ref: str) -> None:
    pub, serial = issued
    with pytest.raises(RevocationRefused, match="--ref must be at most 200 printable characters"):
        revoke(load(pub), "ica", serial, "superseded", ref=ref)
    assert not revocations_file(pub).exists()


# --- serial formats ------------------------------------------------------------------------------


def openssl_colons(serial: int) -> str:
    """The serial as ``openssl x509 -text`` prints it: byte pairs separated by colons."""
    return ":".join(f"{b:02x}" for b in serial.to_bytes((serial.bit_length() + 7) // 8, "big"))


@pytest.mark.parametrize(
    "fmt",
    [
        lambda s: f"{s:x}",
        lambda s: f"0x{s:x}",
        lambda s: f"0X{s:X}",
        lambda s: f"{s:X}",
        openssl_colons,
        lambda s: openssl_colons(s).upper(),
        lambda s: f"  {s:x}\n",
        lambda s: f"{s:x}".zfill(40),
    ],
    ids=["hex", "0x", "0X-upper", "upper", "colons", "colons-upper", "whitespace", "leading-zeros"],
)
def test_serial_formats(pub: Path, capsys: pytest.CaptureFixture[str], fmt: object) -> None:
    serial = issue_iki(load(pub)).serial_number
    text = fmt(serial)  # type: ignore[operator]
    assert parse_serial(text) == serial
    code, _, err = cli_revoke(capsys, pub, "--issuer", "ica", "--serial", text, "--reason", "superseded")
    assert code == 0, err
    [record] = registers.load_revocations(pub)
    assert record.serial == f"{serial:x}"
    assert record.unknown_serial is False


def test_parse_serial_examples() -> None:
    assert parse_serial("3A:4F:00:01") == 0x3A4F0001
    assert parse_serial("0x0a") == 10
    assert parse_serial("7f" + "ff" * 19) == int("7f" + "ff" * 19, 16)  # 20 octets in DER: the RFC 5280 maximum
    with pytest.raises(RevocationRefused, match="more than 20 octets"):
        parse_serial("ff" * 20)  # the high bit needs a 21st octet in DER


# --- the register is append-only -----------------------------------------------------------------


def test_revocations_are_appended(pub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    previous = b""
    for n, serial in enumerate(["a1", "b2", "c3", "d4"], start=1):
        code, _, err = cli_revoke(
            capsys, pub, "--issuer", "ica", "--serial", serial, "--reason", "superseded", "--unknown-serial"
        )
        assert code == 0, err
        now = register_bytes(pub)
        assert now.startswith(previous)
        assert len(now) > len(previous)
        assert now.count(b"\n") == n
        assert json.loads(now[len(previous) :])["serial"] == serial
        previous = now
    # A refusal leaves the bytes alone.
    assert (
        cli_revoke(capsys, pub, "--issuer", "ica", "--serial", "a1", "--reason", "superseded", "--unknown-serial")[0]
        == 1
    )
    assert register_bytes(pub) == previous
    assert [r.serial for r in registers.load_revocations(pub)] == ["a1", "b2", "c3", "d4"]


def test_a_torn_last_line_is_ignored_and_cut_off_by_the_next_append(
    pub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli_revoke(capsys, pub, "--issuer", "ica", "--serial", "a1", "--reason", "superseded", "--unknown-serial")[0]
        == 0
    )
    good = register_bytes(pub)
    torn = b'{"invalidity_date":null,"issuer":"ica","reason":"keyCompromise","recorded_at":"2026-0'
    with revocations_file(pub).open("ab") as f:
        f.write(torn)
    # Readers ignore the torn line.
    assert [r.serial for r in registers.load_revocations(pub)] == ["a1"]
    # The next append cuts it off and writes one whole line.
    code, _, err = cli_revoke(
        capsys, pub, "--issuer", "ica", "--serial", "b2", "--reason", "keyCompromise", "--unknown-serial"
    )
    assert code == 0, err
    data = register_bytes(pub)
    assert data.startswith(good)
    assert torn not in data
    new_lines = data[len(good) :].splitlines(keepends=True)
    assert len(new_lines) == 1
    assert json.loads(new_lines[0])["serial"] == "b2"
    assert [r.serial for r in registers.load_revocations(pub)] == ["a1", "b2"]


def test_a_torn_first_line_is_ignored(pub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    revocations_file(pub).parent.mkdir(parents=True, exist_ok=True)
    revocations_file(pub).write_bytes(b'{"issuer":"ica","ser')
    assert registers.load_revocations(pub) == []
    assert (
        cli_revoke(capsys, pub, "--issuer", "ica", "--serial", "c3", "--reason", "superseded", "--unknown-serial")[0]
        == 0
    )
    assert register_bytes(pub).count(b"\n") == 1
    assert json.loads(register_bytes(pub))["serial"] == "c3"


# --- ca issue ------------------------------------------------------------------------------------


def ca_issue(capsys: pytest.CaptureFixture[str], pub: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run(
        capsys,
        "ca",
        "issue",
        "--dir",
        str(pub),
        "--issuer",
        "ica",
        "--org",
        "Acme Meters Ltd",
        "--org-id",
        "00AB12",
        "--role",
        "Manufacturer",
        "--out",
        str(out),
        *extra,
    )


def test_ca_issue_follows_the_profile(pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = ca_issue(capsys, pub, out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    cert_file, key_file = Path(summary["certificate"]), Path(summary["key"])
    assert cert_file.parent == out
    assert key_file.parent == out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert summary["serial"] == f"{cert.serial_number:x}"
    assert cert_file.name == f"00AB12-manufacturer-{cert.serial_number:x}.pem"
    pub_der = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, pub_der) == cert.public_key().public_bytes(der, pub_der)

    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Acme Meters Ltd"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "Manufacturer"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == "00AB12"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER) == []

    ext = cert.extensions
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.content_commitment or ku.value.key_agreement)
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ObjectIdentifier(EKU)]
    assert ExtendedKeyUsageOID.SERVER_AUTH not in ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    [dp] = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in dp.full_name or []] == ["https://dcc.example/cpl/crl/ica.crl"]

    ica = publication.load_certificate(pub / "pki" / "ica.pem")
    ica_ski = ica.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ica_ski.digest
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.issuer == ica.subject
    cert.verify_directly_issued_by(ica)

    # Recorded in the register, and published under certs/ica/<serial>.pem.
    last = registers.load_issued(pub)[-1]
    assert (last.issuer, last.serial, last.kind, last.role) == ("ica", f"{cert.serial_number:x}", "iki", "Manufacturer")
    assert last.cert_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    published = pub / "certs" / "ica" / f"{cert.serial_number:x}.pem"
    assert published.read_bytes() == cert_file.read_bytes()


def test_ca_issue_text_output(pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = ca_issue(capsys, pub, tmp_path / "out", "--days", "30")
    assert code == 0
    lines = stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["serial", "certificate", "key"]
    cert = x509.load_pem_x509_certificate(Path(lines[1].split(": ", 1)[1]).read_bytes())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30)


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_ca_issue_with_a_csr_writes_no_key(pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = tmp_path / "req.csr"
    csr.write_bytes(_csr(key))
    out = tmp_path / "out"
    code, stdout, err = ca_issue(capsys, pub, out, "--json", "--public-key", str(csr))
    assert code == 0, err
    summary = json.loads(stdout)
    assert "key" not in summary
    assert [p.suffix for p in out.iterdir()] == [".pem"]
    cert = x509.load_pem_x509_certificate(Path(summary["certificate"]).read_bytes())
    assert cert.public_key() == key.public_key()
    # The same key again (as a plain public key this time): L11.4(c), nothing recorded.
    pem = tmp_path / "key.pub"
    pem.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    before = (pub / registers.ISSUED).read_bytes()
    code, _, err = ca_issue(capsys, pub, tmp_path / "out2", "--public-key", str(pem))
    assert code == 1
    assert "SEC L11.4(c)" in err
    assert (pub / registers.ISSUED).read_bytes() == before
    assert not (tmp_path / "out2").exists()
    assert len(list((pub / "certs" / "ica").iterdir())) == 1


def test_ca_issue_with_a_pem_public_key(pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "key.pub"
    pem.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    code, stdout, err = ca_issue(capsys, pub, tmp_path / "out", "--json", "--public-key", str(pem))
    assert code == 0, err
    assert "key" not in json.loads(stdout)


def test_ca_issue_with_a_bad_public_key_file_exits_2(
    pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    code, _, err = ca_issue(capsys, pub, tmp_path / "out", "--public-key", str(junk))
    assert code == 2
    assert "not a PEM public key or certificate request" in err
    assert len(registers.load_issued(pub)) == 2


def test_ca_issue_longer_than_the_iki_maximum_is_refused(
    pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = ca_issue(capsys, pub, tmp_path / "out", "--days", "2000")
    assert code == 1
    assert "IKI validity (publisher.toml [policy])" in err
    assert len(registers.load_issued(pub)) == 2
    assert not (tmp_path / "out").exists()


def _edit_config(pub: Path, old: str, new: str) -> None:
    path = pub / CONFIG_NAME
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


def test_ca_issue_role_mapping_is_configurable(pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_config(pub, 'Manufacturer = "Manufacturer"', 'Manufacturer = "MFR"')
    code, stdout, err = ca_issue(capsys, pub, tmp_path / "out", "--json")
    assert code == 0, err
    cert = x509.load_pem_x509_certificate(Path(json.loads(stdout)["certificate"]).read_bytes())
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)] == ["MFR"]
    config = load(pub)
    assert profile.identity(cert, config.profile) == profile.Identity("Acme Meters Ltd", "00AB12", "Manufacturer")
    # Under the default mapping "MFR" is no role at all.
    assert profile.identity(cert, Profile()).role is None


def test_ca_issue_organisation_id_in_serial_number(
    pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_config(
        pub, 'organisation_id_attribute = "organizationIdentifier"', 'organisation_id_attribute = "serialNumber"'
    )
    code, stdout, err = ca_issue(capsys, pub, tmp_path / "out", "--json")
    assert code == 0, err
    cert = x509.load_pem_x509_certificate(Path(json.loads(stdout)["certificate"]).read_bytes())
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)] == ["00AB12"]
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER) == []
    identity = profile.identity(cert, load(pub).profile)
    assert identity == profile.Identity("Acme Meters Ltd", "00AB12", "Manufacturer")


def test_ca_issue_unknown_issuer_exits_2(pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "ca",
        "issue",
        "--dir",
        str(pub),
        "--issuer",
        "other",
        "--org",
        "Acme",
        "--org-id",
        "1",
        "--role",
        "DCC",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2
    assert "unknown issuer 'other' (configured: iki-root, ica)" in err
