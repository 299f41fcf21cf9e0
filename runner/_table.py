"""The job's consolidated output as a table: ``output.format: csv`` or ``parquet``.

One row per input item, in input order, whatever happened to it: an item that failed has its
``status`` and ``error``; one with no record (an interrupted run, a shard left out of an
incomplete merge) has ``status: unfinished`` and nothing else but its ``index``. Per item the
latest accepted record is used, else its latest failed one.

The columns are flattened the way ``pandas.json_normalize`` does it: ``id``, ``index``,
``status``, the input's fields as ``input.<name>``, a JSON object answer's fields as
``answer.<name>`` (nested objects joined with dots: ``answer.director.name``), any other
answer (text, a list, a number) as ``answer``, then ``node``, ``seed``, ``attempts``,
``input_tokens``, ``output_tokens``, ``finish_reason``, ``latency_s`` and ``error``. Every row
has every column (empty, or null, where a record has no value). Lists are JSON text in csv;
in parquet a list of strings, of numbers or of booleans is a list column, anything else JSON
text, and so is a column whose values are of mixed types.

Memory does not grow with the items: one pass over ``results.jsonl`` notes, per item index,
the byte offset of the record to use in a temporary SQLite table (as :mod:`runner._output`
does); a second pass reads those records in index order to find the columns and their types;
a third writes the rows as they come, parquet in row groups of :data:`ROW_GROUP` rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ._config import OutputFormat
from ._errors import ConfigError
from ._files import replace_file
from ._journal import read_records

CACHE_KIB = 2048  # the page cache of the table of chosen records (SQLite's default)
ROW_GROUP = 10_000  # parquet rows per row group: the rows held in memory at once
_HEAD = ("id", "index", "status")
_TAIL = (
    "node",
    "seed",
    "attempts",
    "input_tokens",
    "output_tokens",
    "finish_reason",
    "latency_s",
    "error",
)
_INT64 = range(-(2**63), 2**63)
_SIMPLE = frozenset({"str", "int", "float", "bool"})  # the values a parquet list may hold


def require_parquet() -> None:
    """Check that pyarrow, which writes parquet, is installed.

    Raises:
        ConfigError: it is not: one line naming the extra to install.
    """
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConfigError(
            "job.output.format=parquet needs pyarrow: pip install 'ts-cluster-runner[parquet]' "
            "(or use job.output.format=csv)"
        ) from None


def write_table(path: Path, results: Path, fmt: OutputFormat, *, items: int) -> None:
    """Write the table of ``results`` (``items`` rows) to ``path`` as csv or parquet,
    replacing it atomically."""
    with _chosen_records(results, items) as db:
        columns: dict[str, set[str]] = {name: set() for name in _HEAD}
        tail: dict[str, set[str]] = {name: set() for name in _TAIL}
        for row in _rows(db, results, items):
            for name, value in row.items():
                kinds = tail[name] if name in tail else columns.setdefault(name, set())
                kinds.add(_kind(value))
        columns.update(tail)
        for kinds in columns.values():
            kinds.discard("null")
        if fmt is OutputFormat.parquet:
            _write_parquet(path, columns, _rows(db, results, items))
        else:
            _write_csv(path, list(columns), _rows(db, results, items))


def flatten(record: dict[str, Any] | None, index: int) -> dict[str, Any]:
    """The row of one item: its record's values by column (see the module docstring);
    ``None``: the item has no record."""
    if record is None:
        return {"index": index, "status": "unfinished"}
    row = {name: record.get(name) for name in _HEAD}
    data = record.get("input")
    row.update(_flat(data, "input.") if isinstance(data, dict) else {"input": data})
    if "answer" in record:
        answer = record["answer"]
        row.update(_flat(answer, "answer.") if isinstance(answer, dict) else {"answer": answer})
    row.update({name: record.get(name) for name in _TAIL})
    return row


def _flat(obj: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{prefix + "a.b": 1}``, like ``pandas.json_normalize``."""
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _kind(value: Any) -> str:
    """A value's type as parquet sees it: ``null``, ``bool``, ``int``, ``float``, ``str``,
    ``list:<kind>`` for a list of one simple type (``list:`` when empty), else ``json``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if value in _INT64 else "json"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        inner = {_kind(v) for v in value}
        if inner == {"int", "float"}:
            inner = {"float"}
        if not inner:
            return "list:"
        if len(inner) == 1 and inner <= _SIMPLE:
            return f"list:{inner.pop()}"
    return "json"


def _column_type(kinds: set[str]) -> str:
    """The one kind a column's values are written as: ``json`` (text) unless they agree."""
    if kinds == {"int", "float"}:
        return "float"
    lists = {k for k in kinds if k.startswith("list:")}
    if lists and lists == kinds:
        inner = {k[5:] for k in lists} - {""}
        if inner == {"int", "float"}:
            return "list:float"
        return f"list:{inner.pop()}" if len(inner) == 1 else ("list:str" if not inner else "json")
    if len(kinds) == 1:
        return next(iter(kinds))
    return "str" if not kinds else "json"


