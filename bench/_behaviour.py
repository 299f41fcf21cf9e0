"""The behaviour core of a simulated node, shared by both front ends.

:class:`SimNode` turns ``(method, path, body)`` into a :class:`Reply` the way a TextSynth
node would, at the pace its :class:`~bench._spec.SimNodeSpec` sets: requests wait in FIFO
order for a slot, spend the prompt latency, then generate at the node's rate. Failures
follow the spec's schedule and surface as:

- :class:`NodeDown`: the node refuses the connection (it is dead);
- :class:`NodeDied`: the node died while serving; the connection must be aborted;
- a request that never ends (hang, stall): it sleeps until the caller gives up.

Only ``trio.sleep*`` and ``trio.current_time`` are used, so the core runs in real time in the
HTTP server and in virtual time under pytest-trio's ``autojump_clock``. Every request (not
``GET /health``) ends with a :class:`LogEntry`.
"""

from __future__ import annotations

import json
import math
import random
import zlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import trio

from . import _answers
from ._answers import AnswerHook
from ._clock import SimClock
from ._spec import SimNodeSpec

_ROUTE_SUFFIXES = {"completions": False, "chat": True}  # endpoint → is chat


class NodeDown(Exception):
    """The node is dead: the connection is refused."""


class NodeDied(Exception):
    """The node died while serving the request: the connection is aborted."""


@dataclass(frozen=True)
class LogEntry:
    """One request as the node saw it (times in simulated seconds since the clock started).

    Attributes:
        node: the node's name.
        item: the ``item=`` of the prompt's marker, if any.
        start: when the request arrived.
        served: when it got a slot (``None`` if it never did).
        end: when it ended, for whatever reason.
        outcome: ``ok``, ``error`` (an error burst), ``malformed``, ``died``, ``hung``,
            ``stalled``, ``cancelled`` (the client went away) or ``bad_request``.
        status: the HTTP status sent (0 if none was).
        output_tokens: tokens generated (streamed ones count even if the stream broke).
        stream: whether the answer was streamed.
    """

    node: str
    item: str | None
    start: float
    served: float | None
    end: float
    outcome: str
    status: int
    output_tokens: int
    stream: bool

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Reply:
    """A node's answer: a status with a whole body, or a stream of byte chunks.

    A streamed reply's headers go out at once; ``chunks`` must be iterated to its end or
    closed with ``aclose()`` (which frees the request's slot and writes its log entry).
    """

    status: int
    body: bytes = b""
    chunks: AsyncGenerator[bytes, None] | None = None
    content_type: str = "application/json"


@dataclass
class _Job:
    """One request in progress (what its log entry will say)."""

    item: str | None
    start: float
    stream: bool
    served: float | None = None
    due: float = 0.0  # where the job's schedule stands (simulated seconds)
    outcome: str = "cancelled"
    status: int = 200
    tokens: int = 0


