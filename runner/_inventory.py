"""Where a cluster's nodes are listed: the inventory that deployed them.

One file says where the nodes are, for pyinfra (which deploys them) and for the runner (which
sends them work). :func:`read_inventory` reads two formats:

- a **pyinfra inventory** (``*.py``): module-level groups, each a list of hosts or a
  ``(hosts, group_data)`` tuple; a host is ``"name"`` or ``("name", host_data)``. The file is
  the user's own Python, executed in a namespace of its own. pyinfra itself is not imported.
- the old tool's **Ansible INI inventory** (``*.ini``, ``*.cfg`` or no extension):
  ``[ts_servers]`` lines ``alias ansible_host=1.2.3.4 ansible_user=ubuntu``, ``[group:vars]``,
  ``[all:vars]`` and ``[group:children]``. The node's address is ``ansible_host`` (the old tool
  used the alias, which is only a name).

From each host's data (host data over group data over the ``all`` group's data) the runner
takes the address (``node_address``, else ``ssh_hostname`` / ``ansible_host``, else the host
name), ``node_port`` (default 8088), ``slots``, ``api_key_env`` and ``price_per_hour`` (what
the node costs per hour, a number ≥ 0; INI values are parsed as one). Every problem raises
:class:`~runner._errors.ConfigError` with one line naming the file and what is wrong.
"""

from __future__ import annotations

import math
import re
import runpy
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import ConfigError
from ._files import read_text_file

DEFAULT_GROUP = "ts_servers"
DEFAULT_NODE_PORT = 8088
"""The port the original cluster scripts used, and the deploys' default ``node_port``."""

PYINFRA_SUFFIXES = frozenset({".py"})
INI_SUFFIXES = frozenset({"", ".ini", ".cfg", ".hosts", ".inventory"})

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RANGE = re.compile(r"\[([0-9]+|[a-z]):([0-9]+|[a-z])(?::([0-9]+))?\]")


@dataclass(frozen=True)
class InventoryHost:
    """One node as listed in an inventory.

    Attributes:
        name: the host's name in the inventory (the alias in an Ansible INI).
        address: where the node listens (an IP address or a DNS name).
        port: the node's TCP port.
        slots: requests in flight on this node, or None for the engine's default.
        api_key_env: the environment variable holding its Bearer key, if it needs one.
        price_per_hour: what the node costs per hour (≥ 0, in the user's own currency), or
            None when not given.
    """

    name: str
    address: str
    port: int = DEFAULT_NODE_PORT
    slots: int | None = None
    api_key_env: str | None = None
    price_per_hour: float | None = None


def read_inventory(path: str | Path, *, group: str = DEFAULT_GROUP) -> list[InventoryHost]:
    """Read the hosts of one group from a pyinfra inventory or an Ansible INI inventory.

    Args:
        path: the inventory file; ``.py`` is read as pyinfra's format, ``.ini``, ``.cfg`` or
            no extension as Ansible's INI format.
        group: the group whose hosts are the nodes.

    Returns:
        The group's hosts, in the order they are listed.

    Raises:
        ConfigError: the file is missing or unreadable, does not parse, has no such group or
            no hosts in it, or a host has an unusable address, port, slots, key name or
            price per hour.
    """
    source = Path(path)
    if not source.is_file():
        problem = "is a directory" if source.is_dir() else "no such file"
        raise ConfigError(f"{source}: {problem} (the inventory listing the nodes)")
    if source.suffix in PYINFRA_SUFFIXES:
        entries = pyinfra_hosts(source, group=group)
    elif source.suffix in INI_SUFFIXES:
        entries = ansible_hosts(source, group=group)
    else:
        raise ConfigError(
            f"{source}: unknown inventory format '{source.suffix}' "
            "(use a pyinfra inventory .py or an Ansible INI file)"
        )
    hosts = [_node(name, data, source=source) for name, data in entries]
    seen: set[str] = set()
    for host in hosts:
        if host.name in seen:
            raise ConfigError(f"{source}: host '{host.name}' is listed twice in '{group}'")
        seen.add(host.name)
    return hosts


# --- pyinfra inventories ----------------------------------------------------------------------


