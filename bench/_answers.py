"""What a simulated node says: answer lengths, answer text and TextSynth framing.

Pure functions. An answer's length is a function of the request alone (its seed and its
prompt), so a run is reproducible whatever node serves it. A prompt may carry a marker such
as ``<<sim item=17 tokens=230>>``: ``tokens`` fixes the answer's length (benchmarks use it so
the lower bound is exact) and ``item`` names the item in the node's request log.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import random
import re
from collections.abc import Callable
from typing import Any

AnswerHook = Callable[[dict[str, Any], int], str]
"""``answer(body, n_tokens) -> text``: the text of an answer of ``n_tokens`` tokens."""

DEFAULT_MAX_TOKENS = 100  # the TextSynth default

_MARKER = re.compile(r"<<sim((?:\s+\w+=[^\s>]+)*)\s*>>")
_FILLER = (
    "the", "model", "answer", "of", "a", "long", "and", "quiet", "story", "about", "light",
    "in", "which", "every", "node", "keeps", "its", "own", "time", "while", "tokens", "flow",
    "through", "slow", "wires", "to", "patient", "clients", "that", "wait", "for", "it",
)  # fmt: skip


def load_answer_hook(reference: str | None) -> AnswerHook:
    """The answer hook named ``"module:function"`` (:func:`filler_answer` for ``None``)."""
    if not reference:
        return filler_answer
    module, _, name = reference.partition(":")
    hook: AnswerHook = getattr(importlib.import_module(module), name)
    return hook


def make_marker(**fields: object) -> str:
    """The marker text for ``fields`` (e.g. ``item=17, tokens=230``)."""
    return "<<sim " + " ".join(f"{k}={v}" for k, v in fields.items()) + ">>"


def parse_marker(prompt: str) -> dict[str, str]:
    """The ``key=value`` fields of the first marker in ``prompt`` (empty if none)."""
    match = _MARKER.search(prompt)
    if match is None:
        return {}
    return dict(pair.split("=", 1) for pair in match.group(1).split())


def prompt_text(body: dict[str, Any], *, chat: bool) -> str:
    """The text a request asks about: the prompt, or the system prompt and chat turns."""
    if chat:
        messages = body.get("messages") or []
        return "\n".join([str(body.get("system") or ""), *map(str, messages)])
    prompt = body.get("prompt", "")
    return "\n".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)


def _rng(seed: object, prompt: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def answer_length(
    prompt: str, seed: object, max_tokens: int, *, median: float, sigma: float
) -> int:
    """Output tokens of the answer to ``prompt`` sent with ``seed``.

    A ``tokens=`` marker gives the length; otherwise it is drawn from a lognormal
    distribution with the given median and sigma. Either way it is clipped to
    ``[1, max_tokens]``.
    """
    fields = parse_marker(prompt)
    if "tokens" in fields:
        wanted = int(fields["tokens"])
    else:
        wanted = round(_rng(seed, prompt).lognormvariate(math.log(median), sigma))
    return max(1, min(wanted, max_tokens))


def input_tokens(prompt: str) -> int:
    """A token count for ``prompt`` (about four characters per token)."""
    return max(1, (len(prompt) + 3) // 4)


_FILLER_RUN = tuple(random.Random(0).choice(_FILLER) for _ in range(4096))


def filler_answer(body: dict[str, Any], n_tokens: int) -> str:
    """The default answer: ``n_tokens`` filler words, chosen from the seed and the prompt.

    The words are a stretch of a fixed pseudo-random sequence that starts where the seed
    and the prompt say (cheap: a simulated node must not spend its CPU on filler).
    """
    chat = "messages" in body
    start = _rng(body.get("seed"), prompt_text(body, chat=chat)).randrange(len(_FILLER_RUN))
    words: list[str] = []
    while len(words) < n_tokens:
        words.extend(_FILLER_RUN[start : start + n_tokens - len(words)])
        start = 0
    return " ".join(words)


def split_text(text: str, n_tokens: int, chunk_tokens: int) -> list[tuple[str, int]]:
    """``text`` cut into stream pieces of ``chunk_tokens`` tokens (the last may be shorter).

    Characters are shared out in proportion to tokens, so any text (filler or JSON) streams
    at the pace of its token count. Returns ``(piece, tokens)`` pairs; an empty answer
    is one empty piece.
    """
    n_tokens = max(1, n_tokens)
    pieces: list[tuple[str, int]] = []
    done = 0
    while done < n_tokens:
        step = min(chunk_tokens, n_tokens - done)
        lo = len(text) * done // n_tokens
        hi = len(text) * (done + step) // n_tokens
        pieces.append((text[lo:hi], step))
        done += step
    return pieces


def answer_body(text: str, *, input_tokens: int, output_tokens: int) -> bytes:
    """A non-streamed completion answer."""
    return _json(
        {
            "text": text,
            "reached_end": True,
            "truncated_prompt": False,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }
    )


def stream_chunk(
    text: str, *, end: bool = False, input_tokens: int = 0, output_tokens: int = 0
) -> bytes:
    """One streamed chunk: a JSON object followed by two newlines (TextSynth framing).

    The last chunk (``end``) carries ``reached_end: true`` and the token counts.
    """
    obj: dict[str, Any] = {"text": text, "reached_end": end}
    if end:
        obj.update(truncated_prompt=False, input_tokens=input_tokens, output_tokens=output_tokens)
    return _json(obj) + b"\n\n"


def error_body(message: str) -> bytes:
    """An error answer's body."""
    return _json({"error": message})


def malformed_body(good: bytes) -> bytes:
    """A 200 body that is not JSON: the good answer cut in half."""
    return good[: max(1, len(good) // 2)]


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()
