"""The in-process front end: an httpx transport that routes to simulated nodes.

Give it to any httpx client (``httpx.AsyncClient(transport=SimTransport(cluster))``) and
requests to a node's ``http://host:port`` are answered by that node's behaviour core, with
``trio.sleep`` for every wait — so under pytest-trio's ``autojump_clock`` a ten-minute
scenario takes milliseconds. Failures map to what httpx raises on a real network: a dead
node is :class:`httpx.ConnectError`, a node dying mid-answer :class:`httpx.ReadError`, and a
hang or stall never returns (the caller's trio timeout cancels it; httpx's own ``timeout``
settings are not applied by custom transports).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx

from ._behaviour import NodeDied, NodeDown
from ._cluster import SimCluster


class SimTransport(httpx.AsyncBaseTransport):
    """Routes each request by URL ``host:port`` to a node of ``cluster``.

    Args:
        cluster: the simulated nodes; its :attr:`~bench._behaviour.SimCluster.log` records
            every request.
    """

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        address = f"{url.host}:{port}"
        node = self.cluster.nodes.get(address)
        if node is None:
            raise httpx.ConnectError(f"no simulated node at {address}", request=request)
        body = await request.aread()
        try:
            reply = await node.handle(request.method, url.raw_path.decode("ascii"), body)
        except NodeDown as exc:
            raise httpx.ConnectError(f"connection refused: {exc}", request=request) from exc
        except NodeDied as exc:
            raise httpx.ReadError(f"connection reset: {exc}", request=request) from exc
        headers = {"content-type": reply.content_type}
        if reply.chunks is None:
            return httpx.Response(reply.status, headers=headers, content=reply.body)
        return httpx.Response(
            reply.status, headers=headers, stream=_ChunkStream(reply.chunks, request)
        )


class _ChunkStream(httpx.AsyncByteStream):
    """A streamed answer's body; a node death mid-stream is :class:`httpx.ReadError`."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], request: httpx.Request) -> None:
        self._chunks = chunks
        self._request = request

    def __aiter__(self) -> _ChunkStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._chunks)
        except NodeDied as exc:
            raise httpx.ReadError(f"connection reset: {exc}", request=self._request) from exc

    async def aclose(self) -> None:
        await self._chunks.aclose()
