"""Baseline 1: the old tool's strategy, re-implemented faithfully.

At start it probes every node once (``GET /health``) and keeps those that answered. It then
loads every item, gives item *i* to live node *i mod n* (fixed, whatever the node's speed),
starts one task per item, and lets one global semaphore hold the requests in flight
(``settings.concurrency``, 50). A failed request is retried on the *same* node
(``settings.retries`` times, each attempt bounded by ``settings.timeout``). Answers are kept
in memory until the end, as the old tool wrote its output only when everything was done.
Each node gets its own httpx client (see :func:`bench._strategy.clients`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import httpx
import trio

from ._items import Item
from ._strategy import Node, Record, Settings, Trace, clients, complete


async def roundrobin(
    nodes: Sequence[Node],
    items: Iterable[Item],
    settings: Settings,
    record: Record,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Run ``items`` the old tool's way (see the module docstring)."""
    async with clients(len(nodes), settings, transport) as per_node:
        client_of = {node.name: client for node, client in zip(nodes, per_node, strict=True)}
        live = [node for node in nodes if await _healthy(client_of[node.name], node, settings)]
        work = list(items)
        answers: list[str | None] = [None] * len(work)
        if not live:
            now = trio.current_time()
            for it in work:
                record(Trace(it.id, "", now, now, "no_node", final=True))
            return
        semaphore = trio.Semaphore(settings.concurrency)
        engine = settings.engine_id

        async def run(index: int, it: Item, node: Node) -> None:
            url = f"{node.base_url}/v1/engines/{engine}/completions"
            client = client_of[node.name]
            async with semaphore:
                for attempt in range(settings.retries + 1):
                    start = trio.current_time()
                    answer = await complete(client, url, it, settings)
                    final = answer.outcome == "ok" or attempt == settings.retries
                    end = trio.current_time()
                    record(
                        Trace(
                            it.id,
                            node.name,
                            start,
                            end,
                            answer.outcome,
                            answer.output_tokens,
                            final,
                        )
                    )
                    if answer.outcome == "ok":
                        answers[index] = answer.text
                        return

        async with trio.open_nursery() as nursery:
            for index, it in enumerate(work):
                nursery.start_soon(run, index, it, live[index % len(live)])


async def _healthy(client: httpx.AsyncClient, node: Node, settings: Settings) -> bool:
    with trio.move_on_after(settings.real(settings.probe_timeout)):
        try:
            response = await client.get(f"{node.base_url}/health")
        except httpx.TransportError:
            return False
        return response.status_code == 200
    return False
