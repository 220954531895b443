"""Refreshing the published CRLs: decide which are due, sign, check, write ``crl/``.

A refresh reads the revocation register once. Each CRL's description
(``crl/<issuer>.json``) records the register prefix the CRL was built from
(its length and SHA-256); the register is append-only, so when the register
still starts with that prefix, the new CRL is the published one's entries
(reused as DER, after its signature is verified) with the records appended
since merged in. Otherwise (no description, a CRL out of step with it, a
rewritten register) every record is encoded again. Either way ``check_crl``
checks the result against the published CRL, retention included.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from publisher import keys
from publisher.config import Config, IssuerConfig
from publisher.errors import Refused
from publisher.pki import registers
from publisher.pki.crl import (
    CRLError,
    CRLInfo,
    CRLSpec,
    EncodedEntries,
    Entry,
    check_crl,
    crl_number,
    encode_records,
    join_entries,
    merge_entries,
    revoked_entries,
    sign_crl,
    to_pem,
    verify_signature,
)
from publisher.pki.der import parse_time
from publisher.pki.policy import check_key_in_use
from publisher.pki.registers import Prefix, Snapshot
from publisher.publication import CRL_DIR, load_certificate, now_utc, public_files

# check_crl's "thisUpdate not in the future" does not apply to a CRL signed earlier.
_FAR_FUTURE = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


class CRLRefused(Refused):
    """A CRL could not be issued; nothing was published."""


@dataclass(frozen=True)
class Refreshed:
    """One newly published CRL."""

    issuer: str
    info: CRLInfo
    reason: str


@dataclass(frozen=True)
class IssuerRevocations:
    """One issuer's revocations in a register snapshot, parsed only as far as a refresh needs."""

    issuer: str
    register: Snapshot

    def changed_since(self, covered: Prefix | None) -> bool:
        """Whether the register holds revocations of this issuer that a CRL built from ``covered`` lacks."""
        if covered is None or not self.register.starts_with(covered):
            return True
        return any(r.get("issuer") == self.issuer for r in self.register.records_from(covered.length))

    def encode_from(self, offset: int) -> list[Entry]:
        """The entries, sorted by serial, of this issuer's revocations from register byte ``offset`` on."""
        with registers.gc_paused():
            return encode_records(registers.revocations_of(self.register.records_from(offset), self.issuer))


@dataclass(frozen=True)
class Published:
    """An issuer's published CRL, and the register prefix it was built from if its description says so."""

    der: bytes
    sha256: str
    covers: Prefix | None  # None without a description of this DER that records the prefix


def revocations_for(config: Config, issuer: str) -> tuple[IssuerRevocations, Prefix]:
    """The issuer's revocations in the register as it is now, and that register state (what a CRL records)."""
    register = Snapshot.read(config.root, registers.REVOCATIONS)
    return IssuerRevocations(issuer, register), register.whole


def _covered_prefix(meta: dict[str, object] | None, sha256: str) -> Prefix | None:
    if meta is None or meta.get("sha256") != sha256:
        return None
    length, digest = meta.get("register_bytes"), meta.get("register_sha256")
    if isinstance(length, int) and not isinstance(length, bool) and isinstance(digest, str):
        return Prefix(length, digest)
    return None


def current(config: Config, issuer: str) -> tuple[Published | None, dict[str, object] | None]:
    """The published CRL of an issuer and its JSON description, each if present.

    The DER file is the truth: retention and numbering are checked against
    it even when its description is missing or stale.
    """
    base = config.root / CRL_DIR
    try:
        meta = json.loads((base / f"{issuer}.json").read_text())
    except (FileNotFoundError, ValueError):
        meta = None
    meta = meta if isinstance(meta, dict) else None
    try:
        data = (base / f"{issuer}.crl").read_bytes()
    except FileNotFoundError:
        return None, meta
    sha256 = hashlib.sha256(data).hexdigest()
    return Published(data, sha256, _covered_prefix(meta, sha256)), meta


def due(
    issuer: IssuerConfig,
    crl: Published | None,
    meta: dict[str, object] | None,
    revocations: IssuerRevocations,
    now: dt.datetime,
) -> str | None:
    """Why a new CRL is due, or None: no CRL yet, files out of step, register changed, or threshold passed."""
    if crl is None:
        return "no CRL published yet"
    if meta is None or meta.get("sha256") != crl.sha256:
        return "the CRL's description is missing or out of step (an interrupted write)"
    if revocations.changed_since(crl.covers):
        return "the revocation register changed"
    this_update = parse_time(str(meta["this_update"]))
    next_update = parse_time(str(meta["next_update"]))
    if now >= this_update + (next_update - this_update) * issuer.refresh_fraction:
        return f"{issuer.refresh_fraction:.0%} of the CRL's lifetime has passed"
    return None


@dataclass(frozen=True)
class Due:
    """One issuer whose CRL is due: its revocations, its published CRL, why, and its key (opened)."""

    issuer: IssuerConfig
    revocations: IssuerRevocations
    previous: Published | None
    why: str
    key: keys.IssuerKey


@dataclass(frozen=True)
class Plan:
    """What a refresh will sign, worked out from one read of the register, with every due issuer's key
    opened (a token found, its PIN checked, the key there) before anything is signed or journalled: an
    unusable key then changes nothing. Only the due issuers' keys are opened, so an offline root key does not
    stop an issuing CA's CRL."""

    register: Snapshot
    now: dt.datetime
    due: tuple[Due, ...]


