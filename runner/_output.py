"""The job's consolidated output file, built from a run's ``results.jsonl``.

Answers go in input order, and none is lost in silence:

- ``list``: one entry per input item, so position *i* is always input *i*; an item that failed
  or was not finished (an interrupted run) is ``null`` there, and its record in
  ``results.jsonl`` says why.
- ``mapping``: each item's ``key_field`` value (or its id) → its answer; failed items are left
  out. A key field missing from the input, or a key that repeats, is refused by
  :func:`check_keys` while the job is scanned, before anything is sent, so every key names
  exactly one item.

Memory does not grow with the answers: one pass over ``results.jsonl`` notes, per item
index, the byte offset of its latest accepted record, in a table of a private temporary
SQLite database (on disk in SQLite's temporary folder, within a fixed page cache; gone when
closed); a second pass reads the answers back one at a time in index order and writes them
out as they come.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._config import OutputConfig, OutputFormat, OutputShape
from ._errors import ConfigError
from ._files import replace_file
from ._journal import read_records
from ._repeats import first_repeat
from ._table import write_table

if TYPE_CHECKING:
    from ._inputs import Item

CACHE_KIB = 2048  # the page cache of the table of latest answers (SQLite's default)
MAX_INDEX = 2**31  # the most items a job may have


def write_output(run_dir: Path, results: Path, output: OutputConfig, *, items: int) -> Path | None:
    """Write the job's consolidated output file into the run directory, if it has one.

    ``items`` is the job's item count: a ``list`` has that many entries, and records with an
    index beyond it are not this run's. The file is replaced atomically: a reader sees the
    old file or the new one. With ``output.format`` csv or parquet it is a table of one row
    per item instead (:mod:`runner._table`), named by :func:`output_filename`.
    """
    filename = output_filename(output)
    if filename is None:
        return None
    path = run_dir / filename
    if output.format is not OutputFormat.json:
        write_table(path, results, output.format, items=items)
        return path
    with replace_file(path) as out:
        _write(
            out, entries(results, output, items=items), mapping=output.shape is OutputShape.mapping
        )
    return path


def output_filename(output: OutputConfig) -> str | None:
    """The output file's name in the run directory, ``None`` without one: ``filename`` as it
    is, except that for csv and parquet a ``.json`` ending becomes ``.csv`` or ``.parquet``
    (so a job's ``movie_details.json`` is ``movie_details.csv`` with ``format=csv``)."""
    if output.shape is OutputShape.none or not output.filename:
        return None
    name = output.filename
    if output.format is not OutputFormat.json and name.lower().endswith(".json"):
        name = f"{name[: -len('.json')]}.{output.format.value}"
    return name


def consolidate(
    results: Path, output: OutputConfig, *, items: int | None = None
) -> tuple[Any, int]:
    """The consolidated output as a value, and how many answers it holds (for tests and
    small runs; :func:`write_output` streams the same content to a file). Without
    ``items``, a ``list`` ends at the last accepted answer."""
    with _latest_answers(results, MAX_INDEX if items is None else min(items, MAX_INDEX)) as db:
        last, count = db.execute(
            "SELECT coalesce(max(idx) + 1, 0), count(*) FROM latest"
        ).fetchone()
    pairs = list(entries(results, output, items=last if items is None else items))
    if output.shape is OutputShape.mapping:
        return dict(pairs), count
    return [answer for _, answer in pairs], count


def entries(results: Path, output: OutputConfig, *, items: int) -> Iterator[tuple[str, Any]]:
    """``(key, answer)`` per entry of the output, in input order (see the module docstring):
    for a ``list``, one per index below ``items``, ``(id, None)`` where no answer was accepted.

    Lines without an ``index`` below ``items`` and an ``answer`` (not written by this runner)
    are skipped, never fatal.
    """
    items = min(items, MAX_INDEX)
    every_position = output.shape is OutputShape.list
    position = 0  # the next index of a list
    with _latest_answers(results, items) as db:
        latest = db.execute("SELECT idx, offset FROM latest ORDER BY idx")
        first = latest.fetchone()
        if first is not None:  # with no answer the file need not be opened
            with open(results, "rb") as f:
                for index, offset in chain([first], latest):
                    if every_position:
                        yield from (("", None) for _ in range(index - position))
                        position = index + 1
                    record = read_record_at(f, offset)
                    key = output_key(record.get("input"), record.get("id"), output)
                    yield key, record["answer"]
    if every_position:
        yield from (("", None) for _ in range(items - position))


def output_key(data: Any, item_id: Any, output: OutputConfig) -> str:
    """An item's key in a ``mapping``: its ``key_field`` value, or its id without one."""
    if output.key_field and isinstance(data, dict) and data.get(output.key_field) is not None:
        return str(data[output.key_field])
    return str(item_id)


def check_keys(items: Callable[[], Iterable[Item]], output: OutputConfig, *, path: Path) -> None:
    """Refuse, before anything is sent, a ``mapping`` whose keys would lose answers: an item
    without the ``key_field`` (the first item: the field is not a column of the input) or a
    key that repeats. ``items`` streams the input; like
    :func:`~runner._inputs.scan_items` the keys are compared exactly through a temporary
    on-disk table (:mod:`runner._repeats`), in memory that does not grow with the input.

    Raises:
        ConfigError: ``file:line``, the field or the key, and what to do.
    """
    field = output.key_field
    if output.shape is not OutputShape.mapping or not field:
        return  # ids are the keys, and ids are unique (checked by scan_items)

    def keys() -> Iterator[tuple[str, int]]:
        for item in items():
            if item.data.get(field) is None:
                raise ConfigError(_missing_key(path, item, field))
            yield output_key(item.data, item.id, output), item.line

    repeat = first_repeat(keys())
    if repeat is not None:
        raise ConfigError(
            f"{path}:{repeat.line}: key {repeat.value!r} of job.output.key_field {field!r} "
            f"repeats (first seen on line {repeat.first_line}); a mapping holds one answer per "
            "key: pick a field whose values are unique, or use job.output.shape=list"
        )


def _missing_key(path: Path, item: Item, field: str) -> str:
    fields = ", ".join(item.data) or "none"
    if item.index == 0:
        what = f"job.output.key_field {field!r} is not a column of the input (columns: {fields})"
        return f"{path}: {what}"
    what = f"no value for {field!r} (job.output.key_field) in this item (its fields: {fields})"
    return f"{path}:{item.line}: {what}"


def _accepted(record: dict[str, Any], items: int) -> int | None:
    """The record's index if it is an accepted answer this runner wrote, else ``None``."""
    index = record.get("index")
    if record.get("status") != "ok" or "answer" not in record or type(index) is not int:
        return None
    return index if 0 <= index < items else None


@contextlib.contextmanager
def _latest_answers(results: Path, items: int) -> Iterator[sqlite3.Connection]:
    """A temporary table ``latest(idx, offset)``: per item index below ``items``, the offset
    of its latest accepted record in ``results``."""
    db = sqlite3.connect("", isolation_level=None)
    try:
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("PRAGMA temp_store = FILE")
        db.execute("PRAGMA journal_mode = OFF")  # a scratch table: nothing to roll back to
        db.execute("CREATE TABLE latest (idx INTEGER PRIMARY KEY, offset INTEGER NOT NULL)")
        db.execute("BEGIN")
        accepted = ((_accepted(record, items), offset) for offset, record in read_records(results))
        db.executemany(
            "INSERT OR REPLACE INTO latest VALUES (?, ?)",
            ((index, offset) for index, offset in accepted if index is not None),
        )
        yield db
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.close()


def read_record_at(f: IO[bytes], offset: int) -> dict[str, Any]:
    """The journal record whose line starts at byte ``offset`` of ``f``."""
    f.seek(offset)
    record: dict[str, Any] = json.loads(f.readline())
    return record


def _write(out: IO[str], pairs: Iterator[tuple[str, Any]], *, mapping: bool) -> None:
    """Write pairs as one JSON list or object, indented like ``json.dump(indent=2)``."""
    out.write("{" if mapping else "[")
    first = True
    for key, answer in pairs:
        out.write("\n  " if first else ",\n  ")
        first = False
        if mapping:
            out.write(json.dumps(key, ensure_ascii=False) + ": ")
        text = json.dumps(answer, ensure_ascii=False, indent=2)
        out.write(text.replace("\n", "\n  "))
    out.write(("" if first else "\n") + ("}" if mapping else "]") + "\n")
