"""The dry run (``dry_run=true``): what a run would do, with nothing sent.

It reads and renders every item (the plan's scan), prints the plan, the nodes and the first
prompts, then, unless both parts of the pre-flight are off, starts the nodes (a local
cluster too), asks them to count the tokens and, by default, probes their speed
(:mod:`runner._preflight`), and prints the estimate. No journal, lock or result is touched;
prompts too long for the context fail it as they would fail the run.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio
from rich.console import Console

from ._cluster import describe_slots, remote_nodes, started_nodes, take_roll_call
from ._config import ClusterKind, ProbeSpeed, RunConfig
from ._errors import ConfigError, storage_errors
from ._estimate import Estimate, describe, too_long_message
from ._nodes import NodeSpec, SlotsFrom
from ._outcome import EXIT_OK, Outcome
from ._plan import Plan
from ._preflight import preflight
from ._sampling import sampling_params
from ._shard import JobFingerprint, nodes_rule, shard_nodes


def dry_run(
    cfg: RunConfig,
    plan: Plan,
    total: int,
    console: Console,
    whole: JobFingerprint | None = None,
    *,
    run_dir: Path,
    journal: Path,
) -> Outcome:
    """Print the plan (``journal``: the store a real run would use) and its first prompts,
    then the pre-flight's estimate (the nodes are asked to tokenize and for the speed probe
    only; a local cluster is started for it).

    Raises:
        ConfigError: prompts do not fit the context (unless the job allows it).
    """
    nodes = remote_nodes(cfg.cluster, cfg.engine)
    console.print(f"[bold]Dry run[/] of job '{cfg.job.name}': nothing is sent.")
    console.print(f"  items: {total} from {plan.input_path}")
    if plan.shard is not None and whole is not None:
        is_local = cfg.cluster.kind is ClusterKind.local
        console.print(
            f"  shard: {plan.shard.label} ({plan.shard.source}): {total} of the job's "
            f"{whole.items} items, journal {journal}, "
            f"nodes: {nodes_rule(plan.shard, cfg.shard_nodes, local=is_local)}",
            markup=False,
            soft_wrap=True,
        )
        nodes = shard_nodes(nodes, plan.shard, cfg.shard_nodes) if nodes else nodes
    console.print(
        f"  model: {cfg.model.name} (engine '{cfg.model.engine}', {cfg.model.api.value}, "
        f"{cfg.model.style.value})"
    )
    if nodes:
        console.print(f"  nodes: {len(nodes)}: {describe_slots(nodes)}", markup=False)
        if any(n.slots_from is SlotsFrom.default for n in nodes):
            console.print("  (nodes marked default are asked for their slots when the run starts)")
    else:
        local = cfg.cluster.local
        console.print(
            f"  nodes: local cluster of {local.nodes or 'one per core'} {local.server.value} nodes"
        )
    for i, work in enumerate(plan.work()):
        if i == 3:
            break
        console.print(f"  --- prompt {i + 1} (id {work.id}) ---", markup=False)
        if work.request.system:
            console.print(f"  [system] {work.request.system}", markup=False)
        console.print(work.request.prompt, markup=False)
        if work.request.choices is not None:  # a choice job: scored, not generated
            console.print(f"  [labels] {', '.join(work.request.choices.labels)}", markup=False)
    if cfg.preflight.count_tokens or cfg.preflight.probe_speed is not ProbeSpeed.never:
        found = _dry_preflight(cfg, plan, nodes, run_dir)
        console.print("[bold]Estimate[/] (docs/preflight.md):")
        for line in describe(found):
            console.print(f"  {line}", markup=False, soft_wrap=True)
        if found.too_long and not cfg.job.allow_prompt_truncation:
            raise ConfigError(too_long_message(found))
    return Outcome(EXIT_OK, f"{cfg.job.name}: dry run, {total} items, no item sent")


def _dry_preflight(cfg: RunConfig, plan: Plan, listed: list[NodeSpec], run_dir: Path) -> Estimate:
    """The pre-flight of a dry run: the whole job, on the nodes that answer the roll call."""
    with (
        storage_errors(run_dir, "prepare the run directory"),
        started_nodes(
            cfg.cluster,
            cfg.engine,
            engine_id=cfg.model.engine,
            log_dir=_made(run_dir),  # a local cluster's logs
            listed=listed,
        ) as configured,
    ):
        call = take_roll_call(
            configured, api=cfg.model.api, engine_id=cfg.model.engine, settings=cfg.engine
        )
        up = [node for node in call.nodes if node.name not in call.down]
        max_tokens = sampling_params(cfg.model, cfg.job)["max_tokens"]
        return trio.run(
            partial(preflight, plan.work(), up, cfg, contexts=call.contexts, max_tokens=max_tokens)
        )


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
