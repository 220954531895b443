"""Deploy a built site to an S3-compatible object store, append-only, checkpoint last.

The bucket is treated as Sunlight and Tessera treat theirs:

* **Immutable objects** (tiles, entry bundles, evidence, archived CRLs, the log's
  key) are created with ``If-None-Match: *`` and ``Cache-Control: public,
  max-age=31536000, immutable``; one that exists with other bytes is a refusal
  (``ImmutableObjectChanged``), checked for every such object before anything is
  uploaded, so the bucket is append-only for them as the publication is.
* **Mutable objects** (pages, lookup and search shards, current CRLs,
  ``status.json``) are written when their bytes differ, with short caches; a current
  CRL's cache ends well before its nextUpdate.
* **The checkpoint** goes last, with ``Cache-Control: public, max-age=5``, by
  compare-and-swap on its ETag (``If-Match``), and only when it extends the
  bucket's own checkpoint (a consistency proof from the site's tiles): a deploy never
  moves it backwards or to a fork, and a deploy cut short at any point leaves the old
  checkpoint over tiles that include its tree.
* **One deployer at a time**: a lock object (``.cpl-deploy.lock``) created with
  ``If-None-Match: *`` and renewed by compare-and-swap; a lock left by a killed
  deployer is taken over once it expires (or at once, when its holder was a process
  on this machine that is gone).

What is already in the bucket is found by listing it (ETags are the objects' MD5 for
single-part uploads, as S3 and S3-compatible stores compute them), so a deploy uploads
what changed since the bucket's state, whichever machine deployed before.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes

from publisher.errors import Refused, UsageError
from publisher.pki.der import parse_time
from publisher.publication import CRL_ARCHIVE, CRL_DIR, EVIDENCE_DIR, LOG_DIR, now_utc
from publisher.site.state import cache_dir
from publisher.storage import ImmutableObjectChanged
from publisher.tlog import LogReader, read_vkey
from publisher.tlog.checkpoint import open_checkpoint
from publisher.tlog.merkle import ProofError, verify_consistency
from verifier.cpl_verify import CheckpointError, NoteError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
CHECKPOINT_CACHE = "public, max-age=5"
DATA_CACHE = "public, max-age=60"  # lookup and search shards, status.json: change at every publish
PAGE_CACHE = "public, max-age=300"
CRL_CACHE_MAX = 300
LOCK_KEY = ".cpl-deploy.lock"
LOCK_TTL = 120  # seconds; renewed every LOCK_TTL / 4 while a deploy runs
CHECKPOINT = f"{LOG_DIR}/checkpoint"
SKIPPED = ("_headers",)  # host configuration for Netlify-like hosts, not content

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".xml": "application/xml",
    ".gz": "application/gzip",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".sha256": "text/plain; charset=utf-8",
    ".py": "text/x-python; charset=utf-8",
    ".crl": "application/pkix-crl",
    ".pem": "application/x-pem-file",
}


class DeployRefused(Refused):
    """The bucket's state forbids this deploy (its checkpoint is ahead or on another tree, or it is locked)."""


@dataclass(frozen=True)
class Target:
    """An ``s3://BUCKET/PREFIX`` destination."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """``s3://BUCKET[/PREFIX]``; UsageError otherwise."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise UsageError(f"{url!r}: the destination must be s3://BUCKET or s3://BUCKET/PREFIX")
        prefix = parts.path.strip("/")
        if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
            raise UsageError(f"{url!r}: the prefix has an empty, '.' or '..' segment")
        return cls(parts.netloc, prefix)

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel


@dataclass(frozen=True)
class Policy:
    """How one site file is stored: create-only or not, its Content-Type and Cache-Control."""

    immutable: bool
    content_type: str
    cache_control: str


