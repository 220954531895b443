"""Witnessed checkpoints end to end: the policy format (C2SP tlog-policy), the publisher's witness client
against our witness, a third-party one (witness-log) and misbehaving ones, the site's refusal below the
quorum, the verifier's enforcement in every command, and the CI workflow's witness step from fresh clones.
(The witness server itself, request by request from the spec text: tests/test_witness_server.py.)"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from publication_fixtures import Pub, git, new_publication
from site_fixtures import SiteBuild, build_site, demo_site, write_submission
from test_deployment import ci_run, deployment, publish_step_script, secas_pushes
from witness_fixtures import Answer, Served, our_witnesses, serve, serve_witness_log

from publisher import demo
from publisher.config import load as load_config
from publisher.demo import Witness, start_witness, stop_witness
from publisher.publish import publish
from publisher.publish.witnessing import SIZES_FILE
from publisher.site.export import NotWitnessed, export_tree
from publisher.tlog import read_vkey
from verifier.cpl_verify import (
    EM_DASH,
    Checkpoint,
    Cosigner,
    PolicyError,
    Verifier,
    b64encode,
    parse_note,
    parse_policy,
    parse_unverified,
)
from verifier.cpl_verify import main as verify_main

__all__ = ["demo_site", "deployment", "our_witnesses"]  # fixtures defined elsewhere

REPO = Path(__file__).resolve().parents[1]


# =====================================================================================================
# The policy format (C2SP tlog-policy)
# =====================================================================================================


def _wkey(name: str) -> Verifier:
    return Cosigner.generate(name).verifier


def test_the_spec_example_policy_parses_judges_and_round_trips() -> None:
    keys = {n: _wkey(f"{n}.example/w") for n in ("X1", "X2", "X3", "Y1", "Y2", "Y3")}
    from publisher.tlog.note import Signer

    log = Signer.generate("log.example/l").verifier
    text = "\n".join(
        [
            "# the example of c2sp.org/tlog-policy, with keys",
            f"log {log.vkey}",
            "",
            *(f"  witness\t{n} {k.vkey}  " for n, k in keys.items() if n.startswith("X")),
            "group X-witnesses 2 X1 X2 X3",
            *(f"witness {n} {k.vkey} https://{n}.example/" for n, k in keys.items() if n.startswith("Y")),
            "group Y-witnesses any Y1 Y2 Y3",
            "group X-and-Y all X-witnesses Y-witnesses",
            "quorum X-and-Y",
        ]
    )
    policy = parse_policy(text)
    assert policy.satisfied({"X1", "X3", "Y2"})
    assert not policy.satisfied({"X1", "Y1", "Y2", "Y3"})  # one X is not two
    assert not policy.satisfied({"X1", "X2", "X3"})  # no Y
    assert policy.counted() == ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    assert policy.describe() == "all of (2 of (X1, X2, X3), 1 of (Y1, Y2, Y3))"
    assert policy.witness("Y2") is not None and policy.witness("Y2").url == "https://Y2.example/"  # type: ignore[union-attr]
    assert parse_policy(policy.text()) == policy
    assert parse_policy("quorum none\n").satisfied(set())


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["witness a {A}"], "no quorum line"),
        (["witness a {A}", "quorum b"], "not defined on an earlier line"),
        (["group g any a", "witness a {A}", "quorum g"], "not defined on an earlier line"),
        (["witness a {A}", "witness b {A}", "quorum a"], "wraps a public key"),
        (["witness a {A}", "witness a {B}", "quorum a"], "already defined"),
        (["witness none {A}", "quorum none"], "reserved"),
        (["witness a {A}", "witness b {B}", "group g 3 a b", "quorum g"], "threshold"),
        (["witness a {A}", "group g 0 a", "quorum g"], "threshold"),
        (["witness a {A}", "group g any a a", "quorum g"], "twice"),
        (["witness a {L}", "quorum a"], r"cosignature key \(type 0x04\)"),
        (["log {A}", "quorum none"], r"note key \(type 0x01\)"),
        (["witness a {A}", "quorum a", "quorum a"], "a second quorum line"),
        (["witness a {A}", "witness b {B}", "group g any a", "group h 2 g a b", "quorum h"], "count a twice"),
        (["witness a {A}\r", "quorum a"], "control character"),
        (["witnesses a {A}", "quorum a"], "expected 'log"),
        (["witness a not-a-vkey", "quorum a"], "line 1"),
    ],
)
def test_a_malformed_policy_is_refused_with_the_line_and_the_rule(lines: list[str], message: str) -> None:
    from publisher.tlog.note import Signer

    a = Cosigner.generate("a.example/w")
    keys = {
        "A": a.verifier.vkey,
        "B": _wkey("b.example/w").vkey,
        "L": Signer.generate("l").verifier.vkey,
    }
    with pytest.raises(PolicyError, match=message):
        parse_policy("\n".join(line.format(**keys) for line in lines) + "\n")


@st.composite
def _policies(draw: st.DrawFn) -> tuple[str, list[str], dict[str, tuple[int, list[str]]], str]:
    witnesses = [f"w{i}" for i in range(draw(st.integers(1, 5)))]
    names, groups = list(witnesses), {}
    for g in range(draw(st.integers(0, 4))):
        members = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
        k = draw(st.integers(1, len(members)))
        groups[f"g{g}"] = (k, members)
        names.append(f"g{g}")
    quorum = draw(st.sampled_from(names))
    return quorum, witnesses, groups, draw(st.sampled_from(["numbers", "words"]))


_KEYS = [_wkey(f"w{i}.example/w").vkey for i in range(5)]


@settings(max_examples=100, deadline=None)
@given(_policies(), st.data())
def test_quorum_evaluation_matches_a_direct_reading_of_the_spec(
    drawn: tuple[str, list[str], dict[str, tuple[int, list[str]]], str], data: st.DataObject
) -> None:
    quorum, witnesses, groups, style = drawn
    lines = [f"witness {w} {_KEYS[i]}" for i, w in enumerate(witnesses)]
    for name, (k, members) in groups.items():
        word = {1: "any", len(members): "all"}.get(k, str(k)) if style == "words" else str(k)
        lines.append(f"group {name} {word} {' '.join(members)}")

    def under(name: str) -> set[str]:
        return set().union(*(under(m) for m in groups[name][1])) if name in groups else {name}

    overlapping = any(
        under(x) & under(y) for _, members in groups.values() for x, y in itertools.combinations(members, 2)
    )
    text = "\n".join([*lines, f"quorum {quorum}"]) + "\n"
    if overlapping:  # a witness would count twice in one group: refused (tlog-policy's intent)
        with pytest.raises(PolicyError, match="twice"):
            parse_policy(text)
        return
    policy = parse_policy(text)
    cosigned = set(data.draw(st.lists(st.sampled_from(witnesses), unique=True)))

    def witnessed(name: str) -> bool:  # "at least k of its n members have witnessed"
        if name in groups:
            k, members = groups[name]
            return sum(witnessed(m) for m in members) >= k
        return name in cosigned

    assert policy.satisfied(cosigned) == witnessed(quorum)
    assert parse_policy(policy.text()).satisfied(cosigned) == witnessed(quorum)


# =====================================================================================================
# A publication and its witnesses
# =====================================================================================================


@dataclass
class Setup:
    pub: Pub
    log: Verifier
    tmp: Path
    n: int = 0

    def configure(self, witnesses: list[tuple[str, Verifier, str]], below: str = "refuse", timeout: float = 5) -> None:
        """Replace the ``[witnessing]`` table: every witness required."""
        path = self.pub.root / "publisher.toml"
        toml = path.read_text().split("\n[witnessing]")[0]
        lines = [f"witness {n} {v.vkey} {url}" for n, v, url in witnesses]
        lines += [f"group all-of-them all {' '.join(n for n, _, _ in witnesses)}", "quorum all-of-them"]
        policy = "\n".join(lines)
        table = f'below_quorum = "{below}"\ntimeout_seconds = {timeout}\npolicy = """\n{policy}\n"""\n'
        path.write_text(f"{toml}\n[witnessing]\n{table}")

    def submit(self) -> None:
        self.n += 1
        row = ("1001", "Acme", f"ESME-{self.n}", "1.0", "1.0", "ESME", "SMETS2", demo.image_hash(f"w{self.n}"))
        write_submission(self.pub.root, f"W{self.n:03d}", [row], [self.pub.maker, self.pub.supplier])

    def cli(self, *argv: str) -> tuple[int, str]:
        """``cpl-publisher`` in a subprocess (its exit code and output)."""
        done = subprocess.run(
            [sys.executable, "-m", "publisher", *argv, "--dir", str(self.pub.root)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stdout + done.stderr

    def checkpoint(self) -> str:
        return (self.pub.root / "log" / "checkpoint").read_text()

    def trust(self, policy_lines: list[str]) -> Path:
        """The publication's trust file (``demo.trust_of``) with this policy."""
        path = self.tmp / f"trust-{len(list(self.tmp.glob('trust-*')))}.json"
        trust = demo.trust_of(load_config(self.pub.root))
        trust["log"]["policy"] = "\n".join(policy_lines) + "\n"  # type: ignore[index]
        path.write_text(json.dumps(trust))
        return path

    def site(self) -> Path:
        """The machine-readable site, exported afresh (its files are copies: the tests may alter them)."""
        out = self.tmp / f"site-{len(list(self.tmp.glob('site-*')))}"
        export_tree(load_config(self.pub.root), out, "now")
        checkpoint = out / "log" / "checkpoint"
        data = checkpoint.read_bytes()
        checkpoint.unlink()  # a hard link to the publication's: replace it by a copy
        checkpoint.write_bytes(data)
        return out

    def verify(self, trust: Path, *argv: str, site: Path | None = None) -> tuple[int, dict[str, object]]:
        """``cpl-verify --json`` against ``site``, or the publication's log folder (laid out as the site's)."""
        import contextlib
        import io

        where = ["--site", str(site)] if site else ["--log", str(self.pub.root / "log")]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = verify_main(["--json", "--trust", str(trust), *where, *argv])
        return code, json.loads(out.getvalue())


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    pub = new_publication(tmp_path, "witnessed.example/log")
    return Setup(pub, read_vkey(pub.root / "log"), tmp_path)


