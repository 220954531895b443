"""Keys in a PKCS#11 token (SoftHSM2): configuration, signing, key generation, failures, and the whole demo flow
with every publisher key inside the token, checked with OpenSSL, OpenSC's pkcs11-tool and the verifier."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hsm_fixtures import VENV_BIN, Token, cli, need_softhsm, token_fixture  # noqa: F401  (the token fixture)
from hypothesis import given
from hypothesis import strategies as st
from site_fixtures import REPO, build_site, serve
from test_deployment import readme_block

from publisher import demo, hsm
from publisher.config import ConfigError, TokenKey, load, parse, token_key
from publisher.pkcs11_uri import Pkcs11Uri, Pkcs11UriError, format_uri, parse_uri
from publisher.pki import registers
from publisher.publish import gitstate, job, operations
from publisher.tlog import read_vkey

MODULE = str(demo.SOFTHSM_MODULES[0])


# --- RFC 7512 URIs (pure) ---------------------------------------------------------------------------


def test_uri_examples_from_rfc_7512_parse() -> None:
    uri = parse_uri(
        "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
        "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial="
        "?pin-source=file:/etc/token_pin"
    )
    assert uri.token["token"] == "The Software PKCS#11 Softtoken"  # noqa: S105  (a token label)
    assert uri.path["manufacturer"] == "Snake Oil, Inc."
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    assert uri.query == {"pin-source": "file:/etc/token_pin"}
    assert parse_uri("pkcs11:object=my-key;type=private?module-path=/mnt/libmypkcs11.so.1").query == {
        "module-path": "/mnt/libmypkcs11.so.1"
    }
    assert parse_uri("pkcs11:token=Software%20PKCS%2311%20softtoken;x-vendor=1").path["x-vendor"] == "1"
    assert parse_uri("pkcs11:") == Pkcs11Uri()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("pkcs11:token=t;object=k?pin-value=1234", "pin-value"),
        ("pkcs11:token=t;object=k;pin=1234", "unknown path attribute 'pin'"),
        ("pkcs11:token=t;token=u", "appears twice"),
        ("pkcs11:token=a%2", "two-digit hex"),
        ("pkcs11:token=a b", "whitespace"),
        ("pkcs:token=a", "must start with"),
        ("pkcs11:token=t;type=key", "type must be one of"),
        ("pkcs11:token", "not a path attribute"),
        ("pkcs11:token=%ff", "not UTF-8"),
        ("pkcs11:token=t;type=%ff", "not UTF-8"),
        ("pkcs11:token=a/b", "must be pct-encoded"),
        ("pkcs11:token=t?module-path=/x&module-path=/y", "appears twice"),
    ],
)
def test_hostile_uris_are_refused_by_name(text: str, why: str) -> None:
    with pytest.raises(Pkcs11UriError, match=re.escape(why)):
        parse_uri(text)


_VALUES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)


@given(name=_VALUES, label=_VALUES, key_id=st.binary(min_size=1, max_size=16), module=_VALUES)
def test_uris_round_trip(name: str, label: str, key_id: bytes, module: str) -> None:
    uri = Pkcs11Uri({"token": name, "object": label}, {"module-path": "/" + module}, key_id)
    text = format_uri(uri)
    assert parse_uri(text) == uri
    assert not any(c.isspace() for c in text)


# --- configuration (pure) ---------------------------------------------------------------------------

_BASE = """
[publication]
origin = "example.test/log"
site_url = "https://example.test"
"""


def _config(text: str, root: Path) -> ConfigError | object:
    try:
        return parse(_BASE + text, root)
    except ConfigError as exc:
        return exc


def test_token_keys_in_the_configuration(tmp_path: Path) -> None:
    config = parse(
        _BASE
        + f"""
[pkcs11]
module = "{MODULE}"
pin_env = "CPL_HSM_PIN"

[log]
key_pkcs11 = "pkcs11:token=dcc;object=log"

