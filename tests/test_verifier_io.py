"""The verifier's fetching under hostile or unusual conditions: servers that drip bytes, a command that
runs out of time, gzip-encoded sites and gzip bombs, local site folders holding FIFOs or symbolic links
out of the folder, unreachable URLs, an old ``cryptography``, and ``--version``.

Each case ends promptly with the documented exit code and a message that names the URL or path; no
traceback reaches the user. Runs that could hang on a broken verifier run the downloadable file in a
subprocess with a timeout.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from verifier_fixtures import SiteServer, SocketServer, World, image_hash, iter_files, shared_world

import publisher
from publisher.cli import main as publisher_main
from verifier import cpl_verify
from verifier.cpl_verify import main

REPO = Path(__file__).resolve().parents[1]
VERIFIER = REPO / "verifier" / "cpl_verify.py"
OLD_CRYPTOGRAPHY_LOCK = REPO / "tests" / "old-cryptography.lock"
OLD_CRYPTOGRAPHY_VENV = REPO / ".venv-old-crypto"  # kept between runs; ignored by git


@dataclass
class Run:
    code: int
    out: str
    seconds: float


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.getbasetemp() / "shared-verifier-world"
    base.mkdir(exist_ok=True)
    return shared_world(str(base))


@pytest.fixture()
def trust(world: World, tmp_path: Path) -> Path:
    """A trust file without a site: each test names the site with --site."""
    return world.write_trust(tmp_path / "trust.json")


def run_file(*args: object, timeout: float = 30) -> Run:
    """The downloadable file in a fresh process; a hang fails the test instead of the suite."""
    start = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, str(VERIFIER), *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the verifier was still running after {timeout} s: {args}")
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    return Run(result.returncode, out, time.monotonic() - start)


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> Run:
    start = time.monotonic()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()  # an uncaught exception would have failed the test already
    return Run(code, captured.out + captured.err, time.monotonic() - start)


def site_files(world: World) -> dict[str, bytes]:
    return {p.relative_to(world.site).as_posix(): p.read_bytes() for p in iter_files(world.site)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# =====================================================================================================
# --timeout is for the whole request; --deadline for the whole command
# =====================================================================================================


class DripServer(SocketServer):
    """On 127.0.0.1: reads a request, then answers one byte every ``interval`` seconds, forever.

    ``where="headers"`` drips the status line and an endless header; ``where="body"`` sends the headers
    at once and drips the body.
    """

    def __init__(self, where: str, interval: float = 0.5) -> None:
        self.where = where
        self.interval = interval
        super().__init__()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(4096)
                    if not data:
                        return
                    request += data
                if self.where == "body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                    stream: Iterator[int] = itertools.repeat(ord("x"))
                else:
                    stream = itertools.chain(b"HTTP/1.1 200 OK\r\nX-Drip: ", itertools.repeat(ord("a")))
                for byte in stream:
                    if self.stop.wait(self.interval):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the verifier hung up, as it should


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_server_dripping_bytes_is_cut_off_at_the_timeout(trust: Path, where: str) -> None:
    with DripServer(where) as drip:
        r = run_file("--trust", trust, "--site", drip.url, "--timeout", 2, "consistency", timeout=30)
    assert r.code == 2, r.out
    assert r.seconds < 8, f"took {r.seconds:.1f} s with --timeout 2"
    assert f"{drip.url}log/checkpoint (the site URL from --site): no complete answer within 2 s (--timeout)" in r.out


def test_the_whole_command_stops_at_the_deadline(
    world: World, srv: SiteServer, trust: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every file answers in 0.3 s, well within --timeout, but an audit needs dozens of them.
    def slow(data: bytes) -> Callable[[], bytes]:
        def answer() -> bytes:
            time.sleep(0.3)
            return data

        return answer

    for rel, data in site_files(world).items():
        srv.override(rel, slow(data))
    r = run_main(capsys, "--trust", trust, "--site", srv.url, "--timeout", 5, "--deadline", 1.5, "audit")
    assert r.code == 2, r.out
    assert r.seconds < 4, f"took {r.seconds:.1f} s with --deadline 1.5"
    assert "cpl-verify: error: stopped after 1.5 s (--deadline):" in r.out
    assert srv.url in r.out  # names what it was fetching


def test_monitor_gives_each_check_the_whole_deadline(
    srv: SiteServer, trust: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Three checks 0.7 s apart outlast a 1 s deadline; each check alone takes far less.
    state = tmp_path / "state"
    args = ("--trust", trust, "--site", srv.url, "--state", state, "--deadline", 1, "monitor")
    r = run_main(capsys, *args, "--interval", 0.7, "--count", 3)
    assert r.code == 0, r.out
    assert r.seconds > 1.2


def test_help_explains_timeout_and_deadline() -> None:
    r = run_file("--help")
    text = " ".join(r.out.split())  # argparse wraps the lines
    assert r.code == 0
    assert "--timeout SECONDS the most one request may take: connect, headers and body (default 20)" in text
    assert "--deadline SECONDS stop with exit code 2 after this long (default 300; audit 3600;" in text


def test_timeout_and_deadline_must_be_sensible(srv: SiteServer, trust: Path, capsys: Any) -> None:
    for timeout in ("0", "-1", "inf", "nan"):
        r = run_main(capsys, "--trust", trust, "--site", srv.url, "--timeout", timeout, "consistency")
        assert r.code == 2 and "--timeout must be more than 0 and at most 86400 seconds" in r.out
    for deadline in ("-1", "nan"):
        r = run_main(capsys, "--trust", trust, "--site", srv.url, "--deadline", deadline, "consistency")
        assert r.code == 2 and "--deadline must be 0 (no limit) or more seconds" in r.out
    r = run_main(capsys, "--trust", trust, "--site", srv.url, "--deadline", 0, "--timeout", 86400, "consistency")
    assert r.code == 0, r.out  # no deadline at all, and the longest timeout


# =====================================================================================================
# Content-Encoding: the size caps apply to the decoded bytes
# =====================================================================================================

Encoder = Callable[[str, bytes], tuple[str | None, bytes]]


class EncodedSite:
    """The exported site over HTTP/1.1 on 127.0.0.1, each file sent as ``encode(path, data)`` returns:
    (the Content-Encoding header or None, the body)."""

    def __init__(self, root: Path, encode: Encoder) -> None:
        self.encode = encode
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                rel = self.path.split("?", 1)[0].lstrip("/")
                path = (root / rel).resolve()
                if root.resolve() not in path.parents or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                encoding, body = site.encode(rel, path.read_bytes())
                self.send_response(200)
                if encoding is not None:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EncodedSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def two_members(data: bytes) -> bytes:
    """A valid gzip stream of two members (RFC 1952 2.2), as some servers concatenate them."""
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


ENCODINGS: dict[str, Encoder] = {
    "gzip": lambda rel, data: ("gzip", gzip.compress(data)),
    "x-gzip": lambda rel, data: ("x-gzip", gzip.compress(data)),
    "gzip, two members": lambda rel, data: ("gzip", two_members(data)),
    "identity named": lambda rel, data: ("identity", data),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_an_encoded_site_verifies(world: World, trust: Path, tmp_path: Path, name: str, capsys: Any) -> None:
    # Full tiles of SHA-256 hashes do not compress: gzip makes them larger than the tile itself.
    with EncodedSite(world.site, ENCODINGS[name]) as site:
        for command in (["audit"], ["consistency"], ["inclusion", "--hash", image_hash("e2")]):
            r = run_main(capsys, "--trust", trust, "--site", site.url, "--state", tmp_path / "state", *command)
            assert r.code == 0, (command, r.out)


def bomb(size: int, members: int = 1) -> bytes:
    """``members`` gzip members that together expand to ``size`` zero bytes (made without holding them)."""
    each = size // members
    block = b"\0" * min(each, 1024 * 1024)
    out = []
    for _ in range(members):
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        out.extend(packer.compress(block) for _ in range(each // len(block)))
        out.append(packer.flush())
    return b"".join(out)


def current_size(world: World) -> int:
    return int((world.site / "log" / "checkpoint").read_text().splitlines()[1])


EXPANDS = "the response expands to more than the {cap} allowed; refusing it"


@pytest.mark.parametrize(
    ("target", "body", "message"),
    [
        ("checkpoint", lambda: bomb(32 * 1024 * 1024), EXPANDS),
        ("checkpoint", lambda: bomb(1024 * 1024, members=1024), EXPANDS),
        ("tile", lambda: bomb(4 * 1024 * 1024), EXPANDS),
        ("checkpoint", lambda: bomb(256 * 1024 * 1024), "the site announces {length}, more than the 69.0 KiB allowed"),
        ("checkpoint", lambda: gzip.compress(b"x" * 1000)[:-10], "the gzip response is truncated"),
        ("checkpoint", lambda: b"\x1f\x8b not gzip at all", "the gzip response is corrupt"),
    ],
    ids=["bomb", "bomb in 1024 members", "bomb as a tile", "huge bomb", "truncated", "corrupt"],
)
def test_hostile_gzip_is_refused_within_the_cap(
    world: World,
    trust: Path,
    tmp_path: Path,
    target: str,
    body: Callable[[], bytes],
    message: str,
    capsys: Any,
) -> None:
    size = current_size(world)
    path = "log/checkpoint" if target == "checkpoint" else f"log/tile/0/000.p/{size}"
    data = body()

    def encode(rel: str, plain: bytes) -> tuple[str | None, bytes]:
        return ("gzip", data) if rel == path else (None, plain)

    with EncodedSite(world.site, encode) as site:
        command = "audit" if target == "tile" else "consistency"
        r = run_main(capsys, "--trust", trust, "--site", site.url, "--state", tmp_path / "state", command)
    assert r.code == 1, r.out
    cap = cpl_verify.CAP_CHECKPOINT if target == "checkpoint" else size * cpl_verify.HASH_SIZE
    expected = message.format(cap=cpl_verify._size(cap), length=cpl_verify._size(len(data)))
    assert f"{site.url}{path}: {expected}" in r.out, r.out
    assert r.seconds < 10


def test_an_unknown_content_encoding_is_refused(world: World, trust: Path, capsys: Any) -> None:
    def encode(rel: str, data: bytes) -> tuple[str | None, bytes]:
        return "br", data

    with EncodedSite(world.site, encode) as site:
        r = run_main(capsys, "--trust", trust, "--site", site.url, "consistency")
    assert r.code == 1
    assert "log/checkpoint: unsupported Content-Encoding 'br' (this verifier accepts gzip or identity)" in r.out


# =====================================================================================================
# Local site folders: regular files inside the folder only
# =====================================================================================================


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_in_a_site_folder_is_refused_at_once(world: World, trust: Path, tmp_path: Path) -> None:
    site = world.copy_site(tmp_path / "site")
    (site / "log" / "checkpoint").unlink()
    os.mkfifo(site / "log" / "checkpoint")  # opening it for reading would wait for a writer
    r = run_file("--trust", trust, "--site", site, "consistency", timeout=30)
    assert r.code == 1, r.out
    assert f"{site / 'log' / 'checkpoint'} is not a regular file (a FIFO, device or socket)" in r.out
    assert r.seconds < 10


def _link_out(site: Path, rel: str, outside: Path) -> None:
    """Move ``site/rel`` to ``outside`` and leave a symbolic link to it in its place."""
    shutil.move(str(site / rel), str(outside))
    (site / rel).symlink_to(outside)


@pytest.mark.parametrize("rel", ["log/checkpoint", "log/tile", "log"], ids=["file", "folder on the way", "log"])
def test_a_symbolic_link_out_of_the_site_folder_is_refused(
    world: World, trust: Path, tmp_path: Path, rel: str, capsys: Any
) -> None:
    site = world.copy_site(tmp_path / "site")
    _link_out(site, rel, tmp_path / "elsewhere")  # the same bytes, but outside the folder given
    r = run_main(capsys, "--trust", trust, "--site", site, "inclusion", "--hash", image_hash("e2"))
    assert r.code == 1, r.out
    assert "leads outside the site folder" in r.out and "through a symbolic link; refusing to read it" in r.out


def test_symbolic_links_within_the_site_folder_are_followed(
    world: World, trust: Path, tmp_path: Path, capsys: Any
) -> None:
    site = world.copy_site(tmp_path / "site")
    (site / "log").rename(site / "log-v1")
    (site / "log").symlink_to("log-v1")  # e.g. a deployment switching between versions
    r = run_main(capsys, "--trust", trust, "--site", site, "inclusion", "--hash", image_hash("e2"))
    assert r.code == 0, r.out


# =====================================================================================================
# Connection errors say where the URL came from
# =====================================================================================================


def test_connection_refused_names_where_the_url_came_from(
    world: World, srv: SiteServer, tmp_path: Path, capsys: Any
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    plain = world.write_trust(tmp_path / "plain.json")
    r = run_main(capsys, "--trust", plain, "--site", dead, "consistency")
    assert r.code == 2
    assert f"cannot connect to {dead}log/checkpoint (the site URL from --site): " in r.out

    with_site = world.write_trust(tmp_path / "with-site.json", dead)
    r = run_main(capsys, "--trust", with_site, "consistency")
    assert r.code == 2
    assert f"cannot connect to {dead}log/checkpoint (the site URL from the trust file {with_site}): " in r.out

    obj = world.trust(srv.url)
    obj["log"]["url"] = dead + "log/"
    with_log = tmp_path / "with-log.json"
    with_log.write_text(json.dumps(obj))
    r = run_main(capsys, "--trust", with_log, "consistency")
    assert r.code == 2
    assert f"cannot connect to {dead}log/checkpoint (the log URL from the trust file {with_log}): " in r.out

    r = run_main(capsys, "--trust", plain, "--site", srv.url, "--log", dead + "log/", "consistency")
    assert r.code == 2
    assert f"cannot connect to {dead}log/checkpoint (the log URL from --log): " in r.out


# =====================================================================================================
# cryptography too old: a clear message, not an AttributeError
# =====================================================================================================

_NETWORK_TROUBLE = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
    "Connection refused",
    "ConnectTimeoutError",
)


def _old_cryptography_python() -> Path:
    """A venv with cryptography 41.0.7 from the hash-pinned lock file, built once and kept."""
    lock = OLD_CRYPTOGRAPHY_LOCK.read_bytes()
    key = hashlib.sha256(lock + sys.version.encode()).hexdigest()
    python = OLD_CRYPTOGRAPHY_VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = OLD_CRYPTOGRAPHY_VENV / ".lock-sha256"
    if stamp.exists() and stamp.read_text() == key and python.exists():
        return python
    building = OLD_CRYPTOGRAPHY_VENV.with_name(OLD_CRYPTOGRAPHY_VENV.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True, timeout=300)
    new_python = building / python.relative_to(OLD_CRYPTOGRAPHY_VENV)
    pip = subprocess.run(
        [str(new_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--require-hashes", "--only-binary", ":all:", "-r", str(OLD_CRYPTOGRAPHY_LOCK)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if pip.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        if any(marker in pip.stderr for marker in _NETWORK_TROUBLE):
            pytest.skip(f"pip cannot reach the package index to install cryptography 41.0.7: {pip.stderr[-500:]}")
        pytest.fail(f"pip could not install {OLD_CRYPTOGRAPHY_LOCK.name}: {pip.stderr}")
    (building / ".lock-sha256").write_text(key)
    shutil.rmtree(OLD_CRYPTOGRAPHY_VENV, ignore_errors=True)
    building.rename(OLD_CRYPTOGRAPHY_VENV)
    return python


def test_an_old_cryptography_is_refused_with_a_clear_message(trust: Path, tmp_path: Path) -> None:
    python = _old_cryptography_python()
    version = subprocess.run(
        [str(python), "-c", "import cryptography; print(cryptography.__version__)"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert version == "41.0.7"
    for command in (["crl"], ["cert", str(tmp_path / "any.pem")], ["audit"], ["--help"]):
        result = subprocess.run(
            [str(python), str(VERIFIER), "--trust", str(trust), *command],
            capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr == "cpl-verify needs cryptography >= 42.0; found 41.0.7: pip install -U cryptography\n"


def test_the_installed_command_checks_cryptography_first(
    monkeypatch: pytest.MonkeyPatch, trust: Path, capsys: Any
) -> None:
    import cryptography

    monkeypatch.setattr(cryptography, "__version__", "38.0.4")  # Debian 12's
    r = run_main(capsys, "--trust", trust, "crl")
    assert r.code == 2
    assert r.out == "cpl-verify needs cryptography >= 42.0; found 38.0.4: pip install -U cryptography\n"


# =====================================================================================================
# --version: the verifier, the script and the publisher say the package's version
# =====================================================================================================


def test_versions_agree_with_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert cpl_verify.__version__ == version == publisher.__version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"cpl-verify {version}\n"

    r = run_file("--version")
    assert (r.code, r.out) == (0, f"cpl-verify {version}\n")

    with pytest.raises(SystemExit) as exit_:
        publisher_main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"cpl-publisher {version}\n"


class TLSDripServer(SocketServer):
    """On 127.0.0.1: answers a TLS ClientHello with the header of a 16 KB handshake record, then one byte
    every 0.3 s: every read completes well within any per-read timeout, the handshake never does."""

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                conn.recv(4096)
                conn.sendall(b"\x16\x03\x03\x40\x00")
                while not self.stop.is_set():
                    time.sleep(0.3)
                    conn.sendall(b"\x02")
            except OSError:
                return  # the verifier hung up, as it should

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.sock.getsockname()[1]}/"


@pytest.mark.parametrize("limit", [("--timeout", 2), ("--deadline", 2)], ids=["timeout", "deadline"])
def test_a_triage_endpoint_dripping_its_handshake_is_cut_off(
    srv: SiteServer, trust: Path, limit: tuple[str, int]
) -> None:
    with TLSDripServer() as drip:
        r = run_file("--trust", trust, "--site", srv.url, *limit, "link", drip.url, timeout=60)
    assert r.code == 2, r.out
    assert r.seconds < 8, f"took {r.seconds:.1f} s with {limit}"
    assert "no complete TLS handshake" in r.out
