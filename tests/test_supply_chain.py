"""The signing job's supply chain (README, "The lock files and pinned actions"): every locked package is
hash-pinned and installed with ``--require-hashes``, the locks hold what their ``.in`` files ask for, every
action is pinned by commit with its version in a comment, and zizmor's default policy passes. Hermetic: it
reads files and ``.venv`` and runs zizmor offline; nothing here needs the network."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from workflow_lint import BIN, lint_workflow

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAKEFILE = REPO / "Makefile"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
# Each lock and the input it is compiled from.
LOCKS = {
    RUNTIME_LOCK: REPO / "requirements.in",
    DEV_LOCK: REPO / "requirements-dev.in",
    REPO / "tests" / "old-cryptography.lock": REPO / "tests" / "old-cryptography.in",
}
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
USES = re.compile(r"^\s*(?:- )?uses:\s*(?P<ref>.*)$")
PINNED_USES = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+")


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: tuple[str, ...]


def logical_lines(path: Path) -> list[str]:
    """A requirements file's lines with comments dropped and backslash continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def read_lock(path: Path) -> dict[str, Pin]:
    """A lock as uv writes it: only ``name==version`` entries, each with its hashes."""
    pins: dict[str, Pin] = {}
    for line in logical_lines(path):
        head, *options = line.split()
        match = PIN.fullmatch(head)
        assert match, f"{path.name}: {line!r} is not a name==version pin (a lock uv writes holds nothing else)"
        assert options and all(HASH.fullmatch(o) for o in options), f"{path.name}: {head} has no --hash=sha256"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{path.name}: {name} is pinned twice"
        pins[name] = Pin(match["version"], tuple(options))
    assert pins, f"{path.name} pins nothing"
    return pins


def input_requirements(path: Path) -> list[Requirement]:
    """What an ``.in`` file asks for: its requirements, those of the files it includes with ``-r``, and for
    ``.`` (the project) the dependencies in pyproject.toml. Constraint files (``-c``) add no requirement."""
    requirements: list[Requirement] = []
    for line in logical_lines(path):
        if line.startswith("-c"):
            continue
        if line.startswith("-r"):
            requirements += input_requirements(path.parent / line.removeprefix("-r").strip())
        elif line == ".":
            project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
            requirements += [Requirement(r) for r in project["dependencies"]]
        else:
            requirements.append(Requirement(line))
    return requirements


def readme_yaml_blocks() -> list[str]:
    """Every YAML block of the README (the workflows and jobs it gives users to copy)."""
    return re.findall(r"^```yaml\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def pip_install_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if re.search(r"\bpip install\b", line)]


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda p: p.name)
def test_every_locked_package_is_pinned_with_hashes(lock: Path) -> None:
    read_lock(lock)


def test_the_dev_lock_holds_the_runtime_lock_unchanged() -> None:
    """pip's hash mode is all or nothing, and `make` installs the dev lock alone: it must hold every runtime
    package at the same version (it takes them from requirements.lock as constraints)."""
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    assert {n: dev[n].version for n in runtime if n in dev} == {n: p.version for n, p in runtime.items()}


def test_the_venv_holds_the_locked_versions() -> None:
    """What `make` installed is what the dev lock pins (rebuilt by `make` when a lock changes)."""
    wrong = {}
    for name, pin in read_lock(DEV_LOCK).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed != pin.version:
            wrong[name] = (pin.version, installed)
    assert not wrong, f"(locked, installed) differ; run `make` to reinstall: {wrong}"


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda p: p.name)
def test_every_requirement_of_the_input_is_in_its_lock_at_a_version_it_allows(lock: Path) -> None:
    """The offline half of "the lock is what uv makes of the .in file" (compiling again needs PyPI)."""
    pins = read_lock(lock)
    requirements = input_requirements(LOCKS[lock])
    assert requirements
    for r in requirements:
        name = canonicalize_name(r.name)
        assert name in pins, f"{lock.name} lacks {r.name}, which {LOCKS[lock].name} asks for"
        assert r.specifier.contains(pins[name].version, prereleases=True), f"{lock.name}: {name} {pins[name]}, not {r}"


