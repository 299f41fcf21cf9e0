from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner._errors import ProtocolError, ServerError
from runner._openai import StreamDecoder, build, parse, parse_engines, parse_slots
from runner._request import Api, Completion, GenerationRequest, Style

NODE = "127.0.0.1:8000"
SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}}


def request(**fields: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "api": Api.openai,
        "style": Style.chat,
        "engine": "smollm2",
        "prompt": "Name a film.",
    }
    return GenerationRequest(**(base | fields))


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def sse(*events: Any, done: bool = True, sep: bytes = b"\n") -> bytes:
    lines = [b"data: " + json.dumps(e, ensure_ascii=False).encode() for e in events]
    if done:
        lines.append(b"data: [DONE]")
    return b"".join(line + sep + sep for line in lines)


def decode(data: bytes, pieces: list[int] | None = None) -> Completion:
    decoder = StreamDecoder(node=NODE)
    start = 0
    for size in pieces or []:
        decoder.feed(data[start : start + size])
        start += size
    decoder.feed(data[start:])
    return decoder.finish()


# ------------------------------------------------------------------ build


def test_chat_request_sends_system_and_user_messages() -> None:
    path, sent = build(request(system="Be brief."), stream=False)
    assert path == "/v1/chat/completions"
    assert sent == {
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a film."},
        ],
    }


def test_chat_request_without_system_sends_only_the_user_turn() -> None:
    _, sent = build(request(), stream=False)
    assert sent["messages"] == [{"role": "user", "content": "Name a film."}]


def test_completion_request_sends_the_prompt() -> None:
    path, sent = build(request(style=Style.completion), stream=False)
    assert (path, sent) == ("/v1/completions", {"model": "smollm2", "prompt": "Name a film."})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9},
            {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9},
        ),
        ({"stop": ["\n"], "n": 2}, {"stop": ["\n"], "n": 2}),
        (
            {"presence_penalty": 0.5, "frequency_penalty": 0.1},
            {"presence_penalty": 0.5, "frequency_penalty": 0.1},
        ),
        ({"top_k": 40}, {"top_k": 40}),
        ({"repetition_penalty": 1.1}, {"repeat_penalty": 1.1}),
        ({"typical_p": 0.9, "grammar": "root ::= x"}, {}),
        ({"max_tokens": None, "top_k": None}, {}),
    ],
    ids=[
        "standard",
        "stop-n",
        "penalties",
        "top-k-kept",
        "repetition-renamed",
        "no-equivalent-dropped",
        "none-dropped",
    ],
)
def test_params_are_mapped_to_openai_names(
    params: dict[str, Any], expected: dict[str, Any]
) -> None:
    _, sent = build(request(params=params), stream=False)
    assert {k: v for k, v in sent.items() if k not in ("model", "messages")} == expected


def test_seed_is_sent() -> None:
    assert build(request(seed=7), stream=False)[1]["seed"] == 7


def test_schema_is_sent_as_json_object_with_schema_by_default() -> None:
    """The shape llama_cpp.server 0.3 accepts (it answers 422 to json_schema)."""
    _, sent = build(request(schema=SCHEMA), stream=False)
    assert sent["response_format"] == {"type": "json_object", "schema": SCHEMA}


def test_schema_can_be_sent_in_the_standard_json_schema_shape() -> None:
    _, sent = build(request(schema=SCHEMA), stream=False, schema_format="json_schema")
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }


def test_stream_asks_for_usage() -> None:
    _, sent = build(request(), stream=True)
    assert (sent["stream"], sent["stream_options"]) == (True, {"include_usage": True})


# ------------------------------------------------------------------ parse

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Heat"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            CHAT,
            Completion(
                text="Heat",
                texts=("Heat",),
                input_tokens=12,
                output_tokens=2,
                finish_reason="stop",
                finish_reasons=("stop",),
            ),
        ),
        (
            {"choices": [{"text": " upon", "finish_reason": "length", "index": 0}]},
            Completion(
                text=" upon", texts=(" upon",), finish_reason="length", finish_reasons=("length",)
            ),
        ),
        (
            {
                "choices": [
                    {"index": 1, "text": "b", "finish_reason": "stop"},
                    {"index": 0, "text": "a", "finish_reason": "length"},
                ]
            },
            Completion(
                text="a",
                texts=("a", "b"),
                finish_reason="length",
                finish_reasons=("length", "stop"),  # each choice's, in index order
            ),
        ),
        (
            {"choices": [{"message": {"content": ""}}], "usage": None},
            Completion(text="", texts=("",), finish_reasons=(None,)),
        ),
    ],
    ids=["chat", "text-completion", "n-choices-ordered-by-index", "minimal"],
)
def test_parse_reads_choices_and_usage(obj: dict[str, Any], expected: Completion) -> None:
    assert parse(200, body(obj), node=NODE) == expected


