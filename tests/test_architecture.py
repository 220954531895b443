"""The import rules that keep one owner for each thing (README "Architecture"): walked over every
module's imports, module level and nested, so a new import that breaks a rule fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "publisher"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement in ``path``."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the rules below read absolute ones)"
            assert node.module is not None
            out.append((node.module, [a.name for a in node.names]))
    return out


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def targets(module: str) -> set[str]:
    """Every module ``module`` imports (a name taken from a package counts as that package's module too)."""
    out = set()
    for imported, names in MODULES[module]:
        out.add(imported)
        out.update(f"{imported}.{n}" for n in names)
    return out


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(scope: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {
        m: sorted(t for t in targets(m) if under(t, *forbidden) and (t in MODULES or not t.startswith("publisher")))
        for m in MODULES
        if under(m, scope)
    }
    return {m: t for m, t in found.items() if t}


def test_the_iki_side_imports_neither_git_nor_the_log_engine_nor_the_publish_job() -> None:
    assert offenders("publisher.pki", ("git", "publisher.tlog", "publisher.publish")) == {}


def test_configuration_imports_no_domain_package() -> None:
    domain = ("publisher.pki", "publisher.intake", "publisher.tlog", "publisher.publish", "publisher.site")
    assert offenders("publisher.config", (*domain, "publisher.publication", "publisher.cli")) == {}


def test_the_site_renderer_does_not_import_intake() -> None:
    assert offenders("publisher.site", ("publisher.intake",)) == {}


def test_the_publish_job_does_not_import_the_site_renderer() -> None:
    assert offenders("publisher.publish", ("publisher.site",)) == {}


def test_only_the_publish_job_the_cli_and_key_custody_touch_git() -> None:
    touching = {m for m in MODULES if any(under(t, "git") for t in targets(m))}
    allowed = {m for m in touching if under(m, "publisher.publish", "publisher.cli") or m == "publisher.keys"}
    assert touching == allowed


def test_only_the_deployer_and_its_command_talk_to_an_object_store() -> None:
    touching = {m for m in MODULES if any(under(t, "boto3", "botocore", "mypy_boto3_s3") for t in targets(m))}
    assert touching == {"publisher.deploy", "publisher.cli.deploy"}


def test_only_the_hsm_module_talks_to_a_pkcs11_token() -> None:
    """One owner of the token: the rest of the publisher signs through ``keys.IssuerKey`` and note ``Signer``."""
    touching = {m for m in MODULES if any(under(t, "pkcs11") for t in targets(m))}
    assert touching == {"publisher.hsm"}


def test_the_deployer_reads_a_built_site_not_the_publication() -> None:
    """Data flows one way: publish -> site -> deploy; the deployer neither publishes nor takes submissions."""
    assert offenders("publisher.deploy", ("git", "publisher.publish", "publisher.intake", "publisher.cli")) == {}
    assert offenders("publisher.publish", ("publisher.deploy",)) == {}
    assert offenders("publisher.site", ("publisher.deploy",)) == {}


def test_the_log_engine_knows_nothing_of_what_it_logs() -> None:
    domain = ("publisher.pki", "publisher.intake", "publisher.publish", "publisher.site", "publisher.cli")
    assert offenders("publisher.tlog", domain) == {}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_name(module: str) -> None:
    private = [
        f"{imported}.{n}"
        for imported, names in MODULES[module]
        if imported.startswith(("publisher", "verifier"))
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert private == []


def test_the_rules_see_the_whole_package() -> None:
    assert {"publisher.pki.authority", "publisher.publication", "publisher.tlog.engine", "publisher.cli"} <= set(
        MODULES
    )
    # The walk resolves names taken from a package, so a rule cannot be dodged by importing a submodule by name.
    assert "publisher.publish.transaction" in targets("publisher.publish.operations")


def test_loading_the_iki_side_loads_neither_git_nor_the_log_engine_nor_the_publish_job() -> None:
    """The rule at run time, through every import it makes however indirect (key custody imports git only
    when it checks a key file, the layout names the log without loading it)."""
    iki = sorted(m for m in MODULES if under(m, "publisher.pki"))
    code = f"import sys; import {', '.join(iki)}; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    assert [m for m in modules if under(m, "git", "publisher.tlog", "publisher.publish")] == []
    assert "publisher.pki.authority" in modules
