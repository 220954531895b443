"""Our C2SP tlog-witness (``cpl-verify witness serve``), driven over HTTP with request bodies written by hand
from the spec text (tlog-witness v1.0.0: ``old <size>``, base64 proof lines, an empty line, the checkpoint),
its cosignatures checked from first principles (tlog-cosignature v1: key ID, big-endian timestamp, Ed25519 over
``cosignature/v1\\ntime <ts>\\n`` + the checkpoint body), and its answers compared with a third-party witness
(the ``witness-log`` package). Every server listens on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import os
import random
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from witness_fixtures import Served, serve_witness_log

from publisher.tlog.note import Signer, sign_note
from verifier.cpl_verify import (
    EMPTY_ROOT,
    Verifier,
    consistency_proof,
    leaf_hash,
    list_hash_range,
    open_checkpoint,
    root_of,
)

REPO = Path(__file__).resolve().parents[1]
EM_DASH = "\u2014"
ORIGIN = "log.example/witnessed"
LOG = Signer.generate(ORIGIN)  # the log whose checkpoints the witnesses cosign
WITNESS_NAME = "witness.test/ours"
SIZE_TYPE = "text/x.tlog.size"

LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(300)]  # one growing tree
HASH_RANGE = list_hash_range(LEAVES)
OTHER_LEAVES = [leaf_hash(f"forked entry {i}".encode()) for i in range(300)]  # another tree, same origin


# ------------------------------------------------------------------------------------------------------------
# Requests written from the spec text
# ------------------------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def body_text(size: int, root: bytes | None = None, origin: str = ORIGIN) -> str:
    """A checkpoint body (tlog-checkpoint): origin, size, base64 root, each line ending in a newline."""
    return f"{origin}\n{size}\n{b64(root_of(LEAVES[:size]) if root is None else root)}\n"


def signed(size: int, root: bytes | None = None, signers: Sequence[Signer] = (LOG,), origin: str = ORIGIN) -> str:
    """The signed note of ``body_text``: the body, an empty line, one signature line per signer."""
    return sign_note(body_text(size, root, origin), list(signers))


def proof_lines(old: int, new: int, leaves: Sequence[bytes] = LEAVES) -> str:
    """RFC 6962 consistency proof from ``old`` to ``new``, one base64 hash per line."""
    hash_range = HASH_RANGE if leaves is LEAVES else list_hash_range(leaves)
    return "".join(b64(h) + "\n" for h in consistency_proof(old, new, hash_range))


def request(old: int, size: int) -> bytes:
    """``old <old>``, the proof from ``old`` to ``size`` (none from 0), the empty line, the checkpoint."""
    proof = proof_lines(old, size) if 0 < old < size else ""
    return f"old {old}\n{proof}\n{signed(size)}".encode()


def broken(line: str) -> str:
    """A signature line with its name and key ID kept and one signature bit flipped."""
    name, data = line[2:-1].split(" ")
    raw = bytearray(base64.b64decode(data))
    raw[20] ^= 0x01
    return f"{EM_DASH} {name} {b64(bytes(raw))}\n"


# ------------------------------------------------------------------------------------------------------------
# The witness process and HTTP
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str | None
    body: bytes


def http_request(host: str, port: int, method: str, path: str, body: bytes | None = None) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return Reply(response.status, response.getheader("Content-Type"), response.read())
    finally:
        conn.close()


@dataclass(frozen=True)
class WitnessKey:
    """A witness key made by ``witness keygen``, with its public key read from the key file by hand."""

    path: Path
    name: str
    public: bytes
    vkey: str  # as printed by keygen


def read_key_file(path: Path) -> tuple[str, bytes]:
    """``PRIVATE+KEY+<name>+<hex id>+<base64(0x04 || seed)>`` -> (name, Ed25519 public key)."""
    prefix, key, name, hex_id, data = path.read_text().strip().split("+", 4)
    assert (prefix, key) == ("PRIVATE", "KEY")
    raw = base64.b64decode(data, validate=True)
    assert len(raw) == 33 and raw[0] == 0x04
    public = Ed25519PrivateKey.from_private_bytes(raw[1:]).public_key().public_bytes_raw()
    assert hex_id == key_id_of(name, public).hex()
    return name, public


def key_id_of(name: str, public: bytes) -> bytes:
    """tlog-cosignature: SHA-256(<name> || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]


def vkey_of(name: str, public: bytes) -> str:
    """The vkey of an Ed25519 cosignature key: ``<name>+<hex key ID>+<base64(0x04 || public key)>``."""
    return f"{name}+{key_id_of(name, public).hex()}+{b64(bytes([0x04]) + public)}"


