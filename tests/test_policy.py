"""Issuance policy: SEC Appendix B 6.3.2 as changed by MP261, Section L11.4 and L11.4A/B.

Every rule has a passing and a failing case; a refusal must cite its clause
(``rule``) and explain itself (``message``). The rules are exercised as pure
functions, through ``authority.issue`` and through ``cpl-publisher policy check``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from publisher import publication, scaffold
from publisher.cli import main
from publisher.config import CONFIG_NAME, DEFAULT_EKU, Config, ConfigError, load, parse
from publisher.pki import profile, registers
from publisher.pki.authority import PolicyRefused
from publisher.pki.policy import (
    SHARED_KEY_ROLES,
    CertFacts,
    Kind,
    PolicyRules,
    Refusal,
    add_years,
    check,
    check_key_in_use,
    check_key_reuse,
    check_validity,
)
from publisher.publish import operations

UTC = dt.UTC
T0 = dt.datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
RULES = PolicyRules()
MP261 = "SEC Appendix B 6.3.2 (MP261)"
L11_4A_B = "SEC L11.4A/B"
IKI_RULE = "IKI validity (publisher.toml [policy])"
_certs = itertools.count(1)


def facts(
    kind: Kind,
    key: str = "key-a",
    *,
    not_before: dt.datetime = T0,
    not_after: dt.datetime | None = None,
    cert: str | None = None,
    serial: int = 0x1A2B,
    role: str | None = None,
    approval_ref: str | None = None,
) -> CertFacts:
    """Facts of a certificate; a fresh cert_sha256 unless ``cert`` is given."""
    return CertFacts(
        kind=kind,
        serial=serial,
        subject=f"CN=test {kind.value}",
        key_sha256=key,
        not_before=not_before,
        not_after=not_after if not_after is not None else not_before + dt.timedelta(days=365),
        cert_sha256=cert if cert is not None else f"cert-{next(_certs)}",
        role=role,
        approval_ref=approval_ref,
    )


def years(kind: Kind, n: int, start: dt.datetime = T0, **kw: object) -> CertFacts:
    return facts(kind, not_before=start, not_after=add_years(start, n), **kw)  # type: ignore[arg-type]


def only(refusals: list[Refusal], rule: str) -> Refusal:
    assert len(refusals) == 1, refusals
    assert refusals[0].rule == rule
    assert str(refusals[0]) == f"{rule}: {refusals[0].message}"
    return refusals[0]


# --- Appendix B 6.3.2 (MP261): validity periods ------------------------------------------------


def test_organisation_certificate_valid_exactly_ten_years_passes() -> None:
    assert check_validity(years(Kind.ORGANISATION, 10), RULES) == []
    # RFC 5280: notAfter is the last second of validity.
    end_second = facts(Kind.ORGANISATION, not_after=add_years(T0, 10) - dt.timedelta(seconds=1))
    assert check_validity(end_second, RULES) == []


@pytest.mark.parametrize("n", [11, 5, 9, 20])
def test_organisation_certificate_of_other_period_without_approval_is_refused(n: int) -> None:
    f = years(Kind.ORGANISATION, n)
    r = only(check_validity(f, RULES), MP261)
    assert "Organisation Certificate is valid for 10 years" in r.message
    assert f"valid for {(f.not_after - f.not_before).days} days" in r.message
    assert "no SMKI PMA approval reference" in r.message


def test_organisation_period_a_few_days_off_is_refused() -> None:
    f = facts(Kind.ORGANISATION, not_after=add_years(T0, 10) + dt.timedelta(days=3))
    only(check_validity(f, RULES), MP261)


@pytest.mark.parametrize("n", [11, 5])
def test_organisation_certificate_of_other_period_with_approval_passes(n: int) -> None:
    assert check_validity(years(Kind.ORGANISATION, n, approval_ref="SMKI-PMA-2025-017"), RULES) == []


def test_issuing_oca_25_years_passes_and_20_is_refused() -> None:
    assert check_validity(years(Kind.OCA_ISSUING, 25), RULES) == []
    r = only(check_validity(years(Kind.OCA_ISSUING, 20), RULES), MP261)
    assert "Issuing OCA certificate is valid for 25 years" in r.message
    r = only(check_validity(years(Kind.OCA_ISSUING, 26), RULES), MP261)


def test_root_oca_50_years_passes_and_30_is_refused() -> None:
    assert check_validity(years(Kind.OCA_ROOT, 50), RULES) == []
    r = only(check_validity(years(Kind.OCA_ROOT, 30), RULES), MP261)
    assert "Root OCA certificate is valid for 50 years" in r.message


def test_oca_periods_are_fixed_even_with_an_approval_reference() -> None:
    """Only the Organisation Certificate period has the "SMKI PMA approved" alternative."""
    only(check_validity(years(Kind.OCA_ISSUING, 20, approval_ref="X"), RULES), MP261)
    only(check_validity(years(Kind.OCA_ROOT, 30, approval_ref="X"), RULES), MP261)


def test_add_years_keeps_the_calendar_date_and_maps_29_february_to_28() -> None:
    leap = dt.datetime(2024, 2, 29, 12, 0, tzinfo=UTC)
    assert add_years(leap, 10) == dt.datetime(2034, 2, 28, 12, 0, tzinfo=UTC)
    assert add_years(leap, 20) == dt.datetime(2044, 2, 29, 12, 0, tzinfo=UTC)  # 2044 is a leap year
    assert add_years(leap, 25) == dt.datetime(2049, 2, 28, 12, 0, tzinfo=UTC)
    assert add_years(T0, 10) == dt.datetime(2035, 3, 1, 9, 30, tzinfo=UTC)


def test_29_february_start_dates() -> None:
    leap = dt.datetime(2024, 2, 29, tzinfo=UTC)
    ok = facts(Kind.ORGANISATION, not_before=leap, not_after=dt.datetime(2034, 2, 28, tzinfo=UTC))
    assert check_validity(ok, RULES) == []
    end_second = facts(Kind.ORGANISATION, not_before=leap, not_after=dt.datetime(2034, 2, 27, 23, 59, 59, tzinfo=UTC))
    assert check_validity(end_second, RULES) == []
    root = dt.datetime(2000, 2, 29, tzinfo=UTC)
    assert check_validity(years(Kind.OCA_ROOT, 50, start=root), RULES) == []
    assert check_validity(years(Kind.OCA_ISSUING, 25, start=leap), RULES) == []
    eleven = facts(Kind.ORGANISATION, not_before=leap, not_after=dt.datetime(2035, 2, 28, tzinfo=UTC))
    only(check_validity(eleven, RULES), MP261)


def test_not_after_before_not_before_is_refused() -> None:
    f = facts(Kind.IKI, not_after=T0 - dt.timedelta(days=1))
    r = only(check_validity(f, RULES), "RFC 5280 4.1.2.5")
    assert "notAfter is not after notBefore" in r.message
    only(check_validity(facts(Kind.ORGANISATION, not_after=T0), RULES), "RFC 5280 4.1.2.5")


# --- L11.4(c): one key, one IKI/ICA certificate ------------------------------------------------


@pytest.mark.parametrize(
    ("new", "old"),
    [
        (Kind.IKI, Kind.IKI),
        (Kind.IKI, Kind.ICA_ISSUING),
        (Kind.IKI, Kind.ICA_ROOT),
        (Kind.ICA_ISSUING, Kind.IKI),
        (Kind.ICA_ISSUING, Kind.ICA_ISSUING),
        (Kind.ICA_ROOT, Kind.ICA_ROOT),
    ],
)
def test_iki_or_ica_key_already_in_another_iki_ica_certificate_is_refused(new: Kind, old: Kind) -> None:
    existing = facts(old, "shared", serial=0xBEEF)
    r = only(check_key_reuse(facts(new, "shared"), [existing]), "SEC L11.4(c)")
    assert f"already in {old.value} certificate beef" in r.message
    assert "a key may be in only one IKI/ICA certificate" in r.message


def test_iki_with_a_different_key_passes() -> None:
    existing = [facts(Kind.IKI, "k1"), facts(Kind.ICA_ISSUING, "k2"), facts(Kind.ICA_ROOT, "k3")]
    assert check_key_reuse(facts(Kind.IKI, "k4"), existing) == []
    assert check(facts(Kind.IKI, "k4"), existing, RULES) == []


def test_a_certificate_does_not_conflict_with_itself() -> None:
    me = facts(Kind.IKI, "k1", cert="abc123")
    assert check_key_reuse(me, [me]) == []
    assert check_key_reuse(facts(Kind.IKI, "k1", cert="abc123"), [me]) == []
    org = facts(Kind.ORGANISATION, "k1", cert="def456")
    assert check_key_reuse(org, [org]) == []


def test_every_conflicting_certificate_is_reported() -> None:
    existing = [facts(Kind.IKI, "k", serial=1), facts(Kind.ICA_ISSUING, "k", serial=2), facts(Kind.IKI, "x")]
    refusals = check_key_reuse(facts(Kind.IKI, "k"), existing)
    assert [r.rule for r in refusals] == ["SEC L11.4(c)", "SEC L11.4(c)"]


# --- L11.4(b) and L11.4A/B: Organisation/OCA ---------------------------------------------------


def test_organisation_reusing_a_key_without_approval_is_refused() -> None:
    existing = facts(Kind.ORGANISATION, "shared", serial=0xC0FFEE, role="recovery")
    new = facts(Kind.ORGANISATION, "shared", role="recovery")
    r = only(check_key_reuse(new, [existing]), L11_4A_B)
    assert "already in Organisation Certificate c0ffee" in r.message
    assert "no SMKI PMA approval reference" in r.message


@pytest.mark.parametrize("role", ["supplier", None, "Recovery", "networkOperator"])
def test_organisation_reusing_a_key_with_approval_but_another_role_is_refused(role: str | None) -> None:
    existing = facts(Kind.ORGANISATION, "shared")
    new = facts(Kind.ORGANISATION, "shared", role=role, approval_ref="SMKI-PMA-1")
    r = only(check_key_reuse(new, [existing]), L11_4A_B)
    assert f"role {role!r} is not one of" in r.message
    for allowed in SHARED_KEY_ROLES:
        assert allowed in r.message


def test_the_four_shared_key_roles_are_exactly_those_of_l11_4a() -> None:
    assert {"recovery", "transitionalCoS", "wanProvider", "accessControlBroker"} == SHARED_KEY_ROLES


@pytest.mark.parametrize("role", ["recovery", "transitionalCoS", "wanProvider", "accessControlBroker"])
def test_organisation_reusing_a_key_with_approval_and_an_allowed_role_passes(role: str) -> None:
    existing = facts(Kind.ORGANISATION, "shared")
    new = facts(Kind.ORGANISATION, "shared", role=role, approval_ref="SMKI-PMA-2025-003")
    assert check_key_reuse(new, [existing]) == []
    assert check(years(Kind.ORGANISATION, 10, key="shared", role=role, approval_ref="R"), [existing], RULES) == []


@pytest.mark.parametrize("oca", [Kind.OCA_ISSUING, Kind.OCA_ROOT])
def test_organisation_with_the_key_of_an_oca_is_refused_under_l11_4b(oca: Kind) -> None:
    existing = facts(oca, "shared")
    # Even an approved allowed role does not let an Organisation Certificate reuse a CA key.
    for new in (
        facts(Kind.ORGANISATION, "shared"),
        facts(Kind.ORGANISATION, "shared", role="recovery", approval_ref="SMKI-PMA-1"),
    ):
        r = only(check_key_reuse(new, [existing]), "SEC L11.4(b)")
        assert "a key may be in only one Organisation/OCA certificate" in r.message
    # ... and the other way round.
    only(check_key_reuse(facts(oca, "shared"), [facts(Kind.ORGANISATION, "shared")]), "SEC L11.4(b)")


def test_root_oca_reissued_with_the_same_key_passes() -> None:
    old = years(Kind.OCA_ROOT, 50, key="root-key")
    new = years(Kind.OCA_ROOT, 50, start=T0 + dt.timedelta(days=4000), key="root-key")
    assert check(new, [old], RULES) == []


def test_issuing_oca_reusing_an_issuing_oca_key_is_refused() -> None:
    only(check_key_reuse(facts(Kind.OCA_ISSUING, "k"), [facts(Kind.OCA_ISSUING, "k")]), "SEC L11.4(b)")
    only(check_key_reuse(facts(Kind.OCA_ISSUING, "k"), [facts(Kind.OCA_ROOT, "k")]), "SEC L11.4(b)")


@pytest.mark.parametrize(
    ("new", "old"), [(Kind.DEVICE, Kind.DEVICE), (Kind.DEVICE, Kind.DCA), (Kind.DCA, Kind.DEVICE), (Kind.DCA, Kind.DCA)]
)
def test_device_and_dca_key_reuse_is_refused_under_l11_4a(new: Kind, old: Kind) -> None:
    r = only(check_key_reuse(facts(new, "k"), [facts(old, "k")]), "SEC L11.4(a)")
    assert "Device/DCA" in r.message
    assert check_key_reuse(facts(new, "k"), [facts(old, "other")]) == []


@pytest.mark.parametrize(
    ("new", "old"),
    [
        (Kind.IKI, Kind.ORGANISATION),
        (Kind.ORGANISATION, Kind.IKI),
        (Kind.ICA_ISSUING, Kind.OCA_ISSUING),
        (Kind.OCA_ROOT, Kind.ICA_ROOT),
        (Kind.DEVICE, Kind.IKI),
        (Kind.IKI, Kind.DCA),
        (Kind.ORGANISATION, Kind.DEVICE),
    ],
)
def test_families_do_not_cross(new: Kind, old: Kind) -> None:
    assert check_key_reuse(facts(new, "shared"), [facts(old, "shared")]) == []


# --- IKI/ICA maxima are configuration ---------------------------------------------------------


def _rules_from_toml(policy: str) -> PolicyRules:
    text = f"""
