"""The job's consolidated output file, built from a run's ``results.jsonl``.

Answers go in input order: a ``list`` of every accepted answer, or a ``mapping`` from each
item's ``key_field`` (or its id) to its answer. When two items share a key the mapping keeps
the key where it first appears, with the later item's answer (what a ``dict`` built in input
order does).

Memory does not grow with the answers: one pass over ``results.jsonl`` keeps, per item
index, the byte offset of its latest accepted record and a 64-bit hash of its key (16 bytes
an item); a second pass reads the answers back one at a time in index order and writes them
out as they come. Repeated keys are found with :mod:`runner._repeats`'s bit filter and
compared for real only where their hashes share a bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ._config import OutputConfig, OutputShape
from ._journal import read_records
from ._repeats import bucket, shared_buckets

_NONE = -1  # no accepted answer at this index
MAX_INDEX = 2**31  # the most items a job may have


def write_output(run_dir: Path, results: Path, output: OutputConfig, *, items: int) -> Path | None:
    """Write the job's consolidated output file into the run directory, if it has one.

    ``items`` is the job's item count: records with an index beyond it are not this run's.
    The file is replaced atomically: a reader sees the old file or the new one.
    """
    if output.shape is OutputShape.none or not output.filename:
        return None
    path = run_dir / output.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            pairs = entries(results, output, items=items)
            _write(out, pairs, mapping=output.shape is OutputShape.mapping)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def consolidate(results: Path, output: OutputConfig, *, items: int = MAX_INDEX) -> tuple[Any, int]:
    """The consolidated output as a value, and how many answers it holds (for tests and
    small runs; :func:`write_output` streams the same content to a file)."""
    pairs = list(entries(results, output, items=items))
    if output.shape is OutputShape.mapping:
        return dict(pairs), len(pairs)
    return [answer for _, answer in pairs], len(pairs)


def entries(results: Path, output: OutputConfig, *, items: int) -> Iterator[tuple[str, Any]]:
    """``(key, answer)`` per entry of the output, in input order (see the module docstring).

    Lines without an ``index`` below ``items`` and an ``answer`` (not written by this runner)
    are skipped, never fatal.
    """
    offsets, hashes = _index(results, output, min(items, MAX_INDEX))
    if not offsets:
        return
    merged = _merged_duplicates(results, output, offsets, hashes)
    with open(results, "rb") as f:
        for index, offset in enumerate(offsets):
            source = merged.get(index, index)
            if offset == _NONE or source is None:
                continue
            record = _read_at(f, offset)
            if source != index:
                record["answer"] = _read_at(f, offsets[source])["answer"]
            yield _key(record, output), record["answer"]


def _accepted(record: dict[str, Any], items: int) -> int | None:
    """The record's index if it is an accepted answer this runner wrote, else ``None``."""
    index = record.get("index")
    if record.get("status") != "ok" or "answer" not in record or type(index) is not int:
        return None
    return index if 0 <= index < items else None


def _key(record: dict[str, Any], output: OutputConfig) -> str:
    item = record.get("input")
    key = item.get(output.key_field) if isinstance(item, dict) and output.key_field else None
    return str(key if key is not None else record.get("id"))


def _hash(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _index(results: Path, output: OutputConfig, items: int) -> tuple[array[int], array[int]]:
    """Per item index: the offset of its latest accepted record and its key's hash."""
    offsets: array[int] = array("q")
    hashes: array[int] = array("q")
    for offset, record in read_records(results):
        index = _accepted(record, items)
        if index is None:
            continue
        if index >= len(offsets):
            grow = index + 1 - len(offsets)
            offsets.extend(array("q", [_NONE]) * grow)
            hashes.extend(array("q", [0]) * grow)
        offsets[index] = offset
        hashes[index] = _hash(_key(record, output))
    return offsets, hashes


def _merged_duplicates(
    results: Path, output: OutputConfig, offsets: array[int], hashes: array[int]
) -> dict[int, int | None]:
    """For a mapping, items whose key an earlier item already has: the first such item
    takes the last one's answer (``first → last``), the others are left out (``→ None``).
    Empty for lists and when no keys repeat."""
    if output.shape is not OutputShape.mapping:
        return {}
    shared = shared_buckets(h for h, o in zip(hashes, offsets, strict=True) if o != _NONE)
    if not shared:
        return {}
    groups: dict[str, list[int]] = {}
    with open(results, "rb") as f:
        for index, (h, offset) in enumerate(zip(hashes, offsets, strict=True)):
            if offset != _NONE and bucket(h) in shared:
                groups.setdefault(_key(_read_at(f, offset), output), []).append(index)
    merged: dict[int, int | None] = {}
    for indices in groups.values():
        if len(indices) > 1:
            merged[indices[0]] = indices[-1]
            merged.update(dict.fromkeys(indices[1:]))
    return merged


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
