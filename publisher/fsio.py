"""Durable file writes and the single-writer lock (the only I/O primitives the log uses)."""

from __future__ import annotations

import fcntl
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from publisher.errors import UsageError

TEMP_MARK = ".tmp-"
# fsync releases the GIL; on ext4 parallel fsyncs share journal commits, so a
# small pool makes bulk appends several times faster than one fsync at a time.
_FSYNC_THREADS = 8


class LockHeld(UsageError):
    """Another process holds the writer lock."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path, created: set[Path]) -> None:
    """mkdir -p that records every directory it created (their parents need an fsync)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        created.add(d)


def _write_temp(target: Path, data: bytes) -> Path:
    tmp = target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:  # e.g. a full disk: leave no temporary behind
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


class FileBatch:
    """Durable multi-file write: each file is either old or new after a crash.

    Each file goes to a temporary name in its directory and is fsynced by a
    background thread (so the caller can compute the next file meanwhile);
    ``commit`` renames them all over their targets and fsyncs the directories,
    so the renames are durable when it returns. Leaving the ``with`` block
    without committing removes the temporaries.
    """

    def __init__(self, root: Path, threads: int = _FSYNC_THREADS) -> None:
        self.root = root
        self._created: set[Path] = set()
        self._pending: list[tuple[Path, Future[Path]]] = []
        self._pool = ThreadPoolExecutor(threads) if threads else None

    def add(self, rel: str, data: bytes) -> None:
        """Start writing ``data`` to the temporary of ``root/rel``."""
        target = self.root / rel
        _make_dirs(target.parent, self._created)
        if self._pool is None:
            done: Future[Path] = Future()
            done.set_result(_write_temp(target, data))
            self._pending.append((target, done))
        else:
            self._pending.append((target, self._pool.submit(_write_temp, target, data)))

    def commit(self) -> None:
        """Wait for every temporary, rename them into place, fsync the directories."""
        temps = [(target, future.result()) for target, future in self._pending]
        for target, tmp in temps:
            os.replace(tmp, target)
        dirs = {t.parent for t, _ in temps} | {d.parent for d in self._created}
        for d in sorted(dirs):
            fsync_dir(d)
        self._pending = []

    def __enter__(self) -> FileBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for _target, future in self._pending:  # not committed: leave no temporaries behind
            if future.done() and future.exception() is None:
                future.result().unlink(missing_ok=True)


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Durably write several files at once (see ``FileBatch``)."""
    with FileBatch(root, threads=_FSYNC_THREADS if len(files) > 2 else 0) as batch:
        for rel, data in files.items():
            batch.add(rel, data)
        batch.commit()


def write_file(path: Path, data: bytes) -> None:
    """Durably replace one file (see ``write_files``)."""
    write_files(path.parent, {path.name: data})


def remove_files(root: Path, rel_paths: list[str], keep: bool = False) -> None:
    """Remove files and the temporaries a crash may have left next to them, durably.

    With ``keep=True`` only the stray temporaries go and the files stay.
    """
    dirs = set()
    for rel in rel_paths:
        target = root / rel
        if target.parent.is_dir():
            for stray in target.parent.glob(f".{target.name}{TEMP_MARK}*"):
                stray.unlink()
                dirs.add(target.parent)
        if not keep and target.exists():
            target.unlink()
            dirs.add(target.parent)
    for d in sorted(dirs):
        fsync_dir(d)


def remove_temporaries(root: Path, skip: tuple[str, ...] = (".git",)) -> int:
    """Remove every temporary a crashed write left under ``root`` (not under ``skip``); returns the count.

    Only the caller holding the writer lock may call this: a live writer's temporaries look the same.
    """
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        stray = [n for n in filenames if n.startswith(".") and TEMP_MARK in n]
        for name in stray:
            os.unlink(os.path.join(dirpath, name))
        if stray:
            fsync_dir(Path(dirpath))
            removed += len(stray)
    return removed


class WriterLock:
    """An exclusive, non-blocking ``flock`` on a lock file, released on close or process death."""

    def __init__(self, path: Path, what: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            raise LockHeld(f"{what} is locked by another writer ({path}); try again when it has finished") from exc

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
