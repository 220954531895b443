"""The demo publication that ``make demo`` builds from built-in sample data.

A demo IKI hierarchy, certificates for three manufacturers, two suppliers and
the DCC, about 30 signed submissions (good ones, SMETS1 and communications
hubs endorsed by the DCC, a replacement after an investigation, and bad ones
that end up rejected with reports), two revocations, CRLs and the log, built
by the real commands in three publishes (three git commits). Two witnesses
(``cpl-verify witness serve``, on 127.0.0.1, for the duration of the build)
cosign every checkpoint, and the trust file requires both (a 2-of-2 policy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from publisher import publication, scaffold
from publisher.config import Config, TokenKey
from publisher.config import load as load_config
from publisher.errors import UsageError
from publisher.parties import Party, issue_party, sign_detached
from publisher.pkcs11_uri import Pkcs11Uri
from publisher.publish import gitstate, operations
from publisher.publish.job import init_repository, publish
from publisher.site.lookup import model_lookup_key
from publisher.tlog import read_vkey
from verifier.cpl_verify import CertPin, Cosigner, Policy, PolicyWitness, Trust, Verifier

DEMO_ORIGIN = "demo.cpl-transparency.example/log"
# The demo's witnesses: parties of the scheme that would run one (policy name, key name).
DEMO_WITNESSES = (("secas", "secas.demo.example/witness"), ("ssc", "ssc.demo.example/witness"))
DEMO_SITE = "http://127.0.0.1:8000"
MARKER = ".cpl-demo"
HEADER = (
    "manufacturer_id,manufacturer_name,model_id,hardware_version,firmware_version,device_type,smets_version,image_hash"
)
_ORGANISATIONS = [
    ("1001", "Acme Meters Ltd", "Manufacturer"),
    ("1002", "Brightwater Devices", "Manufacturer"),
    ("1003", "Cobalt Energy Systems", "Manufacturer"),
    ("2001", "Northern Power Supply", "Supplier"),
    ("2002", "Southern Gas & Electric", "Supplier"),
    ("9001", "Smart DCC Ltd", "DCC"),
]


def image_bytes(label: str) -> bytes:
    """A stand-in Manufacturer Image: a few bytes that only the demo approves."""
    return f"demo firmware image {label}".encode()


def image_hash(label: str) -> str:
    """The SHA-256 of the stand-in image ``label``, as submitted."""
    return hashlib.sha256(image_bytes(label)).hexdigest()


# Sample images to try the check page and ``cpl-verify inclusion --file`` on: file name -> image label.
SAMPLE_FIRMWARE = {
    "current-acme-ESME-100-fw2.0.bin": "1001-0-0-fixed",  # approved in round 2, replacing the next one
    "replaced-acme-ESME-100-fw2.0.bin": "1001-0-0",  # approved in round 1, replaced after an investigation
    "current-brightwater-GSME-101-fw2.0.bin": "1002-1-0",
    "unknown-never-submitted.bin": "never submitted",
}


def write_sample_firmware(folder: Path) -> list[Path]:
    """The sample images (``SAMPLE_FIRMWARE``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, label in SAMPLE_FIRMWARE.items():
        (folder / name).write_bytes(image_bytes(label))
    return sorted(folder.iterdir())


def private_dir(out: Path) -> Path:
    """Where the demo keeps its private keys: outside ``out`` and outside any git work tree.

    ``make demo`` builds in ``build/demo``, inside this project's work tree,
    where keys must never be; the system's temporary folder holds them instead.
    """
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"cpl-demo-keys-{digest}"


# Where Debian's softhsm2 package puts the module (and, on some systems, its multiarch place).
SOFTHSM_MODULES = (Path("/usr/lib/softhsm/libsofthsm2.so"), Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"))
DEMO_SLOT_LABEL = "cpl-demo"


def softhsm_module() -> Path:
    """SoftHSM2's PKCS#11 module: ``$SOFTHSM2_MODULE``, or where Debian installs it."""
    named = os.environ.get("SOFTHSM2_MODULE")
    for module in [Path(named)] if named else SOFTHSM_MODULES:
        if module.is_file():
            return module
    raise DemoRefused("SoftHSM2 is not installed (Debian: apt-get install softhsm2 opensc), or set SOFTHSM2_MODULE")


def new_softhsm_token(folder: Path, label: str = DEMO_SLOT_LABEL) -> TokenKey:
    """A fresh SoftHSM2 token in ``folder`` (its ``softhsm2.conf``, its ``tokens/`` and a random user PIN in
    ``folder/user-pin``, mode 0600), made the process's token store through ``SOFTHSM2_CONF``; returns the
    token (no key named yet) with the PIN read from that file."""
    module = softhsm_module()
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens.resolve()}\nobjectstore.backend = file\nlog.level = ERROR\n")
    pin_file = folder / "user-pin"
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    os.environ["SOFTHSM2_CONF"] = str(conf.resolve())
    made = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise DemoRefused(f"softhsm2-util could not make the token: {made.stderr.strip() or made.stdout.strip()}")
    return TokenKey(Pkcs11Uri({"token": label}), module, pin_file=pin_file.resolve())


def _demo_head(pub: Path) -> str | None:
    """The publication's HEAD if its work tree is exactly as committed, else None."""
    repo = gitstate.repository(pub)
    if repo is None or not repo.head.is_valid() or repo.git.status("--porcelain", "--untracked-files=all"):
        return None
    return str(repo.head.commit.hexsha)


def _fresh_dir(out: Path) -> None:
    """Empty ``out`` for a new demo, but only if it holds nothing the demo did not make."""
    if out.exists():
        marker = out / MARKER
        if not marker.exists():
            if any(out.iterdir()):
                raise DemoRefused(f"{out} exists and is not a demo folder; refusing to delete it")
        else:
            made = marker.read_text().split("HEAD ")[-1].strip()
            pub = out / "publication"
            if pub.exists() and _demo_head(pub) != made:
                raise DemoRefused(
                    f"{pub} has changes the demo did not make (commits after {made[:12] or 'the demo'}, or "
                    "uncommitted files); refusing to delete them. Move the folder away, or build the demo "
                    "elsewhere: make demo DEMO=build/demo2"
                )
        shutil.rmtree(out)
    shutil.rmtree(private_dir(out), ignore_errors=True)
    out.mkdir(parents=True)
    (out / MARKER).write_text("built by cpl-publisher demo; safe to delete\n")


class DemoRefused(UsageError, FileExistsError):
    """The demo would overwrite work it did not make."""


def submit(
    pub: Path,
    sub_id: str,
    rows: list[tuple[str, ...]],
    signers: list[Party],
    request: dict[str, object] | None = None,
    tamper: bool = False,
) -> Path:
    """Write a submission folder: the CSV, its signatures (one file) and request.json."""
    folder = pub / publication.INBOX / sub_id
    folder.mkdir(parents=True)
    sheet = (HEADER + "\n" + "".join(",".join(r) + "\n" for r in rows)).encode()
    (folder / "submission.csv").write_bytes(sheet + (b"\n" if tamper else b""))
    (folder / "signatures.p7s").write_bytes(sign_detached(sheet, signers))
    body = request or {"submitter_ref": f"REF-{sub_id}", "panel_ref": f"PANEL-{sub_id}"}
    (folder / "request.json").write_text(json.dumps(body))
    return folder


def _row(org: Party, model: str, hw: str, fw: str, device: str, smets: str, label: str) -> tuple[str, ...]:
    return (org.org_id, org.name.replace("&", "and"), model, hw, fw, device, smets, image_hash(label))


@dataclasses.dataclass
class Witness:
    """A running ``cpl-verify witness serve``: its policy name, key, URL and process."""

    name: str
    verifier: Verifier
    url: str
    process: subprocess.Popen[bytes]


def start_witness(
    name: str, key_name: str, folder: Path, log: Verifier, port: int = 0, timeout: float = 30.0
) -> Witness:
    """Start a witness of ``log`` on 127.0.0.1 (``port``; 0: any free one) with its key and state in
    ``folder`` (created on first use); returns once it listens."""
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "witness.key"
    if not key_file.exists():
        key_file.write_text(Cosigner.generate(key_name).skey + "\n")
        key_file.chmod(0o600)
    argv = [sys.executable, "-m", "verifier.cpl_verify", "witness", "serve", "--key", str(key_file)]
    argv += ["--state", str(folder / "state"), "--listen", f"127.0.0.1:{port}", "--log", log.vkey, "--quiet"]
    return spawn_witness(argv, name, timeout)


def spawn_witness(argv: list[str], name: str, timeout: float = 30.0, cwd: Path | None = None) -> Witness:
    """Run a witness process that prints ``listening on URL as VKEY`` first, as ``cpl-verify witness serve``
    does; returns once it listens."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    assert process.stdout is not None  # noqa: S101 - stdout=PIPE
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        line = process.stdout.readline().decode() if sel.select(timeout) else ""
    if not line.startswith("listening on "):
        process.kill()
        _, err = process.communicate()
        raise UsageError(f"the witness {name} did not start: {err.decode(errors='replace').strip() or line}")
    url, vkey = line.split()[2], line.split()[4]
    return Witness(name, Verifier.from_vkey(vkey), url.rstrip("/"), process)


def stop_witness(witness: Witness) -> None:
    """Stop a witness started by ``start_witness`` (SIGTERM, then SIGKILL after 10 s)."""
    witness.process.terminate()
    try:
        witness.process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        witness.process.kill()
        witness.process.communicate()


@contextlib.contextmanager
def demo_witnesses(folder: Path, log: Verifier) -> Iterator[list[Witness]]:
    """The demo's two witnesses, running for the duration of the ``with`` block."""
    running: list[Witness] = []
    try:
        for name, key_name in DEMO_WITNESSES:
            running.append(start_witness(name, key_name, folder / name, log))
        yield running
    finally:
        for w in running:
            stop_witness(w)


def witnessing_table(witnesses: list[Witness]) -> str:
    """The ``[witnessing]`` table asking ``witnesses`` to cosign, all of them required."""
    lines = [f"witness {w.name} {w.verifier.vkey} {w.url}" for w in witnesses]
    lines += [f"group everyone all {' '.join(w.name for w in witnesses)}", "quorum everyone"]
    policy = "".join(f"  {line}\n" for line in lines)
    return f'\n[witnessing]\nbelow_quorum = "refuse"\ntimeout_seconds = 10\npolicy = """\n{policy}"""\n'


def trust_of(config: Config) -> dict[str, object]:
    """The trust file a consumer pins for this publication (``cpl-verify --trust``), written by the verifier's
    own ``Trust``: the log's published key, the root, each issuing CA with its PEM (so a manufacturer's
    ``check-submission`` can build chains without the site), and the witness policy (without the witnesses'
    submission URLs, which only the log uses)."""
    pki = config.root / publication.PKI_DIR
    trust = Trust(
        site=DEMO_SITE,
        origin=config.origin,
        verifiers=[read_vkey(config.root / publication.LOG_DIR)],
        roots=[CertPin.of("iki-root", publication.load_certificate(pki / "iki-root.pem"))],
        crl_issuers=[
            CertPin.of(i.name, publication.load_certificate(pki / f"{i.name}.pem"))
            for i in config.issuers
            if not i.is_root
        ],
        eku=config.profile.extended_key_usage,
    )
    if config.witnessing is not None:
        p = config.witnessing.policy
        witnesses = tuple(PolicyWitness(w.name, w.verifier) for w in p.witnesses)
        trust.set_policy(Policy(((trust.verifiers[0], None),), witnesses, p.groups, p.quorum), "the demo")
    return trust.to_json()


def build(out: Path, hsm: bool = False) -> dict[str, object]:
    """Build the demo publication under ``out``; return what was made.

    ``out/publication`` is the published git repository. The CA and log keys
    and the organisations' keys are in ``private_dir(out)``, never published;
    with ``hsm``, the CA and log keys are made inside a fresh SoftHSM2 token in
    ``out/token`` instead (non-extractable), and the organisations' keys,
    which are not the DCC's, are files in ``out/parties``.
    """
    _fresh_dir(out)
    pub = out / "publication"
    if hsm:
        token = new_softhsm_token(out / "token")
        org_dir = out / "parties"
        keys = str(token.uri)
        scaffold.init_publication(pub, None, DEMO_SITE, DEMO_ORIGIN, token=token)
    else:
        org_dir = private_dir(out) / "certs"
        keys = str(private_dir(out))
        scaffold.init_publication(pub, private_dir(out) / "keys", DEMO_SITE, DEMO_ORIGIN)
    init_repository(pub)
    with demo_witnesses(private_dir(out) / "witnesses", read_vkey(pub / publication.LOG_DIR)) as witnesses:
        with (pub / publication.CONFIG_NAME).open("a") as f:
            f.write(witnessing_table(witnesses))
        info = _build(out, pub, org_dir)
    info["keys"] = keys
    if hsm:
        info["token"] = _token_info(out / "token")
    return info


def _token_info(folder: Path) -> dict[str, str]:
    conf, pin = (folder / "softhsm2.conf").resolve(), (folder / "user-pin").resolve()
    return {
        "softhsm2_conf": str(conf),
        "pin_file": str(pin),
        "show_slots": f"SOFTHSM2_CONF={conf} softhsm2-util --show-slots",
        "list_objects": f"SOFTHSM2_CONF={conf} pkcs11-tool --module {softhsm_module()} --token-label {DEMO_SLOT_LABEL} "
        f'--login --pin "$(cat {pin})" --list-objects',
    }


def _build(out: Path, pub: Path, org_dir: Path) -> dict[str, object]:
    config = load_config(pub)
    now = publication.now_utc()
    orgs = {o[0]: issue_party(config, o[1], o[0], o[2], now, folder=org_dir) for o in _ORGANISATIONS}
    acme, bright, cobalt = orgs["1001"], orgs["1002"], orgs["1003"]
    north, south, dcc = orgs["2001"], orgs["2002"], orgs["9001"]
    publish(config, now)  # first commit: CRLs, logged as crl/v1 entries

    # Round 1: twenty good device submissions, SMETS1 and comms hubs via the DCC, and bad ones.
    for n in range(20):
        mfr = (acme, bright, cobalt)[n % 3]
        supplier = (north, south)[n % 2]
        device = ("ESME", "GSME", "PPMID", "IHD")[n % 4]
        rows = [
            _row(mfr, f"{device}-{100 + n}", "1.0", f"2.{k}", device, "SMETS2", f"{mfr.org_id}-{n}-{k}")
            for k in range(1 + n % 3)
        ]
        submit(pub, f"S{n + 1:03d}", rows, [mfr, supplier])
    submit(pub, "S021", [_row(acme, "LEGACY-E1", "3", "7.1", "ESME", "SMETS1", "smets1-a")], [acme, dcc])
    submit(pub, "S022", [_row(bright, "LEGACY-G2", "1", "4.0", "GSME", "SMETS1", "smets1-b")], [bright, dcc])
    submit(pub, "S023", [_row(acme, "CH-100", "2.0", "1.0", "CHF", "SMETS2", "chf-a")], [acme, dcc])
    submit(pub, "S024", [_row(acme, "CH-100-GPF", "2.0", "1.0", "GPF", "SMETS2", "gpf-a")], [acme, dcc])
    # Rejected: tampered after signing; no endorsement; SMETS1 endorsed by a supplier;
    # signed by another manufacturer; a hash that is not a SHA-256.
    submit(pub, "X001", [_row(acme, "ESME-900", "1.0", "1.0", "ESME", "SMETS2", "x1")], [acme, north], tamper=True)
    submit(pub, "X002", [_row(acme, "ESME-901", "1.0", "1.0", "ESME", "SMETS2", "x2")], [acme])
    submit(pub, "X003", [_row(acme, "LEGACY-E9", "1", "1", "ESME", "SMETS1", "x3")], [acme, north])
    submit(pub, "X004", [_row(acme, "ESME-902", "1.0", "1.0", "ESME", "SMETS2", "x4")], [bright, north])
    bad = (*_row(acme, "ESME-903", "1.0", "1.0", "ESME", "SMETS2", "x5")[:7], "abc123")
    submit(pub, "X005", [bad], [acme, north])
    first = publish(config, now)

    # Two revocations: a superseded supplier certificate and a compromised manufacturer key.
    operations.revoke(config, "ica", south.cert.serial_number, "superseded", ref="DEMO-REV-1")
    operations.revoke(
        config, "ica", cobalt.cert.serial_number, "keyCompromise", now - dt.timedelta(days=1), "DEMO-REV-2"
    )

    # Round 2: a replacement after an investigation, and a submission signed with the revoked key.
    replaced = first.intake.accepted["S001"][0]
    submit(
        pub,
        "S025",
        [_row(acme, "ESME-100", "1.0", "2.0", "ESME", "SMETS2", "1001-0-0-fixed")],
        [acme, north],
        {
            "submitter_ref": "REF-S025",
            "panel_ref": "PANEL-S025",
            "replacements": [{"replaces_index": replaced, "investigation_ref": "INV-2026-007"}],
        },
    )
    submit(pub, "X006", [_row(cobalt, "PPMID-777", "1.0", "1.0", "PPMID", "SMETS2", "x6")], [cobalt, north])
    second = publish(config, now + dt.timedelta(seconds=1))

    trust = trust_of(config)
    (out / "trust.json").write_text(json.dumps(trust, indent=1) + "\n")
    samples = write_sample_firmware(out / "firmware")
    (out / MARKER).write_text(
        f"built by cpl-publisher demo; safe to delete while the publication is at HEAD {_demo_head(pub)}\n"
    )
    return {
        "publication": str(pub),
        "log": str(pub / publication.LOG_DIR),
        "vkey": trust["log"]["vkey"],  # type: ignore[index]
        "size": second.size,
        "root": second.root,
        "accepted": sorted([*first.intake.accepted, *second.intake.accepted]),
        "rejected": sorted([*first.intake.rejected, *second.intake.rejected]),
        "root_sha256": trust["iki_roots"][0]["sha256"],  # type: ignore[index]
        "trust": str(out / "trust.json"),
        "sample_model_key": model_lookup_key("1001", "ESME-100", "1.0", "2.0"),
        "witnesses": second.witnessing.to_json() if second.witnessing else None,
        "firmware": [str(p) for p in samples],
    }


def _witness_lines(report: object) -> list[str]:
    if not isinstance(report, dict):
        return []
    return [f"  cosigned by witness {c['name']} at {c['time']}" for c in report.get("cosigned", [])]


def _token_lines(token: object) -> list[str]:
    if not isinstance(token, dict):
        return []
    return [
        "  list the token's slots and objects (every CA key and the log key; none can be extracted):",
        f"    {token['show_slots']}",
        f"    {token['list_objects']}",
        f"  to run the publisher on it: export SOFTHSM2_CONF={token['softhsm2_conf']}",
    ]


def describe(info: dict[str, object]) -> str:
    """Human-readable summary: where the files are and how to look at them."""
    pub = info["publication"]
    return "\n".join(
        [
            f"Demo publication (a git repository): {pub}",
            f"  log: {info['size']} entries, root {info['root']}",
            f"  accepted submissions: {len(info['accepted'])}, rejected: {len(info['rejected'])}"  # type: ignore[arg-type]
            f" (reports in {pub}/inbox/*/rejection.txt)",
            f"  trust file for the verifier: {info['trust']} (it requires both witnesses' cosignatures)",
            *_witness_lines(info.get("witnesses")),
            f"  the publisher's private keys: {info['keys']} "
            + (
                "(inside the SoftHSM2 token, non-extractable)"
                if info.get("token")
                else "(outside the publication and any git work tree)"
            ),
            *_token_lines(info.get("token")),
            "Try the verifier on the sample firmware images (current, replaced, never submitted):",
            *(
                f"  .venv/bin/cpl-verify --trust {info['trust']} --site {Path(str(info['trust'])).parent / 'site'} "
                f"inclusion --file {p}"
                for p in info.get("firmware", [])  # type: ignore[attr-defined]
            ),
            "Verify the log and its history:",
            f"  .venv/bin/cpl-publisher log verify {info['log']} --vkey '{info['vkey']}'",
            f"  .venv/bin/cpl-publisher history verify --dir {pub} --vkey '{info['vkey']}'",
        ]
    )
