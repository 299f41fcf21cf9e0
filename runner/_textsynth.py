"""The TextSynth protocol (ts_server, api.textsynth.com, our own node), as pure functions.

:func:`build` turns a :class:`~runner._request.GenerationRequest` into a URL path and a JSON
body; :func:`parse` turns a status and body into a :class:`~runner._request.Completion`;
:class:`StreamDecoder` does the same for a streamed answer, fed bytes as they arrive.
Nothing here sends anything: see :mod:`runner._client`.

The stream framing is one JSON object per chunk, each followed by a blank line (no SSE
``data:`` prefix, no ``[DONE]``); the last chunk has ``reached_end: true`` and the token
counts.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import quote

from ._errors import ProtocolError
from ._request import Completion, GenerationRequest, LabelScore, Style
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

CHUNK_LIMIT = 4 * 1024 * 1024  # bytes one stream chunk may take before it is a protocol error
_SEPARATOR = re.compile(rb"\r?\n\r?\n")
_JSON = json.JSONDecoder()


def build(request: GenerationRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
    """The URL path and JSON body for ``request``.

    Args:
        request: what to ask. ``params`` are sent as they are (TextSynth names), ``None``
            values dropped.
        stream: ask for a streamed answer.

    Returns:
        ``(path, body)``, the path relative to the node's base URL.
    """
    engine = quote(request.engine, safe="")
    body: dict[str, Any] = {k: v for k, v in request.params.items() if v is not None}
    if request.style is Style.chat:
        path = f"/v1/engines/{engine}/chat"
        body["messages"] = list(request.messages or (request.prompt,))
        if request.system is not None:
            body["system"] = request.system
    else:
        path = f"/v1/engines/{engine}/completions"
        body["prompt"] = request.prompt
    if request.seed is not None:
        body["seed"] = request.seed
    if request.schema is not None:
        body["schema"] = request.schema
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return path, body


def parse(status: int, body: bytes, *, node: str) -> Completion:
    """Read a complete (not streamed) answer.

    Raises:
        ServerError: the status is not 200.
        ProtocolError: the body is not a JSON object, holds an ``error``, has no ``text``, or
            a field of the wrong type.
    """
    if status != 200:
        raise server_error(status, body, node=node, null_error=True)
    raw = raw_body(body)
    obj = json_object(body, node=node, raw=raw, null_error=True)
    texts = _texts(obj.get("text"), node=node, raw=raw)
    return _completion(obj, texts, node=node, raw=raw)


def build_logprob(request: GenerationRequest, label: str) -> tuple[str, dict[str, Any]]:
    """The URL path and JSON body scoring ``label`` after ``request.prompt`` (a choice job):
    the prompt is the raw ``context`` whatever the style (no chat template), the
    continuation is the request's ``choices.continuation(label)``."""
    assert request.choices is not None, "a scoring request has choices"
    engine = quote(request.engine, safe="")
    body = {"context": request.prompt, "continuation": request.choices.continuation(label)}
    return f"/v1/engines/{engine}/logprob", body


def parse_logprob(status: int, body: bytes, *, label: str, node: str) -> LabelScore:
    """Read a ``logprob`` answer: ``logprob`` (a finite number), ``num_tokens`` (a whole
    number, at least 1), ``is_greedy`` and ``input_tokens`` (optional).

    Raises:
        ServerError: the status is not 200.
        ProtocolError: the body is not such an answer.
    """
    if status != 200:
        raise server_error(status, body, node=node, null_error=True)
    raw = raw_body(body)
    obj = json_object(body, node=node, raw=raw, null_error=True)
    logprob: Any = obj.get("logprob")
    number = isinstance(logprob, int | float) and not isinstance(logprob, bool)
    if not number or not math.isfinite(logprob):
        raise ProtocolError(
            f"logprob: expected a finite number, got {kind_of(logprob)}", node=node, body=raw
        )
    num_tokens = whole_count(obj.get("num_tokens"))
    if num_tokens is None:
        raise ProtocolError("num_tokens: expected a whole number >= 1", node=node, body=raw)
    greedy = obj.get("is_greedy", False)
    return LabelScore(
        label=label,
        logprob=float(logprob),
        num_tokens=num_tokens,
        is_greedy=greedy is True,
        input_tokens=whole_count(obj.get("input_tokens")),
    )


