"""The one place that talks to nodes: a :class:`NodeClient` per node.

It builds requests with the protocol module of the node's API (:mod:`runner._textsynth` or
:mod:`runner._openai`), sends them with its own ``httpx.AsyncClient``, and parses the answers.
httpx exceptions are translated here, once, into :class:`~runner._errors.NodeError`
subclasses that carry the node's name; the node's API key is taken out of every error, even
one whose body quotes the request's headers.

Timeouts: connecting is bounded by ``connect_timeout``. While a streamed answer is read, no
byte for ``stall_timeout`` seconds is a stall (:class:`~runner._errors.NodeTimeout`); this is
checked both by httpx (per socket read) and by one trio cancel scope whose deadline moves with
every chunk, so it also holds for injected transports. A non-streamed answer sends nothing
until it is complete, so it has no stall check: the whole request is bounded by the caller's
cancel scope (``trio.fail_after(request_timeout)``), never here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from types import ModuleType, TracebackType
from typing import Any

import httpx
import trio

from . import _openai, _textsynth
from ._errors import ConfigError, NodeError, NodeTimeout, ProtocolError, TransportError
from ._request import Api, Completion, GenerationRequest, Style

ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error body read before giving up on the rest
PROBE_PROMPT = "Hello"
KEY_PLACEHOLDER = "[api key]"  # what an error quoting the node's key shows instead

_WIRES: dict[Api, ModuleType] = {Api.textsynth: _textsynth, Api.openai: _openai}


class NodeClient:
    """Talks to one node. Use as an async context manager; it owns one HTTP connection pool.

    Args:
        base_url: the node's address, e.g. ``http://10.0.0.5:8088``.
        name: the node's name in errors (``host:port``).
        api: the protocol the node speaks.
        api_key: sent as ``Authorization: Bearer ...`` when set, and only then.
        connect_timeout: seconds allowed to open a connection.
        stall_timeout: seconds without a byte after which a streamed answer is abandoned.
        max_connections: connections kept to the node (the engine gates concurrency itself;
            allow its slots plus one for a hedge).
        transport: an httpx transport to use instead of the network (tests).

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL.
    """

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        api: Api,
        api_key: str | None = None,
        connect_timeout: float,
        stall_timeout: float,
        max_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"node {name}: invalid base URL {base_url!r}: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"node {name}: base URL {base_url!r} is not an http(s) URL")
        self.base_url = base_url
        self.name = name
        self.api = api
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self._api_key = api_key
        self._max_connections = max_connections
        self._transport = transport
        self._wire = _WIRES[api]
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"NodeClient({self.name!r}, {self.base_url!r}, api={self.api.value})"

    async def __aenter__(self) -> NodeClient:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
        )
        http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            # read=None: only streamed requests get a read (stall) timeout, set per request.
            # pool=None: the engine gates concurrency; waiting for a connection is its call.
            timeout=httpx.Timeout(
                connect=self.connect_timeout, read=None, write=self.stall_timeout, pool=None
            ),
            limits=limits,
            transport=self._transport,
            trust_env=False,  # nodes are addressed directly, never through proxies from env
        )
        await http.__aenter__()
        self._http = http
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.__aexit__(exc_type, exc, traceback)

    async def generate(self, request: GenerationRequest, *, stream: bool) -> Completion:
        """Send one generation request and return the node's answer.

        Raises:
            TransportError: no connection, or it broke.
            NodeTimeout: a streamed answer stalled for ``stall_timeout`` seconds.
            ServerError: HTTP status other than 200.
            ProtocolError: the answer is not a valid answer of the protocol.
        """
        path, body = self._wire.build(request, stream=stream)
        with self._key_hidden():
            if not stream:
                status, content = await self._exchange("POST", path, body)
                completion: Completion = self._wire.parse(status, content, node=self.name)
                return completion
            decoder = self._wire.StreamDecoder(node=self.name)
            status, content = await self._exchange("POST", path, body, feed=decoder.feed)
            if status != 200:
                self._wire.parse(status, content, node=self.name)  # raises ServerError
            completion = decoder.finish()
            return completion

    async def probe(self, engine: str, style: Style, *, max_tokens: int = 2) -> Completion:
        """Ask for a tiny real completion: the node is up and its engine answers.

        Raises:
            NodeError: as :meth:`generate`.
        """
        request = GenerationRequest(
            api=self.api,
            style=style,
            engine=engine,
            prompt=PROBE_PROMPT,
            params={"max_tokens": max_tokens},
        )
        return await self.generate(request, stream=False)

    async def engines(self) -> list[str] | None:
        """The engine (TextSynth) or model (OpenAI) ids the node serves.

        Returns:
            The ids, or ``None`` when the node has no listing endpoint (ts_server).

        Raises:
            NodeError: the node could not be reached or answered nonsense.
        """
        with self._key_hidden():
            status, content = await self._exchange("GET", self._wire.ENGINES_PATH, None)
            engines: list[str] | None = self._wire.parse_engines(status, content, node=self.name)
            return engines

    # ----------------------------------------------------------------- sending

    @contextlib.contextmanager
    def _key_hidden(self) -> Iterator[None]:
        """Take the node's API key out of any error raised inside: a node (or a proxy in
        front of it) may quote the request's headers in an error body, and error messages
        end up in results, reports and logs."""
        try:
            yield
        except NodeError as exc:
            key = self._api_key
            if key:
                exc.args = tuple(
                    a.replace(key, KEY_PLACEHOLDER) if isinstance(a, str) else a for a in exc.args
                )
                exc.body = exc.body.replace(key, KEY_PLACEHOLDER)
            raise

    async def _exchange(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        feed: Callable[[bytes], None] | None = None,
    ) -> tuple[int, bytes]:
        """Send a request; return its status and body.

        With ``feed`` (a streamed answer) a 200 body goes to ``feed`` chunk by chunk and the
        returned body is empty, and every wait for bytes is bounded by ``stall_timeout``.
        Error bodies are always returned, cut at ``ERROR_BODY_LIMIT``.
        """
        if self._http is None:
            raise RuntimeError("NodeClient used outside its `async with` block")
        watch = feed is not None
        timeout = self._http.timeout
        if watch:
            timeout = httpx.Timeout(
                connect=self.connect_timeout,
                read=self.stall_timeout,
                write=self.stall_timeout,
                pool=None,
            )
        request = self._http.build_request(method, path, json=body, timeout=timeout)
        # One cancel scope watches the whole exchange; with ``feed`` its deadline moves
        # forward whenever bytes arrive (cheaper than a scope per chunk).
        with trio.CancelScope() as stall:
            try:
                stall.deadline = self._stall_deadline(watch)
                response = await self._http.send(request, stream=True)
                try:
                    content = bytearray()
                    stall.deadline = self._stall_deadline(watch)
                    async for chunk in response.aiter_bytes():
                        if watch:
                            stall.deadline = trio.current_time() + self.stall_timeout
                        if not chunk:
                            continue
                        if feed is not None and response.status_code == 200:
                            feed(chunk)
                            continue
                        content += chunk
                        if response.status_code != 200 and len(content) >= ERROR_BODY_LIMIT:
                            break
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                raise self._translate(exc) from exc
        if stall.cancelled_caught:
            raise NodeTimeout(f"stalled: no byte for {self.stall_timeout:g}s", node=self.name)
        return response.status_code, bytes(content)

    def _stall_deadline(self, watch: bool) -> float:
        """When a streamed exchange that just saw a byte counts as stalled."""
        return trio.current_time() + self.stall_timeout if watch else math.inf

    def _translate(self, exc: httpx.HTTPError) -> NodeError:
        """The runner's error for an httpx one."""
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return TransportError(
                f"could not connect within {self.connect_timeout:g}s", node=self.name
            )
        if isinstance(exc, httpx.ReadTimeout):
            return NodeTimeout(f"stalled: no byte for {self.stall_timeout:g}s", node=self.name)
        if isinstance(exc, httpx.TimeoutException):
            return NodeTimeout(f"timed out: {type(exc).__name__}", node=self.name)
        if isinstance(exc, httpx.ConnectError):
            return TransportError(f"cannot connect: {detail}", node=self.name)
        if isinstance(exc, httpx.DecodingError):
            return ProtocolError(f"undecodable body: {detail}", node=self.name)
        return TransportError(f"{type(exc).__name__}: {detail}", node=self.name)
