"""Witnessing the log's checkpoint: the client side of C2SP tlog-witness, and the policy's verdict.

``witness`` asks every witness of ``[witnessing]`` that has not cosigned the committed checkpoint yet
(``add-checkpoint``: the old size the witness holds, a consistency proof from it, the signed checkpoint),
in parallel, each request bounded by the configured timeout. A 409 names the witness's size: the request
is made again from there. It then adds the cosignatures that verify to the committed checkpoint as one
journalled change (``Operation.apply``): only signature lines are added; the checkpoint's text and the
log's signature stay byte for byte as committed. A witness that is down, slow, refuses or answers
garbage costs only its cosignature; the next run asks again.

Only a committed checkpoint is shown to witnesses: once a witness has cosigned a tree, the log can never
sign another tree of that size without being caught, so the tree must never be lost. Where the work tree
does not outlive the job (CI), push the commit before asking (``publish --no-witness``, ``git push``,
``witness``; the README's workflow does).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from publisher import fsio
from publisher.config import Config, WitnessingConfig
from publisher.errors import Refused
from publisher.publication import CHECKPOINT, STATUS_FILE, Change, Operation, now_utc, status_with_checkpoint
from publisher.publish.transaction import PRIVATE_DIR
from publisher.tlog import open_log
from publisher.tlog.checkpoint import CheckpointError, SignedCheckpoint, open_witnessed
from publisher.tlog.engine import CorruptLog, LogReader
from verifier.cpl_verify import (
    COSIGNATURE_SKEW,
    USER_AGENT,
    WITNESS_SIZE_TYPE,
    AddCheckpoint,
    NoteError,
    PolicyWitness,
    Witnessing,
    WitnessRefusal,
    parse_size_body,
    response_cosignatures,
)

SIZES_FILE = f"{PRIVATE_DIR}/witness-sizes.json"  # private: the size each witness last cosigned (a hint)
MAX_ATTEMPTS = 3  # requests per witness per run: the first, and again after up to two 409s
MAX_RESPONSE = 64 * 1024


class BelowQuorum(Refused):
    """The committed checkpoint lacks the cosignatures the policy needs, and ``below_quorum`` is ``refuse``."""


@dataclass
class Answer:
    """What one witness did with this run's requests."""

    name: str
    url: str
    cosigned: bool = False
    attempts: int = 0
    seconds: float = 0.0
    error: str | None = None
    lines: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "url": self.url,
            "cosigned": self.cosigned,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class WitnessReport:
    """One witnessing run: the checkpoint's size, the answers, the verdict after it, and the commit."""

    size: int
    asked: list[Answer]
    verdict: Witnessing
    below_quorum: str
    committed: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "size": self.size,
            "asked": [a.to_json() for a in self.asked],
            "committed": self.committed,
            "below_quorum": self.below_quorum,
            **self.verdict.to_json(),
        }

    def lines(self) -> list[str]:
        """What an operator reads: who cosigned, who failed and why, the verdict."""
        out = [f"witness {a.name}: {'cosigned' if a.cosigned else 'FAILED: ' + str(a.error)}" for a in self.asked]
        who = ", ".join(f"{c.name} ({c.to_json()['time']})" for c in self.verdict.cosigned) or "no witness"
        if self.verdict.satisfied:
            out.append(f"checkpoint of size {self.size} cosigned by {who}: quorum {self.verdict.quorum} met")
        else:
            action = (
                "NOT FOR PUBLICATION (below_quorum = refuse): the site is not built from it until the quorum is met"
                if self.below_quorum == "refuse"
                else "published anyway (below_quorum = warn): clients that enforce the policy will refuse it"
            )
            out.append(
                f"WARNING: checkpoint of size {self.size} cosigned by {who}; the quorum {self.verdict.quorum} is "
                f"NOT met (missing: {', '.join(self.verdict.missing)}): {action}. Run 'cpl-publisher witness' to "
                "ask again"
            )
        return out


def judge(witnessing: WitnessingConfig, log: LogReader) -> tuple[SignedCheckpoint, Witnessing]:
    """The log's checkpoint opened with its key and the witnesses' keys (``CorruptLog`` if a cosignature by a
    configured witness does not verify), and the policy's verdict on it now."""
    try:
        return open_witnessed(log.signed.raw, log.origin, log.verifiers, witnessing.policy, int(time.time()))
    except CheckpointError as exc:
        raise CorruptLog(f"{CHECKPOINT}: {exc}") from exc


