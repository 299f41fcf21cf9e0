"""The Ansible INI → inventory.py migration keeps the real addresses and drops secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path

from deploy.migrate import main, render
from runner._inventory import InventoryHost, read_inventory

OLD = """
[ts_servers]
gpu1 ansible_host=203.0.113.10 ansible_user=ubuntu
gpu2 ansible_host=203.0.113.11 ansible_user=ubuntu node_port=8090 ansible_ssh_pass=hunter2

[all:vars]
ansible_ssh_private_key_file=~/.ssh/cluster.pem
ansible_python_interpreter=/usr/bin/python3
"""


def migrated(tmp_path: Path) -> Path:
    old = tmp_path / "old.ini"
    old.write_text(textwrap.dedent(OLD))
    new = tmp_path / "inventory.py"
    new.write_text(render(old))
    return new


def test_migrated_inventory_has_the_real_addresses(tmp_path: Path) -> None:
    assert read_inventory(migrated(tmp_path)) == [
        InventoryHost("gpu1", "203.0.113.10"),
        InventoryHost("gpu2", "203.0.113.11", 8090),
    ]


def test_shared_vars_go_to_group_data_and_secrets_are_dropped(tmp_path: Path) -> None:
    text = migrated(tmp_path).read_text()
    assert "hunter2" not in text
    assert "ansible_ssh_pass (a secret" in text
    assert "'ssh_key': '~/.ssh/cluster.pem'" in text
    assert "'ssh_user': 'ubuntu'" in text and "'_sudo': True" in text
    assert "'ts_server_sha256': None" in text
    assert text.count("ssh_key") == 1  # once, in the group's data


def test_missing_ini_is_one_line_on_stderr(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([str(tmp_path / "nope.ini")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