def policy(rel: str, crl_next_update: dict[str, dt.datetime], now: dt.datetime) -> Policy:
    """The storage policy of the site file ``rel`` (a path relative to the site). Pure."""
    name = rel.rsplit("/", 1)[-1]
    suffix = name[name.rfind(".") :] if "." in name else ""
    octets = "application/octet-stream"
    if rel.startswith((f"{LOG_DIR}/tile/", f"{LOG_DIR}/{EVIDENCE_DIR}/")):
        return Policy(True, octets, IMMUTABLE_CACHE)
    if rel == f"{LOG_DIR}/vkey":
        return Policy(True, "text/plain; charset=utf-8", IMMUTABLE_CACHE)
    if rel == CHECKPOINT:
        return Policy(False, "text/plain; charset=utf-8", CHECKPOINT_CACHE)
    if rel.startswith(f"{CRL_ARCHIVE}/"):
        return Policy(True, CONTENT_TYPES[".crl"], IMMUTABLE_CACHE)
    content_type = CONTENT_TYPES.get(suffix, octets)
    if rel.startswith(f"{CRL_DIR}/") and rel.count("/") == 1:
        issuer = name[: -len(suffix)] if suffix else name
        return Policy(False, content_type, crl_cache(crl_next_update.get(issuer), now))
    if rel.startswith((f"{LOG_DIR}/", "search/")) or rel == "status.json":
        return Policy(False, content_type, DATA_CACHE)
    return Policy(False, content_type, PAGE_CACHE)


def crl_cache(next_update: dt.datetime | None, now: dt.datetime) -> str:
    """A current CRL's Cache-Control: at most ``CRL_CACHE_MAX`` seconds, and at most a quarter of the time
    left to its nextUpdate, so no cache serves it near or past its nextUpdate. Pure."""
    if next_update is None:
        return f"public, max-age={CRL_CACHE_MAX // 5}"
    left = int((next_update - now).total_seconds())
    if left <= 0:
        return "no-cache"
    return f"public, max-age={min(CRL_CACHE_MAX, left // 4)}"


@dataclass(frozen=True)
class Local:
    """A site file: its path relative to the site, size and MD5 (hex, as the store's ETag)."""

    rel: str
    path: Path
    size: int
    md5: str


@dataclass
class Report:
    """What a deploy did."""

    bucket: str
    prefix: str
    files: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    unchanged: int = 0
    checkpoint: str = "unchanged"  # "moved", "created", "unchanged"
    size: int = 0
    seconds: float = 0.0
    uploaded_keys: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["uploaded_keys"] = self.uploaded_keys[:100]
        return out


def md5_hex(data: bytes) -> str:
    """MD5 of ``data`` in hex: what S3 reports as a single-part object's ETag (an identity, not a security
    check: what the log vouches for is checked by hashes the log signs)."""
    digest = hashes.Hash(hashes.MD5())  # noqa: S303 - the ETag S3 computes, compared for identity only
    digest.update(data)
    return digest.finalize().hex()


def site_files(site: Path) -> Iterator[Path]:
    """The site's files, without hidden ones (caches, temporaries) and host configuration."""
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(site).as_posix()
            if not name.startswith(".") and rel not in SKIPPED:
                yield path


