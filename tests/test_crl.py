"""CRLs and the ARL: RFC 5280 profile, the checks before publication, refresh, outputs, custody, crashes.

External judges: ``openssl crl -verify`` / ``openssl verify -crl_check[_all]`` and pkilint's ``lint_crl``;
cryptography's CRL builder is the reference for the hand-written DER encoder.
Set ``CRL_CRASH_SEED`` to replay the random-time kills of the crash test.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import git
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pki_fixtures import Publication, issue_ee, issuer_key, make_publication

from publisher import keys, publication
from publisher.config import ConfigError
from publisher.keys import KeyUnusable
from publisher.pki import crl, crl_publish, der, registers
from publisher.pki.crl import REASONS, CRLError, CRLSpec, Revocation
from publisher.pki.crl_publish import CRLRefused
from publisher.publish import operations

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
LINT_CRL = Path(sys.executable).with_name("lint_crl")
ALGORITHMS = ["ec-p256", "ec-p384", "rsa-3072"]
UTC = dt.UTC
DAY = dt.timedelta(days=1)
CRASH_SEED = int(os.environ.get("CRL_CRASH_SEED", time.time_ns() % 1_000_000))


# --------------------------------------------------------------------------- helpers


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, check=False)


def openssl_crl_verify(crl_file: Path, ca_file: Path) -> subprocess.CompletedProcess[str]:
    form = "PEM" if crl_file.suffix == ".pem" else "DER"
    return run(OPENSSL, "crl", "-inform", form, "-in", crl_file, "-noout", "-verify", "-CAfile", ca_file)


def assert_openssl_accepts(crl_file: Path, ca_file: Path) -> None:
    r = openssl_crl_verify(crl_file, ca_file)
    assert r.returncode == 0 and "verify OK" in r.stdout + r.stderr, (crl_file, r.stdout, r.stderr)


def openssl_verify(cert: Path, ca_file: Path, crl_file: Path, flag: str = "-crl_check") -> tuple[int, str]:
    r = run(OPENSSL, "verify", flag, "-CAfile", ca_file, "-CRLfile", crl_file, cert)
    return r.returncode, r.stdout + r.stderr


def lint(path: Path, kind: str = "CRL") -> subprocess.CompletedProcess[str]:
    """pkilint, every finding down to DEBUG (a superset of the default INFO threshold)."""
    return run(LINT_CRL, "lint", "-t", kind, "-p", "PKIX", "-s", "DEBUG", path)


def tbs_fields(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, value) of each top-level field of a DER CRL's TBSCertList."""
    _, pos, _ = der.read_header(data, 0)
    _, start, end = der.read_header(data, pos)
    fields = []
    while start < end:
        tag, s, e = der.read_header(data, start)
        fields.append((tag, data[s:e]))
        start = e
    return fields


def tbs_bytes(data: bytes) -> bytes:
    _, pos, _ = der.read_header(data, 0)
    _, _, end = der.read_header(data, pos)
    return data[pos:end]


def revoked_entry_times(data: bytes) -> dict[int, tuple[int, bytes]]:
    """serial -> (tag, value) of each entry's revocationDate, read from the DER."""
    revoked = [v for tag, v in tbs_fields(data) if tag == 0x30][2:]  # after signature AlgId and issuer
    out: dict[int, tuple[int, bytes]] = {}
    if not revoked:
        return out
    body, pos = revoked[0], 0
    while pos < len(body):
        _, s, e = der.read_header(body, pos)
        _, ss, se = der.read_header(body, s)
        ttag, ts, te = der.read_header(body, se)
        out[int.from_bytes(body[ss:se], "big")] = (ttag, body[ts:te])
        pos = e
    return out


def load(path: Path) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(path.read_bytes())


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def chain(pub: Publication) -> tuple[x509.Certificate, x509.Certificate]:
    return pub.hierarchy.root_cert, pub.hierarchy.issuing_cert


def entry_ext(entry: x509.RevokedCertificate, cls: type) -> x509.Extension | None:  # type: ignore[type-arg]
    try:
        return entry.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under crl/ and registers/."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for d in (root / "crl", root / "registers")
        if d.exists()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def published(pub: Publication, issuer: str) -> tuple[bytes, dict[str, object]]:
    base = pub.root / "crl"
    return (base / f"{issuer}.crl").read_bytes(), json.loads((base / f"{issuer}.json").read_text())


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def pem_crls(path: Path, *crl_files: Path) -> Path:
    path.write_bytes(b"".join(crl.to_pem(f.read_bytes()) for f in crl_files))
    return path


@pytest.fixture
def pub(tmp_path: Path) -> Publication:
    return make_publication(tmp_path, "ec-p256")


# --------------------------------------------------------------------------- one publication per algorithm


@dataclass
class World:
    """A publication whose CRLs went through every stage; files are the archived CRLs."""

    pub: Publication
    algorithm: str
    chain: Path  # root + issuing ICA
    revoked_ee: Path
    good_ee: Path
    ica_empty: Path  # ica 1: no entries
    ica_one: Path  # ica 2: the revoked EE (keyCompromise, invalidity date)
    ica_edges: Path  # ica 3: every reason, 1-byte serials, a 20-octet serial, a revocation after 2049
    ica_big_serial: Path  # ica 4: plus a 20-byte serial with the high bit set (21 octets in DER)
    arl_empty: Path  # iki-root 1
    arl_ica_revoked: Path  # iki-root 2: the issuing ICA revoked
    edges: dict[int, Revocation]


