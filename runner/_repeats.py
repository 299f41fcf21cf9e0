"""Finding the first repeated value in a stream, exactly, in memory that does not grow with it.

The values go into a table of a private temporary SQLite database (the standard library's
``sqlite3``, ``connect("")``: a file in SQLite's temporary folder, ``TMPDIR`` or ``/var/tmp``
or ``/tmp``, deleted when the connection closes or the process dies), appended in stream
order; one sorted pass (SQLite's external merge sort, within its page cache) then finds the
value whose second appearance comes first. Memory: :data:`CACHE_KIB` of page cache, whatever
the count; disk: about 30 bytes plus the value's length per value, for as long as the check
runs (docs/benchmarks.md, "Scale: items", has the times at ten million).

Every value is compared for real: there is no hash, filter or false positive.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

CACHE_KIB = 2048  # SQLite's page cache (and its sorter's memory): its default; more is no faster

_FIRST_REPEAT = """
SELECT value, line, first FROM (
    SELECT value, line,
        lag(line) OVER by_value AS first,
        row_number() OVER by_value AS n,
        rowid AS position
    FROM seen
    WINDOW by_value AS (PARTITION BY value ORDER BY rowid)
)
WHERE n = 2 ORDER BY position LIMIT 1
"""


@dataclass(frozen=True)
class Repeat:
    """A value seen twice.

    Attributes:
        value: the value.
        line: where it came again (the first such place in the stream).
        first_line: where it was first seen.
    """

    value: str
    line: int
    first_line: int


def first_repeat(values: Iterable[tuple[str, int]]) -> Repeat | None:
    """The first value of ``(value, line)`` pairs that appeared before, in stream order of
    its second appearance, with both lines; ``None`` when every value is unique.

    The stream is read to its end first, so an exception it raises (a bad input line)
    propagates, whatever repeats before it.
    """
    db = sqlite3.connect("", isolation_level=None)
    try:
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("PRAGMA temp_store = FILE")
        db.execute("PRAGMA journal_mode = OFF")  # a scratch table: nothing to roll back to
        db.execute("CREATE TABLE seen (value TEXT NOT NULL, line INTEGER NOT NULL)")
        db.execute("BEGIN")
        db.executemany("INSERT INTO seen VALUES (?, ?)", values)
        row = db.execute(_FIRST_REPEAT).fetchone()
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.close()
    return None if row is None else Repeat(row[0], row[1], row[2])