def plan(config: Config, now: dt.datetime | None = None, force: bool = False) -> Plan:
    """The CRLs that are due (all of them with ``force``), with their keys opened."""
    now = now or now_utc()
    register = Snapshot.read(config.root, registers.REVOCATIONS)
    found = []
    for issuer in config.issuers:
        revocations = IssuerRevocations(issuer.name, register)
        previous, meta = current(config, issuer.name)
        why = due(issuer, previous, meta, revocations, now) or ("forced" if force else None)
        if why is not None:
            found.append((issuer, revocations, previous, why))
    opened = [Due(*item, keys.load_issuer_key(item[0].key, config.root)) for item in found]
    return Plan(register, now, tuple(opened))


def sign_planned(config: Config, planned: Plan) -> list[Refreshed]:
    """Sign, check and publish the CRLs ``planned`` (made under the same lock, so the register is unchanged)."""
    done = []
    for d in planned.due:
        info = publish_one(config, d.issuer, d.revocations, planned.register.whole, d.previous, planned.now, d.key)
        done.append(Refreshed(d.issuer.name, info, d.why))
    return done


def refresh(config: Config, now: dt.datetime | None = None, force: bool = False) -> list[Refreshed]:
    """Sign, check and publish every CRL that is due (all of them with ``force``): ``plan`` then
    ``sign_planned``."""
    return sign_planned(config, plan(config, now, force))


def archived(config: Config, issuer: str) -> list[tuple[int, Path]]:
    """The issuer's archived CRLs (``crl/archive/<issuer>/<number>.crl``), by number."""
    folder = config.root / CRL_DIR / "archive" / issuer
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.suffix == ".crl" and path.stem.isdigit() and not path.is_symlink():
            found.append((int(path.stem), path))
    return sorted(found)


def archived_info(config: Config, issuer: IssuerConfig, number: int, path: Path) -> CRLInfo:
    """What an archived CRL says, after checking it is this issuer's, signed, well formed and numbered as named."""
    data = path.read_bytes()
    try:
        info = check_crl(data, load_certificate(issuer.certificate), None, _FAR_FUTURE)
    except CRLError as exc:
        raise CRLRefused(f"{path}: {exc}") from exc
    if info.number != number:
        raise CRLRefused(f"{path}: holds CRL number {info.number}, not {number}")
    return info


def _reusable_entries(previous: Published | None, cert: x509.Certificate) -> EncodedEntries | None:
    """The previous CRL's entries, if they can be taken as they are: it verifies under the issuer's key.

    (So they are entries this issuer signed, not another issuer's CRL put in its place.)
    """
    if previous is None:
        return None
    try:
        verify_signature(previous.der, cert)
        return revoked_entries(previous.der)
    except CRLError:
        return None


def build_entries(revocations: IssuerRevocations, previous: Published | None, cert: x509.Certificate) -> EncodedEntries:
    """The new CRL's entries: the previous CRL's plus the register's newer records when the register
    still starts with the prefix the previous CRL was built from; otherwise every record encoded again."""
    covered = previous.covers if previous is not None else None
    if covered is not None and revocations.register.starts_with(covered):
        reused = _reusable_entries(previous, cert)
        if reused is not None:
            return merge_entries(reused, revocations.encode_from(covered.length))
    return join_entries(revocations.encode_from(0))


def publish_one(
    config: Config,
    issuer: IssuerConfig,
    revocations: IssuerRevocations,
    register: Prefix,
    previous: Published | None,
    now: dt.datetime,
    key: keys.IssuerKey | None = None,
) -> CRLInfo:
    """Reserve a number, sign, check against the previous CRL, and write the files (archive first).
    ``key`` is the issuer's key, loaded here if not given.

    ``register`` is the register state ``revocations`` come from; the description records it.
    """
    cert = load_certificate(issuer.certificate)
    expired = check_key_in_use(cert.not_valid_after_utc, now, f"issuer {issuer.name}'s certificate")
    if expired:
        raise CRLRefused(str(expired[0]))
    key = key or keys.load_issuer_key(issuer.key, config.root)
    floor = 1
    if previous is not None:
        floor = crl_number(x509.load_der_x509_crl(previous.der)) + 1
    number = registers.reserve_crl_number(config.root, issuer.name, at_least=floor)
    spec = CRLSpec(cert, number, now, now + issuer.crl_lifetime, config.crl_url(issuer.name), issuer.is_root)
    data = sign_crl(spec, build_entries(revocations, previous, cert), key)
    info = check_crl(data, cert, previous.der if previous is not None else None, now)
    meta = {
        **info.to_json(),
        "issuer": issuer.name,
        "url": config.crl_url(issuer.name),
        "register_bytes": register.length,
        "register_sha256": register.sha256,
    }
    base = Path(CRL_DIR)
    public = public_files(config.root)
    # The archive first, and once (a CRL number is never reused): then the current CRL points at it.
    public.write({str(base / "archive" / issuer.name / f"{number}.crl"): data}, immutable=True)
    public.write(
        {
            str(base / f"{issuer.name}.crl"): data,
            str(base / f"{issuer.name}.pem"): to_pem(data),
            str(base / f"{issuer.name}.json"): json.dumps(meta, sort_keys=True, indent=1).encode() + b"\n",
        }
    )
    return info
