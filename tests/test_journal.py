"""Journals: append-only lines, torn tails tolerated, the store indexes accepted records."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from runner import _journal
from runner._config import OutputConfig, OutputShape
from runner._errors import StorageError
from runner._journal import Journal, Store, drop_records, read_records
from runner._output import consolidate


def test_each_record_is_one_line_readable_back(tmp_path: Path) -> None:
    path = tmp_path / "j" / "results.jsonl"
    with Journal(path) as journal:
        journal.append({"id": "a", "status": "ok", "key": "k1"})
        journal.append({"id": "b", "status": "failed", "key": "k2", "text": "line\nbreak"})
    assert [r["id"] for _, r in read_records(path)] == ["a", "b"]
    assert path.read_text().count("\n") == 2


def test_a_torn_last_line_is_skipped_and_the_next_write_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "a", "status": "ok", "key": "k1"}) + '\n{"id": "b", "sta')
    assert [r["id"] for _, r in read_records(path)] == ["a"]
    with Journal(path) as journal:
        journal.append({"id": "c", "status": "ok", "key": "k3"})
    assert [r["id"] for _, r in read_records(path)] == ["a", "c"]


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('not json\n[1, 2]\n{"id": "a", "status": "ok", "key": "k"}\n')
    assert [r["id"] for _, r in read_records(path)] == ["a"]


def test_store_keeps_only_accepted_records_by_key(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append({"id": "a", "status": "failed", "key": "k1"})
        journal.append({"id": "a", "status": "ok", "key": "k1", "answer": 1})
        journal.append({"id": "b", "status": "ok", "key": "k2", "answer": 2})
        journal.append({"id": "b", "status": "ok", "key": "k2", "answer": 3})
    store = Store(path)
    assert len(store) == 2 and "k1" in store and "k3" not in store
    assert store.get("k2") == {"id": "b", "status": "ok", "key": "k2", "answer": 3}
    assert store.get("k3") is None


def test_a_missing_store_is_empty(tmp_path: Path) -> None:
    assert len(Store(tmp_path / "none.jsonl")) == 0


def test_consolidated_output_is_in_input_order_with_failures_null_or_left_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    with Journal(path) as journal:
        for index, status in ((2, "ok"), (0, "ok"), (1, "failed")):
            journal.append(
                {
                    "id": f"id{index}",
                    "index": index,
                    "status": status,
                    "input": {"title": f"film {index}"},
                    "answer": f"plot {index}",
                }
            )
    as_list, n = consolidate(path, OutputConfig(shape=OutputShape.list))
    assert (as_list, n) == (["plot 0", None, "plot 2"], 2)
    as_map, _ = consolidate(path, OutputConfig(shape=OutputShape.mapping, key_field="title"))
    assert as_map == {"film 0": "plot 0", "film 2": "plot 2"}
    assert list(as_map) == ["film 0", "film 2"]


def ok(key: str, answer: object) -> dict[str, Any]:
    return {"id": key, "status": "ok", "key": key, "answer": answer}


def test_dropping_keys_rewrites_the_store_keeping_every_other_line_byte_for_byte(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        for record in (ok("k1", 1), ok("k2", 2), ok("k1", 3), ok("k3", 4)):
            journal.append(record)
    with path.open("ab") as f:
        f.write(b'not json\n{"id": "k2", "sta')  # garbage and a torn tail stay as they are
    before = path.read_bytes().splitlines(keepends=True)
    assert drop_records(path, {"k1", "k9"}) == 2
    assert path.read_bytes() == b"".join(line for line in before if b'"k1"' not in line)
    with Store(path) as store:
        assert {key: store.get(key) for key in ("k1", "k2", "k3")} == {
            "k1": None,
            "k2": ok("k2", 2),
            "k3": ok("k3", 4),
        }
    # no temporary file left; the closed index is one file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.index.sqlite", "store.jsonl"]


def test_dropping_keys_that_are_not_there_leaves_the_store_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    assert drop_records(path, {"k1"}) == 0 and not path.exists()
    with Journal(path) as journal:
        journal.append(ok("k2", 2))
    mtime = path.stat().st_mtime_ns
    assert drop_records(path, {"k1"}) == 0 and path.stat().st_mtime_ns == mtime


def test_a_rewrite_that_fails_midway_leaves_the_old_store_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append(ok("k1", 1))
        journal.append(ok("k2", 2))
    before = path.read_bytes()

    def full_disk(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_journal.os, "replace", full_disk)
    with pytest.raises(StorageError, match=r"store.jsonl: cannot rewrite the journal: No space"):
        drop_records(path, {"k1"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["store.jsonl"]


def test_a_full_disk_is_one_line_naming_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:

        def full_disk(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(_journal.os, "write", full_disk)
        with pytest.raises(StorageError) as caught:
            journal.append(ok("k1", 1))
    assert str(caught.value) == f"{path}: cannot write the journal: No space left on device"


def test_a_journal_under_a_file_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match=r"file/store.jsonl: cannot open the journal: "):
        Journal(tmp_path / "file" / "store.jsonl")
    with pytest.raises(StorageError, match=r"file/store.jsonl: cannot read the journal: Not a"):
        Store(tmp_path / "file" / "store.jsonl")


class _SlowDisk:
    """``os.fsync`` that takes a while and notes, per call, its thread and the file's size."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[tuple[int, int]] = []  # (thread id, bytes in the file)

    def __call__(self, fd: int) -> None:
        self.calls.append((threading.get_ident(), os.fstat(fd).st_size))
        time.sleep(self.seconds)


async def test_with_fsync_lines_are_synced_in_groups_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _SlowDisk(0.02)
    monkeypatch.setattr(_journal.os, "fsync", disk)
    path = tmp_path / "store.jsonl"
    journal = Journal(path, fsync=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.keep_synced)
        for n in range(60):
            journal.append(ok(f"k{n}", n))  # returns at once: no sync on this thread
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    journal.close()
    main = threading.get_ident()
    assert 1 < len(disk.calls) < 30  # one sync per group of lines, not one per line
    assert all(thread != main for thread, _ in disk.calls[:-1])
    assert disk.calls[-1][1] == path.stat().st_size  # the last sync covered every line
    assert len(list(read_records(path))) == 60


def test_with_fsync_and_nothing_syncing_beside_each_line_is_synced_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _SlowDisk(0.0)
    monkeypatch.setattr(_journal.os, "fsync", disk)
    path = tmp_path / "store.jsonl"
    with Journal(path, fsync=True) as journal:
        for n in range(5):
            journal.append(ok(f"k{n}", n))
            assert disk.calls[-1][1] == path.stat().st_size
    assert len(disk.calls) == 5  # and close had nothing left to sync


async def test_a_sync_the_disk_refuses_is_one_line_naming_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_journal.os, "fsync", broken)
    path = tmp_path / "store.jsonl"
    journal = Journal(path, fsync=True)
    with pytest.RaisesGroup(StorageError, flatten_subgroups=True) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.keep_synced)
            journal.append(ok("k1", 1))
            await trio.sleep(1)
    (error,) = caught.value.exceptions
    assert str(error) == f"{path}: cannot sync the journal to disk: Input/output error"
    with pytest.raises(StorageError):
        journal.close()  # it tries once more, and the file is closed all the same
