"""Append-only JSON-lines journals.

Two files use this format:

* ``results.jsonl`` in the run directory: one line per item of this run, written the moment
  the item finishes.
* the *store* (``<journal_dir>/<job>.jsonl``): every accepted record of every run of the job,
  also written the moment it arrives. A re-run reads it to skip work already done, keyed by
  the request's hash (:meth:`~runner._request.GenerationRequest.key`).

Each line is written with a single ``write`` on a file opened in append mode, so a crash
leaves at worst one torn last line; readers skip lines that do not parse, and a writer that
finds a torn tail starts on a fresh line. A last line that lost only its newline still parses:
it is a whole record, and readers count it (the writer's fresh line then completes it), so a
record is never both skipped by one run and found again by the next.

The store holds at most one accepted record per key: a run with ``resume=false`` first drops
the records of the work it is about to do again (:func:`drop_records`, an atomic rewrite), so
the new results supersede them instead of standing beside them. A file that cannot be opened,
read or written (read-only folder, full disk) is a one-line
:class:`~runner._errors.StorageError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from ._errors import storage_errors
from ._files import replace_file


class Journal:
    """An append-only JSONL file.

    Args:
        path: the file; created with its directory if missing.
        fsync: flush every line to disk (survives a power cut, costs a disk sync per line).
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
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
            if self._fsync:
                os.fsync(self._fd)

    def close(self) -> None:
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
        offset = 0
        for raw in f:
            start, offset = offset, offset + len(raw)
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield start, record


class Store:
    """The accepted results of earlier runs, looked up by request key.

    Only byte offsets are kept in memory; a record is read back when it is reused.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets: dict[str, int] = {}
        with storage_errors(path, "read the journal"):
            for offset, record in read_records(path):
                key = _accepted_key(record)
                if key is not None:
                    self._offsets[key] = offset

    def __len__(self) -> int:
        return len(self._offsets)

    def __contains__(self, key: str) -> bool:
        return key in self._offsets

    def get(self, key: str) -> dict[str, Any] | None:
        offset = self._offsets.get(key)
        if offset is None:
            return None
        with open(self.path, "rb") as f:
            f.seek(offset)
            record: dict[str, Any] = json.loads(f.readline())
        return record


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
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return _accepted_key(record) if isinstance(record, dict) else None
