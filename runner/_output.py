"""The job's consolidated output file, built from a run's ``results.jsonl``.

Answers go in input order, and none is lost in silence:

- ``list``: one entry per input item, so position *i* is always input *i*; an item that failed
  or was not finished (an interrupted run) is ``null`` there, and its record in
  ``results.jsonl`` says why.
- ``mapping``: each item's ``key_field`` value (or its id) → its answer; failed items are left
  out. A key field missing from the input, or a key that repeats, is refused by
  :func:`check_keys` while the job is scanned, before anything is sent, so every key names
  exactly one item.

Memory does not grow with the answers: one pass over ``results.jsonl`` keeps, per item
index, the byte offset of its latest accepted record (8 bytes an item); a second pass reads
the answers back one at a time in index order and writes them out as they come.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._config import OutputConfig, OutputShape
from ._errors import ConfigError
from ._files import replace_file
from ._journal import read_records
from ._repeats import bucket, shared_buckets

if TYPE_CHECKING:
    from ._inputs import Item

_NONE = -1  # no accepted answer at this index
MAX_INDEX = 2**31  # the most items a job may have


def write_output(run_dir: Path, results: Path, output: OutputConfig, *, items: int) -> Path | None:
    """Write the job's consolidated output file into the run directory, if it has one.

    ``items`` is the job's item count: a ``list`` has that many entries, and records with an
    index beyond it are not this run's. The file is replaced atomically: a reader sees the
    old file or the new one.
    """
    if output.shape is OutputShape.none or not output.filename:
        return None
    path = run_dir / output.filename
    with replace_file(path) as out:
        _write(
            out, entries(results, output, items=items), mapping=output.shape is OutputShape.mapping
        )
    return path


def consolidate(
    results: Path, output: OutputConfig, *, items: int | None = None
) -> tuple[Any, int]:
    """The consolidated output as a value, and how many answers it holds (for tests and
    small runs; :func:`write_output` streams the same content to a file). Without
    ``items``, a ``list`` ends at the last accepted answer."""
    offsets = _index(results, MAX_INDEX if items is None else min(items, MAX_INDEX))
    count = sum(1 for o in offsets if o != _NONE)
    pairs = list(entries(results, output, items=len(offsets) if items is None else items))
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
    offsets = _index(results, items)
    every_position = output.shape is OutputShape.list
    count = items if every_position else len(offsets)
    offsets.extend(array("q", [_NONE]) * (count - len(offsets)))
    if all(offset == _NONE for offset in offsets):  # no answer: the file need not be opened
        if every_position:
            yield from (("", None) for _ in offsets)
        return
    with open(results, "rb") as f:
        for offset in offsets:
            if offset != _NONE:
                record = _read_at(f, offset)
                yield output_key(record.get("input"), record.get("id"), output), record["answer"]
            elif every_position:
                yield "", None


def output_key(data: Any, item_id: Any, output: OutputConfig) -> str:
    """An item's key in a ``mapping``: its ``key_field`` value, or its id without one."""
    if output.key_field and isinstance(data, dict) and data.get(output.key_field) is not None:
        return str(data[output.key_field])
    return str(item_id)


def check_keys(items: Callable[[], Iterable[Item]], output: OutputConfig, *, path: Path) -> None:
    """Refuse, before anything is sent, a ``mapping`` whose keys would lose answers: an item
    without the ``key_field`` (the first item: the field is not a column of the input) or a
    key that repeats. ``items`` streams the input; like
    :func:`~runner._inputs.scan_items` this keeps one bit per filter bucket and reads the
    input a second time only when two keys share a bucket.

    Raises:
        ConfigError: ``file:line``, the field or the key, and what to do.
    """
    field = output.key_field
    if output.shape is not OutputShape.mapping or not field:
        return  # ids are the keys, and ids are unique (checked by scan_items)

    def hashes() -> Iterator[int]:
        for item in items():
            if item.data.get(field) is None:
                raise ConfigError(_missing_key(path, item, field))
            yield hash(output_key(item.data, item.id, output))

    shared = shared_buckets(hashes())
    if not shared:
        return
    first_line: dict[str, int] = {}
    for item in items():
        key = output_key(item.data, item.id, output)
        if bucket(hash(key)) not in shared:
            continue
        seen = first_line.setdefault(key, item.line)
        if seen != item.line:
            raise ConfigError(
                f"{path}:{item.line}: key {key!r} of job.output.key_field {field!r} repeats "
                f"(first seen on line {seen}); a mapping holds one answer per key: pick a field "
                "whose values are unique, or use job.output.shape=list"
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


def _index(results: Path, items: int) -> array[int]:
    """Per item index: the offset of its latest accepted record, up to the last one."""
    offsets: array[int] = array("q")
    for offset, record in read_records(results):
        index = _accepted(record, items)
        if index is None:
            continue
        if index >= len(offsets):
            offsets.extend(array("q", [_NONE]) * (index + 1 - len(offsets)))
        offsets[index] = offset
    return offsets


def _read_at(f: IO[bytes], offset: int) -> dict[str, Any]:
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
