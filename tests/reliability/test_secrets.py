"""API keys and SSH key paths never appear in what a run leaves behind: logs, results.jsonl,
report.json, the consolidated output, the journal, Hydra's saved config, progress and
summary output — not even when a hostile node quotes the request's headers in its errors.

(The node's own key enforcement and binding, with the real model: ``test_real_nodes.py``.)
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from tests.reliability._harness import FAST_ENGINE, Cluster, FakeNode, Job, Ledger

KEY_VARIABLE = "RELIABILITY_NODE_KEY"
SSH_KEY = "/root/.ssh/reliability-secret-id_ed25519"


def leaks(secret: str, job: Job, *procs: subprocess.CompletedProcess[str]) -> list[str]:
    """Every artifact of the job (files under its folder, except the fake node's own logs,
    and the output of ``procs``) that contains ``secret``."""
    found = []
    for path in sorted(job.folder.rglob("*")):
        if path.is_file() and secret.encode() in path.read_bytes():
            found.append(str(path.relative_to(job.folder)))
    for i, proc in enumerate(procs):
        if secret in proc.stdout + proc.stderr:
            found.append(f"output of run {i}")
    return found


@pytest.fixture
def key() -> str:
    return f"sk-reliability-{secrets.token_hex(12)}"


def guarded_node(cluster: Cluster, key: str, **behaviour: object) -> FakeNode:
    """A node that requires ``key`` and quotes the Authorization header in its errors."""
    return cluster.add(
        "guarded",
        behaviour={"echo_auth": True, **behaviour},
        api_key_env=KEY_VARIABLE,
        env={KEY_VARIABLE: key},
    )


def test_a_key_quoted_back_by_a_hostile_node_is_in_no_artifact_of_the_run(
    cluster: Cluster, job: Job, key: str, ledger: Ledger, tmp_path: Path
) -> None:
    node = guarded_node(cluster, key, faults=["500", "429", "500"])
    inventory = tmp_path / "inventory.py"  # an input: outside the job's artifacts
    inventory.write_text(
        "ts_servers = [('n1', {"
        f"'node_address': '127.0.0.1', 'node_port': {node.port}, "
        f"'api_key_env': '{KEY_VARIABLE}', 'ssh_user': 'ubuntu', 'ssh_key': '{SSH_KEY}'"
        "})]\n"
    )
    lab = ["cluster=lab", f"cluster.inventory={inventory}", *FAST_ENGINE, "progress=rich"]
    env = {KEY_VARIABLE: key}
    runs = [
        job.run("run", *lab, env=env),
        job.run("dry", *lab, "dry_run=true", env=env),
        job.run("probe", *lab, "job=probe", env=env),
    ]
    assert [p.returncode for p in runs] == [0, 0, 0], runs[0].stderr[-2000:]
    assert not leaks(key, job, *runs)
    results = (job.run_dir("run") / "results.jsonl").read_text()
    assert "[api key]" in results, "the hostile node's errors were not exercised"
    assert not leaks(SSH_KEY, job, *runs)
    assert not leaks(SSH_KEY.rsplit("/", 1)[1], job, *runs)
    ledger.add("security", "key quoted back in 500/429 bodies; ssh_key in inventory", leaks=0)


def test_a_wrong_key_stops_the_run_naming_the_401_without_either_key(
    cluster: Cluster, job: Job, key: str, ledger: Ledger
) -> None:
    guarded_node(cluster, key)
    wrong = f"sk-wrong-{secrets.token_hex(12)}"
    proc = job.run(
        "run",
        *cluster.overrides(api_key_env=KEY_VARIABLE),
        *FAST_ENGINE,
        "engine.no_node_timeout=2",
        env={KEY_VARIABLE: wrong},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]  # every request refused: a bad setting
    said = " ".join(proc.stderr.split())
    assert "refused with HTTP 401" in said and "Bearer" in said
    assert not leaks(wrong, job, proc) and not leaks(key, job, proc)
    ledger.add("security", "wrong key: exit 2 naming HTTP 401", leaks=0)


def test_a_static_node_without_its_key_variable_is_refused_before_sending(
    cluster: Cluster, job: Job, key: str
) -> None:
    node = guarded_node(cluster, key)
    proc = job.run("run", *cluster.overrides(api_key_env="RELIABILITY_NO_SUCH_KEY"))
    assert proc.returncode == 2
    assert "RELIABILITY_NO_SUCH_KEY" in proc.stderr and not node.requests()


def test_keys_are_never_put_on_a_command_line_or_in_a_saved_config(
    cluster: Cluster, job: Job, key: str
) -> None:
    """The key travels in the environment: Hydra's saved config and overrides name only the
    variable."""
    guarded_node(cluster, key)
    proc = job.run("run", *cluster.overrides(api_key_env=KEY_VARIABLE), env={KEY_VARIABLE: key})
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = (job.run_dir("run") / ".hydra" / "config.yaml").read_text()
    assert KEY_VARIABLE in saved and key not in saved
    assert not leaks(key, job, proc)
