"""Request validation: JSON bodies in, typed requests out, or an :class:`ApiError`.

Pure functions with no I/O and no llama.cpp: every rule of the TextSynth API the node
enforces (types, ranges, defaults, unknown fields) lives here and is tested with a table.
An error message is one line that starts with the field name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_STOP = 5
MAX_N = 16
MAX_SEED = 2**31 - 1


class ApiError(Exception):
    """A request the node refuses; becomes an HTTP error with a JSON ``error`` body.

    Attributes:
        status: the HTTP status code (400, 401, 404, 413, 503...).
        message: one line naming the field and the problem.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What a model allows, needed to check ranges.

    Attributes:
        n_ctx: context size in tokens.
        n_vocab: vocabulary size (token ids are 0..n_vocab-1).
    """

    n_ctx: int
    n_vocab: int


@dataclass(frozen=True)
class Sampling:
    """How to generate: the fields shared by completions and chat.

    ``seed`` is 0 when the caller wants a random seed. ``schema`` and ``grammar`` are
    mutually exclusive.
    """

    max_tokens: int = 100
    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 0.9
    seed: int = 0
    stop: tuple[str, ...] = ()
    n: int = 1
    stream: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    typical_p: float = 1.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    schema: Mapping[str, Any] | None = None
    grammar: str | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """``POST /v1/engines/{engine}/completions``: continue ``prompt``."""

    prompt: str
    sampling: Sampling


@dataclass(frozen=True)
class ChatRequest:
    """``POST /v1/engines/{engine}/chat``: answer the last of ``messages``.

    Attributes:
        messages: user and assistant turns, alternating, starting and ending with the user.
        system: a system prompt replacing the template's default, or None.
    """

    messages: tuple[str, ...]
    system: str | None
    sampling: Sampling


@dataclass(frozen=True)
class TokenizeRequest:
    """``POST /v1/engines/{engine}/tokenize``; ``base64`` asks for each token's bytes."""

    text: str
    base64: bool = False


@dataclass(frozen=True)
class LogprobRequest:
    """``POST /v1/engines/{engine}/logprob``: how likely ``continuation`` follows ``context``."""

    context: str
    continuation: str


SAMPLING_FIELDS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "stop",
        "n",
        "stream",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "typical_p",
        "logit_bias",
        "schema",
        "grammar",
    }
)


