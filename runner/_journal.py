"""Append-only JSON-lines journals.

Two files use this format:

* ``results.jsonl`` in the run directory: one line per item of this run, written the moment
  the item finishes.
* the *store* (``<journal_dir>/<job>.jsonl``): every accepted record of every run of the job,
  also written the moment it arrives. A re-run reads it to skip work already done, keyed by
  the request's hash (:meth:`~runner._request.GenerationRequest.key`), through
  :class:`Store` and its resume index on disk (:mod:`runner._resume_index`,
  ``<job>.index.sqlite``), which reads only the lines appended since its last opening.

Each line is written with a single ``write`` on a file opened in append mode, so a crash
leaves at worst one torn last line; readers skip lines that do not parse, and a writer that
finds a torn tail starts on a fresh line. A last line that lost only its newline still parses:
it is a whole record, and readers count it (the writer's fresh line then completes it), so a
record is never both skipped by one run and found again by the next.

The store holds at most one accepted record per key: a run with ``resume=false`` first drops
the records of the work it is about to do again (:func:`drop_records`, an atomic rewrite), so
the new results supersede them instead of standing beside them (the index's mark is dropped
first, so the rewritten store is indexed again from its first line). A file that cannot be
opened, read or written (read-only folder, full disk) is a one-line
:class:`~runner._errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import trio

from ._errors import StorageError, storage_errors
from ._files import replace_file
from ._resume_index import IndexCorrupt, Mark, ResumeIndex, forget_mark, index_path, remove_index

Progress = Callable[[int, int], None]
PROGRESS_LINES = 50_000  # records between two progress calls (two batches into the index)


class Journal:
    """An append-only JSONL file.

    Every line is handed to the operating system by the time :meth:`append` returns, so a
    crash of the process loses none. With ``fsync`` the lines also go to the disk, so a power
    cut loses none either: each ``append`` syncs the file itself, unless :meth:`keep_synced`
    runs beside the writers. Then the syncs leave the event loop for a worker thread and come
    in groups (a sync covers every line written before it began, so under load there is one
    per batch, not one per line, and the engine never waits for the disk), and :meth:`close`
    syncs what the last group left.

    Args:
        path: the file; created with its directory if missing.
        fsync: sync lines to disk (survives a power cut, costs a disk sync per line or group).
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        self._written = 0  # lines appended...
        self._synced = 0  # ...and of those, on disk (with fsync)
        self._wake: trio.Event | None = None  # set while keep_synced waits for lines
        self._syncing = False
        with storage_errors(path, "open the journal"):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._heal_torn_tail()

    def _heal_torn_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                os.write(self._fd, b"\n")

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with storage_errors(self.path, "write the journal"):
            os.write(self._fd, line.encode())
            self._written += 1
            if not self._fsync:
                return
            if not self._syncing:
                os.fsync(self._fd)
                self._synced = self._written
            elif self._wake is not None:
                self._wake.set()

    async def keep_synced(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Sync the lines appended meanwhile to disk, in a worker thread, until cancelled
        (start it with ``nursery.start`` in the nursery of the code that appends: from then
        on, appends leave the syncs to it). Nothing to do without ``fsync``.

        Raises:
            StorageError: the disk refused a sync (the run stops; :meth:`close` tries once
                more).
        """
        self._syncing = self._fsync
        task_status.started()
        if not self._fsync:
            return
        try:
            while True:
                if self._synced == self._written:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    self._wake = None
                target = self._written  # every line written before the sync begins
                await trio.to_thread.run_sync(self._sync)
                self._synced = target
        finally:
            self._syncing = False

    def _sync(self) -> None:
        with storage_errors(self.path, "sync the journal to disk"):
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file; with ``fsync``, after syncing what is not on disk yet."""
        try:
            if self._fsync and self._synced < self._written:
                self._sync()
                self._synced = self._written
        finally:
            os.close(self._fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every intact record of a journal with its byte offset; torn or garbled lines are
    skipped (a last line missing only its newline is intact). A missing file has no
    records."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with f:
        for start, raw in _lines(f, 0):
            record = _parsed(raw)
            if record is not None:
                yield start, record


def _lines(f: BinaryIO, offset: int) -> Iterator[tuple[int, bytes]]:
    """The lines of an open journal from ``offset`` (the start of a line), with their
    offsets; the last one may lack its newline."""
    f.seek(offset)
    for raw in f:
        yield offset, raw
        offset += len(raw)


def _parsed(raw: bytes) -> dict[str, Any] | None:
    """The record of a line, ``None`` when it is torn or garbled."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: garbage nested too deeply
        return None
    return record if isinstance(record, dict) else None


class Store:
    """The accepted results of earlier runs, looked up by request key.

    Only the resume index (:mod:`runner._resume_index`, on disk beside the store) knows
    where each key's record is; opening a store brings that index up to date with the lines
    appended since it was last opened, and a record is read back when it is reused. A last
    line without its newline is not indexed (a writer may still complete it): it is kept
    here, the one key in memory. Close the store when done (a context manager).

    Args:
        path: the store's journal.
        progress: called as ``progress(bytes_read, bytes_to_read)`` while the index catches
            up (every :data:`PROGRESS_LINES` lines, and once at the end).

    Raises:
        StorageError: the journal cannot be read, or its index cannot be written.
    """

    def __init__(self, path: Path, *, progress: Progress | None = None) -> None:
        self.path = path
        self.index_path = index_path(path)
        self._index: ResumeIndex | None = None
        self._last: dict[str, int] = {}  # the accepted record of a last line without newline
        with storage_errors(path, "read the journal"):
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except FileNotFoundError:
                return  # nothing to index: no index file is made
        with f, storage_errors(path, "read the journal"):
            try:
                self._index = self._caught_up(f, progress)
            except IndexCorrupt:
                remove_index(self.index_path)
                self._index = self._caught_up(f, progress)

    def _caught_up(self, f: BinaryIO, progress: Progress | None) -> ResumeIndex:
        index = ResumeIndex(self.index_path)
        with contextlib.ExitStack() as closing:
            closing.callback(index.close)  # unless caught up
            self._last.clear()
            scanned = start = index.begin(f)
            total = os.fstat(f.fileno()).st_size - start
            batch: list[tuple[str, int]] = []
            f.seek(start)
            for raw in f:  # the loop of _lines and _line_key inlined: ~10M lines a run
                try:
                    record = json.loads(raw)
                except (ValueError, RecursionError):
                    record = None
                key = None
                if isinstance(record, dict) and record.get("status") == "ok":
                    key = record.get("key")
                    if not isinstance(key, str):
                        key = None
                if raw[-1:] != b"\n":  # the last line: indexed once it is complete
                    if key is not None:
                        self._last[key] = scanned
                    break
                if key is not None:
                    batch.append((key, scanned))
                    if len(batch) == PROGRESS_LINES:
                        index.add(batch)
                        batch.clear()
                        if progress is not None:
                            progress(scanned - start, total)
                scanned += len(raw)
            index.add(batch)
            mark = Mark.of(f, scanned=scanned)
            index.commit(mark)
            closing.pop_all()
        if progress is not None:
            progress(total, total)
        return index

    def __len__(self) -> int:
        if self._index is None:
            return 0
        indexed = len(self._index)
        return indexed + sum(1 for key in self._last if not self._index.lookup([key]))

    def __contains__(self, key: str) -> bool:
        return bool(self.offsets([key]))

    def offsets(self, keys: Sequence[str]) -> dict[str, int]:
        """Where the store holds the accepted records of those of ``keys`` it has."""
        if self._index is None:
            return {}
        try:
            found = self._index.lookup(keys)
        except IndexCorrupt as exc:  # damaged since it was opened: a one-line error
            raise StorageError(
                f"{self.index_path}: cannot read the resume index: {exc}; delete it and run again"
            ) from exc
        found.update((key, offset) for key, offset in self._last.items() if key in keys)
        return found

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The accepted records of those of ``keys`` the store holds, by key: one query a
        batch of keys, and each record read back from the journal."""
        offsets = self.offsets(keys)
        if not offsets:
            return {}
        records: dict[str, dict[str, Any]] = {}
        with storage_errors(self.path, "read the journal"), open(self.path, "rb") as f:
            for key, offset in sorted(offsets.items(), key=lambda pair: pair[1]):
                f.seek(offset)
                records[key] = json.loads(f.readline())
        return records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drop_records(path: Path, keys: Collection[str]) -> int:
    """Rewrite the store without the accepted records of ``keys`` (work about to be done
    again with ``resume=false``), so that it keeps at most one accepted record per key.

    Every other line is kept byte for byte. The new file is written beside the old one,
    synced, then renamed over it: a crash at any point leaves the old store or the new one,
    never a mix, and never loses another key's record. Returns how many records were dropped
    (the file is left untouched when none is).

    Raises:
        StorageError: the store or the folder cannot be read or written.
    """
    with storage_errors(path, "rewrite the journal"):
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return 0
        with source:
            if not any(_line_key(raw) in keys for raw in source):
                return 0
            source.seek(0)
            forget_mark(index_path(path))  # before the rewrite: a crash after it is safe
            dropped = 0
            with replace_file(path, binary=True, keep_mode=True) as out:
                for raw in source:
                    if _line_key(raw) in keys:
                        dropped += 1
                    else:
                        out.write(raw)
    return dropped


def _accepted_key(record: dict[str, Any]) -> str | None:
    key = record.get("key")
    return key if record.get("status") == "ok" and isinstance(key, str) else None


def _line_key(raw: bytes) -> str | None:
    """The key of an accepted record's line, else ``None`` (garbled lines included)."""
    record = _parsed(raw)
    return None if record is None else _accepted_key(record)
