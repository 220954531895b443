"""Operations on a publication: one at a time, journalled, and finished by the next run after a crash.

Every command that changes a publication (``publish``, ``crl refresh``,
``revoke``, ``ca issue``) runs inside a ``session``: it takes the
publication's lock (``.publisher/lock``), finishes whatever an interrupted
operation left, journals what it is about to do in ``.publisher/journal.json``
(private, git-ignored, written durably before the first change), makes its
changes, commits them with git, and only then removes the journal.

Two kinds of operation, two kinds of recovery:

* An operator **change** (``revoke``, ``ca issue``) is known in full before
  anything is written: whole files and register lines. The journal holds all
  of it, so recovery redoes it (idempotently) and commits it: the change is
  either absent or committed, never half there.
* A **resumable** operation (``publish``, ``crl refresh``) is a sequence of
  idempotent, individually crash-safe steps. After a crash the next run of
  the same command, or of ``publish`` (which does everything ``crl refresh``
  does), skips the clean-tree check and runs the steps again; each finds
  its work done or finishes it; then everything is committed at once.

No operator action is needed after a crash, and none is safe to take: a
manual ``git restore`` of a half-done publish would discard reserved CRL
numbers and logged entries, which recovery keeps.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import git

from publisher import fsio
from publisher.errors import OperationRefused
from publisher.pki import registers
from publisher.publication import LOG_STATE, Change, public_files
from publisher.publish import gitstate

PRIVATE_DIR = ".publisher"
LOCK_FILE = f"{PRIVATE_DIR}/lock"
JOURNAL_FILE = f"{PRIVATE_DIR}/journal.json"
RESUMABLE = ("publish", "crl-refresh")
PRIVATE_PATHS = (f"/{PRIVATE_DIR}/", f"/{LOG_STATE}/")  # never committed (git exclude patterns)
# Lock files a git process killed mid-command leaves behind; with our lock held no git of ours runs.
_GIT_LOCKS = ("index.lock", "HEAD.lock")


class Session:
    """The single writer of a publication, between ``session()``'s entry and exit: a
    ``publisher.publication.Operation``."""

    def __init__(self, root: Path, op: str) -> None:
        self.root = root
        self.op = op
        self.interrupted: str | None = None  # a resumable operation this one must finish

    def _journal(self, obj: dict[str, object]) -> None:
        fsio.write_file(self.root / JOURNAL_FILE, (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode())

    def begin(self) -> None:
        """Journal that a resumable operation is under way: from here on a crash is finished by the next run."""
        self._journal({"kind": "resumable", "op": self.op})

    def clear(self) -> None:
        """The operation is complete (committed, or nothing to do): remove the journal."""
        fsio.remove_files(self.root, [JOURNAL_FILE])

    def commit(self, paths: list[str], message: str, first: bool = False) -> str | None:
        """Commit ``paths``, then clear the journal.

        Only when the publication is under git and, unless ``first``, already
        has a commit (the first publish makes the first commit, of everything).
        """
        repo = gitstate.repository(self.root)
        committed = None
        if repo is not None and (first or repo.head.is_valid()):
            committed = gitstate.commit(repo, paths, message)
        self.clear()
        return committed

    def apply(self, change: Change) -> str | None:
        """Journal ``change``, write it, commit it; a crash anywhere is redone by the next session."""
        self._journal(change.to_json())
        return _redo(self.root, change)


def _redo(root: Path, change: Change) -> str | None:
    """Make ``change`` present (idempotent) and commit it, then clear the journal."""
    if change.writes:
        public_files(root).write(change.writes)  # a redo writes the same bytes again
    for rel, line in change.appends.items():
        registers.append_line(root, rel, line, unless_last=True)
    committed = gitstate.record(root, change.paths, change.message)
    fsio.remove_files(root, [JOURNAL_FILE])
    return committed


def _remove_stale_git_locks(root: Path) -> None:
    repo = gitstate.repository(root)
    if repo is None:
        return
    git_dir = Path(repo.git_dir)
    stale = [git_dir / name for name in _GIT_LOCKS]
    with contextlib.suppress(git.GitCommandError, ValueError, TypeError):
        stale.append(git_dir / (repo.active_branch.path + ".lock"))
    for path in stale:
        path.unlink(missing_ok=True)


def _ignore_private(root: Path) -> None:
    """Keep the private folders out of git in every clone, even where the committed .gitignore lacks them."""
    repo = gitstate.repository(root)
    if repo is None:
        return
    exclude = Path(repo.git_dir) / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [p for p in PRIVATE_PATHS if p not in lines]
    if missing:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a") as f:
            f.write("".join(f"{p}\n" for p in missing))


def _recover(session: Session) -> None:
    """Finish what an interrupted operation left (see the module docstring)."""
    # Before the journal check: a git command killed outside a journaled step
    # (a status refresh takes index.lock too) leaves a lock as well.
    _remove_stale_git_locks(session.root)
    path = session.root / JOURNAL_FILE
    if not path.exists():
        return
    fsio.remove_temporaries(session.root)
    try:
        obj = json.loads(path.read_bytes())
    except ValueError:
        obj = None  # torn: written before any change was made, so there is nothing to finish
    if not isinstance(obj, dict):
        fsio.remove_files(session.root, [JOURNAL_FILE])
        return
    op = str(obj.get("op"))
    if obj.get("kind") == "change":
        try:
            change = Change.from_json(obj)
        except ValueError as exc:
            raise OperationRefused(f"{path}: {exc}") from exc
        _redo(session.root, change)
        return
    if op not in RESUMABLE:
        raise OperationRefused(f"{path}: unknown interrupted operation {op!r}")
    if session.op == op or session.op == "publish":
        session.interrupted = op
        return
    raise OperationRefused(
        f"an interrupted {op} must be finished first: run 'cpl-publisher {op.replace('-', ' ')}' "
        "(it recovers by itself; do not restore or commit its files by hand)"
    )


@contextlib.contextmanager
def session(root: Path, op: str) -> Iterator[Session]:
    """Take the publication's lock and recover; yields the ``Session`` for operation ``op``.

    Leaving with an exception keeps the journal (the next run finishes the
    operation); the lock is always released.
    """
    _ignore_private(root)
    lock = fsio.WriterLock(root / LOCK_FILE, f"publication {root}")
    try:
        s = Session(root, op)
        _recover(s)
        yield s
    finally:
        lock.close()
