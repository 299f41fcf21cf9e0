from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest
import trio

from runner._client import NodeClient, NodeFacts
from runner._connection import RETRY_AFTER_MAX, RETRY_AFTER_MIN, STALL_SLACK, retry_after_seconds
from runner._errors import (
    ConfigError,
    NodeBusy,
    NodeTimeout,
    ProtocolError,
    ServerError,
    TransportError,
)
from runner._policy import Fault, classify
from runner._request import Api, Completion, GenerationRequest, Style

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
STALL = 5.0
TS_ANSWER = {"text": "Heat", "reached_end": True, "input_tokens": 7, "output_tokens": 2}
TS_STREAM = [
    b'{"text": "He", "reached_end": false}\n\n',
    b'{"text": "at", "reached_end": false}\n\n',
    b'{"text": "", "reached_end": true, "input_tokens": 7, "output_tokens": 2}\n\n',
]
TS_STREAMED = Completion(text="Heat", texts=("Heat",), input_tokens=7, output_tokens=2)


def request(api: Api = Api.textsynth, **fields: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "api": api,
        "style": Style.chat,
        "engine": "smollm2",
        "prompt": "Name a film.",
        "params": {"max_tokens": 10},
        "seed": 3,
    }
    return GenerationRequest(**(base | fields))


def client(
    handler: Handler | None = None,
    *,
    api: Api = Api.textsynth,
    api_key: str | None = None,
    base_url: str = "http://127.0.0.1:8088",
) -> NodeClient:
    transport = httpx.MockTransport(handler) if handler is not None else None
    return NodeClient(
        base_url,
        name="127.0.0.1:8088",
        api=api,
        api_key=api_key,
        connect_timeout=1.0,
        stall_timeout=STALL,
        max_connections=2,
        transport=transport,
    )


