"""Where a run's nodes come from: listed inline, read from an inventory, or started locally;
and how many requests each takes at once.

Before the engine starts, :func:`roll_call` asks every node, all in parallel and each within
``engine.startup_timeout``, what it says of itself: whether it answers at all, how many
sequences it runs at once and its context. A node's ``slots`` set in the config (inline
``slots:``, an inventory host's ``slots``) is used as it is; where it is not set — and for
every node of a local cluster — the node starts with ``engine.slots`` marked
:attr:`~runner._nodes.SlotsFrom.default` and takes the number it says. A node that does not
say (ts_server, an older node, one that is down) keeps ``engine.slots``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import trio

from ._client import NodeClient
from ._config import ClusterConfig, ClusterKind, EngineConfig, NodeConfig
from ._errors import ClusterUnavailable, ConfigError, NodeError
from ._nodes import NodeSpec, SlotsFrom
from ._request import Api

log = logging.getLogger("runner")


def parse_address(address: str, *, label: str, scheme: str = "http") -> tuple[str, str, int]:
    """Split a node address into scheme, host and port, checking each.

    Takes ``host:port`` (``[v6]:port`` for IPv6; the scheme is ``scheme``) or a URL
    ``http(s)://host:port`` (a missing port is the scheme's, 80 or 443); a URL's path,
    query or credentials are refused, since the runner adds the API's own paths.
    """
    if "://" in address:
        return _parse_url(address, label=label)
    if "/" in address:
        raise ConfigError(f"{label}: '{address}' is not host:port or http(s)://host:port")
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
    return scheme, host, port


def _parse_url(address: str, *, label: str) -> tuple[str, str, int]:
    expected = "expected host:port or http(s)://host:port"
    try:
        url = httpx.URL(address)
        port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(f"{label}: '{address}' is not a valid URL ({exc}); {expected}") from exc
    if url.scheme not in ("http", "https"):
        raise ConfigError(f"{label}: '{address}' has scheme {url.scheme!r}; {expected}")
    if not url.host:
        raise ConfigError(f"{label}: '{address}' has no host; {expected}")
    if not 0 < port < 65536:
        raise ConfigError(f"{label}: '{address}' has port {port}, outside 1-65535")
    if url.path not in ("", "/") or url.query or url.fragment or url.userinfo:
        raise ConfigError(
            f"{label}: '{address}' has a path, query or credentials; {expected} "
            "(the runner adds the API's paths; keys go in api_key_env)"
        )
    return url.scheme, url.host, port


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


def _price_per_hour(value: object, *, label: str) -> float | None:
    """A node's configured price per hour: a finite number ≥ 0, or None when unset."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{label}: price_per_hour must be a number ≥ 0, got {value!r}")
    if value < 0:
        raise ConfigError(f"{label}: price_per_hour must not be negative, got {value!r}")
    return float(value)


def static_nodes(cluster: ClusterConfig, engine: EngineConfig) -> list[NodeSpec]:
    """The nodes listed inline in the cluster config."""
    specs = []
    for i, node in enumerate(cluster.nodes):
        specs.append(_spec(node, cluster, engine, label=f"cluster.nodes[{i}]"))
    return specs


def _spec(
    node: NodeConfig, cluster: ClusterConfig, engine: EngineConfig, *, label: str
) -> NodeSpec:
    scheme, host, port = parse_address(
        node.address, label=f"{label}.address", scheme=cluster.scheme
    )
    slots, slots_from = _slots(node.slots, engine, label=label)
    return NodeSpec(
        name=node.name or f"{host}:{port}",
        base_url=_url(scheme, host, port),
        slots=slots,
        api_key=_api_key(node.api_key_env or cluster.api_key_env, label=label),
        slots_from=slots_from,
        price_per_hour=_price_per_hour(node.price_per_hour, label=label),
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
                price_per_hour=host.price_per_hour,
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
    cluster: ClusterConfig,
    engine: EngineConfig,
    *,
    engine_id: str,
    log_dir: Path,
    on_restart: Callable[[str, int, str], None] | None = None,
    listed: list[NodeSpec] | None = None,
) -> Iterator[list[NodeSpec]]:
    """The cluster's nodes, started first (and stopped afterwards) for a local cluster,
    whose nodes are started again if they die (``on_restart`` hears of each restart).

    Their slots are as configured; see :func:`roll_call` for the ones left unset.
    ``listed``: the remote nodes already read (:func:`remote_nodes`), so that an inventory
    file is executed once per run.
    """
    if cluster.kind is not ClusterKind.local:
        yield listed if listed is not None else remote_nodes(cluster, engine)
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
        on_restart=on_restart,
        reproducible=local.reproducible,
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


