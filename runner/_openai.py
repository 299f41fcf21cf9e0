"""The OpenAI-compatible protocol (llama.cpp server, llama_cpp.server, vLLM, Ollama), pure.

The same three pieces as :mod:`runner._textsynth`: :func:`build`, :func:`parse` and an
incremental :class:`StreamDecoder`, here for Server-Sent Events (``data: {...}`` events, then
``data: [DONE]``); what the two share is in :mod:`runner._wire`.

Sampling parameters arrive in TextSynth names and are mapped: the standard OpenAI ones pass
through, ``top_k`` is kept (llama.cpp and vLLM accept it, others ignore it),
``repetition_penalty`` becomes llama.cpp's ``repeat_penalty``, and what has no equivalent
(``typical_p``, ``grammar``...) is dropped.

A JSON Schema is sent as ``response_format: {"type": "json_object", "schema": ...}`` by
default: ``json_object`` is the standard OpenAI JSON mode, and the ``schema`` key beside it is
what llama_cpp.server (0.3.x, whose request model allows only ``text``/``json_object`` and
answers 422 to ``json_schema``) and the llama.cpp server use to constrain decoding; vLLM and
Ollama fall back to plain JSON mode. ``schema_format="json_schema"`` sends the standard
``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` shape instead.

Token counts come from ``usage`` (``prompt_tokens``, ``completion_tokens``): in a whole
answer, and in a stream's last event, which ``stream_options.include_usage`` asks for. Without
``usage``, llama.cpp's own ``timings`` (``predicted_n``...) are read instead.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from ._errors import ProtocolError
from ._request import Completion, GenerationRequest, Style
from ._wire import (
    StreamFrames,
    engine_ids,
    json_object,
    kind_of,
    lenient_json,
    parse_token_count,
    raw_body,
    server_error,
    whole_count,
)

LINE_LIMIT = 4 * 1024 * 1024  # bytes one SSE line may take before it is a protocol error

_NEWLINE = re.compile(rb"\n")  # the end of an SSE line (after a "\r" or not)

SchemaFormat = Literal["json_object", "json_schema"]

# TextSynth parameter name → OpenAI-compatible name; names not listed are dropped.
PARAMS = {
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "stop": "stop",
    "n": "n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repeat_penalty",
    "logit_bias": "logit_bias",
}


def build(
    request: GenerationRequest,
    *,
    stream: bool,
    schema_format: SchemaFormat = "json_object",
) -> tuple[str, dict[str, Any]]:
    """The URL path and JSON body for ``request``.

    Args:
        request: what to ask; ``engine`` is sent as ``model``.
        stream: ask for a streamed answer (with ``stream_options.include_usage``).
        schema_format: how ``request.schema`` is sent (see the module docstring).

    Returns:
        ``(path, body)``, the path relative to the node's base URL.
    """
    if request.body is not None:
        return _passthrough(request, stream=stream)
    body: dict[str, Any] = {"model": request.engine}
    if request.style is Style.chat:
        path = "/v1/chat/completions"
        messages = [] if request.system is None else [{"role": "system", "content": request.system}]
        body["messages"] = [*messages, {"role": "user", "content": request.prompt}]
    else:
        path = "/v1/completions"
        body["prompt"] = request.prompt
    for name, value in request.params.items():
        if value is not None and name in PARAMS:
            body[PARAMS[name]] = value
    if request.seed is not None:
        body["seed"] = request.seed
    if request.schema is not None:
        if schema_format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.schema, "strict": True},
            }
        else:
            body["response_format"] = {"type": "json_object", "schema": request.schema}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return path, body


def _passthrough(request: GenerationRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
    """An OpenAI Batch line's body as it is (:mod:`runner._batch`), but for ``model`` (the
    cluster's), ``seed`` (the attempt's) and streaming (the engine's choice)."""
    path = "/v1/chat/completions" if request.style is Style.chat else "/v1/completions"
    body: dict[str, Any] = {**(request.body or {}), "model": request.engine}
    body.pop("stream_options", None)
    if request.seed is not None:
        body["seed"] = request.seed
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
    return path, body


def parse(status: int, body: bytes, *, node: str) -> Completion:
    """Read a complete (not streamed) answer: chat or text completion.

    Raises:
        ServerError: the status is not 200.
        ProtocolError: the body is not a JSON object, holds an ``error``, has no choices or
            a choice without text, or a field of the wrong type.
    """
    if status != 200:
        raise server_error(status, body, node=node, null_error=False, detail=True)
    raw = raw_body(body)
    obj = json_object(body, node=node, raw=raw, null_error=False)
    choices = _choices(obj, node=node, raw=raw)
    if not choices:
        raise ProtocolError("answer has no choices", node=node, body=raw)
    texts: list[str] = []
    reasons: list[str | None] = []
    for index, choice in sorted(choices.items()):
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else choice.get("text")
        if not isinstance(content, str):
            raise ProtocolError(f"choice {index} has no text", node=node, body=raw)
        texts.append(content)
        reasons.append(_finish_reason(choice, node=node, raw=raw))
    prompt_tokens, completion_tokens = _usage(obj, node=node, raw=raw)
    return Completion(
        text=texts[0],
        texts=tuple(texts),
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        finish_reason=reasons[0],
        finish_reasons=tuple(reasons),
    )


def build_tokenize(engine: str, text: str) -> tuple[str, dict[str, Any]]:
    """The URL path and JSON body of llama.cpp's ``POST /tokenize`` (one model per server,
    so ``engine`` is not named; OpenAI itself, vLLM and Ollama have no such path: 404)."""
    return "/tokenize", {"content": text}


def parse_tokenize(status: int, body: bytes, *, node: str) -> int:
    """The number of tokens of a ``/tokenize`` answer (:func:`~runner._wire.parse_token_count`)."""
    return parse_token_count(status, body, node=node, null_error=False)


ENGINES_PATH = "/v1/models"


def parse_engines(status: int, body: bytes, *, node: str) -> list[str] | None:
    """Read a ``/v1/models`` listing (``{"data": [{"id": ...}, ...]}``).

    Returns:
        The model ids, or ``None`` when the node has no listing (400, 404, 405, 501).

    Raises:
        ServerError: another status than 200 or those.
        ProtocolError: the body is not such a listing.
    """
    return engine_ids(status, body, node=node, keys=("data", "models"))


FACTS_PATHS = ("/props",)  # llama.cpp's server; vLLM, Ollama and llama_cpp.server have none


def parse_slots(path: str, status: int, body: bytes, *, engine: str) -> int | None:
    """Read how many sequences a node runs at once: llama.cpp's ``GET /props`` →
    ``total_slots`` (one model per server, so ``engine`` is not looked up).

    Returns:
        The number, or ``None`` when the answer does not say.
    """
    obj = lenient_json(status, body)
    return whole_count(obj.get("total_slots")) if isinstance(obj, dict) else None


def parse_context(path: str, status: int, body: bytes, *, engine: str) -> int | None:
    """Read the context per sequence, in tokens: llama.cpp's ``GET /props`` →
    ``default_generation_settings.n_ctx``; ``None`` when the answer does not say."""
    obj = lenient_json(status, body)
    settings = obj.get("default_generation_settings") if isinstance(obj, dict) else None
    return whole_count(settings.get("n_ctx")) if isinstance(settings, dict) else None


class StreamDecoder:
    """Decodes an OpenAI-style SSE stream fed in pieces of any size.

    The answer is complete when every choice has reported a ``finish_reason``. ``[DONE]``
    alone is not enough: llama_cpp.server sends it when it interrupts a stream to serve
    another request, which would otherwise pass a cut-off answer as whole. Bad events raise
    :class:`~runner._errors.ProtocolError` from :meth:`feed` as soon as they are complete.
    """

    def __init__(self, *, node: str) -> None:
        self.node = node
        self._frames = StreamFrames(
            _NEWLINE,
            reach=0,
            limit=LINE_LIMIT,
            overflow=f"stream line longer than {LINE_LIMIT} bytes",
            node=node,
        )
        self._data: list[bytes] = []  # data lines of the event being read
        self._parts: dict[int, list[str]] = {}
        self._reasons: dict[int, str] = {}
        self._usage: tuple[int | None, int | None] = (None, None)
        self._done = False

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream.

        Raises:
            ProtocolError: an event is not a JSON object or holds an ``error``; or a line
                grows past ``LINE_LIMIT``.
        """
        self._frames.feed(data, self._take_line)

    def _take_line(self, line: bytes) -> None:
        self._line(line.removesuffix(b"\r"))

    def finish(self) -> Completion:
        """The whole answer, once the stream has ended.

        Raises:
            ProtocolError: the stream ended before every choice had a ``finish_reason``, or
                its last event is bad.
        """
        rest = self._frames.rest()
        if rest:
            self._line(rest.removesuffix(b"\r"))
        self._line(b"")  # an event not closed by a blank line still counts
        started = set(self._parts) | set(self._reasons)
        if not started or not started <= set(self._reasons):
            how = "[DONE]" if self._done else "its end"
            raise ProtocolError(
                f"stream reached {how} before a finish_reason (cut off or interrupted)",
                node=self.node,
                body=self._frames.recent.text(),
            )
        indexes = sorted(started)
        texts = tuple("".join(self._parts.get(i, ())) for i in indexes)
        return Completion(
            text=texts[0],
            texts=texts,
            input_tokens=self._usage[0],
            output_tokens=self._usage[1],
            finish_reason=self._reasons[indexes[0]],
            finish_reasons=tuple(self._reasons[i] for i in indexes),
        )

    def _line(self, line: bytes) -> None:
        if not line:
            event, self._data = b"\n".join(self._data), []
            if event:
                self._event(event)
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # Comments (": ping") and the event:, id:, retry: fields carry nothing for us.

    def _event(self, data: bytes) -> None:
        if self._done:
            return  # whatever follows [DONE] is ignored
        if data.strip() == b"[DONE]":
            self._done = True
            return
        raw = raw_body(data)
        obj = json_object(data, node=self.node, raw=raw, null_error=False)
        for index, choice in _choices(obj, node=self.node, raw=raw).items():
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if piece is not None and not isinstance(piece, str):
                raise ProtocolError(
                    f"choice {index}: text is {kind_of(piece)}, not a string",
                    node=self.node,
                    body=raw,
                )
            self._parts.setdefault(index, []).append(piece or "")
            reason = _finish_reason(choice, node=self.node, raw=raw)
            if reason is not None:
                self._reasons[index] = reason
        usage = _usage(obj, node=self.node, raw=raw)
        if usage != (None, None):
            self._usage = usage


# ----------------------------------------------------------------------- helpers


def _choices(obj: dict[str, Any], *, node: str, raw: str) -> dict[int, dict[str, Any]]:
    """The choices by index (their ``index`` field, or their position)."""
    choices = obj.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise ProtocolError("choices: expected a list of objects", node=node, body=raw)
    by_index: dict[int, dict[str, Any]] = {}
    for position, choice in enumerate(choices):
        index = choice.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ProtocolError(f"choice {position}: bad index {index!r}", node=node, body=raw)
        by_index[index] = choice
    return by_index


def _finish_reason(choice: dict[str, Any], *, node: str, raw: str) -> str | None:
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise ProtocolError(f"finish_reason: got {kind_of(reason)}", node=node, body=raw)
    return reason


def _usage(obj: dict[str, Any], *, node: str, raw: str) -> tuple[int | None, int | None]:
    """``(prompt tokens, completion tokens)`` from ``usage``, else from llama.cpp's
    ``timings``; ``None`` for what the object does not say."""
    usage = obj.get("usage")
    if usage is None:
        return _timings(obj.get("timings"))
    if not isinstance(usage, dict):
        raise ProtocolError(f"usage: expected an object, got {kind_of(usage)}", node=node, body=raw)
    counts: list[int | None] = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ProtocolError(f"usage.{name}: got {kind_of(value)}", node=node, body=raw)
        counts.append(value)
    return counts[0], counts[1]


def _timings(timings: Any) -> tuple[int | None, int | None]:
    """Token counts from llama.cpp's ``timings`` (sent even when ``usage`` is not): the
    prompt is ``cache_n`` reused plus ``prompt_n`` evaluated tokens, the answer
    ``predicted_n``. An extension, so read leniently: what is not a count is ``None``."""
    if not isinstance(timings, dict):
        return None, None

    def count(name: str) -> int | None:
        value = timings.get(name)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return value if ok else None

    prompt, cached = count("prompt_n"), count("cache_n")
    return (None if prompt is None else prompt + (cached or 0)), count("predicted_n")
