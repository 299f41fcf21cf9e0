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
    """

    api: Api
    style: Style
    engine: str
    prompt: str
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    seed: int | None = None

    def with_seed(self, seed: int) -> GenerationRequest:
        """The same request with another seed (a content retry)."""
        return replace(self, seed=seed)

    def key(self) -> str:
        """A stable hash of everything that shapes the answer except the seed and the node.

        Two requests with the same key ask for the same work, so an accepted result for one
        can be reused for the other.
        """
        payload = {
            "api": self.api.value,
            "style": self.style.value,
            "engine": self.engine,
            "prompt": self.prompt,
            "system": self.system,
            "params": {k: v for k, v in sorted(self.params.items()) if v is not None},
            "schema": self.schema,
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
        output_tokens: generated tokens, when the node reports them.
        truncated_prompt: the node dropped the beginning of the prompt.
        finish_reason: ``stop``, ``length``... when the node reports it.
    """

    text: str
    texts: tuple[str, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    truncated_prompt: bool = False
    finish_reason: str | None = None