[publication]
origin = "dcc.example/cpl/log"
site_url = "https://dcc.example/cpl"
[log]
key_env = "CPL_LOG_KEY"
[policy]
{policy}
"""
    return parse(text, Path("/nonexistent-publication")).rules


def test_default_iki_ica_maxima() -> None:
    assert _rules_from_toml("") == PolicyRules()
    assert check_validity(facts(Kind.IKI, not_after=T0 + dt.timedelta(days=3 * 365 + 1)), RULES) == []
    only(check_validity(facts(Kind.IKI, not_after=T0 + dt.timedelta(days=3 * 365 + 2)), RULES), IKI_RULE)


@pytest.mark.parametrize("limit", [400, 800])
def test_iki_maximum_from_configuration(limit: int) -> None:
    rules = _rules_from_toml(f"iki_max_days = {limit}")
    assert rules.iki_max_days == limit
    assert check_validity(facts(Kind.IKI, not_after=T0 + dt.timedelta(days=limit)), rules) == []
    r = only(check_validity(facts(Kind.IKI, not_after=T0 + dt.timedelta(days=limit + 1)), rules), IKI_RULE)
    assert f"a iki certificate may be valid for at most {limit} days" in r.message
    assert f"this one is valid for {limit + 1} days" in r.message
    # Only the IKI maximum changed.
    assert rules.ica_issuing_max_days == RULES.ica_issuing_max_days
    assert rules.ica_root_max_days == RULES.ica_root_max_days


def test_ica_maxima_from_configuration() -> None:
    rules = _rules_from_toml("ica_issuing_max_days = 1000\nica_root_max_days = 2000")
    assert check_validity(facts(Kind.ICA_ISSUING, not_after=T0 + dt.timedelta(days=1000)), rules) == []
    r = only(check_validity(facts(Kind.ICA_ISSUING, not_after=T0 + dt.timedelta(days=1001)), rules), IKI_RULE)
    assert "ica-issuing certificate may be valid for at most 1000 days" in r.message
    assert check_validity(facts(Kind.ICA_ROOT, not_after=T0 + dt.timedelta(days=2000)), rules) == []
    only(check_validity(facts(Kind.ICA_ROOT, not_after=T0 + dt.timedelta(days=2001)), rules), IKI_RULE)
    # The IKI maximum is unchanged, and the Organisation rule does not apply to IKI certificates.
    assert check_validity(facts(Kind.IKI, not_after=T0 + dt.timedelta(days=RULES.iki_max_days)), rules) == []


def test_iki_maximum_is_not_exceeded_by_a_fraction_of_a_day() -> None:
    """BUG (policy.check_validity): the period is truncated to whole days (timedelta.days).

    With iki_max_days = 400 a certificate valid for 400 days and 12 hours is more
    than 400 days, but ``days`` is 400 and it passes (up to 23:59:59 too long).
    """
    rules = _rules_from_toml("iki_max_days = 400")
    too_long = facts(Kind.IKI, not_after=T0 + dt.timedelta(days=400, hours=12))
    only(check_validity(too_long, rules), IKI_RULE)


# --- key usage period --------------------------------------------------------------------------


def test_issuer_key_is_not_used_after_its_certificate_expires() -> None:
    expiry = dt.datetime(2030, 6, 30, 12, 0, tzinfo=UTC)
    assert check_key_in_use(expiry, expiry - dt.timedelta(days=1)) == []
    assert check_key_in_use(expiry, expiry) == []
    r = only(check_key_in_use(expiry, expiry + dt.timedelta(seconds=1)), "SEC Appendix B (key usage period)")
    assert r.message == "the issuer certificate expired on 2030-06-30"
    r = only(
        check_key_in_use(expiry, expiry + dt.timedelta(days=9), "the ICA 'ica'"), "SEC Appendix B (key usage period)"
    )
    assert r.message.startswith("the ICA 'ica' expired")


# --- through authority.issue -------------------------------------------------------------------


@pytest.fixture()
def pub(tmp_path: Path) -> Path:
    root = tmp_path / "pub"
    scaffold.init_publication(root, tmp_path / "keys", "https://dcc.example/cpl/", "dcc.example/cpl/log")
    return root


def _iki_request(config: Config, public_key: object, days: int = 365, org_id: str = "00AB12") -> profile.IssueRequest:
    now = publication.now_utc()
    return profile.IssueRequest(
        Kind.IKI,
        profile.ee_subject(config.profile, "Acme Meters Ltd", org_id, "Manufacturer"),
        public_key,  # type: ignore[arg-type]
        x509.random_serial_number(),
        now,
        now + dt.timedelta(days=days),
        config.crl_url("ica"),
    )


def _state(root: Path) -> tuple[bytes, list[str]]:
    """The issued register and the list of published certificate files."""
    certs = sorted(str(p.relative_to(root)) for p in (root / publication.CERTS_DIR).rglob("*") if p.is_file())
    return (root / registers.ISSUED).read_bytes(), certs


def test_issue_refuses_an_iki_certificate_reusing_an_existing_key(pub: Path) -> None:
    config = load(pub)
    key = ec.generate_private_key(ec.SECP256R1())
    first = operations.issue(config, "ica", _iki_request(config, key.public_key()))
    assert first.path.is_file()
    before = _state(pub)
    assert len(before[1]) == 1
    with pytest.raises(PolicyRefused) as exc:
        operations.issue(config, "ica", _iki_request(config, first.certificate.public_key(), org_id="00CD34"))
    assert [r.rule for r in exc.value.refusals] == ["SEC L11.4(c)"]
    assert f"already in iki certificate {first.certificate.serial_number:x}" in str(exc.value)
    assert _state(pub) == before


def test_issue_refuses_an_iki_certificate_with_the_issuing_ica_key(pub: Path) -> None:
    config = load(pub)
    ica = publication.load_certificate(config.issuer("ica").certificate)
    with pytest.raises(PolicyRefused) as exc:
        operations.issue(config, "ica", _iki_request(config, ica.public_key()))
    assert exc.value.refusals[0].rule == "SEC L11.4(c)"
    assert "already in ica-issuing certificate" in exc.value.refusals[0].message
    assert not (pub / publication.CERTS_DIR).exists()
    assert len(registers.load_issued(pub)) == 2  # only the two ICA certificates


@pytest.mark.parametrize("limit", [400, 800])
def test_issue_refuses_an_iki_certificate_longer_than_configured(pub: Path, limit: int) -> None:
    with (pub / CONFIG_NAME).open("a") as f:
        f.write(f"\n[policy]\niki_max_days = {limit}\n")
    config = load(pub)
    assert config.rules.iki_max_days == limit
    register_before = (pub / registers.ISSUED).read_bytes()
    with pytest.raises(PolicyRefused) as exc:
        operations.issue(
            config, "ica", _iki_request(config, ec.generate_private_key(ec.SECP256R1()).public_key(), limit + 1)
        )
    assert [r.rule for r in exc.value.refusals] == [IKI_RULE]
    assert f"at most {limit} days" in str(exc.value)
    assert (pub / registers.ISSUED).read_bytes() == register_before
    assert not (pub / publication.CERTS_DIR).exists()
    issued = operations.issue(
        config, "ica", _iki_request(config, ec.generate_private_key(ec.SECP256R1()).public_key(), limit)
    )
    assert issued.certificate.not_valid_after_utc - issued.certificate.not_valid_before_utc == dt.timedelta(days=limit)


def test_issue_refuses_when_the_issuer_certificate_has_expired(pub: Path) -> None:
    config = load(pub)
    ica = publication.load_certificate(config.issuer("ica").certificate)
    later = ica.not_valid_after_utc + dt.timedelta(days=1)
    with pytest.raises(PolicyRefused) as exc:
        operations.issue(
            config, "ica", _iki_request(config, ec.generate_private_key(ec.SECP256R1()).public_key()), now=later
        )
    assert exc.value.refusals[0].rule == "SEC Appendix B (key usage period)"
    assert "the issuer certificate expired on" in str(exc.value)
    assert not (pub / publication.CERTS_DIR).exists()


# --- cpl-publisher policy check ----------------------------------------------------------------

CA_KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(
    key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    cn: str = "Acme Energy Ltd",
    eku: str | None = None,
) -> x509.Certificate:
    """A certificate not issued by this publisher (e.g. an Organisation certificate), signed by a test CA."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Issuing OCA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(eku)]), critical=False)
    return builder.sign(CA_KEY, hashes.SHA256())


