"""The pre-flight: before a run sends anything (and in a dry run), what it is about to cost.

Two measurements, each optional (``preflight`` settings, :class:`~runner._config.PreflightConfig`):

- **tokens**: every item's prompt is counted with the nodes' tokenize (spread over all of
  them, a few at a time per node); an item whose prompt and ``max_tokens`` exceed the
  smallest context the nodes said is too long (the node would drop the prompt's beginning),
  and the run stops before sending anything unless ``job.allow_prompt_truncation``;
- **speed** (by default in dry runs only: ``preflight.probe_speed``): every node gets short
  answers to the job's first prompts, as many at once as its slots, and its output tokens per
  second with all slots busy are timed.

From these and the nodes' ``price_per_hour``, :func:`runner._estimate.estimate` builds the
:class:`~runner._estimate.Estimate`. A node that cannot tokenize (ts_server releases without
it, OpenAI servers other than llama.cpp's) or answers badly leaves the tokens uncounted, and
the reason is said; nothing here fails the run except prompts that do not fit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial
from itertools import chain, islice

import trio

from ._client import NodeClient
from ._cluster import RollCall
from ._config import PreflightConfig, ProbeSpeed, RunConfig
from ._errors import ConfigError, NodeError
from ._estimate import Estimate, TokenTally, describe, estimate, too_long_message
from ._journal import Store
from ._nodes import NodeSpec
from ._plan import Plan
from ._request import GenerationRequest
from ._resume_index import LOOKUP_BATCH
from ._work import Work

log = logging.getLogger("runner")

COUNTERS_PER_NODE = 4  # tokenize requests in flight on one node at once (they are cheap)


def counted_text(request: GenerationRequest) -> str:
    """The text whose tokens stand for a request's prompt: the system prompt and the prompt
    (or a batch line's messages), and for a choice job its longest label after it. A chat
    template's own tokens are not counted (a few per message)."""
    body = request.body or {}
    if isinstance(body.get("messages"), list):
        parts = [str(m.get("content") or "") for m in body["messages"] if isinstance(m, dict)]
    elif isinstance(body.get("prompt"), str):
        parts = [body["prompt"]]
    elif request.messages is not None:
        parts = [*([request.system] if request.system else []), *request.messages]
    else:
        parts = [*([request.system] if request.system else []), request.prompt]
    if request.choices is not None:
        longest = max(request.choices.labels, key=len)
        return request.prompt + request.choices.continuation(longest)
    return "\n".join(parts)


def max_tokens_of(request: GenerationRequest, default: int) -> int:
    """The most tokens one answer to ``request`` may have."""
    body = request.body or {}
    for value in (
        request.params.get("max_tokens"),
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def answers_of(request: GenerationRequest) -> int:
    """Answers generated per request: ``n`` (candidates), and 0 for a choice job."""
    if request.choices is not None:
        return 0
    n = request.params.get("n") or (request.body or {}).get("n") or 1
    return n if isinstance(n, int) and n > 0 else 1


async def count_tokens(
    works: Iterable[Work],
    nodes: Sequence[NodeSpec],
    cfg: RunConfig,
    tally: TokenTally,
    *,
    max_tokens: int,
) -> str | None:
    """Add every work item to ``tally``, its prompt tokens counted by the nodes when
    ``preflight.count_tokens``. Returns why the tokens were not all counted, or ``None``."""
    items = iter(works)
    reason: str | None = "preflight.count_tokens=false"
    if cfg.preflight.count_tokens:
        reason = "no node to count them"
        if nodes:
            reason = await _count_on_nodes(items, nodes, cfg, tally, max_tokens=max_tokens)
    for work in items:  # the rest, when counting stopped (or never started)
        _add(tally, work, max_tokens)
    return reason


def _add(tally: TokenTally, work: Work, max_tokens: int) -> None:
    tally.add(max_tokens=max_tokens_of(work.request, max_tokens), answers=answers_of(work.request))


async def _count_on_nodes(
    items: Iterator[Work],
    nodes: Sequence[NodeSpec],
    cfg: RunConfig,
    tally: TokenTally,
    *,
    max_tokens: int,
) -> str | None:
    """Send the items' prompts to the nodes' tokenize, ``COUNTERS_PER_NODE`` at a time per
    node, adding each to ``tally``; stops at the first failure (returns why)."""
    reason: str | None = None
    send, receive = trio.open_memory_channel[Work](COUNTERS_PER_NODE * len(nodes))
    engine = cfg.model.engine

    async def counter(client: NodeClient, inbox: trio.MemoryReceiveChannel[Work]) -> None:
        nonlocal reason
        async with inbox:
            async for work in inbox:
                try:
                    tokens = await client.count_tokens(engine, counted_text(work.request))
                except NodeError as exc:
                    reason = f"node {client.name} could not tokenize: {exc}"
                    scope.cancel()
                    return
                room = max_tokens_of(work.request, max_tokens) if answers_of(work.request) else 0
                tally.count(work.id, tokens, room=room)

    with trio.move_on_after(cfg.preflight.timeout) as scope:
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    NodeClient.for_node(
                        node,
                        cfg.model.api,
                        cfg.engine,
                        max_connections=COUNTERS_PER_NODE,
                        stall_timeout=cfg.preflight.timeout,
                    )
                )
                for node in nodes
            ]
            async with trio.open_nursery() as nursery:
                for client in clients:
                    for _ in range(COUNTERS_PER_NODE):
                        nursery.start_soon(counter, client, receive.clone())
                receive.close()
                async with send:
                    for work in items:
                        _add(tally, work, max_tokens)
                        await send.send(work)
    if scope.cancelled_caught and reason is None:
        reason = f"counting took longer than preflight.timeout={cfg.preflight.timeout:g}s"
    return reason