def parse_vkey(vkey: str) -> tuple[str, bytes]:
    """``<name>+<hex key id>+<base64(0x04 || public key)>`` -> (name, public key), the key ID checked."""
    name, hex_id, data = vkey.split("+", 2)
    raw = base64.b64decode(data, validate=True)
    assert len(raw) == 33 and raw[0] == 0x04, "an Ed25519 cosignature key (type 0x04)"
    assert hex_id == key_id_of(name, raw[1:]).hex()
    return name, raw[1:]


def keygen(name: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "verifier.cpl_verify", "witness", "keygen", "--name", name, "--key", str(path)]
    return subprocess.run([*argv, *extra], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)


def serve_argv(key: Path, state: Path, logs: Sequence[str]) -> list[str]:
    argv = [sys.executable, "-m", "verifier.cpl_verify", "witness", "serve", "--key", str(key)]
    argv += ["--state", str(state), "--listen", "127.0.0.1:0", "--quiet"]
    for vkey in logs:
        argv += ["--log", vkey]
    return argv


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@dataclass
class Running:
    """A ``witness serve`` process: where it listens, its key as printed, its state folder."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    vkey: str
    state: Path

    def post(self, body: bytes, path: str = "/add-checkpoint") -> Reply:
        return http_request(self.host, self.port, "POST", path, body)

    def get(self, path: str) -> Reply:
        return http_request(self.host, self.port, "GET", path)

    def monitoring(self, origin: str = ORIGIN) -> Reply:
        return self.get(f"/{hashlib.sha256(origin.encode()).hexdigest()}/checkpoint")

    def held_size(self) -> int:
        """The size of the checkpoint the monitoring endpoint serves (0 if none)."""
        reply = self.monitoring()
        if reply.status == 404:
            return 0
        assert reply.status == 200, reply
        return int(reply.body.decode().split("\n")[1])

    def evidence(self) -> dict[str, bytes]:
        folder = self.state / "evidence"
        return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def read_line(process: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return process.stdout.readline().decode()


def launch(key: Path, state: Path, logs: Sequence[str]) -> Running:
    """Start ``witness serve`` and wait for ``listening on http://127.0.0.1:PORT/ as <vkey>`` and one
    ``witnessing <origin>`` line per log."""
    process = subprocess.Popen(
        serve_argv(key, state, logs),
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: what select() says is readable is all there is to read
    )
    try:
        first = read_line(process)
        assert first.startswith("listening on "), f"the witness did not start: {first!r}"
        words = first.split()
        assert words[:2] == ["listening", "on"] and words[3] == "as" and len(words) == 5, first
        assert words[2].startswith("http://127.0.0.1:") and words[2].endswith("/"), first
        witnessing = sorted(read_line(process) for _ in logs)
        assert witnessing == sorted(f"witnessing {Verifier.from_vkey(v).name}\n" for v in logs)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its stderr: {stop(process).decode(errors='replace')}") from exc
    except BaseException:
        stop(process)
        raise
    return Running(process, "127.0.0.1", int(words[2].rstrip("/").rsplit(":", 1)[1]), words[4], state)


def stop(process: subprocess.Popen[bytes]) -> bytes:
    """SIGTERM (SIGKILL after 10 s) and reap; its remaining stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.communicate(timeout=10)[1] or b""
        except subprocess.TimeoutExpired:
            process.kill()
    return process.communicate()[1] or b""


@pytest.fixture(scope="module")
def witness_key(tmp_path_factory: pytest.TempPathFactory) -> WitnessKey:
    path = tmp_path_factory.mktemp("key") / "witness.key"
    done = keygen(WITNESS_NAME, path)
    assert done.returncode == 0, done.stderr
    name, public = read_key_file(path)
    return WitnessKey(path, name, public, done.stdout.strip())


Start = Callable[..., Running]


@pytest.fixture
def start(tmp_path: Path, witness_key: WitnessKey) -> Iterator[Start]:
    """Start witnesses of ``LOG`` (state in ``tmp_path/<state>``); every one still running is stopped after."""
    running: list[subprocess.Popen[bytes]] = []

    def go(state: str = "state", logs: Sequence[str] = (LOG.verifier.vkey,)) -> Running:
        w = launch(witness_key.path, tmp_path / state, logs)
        running.append(w.process)
        assert w.vkey == witness_key.vkey  # the key it says it cosigns with is the one in --key
        return w

    yield go
    for process in running:
        stop(process)


# ------------------------------------------------------------------------------------------------------------
# Cosignatures checked from first principles
# ------------------------------------------------------------------------------------------------------------


