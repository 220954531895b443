"""Command line: ``cpl-publisher ca``, ``policy check``, ``revoke`` and ``crl`` (the IKI side)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from publisher import keys, publication, scaffold
from publisher.cli.common import EXIT_FAILED, EXIT_OK, PUBLICATION, UsageError, emit, token_from_args, token_options
from publisher.config import Config, PolicyRules, Profile
from publisher.config import load as load_config
from publisher.pki import authority, profile, revocation
from publisher.pki.crl import REASONS
from publisher.pki.policy import CertFacts, Kind, check
from publisher.publish import operations


def _publication(args: argparse.Namespace) -> Config:
    return load_config(Path(args.dir))


def _parse_when(text: str, what: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"{what}: {text!r} is not an ISO 8601 date or time") from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def cmd_ca_init(args: argparse.Namespace) -> int:
    token = token_from_args(args, names_key=False)
    if (token is None) == (args.keys_dir is None):
        raise UsageError("give --keys-dir DIR (key files) or --pkcs11 URI (keys made inside a token), not both")
    h = scaffold.init_publication(
        Path(args.dir),
        Path(args.keys_dir) if args.keys_dir else None,
        args.site_url,
        args.origin,
        args.algorithm,
        args.root_name,
        args.issuer_name,
        token=token,
    )
    summary = {
        "publication": str(Path(args.dir)),
        "root_sha256": h.root_cert.fingerprint(hashes.SHA256()).hex(),
        "issuing_sha256": h.issuing_cert.fingerprint(hashes.SHA256()).hex(),
        "keys": h.keys,
    }
    where = (
        f"keys made inside the token {h.keys} (non-extractable)"
        if token
        else f"keys in {h.keys} (keep them outside the repository)"
    )
    text = (
        f"created publication {args.dir}\n"
        f"  root ICA    SHA-256 {summary['root_sha256']}\n"
        f"  issuing ICA SHA-256 {summary['issuing_sha256']}\n"
        f"  {where}"
    )
    emit(args, summary, text)
    return EXIT_OK


def cmd_ca_issue(args: argparse.Namespace) -> int:
    config = _publication(args)
    out = Path(args.out)
    if args.public_key:
        try:
            data = Path(args.public_key).read_bytes()
        except OSError as exc:
            raise UsageError(str(exc)) from exc
        public: object
        try:
            if b"CERTIFICATE REQUEST" in data:
                csr = x509.load_pem_x509_csr(data)
                if not csr.is_signature_valid:
                    raise UsageError(f"{args.public_key}: the request's self-signature does not verify")
                public = csr.public_key()
            else:
                public = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise UsageError(f"{args.public_key}: not a PEM public key or certificate request") from exc
        if not isinstance(public, keys.PublicKey):
            raise UsageError("the public key must be ECDSA or RSA")
        private = None
    else:
        keys.check_key_destination(out, config.root)
        private = keys.generate(args.algorithm)
        public = private.public_key()
    not_before = _parse_when(args.not_before, "--not-before") if args.not_before else publication.now_utc()
    request = profile.IssueRequest(
        Kind.IKI,
        profile.ee_subject(config.profile, args.org, args.org_id, args.role),
        public,
        x509.random_serial_number(),
        not_before,
        not_before + dt.timedelta(days=args.days),
        config.crl_url(args.issuer),
    )
    issued = operations.issue(config, args.issuer, request, role=args.role, approval_ref=args.approval_ref)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.org_id}-{args.role.lower()}-{issued.certificate.serial_number:x}"
    cert_file = out / f"{stem}.pem"
    cert_file.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    summary: dict[str, object] = {"serial": f"{issued.certificate.serial_number:x}", "certificate": str(cert_file)}
    if private is not None:
        key_file = out / f"{stem}.key"
        keys.write_private_key(key_file, private)
        summary["key"] = str(key_file)
    emit(args, summary, "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return EXIT_OK


def _read_certificates(paths: list[str]) -> list[tuple[str, x509.Certificate]]:
    found: list[tuple[str, x509.Certificate]] = []
    files: list[Path] = []
    for name in paths:
        p = Path(name)
        if p.is_dir():
            files.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".pem", ".crt", ".cer", ".der"))
            )
        else:
            files.append(p)
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise UsageError(str(exc)) from exc
        try:
            certs = (
                x509.load_pem_x509_certificates(data)
                if b"-----BEGIN" in data
                else [x509.load_der_x509_certificate(data)]
            )
        except ValueError as exc:
            raise UsageError(f"{f}: not a PEM or DER certificate") from exc
        found.extend((str(f), c) for c in certs)
    return found


def cmd_policy_check(args: argparse.Namespace) -> int:
    config = _publication(args) if args.dir else None
    prof = config.profile if config else Profile()
    rules = config.rules if config else PolicyRules()
    existing: list[CertFacts] = authority.existing_facts(config) if config else []
    certs = _read_certificates(args.files)
    if not certs:
        raise UsageError("no certificates found")
    checked: list[tuple[str, CertFacts]] = []
    for name, cert in certs:
        kind = Kind(args.kind) if args.kind else profile.classify(cert, prof)
        if kind is None:
            raise UsageError(f"{name}: cannot tell the certificate kind; give --kind")
        checked.append((name, profile.facts(cert, kind, args.role, args.approval_ref)))
    results: list[dict[str, object]] = []
    lines = []
    for name, facts in checked:
        others = existing + [f for _, f in checked if f is not facts]
        refusals = check(facts, others, rules)
        results.append(
            {
                "file": name,
                "serial": f"{facts.serial:x}",
                "kind": facts.kind.value,
                "refusals": [{"rule": r.rule, "message": r.message} for r in refusals],
            }
        )
        lines.append(f"{'REFUSED' if refusals else 'OK'} {name} (serial {facts.serial:x}, {facts.kind.value})")
        lines.extend(f"  {r}" for r in refusals)
    failed = [r for r in results if r["refusals"]]
    emit(args, {"ok": not failed, "certificates": results}, "\n".join(lines))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    config = _publication(args)
    invalidity = _parse_when(args.invalidity_date, "--invalidity-date") if args.invalidity_date else None
    try:
        serial = revocation.parse_serial(args.serial)
    except revocation.RevocationRefused as exc:
        raise UsageError(f"--serial: {exc}") from exc
    record = operations.revoke(
        config,
        args.issuer,
        serial,
        args.reason,
        invalidity,
        args.ref,
        args.unknown_serial,
    )
    text = f"revoked serial {record.serial} of {record.issuer} ({record.reason}); the next CRL refresh publishes it"
    emit(args, {"issuer": record.issuer, "serial": record.serial, "reason": record.reason}, text)
    return EXIT_OK


def cmd_crl_refresh(args: argparse.Namespace) -> int:
    config = _publication(args)
    done = operations.refresh_crls(config, force=args.force)
    summary = [{"issuer": d.issuer, "why": d.reason, **d.info.to_json()} for d in done]
    lines = [
        f"{d.issuer}: CRL {d.info.number}, {d.info.entries} entries, next update "
        f"{d.info.next_update:%Y-%m-%d %H:%M}Z ({d.reason})"
        for d in done
    ] or ["no CRL is due"]
    emit(args, {"refreshed": summary}, "\n".join(lines))
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add the ``ca``, ``policy``, ``revoke`` and ``crl`` commands."""
    pub = PUBLICATION

    ca = sub.add_parser("ca", parents=[common], help="the demo IKI certification authority").add_subparsers(
        dest="ca_command", required=True
    )
    p = ca.add_parser("init", parents=[common, pub], help="create a publication with a demo root and issuing ICA")
    p.add_argument("--keys-dir", help="where the private key files go (outside the publication); or --pkcs11")
    token_options(p, "the token the keys are made in (labelled after the issuers, and log)", "pkcs11:token=dcc-cpl")
    p.add_argument("--site-url", required=True, help="base URL of the public site (CRL distribution points)")
    p.add_argument("--origin", required=True, help="log origin, e.g. dcc.example/cpl/log")
    p.add_argument("--algorithm", default=keys.DEFAULT_ALGORITHM, choices=keys.ALGORITHMS, help="CA key algorithm")
    p.add_argument("--root-name", default="iki-root", help="URL name of the root ICA (default: iki-root)")
    p.add_argument("--issuer-name", default="ica", help="URL name of the issuing ICA (default: ica)")
    p.set_defaults(func=cmd_ca_init)

    p = ca.add_parser("issue", parents=[common, pub], help="issue an end-entity IKI certificate (policy-checked)")
    p.add_argument("--issuer", required=True, help="issuer name from publisher.toml")
    p.add_argument("--org", required=True, help="organisation name (subject O)")
    p.add_argument("--org-id", required=True, help="organisation identifier (SEC party or manufacturer ID)")
    p.add_argument("--role", required=True, choices=["Manufacturer", "Supplier", "DCC"], help="subject role")
    p.add_argument(
        "--out",
        required=True,
        help="folder for the certificate and, without --public-key, the generated key "
        "(then it must be outside the publication and any git work tree)",
    )
    p.add_argument("--public-key", help="PEM public key or certificate request (default: generate a key pair)")
    p.add_argument("--algorithm", default=keys.DEFAULT_ALGORITHM, choices=keys.ALGORITHMS, help="generated key type")
    p.add_argument("--days", type=int, default=730, help="validity in days (default: 730)")
    p.add_argument("--not-before", help="start of validity, ISO 8601 (default: now)")
    p.add_argument("--approval-ref", help="SMKI PMA approval reference, where a rule allows one")
    p.set_defaults(func=cmd_ca_issue)

    pol = sub.add_parser("policy", parents=[common], help="certificate issuance policy").add_subparsers(
        dest="policy_command", required=True
    )
    p = pol.add_parser("check", parents=[common], help="check certificates against MP261 and L11.4 rules")
    p.add_argument("files", nargs="+", help="certificate files or folders (PEM or DER)")
    p.add_argument("--dir", help="publication whose register and rules to check against")
    p.add_argument("--kind", choices=[k.value for k in Kind], help="certificate kind (default: from the profile)")
    p.add_argument("--role", help="Remote Party Role code (Organisation certificates)")
    p.add_argument("--approval-ref", help="SMKI PMA approval reference")
    p.set_defaults(func=cmd_policy_check)

    p = sub.add_parser("revoke", parents=[common, pub], help="record a revocation (final)")
    p.add_argument("--issuer", required=True, help="issuer name from publisher.toml")
    p.add_argument("--serial", required=True, help="certificate serial, hex")
    p.add_argument("--reason", required=True, help="RFC 5280 reason: " + ", ".join(REASONS))
    p.add_argument("--invalidity-date", help="when the key is known or suspected compromised, ISO 8601")
    p.add_argument("--ref", help="reference (ticket, decision)")
    p.add_argument("--unknown-serial", action="store_true", help="the certificate predates this publisher")
    p.set_defaults(func=cmd_revoke)

    crl = sub.add_parser("crl", parents=[common], help="certificate revocation lists").add_subparsers(
        dest="crl_command", required=True
    )
    p = crl.add_parser("refresh", parents=[common, pub], help="sign and publish the CRLs that are due")
    p.add_argument("--force", action="store_true", help="sign new CRLs even if none is due")
    p.set_defaults(func=cmd_crl_refresh)
