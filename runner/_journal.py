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
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import ConfigError


class Journal:
    """An append-only JSONL file.

    Args:
        path: the file; created with its directory if missing.
        fsync: flush every line to disk (survives a power cut, costs a disk sync per line).
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot open journal: {exc.strerror}") from exc
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
        for offset, record in read_records(path):
            if record.get("status") == "ok" and isinstance(record.get("key"), str):
                self._offsets[record["key"]] = offset

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
