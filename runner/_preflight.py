"""The pre-flight: before a run sends anything (and in a dry run), what it is about to cost.

Two measurements, each optional (``preflight`` settings, :class:`~runner._config.PreflightConfig`):

- **tokens**: prompts are counted with the nodes' tokenize (spread over all of them, a few
  at a time per node); an item whose prompt and ``max_tokens`` exceed the smallest context
  the nodes said is too long (the node would drop the prompt's beginning), and the run stops
  before sending anything unless ``job.allow_prompt_truncation``. Not every prompt needs a
  request (``preflight.sample``): one whose bound (its UTF-8 bytes and
  :data:`~runner._estimate.TOKEN_SLACK`) and ``max_tokens`` fit the context cannot be too
  long, so only the others (at risk) are counted, and of the rest a sample
  (:class:`~runner._estimate.Sample`) and the longest in bytes; the tokens of the rest are
  the sample's tokens per byte times their bytes. A chat template's own tokens, which the
  text's count misses, are measured once per shape of messages and added
  (:mod:`runner._chat_framing`);
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
from dataclasses import dataclass, replace
from functools import partial
from itertools import chain, islice

import trio

from ._chat_framing import Framing
from ._client import NodeClient
from ._cluster import RollCall
from ._config import PreflightConfig, ProbeSpeed, RunConfig
from ._errors import ConfigError, NodeError
from ._estimate import Estimate, Prompt, Sample, TokenTally, describe, estimate, too_long_message
from ._journal import Store
from ._nodes import NodeSpec
from ._plan import Plan
from ._request import GenerationRequest
from ._resume_index import LOOKUP_BATCH
from ._work import Work

log = logging.getLogger("runner")

COUNTERS_PER_NODE = 4  # tokenize requests in flight on one node at once (they are cheap)
SCAN_BATCH = 512  # items read and sorted (at risk, or offered to the sample) between sends


def counted_text(request: GenerationRequest) -> str:
    """The text whose tokens stand for a request's prompt: the system prompt and the prompt
    (or a batch line's messages), and for a choice job its longest label after it. A chat
    template's own tokens are not in it: :mod:`runner._chat_framing` measures them."""
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


def prompt_of(work: Work, max_tokens: int, framing: int = 0) -> Prompt:
    """What the count needs of ``work`` (``max_tokens``: the job's, when the request has
    none; ``framing``: its chat template's tokens)."""
    text = counted_text(work.request)
    room = max_tokens_of(work.request, max_tokens) if answers_of(work.request) else 0
    size = len(text.encode("utf-8", "surrogatepass"))
    return Prompt(work.id, work.key, text, size, room, framing)


@dataclass(frozen=True, slots=True)
class _Count:
    """A prompt to count, and how it enters the tally."""

    prompt: Prompt
    at_risk: bool = False
    sampled: bool = False


async def count_tokens(
    works: Iterable[Work],
    nodes: Sequence[NodeSpec],
    cfg: RunConfig,
    tally: TokenTally,
    *,
    max_tokens: int,
    framing: Framing | None = None,
) -> str | None:
    """Add every work item to ``tally``, its prompt tokens counted by the nodes when
    ``preflight.count_tokens``: all of them, or with ``preflight.sample`` set the prompts
    at risk of not fitting the context and a sample of the others, each with its chat
    template's tokens (``framing``). Returns why the tokens were not all counted, or ``None``."""
    items = iter(works)
    reason: str | None = "preflight.count_tokens=false"
    framing = framing or Framing(counted_text, cfg.model.engine, context=tally.context)
    if cfg.preflight.count_tokens:
        reason = "no node to count them"
        if nodes:
            reason = await _count_on_nodes(items, nodes, cfg, tally, framing, max_tokens)
    for work in items:  # the rest, when counting stopped (or never started)
        _add(tally, work, max_tokens)
    return reason


def _add(tally: TokenTally, work: Work, max_tokens: int) -> None:
    tally.add(max_tokens=max_tokens_of(work.request, max_tokens), answers=answers_of(work.request))


def _at_risk(prompt: Prompt, context: int | None) -> bool:
    """Whether only a count can tell that ``prompt`` and its answer fit ``context``."""
    return context is not None and prompt.bound + prompt.room > context


def _scan(
    batch: Iterable[Work],
    tally: TokenTally,
    sample: Sample | None,
    max_tokens: int,
    framing: Framing,
) -> list[_Count]:
    """Add each item of ``batch`` to ``tally``; the prompts to count now: every one without
    a sample, else those at risk (the others are offered to ``sample``)."""
    counts = []
    for work in batch:
        _add(tally, work, max_tokens)
        prompt = prompt_of(work, max_tokens, framing.take(work.request))
        at_risk = _at_risk(prompt, tally.context)
        if sample is None or at_risk:
            counts.append(_Count(prompt, at_risk=at_risk))
        else:
            sample.offer(prompt)
    return counts


def _sample_counts(sample: Sample) -> Iterator[_Count]:
    """The sample's prompts to count: all it was offered when it kept them all, else the
    ones it kept (as the sample) and the longest one apart."""
    for prompt in sample.kept():
        yield _Count(prompt, sampled=not sample.whole)
    longest = sample.longest_left_out()
    if longest is not None:
        yield _Count(longest)


def _leave_out(tally: TokenTally, sample: Sample) -> None:
    """Tell ``tally`` of the prompts of ``sample`` that were not counted."""
    counted = [*sample.kept(), *filter(None, [sample.longest_left_out()])]
    left_out = sample.offered - len(counted)
    if left_out:
        text_bytes = sample.bytes - sum(prompt.bytes for prompt in counted)
        framing = sample.framing - sum(prompt.framing for prompt in counted)
        tally.leave_out(left_out, text_bytes, framing)


async def _count_on_nodes(
    items: Iterator[Work],
    nodes: Sequence[NodeSpec],
    cfg: RunConfig,
    tally: TokenTally,
    framing: Framing,
    max_tokens: int,
) -> str | None:
    """Send prompts to the nodes' tokenize, ``COUNTERS_PER_NODE`` at a time per node, adding
    each to ``tally``: every prompt, or the prompts at risk as they come and then the sample
    (``preflight.sample``), with their chat framing (new shapes measured on the first node).
    Stops at the first failure (returns why). ``preflight.timeout`` is the time spent
    waiting on the nodes: the scan of the items is not charged to it."""
    reason: str | None = None
    send, receive = trio.open_memory_channel[_Count](COUNTERS_PER_NODE * len(nodes))
    engine = cfg.model.engine
    sample = None if cfg.preflight.sample is None else Sample(cfg.preflight.sample)

    async def counter(client: NodeClient, inbox: trio.MemoryReceiveChannel[_Count]) -> None:
        nonlocal reason
        async with inbox:
            async for job in inbox:
                prompt = job.prompt
                try:
                    tokens = await client.count_tokens(engine, prompt.text)
                except NodeError as exc:
                    reason = f"node {client.name} could not tokenize: {exc}"
                    scope.cancel()
                    return
                tally.count(
                    prompt.id,
                    tokens,
                    room=prompt.room,
                    at_risk=job.at_risk,
                    sample_bytes=prompt.bytes if job.sampled else None,
                    framing=prompt.framing,
                )

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
                    while True:
                        started = trio.current_time()
                        batch = list(islice(items, SCAN_BATCH))
                        if not batch:
                            break
                        scope.deadline += trio.current_time() - started  # the reading's time
                        await framing.learn(clients[0], batch)  # waiting on a node: charged
                        started = trio.current_time()
                        jobs = _scan(batch, tally, sample, max_tokens, framing)
                        scope.deadline += trio.current_time() - started  # the scan's time
                        await trio.lowlevel.checkpoint()  # a long scan sends nothing
                        for job in jobs:
                            await send.send(job)
                    if sample is not None:
                        for job in _sample_counts(sample):
                            await send.send(job)
        if sample is not None:  # every count arrived
            _leave_out(tally, sample)
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
    framing = Framing(counted_text, cfg.model.engine, context=tally.context)
    reason = await count_tokens(
        chain(first, works), nodes, cfg, tally, max_tokens=max_tokens, framing=framing
    )
    generating = [w.request for w in first if w.request.choices is None]
    speeds = await probe_speeds(generating, nodes, cfg)
    prices = {node.name: node.price_per_hour for node in nodes}
    return estimate(
        tally, speeds=speeds, prices=prices, not_counted=reason, chat_framing=framing.records()
    )


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
