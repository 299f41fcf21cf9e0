"""What is asked of a node and what comes back, independent of the wire protocol.

A :class:`GenerationRequest` is built once per item from the job; the protocol modules
(``_textsynth``, ``_openai``) turn it into an HTTP body and turn the answer into a
:class:`Completion`. The request's :meth:`~GenerationRequest.key` identifies the work for
resume: it covers everything that shapes the answer except the seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class Style(Enum):
    """How a model is prompted: a chat template applied by the server, or raw completion."""

    chat = "chat"
    completion = "completion"


class Api(Enum):
    """The wire protocol a node speaks."""

    textsynth = "textsynth"
    openai = "openai"


class ChoiceNormalise(Enum):
    """How a choice job turns each label's log-probability into its score (runner/_choice.py)."""

    none = "none"  # the summed log-probability of the label's tokens
    tokens = "tokens"  # that sum divided by the label's token count


@dataclass(frozen=True)
class Choices:
    """A scoring request's labels: each is scored as a continuation of the prompt.

    Attributes:
        labels: the labels, at least two, unique, in the job's order.
        prefix: put before each label in its continuation (``" "``: ``"... is" + " drama"``).
        normalise: how the node's log-probabilities become scores; not sent, but it shapes
            the answer, so it is part of the resume key.
    """

    labels: tuple[str, ...]
    prefix: str = " "
    normalise: ChoiceNormalise = ChoiceNormalise.none

    def continuation(self, label: str) -> str:
        """The text scored after the prompt for ``label``."""
        return self.prefix + label


@dataclass(frozen=True)
class GenerationRequest:
    """One generation asked of a node.

    Attributes:
        api: the protocol used to send it.
        style: chat (``prompt`` is the user turn, ``system`` the optional system prompt) or
            completion (``prompt`` is the text to continue).
        engine: the engine id (TextSynth URL path) or model name (OpenAI ``model``).
        prompt: the rendered prompt.
        system: the rendered system prompt, chat only.
        params: sampling parameters in TextSynth names (``max_tokens``, ``temperature``,
            ``top_k``, ``top_p``, ``stop``, ``n``, penalties...). ``None`` values are omitted.
        schema: a JSON Schema to constrain decoding with, when the backend supports it.
        seed: the RNG seed sent with this attempt.
        messages: a whole chat (user and assistant turns, alternating, ending with the
            user's; ``prompt`` is its last turn), when there is more than one turn: an
            OpenAI Batch line (:mod:`runner._batch`).
        body: an OpenAI request body sent as it is to OpenAI-compatible nodes (``model``
            replaced by ``engine``): an OpenAI Batch line.
        choices: set for a choice job: nothing is generated; the node scores each label
            after ``prompt`` (raw text, whatever the style) and answers with the scores.
    """

    api: Api
    style: Style
    engine: str
    prompt: str
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    seed: int | None = None
    messages: tuple[str, ...] | None = None
    body: dict[str, Any] | None = None
    choices: Choices | None = None

    def with_seed(self, seed: int) -> GenerationRequest:
        """The same request with another seed (a content retry)."""
        return replace(self, seed=seed)

    def key(self) -> str:
        """A stable hash of everything that shapes the answer except the seed and the node.

        Two requests with the same key ask for the same work, so an accepted result for one
        can be reused for the other.
        """
        payload: dict[str, Any] = {
            "api": self.api.value,
            "style": self.style.value,
            "engine": self.engine,
            "prompt": self.prompt,
            "system": self.system,
            "params": {k: v for k, v in sorted(self.params.items()) if v is not None},
            "schema": self.schema,
        }
        # only when set, so the keys of every other request stay what they were
        if self.messages is not None:
            payload["messages"] = list(self.messages)
        if self.body is not None:
            payload["body"] = self.body
        if self.choices is not None:
            payload["choices"] = {
                "labels": list(self.choices.labels),
                "prefix": self.choices.prefix,
                "normalise": self.choices.normalise.value,
            }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Completion:
    """A node's answer to one request.

    Attributes:
        text: the generated text (the first one when several were asked for).
        texts: every generated text (``n`` > 1); ``[text]`` otherwise.
        input_tokens: prompt tokens, when the node reports them.
        output_tokens: generated tokens, when the node reports them (every text's, summed).
        truncated_prompt: the node dropped the beginning of the prompt.
        finish_reason: ``stop``, ``length``... when the node reports it (the first text's;
            the open TextSynth node says ``length`` if any of the ``n`` texts hit max_tokens).
        finish_reasons: one per text, when the node reports each (OpenAI's choices);
            ``()`` otherwise.
        scores: a scoring request's answer: one per label, in the labels' order.
    """

    text: str
    texts: tuple[str, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    truncated_prompt: bool = False
    finish_reason: str | None = None
    finish_reasons: tuple[str | None, ...] = ()
    scores: tuple[LabelScore, ...] = ()


@dataclass(frozen=True)
class LabelScore:
    """How likely a node finds one label after the prompt (TextSynth ``/logprob``).

    Attributes:
        label: the label.
        logprob: the summed log-probability of its continuation's tokens.
        num_tokens: how many tokens the continuation has.
        is_greedy: greedy decoding would produce the continuation.
        input_tokens: tokens the node read (context and continuation), when it says.
    """

    label: str
    logprob: float
    num_tokens: int
    is_greedy: bool = False
    input_tokens: int | None = None
