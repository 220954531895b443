#!/usr/bin/env python3
"""cpl-verify: check the GB smart metering PKI transparency site yourself.

One file, Python 3.9 or later, needing only the standard library and
``cryptography`` 42.0 or later (``pip install -U cryptography``; an older one is
refused at start, exit 2). Nothing is trusted because
the site says so: you pin the log's verifier key and the IKI root
certificate(s), on the command line or in a trust file, and every byte the
site serves is checked against them.

    python cpl_verify.py --trust trust.json crl                 # the IKI CRLs: signed, fresh, not rolled back
    python cpl_verify.py --trust trust.json link https://host:port/   # a Device triage link's IKI certificate
    python cpl_verify.py --trust trust.json cert endpoint.pem
    python cpl_verify.py --trust trust.json inclusion --file firmware.bin
    python cpl_verify.py --trust trust.json --state ~/.cpl consistency
    python cpl_verify.py --trust trust.json audit                # the whole log, every entry's evidence
    python cpl_verify.py --trust trust.json check-submission DIR # a manufacturer's pre-check: intake's verdict
    python cpl_verify.py --trust trust.json --state ~/.cpl watch --manufacturer 1001 --certificate SHA256  # alerts

Exit codes: 0 yes, 1 verification failed, 2 usage, network or I/O error, 3 verified but no (see --help);
watch: 4 new entries naming the manufacturer, 5 new entries and at least one flagged (an unexpected signer).
Fetching: --timeout bounds each request as a whole, --deadline the whole command
(exit 2); size caps count decoded bytes (gzip); a site folder is read only for
regular files inside it (no FIFOs, devices or symbolic links out of it).

Standards: RFC 9162 Merkle trees, C2SP tlog-tiles, tlog-checkpoint,
signed-note and tlog-proof; RFC 5280 certificates and CRLs; RFC 5652 CMS.
The publisher (``cpl-publisher``) imports the library half of this file (its
``__all__``), so the site is checked by the same code that its users run.

What is checked, and against what:
  crl          every pinned issuer's CRL (trust file 'crl_issuers' and roots): the signature by that
               pinned issuer (TBSCertList verified as received), thisUpdate not in the future, nextUpdate
               not passed, CRL number not below the highest seen (--state) nor below the newest the log's
               lookup commitment names; --require-logged: a crl/v1 log entry for exactly these bytes
  cert, link   chain to a pinned root (signatures, CA flags, key usage, path length, validity), the IKI
               end-entity profile (digitalSignature, the pinned EKU), the role (link: DCC by default),
               revocation of every certificate below the root on fresh, verified CRLs
  inclusion    the log's last entry (a lookup/v1 commitment) proved against the signed checkpoint; the
               lookup shards checked against its root; every entry found, and every later entry of the
               same device model, proved; the signers' certificates against the pinned issuers' CRLs.
               Without a commitment: --exhaustive (every entry), else the verdict says NOT PROVEN
  consistency  the newest checkpoint proved an extension of the one in --state (fork/rollback: evidence)
  audit        every bundle and tile recomputed up to the signed root; every entry: format, canonical
               JSON, evidence files by SHA-256, CMS signatures (parsed here with the standard library,
               verified by cryptography), signer certificates at approval time, the signed spreadsheet
               row and request, SEC Appendix Z 4.1/4.3(a)-(c) over the whole history, crl/v1 entries
               against the archived CRLs, every lookup/v1 commitment recomputed from the entries before it
  check-submission  a submission folder, before it is sent: every submission rule, as intake runs it, with
               the site's CRLs and log (without a site: the chains to the pinned roots, and "NOT CHECKED"
               for revocation and 4.3(b)); exit 0 intake would accept it, 1 it would refuse it (by rule ID),
               3 nothing is refused but some rule could not be judged (each named NOT CHECKED)
  watch        every entry since the last run (--state, per watch) naming the manufacturer ID(s) or signed
               with the given certificates: each bundle read proved against the checkpoint (itself proved
               consistent with the one in --state and where the watch stopped); flagged: a watched
               manufacturer's entry signed by a certificate not listed, a watched key used for another
               manufacturer's model. Exit 0 nothing new, 4 new entries, 5 new entries and a flag

Layout: the sections of this file, in order, and what each owns.
  The library (``__all__``; imported by the publisher; never uses a name of the tool below it):
    Merkle trees         RFC 9162 leaf and node hashes, roots, inclusion and consistency proofs (pure)
    signed notes         C2SP signed-note: parsing, key IDs, Ed25519 signatures and cosignatures
    checkpoints          C2SP tlog-checkpoint bodies and signatures, c2sp.org/tlog-proof@v1 files
    witnessing           C2SP tlog-cosignature (Cosigner), tlog-policy (Policy, check_witnessing) and both
                         sides of tlog-witness's add-checkpoint (witness_check, response_cosignatures)
    tiles                C2SP tlog-tiles: paths, tile arithmetic, entry bundles, proofs from tiles, and
                         TreeCheck, the one tree check (a tree recomputed from its entries, tile by tile)
    errors               the exception families (VerifyFailed, UsageError, FetchError) and exit codes
    fetching             Source: a site by URL or folder, size caps, time limits, same-site redirects
    a log on a site      fetch_tile, the one partial-tile reader; TileFetcher (tiles and bundles fetched
                         once, which file is wrong when a proof fails); prove_leaf
    trust and state      the trust file (Trust, parse_trust) and the --state folder (State)
    DER and CMS          a minimal DER reader; CMS SignedData parsed here, verified by cryptography
    certificates         chains to a pinned root, the IKI end-entity profile, CRL signatures, revocations
    log entries          entry types, parse_entry, canonical JSON, the cpl-association/v1 format
    the signed lookup    Lookup (shards and the lookup/v1 commitment); parsing commitments and shards
    submission rules     RULES with stable IDs and the functions judging them (intake, audit, pre-check)
    submission folders   read_submission: a folder read once, by descriptor, never through a link
    spreadsheets         read_sheet, the one .xlsx and .csv reader
  ---- LIBRARY ABOVE, TOOL BELOW ----
  The tool (the cpl-verify command line):
    run context          Context: one run's arguments, site, log and state; Output (what it says) and
                         PkiMaterial (the pinned roots, CRL issuers and the site's CA certificates)
    the log              checkpoints against the pinned key and --state, forks, rollbacks, proved entries
    the lookup           LookupView: answers proved against the log's commitment, or every entry read
    crl                  the CRLs: signed up to a pinned root, fresh, never rolled back, logged
    cert / link          one end-entity certificate (a file, or a TLS endpoint's): the verdict
    inclusion            a firmware hash or device model: its approvals, replacements and signers
    consistency/monitor  the newest checkpoint against the remembered one, once or repeatedly
    watch                alerts for manufacturers: new entries naming them or their certificates, proved
    audit                Auditor: the whole log (its parts: Report, Tree, Signatures, Entries)
    check-submission     a submission folder judged as intake would
    command line         argparse, trust and --tofu, build_context, main
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import csv
import dataclasses
import functools
import hashlib
import http.client
import io
import json
import os
import re
import socket
import ssl
import stat
import struct
import sys
import threading
import time
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Protocol, Sequence
from urllib.parse import urljoin, urlsplit

#: The library half's public API, by section (the section map in the docstring): what the publisher may
#: import. Every public name above the line between the library and the tool is here, and nothing below
#: it (tests/test_verifier_surface.py).
# fmt: off
__all__ = [  # noqa: RUF022 - grouped by section, in the order the module defines them
    # the module: the dependency it needs, the one time zone
    "CRYPTOGRAPHY_MIN", "cryptography_problem", "UTC",
    # Merkle trees (RFC 9162): hashes, roots, inclusion and consistency proofs
    "HASH_SIZE", "EMPTY_ROOT", "HashRange", "ProofError", "leaf_hash", "node_hash", "split_point", "root_of",
    "list_hash_range", "inclusion_proof", "consistency_proof", "root_from_inclusion_proof", "verify_inclusion",
    "verify_consistency",
    # signed notes (C2SP signed-note)
    "SIG_ED25519", "SIG_COSIGNATURE_ED25519", "EM_DASH", "MAX_SIGNATURES", "NoteError", "BadSignature",
    "UnverifiedNote", "b64decode_strict", "b64encode", "check_key_name", "key_id", "Verifier", "Signature", "Note",
    "check_note_chars", "parse_note", "open_note",
    # checkpoints and proof files (C2SP tlog-checkpoint, tlog-proof)
    "PROOF_HEADER", "CheckpointError", "ForgedCheckpoint", "ForgedCosignature",
    "UntrustedCheckpoint", "NoLogSignature", "WrongOrigin",
    "Checkpoint", "parse_body", "SignedCheckpoint", "open_checkpoint",
    "parse_unverified", "TlogProof", "parse_tlog_proof", "verify_tlog_proof",
    # witnessing (C2SP tlog-cosignature, tlog-policy, tlog-witness)
    "WITNESS_SIZE_TYPE", "MAX_WITNESS_PROOF", "MAX_ADD_CHECKPOINT", "COSIGNATURE_SKEW", "MAX_POLICY_ITEMS",
    "parse_skey", "format_skey", "Cosigner", "cosignature_time", "signature_lines", "PolicyError", "PolicyWitness",
    "PolicyGroup", "Policy", "parse_policy", "Cosigned", "Witnessing", "check_witnessing", "WitnessRefusal",
    "AddCheckpoint", "parse_add_checkpoint", "witness_check", "parse_size_body", "response_cosignatures",
    # tiles (C2SP tlog-tiles): paths, arithmetic, bundles, proofs from tiles, the one tree check
    "TILE_HEIGHT", "TILE_WIDTH", "MAX_ENTRY_SIZE", "MAX_LEVEL", "U16", "TileError", "Tile", "encode_index",
    "parse_path", "level_width", "tile_for", "right_edge", "split_hashes", "decode_bundle", "TileReader",
    "tile_hash_range", "root_from_right_edge", "TreeCheck",
    # errors and exit codes
    "EXIT_OK", "EXIT_FAILED", "EXIT_ERROR", "EXIT_NOT_APPROVED", "VerifyFailed", "SiteError", "NotServed",
    "UsageError", "FetchError", "NotFound",
    # fetching: a site by URL or folder, size caps, time limits
    "KIB", "MIB", "CAP_CHECKPOINT", "CAP_SMALL", "CAP_LOOKUP", "CAP_BUNDLE", "CAP_EVIDENCE", "CAP_CRL",
    "MAX_REDIRECTS", "RETRIES", "USER_AGENT", "DEFAULT_TIMEOUT", "FetchStats", "Deadline", "Source",
    # a log on a site: the one partial-tile reader, tiles fetched once, proofs
    "TileSource", "fetch_tile", "TileFetcher", "prove_leaf",
    # trust: the pinned keys and certificates, and --state
    "DEFAULT_EKU", "DEFAULT_ROLES", "CertPin", "Trust", "cert_sha256", "load_certificates", "parse_trust",
    "STATE_FILE", "State",
    # DER and CMS (RFC 5652)
    "DERError", "DER", "der_read", "der_oid", "der_int", "der_time", "OID_DATA", "OID_SIGNED_DATA",
    "OID_CONTENT_TYPE", "OID_MESSAGE_DIGEST", "OID_SIGNING_TIME", "OID_COUNTER_SIGNATURE", "MAX_P7S_BYTES",
    "CMSError", "CmsSigner", "cms_certificates", "verify_cms_detached",
    # certificates and CRLs (RFC 5280)
    "CLOCK_SKEW", "not_before", "not_after", "describe_cert", "ChainError", "MIN_RSA_BITS", "build_chain",
    "check_end_entity", "subject_attr", "Identity", "identity_of", "crl_names_of", "verify_crl_signature",
    "parse_iso", "iso_utc", "Revoked", "revoked_entry",
    # log entries: types, parsing, the cpl-association/v1 format
    "ASSOCIATION_TYPE", "CRL_TYPE", "LOOKUP_TYPE", "parse_entry", "canonical_json", "association_shape",
    # the signed lookup (lookup/v1)
    "LOOKUP_KINDS", "SHARD_HEX", "SHARDS", "LOOKUP_LEAVES", "LOOKUP_TILES", "LOOKUP_COMMITMENT", "model_lookup_key",
    "shard_path", "shard_leaf_path", "lookup_tile_path", "lookup_keys", "Lookup", "Commitment", "parse_commitment",
    "parse_shard",
    # submission rules (SEC Appendix Z 4.1 to 4.3, MP168)
    "DEVICE_TYPES", "COMMS_HUB_TYPES", "Rule", "R_FOLDER", "R_NO_LINKS", "R_REQUEST", "R_SPREADSHEET", "R_ROW_VALUES",
    "R_CMS_PROFILE", "R_SIGNATURE", "R_CERTIFICATE", "R_SIGNING_TIME", "R_CREATOR_SIGNATURE", "R_ONE_MANUFACTURER",
    "R_IMAGE_CREATOR", "R_SUPPLIER_ENDORSEMENT", "R_HUB_ENDORSEMENT", "R_SMETS1_DCC", "R_INDEPENDENT",
    "R_NOT_CURRENT", "R_REPLACEMENT_REF", "R_REPLACEMENT_INDEX", "R_PUBLISHER_CRL", "RULES", "MAX_SIGNING_SKEW",
    "MANUFACTURER", "SUPPLIER", "DCC", "RuleFinding", "RuleError", "SheetRow", "MODEL_FIELDS", "row_of_entry",
    "Party", "signer_summary", "signer_lines", "party_of", "Association", "Situation", "signing_time_problems",
    "ASSOCIATION_RULES", "judge_association", "one_manufacturer", "unused_replacements", "choose_parties", "Request",
    "parse_request", "submission_inputs", "submission_signers", "judge_rows", "collapse_findings", "index_ranges",
    # submission folders
    "MAX_REQUEST_BYTES", "MAX_SUBMISSION_FILES", "REPORT_FILES", "SubmissionError", "SubmissionFiles",
    "symlink_finding", "SafeFolder", "read_submission",
    # spreadsheets: the one .xlsx and .csv reader
    "SHEET_COLUMNS", "MAX_UNZIPPED", "SheetError", "SMETS_VERSIONS", "MAX_SHEET_BYTES", "MAX_ROWS", "MAX_LENGTH",
    "MAX_RATIO", "MAX_MEMBERS", "FORMULA_PREFIXES", "shown", "clean_cell", "organisation_key", "header_key",
    "CELL_TEXT", "CELL_NUMBER", "CELL_BOOL", "CELL_ERROR", "CELL_FORMULA", "xlsx_table", "read_sheet",
]
# fmt: on

#: The oldest ``cryptography`` that runs every command: 42.0 added the timezone-aware validity and CRL
#: dates (``not_valid_before_utc``, ``next_update_utc``, ``revocation_date_utc``) and
#: ``NameOID.ORGANIZATION_IDENTIFIER``; 41 fails in crl, cert, link and audit, 38 (Debian 12) in all.
CRYPTOGRAPHY_MIN = (42, 0)


def cryptography_problem() -> str | None:
    """Why the installed ``cryptography`` cannot run this verifier (missing or too old), or None."""
    try:
        import cryptography
    except ImportError:
        return "cpl-verify needs the 'cryptography' package: pip install cryptography"
    found = str(getattr(cryptography, "__version__", ""))
    m = re.match(r"([0-9]+)\.([0-9]+)", found)
    if m is None or (int(m.group(1)), int(m.group(2))) >= CRYPTOGRAPHY_MIN:
        return None  # an unreadable version is given the benefit of the doubt
    need = ".".join(str(n) for n in CRYPTOGRAPHY_MIN)
    return f"cpl-verify needs cryptography >= {need}; found {found}: pip install -U cryptography"


try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    from cryptography.x509.oid import NameOID
except ImportError as exc:  # pragma: no cover - only without the dependency
    if __name__ == "__main__":
        problem = (
            cryptography_problem() or f"cpl-verify cannot import cryptography ({exc}): pip install -U cryptography"
        )
        sys.stderr.write(problem + "\n")
        sys.exit(2)
    raise

__version__ = "0.1.0"  # the cpl-transparency package version (pyproject.toml)
UTC = timezone.utc

# =====================================================================================================
# RFC 9162 (RFC 6962) Merkle trees, SHA-256. Pure functions: no files, no clocks.
# =====================================================================================================

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256

#: ``hash_range(start, end)`` returns MTH(D[start:end]) for ``0 <= start < end``.
HashRange = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof, hash or tree size does not verify."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || entry)."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly less than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _popcount(n: int) -> int:
    return bin(n).count("1")


def root_of(hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of subtree hashes of equal size (leaf hashes or tile hashes).

    Iterative: keeps a stack of perfect subtrees, then folds the right edge,
    which equals the recursive RFC definition for a left-heavy tree.
    """
    if not hashes:
        return EMPTY_ROOT
    n = len(hashes)
    if n & (n - 1) == 0:  # perfect tree (every full tile): hash level by level
        level = list(hashes)
        while len(level) > 1:
            level = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
        return level[0]
    stack: list[tuple[int, bytes]] = []  # (height, hash)
    for h in hashes:
        height = 0
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            h = node_hash(left, h)
            height += 1
        stack.append((height, h))
    _, acc = stack.pop()
    while stack:
        _, left = stack.pop()
        acc = node_hash(left, acc)
    return acc


def list_hash_range(leaf_hashes: Sequence[bytes]) -> HashRange:
    """A ``HashRange`` over an in-memory list of leaf hashes."""

    def hash_range(start: int, end: int) -> bytes:
        return root_of(leaf_hashes[start:end])

    return hash_range


def inclusion_proof(index: int, size: int, hash_range: HashRange) -> list[bytes]:
    """RFC 9162 2.1.3.1 audit path for leaf ``index`` in a tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(hash_range(start + k, end))
            end = start + k
        else:
            path.append(hash_range(start, start + k))
            start = start + k
    path.reverse()  # RFC order: from the leaf's sibling upwards
    return path


def consistency_proof(old_size: int, new_size: int, hash_range: HashRange) -> list[bytes]:
    """RFC 9162 2.1.4.1 consistency proof between two tree sizes."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"cannot prove size {old_size} consistent with size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:end], complete), unrolled; items are produced leaf-side last.
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(hash_range(start, end))
            break
        k = split_point(n)
        if m <= k:
            proof.append(hash_range(start + k, end))
            end = start + k
        else:
            proof.append(hash_range(start, start + k))
            start, m, complete = start + k, m - k, False
    proof.reverse()
    return proof


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Recompute the root implied by an inclusion proof (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")
    inner = (index ^ (size - 1)).bit_length()
    border = _popcount(index >> inner)
    if len(proof) != inner + border:
        raise ProofError(
            f"inclusion proof has {len(proof)} hashes, expected {inner + border} "
            f"for leaf {index} in a tree of size {size}"
        )
    acc = leaf
    for i, p in enumerate(proof[:inner]):
        acc = node_hash(p, acc) if (index >> i) & 1 else node_hash(acc, p)
    for p in proof[inner:]:
        acc = node_hash(p, acc)
    return acc


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``ProofError`` unless ``leaf`` is at ``index`` in the tree with ``root``."""
    _check_hash(root, "root")
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the tree root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ``ProofError`` unless the tree (old_size, old_root) is a prefix of (new_size, new_root).

    RFC 9162 2.1.4.2, in the closed form used by Go's transparency-dev/merkle.
    """
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof hash {i}")
    if new_size < old_size:
        raise ProofError(f"new size {new_size} is smaller than old size {old_size}")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise ProofError("a tree of size 0 must have the empty root (SHA-256 of nothing)")
    if old_size == new_size:
        if proof:
            raise ProofError("sizes are equal but the consistency proof is not empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        # Every tree extends the empty tree; nothing to prove.
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("consistency proof is empty")

    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    shift = (old_size & -old_size).bit_length() - 1  # trailing zeros of old_size
    inner -= shift
    seed, start = proof[0], 1
    if old_size == 1 << shift:  # old tree is a complete subtree: its root is the seed
        seed, start = old_root, 0
    rest = proof[start:]
    mask = (old_size - 1) >> shift
    border = _popcount(mask >> inner)
    if len(rest) != inner + border:
        raise ProofError(f"consistency proof has {len(proof)} hashes, wrong length for sizes {old_size} -> {new_size}")
    # Rebuild the old root from the left-side hashes only.
    acc = seed
    for i, p in enumerate(rest[:inner]):
        if (mask >> i) & 1:
            acc = node_hash(p, acc)
    for p in rest[inner:]:
        acc = node_hash(p, acc)
    if acc != old_root:
        raise ProofError(f"consistency proof does not lead to the old root (size {old_size})")
    # Rebuild the new root from all hashes.
    acc = seed
    for i, p in enumerate(rest[:inner]):
        acc = node_hash(p, acc) if (mask >> i) & 1 else node_hash(acc, p)
    for p in rest[inner:]:
        acc = node_hash(p, acc)
    if acc != new_root:
        raise ProofError(f"consistency proof does not lead to the new root (size {new_size})")


# =====================================================================================================
# C2SP signed notes (signed-note v1.0.0): Ed25519 (0x01) and Ed25519 cosignatures (0x04). Verification.
# =====================================================================================================

SIG_ED25519 = 0x01
SIG_COSIGNATURE_ED25519 = 0x04
EM_DASH = "\u2014"
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16


class NoteError(ValueError):
    """A note, key or signature is malformed or does not verify."""


class BadSignature(NoteError):
    """A signature made with a trusted key's ID does not verify: the note was forged or altered."""

    def __init__(self, message: str, key: Verifier | None = None) -> None:
        super().__init__(message)
        self.key = key


class UnverifiedNote(NoteError):
    """No trusted key signed the note."""


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), padding required, nothing else allowed."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def check_key_name(name: str) -> None:
    """Key names are non-empty, contain no Unicode whitespace and no ``+``."""
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"invalid key name {name!r}")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise NoteError(f"invalid key name {name!r}")


def key_id(name: str, sig_type: int, public_key: bytes) -> int:
    """Key ID: first 4 bytes of SHA-256(name || 0x0A || type || public key), big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """A trusted public key: Ed25519 note signatures (0x01) or Ed25519 cosignatures (0x04)."""

    name: str
    key_id: int
    sig_type: int
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<8 hex key id>+<base64(type || key)>`` (split at the first two ``+``)."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key must be <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        check_key_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise NoteError(f"verifier key ID {hex_id!r} is not 8 lowercase hex digits")
        raw = b64decode_strict(b64, "verifier key")
        if not raw:
            raise NoteError("verifier key is empty")
        sig_type, public_key = raw[0], raw[1:]
        if sig_type not in (SIG_ED25519, SIG_COSIGNATURE_ED25519):
            raise NoteError(f"unsupported verifier key type 0x{sig_type:02x}")
        if len(public_key) != 32:
            raise NoteError(f"Ed25519 public key is {len(public_key)} bytes, expected 32")
        expected = key_id(name, sig_type, public_key)
        if int(hex_id, 16) != expected:
            raise NoteError(f"verifier key ID {hex_id} does not match the key (expected {expected:08x})")
        return cls(name, expected, sig_type, public_key)

    @property
    def vkey(self) -> str:
        """The verifier key string."""
        return f"{self.name}+{self.key_id:08x}+{b64encode(bytes([self.sig_type]) + self.public_key)}"

    def verify(self, text: str, signature: bytes) -> None:
        """Raise ``NoteError`` unless ``signature`` (without key ID) signs ``text``."""
        key = ed25519.Ed25519PublicKey.from_public_bytes(self.public_key)
        message = text.encode()
        if self.sig_type == SIG_COSIGNATURE_ED25519:
            # A known key's line that is malformed fails to verify, as a wrong signature does (signed-note).
            if len(signature) != 72:
                raise BadSignature(f"cosignature by {self.name} is {len(signature)} bytes, expected 72", self)
            (timestamp,) = struct.unpack(">Q", signature[:8])
            if timestamp >= 1 << 63:
                raise BadSignature(f"cosignature by {self.name} has an invalid timestamp", self)
            message = f"cosignature/v1\ntime {timestamp}\n".encode() + message
            signature = signature[8:]
        elif len(signature) != 64:
            raise BadSignature(f"signature by {self.name} is {len(signature)} bytes, expected 64", self)
        try:
            key.verify(signature, message)
        except InvalidSignature as exc:
            raise BadSignature(f"signature by {self.name} (key {self.key_id:08x}) does not verify", self) from exc


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    signature: bytes  # without the 4-byte key ID


@dataclass(frozen=True)
class Note:
    """A parsed signed note; ``verified_by`` lists the trusted keys that verified it."""

    text: str
    signatures: tuple[Signature, ...]
    verified_by: tuple[Verifier, ...] = field(default=())


def check_note_chars(note: str) -> None:
    """A note is UTF-8 text without control characters other than newline."""
    for i, c in enumerate(note):
        if c != "\n" and unicodedata.category(c) == "Cc":
            raise NoteError(f"note contains control character U+{ord(c):04X} at offset {i}")


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note without verifying it (strict about the format)."""
    if isinstance(data, bytes):
        try:
            note = data.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise NoteError("note is not valid UTF-8") from exc
    else:
        note = data
    check_note_chars(note)
    if not note.endswith("\n"):
        raise NoteError("note does not end with a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise NoteError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    sigs = []
    for n, line in enumerate(lines, 1):
        if not line.startswith(EM_DASH + " "):
            raise NoteError(f"signature line {n} does not start with an em dash and a space")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise NoteError(f"signature line {n} must be '— <name> <base64>'")
        name, b64 = fields
        check_key_name(name)
        raw = b64decode_strict(b64, f"signature line {n}")
        if len(raw) < 5:
            raise NoteError(f"signature line {n} is too short")
        sigs.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, tuple(sigs))


def open_note(data: bytes | str, verifiers: Sequence[Verifier]) -> Note:
    """Parse and verify a note: unknown signers are ignored, a known signer that fails rejects.

    At least one trusted key must verify the note.
    """
    note = parse_note(data)
    by_id = {(v.name, v.key_id): v for v in verifiers}
    verified: list[Verifier] = []
    for sig in note.signatures:
        v = by_id.get((sig.name, sig.key_id))
        if v is None:
            continue
        v.verify(note.text, sig.signature)
        if v not in verified:
            verified.append(v)
    if not verified:
        names = ", ".join(v.name for v in verifiers) or "none"
        raise UnverifiedNote(f"note is not signed by any trusted key (trusted: {names})")
    return Note(note.text, note.signatures, tuple(verified))


# =====================================================================================================
# C2SP checkpoints (tlog-checkpoint v1.0.0) and c2sp.org/tlog-proof@v1 files. Parsing and verification.
# =====================================================================================================

PROOF_HEADER = "c2sp.org/tlog-proof@v1"


class CheckpointError(ValueError):
    """A checkpoint or proof file is malformed or does not verify."""


class ForgedCheckpoint(CheckpointError):
    """A signature made with the pinned log key's ID does not verify."""


class ForgedCosignature(ForgedCheckpoint):
    """A cosignature made with a trusted cosigner key's ID does not verify: forged, altered, or copied from
    another checkpoint."""


class UntrustedCheckpoint(CheckpointError):
    """The log's own key did not sign the checkpoint (another key did, or none)."""


class NoLogSignature(UntrustedCheckpoint):
    """Trusted keys signed the checkpoint, but not the log's own key."""


class WrongOrigin(CheckpointError):
    """The checkpoint is another log's."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint body: origin, tree size and root hash (extension lines kept verbatim)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The note text this checkpoint signs (ends with a newline)."""
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")


def parse_body(text: str) -> Checkpoint:
    """Parse a checkpoint body (the note text), strictly."""
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs an origin, a tree size and a root hash")
    origin, size_text, root_text, *ext = lines
    if not origin or any(c.isspace() for c in origin):
        raise CheckpointError(f"invalid checkpoint origin {origin!r}")
    if not _SIZE_RE.fullmatch(size_text) or int(size_text) >= 1 << 63:
        raise CheckpointError(f"invalid tree size {size_text!r}")
    try:
        root = b64decode_strict(root_text, "checkpoint root hash")
    except NoteError as exc:
        raise CheckpointError(str(exc)) from exc
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, expected {HASH_SIZE}")
    if any(not line for line in ext):
        raise CheckpointError("checkpoint has an empty extension line")
    return Checkpoint(origin, int(size_text), root, tuple(ext))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A verified signed checkpoint and the note text it came from."""

    checkpoint: Checkpoint
    note: Note
    raw: str


def open_checkpoint(
    data: bytes | str, origin: str, verifiers: Sequence[Verifier], require_log_key: bool = True
) -> SignedCheckpoint:
    """Verify a signed checkpoint for ``origin`` with the trusted ``verifiers``.

    The log's own key is the trusted key named after the origin (C2SP: the
    log's key name SHOULD be the origin), and it must have signed; other
    trusted keys count only as cosigners, never in its place. Only
    ``require_log_key=False`` accepts cosignatures alone (a tlog-mirror's
    view of a log, as in the Sunlight mirror vectors); the commands never do.
    """
    try:
        raw = data.decode("utf-8") if isinstance(data, bytes) else data
        note = open_note(raw, verifiers)
    except BadSignature as exc:
        if exc.key is not None and exc.key.sig_type == SIG_COSIGNATURE_ED25519:
            raise ForgedCosignature(f"checkpoint: {exc}") from exc
        raise ForgedCheckpoint(f"checkpoint: {exc}") from exc
    except UnverifiedNote as exc:
        raise UntrustedCheckpoint(f"checkpoint: {exc}") from exc
    except (NoteError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint: {exc}") from exc
    cp = parse_body(note.text)
    if cp.origin != origin:
        raise WrongOrigin(f"checkpoint is for origin {cp.origin!r}, expected {origin!r}")
    if require_log_key and not any(v.name == origin and v.sig_type == SIG_ED25519 for v in note.verified_by):
        if not any(v.name == origin and v.sig_type == SIG_ED25519 for v in verifiers):
            raise CheckpointError(
                f"no trusted key is named after the origin {origin!r}: pin the log's own key (other keys count "
                "only as cosigners)"
            )
        raise NoLogSignature(f"checkpoint carries no valid signature of the log key {origin!r}")
    return SignedCheckpoint(cp, note, raw)


def parse_unverified(data: bytes | str) -> Checkpoint:
    """Read the body of a signed checkpoint without checking signatures (for diagnostics)."""
    try:
        return parse_body(parse_note(data).text)
    except NoteError as exc:
        raise CheckpointError(f"checkpoint: {exc}") from exc


@dataclass(frozen=True)
class TlogProof:
    """A c2sp.org/tlog-proof@v1 file: leaf index, inclusion proof and signed checkpoint."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None

    def encode(self) -> str:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64encode(h) for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint


def parse_tlog_proof(data: bytes | str) -> TlogProof:
    """Parse a ``.tlog-proof`` file (without verifying it)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise CheckpointError("proof file is not valid UTF-8") from exc
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise CheckpointError("proof file has no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise CheckpointError(f"proof file does not start with {PROOF_HEADER!r}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        try:
            extra = b64decode_strict(lines[pos][6:], "proof extra data")
        except NoteError as exc:
            raise CheckpointError(str(exc)) from exc
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise CheckpointError("proof file has no 'index' line")
    index_text = lines[pos][6:]
    if not _SIZE_RE.fullmatch(index_text):
        raise CheckpointError(f"invalid index {index_text!r} in proof file")
    hashes_ = []
    for n, line in enumerate(lines[pos + 1 :], 1):
        try:
            h = b64decode_strict(line, f"proof hash {n}")
        except NoteError as exc:
            raise CheckpointError(str(exc)) from exc
        if len(h) != HASH_SIZE:
            raise CheckpointError(f"proof hash {n} is {len(h)} bytes, expected {HASH_SIZE}")
        hashes_.append(h)
    return TlogProof(int(index_text), tuple(hashes_), checkpoint, extra)


def verify_tlog_proof(proof: TlogProof, leaf: bytes, origin: str, verifiers: Sequence[Verifier]) -> SignedCheckpoint:
    """Verify a tlog-proof for an entry whose RFC 9162 leaf hash is ``leaf``.

    Checks the checkpoint signature (log key named ``origin``) and the
    inclusion proof against its root; returns the verified checkpoint.
    """
    signed = open_checkpoint(proof.checkpoint, origin, verifiers)
    try:
        verify_inclusion(proof.index, signed.checkpoint.size, leaf, proof.proof, signed.checkpoint.root)
    except ProofError as exc:
        raise CheckpointError(str(exc)) from exc
    return signed


# =====================================================================================================
# Witnessing: cosigning (C2SP tlog-cosignature v1.0.1, Ed25519 type 0x04), the policy a client enforces
# (C2SP tlog-policy), and both sides of the add-checkpoint exchange (C2SP tlog-witness v1.0.0). Pure.
# =====================================================================================================

WITNESS_SIZE_TYPE = "text/x.tlog.size"  # the Content-Type of a 409's body
MAX_WITNESS_PROOF = 63  # consistency proof lines a client may send
MAX_ADD_CHECKPOINT = 64 * 1024  # the largest add-checkpoint body a witness reads
COSIGNATURE_SKEW = 600  # seconds a cosignature's time may be ahead of the verifier's clock
MAX_POLICY_ITEMS = 256  # logs, witnesses and groups each (the spec asks for at least 32)


def parse_skey(skey: str, sig_type: int) -> tuple[str, ed25519.Ed25519PrivateKey]:
    """Go's note signer key ``PRIVATE+KEY+<name>+<hex key id>+<base64(type || 32-byte seed)>``: the name and
    the key, the type and key ID checked."""
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise NoteError("signer key must be PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
    name, hex_id, b64 = parts[2], parts[3], parts[4]
    check_key_name(name)
    raw = b64decode_strict(b64, "signer key")
    if len(raw) != 33 or raw[0] != sig_type:
        raise NoteError(f"signer key is not an Ed25519 (type 0x{sig_type:02x}) seed")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[1:])
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id) or int(hex_id, 16) != key_id(name, sig_type, public):
        raise NoteError("signer key ID does not match the key")
    return name, key


def format_skey(name: str, sig_type: int, key: ed25519.Ed25519PrivateKey) -> str:
    """The ``PRIVATE+KEY+...`` string of ``key`` (keep it secret)."""
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"PRIVATE+KEY+{name}+{key_id(name, sig_type, public):08x}+{b64encode(bytes([sig_type]) + seed)}"


@dataclass(frozen=True)
class Cosigner:
    """A witness's Ed25519 cosigning key (type 0x04): ``cosignature/v1`` lines over checkpoints."""

    name: str
    private_key: ed25519.Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        check_key_name(name)
        return cls(name, ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Cosigner:
        """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(0x04 || seed)>``."""
        return cls(*parse_skey(skey, SIG_COSIGNATURE_ED25519))

    @property
    def skey(self) -> str:
        return format_skey(self.name, SIG_COSIGNATURE_ED25519, self.private_key)

    @property
    def verifier(self) -> Verifier:
        public = self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return Verifier(self.name, key_id(self.name, SIG_COSIGNATURE_ED25519, public), SIG_COSIGNATURE_ED25519, public)

    def cosign(self, text: str, timestamp: int) -> str:
        """The ``— name base64`` line (with newline) cosigning checkpoint body ``text`` as of ``timestamp``."""
        if not 0 < timestamp < 1 << 63:
            raise NoteError("a cosignature's timestamp must be between 1 and 2**63 - 1")
        signature = self.private_key.sign(f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode())
        payload = self.verifier.key_id.to_bytes(4, "big") + struct.pack(">Q", timestamp) + signature
        return f"{EM_DASH} {self.name} {b64encode(payload)}\n"


def cosignature_time(signature: Signature) -> int:
    """The timestamp of a type 0x04 cosignature (its first 8 bytes, big-endian seconds)."""
    if len(signature.signature) != 72:
        raise NoteError(f"cosignature by {signature.name} is {len(signature.signature)} bytes, expected 72")
    return int(struct.unpack(">Q", signature.signature[:8])[0])


def signature_lines(note: Note) -> list[str]:
    """A note's signature lines, as written (with newlines)."""
    return [f"{EM_DASH} {s.name} {b64encode(s.key_id.to_bytes(4, 'big') + s.signature)}\n" for s in note.signatures]


class PolicyError(ValueError):
    """A tlog-policy file is malformed."""


@dataclass(frozen=True)
class PolicyWitness:
    """A ``witness <name> <vkey> [<url>]`` line."""

    name: str
    verifier: Verifier
    url: str | None = None


@dataclass(frozen=True)
class PolicyGroup:
    """A ``group <name> <k|any|all> <member>...`` line: witnessed when ``threshold`` members are."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """A C2SP tlog-policy: the logs, the witnesses, their groups and the quorum (a name, or ``none``)."""

    logs: tuple[tuple[Verifier, str | None], ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[PolicyGroup, ...]
    quorum: str

    def witness(self, name: str) -> PolicyWitness | None:
        return next((w for w in self.witnesses if w.name == name), None)

    def satisfied(self, cosigned: Iterable[str]) -> bool:
        """Whether the witnesses named in ``cosigned`` meet the quorum."""
        return self._witnessed(self.quorum, frozenset(cosigned))

    def _witnessed(self, name: str, cosigned: frozenset[str]) -> bool:
        if name == "none":
            return True
        group = next((g for g in self.groups if g.name == name), None)
        if group is None:
            return name in cosigned
        return sum(self._witnessed(m, cosigned) for m in group.members) >= group.threshold

    def counted(self, name: str | None = None) -> list[str]:
        """The witnesses whose cosignatures the quorum (or group ``name``) counts, in policy order."""
        name = self.quorum if name is None else name
        return [] if name == "none" else list(dict.fromkeys(_policy_witnesses(name, self.groups)))

    def describe(self, name: str | None = None) -> str:
        """The quorum in words: ``2 of (secas, ofgem)``, ``none``."""
        name = self.quorum if name is None else name
        group = next((g for g in self.groups if g.name == name), None)
        if group is None:
            return name
        inner = ", ".join(self.describe(m) for m in group.members)
        k = "all" if group.threshold == len(group.members) and len(group.members) > 1 else str(group.threshold)
        return f"{k} of ({inner})"

    def text(self) -> str:
        """The policy as a tlog-policy file."""
        lines = [f"log {v.vkey}" + (f" {url}" if url else "") for v, url in self.logs]
        lines += [f"witness {w.name} {w.verifier.vkey}" + (f" {w.url}" if w.url else "") for w in self.witnesses]
        lines += [
            f"group {g.name} {'all' if g.threshold == len(g.members) else g.threshold} {' '.join(g.members)}"
            for g in self.groups
        ]
        return "\n".join([*lines, f"quorum {self.quorum}"]) + "\n"


_POLICY_WS = re.compile(r"[ \t]+")


def _policy_witnesses(name: str, groups: Sequence[PolicyGroup]) -> list[str]:
    """The witnesses under ``name`` (itself when it is a witness)."""
    group = next((g for g in groups if g.name == name), None)
    return [w for m in group.members for w in _policy_witnesses(m, groups)] if group else [name]


def parse_policy(data: str | bytes) -> Policy:
    """Parse a C2SP tlog-policy file strictly: names defined before use, one quorum line, no duplicate keys."""
    if isinstance(data, bytes):  # octets with the high bit set are opaque (names, URLs, comments)
        data = data.decode("utf-8", "surrogateescape")
    logs: list[tuple[Verifier, str | None]] = []
    witnesses: list[PolicyWitness] = []
    groups: list[PolicyGroup] = []
    quorum: str | None = None
    keys: set[bytes] = set()
    ids: set[tuple[str, int]] = set()

    def vkey(text: str, sig_type: int, n: int) -> Verifier:
        try:
            v = Verifier.from_vkey(text)
        except NoteError as exc:
            raise PolicyError(f"line {n}: {exc}") from exc
        if v.sig_type != sig_type:
            what = "a log key must be an Ed25519 note key (type 0x01)" if sig_type == SIG_ED25519 else (
                "a witness key must be an Ed25519 cosignature key (type 0x04)")  # fmt: skip
            raise PolicyError(f"line {n}: {what}")
        if v.public_key in keys or (v.name, v.key_id) in ids:
            raise PolicyError(f"line {n}: the key {v.vkey} wraps a public key, or has a name and ID, listed earlier")
        keys.add(v.public_key)
        ids.add((v.name, v.key_id))
        return v

    for n, line in enumerate(data.split("\n"), 1):
        bad = next((c for c in line if c != "\t" and (ord(c) < 0x20 or ord(c) == 0x7F)), None)
        if bad is not None:
            raise PolicyError(f"line {n}: control character U+{ord(bad):04X}")
        words = _POLICY_WS.split(line.strip(" \t"))
        if words == [""] or words[0].startswith("#"):
            continue
        names = {w.name for w in witnesses} | {g.name for g in groups}
        keyword, rest = words[0], words[1:]
        if keyword == "log" and len(rest) in (1, 2):
            logs.append((vkey(rest[0], SIG_ED25519, n), rest[1] if len(rest) == 2 else None))
        elif keyword == "witness" and len(rest) in (2, 3):
            if rest[0] == "none" or rest[0] in names:
                raise PolicyError(f"line {n}: the name {rest[0]!r} is reserved or already defined")
            v = vkey(rest[1], SIG_COSIGNATURE_ED25519, n)
            witnesses.append(PolicyWitness(rest[0], v, rest[2] if len(rest) == 3 else None))
        elif keyword == "group" and len(rest) >= 3:
            name, k, members = rest[0], rest[1], tuple(rest[2:])
            if name == "none" or name in names:
                raise PolicyError(f"line {n}: the name {name!r} is reserved or already defined")
            unknown = [m for m in members if m not in names]
            if unknown:
                raise PolicyError(f"line {n}: group {name} names {', '.join(unknown)}, not defined on an earlier line")
            if len(set(members)) != len(members):
                raise PolicyError(f"line {n}: group {name} lists a member twice")
            seen: set[str] = set()
            for m in members:  # each witness contributes to a group in one way only (tlog-policy's intent)
                under = set(_policy_witnesses(m, groups))
                if under & seen:
                    raise PolicyError(f"line {n}: group {name} would count {', '.join(sorted(under & seen))} twice")
                seen |= under
            if k in ("any", "all"):
                threshold = 1 if k == "any" else len(members)
            elif re.fullmatch(r"[1-9][0-9]{0,3}", k) and int(k) <= len(members):
                threshold = int(k)
            else:
                raise PolicyError(f"line {n}: group {name}'s threshold {k!r} must be any, all or 1 to {len(members)}")
            groups.append(PolicyGroup(name, threshold, members))
        elif keyword == "quorum" and len(rest) == 1:
            if quorum is not None:
                raise PolicyError(f"line {n}: a second quorum line")
            if rest[0] != "none" and rest[0] not in names:
                raise PolicyError(f"line {n}: the quorum {rest[0]!r} is not defined on an earlier line")
            quorum = rest[0]
        else:
            raise PolicyError(
                f"line {n}: expected 'log <vkey> [url]', 'witness <name> <vkey> [url]', "
                "'group <name> <k|any|all> <member>...' or 'quorum <name|none>'"
            )
        if max(len(logs), len(witnesses), len(groups)) > MAX_POLICY_ITEMS:
            raise PolicyError(f"more than {MAX_POLICY_ITEMS} logs, witnesses or groups")
    if quorum is None:
        raise PolicyError("the policy has no quorum line ('quorum none' asks for no cosignatures)")
    return Policy(tuple(logs), tuple(witnesses), tuple(groups), quorum)


@dataclass(frozen=True)
class Cosigned:
    """One policy witness's valid cosignature on a checkpoint: who, with which key, and when."""

    name: str
    vkey: str
    timestamp: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "vkey": self.vkey, "time": iso_utc(datetime.fromtimestamp(self.timestamp, UTC))}


