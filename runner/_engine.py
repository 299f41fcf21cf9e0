"""The engine: spreads work over the nodes, retries, benches and re-admits nodes, hedges.

Every node gets as many worker tasks as it has slots. A worker *pulls* its next item when it
is free, so a node that answers twice as fast serves about twice as many items, and one slow
node never holds the others back (there is no global semaphore). What a worker takes, in
order:

1. an item waiting for a retry (after a node failure: not on the node that failed it, unless
   no other node is admitted; after a bad answer: anywhere, with the next seed);
2. the next fresh item from the input, unless the run is near its end and a faster node will
   soon be free to finish it sooner (the *tail rule*, :mod:`runner._tail`);
3. near the end, when nothing else is left: a copy of an item still running on a node that
   will take longer to finish it than this node would (a *hedge*); the first accepted answer
   wins and the other request is cancelled.

What follows a failed request is decided by the failure policy (:mod:`runner._policy`,
which has the whole table); the engine carries it out. In short: a node failure
(connection, timeout, stall, 5xx, a bad body, a node that refuses us) moves the item to
another node, and a node with ``breaker_failures`` of them in a row is benched and probed
with a tiny real completion until it answers again; a *busy* answer (503 or 429 with
``Retry-After``) pauses the node for the advised time and counts against nothing; a bad
request (any other 4xx) fails the item at once with the node's message; an answer the
acceptor rejects is asked for again with the next seed. The last admitted node is never
benched: it cools down with growing pauses instead. When no node could serve for
``no_node_timeout`` seconds the run stops with :class:`~runner._errors.ClusterUnavailable`;
when the first ``bad_request_stop`` requests of a run all get the same 4xx, it stops with
:class:`~runner._errors.RequestsRefused` (a setting is wrong, not the items). Whatever
finished is already journaled.

The engine does no file I/O: every finished item is handed to ``on_result`` as a record.
"""

from __future__ import annotations

import contextlib
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import trio

from . import _records
from ._acceptance import accept_text
from ._adaptive import ConcurrencyTuner
from ._client import NodeClient
from ._config import EngineConfig
from ._errors import (
    AnswerError,
    ClusterUnavailable,
    NodeBusy,
    NodeError,
    NodeTimeout,
    RequestsRefused,
    ServerError,
)
from ._health import probe_benched, watch_cluster
from ._hedging import Ranking, pick, rank
from ._nodes import Health, NodeSpec, NodeState, SlotsFrom
from ._policy import Fault, History, RefusalStreak, Where, classify, decide, probe_pause
from ._request import Api, Completion, Style
from ._tail import Pace, pace_of, takes_fresh
from ._work import Acceptor, RequestTrace, Work

PACE_REFRESH = 1.0  # seconds after which the tail rule measures the cluster's pace again


@dataclass(eq=False)
class _Task:
    """An item's journey through the engine."""

    work: Work
    node_failures: int = 0  # failures counted against the item
    busy: int = 0  # busy answers not counted as failures (at most settings.busy_retries)
    content_attempts: int = 0  # answers rejected by the acceptor
    requests: int = 0
    seeds: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    avoid: set[str] = field(default_factory=set)
    not_before: float = 0.0
    first_sent: float | None = None
    running: dict[str, tuple[trio.CancelScope, float]] = field(default_factory=dict)
    done: bool = False
    last_text: str | None = None

    @property
    def seed(self) -> int:
        # A request for n answers uses seeds seed .. seed+n-1 (the open node's rule), so a
        # content retry moves on by n: no answer is asked for twice with the same seed.
        step = self.work.request.params.get("n") or 1
        return (self.work.request.seed or 0) + self.content_attempts * step


@dataclass
class Snapshot:
    """The engine's progress at one moment (for the progress display)."""

    done: int
    ok: int
    failed: int
    in_flight: dict[str, int]
    errors: dict[str, int]
    benched: list[str]
    answers: int = 0  # answers received (accepted or not, hedged copies included)
    output_tokens: int = 0  # tokens in them


