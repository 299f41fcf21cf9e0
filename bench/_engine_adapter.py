"""Strategy 3: this project's engine (``runner._engine.Engine``), default settings.

``run_engine_strategy`` has the signature of every strategy (:class:`bench._strategy.Strategy`);
``engine_nohedge`` and ``engine_adaptive`` are the same engine with hedging off, and with
adaptive per-node concurrency on. What the adapter does:

1. Build one ``runner._nodes.NodeSpec(name=node.name, base_url=node.base_url,
   slots=node.slots)`` per :class:`~bench._strategy.Node`.
2. Build the engine settings with every time scaled to real seconds with
   ``settings.real(...)`` (``connect_timeout``, ``stall_timeout``, ``request_timeout``,
   ``retry_timeout``, ``backoff_*``, ``probe_interval``, ``probe_timeout``,
   ``no_node_timeout``).
3. Turn each :class:`~bench._items.Item` into a work item whose request is a TextSynth
   completion of ``item.prompt`` with ``max_tokens=settings.max_tokens`` to engine
   ``settings.engine_id``; keep ``item.id`` as the work id. Iterate ``items`` lazily (the
   memory scenario passes a generator over 200,000 items).
4. Run the engine with ``transport=transport`` (``None`` on the real network).
5. Report one :class:`~bench._strategy.Trace` per request through ``record`` — times from
   ``trio.current_time()``, ``node`` the node's name, ``outcome`` one of ``ok``, ``status``,
   ``malformed``, ``transport``, ``timeout`` — with ``final=True`` on exactly one trace per
   item: the accepted answer, or the last failure of an item given up. Hedged copies that
   lost the race are traces with ``final=False``. If the engine exposes no per-request
   hook, wrap the transport with one that records each request (the item id is the
   ``item=`` field of the prompt's marker, see :func:`bench._answers.parse_marker`) and
   mark the finals from the engine's ``on_result`` records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import replace
from functools import partial

import httpx

from runner._config import EngineConfig
from runner._engine import Engine
from runner._nodes import NodeSpec
from runner._request import Api, GenerationRequest, Style
from runner._work import RequestTrace, Work

from ._items import Item
from ._strategy import Node, Record, Settings, Strategy, Trace

_DEFAULTS = EngineConfig()


def _scaled(settings: Settings, **overrides: object) -> EngineConfig:
    """The engine's default settings with every time scaled to real seconds."""
    times = {
        name: settings.real(getattr(_DEFAULTS, name))
        for name in (
            "connect_timeout",
            "stall_timeout",
            "request_timeout",
            "retry_timeout",
            "backoff_initial",
            "backoff_max",
            "probe_interval",
            "probe_timeout",
            "no_node_timeout",
        )
    }
    return replace(_DEFAULTS, **times, **overrides)  # type: ignore[arg-type]


def _work(items: Iterable[Item], settings: Settings) -> Iterator[Work]:
    for index, item in enumerate(items):
        request = GenerationRequest(
            api=Api.textsynth,
            style=Style.completion,
            engine=settings.engine_id,
            prompt=item.prompt,
            params={"max_tokens": settings.max_tokens},
            seed=1,
        )
        yield Work(item.id, index, {}, request, request.key())


async def run_engine_strategy(
    nodes: Sequence[Node],
    items: Iterable[Item],
    settings: Settings,
    record: Record,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    hedge: bool = True,
    adaptive: bool = False,
    stream: bool = True,
    slots: Mapping[str, int] | None = None,
) -> None:
    """Run ``items`` with this project's engine (see the module docstring); ``slots``
    replaces the nodes' configured in-flight counts (by node name)."""

    def on_request(trace: RequestTrace) -> None:
        outcome = trace.outcome
        if outcome in ("cancelled", "discarded"):
            outcome = "hedge_lost"
        record(
            Trace(
                trace.item,
                trace.node,
                trace.started,
                trace.ended,
                outcome,
                trace.output_tokens or 0,
                trace.final,
            )
        )

    engine = Engine(
        [NodeSpec(n.name, n.base_url, slots=(slots or {}).get(n.name, n.slots)) for n in nodes],
        _scaled(settings, hedge=hedge, adaptive=adaptive, stream=stream),
        api=Api.textsynth,
        style=Style.completion,
        engine_id=settings.engine_id,
        on_result=lambda record: None,
        on_request=on_request,
        transport=transport,
    )
    size = len(items) if isinstance(items, Sized) else None
    await engine.run(_work(items, settings), size=None if size is None else lambda: size)


engine_nohedge = partial(run_engine_strategy, hedge=False)
engine_adaptive = partial(run_engine_strategy, adaptive=True)
engine_nostream = partial(run_engine_strategy, stream=False)


def engine_with_slots(slots: Mapping[str, int]) -> Strategy:
    """The engine in fixed mode with the given in-flight count per node."""
    return partial(run_engine_strategy, slots=dict(slots))
