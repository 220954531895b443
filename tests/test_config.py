"""``publisher.toml`` parsing and the key-custody rules of ``publisher.keys``.

Every configuration error is a ``ConfigError`` whose message says which table
and key is wrong; a key is loaded only from outside the publication's git tree.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from publisher import keys, publication, scaffold
from publisher.config import (
    CONFIG_NAME,
    DEFAULT_EKU,
    DEFAULT_ROLES,
    ConfigError,
    KeySource,
    PolicyRules,
    Profile,
    load,
    parse,
)
from publisher.keys import KeyUnusable, load_private_key

ROOT = Path("/srv/publication")

FULL = """
[publication]
origin = "dcc.example/cpl/log"
site_url = "https://dcc.example/cpl/"

[log]
key_file = "../keys/log.key"

[[issuers]]
name = "iki-root"
root = true
certificate = "pki/iki-root.pem"
key_env = "CPL_ROOT_KEY"
crl_lifetime_days = 180
refresh_fraction = 0.25

[[issuers]]
name = "ica-2"
certificate = "pki/ica-2.pem"
key_file = "/etc/cpl/ica-2.key"
crl_lifetime_days = 1.5
refresh_fraction = 1

[trust]
anchors = ["pki/iki-root.pem", "pki/old-root.pem"]

[profile]
extended_key_usage = "1.2.826.0.1.9999.1"
policy_oid = "1.2.826.0.1.9999.2.1"
organisation_id_attribute = "serialNumber"

[profile.roles]
Manufacturer = "MFR"
Supplier = "SUP"
DCC = "DCC"

