"""Reading the nodes from a pyinfra inventory.py or the old tool's Ansible INI inventory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runner._errors import ConfigError
from runner._inventory import InventoryHost, ansible_hosts, read_inventory


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


PYINFRA_CASES = {
    "plain names": (
        """
        ts_servers = ["10.0.0.5", "10.0.0.6"]
        """,
        [InventoryHost("10.0.0.5", "10.0.0.5"), InventoryHost("10.0.0.6", "10.0.0.6")],
    ),
    "tuples with data": (
        """
        ts_servers = [
            ("gpu-a", {"ssh_hostname": "10.0.0.5", "ssh_user": "ubuntu", "node_port": 9000,
                       "slots": 2, "api_key_env": "NODE_KEY"}),
            ("10.0.0.6", {"n_threads": 8}),
        ]
        """,
        [
            InventoryHost("gpu-a", "10.0.0.5", 9000, 2, "NODE_KEY"),
            InventoryHost("10.0.0.6", "10.0.0.6"),
        ],
    ),
    "group data under host data": (
        """
        ts_servers = (
            [("a", {"ssh_hostname": "10.0.0.5"}), ("b", {"ssh_hostname": "10.0.0.6",
                                                          "node_port": 8090})],
            {"node_port": 8089, "slots": 3},
        )
        """,
        [InventoryHost("a", "10.0.0.5", 8089, 3), InventoryHost("b", "10.0.0.6", 8090, 3)],
    ),
    "all group data lowest": (
        """
        all = ([], {"node_port": 7000, "slots": 4})
        ts_servers = ([("a", {"slots": 1})], {"node_port": 7001})
        """,
        [InventoryHost("a", "a", 7001, 1)],
    ),
    "node_address beats ssh_hostname": (
        """
        ts_servers = [("a", {"ssh_hostname": "bastion.example", "node_address": "10.1.0.5"})]
        """,
        [InventoryHost("a", "10.1.0.5")],
    ),
    "other groups and private names are ignored": (
        """
        import os
        _helper = ["not", "a", "group"]
        databases = ["db1"]
        ts_servers = [f"node{i}" for i in range(2)]
        """,
        [InventoryHost("node0", "node0"), InventoryHost("node1", "node1")],
    ),
    "connector hosts": (
        """
        ts_servers = ["@ssh/10.0.0.9", ("@local", {"node_port": 8100})]
        """,
        [InventoryHost("10.0.0.9", "10.0.0.9"), InventoryHost("local", "127.0.0.1", 8100)],
    ),
    "port as a string and an IPv6 address": (
        """
        ts_servers = [("v6", {"ssh_hostname": "[fd00::5]", "node_port": "8088"})]
        """,
        [InventoryHost("v6", "fd00::5", 8088)],
    ),
}


@pytest.mark.parametrize(
    ("text", "expected"), list(PYINFRA_CASES.values()), ids=list(PYINFRA_CASES)
)
def test_pyinfra_inventory_hosts(tmp_path: Path, text: str, expected: list[InventoryHost]) -> None:
    path = write(tmp_path, "inventory.py", text)
    assert read_inventory(path) == expected


def test_pyinfra_inventory_runs_in_its_own_namespace(tmp_path: Path) -> None:
    """Two inventories read one after the other do not see each other's names."""
    first = write(tmp_path, "first.py", "leak = 1\nts_servers = ['a']\n")
    second = write(tmp_path, "second.py", "ts_servers = ['b'] if 'leak' not in dir() else []\n")
    assert read_inventory(first) == [InventoryHost("a", "a")]
    assert read_inventory(second) == [InventoryHost("b", "b")]


def test_another_group_can_be_named(tmp_path: Path) -> None:
    path = write(tmp_path, "inventory.py", "ts_servers = ['a']\nstaging = ['b']\n")
    assert read_inventory(path, group="staging") == [InventoryHost("b", "b")]


INI_OLD_TOOL = """
    # the old tool's inventory
    [ts_servers]
    node1 ansible_host=203.0.113.10 ansible_user=ubuntu
    node2 ansible_host=203.0.113.11 ansible_user=ubuntu slots=2

    [all:vars]
    ansible_ssh_private_key_file=~/.ssh/cluster.pem
    """

INI_CASES = {
    "the real address, not the alias": (
        INI_OLD_TOOL,
        [
            InventoryHost("node1", "203.0.113.10"),
            InventoryHost("node2", "203.0.113.11", slots=2),
        ],
    ),
    "no ansible_host: the alias is the address": (
        """
        [ts_servers]
        10.0.0.5
        gpu.example.org node_port=9000
        """,
        [
            InventoryHost("10.0.0.5", "10.0.0.5"),
            InventoryHost("gpu.example.org", "gpu.example.org", 9000),
        ],
    ),
    "group vars and all vars, host line wins": (
        """
        [all:vars]
        node_port = 7000
        [ts_servers:vars]
        node_port=7001
        slots = 2
        [ts_servers]
        a ansible_host=10.0.0.1
        b ansible_host=10.0.0.2 node_port=7002
        """,
        [InventoryHost("a", "10.0.0.1", 7001, 2), InventoryHost("b", "10.0.0.2", 7002, 2)],
    ),
    "children groups": (
        """
        [east]
        e1 ansible_host=10.0.1.1
        [west]
        w1 ansible_host=10.0.2.1
        [west:vars]
        slots=4
        [ts_servers:children]
        east
        west
        """,
        [InventoryHost("e1", "10.0.1.1"), InventoryHost("w1", "10.0.2.1", slots=4)],
    ),
    "numeric host ranges": (
        """
        [ts_servers]
        node[08:10].example
        """,
        [
            InventoryHost("node08.example", "node08.example"),
            InventoryHost("node09.example", "node09.example"),
            InventoryHost("node10.example", "node10.example"),
        ],
    ),
    "quoted values and comments": (
        """
        ; semicolon comment
        [ts_servers]
        a ansible_host="10.0.0.7" api_key_env='KEY_A'  # trailing comment
        """,
        [InventoryHost("a", "10.0.0.7", api_key_env="KEY_A")],
    ),
}