[[issuers]]
name = "ica"
certificate = "pki/ica.pem"
key_pkcs11 = "pkcs11:token=dcc;id=%01%02"
pin_file = "../secret/pin"
""",
        tmp_path / "pub",
    )
    assert config.log_key.token is not None and config.log_key.token.pin_env == "CPL_HSM_PIN"
    ica = config.issuer("ica").key.token
    assert ica is not None and ica.uri.id == b"\x01\x02" and ica.pin_env is None
    assert ica.pin_file == (tmp_path / "secret" / "pin").resolve()
    assert str(ica.module) == MODULE


@pytest.mark.parametrize(
    ("log_table", "why"),
    [
        ('key_pkcs11 = "pkcs11:token=t;object=k"\npin = "1234"', "a PIN never goes in the configuration"),
        ('key_pkcs11 = "pkcs11:token=t;object=k"\npin_env = "P"', "module path"),
        (f'key_pkcs11 = "pkcs11:token=t;object=k"\npkcs11_module = "{MODULE}"', "PIN source"),
        (f'key_pkcs11 = "pkcs11:object=k"\npkcs11_module = "{MODULE}"\npin_env = "P"', "must name the token"),
        (f'key_pkcs11 = "pkcs11:token=t"\npkcs11_module = "{MODULE}"\npin_env = "P"', "must name the key"),
        (f'key_pkcs11 = "pkcs11:token=t;object=k;type=public"\npkcs11_module = "{MODULE}"\npin_env = "P"', "public"),
        ('key_pkcs11 = "pkcs11:token=t;object=k?pin-value=1"\npin_env = "P"', "pin-value"),
        ('key_pkcs11 = "pkcs11:token=t;object=k"\nkey_file = "k.key"', "exactly one of"),
        (
            f'key_pkcs11 = "pkcs11:token=t;object=k?module-path=/other.so"\npkcs11_module = "{MODULE}"\npin_env = "P"',
            "differs from the URI's module-path",
        ),
        (
            f'key_pkcs11 = "pkcs11:token=t;object=k?pin-source=/p"\npkcs11_module = "{MODULE}"\npin_env = "P"',
            "both give the PIN",
        ),
    ],
)
def test_bad_token_configuration_is_refused(tmp_path: Path, log_table: str, why: str) -> None:
    result = _config(f"[log]\n{log_table}\n", tmp_path)
    assert isinstance(result, ConfigError), result
    assert why in str(result)


def test_a_pin_in_the_pkcs11_table_is_refused(tmp_path: Path) -> None:
    result = _config(f'[pkcs11]\nmodule = "{MODULE}"\npin = "1234"\n[log]\nkey_env = "K"\n', tmp_path)
    assert isinstance(result, ConfigError) and "a PIN never goes in the configuration" in str(result)


# --- the token: generation, signing, checks -----------------------------------------------------------


def _init(token: Token, pub: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        token,
        "--json",
        "ca",
        "init",
        "--dir",
        str(pub),
        "--site-url",
        "http://127.0.0.1:8000",
        "--origin",
        "hsm.example/log",
        "--pkcs11",
        "pkcs11:token=cpl-test",
        "--pkcs11-module",
        MODULE,
        "--pin-env",
        "CPL_HSM_PIN",
        *extra,
    )


def _objects(token: Token) -> str:
    listed = token.tool("--list-objects")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout


@pytest.mark.parametrize("algorithm", ["ec-p256", "ec-p384", "rsa-3072"])
def test_ca_init_makes_non_extractable_keys_in_the_token_and_crls_verify_with_openssl(
    token: Token, tmp_path: Path, algorithm: str
) -> None:
    pub = tmp_path / "pub"
    done = _init(token, pub, "--algorithm", algorithm)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["keys"] == "pkcs11:token=cpl-test"
    objects = _objects(token)  # OpenSC reads what our token holds
    for label in ("iki-root", "ica", "log"):
        assert f"label:      {label}" in objects
    assert objects.count("never extractable") == 3
    assert "Private Key Object; EC_EDWARDS" in objects
    config = load(pub)
    assert "key_file" not in (pub / "publisher.toml").read_text()
    # The token's attributes say the private keys can never leave it.
    with hsm.session(config.issuer("ica").key.token, pub) as opened:  # type: ignore[arg-type]
        import pkcs11

        for obj in opened.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}):
            assert obj[pkcs11.Attribute.SENSITIVE] and not obj[pkcs11.Attribute.EXTRACTABLE]
            assert obj[pkcs11.Attribute.NEVER_EXTRACTABLE] and obj[pkcs11.Attribute.ALWAYS_SENSITIVE]
    root = x509.load_pem_x509_certificate((pub / "pki" / "iki-root.pem").read_bytes())
    public = root.public_key()
    assert isinstance(public, rsa.RSAPublicKey if algorithm.startswith("rsa") else ec.EllipticCurvePublicKey)
    # Same key as the token's public object, as OpenSC reads it (its EC point; or the whole RSA key).
    if isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        assert point.hex() in objects
    else:
        read = token.tool("--read-object", "--type", "pubkey", "--label", "iki-root", "-o", str(tmp_path / "r.der"))
        assert read.returncode == 0, read.stderr
        assert serialization.load_der_public_key((tmp_path / "r.der").read_bytes()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    issued = cli(token, "--json", "ca", "issue", "--dir", str(pub), "--issuer", "ica", "--org", "Acme",
                 "--org-id", "1001", "--role", "Manufacturer", "--out", str(tmp_path / "acme"))  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    serial = json.loads(issued.stdout)["serial"]
    revoked = cli(
        token, "revoke", "--dir", str(pub), "--issuer", "ica", "--serial", serial, "--reason", "keyCompromise"
    )
    assert revoked.returncode == 0, revoked.stderr
    assert cli(token, "crl", "refresh", "--dir", str(pub)).returncode == 0
    chain = tmp_path / "chain.pem"
    chain.write_bytes((pub / "pki" / "iki-root.pem").read_bytes() + (pub / "pki" / "ica.pem").read_bytes())
    cert = next((tmp_path / "acme").glob("*.pem"))
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(chain), str(cert)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    both = tmp_path / "crls.pem"
    both.write_bytes((pub / "crl" / "ica.pem").read_bytes() + (pub / "crl" / "iki-root.pem").read_bytes())
    checked = subprocess.run(
        ["openssl", "verify", "-crl_check_all", "-CAfile", str(chain), "-CRLfile", str(both), str(cert)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode != 0 and "certificate revoked" in checked.stdout + checked.stderr
    for name in ("ica", "iki-root"):
        crl = subprocess.run(
            ["openssl", "crl", "-in", str(pub / "crl" / f"{name}.pem"), "-CAfile", str(chain), "-noout"],
            capture_output=True,
            text=True,
        )
        assert crl.returncode == 0 and "verify OK" in crl.stderr + crl.stdout


def test_certifying_a_token_key_again_is_refused_by_l11_4(token: Token, tmp_path: Path) -> None:
    """ca init certified the keys it read from the token; the ICA's key, as OpenSC reads it from the token,
    cannot be certified a second time."""
    pub = tmp_path / "pub"
    assert _init(token, pub).returncode == 0
    got = token.tool("--read-object", "--type", "pubkey", "--label", "ica", "-o", str(tmp_path / "ica.der"))
    assert got.returncode == 0, got.stderr
    public = serialization.load_der_public_key((tmp_path / "ica.der").read_bytes())
    ica = x509.load_pem_x509_certificate((pub / "pki" / "ica.pem").read_bytes()).public_key()
    assert ica.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "ica.pub").write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    issue = ["ca", "issue", "--dir", str(pub), "--issuer", "ica", "--org", "Acme", "--org-id", "1001"]
    done = cli(
        token,
        *issue,
        "--role",
        "Manufacturer",
        "--out",
        str(tmp_path / "out"),
        "--public-key",
        str(tmp_path / "ica.pub"),
    )
    assert done.returncode == 1
    assert "L11.4" in done.stderr + done.stdout


def test_log_keygen_in_the_token_then_init_append_verify(token: Token, tmp_path: Path) -> None:
    key = ["--pkcs11", "pkcs11:token=cpl-test;object=log-2", "--pkcs11-module", MODULE, "--pin-env", "CPL_HSM_PIN"]
    made = cli(token, "--json", "log", "keygen", "--origin", "hsm.example/log", *key)
    assert made.returncode == 0, made.stderr
    vkey = json.loads(made.stdout)["vkey"]
    assert vkey.startswith("hsm.example/log+")
    again = cli(token, "log", "keygen", "--origin", "hsm.example/log", *key)
    assert again.returncode == 2 and "already holds an object" in again.stderr
    log = str(tmp_path / "log")
    assert cli(token, "log", "init", log, "--origin", "hsm.example/log", *key).returncode == 0
    (tmp_path / "e1").write_text("one")
    assert cli(token, "log", "append", log, str(tmp_path / "e1"), *key).returncode == 0  # name from the vkey
    verified = cli(token, "log", "verify", log, "--vkey", vkey)
    assert verified.returncode == 0, verified.stderr
    # The checkpoint's signature is a plain Ed25519 signature by the token's key (checked outside our code).
    note = (tmp_path / "log" / "checkpoint").read_text()
    body, sig_line = note.split("\n\n")
    raw = base64.b64decode(sig_line.split()[-1])[4:]
    public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(vkey.split("+", 2)[2])[1:])
    public.verify(raw, (body + "\n").encode())


def test_token_failures_are_clear_errors(token: Token, tmp_path: Path) -> None:
    pub = tmp_path / "pub"
    assert _init(token, pub).returncode == 0
    # Wrong PIN.
    wrong = cli(token, "crl", "refresh", "--dir", str(pub), "--force", CPL_HSM_PIN="00000000")
    assert wrong.returncode == 2 and "wrong PIN" in wrong.stderr and "CKR_PIN_INCORRECT" in wrong.stderr
    assert "00000000" not in wrong.stderr + wrong.stdout  # a PIN is never printed
    # PIN variable unset.
    unset = cli(token, "crl", "refresh", "--dir", str(pub), "--force", CPL_HSM_PIN="")
    assert unset.returncode == 2 and "CPL_HSM_PIN is empty or unset" in unset.stderr
    # The module missing.
    text = (pub / "publisher.toml").read_text()
    (pub / "publisher.toml").write_text(text.replace(MODULE, "/nonexistent/libpkcs11.so"))
    gone = cli(token, "crl", "refresh", "--dir", str(pub), "--force")
    assert gone.returncode == 2 and "/nonexistent/libpkcs11.so does not exist" in gone.stderr
    (pub / "publisher.toml").write_text(text.replace("token=cpl-test;object=ica", "token=other;object=ica"))
    # The token missing.
    missing = cli(token, "crl", "refresh", "--dir", str(pub), "--force")
    assert missing.returncode == 2 and "no token matching pkcs11:token=other;object=ica" in missing.stderr
    assert "'cpl-test'" in missing.stderr  # what is there
    (pub / "publisher.toml").write_text(text)
    # A key object missing.
    deleted = token.tool("--delete-object", "--type", "privkey", "--label", "ica")
    assert deleted.returncode == 0, deleted.stderr
    no_key = cli(token, "crl", "refresh", "--dir", str(pub), "--force")
    assert no_key.returncode == 2 and "no private key matching pkcs11:token=cpl-test;object=ica" in no_key.stderr
    # Nothing was written by any of them: no CRL (not even the root's, whose key was fine), no journal.
    assert not (pub / "crl").exists() and not (pub / ".publisher" / "journal.json").exists()
    # A PIN file inside the publication is refused like a key file there.
    (pub / "pin").write_text(token.pin)
    (pub / "publisher.toml").write_text(text.replace('pin_env = "CPL_HSM_PIN"', 'pin_file = "pin"'))
    inside = cli(token, "crl", "refresh", "--dir", str(pub), "--force")
    assert inside.returncode == 2 and "inside the publication" in inside.stderr


def test_two_keys_under_one_label_must_be_told_apart_by_id(token: Token, tmp_path: Path) -> None:
    for key_id in ("01", "02"):  # OpenSC makes two keys under one label, as an HSM's other tools may
        made = token.tool("--keypairgen", "--key-type", "EC:prime256v1", "--label", "twin", "--id", key_id)
        assert made.returncode == 0, made.stderr
    ambiguous = TokenKey(parse_uri("pkcs11:token=cpl-test;object=twin"), token.key.module, "CPL_HSM_PIN")
    with pytest.raises(hsm.TokenError, match=r"2 private keys match .* name one by its id="):
        hsm.TokenIssuerKey.open(ambiguous, None)
    chosen = hsm.TokenIssuerKey.open(
        TokenKey(parse_uri("pkcs11:token=cpl-test;object=twin;id=%02"), token.key.module, "CPL_HSM_PIN"), None
    )
    signature = chosen.sign(b"data", hashes.SHA256())
    public = chosen.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"data", ec.ECDSA(hashes.SHA256()))


# --- the whole demo with every publisher key in the token -------------------------------------------

_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9 ]+ )?PRIVATE KEY-----.*?-----END (?:[A-Z0-9 ]+ )?PRIVATE KEY-----", re.S)
_GO_KEY = re.compile(rb"PRIVATE\+KEY\+[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+")


def _private_keys_on_disk(folders: list[Path]) -> dict[Path, list[bytes]]:
    """Every public key (SubjectPublicKeyInfo DER) whose private key lies in a file under ``folders``: PEM
    private keys of any kind, DER PKCS#8, and note keys (``PRIVATE+KEY+...``)."""
    found: dict[Path, list[bytes]] = {}
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file() or path.is_symlink() or "tokens" in path.parts:
                continue
            data = path.read_bytes()
            publics = [
                serialization.load_pem_private_key(m, None).public_key().public_bytes(*spki)
                for m in _PEM_KEY.findall(data)
            ]
            with contextlib.suppress(ValueError, TypeError):
                publics.append(serialization.load_der_private_key(data, None).public_key().public_bytes(*spki))
            for m in _GO_KEY.findall(data):
                seed = base64.b64decode(m.split(b"+", 4)[4])[1:]
                publics.append(ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(*spki))
            if publics:
                found[path] = publics
    return found


