"""``publisher.toml``: the configuration of one publication (read with the stdlib ``tomllib``).

See the README for the format. Paths are relative to the publication folder.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from publisher.errors import UsageError
from publisher.pkcs11_uri import Pkcs11Uri, Pkcs11UriError, parse_uri
from verifier.cpl_verify import DEFAULT_EKU, DEFAULT_ROLES, MAX_SIGNING_SKEW, Policy, PolicyError, parse_policy

CONFIG_NAME = "publisher.toml"
# The profile's defaults are the verifier's (a consumer's defaults and the publisher's agree by construction).
DEFAULT_ORG_ID_ATTRIBUTE = "organizationIdentifier"
DEFAULT_ROOT_CRL_DAYS = 365  # the root's ARL
DEFAULT_ISSUING_CRL_DAYS = 7  # an issuing ICA's CRL
DEFAULT_REFRESH_FRACTION = 0.5  # a new CRL once this share of the current one's lifetime has passed
# Placeholder OIDs under the documentation arc; a real deployment sets its own.
MAX_CRL_LIFETIME_DAYS = 3660
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_OID_RE = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


class ConfigError(UsageError, ValueError):
    """The configuration is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class PolicyRules:
    """Validity rules. SEC fixes the Organisation/OCA periods; IKI/ICA ones are configuration."""

    organisation_years: int = 10
    oca_issuing_years: int = 25
    oca_root_years: int = 50
    iki_max_days: int = 3 * 365 + 1
    ica_issuing_max_days: int = 10 * 365 + 3
    ica_root_max_days: int = 25 * 365 + 7
    tolerance: dt.timedelta = dt.timedelta(days=1)
    # Organisation IDs allowed IKI certificates in more than one role (configuration, e.g. the DCC's).
    multi_role_organisations: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TokenKey:
    """A key inside a PKCS#11 token: its RFC 7512 URI, the module that reaches the token, and where the
    PIN comes from (an environment variable or a file outside the publication; never the configuration)."""

    uri: Pkcs11Uri
    module: Path
    pin_env: str | None = None
    pin_file: Path | None = None

    def describe(self) -> str:
        return f"PKCS#11 key {self.uri} (module {self.module})"


@dataclass(frozen=True)
class KeySource:
    """Where a private key comes from: a file outside the publication tree, an environment variable,
    or a PKCS#11 token (the key never leaves it)."""

    file: Path | None = None
    env: str | None = None
    token: TokenKey | None = None

    def describe(self) -> str:
        if self.token is not None:
            return self.token.describe()
        return f"file {self.file}" if self.file else f"environment variable {self.env}"


@dataclass(frozen=True)
class IssuerConfig:
    """One CRL issuer: an issuing ICA (CRL) or the root ICA (ARL)."""

    name: str
    certificate: Path
    key: KeySource
    crl_lifetime: dt.timedelta
    refresh_fraction: float
    is_root: bool


@dataclass(frozen=True)
class Profile:
    """The IKI certificate profile the product expects."""

    extended_key_usage: str = DEFAULT_EKU
    policy_oid: str | None = None
    roles: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLES))  # role -> OU value
    organisation_id_attribute: str = DEFAULT_ORG_ID_ATTRIBUTE  # or "serialNumber"

    def role_of(self, ou: str) -> str | None:
        """The role (Manufacturer, Supplier, DCC) whose configured OU value is ``ou``."""
        for role, value in self.roles.items():
            if value == ou:
                return role
        return None


DEFAULT_SIGNING_SKEW_SECONDS = 300
DEFAULT_PUBLISH_INTERVAL_HOURS = 24.0  # the publish job's schedule: the site calls a publish older than this late
DEFAULT_WITNESS_TIMEOUT_SECONDS = 10.0
BELOW_QUORUM = ("refuse", "warn")


