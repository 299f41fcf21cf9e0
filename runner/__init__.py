"""Run large batches of templated prompts over a cluster of TextSynth-API nodes.

The command line (``python -m runner job=... cluster=...``) is the main interface; these
names are the library's public surface.
"""

from ._config import (
    ClusterConfig,
    EngineConfig,
    JobConfig,
    ModelConfig,
    RunConfig,
)
from ._engine import Engine
from ._errors import (
    AnswerError,
    ClusterUnavailable,
    ConfigError,
    NodeBusy,
    NodeError,
    NodeTimeout,
    ProtocolError,
    RunnerError,
    ServerError,
    TransportError,
)
from ._nodes import NodeSpec, SlotsFrom
from ._request import Api, Completion, GenerationRequest, Style
from ._work import Accepted, Work

__all__ = [
    "Accepted",
    "AnswerError",
    "Api",
    "ClusterConfig",
    "ClusterUnavailable",
    "Completion",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "GenerationRequest",
    "JobConfig",
    "ModelConfig",
    "NodeBusy",
    "NodeError",
    "NodeSpec",
    "NodeTimeout",
    "ProtocolError",
    "RunConfig",
    "RunnerError",
    "ServerError",
    "SlotsFrom",
    "Style",
    "TransportError",
    "Work",
]