def test_the_runtime_lock_holds_the_build_backend_pyproject_pins() -> None:
    """The project is built with --no-build-isolation, so by the setuptools of the lock: the one pinned."""
    pins = read_lock(RUNTIME_LOCK)
    build = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    for r in map(Requirement, build):
        name = canonicalize_name(r.name)
        assert name in pins and r.specifier.contains(pins[name].version), f"{r} vs {pins.get(name)}"


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda p: p.name)
def test_the_readme_gives_the_command_that_made_each_lock(lock: Path) -> None:
    """The header uv writes names its command; the README gives the same one, run with the locked uv."""
    match = re.search(r"via the following command:\n#\s+(uv pip compile .*)\n", lock.read_text(encoding="utf-8"))
    assert match, f"{lock.name} has no uv header"
    assert f".venv/bin/{match[1]}\n" in README.read_text(encoding="utf-8"), match[1]


def test_every_pip_install_of_a_lock_requires_hashes() -> None:
    """The Makefile, the workflows and the README: a lock is only ever installed with --require-hashes;
    in the Makefile and the workflows, anything else pip installs is the project, with no dependencies and
    built by the locked setuptools."""
    ours = {MAKEFILE: MAKEFILE.read_text(encoding="utf-8")} | {w: w.read_text(encoding="utf-8") for w in WORKFLOWS}
    lock_installs = 0
    for path, text in {**ours, README: README.read_text(encoding="utf-8")}.items():
        for line in pip_install_lines(text):
            if re.search(r"\s-r\s", line):
                lock_installs += 1
                # Wheels only: a source build would fetch its build dependencies with no hash checked.
                assert {"--require-hashes", "--only-binary"} <= set(line.split()), f"{path.name}: {line}"
                assert re.search(r"--only-binary :all:", line), f"{path.name}: {line}"
            elif path in ours:
                assert {"--no-deps", "--no-build-isolation"} <= set(line.split()), f"{path.name}: {line}"
    assert lock_installs >= 3  # the Makefile's and the publish workflow's two at least


def test_every_action_is_pinned_by_commit_with_its_version() -> None:
    """Every `uses:` of the workflows and of the README's YAML: owner/repo[/path]@<40 hex> # vX.Y.Z."""
    texts = {w.name: w.read_text(encoding="utf-8") for w in WORKFLOWS}
    texts |= {f"README.md YAML block {i}": block for i, block in enumerate(readme_yaml_blocks(), 1)}
    seen = 0
    for where, text in texts.items():
        for line in text.splitlines():
            if match := USES.match(line):
                seen += 1
                assert PINNED_USES.fullmatch(match["ref"].strip()), f"{where}: {line.strip()}"
    assert seen >= 10


def test_zizmor_runs_with_no_configuration_and_passes() -> None:
    """`make lint` runs zizmor with its default policy: no --config, and no configuration file where zizmor
    looks for one (the folder given, its .github child, and each parent up to the repository)."""
    [line] = [line for line in MAKEFILE.read_text(encoding="utf-8").splitlines() if "zizmor" in line]
    assert line.split() == ["$(BIN)/zizmor", "--offline", "--quiet", ".github/workflows"], line
    folder = REPO / ".github" / "workflows"
    places = [folder, folder / ".github", folder.parent, folder.parent / ".github", REPO, REPO / ".github"]
    found = [p / name for p in places for name in ("zizmor.yml", "zizmor.yaml") if (p / name).exists()]
    assert not found, f"zizmor configuration files relax its default policy: {found}"
    if not (BIN / "zizmor").exists():
        pytest.skip(f"zizmor is not installed in {BIN} (it comes with requirements-dev.lock)")
    for workflow in WORKFLOWS:
        lint_workflow(workflow, ["--no-config"])
