"""The shard examples that docs/scale.md shows: the Slurm array script and the Kubernetes
Indexed Job manifest parse, use the fields they rely on, and give the runner a valid config;
the script runs a shard for real against a loopback node."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir

from runner._checks import to_run_config
from runner._config import register
from tests.loopback_node import loopback_node

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "examples" / "slurm" / "shards.sbatch"
MANIFEST = ROOT / "examples" / "k8s" / "shards-job.yaml"
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load(MANIFEST.read_text())
    assert isinstance(loaded, dict)
    return loaded


def container() -> dict[str, Any]:
    containers = manifest()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def env_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec["env"]}


def test_the_manifest_is_an_indexed_job_whose_shards_are_its_completions() -> None:
    job = manifest()
    spec = job["spec"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["completions"], int) and spec["completions"] >= 2
    assert 1 <= spec["parallelism"] <= spec["completions"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    runner = container()
    assert runner["command"] == ["python", "-m", "runner"]
    env = env_of(runner)
    assert env["SHARDS"] == str(spec["completions"])
    assert env["SHARD_INDEX"] == {"fieldRef": {"fieldPath": INDEX_ANNOTATION}}
    args = runner["args"]
    assert "shards=$(SHARDS)" in args
    run_dir = next(a for a in args if a.startswith("hydra.run.dir="))
    assert "$(SHARD_INDEX)" in run_dir  # one run directory per shard, the same on a retry
    mounts = {m["mountPath"] for m in runner["volumeMounts"]}
    assert any(a.startswith("journal_dir=") and a[12:].startswith("/data") for a in args)
    assert "/data" in mounts


def compose_args(args: list[str]) -> None:
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        to_run_config(compose(config_name="config", overrides=args))


def test_the_manifests_runner_arguments_are_a_valid_configuration() -> None:
    env = env_of(container())
    args = [
        re.sub(r"\$\((\w+)\)", lambda m: str(env.get(m[1]) if m[1] == "SHARDS" else 0), a)
        for a in container()["args"]
        if not a.startswith("hydra.")
    ]
    compose_args(args)


def sbatch_line(option: str) -> str:
    found = re.search(rf"^#SBATCH --{option}=(\S+)", SBATCH.read_text(), re.M)
    assert found is not None, option
    return found[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_slurm_script_parses_and_its_array_matches_its_shard_count() -> None:
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    first, last = sbatch_line("array").split("-")
    shards = re.search(r"^SHARDS=\$\{SHARDS:-(\d+)\}", SBATCH.read_text(), re.M)
    assert shards is not None
    assert (int(first), int(last) + 1) == (0, int(shards[1]))  # 0-based: 0..N-1
    assert '"shards=$SHARDS"' in SBATCH.read_text()
    assert "hydra.run.dir=outputs/runs/$RUN/shard-$SLURM_ARRAY_TASK_ID" in SBATCH.read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_slurm_script_runs_its_arrays_shard_against_the_inventory(tmp_path: Path) -> None:
    with loopback_node() as node:
        inventory = tmp_path / "inventory.py"
        inventory.write_text(
            f"ts_servers = [('n0', {{'node_address': '127.0.0.1', 'node_port': {node.port}}})]\n"
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMP"))},
            "SLURM_ARRAY_TASK_ID": "1",
            "SLURM_ARRAY_TASK_COUNT": "4",
            "SLURM_SUBMIT_DIR": str(tmp_path),
            "INVENTORY": str(inventory),
            "PYTHON": sys.executable,
            "PYTHONPATH": str(ROOT),
        }
        extra = ["shard_nodes=share", "engine.slots=4", f"prompts_dir={ROOT / 'prompts'}"]
        proc = subprocess.run(
            ["bash", str(SBATCH), *extra],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        sent = sum(node.seen.values())
    run = tmp_path / "outputs" / "runs" / "movie_details-shards" / "shard-1"
    report = json.loads((run / "report.json").read_text())
    assert report["shard"]["source"] == "SLURM_ARRAY_TASK_ID=1, shards=4"
    assert report["shard"]["items"] == sent == report["totals"]["ok"]
    assert (tmp_path / "outputs" / "journal" / "movie_details.shard-1-of-4.jsonl").exists()