def answering(
    content: bytes | list[bytes], status: int = 200, seen: list[httpx.Request] | None = None
) -> Handler:
    async def handler(req: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(req)
        if isinstance(content, list):
            return httpx.Response(status, content=chunks(content))
        return httpx.Response(status, content=content)

    return handler


async def chunks(parts: list[bytes], pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        await trio.sleep(pause)
        yield part


def raising(exc: Exception) -> Handler:
    async def handler(req: httpx.Request) -> httpx.Response:
        raise exc

    return handler


# ------------------------------------------------------------------ requests and auth


async def test_generate_posts_the_textsynth_request_and_parses_the_answer() -> None:
    seen: list[httpx.Request] = []
    async with client(answering(json.dumps(TS_ANSWER).encode(), seen=seen)) as node:
        completion = await node.generate(request(), stream=False)
    assert completion == TS_STREAMED
    (sent,) = seen
    assert (sent.method, sent.url.path) == ("POST", "/v1/engines/smollm2/chat")
    assert json.loads(sent.content) == {"messages": ["Name a film."], "max_tokens": 10, "seed": 3}


async def test_generate_speaks_openai_to_an_openai_node() -> None:
    seen: list[httpx.Request] = []
    answer = {"choices": [{"message": {"content": "Heat"}, "finish_reason": "stop"}]}
    async with client(answering(json.dumps(answer).encode(), seen=seen), api=Api.openai) as node:
        completion = await node.generate(request(Api.openai), stream=False)
    assert completion.text == "Heat"
    assert seen[0].url.path == "/v1/chat/completions"
    assert json.loads(seen[0].content)["model"] == "smollm2"


@pytest.mark.parametrize(
    ("api_key", "expected"), [(None, None), ("", None), ("sk-secret", "Bearer sk-secret")]
)
async def test_bearer_header_is_sent_only_when_a_key_is_set(
    api_key: str | None, expected: str | None
) -> None:
    seen: list[httpx.Request] = []
    async with client(
        answering(json.dumps(TS_ANSWER).encode(), seen=seen), api_key=api_key
    ) as node:
        await node.generate(request(), stream=False)
    assert seen[0].headers.get("authorization") == expected


def test_the_key_is_not_in_the_repr() -> None:
    assert "sk-secret" not in repr(client(api_key="sk-secret"))


@pytest.mark.parametrize("url", ["127.0.0.1:8088", "ftp://127.0.0.1/", "http://"])
def test_a_bad_base_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"node 127\.0\.0\.1:8088: "):
        client(base_url=url)


async def test_probe_sends_a_tiny_real_completion() -> None:
    seen: list[httpx.Request] = []
    async with client(answering(json.dumps(TS_ANSWER).encode(), seen=seen)) as node:
        completion = await node.probe("smollm2", Style.completion)
    assert completion.text == "Heat"
    assert seen[0].url.path == "/v1/engines/smollm2/completions"
    assert json.loads(seen[0].content)["max_tokens"] <= 2


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("stream", [False, True])
async def test_http_error_status_is_a_server_error_with_the_body(stream: bool) -> None:
    async with client(answering(b'{"error": "engine busy"}', status=503)) as node:
        with pytest.raises(ServerError) as caught:
            await node.generate(request(), stream=stream)
    error = caught.value
    assert (error.status, error.node, error.body) == (
        503,
        "127.0.0.1:8088",
        '{"error": "engine busy"}',
    )
    assert str(error) == "HTTP 503: engine busy"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_body_that_is_not_an_answer_is_a_protocol_error(stream: bool) -> None:
    async with client(answering(b"<html>hello</html>")) as node:
        with pytest.raises(ProtocolError) as caught:
            await node.generate(request(), stream=stream)
    assert caught.value.node == "127.0.0.1:8088"


@pytest.mark.parametrize(
    ("exc", "expected", "message"),
    [
        (httpx.ConnectError("refused"), TransportError, "cannot connect: refused"),
        (httpx.ConnectTimeout("slow"), TransportError, "could not connect within 1s"),
        (httpx.ReadError("reset"), TransportError, "ReadError: reset"),
        (httpx.RemoteProtocolError("bad"), TransportError, "RemoteProtocolError: bad"),
        (httpx.ReadTimeout("slow"), NodeTimeout, "stalled: no byte for 5s"),
        (httpx.WriteTimeout("slow"), NodeTimeout, "timed out: WriteTimeout"),
    ],
)
async def test_httpx_errors_are_translated_keeping_the_node(
    exc: Exception, expected: type[Exception], message: str
) -> None:
    async with client(raising(exc)) as node:
        with pytest.raises(expected, match=message) as caught:
            await node.generate(request(), stream=True)
    assert caught.value.node == "127.0.0.1:8088"  # type: ignore[attr-defined]
    assert caught.value.__cause__ is exc


async def test_a_connection_broken_mid_stream_is_a_transport_error() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield TS_STREAM[0]
        raise httpx.ReadError("connection reset by peer")

    async def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=broken())

    async with client(handler) as node:
        with pytest.raises(TransportError, match="connection reset"):
            await node.generate(request(), stream=True)


# ------------------------------------------------------------------ streams and stalls


@pytest.mark.parametrize("split", [False, True])
async def test_a_stream_is_decoded(split: bool) -> None:
    parts = TS_STREAM if not split else [bytes([b]) for b in b"".join(TS_STREAM)]
    seen: list[httpx.Request] = []
    async with client(answering(parts, seen=seen)) as node:
        assert await node.generate(request(), stream=True) == TS_STREAMED
    assert json.loads(seen[0].content)["stream"] is True


async def test_an_openai_stream_is_decoded() -> None:
    events = [
        {"choices": [{"index": 0, "delta": {"content": "He"}}]},
        {"choices": [{"index": 0, "delta": {"content": "at"}, "finish_reason": "stop"}]},
    ]
    parts = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    async with client(answering(parts), api=Api.openai) as node:
        completion = await node.generate(request(Api.openai), stream=True)
    assert (completion.text, completion.finish_reason) == ("Heat", "stop")


async def test_a_stream_that_stalls_is_a_node_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def stalling() -> AsyncIterator[bytes]:
        yield TS_STREAM[0]
        await trio.sleep(STALL * 10)
        yield TS_STREAM[1]

    async def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=stalling())

    async with client(handler) as node:
        start = trio.current_time()
        with pytest.raises(NodeTimeout, match="stalled: no byte for 5s") as caught:
            await node.generate(request(), stream=True)
    # Seen after stall_timeout without a byte, and at most the watch's slack later.
    assert STALL <= trio.current_time() - start <= STALL * (1 + STALL_SLACK)
    assert caught.value.node == "127.0.0.1:8088"