def check_cosignature(line: str, text: str, name: str, public: bytes) -> int:
    """``line`` is ``— <name> base64(key ID || uint64 BE timestamp || Ed25519 signature)`` over
    ``cosignature/v1\\ntime <ts>\\n`` + ``text``, dated now; returns the timestamp."""
    assert line.startswith(f"{EM_DASH} ") and line.endswith("\n"), line
    fields = line[2:-1].split(" ")
    assert len(fields) == 2 and fields[0] == name, line
    raw = base64.b64decode(fields[1], validate=True)
    assert len(raw) == 4 + 8 + 64
    assert raw[:4] == key_id_of(name, public)
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    assert 0 < timestamp < 1 << 63, "the timestamp MUST NOT be zero"
    message = f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()
    Ed25519PublicKey.from_public_bytes(public).verify(raw[12:], message)  # raises InvalidSignature
    assert abs(timestamp - time.time()) <= 5
    return int(timestamp)


def cosignature_lines(reply: Reply) -> list[str]:
    """A 200 body: one or more signature lines, each ``— <name> <base64>`` and a newline."""
    assert reply.status == 200, reply
    text = reply.body.decode("utf-8")
    lines = text.splitlines(keepends=True)
    assert lines and "".join(lines) == text
    for line in lines:
        assert line.startswith(f"{EM_DASH} ") and line.endswith("\n") and len(line[2:-1].split(" ")) == 2, line
    return lines


def our_cosignature(reply: Reply, text: str, key: WitnessKey) -> str:
    """The one line by our witness in a 200 reply, verified independently."""
    ours = [line for line in cosignature_lines(reply) if line.split(" ")[1] == key.name]
    assert len(ours) == 1, reply
    check_cosignature(ours[0], text, key.name, key.public)
    return ours[0]


# ------------------------------------------------------------------------------------------------------------
# 200: cosigning
# ------------------------------------------------------------------------------------------------------------


def test_first_checkpoint_old_0_is_cosigned(start: Start, witness_key: WitnessKey) -> None:
    w = start()
    reply = w.post(b"old 0\n\n" + signed(5).encode())
    assert reply.status == 200
    line = our_cosignature(reply, body_text(5), witness_key)
    # The vkey the server prints is the key that cosigns: a client pins it and checks the cosignature.
    assert parse_vkey(w.vkey) == (witness_key.name, witness_key.public)
    note = open_checkpoint(signed(5) + line, ORIGIN, [LOG.verifier, Verifier.from_vkey(w.vkey)]).note
    assert Verifier.from_vkey(w.vkey) in note.verified_by


def test_growing_tree_is_cosigned_along_consistency_proofs(start: Start, witness_key: WitnessKey) -> None:
    """From the empty tree through sizes whose proofs have every shape (powers of two and their
    neighbours), each step ``old = previous size`` and its RFC 6962 proof; then the same tree again."""
    w = start()
    old = 0
    for size in [0, 1, 2, 3, 4, 7, 8, 9, 16, 17, 31, 32, 33, 64, 100, 255, 256, 299]:
        note = signed(size, EMPTY_ROOT if size == 0 else None)
        proof = proof_lines(old, size) if 0 < old < size else ""
        reply = w.post(f"old {old}\n{proof}\n{note}".encode())
        assert reply.status == 200, (old, size, reply)
        our_cosignature(reply, body_text(size, EMPTY_ROOT if size == 0 else None), witness_key)
        assert w.held_size() == size
        old = size
    # The same tree again, old = its size and no proof: cosigned again (a log re-asks after a lost answer).
    reply = w.post(f"old 299\n\n{signed(299)}".encode())
    our_cosignature(reply, body_text(299), witness_key)
    assert w.held_size() == 299


def test_cosignature_covers_extension_lines(start: Start, witness_key: WitnessKey) -> None:
    """tlog-cosignature: extension lines "if present MUST be included in the cosigned message"."""
    w = start()
    text = body_text(5) + "extension: first\nsecond extension line\n"
    reply = w.post(f"old 0\n\n{sign_note(text, [LOG])}".encode())
    our_cosignature(reply, text, witness_key)


def test_other_signatures_on_the_checkpoint_are_ignored(start: Start, witness_key: WitnessKey) -> None:
    """A log submits its checkpoint with the cosignatures it already has: unknown keys (another witness,
    a key with the log's name but another ID) are ignored, and not served to monitors."""
    w = start()
    text = body_text(9)
    other_witness = f"{EM_DASH} other.example/witness {b64(bytes(range(76)))}\n"
    same_name = Signer.generate(ORIGIN).signature_line(text)
    note = text + "\n" + other_witness + LOG.signature_line(text) + same_name
    reply = w.post(f"old 0\n\n{note}".encode())
    line = our_cosignature(reply, text, witness_key)
    served = w.monitoring()
    assert served.status == 200
    assert served.body.decode() == text + "\n" + LOG.signature_line(text) + line