@dataclass(frozen=True)
class Witnessing:
    """What a policy's witnesses said about one checkpoint: the valid cosignatures counted, those dated in
    the future (not counted), whether the quorum is met, and the counted witnesses that did not cosign."""

    cosigned: tuple[Cosigned, ...]
    future: tuple[Cosigned, ...]
    satisfied: bool
    missing: tuple[str, ...]
    quorum: str

    def to_json(self) -> dict[str, Any]:
        return {
            "quorum": self.quorum,
            "satisfied": self.satisfied,
            "cosigned": [c.to_json() for c in self.cosigned],
            "future": [c.to_json() for c in self.future],
            "missing": list(self.missing),
        }


def check_witnessing(note: Note, policy: Policy, now: int, skew: int = COSIGNATURE_SKEW) -> Witnessing:
    """Judge a note already opened (``open_note``) with the policy's witness keys among its verifiers, so
    every cosignature by a known witness key verified: the quorum counts those dated at most ``skew``
    seconds after ``now``; a witness whose key signed twice counts once, with its newest time."""
    found: dict[str, Cosigned] = {}
    future: list[Cosigned] = []
    verified = {(v.name, v.key_id) for v in note.verified_by}
    for sig in note.signatures:
        w = next((w for w in policy.witnesses if (w.verifier.name, w.verifier.key_id) == (sig.name, sig.key_id)), None)
        if w is None or (sig.name, sig.key_id) not in verified:
            continue
        c = Cosigned(w.name, w.verifier.vkey, cosignature_time(sig))
        if c.timestamp > now + skew:
            future.append(c)
        elif w.name not in found or found[w.name].timestamp < c.timestamp:
            found[w.name] = c
    cosigned = tuple(found[w.name] for w in policy.witnesses if w.name in found)
    missing = tuple(name for name in policy.counted() if name not in found)
    return Witnessing(cosigned, tuple(future), policy.satisfied(found), missing, policy.describe())