def _text(value: Any) -> str:
    """A value as csv text (and a mixed column's parquet text): strings as they are,
    anything else as JSON (``true``, ``3.5``, ``["a", "b"]``); nothing for ``None``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _write_csv(path: Path, columns: list[str], rows: Iterator[dict[str, Any]]) -> None:
    with replace_file(path, binary=True) as out:
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_text(row.get(name)) for name in columns])
        text.flush()
        text.detach()  # ``out`` is closed by replace_file, after its fsync


def _write_parquet(
    path: Path, columns: dict[str, set[str]], rows: Iterator[dict[str, Any]]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    scalar = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    types = {name: _column_type(kinds) for name, kinds in columns.items()}

    def arrow_type(kind: str) -> Any:
        if kind.startswith("list:"):
            return pa.list_(scalar[kind[5:]])
        return scalar.get(kind, pa.string())

    schema = pa.schema([(name, arrow_type(kind)) for name, kind in types.items()])
    as_text = [name for name, kind in types.items() if kind == "json"]
    with replace_file(path, binary=True) as out:
        writer = pq.ParquetWriter(out, schema)
        try:
            while group := [row for _, row in zip(range(ROW_GROUP), rows, strict=False)]:
                data = {name: [row.get(name) for row in group] for name in types}
                for name in as_text:
                    data[name] = [None if v is None else _text(v) for v in data[name]]
                writer.write_table(pa.Table.from_pydict(data, schema=schema))
        finally:
            writer.close()  # writes the footer; ``out`` stays open for replace_file


def _rows(db: sqlite3.Connection, results: Path, items: int) -> Iterator[dict[str, Any]]:
    """One row per index below ``items``, in index order."""
    position = 0
    chosen = db.execute("SELECT idx, offset FROM chosen ORDER BY idx")
    with contextlib.ExitStack() as files:
        f: IO[bytes] | None = None  # opened at the first record: without one it may not exist
        for index, offset in chosen:
            yield from (flatten(None, i) for i in range(position, index))
            position = index + 1
            if f is None:
                f = files.enter_context(open(results, "rb"))
            f.seek(offset)
            yield flatten(json.loads(f.readline()), index)
    yield from (flatten(None, i) for i in range(position, items))


@contextlib.contextmanager
def _chosen_records(results: Path, items: int) -> Iterator[sqlite3.Connection]:
    """A temporary table ``chosen(idx, offset)``: per item index below ``items``, the offset
    of its latest accepted record in ``results``, else of its latest failed one."""
    db = sqlite3.connect("", isolation_level=None)
    try:
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("PRAGMA temp_store = FILE")
        db.execute("PRAGMA journal_mode = OFF")  # a scratch table: nothing to roll back to
        db.execute(
            "CREATE TABLE chosen (idx INTEGER PRIMARY KEY, offset INTEGER NOT NULL, "
            "ok INTEGER NOT NULL)"
        )
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO chosen VALUES (?, ?, ?) ON CONFLICT (idx) DO UPDATE SET "
            "offset = excluded.offset, ok = excluded.ok WHERE excluded.ok >= chosen.ok",
            (
                (record["index"], offset, record["status"] == "ok")
                for offset, record in read_records(results)
                if _usable(record, items)
            ),
        )
        yield db
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.close()


def _usable(record: dict[str, Any], items: int) -> bool:
    """A record this runner wrote, of an item below ``items``."""
    index = record.get("index")
    return (
        type(index) is int
        and 0 <= index < items
        and record.get("status") in ("ok", "failed")
        and ("answer" in record or record.get("status") == "failed")
    )