# ------------------------------------------------------------------------------------------------------------
# 409: the old size is not the size last cosigned
# ------------------------------------------------------------------------------------------------------------


def test_409_names_the_size_last_cosigned(start: Start) -> None:
    w = start()
    # Never cosigned: the size is 0.
    reply = w.post(request(5, 9))
    assert (reply.status, reply.content_type, reply.body) == (409, SIZE_TYPE, b"0\n")
    assert w.post(request(0, 9)).status == 200
    for old in (0, 5, 8, 12):  # below, and above (but not above the checkpoint's size 20)
        reply = w.post(request(old, 20))
        assert (reply.status, reply.content_type, reply.body) == (409, SIZE_TYPE, b"9\n"), old
    assert w.held_size() == 9
    assert w.evidence() == {}  # a stale client is no evidence of misbehaviour
    assert w.post(request(9, 20)).status == 200  # the client retries with the size it was told


# ------------------------------------------------------------------------------------------------------------
# 400, 403, 404: refused without changing anything (one witness holding size 5 for all of them)
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def at_size_5(tmp_path_factory: pytest.TempPathFactory, witness_key: WitnessKey) -> Iterator[tuple[Running, bytes]]:
    """A witness that cosigned size 5 (and its monitoring note), shared by the tests that must not change it."""
    w = launch(witness_key.path, tmp_path_factory.mktemp("at5") / "state", [LOG.verifier.vkey])
    try:
        assert w.post(request(0, 5)).status == 200
        yield w, w.monitoring().body
    finally:
        stop(w.process)


P5_9 = proof_lines(5, 9)
CP9 = signed(9)
TEXT9 = body_text(9)
SIG9 = LOG.signature_line(TEXT9)

BAD_REQUESTS: dict[str, bytes] = {
    "no empty line": f"old 5\n{P5_9}{CP9}".encode(),
    "no empty line, no proof": f"old 5\n{CP9}".encode(),
    "old with a leading zero": f"old 05\n{P5_9}\n{CP9}".encode(),
    "old 00": f"old 00\n\n{CP9}".encode(),
    "old negative": f"old -5\n{P5_9}\n{CP9}".encode(),
    "old with a plus sign": f"old +5\n{P5_9}\n{CP9}".encode(),
    "old in hex": f"old 0x5\n{P5_9}\n{CP9}".encode(),
    "old without a size": f"old\n{P5_9}\n{CP9}".encode(),
    "old with two spaces": f"old  5\n{P5_9}\n{CP9}".encode(),
    "old with a trailing space": f"old 5 \n{P5_9}\n{CP9}".encode(),
    "Old capitalised": f"Old 5\n{P5_9}\n{CP9}".encode(),
    "no old line": f"{P5_9}\n{CP9}".encode(),
    "old above the checkpoint size": f"old 12\n\n{CP9}".encode(),
    "old above the checkpoint size, state-matching": f"old 5\n\n{signed(4)}".encode(),
    "proof line not base64": f"old 5\n!!!!\n{P5_9}\n{CP9}".encode(),
    "proof line without padding": f"old 5\n{P5_9.rstrip().rstrip('=')}\n\n{CP9}".encode(),
    "proof hash of 31 bytes": f"old 5\n{b64(bytes(31))}\n\n{CP9}".encode(),
    "proof hash of 33 bytes": f"old 5\n{b64(bytes(33))}\n\n{CP9}".encode(),
    "64 proof lines": ("old 5\n" + (b64(bytes(32)) + "\n") * 64 + "\n" + CP9).encode(),
    "checkpoint without a root": ("old 5\n\n" + sign_note(f"{ORIGIN}\n9\n", [LOG])).encode(),
    "checkpoint size with a leading zero": (
        f"old 5\n{P5_9}\n" + sign_note(f"{ORIGIN}\n09\n{b64(root_of(LEAVES[:9]))}\n", [LOG])
    ).encode(),
    "checkpoint root of 31 bytes": ("old 5\n\n" + sign_note(f"{ORIGIN}\n9\n{b64(bytes(31))}\n", [LOG])).encode(),
    "checkpoint without its final newline": f"old 5\n{P5_9}\n{CP9[:-1]}".encode(),
    "checkpoint without signatures": f"old 5\n{P5_9}\n{TEXT9}\n".encode(),  # not a note (signed-note: 1 or more)
    "not UTF-8": f"old 5\n{P5_9}\n".encode() + b"\xff\xfe" + CP9.encode(),
}

