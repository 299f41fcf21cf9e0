"""Result records: one JSON object per finished item, as written to ``results.jsonl``.

Pure functions: they build the dict; the journal writes it. Fields common to both kinds:
``id``, ``index``, ``key`` (the resume key), ``status`` (``ok`` or ``failed``), ``input``,
``attempts`` (requests sent for the item, hedges included), ``seeds`` (every seed tried),
``errors`` (what went wrong on the way), ``finished_at`` (UTC, ISO 8601); ``metadata`` (the
fields ``job.metadata`` names, or an OpenAI Batch line's ``metadata``) when the item has any.

``ok`` records add ``answer`` (text, or the parsed object of a JSON job), ``text`` (the raw
answer), ``repair`` (the JSON ladder step: ``strict``, ``extracted`` or ``repaired``; ``null``
for text jobs), ``node``, ``seed`` (of the accepted answer), ``input_tokens``,
``output_tokens``, ``finish_reason``, ``truncated_prompt`` and ``latency_s``. A job with
``candidates`` > 1 (``n`` answers per request) adds ``candidate`` (the 0-based index of the
kept answer, whose raw text is ``text``) and ``candidate_errors`` (why each answer before it
was refused, one line each); its ``output_tokens`` count every answer the request generated.
A choice job (``answer: choice``) adds ``choices``: each label's ``logprob``, ``num_tokens``
and ``is_greedy`` as the node gave them; its ``text`` is empty (nothing was generated).
``failed`` records add ``error`` (the last reason, one line), ``http_status`` (the HTTP
status of the node's answer that failed the item, e.g. 400 or 500; ``null`` when the last
failure had no HTTP answer: no connection, a timeout, a body that was not an answer, an
answer refused by the job's checks) and ``text`` (the last raw answer, if any arrived).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._request import Completion
    from ._work import Work


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _base(work: Work, status: str) -> dict[str, Any]:
    base = {"id": work.id, "index": work.index, "key": work.key, "status": status}
    return base if work.metadata is None else {**base, "metadata": work.metadata}


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
    candidate: int = 0,
    candidate_errors: Sequence[str] = (),
) -> dict[str, Any]:
    """The record of an accepted answer (``candidate``: which of the request's answers)."""
    texts = completion.texts or (completion.text,)
    chosen: dict[str, Any] = {}
    if (work.request.params.get("n") or 1) > 1:
        chosen = {"candidate": candidate, "candidate_errors": list(candidate_errors)}
    if completion.scores:  # a choice job: each label's score as the node gave it
        chosen["choices"] = [
            {
                "label": s.label,
                "logprob": s.logprob,
                "num_tokens": s.num_tokens,
                "is_greedy": s.is_greedy,
            }
            for s in completion.scores
        ]
    return {
        **_base(work, "ok"),
        "input": work.input,
        "answer": answer,
        "text": texts[candidate] if candidate < len(texts) else completion.text,
        **chosen,
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
    http_status: int | None = None,
) -> dict[str, Any]:
    """The record of an item that could not be answered (``http_status``: the status of the
    node's answer that failed it, when the last failure was an HTTP answer)."""
    return {
        **_base(work, "failed"),
        "input": work.input,
        "error": error,
        "http_status": http_status,
        "text": text,
        "attempts": attempts,
        "seeds": seeds,
        "errors": errors,
        "finished_at": _now(),
    }


def reused(record: dict[str, Any], work: Work) -> dict[str, Any]:
    """An accepted record of an earlier run, carried into this run for the same work."""
    carried = {**record, "id": work.id, "index": work.index, "input": work.input, "reused": True}
    if work.metadata is not None:
        carried["metadata"] = work.metadata  # this run's: an edited metadata field is not work
    return carried