def write(path: Path, cert: x509.Certificate, der: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


START = dt.datetime(2025, 1, 1, tzinfo=UTC)


def test_policy_check_accepts_a_folder_of_good_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "certs"
    a = write(
        folder / "a.pem",
        make_cert(ec.generate_private_key(ec.SECP256R1()), START, START + dt.timedelta(days=730), eku=DEFAULT_EKU),
    )
    b = write(
        folder / "sub" / "b.der",
        make_cert(ec.generate_private_key(ec.SECP256R1()), START, START + dt.timedelta(days=365), eku=DEFAULT_EKU),
        der=True,
    )
    (folder / "README.txt").write_text("not looked at")
    code, out, err = run(capsys, "policy", "check", str(folder))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"OK {a} (serial ")
    assert lines[1].startswith(f"OK {b} (serial ")
    assert all(line.endswith(", iki)") for line in lines)


def test_policy_check_against_a_publication_accepts_its_own_certificates(
    pub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load(pub)
    operations.issue(config, "ica", _iki_request(config, ec.generate_private_key(ec.SECP256R1()).public_key()))
    code, out, err = run(
        capsys, "policy", "check", "--dir", str(pub), str(pub / "pki"), str(pub / publication.CERTS_DIR)
    )
    assert code == 0, out + err
    kinds = sorted(line.rsplit(", ", 1)[1] for line in out.splitlines())
    assert kinds == ["ica-issuing)", "ica-root)", "iki)"]


def test_policy_check_refuses_a_key_already_in_the_register(pub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ica = publication.load_certificate(load(pub).issuer("ica").certificate)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(key, START, START + dt.timedelta(days=30), eku=DEFAULT_EKU)
    # Same key as the issuing ICA: rebuild the certificate around the ICA's public key.
    reused = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(ica.public_key())
        .serial_number(0x5EED)
        .not_valid_before(START)
        .not_valid_after(START + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(DEFAULT_EKU)]), critical=False)
        .sign(CA_KEY, hashes.SHA256())
    )
    path = write(pub.parent / "check" / "reused.pem", reused)
    code, out, _ = run(capsys, "policy", "check", "--dir", str(pub), str(path))
    assert code == 1
    assert out.startswith(f"REFUSED {path} (serial 5eed, iki)")
    assert "SEC L11.4(c): the public key is already in ica-issuing certificate" in out