IMPOSTOR = Signer.generate(ORIGIN)  # the log's name, another key
MALLORY = Signer.generate("mallory.example/k")
FORBIDDEN_REQUESTS: dict[str, bytes] = {
    "the log's signature broken": f"old 5\n{P5_9}\n{TEXT9}\n{broken(SIG9)}".encode(),
    "a valid and a broken signature by the log key": f"old 5\n{P5_9}\n{TEXT9}\n{SIG9}{broken(SIG9)}".encode(),
    "a broken and a valid signature by the log key": f"old 5\n{P5_9}\n{TEXT9}\n{broken(SIG9)}{SIG9}".encode(),
    # Name and key ID of the log key, and a signature that cannot verify (36 bytes instead of 64): "a signature
    # line's key name and ID match a trusted key but the signature itself fails to verify" -> 403.
    "the log's signature truncated": (
        f"old 5\n{P5_9}\n{TEXT9}\n{EM_DASH} {ORIGIN} {b64(base64.b64decode(SIG9.split()[2])[:40])}\n"
    ).encode(),
    "signed by another key of the same name": f"old 5\n{P5_9}\n{signed(9, signers=[IMPOSTOR])}".encode(),
    "signed by another name only": f"old 5\n{P5_9}\n{signed(9, signers=[MALLORY])}".encode(),
}

UNKNOWN_ORIGIN = "other.example/log"
NOT_FOUND_REQUESTS: dict[str, bytes] = {
    "an unknown origin signed by its key": (
        "old 0\n\n" + signed(1, leaf_hash(b"x"), [Signer.generate(UNKNOWN_ORIGIN)], UNKNOWN_ORIGIN)
    ).encode(),
    "an unknown origin signed by the known log key": (
        "old 0\n\n" + signed(1, leaf_hash(b"x"), [LOG], UNKNOWN_ORIGIN)
    ).encode(),
}


def assert_unchanged(w: Running, note: bytes) -> None:
    assert w.monitoring().body == note
    assert w.evidence() == {}  # only 422s (signed by the log, inconsistent) are evidence


REFUSED = {
    **{f"400 {k}": (400, v) for k, v in BAD_REQUESTS.items()},  # malformed
    **{f"403 {k}": (403, v) for k, v in FORBIDDEN_REQUESTS.items()},  # no valid log signature
    **{f"404 {k}": (404, v) for k, v in NOT_FOUND_REQUESTS.items()},  # unknown origin
}


