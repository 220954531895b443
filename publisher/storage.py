"""Where the publication's public files are kept: the ``Storage`` contract and its local implementation.

The log's tiles, bundles, checkpoint and key, and the approved submissions' evidence, are written
through it; an object store implements the same contract (a later issue). Private state (the log's
commit point and journal, the writer's lock) stays on the local disk and does not go through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

from publisher import fsio
from publisher.errors import VerificationFailed


class ImmutableObjectChanged(VerificationFailed):
    """An immutable object exists with other bytes: published data would be rewritten."""


class ObjectTooLarge(VerificationFailed):
    """An object is larger than its reader allows."""


class Writer(Protocol):
    """One batch of objects, from ``Storage.writer``: ``add`` each, then ``commit``."""

    def add(self, path: str, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def __enter__(self) -> Writer: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Storage(Protocol):
    """The publication's public objects, by path (``log/tile/0/000``, ``log/evidence/<sha256>``, ...).

    The durability contract, which every implementation keeps:

    * ``read(path, cap)`` returns the whole object or None; never a part of one. An object larger than
      ``cap`` raises ``ObjectTooLarge`` (a ``Storage`` is a ``TileSource`` the log engine reads).
    * Objects added to a ``writer`` are durable when its ``commit`` returns: a crash after that cannot lose
      them. A crash before it leaves each object as it was or as it was to be, never partly written; which
      ones changed is not promised (callers that need an order commit one batch before the next: tiles, then
      the checkpoint that covers them). Leaving the writer without ``commit`` writes nothing.
    * In an ``immutable`` writer, adding an object that exists with other bytes raises
      ``ImmutableObjectChanged`` before anything is written; adding the same bytes again is harmless.
    * A writer holds a path once: adding it again raises ``ValueError``.
    * The contract holds for one writer at a time: the publication's writer lock (``publish.transaction``,
      and the log's own lock) guarantees that, not the storage.
    """

    def read(self, path: str, cap: int | None = None) -> bytes | None: ...

    def writer(self, immutable: bool = False) -> Writer: ...

    def write(self, objects: Mapping[str, bytes], immutable: bool = False) -> None:
        """One writer's worth: every object added, then committed."""
        ...


@dataclass
class LocalWriter:
    """A batch of files under a folder (``fsio.FileBatch``: fsynced in background threads, renamed into
    place, directories fsynced at ``commit``)."""

    storage: LocalStorage
    immutable: bool
    _batch: fsio.FileBatch = field(init=False)
    _paths: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._batch = fsio.FileBatch(self.storage.root)

    def add(self, path: str, data: bytes) -> None:
        if path in self._paths:
            raise ValueError(f"{path} is added twice to one write")
        self._paths.add(path)
        if self.immutable:
            existing = self.storage.read(path)
            if existing is not None and existing != data:
                raise ImmutableObjectChanged(
                    f"{self.storage.root / path}: already exists with different contents; refusing to rewrite it"
                )
        self._batch.add(path, data)

    def commit(self) -> None:
        self._batch.commit()

    def __enter__(self) -> LocalWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._batch.__exit__(kind, exc, tb)


@dataclass(frozen=True)
class LocalStorage:
    """``Storage`` in a local folder (POSIX: write to a temporary, fsync, rename, fsync the directory)."""

    root: Path

    def read(self, path: str, cap: int | None = None) -> bytes | None:
        try:
            with (self.root / path).open("rb") as f:
                data = f.read() if cap is None else f.read(cap + 1)
        except FileNotFoundError:
            return None
        if cap is not None and len(data) > cap:
            raise ObjectTooLarge(f"{self.root / path} is larger than {cap} bytes")
        return data

    def writer(self, immutable: bool = False) -> LocalWriter:
        return LocalWriter(self, immutable)

    def write(self, objects: Mapping[str, bytes], immutable: bool = False) -> None:
        """One writer's worth: every object added, then committed."""
        with self.writer(immutable) as w:
            for path, data in objects.items():
                w.add(path, data)
            w.commit()

    def __str__(self) -> str:
        return str(self.root)