def test_policy_check_refuses_a_bad_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "certs"
    good = write(
        folder / "a-good.pem",
        make_cert(ec.generate_private_key(ec.SECP256R1()), START, START + dt.timedelta(days=365), eku=DEFAULT_EKU),
    )
    bad = write(
        folder / "b-bad.pem",
        make_cert(ec.generate_private_key(ec.SECP256R1()), START, START + dt.timedelta(days=2000), eku=DEFAULT_EKU),
    )
    code, out, _ = run(capsys, "policy", "check", str(folder))
    assert code == 1
    assert f"OK {good} " in out
    assert f"REFUSED {bad} " in out
    assert f"  {IKI_RULE}: a iki certificate may be valid for at most {RULES.iki_max_days} days" in out


def test_policy_check_refuses_two_certificates_sharing_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    a = write(tmp_path / "a.pem", make_cert(key, START, START + dt.timedelta(days=365), eku=DEFAULT_EKU))
    b = write(tmp_path / "b.pem", make_cert(key, START, START + dt.timedelta(days=365), eku=DEFAULT_EKU))
    code, out, _ = run(capsys, "policy", "check", str(a), str(b))
    assert code == 1
    assert out.count("REFUSED") == 2
    assert out.count("SEC L11.4(c)") == 2
    # The same file twice is one certificate, not two.
    code, out, _ = run(capsys, "policy", "check", str(a), str(a))
    assert code == 0, out


