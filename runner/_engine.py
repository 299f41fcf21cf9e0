"""The engine: spreads work over the nodes, retries, benches and re-admits nodes, hedges.

Every node gets as many worker tasks as it has slots. A worker *pulls* its next item when it
is free, so a node that answers twice as fast serves about twice as many items, and one slow
node never holds the others back (there is no global semaphore). What a worker takes next is
the dispatcher's call (:mod:`runner._dispatch`), in order: an item waiting for a retry that
may run on this node; a fresh item, unless near the end a faster node will soon finish it
sooner (the *tail rule*, :mod:`runner._tail`); near the end, a copy of an item still
running on a slower node (a *hedge*): the first accepted answer wins, the other request is
cancelled.

What follows a failed request is decided by the failure policy (:mod:`runner._policy`,
which has the whole table); the engine carries it out. In short: a node failure
(connection, timeout, stall, 5xx, a bad body, a node that refuses us) moves the item to
another node, and a node with ``breaker_failures`` of them in a row is benched and probed
with a tiny real completion until it answers again; a node that timed out, or (streaming)
sent nothing for a quarter of ``stall_timeout``, takes no new work until it answers: a hung
node would swallow each new request for a whole timeout (:class:`~runner._health.Bench`). A
*busy* answer (503 or 429 with ``Retry-After``) pauses the node for the advised time and
counts against nothing; a bad request (any other 4xx) fails the item at once with the
node's message; an answer the acceptor rejects is asked for again with the next seed. The
last admitted node is never benched: it cools down with growing pauses instead. When no
node could serve for ``no_node_timeout`` seconds the run stops with
:class:`~runner._errors.ClusterUnavailable`; when the first ``bad_request_stop`` requests
of a run all get the same 4xx, it stops with :class:`~runner._errors.RequestsRefused` (a
setting is wrong, not the items). The engine does no file I/O: each finished item goes to
``on_result`` as a record the moment it finishes, so whatever finished before a stop is
already journaled.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import trio

from . import _records
from ._acceptance import accept_text
from ._adaptive import ConcurrencyTuner
from ._client import NodeClient
from ._config import EngineConfig
from ._dispatch import Dispatcher, Task
from ._errors import (
    AnswerError,
    ClusterUnavailable,
    NodeBusy,
    NodeError,
    NodeTimeout,
    RequestsRefused,
    ServerError,
)
from ._health import Bench, probe_benched, watch_cluster
from ._nodes import Health, NodeSpec, NodeState, SlotsFrom
from ._policy import Fault, RefusalStreak, Where, classify, decide
from ._request import Api, Completion, Style
from ._work import Acceptor, RequestTrace, Snapshot, Work


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
        self._queue = Dispatcher(
            self.nodes,
            hedge=settings.hedge,
            heard=(lambda name: self._clients[name].heard) if settings.stream else None,
            silence=settings.stall_timeout / 4,
        )
        self._bench = Bench(self.nodes, settings)
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
        self._queue.fresh = work
        self._queue.size = size
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
                            benched=partial(self._bench.event, node.name),
                            notify=self._queue.notify,
                        )
                    )
                async with trio.open_nursery() as workers:
                    for node in self.nodes:
                        for _ in range(self._workers(node)):
                            workers.start_soon(self._worker, node)
                outer.cancel_scope.cancel()
        self.finished_at = trio.current_time()
        if self._refused_reason:
            raise RequestsRefused(self._refused_reason)
        if self._stopped_reason:
            raise ClusterUnavailable(self._stopped_reason)

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

    # --------------------------------------------------------------- workers

    async def _worker(self, node: NodeState) -> None:
        while True:
            # A node that answers without waiting (a refusal) must not keep the worker from
            # seeing the run's cancellation: one checkpoint per request.
            await trio.lowlevel.checkpoint()
            task = await self._queue.next_for(node)
            if task is None:
                return
            await self._attempt(node, task)

    async def _attempt(self, node: NodeState, task: Task) -> None:
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
        self._queue.in_flight.add(task)
        failure: NodeError | None = None
        completion: Completion | None = None
        # One scope per attempt: its deadline is the request timeout, and a copy that won
        # the race elsewhere cancels it (which leaves ``task.done`` set).
        with trio.CancelScope(deadline=now + settings.request_timeout) as scope:
            task.running[node.name] = (scope, now)
            try:
                completion = await self._clients[node.name].generate(
                    request, stream=settings.stream
                )
            except NodeError as exc:
                failure = exc
        del task.running[node.name]
        lost_race = scope.cancelled_caught and task.done
        if scope.cancelled_caught and not task.done:
            failure = NodeTimeout(
                f"no complete answer within request_timeout={settings.request_timeout}s",
                node=node.name,
            )
        node.active -= 1
        self._queue.ended += 1
        latency = trio.current_time() - now
        if not task.running:
            self._queue.in_flight.discard(task)
        if task.done:
            # A hedge lost the race: its answer (if any) is discarded.
            outcome = "cancelled" if lost_race else "discarded"
            ended = trio.current_time()
            if lost_race and self._queue.silent(node, ended):  # it lost because it is hung?
                self._queue.wake_all |= self._bench.suspect(node, ended)
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
                    saturated=self._queue.saturated,
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
        if self._queue.wake_all:
            self._queue.notify()
        elif not self._queue.tell_if_ended():
            self._queue.notify_node(node)

    def _answered(
        self, node: NodeState, task: Task, completion: Completion, latency: float, seed: int
    ) -> bool:
        """Check an answer; finish the item or queue it for another seed. True if accepted."""
        task.last_text = completion.text
        try:
            accepted = self._accept(completion)
        except AnswerError as exc:
            task.errors.append(f"seed {seed}: {exc}")
            if task.running:
                return False  # a copy is still running; let it answer
            decision = decide(
                Fault.rejected, task.history(trio.current_time()), self.settings, message=str(exc)
            )
            task.content_attempts += 1
            if decision.where is Where.nowhere:
                self._finish(task, _records.failed(task.work, error=str(exc), **task.trail()))
            else:
                self._queue.retry.appendleft(task)
                self._queue.wake_all = True
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
                **task.trail(),
            ),
        )
        return True

    def _failed(self, node: NodeState, task: Task, exc: NodeError) -> Fault:
        """Carry out the failure policy's decision for a request that failed."""
        settings = self.settings
        now = trio.current_time()
        fault = classify(exc)
        reason = f"{node.name}: {type(exc).__name__}: {exc}"
        decision = decide(
            fault,
            task.history(trio.current_time()),
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
                self._queue.wake_all |= self._bench.bench_or_cool(node, now)
            elif isinstance(exc, NodeTimeout):
                self._queue.wake_all |= self._bench.suspect(node, now)
        self._watch_refusals(fault, exc, reason)
        if task.running:
            return fault  # a copy is still running elsewhere
        if decision.node_pause:
            task.busy += 1
        elif decision.against_item:
            task.node_failures += 1
        if decision.where is Where.nowhere:
            status = exc.status if isinstance(exc, ServerError) else None
            record = _records.failed(
                task.work, error=decision.why, http_status=status, **task.trail()
            )
            self._finish(task, record)
            return fault
        task.not_before = now + decision.delay * self._rng.uniform(0.5, 1.0)
        if decision.where is Where.any_node:
            self._queue.retry.appendleft(task)  # first in line: it lost no time by its own fault
        else:
            self._queue.retry.append(task)
        self._queue.wake_all = True
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

    def _finish(self, task: Task, record: dict[str, Any]) -> None:
        task.done = True
        self._queue.in_flight.discard(task)
        if record["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
        self._on_result(record)
