"""``batch_output.jsonl`` and ``batch_errors.jsonl``, in the OpenAI Batch output format, built
from a batch run's ``results.jsonl`` at the end of the run (and by ``python -m runner.merge``
from a sharded job's merged results).

One line per input line, every ``custom_id`` in exactly one of the two files, in input
order. An accepted item goes to the output, with ``response.status_code`` 200 and a
``response.body`` shaped like a ChatCompletion or a Completion (``usage`` from the node's
token counts). Everything else goes to the errors, as OpenAI writes it: an item the node
refused with an HTTP status (its record's ``http_status``: 400, 500...) has a ``response``
with that ``status_code`` and an OpenAI error object as its ``body``, and ``error: null``;
an item that failed without an HTTP answer (no connection, a timeout, a body that was not
an answer, an answer refused by the job's checks) has ``response: null`` and an ``error``
with ``code`` ``request_failed``; an item the run did not finish, ``not_finished`` (in an
incomplete merge also a missing shard's: such an item has no record, and is named by its line
of the job's input file, checked against the shards' fingerprint of it).

Like :mod:`runner._output`, memory does not grow with the run: one pass over
``results.jsonl`` notes each index's latest record's offset in a temporary SQLite table (an
accepted record wins over a failed one), then the items are streamed again in input order
and each record read back by offset. Both files are replaced atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ._batch import URLS
from ._errors import ConfigError
from ._files import replace_file
from ._inputs import Item, read_items
from ._journal import read_records
from ._output import read_record_at
from ._request import Style
from ._shard import input_fingerprint
from ._work import Work

OUTPUT = "batch_output.jsonl"
ERRORS = "batch_errors.jsonl"
FILES = (OUTPUT, ERRORS)
NOT_FINISHED = "the run ended before this line was answered"  # a not_finished line's message
NOT_MERGED = "no merged shard holds a result for this line (its shard is missing or unfinished)"
_FINISH = {"stop", "length"}  # finish reasons both OpenAI types take; others read as "stop"


@dataclass(frozen=True)
class BatchItem:
    """What a line of the batch files takes from its input line.

    Attributes:
        custom_id: the line's ``custom_id``.
        index: its position in the input.
        key: its resume key (request ids are made of it when the record has none).
        chat: a ``/v1/chat/completions`` line (else ``/v1/completions``).
        model: the model the bodies name (``model.engine``).
    """

    custom_id: str
    index: int
    key: str
    chat: bool
    model: str

    @classmethod
    def of(cls, work: Work) -> BatchItem:
        """The item of a run's work."""
        chat = work.request.style is Style.chat
        return cls(work.id, work.index, work.key, chat, work.request.engine)


def write_batch_files(run_dir: Path, results: Path, works: Iterable[Work]) -> Path:
    """Write both files into ``run_dir`` from ``results`` for the items ``works`` streams
    (the plan's, in input order). Returns the output file's path."""
    with _latest(results) as db, open(results, "rb") as f:
        records = ((item, _record_of(db, f, item.index)) for item in map(BatchItem.of, works))
        _write(run_dir, records)
    return run_dir / OUTPUT


def write_merged_batch_files(
    run_dir: Path, results: Path, *, items: int, model: str, source: Path | None = None
) -> Path:
    """Write both files into ``run_dir`` from the merged ``results`` of a sharded job of
    ``items`` items whose bodies name ``model``. Returns the output file's path.

    An item with a record is named by it (its ``custom_id``, and its input line's ``url``).
    An item without one (a missing shard's, or one its shard did not finish: only in a merge
    with ``--allow-incomplete``) is named by its line of ``source``, the job's input file
    (checked by :func:`check_merge_input`), and goes to the errors as ``not_finished``;
    without ``source`` every item must have a record."""
    with _latest(results) as db, open(results, "rb") as f:
        if source is None:
            found = ((index, _record_of(db, f, index)) for index in range(items))
            lines = (
                (_recorded_item(index, record, model), record)
                for index, record in found
                if record is not None
            )
        else:
            lines = (
                _named(item, _record_of(db, f, item.index), model)
                for item in read_items(source, format="jsonl", id_field="custom_id")
            )
        _write(run_dir, lines, unfinished=NOT_MERGED)
    return run_dir / OUTPUT


def check_merge_input(path: Path, *, fingerprint: str | None, lacking: int) -> None:
    """Check that ``path`` is the input file the shards ran (its lines' fingerprint is the
    shards' ``fingerprint``, :func:`runner._shard.input_fingerprint`), to name the
    ``lacking`` lines without a result.

    Raises:
        ConfigError: one line naming the file and the problem (missing, unreadable, not the
            shards' file, or shards that record no fingerprint).
    """
    why = f"the job's input file names the {lacking} lines without a result"
    if not fingerprint:
        raise ConfigError(
            f"not merged: {why}, but the shards record no input fingerprint (run by an older "
            "runner) to check one against: run the shards again (each resumes) to merge them"
        )
    try:
        lines = read_items(path, format="jsonl", id_field="custom_id")
        found = input_fingerprint((item.index, item.data) for item in lines)
    except ConfigError as exc:
        raise ConfigError(
            f"not merged: {why}: {exc}; pass --input PATH, the file the shards ran"
        ) from None
    if found != fingerprint:
        raise ConfigError(
            f"not merged: {why}: {path} is not the file the shards ran (its lines' fingerprint "
            f"is {found}, the shards' {fingerprint}): pass --input PATH, the file the shards ran"
        )


