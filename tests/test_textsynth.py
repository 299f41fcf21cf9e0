from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import _textsynth
from runner._errors import ProtocolError, ServerError
from runner._policy import Fault, classify
from runner._request import Api, Completion, GenerationRequest, Style
from runner._textsynth import (
    StreamDecoder,
    build,
    parse,
    parse_engines,
    parse_slots,
)
from runner._wire import BODY_LIMIT

NODE = "10.0.0.5:8088"


def request(**fields: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "api": Api.textsynth,
        "style": Style.completion,
        "engine": "llama2_13B_chat",
        "prompt": "Once upon a time",
    }
    return GenerationRequest(**(base | fields))


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def stream_bytes(*chunks: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(c, ensure_ascii=False).encode() + b"\n\n" for c in chunks)


def decode(data: bytes, pieces: list[int] | None = None) -> Completion:
    decoder = StreamDecoder(node=NODE)
    start = 0
    for size in pieces or []:
        decoder.feed(data[start : start + size])
        start += size
    decoder.feed(data[start:])
    return decoder.finish()


# ------------------------------------------------------------------ build


@pytest.mark.parametrize(
    ("fields", "stream", "path", "expected"),
    [
        (
            {},
            False,
            "/v1/engines/llama2_13B_chat/completions",
            {"prompt": "Once upon a time"},
        ),
        (
            {"style": Style.chat, "system": "Be brief."},
            False,
            "/v1/engines/llama2_13B_chat/chat",
            {"messages": ["Once upon a time"], "system": "Be brief."},
        ),
        (
            {"style": Style.chat},
            True,
            "/v1/engines/llama2_13B_chat/chat",
            {"messages": ["Once upon a time"], "stream": True},
        ),
        (
            {"params": {"max_tokens": 100, "temperature": 0.7, "top_k": None, "stop": ["\n"]}},
            False,
            "/v1/engines/llama2_13B_chat/completions",
            {"prompt": "Once upon a time", "max_tokens": 100, "temperature": 0.7, "stop": ["\n"]},
        ),
        (
            {"seed": 0, "schema": {"type": "object"}},
            False,
            "/v1/engines/llama2_13B_chat/completions",
            {"prompt": "Once upon a time", "seed": 0, "schema": {"type": "object"}},
        ),
        (
            {"engine": "my model/v2"},
            False,
            "/v1/engines/my%20model%2Fv2/completions",
            {"prompt": "Once upon a time"},
        ),
    ],
    ids=[
        "completion",
        "chat-with-system",
        "chat-stream",
        "params-none-dropped",
        "seed-schema",
        "quoted-engine",
    ],
)
def test_build_makes_path_and_body(
    fields: dict[str, Any], stream: bool, path: str, expected: dict[str, Any]
) -> None:
    assert build(request(**fields), stream=stream) == (path, expected)


def test_build_sends_stream_only_when_asked() -> None:
    _, sent = build(request(params={"stream": True}), stream=False)
    assert "stream" not in sent


def test_build_sends_the_seed_not_a_prompt_about_it() -> None:
    """The old client wrote the seed into the prompt and never sent it."""
    _, sent = build(request(seed=1234), stream=False)
    assert sent["seed"] == 1234
    assert sent["prompt"] == "Once upon a time"


# ------------------------------------------------------------------ parse


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {"text": " there was", "reached_end": True, "input_tokens": 4, "output_tokens": 3},
            Completion(text=" there was", texts=(" there was",), input_tokens=4, output_tokens=3),
        ),
        ({"text": "x"}, Completion(text="x", texts=("x",))),
        (
            {"text": ["a", "b"], "truncated_prompt": True, "finish_reason": "length"},
            Completion(text="a", texts=("a", "b"), truncated_prompt=True, finish_reason="length"),
        ),
        ({"text": "", "input_tokens": None}, Completion(text="", texts=("",))),
    ],
    ids=["counts", "text-only", "n-texts", "null-counts"],
)
def test_parse_reads_the_answer(obj: dict[str, Any], expected: Completion) -> None:
    assert parse(200, body(obj), node=NODE) == expected