def _cosigners(note: str, *witnesses: Verifier) -> dict[str, int]:
    """Which of ``witnesses`` cosigned ``note`` validly, and when (checked with the key alone); each named by
    its key name's first label (the tests name keys ``<policy name>.<domain>/...``)."""
    parsed = parse_note(note)
    out = {}
    for w in witnesses:
        for sig in parsed.signatures:
            if (sig.name, sig.key_id) == (w.name, w.key_id):
                w.verify(parsed.text, sig.signature)
                out[w.name.split(".")[0]] = int.from_bytes(sig.signature[:8], "big")
    return out


def test_publish_gathers_cosignatures_from_our_witness_and_a_third_party_one(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> None:
    ours = our_witnesses("secas", setup.log)
    theirs = serve_witness_log(setup.tmp / "witness-log.json", "ssc.example/witness", setup.log)
    try:
        setup.configure([("secas", ours.verifier, ours.url), ("ssc", theirs.verifier, theirs.url)])
        before = setup.checkpoint()
        result = publish(load_config(setup.pub.root))  # nothing new: only the current checkpoint is witnessed
        assert result.witnessing is not None and result.witnessing.verdict.satisfied
        note = setup.checkpoint()
        assert note.startswith(before), "cosignatures only add signature lines"
        when = _cosigners(note, ours.verifier, theirs.verifier)
        assert set(when) == {"secas", "ssc"} and all(abs(t - time.time()) < 60 for t in when.values())

        setup.submit()
        result = publish(load_config(setup.pub.root))
        assert result.committed and result.witnessing and result.witnessing.verdict.satisfied
        # The second request to the third party started from the size it cosigned (remembered), with a proof.
        old_line = theirs.requests[-1].split(b"\n")[0]
        assert old_line == f"old {parse_unverified(before).size}".encode()
        assert theirs.requests[-1].split(b"\n\n")[0].count(b"\n") >= 1, "a consistency proof was sent"

        policy = [f"witness secas {ours.verifier.vkey}", f"witness ssc {theirs.verifier.vkey}"]
        code, out = setup.verify(setup.trust([*policy, "group both all secas ssc", "quorum both"]), "consistency")
        assert code == 0, out
        witnessing = out["result"]["witnessing"]  # type: ignore[index]
        assert {c["name"] for c in witnessing["cosigned"]} == {"secas", "ssc"} and witnessing["satisfied"]

        code, text = setup.cli("history", "verify")
        assert code == 0 and "trees reached the quorum" in text and "quorum met" in text, text
        (setup.tmp / "policy").write_text("\n".join([*policy, "group both all secas ssc", "quorum both"]) + "\n")
        log_verify = [sys.executable, "-m", "publisher", "log", "verify", str(setup.pub.root / "log")]
        done = subprocess.run([*log_verify, "--policy", str(setup.tmp / "policy")], capture_output=True, text=True)
        assert done.returncode == 0 and "quorum all of (secas, ssc) met" in done.stdout, done.stdout + done.stderr
    finally:
        theirs.close()


def test_a_witness_down_holds_back_the_site_until_a_later_run_adds_its_cosignature(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> None:
    up = our_witnesses("secas", setup.log)
    down = our_witnesses("ssc", setup.log)
    url = down.url
    stop_witness(down)
    setup.configure([("secas", up.verifier, up.url), ("ssc", down.verifier, url)], timeout=2)
    setup.submit()
    head = git(setup.pub.root, "rev-parse", "HEAD").strip()
    code, text = setup.cli("publish")
    assert code == 1, text
    assert "witness ssc: FAILED: no answer" in text and "NOT FOR PUBLICATION" in text and "missing: ssc" in text
    # The log's commit (and the cosignature that came) are committed: nothing is lost or half-written.
    assert git(setup.pub.root, "rev-list", "--count", f"{head}..HEAD").strip() == "2"
    assert git(setup.pub.root, "status", "--porcelain").strip() == ""
    with pytest.raises(NotWitnessed, match="missing: ssc"):
        export_tree(load_config(setup.pub.root), setup.tmp / "site", "now")
    assert not (setup.tmp / "site" / "log").exists()
    build = build_site(setup.pub.root, setup.tmp / "mk-site")
    assert build.returncode != 0 and "missing: ssc" in build.stdout + build.stderr
    policy = [f"witness secas {up.verifier.vkey}", f"witness ssc {down.verifier.vkey}", "group g all secas ssc"]
    code, out = setup.verify(setup.trust([*policy, "quorum g"]), "consistency")
    assert code == 1 and "Missing: ssc" in str(out["error"]), out
    committed = setup.checkpoint()

    back = start_witness("ssc", "ssc.test/witness", setup.tmp / "witnesses" / "ssc", setup.log, int(url.split(":")[-1]))
    try:
        code, text = setup.cli("witness")
        assert code == 0 and "quorum all of (secas, ssc) met" in text, text
    finally:
        stop_witness(back)
    late = setup.checkpoint()
    assert late.startswith(committed) and late.count(EM_DASH) == committed.count(EM_DASH) + 1
    diff = git(setup.pub.root, "show", "--format=", "HEAD", "--", "log/checkpoint")
    assert [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")] == [
        late.splitlines()[-1]
    ], "the late cosignature is one added line; nothing committed before changes"
    export_tree(load_config(setup.pub.root), setup.tmp / "site", "now")
    code, out = setup.verify(setup.trust([*policy, "quorum g"]), "consistency")
    assert code == 0, out
    code, text = setup.cli("witness")  # nothing missing: nothing asked, nothing committed
    assert code == 0 and "committed" not in text


def test_warn_mode_publishes_below_the_quorum_loudly(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> None:
    up = our_witnesses("secas", setup.log)
    setup.configure([("secas", up.verifier, up.url), ("ssc", _wkey("ssc.test/w"), "http://127.0.0.1:9")], "warn", 2)
    code, text = setup.cli("publish")
    assert code == 0 and "WARNING" in text and "published anyway (below_quorum = warn)" in text, text
    export_tree(load_config(setup.pub.root), setup.tmp / "site", "now")  # the site is built
    build = build_site(setup.pub.root, setup.tmp / "mk-site")
    assert build.returncode == 0, build.stdout + build.stderr
    page = (setup.tmp / "mk-site" / "transparency-log" / "index.html").read_text()
    assert "Below the witness quorum" in page and "secas" in page


def _scripted(
    setup: Setup, respond: Callable[[bytes], Answer], key: Verifier | None = None, name: str = "odd"
) -> tuple[Served, str]:
    """A misbehaving witness (``key``: its key; default a new one), configured beside nothing else; returns it
    and the run's failure message."""
    served = serve(respond, key or _wkey(f"{name}.test/w"))
    try:
        setup.configure([(name, served.verifier, served.url)], timeout=1)
        before = setup.checkpoint()
        code, text = setup.cli("witness")
        assert code == 1, text
        assert setup.checkpoint() == before, "nothing is added from a witness that failed"
        assert git(setup.pub.root, "status", "--porcelain", "--", "log").strip() == ""
        return served, text
    finally:
        served.close()


def _cosign_as(cosigner: Cosigner, body: bytes, timestamp: int | None = None) -> bytes:
    note = body.split(b"\n\n", 1)[1].decode()
    text = parse_note(note).text
    return cosigner.cosign(text, timestamp or int(time.time())).encode()


def test_a_slow_witness_times_out_without_holding_up_the_others(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> None:
    def slow(body: bytes) -> Answer:
        time.sleep(4)
        return 200, "text/plain", b""

    served = serve(slow, _wkey("slow.test/w"))
    fast = our_witnesses("fast", setup.log)
    try:
        setup.configure([("slow", served.verifier, served.url), ("fast", fast.verifier, fast.url)], timeout=1)
        started = time.monotonic()
        code, text = setup.cli("witness")
        assert time.monotonic() - started < 3.5, "one request is bounded by timeout_seconds"
        assert code == 1 and "witness slow: FAILED: no answer" in text and "timed out" in text, text
        assert "witness fast: cosigned" in text
        assert set(_cosigners(setup.checkpoint(), fast.verifier)) == {"fast"}
    finally:
        served.close()


@pytest.mark.parametrize(
    ("status", "ctype", "body", "message"),
    [
        (404, "text/plain", b"unknown log\n", "does not witness this log"),
        (403, "text/plain", b"bad signature\n", "does not accept the log's signature"),
        (400, "text/plain", b"malformed\n", "found the request malformed"),
        (422, "text/plain", b"inconsistent\n", "not consistent with the tree of this log it cosigned before"),
        (500, "text/plain", b"", "an answer tlog-witness does not define"),
        (409, "text/x.tlog.size", b"999999\n", "larger than this checkpoint's"),
        (409, "text/plain", b"1\n", "Content-Type"),
        (409, "text/x.tlog.size", b"-1\n", "without a valid size"),
    ],
)
def test_each_refusal_is_reported_with_the_witness_and_its_meaning(
    setup: Setup, status: int, ctype: str, body: bytes, message: str
) -> None:
    _, text = _scripted(setup, lambda _: (status, ctype, body))
    assert "witness odd: FAILED" in text and message in text, text


def test_a_witness_answering_409_again_and_again_is_given_up(setup: Setup) -> None:
    sizes = itertools.count(1)
    served, text = _scripted(setup, lambda _: (409, "text/x.tlog.size", f"{next(sizes) % 3}\n".encode()))
    assert "409" in text and len(served.requests) <= 3, text


def test_bad_or_foreign_cosignatures_are_not_added(setup: Setup) -> None:
    witness = Cosigner.generate("odd.test/w")
    other = Cosigner.generate("other.test/w")

    def forged(body: bytes) -> Answer:
        line = _cosign_as(witness, body).decode().split(" ")
        raw = bytearray(base64.b64decode(line[2]))
        raw[-1] ^= 1
        return 200, "text/plain", f"{line[0]} {line[1]} {b64encode(bytes(raw))}\n".encode()

    answers: list[tuple[Callable[[bytes], Answer], str]] = [
        (forged, "does not verify"),
        (lambda body: (200, "text/plain", _cosign_as(other, body)), "holds no cosignature by its key"),
        (lambda body: (200, "text/plain", _cosign_as(witness, body, 2**40)), "dated in the future"),
        (lambda _: (200, "text/plain", b"not a signature line\n"), "malformed"),
        (lambda _: (200, "text/plain", b""), "malformed"),
        (lambda _: (200, "text/plain", EM_DASH.encode() + b" odd.test/w AAAA\n"), "malformed"),
    ]
    for respond, message in answers:
        _, text = _scripted(setup, respond, witness.verifier)
        assert "witness odd: FAILED" in text and message in text, text


def test_a_fork_shown_to_a_witness_is_refused_and_reported(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> None:
    w = our_witnesses("secas", setup.log)
    setup.configure([("secas", w.verifier, w.url)])
    fork = setup.tmp / "fork"
    git(setup.tmp, "clone", "-q", str(setup.pub.root), str(fork))
    setup.submit()
    code, text = setup.cli("publish")
    assert code == 0, text
    size = parse_unverified(setup.checkpoint()).size
    # The same key publishes another history from the older commit: a different tree of the same size.
    (fork / "publisher.toml").write_text((setup.pub.root / "publisher.toml").read_text())
    other = Setup(
        Pub(fork, load_config(fork), setup.pub.maker, setup.pub.supplier, setup.pub.now), setup.log, setup.tmp
    )
    other.n = 7
    other.submit()
    code, text = other.cli("publish")
    assert parse_unverified(other.checkpoint()).size == size and other.checkpoint() != setup.checkpoint()
    assert code == 1 and "witness secas: FAILED" in text, text
    assert "a fork, or another tree of the same size" in text and "HTTP 422" in text, text
    evidence = list((setup.tmp / "witnesses" / "secas" / "state" / "evidence").iterdir())
    assert len(evidence) == 1 and other.checkpoint().split("\n\n")[0] in evidence[0].read_text()


def test_a_publish_killed_while_a_witness_answers_is_finished_by_the_next_run(setup: Setup) -> None:
    witness = Cosigner.generate("slow.test/w")

    def slow(body: bytes) -> Answer:
        time.sleep(3)
        return 200, "text/plain", _cosign_as(witness, body)

    served = serve(slow, witness.verifier)
    try:
        setup.configure([("slow", witness.verifier, served.url)], timeout=10)
        setup.submit()
        argv = [sys.executable, "-m", "publisher", "publish", "--dir", str(setup.pub.root)]
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not served.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.requests, "the publish asked the witness"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        code, text = setup.cli("publish")
        assert code == 0 and "quorum 1 of (slow) met" in text, text
        assert git(setup.pub.root, "status", "--porcelain", "--", "log").strip() == ""
        code, text = setup.cli("history", "verify")
        assert code == 0, text
    finally:
        served.close()
    assert json.loads((setup.pub.root / SIZES_FILE).read_text()) == {"slow": parse_unverified(setup.checkpoint()).size}


# =====================================================================================================
# The verifier: every command that accepts a checkpoint enforces the policy
# =====================================================================================================


@pytest.fixture
def cosigned(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> Iterator[tuple[Setup, Witness, Witness]]:
    a, b = our_witnesses("secas", setup.log), our_witnesses("ssc", setup.log)
    setup.configure([("secas", a.verifier, a.url), ("ssc", b.verifier, b.url)])
    for n in range(2):  # the first checkpoint witnessed, then a larger one
        if n:
            setup.submit()
        result = publish(load_config(setup.pub.root))
        assert result.witnessing and result.witnessing.verdict.satisfied
    yield setup, a, b


def _entry_hash(setup: Setup) -> str:
    return demo.image_hash(f"w{setup.n}")


@pytest.mark.parametrize(
    "command",
    [
        ["consistency"],
        ["monitor", "--count", "1"],
        ["inclusion", "--hash", "HASH"],
        ["audit", "--structure-only"],
    ],
)
def test_every_command_refuses_a_checkpoint_below_the_quorum_naming_the_missing_witness(
    cosigned: tuple[Setup, Witness, Witness], command: list[str]
) -> None:
    setup, a, b = cosigned
    third = _wkey("ofgem.test/w")
    argv = [c.replace("HASH", _entry_hash(setup)) for c in command]
    site = setup.site()
    policy = [f"witness secas {a.verifier.vkey}", f"witness ssc {b.verifier.vkey}", f"witness ofgem {third.vkey}"]
    code, out = setup.verify(setup.trust([*policy, "group g 2 secas ssc ofgem", "quorum g"]), *argv, site=site)
    assert code == 0, out  # 2 of 3: met
    assert {c["name"] for c in out["result"]["witnessing"]["cosigned"]} == {"secas", "ssc"}  # type: ignore[index]
    code, out = setup.verify(setup.trust([*policy, "group g all secas ssc ofgem", "quorum g"]), *argv, site=site)
    assert code == 1, out
    assert "Missing: ofgem" in str(out["error"]) and "cosigned by secas at" in str(out["error"]), out


def test_an_offline_proof_is_judged_by_the_policy(cosigned: tuple[Setup, Witness, Witness]) -> None:
    setup, a, b = cosigned
    proof = setup.tmp / "entry.tlog-proof"
    subprocess.run(
        [sys.executable, "-m", "publisher", "log", "proof", str(setup.pub.root / "log"), "1", "-o", str(proof)],
        check=True,
        cwd=REPO,
    )
    policy = [f"witness secas {a.verifier.vkey}", f"witness ssc {b.verifier.vkey}"]
    code, out = setup.verify(
        setup.trust([*policy, "group g all secas ssc", "quorum g"]), "inclusion", "--proof", str(proof)
    )
    assert code in (0, 3) and out["result"]["witnessing"]["satisfied"], out  # type: ignore[index]
    code, out = setup.verify(
        setup.trust([*policy, "witness x " + _wkey("x.t/w").vkey, "quorum x"]), "inclusion", "--proof", str(proof)
    )
    assert code == 1 and "Missing: x" in str(out["error"]), out


def _rewrite_checkpoint(site: Path, note: str) -> None:
    (site / "log" / "checkpoint").write_text(note)


def test_a_cosignature_copied_from_an_older_checkpoint_is_refused(cosigned: tuple[Setup, Witness, Witness]) -> None:
    setup, a, b = cosigned
    old = git(setup.pub.root, "show", "HEAD~2:log/checkpoint")  # the first witnessed size, before the submission
    assert parse_unverified(old).size < parse_unverified(setup.checkpoint()).size
    old_line = next(line for line in old.splitlines() if line.startswith(f"{EM_DASH} secas.test/witness "))
    current = setup.checkpoint()
    replayed = "".join(
        (old_line + "\n") if line.startswith(f"{EM_DASH} secas.test/witness ") else line + "\n"
        for line in current.splitlines()
    )
    assert replayed != current
    site = setup.site()
    _rewrite_checkpoint(site, replayed)
    policy = [f"witness secas {a.verifier.vkey}", f"witness ssc {b.verifier.vkey}"]
    code, out = setup.verify(setup.trust([*policy, "group g any secas ssc", "quorum g"]), "consistency", site=site)
    assert code == 1 and "copied from another checkpoint" in str(out["error"]), out


def test_a_cosignature_dated_in_the_future_does_not_count(cosigned: tuple[Setup, Witness, Witness]) -> None:
    setup, a, b = cosigned
    key = Cosigner.from_skey((setup.tmp / "witnesses" / "secas" / "witness.key").read_text())
    current = setup.checkpoint()
    text = parse_note(current).text
    kept = [line for line in current.splitlines()[len(text.splitlines()) + 1 :] if "secas.test" not in line]
    future = key.cosign(text, int(time.time()) + 86400)
    site = setup.site()
    _rewrite_checkpoint(site, text + "\n" + "".join(line + "\n" for line in kept) + future)
    policy = [f"witness secas {a.verifier.vkey}", f"witness ssc {b.verifier.vkey}"]
    code, out = setup.verify(setup.trust([*policy, "group g all secas ssc", "quorum g"]), "consistency", site=site)
    assert code == 1 and "Missing: secas" in str(out["error"]), out
    assert any("in the future" in w for w in out["warnings"]), out  # type: ignore[union-attr]


def test_the_old_witnesses_key_in_a_trust_file_is_refused_with_the_way_forward(tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    trust.write_text(json.dumps({"log": {"vkey": _wkey("x.t/w").vkey, "witnesses": []}}))
    assert verify_main(["--trust", str(trust), "--site", str(tmp_path), "consistency"]) == 2


# =====================================================================================================
# The demo and the CI workflow
# =====================================================================================================


def test_the_demo_is_witnessed_by_two_and_its_trust_file_requires_both(demo_site: SiteBuild) -> None:
    info = demo_site.info
    trust = json.loads(Path(str(info["trust"])).read_text())
    policy = parse_policy(trust["log"]["policy"])
    assert [w.name for w in policy.witnesses] == ["secas", "ssc"] and policy.describe() == "all of (secas, ssc)"
    assert all(w.url is None for w in policy.witnesses), "the witnesses' URLs are the log's business"
    note = (demo_site.site / "log" / "checkpoint").read_text()
    assert set(_cosigners(note, *(w.verifier for w in policy.witnesses))) == {"secas", "ssc"}
    page = (demo_site.site / "transparency-log" / "index.html").read_text()
    assert "is <strong>met</strong>" in page and "secas" in page and "ssc" in page
    assert subprocess.run(["pgrep", "-f", "witness serve.*cpl-demo"], capture_output=True).returncode == 1


def test_ci_asks_the_witnesses_only_for_a_pushed_checkpoint(
    deployment: object, our_witnesses: Callable[[str, Verifier], Witness], tmp_path: Path
) -> None:
    from test_deployment import Deployment

    d = deployment
    assert isinstance(d, Deployment)
    script = publish_step_script()
    assert script.index("--no-witness") < script.index("git push") < script.index("cpl-publisher witness")
    admin = d.clone("admin")
    w = our_witnesses("secas", read_vkey(admin / "log"))
    port = int(w.url.split(":")[-1])
    with (admin / "publisher.toml").open("a") as f:
        policy = f"witness secas {w.verifier.vkey} {w.url}\nquorum secas\n"
        f.write(f'\n[witnessing]\ntimeout_seconds = 2\npolicy = """\n{policy}"""\n')
    git(admin, "commit", "-q", "-am", "witnessing")
    git(admin, "push", "-q")
    secas_pushes(d, "G001")
    _work, done = ci_run(d)
    assert "witness secas: cosigned" in done.stdout, done.stdout
    view = d.clone("view")
    assert set(_cosigners((view / "log" / "checkpoint").read_text(), w.verifier)) == {"secas"}

    stop_witness(w)  # the witness is down for the next run: the log's commit is pushed, the step fails
    secas_pushes(d, "G002")
    with pytest.raises(AssertionError, match="missing: secas"):
        ci_run(d)
    view = d.clone("view")
    pending = (view / "log" / "checkpoint").read_text()
    assert (
        "G002" in (view / "processed" / "G002" / "request.json").read_text() or (view / "processed" / "G002").is_dir()
    )
    assert _cosigners(pending, w.verifier) == {}

    back = start_witness(
        "secas", "secas.test/witness", tmp_path / "witnesses" / "secas", read_vkey(admin / "log"), port
    )
    try:
        ci_run(d)  # nothing new to publish: the pending checkpoint is witnessed
    finally:
        stop_witness(back)
    view = d.clone("view")
    assert (view / "log" / "checkpoint").read_text().startswith(pending)
    assert set(_cosigners((view / "log" / "checkpoint").read_text(), w.verifier)) == {"secas"}


def test_a_witness_key_named_like_the_log_never_stands_in_for_the_log_signature() -> None:
    from publisher.tlog.note import Signer
    from verifier.cpl_verify import EMPTY_ROOT, Checkpoint, NoLogSignature, open_checkpoint

    log = Signer.generate("log.example/l")
    impostor = Cosigner.generate("log.example/l")  # a cosigner key that bears the log's name
    text = Checkpoint("log.example/l", 0, EMPTY_ROOT).body()
    note = text + "\n" + impostor.cosign(text, int(time.time()))
    with pytest.raises(NoLogSignature):
        open_checkpoint(note, "log.example/l", [log.verifier, impostor.verifier])


def test_vkey_on_the_command_line_keeps_the_trust_files_witnesses(cosigned: tuple[Setup, Witness, Witness]) -> None:
    setup, a, b = cosigned
    trust = setup.trust(
        [f"witness secas {a.verifier.vkey}", f"witness ssc {b.verifier.vkey}", "group g all secas ssc", "quorum g"]
    )
    code, out = setup.verify(trust, "--vkey", setup.log.vkey, "consistency", site=setup.site())
    assert code == 0 and out["result"]["witnessing"]["satisfied"], out  # type: ignore[index]


def test_a_witness_that_cannot_persist_answers_500_and_one_with_a_damaged_memory_does_not_start(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> None:
    w = our_witnesses("secas", setup.log)
    setup.configure([("secas", w.verifier, w.url)])
    state = setup.tmp / "witnesses" / "secas" / "state"
    (state / "logs").rename(state / "logs.away")
    (state / "logs").write_text("not a folder")  # the witness can no longer write its memory
    code, text = setup.cli("witness")
    assert code == 1 and "HTTP 500 (the witness cannot store its state" in text, text
    assert _cosigners(setup.checkpoint(), w.verifier) == {}
    stop_witness(w)

    (state / "logs").unlink()
    (state / "logs.away").rename(state / "logs")
    (state / "logs" / ("0" * 64)).write_text("garbage\n")
    argv = [sys.executable, "-m", "verifier.cpl_verify", "witness", "serve", "--key", str(state.parent / "witness.key")]
    argv += ["--state", str(state), "--listen", "127.0.0.1:0", "--log", setup.log.vkey]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "restore it from a backup" in done.stderr, done


def test_a_policy_file_is_read_as_octets_in_any_line_order() -> None:
    a, b = _wkey("a.example/w"), _wkey("b.example/w")
    text = f"# comment in Latin-1: caf\xe9\nwitness a {a.vkey}\nquorum g2\n".encode("latin-1")
    with pytest.raises(PolicyError, match="not defined on an earlier line"):
        parse_policy(text)
    policy = parse_policy(f"witness a {a.vkey}\ngroup g any a\nquorum g\nwitness b {b.vkey}\n".encode())
    assert [w.name for w in policy.witnesses] == ["a", "b"] and policy.counted() == ["a"]
    assert parse_policy(b"# \xff\xfe opaque\nwitness \xc3\xa9 " + a.vkey.encode() + b"\nquorum \xc3\xa9\n").satisfied(
        {"\xe9"}
    )


def test_a_witness_that_drips_its_answer_is_cut_off_at_the_timeout(setup: Setup) -> None:
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000:
            try:
                conn.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.2)

    threading.Thread(target=drip, daemon=True).start()
    try:
        setup.configure([("drip", _wkey("drip.test/w"), f"http://127.0.0.1:{listener.getsockname()[1]}")], timeout=1)
        started = time.monotonic()
        code, text = setup.cli("witness")
        assert time.monotonic() - started < 4, "the whole answer is bounded, not each byte"
        assert code == 1 and "timed out" in text, text
    finally:
        listener.close()


def test_a_witness_whose_disk_fails_after_the_rename_checks_the_disk_next_time(tmp_path: Path) -> None:
    from publisher.tlog.note import Signer, sign_note
    from verifier.cpl_verify import AddCheckpoint, WitnessService, WitnessStore, consistency_proof, leaf_hash

    log = Signer.generate("log.example/l")
    leaves = [leaf_hash(b"%d" % i) for i in range(12)]

    def note(size: int, extra: bytes = b"") -> str:
        from verifier.cpl_verify import root_of

        tree = leaves[:size] if not extra else [*leaves[: size - 1], leaf_hash(extra)]
        return sign_note(Checkpoint(log.name, size, root_of(tree)).body(), [log])

    def proof(old: int, new: int) -> tuple[bytes, ...]:
        from verifier.cpl_verify import list_hash_range

        return tuple(consistency_proof(old, new, list_hash_range(leaves[:new])))

    store = WitnessStore(tmp_path / "state")
    service = WitnessService(Cosigner.generate("w.example/w"), {log.name: [log.verifier]}, store, time.time)
    assert service.add_checkpoint(AddCheckpoint(0, (), note(5)).encode())[0] == 200
    durable = WitnessStore._durable

    def renamed_then_failed(path: Path, data: bytes) -> None:
        durable(path, data)  # on disk, renamed into place...
        raise OSError(5, "Input/output error")  # ...and then the folder's fsync fails

    store._durable = renamed_then_failed  # type: ignore[method-assign]
    status, _, body = service.add_checkpoint(AddCheckpoint(5, proof(5, 10), note(10)).encode())
    assert status == 500 and b"cannot store its state" in body
    store._durable = durable  # type: ignore[method-assign]
    # The disk holds size 10: a request from 5 is now stale, and a fork of 5..12 is not cosigned.
    status, ctype, body = service.add_checkpoint(AddCheckpoint(5, proof(5, 12), note(12)).encode())
    assert (status, ctype, body) == (409, "text/x.tlog.size", b"10\n")
    fork = note(10, b"forked")
    status, _, _ = service.add_checkpoint(AddCheckpoint(10, (), fork).encode())
    assert status == 422
    assert [p.read_text() for p in (tmp_path / "state" / "evidence").iterdir()] == [fork]
    # A consistency proof that does not verify is the requester's error, not the log's: not kept.
    bad = AddCheckpoint(10, (b"\0" * 32,), note(12)).encode()
    assert service.add_checkpoint(bad)[0] == 422
    assert len(list((tmp_path / "state" / "evidence").iterdir())) == 1
    store.close()


def test_tofu_with_a_policy_alone_pins_the_logs_key_not_a_witness(cosigned: tuple[Setup, Witness, Witness]) -> None:
    setup, a, b = cosigned
    trust = setup.tmp / "policy-only.json"
    policy = f"witness secas {a.verifier.vkey}\nwitness ssc {b.verifier.vkey}\ngroup g all secas ssc\nquorum g\n"
    trust.write_text(json.dumps({"log": {"policy": policy}}))
    code, out = setup.verify(trust, "--tofu", "consistency", site=setup.site())
    assert code == 0 and out["result"]["checkpoint"]["origin"] == "witnessed.example/log", out  # type: ignore[index]


def test_an_as_of_time_does_not_turn_real_cosignatures_into_future_ones(
    cosigned: tuple[Setup, Witness, Witness],
) -> None:
    setup, a, b = cosigned
    policy = [f"witness secas {a.verifier.vkey}", f"witness ssc {b.verifier.vkey}", "group g all secas ssc"]
    code, out = setup.verify(setup.trust([*policy, "quorum g"]), "--now", "2026-01-01T00:00:00Z", "consistency")
    assert code == 0, out


def test_a_shared_policy_file_with_log_lines_serves_the_publisher_too(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> None:
    w = our_witnesses("secas", setup.log)
    path = setup.pub.root / "publisher.toml"
    setup.configure([("secas", w.verifier, w.url)])
    path.write_text(path.read_text().replace('policy = """\n', f'policy = """\nlog {setup.log.vkey}\n'))
    code, text = setup.cli("witness")
    assert code == 0 and "met" in text, text
    other = Cosigner.generate("x").verifier  # any key but this log's
    from publisher.tlog.note import Signer

    path.write_text(path.read_text().replace(f"log {setup.log.vkey}", f"log {Signer.generate('o').verifier.vkey}"))
    code, text = setup.cli("witness")
    assert code == 1 and "name other log keys" in text, text
    assert other.vkey not in text


def test_the_witness_never_reads_an_unread_body_as_a_request_and_refuses_odd_lengths(
    setup: Setup, our_witnesses: Callable[[str, Verifier], Witness]
) -> None:
    import socket

    w = our_witnesses("secas", setup.log)
    port = int(w.url.split(":")[-1])
    origin = __import__("hashlib").sha256(setup.log.name.encode()).hexdigest()
    smuggled = f"GET /{origin}/checkpoint HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 404")
    for length in ("\u00b2", "-1", "1e3", "5_0"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
            assert s.recv(65536).startswith(b"HTTP/1.1 411"), length
    assert w.process.poll() is None, "the witness is still serving"


def test_the_readme_witness_flow_runs_as_written_and_cosigns(setup: Setup) -> None:
    from test_deployment import VENV_BIN, readme_block

    keygen, serve_line = readme_block("witness-flow")
    listener = __import__("socket").create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "LOG_VKEY": setup.log.vkey, "PORT": str(port)}
    done = subprocess.run(["bash", "-e", "-c", keygen], cwd=setup.tmp, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    vkey = Verifier.from_vkey((setup.tmp / "witness.vkey").read_text())
    server = subprocess.Popen(
        ["bash", "-e", "-c", f"exec {serve_line}"], cwd=setup.tmp, env=env, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline().startswith(b"listening on")
        setup.configure([("secas", vkey, f"http://127.0.0.1:{port}")])
        code, text = setup.cli("witness")
        assert code == 0 and "witness secas: cosigned" in text, text
        assert set(_cosigners(setup.checkpoint(), vkey)) == {"secas"}
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0
