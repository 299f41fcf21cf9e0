"""The closed sets of choices in the configuration schema: an enum per key that takes one.

Each member's value is what the YAML files and the command line spell (``cluster.kind=local``);
the dataclasses that use them are in :mod:`runner._cluster_schema`, :mod:`runner._job_schema`
and :mod:`runner._config`. The choices the request itself carries (``model.api``,
``model.style``, ``job.choice_normalise``) are :mod:`runner._request`'s. OmegaConf checks a
value against its enum while Hydra composes, and ``--help`` lists the members (runner/_help.py).
"""

from __future__ import annotations

from enum import Enum


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