async def test_a_slow_but_steady_stream_is_not_a_stall(autojump_clock: trio.abc.Clock) -> None:
    async def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks(TS_STREAM, pause=STALL * 0.9))

    async with client(handler) as node:
        assert await node.generate(request(), stream=True) == TS_STREAMED


async def test_no_headers_within_the_stall_timeout_is_a_node_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def handler(req: httpx.Request) -> httpx.Response:
        await trio.sleep(STALL * 10)
        return httpx.Response(200, content=TS_STREAM)

    async with client(handler) as node:
        with pytest.raises(NodeTimeout):
            await node.generate(request(), stream=True)


async def test_a_non_streamed_answer_may_take_longer_than_the_stall_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """It sends nothing until it is complete; the caller's request timeout bounds it."""

    async def handler(req: httpx.Request) -> httpx.Response:
        await trio.sleep(STALL * 10)
        return httpx.Response(200, content=json.dumps(TS_ANSWER).encode())

    async with client(handler) as node:
        assert (await node.generate(request(), stream=False)).text == "Heat"


# ------------------------------------------------------------------ engine listing


@pytest.mark.parametrize(
    ("api", "path", "answer", "expected"),
    [
        (Api.textsynth, "/v1/engines", {"engines": [{"id": "smollm2"}]}, ["smollm2"]),
        (Api.openai, "/v1/models", {"data": [{"id": "smollm2"}]}, ["smollm2"]),
    ],
)
async def test_engines_lists_what_the_node_serves(
    api: Api, path: str, answer: Any, expected: list[str]
) -> None:
    seen: list[httpx.Request] = []
    async with client(answering(json.dumps(answer).encode(), seen=seen), api=api) as node:
        assert await node.engines() == expected
    assert (seen[0].method, seen[0].url.path) == ("GET", path)


async def test_engines_is_none_for_a_node_without_a_listing() -> None:
    async with client(answering(b"Not Found", status=404)) as node:
        assert await node.engines() is None


# ------------------------------------------------------------------ real sockets (loopback)


