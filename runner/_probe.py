"""The node check (``job=probe``): every node gets one short real request.

Prints a table — reachable or not and why, engine ids served, slots (what a run would use,
where that number comes from, and what the node itself says), latency, tokens/s — and writes
it to ``probe.json`` in the run directory. Exit status 0 when every node answered. A shard's
probe checks the nodes that shard would use (:func:`runner._shard.shard_nodes`) and says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import trio
from rich.console import Console
from rich.table import Table

from ._client import NodeClient
from ._cluster import remote_nodes, started_nodes
from ._config import ClusterKind, RunConfig
from ._errors import NodeError
from ._nodes import NodeSpec
from ._outcome import EXIT_FAILED_ITEMS, EXIT_OK, Outcome
from ._report import write_json
from ._request import GenerationRequest
from ._shard import Shard, nodes_rule, shard_nodes


@dataclass
class ProbeResult:
    """One node's line in the table and in ``probe.json``.

    ``slots`` and ``slots_from`` are what a run would use and why (``config``, ``node`` or
    ``default``: engine.slots); ``node_slots`` is what the node itself says, ``None`` when
    it does not (or could not be asked).
    """

    node: str
    url: str
    reachable: bool
    slots: int
    slots_from: str
    node_slots: int | None = None
    error: str | None = None
    engines: list[str] | None = None
    latency_s: float | None = None
    output_tokens: int | None = None
    tokens_per_s: float | None = None
    text: str | None = None


async def probe_node(
    spec: NodeSpec, cfg: RunConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> ProbeResult:
    """Ask one node which engines it serves and how many sequences it runs at once, then for
    a short completion (``transport`` replaces the network in tests)."""
    engine = cfg.engine
    result = ProbeResult(
        node=spec.name,
        url=spec.base_url,
        reachable=False,
        slots=spec.slots,
        slots_from=spec.slots_from.value,
    )
    request = GenerationRequest(
        api=cfg.model.api,
        style=cfg.model.style,
        engine=cfg.model.engine,
        prompt="Say hello in five words.",
        params={"max_tokens": cfg.job.max_tokens or 16, "temperature": 0.0},
        seed=1,
    )
    async with NodeClient.for_node(
        spec, cfg.model.api, engine, max_connections=2, transport=transport
    ) as client:
        try:
            with trio.fail_after(engine.probe_timeout):
                result.engines = await client.engines()
                result.node_slots = (await client.facts(cfg.model.engine)).slots
                used = spec.with_node_slots(result.node_slots)
                result.slots, result.slots_from = used.slots, used.slots_from.value
                start = trio.current_time()
                completion = await client.generate(request, stream=False)
        except NodeError as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            return result
        except trio.TooSlowError:
            result.error = f"no answer within probe_timeout={engine.probe_timeout}s"
            return result
    latency = trio.current_time() - start
    result.reachable = True
    result.latency_s = round(latency, 3)
    result.output_tokens = completion.output_tokens
    if completion.output_tokens and latency > 0:
        result.tokens_per_s = round(completion.output_tokens / latency, 1)
    result.text = completion.text
    return result


async def probe_all(specs: list[NodeSpec], cfg: RunConfig) -> list[ProbeResult]:
    results: list[ProbeResult | None] = [None] * len(specs)

    async def one(i: int) -> None:
        results[i] = await probe_node(specs[i], cfg)

    async with trio.open_nursery() as nursery:
        for i in range(len(specs)):
            nursery.start_soon(one, i)
    return [r for r in results if r is not None]


def _table(results: list[ProbeResult]) -> Table:
    table = Table(title="Node check")
    for col in ("node", "reachable", "engines", "slots", "latency s", "tokens/s", "error"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.node,
            "[green]yes[/]" if r.reachable else "[red]no[/]",
            ", ".join(r.engines) if r.engines else ("-" if r.engines is None else "none"),
            slots_cell(r),
            "-" if r.latency_s is None else f"{r.latency_s:.2f}",
            "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
            r.error or "",
        )
    return table


def slots_cell(r: ProbeResult) -> str:
    """``4 (node)``, ``2 (config)``, ``1 (default)``; and what the node says when a run
    would use another number: ``2 (config; node: 4)``."""
    cell = f"{r.slots} ({r.slots_from})"
    if r.node_slots is not None and r.node_slots != r.slots:
        cell = f"{r.slots} ({r.slots_from}; node: {r.node_slots})"
    return cell


def shard_heading(shard: Shard, cfg: RunConfig) -> str:
    """The line a shard's probe starts with: which shard, and which nodes it uses."""
    local = cfg.cluster.kind is ClusterKind.local
    rule = nodes_rule(shard, cfg.shard_nodes, local=local)
    return f"Shard {shard.label} ({shard.source}): {rule}"


def run_probe(
    cfg: RunConfig, run_dir: Path, *, console: Console, shard: Shard | None = None
) -> Outcome:
    """Probe every node of the configured cluster (of the shard, for a shard); returns the
    run's outcome."""
    started = time.monotonic()
    listed = None
    if shard is not None and cfg.cluster.kind is not ClusterKind.local:
        listed = shard_nodes(remote_nodes(cfg.cluster, cfg.engine), shard, cfg.shard_nodes)
    with started_nodes(
        cfg.cluster, cfg.engine, engine_id=cfg.model.engine, log_dir=run_dir, listed=listed
    ) as specs:
        results = trio.run(probe_all, specs, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / (cfg.job.output.filename or "probe.json")
    found = {"nodes": [asdict(r) for r in results], "wall_time_s": time.monotonic() - started}
    if shard is not None:
        found["shard"] = {"index": shard.index, "count": shard.count, "source": shard.source}
    write_json(path, found)
    if shard is not None:
        console.print(shard_heading(shard, cfg), markup=False)
    console.print(_table(results))
    up = sum(r.reachable for r in results)
    code = EXIT_OK if up == len(results) else EXIT_FAILED_ITEMS
    return Outcome(code, f"probe: {up}/{len(results)} nodes answered, exit {code} -> {path}")
