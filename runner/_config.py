"""The configuration schema: one dataclass per config group.

The YAML files in ``conf/`` only fill these values. The schemas are registered with Hydra's
ConfigStore (see :func:`register`), so an unknown key, a misspelt option or a wrong type fails
while Hydra composes, before anything is sent. :func:`runner._checks.check` then catches what
Hydra lets through: required values left as ``???`` and values out of range.

The schema is split by concept: the enums of its choice keys are in :mod:`runner._choices`,
the ``cluster`` and ``model`` groups in :mod:`runner._cluster_schema`, the ``job`` group in
:mod:`runner._job_schema`; this module holds the ``engine`` and ``preflight`` settings, the
root :class:`RunConfig`, and re-exports the rest, so every schema name imports from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._choices import (
    AnswerFormat,
    ClusterKind,
    InputFormat,
    JobKind,
    LocalServer,
    OutputFormat,
    OutputShape,
    ProbeSpeed,
    ProgressMode,
    ShardNodes,
    Truncated,
)
from ._cluster_schema import ClusterConfig, LocalClusterConfig, ModelConfig, NodeConfig
from ._job_schema import MAX_CANDIDATES, InputConfig, JobConfig, OutputConfig

__all__ = [
    "MAX_CANDIDATES",
    "AnswerFormat",
    "ClusterConfig",
    "ClusterKind",
    "EngineConfig",
    "InputConfig",
    "InputFormat",
    "JobConfig",
    "JobKind",
    "LocalClusterConfig",
    "LocalServer",
    "ModelConfig",
    "NodeConfig",
    "OutputConfig",
    "OutputFormat",
    "OutputShape",
    "PreflightConfig",
    "ProbeSpeed",
    "ProgressMode",
    "RunConfig",
    "ShardNodes",
    "Truncated",
    "register",
]


@dataclass
class EngineConfig:
    """How work is spread, timed out and retried (the ``engine`` group).

    Attributes:
        slots: requests in flight on a node whose slots are neither set nor reported.
        startup_timeout: seconds each node may take to answer the roll call before the run.
        adaptive: find each node's best in-flight count while the job runs.
        max_slots: the highest in-flight count adaptive mode tries.
        stream: stream answers, so a stall is seen while it happens.
        connect_timeout: seconds to connect to a node.
        stall_timeout: seconds without a byte before a request is abandoned and sent elsewhere.
        request_timeout: seconds for one attempt, start to end.
        max_attempts: node failures (see runner/_policy.py) an item may suffer.
        busy_retries: "busy, come back" answers (503/429 + Retry-After) an item may get.
        retry_timeout: seconds one item may spend being retried.
        backoff_initial: seconds before a second retry, doubling...
        backoff_max: ...up to this many.
        json_attempts: answers per item (each with the next seed) before a json item fails.
        bad_request_stop: stop (exit 2) when the first this many requests get one 4xx (0: never).
        breaker_failures: failures in a row that bench a node.
        probe_interval: seconds before the first probe of a benched node (then doubling).
        probe_timeout: seconds a probe may take.
        no_node_timeout: stop the run (exit 3) when no node could serve for this long.
        hedge: near the end, re-send slow nodes' in-flight items to idle nodes.
        journal_fsync: sync every journal line to disk (survives power loss), in groups off
            the event loop.
    """

    slots: int = 1
    startup_timeout: float = 5.0
    adaptive: bool = False
    max_slots: int = 8
    stream: bool = True
    connect_timeout: float = 5.0
    stall_timeout: float = 60.0
    request_timeout: float = 600.0
    max_attempts: int = 6
    busy_retries: int = 100
    retry_timeout: float = 1800.0
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    json_attempts: int = 4
    bad_request_stop: int = 5
    breaker_failures: int = 3
    probe_interval: float = 5.0
    probe_timeout: float = 30.0
    no_node_timeout: float = 300.0
    hedge: bool = True
    journal_fsync: bool = False


@dataclass
class PreflightConfig:
    """What is measured before a run (and in a dry run) for its estimate: docs/preflight.md.

    Attributes:
        count_tokens: count prompt tokens with the nodes' tokenize, and stop when a prompt
            and max_tokens do not fit the context (job.allow_prompt_truncation).
        sample: count only the prompts whose bound (UTF-8 bytes + 4) and max_tokens do not
            fit the context, and this many others, a sample from which the rest's tokens
            are estimated by their bytes (a job of at most this many is counted whole); null:
            count every prompt.
        probe_speed: when to time a few short answers of the job's first prompts on every
            node, all its slots at once, for the estimate's time and cost: dry_run (only
            there; a real run's ETA measures the run itself), always, never.
        probe_tokens: the most tokens each of those answers may have.
        timeout: seconds the pre-flight may wait on the nodes in all before it gives up (the
            run goes on, without the figures it could not get); rendering the prompts is not
            counted.
    """

    count_tokens: bool = True
    sample: int | None = 300
    probe_speed: ProbeSpeed = ProbeSpeed.dry_run
    probe_tokens: int = 32
    timeout: float = 120.0


@dataclass
class RunConfig:
    """The whole composed configuration.

    Attributes:
        cluster: where the nodes are.
        model: the model the nodes serve.
        job: what to ask.
        engine: how work is spread, timed out and retried.
        preflight: what is measured before sending, for the estimate (tokens, speed).
        dry_run: render every prompt, print the plan and the pre-flight's estimate; send no
            item (the nodes are asked only to tokenize and for the speed probe).
        resume: reuse accepted results of earlier runs of the same work.
        journal_dir: where accepted results of every run accumulate, a file per job.
        prompts_dir: where a job's relative paths are looked up last (default: the
            project's prompts/).
        progress: auto (rich on a terminal, log otherwise), rich, log or off.
        shard: I/N: run only shard I (0-based) of N of the job's items; null → from
            SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX when set; 0/1 → the whole job.
        shards: the shard count N with SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX (needed
            by the latter; wins over SLURM_ARRAY_TASK_COUNT).
        shard_nodes: split (node j goes to shard j mod N) or share (every shard uses every
            node, its slots divided); a local cluster's shards each start their own nodes.
    """

    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    job: JobConfig = field(default_factory=JobConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    dry_run: bool = False
    resume: bool = True
    journal_dir: str = "outputs/journal"
    prompts_dir: str = "prompts"
    progress: ProgressMode = ProgressMode.auto
    shard: str | None = None
    shards: int | None = None
    shard_nodes: ShardNodes = ShardNodes.split


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    # The root schema types every group's node (cluster, model, job, engine), so each group
    # option's YAML is checked against its dataclass when Hydra merges it.
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
