"""The resume index: on disk, which line of the store holds each request key's accepted result.

The store (``<job>.jsonl``, :mod:`runner._journal`) is the source of truth. The index
(``<job>.index.sqlite`` beside it: SQLite from the standard library, in WAL mode) is a
cache of one fold over the store's intact lines: each key → the byte offset of its latest
accepted record. It also keeps a :class:`Mark`, how far into which file it has read, so that
opening it costs only the lines appended since:

* the same file (device and inode), at least as long as the mark, with the same first
  bytes and the same bytes just before the mark: the lines after the mark are read and
  added (a run that journaled 100 results costs 100 lines at the next start);
* anything else (the store rewritten by :func:`~runner._journal.drop_records`, truncated,
  replaced, edited; the index missing, from another version, corrupt): the index is emptied
  and rebuilt from the first line.

Memory does not grow with the store: new lines go to a temporary table (SQLite's temporary
files, in ``TMPDIR``), merged into the index in key order in one statement, and keys are
looked up a batch at a time (:meth:`ResumeIndex.lookup`). Writes happen in one transaction
(``BEGIN IMMEDIATE``): a crash leaves the index as it was, and two processes opening it at
once take turns. Readers never block: WAL mode lets a reader keep its snapshot while a
writer catches up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ._errors import StorageError

VERSION = 1  # of the index's layout and of the rule that picks the indexed records
EDGE_BYTES = 4096  # the bytes at the start of the store and before the mark that must match
LOOKUP_BATCH = 1000  # keys per query
CACHE_KIB = 2048  # SQLite's page cache per connection (its default; a larger one is no faster)
BUSY_SECONDS = 60.0  # how long to wait for another process's transaction on the index

_MARK = (
    "CREATE TABLE IF NOT EXISTS mark (one INTEGER PRIMARY KEY CHECK (one = 1), "
    "version INTEGER NOT NULL, device INTEGER NOT NULL, inode INTEGER NOT NULL, "
    "scanned INTEGER NOT NULL, head BLOB NOT NULL, tail BLOB NOT NULL)"
)
_OFFSETS = (
    "CREATE TABLE IF NOT EXISTS offsets (key TEXT PRIMARY KEY, offset INTEGER NOT NULL) "
    "WITHOUT ROWID"
)
_ADDED = "CREATE TEMP TABLE IF NOT EXISTS added (key TEXT, offset INTEGER)"


def index_path(journal: Path) -> Path:
    """The index of a store: ``<job>.index.sqlite`` beside ``<job>.jsonl``."""
    stem = journal.name.removesuffix(".jsonl")
    return journal.with_name(f"{stem}.index.sqlite")


@dataclass(frozen=True)
class Mark:
    """How far the index has read into which file.

    Attributes:
        device: the store's device (``st_dev``).
        inode: its inode: a rewrite (a new file renamed over it) changes it.
        scanned: bytes read: the end of the last whole line folded into the index.
        head: SHA-256 of the file's first ``min(scanned, EDGE_BYTES)`` bytes.
        tail: SHA-256 of the ``EDGE_BYTES`` before ``scanned`` (an in-place rewrite or a
            power cut's zero-filled blocks change them).
    """

    device: int
    inode: int
    scanned: int
    head: bytes
    tail: bytes

    @classmethod
    def of(cls, journal: BinaryIO, *, scanned: int) -> Mark:
        """The mark of an open store read up to ``scanned``."""
        st = os.fstat(journal.fileno())
        head = _digest(journal, 0, min(scanned, EDGE_BYTES))
        tail = _digest(journal, max(0, scanned - EDGE_BYTES), scanned)
        return cls(st.st_dev, st.st_ino, scanned, head, tail)

    def still_describes(self, journal: BinaryIO) -> bool:
        """Whether the open store is this mark's file, with the bytes it read unchanged."""
        st = os.fstat(journal.fileno())
        if (st.st_dev, st.st_ino) != (self.device, self.inode) or st.st_size < self.scanned:
            return False
        return Mark.of(journal, scanned=self.scanned) == self


def _digest(f: BinaryIO, start: int, end: int) -> bytes:
    f.seek(start)
    return hashlib.sha256(f.read(end - start)).digest()


class IndexCorrupt(Exception):
    """The index file is not a usable SQLite database (internal: it is rebuilt)."""


class ResumeIndex:
    """One store's index, open. A context manager; every method may raise
    :class:`~runner._errors.StorageError` (the index cannot be written: read-only folder, full
    disk) or :class:`IndexCorrupt`.

    Args:
        path: the index file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._errors("open the resume index"):
            self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_SECONDS)
        with contextlib.ExitStack() as closing, self._errors("open the resume index"):
            closing.callback(self._db.close)  # unless it opens
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # a cache: consistent is enough
            self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._db.execute("PRAGMA temp_store = FILE")
            self._db.execute(_MARK)
            self._db.execute(_OFFSETS)
            closing.pop_all()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:  # read-only, full disk, locked for too long
            raise StorageError(f"{self.path}: cannot {doing}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # not a database, malformed image
            raise IndexCorrupt(str(exc)) from exc

    def begin(self, journal: BinaryIO) -> int:
        """Start catching up with the open store: the offset to read on from.

        That is the mark's ``scanned`` when the index still describes ``journal``; otherwise
        the index is emptied and reading starts at 0. Ends with :meth:`commit` (or
        :meth:`rollback`).
        """
        with self._errors("update the resume index"):
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(_ADDED)
            row = self._db.execute(
                "SELECT version, device, inode, scanned, head, tail FROM mark"
            ).fetchone()
            if row is not None and row[0] == VERSION:
                mark = Mark(*row[1:])
                if mark.still_describes(journal):
                    return mark.scanned
            self._db.execute("DELETE FROM mark")
            self._db.execute("DROP TABLE offsets")  # faster than deleting every row
            self._db.execute(_OFFSETS)
            return 0

    def add(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Note accepted records read since :meth:`begin`: ``(key, offset)`` pairs, in file
        order (the last one of a key wins)."""
        with self._errors("update the resume index"):
            self._db.executemany("INSERT INTO added VALUES (?, ?)", pairs)

    def commit(self, mark: Mark) -> None:
        """Fold what was added into the index, in key order, and record ``mark``."""
        with self._errors("update the resume index"):
            self._db.execute(
                "INSERT OR REPLACE INTO offsets "
                "SELECT key, max(offset) FROM added GROUP BY key ORDER BY key"
            )
            self._db.execute("DROP TABLE added")
            self._db.execute(
                "INSERT OR REPLACE INTO mark VALUES (1, ?, ?, ?, ?, ?, ?)",
                (VERSION, mark.device, mark.inode, mark.scanned, mark.head, mark.tail),
            )
            self._db.execute("COMMIT")

    def forget(self) -> None:
        """Drop the mark: the next :meth:`begin` starts again from the store's first line
        (done before the store is rewritten)."""
        with self._errors("update the resume index"):
            self._db.execute("DELETE FROM mark")

    def rollback(self) -> None:
        """Abandon a catch-up begun with :meth:`begin` (the index stays as it was)."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def lookup(self, keys: Sequence[str]) -> dict[str, int]:
        """The offsets of those of ``keys`` the index holds, ``LOOKUP_BATCH`` keys a query."""
        found: dict[str, int] = {}
        with self._errors("read the resume index"):
            for start in range(0, len(keys), LOOKUP_BATCH):
                batch = json.dumps(keys[start : start + LOOKUP_BATCH])
                found.update(
                    self._db.execute(
                        "SELECT key, offset FROM offsets "
                        "WHERE key IN (SELECT value FROM json_each(?))",
                        (batch,),
                    )
                )
        return found

    def __len__(self) -> int:
        with self._errors("read the resume index"):
            count: int = self._db.execute("SELECT count(*) FROM offsets").fetchone()[0]
        return count

    def close(self) -> None:
        self.rollback()
        self._db.close()

    def __enter__(self) -> ResumeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_index(path: Path) -> None:
    """Delete an index file and its WAL companions (a corrupt index, before its rebuild)."""
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(FileNotFoundError):
            (path.parent / name).unlink()


def forget_mark(path: Path) -> None:
    """Make an existing index start again from the store's first line at its next opening:
    called before the store is rewritten. A missing index is left missing; a corrupt one is
    removed (it would be rebuilt anyway)."""
    if not path.exists():
        return
    try:
        with ResumeIndex(path) as index:
            index.forget()
    except IndexCorrupt:
        remove_index(path)
