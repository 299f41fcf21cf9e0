"""The node's configuration file: ts_server.cfg's format and keys, plus a few of our own.

The file is JSON5 (unquoted keys, comments, trailing commas), read with the ``json5`` package.
:func:`load_config` turns it into a :class:`ServeConfig` or raises
:class:`~runner._errors.ConfigError` with one line naming the file, the key and the problem.
See ``docs/node.md`` for every key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json5

from .._errors import ConfigError
from ._model_file import SMOLLM2_ALIAS, default_model_path

IGNORED_KEYS = frozenset(
    {
        "cuda",
        "device_index",
        "full_memory",
        "max_memory",
        "kv_cache_max_count",
        "kv_cache_size",
        "gui",
    }
)
"""ts_server keys that are accepted and ignored (GPU, memory and web-page settings)."""

ENGINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""An engine id: it appears in URL paths, so it is limited to URL-safe characters."""

MODEL_KEYS = frozenset({"name", "filename"})

DEFAULT_N_PARALLEL = 4
"""Sequences per model when the file does not say: the best movie_details wall time measured
on a 2-core machine with SmolLM2-135M (docs/node.md, "Measured figures")."""


@dataclass(frozen=True)
class ModelSpec:
    """One model the node serves.

    Attributes:
        name: the engine id used in URLs (``/v1/engines/{name}/...``).
        path: the absolute path of the GGUF file.
    """

    name: str
    path: Path


@dataclass(frozen=True)
class ServeConfig:
    """A parsed node configuration. See ``docs/node.md`` for the meaning of each field.

    Attributes:
        source: the file it was read from.
        models: the models to serve, each with its own llama.cpp instance.
        local_port: the TCP port to listen on (0: any free port).
        bind_addr: the address to listen on.
        n_threads: llama.cpp threads per model; the machine's cores unless set.
        n_parallel: sequences each model decodes at once (its slots).
        n_ctx: context per sequence in tokens (prompt + generated).
        max_queue: sequences allowed to wait per model while every slot is busy; more get
            503 with ``Retry-After``.
        reproducible: a seeded request is evaluated without the prompt cache, so the same
            request and seed give the same text on an otherwise idle node.
        max_body_bytes: the largest request body accepted; larger get 413.
        log_filename: a file that receives the log lines too, or None.
        log_start: print ``Started.`` on stdout when ready.
        ignored: ts_server keys present in the file and ignored.
    """

    source: Path
    models: tuple[ModelSpec, ...]
    local_port: int = 8080
    bind_addr: str = "127.0.0.1"
    n_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    n_parallel: int = DEFAULT_N_PARALLEL
    n_ctx: int = 2048
    max_queue: int = 16
    reproducible: bool = True
    max_body_bytes: int = 1 << 20
    log_filename: Path | None = None
    log_start: bool = False
    ignored: tuple[str, ...] = ()


def _integer(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {_show(value)}"
        if not low <= value <= high:
            return f"expected an integer in {low}..{high}, got {value}"
        return None

    return check


def _string(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return f"expected a non-empty string, got {_show(value)}"
    return None


def _boolean(value: Any) -> str | None:
    if not isinstance(value, bool):
        return f"expected true or false, got {_show(value)}"
    return None


SCALAR_KEYS: dict[str, Callable[[Any], str | None]] = {
    "local_port": _integer(0, 65535),
    "bind_addr": _string,
    "n_threads": _integer(1, 1024),
    "n_parallel": _integer(1, 256),
    "n_ctx": _integer(64, 1 << 20),
    "max_queue": _integer(0, 1 << 20),
    "reproducible": _boolean,
    "max_body_bytes": _integer(1024, 1 << 30),
    "log_filename": _string,
    "log_start": _boolean,
}


def _show(value: Any) -> str:
    """A short, one-line rendering of a config value for an error message."""
    text = repr(value) if isinstance(value, str) else json5.dumps(value)
    text = text.replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def load_config(path: str | Path) -> ServeConfig:
    """Read and check a node configuration file.

    Args:
        path: the ts_server.cfg-format file.

    Returns:
        The configuration, with model and log paths made absolute.

    Raises:
        ConfigError: the file cannot be read or parsed, a key is unknown, a value has the
            wrong type or range, or a model file does not exist. The message is one line.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {_one_line(exc)}") from exc
    try:
        data = json5.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: not valid JSON5: {_one_line(exc)}") from exc
    return parse_config(data, source=source)


def parse_config(data: Any, *, source: Path) -> ServeConfig:
    """Check an already parsed configuration (see :func:`load_config`)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected an object at the top level, got {_show(data)}")

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {problem}")

    base = source.resolve().parent
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in data.items():
        if key in IGNORED_KEYS:
            ignored.append(key)
        elif key == "api_key":
            raise fail(key, "not read from the file; pass --api-key-env NAME instead")
        elif key == "models":
            continue
        elif key in SCALAR_KEYS:
            problem = SCALAR_KEYS[key](value)
            if problem:
                raise fail(key, problem)
            values[key] = value
        else:
            raise fail(key, "unknown key (see docs/node.md for the keys a node reads)")
    if "models" not in data:
        raise fail("models", "missing (a list of {name, filename})")
    models = _parse_models(data["models"], base=base, fail=fail)
    if "log_filename" in values:
        values["log_filename"] = base / values["log_filename"]
    return ServeConfig(source=source, models=models, ignored=tuple(ignored), **values)


def _parse_models(
    value: Any, *, base: Path, fail: Callable[[str, str], ConfigError]
) -> tuple[ModelSpec, ...]:
    if not isinstance(value, list) or not value:
        raise fail("models", f"expected a non-empty list of {{name, filename}}, got {_show(value)}")
    models: list[ModelSpec] = []
    for index, entry in enumerate(value):
        where = f"models[{index}]"
        if not isinstance(entry, Mapping):
            raise fail(where, f"expected an object {{name, filename}}, got {_show(entry)}")
        for key in entry:
            if key not in MODEL_KEYS:
                raise fail(f"{where}.{key}", "unknown key (a model has name and filename)")
        for key in sorted(MODEL_KEYS):
            if key not in entry:
                raise fail(f"{where}.{key}", "missing")
            problem = _string(entry[key])
            if problem:
                raise fail(f"{where}.{key}", problem)
        name = entry["name"]
        if not ENGINE_NAME.fullmatch(name):
            raise fail(f"{where}.name", f"{name!r} is not usable in a URL (use A-Z a-z 0-9 . _ -)")
        if any(model.name == name for model in models):
            raise fail(f"{where}.name", f"{name!r} is used twice")
        models.append(ModelSpec(name=name, path=_model_path(entry["filename"], base, where, fail)))
    return tuple(models)


def _model_path(
    filename: str, base: Path, where: str, fail: Callable[[str, str], ConfigError]
) -> Path:
    if filename == SMOLLM2_ALIAS:
        try:
            return default_model_path()
        except FileNotFoundError as exc:
            raise fail(f"{where}.filename", str(exc)) from exc
    path = (base / Path(filename).expanduser()).resolve()
    if not path.is_file():
        raise fail(f"{where}.filename", f"no such file: {path}")
    return path


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