def test_policy_check_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(
        tmp_path / "good.pem",
        make_cert(ec.generate_private_key(ec.SECP256R1()), START, START + dt.timedelta(days=365), eku=DEFAULT_EKU),
    )
    bad_cert = make_cert(
        ec.generate_private_key(ec.SECP256R1()), START, START + dt.timedelta(days=5000), eku=DEFAULT_EKU
    )
    bad = write(tmp_path / "bad.pem", bad_cert)
    code, out, _ = run(capsys, "policy", "check", "--json", str(good), str(bad))
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    by_file = {c["file"]: c for c in doc["certificates"]}
    assert by_file[str(good)]["refusals"] == []
    assert by_file[str(good)]["kind"] == "iki"
    assert by_file[str(bad)]["serial"] == f"{bad_cert.serial_number:x}"
    assert [r["rule"] for r in by_file[str(bad)]["refusals"]] == [IKI_RULE]
    assert "at most" in by_file[str(bad)]["refusals"][0]["message"]
    code, out, _ = run(capsys, "--json", "policy", "check", str(good))
    assert code == 0
    assert json.loads(out)["ok"] is True


def test_policy_check_organisation_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    a = write(tmp_path / "orgs" / "a.pem", make_cert(key, START, add_years(START, 10), cn="Acme Recovery"))
    b = write(tmp_path / "orgs" / "b.pem", make_cert(key, START, add_years(START, 10), cn="Acme Recovery 2"))
    folder = str(tmp_path / "orgs")
    # Not an IKI certificate: the kind must be given.
    code, _, err = run(capsys, "policy", "check", folder)
    assert code == 2
    assert "cannot tell the certificate kind; give --kind" in err
    # Shared key, no approval.
    code, out, _ = run(capsys, "policy", "check", "--kind", "organisation", folder)
    assert code == 1
    assert out.count(f"{L11_4A_B}: ") == 2
    assert "no SMKI PMA approval reference was given" in out
    # Shared key, approval, but a role outside the four.
    code, out, _ = run(
        capsys, "policy", "check", "--kind", "organisation", "--role", "supplier", "--approval-ref", "X", folder
    )
    assert code == 1
    assert "role 'supplier' is not one of" in out
    # Shared key with approval for an allowed role.
    code, out, err = run(
        capsys, "policy", "check", "--kind", "organisation", "--role", "recovery", "--approval-ref", "X", folder
    )
    assert code == 0, out + err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"OK {a} (serial ")
    assert lines[1].startswith(f"OK {b} (serial ")
    assert all(line.endswith(", organisation)") for line in lines)