@pytest.mark.parametrize("suffix", [".ini", ""])
@pytest.mark.parametrize(("text", "expected"), list(INI_CASES.values()), ids=list(INI_CASES))
def test_ansible_ini_hosts(
    tmp_path: Path, suffix: str, text: str, expected: list[InventoryHost]
) -> None:
    path = write(tmp_path, f"hosts{suffix}", text)
    assert read_inventory(path) == expected


def test_ansible_hosts_keep_every_var_for_migration(tmp_path: Path) -> None:
    path = write(tmp_path, "old.ini", INI_OLD_TOOL)
    assert ansible_hosts(path, group="ts_servers") == [
        (
            "node1",
            {
                "ansible_ssh_private_key_file": "~/.ssh/cluster.pem",
                "ansible_host": "203.0.113.10",
                "ansible_user": "ubuntu",
            },
        ),
        (
            "node2",
            {
                "ansible_ssh_private_key_file": "~/.ssh/cluster.pem",
                "ansible_host": "203.0.113.11",
                "ansible_user": "ubuntu",
                "slots": "2",
            },
        ),
    ]


ERROR_CASES = {
    "syntax error": ("inventory.py", "ts_servers = [\n", "line 1: syntax error"),
    "the file raises": ("inventory.py", "ts_servers = [1 / 0]\n", "raised ZeroDivisionError"),
    "no such group": ("inventory.py", "web = ['a']\n", "no group 'ts_servers' (groups found: web)"),
    "empty group": ("inventory.py", "ts_servers = []\n", "group 'ts_servers' has no hosts"),
    "bad host entry": ("inventory.py", "ts_servers = [('a', 'b', 'c')]\n", "ts_servers[0]"),
    "bad group shape": ("inventory.py", "ts_servers = ('a', 'b')\n", "(hosts, data) tuple"),
    "port out of range": (
        "inventory.py",
        "ts_servers = [('a', {'node_port': 70000})]\n",
        "host 'a': node_port 70000 is not a port number",
    ),
    "port not a number": (
        "inventory.py",
        "ts_servers = [('a', {'node_port': 'http'})]\n",
        "node_port 'http'",
    ),
    "port is a bool": (
        "inventory.py",
        "ts_servers = [('a', {'node_port': True})]\n",
        "node_port True",
    ),
    "slots zero": ("inventory.py", "ts_servers = [('a', {'slots': 0})]\n", "slots 0"),
    "bad key name": (
        "inventory.py",
        "ts_servers = [('a', {'api_key_env': 'my key'})]\n",
        "api_key_env 'my key'",
    ),
    "duplicate host": ("inventory.py", "ts_servers = ['a', 'a']\n", "'a' is listed twice"),
    "docker connector": (
        "inventory.py",
        "ts_servers = ['@docker/ubuntu']\n",
        "'@docker/ubuntu' uses a pyinfra connector",
    ),
    "ini: no such group": ("hosts.ini", "[web]\na\n", "no group 'ts_servers' (groups found:"),
    "ini: empty group": ("hosts.ini", "[ts_servers]\n", "group 'ts_servers' has no hosts"),
    "ini: bad var": ("hosts.ini", "[ts_servers]\na ansible_host\n", "line 2: expected key=value"),
    "ini: bad header": ("hosts.ini", "[ts_servers\na\n", "line 1: malformed section header"),
    "ini: bad port": ("hosts.ini", "[ts_servers]\na node_port=80a\n", "node_port '80a'"),
    "ini: unclosed quote": ("hosts.ini", "[ts_servers]\na ansible_host='x\n", "line 2:"),
    "ini: missing child": (
        "hosts.ini",
        "[ts_servers:children]\nnowhere\n",
        "missing child group 'nowhere'",
    ),
    "yaml is not supported": ("hosts.yml", "all: {}\n", "unknown inventory format '.yml'"),
}


@pytest.mark.parametrize(
    ("filename", "text", "message"), list(ERROR_CASES.values()), ids=list(ERROR_CASES)
)
def test_unusable_inventory_is_one_line_naming_the_file(
    tmp_path: Path, filename: str, text: str, message: str
) -> None:
    path = write(tmp_path, filename, text)
    with pytest.raises(ConfigError) as caught:
        read_inventory(path)
    text_of_error = str(caught.value)
    assert "\n" not in text_of_error
    assert text_of_error.startswith(str(path))
    assert message in text_of_error


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.py: no such file"):
        read_inventory(tmp_path / "nope.py")


def test_the_repository_example_inventory_reads() -> None:
    """The example inventory.py at the repository root lists ts_servers the runner can use."""
    root = Path(__file__).resolve().parents[1]
    hosts = read_inventory(root / "inventory.py")
    assert hosts
    assert all(1 <= host.port <= 65535 for host in hosts)


def test_an_inventory_address_given_as_a_url_is_refused_saying_what_to_give(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path, "inventory.py", "ts_servers = [('n1', {'node_address': 'http://10.0.0.5:8080'})]"
    )
    with pytest.raises(ConfigError, match="is a URL or path, not a host name or IP address"):
        read_inventory(path, group="ts_servers")