def closed_port() -> int:
    """A loopback port that was just bound and closed: nothing listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_a_transport_error() -> None:
    async with client(base_url=f"http://127.0.0.1:{closed_port()}") as node:
        with pytest.raises(TransportError, match="cannot connect") as caught:
            await node.generate(request(), stream=False)
    assert caught.value.node == "127.0.0.1:8088"


async def serve_once(
    parts: list[bytes], pause: float, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A one-connection HTTP/1.1 server on loopback answering with a chunked stream."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    stream = await listeners[0].accept()
    async with stream, listeners[0]:
        received = b""
        while b"\r\n\r\n" not in received:
            received += await stream.receive_some()
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        while len(body) < length:
            body += await stream.receive_some()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for part in parts:
            await stream.send_all(b"%x\r\n%s\r\n" % (len(part), part))
            await trio.sleep(pause)
        await stream.send_all(b"0\r\n\r\n")


async def test_a_real_stream_over_loopback_is_decoded(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_once, TS_STREAM, 1.0)
        async with client(base_url=f"http://127.0.0.1:{port}") as node:
            assert await node.generate(request(), stream=True) == TS_STREAMED


async def test_a_real_stalled_stream_over_loopback_is_a_node_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_once, TS_STREAM, STALL * 10)
        async with client(base_url=f"http://127.0.0.1:{port}") as node:
            with pytest.raises(NodeTimeout, match="stalled"):
                await node.generate(request(), stream=True)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ busy nodes

NOW = 1_700_000_000.0  # a wall-clock time for HTTP-dates


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 7 ", 7.0),
        ("0", RETRY_AFTER_MIN),
        ("3600", RETRY_AFTER_MAX),
        ("Tue, 14 Nov 2023 22:13:25 GMT", 5.0),  # NOW + 5 s
        ("Tue, 14 Nov 2023 22:13:00 GMT", RETRY_AFTER_MIN),  # in the past
        ("Wed, 15 Nov 2023 22:13:20 GMT", RETRY_AFTER_MAX),  # a day ahead
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_and_bounded(header: str | None, seconds: float | None) -> None:
    pause = retry_after_seconds(header, now=NOW)
    if seconds is None:
        assert pause is None
    else:
        assert pause == pytest.approx(seconds)


def refusing(status: int, headers: dict[str, str]) -> Handler:
    async def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, json={"error": "every slot is busy"})

    return handler


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [503, 429])
async def test_503_or_429_with_retry_after_is_node_busy(status: int, stream: bool) -> None:
    async with client(refusing(status, {"Retry-After": "2"})) as node:
        with pytest.raises(NodeBusy) as caught:
            await node.generate(request(), stream=stream)
    busy = caught.value
    assert (busy.status, busy.retry_after, busy.node) == (status, 2.0, "127.0.0.1:8088")
    assert "every slot is busy" in str(busy) and "retry after 2s" in str(busy)
    assert classify(busy) is Fault.busy


@pytest.mark.parametrize(
    ("status", "headers"),
    [(503, {}), (429, {}), (503, {"Retry-After": "whenever"}), (500, {"Retry-After": "1"})],
    ids=["503-no-header", "429-no-header", "unreadable-header", "500-with-header"],
)
async def test_other_refusals_stay_plain_server_errors(
    status: int, headers: dict[str, str]
) -> None:
    async with client(refusing(status, headers)) as node:
        with pytest.raises(ServerError) as caught:
            await node.generate(request(), stream=False)
    assert not isinstance(caught.value, NodeBusy)
    assert caught.value.status == status


async def test_a_busy_error_hides_the_api_key() -> None:
    async def handler(req: httpx.Request) -> httpx.Response:
        quoted = req.headers["Authorization"]
        return httpx.Response(503, headers={"Retry-After": "1"}, json={"error": quoted})

    async with client(handler, api_key="s3cret") as node:
        with pytest.raises(NodeBusy) as caught:
            await node.generate(request(), stream=False)
    assert "s3cret" not in str(caught.value) and "s3cret" not in caught.value.body


# ------------------------------------------------------------------ slots


def routes(table: dict[str, tuple[int, Any]], seen: list[str]) -> Handler:
    async def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.url.path)
        status, payload = table.get(req.url.path, (404, {"error": "no route"}))
        return httpx.Response(status, json=payload)

    return handler


HEALTH = {"status": "ok", "engines": ["smollm2"], "slots": 4, "busy": 0, "queue": 0}


LISTING = {"engines": [{"id": "smollm2", "n_ctx": 2048, "slots": 4}]}


@pytest.mark.parametrize(
    ("api", "table", "facts", "asked"),
    [
        (Api.textsynth, {"/v1/engines": (200, LISTING)}, NodeFacts(4, 2048), ["/v1/engines"]),
        (
            Api.textsynth,
            {"/health": (200, HEALTH), "/v1/engines": (200, {"engines": [{"id": "smollm2"}]})},
            NodeFacts(4, None),
            ["/v1/engines", "/health"],
        ),
        (Api.textsynth, {}, NodeFacts(None, None), ["/v1/engines", "/health"]),
        (
            Api.openai,
            {"/props": (200, {"total_slots": 2, "default_generation_settings": {"n_ctx": 512}})},
            NodeFacts(2, 512),
            ["/props"],
        ),
        (Api.openai, {"/health": (200, HEALTH)}, NodeFacts(None, None), ["/props"]),
    ],
    ids=["our-node", "older-node-health", "ts-server", "llama-cpp", "vllm"],
)
async def test_facts_asks_the_protocols_places_in_order(
    api: Api, table: dict[str, tuple[int, Any]], facts: NodeFacts, asked: list[str]
) -> None:
    seen: list[str] = []
    async with client(routes(table, seen), api=api) as node:
        assert await node.facts("smollm2") == facts
    assert seen == asked


async def test_facts_of_an_unreachable_node_is_a_transport_error() -> None:
    async with client(raising(httpx.ConnectError("refused"))) as node:
        with pytest.raises(TransportError):
            await node.facts("smollm2")