def test_policy_check_organisation_validity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eleven = write(
        tmp_path / "eleven.pem", make_cert(ec.generate_private_key(ec.SECP256R1()), START, add_years(START, 11))
    )
    code, out, _ = run(capsys, "policy", "check", "--kind", "organisation", str(eleven))
    assert code == 1
    assert f"REFUSED {eleven}" in out
    assert f"{MP261}: an Organisation Certificate is valid for 10 years" in out
    code, out, _ = run(capsys, "policy", "check", "--kind", "organisation", "--approval-ref", "SMKI-PMA-9", str(eleven))
    assert code == 0
    assert out.startswith(f"OK {eleven}")
    # Root OCA: 50 years.
    root = write(tmp_path / "root.pem", make_cert(ec.generate_private_key(ec.SECP256R1()), START, add_years(START, 50)))
    assert run(capsys, "policy", "check", "--kind", "oca-root", str(root))[0] == 0
    code, out, _ = run(capsys, "policy", "check", "--kind", "oca-issuing", str(root))
    assert code == 1
    assert "Issuing OCA certificate is valid for 25 years" in out


@pytest.mark.parametrize(
    "content",
    [
        b"hello, I am not a certificate\n",
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        b"\x30\x03\x02\x01\x01",
    ],
)
def test_policy_check_on_a_file_that_is_not_a_certificate_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_bytes(content)
    code, out, err = run(capsys, "policy", "check", str(junk))
    assert code == 2
    assert out == ""
    assert f"{junk}: not a PEM or DER certificate" in err


