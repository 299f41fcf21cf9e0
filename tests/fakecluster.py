"""A scripted fake TextSynth cluster behind an injected httpx transport (virtual time).

Each fake node answers after ``delay`` seconds of ``trio.sleep`` (so pytest-trio's
``autojump_clock`` makes runs instant) and can be scripted to die, hang, answer with
errors or refuse as busy (503 + ``Retry-After``); ``answer`` decides the text from the request
body. ``GET /health`` says ``slots`` when ``reports_slots`` is set, as our open node does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio


def echo_answer(body: dict[str, Any]) -> str:
    return f"answer to: {body.get('prompt') or body.get('messages', [''])[-1]}"


@dataclass
class FakeNode:
    """Behaviour of one fake node; times are trio clock times (virtual in tests)."""

    delay: float = 1.0
    answer: Callable[[dict[str, Any]], str] = echo_answer
    dead_from: float | None = None  # connections refused from then on...
    dead_until: float | None = None  # ...until then (None: for good)
    hang_from: float | None = None  # requests never answered from then on
    fail_first: int = 0  # the first N requests get `fail_status`
    fail_status: int = 500
    malformed_first: int = 0  # the first N answers are not JSON
    parallel: int | None = None  # requests served at once; the rest wait in FIFO order
    busy_first: int = 0  # the first N requests are refused as busy...
    refuse_beyond: int | None = None  # ...and so is any request past this many in service
    busy_status: int = 503
    retry_after: str | None = "1"  # ...with this Retry-After header (None: no header)
    reports_slots: int | None = None  # GET /health says these slots
    refuse: Callable[[dict[str, Any]], tuple[int, str] | None] | None = None  # (status, error)
    health_delay: float = 0.0  # GET /health answers after this long
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # when each request came
    gets: list[str] = field(default_factory=list)  # paths of GET requests (health, listing)
    served: int = 0
    active: int = 0

    def _dead(self, now: float) -> bool:
        if self.dead_from is None or now < self.dead_from:
            return False
        return self.dead_until is None or now < self.dead_until

    def __post_init__(self) -> None:
        self._servers = trio.Semaphore(self.parallel) if self.parallel else None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        now = trio.current_time()
        if self._dead(now):
            raise httpx.ConnectError("connection refused (fake node is dead)", request=request)
        if request.method == "GET":
            return await self._get(request)
        body = json.loads(request.content) if request.content else {}
        self.requests.append(body)
        self.arrivals.append(now)
        if self.hang_from is not None and now >= self.hang_from:
            await trio.sleep_forever()
        full = self.refuse_beyond is not None and self.active >= self.refuse_beyond
        if len(self.requests) <= self.busy_first or full:
            headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
            return httpx.Response(
                self.busy_status, headers=headers, json={"error": "every slot is busy"}
            )
        if len(self.requests) <= self.busy_first + self.fail_first:
            return httpx.Response(self.fail_status, json={"error": "overloaded"})
        refusal = self.refuse(body) if self.refuse is not None else None
        if refusal is not None:
            return httpx.Response(refusal[0], json={"error": refusal[1]})
        self.active += 1
        try:
            if self._servers is None:
                await trio.sleep(self.delay)
            else:
                async with self._servers:  # trio's Semaphore wakes waiters in FIFO order
                    await trio.sleep(self.delay)
        finally:
            self.active -= 1
        if self._dead(trio.current_time()):
            raise httpx.ReadError("connection reset (fake node died)", request=request)
        if len(self.requests) <= self.busy_first + self.fail_first + self.malformed_first:
            return httpx.Response(200, content=b"<html>oops</html>")
        self.served += 1
        text = self.answer(body)
        tokens = max(1, len(text.split()))
        if body.get("stream"):
            return httpx.Response(200, content=_stream(text, tokens))
        return httpx.Response(
            200,
            json={
                "text": text,
                "reached_end": True,
                "input_tokens": 10,
                "output_tokens": tokens,
                "truncated_prompt": False,
                "finish_reason": "stop",
            },
        )

    async def _get(self, request: httpx.Request) -> httpx.Response:
        self.gets.append(request.url.path)
        await trio.sleep(self.health_delay)
        if request.url.path != "/health":
            return httpx.Response(404, json={"error": "no route"})
        health: dict[str, Any] = {"status": "ok"}
        if self.reports_slots is not None:
            health |= {"engines": ["m"], "slots": self.reports_slots}
        return httpx.Response(200, json=health)


async def _stream(text: str, tokens: int) -> AsyncIterator[bytes]:
    for word in text.split(" "):
        yield json.dumps({"text": word + " ", "reached_end": False}).encode() + b"\n\n"
    last = {"text": "", "reached_end": True, "input_tokens": 10, "output_tokens": tokens}
    yield json.dumps(last).encode() + b"\n\n"


class FakeCluster(httpx.AsyncBaseTransport):
    """Routes each request to the fake node named by its URL's ``host:port``."""

    def __init__(self, nodes: dict[str, FakeNode]) -> None:
        self.nodes = nodes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = f"{request.url.host}:{request.url.port}"
        return await self.nodes[name].handle(request)
