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
  ``If-None-Match: *``, renewed by compare-and-swap and removed by a conditional
  delete; a lock left by a killed deployer is taken over once it has not been
  renewed for its time to live by the store's own clock (or at once, when its
  holder was a process of this host and PID namespace that is gone). Taking it
  also proves the store honours conditional writes, which all of the above needs.

What is already in the bucket is found by listing it (ETags are the objects' MD5 for
single-part uploads, as S3 and S3-compatible stores compute them), so a deploy uploads
what changed since the bucket's state, whichever machine deployed before.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes

from publisher.errors import Refused, UsageError, VerificationFailed
from publisher.pki.der import parse_time
from publisher.publication import CRL_ARCHIVE, CRL_DIR, EVIDENCE_DIR, LOG_DIR, now_utc
from publisher.site.export import public_files
from publisher.site.feeds import TYPES as FEED_TYPES
from publisher.site.state import cache_dir
from publisher.storage import ImmutableObjectChanged
from publisher.tlog import LogReader, read_vkey
from publisher.tlog.checkpoint import open_checkpoint, parse_unverified
from publisher.tlog.merkle import ProofError, verify_consistency
from verifier.cpl_verify import CheckpointError, NoteError, parse_note

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
    if rel.startswith((f"{LOG_DIR}/", "search/")) or rel in ("status.json", "revocations.json"):
        return Policy(False, content_type, DATA_CACHE)
    if rel.startswith("feeds/") and suffix in FEED_TYPES:  # Atom and JSON Feed: cached like the pages they follow
        return Policy(False, FEED_TYPES[suffix], PAGE_CACHE)
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
    """A site file: its path relative to the site and its MD5 (hex, as the store's ETag)."""

    rel: str
    path: Path
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
    """The site's files to upload: its public files (``export.public_files``) but host configuration."""
    return (p for p in public_files(site) if p.relative_to(site).as_posix() not in SKIPPED)


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


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
        self._holder = secrets.token_hex(8)
        self._lock_etag: str | None = None
        self._lock_lost = threading.Event()
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None

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
            out.append(Local(rel, path, digest))
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

    def _check_growth(self, log: LogReader, bucket_size: int) -> None:
        """Every tile and bundle the bucket lacks is recomputed against the site's signed checkpoint before it
        is uploaded create-only (a bad one could never be replaced)."""
        try:
            log.verify_extension(bucket_size)
        except FileNotFoundError as exc:
            raise VerificationFailed(f"the site lacks a tile the checkpoint needs: {exc.filename}") from exc

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
        got = self._get_with_age(rel)
        return None if got is None else (got[0], got[1])

    def _get_with_age(self, rel: str) -> tuple[bytes, str, float] | None:
        """An object's bytes, ETag and age in seconds by the store's own clock (its Date less LastModified)."""
        try:
            resp = self.s3.get_object(Bucket=self.target.bucket, Key=self.target.key(rel))
        except self.s3.exceptions.NoSuchKey:
            return None
        served = resp["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        try:
            now = parsedate_to_datetime(served) if served else dt.datetime.now(dt.UTC)
        except (TypeError, ValueError):
            now = dt.datetime.now(dt.UTC)
        age = (now - resp["LastModified"]).total_seconds()
        return resp["Body"].read(), resp["ETag"].strip('"'), age

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
        """A conditional write lost: 412, or 409 (AWS: another conditional write to the key is in progress)."""
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code"))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or status in (409, 412)

    # -- the lock ------------------------------------------------------------------------------------------
    def _lock_document(self) -> bytes:
        return json.dumps(
            {
                "holder": self._holder,
                "host": socket.gethostname(),
                "pid_namespace": _pid_namespace(),
                "pid": os.getpid(),
                "ttl_seconds": self.lock_ttl,
                "started": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()

    def acquire(self, wait: float = 0.0) -> None:
        """Take the deploy lock (waiting up to ``wait`` seconds for another deploy); DeployRefused if held.

        Also proves the store honours conditional writes (the create-only rules and the checkpoint's
        compare-and-swap rest on them): creating the lock a second time must fail."""
        pol = Policy(False, "application/json", "no-store")
        deadline = time.monotonic() + wait
        while True:
            body = self._lock_document()
            try:
                self._lock_etag = self._put(LOCK_KEY, body, pol, IfNoneMatch="*")
                break
            except Exception as exc:
                if not self._precondition_failed(exc):
                    raise
            held = self._get_with_age(LOCK_KEY)
            if held is not None and self._stale(held[0], held[2]):
                try:
                    self._lock_etag = self._put(LOCK_KEY, body, pol, IfMatch=held[1])
                    self.progress(f"took over a stale deploy lock ({held[0].decode(errors='replace')})")
                    break
                except Exception as exc:
                    if not self._precondition_failed(exc):
                        raise
            if time.monotonic() >= deadline:
                what = held[0].decode(errors="replace") if held else "(released meanwhile)"
                raise DeployRefused(f"another deploy holds the lock {self.target.key(LOCK_KEY)}: {what}")
            time.sleep(0.2 if held is None else 1.0)
        try:
            self._put(LOCK_KEY, body, pol, IfNoneMatch="*")
        except Exception as exc:
            if not self._precondition_failed(exc):
                raise
        else:
            self.release()
            raise DeployRefused(
                "the object store ignores conditional writes (If-None-Match): the append-only rules and the "
                "checkpoint's compare-and-swap cannot be kept there"
            )
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()

    def _stale(self, body: bytes, age: float) -> bool:
        """Whether a lock may be taken over: not renewed for longer than its time to live (by the store's
        clock), or held by a process of this machine and PID namespace that is gone."""
        try:
            held = json.loads(body)
            if age > float(held.get("ttl_seconds", self.lock_ttl)):
                return True
            if held.get("host") == socket.gethostname() and held.get("pid_namespace") == _pid_namespace():
                os.kill(int(held["pid"]), 0)  # raises if no such process: its holder is gone
        except ProcessLookupError:
            return True
        except (ValueError, KeyError, TypeError, AttributeError, PermissionError, OverflowError):
            return age > self.lock_ttl
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
        """Give the lock back, only if it is still ours (a conditional delete)."""
        self._stop_renewing.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._lock_etag is None or self._lock_lost.is_set():
            return
        try:
            self.s3.delete_object(Bucket=self.target.bucket, Key=self.target.key(LOCK_KEY), IfMatch=self._lock_etag)
        except Exception as exc:
            if not self._precondition_failed(exc):
                raise
        self._lock_etag = None

    # -- the deploy ----------------------------------------------------------------------------------------
    def run(self, wait: float = 0.0) -> Report:
        """Deploy: lock, check, upload immutable objects, then the rest, then the lookup, then move the
        checkpoint, unlock."""
        started = time.monotonic()
        log = self._site_log()
        self.report.size = log.size
        self.acquire(wait)
        try:
            remote = self._listing()
            current = self._check_checkpoint(log)  # refuse early: nothing goes to a bucket this site cannot extend
            bucket_size = parse_unverified(current[1]).size if current else 0
            self._check_growth(log, bucket_size)
            local = self._local()
            self.report.files = len(local)
            next_updates = self._crl_next_updates()
            immutable, mutable, lookup = [], [], []
            for f in local:
                if f.rel == CHECKPOINT:
                    continue
                pol = policy(f.rel, next_updates, self.now)
                have = remote.get(f.rel)
                if have is not None and have[0] == f.md5:
                    self.report.unchanged += 1
                elif have is not None and pol.immutable:
                    self._same_or_refuse(f, have[0])
                    self.report.unchanged += 1
                elif pol.immutable:
                    immutable.append((f, pol))
                elif f.rel.startswith(f"{LOG_DIR}/lookup/") or f.rel == "status.json":
                    lookup.append((f, pol))
                else:
                    mutable.append((f, pol))
            # Each phase ends before the next starts: pages never name a tile the bucket lacks, and the lookup
            # (which must match the checkpoint) changes right before it, so the two disagree the least time.
            for phase in (immutable, mutable, lookup):
                self._upload(phase)
            if self._lock_lost.is_set():
                raise DeployRefused("the deploy lock was taken over by another deployer; the checkpoint was not moved")
            self._move_checkpoint(log)
        finally:
            self.release()
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    def _same_or_refuse(self, f: Local, etag: str) -> None:
        """An immutable object exists with another ETag: it must still hold exactly the site's bytes (an
        encrypted or multipart object's ETag is not its MD5, so the bytes decide)."""
        got = self._get(f.rel)
        if got is not None and got[0] == f.path.read_bytes():
            return
        raise ImmutableObjectChanged(
            f"s3://{self.target.bucket}/{self.target.key(f.rel)} exists with other bytes than the site's {f.rel}: "
            "an immutable object was changed in the bucket (or the site is of another log); nothing was uploaded "
            "over it"
        )

    def _put_immutable(self, f: Local, data: bytes, pol: Policy) -> None:
        for _ in range(5):
            try:
                self._put(f.rel, data, pol, IfNoneMatch="*")
                return
            except Exception as exc:
                if not self._precondition_failed(exc):
                    raise
            got = self._get(f.rel)  # created meanwhile: by whom, with what?
            if got is None:  # a conditional write still in flight (409): look again
                time.sleep(0.2)
                continue
            if got[0] == data:
                return
            raise ImmutableObjectChanged(
                f"s3://{self.target.bucket}/{self.target.key(f.rel)} was created by someone else with other bytes"
            )
        raise DeployRefused(f"s3://{self.target.bucket}/{self.target.key(f.rel)} kept changing under this deploy")

    def _upload(self, plan: list[tuple[Local, Policy]]) -> None:
        """Upload ``plan`` with a pool of workers; the first failure stops the rest (none is started after)."""
        total = len(plan)
        done = 0
        lock = threading.Lock()
        failed = threading.Event()

        def one(item: tuple[Local, Policy]) -> None:
            nonlocal done
            f, pol = item
            if failed.is_set():
                return
            if self._lock_lost.is_set():
                raise DeployRefused("the deploy lock was taken over by another deployer")
            data = f.path.read_bytes()
            if (
                f.rel.startswith(f"{LOG_DIR}/{EVIDENCE_DIR}/")
                and hashlib.sha256(data).hexdigest() != f.rel.rsplit("/", 1)[1]
            ):
                raise VerificationFailed(f"{f.path}: its bytes do not hash to its name; not uploaded")
            if pol.immutable:
                self._put_immutable(f, data, pol)
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
            futures = [pool.submit(one, item) for item in plan]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in finished if f.exception() is not None]
            if errors:
                failed.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise errors[0]  # type: ignore[misc]

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
            if current is not None and _fewer_signatures(ours, current[1]):
                # The same tree with cosignatures this site lacks (an older build, or a racing deploy): kept.
                self.report.checkpoint = "unchanged"
                self.progress("the bucket's checkpoint is this tree with more signatures: kept")
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


def _fewer_signatures(ours: str, theirs: str) -> bool:
    """``ours`` is the tree of ``theirs`` (both already verified) without some of its signature lines."""
    a, b = parse_note(ours), parse_note(theirs)
    return a.text == b.text and not set(b.signatures) <= set(a.signatures)


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