@pytest.mark.parametrize(
    ("status", "raw", "message"),
    [
        (
            500,
            body({"error": {"message": "model crashed", "type": "server_error"}}),
            "HTTP 500: model crashed",
        ),
        (422, body({"detail": [{"loc": ["body", "x"]}]}), "HTTP 422: {"),
        (401, body({"detail": "Invalid API key"}), "HTTP 401: Invalid API key"),
        (502, b"Bad Gateway", "HTTP 502: Bad Gateway"),
    ],
)
def test_status_other_than_200_is_a_server_error(status: int, raw: bytes, message: str) -> None:
    with pytest.raises(ServerError) as caught:
        parse(status, raw, node=NODE)
    assert str(caught.value).startswith(message)
    assert (caught.value.status, caught.value.node, caught.value.body) == (
        status,
        NODE,
        raw.decode(),
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "body is not JSON"),
        (b'"text"', "body is a string, not a JSON object"),
        (body({"error": {"message": "context overflow"}}), "node error: context overflow"),
        (body({"choices": []}), "answer has no choices"),
        (body({"object": "chat.completion"}), "answer has no choices"),
        (body({"choices": "x"}), "choices: expected a list of objects"),
        (body({"choices": [{"index": "0", "text": "a"}]}), "bad index"),
        (body({"choices": [{"message": {"content": None}}]}), "choice 0 has no text"),
        (body({"choices": [{"text": 5}]}), "choice 0 has no text"),
        (body({"choices": [{"text": "a", "finish_reason": 1}]}), "finish_reason"),
        (
            body({"choices": [{"text": "a"}], "usage": {"prompt_tokens": "3"}}),
            "usage.prompt_tokens",
        ),
        (body({"choices": [{"text": "a"}], "usage": []}), "usage: expected an object"),
    ],
)
def test_bad_200_body_is_a_protocol_error_keeping_the_body(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as caught:
        parse(200, raw, node=NODE)
    assert caught.value.body == raw.decode()


# ------------------------------------------------------------------ streams

CHAT_STREAM = sse(
    {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "Hé"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "at ✓"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}},
)
CHAT_STREAMED = Completion(
    text="Héat ✓",
    texts=("Héat ✓",),
    input_tokens=9,
    output_tokens=3,
    finish_reason="stop",
    finish_reasons=("stop",),
)


def test_chat_stream_deltas_are_concatenated() -> None:
    assert decode(CHAT_STREAM) == CHAT_STREAMED


def test_crlf_sse_with_comments_and_fields_decodes() -> None:
    """sse-starlette (llama_cpp.server) separates with CRLF and sends ``: ping`` comments."""
    data = b": ping - 2024-01-01\r\n\r\nevent: message\r\nid: 1\r\n" + CHAT_STREAM.replace(
        b"\n", b"\r\n"
    )
    assert decode(data) == CHAT_STREAMED


def test_completion_stream_reads_text_fragments() -> None:
    data = sse(
        {"choices": [{"index": 0, "text": "Once", "finish_reason": None}]},
        {"choices": [{"index": 0, "text": " upon", "finish_reason": "length"}]},
    )
    assert decode(data) == Completion(
        text="Once upon", texts=("Once upon",), finish_reason="length", finish_reasons=("length",)
    )


def test_n_streams_concatenate_per_index() -> None:
    data = sse(
        {"choices": [{"index": 1, "text": "x"}, {"index": 0, "text": "a"}]},
        {"choices": [{"index": 0, "text": "b", "finish_reason": "stop"}]},
        {"choices": [{"index": 1, "text": "y", "finish_reason": "length"}]},
    )
    assert decode(data) == Completion(
        text="ab", texts=("ab", "xy"), finish_reason="stop", finish_reasons=("stop", "length")
    )


