"""Input items, streamed from a file one at a time (never loaded whole).

Formats:

- ``lines``: each non-blank line is one item ``{text_field: line}`` (the newline removed);
  lines starting with ``#`` are comments.
- ``csv``: a header row, then one item per row (every value a string).
- ``jsonl``: one JSON object per line; blank lines are skipped.

``auto`` picks the format from the extension. An item's id is its ``id_field`` value, or else
the first 12 hex digits of the SHA-256 of its data as canonical JSON: the same content gets
the same id wherever it stands in the file, which is what resuming a run relies on.

Lines are read at most :data:`MAX_LINE_BYTES` (1 MiB) at a time, so an endless input
(``/dev/zero``, a line that never ends) is refused at its first overlong line, in bounded
memory, instead of being read into memory whole; a NUL byte (a binary file) is refused too.
A CSV record spanning lines is bounded by the ``csv`` module's field limit (128 KiB a field).
Reading is a plain Python loop over lines, so Ctrl-C stops it at once.

Every problem is a :class:`~runner._errors.ConfigError` whose one-line message starts with
``file:line`` (or the file alone when no line applies).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._errors import ConfigError
from ._repeats import first_repeat

FORMATS = ("lines", "csv", "jsonl")
_BY_SUFFIX = {"": "lines", ".txt": "lines", ".lst": "lines", ".csv": "csv"}
_BY_SUFFIX |= {".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_LINE_BYTES = 1 << 20  # the longest input line (its line ending not counted)


@dataclass(frozen=True)
class Item:
    """One input item.

    Attributes:
        index: its position among the items (0-based; comments and blank lines not counted).
        id: its id (the ``id_field`` value, or derived from ``data``).
        data: its fields, the template's variables.
        line: the 1-based line of the file where it starts.
    """

    index: int
    id: str
    data: dict[str, Any]
    line: int


def content_id(data: dict[str, Any]) -> str:
    """The id derived from an item's content: 12 hex digits of SHA-256 of canonical JSON."""
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", errors="surrogatepass")).hexdigest()[:12]


def resolve_format(path: Path, format: str = "auto") -> str:
    """The format to read ``path`` with: ``format`` itself, or guessed from the extension.

    Raises:
        ConfigError: an unknown format name or extension.
    """
    if format == "auto":
        found = _BY_SUFFIX.get(path.suffix.lower())
        if found is None:
            raise ConfigError(
                f"{path}: cannot tell the input format from the extension {path.suffix!r}; "
                f"set the format to one of {', '.join(FORMATS)}"
            )
        return found
    if format not in FORMATS:
        raise ConfigError(
            f"{path}: unknown input format {format!r}; expected auto, {', '.join(FORMATS)}"
        )
    return format


def read_items(
    path: Path,
    *,
    format: str = "auto",
    id_field: str | None = None,
    text_field: str = "text",
) -> Iterator[Item]:
    """Stream the items of an input file.

    The format and the file's existence are checked at once; every other problem is raised
    while iterating, when its line is reached.

    Args:
        path: the input file (UTF-8; a leading byte-order mark is ignored).
        format: ``auto``, ``lines``, ``csv`` or ``jsonl``.
        id_field: the field holding each item's id; ``None`` derives ids from content.
        text_field: the field a ``lines`` item's text goes into.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, malformed, has an item
            without its ``id_field``, or holds no item at all.
    """
    kind = resolve_format(path, format)
    if not path.exists():
        raise ConfigError(f"{path}: input file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: cannot read input file: it is a directory")
    return _items(path, kind, id_field, text_field)


def scan_items(
    path: Path,
    *,
    format: str = "auto",
    id_field: str | None = None,
    text_field: str = "text",
) -> int:
    """Read the whole input once to check it, in memory that does not grow with the input:
    ids are compared exactly through a temporary on-disk table (:mod:`runner._repeats`).

    Returns:
        The number of items.

    Raises:
        ConfigError: as :func:`read_items`, or two items share an id (the first repeat in
            the file, naming both lines).
    """
    count = 0

    def ids() -> Iterator[tuple[str, int]]:
        nonlocal count
        for item in read_items(path, format=format, id_field=id_field, text_field=text_field):
            count += 1
            yield item.id, item.line

    repeat = first_repeat(ids())
    if repeat is not None:
        raise ConfigError(
            f"{path}:{repeat.line}: duplicate id {repeat.value!r} "
            f"(first seen on line {repeat.first_line})"
        )
    return count