[policy]
iki_max_days = 400
ica_issuing_max_days = 2000
ica_root_max_days = 9000
"""

PUBLICATION = 'origin = "dcc.example/cpl/log"\nsite_url = "https://dcc.example/cpl"'
LOG = 'key_env = "CPL_LOG_KEY"'
ROOT_ISSUER = 'name = "iki-root"\nroot = true\ncertificate = "pki/iki-root.pem"\nkey_env = "CPL_ROOT_KEY"'
ICA_ISSUER = 'name = "ica"\ncertificate = "pki/ica.pem"\nkey_env = "CPL_ICA_KEY"'


def doc(
    publication: str = PUBLICATION,
    log: str = LOG,
    issuers: tuple[str, ...] = (ROOT_ISSUER, ICA_ISSUER),
    extra: str = "",
) -> str:
    """A minimal valid publisher.toml with one part replaced."""
    parts = [f"[publication]\n{publication}\n", f"[log]\n{log}\n"]
    parts += [f"[[issuers]]\n{i}\n" for i in issuers]
    parts.append(extra)
    return "\n".join(parts)


def error(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(text, ROOT)
    return str(exc.value)


# --- valid files ---------------------------------------------------------------------------------


def test_a_full_file_parses() -> None:
    config = parse(FULL, ROOT)
    assert config.root == ROOT
    assert config.origin == "dcc.example/cpl/log"
    assert config.site_url == "https://dcc.example/cpl"  # trailing slash dropped
    assert config.log_key == KeySource(file=Path("/srv/keys/log.key"))
    root, ica = config.issuers
    assert (root.name, root.is_root, ica.name, ica.is_root) == ("iki-root", True, "ica-2", False)
    assert root.certificate == ROOT / "pki/iki-root.pem"
    assert root.key == KeySource(env="CPL_ROOT_KEY")
    assert root.crl_lifetime == dt.timedelta(days=180)
    assert root.refresh_fraction == 0.25
    assert ica.key == KeySource(file=Path("/etc/cpl/ica-2.key"))
    assert ica.crl_lifetime == dt.timedelta(hours=36)
    assert ica.refresh_fraction == 1.0
    assert config.trust_anchors == (ROOT / "pki/iki-root.pem", ROOT / "pki/old-root.pem")
    assert config.profile == Profile(
        extended_key_usage="1.2.826.0.1.9999.1",
        policy_oid="1.2.826.0.1.9999.2.1",
        roles={"Manufacturer": "MFR", "Supplier": "SUP", "DCC": "DCC"},
        organisation_id_attribute="serialNumber",
    )
    assert config.profile.role_of("SUP") == "Supplier"
    assert config.profile.role_of("Supplier") is None
    assert config.rules == PolicyRules(iki_max_days=400, ica_issuing_max_days=2000, ica_root_max_days=9000)
    assert config.issuer("ica-2") is ica


def test_defaults() -> None:
    config = parse(doc(), ROOT)
    root, ica = config.issuers
    assert ica.crl_lifetime == dt.timedelta(days=7)  # CRL
    assert root.crl_lifetime == dt.timedelta(days=365)  # ARL
    assert root.refresh_fraction == ica.refresh_fraction == 0.5
    assert config.profile == Profile()
    assert config.profile.extended_key_usage == DEFAULT_EKU
    assert config.profile.policy_oid is None
    assert config.profile.roles == DEFAULT_ROLES
    assert config.profile.organisation_id_attribute == "organizationIdentifier"
    assert config.rules == PolicyRules()
    assert config.trust_anchors == ()
    assert config.log_key == KeySource(env="CPL_LOG_KEY")
    assert config.log_key.describe() == "environment variable CPL_LOG_KEY"
    assert config.signing_skew == dt.timedelta(seconds=300)
    assert parse(doc(extra="[intake]\nsigning_time_skew_seconds = 60\n"), ROOT).signing_skew == dt.timedelta(seconds=60)


def test_no_issuers_is_valid_but_every_lookup_fails() -> None:
    config = parse(doc(issuers=()), ROOT)
    assert config.issuers == ()
    with pytest.raises(ConfigError, match=r"unknown issuer 'ica' \(configured: none\)"):
        config.issuer("ica")


def test_unknown_issuer_lookup_names_the_configured_ones() -> None:
    config = parse(doc(), ROOT)
    with pytest.raises(ConfigError) as exc:
        config.issuer("x")
    assert str(exc.value) == "unknown issuer 'x' (configured: iki-root, ica)"


@pytest.mark.parametrize("site", ["https://dcc.example/cpl", "https://dcc.example/cpl/", "https://dcc.example/cpl//"])
def test_crl_url(site: str) -> None:
    config = parse(doc(publication=f'origin = "o.example/log"\nsite_url = "{site}"'), ROOT)
    assert config.crl_url("ica") == "https://dcc.example/cpl/crl/ica.crl"
    assert config.crl_url("iki-root") == "https://dcc.example/cpl/crl/iki-root.crl"
    top = parse(doc(publication='origin = "o.example/log"\nsite_url = "http://localhost:8000"'), ROOT)
    assert top.crl_url("ica") == "http://localhost:8000/crl/ica.crl"


def test_refresh_fraction_of_one_is_allowed() -> None:
    config = parse(doc(issuers=(ICA_ISSUER + "\nrefresh_fraction = 1.0",)), ROOT)
    assert config.issuers[0].refresh_fraction == 1.0


def test_load_reads_the_file_from_the_folder(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text(doc())
    config = load(tmp_path)
    assert config.root == tmp_path.resolve()
    assert config.issuer("ica").certificate == tmp_path.resolve() / "pki/ica.pem"


def test_load_without_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*publisher\.toml"):
        load(tmp_path)


# --- errors --------------------------------------------------------------------------------------

BAD = {
    # [publication]
    "missing-origin": (doc(publication='site_url = "https://x.example"'), "[publication]: 'origin' is required"),
    "missing-publication": (
        doc().replace(f"[publication]\n{PUBLICATION}\n", ""),
        "[publication]: 'origin' is required",
    ),
    "empty-origin": (
        doc(publication='origin = ""\nsite_url = "https://x.example"'),
        "'origin' must be non-empty, without spaces or '+'",
    ),
    "origin-space": (
        doc(publication='origin = "dcc.example/cpl log"\nsite_url = "https://x.example"'),
        "'origin' must be non-empty, without spaces or '+'",
    ),
    "origin-plus": (
        doc(publication='origin = "dcc.example/cpl+log"\nsite_url = "https://x.example"'),
        "'origin' must be non-empty, without spaces or '+'",
    ),
    "origin-number": (
        doc(publication='origin = 5\nsite_url = "https://x.example"'),
        "[publication]: 'origin' must be a string",
    ),
    "missing-site-url": (doc(publication='origin = "o.example/log"'), "[publication]: 'site_url' is required"),
    "site-url-ftp": (
        doc(publication='origin = "o.example/log"\nsite_url = "ftp://x.example/cpl"'),
        "[publication]: 'site_url' must be an http(s) URL",
    ),
    "site-url-no-scheme": (
        doc(publication='origin = "o.example/log"\nsite_url = "dcc.example/cpl"'),
        "'site_url' must be an http(s) URL",
    ),
    "site-url-space": (
        doc(publication='origin = "o.example/log"\nsite_url = "https://dcc.example/my cpl"'),
        "'site_url' must be an http(s) URL",
    ),
    "site-url-no-host": (
        doc(publication='origin = "o.example/log"\nsite_url = "https://"'),
        "'site_url' must be an http(s) URL",
    ),
    "publication-not-table": (
        doc().replace(f"[publication]\n{PUBLICATION}\n", 'publication = "x"\n'),
        "[publication] must be a table",
    ),
    # key sources
    "log-both-keys": (
        doc(log='key_file = "/k/log.key"\nkey_env = "CPL_LOG_KEY"'),
        "[log]: give exactly one of 'key_file', 'key_env' or 'key_pkcs11'",
    ),
    "log-no-key": (doc(log=""), "[log]: give exactly one of 'key_file', 'key_env' or 'key_pkcs11'"),
    "log-key-file-number": (doc(log="key_file = 5"), "[log]: 'key_file' must be a string"),
    "log-key-env-list": (doc(log='key_env = ["A"]'), "[log]: 'key_env' must be a string"),
    "issuer-both-keys": (
        doc(issuers=(ICA_ISSUER + '\nkey_file = "/k/ica.key"',)),
        "[[issuers]] #1: give exactly one of 'key_file', 'key_env' or 'key_pkcs11'",
    ),
    "issuer-no-key": (
        doc(issuers=('name = "ica"\ncertificate = "pki/ica.pem"',)),
        "[[issuers]] #1: give exactly one of 'key_file', 'key_env' or 'key_pkcs11'",
    ),
    # issuers
    "issuer-name-upper": (
        doc(issuers=(ROOT_ISSUER, ICA_ISSUER.replace('"ica"', '"ICA"'))),
        "[[issuers]] #2: name 'ICA' must be lowercase letters, digits and '-' (used in URLs)",
    ),
    "issuer-name-slash": (
        doc(issuers=(ICA_ISSUER.replace('"ica"', '"ica/2"'),)),
        "name 'ica/2' must be lowercase letters, digits and '-'",
    ),
    "issuer-name-dotdot": (
        doc(issuers=(ICA_ISSUER.replace('"ica"', '".."'),)),
        "name '..' must be lowercase letters",
    ),
    "issuer-name-leading-dash": (
        doc(issuers=(ICA_ISSUER.replace('"ica"', '"-ica"'),)),
        "name '-ica' must be lowercase letters",
    ),
    "issuer-name-too-long": (
        doc(issuers=(ICA_ISSUER.replace('"ica"', '"' + "a" * 33 + '"'),)),
        "must be lowercase letters",
    ),
    "issuer-name-empty": (doc(issuers=(ICA_ISSUER.replace('"ica"', '""'),)), "name '' must be lowercase letters"),
    "issuer-missing-name": (
        doc(issuers=('certificate = "pki/ica.pem"\nkey_env = "K"',)),
        "[[issuers]] #1: 'name' is required",
    ),
    "issuer-missing-certificate": (
        doc(issuers=('name = "ica"\nkey_env = "K"',)),
        "[[issuers]] #1: 'certificate' is required",
    ),
    "duplicate-issuers": (doc(issuers=(ICA_ISSUER, ICA_ISSUER)), "[[issuers]]: names must be unique"),
    "issuers-not-array": (
        doc(issuers=(), extra='[issuers]\nname = "ica"\n'),
        "[[issuers]] must be an array of tables",
    ),
    "refresh-fraction-zero": (
        doc(issuers=(ICA_ISSUER + "\nrefresh_fraction = 0",)),
        "[[issuers]] #1: crl_lifetime_days must be in (0, 3660] and refresh_fraction in (0, 1]",
    ),
    "refresh-fraction-1.5": (
        doc(issuers=(ICA_ISSUER + "\nrefresh_fraction = 1.5",)),
        "refresh_fraction in (0, 1]",
    ),
    "refresh-fraction-negative": (
        doc(issuers=(ICA_ISSUER + "\nrefresh_fraction = -0.5",)),
        "refresh_fraction in (0, 1]",
    ),
    "refresh-fraction-nan": (doc(issuers=(ICA_ISSUER + "\nrefresh_fraction = nan",)), "refresh_fraction in (0, 1]"),
    "lifetime-negative": (
        doc(issuers=(ICA_ISSUER + "\ncrl_lifetime_days = -7",)),
        "[[issuers]] #1: crl_lifetime_days must be in (0, 3660]",
    ),
    "lifetime-zero": (doc(issuers=(ICA_ISSUER + "\ncrl_lifetime_days = 0",)), "crl_lifetime_days must be in (0, 3660]"),
    # wrong types
    "lifetime-string": (
        doc(issuers=(ICA_ISSUER + '\ncrl_lifetime_days = "7"',)),
        "[[issuers]] #1: 'crl_lifetime_days' must be a number",
    ),
    "lifetime-bool": (
        doc(issuers=(ICA_ISSUER + "\ncrl_lifetime_days = true",)),
        "'crl_lifetime_days' must be a number",
    ),
    "fraction-string": (
        doc(issuers=(ICA_ISSUER + '\nrefresh_fraction = "half"',)),
        "'refresh_fraction' must be a number",
    ),
    "root-string": (
        doc(issuers=(ICA_ISSUER + '\nroot = "yes"',)),
        "[[issuers]] #1: 'root' must be true or false",
    ),
    "name-number": (doc(issuers=(ICA_ISSUER.replace('"ica"', "7"),)), "[[issuers]] #1: 'name' must be a string"),
    "issuer-not-table": ('issuers = ["ica"]\n' + doc(issuers=()), "[[issuers]] #1: must be a table"),
    "iki-max-days-string": (
        doc(extra='[policy]\niki_max_days = "400"\n'),
        "[policy]: 'iki_max_days' must be an integer",
    ),
    "iki-max-days-float": (doc(extra="[policy]\niki_max_days = 400.5\n"), "'iki_max_days' must be an integer"),
    "ica-max-days-bool": (doc(extra="[policy]\nica_root_max_days = true\n"), "'ica_root_max_days' must be an integer"),
    "policy-not-table": ("policy = 3\n" + doc(), "[policy] must be a table"),
    # [trust]
    "anchors-string": (doc(extra='[trust]\nanchors = "pki/root.pem"\n'), "[trust]: 'anchors' must be a list"),
    "anchors-numbers": (doc(extra="[trust]\nanchors = [1, 2]\n"), "[trust]: 'anchors' must be a list"),
    "trust-not-table": ('trust = "x"\n' + doc(), "[trust]: 'anchors' must be a list of certificate paths"),
    # [profile]
    "eku-letters": (
        doc(extra='[profile]\nextended_key_usage = "1.2.abc"\n'),
        "[profile] extended_key_usage: '1.2.abc' is not a dotted OID",
    ),
    "eku-first-arc": (doc(extra='[profile]\nextended_key_usage = "5.1.2"\n'), "'5.1.2' is not a dotted OID"),
    "eku-one-arc": (doc(extra='[profile]\nextended_key_usage = "1"\n'), "'1' is not a dotted OID"),
    "eku-leading-zero": (doc(extra='[profile]\nextended_key_usage = "1.02.3"\n'), "is not a dotted OID"),
    "eku-trailing-dot": (doc(extra='[profile]\nextended_key_usage = "1.2.3."\n'), "is not a dotted OID"),
    "eku-number": (doc(extra="[profile]\nextended_key_usage = 1.2\n"), "1.2 is not a dotted OID"),
    "policy-oid": (
        doc(extra='[profile]\npolicy_oid = "anyPolicy"\n'),
        "[profile] policy_oid: 'anyPolicy' is not a dotted OID",
    ),
    "roles-missing-dcc": (
        doc(extra='[profile.roles]\nManufacturer = "M"\nSupplier = "S"\n'),
        "[profile.roles]: must map exactly Manufacturer, Supplier and DCC to OU values",
    ),
    "roles-extra": (
        doc(extra='[profile.roles]\nManufacturer = "M"\nSupplier = "S"\nDCC = "D"\nOther = "O"\n'),
        "[profile.roles]: must map exactly Manufacturer, Supplier and DCC",
    ),
    "roles-not-table": (doc(extra='[profile]\nroles = "DCC"\n'), "[profile.roles]: must map exactly"),
    "id-attribute": (
        doc(extra='[profile]\norganisation_id_attribute = "CN"\n'),
        "[profile]: organisation_id_attribute must be organizationIdentifier or serialNumber",
    ),
    "profile-not-table": ('profile = "x"\n' + doc(), "[profile] must be a table"),
    "intake-not-table": ('intake = "x"\n' + doc(), "[intake] must be a table"),
    "skew-negative": (
        doc(extra="[intake]\nsigning_time_skew_seconds = -1\n"),
        "'signing_time_skew_seconds' must be between 0 and 300",
    ),
    "skew-above-the-rules": (
        doc(extra="[intake]\nsigning_time_skew_seconds = 301\n"),
        "'signing_time_skew_seconds' must be between 0 and 300 (the rules' largest clock skew",
    ),
    "skew-text": (doc(extra='[intake]\nsigning_time_skew_seconds = "5m"\n'), "'signing_time_skew_seconds' must be"),
}


@pytest.mark.parametrize(("text", "message"), BAD.values(), ids=BAD.keys())
def test_errors_are_config_errors_with_a_clear_message(text: str, message: str) -> None:
    assert message in error(text)


def test_toml_syntax_error() -> None:
    message = error(doc() + "\n[broken\nname = \n")
    assert message.startswith("publisher.toml: ")
    assert "line" in message


def test_toml_duplicate_key_is_a_syntax_error() -> None:
    assert error(doc(log='key_env = "A"\nkey_env = "B"')).startswith("publisher.toml: ")


# Both bugs below make parse() raise something other than ConfigError, so the
# command line prints a traceback instead of "cpl-publisher: error: ..." (exit 2).


@pytest.mark.parametrize("value", ["nan", "inf", "1e12"])
def test_non_finite_or_huge_crl_lifetime_is_a_config_error(value: str) -> None:
    """BUG (config.parse): nan, inf and 1e12 pass the "> 0" check; timedelta() then raises
    ValueError (nan) or OverflowError (inf, 1e12) instead of a ConfigError."""
    message = error(doc(issuers=(ICA_ISSUER + f"\ncrl_lifetime_days = {value}",)))
    assert "crl_lifetime_days" in message


def test_two_roles_with_the_same_ou_value_are_refused() -> None:
    """BUG (config.parse): [profile.roles] values are not checked for uniqueness.

    With Manufacturer = "X" and Supplier = "X", a Supplier certificate's OU is
    "X" and Profile.role_of / profile.identity read it back as Manufacturer.
    """
    error(doc(extra='[profile.roles]\nManufacturer = "X"\nSupplier = "X"\nDCC = "DCC"\n'))


# --- key custody ---------------------------------------------------------------------------------


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return keys.to_pem(key)


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture()
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def same(a: object, b: ec.EllipticCurvePrivateKey) -> bool:
    assert isinstance(a, ec.EllipticCurvePrivateKey)
    return a.private_numbers() == b.private_numbers()


def test_key_file_tracked_by_git_is_refused(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    publication = tmp_path / "pub"
    publication.mkdir()
    git("init", "-q", cwd=publication)
    key_file = publication / "keys" / "ica.key"
    key_file.parent.mkdir()
    key_file.write_bytes(pem(key))
    git("add", "keys/ica.key", cwd=publication)
    with pytest.raises(KeyUnusable) as exc:
        load_private_key(KeySource(file=key_file), publication)
    assert "tracked by git" in str(exc.value)
    assert "private keys must never enter the repository" in str(exc.value)
    assert isinstance(exc.value, ConfigError)


def test_key_beside_the_publication_in_the_same_repository(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """The publication is a sub-folder of a repository; the key lies beside it, in the work tree."""
    git("init", "-q", cwd=tmp_path)
    publication = tmp_path / "pub"
    publication.mkdir()
    key_file = tmp_path / "secrets" / "ica.key"
    key_file.parent.mkdir()
    key_file.write_bytes(pem(key))
    # Untracked but not ignored: a commit could take it.
    with pytest.raises(KeyUnusable, match="inside the git work tree and not ignored"):
        load_private_key(KeySource(file=key_file), publication)
    # Ignored by git and outside the publication folder: accepted.
    (tmp_path / ".gitignore").write_text("secrets/\n")
    assert same(load_private_key(KeySource(file=key_file), publication), key)
    # Force-added despite the ignore rule: tracked.
    git("add", "-f", "secrets/ica.key", cwd=tmp_path)
    with pytest.raises(KeyUnusable, match="tracked by git"):
        load_private_key(KeySource(file=key_file), publication)


def test_untracked_key_inside_the_git_tree_is_refused(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    publication = tmp_path / "pub"
    publication.mkdir()
    git("init", "-q", cwd=publication)
    key_file = publication / "ica.key"
    key_file.write_bytes(pem(key))
    with pytest.raises(KeyUnusable, match="inside the git work tree and not ignored, so a commit could take it"):
        load_private_key(KeySource(file=key_file), publication)
    # Ignoring it does not help: it is still inside the publication folder.
    (publication / ".gitignore").write_text("*.key\n")
    with pytest.raises(KeyUnusable, match="inside the publication folder; keep keys outside it"):
        load_private_key(KeySource(file=key_file), publication)


def test_key_inside_the_publication_is_refused(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    publication = tmp_path / "pub"
    key_file = publication / "private" / "ica.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_bytes(pem(key))
    with pytest.raises(KeyUnusable, match="inside the publication folder; keep keys outside it"):
        load_private_key(KeySource(file=key_file), publication)
    # A symlink outside the publication does not launder a key inside it.
    link = tmp_path / "link.key"
    link.symlink_to(key_file)
    with pytest.raises(KeyUnusable, match="inside the publication folder"):
        load_private_key(KeySource(file=link), publication)


def test_key_outside_the_publication_is_accepted(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    publication = tmp_path / "pub"
    publication.mkdir()
    git("init", "-q", cwd=publication)
    key_file = tmp_path / "keys" / "ica.key"
    keys.write_private_key(key_file, key)
    assert same(load_private_key(KeySource(file=key_file), publication), key)


def test_keys_of_an_initialised_publication_load(tmp_path: Path) -> None:
    scaffold.init_publication(tmp_path / "pub", tmp_path / "keys", "https://dcc.example/cpl", "dcc.example/cpl/log")
    config = load(tmp_path / "pub")
    for issuer in config.issuers:
        loaded = load_private_key(issuer.key, config.root)
        cert = publication.load_certificate(issuer.certificate)
        assert loaded.public_key() == cert.public_key()


def test_key_from_environment_variable_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: ec.EllipticCurvePrivateKey
) -> None:
    monkeypatch.setenv("CPL_TEST_ICA_KEY", pem(key).decode())
    assert same(load_private_key(KeySource(env="CPL_TEST_ICA_KEY"), tmp_path), key)


def test_key_from_environment_through_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: ec.EllipticCurvePrivateKey
) -> None:
    monkeypatch.setenv("CPL_ICA_KEY", pem(key).decode())
    config = parse(doc(), tmp_path)
    assert same(load_private_key(config.issuer("ica").key, config.root), key)


@pytest.mark.parametrize("value", ["", None])
def test_empty_or_unset_environment_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CPL_TEST_ICA_KEY", raising=False)
    else:
        monkeypatch.setenv("CPL_TEST_ICA_KEY", value)
    with pytest.raises(KeyUnusable, match="environment variable CPL_TEST_ICA_KEY is empty or unset"):
        load_private_key(KeySource(env="CPL_TEST_ICA_KEY"), tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"garbage\n",
        b"-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n",
        b"",
    ],
    ids=["text", "bad-pem", "empty"],
)
def test_garbage_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / "keys" / "ica.key"
    key_file.parent.mkdir()
    key_file.write_bytes(content)
    with pytest.raises(KeyUnusable) as exc:
        load_private_key(KeySource(file=key_file), tmp_path / "pub")
    assert str(exc.value) == f"key from file {key_file.resolve()} is not an unencrypted PEM private key"


def test_garbage_key_in_environment_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPL_TEST_ICA_KEY", "not a key")
    with pytest.raises(KeyUnusable, match="environment variable CPL_TEST_ICA_KEY is not an unencrypted PEM"):
        load_private_key(KeySource(env="CPL_TEST_ICA_KEY"), tmp_path)


def test_encrypted_key_is_refused(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    key_file = tmp_path / "ica.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(KeyUnusable, match="is not an unencrypted PEM private key"):
        load_private_key(KeySource(file=key_file), tmp_path / "pub")


def test_ed25519_key_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "ica.key"
    key_file.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(KeyUnusable, match="is not an ECDSA or RSA key"):
        load_private_key(KeySource(file=key_file), tmp_path / "pub")


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyUnusable, match="cannot read key"):
        load_private_key(KeySource(file=tmp_path / "nope.key"), tmp_path / "pub")
