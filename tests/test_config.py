"""Config composition: every group option composes; typos, wrong types, unset required values
and out-of-range numbers fail with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from runner._checks import to_run_config
from runner._config import (
    AnswerFormat,
    ClusterKind,
    JobKind,
    LocalServer,
    OutputShape,
    RunConfig,
    register,
)
from runner._errors import ConfigError
from runner._request import Api, Style

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def load(*overrides: str) -> RunConfig:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return to_run_config(cfg)


@pytest.mark.parametrize("cluster", options("cluster"))
def test_every_cluster_option_composes(cluster: str) -> None:
    cfg = load("job=movie_details", f"cluster={cluster}")
    assert cfg.cluster.name == cluster


@pytest.mark.parametrize("model", options("model"))
def test_every_model_option_composes(model: str) -> None:
    cfg = load("job=movie_details", f"model={model}")
    assert cfg.model.name == model
    assert isinstance(cfg.model.api, Api) and isinstance(cfg.model.style, Style)


@pytest.mark.parametrize("job", options("job"))
def test_every_job_option_composes(job: str) -> None:
    cfg = load(f"job={job}")
    assert cfg.job.name == job


def test_defaults_are_the_local_cluster_and_the_small_model() -> None:
    cfg = load("job=movie_details")
    assert cfg.cluster.kind is ClusterKind.local
    assert cfg.cluster.local.server is LocalServer.textsynth
    assert cfg.model.engine == "smollm2"
    assert cfg.job.answer is AnswerFormat.json and cfg.job.output.shape is OutputShape.list


def test_lab_cluster_reads_the_inventory() -> None:
    cfg = load("job=movie_synopsis", "cluster=lab", "cluster.inventory=other.py")
    assert cfg.cluster.kind is ClusterKind.inventory
    assert cfg.cluster.inventory == "other.py" and cfg.cluster.group == "ts_servers"


def test_probe_job_is_a_probe() -> None:
    assert load("job=probe").job.kind is JobKind.probe


def test_inline_nodes_compose_with_slots_and_keys() -> None:
    cfg = load(
        "job=movie_details",
        "cluster=static",
        "cluster.nodes=[{address: '127.0.0.1:8088', slots: 2, api_key_env: KEY}]",
    )
    assert cfg.cluster.nodes[0].address == "127.0.0.1:8088"
    assert cfg.cluster.nodes[0].slots == 2


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["job=movie_details", "engine.slotz=2"], "slotz"),
        (["job=movie_details", "engine.slots=abc"], "slots"),
        (["job=movie_details", "model.api=grpc"], "api"),
        (["job=movie_details", "cluster=nowhere"], "cluster/nowhere"),
        (["job=movie_detials"], "job/movie_detials"),
        (["job=movie_details", "job.input.formt=csv"], "formt"),
        ([], "job"),
    ],
)
def test_typos_and_wrong_types_fail_at_composition(overrides: list[str], fragment: str) -> None:
    with pytest.raises((HydraException, OmegaConfBaseException)) as info:
        load(*overrides)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["engine.slots=0"], "engine.slots must be at least 1, got 0"),
        (["engine.stall_timeout=-1"], "engine.stall_timeout must be greater than 0"),
        (["engine.json_attempts=0"], "engine.json_attempts must be at least 1"),
        (["engine.startup_timeout=0"], "engine.startup_timeout must be greater than 0"),
        (["engine.busy_retries=-1"], "engine.busy_retries must not be negative"),
        (["model.top_p=1.5"], "model.top_p must be in (0, 1]"),
        (["cluster.local.nodes=-2"], "cluster.local.nodes must not be negative"),
        (["job.max_tokens=0"], "job.max_tokens must be at least 1"),
        (["job.input.path=???"], "missing required value 'job.input.path'"),
        (["model.engine=???"], "missing required value 'model.engine'"),
        (["cluster=lab", "cluster.inventory=null"], "cluster.inventory"),
    ],
)
def test_out_of_range_and_unset_values_fail_with_the_key(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load("job=movie_details", *overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