@pytest.mark.parametrize(("status", "body"), REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_request_changes_nothing(at_size_5: tuple[Running, bytes], status: int, body: bytes) -> None:
    w, note = at_size_5
    reply = w.post(body)
    assert reply.status == status, reply
    assert_unchanged(w, note)
    assert w.monitoring(UNKNOWN_ORIGIN).status == 404


def test_404_unknown_paths(at_size_5: tuple[Running, bytes]) -> None:
    w, note = at_size_5
    digest = hashlib.sha256(ORIGIN.encode()).hexdigest()
    unknown = hashlib.sha256(UNKNOWN_ORIGIN.encode()).hexdigest()
    paths = ["/", "/add-checkpoint", "/checkpoint", f"/{digest}", f"/{digest}/checkpoint/x", f"/{unknown}/checkpoint"]
    paths += [f"/{digest.upper()}/checkpoint", f"/../logs/{digest}", f"/logs/{digest}", "/lock"]
    for path in paths:
        assert w.get(path).status == 404, path
    # add-checkpoint only at the submission prefix
    for path in ["/add-checkpoint/", "/x/add-checkpoint", "/add-checkpoint?x=1"]:
        assert w.post(request(5, 9), path=path).status == 404, path
    assert_unchanged(w, note)


# ------------------------------------------------------------------------------------------------------------
# 422: signed by the log and inconsistent (refused; a fork at the size cosigned is kept as evidence)
# ------------------------------------------------------------------------------------------------------------


def bad_proof() -> str:
    hashes = proof_lines(5, 9).split("\n")
    hashes[0] = b64(bytes(32))
    return "\n".join(hashes)


UNPROCESSABLE: dict[str, tuple[int, bytes]] = {  # the size cosigned first (0: none, -1: the empty tree), the request
    "an invalid consistency proof": (5, f"old 5\n{bad_proof()}\n{CP9}".encode()),
    "a proof from the old size of another tree": (
        5,
        f"old 5\n{proof_lines(5, 9, OTHER_LEAVES)}\n{signed(9, root_of(OTHER_LEAVES[:9]))}".encode(),
    ),
    "a valid proof to another size": (5, f"old 5\n{proof_lines(5, 10)}\n{CP9}".encode()),
    "another root at the size cosigned (a fork)": (9, f"old 9\n\n{signed(9, root_of(OTHER_LEAVES[:9]))}".encode()),
    "the root cosigned at its size, with a proof": (9, f"old 9\n{b64(bytes(32))}\n\n{CP9}".encode()),
    "size 0 with a root other than the empty tree's": (0, f"old 0\n\n{signed(0, bytes(32))}".encode()),
    "old 0 with a proof": (0, f"old 0\n{b64(root_of(LEAVES[:9]))}\n\n{CP9}".encode()),
    "old 0 with a proof, after the empty tree": (-1, f"old 0\n{b64(bytes(32))}\n\n{CP9}".encode()),
}


@pytest.mark.parametrize(("first", "body"), UNPROCESSABLE.values(), ids=UNPROCESSABLE.keys())
def test_422_inconsistent_checkpoint_is_refused_and_kept(start: Start, first: int, body: bytes) -> None:
    """``first``: the size cosigned before (0: nothing; -1: the empty tree)."""
    w = start()
    if first > 0:
        assert w.post(request(0, first)).status == 200
    elif first == -1:
        assert w.post(f"old 0\n\n{signed(0, EMPTY_ROOT)}".encode()).status == 200
    before = w.monitoring()
    reply = w.post(body)
    assert reply.status == 422, reply
    assert w.monitoring() == before  # nothing cosigned, nothing stored
    # Only two log-signed trees of one size prove misbehaviour by themselves: that checkpoint is kept, once.
    # A proof that fails is the requester's, so it proves nothing and fills no disk.
    if "(a fork)" in reply.body.decode():
        checkpoint = body.decode().split("\n\n", 1)[1]
        assert w.evidence() == {f"{hashlib.sha256(checkpoint.encode()).hexdigest()}.txt": checkpoint.encode()}
        assert w.post(body).status == 422 and len(w.evidence()) == 1
    else:
        assert w.evidence() == {}


# ------------------------------------------------------------------------------------------------------------
# Monitoring: GET <prefix>/<hex SHA-256 of origin>/checkpoint
# ------------------------------------------------------------------------------------------------------------


def test_monitoring_checkpoint(start: Start, witness_key: WitnessKey) -> None:
    w = start()
    assert w.monitoring().status == 404  # never cosigned
    assert w.post(request(5, 9)).status == 409
    assert w.monitoring().status == 404  # still never cosigned
    unknown = Signer.generate("mallory.example/k").signature_line(TEXT9)
    reply = w.post(f"old 0\n\n{CP9}{unknown}".encode())
    line = our_cosignature(reply, TEXT9, witness_key)
    served = w.monitoring()
    assert served.status == 200
    # The checkpoint, the log's signature the witness verified and the cosignature it returned; not the rest.
    assert served.body.decode() == CP9 + line
    ours = Verifier.from_vkey(w.vkey)
    note = open_checkpoint(served.body, ORIGIN, [LOG.verifier, ours]).note
    assert set(note.verified_by) == {LOG.verifier, ours}
    # A refused request leaves it unchanged; the next cosignature replaces it.
    assert w.post(request(0, 20)).status == 409
    assert w.monitoring() == served
    reply = w.post(request(9, 20))
    assert w.monitoring().body.decode() == signed(20) + our_cosignature(reply, body_text(20), witness_key)


# ------------------------------------------------------------------------------------------------------------
# Durability: restarts, crashes, concurrent requests
# ------------------------------------------------------------------------------------------------------------


def test_never_cosigns_two_trees_of_one_size_across_a_restart(start: Start, witness_key: WitnessKey) -> None:
    w = start()
    assert w.post(request(0, 5)).status == 200
    assert w.post(request(5, 9)).status == 200
    fork = f"old 9\n\n{signed(9, root_of(OTHER_LEAVES[:9]))}".encode()
    assert w.post(fork).status == 422
    served = w.monitoring()
    w.process.send_signal(signal.SIGTERM)
    assert w.process.wait(timeout=10) == 0

    w = start()  # the same --state
    assert w.monitoring() == served
    assert w.post(fork).status == 422
    reply = w.post(request(0, 9))
    assert (reply.status, reply.body) == (409, b"9\n")
    reply = w.post(f"old 9\n\n{CP9}".encode())
    our_cosignature(reply, TEXT9, witness_key)
    assert w.post(request(9, 12)).status == 200


def test_sigkill_right_after_a_200_keeps_the_new_size(start: Start, witness_key: WitnessKey) -> None:
    w = start()
    assert w.post(request(0, 5)).status == 200
    line = our_cosignature(w.post(request(5, 9)), TEXT9, witness_key)
    w.process.kill()  # SIGKILL: no chance to do anything after answering
    w.process.wait(timeout=10)

    w = start()
    reply = w.post(request(5, 12))
    assert (reply.status, reply.content_type, reply.body) == (409, SIZE_TYPE, b"9\n")
    # What monitors see is the checkpoint and the very cosignature the log was given.
    served = w.monitoring()
    assert (served.status, served.body.decode()) == (200, CP9 + line)
    assert w.post(request(9, 12)).status == 200


def test_check_and_update_are_atomic(start: Start) -> None:
    """Clients race to extend one tree, each sending ``old`` = the size it believes the witness holds and
    learning the real one from 409s. Every 200 moves the witness from its ``old`` to its size, so if each
    check-and-update is atomic the 200s form one chain 0 -> a -> b -> ... -> the size finally held (two 200s
    from the same old size would be the race tlog-witness describes, a rollback)."""
    w = start()
    threads_n, rounds, largest = 8, 12, len(LEAVES) - 1
    notes = {size: signed(size) for size in range(largest + 1)}
    accepted: list[tuple[int, int]] = []
    failures: list[str] = []
    barrier = threading.Barrier(threads_n)
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(w.host, w.port, timeout=30)  # keep-alive
        believed = 0
        barrier.wait()
        try:
            for _ in range(rounds):
                size = min(believed + rng.randint(1, 4), largest)
                if size == believed:
                    break
                proof = proof_lines(believed, size) if believed else ""
                conn.request("POST", "/add-checkpoint", f"old {believed}\n{proof}\n{notes[size]}".encode())
                response = conn.getresponse()
                data = response.read()
                if response.status == 200:
                    with lock:
                        accepted.append((believed, size))
                    believed = size
                elif response.status == 409 and response.getheader("Content-Type") == SIZE_TYPE:
                    believed = int(data)
                else:
                    failures.append(f"{believed}->{size}: {response.status} {data!r}")
        except Exception as exc:  # reported by the test, not lost with the thread
            failures.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not failures
    assert len(accepted) > threads_n  # the race happened on more than the first step
    olds = [old for old, _ in accepted]
    assert len(set(olds)) == len(olds), "two requests from the same old size were both cosigned"
    chain = sorted(accepted)
    assert chain[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chain)), chain
    assert w.held_size() == chain[-1][1] == max(size for _, size in accepted)


