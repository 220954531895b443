"""The ``Storage`` contract (``publisher.storage``), as the local folder keeps it: what a later object store
must keep too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from publisher.storage import ImmutableObjectChanged, LocalStorage, ObjectTooLarge


def test_objects_are_visible_only_once_committed(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    with store.writer() as w:
        w.add("log/tile/0/000", b"a" * 32)
        assert store.read("log/tile/0/000") is None  # not before commit
        w.commit()
    assert store.read("log/tile/0/000") == b"a" * 32
    assert store.read("log/tile/0/001") is None


def test_a_writer_left_without_commit_writes_nothing_and_leaves_no_temporaries(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    with pytest.raises(RuntimeError), store.writer() as w:
        w.add("log/checkpoint", b"new")
        raise RuntimeError("crash before commit")
    assert store.read("log/checkpoint") is None
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_an_immutable_object_is_written_once(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.write({"log/evidence/ab": b"signed bytes"}, immutable=True)
    store.write({"log/evidence/ab": b"signed bytes"}, immutable=True)  # the same bytes again: harmless
    with (
        pytest.raises(ImmutableObjectChanged, match="already exists with different contents"),
        store.writer(immutable=True) as w,
    ):
        w.add("log/evidence/cd", b"other")
        w.add("log/evidence/ab", b"rewritten")
    assert store.read("log/evidence/ab") == b"signed bytes"
    assert store.read("log/evidence/cd") is None  # refused before anything was written


def test_a_mutable_object_is_replaced_whole(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.write({"log/checkpoint": b"size 1"})
    store.write({"log/checkpoint": b"size 2, longer"})
    assert store.read("log/checkpoint") == b"size 2, longer"


def test_a_writer_holds_a_path_once(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    with pytest.raises(ValueError, match="added twice"), store.writer(immutable=True) as w:
        w.add("log/tile/0/000", b"a")
        w.add("log/tile/0/000", b"b")
    assert store.read("log/tile/0/000") is None


def test_reads_are_whole_within_their_cap(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.write({"log/tile/entries/000": b"x" * 100})
    assert store.read("log/tile/entries/000", 100) == b"x" * 100
    with pytest.raises(ObjectTooLarge, match="larger than 99 bytes"):
        store.read("log/tile/entries/000", 99)


def test_a_failed_write_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStorage(tmp_path)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"), store.writer() as w:
        w.add("log/checkpoint", b"new")
        w.commit()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
