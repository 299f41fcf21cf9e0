"""The open node (``python -m runner.node``, real model) under random and hostile requests:
wrong types, huge values, huge, truncated or badly encoded bodies, slow clients, floods,
broken HTTP. Every answer is a 4xx/5xx with a one-line JSON ``error`` or a valid answer, and
the node keeps serving afterwards.

(``tests/node/test_node_server.py`` has the table of single bad fields; these are generated
or work below the HTTP client: raw sockets on 127.0.0.1.)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._realnode import RunningNode

pytestmark = pytest.mark.model

SAMPLING = [
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
]
hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, 1e308, -1e308, 0.5, 1e-300]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "\x00", "\ud7ff", "🙂" * 50, "a" * 5000]),
    st.lists(st.text(max_size=4) | st.integers(), max_size=8),
    st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=3), max_size=4),
)
cheap = st.one_of(st.integers(1, 3), hostile_values)  # a valid value never costs much


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, Any]:
    """A valid, cheap body for one endpoint, with 0 to 2 fields made hostile."""
    action = draw(st.sampled_from(["completions", "chat", "tokenize", "logprob"]))
    text = st.text(max_size=30)
    starts: dict[str, dict[str, Any]] = {
        "completions": {"prompt": draw(text)},
        "chat": {"messages": [draw(text)]},
        "tokenize": {"text": draw(text)},
        "logprob": {"context": draw(text), "continuation": draw(st.text(min_size=1, max_size=8))},
    }
    body = starts[action]
    fields = list(body)
    if action in ("completions", "chat"):
        body["max_tokens"] = draw(st.integers(1, 3))
        extras = {
            "temperature": st.floats(0, 2),
            "top_k": st.integers(1, 100),
            "top_p": st.floats(0.01, 1),
            "seed": st.integers(0, 1000),
            "stop": st.lists(st.text(min_size=1, max_size=3), max_size=2),
            "stream": st.booleans(),
        }
        for name in draw(st.lists(st.sampled_from(sorted(extras)), max_size=3, unique=True)):
            body[name] = draw(extras[name])
        fields += SAMPLING
    for name in draw(st.lists(st.sampled_from([*fields, "junk"]), max_size=2)):
        body[name] = draw(cheap if name in ("max_tokens", "n") else hostile_values)
    return action, body


def check_answer(answer: httpx.Response) -> None:
    """A valid answer, or a 4xx/5xx with a one-line JSON error."""
    if answer.status_code == 200:
        raw = answer.content
        if answer.headers.get("content-type", "").startswith("application/json") and b"\n\n" in raw:
            frames = [json.loads(part) for part in raw.split(b"\n\n") if part.strip()]
            assert frames and (frames[-1].get("reached_end") or "error" in frames[-1]), frames[-1:]
        else:
            assert isinstance(answer.json(), dict)
        return
    assert 400 <= answer.status_code < 600, answer.status_code
    error = answer.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error


def still_serving(node: RunningNode) -> None:
    health = httpx.get(f"{node.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    answer = httpx.post(
        node.endpoint("completions"), json={"prompt": "Hi", "max_tokens": 1}, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["reached_end"] is True
    assert node.process.poll() is None


@pytest.fixture(scope="module")
def session(real_node: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=real_node.url, timeout=30) as client:
        yield client


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=bodies())
def test_random_bodies_get_an_answer_or_a_json_error(
    request: tuple[str, Any], session: httpx.Client, real_node: RunningNode
) -> None:
    action, body = request
    content = json.dumps(body, allow_nan=True).encode()
    answer = session.post(f"/v1/engines/smollm2/{action}", content=content)
    check_answer(answer)


def raw_exchange(node: RunningNode, data: bytes, *, hang_up: bool = False) -> bytes:
    """Send raw bytes on a fresh connection; return everything the node sends back."""
    port = int(node.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        if hang_up:  # the client leaves before the answer
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def http_request(path: str, body: bytes, *, length: int | None = None, extra: str = "") -> bytes:
    size = len(body) if length is None else length
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


def status_and_error(raw: bytes) -> tuple[int, str | None]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        error = json.loads(body).get("error")
    except ValueError:
        error = None
    return status, error


COMPLETIONS = "/v1/engines/smollm2/completions"
DEEP = http_request(COMPLETIONS, b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
HOSTILE = [
    ("bad-utf8", http_request(COMPLETIONS, b'{"prompt": "caf\xe9"}')),
    ("nul-bytes", http_request(COMPLETIONS, b'{"prompt": "\x00\x00"}\x00')),
    ("deep-nesting", DEEP),
    (
        "huge-number",
        http_request(COMPLETIONS, b'{"prompt": "x", "max_tokens": 1' + b"0" * 5000 + b"}"),
    ),
    ("nan", http_request(COMPLETIONS, b'{"prompt": "x", "temperature": NaN}')),
    ("duplicate-keys", http_request(COMPLETIONS, b'{"prompt": "x", "prompt": 5}')),
    ("declared-10GB", http_request(COMPLETIONS, b"{}", length=10 * 2**30)),
    ("negative-length", http_request(COMPLETIONS, b"{}", length=-5)),
    (
        "chunked-garbage",
        (
            f"POST {COMPLETIONS} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        ).encode(),
    ),
    (
        "wrong-content-type",
        http_request(
            COMPLETIONS, b'{"prompt": "Hi", "max_tokens": 1}', extra="Content-Type: text/plain\r\n"
        ),
    ),
]


@pytest.mark.parametrize(("name", "data"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_request_gets_a_status_and_the_node_keeps_serving(
    real_node: RunningNode, name: str, data: bytes
) -> None:
    raw = raw_exchange(real_node, data)
    assert raw, "the node hung up without an answer"
    if raw:
        status, error = status_and_error(raw)
        assert 200 <= status < 600
        if status >= 400 and b"application/json" in raw.partition(b"\r\n\r\n")[0]:
            assert error and "\n" not in error
    still_serving(real_node)


def test_a_deeply_nested_body_is_a_400_naming_the_body(real_node: RunningNode) -> None:
    status, error = status_and_error(raw_exchange(real_node, DEEP))
    assert status == 400 and error is not None and error.startswith("request body:")


def test_a_client_hanging_up_mid_body_is_not_logged_as_a_node_failure(
    real_node: RunningNode,
) -> None:
    before = real_node.log_path.read_text()
    raw_exchange(real_node, http_request(COMPLETIONS, b'{"prompt": "Hi', length=500), hang_up=True)
    time.sleep(0.5)
    assert "Traceback" not in real_node.log_path.read_text()[len(before) :]


def test_a_truncated_body_does_not_hold_up_the_node(real_node: RunningNode) -> None:
    """The client promises 1000 bytes, sends 20, and hangs up."""
    raw = raw_exchange(
        real_node,
        http_request(COMPLETIONS, b'{"prompt": "Tell me ', length=1000),
        hang_up=True,
    )
    assert raw == b"" or status_and_error(raw)[0] >= 400
    still_serving(real_node)


def test_slow_clients_do_not_stop_others_being_served(real_node: RunningNode) -> None:
    """Three slow clients hold connections open mid-headers and mid-body for a few
    seconds; requests from others are answered meanwhile."""
    port = int(real_node.url.rsplit(":", 1)[1])
    stop = threading.Event()
    slow: list[socket.socket] = []

    def dribble(data: bytes) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.append(sock)
        for i in range(len(data)):
            if stop.wait(0.2):
                return
            try:
                sock.sendall(data[i : i + 1])
            except OSError:
                return

    payloads = [
        b"POST /v1/engines/smollm2/completions HTTP/1.1\r\nHost: x\r\n",  # never ends its headers
        http_request(COMPLETIONS, b'{"prompt": "Hi", "max_tokens": 1}'),
        http_request(COMPLETIONS, b'{"prompt": "Hi", "max_tokens": 1}', length=500),
    ]
    threads = [threading.Thread(target=dribble, args=(p,), daemon=True) for p in payloads]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        for _ in range(3):
            still_serving(real_node)
        assert time.monotonic() - started < 20
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        for sock in slow:
            sock.close()
    still_serving(real_node)


def test_a_flood_of_requests_gets_answers_or_json_errors(real_node: RunningNode) -> None:
    """More concurrent requests than the node queues: each one an answer or a JSON 503."""
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        answer = httpx.post(
            real_node.endpoint("completions"), json={"prompt": "Hi", "max_tokens": 2}, timeout=60
        )
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=one) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert len(results) == 24
    for answer in results:
        check_answer(answer)
    still_serving(real_node)


def test_a_client_that_leaves_mid_stream_does_not_wedge_the_node(real_node: RunningNode) -> None:
    for _ in range(3):
        with httpx.stream(
            "POST",
            real_node.endpoint("completions"),
            json={"prompt": "Once upon a time", "max_tokens": 60, "stream": True},
            timeout=30,
        ) as answer:
            assert answer.status_code == 200
            next(answer.iter_bytes())  # read a little, then hang up
    still_serving(real_node)