# ------------------------------------------------------------------------------------------------------------
# The processes: SIGTERM, one process per state folder, keygen
# ------------------------------------------------------------------------------------------------------------


def test_sigterm_during_start_up_exits_0(tmp_path: Path, witness_key: WitnessKey) -> None:
    """SIGTERM stops the witness with exit 0 whenever it comes once ``listening on ...`` is printed (the line
    ``publisher.demo.start_witness`` and service managers wait for), also while the witness still writes its
    ``witnessing <origin>`` lines: here 2000 logs, to a pipe not read further, so those writes block."""
    logs = [Signer.generate(f"log{n:04}.example/a-rather-long-log-origin-path").verifier.vkey for n in range(2000)]
    process = subprocess.Popen(
        serve_argv(witness_key.path, tmp_path / "state", logs), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert read_line(process).startswith("listening on ")
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        stop(process)
    assert out.count(b"\n") < 2000  # it was stopped before it printed them all
    assert (process.returncode, err.decode()) == (0, "")


def test_sigterm_while_serving_exits_0(start: Start) -> None:
    w = start()
    assert w.post(request(0, 5)).status == 200
    w.process.send_signal(signal.SIGTERM)
    _, err = w.process.communicate(timeout=10)
    assert (w.process.returncode, err) == (0, b"")


def test_one_process_per_state_folder(start: Start, witness_key: WitnessKey, tmp_path: Path) -> None:
    w = start()
    state = tmp_path / "state"
    second = subprocess.run(
        serve_argv(witness_key.path, state, [LOG.verifier.vkey]),
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 2
    assert str(state) in second.stderr
    assert "listening" not in second.stdout
    assert w.post(request(0, 5)).status == 200  # the first is unharmed


def test_keygen(tmp_path: Path) -> None:
    path = tmp_path / "w.key"
    done = keygen("witness.example/k", path)
    assert done.returncode == 0, done.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    name, public = read_key_file(path)
    assert done.stdout == vkey_of(name, public) + "\n"
    assert parse_vkey(done.stdout.strip()) == ("witness.example/k", public)
    key = path.read_bytes()
    again = keygen("witness.example/k", path)
    assert again.returncode == 2
    assert str(path) in again.stderr
    assert path.read_bytes() == key  # never overwritten
    out = tmp_path / "j.key"
    js = keygen("witness.example/j", out, "--json")
    assert js.returncode == 0, js.stderr
    name, public = read_key_file(out)
    assert json.loads(js.stdout) == {"name": "witness.example/j", "vkey": vkey_of(name, public), "key": str(out)}


# ------------------------------------------------------------------------------------------------------------
# The same answers as a third-party witness (witness-log)
# ------------------------------------------------------------------------------------------------------------

CROSS: dict[str, tuple[list[bytes], bytes, int]] = {  # requests before, the request, its status
    "200 first": ([], request(0, 5), 200),
    "200 consistent": ([request(0, 5)], request(5, 9), 200),
    "200 same tree again": ([request(0, 5)], request(5, 5), 200),
    "200 after the empty tree": ([f"old 0\n\n{signed(0, EMPTY_ROOT)}".encode()], request(0, 3), 200),
    "409 stale": ([request(0, 5)], request(0, 9), 409),
    "409 never cosigned": ([], request(5, 9), 409),
    "400 old above size": ([], f"old 9\n\n{signed(5)}".encode(), 400),
    "400 64 proof lines": ([request(0, 5)], ("old 5\n" + (b64(bytes(32)) + "\n") * 64 + "\n" + CP9).encode(), 400),
    "403 broken signature": ([request(0, 5)], FORBIDDEN_REQUESTS["the log's signature broken"], 403),
    "403 unknown key": ([request(0, 5)], FORBIDDEN_REQUESTS["signed by another key of the same name"], 403),
    "403 truncated signature": ([request(0, 5)], FORBIDDEN_REQUESTS["the log's signature truncated"], 403),
    "404 unknown origin": ([], NOT_FOUND_REQUESTS["an unknown origin signed by its key"], 404),
    "422 fork": ([request(0, 9)], UNPROCESSABLE["another root at the size cosigned (a fork)"][1], 422),
    "422 bad proof": ([request(0, 5)], UNPROCESSABLE["an invalid consistency proof"][1], 422),
    "422 old 0 with proof": ([], UNPROCESSABLE["old 0 with a proof"][1], 422),
    "422 size 0 wrong root": ([], UNPROCESSABLE["size 0 with a root other than the empty tree's"][1], 422),
}


@pytest.fixture(scope="module")
def witness_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Served]]:
    """Start third-party witnesses of ``LOG``, each with a fresh state; all closed after the module (together:
    each close waits up to half a second for its server loop)."""
    served: list[Served] = []

    def go() -> Served:
        state = tmp_path_factory.mktemp("witness-log") / "state"
        served.append(serve_witness_log(state, "witness-log.test/w", LOG.verifier))
        return served[-1]

    yield go
    closing = [threading.Thread(target=s.close) for s in served]
    for t in closing:
        t.start()
    for t in closing:
        t.join()