def _post(url: str, body: bytes, timeout: float) -> tuple[int, str, bytes]:
    """POST ``body`` to ``url``: status, content type, body (at most ``MAX_RESPONSE`` bytes), all within
    ``timeout`` seconds: a witness that drips its answer is cut off too."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)

    fired = threading.Event()

    def cut_off() -> None:
        fired.set()
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read, which then fails

    timer = threading.Timer(timeout, cut_off)
    timer.start()
    try:
        conn.request(
            "POST", parts.path or "/", body, {"Content-Type": "text/plain; charset=utf-8", "User-Agent": USER_AGENT}
        )
        response = conn.getresponse()
        data = response.read(MAX_RESPONSE + 1)
        if len(data) > MAX_RESPONSE:
            raise OSError(f"the answer is larger than {MAX_RESPONSE} bytes")
        return response.status, response.getheader("Content-Type", ""), data
    except (OSError, http.client.HTTPException) as exc:
        if fired.is_set():
            raise TimeoutError(f"timed out: no whole answer within {timeout:g} s") from exc
        raise
    finally:
        timer.cancel()
        conn.close()


def _message(status: int, body: bytes) -> str:
    text = body[:300].decode("utf-8", "replace").strip()
    return f"HTTP {status}" + (f" ({text})" if text else "")


def ask(
    witness: PolicyWitness, signed: SignedCheckpoint, proof: Callable[[int], list[bytes]], old: int, timeout: float
) -> Answer:
    """Ask one witness to cosign ``signed``, starting from ``old`` (its size as last known; 0 if unknown)."""
    url = (witness.url or "").rstrip("/") + "/add-checkpoint"
    answer = Answer(witness.name, url)
    size = signed.checkpoint.size
    start = time.monotonic()
    try:
        while answer.attempts < MAX_ATTEMPTS:
            answer.attempts += 1
            request = AddCheckpoint(old, tuple(proof(old)) if 0 < old < size else (), signed.raw)
            try:
                status, content_type, body = _post(url, request.encode(), timeout)
            except (OSError, http.client.HTTPException) as exc:
                answer.error = f"no answer from {url}: {exc}"
                return answer
            if status == 409:
                held = parse_size_body(body)
                if content_type.split(";")[0].strip() != WITNESS_SIZE_TYPE:
                    raise WitnessRefusal(
                        409, f"answered 409 with Content-Type {content_type!r}, not {WITNESS_SIZE_TYPE}"
                    )
                if held > size:
                    raise WitnessRefusal(
                        409,
                        f"it has cosigned a tree of size {held} of this log, larger than this checkpoint's {size}: "
                        "the log lost state it had signed, or its key signed another history. Investigate",
                    )
                if held == old:
                    raise WitnessRefusal(409, f"it answered 409 with the size {old} the request already gave")
                old = held
                continue
            if status != 200:
                raise WitnessRefusal(status, _explain(status, body, signed))
            found = response_cosignatures(signed.note.text, body, witness.verifier)
            if not found:
                raise WitnessRefusal(200, f"its answer holds no cosignature by its key {witness.verifier.vkey}")
            if any(when > time.time() + COSIGNATURE_SKEW for _, when in found):
                raise WitnessRefusal(200, "its cosignature is dated in the future; check the witness's clock")
            answer.lines, answer.cosigned = [found[0][0]], True
            return answer
        raise WitnessRefusal(409, f"it answered 409 {MAX_ATTEMPTS} times")
    except WitnessRefusal as exc:
        answer.error, answer.lines = str(exc), []
    except NoteError as exc:
        answer.error, answer.lines = f"its cosignature is malformed or does not verify: {exc}", []
    finally:
        answer.seconds = time.monotonic() - start
    return answer


def _explain(status: int, body: bytes, signed: SignedCheckpoint) -> str:
    origin = signed.checkpoint.origin
    what = {
        404: f"it does not witness this log (origin {origin}): its operator must add the log's key",
        403: f"it does not accept the log's signature: it holds another key for {origin}",
        400: "it found the request malformed",
        422: (
            "it refuses: this checkpoint is not consistent with the tree of this log it cosigned before (a fork, "
            "or another tree of the same size). Do not publish until this is explained"
        ),
    }.get(status, "an answer tlog-witness does not define")
    return f"{what}: {_message(status, body)}"


def _read_sizes(config: Config) -> dict[str, int]:
    try:
        obj = json.loads((config.root / SIZES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in obj.items() if isinstance(v, int)} if isinstance(obj, dict) else {}


def witness(op: Operation, config: Config, witnessing: WitnessingConfig) -> WitnessReport:
    """Ask the witnesses missing from the committed checkpoint, add their cosignatures (one committed change),
    and return the verdict. The caller holds the publication (``op``) and has checked the work tree is clean."""
    log = open_log(config)
    signed, before = judge(witnessing, log)
    done = {c.name for c in before.cosigned}
    todo = [w for w in witnessing.policy.witnesses if w.name not in done]
    sizes = _read_sizes(config)
    size = signed.checkpoint.size
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        answers = list(
            pool.map(
                lambda w: ask(w, signed, log.consistency_proof, min(sizes.get(w.name, 0), size), witnessing.timeout),
                todo,
            )
        )
    for a in answers:
        if a.cosigned:
            sizes[a.name] = size
    fsio.write_file(config.root / SIZES_FILE, (json.dumps(sizes, sort_keys=True) + "\n").encode())
    lines = [line for a in answers for line in a.lines]
    report = WitnessReport(size, answers, before, witnessing.below_quorum)
    if lines:
        note = signed.raw + "".join(lines)
        names = ", ".join(a.name for a in answers if a.cosigned)
        message = f"witness: cosignatures of log size {size} by {names}\n\nat {now_utc().isoformat()}\n"
        writes = {CHECKPOINT: note.encode()}
        state = status_with_checkpoint(config.root, note)
        if state is not None:
            writes[STATUS_FILE] = state
        report.committed = op.apply(Change("witness", message, writes=writes))
        report.verdict = judge(witnessing, open_log(config))[1]
    return report
