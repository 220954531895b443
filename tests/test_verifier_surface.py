"""The verifier's declared surface: ``__all__`` names its library half, the publisher and the benchmarks import
nothing else from it, and the library half (above the "LIBRARY ABOVE, TOOL BELOW" line) never uses a name that
only the command-line tool half defines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from verifier import cpl_verify

ROOT = Path(__file__).resolve().parents[1]
VERIFIER = ROOT / "verifier" / "cpl_verify.py"
MODULE = "verifier.cpl_verify"
MARKER = "LIBRARY ABOVE, TOOL BELOW"
IMPORTERS = ("publisher", "bench")


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def imported_names(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Every name a module takes from the verifier, with its line: ``from verifier.cpl_verify import X [as Y]``,
    and ``m.X`` wherever ``m`` is the verifier module (``import verifier.cpl_verify [as m]``,
    ``from verifier import cpl_verify [as m]``)."""
    modules: set[str] = set()  # the dotted names the verifier module is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == MODULE:
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "verifier":
            modules.update(a.asname or a.name for a in node.names if a.name == "cpl_verify")
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name == MODULE)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _dotted(node.value) in modules:
            yield node.attr, node.lineno


def test_imported_names_are_found_in_every_form() -> None:
    source = (
        "from verifier.cpl_verify import A, B as b\n"
        "import verifier.cpl_verify\n"
        "import verifier.cpl_verify as v\n"
        "from verifier import cpl_verify as cv\n"
        "from verifier import cpl_verify\n"
        "x = (verifier.cpl_verify.C, v.D, cv.E, cpl_verify.F, other.G)\n"
    )
    assert sorted(name for name, _ in imported_names(ast.parse(source))) == ["A", "B", "C", "D", "E", "F"]


def test_the_publisher_and_benchmarks_import_only_the_declared_surface() -> None:
    declared = set(cpl_verify.__all__)
    undeclared = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for top in IMPORTERS
        for path in sorted((ROOT / top).rglob("*.py"))
        for name, line in imported_names(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if name not in declared
    ]
    assert not undeclared, f"imported from {MODULE} but not in its __all__: {undeclared}"


def test_every_declared_name_exists_once() -> None:
    names = list(cpl_verify.__all__)
    assert len(names) == len(set(names)), "a name appears twice in __all__"
    missing = [n for n in names if not hasattr(cpl_verify, n)]
    assert not missing, f"__all__ names what the verifier does not define: {missing}"


# -- the library half and the tool half ------------------------------------------------------------------


def marker_line(source: str) -> int:
    lines = [i for i, line in enumerate(source.splitlines(), 1) if line.startswith("#") and MARKER in line]
    assert len(lines) == 1, f"expected one '{MARKER}' line in {VERIFIER.name}, found {len(lines)}"
    return lines[0]


def bound_names(node: ast.stmt) -> set[str]:
    """The module-level names a top-level statement binds (definitions, assignments, imports), looking into
    the blocks of ``if``, ``try``, ``for`` and ``with`` but not into expressions (a comprehension's names are
    its own)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        targets = [node.target]
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
    out = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    for field in ("body", "orelse", "finalbody", "handlers"):
        for child in getattr(node, field, []):
            if isinstance(child, ast.ExceptHandler):
                out.update(n for s in child.body for n in bound_names(s))
                if child.name:
                    out.add(child.name)
            else:
                out.update(bound_names(child))
    return out


def _locals(scope: ast.AST) -> set[str]:
    """The names a function (or lambda) binds in its own scope: its parameters, and what its body assigns,
    imports or defines (not what nested functions, lambdas or comprehensions bind)."""
    names: set[str] = set()
    args = getattr(scope, "args", None)
    if isinstance(args, ast.arguments):
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        names.update(a.arg for a in every if a is not None)
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
            continue  # its body is its own scope
        if isinstance(n, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        todo.extend(ast.iter_child_nodes(n))
    return names


def global_references(node: ast.AST, enclosing: tuple[set[str], ...] = ()) -> Iterator[tuple[str, int]]:
    """Every name ``node`` reads that no enclosing function binds: a module-level name (or a builtin)."""
    scopes = enclosing
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        scopes = (*enclosing, _locals(node))
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        targets = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        scopes = (*enclosing, targets)
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and not any(node.id in s for s in scopes):
        yield node.id, node.lineno
    for child in ast.iter_child_nodes(node):
        yield from global_references(child, scopes)


def halves() -> tuple[list[ast.stmt], list[ast.stmt]]:
    source = VERIFIER.read_text(encoding="utf-8")
    line = marker_line(source)
    body = ast.parse(source).body
    return [n for n in body if n.lineno < line], [n for n in body if n.lineno > line]


def test_the_library_half_uses_nothing_of_the_tool_half() -> None:
    library, tool = halves()
    assert library and tool
    above = {name for node in library for name in bound_names(node)}
    tool_only = {name for node in tool for name in bound_names(node)} - above
    assert {"main", "Context", "Auditor"} <= tool_only  # the line is where it should be
    wrong = sorted(
        f"line {line}: {name}" for node in library for name, line in global_references(node) if name in tool_only
    )
    assert not wrong, f"the library half uses names defined only in the tool half: {wrong}"


def test_the_reference_walk_sees_through_local_names() -> None:
    source = (
        "def f(a):\n"
        "    b = a\n"
        "    return [c for c in b] + [Tool, lambda d: d, b]\n"
        "class K:\n"
        "    def m(self):\n"
        "        return self, K, Other\n"
    )
    assert sorted(name for name, _ in global_references(ast.parse(source))) == ["K", "Other", "Tool"]


def test_the_declared_surface_is_the_library_half() -> None:
    """``__all__`` names every public name of the library half and nothing of the tool's: what is above the
    line and has no leading underscore is the verifier's API."""
    library, _ = halves()
    public = {n for node in library for n in bound_names(node) if not n.startswith("_")}
    imported = {
        n for node in library if isinstance(node, (ast.Import, ast.ImportFrom, ast.Try)) for n in bound_names(node)
    }
    public -= imported  # the modules and names the verifier itself imports
    declared = set(cpl_verify.__all__)
    assert not declared - public, f"__all__ names what is not a public name of the library half: {declared - public}"
    assert not public - declared, f"public names of the library half missing from __all__: {sorted(public - declared)}"