async def probe_speeds(
    requests: Sequence[GenerationRequest], nodes: Sequence[NodeSpec], cfg: RunConfig
) -> dict[str, float | None]:
    """Each node's output tokens per second with all its slots busy: as many short answers
    at once as it has slots (at most 8; the job's first prompts, ``preflight.probe_tokens``
    each), timed together. ``None`` for a node that failed or was not probed."""
    speeds: dict[str, float | None] = {node.name: None for node in nodes}
    wanted = ProbeSpeed.dry_run if cfg.dry_run else ProbeSpeed.always
    if not requests or cfg.preflight.probe_speed not in (wanted, ProbeSpeed.always):
        return speeds
    settings = cfg.preflight

    async def one(node: NodeSpec) -> None:
        width = max(1, min(node.slots, 8))
        batch = [_short(requests[i % len(requests)], settings) for i in range(width)]
        tokens = 0
        async with NodeClient.for_node(
            node, cfg.model.api, cfg.engine, max_connections=width, stall_timeout=settings.timeout
        ) as client:

            async def ask(request: GenerationRequest) -> None:
                nonlocal tokens
                completion = await client.generate(request, stream=False)
                tokens += completion.output_tokens or 0

            started = trio.current_time()
            failed = False
            try:
                async with trio.open_nursery() as nursery:
                    for request in batch:
                        nursery.start_soon(ask, request)
            except* NodeError as group:
                log.info("speed probe of %s failed: %s", node.name, group.exceptions[0])
                failed = True
        elapsed = trio.current_time() - started
        if tokens and elapsed > 0 and not failed:
            speeds[node.name] = tokens / elapsed

    with trio.move_on_after(settings.timeout):
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(one, node)
    return speeds


def _short(request: GenerationRequest, settings: PreflightConfig) -> GenerationRequest:
    limit = min(max_tokens_of(request, settings.probe_tokens), settings.probe_tokens)
    body = request.body
    if body is not None:
        body = {k: v for k, v in body.items() if k not in ("max_tokens", "max_completion_tokens")}
        body |= {"max_tokens": limit}
    return replace(request, params=request.params | {"max_tokens": limit}, body=body)


async def preflight(
    works: Iterable[Work],
    nodes: Sequence[NodeSpec],
    cfg: RunConfig,
    *,
    contexts: Mapping[str, int],
    max_tokens: int,
) -> Estimate:
    """Count, probe and estimate (see the module's docstring) for ``works`` on ``nodes``."""
    tally = TokenTally(context=min(contexts.values()) if contexts else None)
    works = iter(works)
    first = list(islice(works, 8))
    reason = await count_tokens(chain(first, works), nodes, cfg, tally, max_tokens=max_tokens)
    generating = [w.request for w in first if w.request.choices is None]
    speeds = await probe_speeds(generating, nodes, cfg)
    prices = {node.name: node.price_per_hour for node in nodes}
    return estimate(tally, speeds=speeds, prices=prices, not_counted=reason)


def _unanswered(plan: Plan, store: Store | None) -> Iterator[Work]:
    """The plan's work the store does not hold (all of it without a store), a batch of keys
    asked at a time."""
    works = plan.work()
    if store is None:
        yield from works
        return
    while batch := list(islice(works, LOOKUP_BATCH)):
        held = store.offsets([work.key for work in batch])
        yield from (work for work in batch if work.key not in held)


def preflight_run(
    cfg: RunConfig,
    plan: Plan,
    nodes: list[NodeSpec],
    call: RollCall,
    store: Store | None,
    max_tokens: int,
) -> Estimate:
    """The pre-flight of a run: of the work about to be sent (not what ``store`` holds), on
    the nodes of the roll call that are up; its estimate logged.

    Raises:
        ConfigError: prompts do not fit the context and the job does not allow it (nothing
            has been sent or changed yet).
    """
    up = [node for node in nodes if node.name not in call.down]
    found = trio.run(
        partial(
            preflight,
            _unanswered(plan, store),
            up,
            cfg,
            contexts=call.contexts,
            max_tokens=max_tokens,
        )
    )
    for line in describe(found):
        log.info("estimate: %s", line)
    if found.too_long:
        if not cfg.job.allow_prompt_truncation:
            raise ConfigError(too_long_message(found))
        log.warning("job.allow_prompt_truncation: %s", too_long_message(found))
    return found
