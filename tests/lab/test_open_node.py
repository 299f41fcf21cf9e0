"""The open node deployed over SSH to two lab hosts: config, service, answers, idempotence."""

from __future__ import annotations

import json
import time

import json5

from ._lab import CTL_ADDRESS, HOSTS, Lab
from .conftest import OPEN_NODE_HOSTS, OpenNodes, pyinfra

CFG = "/opt/ts_node/ts_server.cfg"
PIDFILE = "/opt/ts_node/run/ts_node.pid"


def completion(lab: Lab, host: str, *, port: int = 8088, engine: str = "smollm2") -> dict:
    result = lab.in_ctl(
        "curl",
        "-sS",
        "-f",
        "-m",
        "60",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"prompt": "Hello", "max_tokens": 1}),
        f"http://{HOSTS[host]}:{port}/v1/engines/{engine}/completions",
        timeout=90,
    )
    return json.loads(result.stdout)


def node_pid(lab: Lab, host: str) -> int:
    """The node process (the supervisor's child)."""
    return int(lab.ssh(host, f'pgrep -P "$(cat {PIDFILE})"', timeout=30).stdout.split()[0])


def test_first_deploy_changes_both_hosts_without_errors(open_nodes: OpenNodes) -> None:
    totals = open_nodes.first.totals()
    assert totals["changed"] > 0 and totals["error"] == 0, open_nodes.first.explain()


def test_config_is_rendered_for_each_host(lab: Lab, open_nodes: OpenNodes) -> None:
    for host in OPEN_NODE_HOSTS:
        cfg = json5.loads(lab.ssh(host, f"cat {CFG}").stdout)
        assert cfg == {
            "models": [{"name": "smollm2", "filename": "@smollm2"}],
            "n_threads": 1,
            "n_parallel": 2,
            "local_port": 8088,
            "bind_addr": "0.0.0.0",
            "log_filename": "/opt/ts_node/log/ts_node.log",
            "log_start": True,
        }
        assert lab.ssh(host, "hostname").stdout.strip() == host
        assert lab.ssh(host, f"stat -c '%U:%G %a' {CFG}").stdout.split() == ["root:ts_node", "640"]


def test_nodes_answer_the_controller(lab: Lab, open_nodes: OpenNodes) -> None:
    for host in OPEN_NODE_HOSTS:
        answer = completion(lab, host)
        assert isinstance(answer["text"], str)
        health = lab.in_ctl("curl", "-sS", "-f", "-m", "10", f"http://{HOSTS[host]}:8088/health")
        assert json.loads(health.stdout)["slots"] == 2  # n_parallel from the inventory


def test_the_node_runs_from_its_venv_with_the_prebuilt_engine(
    lab: Lab, open_nodes: OpenNodes
) -> None:
    """llama.cpp is the xllamacpp wheel inside the venv; the venv sees no system packages."""
    venv = "/opt/ts_node/venv"
    where = lab.ssh(
        "lab-h1", f"{venv}/bin/python -c 'import xllamacpp; print(xllamacpp.__file__)'"
    ).stdout.strip()
    assert where.startswith(f"{venv}/lib/"), where
    assert (
        "include-system-site-packages = false" in lab.ssh("lab-h1", f"cat {venv}/pyvenv.cfg").stdout
    )
    assert "Check llama.cpp (xllamacpp) finds its shared libraries" in open_nodes.first.output


def test_node_runs_as_its_user_and_logs_started(lab: Lab, open_nodes: OpenNodes) -> None:
    for host in OPEN_NODE_HOSTS:
        pid = node_pid(lab, host)
        assert lab.ssh(host, f"ps -o user= -p {pid}").stdout.strip() == "ts_node"
        assert "Started." in lab.ssh(host, "cat /opt/ts_node/log/console.log").stdout


def test_a_crashed_node_is_started_again(lab: Lab, open_nodes: OpenNodes) -> None:
    host = "lab-h2"
    before = node_pid(lab, host)
    lab.ssh(host, f"kill -KILL {before}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        check = lab.ssh(host, f'pgrep -P "$(cat {PIDFILE})"', check=False, timeout=30)
        if check.returncode == 0 and int(check.stdout.split()[0]) != before:
            break
        time.sleep(1)
    else:
        raise AssertionError("the supervisor did not start the node again within 60 s")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = lab.in_ctl(
            "curl",
            "-s",
            "-f",
            "-m",
            "5",
            f"http://{HOSTS[host]}:8088/health",
            check=False,
            timeout=15,
        )
        if probe.returncode == 0:
            break
        time.sleep(1)
    assert isinstance(completion(lab, host)["text"], str)
    log = lab.ssh(host, "cat /opt/ts_node/log/console.log").stdout
    assert "exited with status" in log


def test_second_run_changes_nothing(lab: Lab, open_nodes: OpenNodes) -> None:
    pids = {host: node_pid(lab, host) for host in OPEN_NODE_HOSTS}
    again = pyinfra(lab, open_nodes.inventory, "deploy/open_node.py")
    assert again.ok, again.explain()
    totals = again.totals()
    assert totals["changed"] == 0 and totals["error"] == 0, again.explain()
    assert {host: node_pid(lab, host) for host in OPEN_NODE_HOSTS} == pids  # not restarted


def test_dry_run_shows_a_change_and_makes_none(lab: Lab, open_nodes: OpenNodes) -> None:
    text = open_nodes.inventory.read_text().replace("'n_threads': 1", "'n_threads': 2")
    changed = open_nodes.inventory.with_name("open_nodes_dry.py")
    changed.write_text(text)
    dry = pyinfra(lab, changed, "deploy/open_node.py", dry=True)
    assert dry.ok, dry.explain()
    assert (
        "Write /opt/ts_node/ts_server.cfg (smollm2, port 8088, 2 threads, 2 sequences at once)"
        in dry.output
    )
    assert "2 (lab-h1, lab-h2)" in dry.output  # the change table: both hosts would change
    for host in OPEN_NODE_HOSTS:
        assert json5.loads(lab.ssh(host, f"cat {CFG}").stdout)["n_threads"] == 1


def test_controller_address_is_the_default_allowed_client(lab: Lab, open_nodes: OpenNodes) -> None:
    rules = lab.ssh("lab-h1", "iptables -w -S ts_node-in").stdout.splitlines()
    assert f"-A ts_node-in -s {CTL_ADDRESS}/32 -j ACCEPT" in rules
