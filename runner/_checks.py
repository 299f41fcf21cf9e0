"""From Hydra's composed config to a checked :class:`~runner._config.RunConfig`.

Hydra and the dataclass schemas already reject unknown keys, misspelt options and wrong
types. What they let through is checked here: keys appended with ``+key=value`` that the
schema does not declare, required values left as ``???``, numbers out of range, and names
that become file names (``job.name``, ``job.output.filename``) but are not a plain file name,
so no file lands outside the journal or the run directory. Every problem is one line naming
the key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from ._choice import check_job as check_choice_job
from ._config import (
    MAX_CANDIDATES,
    AnswerFormat,
    ClusterKind,
    JobKind,
    OutputFormat,
    RunConfig,
)
from ._errors import ConfigError
from ._shard import parse_shard
from ._table import require_parquet

# key → minimum, for numbers that must be positive: a minimum of 0 means greater than 0 (the
# durations), any other is the smallest value allowed (the counts); an unset key is skipped
_POSITIVE = {
    "engine.slots": 1,
    "engine.max_slots": 1,
    "engine.startup_timeout": 0,
    "engine.connect_timeout": 0,
    "engine.stall_timeout": 0,
    "engine.request_timeout": 0,
    "engine.max_attempts": 1,
    "engine.retry_timeout": 0,
    "engine.json_attempts": 1,
    "engine.breaker_failures": 1,
    "engine.probe_interval": 0,
    "engine.probe_timeout": 0,
    "engine.no_node_timeout": 0,
    "cluster.local.ready_timeout": 0,
    "model.max_tokens": 1,
    "preflight.probe_tokens": 1,
    "preflight.sample": 1,
    "preflight.timeout": 0,
    "shards": 1,
}
_NON_NEGATIVE = (
    "engine.backoff_initial",
    "engine.backoff_max",
    "engine.busy_retries",  # 0: a busy answer counts as a node failure at once
    "cluster.local.nodes",  # 0: one per core
    "cluster.local.threads",  # 0: the cores shared among the nodes
    "cluster.local.parallel",  # 0: the node's own default
)


# a plain file name: letters, digits, '_', '-' and '.', not starting with '.'; at most 200
# characters (the journal's name adds ``.jsonl.lock`` and a file name stops at 255 bytes)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Convert Hydra's config to typed objects, failing on keys the schema does not know and
    on required values left unset."""
    unknown = next(_unknown_keys(cfg, ""), None)
    if unknown is not None:
        raise ConfigError(f"unknown key '{unknown}' (not in the configuration schema)")
    try:
        obj = OmegaConf.to_object(cfg)
    except MissingMandatoryValue as exc:
        key = exc.full_key or exc.key or "?"
        raise ConfigError(f"missing required value '{key}' (set it with {key}=...)") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    if not isinstance(obj, RunConfig):  # pragma: no cover - the schema guarantees it
        raise ConfigError("the configuration does not follow the run schema")
    check(obj)
    return obj


def _unknown_keys(node: Any, prefix: str) -> Iterator[str]:
    """Keys added with ``+key=value`` that no dataclass field declares.

    A schema rejects a misspelt ``key=value``, but Hydra's ``+`` adds a key even to a
    structured node, and ``to_object`` then drops it (or sets a stray attribute) silently.
    """
    if isinstance(node, ListConfig):
        for i in range(len(node)):
            if not OmegaConf.is_missing(node, i):
                yield from _unknown_keys(node._get_node(i), f"{prefix}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    fields = (
        {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    )
    for key in node:
        name = key if isinstance(key, str) else repr(key)
        dotted = f"{prefix}.{name}" if prefix else name
        if fields is not None and key not in fields:
            yield dotted
        elif not OmegaConf.is_missing(node, key):
            yield from _unknown_keys(node._get_node(key), dotted)


def _get(cfg: RunConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def check(cfg: RunConfig) -> None:
    """Check values the schema cannot: ranges and combinations."""
    for key, minimum in _POSITIVE.items():
        value = _get(cfg, key)
        if value is None:
            continue
        if (minimum == 0 and value <= 0) or value < minimum:
            bound = "greater than 0" if minimum == 0 else f"at least {minimum}"
            raise ConfigError(f"{key} must be {bound}, got {value}")
    for key in _NON_NEGATIVE:
        value = _get(cfg, key)
        if value < 0:
            raise ConfigError(f"{key} must not be negative, got {value}")
    if cfg.job.max_tokens is not None and cfg.job.max_tokens < 1:
        raise ConfigError(f"job.max_tokens must be at least 1, got {cfg.job.max_tokens}")
    if not 1 <= cfg.job.candidates <= MAX_CANDIDATES:
        raise ConfigError(
            f"job.candidates must be in 1..{MAX_CANDIDATES}, got {cfg.job.candidates}"
        )
    if cfg.job.candidates > 1 and cfg.job.answer is not AnswerFormat.json:
        raise ConfigError(
            f"job.candidates: only json jobs choose among candidates, got "
            f"{cfg.job.candidates} for job.answer={cfg.job.answer.value}"
        )
    if cfg.job.temperature is not None and cfg.job.temperature < 0:
        raise ConfigError(f"job.temperature must not be negative, got {cfg.job.temperature}")
    if cfg.model.temperature < 0:
        raise ConfigError(f"model.temperature must not be negative, got {cfg.model.temperature}")
    if cfg.model.top_p is not None and not 0 < cfg.model.top_p <= 1:
        raise ConfigError(f"model.top_p must be in (0, 1], got {cfg.model.top_p}")
    if cfg.model.top_k is not None and not 1 <= cfg.model.top_k <= 1000:
        raise ConfigError(f"model.top_k must be in 1..1000, got {cfg.model.top_k}")
    if len(cfg.job.stop or cfg.model.stop) > 5:
        raise ConfigError("job.stop / model.stop: at most 5 stop strings")
    if cfg.cluster.kind is ClusterKind.inventory and not cfg.cluster.inventory:
        raise ConfigError("cluster.inventory: an inventory cluster needs an inventory file")
    if cfg.cluster.scheme not in ("http", "https"):
        raise ConfigError(f"cluster.scheme must be http or https, got '{cfg.cluster.scheme}'")
    for key, name in (("job.name", cfg.job.name), ("job.output.filename", cfg.job.output.filename)):
        if name is not None and not _PLAIN_NAME.fullmatch(name):
            raise ConfigError(
                f"{key} must be a plain file name (letters, digits, '_', '-' and '.', not "
                f"starting with '.', at most 200 characters), got {name!r}"
            )
    if cfg.job.output.format is OutputFormat.parquet:
        require_parquet()  # a one-line error naming the extra, before anything is sent
    if cfg.shard is not None:
        parse_shard(cfg.shard)  # the environment's shard is checked when the run starts
    check_choice_job(cfg.job, api=cfg.model.api)
    if cfg.job.kind in (JobKind.generate, JobKind.batch) and not cfg.job.input.path:
        raise ConfigError(f"job '{cfg.job.name}': job.input.path is required")