def parse_json(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object.

    Raises:
        ApiError: 400 when the body is not UTF-8 JSON, holds NaN/Infinity, or is not an object.
    """

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"request body: not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "request body: JSON nested too deeply") from exc
    if not isinstance(body, dict):
        raise ApiError(400, f"request body: expected a JSON object, got {_kind(body)}")
    return body


def parse_completion(body: Mapping[str, Any], limits: Limits) -> CompletionRequest:
    """Check a completions body. Raises :class:`ApiError` (400) naming the bad field."""
    _no_unknown(body, SAMPLING_FIELDS | {"prompt"})
    prompt = _required(body, "prompt", _text)
    return CompletionRequest(prompt=prompt, sampling=_sampling(body, limits))


def parse_chat(body: Mapping[str, Any], limits: Limits) -> ChatRequest:
    """Check a chat body. Raises :class:`ApiError` (400) naming the bad field."""
    _no_unknown(body, SAMPLING_FIELDS | {"messages", "system"})
    messages = _required(body, "messages", _messages)
    system = _optional(body, "system", _text, None)
    return ChatRequest(messages=messages, system=system, sampling=_sampling(body, limits))


def parse_tokenize(body: Mapping[str, Any]) -> TokenizeRequest:
    """Check a tokenize body. Raises :class:`ApiError` (400) naming the bad field."""
    _no_unknown(body, {"text", "token_content_type"})
    text = _required(body, "text", _text)
    kind = _optional(body, "token_content_type", _choice("none", "base64"), "none")
    return TokenizeRequest(text=text, base64=kind == "base64")


def parse_logprob(body: Mapping[str, Any]) -> LogprobRequest:
    """Check a logprob body. Raises :class:`ApiError` (400) naming the bad field."""
    _no_unknown(body, {"context", "continuation"})
    context = _required(body, "context", _text)
    continuation = _required(body, "continuation", _text)
    if not continuation:
        raise ApiError(400, "continuation: must not be empty")
    return LogprobRequest(context=context, continuation=continuation)


def _sampling(body: Mapping[str, Any], limits: Limits) -> Sampling:
    max_context = limits.n_ctx - 1
    sampling = Sampling(
        max_tokens=_optional(body, "max_tokens", _int_in(1, max_context), 100),
        temperature=_optional(body, "temperature", _number_in(0, 100), 1.0),
        top_k=_optional(body, "top_k", _int_in(1, 1000), 40),
        top_p=_optional(body, "top_p", _number_in(0, 1, open_low=True), 0.9),
        seed=_optional(body, "seed", _int_in(0, MAX_SEED), 0),
        stop=_optional(body, "stop", _stop, ()),
        n=_optional(body, "n", _int_in(1, MAX_N), 1),
        stream=_optional(body, "stream", _bool, False),
        presence_penalty=_optional(body, "presence_penalty", _number_in(-2, 2), 0.0),
        frequency_penalty=_optional(body, "frequency_penalty", _number_in(-2, 2), 0.0),
        repetition_penalty=_optional(
            body, "repetition_penalty", _number_in(0, 10, open_low=True), 1.0
        ),
        typical_p=_optional(body, "typical_p", _number_in(0, 1, open_low=True), 1.0),
        logit_bias=_optional(body, "logit_bias", _logit_bias(limits.n_vocab), {}),
        schema=_optional(body, "schema", _object, None),
        grammar=_optional(body, "grammar", _text, None),
    )
    if sampling.schema is not None and sampling.grammar is not None:
        raise ApiError(400, "schema: cannot be combined with grammar")
    if sampling.grammar is not None and not sampling.grammar.strip():
        raise ApiError(400, "grammar: must not be empty")
    if sampling.stream and sampling.n > 1:
        raise ApiError(400, "n: must be 1 when stream is true")
    return sampling


# --- field checkers: each takes the value and returns it converted, or raises ValueError
# with the problem; _required/_optional add the field name.


def _no_unknown(body: Mapping[str, Any], known: frozenset[str] | set[str]) -> None:
    for key in body:
        if key not in known:
            raise ApiError(400, f"{key}: unknown field")


def _required(body: Mapping[str, Any], name: str, check: Any) -> Any:
    if name not in body:
        raise ApiError(400, f"{name}: missing")
    return _checked(name, body[name], check)


def _optional(body: Mapping[str, Any], name: str, check: Any, default: Any) -> Any:
    value = body.get(name)
    return default if value is None else _checked(name, value, check)


def _checked(name: str, value: Any, check: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise ApiError(400, f"{name}: {exc}") from None


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    if not _encodable(value):
        raise ValueError("not valid Unicode (a lone surrogate escape such as \\ud800)")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {_kind(value)}")
    return value


def _int_in(low: int, high: int) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise ValueError(f"expected an integer in {low}..{high}, got {value}")
        return value

    return check


def _number_in(low: float, high: float, *, open_low: bool = False) -> Any:
    interval = f"({low}, {high}]" if open_low else f"[{low}, {high}]"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_kind(value)}")
        inside = (low < value if open_low else low <= value) and value <= high
        if not math.isfinite(value) or not inside:
            raise ValueError(f"expected a number in {interval}, got {value}")
        return float(value)

    return check


def _choice(*choices: str) -> Any:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return check


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ValueError("expected a string or a list of strings")
    stops = [_text(s) for s in stops]
    if len(stops) > MAX_STOP:
        raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
    if any(not s for s in stops):
        raise ValueError("stop strings must not be empty")
    return tuple(stops)


def _messages(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of strings")
    for index, message in enumerate(value):
        try:
            _text(message)
        except ValueError as exc:
            raise ValueError(f"item {index}: {exc}") from None
    if len(value) % 2 == 0:
        raise ValueError(
            f"expected an odd number of turns (user, assistant, ..., user), got {len(value)}"
        )
    return tuple(value)


def _logit_bias(n_vocab: int) -> Any:
    def check(value: Any) -> dict[int, float]:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object token id → bias, got {_kind(value)}")
        bias: dict[int, float] = {}
        for key, number in value.items():
            if not (
                isinstance(key, str) and key.isascii() and key.isdigit() and int(key) < n_vocab
            ):
                raise ValueError(f"key {key!r}: expected a token id in 0..{n_vocab - 1}")
            bias[int(key)] = _checked_bias(key, number)
        return bias

    return check


def _checked_bias(key: str, number: Any) -> float:
    try:
        return float(_number_in(-100, 100)(number))
    except ValueError as exc:
        raise ValueError(f"key {key!r}: {exc}") from None
