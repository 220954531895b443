"""The one chain check (``build_chain`` and ``check_end_entity`` in the verifier), which intake, ``audit``,
``cert``, ``link`` and ``check-submission`` all run: RFC 5280's CA profile and the algorithm floor, each
refusal with the certificate named. Intake reaches it through ``certcheck.check_certificate``."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from publisher.config import Profile
from publisher.intake.certcheck import TrustContext, check_certificate
from verifier.cpl_verify import ChainError, build_chain, check_end_entity

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
EKU = "1.3.6.1.4.1.55555.1.1"
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make(
    subject: str,
    key: Key,
    issuer: tuple[str, Key] | None = None,
    ca: bool | None = True,
    bc_critical: bool = True,
    key_usage: x509.KeyUsage | None = None,
    eku: bool = False,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
    )
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=bc_critical)
    if key_usage is not None:
        b = b.add_extension(key_usage, critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(EKU), ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    return b.sign(issuer_key, hashes.SHA256())


def usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False)


WEAK_KEY = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weak key under test
ROOT_KEY, ICA_KEY, EE_KEY = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
ROOT = make("root", ROOT_KEY, key_usage=usage(True))
ICA = make("ica", ICA_KEY, ("root", ROOT_KEY), key_usage=usage(True))


def leaf(issuer: tuple[str, Key] = ("ica", ICA_KEY), key: Key = EE_KEY, **kw: object) -> x509.Certificate:
    args: dict[str, object] = {"ca": False, "key_usage": usage(False), "eku": True, **kw}
    return make("signer", key, issuer, **args)  # type: ignore[arg-type]


def test_a_good_chain_passes_both_ways() -> None:
    cert = leaf()
    assert build_chain(cert, [ICA], [ROOT], NOW) == [cert, ICA, ROOT]
    check_end_entity(cert, EKU)
    ctx = TrustContext((ROOT,), (ICA,), (), Profile(extended_key_usage=EKU), NOW)
    chain, problems = check_certificate(cert, [], ctx)
    assert chain == [cert, ICA, ROOT]
    assert [p.check for p in problems] == ["revocation", "revocation"]  # no CRLs given: the chain itself passed


CASES: dict[str, tuple[Callable[[], tuple[x509.Certificate, list[x509.Certificate]]], str]] = {
    "end-entity-with-ca-true": (lambda: (leaf(ca=True), [ICA]), "is a CA certificate, not an IKI end-entity"),
    "intermediate-without-key-usage": (
        lambda: (leaf(), [make("ica", ICA_KEY, ("root", ROOT_KEY), key_usage=None)]),
        "may not sign certificates (keyUsage keyCertSign)",
    ),
    "intermediate-with-non-critical-basic-constraints": (
        lambda: (leaf(), [make("ica", ICA_KEY, ("root", ROOT_KEY), bc_critical=False, key_usage=usage(True))]),
        "has a non-critical basicConstraints",
    ),
    "rsa-1024-signer": (
        lambda: (leaf(key=WEAK_KEY), [ICA]),
        "has a 1024-bit RSA key; at least 2048 is required",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_chain_check_refuses(case: str) -> None:
    make_case, message = CASES[case]
    cert, intermediates = make_case()
    with pytest.raises(ChainError, match=re.escape(message)):
        build_chain(cert, intermediates, [ROOT], NOW)
        check_end_entity(cert, EKU)


@pytest.mark.parametrize("case", sorted(CASES))
def test_intake_refuses_by_the_same_check(case: str) -> None:
    make_case, message = CASES[case]
    cert, intermediates = make_case()
    ctx = TrustContext((ROOT,), tuple(intermediates), (), Profile(extended_key_usage=EKU), NOW)
    _, problems = check_certificate(cert, [], ctx)
    assert [p.check for p in problems] == ["certificate chain"]
    assert message in problems[0].message
