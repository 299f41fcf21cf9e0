"""Likelihood jobs (``answer: choice``): pick a label by how likely the model finds it.

No text is generated. For each item the node scores every label as a continuation of the
rendered prompt (TextSynth ``/logprob``, one request per label, all on the node of the
item's attempt: :meth:`runner._client.NodeClient.generate`), and the answer is the label with
the highest score and the softmax of the scores over the labels. A score is the label's
summed log-probability, or with ``choice_normalise: tokens`` that sum divided by the label's
token count (a per-token mean, so long labels are not penalised for their length).

Pure functions: the labels' checks (:func:`check_labels`, :func:`labels_of`), the softmax
(:func:`probabilities`) and the job's acceptor (:func:`choice_acceptor`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._config import AnswerFormat, JobConfig, JobKind
from ._errors import AnswerError, ConfigError
from ._request import Api, ChoiceNormalise, Completion, LabelScore
from ._work import Accepted, Acceptor

FIELD_SEPARATOR = "|"  # between the labels of a choice_field given as one string (csv, lines)


def check_job(job: JobConfig, *, api: Api) -> None:
    """Check a job's choice keys at start-up, before anything is sent.

    Raises:
        ConfigError: a choice job on OpenAI-compatible nodes (no ``/logprob`` there), in a
            batch job, with generation keys (``schema``, ``system``, ``candidates``), without
            exactly one of ``choices`` and ``choice_field``, or with bad labels; or choice keys
            on a job whose answer is not ``choice``.
    """
    if job.answer is not AnswerFormat.choice:
        for key in ("choices", "choice_field"):
            if getattr(job, key) is not None:
                raise ConfigError(
                    f"job.{key} is set but job.answer is '{job.answer.value}' "
                    "(set job.answer=choice)"
                )
        return
    if api is Api.openai:
        raise ConfigError(
            "job.answer=choice is not supported on OpenAI-compatible nodes (model.api=openai): "
            "it needs the TextSynth /logprob endpoint; use a textsynth model and cluster"
        )
    if job.kind is JobKind.batch:
        raise ConfigError("job.answer=choice is not supported by job.kind=batch")
    if job.schema or job.system or job.candidates != 1:
        key = "schema" if job.schema else "system" if job.system else "candidates"
        raise ConfigError(
            f"job.{key}: a choice job generates nothing (it scores the prompt, as raw text, "
            "followed by each label): leave it unset"
        )
    if (job.choices is None) == (job.choice_field is None):
        raise ConfigError(
            "a choice job needs exactly one of job.choices (the labels) and job.choice_field "
            "(the input field holding each item's labels)"
        )
    if job.choices is not None:
        check_labels(job.choices, where="job.choices")


def check_labels(labels: Sequence[str], *, where: str) -> tuple[str, ...]:
    """The labels as a tuple, once checked: at least two, none empty, no repeats.

    Args:
        labels: the labels.
        where: what names them in the error (``job.choices``, an item and its field).

    Raises:
        ConfigError: one line naming ``where`` and what is wrong.
    """
    if any(not isinstance(label, str) for label in labels):
        raise ConfigError(f"{where}: every label must be a string, got {list(labels)!r}")
    if len(labels) < 2:
        raise ConfigError(f"{where}: a choice needs at least 2 labels, got {list(labels)!r}")
    if any(not label.strip() for label in labels):
        raise ConfigError(f"{where}: a label is empty in {list(labels)!r}")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ConfigError(f"{where}: label {label!r} repeats in {list(labels)!r}")
        seen.add(label)
    return tuple(labels)


def labels_of(value: Any, *, where: str) -> tuple[str, ...]:
    """An item's labels from its ``choice_field``: a list of strings (JSONL), or one string
    of labels separated by ``|`` (CSV, lines), each stripped of surrounding spaces.

    Raises:
        ConfigError: the value is missing or neither, or its labels fail :func:`check_labels`.
    """
    if isinstance(value, str):
        return check_labels([part.strip() for part in value.split(FIELD_SEPARATOR)], where=where)
    if isinstance(value, list):
        return check_labels(value, where=where)
    kind = "missing" if value is None else f"a {type(value).__name__}"
    raise ConfigError(f"{where}: expected a list of labels or 'a|b|...' text, got {kind}")


def probabilities(scores: Sequence[LabelScore], normalise: ChoiceNormalise) -> dict[str, float]:
    """The softmax of the labels' scores, label → probability, in the labels' order.

    A score is the summed log-probability (``none``) or its mean per token (``tokens``).
    Computed from the largest score down, so very negative log-probabilities do not
    underflow; the probabilities sum to 1 up to rounding.
    """
    if not scores:
        raise ValueError("no scores")
    values = [_score(s, normalise) for s in scores]
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = math.fsum(weights)
    return {s.label: w / total for s, w in zip(scores, weights, strict=True)}


def _score(score: LabelScore, normalise: ChoiceNormalise) -> float:
    if normalise is ChoiceNormalise.tokens:
        return score.logprob / max(1, score.num_tokens)
    return score.logprob


def choice_acceptor(normalise: ChoiceNormalise) -> Acceptor:
    """The acceptor of choice jobs: ``{"label": best, "probabilities": {label: p}}``; the
    first label wins a tie. An answer without scores (not a scoring request) is refused."""

    def accept(completion: Completion) -> Accepted:
        if not completion.scores:
            raise AnswerError("a choice job's answer has no label scores")
        probs = probabilities(completion.scores, normalise)
        best = max(probs, key=probs.__getitem__)  # max keeps the first of equal values
        return Accepted({"label": best, "probabilities": probs})

    return accept
