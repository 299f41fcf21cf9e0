"""What the :class:`~runner.node._backend.Backend` hands back, and how it reads llama-server.

:class:`Prompt` is a prompt tokenized and fitted to the context, :class:`Generation` one
finished generated sequence, :class:`BackendError` a failure that is the node's fault (not
the caller's). The functions turn llama-server's ``/completion`` answers and error bodies
into these: :func:`read_generation` for a final answer, :func:`failure` for a non-200 one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._api import ApiError


@dataclass(frozen=True)
class Prompt:
    """Prompt tokens ready for the model.

    Attributes:
        tokens: what the model evaluates.
        truncated: the beginning of the prompt was dropped to fit the context.
    """

    tokens: list[int]
    truncated: bool = False


@dataclass(frozen=True)
class Generation:
    """One finished generation.

    Attributes:
        text: the generated text, without the stop string that ended it.
        output_tokens: tokens generated (the end-of-generation token is not counted).
        finish_reason: ``stop`` (end token or stop string) or ``length`` (max_tokens).
    """

    text: str
    output_tokens: int
    finish_reason: str


class BackendError(Exception):
    """llama.cpp's server failed a request we built (not the caller's fault)."""


def read_generation(answer: Mapping[str, Any]) -> Generation:
    """A Generation from llama-server's final ``/completion`` object."""
    stop_type = answer.get("stop_type", "")
    count = int(answer.get("tokens_predicted", 0))
    if stop_type == "eos":
        count -= 1  # llama.cpp counts the end-of-generation token; TextSynth does not
    return Generation(
        text=str(answer.get("content", "")),
        output_tokens=max(0, count),
        finish_reason="length" if stop_type == "limit" else "stop",
    )


def failure(answer: httpx.Response) -> Exception:
    """A non-200 answer of the engine: the caller's fault (4xx) or ours."""
    text = message(answer)
    if 400 <= answer.status_code < 500:
        field = "grammar" if "grammar" in text else "request"
        return ApiError(400, f"{field}: llama.cpp refused it: {text}")
    return BackendError(f"llama.cpp answered {answer.status_code}: {text}")


def message(answer: httpx.Response) -> str:
    """The error message of a non-200 answer, on one line."""
    try:
        return error_text(answer.json())
    except ValueError:
        return answer.text[:200]


def error_text(body: Any) -> str:
    """The message of a llama-server error body (``{"error": {"message": ...}}`` or looser)."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message", error)
    return " ".join(str(error).split())[:300]
