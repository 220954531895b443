"""The ``Storage`` contract (``publisher.storage``), as the local folder keeps it: what a later object store
must keep too."""

from __future__ import annotations

from pathlib import Path

import pytest

from publisher.storage import ImmutableObjectChanged, LocalStorage


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
