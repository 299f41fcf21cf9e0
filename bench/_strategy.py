"""What every strategy shares: its inputs (nodes, items, settings) and its output (traces).

A *strategy* is an async function that runs every item once over the nodes and reports one
:class:`Trace` per request through ``record``::

    async def strategy(
        nodes: Sequence[Node],
        items: Iterable[Item],
        settings: Settings,
        record: Callable[[Trace], None],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None

``transport`` replaces the network (e.g. :class:`~bench._transport.SimTransport` under
virtual time); strategies that need real sockets (nginx) refuse it. Traces are reported,
not returned, so that a strategy over 200,000 items is not measured holding 200,000 traces.
Exactly one trace per item must be ``final``: the request that settled it (its accepted
answer, or the failure after which the strategy gave up).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import httpx
import trio

from ._items import Item

Record = Callable[["Trace"], None]


@dataclass(frozen=True)
class Node:
    """A node as a strategy sees it.

    Attributes:
        name: the node's name.
        base_url: ``http://127.0.0.1:port``.
        slots: the requests in flight a user would configure for it (strategies with one
            global limit ignore it).
    """

    name: str
    base_url: str
    slots: int = 1


@dataclass(frozen=True)
class Settings:
    """Client settings; times are *simulated* seconds (see :meth:`real`).

    Attributes:
        time_scale: real seconds per simulated second.
        engine_id: the engine id in the URL.
        max_tokens: sent with every request.
        concurrency: the global limit of requests in flight (baselines).
        timeout: seconds one attempt may take (the old tool's 60 s).
        retries: further attempts after a failure (the old tool's 2, on the same node).
        probe_timeout: seconds a start-up health probe may take.
    """

    time_scale: float = 1.0
    engine_id: str = "sim"
    max_tokens: int = 512
    concurrency: int = 50
    timeout: float = 60.0
    retries: int = 2
    probe_timeout: float = 5.0

    def real(self, seconds: float) -> float:
        """Real seconds for ``seconds`` simulated seconds."""
        return seconds * self.time_scale


@dataclass(frozen=True)
class Trace:
    """One request as the client saw it.

    Attributes:
        item: the item's id.
        node: the node's name (``nginx`` when a proxy chose it).
        start: ``trio.current_time()`` when it was sent.
        end: ``trio.current_time()`` when it ended.
        outcome: ``ok``, ``status`` (HTTP error), ``malformed``, ``transport`` (connection
            failed or broke), ``timeout`` or ``no_node``.
        output_tokens: tokens in the answer (0 on failure).
        final: this request settled the item.
    """

    item: str
    node: str
    start: float
    end: float
    outcome: str
    output_tokens: int = 0
    final: bool = False


class Strategy(Protocol):
    """The signature every strategy has (see the module docstring)."""

    async def __call__(
        self,
        nodes: Sequence[Node],
        items: Iterable[Item],
        settings: Settings,
        record: Record,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None: ...


# ------------------------------------------------- the baselines' one request


@dataclass(frozen=True)
class Answer:
    """What one request gave: an outcome, and the text and token count when ``ok``."""

    outcome: str
    text: str = ""
    output_tokens: int = 0


def completion_body(item: Item, settings: Settings) -> dict[str, object]:
    """The old tool's request: the prompt and ``max_tokens``, nothing else."""
    return {"prompt": item.prompt, "max_tokens": settings.max_tokens}


def classify(status: int, body: bytes) -> Answer:
    """Judge a non-streamed TextSynth answer (pure)."""
    if status != 200:
        return Answer("status")
    try:
        data = json.loads(body)
    except ValueError:
        return Answer("malformed")
    if not isinstance(data, dict) or "error" in data or not isinstance(data.get("text"), str):
        return Answer("malformed")
    return Answer("ok", data["text"], int(data.get("output_tokens") or 0))


async def complete(client: httpx.AsyncClient, url: str, item: Item, settings: Settings) -> Answer:
    """POST one non-streamed completion within the attempt timeout."""
    with trio.move_on_after(settings.real(settings.timeout)):
        try:
            response = await client.post(url, json=completion_body(item, settings))
        except httpx.TransportError:
            return Answer("transport")
        return classify(response.status_code, response.content)
    return Answer("timeout")


@asynccontextmanager
async def clients(
    count: int, settings: Settings, transport: httpx.AsyncBaseTransport | None
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``count`` httpx clients for the block.

    httpcore's connection pool spends CPU in proportion to its connections on every request
    (about 3 ms per request with 50 connections in one pool here, 1.2 ms with 50 pools of
    one), so the baselines spread their requests over several small pools: the client
    library is not what the benchmarks compare. Each client may open up to
    ``settings.concurrency`` connections, so none ever waits for its pool; httpx's own
    timeouts are off (attempts are bounded by trio cancel scopes).
    """
    limit = settings.concurrency
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, timeout=None, limits=limits)
            )
            for _ in range(max(1, count))
        ]
