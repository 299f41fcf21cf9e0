"""The real-HTTP front end: simulated nodes served on 127.0.0.1 (trio + h11).

One process hosts every node of a cluster, each on its own port, with HTTP/1.1 keep-alive
and as many concurrent connections as clients open. A node's death is real: its listener
is closed (new connections are refused by the kernel) and its open connections are reset.
A hang is real too: the request is read and never answered. When a client goes away in the
middle of an answer, the request is cancelled and its slot freed.

Run it with ``python -m bench.simnode --spec spec.json``; see :mod:`bench.simnode`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import struct
from collections.abc import Callable
from typing import Any

import h11
import trio

from ._behaviour import NodeDied, NodeDown, Reply, SimNode
from ._cluster import SimCluster

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_MAX_READ = 65536


class NodeServer:
    """Serves one :class:`~bench._behaviour.SimNode` on ``127.0.0.1:port``.

    Args:
        node: the behaviour core.
        port: the port to bind (0: any free port; :attr:`port` holds the one bound).
    """

    def __init__(self, node: SimNode, port: int = 0) -> None:
        self.node = node
        self.port = port
        self._connections: set[trio.SocketStream] = set()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve through deaths and recoveries; reports the bound port once listening."""
        spec, clock = self.node.spec, self.node.clock
        reported = False
        while True:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            if not reported:
                task_status.started(self.port)
                reported = True
            async with trio.open_nursery() as life:
                life.start_soon(self._accept, listeners[0], life)
                life.start_soon(self._die_when_due, life.cancel_scope)
            # The node died: the listener is closed and every connection was reset.
            recover = spec.recover_at
            if recover is None or spec.die_at is None or recover <= spec.die_at:
                await trio.sleep_forever()
            await clock.sleep_until(recover)

    async def _die_when_due(self, life: trio.CancelScope) -> None:
        await self.node.clock.wait_started()
        death = self.node.next_death(self.node.clock.now())
        if math.isinf(death):
            return
        await self.node.clock.sleep_until(death)
        for stream in list(self._connections):
            _reset_on_close(stream)
        life.cancel()

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self._connections.add(stream)
        conn = h11.Connection(h11.SERVER)
        try:
            async with stream:
                while True:
                    request = await _read_request(conn, stream)
                    if request is None:
                        return
                    method, target, body = request
                    if not await self._respond(conn, stream, method, target, body):
                        _reset_on_close(stream)
                        return
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            self._connections.discard(stream)

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, method: str, target: str, body: bytes
    ) -> bool:
        """Answer one request while watching for the client to leave.

        Returns whether the connection can go on (``False``: the client left, or the node
        died and the connection must be reset).
        """
        usable = True
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal usable
                try:
                    while data := await stream.receive_some(_MAX_READ):
                        conn.receive_data(data)  # a pipelined request, kept for later
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                usable = False
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            try:
                await self._answer(conn, stream, method, target, body)
            except (NodeDied, NodeDown, trio.BrokenResourceError, trio.ClosedResourceError):
                usable = False
            nursery.cancel_scope.cancel()
        return usable

    async def _answer(
        self, conn: h11.Connection, stream: trio.SocketStream, method: str, target: str, body: bytes
    ) -> None:
        reply: Reply = await self.node.handle(method, target, body)
        headers = [("content-type", reply.content_type), ("server", "bench-simnode")]

        async def send(event: Any) -> None:
            data = conn.send(event)
            if data:
                await stream.send_all(data)

        if reply.chunks is None:  # one write for the whole answer
            headers.append(("content-length", str(len(reply.body))))
            response = h11.Response(status_code=reply.status, headers=headers)
            events = (response, h11.Data(data=reply.body), h11.EndOfMessage())
            await stream.send_all(b"".join(conn.send(e) or b"" for e in events))
            return
        chunks = reply.chunks
        try:
            await send(h11.Response(status_code=reply.status, headers=headers))
            async for chunk in chunks:
                await send(h11.Data(data=chunk))
        finally:
            await chunks.aclose()
        await send(h11.EndOfMessage())


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[str, str, bytes] | None:
    """The next request's ``(method, target, body)``, or ``None`` when the client is gone."""
    method = target = ""
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(_MAX_READ))
        elif isinstance(event, h11.Request):
            method, target = event.method.decode(), event.target.decode()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return method, target, bytes(body)
        else:  # ConnectionClosed, PAUSED
            return None


def _reset_on_close(stream: trio.SocketStream) -> None:
    """Make the coming close of ``stream`` a reset (RST), as when a process dies."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


async def serve(
    cluster: SimCluster,
    *,
    ports: dict[str, int] | None = None,
    on_ready: Callable[[dict[str, int]], None],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve every node of ``cluster`` until cancelled.

    Args:
        cluster: the nodes.
        ports: a port per node name (default: any free port).
        on_ready: called once with ``{node name: port}`` when every node listens.
    """
    ports = ports or {}
    async with trio.open_nursery() as nursery:
        bound: dict[str, int] = {}
        for node in cluster.nodes.values():
            server = NodeServer(node, ports.get(node.spec.name, 0))
            bound[node.spec.name] = await nursery.start(server.run)
        on_ready(bound)
        task_status.started()


async def wait_for_exit(max_seconds: float, *, watch_stdin: bool = False) -> None:
    """Return on SIGTERM/SIGINT, after ``max_seconds`` (so a forgotten server always stops
    by itself), or — with ``watch_stdin`` — when stdin reaches EOF (the parent is gone)."""
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

        async def on_stdin_eof() -> None:
            stdin = trio.lowlevel.FdStream(os.dup(0))
            async with stdin:
                try:
                    while await stdin.receive_some(_MAX_READ):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_signal)
        if watch_stdin:
            nursery.start_soon(on_stdin_eof)
        await trio.sleep(max_seconds)
        nursery.cancel_scope.cancel()


def ready_line(ports: dict[str, int]) -> str:
    """The line printed when the nodes listen: ``{"ready": {name: "127.0.0.1:port"}}``."""
    return json.dumps({"ready": {name: f"127.0.0.1:{port}" for name, port in ports.items()}})