class SimNode:
    """The behaviour of one simulated node.

    Args:
        spec: what the node is.
        clock: the cluster's clock.
        answer: the answer-text hook (``answer(body, n_tokens) -> str``).
        on_log: receives each request's :class:`LogEntry` when it ends.
    """

    def __init__(
        self,
        spec: SimNodeSpec,
        clock: SimClock,
        *,
        answer: AnswerHook = _answers.filler_answer,
        on_log: Callable[[LogEntry], None] = lambda entry: None,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self._answer = answer
        self._on_log = on_log
        self._slots = trio.Semaphore(spec.slots)  # trio's wake-ups are FIFO
        self._generating = 0
        self._rng = random.Random(spec.seed * 1_000_003 + zlib.crc32(spec.name.encode()))

    # ------------------------------------------------------------ schedule

    def dead(self, now: float) -> bool:
        """Whether the node refuses connections at simulated second ``now``."""
        return self.spec.in_outage(self.spec.die_at, now)

    def hung(self, now: float) -> bool:
        return self.spec.in_outage(self.spec.hang_from, now)

    def stalling(self, now: float) -> bool:
        return self.spec.in_outage(self.spec.stall_from, now)

    def burst_status(self, now: float) -> int | None:
        for burst in self.spec.error_bursts:
            if burst.start <= now < burst.end:
                return burst.status
        return None

    def next_death(self, now: float) -> float:
        """The next simulated second (≥ ``now``) at which the node dies, or ``inf``."""
        die = self.spec.die_at
        return die if die is not None and die >= now else math.inf

    # ------------------------------------------------------------- serving

    def connect(self) -> None:
        """Accept a connection, or raise :class:`NodeDown` if the node is dead."""
        self.clock.start()
        if self.dead(self.clock.now()):
            raise NodeDown(f"{self.spec.name} is down")

    async def handle(self, method: str, path: str, body: bytes) -> Reply:
        """Answer one HTTP request.

        Raises:
            NodeDown: the node is dead.
            NodeDied: the node died before the answer's headers were sent.
        """
        self.connect()
        now = self.clock.now()
        health = method == "GET" and path == "/health"
        if self.hung(now):
            job = _Job(_item_of(body), now, stream=False, outcome="hung")
            try:
                await trio.sleep_forever()
            finally:
                if not health:
                    self._log(job)
        if health:
            return Reply(200, b'{"status": "ok"}')
        chat = _route(path)
        if method != "POST" or chat is None:
            return Reply(404, _answers.error_body(f"no route for {method} {path}"))
        job = _Job(_item_of(body), now, stream=False)
        try:
            request = _parse(body)
        except ValueError as exc:
            return self._refuse(job, 400, str(exc))
        job.stream = bool(request.get("stream", False))
        status = self.burst_status(now)
        if status is not None:
            return self._refuse(job, status, f"simulated HTTP {status} burst")
        chunks = self._serve(job, request, chat=chat)
        if job.stream:
            return Reply(200, chunks=chunks)
        try:
            whole = await anext(chunks)
        finally:
            await chunks.aclose()
        return Reply(200, whole, content_type=_content_type(whole))

    def _refuse(self, job: _Job, status: int, message: str) -> Reply:
        job.outcome = "bad_request" if status == 400 else "error"
        job.status = status
        self._log(job)
        return Reply(status, _answers.error_body(message))

    async def _serve(
        self, job: _Job, request: dict[str, Any], *, chat: bool
    ) -> AsyncGenerator[bytes, None]:
        """Wait for a slot, think, generate; yield stream chunks (or one whole body)."""
        spec = self.spec
        try:
            with trio.move_on_at(self.clock.deadline(self.next_death(job.start))) as queue:
                await self._slots.acquire()
            if queue.cancelled_caught:
                raise NodeDied(f"{spec.name} died while the request was queued")
            try:
                job.served = job.due = self.clock.now()
                prompt = _answers.prompt_text(request, chat=chat)
                max_tokens = int(request.get("max_tokens", _answers.DEFAULT_MAX_TOKENS))
                n_tokens = _answers.answer_length(
                    prompt,
                    request.get("seed"),
                    max_tokens,
                    median=spec.median_tokens,
                    sigma=spec.sigma,
                )
                n_input = _answers.input_tokens(prompt)
                malformed = self._rng.random() < spec.malformed
                text = self._answer(request, n_tokens)
                if spec.speed is not None:
                    await self._pause(job, spec.prompt_latency)
                # Streams go chunk by chunk, and so does a node whose rate depends on its
                # load; any other answer needs only its two halves (the stall point).
                paced = job.stream or spec.best_concurrency is not None
                step = spec.chunk_tokens if paced else max(1, -(-n_tokens // 2))
                self._generating += 1
                try:
                    for piece, tokens in _answers.split_text(text, n_tokens, step):
                        await self._pause(job, tokens / spec.rate(self._generating))
                        job.tokens += tokens
                        if self.stalling(self.clock.now()) and 2 * job.tokens >= n_tokens:
                            await self._hang(job, "stalled")
                        if job.stream:
                            yield _answers.stream_chunk(piece)
                finally:
                    self._generating -= 1
                await trio.lowlevel.checkpoint()
                job.outcome = "malformed" if malformed else "ok"
                counts = {"input_tokens": n_input, "output_tokens": n_tokens}
                if job.stream:
                    last = _answers.stream_chunk("", end=True, **counts)
                else:
                    last = _answers.answer_body(text, **counts)
                yield _answers.malformed_body(last) if malformed else last
            finally:
                self._slots.release()
        except NodeDied:
            job.outcome = "died"
            raise
        finally:
            self._log(job)

    async def _pause(self, job: _Job, seconds: float) -> None:
        """Spend ``seconds`` simulated seconds, unless the node dies or hangs first.

        Pauses follow the job's own schedule (``job.due``), not the moment the previous
        one happened to end, so timer granularity does not add up over many chunks.
        """
        if seconds <= 0:
            return
        now = job.due
        until = job.due = now + seconds
        death = self.next_death(now)
        hang = self.spec.hang_from
        hang_at = hang if hang is not None and hang >= now else math.inf
        if min(death, hang_at) >= until:
            await self.clock.sleep_until(until)
        elif death <= hang_at:
            await self.clock.sleep_until(death)
            raise NodeDied(f"{self.spec.name} died")
        else:
            await self.clock.sleep_until(hang_at)
            await self._hang(job, "hung")

    async def _hang(self, job: _Job, outcome: str) -> None:
        """Never answer: sleep until the caller gives up."""
        job.outcome = outcome
        await trio.sleep_forever()

    def _log(self, job: _Job) -> None:
        now = self.clock.now()
        outcome = job.outcome
        if outcome == "cancelled" and self.dead(now):
            outcome = "died"  # the server front end aborted it when the node died
        self._on_log(
            LogEntry(
                node=self.spec.name,
                item=job.item,
                start=job.start,
                served=job.served,
                end=now,
                outcome=outcome,
                status=job.status,
                output_tokens=job.tokens,
                stream=job.stream,
            )
        )


# ------------------------------------------------------------------ helpers


def _route(path: str) -> bool | None:
    """``True`` for a chat route, ``False`` for completions, ``None`` for anything else."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["v1", "engines"] and parts[2]:
        return _ROUTE_SUFFIXES.get(parts[3])
    return None


def _parse(body: bytes) -> dict[str, Any]:
    """The request's JSON object; ``ValueError`` with a one-line message otherwise."""
    try:
        request = json.loads(body or b"null")
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise ValueError("body must be a JSON object")
    if "prompt" not in request and "messages" not in request:
        raise ValueError("prompt: required (or messages for chat)")
    max_tokens = request.get("max_tokens", _answers.DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens: must be a positive integer, not {max_tokens!r}")
    if request.get("n", 1) != 1:
        raise ValueError("n: the simulator serves n=1 only")
    return request


def _item_of(body: bytes) -> str | None:
    """The ``item=`` of the body's marker, found without parsing the JSON."""
    return _answers.parse_marker(body.decode("utf-8", "replace")).get("item")


def _content_type(body: bytes) -> str:
    return "application/json" if body[-1:] == b"}" else "text/plain"