def test_policy_check_missing_file_and_empty_folder_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "policy", "check", str(tmp_path / "missing.pem"))
    assert code == 2
    assert "missing.pem" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "policy", "check", str(tmp_path / "empty"))
    assert code == 2
    assert "no certificates found" in err


def _role_request(config: Config, org_id: str, role: str) -> profile.IssueRequest:
    now = publication.now_utc()
    return profile.IssueRequest(
        Kind.IKI,
        profile.ee_subject(config.profile, "Acme Meters Ltd", org_id, role),
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        x509.random_serial_number(),
        now,
        now + dt.timedelta(days=365),
        config.crl_url("ica"),
    )


def test_issue_refuses_a_second_role_for_one_organisation(pub: Path) -> None:
    # A manufacturer given a Supplier certificate could endorse its own images (SEC Appendix Z).
    config = load(pub)
    first = operations.issue(config, "ica", _role_request(config, "1001", "Manufacturer"))
    operations.issue(config, "ica", _role_request(config, "1001", "Manufacturer"))  # the same role again: fine
    before = _state(pub)
    with pytest.raises(PolicyRefused) as exc:
        operations.issue(config, "ica", _role_request(config, "1001", "Supplier"))
    assert [r.rule for r in exc.value.refusals] == ["IKI roles"]
    assert (
        f"organisation ID 1001 already holds a Manufacturer IKI certificate ({first.certificate.serial_number:x})"
        in (str(exc.value))
    )
    assert _state(pub) == before
    operations.issue(config, "ica", _role_request(config, "2001", "Supplier"))  # another organisation: fine


def test_a_second_role_is_allowed_where_the_configuration_names_the_organisation(pub: Path) -> None:
    with (pub / CONFIG_NAME).open("a") as f:
        f.write('\n[policy]\nmulti_role_organisations = ["9001"]\n')
    config = load(pub)
    assert config.rules.multi_role_organisations == frozenset({"9001"})
    operations.issue(config, "ica", _role_request(config, "9001", "DCC"))
    operations.issue(config, "ica", _role_request(config, "9001", "Supplier"))
    operations.issue(config, "ica", _role_request(config, "1001", "Manufacturer"))
    with pytest.raises(PolicyRefused):  # the configuration names 9001 only
        operations.issue(config, "ica", _role_request(config, "1001", "DCC"))


@pytest.mark.parametrize("value", ['"9001"', "[9001]", '[""]'])
def test_multi_role_organisations_must_be_a_list_of_ids(value: str) -> None:
    with pytest.raises(ConfigError, match="'multi_role_organisations' must be a list of organisation IDs"):
        _rules_from_toml(f"multi_role_organisations = {value}")
