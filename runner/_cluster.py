"""Where a run's nodes come from: listed inline, read from an inventory, or started locally;
and how many requests each takes at once.

A node's ``slots`` set in the config (inline ``slots:``, an inventory host's ``slots``) is
used as it is. Where it is not set — and for every node of a local cluster — the node starts
with ``engine.slots`` marked :attr:`~runner._nodes.SlotsFrom.default`, and :func:`ask_slots`,
run once before the engine starts, asks each such node how many sequences it runs at once
(all nodes in parallel, within ``engine.slots_timeout``). A node that does not say (ts_server,
an older node, one that is down) keeps ``engine.slots``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import trio

from ._client import NodeClient
from ._config import ClusterConfig, ClusterKind, EngineConfig, NodeConfig
from ._errors import ConfigError, NodeError
from ._nodes import NodeSpec, SlotsFrom
from ._request import Api

log = logging.getLogger("runner")


def parse_address(address: str, *, label: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and check both parts."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{label}: '{address}' is not host:port")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{label}: '{address}' has a port that is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{label}: '{address}' has port {port}, outside 1-65535")
    return host, port


def _url(scheme: str, host: str, port: int) -> str:
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _api_key(env_name: str | None, *, label: str) -> str | None:
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(f"{label}: environment variable {env_name} (the API key) is not set")
    return value


def _slots(value: int | None, engine: EngineConfig, *, label: str) -> tuple[int, SlotsFrom]:
    """The node's slots and where they came from: its own value, else ``engine.slots``."""
    if value is None:
        return engine.slots, SlotsFrom.default
    if value < 1:
        raise ConfigError(f"{label}: slots must be at least 1, got {value}")
    return value, SlotsFrom.config


def static_nodes(cluster: ClusterConfig, engine: EngineConfig) -> list[NodeSpec]:
    """The nodes listed inline in the cluster config."""
    specs = []
    for i, node in enumerate(cluster.nodes):
        specs.append(_spec(node, cluster, engine, label=f"cluster.nodes[{i}]"))
    return specs


def _spec(
    node: NodeConfig, cluster: ClusterConfig, engine: EngineConfig, *, label: str
) -> NodeSpec:
    host, port = parse_address(node.address, label=f"{label}.address")
    slots, slots_from = _slots(node.slots, engine, label=label)
    return NodeSpec(
        name=node.name or f"{host}:{port}",
        base_url=_url(cluster.scheme, host, port),
        slots=slots,
        api_key=_api_key(node.api_key_env or cluster.api_key_env, label=label),
        slots_from=slots_from,
    )


def inventory_nodes(cluster: ClusterConfig, engine: EngineConfig) -> list[NodeSpec]:
    """The nodes of the cluster's inventory group (pyinfra ``inventory.py`` or Ansible INI)."""
    from ._inventory import read_inventory

    if not cluster.inventory:
        raise ConfigError("cluster.inventory: no inventory file given")
    path = Path(cluster.inventory).expanduser()
    specs = []
    for host in read_inventory(path, group=cluster.group):
        label = f"{path}: host {host.name}"
        slots, slots_from = _slots(host.slots, engine, label=label)
        specs.append(
            NodeSpec(
                name=host.name,
                base_url=_url(cluster.scheme, host.address, host.port),
                slots=slots,
                api_key=_api_key(host.api_key_env or cluster.api_key_env, label=label),
                slots_from=slots_from,
            )
        )
    return specs


def remote_nodes(cluster: ClusterConfig, engine: EngineConfig) -> list[NodeSpec]:
    """The nodes of a static or inventory cluster; a local cluster has none until started."""
    if cluster.kind is ClusterKind.static:
        specs = static_nodes(cluster, engine)
    elif cluster.kind is ClusterKind.inventory:
        specs = inventory_nodes(cluster, engine)
    else:
        return []
    if not specs:
        raise ConfigError(f"cluster '{cluster.name}': no nodes")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"cluster '{cluster.name}': node listed twice: {', '.join(dupes)}")
    return specs


@contextlib.contextmanager
def started_nodes(
    cluster: ClusterConfig, engine: EngineConfig, *, engine_id: str, log_dir: Path
) -> Iterator[list[NodeSpec]]:
    """The cluster's nodes, started first (and stopped afterwards) for a local cluster.

    Their slots are as configured; see :func:`ask_slots` for the ones left unset.
    """
    if cluster.kind is not ClusterKind.local:
        yield remote_nodes(cluster, engine)
        return
    from ._local import local_cluster

    local = cluster.local
    api_key = _api_key(cluster.api_key_env, label="cluster.api_key_env")
    with local_cluster(
        nodes=local.nodes,
        threads=local.threads,
        parallel=local.parallel,
        server=local.server.value,
        model_path=local.model_path,
        engine=engine_id,
        api_key=api_key,
        ready_timeout=local.ready_timeout,
        log_dir=log_dir,
    ) as started:
        yield [
            NodeSpec(
                name=node.name,
                base_url=f"http://{node.host}:{node.port}",
                slots=engine.slots,
                api_key=api_key,
                slots_from=SlotsFrom.default,
            )
            for node in started
        ]


async def ask_slots(
    specs: Sequence[NodeSpec],
    *,
    api: Api,
    engine_id: str,
    settings: EngineConfig,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[NodeSpec]:
    """The nodes, each whose slots were not configured asked how many sequences it runs at
    once (all in parallel, each within ``settings.slots_timeout``); in the same order.

    A node that does not say, cannot be reached or answers nonsense in time keeps
    ``engine.slots`` (``slots_from`` stays ``default``); why is logged. Never raises for a
    node's failure: the engine will find out about the node soon enough.
    """
    resolved = list(specs)

    async def one(i: int) -> None:
        spec = specs[i]
        async with NodeClient(
            spec.base_url,
            name=spec.name,
            api=api,
            api_key=spec.api_key,
            connect_timeout=settings.connect_timeout,
            stall_timeout=settings.slots_timeout,
            max_connections=1,
            transport=transport,
        ) as client:
            try:
                with trio.fail_after(settings.slots_timeout):
                    slots = await client.slots(engine_id)
            except NodeError as exc:
                log.warning("%s: could not ask its slots (%s); using engine.slots", spec.name, exc)
                return
            except trio.TooSlowError:
                log.warning(
                    "%s: did not say its slots within slots_timeout=%gs; using engine.slots",
                    spec.name,
                    settings.slots_timeout,
                )
                return
        resolved[i] = spec.with_node_slots(slots)

    async with trio.open_nursery() as nursery:
        for i, spec in enumerate(specs):
            if spec.slots_from is SlotsFrom.default:
                nursery.start_soon(one, i)
    return resolved


def describe_slots(specs: Sequence[NodeSpec]) -> str:
    """One line naming each node's slots and where they came from (for the start-up log)."""
    return ", ".join(f"{s.name} ({s.slots} slots, {s.slots_from.value})" for s in specs)