@pytest.fixture
def witness_log_server(witness_logs: Callable[[], Served]) -> Served:
    return witness_logs()


def post_to(url: str, body: bytes) -> Reply:
    host, port = url.removeprefix("http://").split(":")
    return http_request(host, int(port), "POST", "/add-checkpoint", body)


@pytest.mark.parametrize(("before", "body", "status"), CROSS.values(), ids=CROSS.keys())
def test_same_status_as_witness_log(
    start: Start,
    witness_key: WitnessKey,
    witness_log_server: Served,
    before: list[bytes],
    body: bytes,
    status: int,
) -> None:
    ours = start()
    for setup in before:
        assert ours.post(setup).status == 200
        assert post_to(witness_log_server.url, setup).status == 200
    mine, theirs = ours.post(body), post_to(witness_log_server.url, body)
    assert theirs.status == status, theirs
    assert mine.status == status, mine
    if status == 409:
        assert (mine.content_type, mine.body) == (theirs.content_type, theirs.body) == (SIZE_TYPE, theirs.body)
        assert theirs.body.endswith(b"\n") and theirs.body.strip().isdigit()
    if status == 200:  # both cosign the submitted checkpoint's body, now
        checkpoint = body.decode().partition("\n\n")[2]
        text = checkpoint[: checkpoint.rindex("\n\n") + 1]
        our_cosignature(mine, text, witness_key)
        name, public = parse_vkey(witness_log_server.verifier.vkey)
        [line] = [line for line in cosignature_lines(theirs) if line.split(" ")[1] == name]
        check_cosignature(line, text, name, public)


def test_witness_log_cosignature_verifies(witness_log_server: Served) -> None:
    """What our library and our own first-principles check accept is what another implementation signs."""
    vkey = witness_log_server.verifier.vkey
    name, public = parse_vkey(vkey)
    for body, text, note in [(request(0, 5), body_text(5), signed(5)), (request(5, 9), TEXT9, CP9)]:
        reply = post_to(witness_log_server.url, body)
        lines = [line for line in cosignature_lines(reply) if line.split(" ")[1] == name]
        assert len(lines) == 1
        check_cosignature(lines[0], text, name, public)
        theirs = Verifier.from_vkey(vkey)
        opened = open_checkpoint(note + lines[0], ORIGIN, [LOG.verifier, theirs]).note
        assert theirs in opened.verified_by
        theirs.verify(text, opened.signatures[-1].signature)
