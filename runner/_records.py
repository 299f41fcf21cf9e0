"""Result records: one JSON object per finished item, as written to ``results.jsonl``.

Pure functions: they build the dict; the journal writes it. Fields common to both kinds:
``id``, ``index``, ``key`` (the resume key), ``status`` (``ok`` or ``failed``), ``input``,
``attempts`` (requests sent for the item, hedges included), ``seeds`` (every seed tried),
``errors`` (what went wrong on the way), ``finished_at`` (UTC, ISO 8601).

``ok`` records add ``answer`` (text, or the parsed object of a JSON job), ``text`` (the raw
answer), ``repair`` (the JSON ladder step: ``strict``, ``extracted`` or ``repaired``; ``null``
for text jobs), ``node``, ``seed`` (of the accepted answer), ``input_tokens``,
``output_tokens``, ``finish_reason``, ``truncated_prompt`` and ``latency_s``.
``failed`` records add ``error`` (the last reason, one line) and ``text`` (the last raw
answer, if any arrived).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._request import Completion
    from ._work import Work


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _base(work: Work, status: str) -> dict[str, Any]:
    return {"id": work.id, "index": work.index, "key": work.key, "status": status}


def ok(
    work: Work,
    *,
    answer: Any,
    step: str | None,
    completion: Completion,
    node: str,
    seed: int,
    latency: float,
    attempts: int,
    seeds: list[int],
    errors: list[str],
    text: str | None,
) -> dict[str, Any]:
    """The record of an accepted answer."""
    return {
        **_base(work, "ok"),
        "input": work.input,
        "answer": answer,
        "text": completion.text,
        "repair": step,
        "node": node,
        "seed": seed,
        "attempts": attempts,
        "seeds": seeds,
        "errors": errors,
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "finish_reason": completion.finish_reason,
        "truncated_prompt": completion.truncated_prompt,
        "latency_s": round(latency, 4),
        "finished_at": _now(),
    }


def failed(
    work: Work,
    *,
    error: str,
    attempts: int,
    seeds: list[int],
    errors: list[str],
    text: str | None,
) -> dict[str, Any]:
    """The record of an item that could not be answered."""
    return {
        **_base(work, "failed"),
        "input": work.input,
        "error": error,
        "text": text,
        "attempts": attempts,
        "seeds": seeds,
        "errors": errors,
        "finished_at": _now(),
    }


def reused(record: dict[str, Any], work: Work) -> dict[str, Any]:
    """An accepted record of an earlier run, carried into this run for the same work."""
    return {**record, "id": work.id, "index": work.index, "input": work.input, "reused": True}
