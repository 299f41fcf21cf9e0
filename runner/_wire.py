"""What the TextSynth and OpenAI-compatible protocols share on the wire, as pure pieces.

:class:`StreamFrames` cuts a stream fed in pieces of any size into frames (TextSynth chunks,
SSE lines) and keeps its last bytes (:class:`RecentBytes`) for error messages;
:func:`json_object` reads a body that must be a JSON object without an ``error``;
:func:`server_error` turns an answer with another status than 200 into a
:class:`~runner._errors.ServerError` that says in one short line what its body says
(:func:`error_summary`); :func:`engine_ids`
reads an engine or model listing; :func:`lenient_json` and :func:`whole_count` read the
optional facts a node may state. Exceptions carry at most ``BODY_LIMIT`` characters of the
body (:func:`raw_body`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ._errors import ProtocolError, ServerError

BODY_LIMIT = 2000  # characters of a raw body kept in an exception for diagnosis
NO_LISTING = frozenset({400, 404, 405, 501})  # the statuses of a node without a listing


class RecentBytes:
    """The last ``BODY_LIMIT`` bytes of a stream, kept for error messages at a small
    constant cost per chunk (decoded only when an error needs them)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def add(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > 4 * BODY_LIMIT:
            del self._data[:-BODY_LIMIT]

    def text(self) -> str:
        return self._data[-BODY_LIMIT:].decode("utf-8", errors="replace")


class StreamFrames:
    """A stream fed in pieces of any size, cut into the frames between ``separator`` matches.

    Args:
        separator: what ends a frame.
        reach: the length of its longest match, less one: how far back into what was fed
            before a separator may start.
        limit: the bytes an unfinished frame may take.
        overflow: the message of the :class:`~runner._errors.ProtocolError` raised past it.
        node: the node the stream comes from.
    """

    def __init__(
        self, separator: re.Pattern[bytes], *, reach: int, limit: int, overflow: str, node: str
    ) -> None:
        self.node = node
        self.recent = RecentBytes()  # the stream's last bytes, for diagnosis
        self._separator = separator
        self._reach = reach
        self._limit = limit
        self._overflow = overflow
        self._buffer = bytearray()

    def feed(self, data: bytes, take: Callable[[bytes], object]) -> None:
        """Hand ``take`` the frames ``data`` completes, in order (a callback rather than a
        generator: this runs once per chunk of every streamed answer).

        Raises:
            ProtocolError: once they are taken, the unfinished frame is past ``limit``.
        """
        self.recent.add(data)
        buffer = self._buffer
        if buffer:
            seen = max(0, len(buffer) - self._reach)  # a separator may straddle the old end
            buffer += data
            start = 0
            for match in self._separator.finditer(buffer, seen):
                take(bytes(buffer[start : match.start()]))
                start = match.end()
            del buffer[:start]
        else:  # nothing pending, the common case: cut ``data`` itself
            *frames, rest = self._separator.split(data)
            for frame in frames:
                take(frame)
            buffer += rest
        if len(buffer) > self._limit:
            raise ProtocolError(self._overflow, node=self.node, body=self.recent.text())

    def rest(self) -> bytes:
        """What is left after the last separator, once the stream has ended."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


def json_object(body: bytes, *, node: str, raw: str, null_error: bool) -> dict[str, Any]:
    """``body`` as a JSON object.

    Args:
        null_error: ``"error": null`` is an error too (TextSynth), not the absence of one.

    Raises:
        ProtocolError: ``body`` is not JSON, not an object, or holds an ``error``.
    """
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"body is not JSON: {short(str(exc))}", node=node, body=raw) from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"body is {kind_of(obj)}, not a JSON object", node=node, body=raw)
    if _holds_error(obj, null_error=null_error):
        raise ProtocolError(f"node error: {error_message(obj['error'])}", node=node, body=raw)
    return obj


def server_error(
    status: int, body: bytes, *, node: str, null_error: bool, detail: bool = False
) -> ServerError:
    """The error of an answer with another status than 200, saying what its body says
    (:func:`error_summary`)."""
    summary = error_summary(body, null_error=null_error, detail=detail)
    return ServerError(f"HTTP {status}: {summary}", status=status, node=node, body=raw_body(body))


def error_summary(body: bytes, *, null_error: bool, detail: bool = False) -> str:
    """A short line saying what an error body says: its ``error``, else (with ``detail``)
    its ``detail`` string (FastAPI's errors), else the body itself.

    Args:
        null_error: ``"error": null`` is an error (said as ``null``), not the absence of one.
        detail: read ``detail``.
    """
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict) and _holds_error(obj, null_error=null_error):
        return error_message(obj["error"])
    if detail and isinstance(obj, dict) and isinstance(obj.get("detail"), str):
        return short(obj["detail"])
    return short(raw_body(body)) or "(empty body)"


def engine_ids(status: int, body: bytes, *, node: str, keys: tuple[str, ...]) -> list[str] | None:
    """The engine or model ids of a listing: a bare list, or one under the first of ``keys``
    present, whose entries are ids or objects with an ``id`` (or ``name``).

    Returns:
        The ids, or ``None`` when the node has no listing (a status in ``NO_LISTING``).

    Raises:
        ServerError: another status than 200 or those.
        ProtocolError: the body is not such a listing.
    """
    if status in NO_LISTING:
        return None
    if status != 200:
        raise server_error(status, body, node=node, null_error=True)
    raw = raw_body(body)
    try:
        listing = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("listing is not JSON", node=node, body=raw) from exc
    if isinstance(listing, dict):
        if _holds_error(listing, null_error=False):
            raise ProtocolError(
                f"node error: {error_message(listing['error'])}", node=node, body=raw
            )
        listing = next((listing[k] for k in keys if k in listing), None)
    if not isinstance(listing, list):
        raise ProtocolError(f"listing has no list under {' or '.join(keys)}", node=node, body=raw)
    ids: list[str] = []
    for entry in listing:
        name = entry.get("id", entry.get("name")) if isinstance(entry, dict) else entry
        if not isinstance(name, str):
            raise ProtocolError(
                f"listing entry without an id: {short(repr(entry))}", node=node, body=raw
            )
        ids.append(name)
    return ids


def _holds_error(obj: dict[str, Any], *, null_error: bool) -> bool:
    """Whether ``obj`` holds an ``error``: any ``error`` key (``null_error``), or one that
    is not ``null``."""
    return "error" in obj if null_error else obj.get("error") is not None


def parse_token_count(status: int, body: bytes, *, node: str, null_error: bool) -> int:
    """How many tokens a tokenize answer lists (``tokens``: a list of token ids; both
    protocols' servers answer so).

    Raises:
        ServerError: the status is not 200 (a server without tokenize answers 404).
        ProtocolError: the body is not such an answer.
    """
    if status != 200:
        raise server_error(status, body, node=node, null_error=null_error)
    raw = raw_body(body)
    tokens = json_object(body, node=node, raw=raw, null_error=null_error).get("tokens")
    if not isinstance(tokens, list):
        raise ProtocolError(f"tokens: expected a list, got {kind_of(tokens)}", node=node, body=raw)
    return len(tokens)


def lenient_json(status: int, body: bytes) -> Any:
    """A 200 body's JSON, or ``None`` (any other status, or not JSON)."""
    if status != 200:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def whole_count(value: Any) -> int | None:
    """``value`` if it is a whole number ≥ 1 (not a boolean), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def raw_body(body: bytes) -> str:
    """The first ``BODY_LIMIT`` characters of ``body``, for an exception."""
    return body[: BODY_LIMIT * 4].decode("utf-8", errors="replace")[:BODY_LIMIT]


def error_message(error: Any) -> str:
    """An ``error`` value in a short line: its ``message``, or the value itself."""
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return short(error["message"])
    return short(error if isinstance(error, str) else json.dumps(error))


def short(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def kind_of(value: Any) -> str:
    """What a JSON value is, for a message: ``a string``, ``an object``, ``null``..."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)
