"""Turn the old tool's Ansible INI inventory into a pyinfra ``inventory.py``.

Usage::

    python -m deploy.migrate OLD.ini > inventory.py
    python -m deploy.migrate OLD.ini --group ts_servers > inventory.py

Each host keeps its alias as its name; ``ansible_host`` becomes ``ssh_hostname`` (the node's
real address: the old tool used the alias), ``ansible_user`` ``ssh_user`` (with ``_sudo`` for
a user other than root), ``ansible_port`` ``ssh_port``, the key file ``ssh_key``. Passwords
are not copied. Vars every host shares go into the group's data. Review the output, then
fill in the checksums (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner._errors import ConfigError
from runner._inventory import DEFAULT_GROUP, ansible_hosts

RENAMED = {
    "ansible_host": "ssh_hostname",
    "ansible_ssh_host": "ssh_hostname",
    "ansible_user": "ssh_user",
    "ansible_ssh_user": "ssh_user",
    "ansible_port": "ssh_port",
    "ansible_ssh_port": "ssh_port",
    "ansible_ssh_private_key_file": "ssh_key",
    "ansible_private_key_file": "ssh_key",
    "ansible_become_user": "_sudo_user",
}
SECRET = frozenset(
    {
        "ansible_password",
        "ansible_ssh_pass",
        "ansible_become_password",
        "ansible_become_pass",
        "ansible_sudo_pass",
    }
)
INTEGERS = frozenset({"ssh_port", "node_port", "slots", "n_threads"})
TRUE = frozenset({"true", "yes", "1", "on"})

GROUP_DEFAULTS = {
    "ts_server_version": "2023-07-21",
    "ts_server_sha256": None,
    "ts_server_size": None,
    "model_name": "llama2_13B_chat",
    "model_file": "llama2_13B_chat_q4.bin",
    "model_sha256": None,
    "model_size": None,
}


def host_data(ansible_vars: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """One host's pyinfra data from its Ansible vars; also the names of vars left out."""
    data: dict[str, Any] = {}
    dropped = []
    for key, value in ansible_vars.items():
        if key in SECRET:
            dropped.append(f"{key} (a secret: use an SSH key or an agent)")
        elif key in RENAMED:
            data[RENAMED[key]] = value
        elif key == "ansible_become":
            if value.lower() in TRUE:
                data["_sudo"] = True
        elif key.startswith("ansible_"):
            dropped.append(key)
        else:
            data[key] = value
    for key in INTEGERS & data.keys():
        if str(data[key]).isdigit():
            data[key] = int(data[key])
    if data.get("ssh_user", "root") != "root":
        data.setdefault("_sudo", True)
    return data, dropped


def render(source: Path, *, group: str = DEFAULT_GROUP) -> str:
    """The text of an ``inventory.py`` holding the INI's group.

    Raises:
        ConfigError: the INI cannot be read or has no such group.
    """
    hosts = [(alias, *host_data(values)) for alias, values in ansible_hosts(source, group=group)]
    shared = dict(hosts[0][1])
    for _, data, _ in hosts[1:]:
        shared = {k: v for k, v in shared.items() if k in data and data[k] == v}
    dropped = sorted({name for _, _, names in hosts for name in names})

    lines = [
        f'"""Nodes migrated from {source.name} by `python -m deploy.migrate`.',
        "",
        "Review the hosts, then fill in the checksums: docs/deploy.md says where to find them.",
        '"""',
        "",
    ]
    if dropped:
        lines.append(f"# Not copied from {source.name}: {', '.join(dropped)}.")
        lines.append("")
    lines.append(f"{group} = (")
    lines.append("    [")
    for alias, data, _ in hosts:
        own = {k: v for k, v in data.items() if k not in shared}
        lines.append(f"        ({alias!r}, {own!r}),")
    lines.append("    ],")
    lines.append("    {")
    for key, value in {**GROUP_DEFAULTS, **shared}.items():
        lines.append(f"        {key!r}: {value!r},")
    lines.append("    },")
    lines.append(")")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.migrate",
        description="Print a pyinfra inventory.py made from an Ansible INI inventory.",
    )
    parser.add_argument("ini", type=Path, help="the old tool's inventory (INI)")
    parser.add_argument("--group", default=DEFAULT_GROUP, help="the group of nodes")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(args.ini, group=args.group))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