class Engine:
    """Runs work items over a cluster of nodes.

    Args:
        nodes: the cluster.
        settings: timeouts, retries, breaker and hedging settings.
        api: the protocol the nodes speak.
        style: how the model is prompted (for probes).
        engine_id: the engine id probes are sent to.
        acceptor: checks each answer's content.
        on_result: receives every finished item's record, the moment it finishes.
        on_request: receives a trace of every request when it ends (optional).
        transport: an httpx transport to use instead of the network (tests, simulations).
    """

    def __init__(
        self,
        nodes: list[NodeSpec],
        settings: EngineConfig,
        *,
        api: Api,
        style: Style,
        engine_id: str,
        acceptor: Acceptor = accept_text,
        on_result: Callable[[dict[str, Any]], None],
        on_request: Callable[[RequestTrace], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        self.settings = settings
        self.nodes = [NodeState(spec) for spec in nodes]
        self._by_name = {n.name: n for n in self.nodes}
        self._tuners: dict[str, ConcurrencyTuner] = {}
        if settings.adaptive:
            for node in self.nodes:
                # A node that said its slots starts there; the others at 1.
                said = node.spec.slots if node.spec.slots_from is SlotsFrom.node else 1
                start = max(1, min(settings.max_slots, said))
                self._tuners[node.name] = ConcurrencyTuner(ceiling=settings.max_slots, limit=start)
                node.limit = start
        self._api = api
        self._style = style
        self._engine_id = engine_id
        self._accept = acceptor
        self._on_result = on_result
        self._on_request = on_request
        self._transport = transport
        self._clients: dict[str, NodeClient] = {}
        self._fresh: Iterator[Work] = iter(())
        self._fresh_done = False
        self._size: Callable[[], int] | None = None
        self._taken = 0  # fresh items taken from the input
        self._ended = 0  # requests ended, for the pace's refresh
        self._pace: Pace | None = None
        self._pace_at = (-1, float("-inf"))  # (requests ended, time) when it was measured
        self._retry: deque[_Task] = deque()
        self._in_flight: set[_Task] = set()
        # One event per node: a request's end wakes its node's workers, not the cluster's.
        self._changed = {node.name: trio.Event() for node in self.nodes}
        self._wake_all = False  # set when a change concerns every node (see _notify)
        self._ranking: Ranking[_Task] | None = None
        self._ranking_at = float("-inf")
        self._benched = {node.name: trio.Event() for node in self.nodes}  # set when benched
        self._all_done = trio.Event()
        self._stopped_reason: str | None = None
        self._refusals = RefusalStreak(settings.bad_request_stop)
        self._refused_reason: str | None = None
        self._run_scope: trio.CancelScope | None = None
        self.ok = 0
        self.failed = 0
        self.started_at = 0.0
        self.finished_at = 0.0
        self._rng = random.Random(0)

    # ----------------------------------------------------------------- public

    async def run(self, work: Iterator[Work], *, size: Callable[[], int] | None = None) -> None:
        """Run every item of ``work`` to an end (accepted or failed).

        ``size`` gives how many items ``work`` yields in all, or a bound that is asked again
        as the run goes (a resumed run's work shrinks as earlier results are found); with
        it the engine applies the tail rule (:mod:`runner._tail`), without it every free
        slot takes the next item.

        Raises:
            ClusterUnavailable: no node could serve for ``no_node_timeout`` seconds.
            RequestsRefused: the first ``bad_request_stop`` requests all got the same 4xx.
        """
        self._fresh = work
        self._size = size
        self.started_at = trio.current_time()
        async with contextlib.AsyncExitStack() as stack:
            for node in self.nodes:
                client = NodeClient.for_node(
                    node.spec,
                    self._api,
                    self.settings,
                    max_connections=self._workers(node) + 1,
                    transport=self._transport,
                )
                self._clients[node.name] = await stack.enter_async_context(client)
            async with trio.open_nursery() as outer:
                self._run_scope = outer.cancel_scope
                outer.start_soon(self._watchdog, outer.cancel_scope)
                for node in self.nodes:
                    outer.start_soon(
                        partial(
                            probe_benched,
                            node,
                            self._clients[node.name],
                            self.settings,
                            engine_id=self._engine_id,
                            style=self._style,
                            benched=partial(self._benched_event, node.name),
                            notify=self._notify,
                        )
                    )
                async with trio.open_nursery() as workers:
                    for node in self.nodes:
                        for _ in range(self._workers(node)):
                            workers.start_soon(self._worker, node)
                self._all_done.set()
                outer.cancel_scope.cancel()
        self.finished_at = trio.current_time()
        if self._refused_reason:
            raise RequestsRefused(self._refused_reason)
        if self._stopped_reason:
            raise ClusterUnavailable(self._stopped_reason)

    def _benched_event(self, name: str) -> trio.Event:
        return self._benched[name]

    async def _watchdog(self, cancel_scope: trio.CancelScope) -> None:
        self._stopped_reason = await watch_cluster(self.nodes, self.settings)
        cancel_scope.cancel()

    def _workers(self, node: NodeState) -> int:
        """Worker tasks for a node: its slots, or the adaptive ceiling."""
        return self.settings.max_slots if self._tuners else node.spec.slots

    def snapshot(self) -> Snapshot:
        return Snapshot(
            done=self.ok + self.failed,
            ok=self.ok,
            failed=self.failed,
            in_flight={n.name: n.active for n in self.nodes},
            errors={n.name: n.errors for n in self.nodes},
            benched=[n.name for n in self.nodes if n.health is Health.benched],
            answers=sum(n.successes for n in self.nodes),
            output_tokens=sum(n.output_tokens for n in self.nodes),
        )

    # ------------------------------------------------------------ scheduling

    def _notify(self) -> None:
        """Wake every waiting worker: something any node may act on changed (an item to
        retry, a node benched or back, the end of the work)."""
        for node in self.nodes:
            self._notify_node(node)
        self._wake_all = False

    def _notify_node(self, node: NodeState) -> None:
        """Wake the waiting workers of ``node`` alone (one of its slots is free again)."""
        self._changed[node.name].set()
        self._changed[node.name] = trio.Event()

    def _admitted(self) -> list[NodeState]:
        return [n for n in self.nodes if n.health is Health.admitted]

    async def _next_for(self, node: NodeState) -> _Task | None:
        """Wait for the next thing ``node`` should do; ``None`` when all work is done."""
        while True:
            changed = self._changed[node.name]
            now = trio.current_time()
            wake_at = float("inf")
            if node.health is Health.admitted and node.active < node.limit:
                if node.cooldown_until > now:
                    wake_at = node.cooldown_until
                else:
                    task, wake_at = self._pick(node, now)
                    if task is not None:
                        return task
            if self._fresh_done and not self._retry and not self._in_flight:
                self._notify()  # the other workers may be asleep until a cooldown ends
                return None
            with trio.move_on_at(wake_at):
                await changed.wait()

    def _pick(self, node: NodeState, now: float) -> tuple[_Task | None, float]:
        wake_at = float("inf")
        for task in self._retry:
            if task.not_before > now:
                wake_at = min(wake_at, task.not_before)
                continue
            if node.name in task.avoid and not {n.name for n in self._admitted()} <= task.avoid:
                continue
            self._retry.remove(task)
            return task, wake_at
        if not self._fresh_done:
            if not self._takes_fresh(node, now):
                return None, min(wake_at, now + PACE_REFRESH)  # a faster node will take it
            try:
                work = next(self._fresh)
            except StopIteration:
                self._fresh_done = True
                self._wake_all = True
            else:
                self._taken += 1
                return _Task(work), wake_at
        if self.settings.hedge and self._fresh_done and not self._retry:
            # Copies are looked for again every few of the fastest node's latencies, not
            # at every answer: one ranking of what runs serves every idle node meanwhile.
            pace = self._pace_now(now)
            if not self._hedges(node, pace):
                return None, min(wake_at, now + PACE_REFRESH)
            again = min(PACE_REFRESH, pace.fastest / 4) if pace is not None else PACE_REFRESH
            if self._ranking is None or now >= self._ranking_at + again:  # the wake-up's test
                self._ranking = rank(self._by_name, self._in_flight, now)
                self._ranking_at = now
            hedge = pick(node, self._ranking)
            if hedge is not None:
                node.hedges += 1
                return hedge, wake_at
            return None, min(wake_at, self._ranking_at + again)
        return None, wake_at

    @staticmethod
    def _hedges(node: NodeState, pace: Pace | None) -> bool:
        """Whether ``node`` is fast enough to run copies: as fast as the tail rule asks of
        a node taking the last fresh item. A slow node's copy would not beat the original."""
        return node.latency_ewma is None or takes_fresh(node.latency_ewma, 0, pace)

    def _takes_fresh(self, node: NodeState, now: float) -> bool:
        if self._size is None or node.latency_ewma is None:
            return True
        return takes_fresh(node.latency_ewma, self._size() - self._taken, self._pace_now(now))

    def _pace_now(self, now: float) -> Pace | None:
        ended, at = self._pace_at
        if self._ended - ended >= max(8, len(self.nodes) // 8) or now - at >= PACE_REFRESH:
            self._pace = pace_of(self.nodes)  # O(nodes): amortised over nodes/8 requests
            self._pace_at = (self._ended, now)
        return self._pace

    # --------------------------------------------------------------- workers

    async def _worker(self, node: NodeState) -> None:
        while True:
            # A node that answers without waiting (a refusal) must not keep the worker from
            # seeing the run's cancellation: one checkpoint per request.
            await trio.lowlevel.checkpoint()
            task = await self._next_for(node)
            if task is None:
                return
            await self._attempt(node, task)

    async def _attempt(self, node: NodeState, task: _Task) -> None:
        settings = self.settings
        now = trio.current_time()
        if task.first_sent is None:
            task.first_sent = now
        seed = task.seed
        request = task.work.request.with_seed(seed)
        task.requests += 1
        if seed not in task.seeds:
            task.seeds.append(seed)
        node.requests += 1
        node.active += 1
        in_flight = node.active
        self._in_flight.add(task)
        failure: NodeError | None = None
        completion: Completion | None = None
        with trio.CancelScope() as scope:
            task.running[node.name] = (scope, now)
            try:
                with trio.fail_after(settings.request_timeout):
                    completion = await self._clients[node.name].generate(
                        request, stream=settings.stream
                    )
            except NodeError as exc:
                failure = exc
            except trio.TooSlowError:
                failure = NodeTimeout(
                    f"no complete answer within request_timeout={settings.request_timeout}s",
                    node=node.name,
                )
        del task.running[node.name]
        node.active -= 1
        self._ended += 1
        latency = trio.current_time() - now
        if not task.running:
            self._in_flight.discard(task)
        if scope.cancelled_caught or task.done:
            # A hedge lost the race: its answer (if any) is discarded.
            outcome = "cancelled" if scope.cancelled_caught else "discarded"
        elif failure is not None:
            outcome = self._failed(node, task, failure).value
        else:
            self._refusals.answered()
            assert completion is not None
            node.record_success(latency, completion.output_tokens)
            tuner = self._tuners.get(node.name)
            if tuner is not None:
                work = completion.output_tokens if completion.output_tokens else 1
                node.limit = tuner.observe(
                    trio.current_time(),
                    work,
                    latency=latency,
                    in_flight=in_flight,
                    saturated=not self._fresh_done or bool(self._retry),
                )
            outcome = "ok" if self._answered(node, task, completion, latency, seed) else "rejected"
        if self._on_request is not None:
            self._on_request(
                RequestTrace(
                    node=node.name,
                    item=task.work.id,
                    started=now,
                    ended=now + latency,
                    outcome=outcome,
                    final=task.done and outcome not in ("cancelled", "discarded"),
                    output_tokens=completion.output_tokens if completion else None,
                )
            )
        if self._wake_all or (self._fresh_done and not self._in_flight):
            self._notify()
        else:
            self._notify_node(node)

    def _answered(
        self, node: NodeState, task: _Task, completion: Completion, latency: float, seed: int
    ) -> bool:
        """Check an answer; finish the item or queue it for another seed. True if accepted."""
        task.last_text = completion.text
        try:
            accepted = self._accept(completion)
        except AnswerError as exc:
            task.errors.append(f"seed {seed}: {exc}")
            if task.running:
                return False  # a copy is still running; let it answer
            decision = decide(Fault.rejected, self._history(task), self.settings, message=str(exc))
            task.content_attempts += 1
            if decision.where is Where.nowhere:
                self._finish(task, _records.failed(task.work, error=str(exc), **self._trail(task)))
            else:
                self._retry.appendleft(task)
                self._wake_all = True
            return False
        for other_scope, _ in task.running.values():
            other_scope.cancel()
        self._finish(
            task,
            _records.ok(
                task.work,
                answer=accepted.answer,
                step=accepted.step,
                candidate=accepted.candidate,
                candidate_errors=accepted.candidate_errors,
                completion=completion,
                node=node.name,
                seed=seed,
                latency=latency,
                **self._trail(task),
            ),
        )
        return True

    def _trail(self, task: _Task) -> dict[str, Any]:
        return {
            "attempts": task.requests,
            "seeds": list(task.seeds),
            "errors": list(task.errors),
            "text": task.last_text,
        }

    def _history(self, task: _Task) -> History:
        assert task.first_sent is not None
        return History(
            node_failures=task.node_failures,
            busy=task.busy,
            answers=task.content_attempts,
            elapsed=trio.current_time() - task.first_sent,
        )

    def _failed(self, node: NodeState, task: _Task, exc: NodeError) -> Fault:
        """Carry out the failure policy's decision for a request that failed."""
        settings = self.settings
        now = trio.current_time()
        fault = classify(exc)
        reason = f"{node.name}: {type(exc).__name__}: {exc}"
        decision = decide(
            fault,
            self._history(task),
            settings,
            retry_after=exc.retry_after if isinstance(exc, NodeBusy) else 0.0,
            message=reason,
            node_failing=node.consecutive_failures >= settings.breaker_failures,
        )
        if decision.node_pause:
            node.busy += 1
            node.cooldown_until = max(node.cooldown_until, now + decision.node_pause)
        else:
            task.errors.append(reason)
        if decision.against_node:
            node.record_failure(reason)
            task.avoid.add(node.name)
            if node.consecutive_failures >= settings.breaker_failures:
                self._bench_or_cool(node, now)
        self._watch_refusals(fault, exc, reason)
        if task.running:
            return fault  # a copy is still running elsewhere
        if decision.node_pause:
            task.busy += 1
        elif decision.against_item:
            task.node_failures += 1
        if decision.where is Where.nowhere:
            self._finish(task, _records.failed(task.work, error=decision.why, **self._trail(task)))
            return fault
        task.not_before = now + decision.delay * self._rng.uniform(0.5, 1.0)
        if decision.where is Where.any_node:
            self._retry.appendleft(task)  # first in line: it lost no time by its own fault
        else:
            self._retry.append(task)
        self._wake_all = True
        return fault

    def _watch_refusals(self, fault: Fault, exc: NodeError, reason: str) -> None:
        """Stop the run when its first ``bad_request_stop`` requests all got the same 4xx."""
        status = exc.status if isinstance(exc, ServerError) else None
        if self._refusals.failed(fault, status) and self._run_scope is not None:
            limit = self.settings.bad_request_stop
            self._refused_reason = (
                f"the first {limit} requests were all refused with HTTP {status}: a setting "
                f"is wrong, not the items (engine.bad_request_stop={limit}); last: {reason}"
            )
            self._run_scope.cancel()

    def _bench_or_cool(self, node: NodeState, now: float) -> None:
        others = [n for n in self._admitted() if n is not node]
        if node.health is Health.admitted and others:
            node.health = Health.benched
            self._wake_all = True  # the tail rule and the copies must count without it
            self._benched[node.name].set()
            self._benched[node.name] = trio.Event()
        else:
            excess = node.consecutive_failures - self.settings.breaker_failures
            node.cooldown_until = now + probe_pause(excess, self.settings)

    def _finish(self, task: _Task, record: dict[str, Any]) -> None:
        task.done = True
        self._in_flight.discard(task)
        if record["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
        self._on_result(record)