def build_tokenize(engine: str, text: str) -> tuple[str, dict[str, Any]]:
    """The URL path and JSON body asking how ``engine`` tokenizes ``text``."""
    return f"/v1/engines/{quote(engine, safe='')}/tokenize", {"text": text}


def parse_tokenize(status: int, body: bytes, *, node: str) -> int:
    """The number of tokens of a ``tokenize`` answer (:func:`~runner._wire.parse_token_count`)."""
    return parse_token_count(status, body, node=node, null_error=True)


ENGINES_PATH = "/v1/engines"  # served by our node; ts_server has no listing (404)


def parse_engines(status: int, body: bytes, *, node: str) -> list[str] | None:
    """Read an engine listing: ``{"engines": [...]}`` or ``{"data": [...]}`` or a bare
    list, whose entries are ids or objects with an ``id`` (or ``name``).

    Returns:
        The engine ids, or ``None`` when the node has no listing (400, 404, 405, 501).

    Raises:
        ServerError: another status than 200 or those.
        ProtocolError: the body is not such a listing.
    """
    return engine_ids(status, body, node=node, keys=("engines", "data"))


# Where a node says how many sequences it runs at once and its context per sequence, asked
# in this order until both are known (our node's listing says both; ts_server has neither).
FACTS_PATHS = ("/v1/engines", "/health")


def parse_slots(path: str, status: int, body: bytes, *, engine: str) -> int | None:
    """Read how many sequences a node runs at once for ``engine`` from one of
    ``FACTS_PATHS``: ``GET /health`` → ``slots`` (when it serves ``engine`` alone; the number
    is the node's total), ``GET /v1/engines`` → the ``slots`` of ``engine``'s entry.

    Returns:
        The number, or ``None`` when this answer does not say (any status but 200, a body
        that is not such an answer, no positive whole ``slots``).
    """
    obj = lenient_json(status, body)
    if path == "/health":
        if not isinstance(obj, dict):
            return None
        served = obj.get("engines")
        if served is not None and served != [engine]:
            return None  # several engines share the node: their total is not this one's
        return whole_count(obj.get("slots"))
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("engines", "data") if k in obj), None)
    if not isinstance(obj, list):
        return None
    for entry in obj:
        if isinstance(entry, dict) and entry.get("id", entry.get("name")) == engine:
            return whole_count(entry.get("slots"))
    return None


def parse_context(path: str, status: int, body: bytes, *, engine: str) -> int | None:
    """Read ``engine``'s context per sequence, in tokens, from one of ``FACTS_PATHS``:
    ``GET /v1/engines`` → the ``n_ctx`` of its entry (our node); ``None`` when not said."""
    obj = lenient_json(status, body)
    if path != "/v1/engines" or not isinstance(obj, dict):
        return None
    for entry in obj.get("engines") or []:
        if isinstance(entry, dict) and entry.get("id") == engine:
            return whole_count(entry.get("n_ctx"))
    return None