def _items(path: Path, kind: str, id_field: str | None, text_field: str) -> Iterator[Item]:
    try:
        with path.open("rb") as file:
            records = _RECORDS[kind](path, _decoded(path, file), text_field)
            index = -1
            for index, (line, data) in enumerate(records):
                yield Item(
                    index=index, id=_item_id(path, line, data, id_field), data=data, line=line
                )
    except PermissionError as exc:
        raise ConfigError(f"{path}: cannot read input file: permission denied") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read input file: {exc.strerror or exc}") from exc
    if index < 0:
        raise ConfigError(f"{path}: no items in the input file")


def _decoded(path: Path, file: IO[bytes]) -> Iterator[str]:
    """The file's lines as text (line endings kept), failing on the first line that is longer
    than :data:`MAX_LINE_BYTES`, holds a NUL byte or is not UTF-8."""
    number = 0
    while raw := file.readline(MAX_LINE_BYTES + 2):  # room for the limit and a CR LF
        number += 1
        if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
            raise ConfigError(
                f"{path}:{number}: line longer than {MAX_LINE_BYTES >> 20} MiB "
                "(the limit of one input line)"
            )
        if b"\0" in raw:
            raise ConfigError(
                f"{path}:{number}: NUL byte at column {raw.index(0) + 1} (not a text file?)"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}:{number}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
            ) from exc
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield text


def _lines(
    path: Path, lines: Iterator[str], text_field: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in enumerate(lines, start=1):
        text = text.rstrip("\r\n")
        if text.strip() and not text.startswith("#"):
            yield number, {text_field: text}


def _jsonl(
    path: Path, lines: Iterator[str], text_field: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON: {_reason(exc)}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
        yield number, data


def _csv(path: Path, lines: Iterator[str], text_field: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(lines, strict=True)  # an unclosed quote must not swallow the rest
    start = 1  # the line where the record being read starts
    try:
        header = next((row for row in reader if row), None)  # blank lines before it skipped
        if header is None:
            return
        header_line = reader.line_num
        for name in header:
            if header.count(name) > 1:
                raise ConfigError(f"{path}:{header_line}: duplicate column {name!r} in the header")
        start = reader.line_num + 1
        for row in reader:
            if row:
                if len(row) != len(header):
                    raise ConfigError(
                        f"{path}:{start}: expected {len(header)} fields (as the header), "
                        f"got {len(row)}"
                    )
                yield start, dict(zip(header, row, strict=True))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ConfigError(f"{path}:{start}: bad CSV: {exc}") from exc


_RECORDS = {"lines": _lines, "jsonl": _jsonl, "csv": _csv}


def _item_id(path: Path, line: int, data: dict[str, Any], id_field: str | None) -> str:
    if id_field is None:
        return content_id(data)
    if id_field not in data:
        raise ConfigError(f"{path}:{line}: no id field {id_field!r} in this item")
    value = data[id_field]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(
            f"{path}:{line}: id field {id_field!r} must be a string or a number, "
            f"got {type(value).__name__}"
        )
    text = str(value)
    if not text.strip():
        raise ConfigError(f"{path}:{line}: id field {id_field!r} is empty")
    return text


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return " ".join(str(exc).split())


def item_metadata(data: dict[str, Any], fields: list[str], *, where: str) -> dict[str, Any] | None:
    """The fields ``job.metadata`` names, copied untouched from an item (``None``: no fields).

    Raises:
        ConfigError: ``where`` (``file:line``) and the field the item lacks.
    """
    if not fields:
        return None
    missing = next((name for name in fields if name not in data), None)
    if missing is not None:
        raise ConfigError(f"{where}: no field {missing!r} (job.metadata) in this item")
    return {name: data[name] for name in fields}
