"""The overhead yardsticks: the smallest hand-written trio + httpx loops that do the job.

Each node gets one httpx client and ``node.slots`` tasks; every task takes the next item
from one shared iterator, POSTs a completion and reports the answer. There is no retry, no
timeout beyond the attempt's, no health check, no answer check and nothing kept: it is what
a user would write in twenty lines, and what the engine's bookkeeping (stall detection,
breakers, retries, result records, hedging) is measured against in the ``overhead``
scenario. ``minimal`` asks for whole answers; ``minimal_stream`` asks for streamed ones and
parses each chunk, the wire work the engine does by default (it streams to see stalls).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from functools import partial

import httpx
import trio

from ._items import Item
from ._strategy import Answer, Node, Record, Settings, Trace, complete, completion_body


async def minimal(
    nodes: Sequence[Node],
    items: Iterable[Item],
    settings: Settings,
    record: Record,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    stream: bool = False,
) -> None:
    """Run ``items`` with the minimal loop (see the module docstring)."""
    todo = iter(items)
    send = complete_streamed if stream else complete

    async def worker(client: httpx.AsyncClient, node: Node) -> None:
        url = f"{node.base_url}/v1/engines/{settings.engine_id}/completions"
        for it in todo:  # one shared iterator: a free worker takes the next item
            start = trio.current_time()
            answer = await send(client, url, it, settings)
            end = trio.current_time()
            record(Trace(it.id, node.name, start, end, answer.outcome, answer.output_tokens, True))

    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        for node in nodes:
            limits = httpx.Limits(max_connections=node.slots, max_keepalive_connections=node.slots)
            client = httpx.AsyncClient(transport=transport, timeout=None, limits=limits)
            await stack.enter_async_context(client)
            for _ in range(node.slots):
                nursery.start_soon(worker, client, node)


minimal_stream = partial(minimal, stream=True)  # the minimal loop with streamed answers


async def complete_streamed(
    client: httpx.AsyncClient, url: str, item: Item, settings: Settings
) -> Answer:
    """POST one streamed completion and join its chunks' texts (TextSynth framing: one JSON
    object per chunk, chunks separated by a blank line)."""
    body = {**completion_body(item, settings), "stream": True}
    parts: list[str] = []
    tokens = 0
    with trio.move_on_after(settings.real(settings.timeout)):
        try:
            async with client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    return Answer("status")
                async for line in response.aiter_lines():
                    if line:
                        chunk = json.loads(line)
                        parts.append(chunk["text"])
                        tokens = chunk.get("output_tokens", tokens)
        except httpx.TransportError:
            return Answer("transport")
        except (ValueError, KeyError, TypeError):
            return Answer("malformed")
        return Answer("ok", "".join(parts), int(tokens))
    return Answer("timeout")
