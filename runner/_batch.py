"""OpenAI Batch input files: one request per line, checked and translated before anything is
sent.

A line is ``{"custom_id", "method": "POST", "url", "body"}`` with ``url``
``/v1/chat/completions`` (``body.messages``) or ``/v1/completions`` (``body.prompt``). The
``custom_id`` is the item's id. For OpenAI-compatible nodes the body is sent as it is, its
``model`` replaced by the cluster's (``model.engine``); for TextSynth nodes it is translated:
system messages become ``system``, the user and assistant turns ``messages``; ``max_tokens``
(or ``max_completion_tokens``), ``temperature``, ``top_p``, ``stop``, ``n``, ``seed``, the
penalties and a ``response_format`` with a ``json_schema`` become their TextSynth fields, over
the model's defaults. Every problem is a :class:`~runner._errors.ConfigError` naming
``file:line``. The output files are written by :mod:`runner._batch_output`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import JobConfig, RunConfig
from ._errors import ConfigError
from ._inputs import Item, read_items, scan_items
from ._request import Api, Completion, GenerationRequest, Style
from ._sampling import sampling_params
from ._shard import Shard
from ._work import Accepted, Work

URLS = {"/v1/chat/completions": Style.chat, "/v1/completions": Style.completion}

# OpenAI body field → TextSynth field, for TextSynth nodes; the checks are in _sampling_value
_SAMPLING = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "n": "n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
# fields that do not shape the answer on a TextSynth node: left out, never refused
_IGNORED = frozenset({"model", "metadata", "user", "store", "stream", "stream_options"})


def accept_choices(completion: Completion) -> Accepted:
    """The acceptor of batch jobs: every answer kept, as the list of the choices' texts."""
    return Accepted(list(completion.texts or (completion.text,)))


@dataclass
class BatchPlan:
    """A checked OpenAI Batch job, ready to stream its work items (the surface of
    :class:`~runner._plan.JobPlan`)."""

    cfg: RunConfig
    input_path: Path
    shard: Shard | None = None
    acceptor: Any = accept_choices

    @property
    def job(self) -> JobConfig:
        return self.cfg.job

    def _items(self) -> Iterator[Item]:
        return read_items(self.input_path, format="jsonl", id_field="custom_id")

    def scan(self) -> int:
        """Check every line (ids unique, requests well formed). Returns the count (of the
        shard's items, for a shard)."""
        count = scan_items(self.input_path, format="jsonl", id_field="custom_id")
        here = sum(1 for _ in self.work())
        return count if self.shard is None else here

    def work(self) -> Iterator[Work]:
        """Stream the lines as work items, in file order."""
        for item in self._items():
            where = f"{self.input_path}:{item.line}"
            request = translate(item.data, self.cfg, where=where)
            metadata = batch_metadata(item.data, self.job.metadata, where=where)
            key = request.key()
            if self.shard is None or self.shard.holds(key):
                yield Work(
                    id=item.id,
                    index=item.index,
                    input=item.data,
                    request=request,
                    key=key,
                    metadata=metadata,
                )


def batch_metadata(line: dict[str, Any], fields: list[str], *, where: str) -> dict[str, Any] | None:
    """A line's metadata: its body's ``metadata`` object, and the line's fields that
    ``job.metadata`` names (which win); ``None`` when there is neither."""
    body = line.get("body")
    found = body.get("metadata") if isinstance(body, dict) else None
    metadata: dict[str, Any] = dict(found) if isinstance(found, dict) else {}
    for name in fields:
        if name not in line:
            raise ConfigError(f"{where}: no field {name!r} (job.metadata) in this line")
        metadata[name] = line[name]
    return metadata or None