def pyinfra_hosts(source: Path, *, group: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``(name, data)`` pairs of one group of a pyinfra inventory file.

    The data of each host is merged as pyinfra does: host data over the group's data over the
    ``all`` group's data.

    Raises:
        ConfigError: the file cannot be executed, has no such group, or the group is empty or
            malformed.
    """
    namespace = _execute(source)
    groups = {
        key: value
        for key, value in namespace.items()
        if not key.startswith("_") and isinstance(value, list | tuple)
    }
    if group not in groups:
        known = ", ".join(sorted(groups)) or "none"
        raise ConfigError(f"{source}: no group '{group}' (groups found: {known})")
    hosts, group_data = _split_group(groups[group], source=source, group=group)
    _, all_data = (
        _split_group(groups["all"], source=source, group="all") if "all" in groups else ([], {})
    )
    if not hosts:
        raise ConfigError(f"{source}: group '{group}' has no hosts")
    entries = []
    for index, entry in enumerate(hosts):
        name, host_data = _split_host(entry, source=source, where=f"{group}[{index}]")
        entries.append((name, {**all_data, **group_data, **host_data}))
    return entries


def _execute(source: Path) -> dict[str, Any]:
    try:
        return runpy.run_path(str(source), run_name="__inventory__")
    except SyntaxError as exc:
        raise ConfigError(f"{source}: line {exc.lineno}: syntax error: {exc.msg}") from exc
    except Exception as exc:  # the user's own code: any error it raises is a config error
        raise ConfigError(
            f"{source}: running the inventory raised {type(exc).__name__}: {_one_line(exc)}"
        ) from exc


def _split_group(value: Any, *, source: Path, group: str) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(value, list):
        return value, {}
    if len(value) == 2 and isinstance(value[0], list) and isinstance(value[1], Mapping):
        return value[0], dict(value[1])
    raise ConfigError(f"{source}: group '{group}' must be a list of hosts or a (hosts, data) tuple")


def _split_host(entry: Any, *, source: Path, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        name, data = entry, {}
    elif (
        isinstance(entry, tuple)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], Mapping)
    ):
        name, data = entry[0], dict(entry[1])
    else:
        raise ConfigError(
            f"{source}: {where}: a host is a name or a (name, data) tuple, got {_show(entry)}"
        )
    if not name.strip():
        raise ConfigError(f"{source}: {where}: empty host name")
    if name.startswith("@"):
        name, data = _connector_host(name, data, source=source, where=where)
    return name, data


def _connector_host(
    name: str, data: dict[str, Any], *, source: Path, where: str
) -> tuple[str, dict[str, Any]]:
    """``@ssh/host`` is an SSH host; ``@local`` is the controller itself."""
    if name.startswith("@ssh/"):
        bare = name.removeprefix("@ssh/")
        return bare, {"ssh_hostname": bare, **data}
    if name == "@local":
        return "local", {"ssh_hostname": "127.0.0.1", **data}
    raise ConfigError(
        f"{source}: {where}: host '{name}' uses a pyinfra connector the runner cannot reach; "
        "set node_address in its data"
    )


# --- Ansible INI inventories ------------------------------------------------------------------


@dataclass
class _IniGroup:
    hosts: dict[str, dict[str, str]] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


def ansible_hosts(source: Path, *, group: str) -> list[tuple[str, dict[str, str]]]:
    """The ``(alias, vars)`` pairs of one group of an Ansible INI inventory.

    Each host's vars are merged as Ansible does for a group and its children: ``[all:vars]``,
    then the group's vars, then a child group's vars, then the vars on the host's line.

    Raises:
        ConfigError: the file cannot be read or parsed, has no such group, or the group has
            no hosts.
    """
    text = read_text_file(source, what="inventory file")
    groups = parse_ansible_ini(text, source=source)
    if group not in groups:
        known = ", ".join(sorted(g for g in groups if g != "all")) or "none"
        raise ConfigError(f"{source}: no group '{group}' (groups found: {known})")
    base = groups["all"].vars if "all" in groups else {}
    merged: dict[str, dict[str, str]] = {}
    for alias, host_vars in _walk_group(groups, group, source=source, trail=()):
        merged.setdefault(alias, dict(base)).update(host_vars)
    if not merged:
        raise ConfigError(f"{source}: group '{group}' has no hosts")
    return list(merged.items())


def _walk_group(
    groups: dict[str, _IniGroup], name: str, *, source: Path, trail: tuple[str, ...]
) -> Iterator[tuple[str, dict[str, str]]]:
    if name in trail:
        raise ConfigError(f"{source}: group '{name}' contains itself ({' > '.join(trail)})")
    if name not in groups:
        raise ConfigError(f"{source}: group '{trail[-1]}' names a missing child group '{name}'")
    group = groups[name]
    for alias, host_vars in group.hosts.items():
        yield alias, {**group.vars, **host_vars}
    for child in group.children:
        for alias, host_vars in _walk_group(groups, child, source=source, trail=(*trail, name)):
            yield alias, {**group.vars, **host_vars}


def parse_ansible_ini(text: str, *, source: Path) -> dict[str, _IniGroup]:
    """Parse an Ansible INI inventory into its groups (hosts, vars, children)."""
    groups: dict[str, _IniGroup] = {"ungrouped": _IniGroup()}
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = f"{source}: line {number}"
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ConfigError(f"{where}: malformed section header {line!r}")
            group, _, kind = line[1:-1].strip().partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise ConfigError(f"{where}: unknown section kind ':{kind}'")
            groups.setdefault(group, _IniGroup())
            continue
        if kind == "vars":
            key, value = _ini_var(line, where=where)
            groups[group].vars[key] = value
        elif kind == "children":
            groups[group].children.append(line.split()[0])
        else:
            alias, host_vars = _ini_host(line, where=where)
            for name in _expand_range(alias, where=where):
                groups[group].hosts.setdefault(name, {}).update(host_vars)
    return groups


def _ini_host(line: str, *, where: str) -> tuple[str, dict[str, str]]:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if not tokens:
        raise ConfigError(f"{where}: expected a host name")
    alias, host_vars = tokens[0], {}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ConfigError(f"{where}: expected key=value after the host name, got {token!r}")
        host_vars[key] = value
    return alias, host_vars


def _ini_var(line: str, *, where: str) -> tuple[str, str]:
    key, sep, value = line.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{where}: expected key=value, got {line!r}")
    try:
        words = shlex.split(value, comments=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return key, " ".join(words)


def _expand_range(alias: str, *, where: str) -> list[str]:
    """Ansible's host patterns: ``node[01:03]`` → node01, node02, node03; ``[a:c]`` too."""
    match = _RANGE.search(alias)
    if match is None:
        return [alias]
    start, end, step_text = match.groups()
    step = int(step_text or 1)
    head, tail = alias[: match.start()], alias[match.end() :]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        values = [str(n).zfill(width) for n in range(int(start), int(end) + 1, step)]
    elif start.isalpha() and end.isalpha():
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise ConfigError(f"{where}: host range [{start}:{end}] mixes letters and numbers")
    if not values or step < 1:
        raise ConfigError(f"{where}: host range in {alias!r} is empty")
    return [name for value in values for name in _expand_range(head + value + tail, where=where)]


# --- from host data to a node -----------------------------------------------------------------


def _node(name: str, data: Mapping[str, Any], *, source: Path) -> InventoryHost:
    where = f"{source}: host '{name}'"
    address = data.get("node_address") or data.get("ssh_hostname") or data.get("ansible_host")
    address = name if address is None else address
    if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in address):
        raise ConfigError(f"{where}: address {_show(address)} is not a host name or IP address")
    if "/" in address:
        raise ConfigError(
            f"{where}: address {_show(address)} is a URL or path, not a host name or IP "
            "address: give the host in node_address and the port in node_port"
        )
    port = _integer(data.get("node_port", DEFAULT_NODE_PORT), 1, 65535)
    if port is None:
        raise ConfigError(
            f"{where}: node_port {_show(data.get('node_port'))} is not a port number (1-65535)"
        )
    slots = None
    if data.get("slots") is not None:
        slots = _integer(data["slots"], 1, 1 << 16)
        if slots is None:
            raise ConfigError(f"{where}: slots {_show(data['slots'])} is not a whole number ≥ 1")
    key_env = data.get("api_key_env") or None
    if key_env is not None and not (isinstance(key_env, str) and _ENV_NAME.fullmatch(key_env)):
        raise ConfigError(
            f"{where}: api_key_env {_show(key_env)} is not an environment variable name"
        )
    price = None
    if data.get("price_per_hour") is not None:
        price = _price(data["price_per_hour"])
        if price is None:
            raise ConfigError(
                f"{where}: price_per_hour {_show(data['price_per_hour'])} is not a number ≥ 0"
            )
    return InventoryHost(
        name=name,
        address=address.strip("[]"),
        port=port,
        slots=slots,
        api_key_env=key_env,
        price_per_hour=price,
    )


def _integer(value: Any, low: int, high: int) -> int | None:
    """An int in low..high from an int or a string of digits (INI values are strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and low <= value <= high:
        return value
    return None


def _price(value: Any) -> float | None:
    """A finite float ≥ 0 from an int, a float or a number's text (INI values are strings)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        price = float(value)
    except (ValueError, OverflowError):
        return None
    return price if math.isfinite(price) and price >= 0 else None


def _show(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
