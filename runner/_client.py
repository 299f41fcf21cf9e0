"""One node's client: a :class:`NodeClient` per node, speaking the node's protocol.

It builds requests with the protocol module of the node's API (:mod:`runner._textsynth` or
:mod:`runner._openai`), sends them over its :class:`~runner._connection.NodeConnection` (the
HTTP side: timeouts, stall watch, httpx errors, hiding the API key), and parses the answers:
generations, choice scores, and what a node says of itself (:class:`NodeFacts`, its engines,
its tokenizer's counts).

A 503 or 429 with a ``Retry-After`` header is :class:`~runner._errors.NodeBusy` (the node
is full, not broken), its pause bounded to ``RETRY_AFTER_MIN``..``RETRY_AFTER_MAX``
(:mod:`runner._connection`); the same statuses without the header stay plain
:class:`~runner._errors.ServerError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import NoReturn

import httpx

from . import _openai, _textsynth
from ._config import EngineConfig
from ._connection import BUSY_STATUSES, NodeConnection, Reply
from ._errors import ConfigError, NodeBusy, ServerError
from ._nodes import NodeSpec
from ._request import Api, Completion, GenerationRequest, LabelScore, Style

PROBE_PROMPT = "Hello"

_WIRES: dict[Api, ModuleType] = {Api.textsynth: _textsynth, Api.openai: _openai}


@dataclass(frozen=True)
class NodeFacts:
    """What a node says of itself for one engine (``None``: it does not say).

    Attributes:
        slots: how many sequences it runs at once.
        context: its context per sequence, in tokens (prompt and answer together).
    """

    slots: int | None = None
    context: int | None = None


class NodeClient:
    """Talks to one node. Use as an async context manager; it owns one HTTP connection pool
    (its :class:`~runner._connection.NodeConnection`).

    Args:
        api: the protocol the node speaks. The others are the connection's (see
            :class:`~runner._connection.NodeConnection`); ``max_connections``: the engine
            gates concurrency itself, so allow its slots plus one for a hedge.

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
        self.base_url = base_url
        self.name = name
        self.api = api
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self._connection = NodeConnection(
            base_url,
            name=name,
            api_key=api_key,
            connect_timeout=connect_timeout,
            stall_timeout=stall_timeout,
            max_connections=max_connections,
            transport=transport,
        )
        self._wire = _WIRES[api]

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

    @property
    def heard(self) -> float:
        """When a request was last sent to the node or a byte of an answer came from it
        (``trio.current_time()``; while streaming, at most a sixteenth of the stall timeout
        late). A node with requests in flight that has not been heard from for long is
        silent: it may be hung."""
        return self._connection.heard

    async def __aenter__(self) -> NodeClient:
        await self._connection.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._connection.__aexit__(exc_type, exc, traceback)

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
        with self._connection.key_hidden():
            decoder = self._wire.StreamDecoder(node=self.name) if stream else None
            reply = await self._connection.exchange(
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
        with self._connection.key_hidden():
            for label in request.choices.labels:
                path, body = build(request, label)
                reply = await self._connection.exchange("POST", path, body)
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
        with self._connection.key_hidden():
            reply = await self._connection.exchange("POST", path, body)
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
        with self._connection.key_hidden():
            for path in self._wire.FACTS_PATHS:
                reply = await self._connection.exchange("GET", path, None)
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
        with self._connection.key_hidden():
            reply = await self._connection.exchange("GET", self._wire.ENGINES_PATH, None)
            engines: list[str] | None = self._wire.parse_engines(
                reply.status, reply.body, node=self.name
            )
            return engines

    # ----------------------------------------------------------------- errors

    def _raise_status(self, reply: Reply) -> NoReturn:
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
