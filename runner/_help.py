"""The keys part of ``python -m runner --help``: one line per configuration key, made from
the schema itself (:mod:`runner._config`).

Each dataclass documents its fields in a Google-style ``Attributes:`` section of its
docstring; :func:`key_lines` walks :class:`~runner._config.RunConfig` and gives each key its
default (the schema's: a group option such as ``cluster=local`` sets its own), its choices
when it is an enum, and that description. Hydra's help template (``conf/config.yaml``,
``hydra.help``) calls :func:`keys_help` through the ``runner_keys`` resolver.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from enum import Enum
from typing import Any

from omegaconf import MISSING

from ._config import RunConfig

_ENTRY = re.compile(r"(\w+): (.*)")
WIDTH = 34  # the column where descriptions start


def field_docs(cls: type) -> dict[str, str]:
    """The descriptions in the ``Attributes:`` section of a class's docstring, by name."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Attributes:" not in lines:
        return {}
    docs: dict[str, str] = {}
    name = None
    for line in lines[lines.index("Attributes:") + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section
        entry = _ENTRY.fullmatch(line[4:]) if not line.startswith(" " * 5) else None
        if entry:
            name = entry[1]
            docs[name] = entry[2]
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return docs


def key_lines(schema: Any = RunConfig, prefix: str = "") -> list[str]:
    """``key=default  description [choices]``, one line per key of ``schema``, nested keys
    included (``cluster.nodes[].address`` for the entries of a list of nodes)."""
    lines: list[str] = []
    docs = field_docs(schema)
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        kind = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(kind):
            lines.extend(key_lines(kind, f"{key}."))
            continue
        choices = f" [{' | '.join(m.value for m in kind)}]" if _is_enum(kind) else ""
        left = f"  {key}={_shown(_default(f))}"
        doc = docs.get(f.name, "").replace("``", "")
        lines.append(f"{left:<{WIDTH}} {doc}{choices}".rstrip())
        item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
        if dataclasses.is_dataclass(item):
            lines.extend(key_lines(item, f"{key}[]."))
    return lines


def keys_help() -> str:
    """Every key line, ready for Hydra's help template (which reads ``$`` as a variable)."""
    return "\n".join(key_lines()).replace("$", "$$")


def _unwrap(kind: Any) -> Any:
    """``X | None`` → ``X``."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else kind
    return kind


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Enum)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _shown(value: Any) -> str:
    if value is MISSING:
        return "???"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, str):
        return value or "''"
    return str(value)