class Deployer:
    """One deploy of ``site`` to ``target`` through an S3 ``client`` (boto3)."""

    def __init__(
        self,
        client: S3Client,
        site: Path,
        target: Target,
        progress: Callable[[str], None] = lambda _: None,
        workers: int = 8,
        lock_ttl: int = LOCK_TTL,
    ) -> None:
        self.s3 = client
        self.site = site
        self.target = target
        self.progress = progress
        self.workers = workers
        self.lock_ttl = lock_ttl
        self.now = now_utc()
        self.report = Report(target.bucket, target.prefix)
        self._lock_etag: str | None = None
        self._lock_body = b""
        self._lock_lost = threading.Event()
        self._stop_renewing = threading.Event()

    # -- the site ------------------------------------------------------------------------------------------
    def _local(self) -> list[Local]:
        """Every site file with its MD5, remembered beside the site by (size, mtime, inode): a file the build
        did not rewrite is not read again."""
        memo_path = cache_dir(self.site) / "deploy-md5.json"
        try:
            memo: dict[str, list[Any]] = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        out, seen = [], {}
        for path in site_files(self.site):
            rel = path.relative_to(self.site).as_posix()
            st = path.stat()
            stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
            known = memo.get(rel)
            digest = known[3] if known and known[:3] == stamp else md5_hex(path.read_bytes())
            seen[rel] = [*stamp, digest]
            out.append(Local(rel, path, st.st_size, digest))
        if memo_path.parent.is_dir():
            memo_path.write_text(json.dumps(seen))
        return out

    def _site_log(self) -> LogReader:
        """The site's log, its checkpoint verified with the site's key and its right edge with its tiles."""
        log_dir = self.site / LOG_DIR
        try:
            key = read_vkey(log_dir)
            reader = LogReader(log_dir, key.name, [key])
            reader.check_right_edge()
        except (OSError, CheckpointError, NoteError, ValueError) as exc:
            raise UsageError(f"{self.site}: not a built site with a log that verifies ({exc})") from exc
        return reader

    def _crl_next_updates(self) -> dict[str, dt.datetime]:
        out = {}
        for meta in (self.site / CRL_DIR).glob("*.json"):
            try:
                out[meta.stem] = parse_time(str(json.loads(meta.read_text())["next_update"]))
            except (OSError, ValueError, KeyError):
                continue
        return out

    # -- the bucket ----------------------------------------------------------------------------------------
    def _listing(self) -> dict[str, tuple[str, int]]:
        """Every object under the prefix: site-relative key -> (ETag without quotes, size)."""
        found: dict[str, tuple[str, int]] = {}
        base = self.target.key("")
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.target.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                found[obj["Key"][len(base) :]] = (obj["ETag"].strip('"'), obj["Size"])
        return found

    def _get(self, rel: str) -> tuple[bytes, str] | None:
        """An object's bytes and ETag, or None if there is none."""
        try:
            resp = self.s3.get_object(Bucket=self.target.bucket, Key=self.target.key(rel))
        except self.s3.exceptions.NoSuchKey:
            return None
        return resp["Body"].read(), resp["ETag"].strip('"')

    def _put(self, rel: str, data: bytes, pol: Policy, **condition: str) -> str:
        """Upload one object (with ``IfNoneMatch``/``IfMatch`` when given); its new ETag."""
        resp = self.s3.put_object(
            Bucket=self.target.bucket,
            Key=self.target.key(rel),
            Body=data,
            ContentType=pol.content_type,
            CacheControl=pol.cache_control,
            ContentMD5=base64.b64encode(bytes.fromhex(md5_hex(data))).decode(),
            **condition,  # type: ignore[arg-type]
        )
        return resp["ETag"].strip('"')

    @staticmethod
    def _precondition_failed(exc: Exception) -> bool:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code")) in ("PreconditionFailed", "412") or (
            response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412
        )

    # -- the lock ------------------------------------------------------------------------------------------
    def _lock_document(self) -> bytes:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.lock_ttl)
        return json.dumps(
            {
                "holder": self._holder,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()

    def acquire(self, wait: float = 0.0) -> None:
        """Take the deploy lock (waiting up to ``wait`` seconds for another deploy); DeployRefused if held."""
        self._holder = secrets.token_hex(8)
        pol = Policy(False, "application/json", "no-store")
        deadline = time.monotonic() + wait
        while True:
            body = self._lock_document()
            try:
                self._lock_etag = self._put(LOCK_KEY, body, pol, IfNoneMatch="*")
                self._lock_body = body
                break
            except Exception as exc:
                if not self._precondition_failed(exc):
                    raise
            held = self._get(LOCK_KEY)
            if held is None:  # released meanwhile: try again at once
                continue
            if self._stale(held[0]):
                try:
                    self._lock_etag = self._put(LOCK_KEY, body, pol, IfMatch=held[1])
                    self._lock_body = body
                    self.progress(f"took over a stale deploy lock ({held[0].decode(errors='replace')})")
                    break
                except Exception as exc:
                    if not self._precondition_failed(exc):
                        raise
                    continue
            if time.monotonic() >= deadline:
                what = held[0].decode(errors="replace")
                raise DeployRefused(f"another deploy holds the lock {self.target.key(LOCK_KEY)}: {what}")
            time.sleep(1.0)
        threading.Thread(target=self._renew, daemon=True).start()

    @staticmethod
    def _stale(body: bytes) -> bool:
        try:
            held = json.loads(body)
            if parse_time(str(held["expires"])) < dt.datetime.now(dt.UTC):
                return True
            if held.get("host") == socket.gethostname():
                os.kill(int(held["pid"]), 0)  # raises if no such process: its holder is gone
        except ProcessLookupError:
            return True
        except (ValueError, KeyError, TypeError, PermissionError):
            return False
        return False

    def _renew(self) -> None:
        pol = Policy(False, "application/json", "no-store")
        while not self._stop_renewing.wait(self.lock_ttl / 4):
            try:
                self._lock_etag = self._put(LOCK_KEY, self._lock_document(), pol, IfMatch=str(self._lock_etag))
            except Exception:
                self._lock_lost.set()  # another deployer took it over: stop before the checkpoint
                return

    def release(self) -> None:
        """Give the lock back (only if still ours)."""
        self._stop_renewing.set()
        if self._lock_etag is None:
            return
        held = self._get(LOCK_KEY)
        if held is not None and held[1] == self._lock_etag:
            self.s3.delete_object(Bucket=self.target.bucket, Key=self.target.key(LOCK_KEY))
        self._lock_etag = None

    # -- the deploy ----------------------------------------------------------------------------------------
    def run(self, wait: float = 0.0) -> Report:
        """Deploy: lock, check, upload immutable then mutable objects, move the checkpoint, unlock."""
        started = time.monotonic()
        log = self._site_log()
        self.report.size = log.size
        self.acquire(wait)
        try:
            remote = self._listing()
            self._check_checkpoint(log)  # refuse early: nothing is uploaded to a bucket this site cannot extend
            local = self._local()
            self.report.files = len(local)
            next_updates = self._crl_next_updates()
            plan: list[tuple[Local, Policy]] = []
            for f in local:
                pol = policy(f.rel, next_updates, self.now)
                have = remote.get(f.rel)
                if f.rel == CHECKPOINT:
                    continue
                if have is not None and have[0] == f.md5:
                    self.report.unchanged += 1
                    continue
                if have is not None and pol.immutable:
                    self._same_or_refuse(f, have[0])
                    self.report.unchanged += 1
                    continue
                plan.append((f, pol))
            # Immutable first, then the rest; within each, data before pages.
            plan.sort(key=lambda fp: (not fp[1].immutable, fp[0].rel.endswith(".html"), fp[0].rel))
            self._upload(plan)
            if self._lock_lost.is_set():
                raise DeployRefused("the deploy lock was taken over by another deployer; the checkpoint was not moved")
            self._move_checkpoint(log)
        finally:
            self.release()
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    def _same_or_refuse(self, f: Local, etag: str) -> None:
        """An immutable object exists: it must hold exactly the site's bytes."""
        if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
            if etag == f.md5:
                return
        else:  # a multipart or encrypted object's ETag is not its MD5: compare the bytes
            got = self._get(f.rel)
            if got is not None and got[0] == f.path.read_bytes():
                return
        raise ImmutableObjectChanged(
            f"s3://{self.target.bucket}/{self.target.key(f.rel)} exists with other bytes than the site's {f.rel}: "
            "an immutable object was changed in the bucket (or the site is of another log); nothing was uploaded "
            "over it"
        )

    def _upload(self, plan: list[tuple[Local, Policy]]) -> None:
        total = len(plan)
        done = 0
        lock = threading.Lock()

        def one(item: tuple[Local, Policy]) -> None:
            nonlocal done
            f, pol = item
            if self._lock_lost.is_set():
                raise DeployRefused("the deploy lock was taken over by another deployer")
            data = f.path.read_bytes()
            if pol.immutable:
                try:
                    self._put(f.rel, data, pol, IfNoneMatch="*")
                except Exception as exc:
                    if not self._precondition_failed(exc):
                        raise
                    got = self._get(f.rel)  # created meanwhile: by whom, with what?
                    if got is None or got[0] != data:
                        raise ImmutableObjectChanged(
                            f"s3://{self.target.bucket}/{self.target.key(f.rel)} was created by someone else "
                            "with other bytes"
                        ) from exc
            else:
                self._put(f.rel, data, pol)
            with lock:
                done += 1
                self.report.uploaded += 1
                self.report.uploaded_bytes += len(data)
                self.report.uploaded_keys.append(f.rel)
                if done % 200 == 0 or done == total:
                    self.progress(f"uploaded {done}/{total} objects")

        if not plan:
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for _ in pool.map(one, plan):
                pass

    def _check_checkpoint(self, log: LogReader) -> tuple[str, str] | None:
        """The bucket's checkpoint (ETag, text), after checking the site's extends it; DeployRefused if not."""
        got = self._get(CHECKPOINT)
        if got is None:
            return None
        data, etag = got
        text = data.decode("utf-8", errors="replace")
        try:
            key = read_vkey(self.site / LOG_DIR)
            theirs = open_checkpoint(text, key.name, [key]).checkpoint
        except (CheckpointError, NoteError) as exc:
            raise DeployRefused(
                f"the bucket's checkpoint is not one this log's key signed ({exc}): is this the bucket of another log?"
            ) from exc
        ours = log.signed.checkpoint
        if theirs.size > ours.size:
            raise DeployRefused(
                f"the bucket's checkpoint (size {theirs.size}) is newer than this site's (size {ours.size}): a deploy "
                "never moves it back; build the site from the current publication"
            )
        try:
            verify_consistency(theirs.size, ours.size, theirs.root, ours.root, log.consistency_proof(theirs.size))
        except ProofError as exc:
            raise DeployRefused(
                f"this site's tree (size {ours.size}) does not extend the bucket's (size {theirs.size}): a fork; "
                "nothing is deployed over it"
            ) from exc
        return etag, text

    def _move_checkpoint(self, log: LogReader, attempts: int = 5) -> None:
        """Write the site's checkpoint by compare-and-swap, re-checking the bucket's at each attempt."""
        ours = log.signed.raw
        pol = policy(CHECKPOINT, {}, self.now)
        for _ in range(attempts):
            current = self._check_checkpoint(log)
            if current is not None and current[1] == ours:
                self.report.checkpoint = "unchanged"
                return
            try:
                if current is None:
                    self._put(CHECKPOINT, ours.encode(), pol, IfNoneMatch="*")
                    self.report.checkpoint = "created"
                else:
                    self._put(CHECKPOINT, ours.encode(), pol, IfMatch=str(current[0]))
                    self.report.checkpoint = "moved"
                self.report.uploaded += 1
                self.report.uploaded_bytes += len(ours)
                self.report.uploaded_keys.append(CHECKPOINT)
                return
            except Exception as exc:
                if not self._precondition_failed(exc):
                    raise
                self.progress("the bucket's checkpoint changed meanwhile: checking again")
        raise DeployRefused("the bucket's checkpoint kept changing: another writer is active")


def s3_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client with the standard AWS environment (credentials, region), path-style addressing."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def deploy(
    site: Path,
    url: str,
    endpoint_url: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
    wait: float = 0.0,
) -> Report:
    """Deploy the built ``site`` to ``s3://BUCKET/PREFIX`` (see the module's docstring for the rules)."""
    if not (site / CHECKPOINT).is_file():
        raise UsageError(f"{site}: not a built site (no {CHECKPOINT})")
    target = Target.parse(url)
    return Deployer(s3_client(endpoint_url), site, target, progress).run(wait)


__all__ = [
    "CHECKPOINT_CACHE",
    "IMMUTABLE_CACHE",
    "DeployRefused",
    "Deployer",
    "ImmutableObjectChanged",
    "Policy",
    "Report",
    "Target",
    "crl_cache",
    "deploy",
    "policy",
]
