"""What the engine works on and what it reports, apart from how it schedules.

:class:`Work` is one item to run; an :data:`Acceptor` checks an answer's content and returns
:class:`Accepted`; :class:`RequestTrace` describes one request after it ended; a
:class:`Snapshot` is the engine's progress at one moment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._request import Completion, GenerationRequest


@dataclass(frozen=True)
class Work:
    """One item to run: its identity, its input and the request it becomes.

    Attributes:
        id: the item's stable id.
        index: its position in the input.
        input: the input fields (written back into its record).
        request: the request to send, carrying the item's base seed.
        key: ``request.key()``, the resume key.
        metadata: fields carried untouched into its record (``job.metadata``), or None.
    """

    id: str
    index: int
    input: dict[str, Any]
    request: GenerationRequest
    key: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Accepted:
    """An answer that passed the job's checks: the value to keep and how it was obtained.

    Attributes:
        answer: the value to keep.
        step: the JSON ladder step (strict / extracted / repaired); ``None`` for text.
        candidate: which of the request's answers (``n`` > 1) it is, 0-based.
        candidate_errors: why each answer before it was refused, one line each.
    """

    answer: Any
    step: str | None = None
    candidate: int = 0
    candidate_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestTrace:
    """One request as it happened, for timelines and benchmarks.

    Attributes:
        node: the node it went to.
        item: the work item's id.
        started: ``trio.current_time()`` when it was sent.
        ended: when it ended.
        outcome: ``ok``; ``rejected`` (the answer failed the job's checks); ``cancelled`` (a
            hedge that lost the race) or ``discarded`` (answered after another copy won);
            ``busy`` (the node said "come back later", no failure); or the failure, named
            as the failure policy names it (:class:`runner._policy.Fault`): ``server``,
            ``refused``, ``bad_request``, ``malformed``, ``transport``, ``timeout``.
        final: this request settled the item (its accepted answer, or the last failure).
        output_tokens: tokens generated, when the node said.
    """

    node: str
    item: str
    started: float
    ended: float
    outcome: str
    final: bool
    output_tokens: int | None = None


Acceptor = Callable[[Completion], Accepted]
"""Checks an answer's content; raises :class:`~runner._errors.AnswerError` to ask for a new
seed. The acceptors of text and JSON jobs are in :mod:`runner._acceptance`."""


@dataclass
class Snapshot:
    """The engine's progress at one moment (for the progress display)."""

    done: int
    ok: int
    failed: int
    in_flight: dict[str, int]
    errors: dict[str, int]
    benched: list[str]
    answers: int = 0  # answers received (accepted or not, hedged copies included)
    output_tokens: int = 0  # tokens in them