SERIAL_20_OCTETS = int("80" + "01" * 18, 16) | 1  # 19-byte value, high bit set: 20 content octets in DER
SERIAL_20_BYTES_HIGH_BIT = int("ff" * 20, 16)
LATE = dt.datetime(2061, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module", params=ALGORITHMS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> World:
    algorithm: str = request.param
    base = tmp_path_factory.mktemp(f"world-{algorithm}")
    pub = make_publication(base, algorithm)
    cfg = pub.config
    revoked_ee, good_ee = issue_ee(pub), issue_ee(pub, role="Supplier", org_id="44-55")
    now = publication.now_utc()
    crl_publish.refresh(cfg, now=now)
    operations.revoke(cfg, "ica", revoked_ee.certificate.serial_number, "keyCompromise", now - DAY, now=now)
    crl_publish.refresh(cfg, now=now)
    edges: dict[int, Revocation] = {}
    for i, reason in enumerate(REASONS):
        inv = now - dt.timedelta(hours=i + 1) if i % 2 else None
        operations.revoke(cfg, "ica", 0x1000 + i, reason, inv, unknown_serial=True, now=now)
        edges[0x1000 + i] = Revocation(0x1000 + i, now, reason, inv)
    for serial, reason in ((0x01, "superseded"), (0x80, "affiliationChanged"), (SERIAL_20_OCTETS, "superseded")):
        operations.revoke(cfg, "ica", serial, reason, unknown_serial=True, now=now)
        edges[serial] = Revocation(serial, now, reason)
    late_inv = dt.datetime(2055, 6, 1, 12, 30, 5, tzinfo=UTC)
    operations.revoke(cfg, "ica", 0x2061, "keyCompromise", late_inv, unknown_serial=True, now=LATE)
    edges[0x2061] = Revocation(0x2061, LATE, "keyCompromise", late_inv)
    crl_publish.refresh(cfg, now=now)
    operations.revoke(cfg, "ica", SERIAL_20_BYTES_HIGH_BIT, "cessationOfOperation", unknown_serial=True, now=now)
    edges[SERIAL_20_BYTES_HIGH_BIT] = Revocation(SERIAL_20_BYTES_HIGH_BIT, now, "cessationOfOperation")
    crl_publish.refresh(cfg, now=now)
    operations.revoke(cfg, "iki-root", pub.hierarchy.issuing_cert.serial_number, "cACompromise", now=now)
    crl_publish.refresh(cfg, now=now)
    arch = pub.root / "crl" / "archive"
    return World(
        pub=pub,
        algorithm=algorithm,
        chain=write_pem(base / "chain.pem", pub.hierarchy.root_cert, pub.hierarchy.issuing_cert),
        revoked_ee=revoked_ee.path,
        good_ee=good_ee.path,
        ica_empty=arch / "ica" / "1.crl",
        ica_one=arch / "ica" / "2.crl",
        ica_edges=arch / "ica" / "3.crl",
        ica_big_serial=arch / "ica" / "4.crl",
        arl_empty=arch / "iki-root" / "1.crl",
        arl_ica_revoked=arch / "iki-root" / "2.crl",
        edges=edges,
    )


def test_world_made_the_expected_crls(world: World) -> None:
    assert sorted(p.name for p in (world.pub.root / "crl" / "archive" / "ica").iterdir()) == [
        "1.crl",
        "2.crl",
        "3.crl",
        "4.crl",
    ]
    assert sorted(p.name for p in (world.pub.root / "crl" / "archive" / "iki-root").iterdir()) == ["1.crl", "2.crl"]
    assert len(load(world.ica_empty)) == 0
    assert [r.serial_number for r in load(world.ica_one)] == [load_cert(world.revoked_ee).serial_number]
    assert len(load(world.arl_ica_revoked)) == 1


def test_openssl_crl_verify_accepts_every_crl(world: World) -> None:
    files = sorted((world.pub.root / "crl").rglob("*.crl")) + sorted((world.pub.root / "crl").glob("*.pem"))
    assert len(files) == 2 + 6 + 2
    for f in files:
        assert_openssl_accepts(f, world.chain)


def test_openssl_crl_verify_rejects_the_wrong_issuer(world: World, tmp_path: Path) -> None:
    """The control for the test above: openssl does check the signature."""
    root_only = write_pem(tmp_path / "root.pem", world.pub.hierarchy.root_cert)
    r = openssl_crl_verify(world.ica_one, root_only)
    assert r.returncode != 0 or "verify failure" in r.stdout + r.stderr


def test_signature_algorithm_follows_the_key(world: World) -> None:
    expected = {
        "ec-p256": "ecdsa-with-SHA256",
        "ec-p384": "ecdsa-with-SHA384",
        "rsa-3072": "sha256WithRSAEncryption",
    }[world.algorithm]
    for f in (world.ica_one, world.arl_empty):
        assert load(f).signature_algorithm_oid._name == expected


def test_edge_entries_round_trip(world: World) -> None:
    """Every reason, invalidity dates, 1- and 20-byte serials, GeneralizedTime after 2049, as openssl reads them."""
    data = world.ica_big_serial.read_bytes()
    parsed = {r.serial_number: r for r in x509.load_der_x509_crl(data)}
    for serial, rev in world.edges.items():
        entry = parsed[serial]
        assert entry.revocation_date_utc == rev.revoked_at
        reason = entry_ext(entry, x509.CRLReason)
        if rev.reason == "unspecified":
            assert reason is None
        else:
            assert reason is not None and not reason.critical
            assert reason.value.reason.value == rev.reason
        inv = entry_ext(entry, x509.InvalidityDate)
        if rev.invalidity_date is None:
            assert inv is None
        else:
            assert inv is not None and not inv.critical
            assert inv.value.invalidity_date_utc == rev.invalidity_date
    times = revoked_entry_times(data)
    assert times[0x2061] == (0x18, b"20610101000000Z")  # GeneralizedTime from 2050
    assert times[0x01][0] == 0x17  # UTCTime through 2049
    text = run(OPENSSL, "crl", "-inform", "DER", "-in", world.ica_big_serial, "-noout", "-text").stdout
    assert "Serial Number: 01\n" in text
    assert "Serial Number: 80\n" in text or "Serial Number: 0080\n" in text
    assert "Serial Number: " + "FF" * 20 in text
    assert "Jan  1 00:00:00 2061 GMT" in text
    assert "Jun  1 12:30:05 2055 GMT" in text
    for label in ("Key Compromise", "CA Compromise", "Affiliation Changed", "Superseded"):
        assert label in text
    for label in ("Cessation Of Operation", "Privilege Withdrawn", "AA Compromise"):
        assert label in text
    assert "Certificate Hold" not in text and "Unspecified" not in text


def test_openssl_verify_rejects_the_revoked_and_accepts_the_good(world: World) -> None:
    rc, out = openssl_verify(world.revoked_ee, world.chain, world.ica_big_serial)
    assert rc != 0 and "certificate revoked" in out, out
    rc, out = openssl_verify(world.good_ee, world.chain, world.ica_big_serial)
    assert rc == 0 and ": OK" in out, out
    rc, out = openssl_verify(world.revoked_ee, world.chain, world.ica_empty)
    assert rc == 0, "before the revocation the same certificate verifies: " + out


def test_arl_revoking_the_issuing_ica_rejects_its_certificates(world: World, tmp_path: Path) -> None:
    after = pem_crls(tmp_path / "after.pem", world.arl_ica_revoked, world.ica_big_serial)
    rc, out = openssl_verify(world.good_ee, world.chain, after, "-crl_check_all")
    assert rc != 0 and "error 23 at 1 depth lookup: certificate revoked" in out, out


def test_openssl_crl_check_all_accepts_a_good_chain(world: World, tmp_path: Path) -> None:
    """The control for the test above: with the root's ARL (ICA not revoked) the same chain verifies.

    Fails with OpenSSL 3.0: "error 44 at 2 depth lookup: different CRL scope". -crl_check_all also
    checks the root certificate, which has no CRL Distribution Points, against the ARL, whose Issuing
    Distribution Point names a distribution point; OpenSSL's crl_crldp_check then finds no CRL in scope.
    """
    before = pem_crls(tmp_path / "before.pem", world.arl_empty, world.ica_big_serial)
    rc, out = openssl_verify(world.good_ee, world.chain, before, "-crl_check_all")
    assert rc == 0 and ": OK" in out, out


def test_pkilint_finds_nothing(world: World) -> None:
    for path, kind in (
        (world.ica_one, "CRL"),
        (world.ica_edges, "CRL"),
        (world.ica_empty, "CRL"),
        (world.arl_empty, "ARL"),
        (world.arl_ica_revoked, "ARL"),
    ):
        r = lint(path, kind)
        assert (r.returncode, r.stdout.strip(), r.stderr.strip()) == (0, "", ""), (path, kind, r.stdout, r.stderr)


# --------------------------------------------------------------------------- pkilint can fail


@functools.cache
def _test_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    return ec.generate_private_key(ec.SECP256R1()), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lint CA")])


def crafted_crl(aki: bool = True, number: bool = True, reason_critical: bool = False) -> bytes:
    key, name = _test_ca()
    now = publication.now_utc()
    b = x509.CertificateRevocationListBuilder().issuer_name(name).last_update(now).next_update(now + 7 * DAY)
    if aki:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    if number:
        b = b.add_extension(x509.CRLNumber(3), critical=False)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(0x1234)
        .revocation_date(now)
        .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=reason_critical)
        .build()
    )
    return b.add_revoked_certificate(entry).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("defect", "finding"),
    [
        ({"aki": False}, "pkix.authority_key_identifier_missing"),
        ({"number": False}, "pkix.crl_number_missing"),
        ({"reason_critical": True}, "pkix.crl_reason_code_extension_critical"),
    ],
)
def test_pkilint_reports_a_bad_crl(tmp_path: Path, defect: dict[str, bool], finding: str) -> None:
    good, bad = tmp_path / "good.crl", tmp_path / "bad.crl"
    good.write_bytes(crafted_crl())
    bad.write_bytes(crafted_crl(**defect))
    r = lint(good)
    assert (r.returncode, r.stdout.strip()) == (0, ""), "the control CRL is clean: " + r.stdout
    r = lint(bad)
    assert r.returncode != 0 and finding in r.stdout, r.stdout


# --------------------------------------------------------------------------- DER encoder vs cryptography