@pytest.mark.parametrize(
    ("status", "raw", "message", "fault"),
    [
        (503, b"busy", "HTTP 503: busy", Fault.server),
        (429, b"", "HTTP 429: (empty body)", Fault.server),
        (
            400,
            body({"error": "invalid max_tokens"}),
            "HTTP 400: invalid max_tokens",
            Fault.bad_request,
        ),
        (
            404,
            body({"error": {"message": "no such engine"}}),
            "HTTP 404: no such engine",
            Fault.refused,
        ),
    ],
)
def test_status_other_than_200_is_a_server_error(
    status: int, raw: bytes, message: str, fault: Fault
) -> None:
    with pytest.raises(ServerError) as caught:
        parse(status, raw, node=NODE)
    error = caught.value
    assert (str(error), error.status, classify(error)) == (message, status, fault)
    assert (error.node, error.body) == (NODE, raw.decode())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"<html>oops</html>", "body is not JSON"),
        (b"", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b"[1, 2]", "body is a list, not a JSON object"),
        (body({"error": "out of memory"}), "node error: out of memory"),
        (body({"reached_end": True}), "answer has no text"),
        (body({"text": 3}), "text: expected a string or a list of strings, got an integer"),
        (body({"text": []}), "text: expected a string or a list of strings, got a list"),
        (body({"text": ["a", 1]}), "text: expected a string or a list of strings"),
        (body({"text": "a", "input_tokens": "3"}), "input_tokens: expected int, got a string"),
        (body({"text": "a", "output_tokens": True}), "output_tokens: expected int, got a boolean"),
        (body({"text": "a", "truncated_prompt": 1}), "truncated_prompt: expected bool"),
        (body({"text": "a", "finish_reason": 2}), "finish_reason: expected str"),
    ],
)
def test_bad_200_body_is_a_protocol_error_keeping_the_body(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as caught:
        parse(200, raw, node=NODE)
    assert caught.value.node == NODE
    assert caught.value.body == raw.decode("utf-8", errors="replace")


def test_kept_body_is_truncated() -> None:
    with pytest.raises(ServerError) as caught:
        parse(500, b"x" * 10_000, node=NODE)
    assert caught.value.body == "x" * BODY_LIMIT
    assert len(str(caught.value)) < 300


# ------------------------------------------------------------------ streams

STREAM = stream_bytes(
    {"text": "Hé", "reached_end": False},
    {"text": "llo ", "reached_end": False},
    {"text": "wörld ✓", "reached_end": False},
    {"text": "", "reached_end": True, "input_tokens": 5, "output_tokens": 4},
)
STREAMED = Completion(
    text="Héllo wörld ✓", texts=("Héllo wörld ✓",), input_tokens=5, output_tokens=4
)


def test_stream_fragments_are_concatenated() -> None:
    assert decode(STREAM) == STREAMED


def test_stream_fed_one_byte_at_a_time_decodes_the_same() -> None:
    assert decode(STREAM, [1] * (len(STREAM) - 1)) == STREAMED


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_of_a_stream_decodes_to_the_same_completion(cuts: list[int]) -> None:
    points = sorted(cuts)
    sizes = [b - a for a, b in zip([0, *points], points, strict=False)]
    assert decode(STREAM, sizes) == STREAMED


def test_final_chunk_without_its_blank_line_still_counts() -> None:
    assert decode(STREAM.rstrip(b"\n")) == STREAMED


def test_crlf_separators_are_accepted() -> None:
    assert decode(STREAM.replace(b"\n\n", b"\r\n\r\n")) == STREAMED


def test_n_streams_concatenate_per_index() -> None:
    data = stream_bytes(
        {"text": ["a", "x"], "reached_end": False},
        {"text": ["b", "y"], "reached_end": False},
        {"text": ["", "z"], "reached_end": True, "output_tokens": 5},
    )
    assert decode(data) == Completion(text="ab", texts=("ab", "xyz"), output_tokens=5)


def test_stream_without_reached_end_is_a_protocol_error() -> None:
    data = stream_bytes(
        {"text": "cut ", "reached_end": False}, {"text": "off", "reached_end": False}
    )
    with pytest.raises(ProtocolError, match="stream ended without reached_end: true") as caught:
        decode(data)
    assert "cut " in caught.value.body


def test_empty_stream_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="without reached_end"):
        decode(b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"text": "a", "reached_end": false}\n\nnot json\n\n', "body is not JSON"),
        (b'{"error": "engine crashed"}\n\n', "node error: engine crashed"),
        (b'{"text": 7}\n\n', "text: expected a string"),
        (b'{"text": "a", "reached_end": "no"}\n\n', "reached_end: expected true or false"),
        (STREAM + b'{"text": "more"}\n\n', "data after the final stream chunk"),
    ],
)
def test_bad_chunk_is_a_protocol_error_as_soon_as_it_is_complete(data: bytes, message: str) -> None:
    decoder = StreamDecoder(node=NODE)
    with pytest.raises(ProtocolError, match=message) as caught:
        decoder.feed(data)
    assert caught.value.node == NODE


