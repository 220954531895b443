"""Command line: ``cpl-publisher log ...`` (the transparency log)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from publisher.cli.common import EXIT_OK, UsageError, emit, pinned_verifier, token_from_args, token_options, vkey_option
from publisher.config import KeySource
from publisher.errors import VerificationFailed
from publisher.progress import Progress
from publisher.tlog.checkpoint import CheckpointError, open_witnessed, parse_tlog_proof, verify_tlog_proof
from publisher.tlog.engine import LogReader, TileLog, read_vkey
from publisher.tlog.merkle import leaf_hash
from publisher.tlog.note import NoteError, Signer, Verifier, b64encode, check_key_name
from publisher.tlog.signer import load_log_signer
from verifier.cpl_verify import PolicyError, parse_policy


def load_signer(args: argparse.Namespace) -> Signer:
    """The log signing key from ``--key-file``, the environment variable ``--key-env`` names, or a token
    (``--pkcs11``; the key signs as ``--origin``, or as the name in the log's ``vkey``)."""
    token = token_from_args(args)
    if [bool(args.key_file), bool(args.key_env), token is not None].count(True) != 1:
        raise UsageError("the log signing key is needed: --key-file FILE, --key-env VAR or --pkcs11 URI (one of them)")
    source = KeySource(file=Path(args.key_file) if args.key_file else None, env=args.key_env or None, token=token)
    origin = args.origin
    if token is not None and origin is None:
        if not (Path(args.log) / "vkey").is_file():
            raise UsageError("--origin is needed with --pkcs11 to name a new log's key")
        origin = read_vkey(Path(args.log)).name
    return load_log_signer(source, None, origin)


def load_verifier(args: argparse.Namespace, log_dir: Path | None) -> tuple[Verifier, str]:
    """The pinned verifier key (``--vkey``), or the log's own ``vkey`` file (said so in the output)."""
    if args.vkey:
        return pinned_verifier(args.vkey), "pinned with --vkey"
    if log_dir is None:
        raise UsageError("--vkey is required")
    return read_vkey(log_dir), f"read from {log_dir / 'vkey'} (not pinned; pass --vkey to pin it)"


def cmd_log_keygen(args: argparse.Namespace) -> int:
    token = token_from_args(args)
    if (token is None) == (args.out is None):
        raise UsageError("give --out FILE (a key file) or --pkcs11 URI (a key made inside a token), not both")
    if token is not None:
        from publisher import hsm  # here: file keys need no PKCS#11 library

        try:
            check_key_name(args.origin)
        except NoteError as exc:
            raise UsageError(str(exc)) from exc
        vkey = Signer(args.origin, hsm.generate_ed25519(token, None)).verifier.vkey
        summary = {"pkcs11": str(token.uri), "vkey": vkey}
        emit(args, summary, f"created a non-extractable Ed25519 key in the token: {token.uri}\nvkey {vkey}")
        return EXIT_OK
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; refusing to overwrite a key")
    try:
        signer = Signer.generate(args.origin)
    except NoteError as exc:
        raise UsageError(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.skey + "\n")
    emit(args, {"key_file": str(out), "vkey": signer.verifier.vkey}, f"wrote {out}\nvkey {signer.verifier.vkey}")
    return EXIT_OK


def cmd_log_init(args: argparse.Namespace) -> int:
    signer = load_signer(args)
    with TileLog.create(Path(args.log), signer) as log:
        emit(args, {"size": log.size, "vkey": signer.verifier.vkey}, f"created empty log {args.log}")
    return EXIT_OK


def _read_entries(args: argparse.Namespace) -> list[bytes]:
    entries: list[bytes] = []
    try:
        for name in args.files:
            entries.append(Path(name).read_bytes())
        if args.lines:
            data = sys.stdin.buffer.read() if args.lines == "-" else Path(args.lines).read_bytes()
            entries.extend(line for line in data.split(b"\n") if line)
    except OSError as exc:
        raise UsageError(f"cannot read entries: {exc}") from exc
    return entries


def cmd_log_append(args: argparse.Namespace) -> int:
    signer = load_signer(args)
    entries = _read_entries(args)
    with TileLog.open(Path(args.log), signer) as log:
        result = log.append(entries)
    summary = {
        "first_index": result.first_index,
        "appended": len(entries),
        "size": result.size,
        "root": b64encode(result.root),
    }
    emit(args, summary, f"appended {len(entries)} entries at {result.first_index}; size {result.size}")
    return EXIT_OK


def cmd_log_verify(args: argparse.Namespace) -> int:
    log_dir = Path(args.log)
    verifier, how = load_verifier(args, log_dir)
    reader = LogReader(log_dir, verifier.name, [verifier])
    progress = Progress("checking entries", enabled=not args.json)
    count = reader.verify_all(progress.update)
    progress.done()
    summary: dict[str, object] = {
        "verified": True,
        "size": count,
        "root": b64encode(reader.root_hash),
        "vkey": verifier.vkey,
    }
    text = f"OK: all {count} entries, tiles and bundles match the signed checkpoint\nkey {how}"
    others = sum(1 for s in reader.signed.note.signatures if (s.name, s.key_id) != (verifier.name, verifier.key_id))
    if args.policy is None:
        if others:
            text += f"\n{others} other signature line(s), cosignatures perhaps: not checked (give --policy FILE)"
        emit(args, summary, text)
        return EXIT_OK
    try:
        policy = parse_policy(Path(args.policy).read_bytes())
        _, verdict = open_witnessed(reader.signed.raw, verifier.name, [verifier], policy, int(time.time()))
    except OSError as exc:
        raise UsageError(f"cannot read {args.policy}: {exc.strerror or exc}") from exc
    except PolicyError as exc:
        raise UsageError(f"{args.policy}: {exc}") from exc
    except CheckpointError as exc:
        raise VerificationFailed(f"the checkpoint's cosignatures: {exc}") from exc
    summary["witnessing"] = verdict.to_json()
    who = ", ".join(f"{c.name} ({c.to_json()['time']})" for c in verdict.cosigned) or "no witness"
    text += f"\ncosigned by {who}"
    if not verdict.satisfied:
        raise VerificationFailed(
            f"{text}; the policy's quorum {verdict.quorum} is NOT met (missing: {', '.join(verdict.missing)})"
        )
    emit(args, summary, f"{text}: quorum {verdict.quorum} met")
    return EXIT_OK


def cmd_log_proof(args: argparse.Namespace) -> int:
    log_dir = Path(args.log)
    verifier = read_vkey(log_dir)
    reader = LogReader(log_dir, verifier.name, [verifier])
    if not 0 <= args.index < reader.size:
        raise UsageError(f"entry {args.index} is not in the log (size {reader.size})")
    # The entry rides in the "extra" line (authenticated by the proof), so the file alone proves it offline.
    proof = dataclasses.replace(reader.tlog_proof(args.index), extra=reader.entry(args.index))
    text = proof.encode()
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_log_check_proof(args: argparse.Namespace) -> int:
    verifier, how = load_verifier(args, None)
    try:
        proof = parse_tlog_proof(Path(args.proof).read_bytes())
        entry = Path(args.entry).read_bytes()
    except OSError as exc:
        raise UsageError(str(exc)) from exc
    signed = verify_tlog_proof(proof, leaf_hash(entry), verifier.name, [verifier])
    cp = signed.checkpoint
    summary = {"verified": True, "index": proof.index, "size": cp.size, "root": b64encode(cp.root)}
    emit(args, summary, f"OK: entry {proof.index} is in {cp.origin} at size {cp.size} (key {how})")
    return EXIT_OK


def _key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-file", help="file holding the log signing key (keep it outside the repository)")
    p.add_argument("--key-env", help="environment variable holding the log signing key (for CI secrets)")
    p.add_argument("--origin", help="with --pkcs11: the log's origin, the key's name (default: the log's vkey's)")
    token_options(p, "the log's Ed25519 key")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add the ``log`` commands."""
    log = sub.add_parser("log", parents=[common], help="the transparency log (C2SP tlog-tiles)").add_subparsers(
        dest="log_command", required=True
    )
    p = log.add_parser("keygen", parents=[common], help="generate an Ed25519 log signing key")
    p.add_argument("--origin", required=True, help="log origin, e.g. example.org/cpl-log (the key name)")
    p.add_argument("--out", help="where to write the private key (created mode 0600)")
    token_options(p, "the key to create inside the token (object= names it)")
    p.set_defaults(func=cmd_log_keygen)

    p = log.add_parser("init", parents=[common], help="create an empty log signed at size 0")
    p.add_argument("log", help="log folder")
    _key_args(p)
    p.set_defaults(func=cmd_log_init)

    p = log.add_parser("append", parents=[common], help="append entries as one atomic batch")
    p.add_argument("log", help="log folder")
    p.add_argument("files", nargs="*", help="files, each appended as one entry")
    p.add_argument("--lines", help="file (or - for stdin) whose non-empty lines are each one entry")
    _key_args(p)
    p.set_defaults(func=cmd_log_append)

    p = log.add_parser("verify", parents=[common], help="recompute every tile and bundle against the signed checkpoint")
    p.add_argument("log", help="log folder")
    vkey_option(p, default="the log's own vkey file, not pinned")
    p.add_argument(
        "--policy",
        metavar="FILE",
        help="a C2SP tlog-policy file: verify the witnesses' cosignatures and require its quorum (exit 1 below it)",
    )
    p.set_defaults(func=cmd_log_verify)

    p = log.add_parser("proof", parents=[common], help="write a c2sp.org/tlog-proof@v1 file for one entry")
    p.add_argument("log", help="log folder")
    p.add_argument("index", type=int, help="entry index")
    p.add_argument("-o", "--out", help="output file (default: stdout)")
    p.set_defaults(func=cmd_log_proof)

    p = log.add_parser("check-proof", parents=[common], help="verify a .tlog-proof file offline for an entry")
    p.add_argument("proof", help=".tlog-proof file")
    p.add_argument("--entry", required=True, help="file holding the exact entry bytes")
    vkey_option(p, required=True)
    p.set_defaults(func=cmd_log_check_proof)
