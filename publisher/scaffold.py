"""``ca init``: a new publication, with a demo IKI hierarchy (root ICA and issuing ICA) and a log key.

The keys go to a folder outside the publication (``keys.check_key_destination``) or are made inside a
PKCS#11 token; the publication gets ``publisher.toml``, the CA certificates under ``pki/``, the issued
register and an empty log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from publisher import keys
from publisher.config import (
    CONFIG_NAME,
    DEFAULT_ISSUING_CRL_DAYS,
    DEFAULT_ORG_ID_ATTRIBUTE,
    DEFAULT_REFRESH_FRACTION,
    DEFAULT_ROOT_CRL_DAYS,
    ConfigError,
    TokenKey,
    load,
)
from publisher.pkcs11_uri import Pkcs11Uri
from publisher.pki import profile, registers
from publisher.pki.authority import PolicyRefused, existing_facts, record_line
from publisher.pki.policy import Kind, check
from publisher.publication import LOG_DIR, PKI_DIR, now_utc, public_files
from publisher.tlog.engine import TileLog
from publisher.tlog.note import Signer
from verifier.cpl_verify import DEFAULT_EKU, DEFAULT_ROLES


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Hierarchy:
    """What ``init_publication`` created."""

    root_cert: x509.Certificate
    issuing_cert: x509.Certificate
    keys: str  # where the private keys are: a folder, or a token's URI


def _key_in(token: TokenKey, label: str) -> TokenKey:
    """The key labelled ``label`` on ``token``'s token."""
    return dataclasses.replace(token, uri=Pkcs11Uri({**token.uri.token, "object": label}, token.uri.query))


def _token_settings(token: TokenKey) -> str:
    pin = f"pin_env = {_toml_str(token.pin_env)}" if token.pin_env else f"pin_file = {_toml_str(str(token.pin_file))}"
    return f"""
# The keys are inside a PKCS#11 token; the PIN comes from {"the environment" if token.pin_env else "a file"}.
[pkcs11]
module = {_toml_str(str(token.module))}
{pin}
"""


def init_publication(
    publication: Path,
    keys_dir: Path | None,
    site_url: str,
    origin: str,
    algorithm: str = keys.DEFAULT_ALGORITHM,
    root_name: str = "iki-root",
    issuer_name: str = "ica",
    now: dt.datetime | None = None,
    token: TokenKey | None = None,
) -> Hierarchy:
    """Create a publication with a demo IKI hierarchy (root ICA + issuing ICA) and a log key.

    The keys go to ``keys_dir``, which must lie outside the publication, or, with ``token``, are made
    inside that PKCS#11 token (non-extractable), labelled after the issuers and ``log``. A token must not
    hold those labels yet; if the publication cannot be made, the keys made in the token are destroyed.
    """
    args = (publication, keys_dir, site_url, origin, algorithm, root_name, issuer_name, now, token)
    if token is None:
        return _init_publication(*args)
    from publisher import hsm  # here: file keys need no PKCS#11 library

    _check_names(root_name, issuer_name)
    refs = [_key_in(token, label) for label in (root_name, issuer_name, "log")]
    hsm.check_free(refs, None)
    try:
        return _init_publication(*args)
    except BaseException:
        hsm.destroy(refs, None)  # the labels were free: whatever holds them now was made here
        raise


def _check_names(*names: str) -> None:
    for name in names:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", name):
            raise ConfigError(f"issuer name {name!r} must be lowercase letters, digits and '-'")