@dataclass(frozen=True)
class WitnessingConfig:
    """``[witnessing]``: the witnesses asked to cosign each checkpoint (a C2SP tlog-policy whose witness lines
    carry their submission URLs), what to do below the quorum, and how long one request may take."""

    policy: Policy
    below_quorum: str = "refuse"  # or "warn"
    timeout: float = DEFAULT_WITNESS_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Config:
    """A publication's configuration."""

    root: Path
    origin: str
    site_url: str
    log_key: KeySource
    issuers: tuple[IssuerConfig, ...]
    trust_anchors: tuple[Path, ...]
    profile: Profile
    rules: PolicyRules
    # How far a signature's signingTime may be ahead of the intake's clock ([intake] signing_time_skew_seconds).
    signing_skew: dt.timedelta = dt.timedelta(seconds=DEFAULT_SIGNING_SKEW_SECONDS)
    witnessing: WitnessingConfig | None = None
    publish_interval_hours: float = DEFAULT_PUBLISH_INTERVAL_HOURS

    def issuer(self, name: str) -> IssuerConfig:
        for issuer in self.issuers:
            if issuer.name == name:
                return issuer
        known = ", ".join(i.name for i in self.issuers) or "none"
        raise ConfigError(f"unknown issuer {name!r} (configured: {known})")

    def crl_url(self, issuer: str) -> str:
        """The CRL distribution point URL of an issuer (on the site)."""
        return f"{self.site_url}/crl/{issuer}.crl"


def _value(table: dict[str, object], key: str, where: str, default: object) -> object:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: '{key}' is required")
    return value


