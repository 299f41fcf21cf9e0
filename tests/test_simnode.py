"""The simulated TextSynth nodes: behaviour core, in-process transport, real HTTP server."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import h11
import httpx
import pytest
import trio

from bench import _answers
from bench.simnode import (
    ClusterSpec,
    ErrorBurst,
    SimCluster,
    SimNodeSpec,
    SimTransport,
    make_marker,
    sim_server,
)

NODE = "http://127.0.0.1:30001"
OTHER = "http://127.0.0.1:30002"


def completions(base: str = NODE) -> str:
    return f"{base}/v1/engines/sim/completions"


def body(tokens: int, *, item: int = 0, stream: bool = False, **extra: Any) -> dict[str, Any]:
    prompt = f"tell me something {make_marker(item=item, tokens=tokens)}"
    return {"prompt": prompt, "max_tokens": 1000, "stream": stream, **extra}


def frames(raw: bytes) -> list[dict[str, Any]]:
    """Split a TextSynth stream into its JSON objects, checking the framing."""
    assert raw.endswith(b"\n\n")
    return [json.loads(part) for part in raw.split(b"\n\n")[:-1]]


def client_for(cluster: SimCluster) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=SimTransport(cluster), timeout=None)


def sim_client(*specs: SimNodeSpec, **options: Any) -> tuple[SimCluster, httpx.AsyncClient]:
    cluster = SimCluster(specs, **options)
    return cluster, client_for(cluster)


# ------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("prompt", "seed", "max_tokens", "expected"),
    [
        (f"x {make_marker(tokens=37)}", 1, 100, 37),
        (f"x {make_marker(tokens=37)}", 2, 100, 37),
        (f"x {make_marker(tokens=500)}", 1, 100, 100),
        (f"x {make_marker(tokens=0)}", 1, 100, 1),
    ],
)
def test_marker_fixes_the_answer_length_clipped_to_max_tokens(
    prompt: str, seed: int, max_tokens: int, expected: int
) -> None:
    assert _answers.answer_length(prompt, seed, max_tokens, median=50, sigma=0.5) == expected


def test_lengths_are_a_function_of_seed_and_prompt() -> None:
    def length(prompt: str, seed: int) -> int:
        return _answers.answer_length(prompt, seed, 10_000, median=120, sigma=0.6)

    lengths = [length(f"prompt {i}", 7) for i in range(400)]
    assert lengths == [length(f"prompt {i}", 7) for i in range(400)]
    assert lengths != [length(f"prompt {i}", 8) for i in range(400)]
    assert 90 < sorted(lengths)[200] < 160  # the median is near 120
    assert max(lengths) > 2 * min(lengths)  # and they spread


def test_split_text_shares_characters_in_proportion_to_tokens() -> None:
    pieces = _answers.split_text("abcdefghij" * 3, 30, 8)
    assert [t for _, t in pieces] == [8, 8, 8, 6]
    assert "".join(p for p, _ in pieces) == "abcdefghij" * 3


def test_spec_round_trips_through_json_and_rejects_unknown_keys() -> None:
    spec = SimNodeSpec("n1", speed=5, slots=3, error_bursts=(ErrorBurst(1, 2, 429),))
    cluster = ClusterSpec((spec,), time_scale=0.5)
    assert ClusterSpec.loads(cluster.dumps()) == cluster
    with pytest.raises(ValueError, match="spede"):
        SimNodeSpec.from_json({"name": "n1", "spede": 3})


# ------------------------------------------------------ in process, virtual time


async def test_one_request_takes_prompt_latency_plus_tokens_over_speed(
    autojump_clock: trio.abc.Clock,
) -> None:
    _, client = sim_client(SimNodeSpec("a", speed=10, prompt_latency=2))
    async with client:
        start = trio.current_time()
        response = await client.post(completions(), json=body(50))
        assert trio.current_time() - start == pytest.approx(7.0)
    answer = response.json()
    assert answer["reached_end"] is True
    assert answer["output_tokens"] == 50
    assert len(answer["text"].split()) == 50  # filler: one word per token


async def test_requests_beyond_the_slots_wait_in_fifo_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    cluster, client = sim_client(SimNodeSpec("a", speed=10, slots=2))
    ends: dict[int, float] = {}
    async with client:
        start = trio.current_time()

        async def send(i: int) -> None:
            await client.post(completions(), json=body(10, item=i))
            ends[i] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(send, i)
                await trio.sleep(0.01)  # arrive in order 0, 1, 2, 3, 4
    assert [round(ends[i]) for i in range(5)] == [1, 1, 2, 2, 3]
    served = sorted(cluster.log, key=lambda e: e.served or 0)
    assert [e.item for e in served] == ["0", "1", "2", "3", "4"]


async def test_adaptive_node_throughput_peaks_at_its_best_concurrency(
    autojump_clock: trio.abc.Clock,
) -> None:
    spec = SimNodeSpec("a", speed=10, slots=64, best_concurrency=4, degrade=0.5)
    throughput = {}
    for k in (1, 2, 4, 8, 16):
        _, client = sim_client(spec)
        async with client, trio.open_nursery() as nursery:
            start = trio.current_time()
            for i in range(k):
                nursery.start_soon(partial(client.post, completions(), json=body(40, item=i)))
        throughput[k] = 40 * k / (trio.current_time() - start)
    assert throughput[1] < throughput[2] < throughput[4]
    assert throughput[4] > throughput[8] > throughput[16]
    assert throughput[4] == pytest.approx(spec.capacity, rel=0.01)


async def test_stream_uses_textsynth_framing_and_matches_the_whole_answer(
    autojump_clock: trio.abc.Clock,
) -> None:
    _, client = sim_client(SimNodeSpec("a", speed=100, chunk_tokens=4))
    async with client:
        async with client.stream("POST", completions(), json=body(30, stream=True, seed=3)) as r:
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
        whole = (await client.post(completions(), json=body(30, seed=3))).json()
    objects = frames(raw)
    assert len(objects) == 8 + 1  # ceil(30 / 4) pieces, then the end
    assert all(o["reached_end"] is False for o in objects[:-1])
    assert objects[-1]["reached_end"] is True
    assert objects[-1]["output_tokens"] == 30
    assert objects[-1]["input_tokens"] > 0
    assert "".join(o["text"] for o in objects) == whole["text"]


async def test_same_seed_and_prompt_give_the_same_answer_on_any_node(
    autojump_clock: trio.abc.Clock,
) -> None:
    slow, fast = SimNodeSpec("slow", speed=5), SimNodeSpec("fast", speed=50, slots=4)
    request = {"prompt": "no marker here", "seed": 11, "max_tokens": 400}
    _, client = sim_client(slow, fast)
    async with client:
        one = (await client.post(completions(NODE), json=request)).json()
        two = (await client.post(completions(OTHER), json=request)).json()
        other_seed = (await client.post(completions(OTHER), json={**request, "seed": 12})).json()
    assert one == two
    assert other_seed["text"] != one["text"]


async def test_chat_endpoint_answers_like_completions(autojump_clock: trio.abc.Clock) -> None:
    _, client = sim_client(SimNodeSpec("a", speed=None))
    async with client:
        response = await client.post(
            f"{NODE}/v1/engines/sim/chat",
            json={"messages": [f"hi {make_marker(tokens=12)}"], "system": "be brief"},
        )
    assert response.json()["output_tokens"] == 12


async def test_dead_node_aborts_requests_in_flight_refuses_new_ones_then_recovers(
    autojump_clock: trio.abc.Clock,
) -> None:
    cluster, client = sim_client(SimNodeSpec("a", speed=10, slots=1, die_at=5, recover_at=20))
    async with client:
        outcomes: list[str] = []

        async def send(stream: bool) -> None:
            try:
                async with client.stream("POST", completions(), json=body(100, stream=stream)) as r:
                    await r.aread()
                outcomes.append("answered")
            except httpx.ReadError:
                outcomes.append(f"read error at {trio.current_time() - start:g}")

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, True)  # generating when the node dies
            await trio.sleep(0.01)
            nursery.start_soon(send, False)  # queued behind it
        assert outcomes == ["read error at 5", "read error at 5"]
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{NODE}/health")
        await trio.sleep_until(start + 20)
        assert (await client.post(completions(), json=body(10))).status_code == 200
    assert [e.outcome for e in cluster.log] == ["died", "died", "ok"]
    generating = next(e for e in cluster.log if e.stream)
    assert generating.output_tokens == 48  # six chunks of 8 tokens before second 5


async def test_hung_node_reads_requests_but_never_answers(
    autojump_clock: trio.abc.Clock,
) -> None:
    cluster, client = sim_client(SimNodeSpec("a", speed=10, hang_from=3))
    async with client:
        with trio.move_on_after(1000) as scope:
            await client.post(completions(), json=body(100, item=1))  # freezes at second 3
        assert scope.cancelled_caught
        with trio.move_on_after(1000) as scope:
            await client.get(f"{NODE}/health")
        assert scope.cancelled_caught
        with trio.move_on_after(1000) as scope:
            await client.post(completions(), json=body(1, item=2))
        assert scope.cancelled_caught
    assert [(e.item, e.outcome, e.output_tokens) for e in cluster.log] == [
        ("1", "hung", 0),  # froze at second 3, before the first half was out
        ("2", "hung", 0),
    ]


async def test_stalling_node_stops_streams_halfway_but_health_answers(
    autojump_clock: trio.abc.Clock,
) -> None:
    cluster, client = sim_client(SimNodeSpec("a", speed=10, chunk_tokens=5, stall_from=0))
    received: list[bytes] = []
    async with client:
        with trio.move_on_after(1000) as scope:
            async with client.stream("POST", completions(), json=body(40, stream=True)) as r:
                async for chunk in r.aiter_raw():
                    received.append(chunk)
        assert scope.cancelled_caught
        assert (await client.get(f"{NODE}/health")).status_code == 200
    texts = frames(b"".join(received))
    assert len(texts) == 3  # 15 of 40 tokens sent; the piece reaching half is never sent
    assert all(t["reached_end"] is False for t in texts)
    assert cluster.log[0].outcome == "stalled"


@pytest.mark.parametrize("status", [500, 429, 503])
async def test_error_burst_answers_its_status_with_an_error_body(
    autojump_clock: trio.abc.Clock, status: int
) -> None:
    spec = SimNodeSpec("a", speed=10, error_bursts=(ErrorBurst(5, 10, status),))
    cluster, client = sim_client(spec)
    async with client:
        start = trio.current_time()
        before = await client.post(completions(), json=body(10))
        await trio.sleep_until(start + 6)
        during = await client.post(completions(), json=body(10))
        await trio.sleep_until(start + 10)
        after = await client.post(completions(), json=body(10))
    assert (before.status_code, during.status_code, after.status_code) == (200, status, 200)
    assert "error" in during.json()
    assert [e.outcome for e in cluster.log] == ["ok", "error", "ok"]


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_answers_are_a_200_that_is_not_json(
    autojump_clock: trio.abc.Clock, stream: bool
) -> None:
    cluster, client = sim_client(SimNodeSpec("a", speed=100, malformed=1.0))
    async with client, client.stream("POST", completions(), json=body(20, stream=stream)) as r:
        raw = await r.aread()
    assert r.status_code == 200
    last = raw.rstrip(b"\n").split(b"\n\n")[-1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(last)
    assert cluster.log[0].outcome == "malformed"


async def test_malformed_probability_is_followed(autojump_clock: trio.abc.Clock) -> None:
    cluster, client = sim_client(SimNodeSpec("a", speed=None, malformed=0.25, seed=5))
    async with client:
        for i in range(400):
            await client.post(completions(), json=body(5, item=i))
    share = sum(e.outcome == "malformed" for e in cluster.log) / 400
    assert 0.18 < share < 0.32


async def test_answer_hook_writes_the_text(autojump_clock: trio.abc.Clock) -> None:
    def answer(request: dict[str, Any], n_tokens: int) -> str:
        valid = request.get("seed", 0) % 2 == 0
        return json.dumps({"tokens": n_tokens}) if valid else '{"tokens": '

    _, client = sim_client(SimNodeSpec("a", speed=None), answer=answer)
    async with client:
        even = (await client.post(completions(), json=body(9, seed=2))).json()["text"]
        odd = (await client.post(completions(), json=body(9, seed=3))).json()["text"]
    assert json.loads(even) == {"tokens": 9}
    assert odd == '{"tokens": '


async def test_bad_requests_get_400_and_unknown_routes_404(
    autojump_clock: trio.abc.Clock,
) -> None:
    _, client = sim_client(SimNodeSpec("a", speed=None))
    async with client:
        assert (await client.post(completions(), content=b"{oops")).status_code == 400
        assert (await client.post(completions(), json={"max_tokens": 3})).status_code == 400
        assert (await client.post(f"{NODE}/v1/engines/sim/nope", json={})).status_code == 404
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/health")  # no node there


# ------------------------------------------------------------ real HTTP server


async def test_server_streams_with_textsynth_framing_over_keep_alive() -> None:
    spec = ClusterSpec((SimNodeSpec("a", speed=1000, chunk_tokens=10),), time_scale=0.01)
    async with sim_server(spec) as server:
        host, port = server.addresses["a"].split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            for i in range(2):  # two requests, one connection
                payload = json.dumps(body(25, item=i, stream=True)).encode()
                for event in (
                    h11.Request(
                        method="POST",
                        target="/v1/engines/sim/completions",
                        headers=[("host", host), ("content-length", str(len(payload)))],
                    ),
                    h11.Data(data=payload),
                    h11.EndOfMessage(),
                ):
                    await stream.send_all(conn.send(event) or b"")
                raw = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        assert event.status_code == 200
                    elif isinstance(event, h11.Data):
                        raw += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                objects = frames(raw)
                assert objects[-1] == {
                    "text": "",
                    "reached_end": True,
                    "truncated_prompt": False,
                    "input_tokens": objects[-1]["input_tokens"],
                    "output_tokens": 25,
                }
                conn.start_next_cycle()
    assert [e.item for e in server.log()] == ["0", "1"]


async def test_server_death_resets_connections_and_refuses_until_recovery() -> None:
    spec = ClusterSpec((SimNodeSpec("a", speed=10, die_at=30, recover_at=60),), time_scale=0.01)
    async with sim_server(spec) as server, httpx.AsyncClient(timeout=5) as client:
        url = server.base_urls["a"]
        start = trio.current_time()
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.post(completions(url), json=body(1000))  # dies at 0.3 s real
        assert 0.25 < trio.current_time() - start < 0.6
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/health")
        await trio.sleep_until(start + 0.65)
        assert (await client.get(f"{url}/health")).status_code == 200
    assert server.log()[0].outcome == "died"


async def test_server_hang_accepts_and_never_answers() -> None:
    spec = ClusterSpec((SimNodeSpec("a", speed=10, hang_from=0),), time_scale=0.01)
    async with sim_server(spec) as server, httpx.AsyncClient(timeout=None) as client:
        with trio.move_on_after(0.3) as scope:
            await client.post(completions(server.base_urls["a"]), json=body(5))
        assert scope.cancelled_caught
    assert [e.outcome for e in server.log()] == ["hung"]


async def test_server_serves_hundreds_of_concurrent_connections() -> None:
    """300 clients at once, each on its own connection (raw HTTP: httpx's pool would be
    the bottleneck), all served concurrently by a 400-slot node."""
    spec = ClusterSpec((SimNodeSpec("a", speed=10, slots=400),), time_scale=0.01)
    statuses: list[bytes] = []
    async with sim_server(spec) as server:
        host, port = server.addresses["a"].split(":")

        async def send(i: int) -> None:
            payload = json.dumps(body(5, item=i)).encode()
            head = (
                "POST /v1/engines/sim/completions HTTP/1.1\r\nhost: x\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
            )
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(head.encode() + payload)
                answer = b""
                while data := await stream.receive_some(65536):
                    answer += data
            statuses.append(answer.split(b"\r\n", 1)[0])

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(300):
                    nursery.start_soon(send, i)
    assert statuses == [b"HTTP/1.1 200 "] * 300
    log = server.log()
    events = sorted([(e.served or 0, 1) for e in log] + [(e.end, -1) for e in log])
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak >= 100