def _init_publication(
    publication: Path,
    keys_dir: Path | None,
    site_url: str,
    origin: str,
    algorithm: str,
    root_name: str,
    issuer_name: str,
    now: dt.datetime | None,
    token: TokenKey | None,
) -> Hierarchy:
    now = now or now_utc()
    publication = publication.resolve()
    if keys_dir is not None and token is not None:
        raise ConfigError("the keys go to a folder or into a token, not both")
    if keys_dir is not None:
        keys_dir = keys_dir.resolve()
        keys.check_key_destination(keys_dir, publication)
    if publication.exists() and any(publication.iterdir()):
        raise ConfigError(f"{publication} is not empty")
    _check_names(root_name, issuer_name)
    root_key: keys.IssuerKey | keys.PrivateKey
    ica_key: keys.IssuerKey | keys.PrivateKey
    if token is not None:
        from publisher import hsm  # here: file keys need no PKCS#11 library

        refs = {label: _key_in(token, label) for label in (root_name, issuer_name, "log")}
        root_key = hsm.generate_issuer_key(refs[root_name], None, algorithm)
        ica_key = hsm.generate_issuer_key(refs[issuer_name], None, algorithm)
        log_signer = Signer(origin, hsm.generate_ed25519(refs["log"], None))
        where = str(token.uri)
        # The module and PIN source go once in [pkcs11]; each key's URI names only the token and the key.
        key_lines = {label: f"key_pkcs11 = {_toml_str(str(Pkcs11Uri(ref.uri.path)))}" for label, ref in refs.items()}
        settings = _token_settings(token)
    elif keys_dir is not None:
        keys_dir.mkdir(parents=True, exist_ok=True)
        root_key, ica_key = keys.generate(algorithm), keys.generate(algorithm)
        files = {root_name: keys_dir / f"{root_name}.key", issuer_name: keys_dir / f"{issuer_name}.key"}
        keys.write_private_key(files[root_name], root_key)
        keys.write_private_key(files[issuer_name], ica_key)
        log_signer = Signer.generate(origin)
        files["log"] = keys_dir / "log.key"
        files["log"].write_text(log_signer.skey + "\n")
        files["log"].chmod(0o600)
        where = str(keys_dir)
        key_lines = {label: f"key_file = {_toml_str(str(path))}" for label, path in files.items()}
        settings = ""
    else:
        raise ConfigError("the keys go to a folder or into a token: give one of them")
    publication.mkdir(parents=True, exist_ok=True)
    site = site_url.rstrip("/")
    text = f"""# Publication configuration (see the README, "Configuration").
[publication]
origin = {_toml_str(origin)}
site_url = {_toml_str(site)}
{settings}
[log]
{key_lines["log"]}

[[issuers]]
name = {_toml_str(root_name)}
root = true
certificate = "{PKI_DIR}/{root_name}.pem"
{key_lines[root_name]}
crl_lifetime_days = {DEFAULT_ROOT_CRL_DAYS}
refresh_fraction = {DEFAULT_REFRESH_FRACTION}

[[issuers]]
name = {_toml_str(issuer_name)}
certificate = "{PKI_DIR}/{issuer_name}.pem"
{key_lines[issuer_name]}
crl_lifetime_days = {DEFAULT_ISSUING_CRL_DAYS}
refresh_fraction = {DEFAULT_REFRESH_FRACTION}

[trust]
anchors = ["{PKI_DIR}/{root_name}.pem"]

[profile]
extended_key_usage = {_toml_str(DEFAULT_EKU)}
organisation_id_attribute = {_toml_str(DEFAULT_ORG_ID_ATTRIBUTE)}

[profile.roles]
""" + "".join(f"{role} = {_toml_str(ou)}\n" for role, ou in DEFAULT_ROLES.items())
    (publication / CONFIG_NAME).write_text(text)
    config = load(publication)
    rules = config.rules
    root_req = profile.IssueRequest(
        Kind.ICA_ROOT,
        profile.ca_subject("IKI Root ICA (demo)"),
        root_key.public_key(),
        x509.random_serial_number(),
        now,
        now + dt.timedelta(days=rules.ica_root_max_days),
        # The root names its own ARL too, so that the ARL's distribution point covers it
        # (OpenSSL's -crl_check_all checks the root against the ARL's scope).
        config.crl_url(root_name),
    )
    refusals = check(profile.facts_of_request(root_req), existing_facts(config), rules)
    if refusals:
        raise PolicyRefused(refusals)
    root_cert = profile.build_certificate(root_req, config.profile, root_key, None)
    ica_req = profile.IssueRequest(
        Kind.ICA_ISSUING,
        profile.ca_subject("IKI Issuing ICA (demo)"),
        ica_key.public_key(),
        x509.random_serial_number(),
        now,
        now + dt.timedelta(days=rules.ica_issuing_max_days),
        config.crl_url(root_name),
    )
    refusals = check(profile.facts_of_request(ica_req), [profile.facts(root_cert, Kind.ICA_ROOT)], rules)
    if refusals:
        raise PolicyRefused(refusals)
    ica_cert = profile.build_certificate(ica_req, config.profile, root_key, root_cert)
    for name, cert in ((root_name, root_cert), (issuer_name, ica_cert)):
        public_files(publication).write({f"{PKI_DIR}/{name}.pem": cert.public_bytes(serialization.Encoding.PEM)})
    registers.append_line(publication, registers.ISSUED, record_line("", root_cert, Kind.ICA_ROOT, None, None))
    registers.append_line(publication, registers.ISSUED, record_line(root_name, ica_cert, Kind.ICA_ISSUING, None, None))
    TileLog.create(publication / LOG_DIR, log_signer).close()
    return Hierarchy(root_cert, ica_cert, where)
