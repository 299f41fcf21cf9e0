"""What both protocols share: stream framing, error bodies and the facts a node may state."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from runner._errors import ProtocolError, ServerError
from runner._wire import (
    BODY_LIMIT,
    RecentBytes,
    StreamFrames,
    error_summary,
    json_object,
    server_error,
    whole_count,
)

BLANK_LINE = re.compile(rb"\r?\n\r?\n")
STREAM = b'{"a": 1}\r\n\r\n{"b": 2}\n\n{"c": 3}\r\n\r\n{"d"'


def frames(data: bytes, *, step: int) -> tuple[list[bytes], bytes]:
    cutter = StreamFrames(BLANK_LINE, reach=3, limit=100, overflow="too long", node="n")
    cut: list[bytes] = []
    for i in range(0, len(data), step):
        cutter.feed(data[i : i + step], cut.append)
    return cut, cutter.rest()


@pytest.mark.parametrize("step", [1, 2, 3, 5, len(STREAM)])
def test_frames_are_the_same_whatever_the_pieces_and_separators_may_straddle_them(
    step: int,
) -> None:
    assert frames(STREAM, step=step) == ([b'{"a": 1}', b'{"b": 2}', b'{"c": 3}'], b'{"d"')


def test_an_unfinished_frame_past_the_limit_is_a_protocol_error_with_the_recent_bytes() -> None:
    cutter = StreamFrames(BLANK_LINE, reach=3, limit=10, overflow="frame too long", node="n")
    with pytest.raises(ProtocolError, match="frame too long") as caught:
        cutter.feed(b"x" * 11, lambda frame: None)
    assert (caught.value.node, caught.value.body) == ("n", "x" * 11)


def test_recent_bytes_keep_the_last_body_limit_bytes() -> None:
    recent = RecentBytes()
    for _ in range(10):
        recent.add(b"a" * BODY_LIMIT)
    recent.add(b"end")
    assert recent.text() == "a" * (BODY_LIMIT - 3) + "end"


@pytest.mark.parametrize(
    ("obj", "null_error", "error"),
    [
        ({"text": "hi"}, True, None),
        ({"error": None, "text": "hi"}, False, None),
        ({"error": None, "text": "hi"}, True, "node error: null"),
        ({"error": {"message": "no  such\nengine"}}, False, "node error: no such engine"),
    ],
)
def test_a_json_object_with_an_error_is_a_protocol_error(
    obj: dict[str, Any], null_error: bool, error: str | None
) -> None:
    body = json.dumps(obj).encode()
    if error is None:
        assert json_object(body, node="n", raw="", null_error=null_error) == obj
    else:
        with pytest.raises(ProtocolError, match=error):
            json_object(body, node="n", raw="", null_error=null_error)


@pytest.mark.parametrize(
    ("body", "null_error", "detail", "summary"),
    [
        (b'{"error": "overloaded"}', True, False, "overloaded"),
        (b'{"error": null}', True, False, "null"),
        (b'{"error": null}', False, False, '{"error": null}'),
        (b'{"detail": "Invalid API key"}', False, True, "Invalid API key"),
        (b'{"detail": "Invalid API key"}', True, False, '{"detail": "Invalid API key"}'),
        (b"Bad Gateway\n", True, False, "Bad Gateway"),
        (b"", True, False, "(empty body)"),
    ],
)
def test_an_error_summary_is_one_short_line(
    body: bytes, null_error: bool, detail: bool, summary: str
) -> None:
    assert error_summary(body, null_error=null_error, detail=detail) == summary


def test_a_server_error_keeps_the_status_and_at_most_body_limit_characters() -> None:
    error = server_error(502, b"x" * (3 * BODY_LIMIT), node="n", null_error=True)
    assert isinstance(error, ServerError)
    assert (error.status, error.node, error.body) == (502, "n", "x" * BODY_LIMIT)


@pytest.mark.parametrize(
    ("value", "count"), [(4, 4), (1, 1), (0, None), (-2, None), (True, None), (2.0, None)]
)
def test_a_whole_count_is_a_whole_number_of_at_least_one(value: Any, count: int | None) -> None:
    assert whole_count(value) == count