class StreamDecoder:
    """Decodes a TextSynth stream fed in pieces of any size.

    Bad chunks raise :class:`~runner._errors.ProtocolError` from :meth:`feed` as soon as they
    are complete, so the caller can stop reading early; :meth:`finish` raises it for a stream
    that ended before its final chunk.
    """

    def __init__(self, *, node: str) -> None:
        self.node = node
        self._frames = StreamFrames(
            _SEPARATOR,
            reach=3,
            limit=CHUNK_LIMIT,
            overflow=f"stream chunk larger than {CHUNK_LIMIT} bytes",
            node=node,
        )
        self._parts: list[list[str]] = []
        self._final: Completion | None = None

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream.

        Raises:
            ProtocolError: a complete chunk is not a JSON object, holds an ``error``, or
                comes after the final one; or a chunk grows past ``CHUNK_LIMIT``.
        """
        self._frames.feed(data, self._take)

    def finish(self) -> Completion:
        """The whole answer, once the stream has ended.

        Raises:
            ProtocolError: the stream ended without a chunk with ``reached_end: true``, or its
                last chunk is bad.
        """
        self._take(self._frames.rest())
        if self._final is None:
            raise ProtocolError(
                "stream ended without reached_end: true",
                node=self.node,
                body=self._frames.recent.text(),
            )
        return self._final

    def _take(self, data: bytes) -> None:
        """One complete chunk: the common one by the short path, any other by the full."""
        if self._final is None and len(self._parts) <= 1 and self._plain_fragment(data):
            return
        self._chunk(data)

    def _chunk(self, data: bytes) -> None:
        if not data.strip():
            return
        raw = raw_body(data)
        if self._final is not None:
            raise ProtocolError("data after the final stream chunk", node=self.node, body=raw)
        obj = json_object(data, node=self.node, raw=raw, null_error=True)
        fragment = obj.get("text", "")
        pieces = _texts(fragment, node=self.node, raw=raw, allow_empty=True)
        while len(self._parts) < len(pieces):
            self._parts.append([])
        for parts, piece in zip(self._parts, pieces, strict=False):
            parts.append(piece)
        reached_end = obj.get("reached_end", False)
        if not isinstance(reached_end, bool):
            raise ProtocolError(
                f"reached_end: expected true or false, got {kind_of(reached_end)}",
                node=self.node,
                body=raw,
            )
        if reached_end:
            texts = tuple("".join(parts) for parts in self._parts) or ("",)
            self._final = _completion(obj, texts, node=self.node, raw=raw)

    def _plain_fragment(self, data: bytes) -> bool:
        """Take the common chunk — one completion's next text, not the last — without the
        checks and diagnostics the other chunks get. False: not such a chunk, nothing done
        (the caller's full path judges it)."""
        try:
            # One JSON object filling the chunk, decoded without json.loads's sniffing of
            # the encoding and skipping of white space (a chunk that has either, or is not
            # UTF-8, takes the full path).
            text = data.decode()
            obj, end = _JSON.raw_decode(text)
        except (ValueError, RecursionError):
            return False
        if (
            end != len(text)
            or type(obj) is not dict
            or "error" in obj
            or obj.get("reached_end", False) is not False
        ):
            return False
        fragment = obj.get("text", "")
        if type(fragment) is not str:
            return False
        if not self._parts:
            self._parts.append([])
        self._parts[0].append(fragment)
        return True


# ----------------------------------------------------------------------- helpers


def _texts(value: Any, *, node: str, raw: str, allow_empty: bool = False) -> tuple[str, ...]:
    """``text`` as a tuple: one string, or one per completion when ``n`` > 1."""
    if isinstance(value, str):
        return (value,)
    strings = isinstance(value, list) and all(isinstance(t, str) for t in value)
    if strings and (value or allow_empty):
        return tuple(value)
    if value is None:
        raise ProtocolError("answer has no text", node=node, body=raw)
    raise ProtocolError(
        f"text: expected a string or a list of strings, got {kind_of(value)}", node=node, body=raw
    )


def _completion(obj: dict[str, Any], texts: tuple[str, ...], *, node: str, raw: str) -> Completion:
    def field(name: str, kind: type, default: Any) -> Any:
        value = obj.get(name)
        if value is None:
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(
                f"{name}: expected {kind.__name__}, got {kind_of(value)}", node=node, body=raw
            )
        return value

    return Completion(
        text=texts[0] if texts else "",
        texts=texts,
        input_tokens=field("input_tokens", int, None),
        output_tokens=field("output_tokens", int, None),
        truncated_prompt=field("truncated_prompt", bool, False),
        finish_reason=field("finish_reason", str, None),
    )