def _named(item: Item, record: dict[str, Any] | None, model: str) -> tuple[BatchItem, Any]:
    """An input line's item, and its record (``None``: it has none)."""
    if record is not None:
        return _recorded_item(item.index, record, model), record
    chat = URLS.get(str(item.data.get("url"))) is Style.chat
    return BatchItem(item.id, item.index, "", chat, model), None


def _recorded_item(index: int, record: dict[str, Any], model: str) -> BatchItem:
    """The item a record was made for (its input is the batch line)."""
    line = record.get("input")
    url = line.get("url") if isinstance(line, dict) else None
    chat = isinstance(url, str) and URLS.get(url) is Style.chat
    return BatchItem(str(record.get("id")), index, str(record.get("key", "")), chat, model)


def _record_of(db: sqlite3.Connection, f: BinaryIO, index: int) -> dict[str, Any] | None:
    """The latest record of ``index`` (an accepted one first), or None."""
    row = db.execute("SELECT offset FROM latest WHERE idx = ?", (index,)).fetchone()
    return read_record_at(f, row[0]) if row is not None else None


def _write(
    run_dir: Path,
    lines: Iterable[tuple[BatchItem, dict[str, Any] | None]],
    *,
    unfinished: str = NOT_FINISHED,
) -> None:
    """Write each item's line into the output or the errors (``unfinished``: the message of
    a line without a record)."""
    with replace_file(run_dir / OUTPUT) as out, replace_file(run_dir / ERRORS) as errors:
        for item, record in lines:
            line = output_line(item, record, unfinished=unfinished)
            response = line["response"]
            answered = response is not None and response["status_code"] == 200
            (out if answered else errors).write(json.dumps(line, ensure_ascii=False) + "\n")


def output_line(
    item: BatchItem, record: dict[str, Any] | None, *, unfinished: str = NOT_FINISHED
) -> dict[str, Any]:
    """One line of the output (an accepted ``record``) or of the errors (anything else;
    ``unfinished``: the message of a line without a record)."""
    line_id = "batch_req_" + hashlib.sha256(item.custom_id.encode()).hexdigest()[:24]
    base = {"id": line_id, "custom_id": item.custom_id}
    if record is None:
        error = {"code": "not_finished", "message": unfinished}
        return {**base, "response": None, "error": error}
    request_id = "req_" + str(record.get("key", item.key))[:32]
    if record.get("status") == "ok":
        status, body = 200, response_body(item, record)
    else:
        message = str(record.get("error") or "")
        http_status = record.get("http_status")
        if type(http_status) is not int or http_status == 200:  # no HTTP answer failed it
            error = {"code": "request_failed", "message": message}
            return {**base, "response": None, "error": error}
        status, body = http_status, error_body(http_status, message)
    response = {"status_code": status, "request_id": request_id, "body": body}
    return {**base, "response": response, "error": None}


def error_body(status: int, message: str) -> dict[str, Any]:
    """The body of a line the node refused with ``status``: an OpenAI error object."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def response_body(item: BatchItem, record: dict[str, Any]) -> dict[str, Any]:
    """A ChatCompletion (chat lines) or Completion (completion lines) from an accepted
    record."""
    answer = record.get("answer")
    texts = answer if isinstance(answer, list) else [record.get("text") or ""]
    reason = record.get("finish_reason")
    finish = reason if reason in _FINISH else "stop"
    prompt_tokens = record.get("input_tokens") or 0
    completion_tokens = record.get("output_tokens") or 0
    chat = item.chat
    choices: list[dict[str, Any]] = [
        (
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
            }
            if chat
            else {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
        )
        for i, text in enumerate(texts)
    ]
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + str(record.get("key", item.key))[:24],
        "object": "chat.completion" if chat else "text_completion",
        "created": _created(record.get("finished_at")),
        "model": item.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _created(finished_at: Any) -> int:
    try:
        return int(dt.datetime.fromisoformat(str(finished_at)).timestamp())
    except ValueError:
        return 0


@contextlib.contextmanager
def _latest(results: Path) -> Iterator[sqlite3.Connection]:
    """A temporary table ``latest(idx, offset, ok)``: per index, its latest record, an
    accepted one before any failed one."""
    db = sqlite3.connect("", isolation_level=None)
    try:
        db.execute("PRAGMA temp_store = FILE")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("CREATE TABLE latest (idx INTEGER PRIMARY KEY, offset INTEGER, ok INTEGER)")
        db.execute("BEGIN")
        rows = (
            (record["index"], offset, int(record.get("status") == "ok"))
            for offset, record in read_records(results)
            if type(record.get("index")) is int and record.get("status") in ("ok", "failed")
        )
        db.executemany(
            "INSERT INTO latest VALUES (?, ?, ?) ON CONFLICT(idx) DO UPDATE SET "
            "offset = excluded.offset, ok = excluded.ok WHERE excluded.ok >= latest.ok",
            rows,
        )
        yield db
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.close()
