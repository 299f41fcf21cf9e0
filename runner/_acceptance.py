"""Which answers a job keeps: the :data:`~runner._work.Acceptor` of text and JSON jobs.

A text job keeps any answer; a JSON job reads the answer with the JSON ladder and validates it
against the job's schema; with ``job.truncated=reject`` either refuses answers cut off by
``max_tokens`` that it could not take as they came. A refused answer raises
:class:`~runner._errors.AnswerError`, so the engine tries the item again with the next seed.
With ``job.candidates`` > 1 a request brings several answers: :func:`first_passing` keeps
the first the job's acceptor takes, and raises only when it takes none.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ._errors import AnswerError
from ._jsonladder import accept_json, compile_schema
from ._request import Completion
from ._work import Accepted, Acceptor


def accept_text(completion: Completion) -> Accepted:
    """The acceptor of text jobs: any answer is kept as it is."""
    return Accepted(completion.text)


def json_acceptor(schema: dict[str, Any], *, source: str) -> Acceptor:
    """The acceptor of JSON jobs: the JSON ladder, then schema validation."""
    validator = compile_schema(schema, source=source)

    def accept(completion: Completion) -> Accepted:
        answer = accept_json(completion.text, validator)
        return Accepted(answer.value, answer.step)

    return accept


def refusing_truncated(acceptor: Acceptor) -> Acceptor:
    """``acceptor``, refusing answers cut off by ``max_tokens`` (``finish_reason: length``)
    unless they were taken as they came (JSON read ``strict`` or ``extracted``): a repaired
    JSON answer or a text answer that hit the limit raises
    :class:`~runner._errors.AnswerError`, so the item is tried again with the next seed."""

    def accept(completion: Completion) -> Accepted:
        accepted = acceptor(completion)
        if completion.finish_reason == "length" and accepted.step not in ("strict", "extracted"):
            needs = ": its JSON would need repair" if accepted.step else ""
            raise AnswerError(
                f"answer cut off at max_tokens (finish_reason: length){needs}; "
                "refused by job.truncated=reject"
            )
        return accepted

    return accept


def first_passing(acceptor: Acceptor) -> Acceptor:
    """``acceptor``, applied to each of a completion's answers (``Completion.texts``, one per
    candidate of ``n``) in order: the first it takes is kept, marked with its index and why
    each before it was refused. Each answer is judged with its own ``finish_reason`` when the
    node says one per answer (OpenAI), else with the request's (TextSynth: ``length`` if any
    hit ``max_tokens``). When every answer is refused it raises
    :class:`~runner._errors.AnswerError` naming each reason, so the item is tried again with
    the next seed."""

    def accept(completion: Completion) -> Accepted:
        texts = completion.texts or (completion.text,)
        if len(texts) == 1:
            return acceptor(completion)
        errors: list[str] = []
        for index, text in enumerate(texts):
            reasons = completion.finish_reasons
            reason = reasons[index] if index < len(reasons) else completion.finish_reason
            one = replace(completion, text=text, texts=(text,), finish_reason=reason)
            try:
                accepted = acceptor(one)
            except AnswerError as exc:
                errors.append(f"candidate {index}: {' '.join(str(exc).split())}")
                continue
            return replace(accepted, candidate=index, candidate_errors=tuple(errors))
        raise AnswerError(
            f"all {len(texts)} candidates refused: {'; '.join(errors)}", reasons=errors
        )

    return accept