def test_a_chunk_that_never_ends_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_textsynth, "CHUNK_LIMIT", 100)
    decoder = StreamDecoder(node=NODE)
    with pytest.raises(ProtocolError, match="stream chunk larger than 100 bytes"):
        decoder.feed(b'{"text": "' + b"a" * 200)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_random_bytes_give_a_protocol_error_or_a_completion(data: bytes) -> None:
    decoder = StreamDecoder(node=NODE)
    try:
        decoder.feed(data)
        result = decoder.finish()
    except ProtocolError:
        return
    assert isinstance(result, Completion)


# ------------------------------------------------------------------ engine listing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (body({"engines": [{"id": "smollm2", "n_ctx": 2048}]}), ["smollm2"]),
        (body({"data": [{"name": "a"}, "b"]}), ["a", "b"]),
        (body(["x", "y"]), ["x", "y"]),
    ],
)
def test_engine_listing_shapes_are_read(raw: bytes, expected: list[str]) -> None:
    assert parse_engines(200, raw, node=NODE) == expected


@pytest.mark.parametrize("status", [400, 404, 405, 501])
def test_node_without_a_listing_gives_none(status: int) -> None:
    assert parse_engines(status, b"Not Found", node=NODE) is None


def test_listing_server_error_is_raised() -> None:
    with pytest.raises(ServerError, match="HTTP 401"):
        parse_engines(401, b"unauthorized", node=NODE)


@pytest.mark.parametrize("raw", [b"nope", body({"models": 3}), body({"engines": [{}]})])
def test_bad_listing_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_engines(200, raw, node=NODE)


# ------------------------------------------------------------------ slots

OUR_HEALTH = {"status": "ok", "engines": ["smollm2"], "slots": 4, "busy": 1, "queue": 0}
OUR_ENGINES = {
    "engines": [
        {"id": "smollm2", "n_ctx": 2048, "slots": 4, "busy": 1, "queue": 0},
        {"id": "other", "n_ctx": 2048, "slots": 2, "busy": 0, "queue": 0},
    ]
}


@pytest.mark.parametrize(
    ("path", "status", "raw", "slots"),
    [
        ("/health", 200, body(OUR_HEALTH), 4),
        ("/health", 200, body({"status": "ok", "slots": 3}), 3),
        ("/health", 200, body(OUR_HEALTH | {"engines": ["smollm2", "other"], "slots": 6}), None),
        ("/health", 200, body(OUR_HEALTH | {"engines": ["other"]}), None),
        ("/health", 200, body({"status": "ok", "pid": 12}), None),
        ("/health", 200, body(OUR_HEALTH | {"slots": 0}), None),
        ("/health", 200, body(OUR_HEALTH | {"slots": 2.5}), None),
        ("/health", 200, body(OUR_HEALTH | {"slots": True}), None),
        ("/health", 200, b"OK", None),
        ("/health", 404, b"Not Found", None),
        ("/health", 503, body(OUR_HEALTH), None),
        ("/v1/engines", 200, body(OUR_ENGINES), 4),
        ("/v1/engines", 200, body({"data": [{"name": "smollm2", "slots": 8}]}), 8),
        ("/v1/engines", 200, body([{"id": "smollm2", "slots": 1}]), 1),
        ("/v1/engines", 200, body({"engines": [{"id": "smollm2"}]}), None),
        ("/v1/engines", 200, body({"engines": ["smollm2"]}), None),
        ("/v1/engines", 200, body({"engines": [{"id": "other", "slots": 2}]}), None),
        ("/v1/engines", 200, body({"engines": 3}), None),
        ("/v1/engines", 404, b"Not Found", None),
    ],
    ids=[
        "health",
        "health-without-engine-list",
        "health-shared-by-engines",
        "health-other-engine",
        "health-without-slots",
        "health-zero",
        "health-fraction",
        "health-boolean",
        "health-not-json",
        "ts-server-health-404",
        "health-not-200",
        "listing",
        "listing-data-name",
        "listing-bare-list",
        "listing-without-slots",
        "listing-of-ids",
        "listing-without-the-engine",
        "listing-not-a-list",
        "ts-server-listing-404",
    ],
)
def test_a_node_says_its_slots_for_the_engine_or_nothing(
    path: str, status: int, raw: bytes, slots: int | None
) -> None:
    assert parse_slots(path, status, raw, engine="smollm2") == slots