def test_stream_with_finish_reason_but_no_done_is_complete() -> None:
    assert decode(CHAT_STREAM.replace(b"data: [DONE]\n\n", b"")) == CHAT_STREAMED


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(0, len(CHAT_STREAM)), max_size=12))
def test_any_split_of_a_stream_decodes_to_the_same_completion(cuts: list[int]) -> None:
    points = sorted(cuts)
    sizes = [b - a for a, b in zip([0, *points], points, strict=False)]
    assert decode(CHAT_STREAM, sizes) == CHAT_STREAMED


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            sse({"choices": [{"index": 0, "delta": {"content": "He"}}]}, done=False),
            "stream reached its end before a finish_reason",
        ),
        (
            sse({"choices": [{"index": 0, "delta": {"content": "He"}}]}),
            r"stream reached \[DONE\] before a finish_reason",
        ),
        (b"", "stream reached its end before a finish_reason"),
        (b"data: [DONE]\n\n", r"stream reached \[DONE\] before a finish_reason"),
        (
            sse(
                {
                    "choices": [
                        {"index": 0, "text": "a", "finish_reason": "stop"},
                        {"index": 1, "text": "b"},
                    ]
                }
            ),
            "before a finish_reason",
        ),
    ],
    ids=["cut-off", "interrupted-with-done", "empty", "done-only", "one-choice-unfinished"],
)
def test_stream_without_finish_reason_is_a_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"data: {not json}\n\n", "body is not JSON"),
        (b'data: {"error": {"message": "overloaded"}}\n\n', "node error: overloaded"),
        (b'data: {"choices": [{"delta": {"content": 1}}]}\n\n', "choice 0: text is an integer"),
    ],
)
def test_bad_event_is_a_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        StreamDecoder(node=NODE).feed(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: ("data: " + t).encode()))
def test_random_bytes_give_a_protocol_error_or_a_completion(data: bytes) -> None:
    decoder = StreamDecoder(node=NODE)
    try:
        decoder.feed(data)
        result = decoder.finish()
    except ProtocolError:
        return
    assert isinstance(result, Completion)


# ------------------------------------------------------------------ model listing


def test_model_listing_gives_ids() -> None:
    listing = {"object": "list", "data": [{"id": "smollm2", "object": "model"}]}
    assert parse_engines(200, body(listing), node=NODE) == ["smollm2"]


def test_server_without_model_listing_gives_none() -> None:
    assert parse_engines(404, body({"detail": "Not Found"}), node=NODE) is None


# ------------------------------------------------------------------ llama.cpp's server, recorded
# Bodies as llama.cpp's server (xllamacpp, ``python -m runner.node.llama_server``) sent them
# to SmolLM2 requests; only ``id`` and ``created`` shortened.

LLAMA_TIMINGS = {
    "cache_n": 30,
    "prompt_n": 1,
    "prompt_ms": 18.273,
    "predicted_n": 5,
    "predicted_ms": 55.565,
    "predicted_per_second": 71.98776208044633,
}
LLAMA_CHAT = {
    "choices": [
        {
            "finish_reason": "length",
            "index": 0,
            "message": {"role": "assistant", "content": "I'm happy to help! Just checking"},
        }
    ],
    "created": 1,
    "model": "smollm2",
    "system_fingerprint": "b0-unknown",
    "object": "chat.completion",
    "usage": {
        "completion_tokens": 8,
        "prompt_tokens": 31,
        "total_tokens": 39,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
    "id": "chatcmpl-x",
    "timings": LLAMA_TIMINGS | {"cache_n": 0, "prompt_n": 31, "predicted_n": 8},
}
LLAMA_TEXT = {
    "choices": [
        {
            "text": " and create a new recipe based on the",
            "index": 0,
            "logprobs": None,
            "finish_reason": "length",
        }
    ],
    "object": "text_completion",
    "usage": {"completion_tokens": 8, "prompt_tokens": 1, "total_tokens": 9},
    "timings": LLAMA_TIMINGS | {"cache_n": 0, "prompt_n": 1, "predicted_n": 8},
}


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"choices": choices, "id": "chatcmpl-y", "model": "smollm2"} | extra


LLAMA_STREAM_EVENTS = [
    _chunk([{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}]),
    _chunk([{"finish_reason": None, "index": 0, "delta": {"content": "Hello"}}]),
    _chunk([{"finish_reason": None, "index": 0, "delta": {"content": "!"}}]),
    _chunk([{"finish_reason": None, "index": 0, "delta": {"content": " How can I"}}]),
]
LLAMA_STREAM_END = [{"finish_reason": "length", "index": 0, "delta": {}}]
LLAMA_USAGE = {
    "completion_tokens": 5,
    "prompt_tokens": 31,
    "total_tokens": 36,
    "prompt_tokens_details": {"cached_tokens": 30},
}


