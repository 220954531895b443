"""Witness benchmark: what witnessing costs a publish, and how many add-checkpoint requests a witness answers.

Two measurements in one run (issue #14: "the time a publish spends on witnessing with two local
witnesses, and a witness's throughput (add-checkpoint requests per second, persisted)"):

1. **Publish witnessing time.** The demo publication is built once (``publisher.demo.build``, about 30
   submissions, three publishes). Its two witnesses are then started again from their own folders (same
   keys, same state: they hold the size they cosigned) with ``demo.start_witness`` and the ``[witnessing]``
   table of ``publisher.toml`` is rewritten with their new URLs; the peer's two witnesses (witness-log,
   see 2.) are started beside them, fresh. Each repeat, for each side (ours, then the peer, or the other
   way round, alternating), with that side's ``[witnessing]`` table:

   - *split*, the CLI's ``publish --no-witness`` then ``witness``: one new signed submission in the inbox
     (one row, not timed), ``publish(config, witness=False)`` timed, then ``job.witness(config)`` timed:
     the witnessing step alone (journal and lock, open and judge the committed checkpoint, both witnesses
     asked in parallel over HTTP, their cosignatures verified, one git commit);
   - *in one publish*, ``cpl-publisher publish``: another new submission, ``publish(config)`` timed whole,
     and the time spent inside it in ``witnessing.witness`` (wrapped for the run).

   Every request must be answered with a cosignature that verifies, the quorum (2 of 2) met. Reported per
   side: medians of the publish without witnessing, the witnessing step, witnessing's share of the whole,
   each witness's round trip (``WitnessReport.asked[i].seconds``: all requests to it, 409 retries
   included) and what the step spends besides the slowest round trip. One untimed warm-up repeat first.

2. **Witness throughput, persisted.** A log signer and a growing tree: request k carries ``old k``, the
   consistency proof from k to k+1 and the checkpoint of size k+1 signed by the log; all requests are
   computed before timing. N requests (``--requests``) are timed after a few untimed warm-up requests;
   every answer must be 200 and its cosignature must verify (checked after the clock stops), and the
   witness's stored size must be the last one sent. Each run starts its witness afresh (new state); each
   repeat alternates which side goes first.

   - ours: ``cpl-verify witness serve``, a subprocess (ThreadingHTTPServer, HTTP/1.1, TCP_NODELAY); before
     each 200 the state is written to a temporary file, fsynced, renamed, and the folder fsynced;
   - the peer: witness-log's ``WitnessService`` (the third-party C2SP tlog-witness, Rust core) behind the
     same kind of server (TCP_NODELAY too) in a subprocess of its own (this script, ``--serve-peer``), as
     ``tests/witness_fixtures.serve_witness_log`` serves it; it rewrites its JSON state file per accepted
     checkpoint (strace, witness-log 0.6.1: two fsyncs and one rename per request, like ours).

   Three ways of sending them (``http.client.HTTPConnection``): sequentially over one keep-alive connection
   (the headline); sequentially, a new connection per request (as the publisher's client does); and
   (``--threads T``, 0 to skip) T client threads, each with its own log and keep-alive connection, N
   requests in all, to one witness process of each kind (ours takes one lock per check-and-store; the
   peer's server takes one lock around its service, whose Rust object is not meant to be entered twice).

The machine may be shared and noisy: medians of ``--repeat`` runs, and ratios, are the figures to quote.

    .venv/bin/python bench/witness.py                          # 3 repeats, 500 requests
    .venv/bin/python bench/witness.py --repeat 3 --requests 200 --only throughput --json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import hashlib
import http.client
import http.server
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import witness_log
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from options import add_run_options

from publisher import demo
from publisher.config import CONFIG_NAME
from publisher.config import load as load_config
from publisher.parties import Party
from publisher.publication import LOG_DIR, load_certificate
from publisher.publish import job, witnessing
from publisher.tlog import read_vkey
from publisher.tlog.note import Signer, sign_note
from verifier.cpl_verify import (
    USER_AGENT,
    AddCheckpoint,
    Checkpoint,
    Cosigner,
    Verifier,
    consistency_proof,
    leaf_hash,
    list_hash_range,
    node_hash,
    parse_unverified,
    response_cosignatures,
    root_of,
    split_point,
)

REPO = Path(__file__).resolve().parent.parent
ORIGIN = "bench.example/log"
OUR_KEY_NAME = "ours.bench.example/witness"
PEER_KEY_NAME = "peer.bench.example/witness"
PEER_WITNESSES = (("peer1", "peer1.bench.example/witness"), ("peer2", "peer2.bench.example/witness"))
HEADERS = {"Content-Type": "text/plain; charset=utf-8", "User-Agent": USER_AGENT}
DEFAULT_REPEAT = 3
DEFAULT_REQUESTS = 500
DEFAULT_THREADS = 4
DEFAULT_WARMUP = 10
SIDES = ("ours", "peer")


# -- helpers -----------------------------------------------------------------------------
def note(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def filesystem_of(path: Path) -> str:
    """The type of the file system ``path`` is on (from /proc/mounts; "?" elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "?"
    resolved, best, kind = str(path.resolve()), "", "?"
    for fields in mounts:
        if len(fields) >= 3:
            point = fields[1]
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best, kind = point, fields[2]
    return kind


def alternate(r: int) -> tuple[str, str]:
    """Which side goes first in repeat ``r``: ours on even repeats, the peer on odd ones."""
    return SIDES if r % 2 == 0 else (SIDES[1], SIDES[0])


# -- witness processes -----------------------------------------------------------------------
def spawn(argv: list[str], name: str) -> demo.Witness:
    """A witness process started from the repository root (``demo.spawn_witness``)."""
    return demo.spawn_witness(argv, name, cwd=REPO)


def start_ours(folder: Path, logs: Sequence[Verifier]) -> demo.Witness:
    """``cpl-verify witness serve`` with a new key and state in ``folder``, witnessing ``logs``."""
    key_file = folder / "witness.key"
    key_file.write_text(Cosigner.generate(OUR_KEY_NAME).skey + "\n")
    key_file.chmod(0o600)
    argv = [sys.executable, "-m", "verifier.cpl_verify", "witness", "serve", "--key", str(key_file)]
    argv += ["--state", str(folder / "state"), "--listen", "127.0.0.1:0", "--quiet"]
    for log in logs:
        argv += ["--log", log.vkey]
    return spawn(argv, "ours")


def start_peer(state: Path, key_name: str, logs: Sequence[Verifier], name: str = "peer") -> demo.Witness:
    """witness-log's ``WitnessService`` behind HTTP in a subprocess (this script, ``--serve-peer``)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-peer", "--state", str(state)]
    argv += ["--key-name", key_name]
    for log in logs:
        argv += ["--log", log.vkey]
    return spawn(argv, name)


def serve_peer(argv: Sequence[str]) -> int:
    """``--serve-peer``: serve witness-log's witness on 127.0.0.1 (any free port) until SIGTERM, the way
    ``tests/witness_fixtures.serve_witness_log`` serves it."""
    parser = argparse.ArgumentParser(prog="witness.py --serve-peer")
    parser.add_argument("--state", required=True)
    parser.add_argument("--key-name", required=True)
    parser.add_argument("--log", action="append", default=[])
    args = parser.parse_args(argv)
    if not os.path.exists(args.state):
        witness_log.WitnessService.create_state(args.state)
    service = witness_log.WitnessService.new(args.key_name, os.urandom(32), args.state)
    for vkey in args.log:
        service.add_log(Verifier.from_vkey(vkey).name, vkey)
    lock = threading.Lock()  # one call at a time into the Rust object

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as ours: no delayed-ACK wait between headers and body

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/add-checkpoint":
                status, ctype, data = 404, "text/plain", b""
            else:
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    status, ctype, data = 400, "text/plain", b"not UTF-8\n"
                else:
                    with lock:
                        code, content_type, answer = service.handle_add_checkpoint_http(text)
                    status, ctype, data = int(code), str(content_type), str(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/ as {service.vkey()}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


@contextlib.contextmanager
def running(witnesses: list[demo.Witness]) -> Iterator[list[demo.Witness]]:
    """Stop every witness in ``witnesses`` (appended to while inside) on the way out."""
    try:
        yield witnesses
    finally:
        for w in witnesses:
            if w.process.poll() is None:
                demo.stop_witness(w)


# -- 1. publish witnessing time --------------------------------------------------------------
def load_party(folder: Path, org_id: str, role: str) -> Party:
    """One of the demo's organisations, from the certificate and key the demo wrote for it (its name from the
    certificate's subject)."""
    stem = folder / f"{org_id}-{role.lower()}"
    key = serialization.load_pem_private_key(stem.with_suffix(".key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"{stem}.key is not an ECDSA or RSA key")
    cert = load_certificate(stem.with_suffix(".pem"))
    name = str(cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)
    return Party(org_id, name, role, cert, key)


def set_witnesses(pub: Path, witnesses: list[demo.Witness]) -> None:
    """Replace the ``[witnessing]`` table (the last table of the demo's publisher.toml) with ``witnesses``."""
    path = pub / CONFIG_NAME
    text = path.read_text()
    head, sep, tail = text.partition("\n[witnessing]\n")
    if not sep or any(line.startswith("[") for line in tail.splitlines()):
        raise RuntimeError(f"{path}: [witnessing] is not the last table")
    path.write_text(head + demo.witnessing_table(witnesses))


@contextlib.contextmanager
def timing(owner: object, attr: str, spent: list[float]) -> Iterator[None]:
    """Wrap ``owner.attr``: each call's seconds appended to ``spent``; restored afterwards."""
    fn: Callable[..., Any] = getattr(owner, attr)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t)

    setattr(owner, attr, wrapper)
    try:
        yield
    finally:
        setattr(owner, attr, fn)


class Submitter:
    """New one-row signed submissions, each a model the log has not seen."""

    def __init__(self, pub: Path, private: Path) -> None:
        self.pub = pub
        self.manufacturer = load_party(private / "certs", "1001", "Manufacturer")
        self.supplier = load_party(private / "certs", "2001", "Supplier")
        self.count = 0

    def next(self) -> str:
        self.count += 1
        sub_id = f"B{self.count:04d}"
        m = self.manufacturer
        row = (m.org_id, m.name, f"ESME-B{self.count}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(sub_id))
        demo.submit(self.pub, sub_id, [row], [m, self.supplier])
        return sub_id


def check_report(report: witnessing.WitnessReport | None, names: list[str], what: str) -> witnessing.WitnessReport:
    if report is None:
        raise AssertionError(f"{what}: no witnessing report")
    failed = [f"{a.name}: {a.error}" for a in report.asked if not a.cosigned]
    if failed or sorted(a.name for a in report.asked) != sorted(names):
        raise AssertionError(f"{what}: asked {[a.name for a in report.asked]}, failures {failed}")
    if not report.verdict.satisfied or report.committed is None:
        raise AssertionError(f"{what}: quorum not met or nothing committed ({report.to_json()})")
    return report


def publish_round(config_pub: Path, submitter: Submitter, names: list[str]) -> dict[str, Any]:
    """One repeat for one side: split (publish --no-witness, then witness) and in one publish."""
    out: dict[str, Any] = {}
    config = load_config(config_pub)
    sub_id = submitter.next()
    gc.collect()
    t0 = time.perf_counter()
    result = job.publish(config, witness=False)
    t1 = time.perf_counter()
    if result.committed is None or sub_id not in result.intake.accepted:
        raise AssertionError(f"publish --no-witness: {sub_id} not accepted and committed ({result.to_json()})")
    gc.collect()
    t2 = time.perf_counter()
    report = check_report(job.witness(config), names, "witness")
    t3 = time.perf_counter()
    out["split"] = {
        "publish": t1 - t0,
        "witness": t3 - t2,
        "asked": {a.name: a.seconds for a in report.asked},
        "attempts": {a.name: a.attempts for a in report.asked},
        "size": report.size,
    }

    sub_id = submitter.next()
    spent: list[float] = []
    gc.collect()
    with timing(witnessing, "witness", spent):
        t0 = time.perf_counter()
        result = job.publish(config)
        t1 = time.perf_counter()
    if result.committed is None or sub_id not in result.intake.accepted or len(spent) != 1:
        raise AssertionError(f"publish: {sub_id} not accepted and committed, or not witnessed once")
    report = check_report(result.witnessing, names, "publish")
    out["one"] = {
        "total": t1 - t0,
        "witness": spent[0],
        "asked": {a.name: a.seconds for a in report.asked},
        "attempts": {a.name: a.attempts for a in report.asked},
        "size": report.size,
    }
    return out


def summarise_publish(runs: list[dict[str, Any]]) -> dict[str, Any]:
    split, one = [r["split"] for r in runs], [r["one"] for r in runs]
    names = sorted(split[0]["asked"])
    publish_s = summary([x["publish"] for x in split])
    witness_s = summary([x["witness"] for x in split])
    slowest = summary([max(x["asked"].values()) for x in split])
    rest = summary([x["witness"] - max(x["asked"].values()) for x in split])
    total = summary([x["publish"] + x["witness"] for x in split])
    one_total = summary([x["total"] for x in one])
    one_witness = summary([x["witness"] for x in one])
    return {
        "split": {
            "publish_no_witness_s": publish_s,
            "witness_step_s": witness_s,
            "sum_s": total,
            "share": summary([x["witness"] / (x["publish"] + x["witness"]) for x in split]),
            "round_trip_s": {n: summary([x["asked"][n] for x in split]) for n in names},
            "slowest_round_trip_s": slowest,
            "besides_round_trip_s": rest,
            "attempts": {n: sorted({x["attempts"][n] for x in split}) for n in names},
        },
        "one_publish": {
            "total_s": one_total,
            "witnessing_s": one_witness,
            "share": summary([x["witness"] / x["total"] for x in one]),
            "round_trip_s": {n: summary([x["asked"][n] for x in one]) for n in names},
            "attempts": {n: sorted({x["attempts"][n] for x in one}) for n in names},
        },
        "sizes": [x["size"] for x in split] + [x["size"] for x in one],
    }


def run_publish(args: argparse.Namespace, base: Path, progress: bool) -> dict[str, Any]:
    out = base / "demo"
    private = demo.private_dir(out)
    try:
        note(progress, f"[publish] building the demo publication in {out} ...")
        t = time.perf_counter()
        info = demo.build(out)
        built = time.perf_counter() - t
        note(progress, f"[publish] built in {built:.1f} s (log size {info['size']})")
        pub = out / "publication"
        log = read_vkey(pub / LOG_DIR)
        submitter = Submitter(pub, private)
        sides: dict[str, list[demo.Witness]] = {"ours": [], "peer": []}
        with running(sides["ours"]), running(sides["peer"]):
            for name, key_name in demo.DEMO_WITNESSES:  # the demo's own witnesses: same keys and state
                sides["ours"].append(demo.start_witness(name, key_name, private / "witnesses" / name, log))
            for name, key_name in PEER_WITNESSES:
                sides["peer"].append(start_peer(base / f"{name}-state.json", key_name, [log], name))
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
            for r in range(args.repeat + 1):
                for side in alternate(r):
                    set_witnesses(pub, sides[side])
                    res = publish_round(pub, submitter, [w.name for w in sides[side]])
                    label = "warm-up" if r == 0 else f"{r}/{args.repeat}"
                    sp, one = res["split"], res["one"]
                    note(
                        progress,
                        f"[publish] {side} {label}: publish --no-witness {sp['publish']:.3f} s, witness "
                        f"{sp['witness']:.3f} s (round trips "
                        + ", ".join(f"{n} {s * 1000:.1f} ms" for n, s in sp["asked"].items())
                        + f"); in one publish {one['total']:.3f} s of which witnessing {one['witness']:.3f} s",
                    )
                    if r > 0:
                        runs[side].append(res)
        return {
            "demo_build_s": built,
            "demo_log_size": info["size"],
            "final_log_size": runs[SIDES[0]][-1]["one"]["size"] if runs[SIDES[0]] else None,
            "sides": {s: summarise_publish(runs[s]) for s in SIDES},
        }
    finally:
        shutil.rmtree(private, ignore_errors=True)


# -- 2. throughput -------------------------------------------------------------------------
class Tree:
    """A Merkle tree over in-memory leaf hashes with every subtree hash it computes cached, so the roots and
    consistency proofs of all sizes up to n cost O(n log n) hashes."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.cache: dict[tuple[int, int], bytes] = {}

    def hash_range(self, start: int, end: int) -> bytes:
        key = (start, end)
        found = self.cache.get(key)
        if found is None:
            n = end - start
            if n == 1:
                found = self.leaves[start]
            else:
                k = split_point(n)
                found = node_hash(self.hash_range(start, start + k), self.hash_range(start + k, end))
            self.cache[key] = found
        return found


@dataclass
class Workload:
    """One log's add-checkpoint requests, in order: request k takes the witness from size k to k+1."""

    log: Verifier
    bodies: list[bytes]
    texts: list[str]  # the checkpoint body each request's cosignature signs


def make_workload(origin: str, count: int) -> Workload:
    signer = Signer.generate(origin)
    leaves = [leaf_hash(f"{origin} entry {i}".encode()) for i in range(count)]
    tree = Tree(leaves)
    bodies, texts = [], []
    for k in range(count):
        text = Checkpoint(origin, k + 1, tree.hash_range(0, k + 1)).body()
        proof = tuple(consistency_proof(k, k + 1, tree.hash_range))
        bodies.append(AddCheckpoint(k, proof, sign_note(text, [signer])).encode())
        texts.append(text)
    # the cached tree against the verifier's own functions, on a few sizes
    reference = list_hash_range(leaves[: min(count, 300)])
    for k in {1, 2, 3, min(count, 300) // 2, min(count, 300) - 1} - {0}:
        if k < min(count, 300) and consistency_proof(k, k + 1, reference) != consistency_proof(
            k, k + 1, tree.hash_range
        ):
            raise AssertionError(f"proof {k} -> {k + 1} differs from the verifier's")
        if tree.hash_range(0, k) != root_of(leaves[:k]):
            raise AssertionError(f"root of size {k} differs from the verifier's")
    return Workload(signer.verifier, bodies, texts)


def check_answers(work: Workload, answers: list[bytes], witness: Verifier, offset: int = 0) -> None:
    """Every answer holds one cosignature by ``witness`` that verifies over its checkpoint."""
    for i, data in enumerate(answers):
        if len(response_cosignatures(work.texts[offset + i], data, witness)) != 1:
            raise AssertionError(f"answer {offset + i} holds no cosignature by {witness.name}")


def post_all(conn: http.client.HTTPConnection | None, url: str, bodies: Sequence[bytes]) -> list[bytes]:
    """POST each body to ``url``'s add-checkpoint in turn, over ``conn`` (keep-alive) or, with None, a new
    connection per request closed after the answer (as the publisher's client does); the answers, all 200."""
    answers = []
    for body in bodies:
        c = conn or connect(url)
        try:
            c.request("POST", "/add-checkpoint", body, HEADERS)
            response = c.getresponse()
            data = response.read()
        finally:
            if conn is None:
                c.close()
        if response.status != 200:
            raise AssertionError(f"HTTP {response.status}: {data[:300]!r}")
        answers.append(data)
    return answers


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    conn.connect()
    return conn


def drive_sequential(w: demo.Witness, work: Workload, warmup: int, keep_alive: bool = True) -> float:
    """Warm-up requests, then the rest timed, one at a time (over one keep-alive connection, or a new
    connection each); requests per second."""
    conn = connect(w.url) if keep_alive else None
    try:
        check_answers(work, post_all(conn, w.url, work.bodies[:warmup]), w.verifier)
        gc.collect()
        t0 = time.perf_counter()
        answers = post_all(conn, w.url, work.bodies[warmup:])
        elapsed = time.perf_counter() - t0
    finally:
        if conn is not None:
            conn.close()
    check_answers(work, answers, w.verifier, warmup)
    return len(answers) / elapsed


def drive_concurrent(w: demo.Witness, works: list[Workload], warmup: int) -> float:
    """One thread and keep-alive connection per log; the warm-ups first, then all threads timed together."""
    conns = [connect(w.url) for _ in works]
    barrier = threading.Barrier(len(works) + 1)
    results: list[list[bytes]] = [[] for _ in works]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            post_all(conns[i], w.url, works[i].bodies[:warmup])
        except BaseException as exc:
            errors.append(exc)
        barrier.wait()
        if not errors:
            try:
                results[i] = post_all(conns[i], w.url, works[i].bodies[warmup:])
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(works))]
    try:
        for t in threads:
            t.start()
        gc.collect()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
    if errors:
        raise AssertionError(f"concurrent client failed: {errors[0]!r}")
    for work, answers in zip(works, results, strict=True):
        check_answers(work, answers, w.verifier, warmup)
    return sum(len(a) for a in results) / elapsed


def stored_size(side: str, state: Path, origin: str) -> int:
    """The size a witness's state holds for ``origin``: ours a note per log, the peer's one JSON file."""
    if side == "ours":
        return parse_unverified((state / "logs" / hashlib.sha256(origin.encode()).hexdigest()).read_bytes()).size
    logs = json.loads(state.read_text())["logs"]
    return int(next(x["tree_size"] for x in logs if x["origin"] == origin))


def variants(threads: int) -> dict[str, str]:
    """The ways of sending the requests (key: label): over one keep-alive connection, a new connection per
    request, and with ``threads``, one thread, keep-alive connection and log each."""
    found = {"keep_alive": "HTTP keep-alive, sequential (headline)", "fresh": "HTTP, new connection per request"}
    if threads:
        found["threads"] = f"HTTP keep-alive, {threads} threads x own log"
    return found


def one_run(key: str, side: str, folder: Path, work: Workload, works: list[Workload], warmup: int) -> float:
    """One timed run of variant ``key`` against a fresh witness of ``side`` (state in ``folder``); checks the
    state holds the last size sent to each log."""
    sent = works if key == "threads" else [work]
    state = folder / ("state" if side == "ours" else "state.json")
    folder.mkdir(parents=True)
    logs = [x.log for x in sent]
    with running([]) as procs:
        procs.append(start_ours(folder, logs) if side == "ours" else start_peer(state, PEER_KEY_NAME, logs))
        if key == "threads":
            rate = drive_concurrent(procs[0], works, warmup)
        else:
            rate = drive_sequential(procs[0], work, warmup, keep_alive=key == "keep_alive")
    for x in sent:
        size = stored_size(side, state, x.log.name)
        if size != len(x.bodies):
            raise AssertionError(f"{side} {key}: the state holds size {size} of {x.log.name}, not {len(x.bodies)}")
    return rate


def run_throughput(args: argparse.Namespace, base: Path, progress: bool) -> dict[str, Any]:
    n, warmup, threads = args.requests, args.warmup, args.threads
    note(progress, f"[throughput] computing {n + warmup:,} requests (and {threads} logs for the concurrent runs) ...")
    t = time.perf_counter()
    work = make_workload(ORIGIN, n + warmup)
    per_thread = -(-n // threads) if threads else 0
    works = [make_workload(f"bench.example/log{i}", per_thread + warmup) for i in range(threads)]
    note(progress, f"[throughput] computed in {time.perf_counter() - t:.1f} s")
    kinds = variants(threads)
    rates: dict[str, dict[str, list[float]]] = {k: {s: [] for s in SIDES} for k in kinds}
    for r in range(args.repeat):
        for key in kinds:
            for side in alternate(r):
                rate = one_run(key, side, base / f"throughput-{r}" / f"{key}-{side}", work, works, warmup)
                rates[key][side].append(rate)
                note(progress, f"[throughput] {r + 1}/{args.repeat} {key}, {side}: {rate:,.0f} requests/s")
        shutil.rmtree(base / f"throughput-{r}", ignore_errors=True)
    results = []
    for key, label in kinds.items():
        ours, peer = summary(rates[key]["ours"]), summary(rates[key]["peer"])
        results.append(
            {"variant": key, "label": label, "ours": ours, "peer": peer, "ratio": ours["median"] / peer["median"]}
        )
    return {
        "requests": n,
        "warmup": warmup,
        "threads": threads,
        "requests_per_thread": per_thread,
        "results": results,
        "persisted_sizes_checked": True,
    }


# -- the run ---------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    progress = not args.quiet
    base = Path(tempfile.mkdtemp(prefix="witness-bench-", dir=args.dir))
    out: dict[str, Any] = {
        "repeat": args.repeat,
        "python": sys.version.split()[0],
        "witness_log": witness_log.__version__,
        "cpus": os.cpu_count(),
        "dir": str(base),
        "filesystem": filesystem_of(base),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        if args.only in (None, "publish"):
            out["publish"] = run_publish(args, base, progress)
        if args.only in (None, "throughput"):
            out["throughput"] = run_throughput(args, base, progress)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        out["cleaned_up"] = not base.exists()
    return out


# -- output ----------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    fmt = "  ".join(["{:<" + str(widths[0]) + "}", *(f"{{:>{w}}}" for w in widths[1:])])
    return [fmt.format(*headers), "-" * (sum(widths) + 2 * (len(widths) - 1)), *(fmt.format(*r) for r in rows)]


def ms(s: dict[str, Any]) -> str:
    return f"{s['median'] * 1000:.1f} ({s['min'] * 1000:.1f})"


def render(r: dict[str, Any]) -> str:
    lines = [
        f"Witness benchmark: {r['repeat']} timed repeat{'s' if r['repeat'] != 1 else ''} (median, min), "
        f"Python {r['python']}, witness-log {r['witness_log']}, {r['cpus']} CPUs, temp on {r['filesystem']}",
    ]
    if "publish" in r:
        p = r["publish"]
        lines += [
            "",
            f"1. Publish witnessing time: demo publication (built in {p['demo_build_s']:.1f} s, log size "
            f"{p['demo_log_size']} -> {p['final_log_size']}), one new one-row submission per publish, "
            "two witnesses on 127.0.0.1, 2-of-2",
            "",
            "split (publish --no-witness, then witness), ms:",
        ]
        rows: list[tuple[str, ...]] = []
        for side in SIDES:
            s = p["sides"][side]["split"]
            rt = "; ".join(f"{n} {ms(v)}" for n, v in s["round_trip_s"].items())
            rows.append(
                (
                    "ours (cpl-verify witness serve)" if side == "ours" else "peer (witness-log over HTTP)",
                    ms(s["publish_no_witness_s"]),
                    ms(s["witness_step_s"]),
                    f"{s['share']['median'] * 100:.1f}%",
                    rt,
                    ms(s["besides_round_trip_s"]),
                )
            )
        lines += table(
            ("witnesses", "publish, no witness", "witness step", "share", "round trip per witness", "besides RTT"),
            rows,
        )
        lines += ["", "in one publish (cpl-publisher publish), ms:"]
        rows = []
        for side in SIDES:
            o = p["sides"][side]["one_publish"]
            rt = "; ".join(f"{n} {ms(v)}" for n, v in o["round_trip_s"].items())
            rows.append((side, ms(o["total_s"]), ms(o["witnessing_s"]), f"{o['share']['median'] * 100:.1f}%", rt))
        lines += table(("witnesses", "publish total", "of which witnessing", "share", "round trip per witness"), rows)
        ours_w = p["sides"]["ours"]["split"]["witness_step_s"]["median"]
        peer_w = p["sides"]["peer"]["split"]["witness_step_s"]["median"]
        attempts = {
            side: sorted({a for v in p["sides"][side]["split"]["attempts"].values() for a in v}) for side in SIDES
        }
        lines += [
            "",
            f"witness step ours/peer (medians): {ours_w / peer_w:.2f}; requests per witness per step: {attempts}",
            "share = witness step / (publish --no-witness + witness step), per run, median; besides RTT = witness "
            "step minus the slowest round trip (lock and journal, judging the checkpoint, proofs, verifying "
            "cosignatures, the git commit).",
        ]
    if "throughput" in r:
        t = r["throughput"]
        lines += [
            "",
            f"2. Witness throughput, persisted: {t['requests']:,} add-checkpoint requests (after {t['warmup']} "
            "warm-up) per run, a log growing by one entry per request, every answer 200 and its cosignature "
            "checked, the stored size checked after each run; requests/s",
            "",
        ]
        rows = []
        for x in t["results"]:
            o, q = x["ours"], x["peer"]
            rows.append(
                (
                    x["label"],
                    f"{o['median']:,.0f} ({o['max']:,.0f})",
                    f"{q['median']:,.0f} ({q['max']:,.0f})",
                    f"{x['ratio']:.2f}",
                    f"{1000 / o['median']:.2f} / {1000 / q['median']:.2f}",
                )
            )
        lines += table(
            (
                "requests to one witness",
                "ours median (max)",
                "witness-log median (max)",
                "ours/peer",
                "ms/req ours/peer",
            ),
            rows,
        )
        lines += [
            "",
            "ours: cpl-verify witness serve (a subprocess); peer: witness-log's WitnessService behind the same kind of "
            "server (ThreadingHTTPServer, HTTP/1.1) in a subprocess, as tests/witness_fixtures.py serves it. Both "
            "persist (write, fsync, rename, fsync the folder) before answering, and set TCP_NODELAY on their "
            "sockets; a fresh state for every run.",
        ]
    lines.append(f"temp dir {r['dir']} removed: {r['cleaned_up']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-peer"]:
        return serve_peer(argv[1:])
    parser = argparse.ArgumentParser(
        description="Benchmark the publish's witnessing step (two local witnesses) and a witness's add-checkpoint "
        "throughput, ours (cpl-verify witness serve) against witness-log.",
    )
    parser.add_argument(
        "--repeat",
        "--repeats",
        dest="repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help="timed repeats of each measurement (default %(default)s)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        help="timed add-checkpoint requests per throughput run (default %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="untimed requests before each (default %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="client threads (one log each) of the concurrent throughput run; 0 skips it (default %(default)s)",
    )
    parser.add_argument("--only", choices=("publish", "throughput"), default=None, help="run one of the two parts")
    add_run_options(parser)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.requests < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--repeat and --requests must be at least 1, --warmup and --threads at least 0")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
