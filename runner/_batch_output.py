"""``batch_output.jsonl`` and ``batch_errors.jsonl``, in the OpenAI Batch output format, built
from a batch run's ``results.jsonl`` at the end of the run.

One line per input line, every ``custom_id`` in exactly one of the two files, in input
order: an accepted item in the output, with a ``response.body`` shaped like a ChatCompletion
or a Completion (``usage`` from the node's token counts); a failed or unfinished item in the
errors, with ``response: null`` and an ``error`` (``code``: ``request_failed`` or
``not_finished``). Like :mod:`runner._output`, memory does not grow with the run: one pass
over ``results.jsonl`` notes each index's latest record's offset in a temporary SQLite table
(an accepted record wins over a failed one), then the input's items are streamed again and
each record read back by offset. Both files are replaced atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._files import replace_file
from ._journal import read_records
from ._output import read_record_at
from ._request import Style
from ._work import Work

OUTPUT = "batch_output.jsonl"
ERRORS = "batch_errors.jsonl"
FILES = (OUTPUT, ERRORS)
_FINISH = {"stop", "length"}  # finish reasons both OpenAI types take; others read as "stop"


def write_batch_files(run_dir: Path, results: Path, works: Iterable[Work]) -> Path:
    """Write both files into ``run_dir`` from ``results`` for the items ``works`` streams
    (the plan's, in input order). Returns the output file's path."""
    with (
        _latest(results) as db,
        open(results, "rb") as f,
        replace_file(run_dir / OUTPUT) as out,
        replace_file(run_dir / ERRORS) as errors,
    ):
        for work in works:
            row = db.execute("SELECT offset FROM latest WHERE idx = ?", (work.index,)).fetchone()
            record = read_record_at(f, row[0]) if row is not None else None
            line = output_line(work, record)
            target = out if line["error"] is None else errors
            target.write(json.dumps(line, ensure_ascii=False) + "\n")
    return run_dir / OUTPUT


def output_line(work: Work, record: dict[str, Any] | None) -> dict[str, Any]:
    """One line of the output (an accepted ``record``) or of the errors (anything else)."""
    line_id = "batch_req_" + hashlib.sha256(work.id.encode()).hexdigest()[:24]
    base = {"id": line_id, "custom_id": work.id}
    if record is None or record.get("status") != "ok":
        code = "not_finished" if record is None else "request_failed"
        message = "the run ended before this line was answered" if record is None else None
        error = {"code": code, "message": message or str(record.get("error") if record else "")}
        return {**base, "response": None, "error": error}
    response = {
        "status_code": 200,
        "request_id": "req_" + str(record.get("key", work.key))[:32],
        "body": response_body(work, record),
    }
    return {**base, "response": response, "error": None}


def response_body(work: Work, record: dict[str, Any]) -> dict[str, Any]:
    """A ChatCompletion (chat lines) or Completion (completion lines) from an accepted
    record."""
    answer = record.get("answer")
    texts = answer if isinstance(answer, list) else [record.get("text") or ""]
    reason = record.get("finish_reason")
    finish = reason if reason in _FINISH else "stop"
    prompt_tokens = record.get("input_tokens") or 0
    completion_tokens = record.get("output_tokens") or 0
    chat = work.request.style is Style.chat
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
        "id": ("chatcmpl-" if chat else "cmpl-") + str(record.get("key", work.key))[:24],
        "object": "chat.completion" if chat else "text_completion",
        "created": _created(record.get("finished_at")),
        "model": work.request.engine,
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
