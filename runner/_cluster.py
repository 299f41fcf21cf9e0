"""Where a run's nodes come from: listed inline, read from an inventory, or started locally."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

from ._config import ClusterConfig, ClusterKind, EngineConfig, NodeConfig
from ._errors import ConfigError
from ._nodes import NodeSpec


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


def _slots(value: int | None, engine: EngineConfig, *, label: str) -> int:
    slots = engine.slots if value is None else value
    if slots < 1:
        raise ConfigError(f"{label}: slots must be at least 1, got {slots}")
    return slots


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
    return NodeSpec(
        name=node.name or f"{host}:{port}",
        base_url=_url(cluster.scheme, host, port),
        slots=_slots(node.slots, engine, label=label),
        api_key=_api_key(node.api_key_env or cluster.api_key_env, label=label),
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
        specs.append(
            NodeSpec(
                name=host.name,
                base_url=_url(cluster.scheme, host.address, host.port),
                slots=_slots(host.slots, engine, label=label),
                api_key=_api_key(host.api_key_env or cluster.api_key_env, label=label),
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
    """The cluster's nodes, started first (and stopped afterwards) for a local cluster."""
    if cluster.kind is not ClusterKind.local:
        yield remote_nodes(cluster, engine)
        return
    from ._local import local_cluster

    local = cluster.local
    api_key = _api_key(cluster.api_key_env, label="cluster.api_key_env")
    with local_cluster(
        nodes=local.nodes,
        threads=local.threads,
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
                slots=_slots(None, engine, label="engine.slots"),
                api_key=api_key,
            )
            for node in started
        ]