def test_the_whole_demo_with_every_publisher_key_in_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """init, issue, revoke, CRL refresh, intake, publish (make demo-hsm's build), then the site and the checks."""
    need_softhsm()
    monkeypatch.setenv("SOFTHSM2_CONF", "")
    out = tmp_path / "demo-hsm"
    info = demo.build(out, hsm=True)
    pub = Path(str(info["publication"]))
    token_info = info["token"]
    assert isinstance(token_info, dict)
    assert (out / "token" / "softhsm2.conf").is_file() and list((out / "parties").glob("*.key"))
    # The publisher's keys are in the token, as OpenSC and SoftHSM's own tool list them.
    listed = subprocess.run(["bash", "-c", token_info["list_objects"]], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("never extractable") == 3
    slots = subprocess.run(["bash", "-c", token_info["show_slots"]], capture_output=True, text=True)
    assert "cpl-demo" in slots.stdout
    config = load(pub)
    assert all(i.key.token is not None for i in config.issuers) and config.log_key.token is not None

    site = out / "site"
    built = build_site(pub, site)
    assert built.returncode == 0, built.stderr
    url, server = serve(site)
    try:
        env = {"SOFTHSM2_CONF": "", "PATH": f"{VENV_BIN}:/usr/bin:/bin"}
        trust = str(out / "trust.json")
        for firmware, verdict in (("current-acme-ESME-100-fw2.0.bin", 0), ("unknown-never-submitted.bin", 3)):
            checked = subprocess.run(
                [str(VENV_BIN / "cpl-verify"), "--trust", trust, "--site", url, "inclusion", "--file",
                 str(out / "firmware" / firmware)],
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            assert checked.returncode == verdict, checked.stdout + checked.stderr
        crls = subprocess.run(
            [str(VENV_BIN / "cpl-verify"), "--trust", trust, "--site", url, "crl", "--require-logged"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert crls.returncode == 0, crls.stdout + crls.stderr
    finally:
        server.shutdown()
    chain = tmp_path / "chain.pem"
    chain.write_bytes((pub / "pki" / "iki-root.pem").read_bytes() + (pub / "pki" / "ica.pem").read_bytes())
    for name in ("ica", "iki-root"):
        ok = subprocess.run(["openssl", "crl", "-in", str(pub / "crl" / f"{name}.pem"), "-CAfile", str(chain),
                             "-noout"], capture_output=True, text=True)  # fmt: skip
        assert "verify OK" in ok.stdout + ok.stderr

    # No private key of the publisher anywhere on disk outside the token: every private key found in the
    # publication, the build folder, the site and the temporary folders is a party's or a witness's.
    publisher_keys = {
        c.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for c in (x509.load_pem_x509_certificate((pub / "pki" / f"{n}.pem").read_bytes()) for n in ("iki-root", "ica"))
    }
    log_public = read_vkey(pub / "log").public_key
    publisher_keys.add(
        ed25519.Ed25519PublicKey.from_public_bytes(log_public).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    found = _private_keys_on_disk([out, demo.private_dir(out), tmp_path])
    assert found, "the parties' and witnesses' own keys should have been found: the search is blind"
    assert any(p.is_relative_to(out / "parties") for p in found)
    leaked = {p: k for p, k in found.items() if publisher_keys & set(k)}
    assert not leaked, leaked
    assert not _GO_KEY.search(b"".join(p.read_bytes() for p in pub.rglob("*") if p.is_file()))
    published = subprocess.run(["git", "grep", "-I", "-l", "PRIVATE", "HEAD"], cwd=pub, capture_output=True)
    assert published.returncode == 1, published.stdout


def test_a_token_removed_mid_publish_fails_clearly_and_the_next_publish_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_softhsm()
    monkeypatch.setenv("SOFTHSM2_CONF", "")
    out = tmp_path / "demo-hsm"
    info = demo.build(out, hsm=True)
    pub = Path(str(info["publication"]))
    config = load(pub)
    head = gitstate.repository(pub).head.commit.hexsha  # type: ignore[union-attr]
    parties = sorted((out / "parties").glob("1001-manufacturer.pem"))
    serial = x509.load_pem_x509_certificate(parties[0].read_bytes()).serial_number
    operations.revoke(config, "ica", serial, "keyCompromise", ref="HSM-TEST")
    committed = gitstate.repository(pub).head.commit.hexsha  # type: ignore[union-attr]
    token_store = out / "token" / "tokens"
    aside = out / "token" / "removed"

    # The CRLs are signed by the token; then the token goes away before the checkpoint is signed.
    from publisher.pki import crl_publish

    real_sign = crl_publish.sign_planned
    number = json.loads((pub / "crl" / "ica.json").read_text())["number"]

    def sign_then_pull_the_token(*args: object, **kwargs: object) -> object:
        done = real_sign(*args, **kwargs)  # type: ignore[arg-type]
        token_store.rename(aside)
        token_store.mkdir()
        return done

    monkeypatch.setattr(crl_publish, "sign_planned", sign_then_pull_the_token)
    with pytest.raises(hsm.TokenError, match=r"no token matching pkcs11:token=cpl-demo;object=log"):
        job.publish(config, witness=False)
    monkeypatch.setattr(crl_publish, "sign_planned", real_sign)
    assert json.loads((pub / "crl" / "ica.json").read_text())["number"] == number + 1  # the token had signed it
    repo = gitstate.repository(pub)
    assert repo is not None and repo.head.commit.hexsha == committed != head  # nothing half-committed
    # While the token is away, publishing again fails the same clear way, and changes nothing.
    again = subprocess.run(
        [str(VENV_BIN / "cpl-publisher"), "publish", "--dir", str(pub), "--no-witness"],
        capture_output=True, text=True, env=dict(os.environ),
    )  # fmt: skip
    assert again.returncode == 2
    assert "no token matching pkcs11:token=cpl-demo" in again.stderr
    assert repo.head.commit.hexsha == committed
    # The token is back: the next publish finishes the interrupted one by itself.
    token_store.rmdir()
    aside.rename(token_store)
    result = job.publish(config, witness=False)
    assert result.committed and result.resumed is not None
    assert repo.head.commit.hexsha != committed
    assert repo.git.status("--porcelain") == ""
    history = subprocess.run(
        [str(VENV_BIN / "cpl-publisher"), "--json", "history", "verify", "--dir", str(pub)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert history.returncode == 0, history.stderr
    verified = subprocess.run(["openssl", "crl", "-in", str(pub / "crl" / "ica.pem"), "-noout", "-text"],
                              capture_output=True, text=True)  # fmt: skip
    assert f"{serial:X}"[:8] in verified.stdout.replace(":", "")
    assert read_vkey(pub / "log").name == "demo.cpl-transparency.example/log"


def test_a_token_pulled_out_while_signing_is_reported_as_removed(token: Token, tmp_path: Path) -> None:
    """The token goes away between finding the key and signing with it (in one session)."""
    ref = TokenKey(parse_uri("pkcs11:token=cpl-test;object=k"), token.key.module, "CPL_HSM_PIN")
    hsm.generate_issuer_key(ref, None, "ec-p256")
    import pkcs11

    removed = r"pkcs11:token=cpl-test;object=k was removed or failed .*nothing was signed"
    with pytest.raises(hsm.TokenError, match=removed), hsm.session(ref, None) as opened:
        key = opened.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label="k")
        aside = token.remove()
        key.sign(b"\0" * 32, mechanism=pkcs11.Mechanism.ECDSA)
    token.restore(aside)
    assert hsm.TokenIssuerKey.open(ref, None).sign(b"after", hashes.SHA256())  # back in service


def test_the_readme_hsm_flow_runs_verbatim(token: Token, tmp_path: Path) -> None:
    block = "\n".join(readme_block("hsm-flow"))
    env = {
        **token.env,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "PUB": str(tmp_path / "pub"),
        "PARTIES": str(tmp_path / "parties"),
        "TOKEN": "cpl-test",
        "PKCS11_MODULE": MODULE,
    }
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "verify OK" in done.stderr + done.stdout
    assert token.pin not in done.stdout + done.stderr
    subjects = subprocess.run(["git", "log", "--format=%s"], cwd=tmp_path / "pub", capture_output=True, text=True)
    assert subjects.stdout.splitlines()[0].startswith("publish: ")


def test_make_demo_hsm_builds_the_demo_with_its_keys_in_a_token(tmp_path: Path) -> None:
    need_softhsm()
    out = tmp_path / "demo-hsm"
    done = subprocess.run(
        ["make", "--no-print-directory", "demo-hsm", f"DEMO_HSM={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for part in ("publication/.git", "site/index.html", "trust.json", "token/softhsm2.conf", "firmware"):
        assert (out / part).exists(), part
    assert list((out / "parties").glob("*.key")) and not list((out / "publication").rglob("*.key"))
    assert "softhsm2-util --show-slots" in done.stdout and "pkcs11-tool --module" in done.stdout
    config = load(out / "publication")
    assert config.log_key.token is not None and all(i.key.token for i in config.issuers)


def test_a_token_key_that_is_not_the_issuers_signs_nothing(token: Token, tmp_path: Path) -> None:
    """The ICA's key pair replaced in the token under the same label: issuing and CRL signing refuse."""
    pub = tmp_path / "pub"
    assert _init(token, pub).returncode == 0
    for kind in ("privkey", "pubkey"):
        assert token.tool("--delete-object", "--type", kind, "--label", "ica").returncode == 0
    made = token.tool("--keypairgen", "--key-type", "EC:prime256v1", "--label", "ica", "--id", "77")
    assert made.returncode == 0, made.stderr
    issue = ["ca", "issue", "--dir", str(pub), "--issuer", "ica", "--org", "Acme", "--org-id", "1001"]
    issued = cli(token, *issue, "--role", "Manufacturer", "--out", str(tmp_path / "acme"))
    assert issued.returncode == 2 and "not the issuer certificate's key" in issued.stderr
    assert len((pub / registers.ISSUED).read_text().splitlines()) == 2  # the root and the ICA: nothing recorded
    assert not list(pub.glob("certs/ica/*.pem")) and not list(tmp_path.glob("acme/*.pem"))
    crl = cli(token, "crl", "refresh", "--dir", str(pub), "--force")
    assert crl.returncode != 0 and "does not belong to the issuer certificate" in crl.stderr


def test_signing_from_threads_and_nested_sessions(token: Token) -> None:
    ref = TokenKey(parse_uri("pkcs11:token=cpl-test;object=k"), token.key.module, "CPL_HSM_PIN")
    key = hsm.generate_issuer_key(ref, None, "ec-p256")
    public = key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    errors: list[BaseException] = []

    def sign_many(n: int) -> None:
        try:
            for i in range(15):
                data = f"{n}-{i}".encode()
                public.verify(key.sign(data, hashes.SHA256()), data, ec.ECDSA(hashes.SHA256()))
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=sign_many, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with hsm.session(ref, None):  # a session inside a session (the application is logged in once)
        assert hsm.public_key(ref, None) == public
        assert key.sign(b"nested", hashes.SHA256())
    assert key.sign(b"after", hashes.SHA256())


def test_a_failed_ca_init_leaves_no_key_in_the_token(token: Token, tmp_path: Path) -> None:
    bad = cli(token, "ca", "init", "--dir", str(tmp_path / "pub"), "--site-url", "not a url", "--origin",
              "hsm.example/log", "--pkcs11", "pkcs11:token=cpl-test", "--pkcs11-module", MODULE, "--pin-env",
              "CPL_HSM_PIN")  # fmt: skip
    assert bad.returncode == 2 and "site_url" in bad.stderr
    assert "label:" not in _objects(token)
    assert _init(token, tmp_path / "pub2").returncode == 0  # the labels are free for the retry
    again = _init(token, tmp_path / "pub3")
    assert again.returncode == 2 and "already holds an object named by pkcs11:token=cpl-test;object=iki-root" in (
        again.stderr
    )
    assert not (tmp_path / "pub3").exists()
    assert _objects(token).count("Private Key Object") == 3  # the first publication's keys are untouched


def test_pin_sources_and_module_paths(token: Token, tmp_path: Path) -> None:
    pin = tmp_path / "secret-pin"
    pin.write_text(token.pin + "\n")
    for uri in (
        f"pkcs11:token=cpl-test;object=k?pin-source=file:{pin}",
        f"pkcs11:token=cpl-test;object=k?pin-source=file://{pin}",
    ):
        ref = token_key(uri, "test", tmp_path, MODULE, None, None)
        assert ref.pin_file == pin and hsm.read_pin(ref, None) == token.pin
    for refused, why in (
        ("pkcs11:token=t;object=k?pin-source=%7C/usr/bin/getpin", "must be a local file: URI"),
        ("pkcs11:token=t;object=k?pin-source=https://x/pin", "must be a local file: URI"),
        ("pkcs11:token=t;object=k;slot-description=S", "slot-description would not be matched"),
        ("pkcs11:token=t;object=k;library-manufacturer=L", "library-manufacturer would not be matched"),
        ("pkcs11:token=t;object=k;x-vendor_attr=1", "x-vendor_attr would not be matched"),
        ("pkcs11:token=t;object=k?module-name=softhsm2", "module-name would not be matched"),
    ):
        with pytest.raises(ConfigError, match=re.escape(why)):
            token_key(refused, "test", tmp_path, MODULE, "P" if "pin-source" not in refused else None, None)
    with pytest.raises(ConfigError, match="absolute path outside the publication"):
        token_key("pkcs11:token=t;object=k", "test", tmp_path, "lib/x.so", "P", None)
    with pytest.raises(ConfigError, match="absolute path outside the publication"):
        token_key("pkcs11:token=t;object=k", "test", tmp_path, str(tmp_path / "x.so"), "P", None, publication=tmp_path)
    with pytest.raises(ConfigError, match="must name an environment variable") as raised:
        token_key("pkcs11:token=t;object=k", "test", tmp_path, MODULE, "8f3a-9c21", None)
    assert "8f3a-9c21" not in str(raised.value)  # a PIN typed where its variable's name goes is not echoed
    (tmp_path / "latin1").write_bytes(b"\xe9t\xe9")
    with pytest.raises(hsm.TokenError, match="not UTF-8"):
        hsm.read_pin(token_key("pkcs11:token=t;object=k", "t", tmp_path, MODULE, None, "latin1"), None)


@given(st.integers(min_value=1, max_value=2**256 - 2**224), st.booleans())
def test_ec_points_bare_or_wrapped(scalar: int, wrapped: bool) -> None:
    key = ec.derive_private_key(scalar, ec.SECP256R1()).public_key()
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    raw = bytes([0x04, len(point)]) + point if wrapped else point
    assert hsm._point(raw, (65, 33)) == point
    with pytest.raises(hsm.TokenError, match="not a point of the key's curve"):
        hsm._point(raw[:-1], (65, 33))