@dataclass(frozen=True)
class RollCall:
    """What the nodes said before the run.

    Attributes:
        nodes: the nodes, in their order, each whose slots were unset resolved from its
            answer where it gave one.
        down: the nodes that could not be reached at all, with why (name → error).
        contexts: each node's context per sequence in tokens, where it said (name → n).
    """

    nodes: list[NodeSpec]
    down: dict[str, str] = field(default_factory=dict)
    contexts: dict[str, int] = field(default_factory=dict)


async def roll_call(
    specs: Sequence[NodeSpec],
    *,
    api: Api,
    engine_id: str,
    settings: EngineConfig,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RollCall:
    """Ask every node, all in parallel and each within ``settings.startup_timeout``, what it
    says of itself (:meth:`~runner._client.NodeClient.facts`): whether it answers at all,
    its slots (used where the config left them unset) and its context.

    A node that answers without saying, or with nonsense, keeps ``engine.slots``; one that
    cannot be reached in time is listed in ``down`` (and keeps ``engine.slots``); why is
    logged. Never raises for a node's failure: the run decides what a down node means.
    """
    resolved = list(specs)
    down: dict[str, str] = {}
    contexts: dict[str, int] = {}
    timeout = settings.startup_timeout

    async def one(i: int) -> None:
        spec = specs[i]
        async with NodeClient.for_node(
            spec,
            api,
            settings,
            max_connections=1,
            connect_timeout=min(settings.connect_timeout, timeout),
            stall_timeout=timeout,
            transport=transport,
        ) as client:
            try:
                with trio.fail_after(timeout):
                    facts = await client.facts(engine_id)
            except NodeError as exc:
                down[spec.name] = f"{type(exc).__name__}: {exc}"
                return
            except trio.TooSlowError:
                down[spec.name] = f"no answer within engine.startup_timeout={timeout:g}s"
                return
        if facts.context is not None:
            contexts[spec.name] = facts.context
        if spec.slots_from is not SlotsFrom.default:
            return
        if facts.slots is None:
            log.info("%s: does not say its slots; using engine.slots=%d", spec.name, spec.slots)
        else:
            resolved[i] = spec.with_node_slots(facts.slots)

    async with trio.open_nursery() as nursery:
        for i in range(len(specs)):
            nursery.start_soon(one, i)
    return RollCall(resolved, down, contexts)


def take_roll_call(
    specs: Sequence[NodeSpec], *, api: Api, engine_id: str, settings: EngineConfig
) -> RollCall:
    """:func:`roll_call` from synchronous code: a trio run of its own."""
    return trio.run(partial(roll_call, specs, api=api, engine_id=engine_id, settings=settings))


def unreachable(call: RollCall) -> str:
    """One line naming each node that could not be reached, its address and why."""
    by_name = {spec.name: spec for spec in call.nodes}
    return "; ".join(
        f"{name} ({by_name[name].base_url}): {error}" for name, error in sorted(call.down.items())
    )


def answering_nodes(call: RollCall, *, max_tokens: int) -> list[NodeSpec]:
    """The nodes to start the run with, after the roll call: all of them (a node down now
    is benched by the engine and re-admitted when it answers), unless none answered.

    Raises:
        ClusterUnavailable: no node answered; the message names each one and why.
        ConfigError: ``max_tokens`` leaves no room in the context a node reported (every
            request would be refused).
    """
    if len(call.down) == len(call.nodes):
        raise ClusterUnavailable(f"no node answers: {unreachable(call)}")
    if call.down:
        log.warning("not answering, benched until they do: %s", unreachable(call))
    for name, context in sorted(call.contexts.items()):
        if max_tokens >= context:
            raise ConfigError(
                f"max_tokens={max_tokens} does not fit node {name}'s context of {context} "
                f"tokens (prompt and answer together): set job.max_tokens below {context}"
            )
    return call.nodes


def describe_slots(specs: Sequence[NodeSpec]) -> str:
    """One line naming each node's slots and where they came from (for the start-up log)."""
    return ", ".join(f"{s.name} ({s.slots} slots, {s.slots_from.value})" for s in specs)
