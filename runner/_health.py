"""Node health beside the engine's workers: benching failing nodes, re-admitting them, and
noticing when no node can serve at all.

* :class:`Bench` is the circuit breaker's open side: it benches a node (the last admitted one
  cools down instead), and holds back one that timed out until it answers again.

* :func:`probe_benched` runs per node for the whole run. While the node is benched it sends
  a tiny real completion, with growing pauses, and re-admits the node when one succeeds (or
  the node answers that it is busy: it is up).
* :func:`watch_cluster` stops the run when no node was admitted and healthy for
  ``no_node_timeout`` seconds: it returns why, and the engine raises
  :class:`~runner._errors.ClusterUnavailable` with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from ._client import NodeClient
from ._config import EngineConfig
from ._errors import NodeBusy, NodeError
from ._nodes import Health, NodeState
from ._policy import probe_pause
from ._request import Style


class Bench:
    """Benches nodes, and wakes each node's prober when it does.

    Args:
        nodes: the cluster's nodes.
        settings: ``breaker_failures``, and the pauses of a node that cannot be benched.
    """

    def __init__(self, nodes: Sequence[NodeState], settings: EngineConfig) -> None:
        self._nodes = nodes
        self._settings = settings
        self._events = {node.name: trio.Event() for node in nodes}

    def event(self, name: str) -> trio.Event:
        """The event set the next time node ``name`` is benched."""
        return self._events[name]

    def bench_or_cool(self, node: NodeState, now: float) -> bool:
        """Bench ``node``, unless it is the last admitted one: that one pauses, longer with
        each failure beyond ``breaker_failures``. True if it was benched (every worker must
        count without it)."""
        node.suspect = False
        others = any(n is not node and n.health is Health.admitted for n in self._nodes)
        if node.health is Health.admitted and others:
            node.health = Health.benched
            self._events[node.name].set()
            self._events[node.name] = trio.Event()
            return True
        excess = node.consecutive_failures - self._settings.breaker_failures
        node.cooldown_until = now + probe_pause(excess, self._settings)
        return False

    def suspect(self, node: NodeState, now: float) -> bool:
        """After a timeout: a hung node holds every request it gets for a whole timeout, so
        until it shows it answers, it gets none. While other requests of it are in flight
        it waits for one of them (an answer clears it; their timeouts bench it); with none,
        it is benched now, and a probe (seconds, on a healthy node) re-admits it. True if
        it was benched."""
        if node.active:
            node.suspect = True
            return False
        return self.bench_or_cool(node, now)


async def probe_benched(
    node: NodeState,
    client: NodeClient,
    settings: EngineConfig,
    *,
    engine_id: str,
    style: Style,
    benched: Callable[[], trio.Event],
    notify: Callable[[], None],
) -> None:
    """Probe ``node`` whenever it is benched; re-admit it when a probe succeeds.

    ``benched()`` is the event set the next time the engine benches this node (the prober
    sleeps on it, untouched by the engine's other changes); ``notify()`` announces the
    re-admission to the workers.
    """
    failures = 0
    while True:
        if node.health is not Health.benched:
            failures = 0
            await benched().wait()
            continue
        await trio.sleep(probe_pause(failures, settings))
        try:
            with trio.fail_after(settings.probe_timeout):
                await client.probe(engine_id, style)
        except NodeBusy:
            pass  # it answered: up, only full for now
        except (NodeError, trio.TooSlowError) as exc:
            failures += 1
            node.last_error = f"{node.name}: probe: {type(exc).__name__}: {exc}"
            continue
        node.health = Health.admitted
        node.consecutive_failures = 0
        node.cooldown_until = 0.0
        notify()


def serving(nodes: Sequence[NodeState], breaker_failures: int) -> bool:
    """Whether some node is admitted and not failing repeatedly."""
    return any(
        n.health is Health.admitted and n.consecutive_failures < breaker_failures for n in nodes
    )


async def watch_cluster(nodes: Sequence[NodeState], settings: EngineConfig) -> str:
    """Return, with the reason, once no node could serve for ``no_node_timeout`` seconds."""
    timeout = settings.no_node_timeout
    unavailable_since: float | None = None
    while True:
        now = trio.current_time()
        if serving(nodes, settings.breaker_failures):
            unavailable_since = None
        elif unavailable_since is None:
            unavailable_since = now
        elif now - unavailable_since >= timeout:
            last = "; ".join(n.last_error for n in nodes if n.last_error)
            return f"no node could serve for {timeout:g}s (last errors: {last or 'none'})"
        await trio.sleep(min(1.0, max(timeout / 10, 0.01)))
