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

A 503 or 429 with a ``Retry-After`` header is :class:`~runner._errors.NodeBusy` (the node
is full, not broken), its pause bounded to ``RETRY_AFTER_MIN``..``RETRY_AFTER_MAX``; the same
statuses without the header stay plain :class:`~runner._errors.ServerError`.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import math
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, NoReturn

import httpx
import trio

from . import _openai, _textsynth
from ._config import EngineConfig
from ._errors import (
    ConfigError,
    NodeBusy,
    NodeError,
    NodeTimeout,
    ProtocolError,
    ServerError,
    TransportError,
)
from ._nodes import NodeSpec
from ._request import Api, Completion, GenerationRequest, LabelScore, Style

ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error body read before giving up on the rest
PROBE_PROMPT = "Hello"
KEY_PLACEHOLDER = "[api key]"  # what an error quoting the node's key shows instead
BUSY_STATUSES = frozenset({429, 503})  # with Retry-After: "busy, come back"
RETRY_AFTER_MIN = 0.1  # seconds; a busy node is never asked again at once
RETRY_AFTER_MAX = 30.0  # seconds; a longer advice is cut to this

_WIRES: dict[Api, ModuleType] = {Api.textsynth: _textsynth, Api.openai: _openai}


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """The pause a ``Retry-After`` header advises, bounded to ``RETRY_AFTER_MIN``..``MAX``.

    Args:
        value: the header: delay-seconds (``"1"``) or an HTTP-date.
        now: the current wall-clock time (``time.time()``), for an HTTP-date.

    Returns:
        Seconds, or ``None`` when there is no header or it is not readable.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    return min(RETRY_AFTER_MAX, max(RETRY_AFTER_MIN, seconds))


@dataclass(frozen=True)
class _Reply:
    """What :meth:`NodeClient._exchange` got back."""

    status: int
    body: bytes  # empty for a 200 stream, which went to ``feed``
    retry_after: float | None = None  # the bounded Retry-After pause, if the node sent one


@dataclass(frozen=True)
class NodeFacts:
    """What a node says of itself for one engine (``None``: it does not say).

    Attributes:
        slots: how many sequences it runs at once.
        context: its context per sequence, in tokens (prompt and answer together).
    """

    slots: int | None = None
    context: int | None = None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every node's client. Building one loads the CA bundle (about
    50 ms of CPU): per node, a thousand-node cluster would spend most of a minute on it
    before its first request."""
    return httpx.create_ssl_context()


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

    @classmethod
    def for_node(
        cls,
        spec: NodeSpec,
        api: Api,
        settings: EngineConfig,
        *,
        max_connections: int,
        connect_timeout: float | None = None,
        stall_timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> NodeClient:
        """A client for a node of the cluster, with the engine's timeouts.

        Args:
            spec: the node (its name, address and key).
            api: the protocol the cluster's nodes speak.
            settings: the engine's settings: ``connect_timeout`` and ``stall_timeout``.
            max_connections: as for the constructor.
            connect_timeout: instead of ``settings.connect_timeout``.
            stall_timeout: instead of ``settings.stall_timeout``.
            transport: an httpx transport to use instead of the network (tests).

        Raises:
            ConfigError: the node's ``base_url`` is not an http(s) URL.
        """
        return cls(
            spec.base_url,
            name=spec.name,
            api=api,
            api_key=spec.api_key,
            connect_timeout=settings.connect_timeout
            if connect_timeout is None
            else connect_timeout,
            stall_timeout=settings.stall_timeout if stall_timeout is None else stall_timeout,
            max_connections=max_connections,
            transport=transport,
        )

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
            verify=_tls_context(),
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
            NodeBusy: 503 or 429 with ``Retry-After``.
            ServerError: another HTTP status than 200.
            ProtocolError: the answer is not a valid answer of the protocol.

        A request for several answers (``n`` > 1, ``job.candidates``) is sent unstreamed
        whatever ``stream`` says: the open node refuses ``stream`` with ``n`` > 1, and
        ts_server's streaming of several answers is unconfirmed. It is bounded by the
        caller's ``request_timeout`` alone (no stall check).
        """
        if request.choices is not None:  # a choice job: scored, not generated
            return await self._score(request)
        stream = stream and (request.params.get("n") or 1) == 1
        path, body = self._wire.build(request, stream=stream)
        with self._key_hidden():
            decoder = self._wire.StreamDecoder(node=self.name) if stream else None
            reply = await self._exchange(
                "POST", path, body, feed=None if decoder is None else decoder.feed
            )
            if reply.status != 200:
                self._raise_status(reply)
            completion: Completion = (
                self._wire.parse(reply.status, reply.body, node=self.name)
                if decoder is None
                else decoder.finish()
            )
            return completion

    async def _score(self, request: GenerationRequest) -> Completion:
        """A choice job's attempt: one ``logprob`` request per label, one after the other on
        this node (a failed one fails the attempt, like any node failure). Nothing is
        generated: the answer carries the scores, no text; ``input_tokens`` is the sum of
        what the node read for every label."""
        assert request.choices is not None
        build = getattr(self._wire, "build_logprob", None)
        if build is None:  # refused at start-up (runner/_choice.check_job)
            raise ConfigError(f"node {self.name}: {self.api.value} nodes cannot score choices")
        scores: list[LabelScore] = []
        with self._key_hidden():
            for label in request.choices.labels:
                path, body = build(request, label)
                reply = await self._exchange("POST", path, body)
                if reply.status != 200:
                    self._raise_status(reply)
                scores.append(
                    self._wire.parse_logprob(reply.status, reply.body, label=label, node=self.name)
                )
        read = [score.input_tokens for score in scores]
        return Completion(
            text="",
            input_tokens=None if None in read else sum(t for t in read if t is not None),
            scores=tuple(scores),
        )

    async def count_tokens(self, engine: str, text: str) -> int:
        """How many tokens ``engine`` makes of ``text`` (the node's tokenize).

        Raises:
            NodeError: the node could not be reached, has no tokenize (``ServerError``, 404),
                or gave an answer that is not one.
        """
        path, body = self._wire.build_tokenize(engine, text)
        with self._key_hidden():
            reply = await self._exchange("POST", path, body)
            count: int = self._wire.parse_tokenize(reply.status, reply.body, node=self.name)
            return count

    async def facts(self, engine: str) -> NodeFacts:
        """What the node says of itself for ``engine``: the protocol's ``FACTS_PATHS`` are
        asked in order until both facts are known.

        Returns:
            The facts; each is ``None`` when the node does not say (ts_server, an older
            node, an OpenAI server other than llama.cpp's).

        Raises:
            NodeError: the node could not be reached.
        """
        slots: int | None = None
        context: int | None = None
        with self._key_hidden():
            for path in self._wire.FACTS_PATHS:
                reply = await self._exchange("GET", path, None)
                args = (path, reply.status, reply.body)
                slots = slots or self._wire.parse_slots(*args, engine=engine)
                context = context or self._wire.parse_context(*args, engine=engine)
                if slots is not None and context is not None:
                    break
        return NodeFacts(slots=slots, context=context)

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
            reply = await self._exchange("GET", self._wire.ENGINES_PATH, None)
            engines: list[str] | None = self._wire.parse_engines(
                reply.status, reply.body, node=self.name
            )
            return engines

    # ----------------------------------------------------------------- sending

    def _raise_status(self, reply: _Reply) -> NoReturn:
        """Raise the error for a status other than 200: :class:`NodeBusy` for a busy node,
        else the protocol's :class:`ServerError` (whose message reads the body)."""
        try:
            self._wire.parse(reply.status, reply.body, node=self.name)
        except ServerError as exc:
            if reply.retry_after is None or reply.status not in BUSY_STATUSES:
                raise
            raise NodeBusy(
                f"{exc} (busy: retry after {reply.retry_after:g}s)",
                status=reply.status,
                retry_after=reply.retry_after,
                node=self.name,
                body=exc.body,
            ) from None
        raise AssertionError(f"a status of {reply.status} parsed as an answer")  # pragma: no cover

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
    ) -> _Reply:
        """Send a request; return its status, body and ``Retry-After`` pause.

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
        retry_after = None
        if response.status_code in BUSY_STATUSES:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), now=time.time())
        return _Reply(response.status_code, bytes(content), retry_after)

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