def _str(table: dict[str, object], key: str, where: str, default: str | None = None) -> str:
    value = _value(table, key, where, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{key}' must be a string")
    return value


def _number(table: dict[str, object], key: str, where: str, default: float) -> float:
    value = _value(table, key, where, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: '{key}' must be a number")
    return float(value)


def _int(table: dict[str, object], key: str, where: str, default: int) -> int:
    value = _value(table, key, where, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: '{key}' must be an integer")
    return value


def _bool(table: dict[str, object], key: str, where: str, default: bool) -> bool:
    value = _value(table, key, where, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false")
    return value


_PIN_KEYS = ("pin", "pin_value", "user_pin")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The URI attributes a token key is found by; the others (slot and library descriptions, vendor ``x-``
# attributes, module-name) would be silently unmatched, so they are refused.
_MATCHED = ("token", "manufacturer", "serial", "model", "object", "id", "type", "slot-id")


def _pin_source(value: str, where: str) -> str:
    """The file a URI's ``pin-source`` names: RFC 7512 makes it a URI; only a local ``file:`` one is taken."""
    m = re.fullmatch(r"file:(?://(?:localhost)?)?(/[^?#]*)", value)
    if m is None:
        raise ConfigError(
            f"{where}: the URI's pin-source must be a local file: URI (file:/path or file:///path); "
            "commands and other schemes are refused"
        )
    return m.group(1)


def token_key(
    uri_text: str,
    where: str,
    base: Path,
    module: str | None,
    pin_env: str | None,
    pin_file: str | None,
    names_key: bool = True,
    publication: Path | None = None,
) -> TokenKey:
    """A ``TokenKey`` from a URI, a module path (or the URI's ``module-path``) and one PIN source (or the
    URI's ``pin-source``); relative paths are taken from ``base``. With ``names_key`` false the URI names
    only a token (where ``ca init`` makes its keys). The module must be an absolute path, outside
    ``publication`` when given."""
    try:
        uri = parse_uri(uri_text)
    except Pkcs11UriError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if not uri.token:
        raise ConfigError(f"{where}: the PKCS#11 URI must name the token (token=, serial=, manufacturer= or model=)")
    unmatched = sorted(set(uri.path) - set(_MATCHED)) + sorted(set(uri.query) - {"module-path", "pin-source"})
    if unmatched:
        raise ConfigError(
            f"{where}: the PKCS#11 URI's {', '.join(unmatched)} would not be matched: give the token by "
            f"{', '.join(_MATCHED[:4])} or slot-id, and the key by object or id"
        )
    if names_key and uri.object is None and uri.id is None:
        raise ConfigError(f"{where}: the PKCS#11 URI must name the key (object= or id=)")
    if uri.path.get("type", "private") != "private":
        raise ConfigError(f"{where}: the PKCS#11 URI names a {uri.path['type']} object; a signing key is private")
    in_uri = uri.query.get("module-path")
    if module and in_uri and Path(module) != Path(in_uri):
        raise ConfigError(f"{where}: the module path differs from the URI's module-path")
    module = module or in_uri
    if not module:
        raise ConfigError(f"{where}: give the PKCS#11 module path ('pkcs11_module', or module-path in the URI)")
    # Native code loaded into the job that holds the PIN: an installed library, never a file of the publication.
    inside = publication is not None and Path(module).resolve().is_relative_to(publication.resolve())
    if not Path(module).is_absolute() or inside:
        raise ConfigError(f"{where}: the PKCS#11 module must be an absolute path outside the publication: {module}")
    source = uri.query.get("pin-source")
    if source is not None:
        if pin_env or pin_file:
            raise ConfigError(f"{where}: the URI's pin-source and pin_env/pin_file both give the PIN; keep one")
        pin_file = _pin_source(source, where)
    if (pin_env is None) == (pin_file is None) or pin_env == "" or pin_file == "":
        raise ConfigError(f"{where}: give the token's PIN source: exactly one of 'pin_env' or 'pin_file', non-empty")
    if pin_env is not None and not _ENV_NAME.fullmatch(pin_env):
        # Not echoed: an operator who typed the PIN itself here must not see it printed.
        raise ConfigError(f"{where}: pin_env must name an environment variable (letters, digits, '_')")
    return TokenKey(uri, Path(module), pin_env, (base / pin_file).resolve() if pin_file else None)


def _token_source(table: dict[str, object], where: str, base: Path, defaults: dict[str, object]) -> KeySource:
    def setting(name: str, default_name: str) -> str | None:
        value = table.get(name, defaults.get(default_name))
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: '{name}' must be a string")
        return value

    pin_env, pin_file = table.get("pin_env"), table.get("pin_file")
    if pin_env is None and pin_file is None:  # a key's own PIN source replaces [pkcs11]'s, never mixes with it
        pin_env, pin_file = defaults.get("pin_env"), defaults.get("pin_file")
    if not all(v is None or isinstance(v, str) for v in (pin_env, pin_file)):
        raise ConfigError(f"{where}: 'pin_env' and 'pin_file' must be strings")
    return KeySource(
        token=token_key(
            _str(table, "key_pkcs11", where),
            where,
            base,
            setting("pkcs11_module", "module"),
            pin_env if isinstance(pin_env, str) else None,
            pin_file if isinstance(pin_file, str) else None,
            publication=base,
        )
    )


def _key_source(table: dict[str, object], where: str, base: Path, pkcs11: dict[str, object]) -> KeySource:
    for name in _PIN_KEYS:
        if name in table or name in pkcs11:
            raise ConfigError(
                f"{where}: '{name}': a PIN never goes in the configuration (it is committed); "
                "use pin_env (an environment variable) or pin_file (a file outside the publication)"
            )
    given = [k for k in ("key_file", "key_env", "key_pkcs11") if table.get(k) is not None]
    if len(given) != 1 or any(table.get(k) == "" for k in given):
        raise ConfigError(f"{where}: give exactly one of 'key_file', 'key_env' or 'key_pkcs11', non-empty")
    if given == ["key_pkcs11"]:
        return _token_source(table, where, base, pkcs11)
    key_file, key_env = table.get("key_file"), table.get("key_env")
    if key_file is not None:
        if not isinstance(key_file, str):
            raise ConfigError(f"{where}: 'key_file' must be a string")
        return KeySource(file=(base / key_file).resolve())
    if not isinstance(key_env, str):
        raise ConfigError(f"{where}: 'key_env' must be a string")
    return KeySource(env=key_env)


def _oid(value: object, where: str) -> str:
    if not isinstance(value, str) or not _OID_RE.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} is not a dotted OID")
    return value


def _witnessing(data: dict[str, object]) -> WitnessingConfig | None:
    table = data.get("witnessing")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError("[witnessing] must be a table")
    where = "[witnessing]"
    try:
        policy = parse_policy(_str(table, "policy", where))
    except PolicyError as exc:
        raise ConfigError(f"{where} policy: {exc}") from exc
    if not policy.witnesses:
        raise ConfigError(f"{where} policy: no witness is listed")
    for w in policy.witnesses:
        if w.url is None or not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", w.url):
            raise ConfigError(f"{where} policy: witness {w.name} needs its submission URL (http or https)")
    if policy.quorum == "none":
        raise ConfigError(f"{where} policy: 'quorum none' asks for no cosignature; name the witnesses' quorum")
    below = _str(table, "below_quorum", where, "refuse")
    if below not in BELOW_QUORUM:
        raise ConfigError(f"{where}: 'below_quorum' is 'refuse' or 'warn'")
    timeout = _number(table, "timeout_seconds", where, DEFAULT_WITNESS_TIMEOUT_SECONDS)
    if not 0 < timeout <= 600:
        raise ConfigError(f"{where}: 'timeout_seconds' must be more than 0 and at most 600")
    return WitnessingConfig(policy, below, timeout)


def parse(text: str, root: Path) -> Config:
    """Parse the TOML text of a publication rooted at ``root``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_NAME}: {exc}") from exc
    pub = data.get("publication", {})
    if not isinstance(pub, dict):
        raise ConfigError("[publication] must be a table")
    origin = _str(pub, "origin", "[publication]")
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise ConfigError("[publication]: 'origin' must be non-empty, without spaces or '+'")
    site_url = _str(pub, "site_url", "[publication]").rstrip("/")
    interval = _number(pub, "publish_interval_hours", "[publication]", DEFAULT_PUBLISH_INTERVAL_HOURS)
    if not 0 < interval <= 24 * 31:
        raise ConfigError("[publication]: 'publish_interval_hours' must be more than 0 and at most 744 (31 days)")
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", site_url):
        raise ConfigError("[publication]: 'site_url' must be an http(s) URL")
    log = data.get("log", {})
    if not isinstance(log, dict):
        raise ConfigError("[log] must be a table")
    pkcs11 = data.get("pkcs11", {})
    if not isinstance(pkcs11, dict) or set(pkcs11) - {"module", "pin_env", "pin_file", *_PIN_KEYS}:
        raise ConfigError("[pkcs11] is a table of 'module', 'pin_env' and 'pin_file' (defaults for key_pkcs11)")
    log_key = _key_source(log, "[log]", root, pkcs11)

    issuers = []
    raw_issuers = data.get("issuers", [])
    if not isinstance(raw_issuers, list):
        raise ConfigError("[[issuers]] must be an array of tables")
    for i, item in enumerate(raw_issuers):
        where = f"[[issuers]] #{i + 1}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a table")
        name = _str(item, "name", where)
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{where}: name {name!r} must be lowercase letters, digits and '-' (used in URLs)")
        is_root = _bool(item, "root", where, False)
        default_days = DEFAULT_ROOT_CRL_DAYS if is_root else DEFAULT_ISSUING_CRL_DAYS
        lifetime = _number(item, "crl_lifetime_days", where, float(default_days))
        fraction = _number(item, "refresh_fraction", where, DEFAULT_REFRESH_FRACTION)
        if not 0 < lifetime <= MAX_CRL_LIFETIME_DAYS or not 0 < fraction <= 1:
            raise ConfigError(
                f"{where}: crl_lifetime_days must be in (0, {MAX_CRL_LIFETIME_DAYS}] and refresh_fraction in (0, 1]"
            )
        issuers.append(
            IssuerConfig(
                name=name,
                certificate=root / _str(item, "certificate", where),
                key=_key_source(item, where, root, pkcs11),
                crl_lifetime=dt.timedelta(days=lifetime),
                refresh_fraction=fraction,
                is_root=is_root,
            )
        )
    if len({i.name for i in issuers}) != len(issuers):
        raise ConfigError("[[issuers]]: names must be unique")

    trust = data.get("trust", {})
    anchors = trust.get("anchors", []) if isinstance(trust, dict) else None
    if not isinstance(anchors, list) or not all(isinstance(a, str) for a in anchors):
        raise ConfigError("[trust]: 'anchors' must be a list of certificate paths")

    prof = data.get("profile", {})
    if not isinstance(prof, dict):
        raise ConfigError("[profile] must be a table")
    roles = prof.get("roles", DEFAULT_ROLES)
    if not isinstance(roles, dict) or set(roles) != set(DEFAULT_ROLES):
        raise ConfigError("[profile.roles]: must map exactly Manufacturer, Supplier and DCC to OU values")
    if not all(isinstance(v, str) and v for v in roles.values()) or len(set(roles.values())) != len(roles):
        raise ConfigError("[profile.roles]: the OU values must be distinct, non-empty strings")
    id_attr = prof.get("organisation_id_attribute", DEFAULT_ORG_ID_ATTRIBUTE)
    if id_attr not in ("organizationIdentifier", "serialNumber"):
        raise ConfigError("[profile]: organisation_id_attribute must be organizationIdentifier or serialNumber")
    profile = Profile(
        extended_key_usage=_oid(prof.get("extended_key_usage", DEFAULT_EKU), "[profile] extended_key_usage"),
        policy_oid=_oid(prof["policy_oid"], "[profile] policy_oid") if "policy_oid" in prof else None,
        roles={str(k): str(v) for k, v in roles.items()},
        organisation_id_attribute=str(id_attr),
    )

    pol = data.get("policy", {})
    if not isinstance(pol, dict):
        raise ConfigError("[policy] must be a table")
    defaults = PolicyRules()
    for key in ("iki_max_days", "ica_issuing_max_days", "ica_root_max_days"):
        if key in pol and _int(pol, key, "[policy]", 1) <= 0:
            raise ConfigError(f"[policy]: '{key}' must be a positive number of days")
    multi = pol.get("multi_role_organisations", [])
    if not isinstance(multi, list) or not all(isinstance(m, str) and m for m in multi):
        raise ConfigError("[policy]: 'multi_role_organisations' must be a list of organisation IDs")
    rules = PolicyRules(
        iki_max_days=_int(pol, "iki_max_days", "[policy]", defaults.iki_max_days),
        ica_issuing_max_days=_int(pol, "ica_issuing_max_days", "[policy]", defaults.ica_issuing_max_days),
        ica_root_max_days=_int(pol, "ica_root_max_days", "[policy]", defaults.ica_root_max_days),
        multi_role_organisations=frozenset(multi),
    )
    intake = data.get("intake", {})
    if not isinstance(intake, dict):
        raise ConfigError("[intake] must be a table")
    skew = _number(intake, "signing_time_skew_seconds", "[intake]", DEFAULT_SIGNING_SKEW_SECONDS)
    if not 0 <= skew <= MAX_SIGNING_SKEW.total_seconds():
        raise ConfigError(
            f"[intake]: 'signing_time_skew_seconds' must be between 0 and {MAX_SIGNING_SKEW.total_seconds():.0f} "
            "(the rules' largest clock skew: audit judges every entry by it)"
        )
    return Config(
        root=root,
        origin=origin,
        site_url=site_url,
        log_key=log_key,
        issuers=tuple(issuers),
        trust_anchors=tuple(root / a for a in anchors),
        profile=profile,
        rules=rules,
        signing_skew=dt.timedelta(seconds=skew),
        witnessing=_witnessing(data),
        publish_interval_hours=interval,
    )


def load(root: Path) -> Config:
    """Read ``publisher.toml`` from the publication folder ``root``."""
    path = Path(root) / CONFIG_NAME
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse(text, Path(root).resolve())