def translate(line: dict[str, Any], cfg: RunConfig, *, where: str) -> GenerationRequest:
    """The request one batch line asks for, on the cluster's nodes.

    Raises:
        ConfigError: ``file:line``: the method is not POST, the url unknown, the body not an
            object or without its messages or prompt, or (TextSynth nodes) a field or message
            the node cannot take.
    """
    model = cfg.model
    if line.get("method") != "POST":
        raise ConfigError(f"{where}: method must be POST, got {line.get('method')!r}")
    url = line.get("url")
    style = URLS.get(url) if isinstance(url, str) else None
    if style is None:
        raise ConfigError(f"{where}: unknown url {url!r}; expected one of {', '.join(URLS)}")
    body = line.get("body")
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: body must be a JSON object")
    openai = model.api is Api.openai
    system: str | None = None
    turns: tuple[str, ...]
    if style is Style.chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ConfigError(f"{where}: body.messages must be a non-empty list")
        if openai:
            turns = (_text(messages[-1], where, len(messages) - 1, lenient=True),)
        else:
            system, turns = chat_turns(messages, where=where)
        prompt = turns[-1]
    else:
        text = body.get("prompt")
        if not isinstance(text, str):
            raise ConfigError(f"{where}: body.prompt must be a string (one prompt per line)")
        turns = (text,)
        prompt = text
    params = sampling_params(model, cfg.job)
    schema = None
    for name, value in body.items():
        if name in _SAMPLING:
            params[_SAMPLING[name]] = _sampling_value(name, value, where)
        elif name == "response_format":
            schema = _schema(value, where)
        elif not openai and name not in (*_IGNORED, "seed", "messages", "prompt"):
            raise ConfigError(f"{where}: body.{name} is not supported on TextSynth nodes")
    seed = body.get("seed", cfg.job.seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: body.seed must be an integer, got {seed!r}")
    return GenerationRequest(
        api=model.api,
        style=style,
        engine=model.engine,
        prompt=prompt,
        system=system,
        params={k: v for k, v in params.items() if v is not None},
        schema=schema if model.schema_decoding and not openai else None,
        seed=seed,
        messages=turns if len(turns) > 1 else None,
        body=body if openai else None,
    )


def chat_turns(messages: list[Any], *, where: str) -> tuple[str | None, tuple[str, ...]]:
    """OpenAI chat messages as TextSynth's: the system prompt (system and developer messages
    before the first turn, joined by blank lines) and the turns, user first and last,
    alternating with the assistant's."""
    system: list[str] = []
    turns: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        text = _text(message, where, i)
        if role in ("system", "developer"):
            if turns:
                raise ConfigError(
                    f"{where}: messages[{i}]: a {role} message after the first turn "
                    "(TextSynth chat takes one system prompt, before the turns)"
                )
            system.append(text)
            continue
        expected = "assistant" if len(turns) % 2 else "user"
        if role != expected:
            raise ConfigError(
                f"{where}: messages[{i}]: expected a {expected} message (TextSynth chat "
                f"alternates user and assistant, starting with the user), got {role!r}"
            )
        turns.append(text)
    if len(turns) % 2 == 0:
        raise ConfigError(f"{where}: body.messages must end with a user message")
    return ("\n\n".join(system) if system else None), tuple(turns)


def _text(message: Any, where: str, i: int, *, lenient: bool = False) -> str:
    """A message's text content: a string, or the text parts of a list joined."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    if lenient:
        return json.dumps(content, ensure_ascii=False)
    raise ConfigError(
        f"{where}: messages[{i}] must be an object with a role and a text content "
        "(a string, or a list of text parts)"
    )


def _sampling_value(name: str, value: Any, where: str) -> Any:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    whole = isinstance(value, int) and not isinstance(value, bool)
    if name in ("max_tokens", "max_completion_tokens", "n"):
        if not whole or value < 1:
            raise ConfigError(f"{where}: body.{name} must be a positive integer, got {value!r}")
    elif name == "stop":
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise ConfigError(f"{where}: body.stop must be a string or a list of strings")
        return stops
    elif not number:
        raise ConfigError(f"{where}: body.{name} must be a number, got {value!r}")
    return value


def _schema(value: Any, where: str) -> dict[str, Any] | None:
    """``response_format``: ``text`` → none; ``json_object`` → any object;
    ``json_schema`` → its ``json_schema.schema``."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    spec = value.get("json_schema") if isinstance(value, dict) else None
    if kind == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        schema: dict[str, Any] = spec["schema"]
        return schema
    raise ConfigError(
        f"{where}: body.response_format must be text, json_object or json_schema with a schema"
    )
