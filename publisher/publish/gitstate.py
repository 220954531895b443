"""Committing the publication's state with git (GitPython): every change to it is one commit."""

from __future__ import annotations

import tempfile
from pathlib import Path

import git

DEFAULT_IDENTITY = ("cpl-publisher", "cpl-publisher@localhost")


def repository(root: Path) -> git.Repo | None:
    """The publication's repository, if the publication is the root of one."""
    try:
        repo = git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    if repo.working_tree_dir is None or Path(repo.working_tree_dir).resolve() != root.resolve():
        return None
    return repo


def commit(repo: git.Repo, paths: list[str], message: str) -> str | None:
    """Stage ``paths`` (additions, changes, removals) and commit them; returns the commit id.

    Returns None when they hold nothing to commit (a redo of a change that was committed already).
    """
    tree = Path(str(repo.working_tree_dir))
    tracked = repo.git.ls_files("--", *paths).splitlines()
    # A path counts if it exists or git tracks something under it (then its removal is staged).
    present = [p for p in paths if (tree / p).exists() or any(f == p or f.startswith(f"{p}/") for f in tracked)]
    if present:
        repo.git.add("--all", "--", *present)
    if repo.head.is_valid() and not repo.git.diff("--cached", "--name-only"):
        return None
    reader = repo.config_reader()
    name = reader.get_value("user", "name", DEFAULT_IDENTITY[0])
    email = reader.get_value("user", "email", DEFAULT_IDENTITY[1])
    # The message goes through a file, not argv: a publish of thousands of submissions names them all.
    with tempfile.TemporaryFile() as text:
        text.write(message.encode())
        text.seek(0)
        repo.git.execute(
            ["git", "-c", f"user.name={name}", "-c", f"user.email={email}", "commit", "-q", "-F", "-"], istream=text
        )
    return str(repo.head.commit.hexsha)


def record(root: Path, paths: list[str], message: str) -> str | None:
    """Commit an operator's change (revocation, issuance) when the publication is under git.

    Does nothing before the publication's first commit: that one takes everything.
    """
    repo = repository(root)
    if repo is None or not repo.head.is_valid():
        return None
    return commit(repo, paths, message)