@functools.cache
def _encoder_issuer(algorithm: str) -> tuple[keys.PrivateKey, x509.Certificate]:
    key = keys.generate(algorithm)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Encoder {algorithm}")])
    start = dt.datetime(1990, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(dt.datetime(9999, 12, 31, tzinfo=UTC))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


times = st.datetimes(
    min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(2200, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
revocations = st.builds(
    Revocation,
    serial=st.one_of(
        st.integers(1, 2**159 - 1),
        st.integers(1, 19).flatmap(lambda n: st.integers(2 ** (8 * n - 1), 2 ** (8 * n) - 1)),  # high bit set
    ),
    revoked_at=times,
    reason=st.sampled_from(sorted(REASONS)),
    invalidity_date=st.none() | times,
)


def reference_tbs(spec: CRLSpec, revs: list[Revocation], key: keys.PrivateKey) -> bytes:
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(spec.issuer.subject)
        .last_update(spec.this_update)
        .next_update(spec.next_update)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                spec.issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .add_extension(x509.CRLNumber(spec.number), critical=False)
        .add_extension(
            x509.IssuingDistributionPoint(
                [x509.UniformResourceIdentifier(spec.distribution_point)],
                None,
                not spec.only_ca_certs,
                spec.only_ca_certs,
                None,
                False,
                False,
            ),
            critical=True,
        )
    )
    for r in sorted(revs, key=lambda r: r.serial):  # the publisher sorts entries by serial
        rb = x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(r.revoked_at)
        if r.reason != "unspecified":
            rb = rb.add_extension(x509.CRLReason(x509.ReasonFlags(r.reason)), critical=False)
        if r.invalidity_date is not None:
            rb = rb.add_extension(x509.InvalidityDate(r.invalidity_date), critical=False)
        b = b.add_revoked_certificate(rb.build())
    hash_alg = crl.signature_scheme(key).hash
    return b.sign(key, hash_alg).tbs_certlist_bytes  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    algorithm=st.sampled_from(["ec-p256", "ec-p384"]),
    revs=st.lists(revocations, max_size=40, unique_by=lambda r: r.serial),
    this_update=times,
    lifetime=st.integers(1, 400 * 86400),
    number=st.integers(1, 2**159 - 1),
    only_ca=st.booleans(),
    url=st.sampled_from(["https://a.test/crl/ica.crl", "https://crl.example.test/" + "x" * 200 + "/root.crl"]),
)
def test_der_encoder_matches_cryptography(
    algorithm: str,
    revs: list[Revocation],
    this_update: dt.datetime,
    lifetime: int,
    number: int,
    only_ca: bool,
    url: str,
) -> None:
    key, cert = _encoder_issuer(algorithm)
    spec = CRLSpec(cert, number, this_update, this_update + dt.timedelta(seconds=lifetime), url, only_ca)
    scheme = crl.signature_scheme(key)
    ours = crl.build_tbs(spec, crl.encode_revoked(revs), scheme)
    assert ours == reference_tbs(spec, revs, key)
    signed = crl.sign_crl(spec, list(reversed(revs)), key)  # input order does not matter
    assert tbs_bytes(signed) == ours
    crl.verify_signature(signed, cert)


def test_der_encoder_matches_cryptography_rsa() -> None:
    key, cert = _encoder_issuer("rsa-3072")
    now = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
    revs = [
        Revocation(1, now, "keyCompromise", now - DAY),
        Revocation(2**100, now + dt.timedelta(seconds=1), "unspecified"),
        Revocation(7, now - DAY, "aACompromise"),
    ]
    spec = CRLSpec(cert, 2**64, now, now + 365 * DAY, "https://a.test/crl/iki-root.crl", True)
    assert crl.build_tbs(spec, crl.encode_revoked(revs), crl.signature_scheme(key)) == reference_tbs(spec, revs, key)


def test_encoder_refuses_a_serial_twice_and_the_forbidden_reasons() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(CRLError, match="serial 5 appears twice"):
        crl.encode_revoked([Revocation(5, now), Revocation(5, now, "keyCompromise")])
    for reason in ("certificateHold", "removeFromCRL", "bogus"):
        with pytest.raises(CRLError):
            crl.encode_revoked([Revocation(5, now, reason)])


# --------------------------------------------------------------------------- check_crl refusals


def sign_for(
    pub: Publication,
    number: int,
    revs: list[Revocation] | None = None,
    this_update: dt.datetime | None = None,
    issuer: x509.Certificate | None = None,
    key: keys.PrivateKey | None = None,
) -> bytes:
    this_update = this_update or publication.now_utc()
    spec = CRLSpec(
        issuer or pub.hierarchy.issuing_cert,
        number,
        this_update,
        this_update + 7 * DAY,
        pub.config.crl_url("ica"),
        False,
    )
    return crl.sign_crl(spec, revs or [], key or issuer_key(pub, "ica"))


def test_check_crl_accepts_a_good_successor(pub: Publication) -> None:
    now = publication.now_utc()
    ica = pub.hierarchy.issuing_cert
    first = sign_for(pub, 1, [Revocation(0xABC, now)])
    second = sign_for(pub, 2, [Revocation(0xABC, now), Revocation(0xDEF, now, "superseded")])
    info = crl.check_crl(second, ica, first, now)
    assert (info.number, info.entries, info.sha256) == (2, 2, hashlib.sha256(second).hexdigest())
    assert info.issuer_fingerprint == ica.fingerprint(hashes.SHA256()).hex()
    assert crl.check_crl(first, ica, None, now).number == 1


def test_check_crl_refuses_another_keys_signature(pub: Publication) -> None:
    now = publication.now_utc()
    ica = pub.hierarchy.issuing_cert
    other_key = keys.generate("ec-p256")
    impostor = (
        x509.CertificateBuilder()
        .subject_name(ica.subject)
        .issuer_name(ica.issuer)
        .public_key(other_key.public_key())
        .serial_number(ica.serial_number)
        .not_valid_before(ica.not_valid_before_utc)
        .not_valid_after(ica.not_valid_after_utc)
        .add_extension(ica.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value, critical=False)
        .sign(other_key, hashes.SHA256())
    )
    forged = sign_for(pub, 2, issuer=impostor, key=other_key)
    with pytest.raises(CRLError, match=r"^signature: the CRL's signature does not verify under the key of"):
        crl.check_crl(forged, ica, None, now)
    good = sign_for(pub, 2)
    tampered = good.replace(b"crl.example.test", b"crl.exbmple.test")
    assert tampered != good
    with pytest.raises(CRLError, match=r"^signature:"):
        crl.check_crl(tampered, ica, None, now)
    with pytest.raises(CRLError, match=r"^signature:"):
        crl.check_crl(good, pub.hierarchy.root_cert, None, now)


def test_sign_crl_refuses_a_key_that_is_not_the_issuers(pub: Publication) -> None:
    with pytest.raises(CRLError, match="does not belong to the issuer certificate"):
        sign_for(pub, 1, key=issuer_key(pub, "iki-root"))


@pytest.mark.parametrize("new_number", [4, 5])
def test_check_crl_refuses_a_number_not_greater(pub: Publication, new_number: int) -> None:
    now = publication.now_utc()
    previous = sign_for(pub, 5)
    with pytest.raises(CRLError, match=rf"^CRL number: {new_number} is not greater than the previous CRL's 5$"):
        crl.check_crl(sign_for(pub, new_number), pub.hierarchy.issuing_cert, previous, now)


def test_check_crl_refuses_a_lost_entry(pub: Publication) -> None:
    now = publication.now_utc()
    previous = sign_for(pub, 1, [Revocation(0xABC, now), Revocation(0xDEF, now)])
    with pytest.raises(CRLError, match=r"^retention: entries of the previous CRL disappeared \(serials abc\)"):
        crl.check_crl(sign_for(pub, 2, [Revocation(0xDEF, now)]), pub.hierarchy.issuing_cert, previous, now)
    with pytest.raises(CRLError, match=r"^retention: .*\(serials abc, def\)"):
        crl.check_crl(sign_for(pub, 2), pub.hierarchy.issuing_cert, previous, now)


def test_check_crl_refuses_this_update_in_the_future(pub: Publication) -> None:
    now = publication.now_utc()
    ahead = sign_for(pub, 1, this_update=now + dt.timedelta(hours=1))
    with pytest.raises(CRLError, match=r"^thisUpdate: .* is in the future"):
        crl.check_crl(ahead, pub.hierarchy.issuing_cert, None, now)
    slightly = sign_for(pub, 1, this_update=now + dt.timedelta(minutes=4))
    assert crl.check_crl(slightly, pub.hierarchy.issuing_cert, None, now).number == 1  # clock skew allowed


def test_check_crl_refuses_a_serial_twice(pub: Publication) -> None:
    now = publication.now_utc()
    ica = pub.hierarchy.issuing_cert
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ica.subject)
        .last_update(now)
        .next_update(now + 7 * DAY)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ica.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(x509.CRLNumber(2), critical=False)
    )
    for _ in range(2):
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(0x77).revocation_date(now).build())
    twice = b.sign(issuer_key(pub, "ica"), hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(CRLError, match=r"^duplicate serial: a serial number appears twice"):
        crl.check_crl(twice, ica, None, now)


def test_check_crl_refuses_what_is_not_a_crl(pub: Publication) -> None:
    now = publication.now_utc()
    cert_der = pub.hierarchy.issuing_cert.public_bytes(serialization.Encoding.DER)
    for junk in (b"", b"not a CRL", cert_der, crl.to_pem(sign_for(pub, 1))):
        with pytest.raises(CRLError, match=r"^not a DER CRL"):
            crl.check_crl(junk, pub.hierarchy.issuing_cert, None, now)


# --------------------------------------------------------------------------- profile of what refresh publishes


def test_profile_of_the_published_crl(pub: Publication) -> None:
    now = publication.now_utc()
    ee_a, ee_b, ee_c = issue_ee(pub), issue_ee(pub, org_id="2"), issue_ee(pub, org_id="3")
    cfg = pub.config
    operations.revoke(cfg, "ica", ee_a.certificate.serial_number, "unspecified", now=now)
    operations.revoke(cfg, "ica", ee_b.certificate.serial_number, "keyCompromise", now - DAY, now=now)
    operations.revoke(cfg, "ica", ee_c.certificate.serial_number, "superseded", now=now)
    crl_publish.refresh(cfg, now=now)
    data, _ = published(pub, "ica")
    parsed = x509.load_der_x509_crl(data)
    fields = tbs_fields(data)
    assert fields[0] == (0x02, b"\x01")  # v2
    assert [t for t, _ in fields] == [0x02, 0x30, 0x30, 0x17, 0x17, 0x30, 0xA0]
    assert parsed.issuer == pub.hierarchy.issuing_cert.subject
    assert parsed.last_update_utc == now and parsed.next_update_utc == now + 7 * DAY

    aki = parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ski = pub.hierarchy.issuing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert not aki.critical and aki.value.key_identifier == ski.digest
    assert aki.value.authority_cert_issuer is None and aki.value.authority_cert_serial_number is None
    number = parsed.extensions.get_extension_for_class(x509.CRLNumber)
    assert not number.critical and number.value.crl_number == 1

    entries = list(parsed)
    assert [e.serial_number for e in entries] == sorted(e.serial_number for e in entries)
    by_serial = {e.serial_number: e for e in entries}
    plain = by_serial[ee_a.certificate.serial_number]
    assert len(plain.extensions) == 0  # unspecified: no reason code, no invalidity date
    compromised = by_serial[ee_b.certificate.serial_number]
    reason = compromised.extensions.get_extension_for_class(x509.CRLReason)
    assert not reason.critical and reason.value.reason is x509.ReasonFlags.key_compromise
    inv = compromised.extensions.get_extension_for_class(x509.InvalidityDate)
    assert not inv.critical and inv.value.invalidity_date_utc == now - DAY
    superseded = by_serial[ee_c.certificate.serial_number]
    assert entry_ext(superseded, x509.InvalidityDate) is None
    assert superseded.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.superseded


def test_empty_crl_has_no_revoked_certificates_field(pub: Publication) -> None:
    crl_publish.refresh(pub.config)
    for issuer in ("ica", "iki-root"):
        data, meta = published(pub, issuer)
        assert len(x509.load_der_x509_crl(data)) == 0 and meta["entries"] == 0
        # version, signature, issuer, thisUpdate, nextUpdate, then directly [0] crlExtensions
        assert [t for t, _ in tbs_fields(data)] == [0x02, 0x30, 0x30, 0x17, 0x17, 0xA0]


def test_issuing_distribution_point_matches_the_certificates(pub: Publication) -> None:
    ee = issue_ee(pub).certificate
    crl_publish.refresh(pub.config)

    def cdp_url(cert: x509.Certificate) -> str:
        dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert len(dps) == 1 and dps[0].full_name is not None
        return str(dps[0].full_name[0].value)

    for issuer, cert, only_ca in (("ica", ee, False), ("iki-root", pub.hierarchy.issuing_cert, True)):
        data, meta = published(pub, issuer)
        idp = x509.load_der_x509_crl(data).extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical
        assert idp.value.full_name is not None
        assert [str(n.value) for n in idp.value.full_name] == [cdp_url(cert)] == [meta["url"]]
        assert idp.value.only_contains_ca_certs is only_ca
        assert idp.value.only_contains_user_certs is not only_ca
        assert not idp.value.indirect_crl and idp.value.only_some_reasons is None


# --------------------------------------------------------------------------- refresh: when, what, where


def test_refresh_when_no_crl_exists_then_nothing_is_due(pub: Publication) -> None:
    now = publication.now_utc()
    done = crl_publish.refresh(pub.config, now=now)
    assert {d.issuer: d.reason for d in done} == {"iki-root": "no CRL published yet", "ica": "no CRL published yet"}
    before = snapshot(pub.root)
    assert crl_publish.refresh(pub.config, now=now + DAY) == []
    assert snapshot(pub.root) == before, "a refresh with nothing due writes nothing (not even a CRL number)"


def test_refresh_when_the_register_changed(pub: Publication) -> None:
    now = publication.now_utc()
    ee = issue_ee(pub)
    crl_publish.refresh(pub.config, now=now)
    operations.revoke(pub.config, "ica", ee.certificate.serial_number, "keyCompromise", now=now)
    done = crl_publish.refresh(pub.config, now=now + dt.timedelta(minutes=1))
    assert [(d.issuer, d.reason) for d in done] == [("ica", "the revocation register changed")]
    assert [r.serial_number for r in load(pub.root / "crl" / "ica.crl")] == [ee.certificate.serial_number]
    operations.revoke(pub.config, "iki-root", pub.hierarchy.issuing_cert.serial_number, "cACompromise", now=now)
    done = crl_publish.refresh(pub.config, now=now + dt.timedelta(minutes=2))
    assert [(d.issuer, d.reason, d.info.number, d.info.entries) for d in done] == [
        ("iki-root", "the revocation register changed", 2, 1)
    ]


def test_refresh_after_half_the_lifetime(pub: Publication) -> None:
    t0 = publication.now_utc()
    crl_publish.refresh(pub.config, now=t0)
    half = dt.timedelta(days=3.5)
    assert crl_publish.refresh(pub.config, now=t0 + half - dt.timedelta(seconds=1)) == []
    done = crl_publish.refresh(pub.config, now=t0 + half)
    assert [(d.issuer, d.reason) for d in done] == [("ica", "50% of the CRL's lifetime has passed")]
    assert done[0].info.this_update == t0 + half and done[0].info.next_update == t0 + half + 7 * DAY
    arl_half = dt.timedelta(days=182.5)
    done = crl_publish.refresh(pub.config, now=t0 + arl_half - dt.timedelta(seconds=1))
    assert [d.issuer for d in done] == ["ica"], "the ARL is not due before half of its 365 days"
    done = crl_publish.refresh(pub.config, now=t0 + arl_half)
    assert [(d.issuer, d.reason) for d in done] == [("iki-root", "50% of the CRL's lifetime has passed")]


def test_refresh_fraction_and_lifetime_are_configurable(pub: Publication) -> None:
    cfg = pub.edit_config(
        "crl_lifetime_days = 7\nrefresh_fraction = 0.5", "crl_lifetime_days = 2\nrefresh_fraction = 0.25"
    )
    t0 = publication.now_utc()
    crl_publish.refresh(cfg, now=t0)
    data, meta = published(pub, "ica")
    parsed = x509.load_der_x509_crl(data)
    assert parsed.next_update_utc == parsed.last_update_utc + 2 * DAY
    assert meta["next_update"] == (t0 + 2 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert crl_publish.refresh(cfg, now=t0 + dt.timedelta(hours=12) - dt.timedelta(seconds=1)) == []
    done = crl_publish.refresh(cfg, now=t0 + dt.timedelta(hours=12))
    assert [(d.issuer, d.reason) for d in done] == [("ica", "25% of the CRL's lifetime has passed")]


def test_default_lifetimes_are_7_days_and_365_for_the_arl(pub: Publication) -> None:
    pub.edit_config("crl_lifetime_days = 365\n", "")
    pub.edit_config("crl_lifetime_days = 7\n", "")
    cfg = pub.edit_config("refresh_fraction = 0.5\n", "")
    assert "crl_lifetime_days" not in (pub.root / "publisher.toml").read_text()
    t0 = publication.now_utc()
    crl_publish.refresh(cfg, now=t0)
    for issuer, days in (("ica", 7), ("iki-root", 365)):
        parsed = load(pub.root / "crl" / f"{issuer}.crl")
        assert parsed.next_update_utc == parsed.last_update_utc + days * DAY
    assert crl_publish.refresh(cfg, now=t0 + dt.timedelta(days=3.5) - dt.timedelta(seconds=1)) == []
    assert [d.issuer for d in crl_publish.refresh(cfg, now=t0 + dt.timedelta(days=3.5))] == ["ica"]


def test_force_refreshes_everything(pub: Publication) -> None:
    now = publication.now_utc()
    crl_publish.refresh(pub.config, now=now)
    done = crl_publish.refresh(pub.config, now=now, force=True)
    assert [(d.issuer, d.reason, d.info.number) for d in done] == [("iki-root", "forced", 2), ("ica", "forced", 2)]


def test_published_files_and_json(pub: Publication) -> None:
    now = publication.now_utc()
    ee = issue_ee(pub)
    operations.revoke(pub.config, "ica", ee.certificate.serial_number, "superseded", now=now)
    crl_publish.refresh(pub.config, now=now)
    base = pub.root / "crl"
    for issuer, cert, entries in (
        ("ica", pub.hierarchy.issuing_cert, 1),
        ("iki-root", pub.hierarchy.root_cert, 0),
    ):
        data = (base / f"{issuer}.crl").read_bytes()
        meta = json.loads((base / f"{issuer}.json").read_text())
        parsed = x509.load_der_x509_crl(data)
        assert (
            x509.load_pem_x509_crl((base / f"{issuer}.pem").read_bytes()).public_bytes(serialization.Encoding.DER)
            == data
        )
        assert meta["number"] == crl.crl_number(parsed) == 1
        assert meta["this_update"] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert meta["next_update"] == (now + (7 if issuer == "ica" else 365) * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert parsed.next_update_utc == now + (7 if issuer == "ica" else 365) * DAY
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()
        assert meta["entries"] == len(parsed) == entries
        assert meta["issuer_fingerprint"] == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        assert meta["issuer"] == issuer and meta["url"] == pub.config.crl_url(issuer)
        assert (base / "archive" / issuer / "1.crl").read_bytes() == data


def test_archive_keeps_every_crl_and_numbers_increase(pub: Publication) -> None:
    now = publication.now_utc()
    seen: dict[int, bytes] = {}
    numbers = []
    for i in range(4):
        operations.revoke(pub.config, "ica", 0x500 + i, "keyCompromise", unknown_serial=True, now=now)
        (info,) = (
            d.info for d in crl_publish.refresh(pub.config, now=now + dt.timedelta(seconds=i)) if d.issuer == "ica"
        )
        numbers.append(info.number)
        seen[info.number] = (pub.root / "crl" / "ica.crl").read_bytes()
    registers.reserve_crl_number(pub.root, "ica")  # numbers reserved by a run that crashed before signing
    registers.reserve_crl_number(pub.root, "ica")
    (info,) = (d.info for d in crl_publish.refresh(pub.config, now=now, force=True) if d.issuer == "ica")
    numbers.append(info.number)
    seen[info.number] = (pub.root / "crl" / "ica.crl").read_bytes()
    assert numbers == [1, 2, 3, 4, 7]
    archive = pub.root / "crl" / "archive" / "ica"
    assert sorted(int(p.stem) for p in archive.iterdir()) == numbers
    for number, data in seen.items():
        assert (archive / f"{number}.crl").read_bytes() == data
        assert crl.crl_number(x509.load_der_x509_crl(data)) == number
        assert len(x509.load_der_x509_crl(data)) == min(number, 4)
    assert registers.last_crl_numbers(pub.root)["ica"] == 7


def test_a_lost_crl_number_register_does_not_reuse_numbers(pub: Publication) -> None:
    now = publication.now_utc()
    for _ in range(3):
        crl_publish.refresh(pub.config, now=now, force=True)
    (pub.root / registers.CRL_NUMBERS).unlink()
    done = crl_publish.refresh(pub.config, now=now, force=True)
    assert {d.issuer: d.info.number for d in done} == {"iki-root": 4, "ica": 4}
    (pub.root / registers.CRL_NUMBERS).write_text('{"ica": 1, "iki-root": 2}\n')  # an old copy restored
    done = crl_publish.refresh(pub.config, now=now, force=True)
    assert {d.issuer: d.info.number for d in done} == {"iki-root": 5, "ica": 5}


def test_a_register_that_lost_a_revocation_cannot_shrink_the_crl(pub: Publication) -> None:
    now = publication.now_utc()
    for serial in (0xA1, 0xA2):
        operations.revoke(pub.config, "ica", serial, "keyCompromise", unknown_serial=True, now=now)
    crl_publish.refresh(pub.config, now=now)
    before = (pub.root / "crl" / "ica.crl").read_bytes()
    path = pub.root / registers.REVOCATIONS
    path.write_text(path.read_text().splitlines(keepends=True)[1])
    with pytest.raises(CRLError, match=r"^retention: .*a1"):
        crl_publish.refresh(pub.config, now=now + dt.timedelta(minutes=1))
    assert (pub.root / "crl" / "ica.crl").read_bytes() == before
    assert sorted(p.name for p in (pub.root / "crl" / "archive" / "ica").iterdir()) == ["1.crl"]


def test_retention_is_checked_against_the_published_crl_even_without_its_json(pub: Publication) -> None:
    """The previous CRL is crl/<issuer>.crl; a missing <issuer>.json (e.g. a crash between the renames of the
    first publication, or a deleted file) must not switch off the number and retention checks."""
    now = publication.now_utc()
    for serial in (0xA1, 0xA2):
        operations.revoke(pub.config, "ica", serial, "keyCompromise", unknown_serial=True, now=now)
    crl_publish.refresh(pub.config, now=now)
    before = (pub.root / "crl" / "ica.crl").read_bytes()
    (pub.root / "crl" / "ica.json").unlink()
    path = pub.root / registers.REVOCATIONS
    path.write_text(path.read_text().splitlines(keepends=True)[1])
    with pytest.raises(CRLError, match=r"^retention: .*a1"):
        crl_publish.refresh(pub.config, now=now + dt.timedelta(minutes=1))
    assert (pub.root / "crl" / "ica.crl").read_bytes() == before


def test_an_expired_issuer_certificate_refuses_to_sign(pub: Publication) -> None:
    ica = pub.hierarchy.issuing_cert
    late = ica.not_valid_after_utc + dt.timedelta(seconds=1)
    assert late < pub.hierarchy.root_cert.not_valid_after_utc
    with pytest.raises(CRLRefused, match="issuer ica's certificate expired"):
        crl_publish.refresh(pub.config, now=late)
    assert not (pub.root / "crl" / "ica.crl").exists()
    assert "ica" not in registers.last_crl_numbers(pub.root)
    assert crl_publish.refresh(pub.config, now=ica.not_valid_after_utc)[0].issuer == "ica"  # the last second works
    spec = CRLSpec(ica, 9, late, late + DAY, pub.config.crl_url("ica"), False)
    with pytest.raises(CRLError, match="has expired"):
        crl.sign_crl(spec, [], issuer_key(pub, "ica"))


# --------------------------------------------------------------------------- key custody


def move_ica_key(pub: Publication, target: Path) -> Path:
    source = pub.config.issuer("ica").key.file
    assert source is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    pub.edit_config(f'key_file = "{source}"', f'key_file = "{target}"')
    return target


def test_a_key_tracked_by_git_is_refused(pub: Publication) -> None:
    repo = git.Repo.init(pub.root)
    key = move_ica_key(pub, pub.root / "secrets" / "ica.key")
    repo.index.add([str(key.relative_to(pub.root))])
    with pytest.raises(KeyUnusable, match="is tracked by git"):
        crl_publish.refresh(pub.config)
    assert not (pub.root / "crl" / "ica.crl").exists()


def test_a_key_in_a_git_work_tree_must_be_ignored(pub: Publication) -> None:
    """Publication and keys folder both inside one git work tree: the key must be git-ignored."""
    base = pub.root.parent
    git.Repo.init(base)
    with pytest.raises(KeyUnusable, match="inside the git work tree and not ignored"):
        crl_publish.refresh(pub.config)
    assert not (pub.root / "crl" / "iki-root.crl").exists()
    (base / ".gitignore").write_text("keys/\n")
    assert [d.issuer for d in crl_publish.refresh(pub.config)] == ["iki-root", "ica"]


def test_an_ignored_key_inside_the_publication_is_still_refused(pub: Publication) -> None:
    git.Repo.init(pub.root)
    (pub.root / ".gitignore").write_text("secrets/\n")
    move_ica_key(pub, pub.root / "secrets" / "ica.key")
    with pytest.raises(KeyUnusable, match="inside the publication folder"):
        crl_publish.refresh(pub.config)
    assert not (pub.root / "crl" / "ica.crl").exists()


def test_a_key_inside_the_publication_folder_is_refused(pub: Publication) -> None:
    move_ica_key(pub, pub.root / "secrets" / "ica.key")
    with pytest.raises(KeyUnusable, match="inside the publication folder"):
        crl_publish.refresh(pub.config)
    assert not (pub.root / "crl" / "ica.crl").exists()


def test_a_key_from_an_environment_variable(pub: Publication, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = pub.config.issuer("ica").key.file
    assert source is not None
    cfg = pub.edit_config(f'key_file = "{source}"', 'key_env = "CPL_TEST_ICA_KEY"')
    assert cfg.issuer("ica").key.env == "CPL_TEST_ICA_KEY"
    monkeypatch.delenv("CPL_TEST_ICA_KEY", raising=False)
    with pytest.raises(KeyUnusable, match="CPL_TEST_ICA_KEY is empty or unset"):
        crl_publish.refresh(cfg)
    assert not (pub.root / "crl" / "iki-root.crl").exists()  # every due key is opened before anything is signed
    monkeypatch.setenv("CPL_TEST_ICA_KEY", source.read_text())
    source.unlink()  # the file is really not used
    assert [d.issuer for d in crl_publish.refresh(cfg)] == ["iki-root", "ica"]
    assert_openssl_accepts(pub.root / "crl" / "ica.crl", write_pem(tmp_path / "chain.pem", *chain(pub)))


def test_key_file_must_not_be_configured_with_key_env(pub: Publication) -> None:
    source = pub.config.issuer("ica").key.file
    with pytest.raises(ConfigError, match="exactly one of 'key_file', 'key_env' or 'key_pkcs11'"):
        pub.edit_config(f'key_file = "{source}"', f'key_file = "{source}"\nkey_env = "X"')


# --------------------------------------------------------------------------- crashes

# A fork server: it imports once, then for each number K read from stdin forks a worker that runs
# crl_publish.refresh(force=True) in a loop and SIGKILLs itself at its K-th file operation (K = 0: no
# kill switch; the parent kills it at a random moment). It prints "PID <pid>" and, once the worker is
# dead, "DEAD <exit code>" (-9 for SIGKILL).
CRASH_SERVER = r"""
import os, signal, sys, threading, time, traceback
from pathlib import Path
from publisher.config import load
from publisher.pki import crl_publish

config = load(Path(sys.argv[1]))

def install_kill_switch(kill_after):
    lock, count = threading.Lock(), [0]
    def wrap(name):
        real = getattr(os, name)
        def wrapper(*args, **kwargs):
            with lock:
                count[0] += 1
                hit = count[0] == kill_after
            if hit:
                if name == "write":  # a torn write
                    real(args[0], bytes(args[1])[: len(args[1]) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(60)
            return real(*args, **kwargs)
        setattr(os, name, wrapper)
    for name in ("open", "write", "fsync", "replace", "mkdir"):
        wrap(name)

for line in sys.stdin:
    k = int(line)
    pid = os.fork()
    if pid == 0:
        try:
            if k:
                install_kill_switch(k)
            while True:
                crl_publish.refresh(config, force=True)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(3)
    print("PID", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print("DEAD", os.waitstatus_to_exitcode(status), flush=True)
"""


class CrashServer:
    def __init__(self, pub: Publication, err: Path) -> None:
        self.err = err
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_SERVER, str(pub.root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err.open("wb"),
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def _line(self, word: str) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert line and line[0] == word, f"crash server said {line}: {self.err.read_text()}"
        return int(line[1])

    def crash(self, kill_after: int, delay: float = 0.0) -> None:
        """Run one worker until it is killed (at operation ``kill_after``, or after ``delay`` seconds)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{kill_after}\n")
        self.proc.stdin.flush()
        pid = self._line("PID")
        if not kill_after:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        code = self._line("DEAD")
        assert code == -signal.SIGKILL, f"worker exited with {code}: {self.err.read_text()}"

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def crash_pub(tmp_path: Path) -> Iterator[tuple[Publication, CrashServer]]:
    pub = make_publication(tmp_path / "w", "ec-p256")
    crl_publish.refresh(pub.config)
    server = CrashServer(pub, tmp_path / "server.err")
    yield pub, server
    server.close()


def archive_numbers(pub: Publication, issuer: str) -> dict[int, str]:
    """number -> sha256 of each archived CRL (temporaries left by a kill are skipped)."""
    out = {}
    for p in (pub.root / "crl" / "archive" / issuer).iterdir():
        if p.name.startswith("."):
            continue
        data = p.read_bytes()
        out[int(p.stem)] = hashlib.sha256(data).hexdigest()
        assert crl.crl_number(x509.load_der_x509_crl(data)) == int(p.stem), p
    return out


def test_crl_numbers_survive_sigkill(crash_pub: tuple[Publication, CrashServer], tmp_path: Path) -> None:
    pub, server = crash_pub
    rng = random.Random(CRASH_SEED)
    ca_file = write_pem(tmp_path / "chain.pem", *chain(pub))
    issuers = ("iki-root", "ica")
    archived: dict[str, dict[int, str]] = {i: archive_numbers(pub, i) for i in issuers}
    reserved = registers.last_crl_numbers(pub.root)
    revoked: set[int] = set()
    plan = [(k, 0.0) for k in range(1, 61)] + [(0, rng.uniform(0.0, 0.04)) for _ in range(12)]
    for round_no, (kill_after, delay) in enumerate(plan):
        context = f"round {round_no}, kill_after={kill_after}, delay={delay:.3f}, seed={CRASH_SEED}"
        if round_no % 9 == 4:
            serial = 0x9000 + round_no
            operations.revoke(pub.config, "ica", serial, "keyCompromise", unknown_serial=True)
            revoked.add(serial)
        server.crash(kill_after, delay)

        numbers = registers.last_crl_numbers(pub.root)
        assert all(numbers[i] >= reserved[i] for i in issuers), (context, reserved, numbers)
        for issuer in issuers:
            now_archived = archive_numbers(pub, issuer)
            changed = {n for n, h in archived[issuer].items() if now_archived.get(n) != h}
            assert not changed, f"{context}: archived CRLs {changed} of {issuer} were rewritten or lost"
            archived[issuer] = now_archived
        done = crl_publish.refresh(pub.config, force=True)

        after = registers.last_crl_numbers(pub.root)
        assert all(after[i] >= numbers[i] for i in issuers), (context, numbers, after)
        reserved = after
        for d in done:
            data = (pub.root / "crl" / f"{d.issuer}.crl").read_bytes()
            older = archived[d.issuer]
            assert d.info.number > max(older), f"{context}: {d.issuer} CRL {d.info.number} vs archive {max(older)}"
            assert (pub.root / "crl" / "archive" / d.issuer / f"{d.info.number}.crl").read_bytes() == data
            issuer_cert = pub.hierarchy.issuing_cert if d.issuer == "ica" else pub.hierarchy.root_cert
            crl.check_crl(data, issuer_cert, None, publication.now_utc())
            meta = json.loads((pub.root / "crl" / f"{d.issuer}.json").read_text())
            assert (meta["number"], meta["sha256"]) == (d.info.number, hashlib.sha256(data).hexdigest())
            assert_openssl_accepts(pub.root / "crl" / f"{d.issuer}.crl", ca_file)
            archived[d.issuer] = archive_numbers(pub, d.issuer)
        assert {d.issuer for d in done} == set(issuers)
        listed = set(crl.serials(load(pub.root / "crl" / "ica.crl")))
        assert revoked <= listed, f"{context}: revocations missing from the CRL: {revoked - listed}"
    total = sum(len(a) for a in archived.values())
    assert total > 2 + 2 * len(plan), "the workers signed CRLs before they were killed"


def test_json_and_pem_describe_the_published_crl_after_a_crash(
    crash_pub: tuple[Publication, CrashServer],
) -> None:
    """After a crash and a normal (unforced) refresh, <issuer>.json and .pem must describe <issuer>.crl."""
    pub, server = crash_pub
    stale = []
    for kill_after in range(1, 61):
        server.crash(kill_after)
        crl_publish.refresh(pub.config)
        for issuer in ("iki-root", "ica"):
            base = pub.root / "crl"
            data = (base / f"{issuer}.crl").read_bytes()
            meta = json.loads((base / f"{issuer}.json").read_text())
            pem_ok = crl.to_pem(data) == (base / f"{issuer}.pem").read_bytes()
            if meta["sha256"] != hashlib.sha256(data).hexdigest() or not pem_ok:
                stale.append((kill_after, issuer, meta["number"], crl.crl_number(x509.load_der_x509_crl(data))))
    assert not stale, f"(kill_after, issuer, JSON number, .crl number) left inconsistent: {stale}"


# --------------------------------------------------------------------------- incremental refresh


def encoded_offsets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(issuer, register offset) of every encoding of register records during a refresh (0: all of them)."""
    calls: list[tuple[str, int]] = []
    real = crl_publish.IssuerRevocations.encode_from

    def spy(self: crl_publish.IssuerRevocations, offset: int) -> list[crl.Entry]:
        calls.append((self.issuer, offset))
        return real(self, offset)

    monkeypatch.setattr(crl_publish.IssuerRevocations, "encode_from", spy)
    return calls


def expected_revoked(pub: Publication, issuer: str) -> bytes:
    """The issuer's revokedCertificates field from every register record, through the datetime encoder
    (the one the hypothesis test above compares with cryptography's)."""
    parse = der.parse_time
    return crl.encode_revoked(
        Revocation(
            int(r.serial, 16), parse(r.revoked_at), r.reason, parse(r.invalidity_date) if r.invalidity_date else None
        )
        for r in registers.load_revocations(pub.root)
        if r.issuer == issuer
    )


def published_revoked(pub: Publication, issuer: str) -> bytes:
    return crl.revoked_entries((pub.root / "crl" / f"{issuer}.crl").read_bytes()).field()


def revoke_unknown(
    pub: Publication,
    serial: int,
    reason: str = "keyCompromise",
    invalidity_date: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> None:
    operations.revoke(pub.config, "ica", serial, reason, invalidity_date, unknown_serial=True, now=now)


def test_a_refresh_after_new_revocations_merges_them_into_the_previous_entries(
    pub: Publication, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = publication.now_utc()
    for serial, reason in ((0x5000, "keyCompromise"), (0x7000, "superseded"), (0x9000, "unspecified")):
        revoke_unknown(pub, serial, reason, invalidity_date=now - DAY if reason == "keyCompromise" else None, now=now)
    calls = encoded_offsets(monkeypatch)
    crl_publish.refresh(pub.config, now=now)
    assert calls == [("iki-root", 0), ("ica", 0)]  # nothing published yet: every record encoded
    _, meta = published(pub, "ica")
    register = (pub.root / registers.REVOCATIONS).read_bytes()
    assert (meta["register_bytes"], meta["register_sha256"]) == (len(register), hashlib.sha256(register).hexdigest())

    # New serials before, between and after the published ones, 1 to 20 octets, another issuer's in between.
    later = now + dt.timedelta(minutes=1)
    revoke_unknown(pub, 0x01, "cACompromise", invalidity_date=now - 2 * DAY, now=later)
    revoke_unknown(pub, 0x6000, "affiliationChanged", now=later)
    operations.revoke(pub.config, "iki-root", 0x77, "cACompromise", unknown_serial=True, now=later)
    revoke_unknown(pub, 0x8000, "unspecified", now=LATE)
    revoke_unknown(pub, SERIAL_20_BYTES_HIGH_BIT, "privilegeWithdrawn", now=later)
    calls.clear()
    done = crl_publish.refresh(pub.config, now=later)
    assert [(d.issuer, d.info.entries) for d in done] == [("iki-root", 1), ("ica", 7)]
    assert ("ica", len(register)) in calls, calls  # only the records appended since were encoded
    assert published_revoked(pub, "ica") == expected_revoked(pub, "ica")
    assert published_revoked(pub, "iki-root") == expected_revoked(pub, "iki-root")

    # The same entries as a full rebuild (no previous CRL to start from).
    revocations, _ = crl_publish.revocations_for(pub.config, "ica")
    full = crl_publish.build_entries(revocations, None, pub.hierarchy.issuing_cert)
    assert full.field() == published_revoked(pub, "ica")

    # Nothing new: the entries are reused as they are (records encoded from the end of the register: none).
    calls.clear()
    (info,) = (d.info for d in crl_publish.refresh(pub.config, now=later, force=True) if d.issuer == "ica")
    assert info.entries == 7 and published_revoked(pub, "ica") == expected_revoked(pub, "ica")
    size = (pub.root / registers.REVOCATIONS).stat().st_size
    assert calls == [("iki-root", size), ("ica", size)]


def test_a_rewritten_register_falls_back_to_a_full_rebuild(pub: Publication, monkeypatch: pytest.MonkeyPatch) -> None:
    now = publication.now_utc()
    for serial in (0xA1, 0xA2, 0xA3):
        revoke_unknown(pub, serial, now=now)
    crl_publish.refresh(pub.config, now=now)
    calls = encoded_offsets(monkeypatch)
    path = pub.root / registers.REVOCATIONS

    # A published record edited in place (nothing removed) and one appended: the prefix the CRL was built
    # from is gone, so every record is encoded again and the edit shows.
    path.write_text(
        path.read_text().replace('"reason":"keyCompromise","recorded_at"', '"reason":"superseded","recorded_at"', 1)
    )
    revoke_unknown(pub, 0xA4, now=now)
    done = crl_publish.refresh(pub.config, now=now + dt.timedelta(minutes=1))
    assert [(d.issuer, d.reason) for d in done] == [(i, "the revocation register changed") for i in ("iki-root", "ica")]
    assert calls == [("iki-root", 0), ("ica", 0)]
    assert published_revoked(pub, "ica") == expected_revoked(pub, "ica")
    reasons = {e.serial_number: entry_ext(e, x509.CRLReason) for e in load(pub.root / "crl" / "ica.crl")}
    assert [s for s, ext in reasons.items() if ext is not None and ext.value.reason.value == "superseded"] == [0xA1]

    # A published record removed: the full rebuild lacks it and retention refuses the CRL.
    before = (pub.root / "crl" / "ica.crl").read_bytes()
    calls.clear()
    path.write_text("".join(line for line in path.read_text().splitlines(keepends=True) if '"serial":"a2"' not in line))
    with pytest.raises(CRLError, match=r"^retention: .*\(serials a2\)"):
        crl_publish.refresh(pub.config, now=now + dt.timedelta(minutes=2))
    assert calls == [("iki-root", 0), ("ica", 0)]
    assert (pub.root / "crl" / "ica.crl").read_bytes() == before


def test_a_description_without_the_register_prefix_means_a_full_rebuild(
    pub: Publication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As written before the prefix was recorded: the next refresh re-encodes everything, once."""
    now = publication.now_utc()
    revoke_unknown(pub, 0xB1, now=now)
    crl_publish.refresh(pub.config, now=now)
    meta_path = pub.root / "crl" / "ica.json"
    meta = json.loads(meta_path.read_text())
    del meta["register_bytes"]
    meta_path.write_text(json.dumps(meta))
    calls = encoded_offsets(monkeypatch)
    done = crl_publish.refresh(pub.config, now=now)
    assert [(d.issuer, d.reason) for d in done] == [("ica", "the revocation register changed")]
    assert calls == [("ica", 0)]
    assert published_revoked(pub, "ica") == expected_revoked(pub, "ica")
    assert crl_publish.refresh(pub.config, now=now) == []


def test_entries_are_reused_only_from_a_crl_signed_by_the_issuer(
    pub: Publication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root's ARL and its description put in place of the CRL: its entries are not the issuer's.

    Both issuers revoked serial C1, for different reasons, and the ARL's
    description covers the whole register, so reusing its entries would pass
    every other check and publish the root's reason on the issuing ICA's CRL:
    only the signature check sends the refresh to a full rebuild.
    """
    now = publication.now_utc()
    operations.revoke(pub.config, "iki-root", 0xC1, "superseded", unknown_serial=True, now=now)
    revoke_unknown(pub, 0xC1, "keyCompromise", now=now)
    crl_publish.refresh(pub.config, now=now)
    base = pub.root / "crl"
    for suffix in (".crl", ".json"):
        shutil.copyfile(base / f"iki-root{suffix}", base / f"ica{suffix}")
    calls = encoded_offsets(monkeypatch)
    (info,) = (d.info for d in crl_publish.refresh(pub.config, now=now, force=True) if d.issuer == "ica")
    assert ("ica", 0) in calls
    assert info.entries == 1 and published_revoked(pub, "ica") == expected_revoked(pub, "ica")
    [entry] = list(x509.load_der_x509_crl((base / "ica.crl").read_bytes()))
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise


def test_a_serial_already_on_the_crl_appended_again_is_refused(pub: Publication) -> None:
    now = publication.now_utc()
    revoke_unknown(pub, 0xD1, now=now)
    crl_publish.refresh(pub.config, now=now)
    [record] = registers.load_revocations(pub.root)
    registers.append(pub.root, registers.REVOCATIONS, record)  # past revoke's own check, as a hand edit would
    with pytest.raises(CRLError, match="serial d1 appears twice"):
        crl_publish.refresh(pub.config, now=now)
    (pub.root / "crl" / "ica.json").unlink()  # the full rebuild refuses it too
    with pytest.raises(CRLError, match="serial d1 appears twice"):
        crl_publish.refresh(pub.config, now=now)


text_records = st.lists(
    st.tuples(
        st.integers(1, 2**159 - 1),
        st.sampled_from(sorted(REASONS)),
        times,
        st.none() | times,
    ),
    max_size=30,
    unique_by=lambda r: r[0],
)


def as_text(records: list[tuple[int, str, dt.datetime, dt.datetime | None]]) -> list[crl.RevocationText]:
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return [(f"{s:x}", r, t.strftime(iso), i.strftime(iso) if i else None) for s, r, t, i in records]


@settings(max_examples=200, deadline=None)
@given(records=text_records, split=st.integers(0, 30))
def test_merged_entries_equal_entries_encoded_at_once(
    records: list[tuple[int, str, dt.datetime, dt.datetime | None]], split: int
) -> None:
    text = as_text(records)
    everything = crl.join_entries(crl.encode_records(text))
    revs = [Revocation(s, t, r, i) for s, r, t, i in records]
    assert everything.field() == crl.encode_revoked(revs)  # text and datetime encoders agree
    merged = crl.merge_entries(crl.join_entries(crl.encode_records(text[:split])), crl.encode_records(text[split:]))
    assert merged == everything
    assert [crl._key_serial(k) for k in crl.entry_serials(merged.body)] == sorted(s for s, *_ in records)
    if split and split < len(text):
        with pytest.raises(CRLError, match="appears twice"):
            crl.merge_entries(everything, crl.encode_records(text[split - 1 : split]))


@settings(max_examples=300, deadline=None)
@given(when=st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=st.just(UTC)))
def test_times_from_text_equal_times_from_datetimes(when: dt.datetime) -> None:
    when = when.replace(microsecond=0)
    text = f"{when.year:04d}" + when.strftime("-%m-%dT%H:%M:%SZ")  # %Y: fewer than 4 digits before 1000
    assert der.time_from_text(text) == der.time(when)
    assert der.generalized_time_from_text(text) == der.generalized_time(when)


def test_times_from_text_in_other_forms() -> None:
    for text in (
        "2030-06-01T12:00:00+02:00",
        "2030-06-01T10:00:00.9Z",
        "2030-06-01 10:00:00Z",
        "20300601T100000Z",
        "2030-W22-6T10:00:00Z",
        "2030-06-01T10:00Z",
    ):
        assert der.time_from_text(text) == der.time(der.parse_time(text)), text
    assert der.time_from_text("2030-06-01T10:00:00+00:00") == b"\x17\x0d300601100000Z"
    for bad in (
        "2030-02-30T00:00:00Z",
        "2030-13-01T00:00:00Z",
        "2030-06-01T24:00:01Z",
        "yesterday",
        "2030-06-01T10:00:00",
    ):
        with pytest.raises(ValueError):
            der.time_from_text(bad)


def test_pem_is_cryptographys_armour() -> None:
    key, cert = _encoder_issuer("rsa-3072")  # fixed-length signatures: the DER lengths below are fixed
    now = dt.datetime(2030, 1, 1, tzinfo=UTC)
    spec = CRLSpec(cert, 1, now, now + DAY, "https://a.test/crl/ica.crl", False)
    residues = set()
    for count in range(6):  # each entry one octet longer than the one before
        data = crl.sign_crl(spec, [Revocation(1 << (8 * i), now) for i in range(count)], key)
        residues.add(len(data) % 3)  # base64 padding: none, "=" and "=="
        assert crl.to_pem(data) == x509.load_der_x509_crl(data).public_bytes(serialization.Encoding.PEM)
    assert residues == {0, 1, 2}


def test_check_crl_refuses_entries_out_of_serial_order(pub: Publication) -> None:
    now = publication.now_utc()
    ica = pub.hierarchy.issuing_cert
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ica.subject)
        .last_update(now)
        .next_update(now + 7 * DAY)
        .add_extension(x509.CRLNumber(2), critical=False)
    )
    for serial in (0x78, 0x77):
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    unsorted = b.sign(issuer_key(pub, "ica"), hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(CRLError, match=r"^order: the entries are not sorted by serial"):
        crl.check_crl(unsorted, ica, None, now)