@pytest.mark.parametrize(
    ("obj", "tokens"),
    [(LLAMA_CHAT, (31, 8)), (LLAMA_TEXT, (1, 8))],
    ids=["chat", "completion"],
)
def test_llama_cpp_whole_answers_give_their_usage(obj: dict[str, Any], tokens: tuple) -> None:
    completion = parse(200, body(obj), node=NODE)
    assert (completion.input_tokens, completion.output_tokens) == tokens
    assert completion.finish_reason == "length"


def test_llama_cpp_stream_with_include_usage_gives_the_final_usage() -> None:
    data = sse(
        *LLAMA_STREAM_EVENTS,
        _chunk(LLAMA_STREAM_END),
        _chunk([], usage=LLAMA_USAGE, timings=LLAMA_TIMINGS),
    )
    completion = decode(data)
    assert completion.text == "Hello! How can I"
    assert (completion.input_tokens, completion.output_tokens) == (31, 5)


def test_llama_cpp_stream_without_usage_gives_the_timings_counts() -> None:
    """Without ``include_usage`` llama.cpp sends only ``timings`` on the last event."""
    data = sse(*LLAMA_STREAM_EVENTS, _chunk(LLAMA_STREAM_END, timings=LLAMA_TIMINGS))
    completion = decode(data)
    assert (completion.input_tokens, completion.output_tokens) == (31, 5)


def test_llama_cpp_completion_stream_gives_usage_on_its_finishing_event() -> None:
    data = sse(
        {"choices": [{"text": "-", "index": 0, "logprobs": None, "finish_reason": None}]},
        {"choices": [{"text": "fit", "index": 0, "logprobs": None, "finish_reason": None}]},
        {
            "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}],
            "usage": {"completion_tokens": 2, "prompt_tokens": 1, "total_tokens": 3},
            "timings": LLAMA_TIMINGS,
        },
    )
    completion = decode(data)
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("-fit", 1, 2)


@pytest.mark.parametrize(
    ("timings", "tokens"),
    [
        ({"prompt_n": 4, "cache_n": 6, "predicted_n": 3}, (10, 3)),
        ({"prompt_n": 4, "predicted_n": 0}, (4, 0)),
        ({"predicted_n": 7}, (None, 7)),
        ({"predicted_n": "7", "prompt_n": True}, (None, None)),
        ({"predicted_n": -1}, (None, None)),
        ([1, 2], (None, None)),
        (None, (None, None)),
    ],
    ids=[
        "cached-prompt",
        "zero",
        "answer-only",
        "wrong-types",
        "negative",
        "not-an-object",
        "none",
    ],
)
def test_timings_stand_in_for_a_missing_usage_leniently(timings: Any, tokens: tuple) -> None:
    obj = {"choices": [{"text": "a", "finish_reason": "stop"}], "timings": timings}
    completion = parse(200, body(obj), node=NODE)
    assert (completion.input_tokens, completion.output_tokens) == tokens


def test_usage_wins_over_timings() -> None:
    obj = {
        "choices": [{"text": "a", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
        "timings": {"prompt_n": 50, "predicted_n": 50},
    }
    completion = parse(200, body(obj), node=NODE)
    assert (completion.input_tokens, completion.output_tokens) == (2, 1)


# ------------------------------------------------------------------ slots


@pytest.mark.parametrize(
    ("status", "raw", "slots"),
    [
        (
            200,
            body({"total_slots": 2, "model_alias": "smollm2", "default_generation_settings": {}}),
            2,
        ),
        (200, body({"model_alias": "smollm2"}), None),
        (200, body({"total_slots": 0}), None),
        (200, body({"total_slots": True}), None),
        (200, body([2]), None),
        (200, b"<html>", None),
        (404, body({"detail": "Not Found"}), None),
    ],
    ids=["llama-cpp", "no-total-slots", "zero", "boolean", "not-an-object", "not-json", "vllm-404"],
)
def test_props_total_slots_are_the_nodes_slots(status: int, raw: bytes, slots: int | None) -> None:
    assert parse_slots("/props", status, raw, engine="smollm2") == slots