class WitnessRefusal(Exception):
    """A witness's refusal of an add-checkpoint request: the HTTP status tlog-witness names, and for 409 the
    size the witness holds."""

    def __init__(self, status: int, message: str, size: int | None = None, fork: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.size = size
        self.fork = fork  # two log-signed trees of one size: evidence by itself (a proof sent is not)


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request body: the old size, a consistency proof from it, the signed checkpoint."""

    old: int
    proof: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim

    def encode(self) -> bytes:
        return (
            "".join([f"old {self.old}\n", *(b64encode(h) + "\n" for h in self.proof), "\n", self.checkpoint])
        ).encode()


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse a request body; ``WitnessRefusal`` (400) if malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WitnessRefusal(400, "the request is not UTF-8") from exc
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise WitnessRefusal(400, "the request has no empty line before the checkpoint")
    lines = head.split("\n")
    m = re.fullmatch(r"old (0|[1-9][0-9]{0,18})", lines[0])
    if m is None:
        raise WitnessRefusal(400, "the request must start with 'old <size>'")
    if len(lines) - 1 > MAX_WITNESS_PROOF:
        raise WitnessRefusal(400, f"the consistency proof has more than {MAX_WITNESS_PROOF} lines")
    proof = []
    for n, line in enumerate(lines[1:], 1):
        try:
            h = b64decode_strict(line, f"proof line {n}")
        except NoteError as exc:
            raise WitnessRefusal(400, str(exc)) from exc
        if len(h) != HASH_SIZE:
            raise WitnessRefusal(400, f"proof line {n} is {len(h)} bytes, expected {HASH_SIZE}")
        proof.append(h)
    return AddCheckpoint(int(m.group(1)), tuple(proof), checkpoint)


def witness_check(
    request: AddCheckpoint, logs: dict[str, list[Verifier]], latest: Callable[[str], Checkpoint | None]
) -> SignedCheckpoint:
    """A witness's checks of an add-checkpoint request, in the order tlog-witness gives them: the origin known
    (404), a trusted log signature and no bad one (403), old size not above the checkpoint's (400), old size
    equal to the size last cosigned, ``latest(origin)`` (409), the empty root at size 0, an empty proof from
    size 0, equal roots at equal sizes, a valid consistency proof (422). Returns the verified checkpoint to
    cosign; raises ``WitnessRefusal``."""
    try:
        origin = parse_unverified(request.checkpoint).origin
    except CheckpointError as exc:
        raise WitnessRefusal(400, str(exc)) from exc
    keys = logs.get(origin)
    if not keys:
        raise WitnessRefusal(404, f"unknown log origin {origin!r}")
    try:
        signed = open_checkpoint(request.checkpoint, origin, keys)
    except (ForgedCheckpoint, UntrustedCheckpoint) as exc:
        raise WitnessRefusal(403, str(exc)) from exc
    except CheckpointError as exc:
        raise WitnessRefusal(400, str(exc)) from exc
    cp = signed.checkpoint
    if request.old > cp.size:
        raise WitnessRefusal(400, f"old size {request.old} is above the checkpoint's size {cp.size}")
    held = latest(origin)
    held_size = held.size if held is not None else 0
    if request.old != held_size:
        raise WitnessRefusal(409, f"the latest size cosigned for {origin} is {held_size}", held_size)
    if cp.size == 0 and cp.root != EMPTY_ROOT:
        raise WitnessRefusal(422, "a checkpoint of size 0 must carry the empty tree's root")
    if request.old == 0:
        if request.proof:
            raise WitnessRefusal(422, "a consistency proof from size 0 must be empty")
    elif held is not None and request.old == cp.size:
        if cp.root != held.root:
            raise WitnessRefusal(422, f"another tree of size {cp.size} was cosigned (a fork)", fork=True)
        if request.proof:
            raise WitnessRefusal(422, "a consistency proof between equal sizes must be empty")
    elif held is not None:
        try:
            verify_consistency(request.old, cp.size, held.root, cp.root, request.proof)
        except ProofError as exc:
            raise WitnessRefusal(
                422, f"the checkpoint does not extend the tree of size {request.old} cosigned before: {exc}"
            ) from exc
    return signed


def parse_size_body(body: bytes) -> int:
    """A 409 response's ``text/x.tlog.size`` body: the witness's size, then a newline."""
    m = re.fullmatch(rb"(0|[1-9][0-9]{0,18})\n", body)
    if m is None:
        raise WitnessRefusal(409, "the witness answered 409 without a valid size")
    return int(m.group(1))


def response_cosignatures(text: str, response: bytes, witness: Verifier) -> list[tuple[str, int]]:
    """The lines of a 200 response by ``witness``'s key that verify over the checkpoint body ``text``, with
    their timestamps (other keys' lines are ignored); ``NoteError`` if the response is malformed or the
    witness's line does not verify or has no timestamp."""
    try:
        lines = response.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError("the response is not UTF-8") from exc
    if not lines or not lines.endswith("\n") or any(not x.startswith(EM_DASH + " ") for x in lines[:-1].split("\n")):
        raise NoteError("the response is not a sequence of signature lines")
    note = parse_note(text + "\n" + lines)
    out = []
    for sig, line in zip(note.signatures, signature_lines(note)):
        if (sig.name, sig.key_id) == (witness.name, witness.key_id):
            witness.verify(text, sig.signature)
            when = cosignature_time(sig)
            if when == 0:
                raise NoteError(f"the cosignature by {witness.name} has no timestamp")
            out.append((line, when))
    return out


# =====================================================================================================
# C2SP tlog-tiles: tile paths, tile arithmetic, entry bundles, proofs computed from tiles.
# Tile height is fixed at 8 (256 hashes per full tile); a hash at level l roots 256**l leaves.
# =====================================================================================================

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256
MAX_ENTRY_SIZE = 0xFFFF
MAX_LEVEL = 63
#: An entry bundle's length prefix: each entry is a big-endian uint16 length, then its bytes.
U16 = struct.Struct(">H")


class TileError(ValueError):
    """A tile path, tile or entry bundle is malformed."""


@dataclass(frozen=True, order=True)
class Tile:
    """A hash tile (``level >= 0``) or, with ``level == -1``, an entry bundle."""

    level: int
    index: int
    width: int  # 1..256; 256 means full

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """Path relative to the log prefix, e.g. ``tile/0/x001/234.p/7``."""
        level = "entries" if self.level < 0 else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    def as_full(self) -> Tile:
        return Tile(self.level, self.index, TILE_WIDTH)


def encode_index(n: int) -> str:
    """Tile index as 3-digit groups, all but the last prefixed ``x``: 1234067 -> x001/x234/067."""
    if n < 0:
        raise TileError(f"negative tile index {n}")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


_PATH_RE = re.compile(r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def parse_path(path: str) -> Tile:
    """Inverse of ``Tile.path``; strict (no leading zeros, widths 1..255)."""
    m = _PATH_RE.fullmatch(path)
    if not m:
        raise TileError(f"not a tile path: {path!r}")
    level = -1 if m.group(1) == "entries" else int(m.group(1))
    if level > MAX_LEVEL:
        raise TileError(f"tile level {level} is above {MAX_LEVEL}")
    groups = m.group(2).split("/")
    if len(groups) > 1 and groups[0] == "x000":
        raise TileError(f"tile index has a leading zero group: {path!r}")
    index = int("".join(g.lstrip("x") for g in groups))
    width = TILE_WIDTH
    if m.group(3) is not None:
        width = int(m.group(3))
        if width >= TILE_WIDTH:
            raise TileError(f"partial tile width {width} must be below {TILE_WIDTH}")
    return Tile(level, index, width)


def level_width(size: int, level: int) -> int:
    """Number of hashes the tree of ``size`` leaves has at tile level ``level``."""
    return size >> (TILE_HEIGHT * level)


def tile_for(level: int, index: int, size: int) -> Tile:
    """The tile ``(level, index)`` as it stands in a tree of ``size`` leaves."""
    lvl = max(level, 0)
    count = level_width(size, lvl) - index * TILE_WIDTH
    if count <= 0:
        raise TileError(f"tile {level}/{index} is empty in a tree of size {size}")
    return Tile(level, index, min(count, TILE_WIDTH))


def right_edge(size: int) -> list[Tile]:
    """The partial tiles a tree of ``size`` leaves implies, one per level that has one."""
    tiles = []
    level = 0
    while level_width(size, level) > 0:
        count = level_width(size, level)
        if count % TILE_WIDTH:
            tiles.append(Tile(level, count // TILE_WIDTH, count % TILE_WIDTH))
        level += 1
    return tiles


def split_hashes(data: bytes, tile: Tile) -> list[bytes]:
    """The hashes of a hash tile's bytes, checking the length matches its width."""
    if len(data) != tile.width * HASH_SIZE:
        raise TileError(f"{tile.path}: {len(data)} bytes, expected {tile.width * HASH_SIZE}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def decode_bundle(data: bytes, expected: int | None = None, name: str = "entry bundle") -> list[bytes]:
    """Split an entry bundle into its entries; strict about truncation and count."""
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise TileError(f"{name}: truncated length prefix at byte {pos}")
        (n,) = U16.unpack_from(data, pos)
        pos += 2
        if pos + n > len(data):
            raise TileError(f"{name}: entry {len(entries)} is truncated")
        entries.append(data[pos : pos + n])
        pos += n
    if expected is not None and len(entries) != expected:
        raise TileError(f"{name}: holds {len(entries)} entries, expected {expected}")
    return entries


#: ``read_tile(tile)`` returns the hashes of ``tile`` (exactly ``tile.width`` of them).
TileReader = Callable[[Tile], List[bytes]]


def tile_hash_range(size: int, read_tile: TileReader) -> HashRange:
    """A ``HashRange`` for a tree of ``size`` leaves whose hashes come from tiles.

    A complete, aligned subtree of height ``h`` is read from the tile at level
    ``h // 8`` (hashing ``2**(h % 8)`` stored hashes); any other range is split
    as in RFC 9162, so only the tiles on the proof's path are read.
    """

    def complete(start: int, height: int) -> bytes:
        level, sub = divmod(height, TILE_HEIGHT)
        pos = start >> (TILE_HEIGHT * level)  # index among level-`level` hashes
        count = 1 << sub
        index = pos // TILE_WIDTH
        hashes = read_tile(tile_for(level, index, size))
        offset = pos % TILE_WIDTH
        return root_of(hashes[offset : offset + count])

    def hash_range(start: int, end: int) -> bytes:
        if not 0 <= start < end <= size:
            raise TileError(f"range {start}..{end} is outside a tree of size {size}")
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return complete(start, n.bit_length() - 1)
        k = split_point(n)
        return node_hash(hash_range(start, start + k), hash_range(start + k, end))

    return hash_range


def root_from_right_edge(size: int, edge: dict[int, list[bytes]]) -> bytes:
    """Tree root from the right-edge hashes of every level (``edge[level]`` = partial tile hashes).

    The tree is the right fold of its perfect subtrees, largest first; the
    partial tile at each level contributes the perfect subtrees of its width.
    """
    if size == 0:
        return EMPTY_ROOT
    subtrees: list[bytes] = []
    for level in sorted(edge, reverse=True):
        hashes = edge[level]
        pos = 0
        while pos < len(hashes):
            k = 1 << ((len(hashes) - pos).bit_length() - 1)
            subtrees.append(root_of(hashes[pos : pos + k]))
            pos += k
    acc = subtrees.pop()
    while subtrees:
        acc = node_hash(subtrees.pop(), acc)
    return acc


class TreeCheck:
    """The one tree check: a tree of ``size`` leaves recomputed from its entries, fed one bundle at a time in
    order, each hash tile on the way compared with the one published (``published(tile)``: its bytes as
    served, None if not served). Streaming: of each level only the roots of its full tiles are kept.
    Without ``published`` only the root is recomputed (no tile is read).
    """

    def __init__(self, size: int, published: Callable[[Tile], bytes | None] | None = None) -> None:
        self.size = size
        self.published = published
        self.bad: list[Tile] = []  # published hash tiles that differ from the entries, in the order checked
        self._edge: dict[int, list[bytes]] = {}  # level -> the hashes of its partial tile
        self._roots: list[bytes] = []  # the roots of the full level-0 tiles so far: level-1 hashes

    def _tile(self, tile: Tile, hashes: list[bytes], above: list[bytes]) -> None:
        if self.published is not None and self.published(tile) != b"".join(hashes):
            self.bad.append(tile)
        if tile.full:
            above.append(root_of(hashes))
        else:
            self._edge[tile.level] = hashes

    def add_bundle(self, index: int, leaves: list[bytes]) -> None:
        """The leaf hashes of bundle ``index`` (bundles come in order); checks its level-0 tile."""
        self._tile(tile_for(0, index, self.size), leaves, self._roots)

    def root(self) -> bytes:
        """The root, once every bundle is added; checks every hash tile above level 0 on the way."""
        level, below = 1, self._roots
        while level_width(self.size, level) > 0:
            above: list[bytes] = []
            for index in range((level_width(self.size, level) + TILE_WIDTH - 1) // TILE_WIDTH):
                tile = tile_for(level, index, self.size)
                self._tile(tile, below[index * TILE_WIDTH : index * TILE_WIDTH + tile.width], above)
            below, level = above, level + 1
        return root_from_right_edge(self.size, self._edge)


# =====================================================================================================
# Errors and exit codes
# =====================================================================================================

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_NOT_APPROVED = 3  # verified, and the answer is no: replaced, not found, revoked, signer compromised


class VerifyFailed(Exception):
    """Verification failed (exit 1): the data is wrong, or the site misbehaved."""

    def __init__(self, message: str, evidence: str = "") -> None:
        super().__init__(message)
        self.evidence = evidence


class SiteError(VerifyFailed):
    """The site served something it must not (too large, redirected away, malformed)."""


class NotServed(SiteError):
    """The site lacks a file its signed checkpoint implies."""


class UsageError(Exception):
    """Bad command line or trust material (exit 2)."""


class FetchError(Exception):
    """Network or I/O trouble (exit 2): nothing could be concluded."""


class NotFound(FetchError):
    """The site has no such file (HTTP 404/410, or no such file in the folder)."""


# =====================================================================================================
# Fetching: https/http URLs or local folders, with timeouts, size caps, same-site redirects, 5xx retries
# =====================================================================================================

KIB = 1024
MIB = 1024 * KIB
CAP_CHECKPOINT = 64 * KIB
CAP_SMALL = 1 * MIB  # vkey, PEM certificates, proofs, status.json
CAP_LOOKUP = 16 * MIB
CAP_BUNDLE = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)
CAP_EVIDENCE = 8 * MIB
CAP_CRL = 128 * MIB
MAX_REDIRECTS = 5
RETRIES = 3  # attempts on HTTP 5xx
USER_AGENT = f"cpl-verify/{__version__} (+python)"
DEFAULT_TIMEOUT = 20.0  # seconds for one request: connect, headers and body


@dataclass
class FetchStats:
    """What a run fetched: every HTTP request (or file read) and the bytes received."""

    requests: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list)


class Deadline:
    """The time limit of a whole command (``--deadline``), shared by every source of one run."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.at = float("inf")
        self.restart()

    def restart(self) -> None:
        """Start the clock again (``monitor`` gives each check the whole limit); 0 means no limit."""
        self.at = time.monotonic() + self.seconds if self.seconds > 0 else float("inf")

    def passed(self) -> bool:
        """True once the limit is reached."""
        return time.monotonic() >= self.at

    def stopped(self, detail: str) -> FetchError:
        """The error that stops the command, naming what it was fetching."""
        return FetchError(f"stopped after {self.seconds:g} s (--deadline): {detail}")


def _origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


class _Connection(http.client.HTTPConnection):
    """HTTP or HTTPS to one origin; every socket operation gets only the time left before ``deadline``.

    A timeout per read alone lets a server that drips one byte at a time hold the reader forever, so
    the limit is on the whole request (connect, TLS handshake, headers and body).
    """

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port)
        self.tls = tls
        self.deadline = 0.0  # time.monotonic() value; set before each request
        if tls is not None:
            self.default_port = 443  # the Host header names the port only when it is not the default

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the request's time is up")
        return left

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.left())
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock.settimeout(self.left())  # CPython bounds the whole handshake by the socket timeout
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _TimedSocket(sock, self)


class _TimedSocket:
    """A connected socket whose reads and writes each wait at most the time left to the connection."""

    def __init__(self, sock: socket.socket, conn: _Connection) -> None:
        self._sock = sock
        self._conn = conn

    def arm(self) -> None:
        self._sock.settimeout(self._conn.left())

    def sendall(self, data: bytes) -> None:
        self.arm()
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        # http.client reads the response through this; the socket's own reader keeps the socket open
        # until the response is read, as http.client expects when the server closes after it.
        return io.BufferedReader(_TimedReader(self._sock.makefile("rb", buffering=0), self))

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _TimedReader(io.RawIOBase):
    def __init__(self, raw: socket.SocketIO, sock: _TimedSocket) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.arm()
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class Source:
    """A site (or log prefix): an ``https://``/``http://`` URL or a local folder. Read-only, careful."""

    def __init__(
        self,
        base: str,
        timeout: float = DEFAULT_TIMEOUT,
        stats: FetchStats | None = None,
        pool: dict[tuple[str, str, int], _Connection] | None = None,
        site_origin: tuple[str, str, int] | None = None,
        retry_delay: float = 0.25,
        deadline: Deadline | None = None,
        label: str = "",
        root: Path | None = None,
    ) -> None:
        self.timeout = timeout
        self.stats = stats if stats is not None else FetchStats()
        self.retry_delay = retry_delay
        self.deadline = deadline if deadline is not None else Deadline()
        self.label = label  # where the URL or folder came from, for messages: "the site URL from --site"
        self._pool = pool if pool is not None else {}
        if re.match(r"(?i)https?://", base):
            if not base.endswith("/"):
                base += "/"
            parts = urlsplit(base)
            if not parts.hostname:
                raise UsageError(f"{base}: no host in the URL")
            if parts.username or parts.password or parts.query or parts.fragment:
                raise UsageError(f"{base}: a site URL has no user, query or fragment")
            self.url: str | None = base
            self.dir: Path | None = None
            self.root: Path | None = None
            self.origin = site_origin or _origin_of(base)
        else:
            if base.lower().startswith("file://"):
                base = base[7:]
            path = Path(base).expanduser()
            if not path.is_dir():
                raise UsageError(f"{base}: not a folder (give an https:// or http:// URL, or a local folder)")
            self.url = None
            # Files are read only from inside ``root``: the folder given, or the site a sub-folder is of.
            self.dir = path if root is not None else path.resolve()
            self.root = root if root is not None else self.dir
            self.origin = ("file", "", 0)

    def __str__(self) -> str:
        return self.url or str(self.dir)

    def sub(self, rel: str) -> Source:
        """The source for a sub-path (e.g. the log prefix ``log/``), sharing connections and counters."""
        rel = rel.strip("/") + "/"
        if self.url is not None:
            return Source(self.url + rel, self.timeout, self.stats, self._pool, self.origin, self.retry_delay,
                          self.deadline, self.label)  # fmt: skip
        assert self.dir is not None  # noqa: S101 - one of the two is set
        return Source(str(self.dir / rel), self.timeout, self.stats, self._pool, None, self.retry_delay,
                      self.deadline, self.label, self.root)  # fmt: skip

    def where(self, rel: str) -> str:
        return (self.url + rel) if self.url is not None else str(self.dir / rel) if self.dir else rel

    def _named(self, url: str) -> str:
        return f"{url} ({self.label})" if self.label else url

    def get(self, rel: str, cap: int, what: str, query: str = "") -> bytes:
        """The bytes at ``rel`` (at most ``cap`` of them, after any gzip decoding), or ``NotFound``.

        ``query`` (HTTP only) keys web caches: the same file as of another version is another URL.
        """
        if rel.startswith("/") or ".." in rel.split("/") or "\\" in rel:
            raise UsageError(f"refusing to fetch {rel!r}")
        if self.deadline.passed():
            raise self.deadline.stopped(f"{what} ({self.where(rel)}) not fetched")
        self.stats.paths.append(rel)
        data = self._get_http(rel, cap, what, query) if self.url is not None else self._get_file(rel, cap, what)
        self.stats.bytes += len(data)
        return data

    def get_optional(self, rel: str, cap: int, what: str, query: str = "") -> bytes | None:
        try:
            return self.get(rel, cap, what, query)
        except NotFound:
            return None

    def read(self, path: str, cap: int) -> bytes | None:
        """``TileSource.read``: a log file, named by its path."""
        kind = "entry bundle" if path.startswith("tile/entries/") else "hash tile" if path.startswith("tile/") else ""
        return self.get_optional(path, cap, f"{kind} {path}".strip())

    # -- local folders ----------------------------------------------------------------------------
    def _get_file(self, rel: str, cap: int, what: str) -> bytes:
        assert self.dir is not None and self.root is not None  # noqa: S101
        path = self.dir / rel
        self.stats.requests += 1
        # Like a redirect off the site: a symbolic link (the file or a folder on the way) leading out of
        # the site folder is refused; links within it are followed.
        real = Path(os.path.realpath(path))
        if real != self.root and self.root not in real.parents:
            raise SiteError(
                f"{what}: {path} leads outside the site folder {self.root} (to {real}) through a symbolic link; "
                "refusing to read it"
            )
        # Only regular files: opening a FIFO would wait for a writer, a device could be endless.
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        not_regular = f"{what}: {path} is not a regular file (a FIFO, device or socket); refusing to read it"
        try:
            mode = os.stat(real).st_mode
            fd = os.open(real, flags) if stat.S_ISREG(mode) else -1
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound(f"{what}: {path} does not exist") from exc
        except OSError as exc:
            raise FetchError(f"{what}: cannot read {path}: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(mode):
            raise NotFound(f"{what}: {path} does not exist (it is a folder)")
        if fd < 0:
            raise SiteError(not_regular)
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):  # replaced since the check above
                raise SiteError(not_regular)
            if info.st_size > cap:
                raise SiteError(f"{what}: {path} is larger than the {_size(cap)} allowed for it; refusing to read it")
            try:
                data = f.read(cap + 1)
            except OSError as exc:
                raise FetchError(f"{what}: cannot read {path}: {exc.strerror or exc}") from exc
        if len(data) > cap:
            raise SiteError(f"{what}: {path} is larger than the {_size(cap)} allowed for it; refusing to read it")
        return data

    # -- HTTP -------------------------------------------------------------------------------------
    def _connection(self, origin: tuple[str, str, int], fresh: bool) -> _Connection:
        conn = self._pool.get(origin)
        if conn is not None and not fresh:
            return conn
        if conn is not None:
            conn.close()
        scheme, host, port = origin
        conn = _Connection(host, port, ssl.create_default_context() if scheme == "https" else None)
        self._pool[origin] = conn
        return conn

    def _drop(self, origin: tuple[str, str, int]) -> None:
        conn = self._pool.pop(origin, None)
        if conn is not None:
            conn.close()

    def _timed_out(self, url: str) -> FetchError:
        if self.deadline.passed():
            return self.deadline.stopped(f"no complete answer from {self._named(url)} in time")
        return FetchError(f"{self._named(url)}: no complete answer within {self.timeout:g} s (--timeout)")

    def _request(self, url: str) -> tuple[http.client.HTTPResponse, tuple[str, str, int]]:
        origin = _origin_of(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, identity", "Connection": "keep-alive"}
        if self.deadline.passed():
            raise self.deadline.stopped(f"{self._named(url)} not fetched")
        # One limit for the whole request: connect, headers and body (read in _read_body).
        deadline = min(time.monotonic() + self.timeout, self.deadline.at)
        self.stats.requests += 1  # every HTTP request, redirects and retries included
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile is reopened once
            conn = self._connection(origin, fresh=attempt > 0)
            conn.deadline = deadline
            reused = conn.sock is not None
            try:
                conn.request("GET", target, headers=headers)
                return conn.getresponse(), origin
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(origin)
                if not reused or attempt:
                    raise FetchError(f"{self._named(url)}: the server closed the connection ({exc})") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise self._failure(exc, origin, url, reading=False) from exc
        raise FetchError(f"cannot connect to {self._named(url)}")  # pragma: no cover - loop returns or raises

    def _failure(self, exc: Exception, origin: tuple[str, str, int], url: str, reading: bool) -> FetchError | SiteError:
        """What ``exc``, raised while connecting or ``reading`` a body, means; the connection is dropped."""
        self._drop(origin)
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return self._timed_out(url)
        if isinstance(exc, ssl.SSLError) and not reading:
            return FetchError(f"{self._named(url)}: TLS error: {exc}")
        if isinstance(exc, zlib.error):
            return SiteError(f"{url}: the gzip response is corrupt ({exc})")
        if reading:
            return FetchError(f"{url}: the connection broke while reading ({exc})")
        if isinstance(exc, http.client.HTTPException):  # a status line or headers that are not HTTP
            return FetchError(f"{self._named(url)}: the answer is not valid HTTP ({exc!r})")
        strerror = exc.strerror if isinstance(exc, OSError) else None
        return FetchError(f"cannot connect to {self._named(url)}: {strerror or exc}")

    def _discard(self, resp: http.client.HTTPResponse, origin: tuple[str, str, int]) -> None:
        """Skip the body of an answer that is not the file (a redirect, an error page)."""
        try:
            if not resp.read(64 * KIB + 1)[64 * KIB :] and not resp.will_close:
                return  # the connection can be reused
        except (http.client.HTTPException, OSError, ValueError):
            pass  # the status is what counts; the connection is not reused
        self._drop(origin)

    def _read_body(self, resp: http.client.HTTPResponse, origin: tuple[str, str, int], cap: int, url: str) -> bytes:
        header = resp.getheader("Content-Encoding") or ""
        codings = [c for c in (c.strip().lower() for c in header.split(",")) if c and c != "identity"]
        if codings not in ([], ["gzip"], ["x-gzip"]):
            self._drop(origin)
            raise SiteError(f"{url}: unsupported Content-Encoding {header!r} (this verifier accepts gzip or identity)")
        gzipped = bool(codings)
        # The cap is on the decoded bytes. Compressed, an incompressible file (a tile of hashes) is a little
        # larger than itself; anything larger still is refused before it is decompressed.
        wire_cap = cap + cap // 64 + 4 * KIB if gzipped else cap
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > wire_cap:
            self._drop(origin)
            raise SiteError(f"{url}: the site announces {_size(int(length))}, more than the {_size(wire_cap)} allowed")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        chunks: list[bytes] = []
        total = received = 0
        try:
            while True:
                chunk = resp.read(min(64 * KIB, wire_cap + 1 - received))
                if not chunk:
                    break
                received += len(chunk)
                if received > wire_cap:
                    self._drop(origin)
                    raise SiteError(f"{url}: the response is larger than the {_size(wire_cap)} allowed; refusing it")
                while inflater is not None and chunk:
                    if inflater.eof:  # a gzip stream may hold several members, one after the other
                        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    # Never more than one byte over the cap, however much the input would expand to.
                    out = inflater.decompress(chunk, cap + 1 - total)
                    chunks.append(out)
                    total += len(out)
                    if total > cap:
                        self._drop(origin)
                        raise SiteError(
                            f"{url}: the response expands to more than the {_size(cap)} allowed; refusing it"
                        )
                    chunk = inflater.unconsumed_tail or inflater.unused_data
                if inflater is None:
                    chunks.append(chunk)
                    total += len(chunk)
        except (zlib.error, http.client.HTTPException, OSError, ValueError) as exc:
            raise self._failure(exc, origin, url, reading=True) from exc
        if inflater is not None and received and not inflater.eof:
            self._drop(origin)
            raise SiteError(f"{url}: the gzip response is truncated")
        if resp.will_close:
            self._drop(origin)
        return b"".join(chunks)

    def _get_http(self, rel: str, cap: int, what: str, query: str = "") -> bytes:
        assert self.url is not None  # noqa: S101
        url = self.url + rel + (f"?{query}" if query else "")
        redirects = 0
        attempt = 0
        while True:
            resp, origin = self._request(url)
            status = resp.status
            if status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location") or ""
                self._discard(resp, origin)
                target = urljoin(url, location)
                if _origin_of(target) != self.origin or not target.lower().startswith(("http://", "https://")):
                    raise SiteError(
                        f"{what}: the site redirected {url} to {target}, outside the site; "
                        "redirects are followed only within the same site (scheme, host and port)"
                    )
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise SiteError(f"{what}: more than {MAX_REDIRECTS} redirects from {self.url + rel}")
                url = target
                continue
            if 500 <= status <= 599:
                self._discard(resp, origin)
                self._drop(origin)
                attempt += 1
                if attempt < RETRIES:
                    pause = self.retry_delay * (2 ** (attempt - 1))
                    time.sleep(max(0.0, min(pause, self.deadline.at - time.monotonic())))  # not past --deadline
                    continue
                raise FetchError(f"{what}: {url} answered HTTP {status} {attempt} times; try again later")
            if status in (404, 410):
                self._discard(resp, origin)
                raise NotFound(f"{what}: {url} does not exist (HTTP {status})")
            if status != 200:
                self._discard(resp, origin)
                self._drop(origin)
                raise FetchError(f"{what}: {url} answered HTTP {status} {resp.reason}")
            return self._read_body(resp, origin, cap, url)

    def close(self) -> None:
        for origin in list(self._pool):
            self._drop(origin)


def _size(n: int) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= KIB:
        return f"{n / KIB:.1f} KiB"
    return f"{n} bytes"


# =====================================================================================================
# A log on a site: the one partial-tile reader, tiles and bundles fetched once each, proofs from them
# =====================================================================================================


class TileSource(Protocol):
    """Where a log's files are read from (the role of Go's ``tlog.TileReader``; ``TileReader`` here is the
    callable that reads one tile's hashes): ``read(path, cap)`` returns the bytes
    of the log file at ``path`` (``checkpoint``, ``tile/...``, relative to the log), at most ``cap`` of them
    (a larger file is an error, never cut), or None when there is none. The site (``Source``) is one; the
    publisher's log folder and a git commit's tree are others."""

    def read(self, path: str, cap: int) -> bytes | None: ...


def fetch_tile(log: TileSource, tile: Tile) -> bytes | None:
    """A hash tile or entry bundle as the site serves it, or None if the site serves it in no usable form.

    The one partial-tile reader. A partial tile the site does not serve (C2SP tlog-tiles lets a log delete
    it once the full tile exists) is cut from the full tile: its first ``tile.width`` hashes or entries. A
    "full" tile that is not one (not 256 hashes, not 256 entries) has nothing to cut: None.
    """
    bundle = tile.level < 0
    data = log.read(tile.path, CAP_BUNDLE if bundle else tile.width * HASH_SIZE)
    if data is not None or tile.full:
        return data
    full = log.read(tile.as_full().path, CAP_BUNDLE if bundle else TILE_WIDTH * HASH_SIZE)
    if full is None:
        return None
    if not bundle:
        return full[: tile.width * HASH_SIZE] if len(full) == TILE_WIDTH * HASH_SIZE else None
    try:
        entries = decode_bundle(full, TILE_WIDTH, tile.path)
    except TileError:
        return None
    return full[: sum(U16.size + len(e) for e in entries[: tile.width])]


class TileFetcher:
    """Tiles and bundles of one tree size, fetched on demand (each at most once per run)."""

    def __init__(self, log: Source, size: int) -> None:
        self.log = log
        self.size = size
        self.tiles: dict[tuple[int, int], list[bytes]] = {}
        self.bundles: dict[int, list[bytes]] = {}
        self.bundle_hashes: dict[int, list[bytes]] = {}
        self.use_bundles = True

    def published_tile(self, tile: Tile) -> list[bytes]:
        """A hash tile as the site serves it (``fetch_tile``: a missing partial may be cut from the full tile)."""
        key = (tile.level, tile.index)
        cached = self.tiles.get(key)
        if cached is not None:
            return cached
        data = fetch_tile(self.log, tile)
        if data is None:
            raise NotServed(
                f"the site does not serve {tile.path}, which its signed checkpoint (size {self.size}) implies; "
                "the log cannot be checked"
            )
        try:
            hashes_ = split_hashes(data, tile)
        except TileError as exc:
            raise VerifyFailed(
                f"the site serves a truncated or padded hash tile: {exc}; the log's data is damaged or tampered with"
            ) from exc
        self.tiles[key] = hashes_
        return hashes_

    def read_tile(self, tile: Tile) -> list[bytes]:
        if self.use_bundles and tile.level == 0 and tile.index in self.bundle_hashes:
            return self.bundle_hashes[tile.index]
        return self.published_tile(tile)

    def bundle(self, index: int) -> list[bytes]:
        """The entries of bundle ``index`` (unauthenticated until a proof covers them)."""
        cached = self.bundles.get(index)
        if cached is not None:
            return cached
        tile = tile_for(-1, index, self.size)
        data = fetch_tile(self.log, tile)
        if data is None:
            raise NotServed(f"the site does not serve the entry bundle {tile.path}, which its checkpoint implies")
        try:
            entries = decode_bundle(data, tile.width, tile.path)
        except TileError as exc:
            raise VerifyFailed(f"the site serves a malformed entry bundle: {exc}") from exc
        self.bundles[index] = entries
        self.bundle_hashes[index] = [leaf_hash(e) for e in entries]
        return entries

    def hash_range(self) -> HashRange:
        return tile_hash_range(self.size, self.read_tile)

    def blame(self, root: bytes) -> str:
        """Which file disagrees with the signed root (called after a proof failed): the right edge against the
        root, then the tiles and bundles fetched so far against the authenticated ones above them. (``TreeCheck``
        is the other way round: a whole tree recomputed from all its entries, bottom-up.)"""
        if self.size == 0:
            return "the checkpoint is for an empty tree"
        # 1. The right edge must reproduce the root.
        try:
            edge = {t.level: self.published_tile(t) for t in right_edge(self.size)}
        except VerifyFailed as exc:
            return str(exc)
        if root_from_right_edge(self.size, edge) != root:
            paths = ", ".join(t.path for t in right_edge(self.size))
            return f"the right-edge hash tiles ({paths}) do not lead to the signed root: one of them was altered"
        # 2. Full tiles fetched so far, top-down, against their authenticated parents.
        good: dict[tuple[int, int], list[bytes]] = {(t.level, t.index): edge[t.level] for t in right_edge(self.size)}
        for (level, index), hashes_ in sorted(self.tiles.items(), key=lambda kv: -kv[0][0]):
            if len(hashes_) != TILE_WIDTH:
                continue
            parent = good.get((level + 1, index // TILE_WIDTH)) or self.tiles.get((level + 1, index // TILE_WIDTH))
            if parent is None or index % TILE_WIDTH >= len(parent):
                continue
            if root_of(hashes_) != parent[index % TILE_WIDTH]:
                return f"the hash tile {Tile(level, index, TILE_WIDTH).path} does not match its hash in the level above"
            good[(level, index)] = hashes_
        # 3. Bundles against their level-0 tiles.
        for index, leaves in sorted(self.bundle_hashes.items()):
            tile = tile_for(0, index, self.size)
            published = self.published_tile(tile)
            if leaves != published:
                bad = next(i for i, (a, b) in enumerate(zip(leaves, published)) if a != b)
                return (
                    f"the entry bundle {tile_for(-1, index, self.size).path} does not match the log: entry "
                    f"{index * TILE_WIDTH + bad} was altered (its leaf hash is not the one in {tile.path})"
                )
        return "the hash tiles served do not lead to the signed root"


def prove_leaf(fetcher: TileFetcher, signed: SignedCheckpoint, index: int, leaf: bytes, what: str) -> None:
    """Prove that the leaf hash leaf is at index, from hash tiles only."""
    cp = signed.checkpoint
    if not 0 <= index < cp.size:
        raise VerifyFailed(f"log index {index} is outside the log (size {cp.size})")
    fetcher.use_bundles = False
    proof = inclusion_proof(index, cp.size, fetcher.hash_range())
    try:
        verify_inclusion(index, cp.size, leaf, proof, cp.root)
    except ProofError as exc:
        tile = tile_for(0, index // TILE_WIDTH, cp.size)
        if (
            fetcher.published_tile(tile)[index % TILE_WIDTH] != leaf
            and root_from_inclusion_proof(index, cp.size, fetcher.published_tile(tile)[index % TILE_WIDTH], proof)
            == cp.root
        ):
            raise VerifyFailed(f"{what} is not entry {index} of the log (its leaf hash differs)") from exc
        raise VerifyFailed(f"entry {index} cannot be proved: {fetcher.blame(cp.root)}") from exc


# =====================================================================================================
# Trust material and state
# =====================================================================================================

DEFAULT_EKU = "1.3.6.1.4.1.55555.1.1"
DEFAULT_ROLES = {"Manufacturer": "Manufacturer", "Supplier": "Supplier", "DCC": "DCC"}
_OID_RE = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


@dataclass
class CertPin:
    """A pinned certificate (an IKI root or a CRL issuer): its name on the site, SHA-256, and (once known) itself."""

    name: str
    sha256: str
    cert: x509.Certificate | None = None

    @classmethod
    def of(cls, name: str, cert: x509.Certificate) -> CertPin:
        """A pin of ``cert`` itself (by SHA-256, with its PEM)."""
        return cls(name, cert_sha256(cert), cert)

    def to_json(self) -> dict[str, str]:
        """As a trust file holds it: name and SHA-256, and the PEM when the certificate is known."""
        pem = {"pem": self.cert.public_bytes(serialization.Encoding.PEM).decode()} if self.cert else {}
        return {"name": self.name, "sha256": self.sha256, **pem}


@dataclass
class Trust:
    """What the user pinned. Nothing else is trusted."""

    site: str | None = None
    log_url: str | None = None
    origin: str | None = None
    verifiers: list[Verifier] = field(default_factory=list)
    roots: list[CertPin] = field(default_factory=list)
    eku: str = DEFAULT_EKU
    roles: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    org_id_attribute: str = "organizationIdentifier"
    intermediates: list[str] = field(default_factory=list)
    crl_issuers: list[CertPin] = field(default_factory=list)  # with the roots: the CRLs that must be checked
    policy: Policy | None = None  # the witnesses and the quorum every accepted checkpoint must meet
    source: str = "command line"

    def log_keys(self) -> list[Verifier]:
        """The pinned log keys (type 0x01); the other verifiers are the witnesses' cosigning keys."""
        return [v for v in self.verifiers if v.sig_type == SIG_ED25519]

    def set_policy(self, policy: Policy, where: str) -> None:
        """Enforce ``policy`` (C2SP tlog-policy): its witnesses' keys verify cosignatures, and its ``log``
        keys are pinned unless log keys are pinned already, in which case they must be among them."""
        pinned = {v.vkey for v in self.log_keys()}
        logs = [v for v, _ in policy.logs]
        if pinned and any(v.vkey not in pinned for v in logs):
            raise UsageError(f"{where}: the policy names a log key that is not the pinned log key")
        self.verifiers = self.log_keys() or logs
        self.verifiers += [w.verifier for w in policy.witnesses]
        self.policy = policy

    def role_of(self, ou: str) -> str | None:
        for role, value in self.roles.items():
            if value == ou:
                return role
        return None

    def to_json(self) -> dict[str, Any]:
        """The trust file (``--trust``) that pins exactly this; ``parse_trust`` reads it back."""
        vkeys = [v.vkey for v in self.log_keys()]
        log: dict[str, Any] = {"origin": self.origin, "vkey": vkeys[0] if len(vkeys) == 1 else vkeys}
        if self.policy is not None:
            log["policy"] = self.policy.text()
        out: dict[str, Any] = {
            "log": log,
            "iki_roots": [pin.to_json() for pin in self.roots],
            "extended_key_usage": self.eku,
        }
        if self.crl_issuers:
            out["crl_issuers"] = [pin.to_json() for pin in self.crl_issuers]
        if self.site:
            out["site"] = self.site
        return out


def cert_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate in PEM text, or the one DER certificate."""
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise VerifyFailed(f"{what} is not a PEM or DER certificate ({exc})") from exc
    if not certs:
        raise VerifyFailed(f"{what} holds no certificate")
    return certs


def _parse_pins(obj: dict[str, Any], key: str, where: str) -> list[CertPin]:
    """The pinned certificates under ``key``: each a name and a SHA-256, or a PEM (or both, which must agree)."""
    items = obj.get(key, [])
    if not isinstance(items, list):
        raise UsageError(f"{where}: '{key}' must be a list")
    pins = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise UsageError(f"{where}: {key}[{n}] must be an object")
        name = str(item.get("name") or "iki-root")
        fp = str(item.get("sha256") or "").lower().replace(":", "")
        pem = item.get("pem")
        cert = None
        if pem:
            try:
                cert = load_certificates(str(pem).encode(), f"{where}: {key}[{n}].pem")[0]
            except VerifyFailed as exc:
                raise UsageError(str(exc)) from exc
            if fp and fp != cert_sha256(cert):
                raise UsageError(f"{where}: {key}[{n}]: the PEM does not have the SHA-256 {fp}")
            fp = cert_sha256(cert)
        if not _HEX64_RE.fullmatch(fp):
            raise UsageError(f"{where}: {key}[{n}] needs 'sha256' (64 hex digits) or 'pem'")
        if not _NAME_RE.fullmatch(name):
            raise UsageError(f"{where}: {key}[{n}].name {name!r} is not a valid issuer name")
        pins.append(CertPin(name, fp, cert))
    return pins


def parse_trust(obj: Any, where: str) -> Trust:
    """Read the trust file format (see the module docstring of ``cmd_pin``)."""
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: the trust file must be a JSON object")
    trust = Trust(source=where)
    site = obj.get("site")
    if site is not None:
        if not isinstance(site, str) or not site:
            raise UsageError(f"{where}: 'site' must be a URL or a folder")
        trust.site = site
    log = obj.get("log", {})
    if not isinstance(log, dict):
        raise UsageError(f"{where}: 'log' must be an object with 'origin' and 'vkey'")
    vkeys = log.get("vkey", [])
    if isinstance(vkeys, str):
        vkeys = [vkeys]
    if not isinstance(vkeys, list):
        raise UsageError(f"{where}: 'log.vkey' must be a verifier key string or a list of them")
    if "witnesses" in log:
        raise UsageError(
            f"{where}: 'log.witnesses' is replaced by 'log.policy', a C2SP tlog-policy naming the witnesses and "
            "the quorum ('quorum none' to verify cosignatures without requiring any)"
        )
    for v in vkeys:
        try:
            trust.verifiers.append(Verifier.from_vkey(str(v)))
        except NoteError as exc:
            raise UsageError(f"{where}: log verifier key: {exc}") from exc
    policy = log.get("policy")
    if policy is not None:
        if isinstance(policy, list) and all(isinstance(line, str) for line in policy):
            policy = "\n".join(policy) + "\n"
        if not isinstance(policy, str):
            raise UsageError(f"{where}: 'log.policy' must be a C2SP tlog-policy text (a string or a list of lines)")
        try:
            trust.set_policy(parse_policy(policy), where)
        except PolicyError as exc:
            raise UsageError(f"{where}: log.policy: {exc}") from exc
    origin = log.get("origin")
    if origin is not None:
        if not isinstance(origin, str) or not origin:
            raise UsageError(f"{where}: 'log.origin' must be a string")
        trust.origin = origin
    url = log.get("url")
    if url is not None:
        if not isinstance(url, str):
            raise UsageError(f"{where}: 'log.url' must be a string")
        trust.log_url = url
    trust.roots = _parse_pins(obj, "iki_roots", where)
    trust.crl_issuers = _parse_pins(obj, "crl_issuers", where)
    names = [p.name for p in [*trust.roots, *trust.crl_issuers]]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: a name appears twice among 'iki_roots' and 'crl_issuers'")
    eku = obj.get("extended_key_usage")
    if eku is not None:
        if not isinstance(eku, str) or not _OID_RE.fullmatch(eku):
            raise UsageError(f"{where}: 'extended_key_usage' must be a dotted OID")
        trust.eku = eku
    roles = obj.get("roles")
    if roles is not None:
        if not isinstance(roles, dict) or not all(isinstance(v, str) for v in roles.values()):
            raise UsageError(f"{where}: 'roles' must map role names to OU values")
        trust.roles = {str(k): str(v) for k, v in roles.items()}
    attr = obj.get("organisation_id_attribute")
    if attr is not None:
        if attr not in ("organizationIdentifier", "serialNumber"):
            raise UsageError(f"{where}: 'organisation_id_attribute' is organizationIdentifier or serialNumber")
        trust.org_id_attribute = str(attr)
    inter = obj.get("intermediates", [])
    if not isinstance(inter, list) or not all(isinstance(i, str) and _NAME_RE.fullmatch(i) for i in inter):
        raise UsageError(f"{where}: 'intermediates' must be a list of issuer names")
    trust.intermediates = list(inter)
    return trust


STATE_FILE = "cpl-verify-state.json"


class State:
    """``--state DIR``: the last verified checkpoint per log and the highest CRL number seen per issuer."""

    def __init__(self, directory: Path | None) -> None:
        self.dir = directory
        self.data: dict[str, Any] = {"version": 1, "checkpoints": {}, "crls": {}}
        if directory is None:
            return
        path = directory / STATE_FILE
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: unreadable state file ({exc}); move it away to start afresh") from exc
        if not isinstance(loaded, dict) or loaded.get("version") != 1:
            raise UsageError(f"{path}: not a cpl-verify state file")
        self.data.update(loaded)

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def checkpoint(self, origin: str) -> str | None:
        value = self.data["checkpoints"].get(origin)
        return value if isinstance(value, str) else None

    def set_checkpoint(self, origin: str, note: str) -> None:
        self.data["checkpoints"][origin] = note

    def crl(self, issuer_fp: str) -> dict[str, Any] | None:
        value = self.data["crls"].get(issuer_fp)
        return value if isinstance(value, dict) else None

    def set_crl(self, issuer_fp: str, record: dict[str, Any]) -> None:
        self.data["crls"][issuer_fp] = record

    def trust(self) -> dict[str, Any] | None:
        value = self.data.get("tofu_trust")
        return value if isinstance(value, dict) else None

    def save(self) -> None:
        if self.dir is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / STATE_FILE
            tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise FetchError(f"cannot write the state in {self.dir}: {exc.strerror or exc}") from exc


# =====================================================================================================
# Minimal DER reading (stdlib only): enough for CMS SignedData (RFC 5652) and for slicing a CRL's
# TBSCertList. Every signature is checked by ``cryptography``.
# =====================================================================================================


class DERError(ValueError):
    """Malformed DER/BER."""


@dataclass(frozen=True)
class DER:
    """One TLV inside ``data``: ``data[start:end]`` is the whole element, ``data[cs:ce]`` its content."""

    data: bytes
    tag: int
    start: int
    cs: int
    ce: int
    end: int

    @property
    def raw(self) -> bytes:
        return self.data[self.start : self.end]

    @property
    def content(self) -> bytes:
        return self.data[self.cs : self.ce]

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def children(self) -> list[DER]:
        if not self.constructed:
            raise DERError(f"element with tag 0x{self.tag:02x} is not constructed")
        out, pos = [], self.cs
        while pos < self.ce:
            child = der_read(self.data, pos, self.ce)
            out.append(child)
            pos = child.end
        return out


def der_read(data: bytes, pos: int = 0, limit: int | None = None, depth: int = 0) -> DER:
    """Read the element at ``pos`` (definite lengths; indefinite lengths on constructed elements)."""
    end = len(data) if limit is None else limit
    if depth > 64:
        raise DERError("nesting too deep")
    if pos + 2 > end:
        raise DERError("truncated element")
    start, tag = pos, data[pos]
    if tag & 0x1F == 0x1F:
        raise DERError("high tag numbers are not supported")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        if not tag & 0x20:
            raise DERError("indefinite length on a primitive element")
        p = pos
        while True:
            if p + 2 > end:
                raise DERError("unterminated indefinite-length element")
            if data[p] == 0 and data[p + 1] == 0:
                return DER(data, tag, start, pos, p, p + 2)
            p = der_read(data, p, end, depth + 1).end
    else:
        n = first & 0x7F
        if n > 8 or pos + n > end:
            raise DERError("bad length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise DERError("truncated element")
    return DER(data, tag, start, pos, pos + length, pos + length)


def der_oid(node: DER) -> str:
    if node.tag != 0x06 or not node.content:
        raise DERError("expected an OBJECT IDENTIFIER")
    arcs, value = [], 0
    for b in node.content:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def der_int(node: DER) -> int:
    if node.tag != 0x02 or not node.content:
        raise DERError("expected an INTEGER")
    return int.from_bytes(node.content, "big", signed=True)


def der_time(node: DER) -> datetime:
    text = node.content.decode("ascii", "replace")
    try:
        if node.tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
            when = datetime.strptime(text, "%y%m%d%H%M%SZ")
        elif node.tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
            when = datetime.strptime(text.split(".")[0].rstrip("Z") + "Z", "%Y%m%d%H%M%SZ")
        else:
            raise DERError("expected a time")
    except ValueError as exc:
        raise DERError(f"bad time {text!r}") from exc
    return when.replace(tzinfo=UTC)


OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_COUNTER_SIGNATURE = "1.2.840.113549.1.9.6"
_DIGESTS: dict[str, tuple[str, Callable[[], hashes.HashAlgorithm]]] = {
    "2.16.840.1.101.3.4.2.1": ("sha256", hashes.SHA256),
    "2.16.840.1.101.3.4.2.2": ("sha384", hashes.SHA384),
    "2.16.840.1.101.3.4.2.3": ("sha512", hashes.SHA512),
}
_ECDSA_OIDS = {"1.2.840.10045.2.1", "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4"}
_RSA_OIDS = {"1.2.840.113549.1.1.1", "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13"}
_RSA_PSS = "1.2.840.113549.1.1.10"
MAX_P7S_BYTES = 256 * KIB


class CMSError(ValueError):
    """A CMS signature file failed a check; ``rule`` is the ID of the submission rule it breaks."""

    def __init__(self, message: str, rule: Rule | None = None) -> None:
        super().__init__(message)
        self.rule = (rule or R_CMS_PROFILE).id


@dataclass(frozen=True)
class CmsSigner:
    """A signature that verified over the content (or, for a countersignature, over a signature)."""

    certificate: x509.Certificate
    signing_time: datetime | None
    where: str
    countersigns: x509.Certificate | None = None


def _unarmor(data: bytes, name: str) -> bytes:
    text = data.strip()
    if not text.startswith(b"-----BEGIN"):
        return data
    lines = text.splitlines()
    if len(lines) < 2 or not lines[-1].startswith(b"-----END"):
        raise CMSError(f"{name}: bad PEM armour")
    try:
        return base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CMSError(f"{name}: bad PEM armour") from exc


def _signer_cert(sid: DER, certs: list[tuple[x509.Certificate, bytes]], where: str) -> x509.Certificate:
    if sid.tag == 0x30:  # IssuerAndSerialNumber
        issuer, serial = sid.children()
        number = der_int(serial)
        for cert, issuer_raw in certs:
            if cert.serial_number == number and issuer_raw == issuer.raw:
                return cert
    elif sid.tag == 0x80:  # [0] SubjectKeyIdentifier
        for cert, _ in certs:
            try:
                if cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == sid.content:
                    return cert
            except x509.ExtensionNotFound:
                continue
    raise CMSError(
        f"{where}: the signer's certificate is not in the SignedData; embed it (drop `openssl cms -nocerts`): the "
        "publication checks and logs the certificate the file was signed with, never one it would look up"
    )


def _as_crlf(content: bytes) -> bytes:
    """The bytes a text-mode signer (``openssl cms`` without ``-binary``) digests: every line ending CRLF."""
    return content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _issuer_raw(cert_der: bytes) -> bytes:
    """The issuer Name DER of a certificate exactly as encoded."""
    tbs = der_read(cert_der).children()[0].children()
    pos = 1 if tbs[0].tag == 0xA0 else 0  # [0] version
    return tbs[pos + 2].raw  # serial, signature algorithm, issuer


def _verify_signer_info(
    si: DER,
    content: bytes,
    certs: list[tuple[x509.Certificate, bytes]],
    where: str,
    counter: bool,
) -> tuple[x509.Certificate, datetime | None, bytes, list[DER]]:
    parts = si.children()
    if len(parts) < 5 or parts[0].tag != 0x02:
        raise CMSError(f"{where}: malformed SignerInfo")
    sid, digest_alg = parts[1], parts[2]
    pos = 3
    signed_attrs = None
    if parts[pos].tag == 0xA0:
        signed_attrs = parts[pos]
        pos += 1
    sig_alg, signature = parts[pos], parts[pos + 1]
    unsigned = [p for p in parts[pos + 2 :] if p.tag == 0xA1]
    digest_oid = der_oid(digest_alg.children()[0])
    if digest_oid not in _DIGESTS:
        accepted = ", ".join(name for name, _ in _DIGESTS.values())
        raise CMSError(f"{where}: digest algorithm {digest_oid} is not accepted; sign with one of {accepted}")
    hashlib_name, hash_cls = _DIGESTS[digest_oid]
    cert = _signer_cert(sid, certs, where)
    if signed_attrs is None:
        raise CMSError(
            f"{where}: the signature has no signed attributes (as `openssl cms -noattr`, or GnuTLS `certtool "
            "--p7-detached-sign` without `--p7-time`, make); sign with them: the messageDigest attribute binds the "
            "signature to this spreadsheet and signingTime dates it"
        )
    attrs: dict[str, list[DER]] = {}
    for attr in signed_attrs.children():
        oid_node, values = attr.children()
        oid = der_oid(oid_node)
        if oid in attrs:
            raise CMSError(f"{where}: the signed attribute {oid} occurs twice")
        attrs[oid] = values.children()
    for oid, vals in attrs.items():
        if oid in (OID_CONTENT_TYPE, OID_MESSAGE_DIGEST, OID_SIGNING_TIME) and len(vals) != 1:
            raise CMSError(f"{where}: the signed attribute {oid} must have exactly one value")
    if counter:
        if OID_CONTENT_TYPE in attrs:
            raise CMSError(f"{where}: a countersignature must not carry a contentType (RFC 5652 11.4)")
    elif OID_CONTENT_TYPE not in attrs or der_oid(attrs[OID_CONTENT_TYPE][0]) != OID_DATA:
        raise CMSError(f"{where}: contentType is missing or not id-data")
    if OID_MESSAGE_DIGEST not in attrs:
        raise CMSError(f"{where}: the signed attribute messageDigest is missing")
    md = attrs[OID_MESSAGE_DIGEST][0]
    if md.tag != 0x04 or md.content != hashlib.new(hashlib_name, content).digest():
        what = "the signature it countersigns" if counter else "the spreadsheet"
        hint = ""
        if not counter and md.content == hashlib.new(hashlib_name, _as_crlf(content)).digest():
            hint = "; it was signed in text mode (line endings changed to CRLF): sign with `openssl cms -binary`"
        raise CMSError(f"{where}: messageDigest does not match {what}{hint}", R_SIGNATURE)
    signing_time = der_time(attrs[OID_SIGNING_TIME][0]) if OID_SIGNING_TIME in attrs else None
    # The signature covers the attributes exactly as received, re-tagged as a SET OF (RFC 5652 5.4).
    signed_bytes = b"\x31" + signed_attrs.raw[1:]
    if signature.tag != 0x04:
        raise CMSError(f"{where}: malformed signature")
    sig_oid = der_oid(sig_alg.children()[0])
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CMSError(f"{where}: the signer's public key cannot be used ({exc})") from exc
    try:
        if sig_oid in _ECDSA_OIDS and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature.content, signed_bytes, ec.ECDSA(hash_cls()))
        elif sig_oid in _RSA_OIDS and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature.content, signed_bytes, padding.PKCS1v15(), hash_cls())
        elif sig_oid == _RSA_PSS and isinstance(key, rsa.RSAPublicKey):
            pss_hash, salt = _pss_params(sig_alg, where)
            pss = padding.PSS(padding.MGF1(pss_hash), salt)
            digest = hashlib.new(pss_hash.name, signed_bytes).digest()
            key.verify(signature.content, digest, pss, Prehashed(pss_hash))
        else:
            raise CMSError(f"{where}: signature algorithm {sig_oid} does not fit the signer's key")
    except InvalidSignature as exc:
        raise CMSError(f"{where}: the signature does not verify over its signed attributes", R_SIGNATURE) from exc
    counters: list[DER] = []
    for block in unsigned:
        for attr in block.children():
            oid_node, values = attr.children()
            if der_oid(oid_node) == OID_COUNTER_SIGNATURE:
                counters.extend(values.children())
    return cert, signing_time, signature.content, counters


def _pss_params(sig_alg: DER, where: str) -> tuple[hashes.HashAlgorithm, int]:
    parts = sig_alg.children()
    hash_alg: hashes.HashAlgorithm | None = None
    salt = 20
    if len(parts) > 1:
        for p in parts[1].children():
            if p.tag == 0xA0:
                oid = der_oid(p.children()[0].children()[0])
                hash_alg = _DIGESTS[oid][1]() if oid in _DIGESTS else None
            elif p.tag == 0xA2:
                salt = der_int(p.children()[0])
    if hash_alg is None:
        raise CMSError(f"{where}: RSA-PSS hash is not accepted")
    return hash_alg, salt


def cms_certificates(data: bytes, name: str) -> tuple[DER, list[tuple[x509.Certificate, bytes]]]:
    """Parse a detached ``.p7s`` (DER or PEM): its SignedData and its certificates."""
    if len(data) > MAX_P7S_BYTES:
        raise CMSError(f"{name} is {len(data)} bytes; the limit is {MAX_P7S_BYTES}")
    der = _unarmor(data, name)
    try:
        info = der_read(der)
        if info.end != len(der):
            raise DERError("trailing bytes")
        ctype, wrapped = info.children()[:2]
        if der_oid(ctype) != OID_SIGNED_DATA or wrapped.tag != 0xA0:
            raise CMSError(f"{name}: not a CMS SignedData")
        signed = wrapped.children()[0]
        parts = signed.children()
        encap = parts[2].children()
        if der_oid(encap[0]) != OID_DATA:
            raise CMSError(f"{name}: encapsulated content type is not id-data")
        if len(encap) > 1:
            raise CMSError(f"{name}: signature must be detached (the signed file is published separately)")
        certs = []
        for p in parts[3:]:
            if p.tag == 0xA0:
                for c in p.children():
                    if c.tag == 0x30:
                        certs.append((x509.load_der_x509_certificate(c.raw), _issuer_raw(c.raw)))
        return signed, certs
    except (DERError, IndexError, ValueError) as exc:
        if isinstance(exc, CMSError):
            raise
        raise CMSError(f"{name}: not a valid DER CMS SignedData ({exc})") from exc


def verify_cms_detached(data: bytes, content: bytes, name: str) -> tuple[list[CmsSigner], list[x509.Certificate]]:
    """Verify every SignerInfo (and RFC 5652 11.4 countersignature) of a detached ``.p7s`` over ``content``.

    Returns the signers and the certificates the file carries (intermediates for path building).
    """
    signed, certs = cms_certificates(data, name)
    try:
        infos = signed.children()[-1]
        if infos.tag != 0x31:
            raise CMSError(f"{name}: malformed SignedData (no signerInfos)")
        signers: list[CmsSigner] = []
        for n, si in enumerate(infos.children(), 1):
            where = f"{name} signer {n}"
            cert, when, sig, counters = _verify_signer_info(si, content, certs, where, counter=False)
            signers.append(CmsSigner(cert, when, where))
            for m, counter in enumerate(counters, 1):
                cwhere = f"{where} countersignature {m}"
                ccert, cwhen, _, _ = _verify_signer_info(counter, sig, certs, cwhere, counter=True)
                signers.append(CmsSigner(ccert, cwhen, cwhere, countersigns=cert))
    # A carried certificate's extensions parse on first use (a SubjectKeyIdentifier sid): not a ValueError.
    except (DERError, IndexError, ValueError, x509.DuplicateExtension) as exc:
        if isinstance(exc, CMSError):
            raise
        raise CMSError(f"{name}: malformed SignerInfo ({exc})") from exc
    if not signers:
        raise CMSError(f"{name}: no signers")
    return signers, [c for c, _ in certs]


# =====================================================================================================
# Certificates: chains to a pinned root, profile checks, CRLs
# =====================================================================================================

CLOCK_SKEW = timedelta(minutes=5)


def not_before(cert: x509.Certificate) -> datetime:
    return cert.not_valid_before_utc


def not_after(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc


def describe_cert(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}' (serial {cert.serial_number:x})"


def _ext(cert: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except (x509.DuplicateExtension, ValueError) as exc:  # hostile certificates reach here: never a traceback
        raise ChainError(f"{describe_cert(cert)} has malformed extensions ({exc})") from exc


class ChainError(VerifyFailed):
    """No acceptable chain to a pinned root."""


def _check_critical(cert: x509.Certificate) -> None:
    try:
        exts = cert.extensions
    except (x509.DuplicateExtension, ValueError) as exc:
        raise ChainError(f"{describe_cert(cert)} has malformed extensions ({exc})") from exc
    for ext in exts:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise ChainError(f"{describe_cert(cert)} has an unrecognised critical extension {ext.oid.dotted_string}")


MIN_RSA_BITS = 2048


def _check_algorithms(cert: x509.Certificate) -> None:
    """No RSA key under 2048 bits (the Web PKI's floor, which IKI keys clear). (A SHA-1 or MD5 signature
    never verifies: ``cryptography`` refuses those algorithms.)"""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ChainError(f"{describe_cert(cert)} has a public key that cannot be used ({exc})") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ChainError(f"{describe_cert(cert)} has a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} is required")


def _issuer_refusal(chain: list[x509.Certificate], issuer: x509.Certificate, at: datetime) -> str | None:
    """Why ``issuer`` cannot be the next link above ``chain`` (RFC 5280 6.1: signature, CA flag in a critical
    basicConstraints, keyCertSign, path length, validity at ``at``), or None when it can."""
    last, name = chain[-1], describe_cert(issuer)
    try:
        last.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return f"{describe_cert(last)} is not signed by {name}"
    bc = _ext(issuer, x509.BasicConstraints)
    ku = _ext(issuer, x509.KeyUsage)
    below = sum(1 for c in chain[1:] if c.subject != c.issuer)  # CA certificates below the issuer
    rules: list[tuple[Callable[[], bool], str]] = [
        (lambda: bc is None or not bc.ca, f"{name} is not a CA certificate"),
        (
            lambda: not issuer.extensions.get_extension_for_class(x509.BasicConstraints).critical,
            f"{name} has a non-critical basicConstraints (RFC 5280 4.2.1.9)",
        ),
        (lambda: ku is None or not ku.key_cert_sign, f"{name} may not sign certificates (keyUsage keyCertSign)"),
        (
            lambda: bc.path_length is not None and below > bc.path_length,
            f"{name} allows at most {bc.path_length if bc else 0} CAs below it",
        ),
        (
            lambda: not not_before(issuer) <= at <= not_after(issuer),
            f"the CA certificate {name} is not valid at {iso_utc(at)}",
        ),
    ]
    return next((why for broken, why in rules if broken()), None)


def build_chain(
    cert: x509.Certificate,
    candidates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: datetime,
) -> list[x509.Certificate]:
    """The chain ``cert`` ... pinned root, each link's signature, CA flags, key usage, path length and
    validity at ``at`` checked. Raises ``ChainError`` naming what failed."""
    root_fps = {cert_sha256(r) for r in roots}
    pool = [*roots, *candidates]
    reasons: list[str] = []

    def extend(chain: list[x509.Certificate]) -> list[x509.Certificate] | None:
        last = chain[-1]
        if cert_sha256(last) in root_fps:
            return chain
        if len(chain) > 6:
            reasons.append("the chain is too long")
            return None
        issuers = [c for c in pool if c.subject == last.issuer and all(c != x for x in chain)]
        if not issuers:
            if last.issuer == last.subject:
                reasons.append(f"{describe_cert(last)} is self-signed and not a pinned IKI root")
            else:
                reasons.append(f"no certificate of the issuer '{last.issuer.rfc4514_string()}' is known")
            return None
        for issuer in issuers:
            refused = _issuer_refusal(chain, issuer, at)
            if refused:
                reasons.append(refused)
                continue
            found = extend([*chain, issuer])
            if found is not None:
                return found
        return None

    _check_critical(cert)
    _check_algorithms(cert)
    chain = extend([cert])
    if chain is None:
        detail = "; ".join(dict.fromkeys(reasons)) or "no path"
        raise ChainError(f"{describe_cert(cert)} does not chain to a pinned IKI root: {detail}")
    for c in chain[1:]:
        _check_critical(c)
        _check_algorithms(c)
    return chain


def check_end_entity(cert: x509.Certificate, eku: str) -> None:
    """The IKI end-entity profile: not a CA, keyUsage digitalSignature, the configured EKU."""
    bc = _ext(cert, x509.BasicConstraints)
    if bc is not None and bc.ca:
        raise ChainError(f"{describe_cert(cert)} is a CA certificate, not an IKI end-entity certificate")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None or not ku.digital_signature:
        raise ChainError(f"{describe_cert(cert)} lacks keyUsage digitalSignature")
    ext_ku = _ext(cert, x509.ExtendedKeyUsage)
    if ext_ku is None or not any(o.dotted_string == eku for o in ext_ku):
        raise ChainError(f"{describe_cert(cert)} lacks the IKI extended key usage {eku}")


def subject_attr(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if len(values) == 1 else ""


@dataclass(frozen=True)
class Identity:
    organisation: str
    organisation_id: str
    role: str | None


def identity_of(cert: x509.Certificate, trust: Trust) -> Identity:
    id_oid = NameOID.ORGANIZATION_IDENTIFIER if trust.org_id_attribute != "serialNumber" else NameOID.SERIAL_NUMBER
    return Identity(
        subject_attr(cert, NameOID.ORGANIZATION_NAME),
        subject_attr(cert, id_oid),
        trust.role_of(subject_attr(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)),
    )


def crl_names_of(cert: x509.Certificate) -> list[str]:
    """Issuer names on the site from the certificate's CRL distribution points (``.../crl/<name>.crl``)."""
    names = []
    dps = _ext(cert, x509.CRLDistributionPoints)
    for dp in dps or []:
        for gn in dp.full_name or []:
            if isinstance(gn, x509.UniformResourceIdentifier):
                m = re.search(r"/crl/([a-z0-9][a-z0-9-]{0,31})\.crl$", gn.value)
                if m and m.group(1) not in names:
                    names.append(m.group(1))
    return names


_CRL_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}


def verify_crl_signature(data: bytes, issuer: x509.Certificate) -> None:
    """Verify a DER CRL's signature over its TBSCertList bytes exactly as received.

    (The TBSCertList is sliced here rather than re-encoded, which takes seconds
    for a large CRL; the signature itself is checked by ``cryptography``.)
    """
    try:
        outer = der_read(data)
        if outer.end != len(data):
            raise DERError("trailing bytes after the CRL")
        tbs, alg, sig = outer.children()[:3]
        inner_alg = tbs.children()[1] if tbs.children()[0].tag == 0x02 else tbs.children()[0]
        oid = der_oid(alg.children()[0])
    except (DERError, IndexError, ValueError) as exc:
        raise VerifyFailed(f"the CRL is not valid DER ({exc})") from exc
    if inner_alg.raw != alg.raw:
        raise VerifyFailed("the CRL's inner and outer signature algorithms differ")
    hash_cls = _CRL_HASHES.get(oid)
    if hash_cls is None or sig.tag != 0x03 or not sig.content or sig.content[0] != 0:
        raise VerifyFailed(f"the CRL uses an unsupported or malformed signature algorithm ({oid})")
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and oid.startswith("1.2.840.10045."):
            key.verify(sig.content[1:], tbs.raw, ec.ECDSA(hash_cls()))
        elif isinstance(key, rsa.RSAPublicKey) and oid.startswith("1.2.840.113549."):
            key.verify(sig.content[1:], tbs.raw, padding.PKCS1v15(), hash_cls())
        else:
            raise VerifyFailed("the CRL's signature algorithm does not fit the issuer's key")
    except InvalidSignature as exc:
        raise VerifyFailed(
            f"the CRL's signature does not verify under the key of {describe_cert(issuer)}: "
            "it was not issued by this CA (or was altered); do not use it"
        ) from exc


def iso_utc(when: datetime) -> str:
    """A time as every file of the publication writes it: RFC 3339, UTC, to the second (``...Z``)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=4096)
def parse_iso(text: str) -> datetime:
    """``YYYY-MM-DDTHH:MM:SSZ`` (the form the log's entries use)."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{text!r} is not a UTC time like 2026-01-31T12:00:00Z") from exc


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600} hours"
    if seconds >= 120:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


@dataclass
class Revoked:
    serial: int
    date: datetime
    reason: str
    invalidity: datetime | None


def revoked_entry(crl: x509.CertificateRevocationList, serial: int) -> Revoked | None:
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        return None
    reason = "unspecified"
    invalidity = None
    for ext in entry.extensions:
        if isinstance(ext.value, x509.CRLReason):
            reason = str(ext.value.reason.value)  # the RFC 5280 name, e.g. keyCompromise
        elif isinstance(ext.value, x509.InvalidityDate):
            value = ext.value
            invalidity = getattr(value, "invalidity_date_utc", None) or value.invalidity_date.replace(tzinfo=UTC)
    return Revoked(serial, entry.revocation_date_utc, reason, invalidity)


# =====================================================================================================
# Log entries: their types, parsing, canonical JSON and the cpl-association/v1 format
# =====================================================================================================

ASSOCIATION_TYPE = "cpl-association/v1"
CRL_TYPE = "crl/v1"
LOOKUP_TYPE = "lookup/v1"


def parse_entry(raw: bytes) -> dict[str, Any] | None:
    """A log entry as a JSON object, or None when it is not one."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deeper than json recurses
        return None
    return obj if isinstance(obj, dict) else None


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON, as every log entry is written: sorted keys, UTF-8, no insignificant whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _model_of(entry: dict[str, Any]) -> tuple[str, str, str, str]:
    m = entry.get("device_model")
    if not isinstance(m, dict):
        return ("", "", "", "")
    return (
        str(m.get("manufacturer_id", "")),
        str(m.get("model_id", "")),
        str(m.get("hardware_version", "")),
        str(m.get("firmware_version", "")),
    )


_PARTY_KEYS = {"organisation", "organisation_id", "role", "certificate_sha256"}
_ASSOCIATION_KEYS = {
    "type",
    "approved_at",
    "device_model",
    "device_type",
    "endorser",
    "evidence",
    "image_sha256",
    "manufacturer",
    "manufacturer_name",
    "panel_ref",
    "smets_version",
    "submission_id",
    "submitter_ref",
}


def association_shape(entry: dict[str, Any]) -> list[str]:
    """Format problems of a ``cpl-association/v1`` entry (README "CPL submissions")."""
    problems = []
    keys = set(entry)
    if not keys >= _ASSOCIATION_KEYS or not keys <= _ASSOCIATION_KEYS | {"replaces"}:
        missing = sorted(_ASSOCIATION_KEYS - keys)
        unknown = sorted(keys - _ASSOCIATION_KEYS - {"replaces"})
        problems.append(f"format: missing fields {missing}, unknown fields {unknown}")
        return problems
    m = entry["device_model"]
    if not isinstance(m, dict) or set(m) != {"manufacturer_id", "model_id", "hardware_version", "firmware_version"}:
        problems.append("format: device_model must have manufacturer_id, model_id, hardware_version, firmware_version")
    elif not all(isinstance(v, str) and v for v in m.values()):
        problems.append("format: device_model fields must be non-empty text")
    for party in ("manufacturer", "endorser"):
        p = entry[party]
        if (
            not isinstance(p, dict)
            or set(p) != _PARTY_KEYS
            or not all(isinstance(v, str) for v in p.values())
            or not _HEX64_RE.fullmatch(p["certificate_sha256"])
        ):
            problems.append(f"format: {party} must have organisation, organisation_id, role, certificate_sha256")
    if not isinstance(entry["image_sha256"], str) or not _HEX64_RE.fullmatch(entry["image_sha256"]):
        problems.append("format: image_sha256 is not 64 lowercase hex digits")
    # Signed entries may hold any JSON type: a list or object is not hashable, so test the type first.
    if not isinstance(entry["device_type"], str) or entry["device_type"] not in DEVICE_TYPES:
        problems.append(f"format: unknown device type {entry['device_type']!r}")
    if entry["smets_version"] not in ("SMETS1", "SMETS2"):
        problems.append(f"format: unknown SMETS version {entry['smets_version']!r}")
    for key in ("manufacturer_name", "panel_ref", "submitter_ref", "submission_id"):
        if not isinstance(entry[key], str) or not entry[key]:
            problems.append(f"format: {key} must be non-empty text")
    try:
        parse_iso(str(entry["approved_at"]))
    except ValueError as exc:
        problems.append(f"format: approved_at: {exc}")
    ev = entry["evidence"]
    if (
        not isinstance(ev, dict)
        or set(ev) != {"spreadsheet", "request", "signatures"}
        or not isinstance(ev["signatures"], list)
        or not ev["signatures"]
        or not all(isinstance(h, str) and _HEX64_RE.fullmatch(h) for h in [ev["spreadsheet"], ev["request"]])
        or not all(isinstance(h, str) and _HEX64_RE.fullmatch(h) for h in ev["signatures"])
    ):
        problems.append("format: evidence must name the spreadsheet, request and signatures by SHA-256")
    rep = entry.get("replaces")
    if rep is not None and (
        not isinstance(rep, dict)
        or set(rep) != {"index", "investigation_ref"}
        or not isinstance(rep["index"], int)
        or isinstance(rep["index"], bool)
        or not isinstance(rep["investigation_ref"], str)
        or not rep["investigation_ref"]
    ):
        problems.append("format: replaces must be {index, investigation_ref}")
    return problems


# =====================================================================================================
# The signed lookup: which entries hold an image hash, a device model or a CRL, committed to by the log
# =====================================================================================================

#
# The site serves lookup shards, log/lookup/{hash,model}/<3 hex>.json, each {"<key>": [index, ...]}
# for the keys starting with those digits (a missing shard is "{}"). Each publish ends by logging a
# lookup/v1 entry: the Merkle root (RFC 9162) of the 8,192 shards (hash shards 000-fff, then model
# shards), the number of entries it covers (all before it) and the newest crl/v1 entry of each issuer.
# The tree's hashes are served as two levels of tiles, log/lookup/tile/0/000..031 and
# log/lookup/tile/1/000, so one shard is authenticated with three small requests and the last leaf of
# any checkpoint proves what is current and what is absent. ``audit`` recomputes every commitment.

LOOKUP_KINDS = ("hash", "model")
SHARD_HEX = 3
SHARDS = 16**SHARD_HEX  # per kind
LOOKUP_LEAVES = len(LOOKUP_KINDS) * SHARDS  # a power of two: the tree is perfect
LOOKUP_TILES = LOOKUP_LEAVES // TILE_WIDTH  # level-0 tiles; their roots fill the one level-1 tile
# A copy of the last entry, so a client proves it from hash tiles without fetching its whole bundle.
LOOKUP_COMMITMENT = "lookup/commitment"
_EMPTY_SHARD = b"{}"


def model_lookup_key(manufacturer_id: str, model_id: str, hardware_version: str, firmware_version: str) -> str:
    """The lookup key of a CPL device model: SHA-256 of the four fields joined by newlines (exact, case kept)."""
    return _sha256(f"{manufacturer_id}\n{model_id}\n{hardware_version}\n{firmware_version}".encode()).hexdigest()


def shard_path(kind: str, key: str) -> str:
    """The site path (under the log) of the shard that holds ``key``."""
    return f"lookup/{kind}/{key[:SHARD_HEX]}.json"


def shard_leaf_path(leaf: int) -> str:
    """The site path (under the log) of the shard at ``leaf`` of the lookup tree."""
    return shard_path(LOOKUP_KINDS[leaf // SHARDS], f"{leaf % SHARDS:0{SHARD_HEX}x}")


def lookup_tile_path(level: int, index: int) -> str:
    """The site path (under the log) of a tile of the lookup tree."""
    return f"lookup/tile/{level}/{index:03d}"


_KIND_OFFSET: dict[str, int] = {kind: i * SHARDS for i, kind in enumerate(LOOKUP_KINDS)}


def _shard_leaf(kind: str, key: str) -> int:
    return _KIND_OFFSET[kind] + int(key[:SHARD_HEX], 16)


def lookup_keys(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """The (kind, key) pairs an entry is found by: an association by image and model, a crl/v1 by the CRL's hash."""
    kind = entry.get("type")
    if kind == CRL_TYPE:
        sha = entry.get("sha256")
        return [("hash", sha)] if type(sha) is str and _HEX64_RE.fullmatch(sha) else []
    if kind != ASSOCIATION_TYPE:
        return []
    # Written for speed (a publish runs it over every entry): plain lookups, no generators.
    image, model = entry.get("image_sha256"), entry.get("device_model")
    if type(image) is not str or type(model) is not dict or not _HEX64_RE.fullmatch(image):
        return []
    mid, mod, hw, fw = (
        model.get("manufacturer_id"),
        model.get("model_id"),
        model.get("hardware_version"),
        model.get("firmware_version"),
    )
    if type(mid) is not str or type(mod) is not str or type(hw) is not str or type(fw) is not str:
        return []
    try:
        return [("hash", image), ("model", model_lookup_key(mid, mod, hw, fw))]
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 text (the audit reports the entry)
        return []


class Lookup:
    """The lookup shards of a log, built entry by entry, and the tree that ``lookup/v1`` entries commit to. Pure.

    ``add`` every entry in order; ``commitment()`` is then the ``lookup/v1``
    entry for the log as it stands. The publisher, the site export and
    ``audit`` all build it here, so the bytes they compare are made once.
    """

    def __init__(self) -> None:
        self.size = 0
        self.last_type: str | None = None
        self.crls: dict[str, dict[str, Any]] = {}  # issuer -> newest logged CRL: number, sha256, index
        self._tables: list[dict[str, list[int]] | None] = [{} for _ in range(LOOKUP_LEAVES)]
        self._leaves = [leaf_hash(_EMPTY_SHARD)] * LOOKUP_LEAVES
        self._dirty: set[int] = set()
        self._tile_roots: list[bytes] | None = None
        self._read_shard: Callable[[int], bytes] | None = None
        self.touched: set[int] = set()  # leaves changed since construction (or ``resume``)

    @classmethod
    def resume(cls, commitment: Commitment, leaves: Sequence[bytes], read_shard: Callable[[int], bytes]) -> Lookup:
        """The lookup as the ``lookup/v1`` entry ``commitment`` (the last entry of a log) committed to, from the
        tree's ``leaves`` (level-0 lookup tiles, concatenated) and ``read_shard(leaf)``, which returns a
        shard's bytes and is called only for the shards that ``add`` touches, so continuing a log costs what
        the new entries touch. ValueError when the leaves do not hash to the commitment's root, or a shard
        read does not match its leaf."""
        if len(leaves) != LOOKUP_LEAVES or any(len(h) != HASH_SIZE for h in leaves):
            raise ValueError(f"lookup: {len(leaves)} leaves, not {LOOKUP_LEAVES} hashes")
        lookup = cls()
        lookup._leaves = list(leaves)
        if lookup.root() != commitment.root:
            raise ValueError(f"lookup: the leaves do not hash to the root committed at entry {commitment.index}")
        lookup.size = commitment.index + 1
        lookup.last_type = LOOKUP_TYPE
        lookup.crls = {issuer: dict(newest) for issuer, newest in commitment.crls.items()}
        lookup._tables = [None] * LOOKUP_LEAVES
        lookup._read_shard = read_shard
        return lookup

    def _table(self, leaf: int) -> dict[str, list[int]]:
        table = self._tables[leaf]
        if table is None:
            assert self._read_shard is not None  # noqa: S101 - set by resume, the only way to a None table
            data = self._read_shard(leaf)
            if leaf_hash(data) != self._leaves[leaf]:
                raise ValueError(f"lookup: shard {leaf} does not match the committed tree")
            table = parse_shard(data, str(leaf)) if data != _EMPTY_SHARD else {}
            self._tables[leaf] = table
        return table

    def add(self, index: int, entry: dict[str, Any] | None) -> None:
        """Account for entry ``index`` (entries come in order; ``None`` for one that is not a JSON object)."""
        if index != self.size:
            raise ValueError(f"lookup: entry {index} added after {self.size} entries")
        self.size += 1
        self.last_type = entry.get("type") if entry is not None and isinstance(entry.get("type"), str) else None
        if entry is None:
            return
        for kind, key in lookup_keys(entry):
            leaf = _shard_leaf(kind, key)
            table = self._table(leaf)
            hits = table.get(key)
            if hits is None:
                table[key] = [index]
            else:
                hits.append(index)
            self._dirty.add(leaf)
            self.touched.add(leaf)
        if self.last_type == CRL_TYPE:
            issuer, number = entry.get("issuer"), entry.get("number")
            if isinstance(issuer, str) and isinstance(number, int) and not isinstance(number, bool):
                newest = self.crls.get(issuer)
                if newest is None or number > newest["number"]:
                    self.crls[issuer] = {"index": index, "number": number, "sha256": entry.get("sha256")}

    def _shard(self, leaf: int) -> bytes:
        table = self._table(leaf)
        return json.dumps(table, sort_keys=True, separators=(",", ":")).encode() if table else _EMPTY_SHARD

    def _update(self) -> list[bytes]:
        if self._dirty or self._tile_roots is None:
            for leaf in self._dirty:
                self._leaves[leaf] = leaf_hash(self._shard(leaf))
            tiles = {leaf // TILE_WIDTH for leaf in self._dirty}
            if self._tile_roots is None:
                tiles = set(range(LOOKUP_TILES))
                self._tile_roots = [b""] * LOOKUP_TILES
            for t in tiles:
                self._tile_roots[t] = root_of(self._leaves[t * TILE_WIDTH : (t + 1) * TILE_WIDTH])
            self._dirty.clear()
        return self._tile_roots

    def root(self) -> bytes:
        """The Merkle root over every shard (hash shards first, then model shards)."""
        return root_of(self._update())

    def indices(self, kind: str, key: str) -> list[int]:
        """The log indices found by ``key`` so far."""
        return list(self._table(_shard_leaf(kind, key)).get(key, []))

    def shard_files(self, touched_only: bool = False) -> dict[str, bytes]:
        """Every non-empty shard (``touched_only``: those changed since construction or ``resume``): site path
        (under the log) -> bytes."""
        out = {}
        for leaf in sorted(self.touched) if touched_only else range(LOOKUP_LEAVES):
            if self._table(leaf):
                out[shard_leaf_path(leaf)] = self._shard(leaf)
        return out

    def tile_files(self) -> dict[str, bytes]:
        """The lookup tree's tiles: site path (under the log) -> concatenated hashes."""
        roots = self._update()
        out = {lookup_tile_path(1, 0): b"".join(roots)}
        for t in range(LOOKUP_TILES):
            out[lookup_tile_path(0, t)] = b"".join(self._leaves[t * TILE_WIDTH : (t + 1) * TILE_WIDTH])
        return out

    def commitment(self) -> bytes:
        """The ``lookup/v1`` entry that commits to this lookup, to be logged as entry ``self.size``."""
        return canonical_json({"type": LOOKUP_TYPE, "size": self.size, "root": self.root().hex(), "crls": self.crls})


@dataclass
class Commitment:
    """A verified ``lookup/v1`` entry: the last entry under a checkpoint."""

    index: int
    root: bytes
    crls: dict[str, dict[str, Any]]


def parse_commitment(index: int, raw: bytes) -> Commitment | None:
    """Entry ``index`` as a lookup commitment, or None if it is not a ``lookup/v1`` entry; malformed: SiteError."""
    entry = parse_entry(raw)
    if entry is None or entry.get("type") != LOOKUP_TYPE:
        return None
    root, crls = entry.get("root"), entry.get("crls")
    if entry.get("size") != index or not isinstance(root, str) or not _HEX64_RE.fullmatch(root):
        raise SiteError(f"the log's lookup/v1 entry {index} is malformed (size or root)")
    if not isinstance(crls, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("number"), int) and isinstance(v.get("index"), int)
        for v in crls.values()
    ):
        raise SiteError(f"the log's lookup/v1 entry {index} is malformed (crls)")
    return Commitment(index, bytes.fromhex(root), crls)


def parse_shard(data: bytes, rel: str) -> dict[str, list[int]]:
    """A lookup shard's table; SiteError when it is not one."""
    try:
        table = json.loads(data)
    except ValueError as exc:
        raise SiteError(f"the lookup shard {rel} is not valid JSON") from exc
    if not isinstance(table, dict) or not all(
        isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v) for v in table.values()
    ):
        raise SiteError(f"the lookup shard {rel} is not a table of keys to log indices")
    return table


# =====================================================================================================
# The CPL submission rules (SEC Appendix Z 4.1 to 4.3, the MP168 endorsement, input hygiene): one
# table with stable IDs, executed by the publisher's intake before anything is logged, by ``audit``
# over the whole history and by ``check-submission`` on a manufacturer's machine
# =====================================================================================================

DEVICE_TYPES = frozenset({"ESME", "GSME", "CHF", "GPF", "PPMID", "IHD", "HCALCS", "CAD", "SAPC"})
COMMS_HUB_TYPES = frozenset({"CHF", "GPF"})


@dataclass(frozen=True)
class Rule:
    """One submission rule: a stable ID, the clause it implements, and what it requires."""

    id: str
    clause: str
    statement: str


R_FOLDER = Rule(
    "Z4.2-folder",
    "Appendix Z 4.2 (format)",
    "A submission is one folder, named by a submission ID, holding one spreadsheet (.xlsx or .csv), "
    "request.json and one or more .p7s signatures, nothing else, each within its size limit.",
)
R_NO_LINKS = Rule(
    "Z4.2-no-links",
    "Appendix Z 4.2 (format)",
    "The inbox holds regular files and folders only: nothing is read or written through a symbolic link.",
)
R_REQUEST = Rule(
    "Z4.2-request",
    "Appendix Z 4.2 (format)",
    "request.json is a JSON object with submitter_ref, panel_ref and optional replacements (replaces_index, "
    "investigation_ref), and nothing else.",
)
R_SPREADSHEET = Rule(
    "Z4.2-spreadsheet",
    "Appendix Z 4.2 (format)",
    "The spreadsheet is an .xlsx or UTF-8 .csv file with the header columns and 1 to 1,000 rows, within the "
    "unzip limits, with no DTD or entities.",
)
R_ROW_VALUES = Rule(
    "Z4.2-row-values",
    "Appendix Z 4.2 (format)",
    "Every row has every value as text (no formula, boolean, error or non-integer number cells), within its "
    "length limit, a 64-hex-digit image hash, a known device type and SMETS version, and a device model no "
    "other row repeats.",
)
R_CMS_PROFILE = Rule(
    "Z4.2-cms-profile",
    "Appendix Z 4.2 (format)",
    "Each .p7s is a detached CMS SignedData (DER or PEM) with signed attributes (contentType id-data, "
    "messageDigest) and the signer's certificate embedded; digest SHA-256/384/512; signature ECDSA, RSA "
    "PKCS#1 v1.5 or RSA-PSS.",
)
R_SIGNATURE = Rule(
    "Z4.1-signature",
    "Appendix Z 4.1",
    "Every signature verifies over the exact spreadsheet bytes (a countersignature over the signature it endorses).",
)
R_CERTIFICATE = Rule(
    "Z4.3a-certificate",
    "Appendix Z 4.3(a)",
    "Every signer certificate chains to a pinned IKI root, has the IKI end-entity profile, and is valid and "
    "not revoked at the approval time.",
)
R_SIGNING_TIME = Rule(
    "Z4.3a-signing-time",
    "Appendix Z 4.3(a)",
    "A signingTime is not later than the approval time (beyond a clock skew of at most 5 minutes) and falls "
    "inside the signer certificate's validity.",
)
R_CREATOR_SIGNATURE = Rule(
    "Z4.1-manufacturer-signature",
    "Appendix Z 4.1",
    "The spreadsheet is signed by a certificate with the Manufacturer role: the image creator's.",
)
R_ONE_MANUFACTURER = Rule(
    "Z4.1-one-manufacturer",
    "Appendix Z 4.1",
    "All rows of a submission name one manufacturer.",
)
R_IMAGE_CREATOR = Rule(
    "Z4.3a-image-creator",
    "Appendix Z 4.3(a)",
    "The Manufacturer signer's organisation ID is the manufacturer ID of every row: the signature is the "
    "image creator's.",
)
R_SUPPLIER_ENDORSEMENT = Rule(
    "MP168-supplier-endorsement",
    "MP168 step 2",
    "A device model other than a communications hub or a SMETS1 model is endorsed by a Supplier certificate.",
)
R_HUB_ENDORSEMENT = Rule(
    "MP168-dcc-endorsement",
    "MP168 step 2",
    "A communications hub (CHF, GPF) is endorsed by the DCC.",
)
R_SMETS1_DCC = Rule(
    "Z4.3c-dcc-endorsement",
    "Appendix Z 4.3(c)",
    "A SMETS1 device model's submission comes from (is endorsed by) the DCC.",
)
R_INDEPENDENT = Rule(
    "MP168-independent-endorsement",
    "MP168 step 2",
    "The endorser is another organisation than the manufacturer (its organisation ID differs).",
)
R_NOT_CURRENT = Rule(
    "Z4.3b-not-current",
    "Appendix Z 4.3(b)",
    "A row does not ask for the hash that is already its device model's current association.",
)
R_REPLACEMENT_REF = Rule(
    "Z4.3b-replacement-ref",
    "Appendix Z 4.3(b)",
    "A device model that has a current hash gets another only by a replacement naming the current "
    "association's log index and an investigation reference.",
)
R_REPLACEMENT_INDEX = Rule(
    "Z4.3b-replacement-index",
    "Appendix Z 4.3(b)",
    "Every log index named as replaced is the current association of one of the submission's device models.",
)
R_PUBLISHER_CRL = Rule(
    "P-current-crl",
    "Publisher state (not the submitter's)",
    "The publisher holds (and its site serves) a current, verifying CRL of every CA in a signer's chain; "
    "intake checks a submission refused for want of one again on its next run.",
)
RULES: tuple[Rule, ...] = (
    R_FOLDER,
    R_NO_LINKS,
    R_REQUEST,
    R_SPREADSHEET,
    R_ROW_VALUES,
    R_CMS_PROFILE,
    R_SIGNATURE,
    R_CERTIFICATE,
    R_SIGNING_TIME,
    R_CREATOR_SIGNATURE,
    R_ONE_MANUFACTURER,
    R_IMAGE_CREATOR,
    R_SUPPLIER_ENDORSEMENT,
    R_HUB_ENDORSEMENT,
    R_SMETS1_DCC,
    R_INDEPENDENT,
    R_NOT_CURRENT,
    R_REPLACEMENT_REF,
    R_REPLACEMENT_INDEX,
    R_PUBLISHER_CRL,
)
#: The most a signingTime may be ahead of the approval time: intake may be configured stricter, never looser,
#: so ``audit`` never refuses what intake accepted.
MAX_SIGNING_SKEW = timedelta(minutes=5)
MANUFACTURER, SUPPLIER, DCC = "Manufacturer", "Supplier", "DCC"


@dataclass(frozen=True)
class RuleFinding:
    """A rule a submission (or a logged entry) breaks: the rule's ID, what was found, and the row if any."""

    rule: str
    message: str
    row: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "message": self.message, "row": self.row}

    def __str__(self) -> str:
        where = f"row {self.row}: " if self.row is not None else ""
        return f"{where}{self.rule}: {self.message}"


class RuleError(ValueError):
    """An input breaks a rule as a whole (an unreadable spreadsheet, a malformed signature file)."""

    def __init__(self, message: str, rule: Rule) -> None:
        super().__init__(message)
        self.rule = rule.id


@dataclass(frozen=True)
class SheetRow:
    """One association a spreadsheet asks for, as logged (``row``: the spreadsheet's row number)."""

    row: int
    manufacturer_id: str
    manufacturer_name: str
    model_id: str
    hardware_version: str
    firmware_version: str
    device_type: str
    smets_version: str
    image_hash: str  # lowercase hex

    @property
    def device_model(self) -> tuple[str, str, str, str]:
        """The CPL device model key: manufacturer, model, hardware version, firmware version."""
        return (self.manufacturer_id, self.model_id, self.hardware_version, self.firmware_version)

    @property
    def needs_dcc(self) -> bool:
        """Whether the DCC, not a Supplier, endorses it: a communications hub, or a SMETS1 model (4.3(c))."""
        return self.device_type in COMMS_HUB_TYPES or self.smets_version == "SMETS1"


MODEL_FIELDS = ("manufacturer_id", "model_id", "hardware_version", "firmware_version")


def row_of_entry(entry: dict[str, Any]) -> SheetRow:
    """The spreadsheet row a logged association records (row number 0: entries do not record it)."""
    mid, model, hw, fw = _model_of(entry)
    return SheetRow(
        0,
        mid,
        str(entry.get("manufacturer_name")),
        model,
        hw,
        fw,
        str(entry.get("device_type")),
        str(entry.get("smets_version")),
        str(entry.get("image_sha256")),
    )


@dataclass(frozen=True)
class Party:
    """A signer as the rules see it: the identity its certificate states, and when it signed."""

    organisation: str
    organisation_id: str
    role: str | None
    certificate_sha256: str
    signing_time: datetime | None = None
    valid_from: datetime | None = None  # the certificate's validity; None where unknown (no evidence)
    valid_to: datetime | None = None
    where: str = ""  # which signature, for messages

    def to_json(self) -> dict[str, Any]:
        """The party as a log entry records it."""
        return {key: getattr(self, key) for key in sorted(_PARTY_KEYS)}

    def named(self) -> str:
        return f"{self.organisation} (ID {self.organisation_id}, {self.role or 'no IKI role'})"


def signer_summary(party: Party) -> dict[str, Any]:
    """Who signed, in which role, when: what a decision-maker reads before approving."""
    when = party.signing_time
    return {**party.to_json(), "signing_time": iso_utc(when) if when else None}


def signer_lines(signers: Sequence[dict[str, Any]]) -> list[str]:
    """Who signed (organisation, ID, role, certificate fingerprint, signing time), one line each."""
    if not signers:
        return ["Signed by: no valid signature"]
    return ["Signed by:"] + [
        f"  {s['role'] or 'no role'}: {s['organisation']} (ID {s['organisation_id']}), certificate "
        f"{s['certificate_sha256']}, signed {s['signing_time'] or 'at an unstated time'}"
        for s in signers
    ]


def party_of(signer: CmsSigner, who: Identity) -> Party:
    """The party of a verified CMS signer whose certificate states identity ``who``."""
    cert = signer.certificate
    return Party(
        who.organisation,
        who.organisation_id,
        who.role,
        cert_sha256(cert),
        signer.signing_time,
        not_before(cert),
        not_after(cert),
        signer.where,
    )


@dataclass(frozen=True)
class Association:
    """What one row asks for, with the parties chosen to vouch for it and the replacement it names."""

    row: SheetRow
    manufacturer: Party | None
    endorser: Party | None
    replaces: tuple[int, str] | None = None  # (log index, investigation reference)


@dataclass(frozen=True)
class Situation:
    """When and against what an association is judged: the approval time, the clock skew allowed, and the
    device model's current association in the log (log index, image hash) if it has one."""

    at: datetime
    skew: timedelta
    current: tuple[int, str] | None


def signing_time_problems(party: Party, at: datetime, skew: timedelta) -> list[str]:
    """Rule Z4.3a-signing-time for one signer."""
    when = party.signing_time
    if when is None:
        return []
    who = f"{party.where} ({party.named()})" if party.where else party.named()
    out = []
    if when > at + min(skew, MAX_SIGNING_SKEW):
        allowed = min(skew, MAX_SIGNING_SKEW).total_seconds()
        out.append(
            f"{who}: signed at {iso_utc(when)}, later than the approval time {iso_utc(at)} "
            f"(at most {allowed:.0f} s of clock skew is allowed): correct the signer's clock and sign again"
        )
    if party.valid_from is not None and party.valid_to is not None and not party.valid_from <= when <= party.valid_to:
        out.append(
            f"{who}: the certificate was not valid at the signing time {iso_utc(when)} "
            f"(valid {iso_utc(party.valid_from)} to {iso_utc(party.valid_to)})"
        )
    return out


def _creator_signature(a: Association, s: Situation) -> list[str]:
    m = a.manufacturer
    if m is None:
        return ["no valid signature by a Manufacturer certificate: the image creator must sign the spreadsheet"]
    if m.role != MANUFACTURER:
        return [f"the image creator's signature is by {m.named()}, not by a Manufacturer certificate"]
    return []


def _image_creator(a: Association, s: Situation) -> list[str]:
    m = a.manufacturer
    if m is None or organisation_key(m.organisation_id) == organisation_key(a.row.manufacturer_id):
        return []
    return [
        f"the manufacturer signature is by {m.organisation} (ID {m.organisation_id}), not by the manufacturer the "
        f"row names (ID {a.row.manufacturer_id})"
    ]


def _endorsement(a: Association, wanted: str) -> list[str]:
    e = a.endorser
    what = "a communications hub" if a.row.device_type in COMMS_HUB_TYPES else f"a {a.row.smets_version} device model"
    if e is None:
        return [f"{what} must be endorsed by {'the DCC' if wanted == DCC else 'a Supplier'}; no endorsement found"]
    if e.role != wanted:
        return [f"{what} must be endorsed by {'the DCC' if wanted == DCC else 'a Supplier'}, not by {e.named()}"]
    return []


def _supplier_endorsement(a: Association, s: Situation) -> list[str]:
    return [] if a.row.needs_dcc else _endorsement(a, SUPPLIER)


def _hub_endorsement(a: Association, s: Situation) -> list[str]:
    if a.row.device_type not in COMMS_HUB_TYPES or a.row.smets_version == "SMETS1":
        return []  # a SMETS1 hub is judged by 4.3(c)
    return _endorsement(a, DCC)


def _smets1_dcc(a: Association, s: Situation) -> list[str]:
    return _endorsement(a, DCC) if a.row.smets_version == "SMETS1" else []


def _independent(a: Association, s: Situation) -> list[str]:
    m, e = a.manufacturer, a.endorser
    if m is None or e is None or organisation_key(m.organisation_id) != organisation_key(e.organisation_id):
        return []
    return [
        f"endorsed by the manufacturer's own organisation ({e.named()}); the endorsement must come from another "
        "organisation"
    ]


def _not_current(a: Association, s: Situation) -> list[str]:
    if s.current is None or s.current[1] != a.row.image_hash:
        return []
    return [f"this hash is already the device model's current association (log index {s.current[0]})"]


def _replacement_ref(a: Association, s: Situation) -> list[str]:
    if s.current is None or s.current[1] == a.row.image_hash:
        return []
    if a.replaces is not None and a.replaces[0] == s.current[0]:
        return []
    return [
        f"the device model already has hash {s.current[1][:16]}... at log index {s.current[0]}; a replacement must "
        "name that index and its investigation"
    ]


#: The rules judged on each association, in the order findings are reported. Intake runs them on every row
#: before logging; ``audit`` runs them on every logged entry, with the log as it stood before that entry.
ASSOCIATION_RULES: tuple[tuple[Rule, Callable[[Association, Situation], list[str]]], ...] = (
    (R_CREATOR_SIGNATURE, _creator_signature),
    (R_IMAGE_CREATOR, _image_creator),
    (R_SUPPLIER_ENDORSEMENT, _supplier_endorsement),
    (R_HUB_ENDORSEMENT, _hub_endorsement),
    (R_SMETS1_DCC, _smets1_dcc),
    (R_INDEPENDENT, _independent),
    (R_NOT_CURRENT, _not_current),
    (R_REPLACEMENT_REF, _replacement_ref),
)


def judge_association(a: Association, s: Situation, row: int | None = None) -> list[RuleFinding]:
    """Every association rule's findings for ``a`` in situation ``s`` (``row``: the row number to report)."""
    return [RuleFinding(rule.id, message, row) for rule, check in ASSOCIATION_RULES for message in check(a, s)]


def one_manufacturer(rows: Sequence[SheetRow]) -> list[RuleFinding]:
    """Rule Z4.1-one-manufacturer over a spreadsheet's rows."""
    ids = sorted({r.manufacturer_id for r in rows})
    if len(ids) < 2:
        return []
    return [
        RuleFinding(
            R_ONE_MANUFACTURER.id,
            f"the rows name {len(ids)} manufacturers ({', '.join(ids)}); submit one manufacturer's images",
        )
    ]


def unused_replacements(asked: Iterable[int], used: set[int]) -> list[RuleFinding]:
    """Rule Z4.3b-replacement-index over a request: every index it names is replaced by one of its rows."""
    return [
        RuleFinding(R_REPLACEMENT_INDEX.id, f"log index {i} is not the current association of any row's device model")
        for i in sorted(set(asked) - used)
    ]


def choose_parties(rows: Sequence[SheetRow], signers: Sequence[Party]) -> tuple[Party | None, dict[int, Party | None]]:
    """Which signer is the image creator, and which endorses each row (by row number).

    The creator is the Manufacturer signer whose organisation the rows name (else any Manufacturer signer,
    so the rules can say whose it is, else none). A row's endorser is a signer of the role it needs
    from another organisation, else the nearest candidate (for the rules to name), else none.
    """
    named = {organisation_key(r.manufacturer_id) for r in rows}
    makers = [p for p in signers if p.role == MANUFACTURER]
    creator = next((p for p in makers if organisation_key(p.organisation_id) in named), makers[0] if makers else None)
    others = [p for p in signers if p is not creator]
    own = organisation_key(creator.organisation_id) if creator is not None else None
    endorsers: dict[int, Party | None] = {}
    for r in rows:
        wanted = DCC if r.needs_dcc else SUPPLIER
        ranked = sorted(
            others, key=lambda p: (p.role != wanted, organisation_key(p.organisation_id) == own, p.role == MANUFACTURER)
        )
        endorsers[r.row] = ranked[0] if ranked else None
    return creator, endorsers


@dataclass(frozen=True)
class Request:
    """A submission's request.json: who submitted, the Panel's reference, and the 4.3(b) replacements."""

    submitter_ref: str
    panel_ref: str
    replacements: dict[int, str]  # log index replaced -> investigation reference


def _ref(obj: dict[str, Any], key: str, findings: list[RuleFinding]) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not clean_cell(value) or len(value) > 128:
        findings.append(RuleFinding(R_REQUEST.id, f"'{key}' must be a non-empty string of at most 128 characters"))
        return ""
    return clean_cell(value)


def parse_request(data: bytes) -> tuple[Request | None, list[RuleFinding]]:
    """Rule Z4.2-request: parse ``request.json`` (submitter and Panel references, 4.3(b) replacements)."""

    def bad(message: str) -> tuple[None, list[RuleFinding]]:
        return None, [RuleFinding(R_REQUEST.id, message)]

    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return bad("request.json is not valid JSON")
    if not isinstance(obj, dict):
        return bad("request.json must be a JSON object")
    findings: list[RuleFinding] = []
    unknown = set(obj) - {"submitter_ref", "panel_ref", "replacements"}
    if unknown:
        findings.append(RuleFinding(R_REQUEST.id, f"unknown fields: {', '.join(sorted(unknown))}"))
    submitter, panel = _ref(obj, "submitter_ref", findings), _ref(obj, "panel_ref", findings)
    replacements: dict[int, str] = {}
    raw = obj.get("replacements", [])
    if not isinstance(raw, list):
        findings.append(RuleFinding(R_REQUEST.id, "'replacements' must be a list"))
        raw = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"replaces_index", "investigation_ref"}:
            findings.append(
                RuleFinding(R_REQUEST.id, "each replacement needs exactly replaces_index and investigation_ref")
            )
            continue
        index = item["replaces_index"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            findings.append(RuleFinding(R_REQUEST.id, "replaces_index must be a log index"))
            continue
        ref = _ref(item, "investigation_ref", findings)
        if index in replacements:
            findings.append(RuleFinding(R_REQUEST.id, f"log index {index} is replaced twice"))
        replacements[index] = ref
    if findings:
        return None, findings
    return Request(submitter, panel, replacements), []


def submission_inputs(files: SubmissionFiles) -> tuple[Request | None, list[SheetRow], list[RuleFinding]]:
    """A submission's request and spreadsheet rows, read by the rules Z4.2-request, -spreadsheet, -row-values."""
    request, findings = parse_request(files.request)
    try:
        rows, problems = read_sheet(files.sheet, files.sheet_name)
    except SheetError as exc:
        findings.append(RuleFinding(exc.rule, str(exc)))
        rows, problems = [], []
    return request, rows, findings + problems


def submission_signers(
    files: SubmissionFiles,
    identify: Callable[[x509.Certificate], Identity],
    certificate_findings: Callable[[CmsSigner, list[x509.Certificate]], list[RuleFinding]],
    at: datetime,
    skew: timedelta,
) -> tuple[list[Party], list[RuleFinding]]:
    """Every signer whose signature verifies over the spreadsheet (Z4.2-cms-profile, Z4.1-signature), and the
    findings: every SignerInfo's signing time at ``at`` (Z4.3a-signing-time), and ``certificate_findings`` on
    each certificate once (Z4.3a-certificate, P-current-crl).

    Signers whose certificates pass come first, so the rules choose them; one whose certificate fails still
    counts as a party (it signed), and the submission is refused by its certificate's finding."""
    good: dict[str, Party] = {}
    flawed: dict[str, Party] = {}
    findings: list[RuleFinding] = []
    for name, data in sorted(files.signatures.items()):
        try:
            verified, extra = verify_cms_detached(data, files.sheet, name)
        except CMSError as exc:
            findings.append(RuleFinding(exc.rule, str(exc)))
            continue
        for s in verified:
            party = party_of(s, identify(s.certificate))
            findings += [RuleFinding(R_SIGNING_TIME.id, m) for m in signing_time_problems(party, at, skew)]
            if party.certificate_sha256 in good or party.certificate_sha256 in flawed:
                continue
            problems = certificate_findings(s, extra)
            findings.extend(problems)
            (flawed if problems else good)[party.certificate_sha256] = party
    return [*good.values(), *flawed.values()], findings


def judge_rows(
    rows: Sequence[SheetRow],
    signers: Sequence[Party],
    request: Request | None,
    current_of: Callable[[tuple[str, str, str, str]], tuple[int, str] | None],
    at: datetime,
    skew: timedelta,
) -> tuple[list[RuleFinding], list[Association]]:
    """Judge a spreadsheet's rows as intake does: choose who vouches for each, name the replacements the
    request asks for, and run every rule. ``current_of`` gives a device model's current association in the
    log (log index, image hash), if any. Returns the findings and each row's association."""
    findings = one_manufacturer(rows)
    creator, endorsers = choose_parties(rows, signers)
    asked = request.replacements if request is not None else {}
    used: set[int] = set()
    associations = []
    for r in rows:
        current = current_of(r.device_model)
        replaces = None
        if current is not None and current[0] in asked and current[1] != r.image_hash:
            replaces = (current[0], asked[current[0]])
            used.add(current[0])
        a = Association(r, creator, endorsers[r.row], replaces)
        findings.extend(judge_association(a, Situation(at, skew, current), r.row))
        associations.append(a)
    findings.extend(unused_replacements(asked, used))
    return findings, associations


def collapse_findings(findings: Sequence[RuleFinding]) -> list[RuleFinding]:
    """One finding for a rule broken the same way on many rows, naming the rows (a report stays readable)."""
    rows: dict[tuple[str, str], list[int]] = {}
    for f in findings:
        if f.row is not None:
            rows.setdefault((f.rule, f.message), []).append(f.row)
    out, done = [], set()
    for f in findings:
        key = (f.rule, f.message)
        if f.row is None or len(rows[key]) == 1:
            out.append(f)
        elif key not in done:
            done.add(key)
            out.append(RuleFinding(f.rule, f"{f.message} (rows {index_ranges(rows[key])})"))
    return out


def index_ranges(indices: Sequence[int]) -> str:
    """``0-2, 5, 9-12``: entries listed compactly (a certificate may concern thousands)."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# =====================================================================================================
# Submission folders: read once, by descriptor, never through a link
# =====================================================================================================

MAX_REQUEST_BYTES = 16 * KIB
MAX_SUBMISSION_FILES = 12
REPORT_FILES = ("rejection.json", "rejection.txt")  # what intake writes into a refused submission's folder
_SUBMISSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LINK_RULE = "a submission holds regular files only, and nothing is read or written through a link"


class SubmissionError(ValueError):
    """A submission folder is unusable as a whole (files missing, too big, unexpected, links)."""

    def __init__(self, findings: list[RuleFinding]) -> None:
        self.findings = findings
        super().__init__("; ".join(str(f) for f in findings))


@dataclass(frozen=True)
class SubmissionFiles:
    """The bytes of a submission, read once."""

    submission_id: str
    sheet_name: str
    sheet: bytes
    signatures: dict[str, bytes]
    request: bytes

    def digests(self) -> dict[str, str]:
        """SHA-256 of every input file, by name."""
        files = {self.sheet_name: self.sheet, "request.json": self.request, **self.signatures}
        return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}

    def evidence_key(self) -> tuple[str, ...]:
        """The SHA-256 of the spreadsheet, the request and (sorted) each signature: as a log entry's evidence."""
        sha = [hashlib.sha256(d).hexdigest() for d in (self.sheet, self.request)]
        return (*sha, *sorted(hashlib.sha256(d).hexdigest() for d in self.signatures.values()))


def symlink_finding(path: Path) -> RuleFinding:
    """Rule Z4.2-no-links: the refusal of a symbolic link (a submission folder, or a file in one)."""
    return RuleFinding(R_NO_LINKS.id, f"{path.name} is a symbolic link; {_LINK_RULE}")


_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY") and hasattr(os, "O_NOFOLLOW")


class SafeFolder:
    """A folder read without following links. Opened once, by descriptor where the platform can (every name is
    then resolved in that folder, so swapping the folder for a link after it was opened changes nothing);
    every file is opened without following a link or blocking on a FIFO, must be the regular file its
    ``lstat`` showed, and is read up to a limit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stat = os.lstat(path)
        if stat.S_ISLNK(self.stat.st_mode):
            raise SubmissionError([symlink_finding(path)])
        if not stat.S_ISDIR(self.stat.st_mode):
            raise SubmissionError([RuleFinding(R_FOLDER.id, f"{path.name} is not a folder")])
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW) if _DIR_FD else None

    def __enter__(self) -> SafeFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd if self.fd is not None else self.path))

    def lstat(self, name: str) -> os.stat_result:
        if self.fd is not None:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        return os.lstat(self.path / name)

    def read(self, name: str, limit: int) -> bytes:
        """At most ``limit + 1`` bytes of the regular file ``name`` (so a caller sees that it is too big)."""
        before = self.lstat(name)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(name, flags, dir_fd=self.fd) if self.fd is not None else os.open(self.path / name, flags)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
                raise OSError(f"{name} is not the regular file it was a moment ago")
            return f.read(limit + 1)

    def unchanged(self) -> bool:
        """Whether the folder's path still names the folder opened (no link or other folder swapped in)."""
        try:
            now = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISDIR(now.st_mode) and (now.st_dev, now.st_ino) == (self.stat.st_dev, self.stat.st_ino)


def read_submission(folder: Path) -> SubmissionFiles:
    """Rules Z4.2-folder and Z4.2-no-links: read a submission folder (see ``SafeFolder``), enforcing the
    expected set of files and their size limits; its reports (``REPORT_FILES``) must be regular files too.
    Raises ``SubmissionError`` with every finding."""
    with SafeFolder(folder) as d:
        return _read_submission(folder.absolute().name, d)


def _read_submission(name: str, d: SafeFolder) -> SubmissionFiles:
    findings = []
    if not _SUBMISSION_ID_RE.fullmatch(name):
        findings.append(RuleFinding(R_FOLDER.id, f"folder name {name!r} is not a valid submission id"))
    names = d.names()
    if len([n for n in names if n not in REPORT_FILES]) > MAX_SUBMISSION_FILES:
        raise SubmissionError(
            [RuleFinding(R_FOLDER.id, f"{len(names)} files; at most {MAX_SUBMISSION_FILES} are expected")]
        )
    sheets, sigs, request = [], {}, None
    refused = set()  # files refused already: not also reported missing
    for n in names:
        st = d.lstat(n)
        if stat.S_ISLNK(st.st_mode):
            findings.append(symlink_finding(Path(n)))
            refused.add(n)
            continue
        if not stat.S_ISREG(st.st_mode):
            findings.append(RuleFinding(R_FOLDER.id, f"{n} is not a regular file"))
            refused.add(n)
            continue
        if n in REPORT_FILES:
            continue
        lower = n.lower()
        if lower.endswith((".xlsx", ".csv")):
            limit = MAX_SHEET_BYTES
        elif lower.endswith(".p7s"):
            limit = MAX_P7S_BYTES
        elif n == "request.json":
            limit = MAX_REQUEST_BYTES
        else:
            findings.append(RuleFinding(R_FOLDER.id, f"unexpected file {n!r}"))
            continue
        data = d.read(n, limit)
        if len(data) > limit:
            findings.append(RuleFinding(R_FOLDER.id, f"{n} is more than {limit} bytes, the limit"))
            refused.add(n)
            continue
        if lower.endswith((".xlsx", ".csv")):
            sheets.append((n, data))
        elif lower.endswith(".p7s"):
            sigs[n] = data
        else:
            request = data
    if len(sheets) != 1 and not (not sheets and any(n.lower().endswith((".xlsx", ".csv")) for n in refused)):
        findings.append(RuleFinding(R_FOLDER.id, f"expected one spreadsheet (.xlsx or .csv), found {len(sheets)}"))
    if not sigs and not any(n.lower().endswith(".p7s") for n in refused):
        findings.append(RuleFinding(R_FOLDER.id, "no signature (.p7s) file"))
    if request is None and "request.json" not in refused:
        findings.append(RuleFinding(R_FOLDER.id, "request.json is missing"))
    if not d.unchanged():
        findings.append(RuleFinding(R_NO_LINKS.id, f"{name} was replaced while it was read"))
    if findings or request is None:
        raise SubmissionError(findings)
    return SubmissionFiles(name, sheets[0][0], sheets[0][1], sigs, request)


# =====================================================================================================
# Spreadsheets: the one .xlsx and .csv reader
# =====================================================================================================

SHEET_COLUMNS = (
    "manufacturer_id",
    "manufacturer_name",
    "model_id",
    "hardware_version",
    "firmware_version",
    "device_type",
    "smets_version",
    "image_hash",
)
MAX_UNZIPPED = 50 * MIB


class SheetError(RuleError):
    """A spreadsheet as a whole breaks a rule (Z4.2-spreadsheet unless another is named)."""

    def __init__(self, message: str, rule: Rule = R_SPREADSHEET) -> None:
        super().__init__(message, rule)


SMETS_VERSIONS = frozenset({"SMETS1", "SMETS2"})
MAX_SHEET_BYTES = 5 * MIB
MAX_ROWS = 1000
MAX_LENGTH = {"manufacturer_name": 128}  # others: 64
MAX_RATIO = 100  # .xlsx is a zip: bound what it may expand to before any XML parser sees it
MAX_MEMBERS = 200
FORMULA_PREFIXES = ("=", "+", "-", "@")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_PLAIN_INTEGER = re.compile(r"0|[1-9][0-9]{0,17}")


def shown(value: str) -> str:
    """A value as reports show it: quoted, so spreadsheet-formula-like text stays inert."""
    return repr(value) if value.startswith(FORMULA_PREFIXES) else f"'{value}'"


def clean_cell(value: str) -> str:
    """A cell's text as logged: control and format characters (bidi overrides too) and surrounding space removed."""
    if value.isascii() and value.isprintable():
        return value.strip()
    return "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cf")).strip()


def organisation_key(organisation_id: str) -> str:
    """An organisation ID as compared: cleaned, NFKC-normalised and case-folded, so ``1001``, ``1001 `` and a
    fullwidth or zero-width-spaced ``1001`` are one organisation (never two that could endorse each other)."""
    return unicodedata.normalize("NFKC", clean_cell(organisation_id)).casefold()


def header_key(value: str) -> str:
    """A header cell as a column name: lower case, runs of spaces, '_' and '-' as one '_'."""
    return re.sub(r"[\s_-]+", "_", value.strip().lower())


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _rich_text(item: Any) -> str:
    """The text of a shared or inline string: its ``t`` and its runs' ``t``, in order (no phonetic runs)."""
    parts = []
    for x in item:
        if _local(x.tag) == "t":
            parts.append(x.text or "")
        elif _local(x.tag) == "r":
            parts.extend(t.text or "" for t in x if _local(t.tag) == "t")
    return "".join(parts)


CELL_TEXT, CELL_NUMBER, CELL_BOOL, CELL_ERROR, CELL_FORMULA = "text", "number", "bool", "error", "formula"
#: One worksheet row: its number, and each cell as (kind, text exactly as stored in the file).


def xlsx_table(data: bytes) -> list[tuple[int, list[tuple[str, str]]]]:
    """The first worksheet of an .xlsx: each row's number and cells as (kind, text as stored).

    The one .xlsx reader: intake (which decides what each kind may be) and
    ``audit`` (which compares logged rows with it) read the same text. Never
    a typed value: a numeric cell stored as ``0001`` is ``0001``. Stdlib
    only; DTDs refused, sizes bounded. Shared strings are the text of their
    ``t`` elements and rich-text runs; phonetic runs (``rPh``) are not text.
    """
    import xml.etree.ElementTree as ET

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {m.filename: m for m in archive.infolist()}
        if len(members) > MAX_MEMBERS or sum(m.file_size for m in members.values()) > MAX_UNZIPPED:
            raise SheetError(f"the .xlsx archive has more than {MAX_MEMBERS} members or expands beyond {MAX_UNZIPPED}")
        for m in members.values():
            if m.compress_size and m.file_size > MIB and m.file_size / m.compress_size > MAX_RATIO:
                raise SheetError(f"member {m.filename!r} compresses {m.file_size // m.compress_size}:1 (a zip bomb?)")

        def xml(name: str) -> ET.Element | None:
            if name not in members:
                return None
            raw = archive.read(name)
            if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
                raise SheetError(f"{name} declares a DTD or entities")
            return ET.fromstring(raw)  # noqa: S314 - no DTD (checked above), bounded size

        book = xml("xl/workbook.xml")
        rels = xml("xl/_rels/workbook.xml.rels")
        target = "xl/worksheets/sheet1.xml"
        if book is not None and rels is not None:
            first = next((e for e in book.iter() if _local(e.tag) == "sheet"), None)
            rid = next((v for k, v in (first.attrib.items() if first is not None else []) if _local(k) == "id"), None)
            for rel in rels.iter():
                if _local(rel.tag) == "Relationship" and rel.get("Id") == rid:
                    t = rel.get("Target", "")
                    target = t.lstrip("/") if t.startswith("/") else "xl/" + t
        strings = xml("xl/sharedStrings.xml")
        shared = [_rich_text(si) for si in (strings if strings is not None else []) if _local(si.tag) == "si"]
        sheet = xml(target)
        if sheet is None:
            raise SheetError("the .xlsx file has no first worksheet")
        rows: list[tuple[int, list[tuple[str, str]]]] = []
        for row in sheet.iter():
            if _local(row.tag) != "row":
                continue
            number = row.get("r", "")
            values: dict[int, tuple[str, str]] = {}
            for c in row:
                if _local(c.tag) != "c":
                    continue
                ref = c.get("r", "")
                letters = "".join(ch for ch in ref if ch.isalpha())
                col = 0
                for ch in letters.upper():
                    col = col * 26 + ord(ch) - 64
                col = col - 1 if letters else len(values)
                kind = c.get("t", "n")
                v = next((x for x in c if _local(x.tag) == "v"), None)
                text = (v.text or "") if v is not None else ""
                if any(_local(x.tag) == "f" for x in c):
                    values[col] = (CELL_FORMULA, text)
                elif kind == "s":
                    values[col] = (CELL_TEXT, shared[int(text)] if text.isdigit() and int(text) < len(shared) else "")
                elif kind == "inlineStr":
                    is_ = next((x for x in c if _local(x.tag) == "is"), None)
                    values[col] = (CELL_TEXT, _rich_text(is_) if is_ is not None else "")
                elif kind in ("str", "n"):
                    values[col] = (CELL_TEXT if kind == "str" else CELL_NUMBER, text)
                else:
                    values[col] = (CELL_BOOL if kind == "b" else CELL_ERROR, text)
            if values:
                cells = [values.get(i, (CELL_TEXT, "")) for i in range(max(values) + 1)]
                rows.append((int(number) if number.isdigit() else len(rows) + 1, cells))
        return rows
    # ParseError is a SyntaxError, a bad deflate stream a zlib.error, an unknown method NotImplementedError.
    except (
        zipfile.BadZipFile,
        KeyError,
        ValueError,
        RuntimeError,
        ET.ParseError,
        zlib.error,
        NotImplementedError,
        EOFError,
    ) as exc:
        if isinstance(exc, SheetError):
            raise
        raise SheetError(f"the .xlsx file cannot be read ({type(exc).__name__})") from exc


def _csv_table(data: bytes) -> list[tuple[int, list[tuple[str, str]]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SheetError("the .csv file is not UTF-8") from exc
    if "\x00" in text:
        raise SheetError("the .csv file contains NUL bytes; is it really CSV?")
    try:
        return [
            (number, [(CELL_TEXT, v) for v in fields])
            for number, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1)
        ]
    except csv.Error as exc:
        raise SheetError(f"the .csv file is malformed: {exc}") from exc


def _cell_text(kind: str, value: str, column: str, row: int) -> tuple[str, RuleFinding | None]:
    """A cell's text as logged (the stored text, cleaned), or why the cell cannot be used."""
    if kind == CELL_FORMULA:
        return "", RuleFinding(R_ROW_VALUES.id, f"{column} is a formula; submit values only", row)
    if kind in (CELL_BOOL, CELL_ERROR):
        what = "a boolean" if kind == CELL_BOOL else "an error"
        return "", RuleFinding(R_ROW_VALUES.id, f"{column} is {what} cell; format the column as text", row)
    if kind == CELL_NUMBER and not _PLAIN_INTEGER.fullmatch(value):
        # 1.50 shows as typed but is stored as 1.5, and 0001 as 1: only a plain integer reads the same
        return "", RuleFinding(R_ROW_VALUES.id, f"{column} is the number {value}; format the column as text", row)
    return clean_cell(value), None


def read_sheet(data: bytes, filename: str | None = None) -> tuple[list[SheetRow], list[RuleFinding]]:
    """The one spreadsheet reader (intake, ``audit`` and ``check-submission`` all use it): the good rows and
    every Z4.2-row-values finding; a spreadsheet unusable as a whole raises ``SheetError``.

    The format follows the bytes (an .xlsx is a zip); ``filename``, where known, must agree with them.
    """
    if len(data) > MAX_SHEET_BYTES:
        raise SheetError(f"the spreadsheet is {len(data)} bytes; the limit is {MAX_SHEET_BYTES}", R_FOLDER)
    is_xlsx = data.startswith(b"PK")
    if filename is not None:
        lower = filename.lower()
        if not lower.endswith((".xlsx", ".csv")):
            raise SheetError(f"{filename}: the spreadsheet must be .xlsx or .csv")
        if lower.endswith(".xlsx") != is_xlsx:
            kind = "a zip archive" if is_xlsx else "not a zip archive"
            raise SheetError(f"{filename} is {kind}: an .xlsx file is a zip archive, a .csv file plain text")
    table = xlsx_table(data) if is_xlsx else _csv_table(data)
    header: dict[str, int] | None = None
    rows: list[SheetRow] = []
    findings: list[RuleFinding] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    data_rows = 0
    for number, cells in table:
        if all(not t.strip() for _, t in cells):
            continue
        if header is None:
            keys = [header_key(t) for _, t in cells]
            missing = [c for c in SHEET_COLUMNS if c not in keys]
            if missing:
                raise SheetError(f"row {number} must be the header; missing columns: {', '.join(missing)}")
            header = {c: keys.index(c) for c in SHEET_COLUMNS}
            continue
        data_rows += 1
        if data_rows > MAX_ROWS:
            raise SheetError(f"more than {MAX_ROWS} rows")
        fields: dict[str, str] = {}
        problems: list[RuleFinding] = []
        for column, i in header.items():
            kind, value = cells[i] if i < len(cells) else (CELL_TEXT, "")
            text, problem = _cell_text(kind, value, column, number)
            if problem:
                problems.append(problem)
            limit = MAX_LENGTH.get(column, 64)
            if len(text) > limit:
                problems.append(RuleFinding(R_ROW_VALUES.id, f"{column} is longer than {limit} characters", number))
            elif not text and not problem:
                problems.append(RuleFinding(R_ROW_VALUES.id, f"{column} is empty", number))
            fields[column] = text
        image_hash = fields["image_hash"].lower()
        if fields["image_hash"] and not _HASH_RE.fullmatch(image_hash):
            problems.append(
                RuleFinding(R_ROW_VALUES.id, f"image_hash {shown(fields['image_hash'])} is not 64 hex digits", number)
            )
        device_type = fields["device_type"].upper()
        if fields["device_type"] and device_type not in DEVICE_TYPES:
            problems.append(RuleFinding(R_ROW_VALUES.id, f"unknown device type {shown(fields['device_type'])}", number))
        smets = fields["smets_version"].upper().replace(" ", "")
        if fields["smets_version"] and smets not in SMETS_VERSIONS:
            problems.append(
                RuleFinding(R_ROW_VALUES.id, f"{shown(fields['smets_version'])} is not SMETS1 or SMETS2", number)
            )
        if problems:
            findings.extend(problems)
            continue
        row = SheetRow(
            number,
            fields["manufacturer_id"],
            fields["manufacturer_name"],
            fields["model_id"],
            fields["hardware_version"],
            fields["firmware_version"],
            device_type,
            smets,
            image_hash,
        )
        if row.device_model in seen:
            findings.append(
                RuleFinding(R_ROW_VALUES.id, f"repeats the device model of row {seen[row.device_model]}", number)
            )
            continue
        seen[row.device_model] = number
        rows.append(row)
    if header is None:
        raise SheetError("the spreadsheet is empty (no header row)")
    if not rows and not findings:
        raise SheetError("the spreadsheet has a header but no rows")
    return rows, findings


# #####################################################################################################
# ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ LIBRARY ABOVE, TOOL BELOW ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
# Above: the library, imported by the publisher (``__all__``); it never uses a name defined below.
# Below: the cpl-verify command-line tool: the run context, the commands and their arguments.
# #####################################################################################################

# =====================================================================================================
# The run context: what a run says (Output), the IKI certificates it relies on (PkiMaterial), and the rest
# of one command run (Context): its arguments, clock, site, log and --state
# =====================================================================================================

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` for a terminal: control and bidirectional characters (from signed but hostile data) escaped."""
    return _CONTROL_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class Output:
    """What a run says: lines on stdout (none with ``--json``), warnings, a progress line on stderr, and the
    result that ``--json`` prints."""

    def __init__(self, json_output: bool, progress: bool) -> None:
        self.json = json_output
        self.show_progress = progress or (sys.stderr.isatty() and not json_output)
        self.result: dict[str, Any] = {}
        self.warnings: list[str] = []

    def say(self, text: str = "") -> None:
        if not self.json:
            sys.stdout.write(printable(text) + "\n")

    def say_now(self, text: str) -> None:
        """A line shown at once, over the progress line (a problem found while the audit runs)."""
        if not self.json:
            self.clear_progress()
            sys.stdout.write(printable(text) + "\n")
            sys.stdout.flush()

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        if not self.json:
            sys.stdout.write(f"warning: {printable(text)}\n")

    def progress(self, text: str) -> None:
        if self.show_progress:
            sys.stderr.write("\r" + text + "\033[K")
            sys.stderr.flush()

    def clear_progress(self) -> None:
        if self.show_progress:
            sys.stderr.write("\r\033[K")


class PkiMaterial:
    """The IKI certificates a run relies on, each fetched at most once: the pinned roots (one pinned by
    fingerprint only is fetched from the site's /pki/ and must match), the pinned CRL issuers, and the CA
    certificates the site serves under /pki/ (unauthenticated until a chain check)."""

    def __init__(self, trust: Trust, site: Callable[[], Source]) -> None:
        self.trust = trust
        self._site = site  # the site, or UsageError if the run has none
        self._roots: list[x509.Certificate] | None = None
        self._certs: dict[str, x509.Certificate | None] = {}

    def roots(self) -> list[x509.Certificate]:
        """The pinned IKI roots; a root pinned by fingerprint only is fetched from /pki/ and must match."""
        if self._roots is not None:
            return self._roots
        if not self.trust.roots:
            raise UsageError(
                "no IKI root is pinned: give --trust FILE or --root PEM (or --tofu to pin what the site serves)"
            )
        out = []
        for pin in self.trust.roots:
            if pin.cert is None:
                data = self._site().get(f"pki/{pin.name}.pem", CAP_SMALL, f"IKI root {pin.name}")
                cert = load_certificates(data, f"pki/{pin.name}.pem")[0]
                if cert_sha256(cert) != pin.sha256:
                    raise VerifyFailed(
                        f"the site's pki/{pin.name}.pem has SHA-256 {cert_sha256(cert)}, not the pinned {pin.sha256}: "
                        "the site serves another root certificate; trust nothing it says about the IKI"
                    )
                pin.cert = cert
            out.append(pin.cert)
        self._roots = out
        return out

    def root_named(self, name: str) -> x509.Certificate | None:
        for pin, cert in zip(self.trust.roots, self.roots()):
            if pin.name == name:
                return cert
        return None

    def cert(self, name: str) -> x509.Certificate | None:
        """``/pki/<name>.pem`` from the site (unauthenticated until a chain check), or None."""
        if name not in self._certs:
            root = self.root_named(name)
            pinned = next((p.cert for p in self.trust.crl_issuers if p.name == name and p.cert is not None), None)
            if root is not None or pinned is not None:
                self._certs[name] = root or pinned
            else:
                data = self._site().get_optional(f"pki/{name}.pem", CAP_SMALL, f"CA certificate {name}")
                self._certs[name] = load_certificates(data, f"pki/{name}.pem")[0] if data else None
        return self._certs[name]

    def name_of(self, cert: x509.Certificate) -> str | None:
        fp = cert_sha256(cert)
        for pin, root in zip(self.trust.roots, self.roots()):
            if cert_sha256(root) == fp:
                return pin.name
        for name, c in self._certs.items():
            if c is not None and cert_sha256(c) == fp:
                return name
        return None

    def intermediates(self, cert: x509.Certificate, extra: list[x509.Certificate]) -> list[x509.Certificate]:
        """``extra`` and the CA certificates the site serves that a chain from ``cert`` may pass through: those
        its CRL distribution points name, the trust file's ``intermediates`` and ``ica``, and theirs in turn."""
        out = list(extra)
        names = [*crl_names_of(cert), *self.trust.intermediates, "ica"]
        seen: set[str] = set()
        while names:
            name = names.pop(0)
            if name in seen:
                continue
            seen.add(name)
            try:
                c = self.cert(name)
            except FetchError:
                c = None
            if c is not None:
                out.append(c)
                names.extend(crl_names_of(c))
        return out

    def crl_issuer(self, name: str, now: datetime) -> x509.Certificate:
        """The certificate of the CRL issuer ``name``: a pinned root, or a pinned CRL issuer (fetched from
        ``/pki/<name>.pem`` when pinned by fingerprint) that chains to a pinned root and is valid ``now``.

        With no ``crl_issuers`` in the trust file (older trust files), ``/pki/<name>.pem`` is taken if it
        chains to a pinned root and is not itself a root: the site cannot pass a root's CRL off as another's.
        """
        root = self.root_named(name)
        if root is not None:
            return root
        pin = next((p for p in self.trust.crl_issuers if p.name == name), None)
        if pin is None and self.trust.crl_issuers:
            raise VerifyFailed(f"the CRL issuer {name!r} is not pinned in the trust file ('crl_issuers')")
        cert = self.cert(name)
        if cert is None:
            raise FetchError(f"the site has no pki/{name}.pem, so the CRL of {name} cannot be checked")
        if pin is not None and cert_sha256(cert) != pin.sha256:
            raise VerifyFailed(
                f"the site's pki/{name}.pem has SHA-256 {cert_sha256(cert)}, not the pinned {pin.sha256}: the site "
                f"serves another issuer certificate; do not rely on its CRL of {name}"
            )
        if any(cert_sha256(r) == cert_sha256(cert) for r in self.roots()):
            raise VerifyFailed(f"the site's pki/{name}.pem is a pinned root's certificate, not the issuer {name}")
        try:
            build_chain(cert, [], self.roots(), now)
        except ChainError as exc:
            raise VerifyFailed(f"the issuer certificate pki/{name}.pem is not trusted: {exc}") from exc
        bc = _ext(cert, x509.BasicConstraints)
        if bc is None or not bc.ca:
            raise VerifyFailed(f"pki/{name}.pem is not a CA certificate")
        if not not_before(cert) <= now <= not_after(cert):
            raise VerifyFailed(
                f"the issuer certificate pki/{name}.pem is not valid now ({iso_utc(not_before(cert))} to "
                f"{iso_utc(not_after(cert))}): its key must not sign CRLs; do not rely on its CRL"
            )
        return cert


class Context:
    """Everything one command run uses: its arguments and clock, the pinned trust and the IKI certificates
    (``pki``), the site, the log and ``--state``, what it says (``out``), and what it has verified once: the
    log's latest checkpoint, its lookup, the CRLs."""

    def __init__(
        self,
        args: argparse.Namespace,
        trust: Trust,
        state: State,
        site: Source | None,
        log: Source | None,
        deadline: Deadline | None = None,
    ) -> None:
        self.args = args
        self.deadline = deadline or Deadline()  # the whole command's (--deadline), shared with the sources
        self.trust = trust
        self.state = state
        self.site = site
        self.log = log
        self.now: datetime = getattr(args, "now", None) or datetime.now(UTC).replace(microsecond=0)
        self.out = Output(bool(getattr(args, "json", False)), bool(getattr(args, "progress", False)))
        self.pki = PkiMaterial(trust, self.need_site)
        self._crls: dict[str, CrlResult] = {}
        self._latest: tuple[SignedCheckpoint, TileFetcher] | None = None
        self._view: LookupView | None = None
        # CRLs older than the newest the log names are refused; the audit judges every crl/v1 entry itself
        self.check_superseded = True

    def need_site(self) -> Source:
        if self.site is None:
            raise UsageError("no site: give --site URL_OR_FOLDER or a trust file with 'site'")
        return self.site

    def need_log(self) -> Source:
        if self.log is None:
            raise UsageError("no log: give --site (the log is <site>/log/) or --log URL_OR_FOLDER")
        return self.log

    @property
    def origin(self) -> str:
        if not self.trust.verifiers:
            raise UsageError(
                "no log verifier key is pinned: give --trust FILE or --vkey KEY (or --tofu to pin what the site serves)"
            )
        logs = self.trust.log_keys()
        if self.trust.origin or not logs:  # only cosigner keys: the checkpoint check says what is missing
            return self.trust.origin or self.trust.verifiers[0].name
        return logs[0].name

    def lookup_view(self) -> LookupView:
        """The lookup of the latest checkpoint (see ``LookupView``), made once per run."""
        if self._view is None:
            signed, fetcher = latest_checkpoint(self)
            self._view = LookupView(self, fetcher, signed)
        return self._view


# =====================================================================================================
# The log, as the commands check it: checkpoints against the pinned key and --state, proved entries
# =====================================================================================================


def _checkpoint_lines(note: str) -> str:
    return "\n".join("    " + line for line in note.rstrip("\n").split("\n"))


def verify_checkpoint_note(ctx: Context, data: bytes | str, where: str) -> SignedCheckpoint:
    """A checkpoint verified with the pinned key(s), failures explained, and judged by the witness policy."""
    origin = ctx.origin
    try:
        signed = open_checkpoint(data, origin, ctx.trust.verifiers)
    except CheckpointError as exc:
        if isinstance(exc, ForgedCosignature):
            meaning = (
                "a cosignature made with a pinned witness key's ID does not verify: it was forged, altered, or "
                "copied from another checkpoint"
            )
        elif isinstance(exc, ForgedCheckpoint):
            meaning = (
                "a signature made with the pinned log key's ID does not verify: the checkpoint was forged or altered"
            )
        elif isinstance(exc, NoLogSignature):
            meaning = "it lacks the pinned log key's signature"
        elif isinstance(exc, UntrustedCheckpoint):
            meaning = "it is not signed by the pinned log key (another key signed it, or none did)"
        elif isinstance(exc, WrongOrigin):
            meaning = "it is a checkpoint of another log (unknown origin)"
        else:
            meaning = "it is malformed"
        raise VerifyFailed(f"{where}: {exc}; {meaning}. Trust nothing the site says about the log.") from exc
    if ctx.trust.policy is not None:
        check_quorum(ctx, ctx.trust.policy, signed, where)
    return signed


def check_quorum(ctx: Context, policy: Policy, signed: SignedCheckpoint, where: str) -> Witnessing:
    """Report who cosigned ``signed`` and when; fail unless ``policy``'s quorum is met."""
    w = check_witnessing(signed.note, policy, int(time.time()))  # the real clock: --now is for CRL questions
    ctx.out.result["witnessing"] = w.to_json()
    size = signed.checkpoint.size
    for c in w.future:
        ctx.out.warn(
            f"{where}: the cosignature by {c.name} is dated {iso_utc(datetime.fromtimestamp(c.timestamp, UTC))}, "
            "in the future: not counted"
        )
    said = ", ".join(f"{c.name} at {c.to_json()['time']}" for c in w.cosigned) or "no witness"
    if not w.satisfied:
        raise VerifyFailed(
            f"{where}: the checkpoint of size {size} is cosigned by {said}; the witness policy needs {w.quorum}. "
            f"Missing: {', '.join(w.missing) or 'none'}. A checkpoint the witnesses have not seen may be a split "
            "view shown to you alone: do not rely on it (retry later: cosignatures may still be on their way)"
        )
    ctx.out.say(f"witnessed: size {size} cosigned by {said} (policy: {w.quorum})")
    return w


def fork_evidence(
    old: str,
    new: str,
    proof: Sequence[bytes] = (),
    old_where: str = "remembered in --state",
    new_where: str = "served now",
) -> str:
    lines = [
        "SECURITY ERROR: the log has signed two checkpoints that cannot both be true.",
        "Keep this output: it is evidence that the log (or someone holding its key) misbehaved.",
        "",
        f"checkpoint {old_where} (signature verifies with the pinned key):",
        _checkpoint_lines(old),
        "",
        f"checkpoint {new_where} (signature verifies with the pinned key):",
        _checkpoint_lines(new),
    ]
    if proof:
        lines += ["", "consistency proof computed from the site's tiles (does not verify):"]
        lines += ["    " + b64encode(h) for h in proof]
    return "\n".join(lines)


def check_consistent(
    ctx: Context,
    fetcher: TileFetcher,
    old: SignedCheckpoint,
    new: SignedCheckpoint,
    old_where: str,
    new_where: str = "served now",
) -> None:
    """Prove ``old`` is a prefix of ``new`` with the site's tiles; fork or rollback fails loudly."""
    o, n = old.checkpoint, new.checkpoint
    if n.size < o.size:
        raise VerifyFailed(
            f"rollback: the site serves a checkpoint of size {n.size}, smaller than the size {o.size} "
            f"{old_where}; the log may never shrink. Either the site serves an old copy or the log was "
            "rewritten; do not rely on it until this is explained.",
            evidence=fork_evidence(old.raw, new.raw, old_where=old_where, new_where=new_where).replace(
                "SECURITY ERROR: the log has signed two checkpoints that cannot both be true.",
                "SECURITY ERROR: the log went backwards (rollback).",
            ),
        )
    if n.size == o.size:
        if n.root != o.root:
            raise VerifyFailed(
                f"fork: two different trees of the same size {n.size} are both signed by the log key",
                evidence=fork_evidence(old.raw, new.raw, old_where=old_where, new_where=new_where),
            )
        return
    if o.size == 0:
        if o.root != EMPTY_ROOT:
            raise VerifyFailed("the remembered size-0 checkpoint does not carry the empty root")
        return
    proof = consistency_proof(o.size, n.size, fetcher.hash_range())
    try:
        verify_consistency(o.size, n.size, o.root, n.root, proof)
    except ProofError as exc:
        if fetcher.hash_range()(0, n.size) != n.root:
            raise VerifyFailed(
                f"cannot prove consistency: {fetcher.blame(n.root)}; the site's tiles are damaged or tampered with"
            ) from exc
        raise VerifyFailed(
            f"fork: the checkpoint of size {n.size} does not extend the one of size {o.size} {old_where} "
            f"({exc}); the log rewrote its history",
            evidence=fork_evidence(old.raw, new.raw, proof, old_where, new_where),
        ) from exc


def latest_checkpoint(ctx: Context) -> tuple[SignedCheckpoint, TileFetcher]:
    """The site's newest checkpoint: signature checked, and proved consistent with the state's."""
    if ctx._latest is not None:
        return ctx._latest
    log = ctx.need_log()
    try:
        data = log.get("checkpoint", CAP_CHECKPOINT, "the log's checkpoint")
    except NotFound as exc:
        raise FetchError(f"{exc}; is {log} a log?") from exc
    signed = verify_checkpoint_note(ctx, data, f"{log.where('checkpoint')}")
    fetcher = TileFetcher(log, signed.checkpoint.size)
    remembered = ctx.state.checkpoint(ctx.origin)
    if remembered is not None:
        try:
            old = open_checkpoint(remembered, ctx.origin, ctx.trust.verifiers)
        except CheckpointError as exc:
            raise UsageError(
                f"the checkpoint in the state folder does not verify with the pinned key ({exc}); "
                "did the pinned key change? Use another --state folder"
            ) from exc
        if signed.checkpoint.size < old.checkpoint.size:
            signed, fetcher = _keep_newer(ctx, log, old, signed)
        else:
            check_consistent(ctx, fetcher, old, signed, "remembered in --state")
            ctx.state.set_checkpoint(ctx.origin, signed.raw)
    else:
        ctx.state.set_checkpoint(ctx.origin, signed.raw)
    ctx._latest = (signed, fetcher)
    return ctx._latest


def refresh_latest(ctx: Context) -> bool:
    """Fetch the checkpoint again past any cache; True if it is newer (and then consistent) and now in use."""
    if ctx._latest is None:
        return False
    old, _ = ctx._latest
    log = ctx.need_log()
    data = log.get("checkpoint", CAP_CHECKPOINT, "the log's checkpoint", f"fresh={time.time_ns()}")
    new = verify_checkpoint_note(ctx, data, log.where("checkpoint"))
    if new.checkpoint.size <= old.checkpoint.size:
        return False
    fetcher = TileFetcher(log, new.checkpoint.size)
    check_consistent(ctx, fetcher, old, new, "served before")
    ctx.out.warn(
        f"the site's lookup is newer than the checkpoint first served (a cache): using size {new.checkpoint.size}"
    )
    ctx.state.set_checkpoint(ctx.origin, new.raw)
    ctx._latest, ctx._view = (new, fetcher), None
    return True


def _keep_newer(
    ctx: Context, log: Source, newer: SignedCheckpoint, older: SignedCheckpoint
) -> tuple[SignedCheckpoint, TileFetcher]:
    """The site serves an older checkpoint than ``--state`` remembers (a cache, as sumdb clients meet):
    prove the served one a prefix of the remembered one and carry on with the remembered one. Only an
    inconsistency is a security error."""
    fetcher = TileFetcher(log, newer.checkpoint.size)
    try:
        check_consistent(ctx, fetcher, older, newer, "served now", "remembered in --state")
    except NotServed as exc:
        raise FetchError(
            f"the site serves an older checkpoint (size {older.checkpoint.size}) than the one remembered in "
            f"--state (size {newer.checkpoint.size}) and lacks the newer tree's tiles ({exc}); this is what a "
            "stale cache looks like: retry in a few minutes"
        ) from exc
    ctx.out.warn(
        f"the site serves an older checkpoint (size {older.checkpoint.size}, consistent with the size "
        f"{newer.checkpoint.size} remembered in --state: a cached copy); carrying on with size {newer.checkpoint.size}"
    )
    return newer, fetcher


def prove_entry(ctx: Context, fetcher: TileFetcher, signed: SignedCheckpoint, index: int) -> bytes:
    """Entry ``index``, authenticated by an inclusion proof against the verified checkpoint.

    The proof is computed from the tiles: the site publishes no file per entry.
    """
    cp = signed.checkpoint
    if not 0 <= index < cp.size:
        raise VerifyFailed(f"log index {index} is outside the log (size {cp.size})")
    bundle = index // TILE_WIDTH
    entry = fetcher.bundle(bundle)[index % TILE_WIDTH]
    proof_hashes = inclusion_proof(index, cp.size, fetcher.hash_range())
    try:
        verify_inclusion(index, cp.size, leaf_hash(entry), proof_hashes, cp.root)
    except ProofError as exc:
        raise VerifyFailed(
            f"entry {index} is not proved to be in the log: {fetcher.blame(cp.root)}; "
            "the site's data is damaged or tampered with"
        ) from exc
    return entry


# =====================================================================================================
# The lookup, as the commands read it: proved against the log's commitment, or read entry by entry
# =====================================================================================================

EXHAUSTIVE_DEFAULT_MAX = 16 * TILE_WIDTH  # without a commitment, read every entry of a log this small


def latest_commitment(ctx: Context, fetcher: TileFetcher, signed: SignedCheckpoint) -> Commitment | None:
    """The ``lookup/v1`` entry that ends the log at ``signed``, proved (None if the last entry is another)."""
    index = signed.checkpoint.size - 1
    if index < 0:
        return None
    copy = ctx.need_log().get_optional(LOOKUP_COMMITMENT, CAP_SMALL, "the lookup commitment")
    raw = None
    if copy is not None:
        try:
            prove_leaf(fetcher, signed, index, leaf_hash(copy), "the site's lookup/commitment")
            raw = copy
        except VerifyFailed:
            pass  # a copy from another moment (caches); the entry's bundle settles it
    return parse_commitment(index, raw if raw is not None else prove_entry(ctx, fetcher, signed, index))


class LookupMismatch(SiteError):
    """A lookup file disagrees with the signed commitment (altered, or a cache serving another version)."""


class LookupView:
    """Answers "which entries hold this key?" for one checkpoint, and says how far the answer is proven.

    Three sources, best first: the log's own ``lookup/v1`` commitment (each
    shard checked against its signed root: proven); ``--exhaustive`` (every
    entry read and proved, the lookup rebuilt here: proven); otherwise the
    site's shards as unauthenticated hints (every hit is still proved, but an
    omission could hide an entry: not proven).
    """

    def __init__(self, ctx: Context, fetcher: TileFetcher, signed: SignedCheckpoint) -> None:
        self.ctx, self.fetcher, self.signed = ctx, fetcher, signed
        self.commitment: Commitment | None = None
        self.local: Lookup | None = None
        self._tile1: list[bytes] | None = None
        size = signed.checkpoint.size
        self.commitment = latest_commitment(ctx, fetcher, signed)
        small = size <= int(getattr(ctx.args, "exhaustive_max", EXHAUSTIVE_DEFAULT_MAX))
        if getattr(ctx.args, "exhaustive", False) or (self.commitment is None and small):
            self.local = read_whole_log(ctx, fetcher, signed)
            c = self.commitment  # a lookup/v1 entry changes no shard: the whole log's lookup is the one it covers
            if c is not None and (self.local.root() != c.root or self.local.crls != c.crls):
                raise VerifyFailed(
                    f"the log's lookup commitment (entry {c.index}) does not match the entries before it: "
                    "verifiers trusting it get wrong answers; run 'audit' for the details"
                )

    @property
    def proven(self) -> bool:
        return self.commitment is not None or self.local is not None

    @property
    def basis(self) -> str:
        """How the answer is known, in words."""
        if self.local is not None:
            return f"every entry of the log, read and proved ({self.signed.checkpoint.size} entries)"
        if self.commitment is not None:
            return f"the log's signed lookup commitment (entry {self.commitment.index})"
        return (
            "the site's lookup, which is not signed (this log has no lookup commitment): an entry it omits "
            "would not be seen; give --exhaustive to read every entry"
        )

    @property
    def newest_crls(self) -> dict[str, dict[str, Any]] | None:
        """The newest logged CRL of each issuer (number, sha256, index), when proven."""
        if self.commitment is not None:
            return self.commitment.crls
        return self.local.crls if self.local is not None else None

    @property
    def _version(self) -> str:
        # Lookup files change at every publish: asking for the commitment's version keeps caches in step.
        return f"lookup={self.commitment.index}" if self.commitment is not None else ""

    def _lookup_tile(self, level: int, index: int, count: int) -> list[bytes]:
        rel = lookup_tile_path(level, index)
        data = self.ctx.need_log().get(rel, count * HASH_SIZE, f"lookup tile {rel}", self._version)
        if len(data) != count * HASH_SIZE:
            raise SiteError(f"the lookup tile {rel} has {len(data)} bytes, not {count * HASH_SIZE}")
        return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    def indices(self, kind: str, key: str) -> list[int]:
        """The log indices holding ``key``: complete when ``proven``, else as the site lists them."""
        if self.local is not None:
            return self.local.indices(kind, key)
        rel = shard_path(kind, key)
        data = self.ctx.need_log().get_optional(rel, CAP_LOOKUP, f"lookup shard {rel}", self._version)
        if self.commitment is not None:
            shard = _EMPTY_SHARD if data is None else data
            leaf = _shard_leaf(kind, key)
            if self._tile1 is None:
                self._tile1 = self._lookup_tile(1, 0, LOOKUP_TILES)
            tile0 = self._lookup_tile(0, leaf // TILE_WIDTH, TILE_WIDTH)
            if (
                root_of(self._tile1) != self.commitment.root
                or root_of(tile0) != self._tile1[leaf // TILE_WIDTH]
                or tile0[leaf % TILE_WIDTH] != leaf_hash(shard)
            ):
                missing = " (the site does not serve it)" if data is None else ""
                raise LookupMismatch(
                    f"the lookup shard {rel}{missing} does not match the log's signed lookup commitment (entry "
                    f"{self.commitment.index}): the site's lookup was altered, or it is mid-update (retry in a "
                    "few minutes)"
                )
            data = shard
        if data is None:
            return []
        hits = parse_shard(data, rel).get(key, [])
        size = self.signed.checkpoint.size
        for i in hits:
            if not 0 <= i < size:
                raise SiteError(f"the lookup shard {rel} lists index {i}, outside the signed log (size {size})")
        return sorted(set(hits))

    def entry(self, index: int) -> dict[str, Any] | None:
        """Entry ``index``, proved against the checkpoint, as a JSON object (None if it is not one)."""
        return parse_entry(prove_entry(self.ctx, self.fetcher, self.signed, index))

    def report(self) -> dict[str, Any]:
        """What ``--json`` says about the basis of the verdict."""
        return {
            "proven": self.proven,
            "basis": self.basis,
            "commitment_index": self.commitment.index if self.commitment else None,
        }


def read_whole_log(ctx: Context, fetcher: TileFetcher, signed: SignedCheckpoint) -> Lookup:
    """Read every entry, check they hash to the signed root, and build the lookup from them (``--exhaustive``)."""
    size = signed.checkpoint.size
    lookup = Lookup()
    tree = TreeCheck(size)
    for bundle in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        ctx.out.progress(f"reading every entry: {bundle * TILE_WIDTH:,} of {size:,}")
        entries = fetcher.bundle(bundle)
        for offset, raw in enumerate(entries):
            lookup.add(bundle * TILE_WIDTH + offset, parse_entry(raw))
        tree.add_bundle(bundle, fetcher.bundle_hashes[bundle])
    ctx.out.progress("")
    if tree.root() != signed.checkpoint.root:
        raise VerifyFailed(f"the log's entries do not hash to its signed root: {fetcher.blame(signed.checkpoint.root)}")
    return lookup


# =====================================================================================================
# crl: the IKI CRLs, signed up to a pinned root, fresh, never rolled back, optionally logged
# =====================================================================================================


@dataclass
class CrlResult:
    name: str
    crl: x509.CertificateRevocationList
    issuer: x509.Certificate
    number: int
    this_update: datetime
    next_update: datetime
    sha256: str
    entries: int
    logged_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.name,
            "issuer_subject": self.issuer.subject.rfc4514_string(),
            "issuer_sha256": cert_sha256(self.issuer),
            "number": self.number,
            "this_update": iso_utc(self.this_update),
            "next_update": iso_utc(self.next_update),
            "entries": self.entries,
            "sha256": self.sha256,
            "logged_at_index": self.logged_at,
        }


def verify_crl(ctx: Context, name: str, require_logged: bool = False) -> CrlResult:
    """Fetch ``/crl/<name>.crl`` and check it; raises ``VerifyFailed`` (or ``FetchError``) with the meaning."""
    cached = ctx._crls.get(name)
    if cached is not None and (cached.logged_at is not None or not require_logged):
        return cached
    if not _NAME_RE.fullmatch(name):
        raise UsageError(f"{name!r} is not an issuer name")
    site = ctx.need_site()
    cap = int(getattr(ctx.args, "max_crl_bytes", CAP_CRL))
    try:
        data = site.get(f"crl/{name}.crl", cap, f"CRL of {name}")
    except NotFound as exc:
        raise FetchError(f"the CRL of {name} is unavailable: {exc}") from exc
    try:
        crl = x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise VerifyFailed(f"crl/{name}.crl is not a DER CRL ({exc}); do not rely on it") from exc
    issuer = ctx.pki.crl_issuer(name, ctx.now)
    if crl.issuer != issuer.subject:
        raise VerifyFailed(
            f"crl/{name}.crl was issued by '{crl.issuer.rfc4514_string()}', not by {describe_cert(issuer)}: "
            "it is another CA's CRL; do not use it"
        )
    verify_crl_signature(data, issuer)
    ku = _ext(issuer, x509.KeyUsage)
    if ku is not None and not ku.crl_sign:
        raise VerifyFailed(f"{describe_cert(issuer)} may not sign CRLs (keyUsage lacks cRLSign)")
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        ski = _ext(issuer, x509.SubjectKeyIdentifier)
        if aki is not None and ski is not None and aki != ski.digest:
            raise VerifyFailed(f"crl/{name}.crl names another issuer key (authorityKeyIdentifier mismatch)")
    except x509.ExtensionNotFound:
        pass
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if this_update > ctx.now + CLOCK_SKEW:
        raise VerifyFailed(
            f"the CRL of {name} says it was issued at {iso_utc(this_update)}, in the future "
            f"(now {iso_utc(ctx.now)}): the CRL or your clock is wrong; do not rely on it"
        )
    if next_update is None:
        raise VerifyFailed(f"the CRL of {name} has no nextUpdate, so its freshness cannot be judged")
    if ctx.now > next_update:
        raise VerifyFailed(
            f"the CRL of {name} is stale: it expired {_ago(ctx.now - next_update)} ago (nextUpdate "
            f"{iso_utc(next_update)}); do not rely on it. Revocations made since may be missing."
        )
    try:
        number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound as exc:
        raise VerifyFailed(f"the CRL of {name} has no CRL number, so a rollback could not be detected") from exc
    sha = hashlib.sha256(data).hexdigest()
    fp = cert_sha256(issuer)
    seen = ctx.state.crl(fp)
    if seen is not None:
        last = int(seen.get("number", -1))
        if number < last:
            raise VerifyFailed(
                f"rollback: the site serves CRL number {number} of {name}, but number {last} was seen on "
                f"{seen.get('seen_at', '?')}: an old CRL is being replayed; do not rely on it "
                "(revocations made since would be hidden)"
            )
        if number == last and seen.get("sha256") != sha:
            raise VerifyFailed(
                f"two different CRLs of {name} carry the same number {number} (seen before: SHA-256 "
                f"{seen.get('sha256')}; now: {sha}); the CA misbehaved; do not rely on either"
            )
    result = CrlResult(name, crl, issuer, number, this_update, next_update, sha, len(crl))
    if require_logged:
        result.logged_at = find_crl_entry(ctx, result)
    elif ctx.log is not None and ctx.check_superseded and not ctx.trust.verifiers:
        ctx.out.warn(f"whether the log holds a newer CRL of {name} was not checked: no log key is pinned")
    elif ctx.log is not None and ctx.check_superseded:
        try:
            signed, fetcher = latest_checkpoint(ctx)
            commitment = latest_commitment(ctx, fetcher, signed)
        except FetchError as exc:
            ctx.out.warn(f"whether the log holds a newer CRL of {name} was not checked: {exc}")
        else:
            _check_not_superseded(result, commitment.crls if commitment else None)
    if seen is None or number >= int(seen.get("number", -1)):
        ctx.state.set_crl(
            fp, {"issuer": name, "number": number, "sha256": sha, "seen_at": iso_utc(ctx.now), "issuer_sha256": fp}
        )
    ctx._crls[name] = result
    return result


def _check_not_superseded(res: CrlResult, crls: dict[str, dict[str, Any]] | None) -> None:
    """Fail if the log's newest CRLs (its lookup commitment, or every entry read) name a newer one of this issuer."""
    if crls is None:
        return
    newest = crls.get(res.name)
    if newest is not None and int(newest["number"]) > res.number:
        raise VerifyFailed(
            f"superseded: the site serves CRL number {res.number} of {res.name}, but the log holds number "
            f"{newest['number']} (crl/v1 entry {newest['index']}); revocations in the newer CRL would be hidden: "
            "do not rely on this CRL"
        )


def find_crl_entry(ctx: Context, res: CrlResult) -> int:
    """The log index of the ``crl/v1`` entry for exactly these CRL bytes, proved included, and no newer one logged.

    With the log's lookup commitment, the newest logged CRL of each issuer is
    named in the last entry: one proof settles it. Without one, the entry is
    searched for (the site's lookup, then the newest bundles) and a newer
    logged CRL cannot be ruled out, which is said.
    """
    view = ctx.lookup_view()
    expected = {
        "type": CRL_TYPE,
        "issuer": res.name,
        "number": res.number,
        "this_update": iso_utc(res.this_update),
        "next_update": iso_utc(res.next_update),
        "sha256": res.sha256,
    }

    def check(index: int, entry: dict[str, Any] | None) -> bool:
        if entry is None or entry.get("type") != CRL_TYPE or entry.get("sha256") != res.sha256:
            return False
        if entry != expected:
            raise VerifyFailed(f"the log's crl/v1 entry {index} for these CRL bytes says {entry}, not {expected}")
        return True

    not_logged = (
        f"no crl/v1 entry for exactly these bytes (SHA-256 {res.sha256}) is in the log: this CRL was not "
        "logged, so it may have been shown to you alone"
    )
    if view.commitment is not None:
        _check_not_superseded(res, view.newest_crls)
        newest = view.commitment.crls.get(res.name)
        if newest is None or newest.get("sha256") != res.sha256 or int(newest["number"]) != res.number:
            raise VerifyFailed(f"{not_logged} (the log's newest CRL of {res.name}: {newest or 'none'})")
        index = int(newest["index"])
        if not check(index, view.entry(index)):
            raise SiteError(f"the log's lookup commitment names entry {index}, which is not this CRL's crl/v1 entry")
        return index
    for index in view.indices("hash", res.sha256):
        if check(index, view.entry(index)):
            return _unproven_newest(ctx, res, view, index)
    if not view.proven:  # the entry is normally among the newest: search a few bundles
        signed, fetcher = view.signed, view.fetcher
        size = signed.checkpoint.size
        scan = int(getattr(ctx.args, "scan_bundles", 8))
        last = (size - 1) // TILE_WIDTH if size else -1
        for bundle in range(last, max(last - scan, -1), -1):
            for offset, raw in reversed(list(enumerate(fetcher.bundle(bundle)))):
                index = bundle * TILE_WIDTH + offset
                if check(index, parse_entry(raw)):
                    prove_entry(ctx, fetcher, signed, index)
                    return _unproven_newest(ctx, res, view, index)
        not_logged += f" (searched the site's lookup and the newest {min(size, scan * TILE_WIDTH)} entries)"
    raise VerifyFailed(not_logged)


def _unproven_newest(ctx: Context, res: CrlResult, view: LookupView, index: int) -> int:
    if view.proven:
        _check_not_superseded(res, view.newest_crls)
    else:
        ctx.out.warn(
            f"the log has no lookup commitment, so whether it holds a CRL of {res.name} newer than number "
            f"{res.number} was not checked ({view.basis})"
        )
    return index


def crl_names(ctx: Context) -> list[str]:
    """The issuers whose CRLs must be checked: the pinned roots and CRL issuers (never what the site lists)."""
    pinned = [p.name for p in [*ctx.trust.roots, *ctx.trust.crl_issuers]]
    if not ctx.trust.crl_issuers:
        pinned += ctx.trust.intermediates or ["ica"]  # trust files without 'crl_issuers'
    return sorted(dict.fromkeys(pinned))


def cmd_crl(ctx: Context) -> int:
    pinned = crl_names(ctx)
    names = ctx.args.issuer or pinned
    for name in names:
        if ctx.trust.crl_issuers and name not in pinned:
            raise UsageError(f"--issuer {name}: not a pinned issuer; the trust file pins {', '.join(pinned)}")
    results = []
    for name in names:
        res = verify_crl(ctx, name, require_logged=ctx.args.require_logged)
        results.append(res.to_json())
        ctx.out.say(f"CRL of {name}: OK")
        ctx.out.say(f"  issuer:      {res.issuer.subject.rfc4514_string()} (chains to a pinned IKI root)")
        ctx.out.say(f"  number:      {res.number}")
        ctx.out.say(f"  thisUpdate:  {iso_utc(res.this_update)}")
        ctx.out.say(f"  nextUpdate:  {iso_utc(res.next_update)} (fresh for {_ago(res.next_update - ctx.now)} more)")
        ctx.out.say(f"  entries:     {res.entries}")
        ctx.out.say(f"  SHA-256:     {res.sha256}")
        if res.logged_at is not None:
            ctx.out.say(f"  logged:      crl/v1 entry {res.logged_at} (inclusion proved)")
    ctx.out.result["crls"] = results
    return EXIT_OK


# =====================================================================================================
# cert / link: is this an IKI certificate, chained to a pinned root, not revoked, per a fresh CRL?
# =====================================================================================================


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_verdict(
    ctx: Context, cert: x509.Certificate, extra: list[x509.Certificate], role: str | None, what: str = "certificate"
) -> tuple[int, dict[str, Any]]:
    """The verdict on an end-entity IKI certificate: trusted; revoked, expired or wrong-role (verified, no: exit
    3); untrusted or crl-unavailable. Revocation is judged before the role, so a revoked certificate says so."""
    dont = f"Do not trust this {what}."
    who = identity_of(cert, ctx.trust)
    info: dict[str, Any] = {
        "subject": cert.subject.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "sha256": cert_sha256(cert),
        "organisation": who.organisation,
        "organisation_id": who.organisation_id,
        "role": who.role,
        "not_before": iso_utc(not_before(cert)),
        "not_after": iso_utc(not_after(cert)),
    }

    def verdict(name: str, message: str, code: int) -> tuple[int, dict[str, Any]]:
        info["verdict"] = name
        info["message"] = message
        return code, info

    try:
        chain = build_chain(cert, ctx.pki.intermediates(cert, extra), ctx.pki.roots(), ctx.now)
        check_end_entity(cert, ctx.trust.eku)
    except ChainError as exc:
        return verdict("untrusted", f"{exc}. {dont}", EXIT_FAILED)
    info["chain"] = [c.subject.rfc4514_string() for c in chain]
    if ctx.now < not_before(cert):
        return verdict(
            "not-yet-valid", f"the certificate is not valid before {iso_utc(not_before(cert))}", EXIT_NOT_APPROVED
        )
    # Revocation of every certificate below the root, each against a fresh, verified CRL.
    revocation = []
    for child, issuer in zip(chain, chain[1:]):
        names = crl_names_of(child) or [n for n in [ctx.pki.name_of(issuer)] if n]
        if not names:
            return verdict("crl-unavailable", f"{describe_cert(child)} names no CRL on this site", EXIT_FAILED)
        name = names[0]
        try:
            res = verify_crl(ctx, name)
        except FetchError as exc:
            return verdict("crl-unavailable", f"{exc}. Without a fresh CRL the certificate cannot be trusted.", 2)
        except VerifyFailed as exc:
            return verdict(
                "crl-unavailable", f"{exc}. Without a fresh CRL the certificate cannot be trusted.", EXIT_FAILED
            )
        if _spki(res.issuer) != _spki(issuer):
            return verdict(
                "crl-unavailable", f"the CRL {name} is not signed by the key of {describe_cert(issuer)}", EXIT_FAILED
            )
        revocation.append({"certificate": describe_cert(child), "crl": name, "crl_number": res.number})
        rev = revoked_entry(res.crl, child.serial_number)
        if rev is not None:
            info["revoked"] = {
                "certificate": describe_cert(child),
                "date": iso_utc(rev.date),
                "reason": rev.reason,
                "invalidity_date": iso_utc(rev.invalidity) if rev.invalidity else None,
                "crl": name,
                "crl_number": res.number,
            }
            whose = "the certificate" if child is cert else f"its issuing CA {describe_cert(child)}"
            since = f", key invalid since {iso_utc(rev.invalidity)}" if rev.invalidity else ""
            return verdict(
                "revoked",
                f"{whose} was revoked on {iso_utc(rev.date)} (reason: {rev.reason}{since}) according to CRL "
                f"{name} number {res.number}. {dont}",
                EXIT_NOT_APPROVED,
            )
    info["revocation"] = revocation
    if ctx.now > not_after(cert):
        return verdict(
            "expired",
            f"the certificate expired {_ago(ctx.now - not_after(cert))} ago ({iso_utc(not_after(cert))}). {dont}",
            EXIT_NOT_APPROVED,
        )
    if role and role != "any" and who.role != role:
        return verdict(
            "wrong-role",
            f"the certificate is an IKI certificate of {who.organisation} (role {who.role or 'unknown'}), "
            f"not of the {role}. Do not trust it for this purpose.",
            EXIT_NOT_APPROVED,
        )
    return verdict(
        "trusted",
        f"an IKI certificate of {who.organisation} (ID {who.organisation_id}, role {who.role}), chained to a "
        "pinned IKI root, valid now, not revoked according to fresh CRLs",
        EXIT_OK,
    )


def _report_verdict(ctx: Context, code: int, info: dict[str, Any], what: str) -> int:
    ctx.out.result.update(info)
    ctx.out.say(f"{what}: {info['verdict'].upper()}")
    ctx.out.say(f"  {info['message']}")
    ctx.out.say(f"  subject: {info['subject']}  serial {info['serial']}")
    ctx.out.say(f"  valid:   {info['not_before']} to {info['not_after']}")
    if "chain" in info:
        ctx.out.say("  chain:   " + " <- ".join(info["chain"]))
    return code


def role_argument(ctx: Context) -> str:
    """``--role`` as a role name of the trust file (any letter case) or ``any``; UsageError otherwise."""
    given = str(ctx.args.role)
    for role in [*ctx.trust.roles, "any"]:
        if role.lower() == given.lower():
            return role
    raise UsageError(f"--role {given}: not a role; use one of {', '.join([*ctx.trust.roles, 'any'])}")


def cmd_cert(ctx: Context) -> int:
    try:
        data = Path(ctx.args.file).read_bytes()
    except OSError as exc:
        raise FetchError(f"cannot read {ctx.args.file}: {exc.strerror or exc}") from exc
    if re.search(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE", data):
        raise UsageError(f"{ctx.args.file} is a private key, not a certificate (and should not be shared)")
    try:
        certs = load_certificates(data, ctx.args.file)
    except VerifyFailed as exc:
        raise UsageError(str(exc)) from exc
    code, info = certificate_verdict(ctx, certs[0], certs[1:], role_argument(ctx))
    return _report_verdict(ctx, code, info, f"certificate {ctx.args.file}")


def fetch_tls_certificates(url: str, timeout: float, deadline: Deadline | None = None) -> list[x509.Certificate]:
    """The certificate(s) a TLS server presents (not validated here: the caller checks them against the IKI).

    ``timeout`` (and the command's ``deadline``) bound the whole exchange, connect and handshake: a
    server that answers one byte at a time is cut off, not waited for byte by byte.
    """
    parts = urlsplit(url if "://" in url else "https://" + url)
    if parts.scheme.lower() not in ("https", "tls") or not parts.hostname:
        raise UsageError(f"{url}: give an https:// URL (or host:port) of the triage endpoint")
    host, port = parts.hostname, parts.port or 443
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    # The chain is checked against the pinned IKI root below, not against the system's web roots.
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    deadline = deadline or Deadline()
    limit = min(timeout, deadline.at - time.monotonic())
    if limit <= 0:
        raise deadline.stopped(f"{host}:{port} not contacted")
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=limit) as sock:
            # One limit for the whole handshake: a timer shuts the socket, which ends any blocked read.
            guard = threading.Timer(limit, lambda: _shut(sock))
            guard.start()
            try:
                with tls.wrap_socket(sock, server_hostname=host) as conn:
                    der = conn.getpeercert(binary_form=True)
                    chain = getattr(conn, "get_unverified_chain", None)
                    extra = [c for c in (chain() or []) if isinstance(c, bytes)] if chain else []  # Python 3.13+
            finally:
                guard.cancel()
    except (socket.timeout, TimeoutError, ssl.SSLError, OSError) as exc:
        if time.monotonic() - started >= limit:
            if deadline.passed():
                raise deadline.stopped(f"no complete TLS handshake from {host}:{port} in time") from exc
            raise FetchError(f"{host}:{port}: no complete TLS handshake within {timeout:g} s (--timeout)") from exc
        if isinstance(exc, ssl.SSLError):
            raise FetchError(f"{host}:{port}: the TLS handshake failed ({exc.reason or exc})") from exc
        if isinstance(exc, (socket.timeout, TimeoutError)):
            raise FetchError(f"{host}:{port}: no answer within {timeout:g} s") from exc
        raise FetchError(f"{host}:{port}: cannot connect ({exc.strerror or exc})") from exc
    if not der:
        raise VerifyFailed(f"{host}:{port} presented no certificate")
    certs = [x509.load_der_x509_certificate(der)]
    for item in extra[1:]:
        try:
            certs.append(x509.load_der_x509_certificate(bytes(item)))
        except ValueError:
            continue
    return certs


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: the handshake ended by itself
        sock.shutdown(socket.SHUT_RDWR)


def cmd_link(ctx: Context) -> int:
    certs = fetch_tls_certificates(ctx.args.url, float(ctx.args.timeout), ctx.deadline)
    code, info = certificate_verdict(ctx, certs[0], certs[1:], role_argument(ctx), "endpoint")
    info["endpoint"] = ctx.args.url
    return _report_verdict(ctx, code, info, f"triage link {ctx.args.url}")


# =====================================================================================================
# inclusion: is this firmware hash approved, for which device models, and was it replaced later?
# =====================================================================================================


def _party(entry: dict[str, Any], key: str) -> dict[str, Any]:
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def describe_association(index: int, entry: dict[str, Any]) -> dict[str, Any]:
    mid, model, hw, fw = _model_of(entry)
    man, end = _party(entry, "manufacturer"), _party(entry, "endorser")
    out: dict[str, Any] = {
        "index": index,
        "image_sha256": entry.get("image_sha256"),
        "device_model": {"manufacturer_id": mid, "model_id": model, "hardware_version": hw, "firmware_version": fw},
        "device_type": entry.get("device_type"),
        "smets_version": entry.get("smets_version"),
        "manufacturer": {"organisation": man.get("organisation"), "organisation_id": man.get("organisation_id")},
        "endorser": {
            "organisation": end.get("organisation"),
            "organisation_id": end.get("organisation_id"),
            "role": end.get("role"),
        },
        "approved_at": entry.get("approved_at"),
        "panel_ref": entry.get("panel_ref"),
        "submission_id": entry.get("submission_id"),
    }
    if isinstance(entry.get("replaces"), dict):
        out["replaces"] = entry["replaces"]
    return out


def _say_association(ctx: Context, a: dict[str, Any]) -> None:
    m = a["device_model"]
    ctx.out.say(f"log index {a['index']}: image {a['image_sha256']}")
    ctx.out.say(
        f"  device model:  manufacturer {m['manufacturer_id']}, model {m['model_id']!r}, hardware "
        f"{m['hardware_version']!r}, firmware {m['firmware_version']!r} ({a['device_type']}, {a['smets_version']})"
    )
    ctx.out.say(f"  manufacturer:  {a['manufacturer']['organisation']} (ID {a['manufacturer']['organisation_id']})")
    e = a["endorser"]
    ctx.out.say(f"  endorsed by:   {e['organisation']} (ID {e['organisation_id']}, {e['role']})")
    ctx.out.say(
        f"  approved at:   {a['approved_at']} (Panel reference {a['panel_ref']}, submission {a['submission_id']})"
    )
    if "replaces" in a:
        r = a["replaces"]
        ctx.out.say(f"  replaces:      log index {r.get('index')} (investigation {r.get('investigation_ref')})")


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def parse_image_hash(text: str) -> str:
    """A SHA-256 as users paste it: HEX, ``sha256:HEX`` or a ``sha256sum`` line; UsageError says what was wrong."""
    value = text.strip()
    if value.lower().startswith("sha256:"):
        value = value[len("sha256:") :]
    value = value.split()[0] if value.split() else ""
    value = value.lstrip("\\").lower()  # sha256sum escapes lines of odd file names with a backslash
    if not _HEX64_RE.fullmatch(value):
        digits = sum(c in "0123456789abcdef" for c in value)
        raise UsageError(
            f"--hash must be a SHA-256: 64 hex digits (also accepted: sha256:HEX, or a sha256sum output line); "
            f"got {len(value)} characters, {digits} of them hex digits"
        )
    return value


def _signer_certificates(
    ctx: Context, entry: dict[str, Any]
) -> tuple[dict[str, x509.Certificate], list[x509.Certificate]]:
    """The certificates in the entry's published signature files, by SHA-256 (each file checked by its hash)."""
    evidence = entry.get("evidence")
    files = evidence.get("signatures") if isinstance(evidence, dict) else None
    found: dict[str, x509.Certificate] = {}
    for digest in files if isinstance(files, list) else []:
        if not isinstance(digest, str) or not _HEX64_RE.fullmatch(digest):
            continue
        data = ctx.need_log().get_optional(f"evidence/{digest}", CAP_EVIDENCE, f"evidence {digest}")
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            continue
        try:
            _, certs = cms_certificates(data, f"evidence/{digest}")
        except CMSError:
            continue
        for cert, _ in certs:
            found[cert_sha256(cert)] = cert
    return found, list(found.values())


def key_compromise_before(rev: Revoked, at: datetime) -> bool:
    """Whether a revocation makes a signature at ``at`` untrustworthy: revoked before it, or key invalid from before."""
    return rev.date < at or (rev.invalidity is not None and rev.invalidity <= at)


def signer_standing(ctx: Context, entry: dict[str, Any]) -> list[str]:
    """Why the signers of an approval cannot be relied on (empty if they can): keys revoked or invalid before it.

    Each signer certificate (by the SHA-256 the signed entry names) is taken
    from the published signature files and checked, with every CA below the
    pinned root, against the pinned issuers' fresh, verified CRLs.
    """
    try:
        at = parse_iso(str(entry.get("approved_at")))
    except ValueError:
        return ["the entry's approval time is malformed"]
    certs, pool = _signer_certificates(ctx, entry)
    reasons = []
    for party in ("manufacturer", "endorser"):
        fp = _party(entry, party).get("certificate_sha256")
        cert = certs.get(str(fp))
        if cert is None:
            reasons.append(f"the {party}'s certificate ({fp}) is not in the published signature files")
            continue
        try:
            chain = build_chain(cert, ctx.pki.intermediates(cert, pool), ctx.pki.roots(), at)
        except ChainError as exc:
            reasons.append(f"the {party}'s certificate did not chain to a pinned root at the approval time: {exc}")
            continue
        for child, issuer in zip(chain, chain[1:]):
            names = crl_names_of(child) or [n for n in [ctx.pki.name_of(issuer)] if n]
            if not names:
                reasons.append(f"{describe_cert(child)} names no CRL, so its revocation cannot be checked")
                continue
            rev = revoked_entry(verify_crl(ctx, names[0]).crl, child.serial_number)
            if rev is not None and key_compromise_before(rev, at):
                since = iso_utc(rev.invalidity) if rev.invalidity and rev.invalidity < rev.date else iso_utc(rev.date)
                reasons.append(
                    f"the {party}'s {'certificate' if child is cert else 'issuing CA ' + describe_cert(child)} was "
                    f"revoked ({rev.reason}), its key invalid from {since}, before the approval at {iso_utc(at)}"
                )
    return reasons


def _annotate(ctx: Context, view: LookupView, a: dict[str, Any], entry: dict[str, Any]) -> None:
    """Add the replacement history and the standing of the signers to association ``a``."""
    m = a["device_model"]
    key = model_lookup_key(m["manufacturer_id"], m["model_id"], m["hardware_version"], m["firmware_version"])
    later = [i for i in view.indices("model", key) if i > a["index"]]
    a["replaced_by"] = None
    for j in later:
        other = view.entry(j)
        if other is None or other.get("type") != ASSOCIATION_TYPE or _model_of(other) != tuple(m.values()):
            raise SiteError(f"the model lookup lists index {j}, which is not an association of this model")
        if a["replaced_by"] is None:
            a["replaced_by"] = j
            rep = other.get("replaces")
            if not isinstance(rep, dict) or rep.get("index") != a["index"]:
                ctx.out.warn(
                    f"entry {j} associates another hash with the model of entry {a['index']} without naming "
                    "it as replaced (run 'audit' to check the whole history)"
                )
    a["current"] = a["replaced_by"] is None
    a["proven"] = view.proven
    a["signer_problems"] = signer_standing(ctx, entry) if a["current"] else []


def _verdict_of(a: dict[str, Any], allow_replaced: bool) -> str:
    if a["signer_problems"]:
        return "signer-compromised"
    if not a["current"]:
        return "replaced-allowed" if allow_replaced else "replaced"
    return "current" if a["proven"] else "current-unproven"


def _say_verdict(ctx: Context, a: dict[str, Any], view: LookupView) -> None:
    verdict = a["verdict"]
    if verdict in ("replaced", "replaced-allowed"):
        ctx.out.say(f"  REPLACED:      by log index {a['replaced_by']}; this hash is no longer current for the model")
    elif verdict == "signer-compromised":
        for reason in a["signer_problems"]:
            ctx.out.say(f"  NOT APPROVED:  {reason}")
    elif verdict == "current":
        ctx.out.say("  status:        CURRENT for its device model (proven: no later association of the model)")
    else:
        ctx.out.say("  status:        current for its device model per the site's lookup, NOT PROVEN")
    if not view.proven:
        ctx.out.say(f"  basis:         {view.basis}")


def _exit_for(verdicts: list[str]) -> int:
    good = ("current", "replaced-allowed")
    return EXIT_OK if verdicts and all(v in good for v in verdicts) else EXIT_NOT_APPROVED


def cmd_inclusion(ctx: Context) -> int:
    try:
        return _inclusion(ctx)
    except LookupMismatch:
        # A web cache may serve a checkpoint older than the lookup files; with the newest one, ask again.
        if not refresh_latest(ctx):
            raise
        ctx.out.result = {}
        return _inclusion(ctx)


def _inclusion(ctx: Context) -> int:
    args = ctx.args
    if args.proof:
        return inclusion_offline(ctx)
    if args.index is not None and args.index < 0:
        raise UsageError(f"--index must be a log index (0 or more), not {args.index}")
    image = None
    if args.file:
        image = _sha256_file(args.file)
    elif args.hash:
        image = parse_image_hash(args.hash)
    if image is None and not args.model and args.index is None:
        raise UsageError("give --hash HEX, --file IMAGE, --model MID MODEL HW FW, --index N or --proof FILE")
    signed, fetcher = latest_checkpoint(ctx)
    size = signed.checkpoint.size
    ctx.out.result["checkpoint"] = {"size": size, "root": b64encode(signed.checkpoint.root)}
    if args.index is not None:
        return _inclusion_at_index(ctx, fetcher, signed)
    view = LookupView(ctx, fetcher, signed)
    ctx.out.result["lookup"] = view.report()
    ctx.out.result["query"] = {"image_sha256": image, "device_model": list(args.model) if args.model else None}
    if image is not None:
        kind, key = "hash", image
    else:
        kind, key = "model", model_lookup_key(*args.model)
    found: list[dict[str, Any]] = []
    other_models: list[dict[str, Any]] = []
    for index in view.indices(kind, key):
        entry = view.entry(index)
        if entry is None or entry.get("type") != ASSOCIATION_TYPE:
            if kind == "hash" and entry is not None and entry.get("type") == CRL_TYPE:
                continue  # a CRL with this SHA-256, not a firmware image
            raise SiteError(f"the site's {kind} lookup points at log index {index}, which is not an association")
        if image is not None and entry.get("image_sha256") != image:
            raise SiteError(
                f"the site's lookup points at log index {index} for image {image}, but that entry (verified) is "
                f"for image {entry.get('image_sha256')}: the lookup is wrong or tampered with"
            )
        if kind == "model" and model_lookup_key(*_model_of(entry)) != key:
            raise SiteError(f"the site's model lookup points at log index {index}, an entry of another model")
        a = describe_association(index, entry)
        if args.model and tuple(args.model) != _model_of(entry):
            other_models.append(a)
            continue
        _annotate(ctx, view, a, entry)
        a["verdict"] = _verdict_of(a, args.allow_replaced)
        found.append(a)
    ctx.out.result["associations"] = found
    what = f"image hash {image}" if image else "device model " + "/".join(args.model)
    proven = "proven by " + view.basis if view.proven else "NOT PROVEN: " + view.basis
    if not found:
        ctx.out.result["found"] = False
        ctx.out.result["verdict"] = "not-found" if view.proven else "not-found-unproven"
        if other_models:
            ctx.out.result["other_models"] = other_models
            models = "; ".join(f"index {o['index']}: " + "/".join(o["device_model"].values()) for o in other_models)
            ctx.out.say(f"NOT APPROVED FOR THIS MODEL: {what} is logged, but only for other device models ({models}).")
        else:
            ctx.out.say(f"NOT FOUND: no association of {what} is in the log (size {size}); {proven}.")
            ctx.out.say("  This image is not on the CPL according to this log; do not install it as approved.")
        return EXIT_NOT_APPROVED
    ctx.out.result["found"] = True
    if args.save_proof:
        if len(found) > 1:
            raise UsageError(
                f"--save-proof: {len(found)} entries match ({', '.join(str(a['index']) for a in found)}); choose one "
                "with --model or --index"
            )
        save_proof(ctx, fetcher, signed, found[0]["index"])
    verdicts = [a["verdict"] for a in found]
    ctx.out.result["verdict"] = verdicts[0] if len(set(verdicts)) == 1 else "mixed"
    ctx.out.say(f"FOUND in the log (size {size}; every entry proved against the signed checkpoint; {proven}):")
    for a in found:
        _say_association(ctx, a)
        _say_verdict(ctx, a, view)
    return _exit_for(verdicts)


def save_proof(ctx: Context, fetcher: TileFetcher, signed: SignedCheckpoint, index: int) -> None:
    """``--save-proof FILE``: a c2sp.org/tlog-proof@v1 file for entry ``index`` under the verified checkpoint,
    the entry in its ``extra`` line, so the file alone proves it offline (``inclusion --proof FILE``)."""
    path = Path(ctx.args.save_proof).expanduser()
    try:
        path.write_text(tlog_proof_of(fetcher, signed, index).encode())
    except OSError as exc:
        raise UsageError(f"--save-proof: cannot write {path}: {exc.strerror or exc}") from exc
    ctx.out.result["saved_proof"] = str(path)
    ctx.out.say(f"proof of entry {index} saved to {path} (c2sp.org/tlog-proof@v1; check it with --proof {path})")


def tlog_proof_of(
    fetcher: TileFetcher, signed: SignedCheckpoint, index: int, hash_range: HashRange | None = None
) -> TlogProof:
    """The c2sp.org/tlog-proof@v1 of entry ``index`` under the verified checkpoint, the entry in its ``extra``
    line (so the proof alone proves it offline); the proof is verified before it is returned. ``hash_range``:
    the fetcher's, or one that remembers its answers (many proofs in one bundle share most of their hashes)."""
    cp = signed.checkpoint
    entry = fetcher.bundle(index // TILE_WIDTH)[index % TILE_WIDTH]
    proof = tuple(inclusion_proof(index, cp.size, hash_range or fetcher.hash_range()))
    try:
        verify_inclusion(index, cp.size, leaf_hash(entry), proof, cp.root)  # what is saved verifies
    except ProofError as exc:
        raise VerifyFailed(
            f"entry {index} is not proved to be in the log: {fetcher.blame(cp.root)}; "
            "the site's data is damaged or tampered with"
        ) from exc
    return TlogProof(index, proof, signed.raw, entry)


def _inclusion_at_index(ctx: Context, fetcher: TileFetcher, signed: SignedCheckpoint) -> int:
    """``--index N`` (optionally with ``--entry FILE``): that entry, proved; an association gets its verdict."""
    args = ctx.args
    size = signed.checkpoint.size
    if args.index >= size:
        raise UsageError(f"--index {args.index} is outside the log (size {size}: indices 0 to {size - 1})")
    if args.entry is not None:  # the entry at hand: only hash tiles are needed (logs without bundles too)
        entry_bytes = _read_local(args.entry)
        prove_leaf(fetcher, signed, args.index, leaf_hash(entry_bytes), f"the bytes of {args.entry}")
    else:
        entry_bytes = prove_entry(ctx, fetcher, signed, args.index)
    entry = parse_entry(entry_bytes)
    ctx.out.result["index"] = args.index
    ctx.out.result["entry"] = entry if entry is not None else b64encode(entry_bytes)
    if args.save_proof:
        save_proof(ctx, fetcher, signed, args.index)
    ctx.out.say(f"entry {args.index} is in the log (size {size}), proved against the signed checkpoint:")
    if entry is None or entry.get("type") != ASSOCIATION_TYPE:
        ctx.out.say("  " + entry_bytes.decode("utf-8", "replace"))
        return EXIT_OK
    view = LookupView(ctx, fetcher, signed)
    ctx.out.result["lookup"] = view.report()
    a = describe_association(args.index, entry)
    _annotate(ctx, view, a, entry)
    a["verdict"] = _verdict_of(a, args.allow_replaced)
    ctx.out.result["associations"] = [a]
    ctx.out.result["verdict"] = a["verdict"]
    _say_association(ctx, a)
    _say_verdict(ctx, a, view)
    return _exit_for([a["verdict"]])


def _read_local(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc


def inclusion_offline(ctx: Context) -> int:
    """``--proof FILE``: a c2sp.org/tlog-proof@v1 file, checked without the site if the entry is at hand."""
    args = ctx.args
    try:
        proof = parse_tlog_proof(_read_local(args.proof))
    except CheckpointError as exc:
        raise VerifyFailed(f"{args.proof}: {exc}") from exc
    if args.entry:
        entry_bytes = _read_local(args.entry)
    elif proof.extra is not None:
        entry_bytes = proof.extra  # authenticated by the inclusion proof below
    elif ctx.log is not None:
        cp = parse_unverified(proof.checkpoint)
        entry_bytes = TileFetcher(ctx.log, cp.size).bundle(proof.index // TILE_WIDTH)[proof.index % TILE_WIDTH]
    else:
        raise UsageError("give --entry FILE (the entry's bytes) with --proof, or --site to fetch the entry")
    signed = verify_checkpoint_note(ctx, proof.checkpoint, args.proof)
    cp = signed.checkpoint
    try:
        verify_inclusion(proof.index, cp.size, leaf_hash(entry_bytes), proof.proof, cp.root)
    except ProofError as exc:
        raise VerifyFailed(f"{args.proof}: the entry is not proved to be at index {proof.index}: {exc}") from exc
    remembered = ctx.state.checkpoint(ctx.origin)
    if remembered is not None:
        old = open_checkpoint(remembered, ctx.origin, ctx.trust.verifiers)
        o, n = old.checkpoint, signed.checkpoint
        if o.size == n.size and o.root != n.root:
            raise VerifyFailed(
                "fork: the proof's checkpoint and the one remembered in --state are different trees of the same size",
                evidence=fork_evidence(old.raw, signed.raw),
            )
    entry = parse_entry(entry_bytes)
    image = parse_image_hash(args.hash) if args.hash else (_sha256_file(args.file) if args.file else None)
    if image and (entry is None or entry.get("image_sha256") != image):
        raise VerifyFailed(f"the proved entry is not for image {image}")
    ctx.out.result["index"] = proof.index
    ctx.out.result["checkpoint"] = {"size": signed.checkpoint.size, "root": b64encode(signed.checkpoint.root)}
    ctx.out.say(f"entry {proof.index} is in the log at size {signed.checkpoint.size} (offline proof {args.proof})")
    if entry is not None and entry.get("type") == ASSOCIATION_TYPE:
        a = describe_association(proof.index, entry)
        a["verdict"] = "logged"
        a["proven"] = False
        ctx.out.result["associations"] = [a]
        ctx.out.result["verdict"] = "logged"
        ctx.out.result["lookup"] = {"proven": False, "basis": "offline: later replacements and revocations not checked"}
        _say_association(ctx, a)
        ctx.out.say("  NOT CHECKED:   later replacements and the signers' revocation (offline); run 'inclusion --hash'")
        ctx.out.say("                 against the site for the current verdict")
        return EXIT_OK if args.allow_replaced else EXIT_NOT_APPROVED
    ctx.out.result["entry"] = entry if entry is not None else b64encode(entry_bytes)
    ctx.out.say("  " + entry_bytes.decode("utf-8", "replace"))
    return EXIT_OK


# =====================================================================================================
# consistency / monitor
# =====================================================================================================


def cmd_consistency(ctx: Context) -> int:
    remembered = ctx.state.checkpoint(ctx.origin)
    against = getattr(ctx.args, "against", None)
    if against:
        try:
            data = Path(against).read_bytes()
        except OSError as exc:
            raise FetchError(f"cannot read {against}: {exc.strerror or exc}") from exc
        old = verify_checkpoint_note(ctx, data, against)
        signed, fetcher = latest_checkpoint(ctx)
        check_consistent(ctx, fetcher, old, signed, f"in {against}")
        remembered = old.raw
    else:
        signed, fetcher = latest_checkpoint(ctx)
    cp = signed.checkpoint
    ctx.out.result["checkpoint"] = {"origin": cp.origin, "size": cp.size, "root": b64encode(cp.root)}
    ctx.out.result["requests"] = ctx.need_log().stats.requests
    if remembered is None:
        ctx.out.result["previous"] = None
        ctx.out.say(f"checkpoint verified: {cp.origin}, size {cp.size}, root {b64encode(cp.root)}")
        if ctx.state.enabled:
            ctx.out.say("  first run with this state folder: remembered it; later runs prove the log only grew")
        else:
            ctx.out.say("  (no --state: nothing to compare with; give --state DIR to detect forks and rollbacks)")
        return EXIT_OK
    old_cp = parse_unverified(remembered)
    ctx.out.result["previous"] = {"size": old_cp.size, "root": b64encode(old_cp.root)}
    ctx.out.say(f"checkpoint verified: {cp.origin}, size {cp.size}, root {b64encode(cp.root)}")
    if old_cp.size == cp.size:
        ctx.out.say(f"  same tree as before (size {cp.size}): no change")
    else:
        ctx.out.say(
            f"  consistent with the earlier checkpoint of size {old_cp.size}: the log only grew, nothing changed"
        )
    return EXIT_OK


def cmd_monitor(ctx: Context) -> int:
    count = int(ctx.args.count)
    n = 0
    while True:
        ctx._latest = None
        ctx.need_log().deadline.restart()  # --deadline applies to each check
        code = cmd_consistency(ctx)
        ctx.state.save()
        n += 1
        if code != EXIT_OK or (count and n >= count) or not ctx.args.interval:
            return code
        time.sleep(float(ctx.args.interval))


# =====================================================================================================
# watch: alerts for manufacturers: every entry since the last run that names a manufacturer or uses its
# certificates, each proved against the verified checkpoint, remembered per watch in --state
# =====================================================================================================

EXIT_NEW_ENTRIES = 4  # watch: verified, and new entries naming the manufacturer(s) appeared
EXIT_UNEXPECTED = 5  # watch: verified, new entries appeared, and at least one is flagged (Watch.flags)

_FINGERPRINT_PREFIX_RE = re.compile(r"^(?:sha-?256(?: fingerprint)?\s*[:=]\s*)", re.IGNORECASE)


def parse_certificate_sha256(text: str) -> str:
    """A certificate's SHA-256 as users paste it: HEX, ``sha256:HEX``, colon-separated pairs, or the
    ``sha256 Fingerprint=AB:CD:...`` line of ``openssl x509 -fingerprint -sha256``; UsageError otherwise."""
    value = _FINGERPRINT_PREFIX_RE.sub("", text.strip())
    value = value.replace(":", "").replace(" ", "").lower()
    if not _HEX64_RE.fullmatch(value):
        raise UsageError(
            f"--certificate {text!r}: give the SHA-256 of the certificate's DER (64 hex digits; also accepted: "
            "sha256:HEX, AB:CD:... pairs, and openssl's 'sha256 Fingerprint=' line)"
        )
    return value


@dataclass(frozen=True)
class Watch:
    """What one ``watch`` looks for: manufacturer IDs (as device models name them) and certificate SHA-256s."""

    manufacturers: tuple[str, ...]
    certificates: tuple[str, ...]

    @property
    def key(self) -> str:
        """Its name in --state: two watches of other manufacturers or certificates keep separate positions."""
        query = {"certificates": list(self.certificates), "manufacturers": list(self.manufacturers)}
        return canonical_json(query).decode()

    def matched_by(self, entry: dict[str, Any]) -> list[str]:
        """Which fields of an association entry make it one of this watch's (empty: not one)."""
        man, end = _party(entry, "manufacturer"), _party(entry, "endorser")
        found = []
        if _model_of(entry)[0] in self.manufacturers:
            found.append("device_model.manufacturer_id")
        if str(man.get("organisation_id", "")) in self.manufacturers:
            found.append("manufacturer.organisation_id")
        if str(man.get("certificate_sha256", "")).lower() in self.certificates:
            found.append("manufacturer.certificate_sha256")
        if str(end.get("certificate_sha256", "")).lower() in self.certificates:
            found.append("endorser.certificate_sha256")
        return found

    def flags(self, entry: dict[str, Any], matched: list[str]) -> list[dict[str, str]]:
        """The findings about a matched entry that need a person's attention (exit 5): ``unexpected-signer``,
        a watched manufacturer's entry whose Manufacturer signature is by a certificate not listed (judged only
        when certificates are listed), and ``other-manufacturer``, a watched certificate or organisation ID
        that signed another manufacturer's device model."""
        man = _party(entry, "manufacturer")
        mid = _model_of(entry)[0]
        cert = str(man.get("certificate_sha256", "")).lower()
        out = []
        names_us = "device_model.manufacturer_id" in matched or "manufacturer.organisation_id" in matched
        if names_us and self.certificates and cert not in self.certificates:
            out.append(
                {
                    "flag": "unexpected-signer",
                    "message": f"the entry names manufacturer {mid} but its Manufacturer signature is by the "
                    f"certificate {cert} ({man.get('organisation')}, ID {man.get('organisation_id')}), which is not "
                    "in the --certificate list: a certificate issued in this name that you did not list",
                }
            )
        if "device_model.manufacturer_id" not in matched:
            out.append(
                {
                    "flag": "other-manufacturer",
                    "message": f"the entry is for a device model of manufacturer {mid}, which is not watched, but "
                    f"matched by {', '.join(matched)}: a watched certificate or organisation signed another "
                    "manufacturer's model",
                }
            )
        return out


def watch_of(args: argparse.Namespace) -> Watch:
    ids = []
    for given in args.manufacturer or []:
        mid = str(given).strip()
        if not mid:
            raise UsageError("--manufacturer: give a manufacturer ID (as the CPL's device models name it)")
        ids.append(mid)
    if not ids:
        raise UsageError("watch needs at least one --manufacturer ID")
    certs = [parse_certificate_sha256(c) for c in args.certificate or []]
    return Watch(tuple(sorted(set(ids))), tuple(sorted(set(certs))))


def proved_bundle(ctx: Context, fetcher: TileFetcher, signed: SignedCheckpoint, bundle: int) -> list[bytes]:
    """The entries of ``bundle``, every one authenticated against the verified checkpoint by one proof.

    The inclusion proof is the bundle's first entry's, and its hashes inside the bundle's subtree (the
    siblings at heights 0 to 7) are computed from the bundle's own entries, never taken from a published
    tile: a proof that verifies fixes every entry of the bundle (changing any one changes one of those
    hashes). So a bundle costs one proof, O(log n), and reading k new entries O(k + log n) hashes.
    """
    cp = signed.checkpoint
    entries = fetcher.bundle(bundle)
    own = fetcher.bundle_hashes[bundle]

    def read(tile: Tile) -> list[bytes]:
        return own if tile.level == 0 and tile.index == bundle else fetcher.read_tile(tile)

    first = bundle * TILE_WIDTH
    try:
        proof = inclusion_proof(first, cp.size, tile_hash_range(cp.size, read))
        verify_inclusion(first, cp.size, own[0], proof, cp.root)
    except ProofError as exc:
        last = first + len(entries) - 1
        raise VerifyFailed(
            f"entries {first} to {last} are not proved to be in the log: {fetcher.blame(cp.root)}; the site's data "
            "is damaged or tampered with"
        ) from exc
    return entries


def remembering(hash_range: HashRange) -> HashRange:
    """``hash_range``, each answer computed once."""
    known: dict[tuple[int, int], bytes] = {}

    def cached(start: int, end: int) -> bytes:
        key = (start, end)
        if key not in known:
            known[key] = hash_range(start, end)
        return known[key]

    return cached


def _watch_position(ctx: Context, w: Watch, fetcher: TileFetcher, signed: SignedCheckpoint) -> int | None:
    """The first index this watch has not reported (None: never run with this --state), after proving the
    checkpoint it stopped at a prefix of ``signed`` (a rewritten history under reported entries is a fork)."""
    watches = ctx.state.data.get("watch")
    logs = watches.get(ctx.origin) if isinstance(watches, dict) else None
    record = logs.get(w.key) if isinstance(logs, dict) else None
    if record is None:
        return None
    where = f"where this watch stopped (--state {ctx.args.state})"
    try:
        position = int(record["next_index"])
        old = open_checkpoint(str(record["checkpoint"]), ctx.origin, ctx.trust.verifiers)
    except (KeyError, TypeError, ValueError, CheckpointError) as exc:
        raise UsageError(
            f"the state folder's record of this watch is unreadable ({exc}); use another --state folder"
        ) from exc
    if position != old.checkpoint.size:
        raise UsageError("the state folder's record of this watch is inconsistent; use another --state folder")
    check_consistent(ctx, fetcher, old, signed, where)
    return position


def cmd_watch(ctx: Context) -> int:
    """Report every entry since the last run that names the watched manufacturer(s) or uses the watched
    certificates, each proved; remember where it stopped only once all of it is verified."""
    w = watch_of(ctx.args)
    if not ctx.state.enabled:
        raise UsageError(
            "watch needs --state DIR: it remembers there which entries it has already reported (and the checkpoint, "
            "to detect a fork or rollback); without it every run would report the whole history again"
        )
    signed, fetcher = latest_checkpoint(ctx)
    cp = signed.checkpoint
    position = _watch_position(ctx, w, fetcher, signed)
    first_run = position is None
    start = (cp.size if ctx.args.since_now else 0) if position is None else position
    res = ctx.out.result
    res["watch"] = {"manufacturers": list(w.manufacturers), "certificates": list(w.certificates)}
    res["checkpoint"] = {"origin": cp.origin, "size": cp.size, "root": b64encode(cp.root), "note": signed.raw}
    res["first_run"] = first_run
    res["range"] = {"start": start, "end": cp.size}
    certs = f"; certificates {', '.join(c[:16] + '...' for c in w.certificates)}" if w.certificates else ""
    ctx.out.say(f"watching manufacturer {', '.join(w.manufacturers)}{certs}")
    ctx.out.say(f"checkpoint verified: {cp.origin}, size {cp.size}, root {b64encode(cp.root)}")
    if first_run and ctx.args.since_now:
        ctx.out.say(f"  first run with --since-now: the {cp.size} entries logged so far are not reported")
    elif first_run:
        ctx.out.say(f"  first run with this state folder: reading the whole history ({cp.size} entries)")
    matches: list[dict[str, Any]] = []
    proofs: dict[int, TlogProof] = {}
    bundles = range(start // TILE_WIDTH, (cp.size + TILE_WIDTH - 1) // TILE_WIDTH) if start < cp.size else range(0)
    for bundle in bundles:
        ctx.out.progress(f"reading entries: {max(start, bundle * TILE_WIDTH):,} of {cp.size:,}")
        ranges = remembering(fetcher.hash_range())  # one bundle's proofs share most hashes: kept per bundle
        for offset, raw in enumerate(proved_bundle(ctx, fetcher, signed, bundle)):
            index = bundle * TILE_WIDTH + offset
            if index < start:
                continue
            entry = parse_entry(raw)
            if entry is None or entry.get("type") != ASSOCIATION_TYPE:
                continue
            matched = w.matched_by(entry)
            if matched:
                proofs[index] = tlog_proof_of(fetcher, signed, index, ranges)
                matches.append(_watch_match(proofs[index], cp.size, raw, entry, w, matched))
    ctx.out.progress("")
    if ctx.args.save_proofs and matches:
        _save_watch_proofs(ctx, proofs, matches)
    flagged = sum(1 for m in matches if m["flags"])
    res["matches"] = matches
    res["new"] = len(matches)
    res["flagged"] = flagged
    what = f"manufacturer {', '.join(w.manufacturers)}" + (" or a watched certificate" if w.certificates else "")
    read = f"entries {start} to {cp.size - 1} read, each bundle proved against the signed checkpoint"
    if not matches:
        said = read if start < cp.size else f"no entry added since size {start}"
        ctx.out.say(f"NOTHING NEW for {what}: {said}")
    else:
        n = len(matches)
        ctx.out.say(f"NEW: {n} entr{'y' if n == 1 else 'ies'} for {what}" + (f", {flagged} FLAGGED" if flagged else "")
                    + f" ({read}):")  # fmt: skip
        for m in matches:
            _say_watch_match(ctx, m)
    watches = ctx.state.data.get("watch")
    if not isinstance(watches, dict):
        watches = ctx.state.data["watch"] = {}
    if not isinstance(watches.get(ctx.origin), dict):
        watches[ctx.origin] = {}
    watches[ctx.origin][w.key] = {
        "manufacturers": list(w.manufacturers),
        "certificates": list(w.certificates),
        "next_index": cp.size,
        "checkpoint": signed.raw,
        "updated_at": iso_utc(datetime.now(UTC).replace(microsecond=0)),
    }
    if flagged:
        return EXIT_UNEXPECTED
    return EXIT_NEW_ENTRIES if matches else EXIT_OK


def _watch_match(
    proof: TlogProof, size: int, raw: bytes, entry: dict[str, Any], w: Watch, matched: list[str]
) -> dict[str, Any]:
    """What ``watch`` reports of a matched entry: the association, who signed with which certificate, why it
    matched, what is flagged, and its inclusion proof (verified)."""
    a = describe_association(proof.index, entry)
    for party in ("manufacturer", "endorser"):
        p = _party(entry, party)
        a[party] = {k: p.get(k) for k in ("organisation", "organisation_id", "role", "certificate_sha256")}
    a["manufacturer_name"] = entry.get("manufacturer_name")
    a["replaces"] = entry.get("replaces") if isinstance(entry.get("replaces"), dict) else None
    a["matched_by"] = matched
    a["flags"] = w.flags(entry, matched)
    a["proof"] = {
        "leaf_hash": b64encode(leaf_hash(raw)),
        "checkpoint_size": size,
        "hashes": [b64encode(h) for h in proof.proof],
        "saved": None,
    }
    return a


def _save_watch_proofs(ctx: Context, proofs: dict[int, TlogProof], matches: list[dict[str, Any]]) -> None:
    """``--save-proofs DIR``: ``DIR/<index>.tlog-proof`` per reported entry (c2sp.org/tlog-proof@v1, the entry
    in its ``extra`` line: ``inclusion --proof FILE`` checks it offline)."""
    folder = Path(ctx.args.save_proofs).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for m in matches:
            path = folder / f"{m['index']}.tlog-proof"
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(proofs[m["index"]].encode())
            os.replace(tmp, path)
            m["proof"]["saved"] = str(path)
    except OSError as exc:
        raise FetchError(f"--save-proofs: cannot write in {folder}: {exc.strerror or exc}") from exc


def _say_watch_match(ctx: Context, m: dict[str, Any]) -> None:
    _say_association(ctx, {k: v for k, v in m.items() if v is not None or k != "replaces"})
    man, end = m["manufacturer"], m["endorser"]
    ctx.out.say(f"  certificates:  manufacturer {man['certificate_sha256']}")
    ctx.out.say(f"                 endorser     {end['certificate_sha256']}")
    if m["replaces"] is None:
        ctx.out.say("  replaces:      no earlier entry")
    ctx.out.say(f"  matched by:    {', '.join(m['matched_by'])}")
    p = m["proof"]
    saved = f"; saved to {p['saved']}" if p["saved"] else ""
    ctx.out.say(f"  proof:         leaf hash {p['leaf_hash']}, included in the checkpoint of size "
                f"{p['checkpoint_size']}{saved}")  # fmt: skip
    for f in m["flags"]:
        ctx.out.say(f"  {f['flag'].upper().replace('-', ' ')}: {f['message']}")


# =====================================================================================================
# audit: the whole log, every tile and the root recomputed, every entry's evidence re-verified, and the
# submission rules above judged again over the whole history
# =====================================================================================================


@dataclass
class Evidence:
    """One submission's evidence, fetched and checked once for all its entries."""

    problems: list[str] = field(default_factory=list)
    signers: dict[str, CmsSigner] = field(default_factory=dict)  # certificate SHA-256 -> its first SignerInfo
    every: list[CmsSigner] = field(default_factory=list)  # every SignerInfo (one certificate may sign twice)
    identities: dict[str, Identity] = field(default_factory=dict)  # certificate SHA-256 -> subject identity
    certs: list[x509.Certificate] = field(default_factory=list)
    rows: set[SheetRow] = field(default_factory=set)  # the good rows, row numbers zeroed for comparison
    readable: bool = False
    request: Request | None = None  # None: unpublished or unreadable (a problem already says so)


class Auditor:
    """The ``audit`` command: the whole log, streaming one bundle at a time, in parts with one job each.

    ``Tree``: every entry bundle and hash tile, recomputed up to the signed root. ``Entries``: each entry's
    format and type, and the log's history (the submission rules with the log as it stood, CRL numbers,
    lookup commitments). ``Signatures``: each association's evidence files, CMS signatures and signer
    certificates at the approval time. ``Report``: the problems and warnings all of them find. (The parts
    are nested here so that every message the audit can report is read in one place by
    tests/test_audit_matrix.py.)
    """

    class Report:
        """The audit's problems, shown as they are found, and its warnings, grouped by certificate at the end
        (at most ``max_shown`` of each)."""

        def __init__(self, out: Output, max_shown: int) -> None:
            self.out = out
            self.max_shown = max_shown
            self.problems: list[dict[str, Any]] = []
            self.problem_count = 0
            self.warned: dict[tuple[str, str], dict[str, Any]] = {}  # (certificate SHA-256, text) -> entries
            self.warning_count = 0

        def problem(self, index: int | None, text: str) -> None:
            self.problem_count += 1
            where = f"entry {index}" if index is not None else "log"
            if len(self.problems) < self.max_shown:
                self.problems.append({"index": index, "problem": text})
                self.out.say_now(f"PROBLEM {where}: {text}")

        def warning(self, index: int, cert: x509.Certificate, text: str) -> None:
            """A warning about ``cert``: collected, and reported once per certificate with every entry it concerns."""
            fp = cert_sha256(cert)
            group = self.warned.setdefault(
                (fp, text),
                {"certificate_sha256": fp, "certificate": describe_cert(cert), "warning": text, "entries": []},
            )
            if index not in group["entries"]:
                group["entries"].append(index)

        def report_warnings(self) -> None:
            groups = list(self.warned.values())
            self.warning_count = len(groups)
            for g in groups[: self.max_shown]:
                self.out.warn(f"{g['warning']}: entries {index_ranges(g['entries'])}")

    class Part:
        """A part of the audit: what it finds goes to the shared ``Report``."""

        def __init__(self, report: Auditor.Report) -> None:
            self.report = report

        def problem(self, index: int | None, text: str) -> None:
            self.report.problem(index, text)

        def warning(self, index: int, cert: x509.Certificate, text: str) -> None:
            self.report.warning(index, cert, text)

    class Tree(Part):
        """The structure: every entry bundle (hashed as it streams past) and every hash tile, recomputed up to
        the signed root (``TreeCheck``)."""

        def __init__(self, report: Auditor.Report, log: Source, checkpoint: Checkpoint) -> None:
            super().__init__(report)
            self.log = log
            self.checkpoint = checkpoint
            self.check = TreeCheck(checkpoint.size, lambda tile: fetch_tile(log, tile))
            self.root_ok = False

        def bundles(self) -> Iterator[tuple[int, list[bytes]]]:
            """Each bundle's first log index and entries, in order; its level-0 tile is checked on the way."""
            size = self.checkpoint.size
            for b in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
                tile = tile_for(-1, b, size)
                data = self.log.get_optional(tile.path, CAP_BUNDLE, f"entry bundle {tile.path}")
                if data is None:
                    raise VerifyFailed(
                        f"the site does not serve the entry bundle {tile.path}; the log cannot be audited"
                    )
                try:
                    entries = decode_bundle(data, tile.width, tile.path)
                except TileError as exc:
                    raise VerifyFailed(f"the site serves a malformed entry bundle: {exc}") from exc
                self.check.add_bundle(b, [leaf_hash(e) for e in entries])
                yield b * TILE_WIDTH, entries

        def finish(self) -> bool:
            """After the last bundle: the tiles above level 0 and the root. Whether the structure is sound."""
            self.root_ok = self.check.root() == self.checkpoint.root
            bad_l0 = [t.path for t in self.check.bad if t.level == 0]
            if not self.root_ok:
                self.problem(
                    None,
                    "the entries do not hash to the signed root: entries were altered, added or removed "
                    + (
                        f"(entry bundles disagreeing with their level-0 tiles: {', '.join(bad_l0[:10])})"
                        if bad_l0
                        else ""
                    ),
                )
            else:
                for tile in self.check.bad:
                    self.problem(
                        None, f"the hash tile {tile.path} is wrong: it does not match the entries (the root is right)"
                    )
            return self.root_ok and not self.check.bad

    class Signatures(Part):
        """Each association's evidence: the files by SHA-256, the CMS signatures over the spreadsheet, the signed
        row and request, and every signer certificate at the approval time (each checked once)."""

        def __init__(self, report: Auditor.Report, ctx: Context) -> None:
            super().__init__(report)
            self.ctx = ctx
            self.evidence_cache: dict[tuple[str, ...], Evidence] = {}
            self.cert_cache: dict[tuple[str, str], tuple[list[RuleFinding], list[tuple[x509.Certificate, str]]]] = {}
            self.crl_cache: dict[str, CrlResult | str] = {}
            self.revoked_later: set[str] = set()  # signer certificates revoked after their approvals

        def _fetch_evidence(self, digest: str, ev: Evidence) -> bytes | None:
            try:
                data = self.ctx.need_log().get_optional(f"evidence/{digest}", CAP_EVIDENCE, f"evidence {digest}")
            except SiteError as exc:  # oversized: this entry's problem, not the end of the audit
                ev.problems.append(f"evidence: {exc}")
                return None
            if data is None:
                ev.problems.append(f"evidence: the file {digest} is not published (log/evidence/{digest})")
                return None
            if hashlib.sha256(data).hexdigest() != digest:
                ev.problems.append(f"evidence: log/evidence/{digest} does not have that SHA-256: swapped or altered")
                return None
            return data

        def evidence(self, entry: dict[str, Any]) -> Evidence:
            """The evidence an association entry names: fetched, parsed and its signatures verified, once per
            submission."""
            e = entry["evidence"]
            key = (e["spreadsheet"], e["request"], *sorted(e["signatures"]))
            cached = self.evidence_cache.get(key)
            if cached is not None:
                return cached
            ev = Evidence()
            sheet = self._fetch_evidence(e["spreadsheet"], ev)
            request = self._fetch_evidence(e["request"], ev)
            if request is not None:
                ev.request, findings = parse_request(request)
                ev.problems.extend(f"evidence: the signed request.json breaks {f}" for f in findings)
            if sheet is not None:
                try:
                    rows, findings = read_sheet(sheet)
                except SheetError as exc:
                    ev.problems.append(f"evidence: the signed spreadsheet breaks {exc.rule}: {exc}")
                else:
                    ev.rows = {dataclasses.replace(r, row=0) for r in rows}
                    ev.readable = True
                    findings += one_manufacturer(rows)
                    ev.problems.extend(
                        f"evidence: the signed spreadsheet breaks {f.rule}{f' (row {f.row})' if f.row else ''}: "
                        f"{f.message}"
                        for f in findings
                    )
                for digest in sorted(e["signatures"]):
                    data = self._fetch_evidence(digest, ev)
                    if data is None:
                        continue
                    try:
                        signers, certs = verify_cms_detached(data, sheet, f"signature {digest[:12]}")
                    except CMSError as exc:
                        ev.problems.append(f"evidence: {exc.rule}: {exc}")
                        continue
                    ev.certs.extend(certs)
                    ev.every.extend(signers)
                    for s in signers:
                        fp = cert_sha256(s.certificate)
                        if fp not in ev.signers:
                            ev.signers[fp] = s
                            ev.identities[fp] = identity_of(s.certificate, self.ctx.trust)
            self.evidence_cache[key] = ev
            return ev

        def check_evidence(
            self, index: int, entry: dict[str, Any], ev: Evidence, approved: datetime
        ) -> dict[str, Party]:
            """The entry against its evidence: the signers and their certificates, the signed row and request.
            Returns each party as the rules judge it (as the entry claims it, where its signature is missing)."""
            for p in ev.problems:
                self.problem(index, p)
            parties: dict[str, Party] = {}
            for party in ("manufacturer", "endorser"):
                p = entry[party]
                signer = ev.signers.get(p["certificate_sha256"])
                if signer is None:
                    # The rules still judge what the entry claims; the missing signature is this problem (or the
                    # evidence problems above), once.
                    parties[party] = Party(p["organisation"], p["organisation_id"], p["role"], p["certificate_sha256"])
                    if ev.signers or not ev.problems:
                        self.problem(
                            index,
                            f"evidence: no valid signature over the spreadsheet by the {party}'s certificate "
                            f"{p['certificate_sha256'][:16]}...",
                        )
                    continue
                who = ev.identities[p["certificate_sha256"]]
                claimed = (p["organisation"], p["organisation_id"], p["role"])
                if (who.organisation, who.organisation_id, who.role) != claimed:
                    self.problem(
                        index,
                        f"evidence: the {party}'s certificate names {who.organisation} (ID {who.organisation_id}, "
                        f"{who.role}), not {claimed[0]} (ID {claimed[1]}, {claimed[2]})",
                    )
                parties[party] = party_of(signer, who)
            self.check_signers(index, ev, approved)
            if ev.readable and row_of_entry(entry) not in ev.rows:
                self.problem(index, "evidence: the signed spreadsheet has no row for exactly this association")
            req = ev.request
            if req is not None:
                if (req.panel_ref, req.submitter_ref) != (entry["panel_ref"], entry["submitter_ref"]):
                    self.problem(index, "evidence: panel_ref or submitter_ref is not the one in the signed request")
                rep = entry.get("replaces")
                if rep is not None and req.replacements.get(rep["index"]) != rep["investigation_ref"]:
                    self.problem(
                        index,
                        f"evidence: the request does not ask to replace log index {rep['index']} under investigation "
                        f"{rep['investigation_ref']}",
                    )
            return parties

        def check_signers(self, index: int, ev: Evidence, approved: datetime) -> None:
            """Rules Z4.3a-certificate and Z4.3a-signing-time on every signer of the evidence, as intake judges
            them: each SignerInfo's signing time, each certificate at the approval time."""
            for s in ev.every:
                party = party_of(s, ev.identities[cert_sha256(s.certificate)])
                for text in signing_time_problems(party, approved, MAX_SIGNING_SKEW):
                    self.problem(index, f"{R_SIGNING_TIME.id}: {text}")
            for fp, s in ev.signers.items():
                problems, warnings = self.certificate_at(s, fp, ev.certs, approved)
                who = f"{s.where} ({party_of(s, ev.identities[fp]).named()})"
                for f in problems:
                    self.problem(index, f"{f.rule}: {who}: {f.message}")
                for concerned, text in warnings:
                    self.warning(index, concerned, text)

        def certificate_at(
            self, signer: CmsSigner, fp: str, extra: list[x509.Certificate], at: datetime
        ) -> tuple[list[RuleFinding], list[tuple[x509.Certificate, str]]]:
            """Problems, and warnings with the certificate each concerns, for a signer certificate (SHA-256 ``fp``)
            at approval time (cached)."""
            cert = signer.certificate
            key = (fp, at.isoformat())
            cached = self.cert_cache.get(key)
            if cached is not None:
                return cached
            problems: list[RuleFinding] = []
            warnings: list[tuple[x509.Certificate, str]] = []
            try:
                cert.extensions  # noqa: B018 - parsed lazily; the chain and CRL checks below read them
            except (ValueError, x509.DuplicateExtension) as exc:
                problems.append(
                    RuleFinding(R_CERTIFICATE.id, f"{describe_cert(cert)} has malformed extensions ({exc})")
                )
                self.cert_cache[key] = (problems, warnings)
                return problems, warnings
            if not not_before(cert) <= at <= not_after(cert):
                problems.append(
                    RuleFinding(
                        R_CERTIFICATE.id, f"{describe_cert(cert)} was not valid at the approval time {iso_utc(at)}"
                    )
                )
            chain: list[x509.Certificate] = []
            try:
                chain = build_chain(cert, self.ctx.pki.intermediates(cert, extra), self.ctx.pki.roots(), at)
                check_end_entity(cert, self.ctx.trust.eku)
            except ChainError as exc:
                problems.append(RuleFinding(R_CERTIFICATE.id, str(exc)))
            for child, issuer in zip(chain, chain[1:]):
                names = crl_names_of(child) or [n for n in [self.ctx.pki.name_of(issuer)] if n]
                if not names:
                    problems.append(
                        RuleFinding(
                            R_PUBLISHER_CRL.id,
                            f"{describe_cert(child)} names no CRL on this site; revocation cannot be checked",
                        )
                    )
                    continue
                res = self.crl_cache.get(names[0])
                if res is None:
                    try:
                        res = verify_crl(self.ctx, names[0])
                    except (VerifyFailed, FetchError) as exc:
                        res = str(exc)
                    self.crl_cache[names[0]] = res
                if isinstance(res, str):
                    problems.append(
                        RuleFinding(
                            R_PUBLISHER_CRL.id, f"revocation of {describe_cert(child)} cannot be checked: {res}"
                        )
                    )
                    continue
                rev = revoked_entry(res.crl, child.serial_number)
                if rev is None:
                    continue
                who = subject_attr(child, NameOID.ORGANIZATION_NAME) or child.subject.rfc4514_string()
                text = f"the certificate of {who} (serial {child.serial_number:x}) was revoked on {iso_utc(rev.date)}"
                text += f" ({rev.reason})"
                if rev.date < at:
                    problems.append(RuleFinding(R_CERTIFICATE.id, f"{text}, before this approval at {iso_utc(at)}"))
                elif rev.invalidity is not None and rev.invalidity <= at:
                    since = iso_utc(rev.invalidity)
                    # Worded for every entry the certificate approved: warnings are grouped by certificate.
                    warnings.append(
                        (child, f"{text}, after these approvals, but its key was declared invalid from {since}")
                    )
                else:
                    self.revoked_later.add(cert_sha256(child))  # the approval stands
            self.cert_cache[key] = (problems, warnings)
            return problems, warnings

    class Entries(Part):
        """Every entry in log order: its format and type, and the history it joins (each device model's current
        association, each issuer's CRL numbers, the lookup every ``lookup/v1`` entry must commit to)."""

        def __init__(self, report: Auditor.Report, ctx: Context, signatures: Auditor.Signatures) -> None:
            super().__init__(report)
            self.ctx = ctx
            self.signatures = signatures
            self.current: dict[tuple[str, str, str, str], tuple[int, str]] = {}
            self.crl_numbers: dict[str, tuple[int, int]] = {}
            self.counts = {"associations": 0, "crls": 0, "commitments": 0, "other": 0}
            self.lookup = Lookup()  # rebuilt from every entry: each lookup/v1 entry must commit to exactly it
            self.submission: tuple[str, ...] = ()  # the submission (id and evidence) of the previous association

        def check(self, index: int, raw: bytes) -> None:
            """Entry ``index``; anything a hostile entry makes a library raise is its problem, and the audit goes on."""
            try:
                self.check_entry(index, raw)
            except (VerifyFailed, UsageError, FetchError):
                raise
            except Exception as exc:  # hostile evidence makes libraries raise anything; report, go on
                self.problem(index, f"cannot be checked: {type(exc).__name__}: {exc}")

        def check_entry(self, index: int, raw: bytes) -> None:
            """Entry ``index``: its format and type, then what its type requires."""
            entry = parse_entry(raw)
            expected = self.lookup.commitment() if entry is not None and entry.get("type") == LOOKUP_TYPE else b""
            self.lookup.add(index, entry)
            if entry is None:
                self.counts["other"] += 1
                self.problem(index, "not a JSON object: not an entry this log may hold")
                return
            try:
                canonical = canonical_json(entry)
            except UnicodeEncodeError:  # "\ud800": no UTF-8 text holds it, and no output line could print it
                self.counts["other"] += 1
                self.problem(index, "not UTF-8 text: it holds a lone surrogate escape")
                return
            if canonical != raw:
                self.problem(index, "not canonical JSON (sorted keys, no whitespace, UTF-8)")
            kind = entry.get("type")
            if kind == ASSOCIATION_TYPE:
                self.counts["associations"] += 1
                self.check_association(index, entry)
            elif kind == CRL_TYPE:
                self.counts["crls"] += 1
                self.check_crl_entry(index, entry)
            elif kind == LOOKUP_TYPE:
                self.counts["commitments"] += 1
                if raw != expected:
                    self.problem(
                        index,
                        "lookup/v1: the commitment does not match the entries before it (verifiers trusting it would "
                        f"get wrong answers); expected {expected.decode()}",
                    )
            else:
                self.counts["other"] += 1
                self.problem(index, f"unknown entry type {kind!r}")

        def check_association(self, index: int, entry: dict[str, Any]) -> None:
            """A ``cpl-association/v1`` entry: its format, its evidence, and the submission rules with the log as
            it stood before it."""
            shape = association_shape(entry)
            for p in shape:
                self.problem(index, p)
            if shape:
                return
            model = _model_of(entry)
            approved = parse_iso(entry["approved_at"])
            if approved > self.ctx.now + CLOCK_SKEW:
                self.problem(index, f"approved_at {entry['approved_at']} is in the future")
            ev = self.signatures.evidence(entry)
            parties = self.signatures.check_evidence(index, entry, ev, approved)
            e = entry["evidence"]
            submission = (entry["submission_id"], e["spreadsheet"], e["request"], *sorted(e["signatures"]))
            first = submission != self.submission
            self.submission = submission
            if ev.request is not None and ev.readable and first:
                # At a submission's first entry the log is as intake saw it: every replacement the signed request
                # asks for must be the current association of one of the spreadsheet's device models.
                held = {m: self.current.get(m) for m in {r.device_model for r in ev.rows}}
                used = {c[0] for r in ev.rows if (c := held[r.device_model]) is not None and c[1] != r.image_hash}
                for finding in unused_replacements(ev.request.replacements, used):
                    self.problem(index, str(finding))
            # The submission rules, as intake judged them: the same functions, at the approval time, with the log
            # as it stood before this entry.
            rep = entry.get("replaces")
            association = Association(
                row_of_entry(entry),
                parties["manufacturer"],
                parties["endorser"],
                (rep["index"], rep["investigation_ref"]) if rep else None,
            )
            for finding in judge_association(
                association, Situation(approved, MAX_SIGNING_SKEW, self.current.get(model))
            ):
                self.problem(index, str(finding))
            self.current[model] = (index, str(entry["image_sha256"]))

        def check_crl_entry(self, index: int, entry: dict[str, Any]) -> None:
            """A ``crl/v1`` entry: its format, CRL numbers rising per issuer, the archived CRL it names."""
            keys = {"type", "issuer", "number", "this_update", "next_update", "sha256"}
            if set(entry) != keys:
                self.problem(index, f"format: a crl/v1 entry has exactly the fields {sorted(keys)}")
                return
            name, number, sha = entry["issuer"], entry["number"], entry["sha256"]
            # RFC 5280 5.2.3: a CRL number is a non-negative integer of at most 20 octets (JSON true is no number).
            if (
                not isinstance(name, str)
                or not _NAME_RE.fullmatch(name)
                or not isinstance(number, int)
                or isinstance(number, bool)
                or not 0 <= number < 1 << 159
            ):
                self.problem(index, "format: issuer must be an issuer name and number a CRL number")
                return
            if not isinstance(sha, str) or not _HEX64_RE.fullmatch(sha):
                self.problem(index, "format: sha256 is not 64 lowercase hex digits")
                return
            previous = self.crl_numbers.get(name)
            if previous is not None and number <= previous[0]:
                self.problem(
                    index,
                    f"CRL number {number} of {name} is not above number {previous[0]} logged at entry {previous[1]}",
                )
            self.crl_numbers[name] = (number, index)
            try:
                data = self.ctx.need_site().get_optional(
                    f"crl/archive/{name}/{number}.crl", self.ctx.args.max_crl_bytes, "CRL"
                )
            except SiteError as exc:  # oversized: this entry's problem, not the end of the audit
                self.problem(index, str(exc))
                return
            if data is None:
                self.problem(index, f"the archived CRL crl/archive/{name}/{number}.crl is not published")
                return
            if hashlib.sha256(data).hexdigest() != sha:
                self.problem(
                    index, f"crl/archive/{name}/{number}.crl does not have the logged SHA-256: altered or swapped"
                )
                return
            try:
                crl = x509.load_der_x509_crl(data)
                issuer = self.ctx.pki.crl_issuer(name, self.ctx.now)
                verify_crl_signature(data, issuer)
                got = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
                times = (iso_utc(crl.last_update_utc), iso_utc(crl.next_update_utc) if crl.next_update_utc else None)
            except (ValueError, x509.ExtensionNotFound, VerifyFailed, FetchError) as exc:
                self.problem(index, f"the archived CRL {name} #{number} does not verify: {exc}")
                return
            if got != number or times != (entry["this_update"], entry["next_update"]):
                self.problem(index, f"the logged fields do not match the archived CRL {name} #{number}")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.check_superseded = False  # signer CRLs are judged at approval time; crl/v1 entries are checked below
        self.structure_only = bool(getattr(ctx.args, "structure_only", False))
        self.report = Auditor.Report(ctx.out, int(getattr(ctx.args, "max_problems", 1000)))
        self.signatures = Auditor.Signatures(self.report, ctx)
        self.entries = Auditor.Entries(self.report, ctx, self.signatures)

    def run(self) -> int:
        ctx, out, report = self.ctx, self.ctx.out, self.report
        started = time.monotonic()
        signed, _ = latest_checkpoint(ctx)
        cp = signed.checkpoint
        size = cp.size
        log = ctx.need_log()
        if not self.structure_only:
            ctx.need_site()
            ctx.pki.roots()
        out.say(f"audit of {log} at size {size}, root {b64encode(cp.root)} (checkpoint signature verified)")
        tree = Auditor.Tree(report, log, cp)
        last_report = 0.0
        for first, entries in tree.bundles():
            if not self.structure_only:
                for i, raw in enumerate(entries):
                    self.entries.check(first + i, raw)
            now = time.monotonic()
            if now - last_report > 0.5:
                last_report = now
                done = min(size, first + TILE_WIDTH)
                rate = done / max(now - started, 1e-9)
                out.progress(f"audit: {done:,}/{size:,} entries ({rate:,.0f}/s), {report.problem_count} problems")
        out.clear_progress()
        structure_ok = tree.finish()
        report.report_warnings()
        elapsed = max(time.monotonic() - started, 1e-9)
        out.result.update(
            {
                "size": size,
                "root": b64encode(cp.root),
                "structure_ok": structure_ok,
                "entries": dict(self.entries.counts),
                "problems": report.problems,
                "problem_count": report.problem_count,
                "warning_count": report.warning_count,
                "warnings": list(report.warned.values())[: report.max_shown],
                "seconds": round(elapsed, 3),
                "entries_per_second": round(size / elapsed, 1),
                "requests": log.stats.requests,
                "bytes": log.stats.bytes,
            }
        )
        out.say(
            f"structure: {'OK' if structure_ok else 'FAILED'}: every entry bundle and hash tile recomputed, "
            f"root {'matches' if tree.root_ok else 'does NOT match'} the signed checkpoint"
        )
        if not self.structure_only:
            c = self.entries.counts
            out.say(
                f"entries: {c['associations']} CPL associations, {c['crls']} CRL entries, {c['commitments']} "
                f"lookup commitments (each recomputed), {c['other']} other"
            )
            if self.signatures.revoked_later:
                out.say(
                    f"  {len(self.signatures.revoked_later)} signer certificate(s) were revoked after the approvals "
                    "they signed (the approvals stand; see 'crl')"
                )
        out.say(f"{size:,} entries in {elapsed:.2f} s ({size / elapsed:,.0f} entries/s), {log.stats.requests} requests")
        if report.problem_count:
            shown = "" if report.problem_count <= report.max_shown else f" (first {report.max_shown} shown)"
            out.say(f"AUDIT FAILED: {report.problem_count} problems{shown}")
            return EXIT_FAILED
        plural = "s" if report.warning_count != 1 else ""
        out.say("AUDIT PASSED" + (f" with {report.warning_count} warning{plural}" if report.warning_count else ""))
        return EXIT_OK


def cmd_audit(ctx: Context) -> int:
    return Auditor(ctx).run()


# =====================================================================================================
# check-submission: what SECAS's intake would say about a submission folder, before it is sent
# =====================================================================================================


def _signer_certificate_findings(
    ctx: Context, signer: CmsSigner, extra: list[x509.Certificate], not_checked: list[str]
) -> list[RuleFinding]:
    """Rule Z4.3a-certificate for one signer now: with a site, as ``cert`` judges it (the site's verified,
    fresh CRLs); without one, the chain and profile only, and revocation is named as not checked."""
    cert = signer.certificate
    if ctx.site is None:
        try:
            build_chain(cert, [*extra, *(p.cert for p in ctx.trust.crl_issuers if p.cert)], ctx.pki.roots(), ctx.now)
            check_end_entity(cert, ctx.trust.eku)
        except ChainError as exc:
            hint = " (without --site, the issuing CAs come from the file and the trust file's crl_issuers PEMs)"
            return [RuleFinding(R_CERTIFICATE.id, f"{signer.where}: {exc}{hint}")]
        if not not_before(cert) <= ctx.now <= not_after(cert):
            return [RuleFinding(R_CERTIFICATE.id, f"{signer.where}: {describe_cert(cert)} is not valid now")]
        not_checked.append(f"revocation of {describe_cert(cert)} (no --site: the CRLs were not read)")
        return []
    _, info = certificate_verdict(ctx, cert, extra, None)
    if info["verdict"] == "trusted":
        return []
    rule = R_PUBLISHER_CRL if info["verdict"] == "crl-unavailable" else R_CERTIFICATE
    return [RuleFinding(rule.id, f"{signer.where}: {info['message']}")]


def _current_associations(
    ctx: Context, not_checked: list[str]
) -> Callable[[tuple[str, str, str, str]], tuple[int, str] | None]:
    """Each device model's current association in the site's log, for rule 4.3(b) (none without a site)."""
    if ctx.site is None:
        not_checked.append("4.3(b): the device models' current associations (no --site: the log was not read)")
        return lambda model: None
    view = ctx.lookup_view()
    if not view.proven:
        not_checked.append(f"4.3(b) rests on {view.basis}")

    def current_of(model: tuple[str, str, str, str]) -> tuple[int, str] | None:
        found = None
        for i in view.indices("model", model_lookup_key(*model)):
            entry = view.entry(i)
            if entry is not None and entry.get("type") == ASSOCIATION_TYPE and _model_of(entry) == model:
                found = (i, str(entry.get("image_sha256")))
        return found

    return current_of


def cmd_check_submission(ctx: Context) -> int:
    """``check-submission``: the submission rules on a local folder, as intake would run them now."""
    folder = Path(ctx.args.folder).expanduser()
    if not folder.is_symlink() and not folder.is_dir():
        raise UsageError(f"{folder} is not a submission folder")
    at = ctx.now.replace(microsecond=0)
    not_checked: list[str] = []
    signers: list[Party] = []
    associations: list[Association] = []
    try:
        files = read_submission(folder)
    except SubmissionError as exc:
        findings = list(exc.findings)
    else:
        request, rows, findings = submission_inputs(files)
        signers, signer_findings = submission_signers(
            files,
            lambda cert: identity_of(cert, ctx.trust),
            lambda signer, extra: _signer_certificate_findings(ctx, signer, extra, not_checked),
            at,
            MAX_SIGNING_SKEW,
        )
        findings += signer_findings
        if rows:
            current_of = _current_associations(ctx, not_checked)
            judged, associations = judge_rows(rows, signers, request, current_of, at, MAX_SIGNING_SKEW)
            findings += judged
    findings = collapse_findings(findings)
    accepted = not findings and bool(associations)
    # Nothing refused, but a rule could not be judged (no site, an unproven lookup): not a yes.
    verdict = "refuse" if not accepted else "accept-unchecked" if not_checked else "accept"
    name = folder.absolute().name
    ctx.out.result.update(
        {
            "submission_id": name,
            "verdict": verdict,
            "findings": [f.to_json() for f in findings],
            "signers": [signer_summary(p) for p in signers],
            "associations": [
                {
                    "row": a.row.row,
                    "device_model": dict(zip(MODEL_FIELDS, a.row.device_model)),
                    "image_sha256": a.row.image_hash,
                    "replaces": {"index": a.replaces[0], "investigation_ref": a.replaces[1]} if a.replaces else None,
                }
                for a in associations
            ],
            "not_checked": not_checked,
            "checked_at": iso_utc(at),
        }
    )
    said = {"accept": "ACCEPT it", "refuse": "REFUSE it", "accept-unchecked": "ACCEPT it, IF the checks not run pass"}
    ctx.out.say(f"submission {name}: intake at {iso_utc(at)} would {said[verdict]}")
    for f in findings:
        ctx.out.say(f"  REFUSED by {f}")
    for line in signer_lines([signer_summary(p) for p in signers]):
        ctx.out.say(line)
    if associations:
        ctx.out.say("would log:" if accepted else "rows:")
    for a in associations:
        line = f"  row {a.row.row}: {'/'.join(a.row.device_model)} ({a.row.device_type}, {a.row.smets_version}): "
        line += a.row.image_hash
        if a.replaces:
            line += f", REPLACING log index {a.replaces[0]} (investigation {a.replaces[1]})"
        ctx.out.say(line)
    for what in not_checked:
        ctx.out.warn(f"NOT CHECKED: {what}")
    return {"accept": EXIT_OK, "refuse": EXIT_FAILED}.get(verdict, EXIT_NOT_APPROVED)


# =====================================================================================================
# witness: a C2SP tlog-witness (add-checkpoint, and the monitoring checkpoint) for the parties of this
# scheme, run with this one file; and witness keygen
# =====================================================================================================


class WitnessStore:
    """A witness's state folder: for each log origin, the latest checkpoint cosigned (``logs/<hex SHA-256 of
    the origin>``, the note served to monitors), written durably before the answer; log-signed checkpoints
    that fork a cosigned one (same size, another root) kept in ``evidence/``. One process per folder (an
    exclusive lock)."""

    MAX_EVIDENCE = 1000

    def __init__(self, directory: Path) -> None:
        try:
            import fcntl
        except ImportError as exc:  # pragma: no cover - not POSIX
            raise UsageError("witness serve needs a POSIX system (file locks)") from exc
        self.dir = directory
        try:
            (directory / "logs").mkdir(parents=True, exist_ok=True)
            (directory / "evidence").mkdir(exist_ok=True)
            self._lock = open(directory / "lock", "a")  # noqa: SIM115 - held for the store's life
        except OSError as exc:
            raise UsageError(f"cannot use the witness state folder {directory}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            raise UsageError(f"another witness process uses the state folder {directory}") from exc
        self.mutex = threading.Lock()  # a check and its update are one step (tlog-witness's race)
        self._latest: dict[str, Checkpoint | None] = {}
        for path in sorted((directory / "logs").iterdir()):  # a damaged memory is refused at start, not mid-request
            if not path.name.startswith("."):
                try:
                    parse_unverified(path.read_bytes())
                except (CheckpointError, OSError) as exc:
                    self._lock.close()
                    raise UsageError(
                        f"{path}: not a checkpoint this witness stored ({exc}); restore it from a backup"
                    ) from exc

    def path(self, origin: str) -> Path:
        return self.dir / "logs" / hashlib.sha256(origin.encode()).hexdigest()

    def note(self, origin_hash: str) -> bytes | None:
        """The stored note of the log whose origin hashes to ``origin_hash`` (lowercase hex), if any."""
        if not re.fullmatch(r"[0-9a-f]{64}", origin_hash):
            return None
        try:
            return (self.dir / "logs" / origin_hash).read_bytes()
        except FileNotFoundError:
            return None

    def latest(self, origin: str) -> Checkpoint | None:
        """The checkpoint last cosigned for ``origin`` (None: never)."""
        if origin not in self._latest:
            data = self.note(hashlib.sha256(origin.encode()).hexdigest())
            self._latest[origin] = parse_unverified(data) if data is not None else None
        return self._latest[origin]

    def save(self, origin: str, note: str) -> None:
        """Replace ``origin``'s note durably: a temporary file, fsync, rename, fsync of the folder. If any step
        fails the disk may hold either note, so the next check reads the disk again rather than trusting
        memory."""
        self._latest.pop(origin, None)
        self._durable(self.path(origin), note.encode())
        self._latest[origin] = parse_unverified(note)

    def keep_evidence(self, note: str) -> None:
        """Keep a log-signed checkpoint that forks the one cosigned: once, and at most ``MAX_EVIDENCE`` of them."""
        folder = self.dir / "evidence"
        path = folder / f"{hashlib.sha256(note.encode()).hexdigest()}.txt"
        if not path.exists() and sum(1 for _ in folder.iterdir()) < self.MAX_EVIDENCE:
            self._durable(path, note.encode())

    @staticmethod
    def _durable(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._lock.close()


class WitnessService:
    """The witness's answers: ``add_checkpoint`` (status, content type, body) per tlog-witness, persisting
    before it answers 200; ``monitoring`` the latest cosigned checkpoint of a log."""

    def __init__(
        self, cosigner: Cosigner, logs: dict[str, list[Verifier]], store: WitnessStore, clock: Callable[[], float]
    ) -> None:
        self.cosigner = cosigner
        self.logs = logs
        self.store = store
        self.clock = clock

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            request = parse_add_checkpoint(body)
            with self.store.mutex:
                try:
                    signed = witness_check(request, self.logs, self.store.latest)
                except WitnessRefusal as refusal:
                    if refusal.fork:
                        with contextlib.suppress(OSError):  # kept if it can be; the refusal is answered regardless
                            self.store.keep_evidence(request.checkpoint)
                    raise
                cp = signed.checkpoint
                line = self.cosigner.cosign(cp.body(), max(1, int(self.clock())))
                held = self.store.latest(cp.origin)
                if held is None or (held.size, held.root) != (cp.size, cp.root):  # the same tree is stored already
                    logs = {(v.name, v.key_id) for v in signed.note.verified_by}
                    kept = [
                        text
                        for sig, text in zip(signed.note.signatures, signature_lines(signed.note))
                        if (sig.name, sig.key_id) in logs
                    ]
                    self.store.save(cp.origin, signed.note.text + "\n" + "".join(kept) + line)
            return 200, "text/plain; charset=utf-8", line.encode()
        except OSError as exc:  # no cosignature is answered unless the state it vouches for is on disk
            message = f"the witness cannot store its state: {exc.strerror or exc}\n"
            return 500, "text/plain; charset=utf-8", message.encode()
        except WitnessRefusal as refusal:
            if refusal.status == 409:
                return 409, WITNESS_SIZE_TYPE, f"{refusal.size}\n".encode()
            return refusal.status, "text/plain; charset=utf-8", (str(refusal) + "\n").encode()

    def monitoring(self, path: str) -> bytes | None:
        m = re.fullmatch(r"/([0-9a-f]{64})/checkpoint", path)
        return self.store.note(m.group(1)) if m else None


WITNESS_IDLE_TIMEOUT = 30.0  # seconds a witness connection may stall
WITNESS_MAX_CONNECTIONS = 64


def _witness_server(address: tuple[str, int], handler: type[Any]) -> Any:
    """A threading HTTP server that serves at most ``WITNESS_MAX_CONNECTIONS`` connections at once (more are
    closed at once): stalled clients cannot exhaust threads or file descriptors."""
    import http.server

    slots = threading.BoundedSemaphore(WITNESS_MAX_CONNECTIONS)

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def process_request(self, request: Any, client_address: Any) -> None:
            if not slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            super().process_request(request, client_address)

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

    return Server(address, handler)


def _witness_handler(service: WitnessService, quiet: bool) -> type[Any]:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as tlog-witness recommends
        server_version = f"cpl-verify-witness/{__version__}"
        # Headers and body leave in two writes; with Nagle's algorithm the body would wait for the client's
        # delayed ACK (about 40 ms a request on a keep-alive connection).
        disable_nagle_algorithm = True
        timeout = WITNESS_IDLE_TIMEOUT  # a connection that stalls (mid-request or idle) is closed

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if self.path != "/add-checkpoint":
                self.close_connection = True  # its body is not read: the connection cannot carry on
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
                return
            length = self.headers.get("Content-Length")
            if length is None or not re.fullmatch(r"[0-9]{1,9}", length):
                self.close_connection = True
                self._send(411, "text/plain; charset=utf-8", b"Content-Length required\n")
                return
            if int(length) > MAX_ADD_CHECKPOINT:
                self.close_connection = True
                self._send(413, "text/plain; charset=utf-8", b"request too large\n")
                return
            self._send(*service.add_checkpoint(self.rfile.read(int(length))))

        def do_GET(self) -> None:
            note = service.monitoring(self.path)
            if note is None:
                self._send(404, "text/plain; charset=utf-8", b"no checkpoint cosigned for this log\n")
            else:
                self._send(200, "text/plain; charset=utf-8", note)

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                sys.stderr.write(printable(f"{self.address_string()} {format % args}") + "\n")

    return Handler


def _read_cosigner(path: str) -> Cosigner:
    try:
        return Cosigner.from_skey(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the witness key {path}: {exc.strerror or exc}") from exc
    except (NoteError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path}: not a witness key (PRIVATE+KEY+<name>+<id>+<base64 of 0x04 and seed>): {exc}"
        ) from exc


def witness_serve(args: argparse.Namespace) -> int:
    """``witness serve``: answer add-checkpoint requests for the ``--log`` keys until stopped (SIGTERM or
    Ctrl-C); prints ``listening on http://HOST:PORT/`` and the witness's verifier key first."""
    import signal

    cosigner = _read_cosigner(args.key)
    logs: dict[str, list[Verifier]] = {}
    for text in args.log:
        try:
            v = Verifier.from_vkey(text)
        except NoteError as exc:
            raise UsageError(f"--log: {exc}") from exc
        if v.sig_type != SIG_ED25519:
            raise UsageError(f"--log {text}: a log key is an Ed25519 note key (type 0x01)")
        logs.setdefault(v.name, []).append(v)  # the key's name is the log's origin (C2SP tlog-checkpoint)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError("--listen must be HOST:PORT (PORT 0: any free port)")
    store = WitnessStore(Path(args.state).expanduser())
    try:
        service = WitnessService(cosigner, logs, store, time.time)
        try:
            server = _witness_server((host.strip("[]"), int(port)), _witness_handler(service, args.quiet))
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from exc

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        try:
            signal.signal(signal.SIGTERM, stop)
            bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
            sys.stdout.write(f"listening on http://{bound_host}:{bound_port}/ as {cosigner.verifier.vkey}\n")
            for origin in sorted(logs):
                sys.stdout.write(f"witnessing {origin}\n")
            sys.stdout.flush()
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        store.close()
    return EXIT_OK


def witness_keygen(args: argparse.Namespace) -> int:
    """``witness keygen``: a new cosigning key in ``--key`` (created, never overwritten, mode 0600); prints
    the verifier key to give the log operator and clients."""
    try:
        cosigner = Cosigner.generate(args.name)
    except NoteError as exc:
        raise UsageError(f"--name: {exc}") from exc
    try:
        fd = os.open(args.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UsageError(f"{args.key} exists: a witness key is never overwritten") from exc
    except OSError as exc:
        raise UsageError(f"cannot create {args.key}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(cosigner.skey + "\n")
        f.flush()
        os.fsync(f.fileno())
    if args.json:
        sys.stdout.write(json.dumps({"name": cosigner.name, "vkey": cosigner.verifier.vkey, "key": args.key}) + "\n")
    else:
        sys.stdout.write(cosigner.verifier.vkey + "\n")
    return EXIT_OK


def cmd_witness(args: argparse.Namespace) -> int:
    """``witness serve|keygen``: no trust file, site or state; exit 0, or 2 for a usage or I/O error."""
    try:
        return witness_serve(args) if args.witness_command == "serve" else witness_keygen(args)
    except UsageError as exc:
        sys.stderr.write(f"cpl-verify: error: {printable(str(exc))}\n")
        return EXIT_ERROR


# =====================================================================================================
# Command line
# =====================================================================================================

DEFAULT_DEADLINE = 300.0  # seconds for a whole command (for monitor: each check)
AUDIT_DEADLINE = 3600.0  # audit downloads the whole log (and so does a first watch)


COMMANDS: dict[str, Callable[[Context], int]] = {
    "crl": cmd_crl,
    "cert": cmd_cert,
    "link": cmd_link,
    "inclusion": cmd_inclusion,
    "consistency": cmd_consistency,
    "monitor": cmd_monitor,
    "audit": cmd_audit,
    "check-submission": cmd_check_submission,
    "watch": cmd_watch,
}

TRUST_HELP = """\
trust file (--trust FILE, JSON):
  {"site": "https://dcc.example/cpl",
   "log": {"origin": "dcc.example/cpl/log", "vkey": "dcc.example/cpl/log+1234abcd+A..."},
   "iki_roots": [{"name": "iki-root", "sha256": "<SHA-256 of the root certificate's DER>", "pem": "..."}],
   "extended_key_usage": "1.3.6.1.4.1.55555.1.1"}
  "pem" is optional: a root pinned by "sha256" alone is fetched from <site>/pki/<name>.pem and must match.
  Optional: "log.url" (log prefix, default <site>/log/), "roles" (role -> OU),
  "organisation_id_attribute", "intermediates" (CA names under <site>/pki/), and "log.policy": a
  C2SP tlog-policy (text) naming the witnesses and the quorum every accepted checkpoint must meet:
     "policy": "witness secas secas.example/witness+1a2b3c4d+B...\nwitness ssc ssc.example/w+...\n
                group both all secas ssc\nquorum both\n"
  (--policy FILE reads one from a file). Each command that accepts a checkpoint reports who cosigned it
  and when, and fails below the quorum, naming the missing witnesses.

  "crl_issuers": [{"name": "ica", "sha256": "..."}] pins the issuing CAs whose CRLs are checked (with the
  roots' own): 'crl' with no --issuer checks every one and fails if any CRL is missing.

exit codes:
  0  verified, and the answer is yes: a current, proven approval whose signers' keys were sound (inclusion;
     with --allow-replaced also one replaced since); fresh, verified, latest CRLs; a trusted certificate
  1  verification failed: a forgery, a fork, a bad signature or proof, a superseded or stale CRL
  2  usage, input, network or I/O error: nothing was concluded
  3  verified, and the answer is no: replaced, not found, logged only for another model, a signer's key
     compromised before the approval, a revoked or expired certificate, or not proven (see 'basis')
  4  watch: verified, and new entries naming the watched manufacturer(s) or certificates appeared
  5  watch: verified, new entries appeared, and at least one is flagged (UNEXPECTED SIGNER: a manufacturer
     certificate not in the --certificate list; OTHER MANUFACTURER: a watched key used for another's model)
"""

WATCH_HELP = """\
Alerts for manufacturers: every log entry added since the last run (remembered in --state, per watch) that
names the manufacturer ID(s) (device_model.manufacturer_id, or the manufacturer signer's organisation ID)
or was signed with one of the certificates (manufacturer or endorser), each proved against the verified
checkpoint, which is itself proved consistent with the last one seen (a fork or rollback fails, exit 1).

  cpl-verify --trust trust.json --state ~/.cpl-watch watch --manufacturer 1001 \\
      --certificate sha256:<SHA-256 of your certificate's DER> [--certificate ...] [--save-proofs DIR]

The first run reports the whole history (it reads the whole log once); --since-now starts at the current
size instead. The position is saved only after a run that verified everything, so a failed run reports
the same entries again next time. Flagged (exit 5): UNEXPECTED SIGNER, an entry naming a watched
manufacturer signed by a manufacturer certificate not listed with --certificate (only when some are
listed); OTHER MANUFACTURER, a watched certificate or organisation signing another manufacturer's model.
Exit codes: 0 nothing new, 4 new entries, 5 new entries and at least one flagged, 1 verification failed,
2 usage, network or I/O error. A crontab line that mails (MAILTO) the report only when the exit code is not 0:
  17 * * * *  out=$(cpl-verify --trust trust.json --state ~/.cpl-watch watch --manufacturer 1001 2>&1) || echo "$out"
"""


WITNESS_HELP = """\
A witness (C2SP tlog-witness v1.0.0) cosigns a log's checkpoint only after checking that it extends every
checkpoint of that log it cosigned before; clients that require its cosignature (a trust file's
"log.policy") cannot be shown a history the witness has not seen.

  cpl-verify witness keygen --name secas.example/witness --key witness.key     # prints the verifier key
  cpl-verify witness serve --key witness.key --state witness-state --listen 127.0.0.1:7380 \\
      --log "$(cat log-vkey)"

serve answers POST /add-checkpoint (200 cosignature lines; 409 text/x.tlog.size with its size; 400
malformed; 403 bad or missing log signature; 404 unknown log; 422 inconsistent, kept in DIR/evidence/)
and GET /<hex SHA-256 of the origin>/checkpoint (the latest cosigned checkpoint). Each cosigned checkpoint
is on disk (fsync) before the answer; the check and the update are one step; one process per --state.
Exit codes: 0 stopped (SIGTERM, Ctrl-C), 2 usage or I/O error.
"""


def _parse_now(text: str) -> datetime:
    try:
        return parse_iso(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _common_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("options for every command (before or after the command name)")
    g.add_argument("--site", default=d, metavar="URL_OR_DIR", help="the site: https:// or http:// URL, or a folder")
    g.add_argument("--log", default=d, metavar="URL_OR_DIR", help="the log prefix (default: <site>/log/)")
    g.add_argument("--trust", default=d, metavar="FILE", help="trust file (format below)")
    g.add_argument("--state", default=d, metavar="DIR",
                   help="remember the last checkpoint, CRL numbers and watch positions here")  # fmt: skip
    g.add_argument("--tofu", action="store_true", default=d, help="pin what the site serves (prints what it pinned)")
    g.add_argument("--vkey", action="append", default=d, metavar="KEY", help="pin a log verifier key (repeatable)")
    g.add_argument("--origin", default=d, help="the log's origin (default: the log key's name)")
    g.add_argument("--policy", default=d, metavar="FILE",
                   help="a C2SP tlog-policy file: the witnesses and the quorum every checkpoint must meet "
                   "(replaces the trust file's log.policy)")  # fmt: skip
    g.add_argument("--root", action="append", default=d, metavar="PEM", help="pin an IKI root certificate file")
    g.add_argument("--root-name", default=d, metavar="NAME", help="with --tofu: the root's name under /pki/")
    g.add_argument("--eku", default=d, metavar="OID", help="the IKI extended key usage OID")
    g.add_argument("--timeout", type=float, default=d, metavar="SECONDS",
                   help="the most one request may take: connect, headers and body (default 20)")  # fmt: skip
    g.add_argument("--deadline", type=float, default=d, metavar="SECONDS",
                   help="stop with exit code 2 after this long (default 300; audit 3600; watch 3600: a first run reads "
                   "the whole log; monitor: each check; 0: no limit)")  # fmt: skip
    g.add_argument("--max-crl-bytes", type=int, default=d, metavar="N", help="largest CRL accepted (128 MiB)")
    g.add_argument("--now", type=_parse_now, default=d, metavar="TIME", help="check as of this UTC time")
    g.add_argument("--json", action="store_true", default=d, help="machine-readable output")
    g.add_argument("--progress", action="store_true", default=d, help="progress on stderr")


DEFAULTS: dict[str, Any] = {
    "site": None,
    "log": None,
    "trust": None,
    "state": None,
    "tofu": False,
    "vkey": None,
    "origin": None,
    "policy": None,
    "root": None,
    "root_name": "iki-root",
    "eku": None,
    "timeout": DEFAULT_TIMEOUT,
    "deadline": None,
    "max_crl_bytes": CAP_CRL,
    "now": None,
    "json": False,
    "progress": False,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpl-verify",
        description="Check the GB smart metering PKI transparency site against keys you pinned: "
        "the IKI CRLs, Device triage links, CPL firmware-hash approvals, and the log's history.",
        epilog=TRUST_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cpl-verify {__version__}")
    _common_options(parser, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=TRUST_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        _common_options(p, suppress=True)
        return p

    p = add("crl", "verify the IKI CRL(s): signature to a pinned root, fresh, no rollback, optionally logged")
    p.add_argument("--issuer", action="append", metavar="NAME", help="issuer name (default: every published CRL)")
    p.add_argument("--require-logged", action="store_true", help="require a crl/v1 log entry for exactly these bytes")
    p.add_argument("--scan-bundles", type=int, default=8, help=argparse.SUPPRESS)

    p = add("cert", "check an IKI certificate file (PEM or DER): chain, usage, validity, revocation")
    p.add_argument("file")
    p.add_argument("--role", default="any", help="require this role (Manufacturer, Supplier, DCC; default any)")

    p = add("link", "check the IKI certificate a Device triage endpoint presents over TLS")
    p.add_argument("url", help="https://host:port/... of the triage endpoint")
    p.add_argument("--role", default="DCC", help="require this role (default DCC; 'any' to accept any IKI holder)")

    p = add("inclusion", "is a firmware hash approved in the log? (proofs against the signed checkpoint)")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--hash", metavar="HEX", help="SHA-256 of the Manufacturer Image")
    q.add_argument("--file", metavar="IMAGE", help="the Manufacturer Image (its SHA-256 is computed)")
    q.add_argument("--index", type=int, metavar="N", help="a log index")
    p.add_argument("--model", nargs=4, metavar=("MANUFACTURER_ID", "MODEL", "HW", "FW"), help="a CPL device model")
    p.add_argument("--proof", metavar="FILE", help="an offline c2sp.org/tlog-proof@v1 file")
    p.add_argument("--entry", metavar="FILE", help="the entry's bytes (with --proof or --index)")
    p.add_argument("--save-proof", metavar="FILE",
                   help="write the found entry's c2sp.org/tlog-proof@v1 file (check it offline: --proof)")  # fmt: skip
    p.add_argument("--allow-replaced", action="store_true",
                   help="a question about history: exit 0 for an image approved once, even if replaced")  # fmt: skip
    p.add_argument("--exhaustive-max", type=int, default=EXHAUSTIVE_DEFAULT_MAX, help=argparse.SUPPRESS)
    p.add_argument("--exhaustive", action="store_true",
                   help="read and prove every entry instead of trusting the log's lookup commitment")  # fmt: skip

    p = add("consistency", "verify the newest checkpoint and prove it consistent with the one in --state")
    p.add_argument("--against", metavar="CHECKPOINT", help="also prove consistency with this saved checkpoint")

    p = add("monitor", "like consistency, repeatedly: --interval SECONDS [--count N]")
    p.add_argument("--interval", type=float, default=0, help="seconds between checks (default: check once)")
    p.add_argument("--count", type=int, default=0, help="stop after N checks (default: never, with --interval)")
    p.set_defaults(against=None)

    p = add("audit", "download the whole log: recompute every tile and the root, re-verify every entry")
    p.add_argument("--structure-only", action="store_true", help="only the tiles, bundles and root")
    p.add_argument("--max-problems", type=int, default=1000, help="show at most this many problems")

    p = add("check-submission", "before submitting: what SECAS's intake would say about a CPL submission folder")
    p.add_argument("folder", help="the submission folder: spreadsheet, request.json, .p7s signatures")

    p = add("watch", "alerts for manufacturers: every new entry naming them or their certificates, proved")
    p.description = WATCH_HELP
    p.add_argument("--manufacturer", action="append", required=True, metavar="ID",
                   help="a manufacturer ID, as the CPL's device models name it (repeatable; at least one)")  # fmt: skip
    p.add_argument("--certificate", action="append", metavar="SHA256",
                   help="the SHA-256 of a certificate's DER (HEX, sha256:HEX or AB:CD:...; repeatable): "
                   "entries it signed are reported; the manufacturer's, signed by another, are flagged")  # fmt: skip
    p.add_argument("--since-now", action="store_true",
                   help="on the first run, start at the log's current size, not with its whole history")  # fmt: skip
    p.add_argument("--save-proofs", metavar="DIR",
                   help="write DIR/<index>.tlog-proof (c2sp.org/tlog-proof@v1) for each reported entry")  # fmt: skip

    w = sub.add_parser("witness", help="run a C2SP tlog-witness: cosign the log's checkpoints (serve, keygen)",
                       description=WITNESS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ws = w.add_subparsers(dest="witness_command", metavar="SUBCOMMAND", required=True)
    p = ws.add_parser("serve", help="answer add-checkpoint requests (C2SP tlog-witness) until stopped",
                      description=WITNESS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--key", required=True, metavar="FILE", help="the witness's cosigning key (witness keygen)")
    p.add_argument("--state", required=True, metavar="DIR", help="what it cosigned, per log (keep it: its memory)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to serve on (PORT 0: any free)")
    p.add_argument("--log", action="append", required=True, metavar="VKEY",
                   help="a log's verifier key; its name is the log's origin (repeatable)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="do not log each request on stderr")
    p = ws.add_parser("keygen", help="create a cosigning key (Ed25519, C2SP tlog-cosignature type 0x04)")
    p.add_argument("--name", required=True, help="the witness's key name, e.g. secas.example/witness")
    p.add_argument("--key", required=True, metavar="FILE", help="where to write the private key (created, 0600)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _tofu(args: argparse.Namespace, trust: Trust, site: Source | None, log: Source | None) -> list[str]:
    pinned = []
    if not trust.log_keys():
        if log is None:
            raise UsageError("--tofu needs --site (or --log) to fetch the log key from")
        text = log.get("vkey", CAP_SMALL, "the log's verifier key").decode("utf-8", "replace").strip()
        try:
            key = Verifier.from_vkey(text)
        except NoteError as exc:
            raise VerifyFailed(f"the site's log/vkey is not a verifier key: {exc}") from exc
        if key.sig_type != SIG_ED25519:
            raise VerifyFailed("the site's log/vkey is not a log key (type 0x01)")
        trust.verifiers.insert(0, key)
        trust.origin = trust.origin or key.name
        pinned.append(f"log key {key.vkey}")
    if not trust.roots and site is not None:
        name = args.root_name
        data = site.get_optional(f"pki/{name}.pem", CAP_SMALL, f"IKI root {name}")
        if data is not None:
            cert = load_certificates(data, f"pki/{name}.pem")[0]
            trust.roots = [CertPin(name, cert_sha256(cert), cert)]
            pinned.append(f"IKI root {name} SHA-256 {cert_sha256(cert)} ({cert.subject.rfc4514_string()})")
    return pinned


def build_context(args: argparse.Namespace) -> Context:
    state = State(Path(args.state).expanduser() if args.state else None)
    if args.trust:
        try:
            obj = json.loads(Path(args.trust).expanduser().read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read the trust file {args.trust}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise UsageError(f"the trust file {args.trust} is not valid JSON ({exc})") from exc
        trust = parse_trust(obj, args.trust)
    elif state.trust() is not None:
        trust = parse_trust(state.trust(), f"{args.state} (pinned earlier with --tofu)")
    else:
        trust = Trust()
    if args.vkey:
        try:
            trust.verifiers = [Verifier.from_vkey(v) for v in args.vkey]
        except NoteError as exc:
            raise UsageError(f"--vkey: {exc}") from exc
    if args.origin:
        trust.origin = args.origin
    if args.vkey and trust.policy is not None and not args.policy:
        trust.set_policy(trust.policy, trust.source)  # the trust file's witnesses, beside the --vkey log key
    if args.policy:
        try:
            policy = parse_policy(Path(args.policy).expanduser().read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read the policy {args.policy}: {exc.strerror or exc}") from exc
        except PolicyError as exc:
            raise UsageError(f"--policy {args.policy}: {exc}") from exc
        trust.set_policy(policy, f"--policy {args.policy}")
    if args.root:
        trust.roots = []
        for path in args.root:
            try:
                cert = load_certificates(Path(path).read_bytes(), path)[0]
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
            except VerifyFailed as exc:
                raise UsageError(str(exc)) from exc
            trust.roots.append(CertPin(Path(path).stem if _NAME_RE.fullmatch(Path(path).stem) else "iki-root",
                                       cert_sha256(cert), cert))  # fmt: skip
    if args.eku:
        if not _OID_RE.fullmatch(args.eku):
            raise UsageError("--eku must be a dotted OID")
        trust.eku = args.eku
    if not 0 < args.timeout <= 86400:  # a socket timeout must be finite
        raise UsageError("--timeout must be more than 0 and at most 86400 seconds")
    if args.deadline is not None and not args.deadline >= 0:
        raise UsageError("--deadline must be 0 (no limit) or more seconds")
    default_deadline = AUDIT_DEADLINE if args.command in ("audit", "watch") else DEFAULT_DEADLINE
    deadline = Deadline(default_deadline if args.deadline is None else args.deadline)
    # Messages about a URL say where it came from: the command line, the trust file or the state folder.
    trust_from = (
        f"the trust file {args.trust}" if args.trust else f"the state folder {args.state}" if args.state else ""
    )
    site_base = args.site or trust.site
    site_label = "the site URL from --site" if args.site else f"the site URL from {trust_from}"
    site = Source(site_base, args.timeout, deadline=deadline, label=site_label) if site_base else None
    log: Source | None = None
    if args.log or trust.log_url:
        stats = site.stats if site else None
        log_label = "the log URL from --log" if args.log else f"the log URL from {trust_from}"
        log = Source(str(args.log or trust.log_url), args.timeout, stats, deadline=deadline, label=log_label)
    elif site is not None:
        log = site.sub("log")
    if args.tofu:
        for line in _tofu(args, trust, site, log):
            sys.stderr.write(f"TOFU: pinned {line}\n")
        if state.enabled:
            state.data["tofu_trust"] = trust.to_json()
    return Context(args, trust, state, site, log, deadline)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    problem = cryptography_problem()
    if problem:  # before anything can fail with an AttributeError deep inside a check
        sys.stderr.write(problem + "\n")
        return EXIT_ERROR
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_ERROR
    for key, value in DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if not args.command:
        parser.print_help()
        return EXIT_ERROR
    if args.command == "witness":
        return cmd_witness(args)
    ctx: Context | None = None
    code, error, evidence = EXIT_ERROR, "", ""
    try:
        ctx = build_context(args)
        code = COMMANDS[args.command](ctx)
    except VerifyFailed as exc:
        code, error, evidence = EXIT_FAILED, str(exc), exc.evidence
    except (UsageError, FetchError) as exc:
        code, error = EXIT_ERROR, str(exc)
    except KeyboardInterrupt:
        code, error = EXIT_ERROR, "interrupted"
    except BrokenPipeError:  # output piped into e.g. head
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        return EXIT_ERROR
    finally:
        if ctx is not None:
            try:
                ctx.state.save()
            except FetchError as exc:
                code, error = EXIT_ERROR, str(exc)
            finally:
                for source in (ctx.site, ctx.log):
                    if source is not None:
                        source.close()
    if args.json:
        out = {
            "command": args.command,
            "ok": code == EXIT_OK,
            "exit_code": code,
            "result": ctx.out.result if ctx else {},
            "warnings": ctx.out.warnings if ctx else [],
            "error": error or None,
            "evidence": evidence or None,
        }
        source = (ctx.site or ctx.log) if ctx is not None else None
        if source is not None:
            out["requests"] = source.stats.requests
            out["bytes"] = source.stats.bytes
        sys.stdout.write(json.dumps(out, indent=1, sort_keys=True, default=str) + "\n")
    elif error:
        if code == EXIT_FAILED:
            sys.stdout.write(f"FAILED: {printable(error)}\n")
            if evidence:
                sys.stdout.write(evidence + "\n")
        else:
            sys.stderr.write(f"cpl-verify: error: {printable(error)}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
