"""JSON answers: a ladder of ever more forgiving readings, each checked against the schema.

1. ``strict``: the whole answer, stripped, is JSON.
2. ``extracted``: a fenced block (```json ... ```) or a balanced ``{...}`` / ``[...]`` found in
   surrounding prose is JSON.
3. ``repaired``: ``json_repair`` mends the likeliest candidate (a truncated object, single
   quotes, trailing commas...).

The first reading that parses *and* validates wins. ``json_repair`` salvages something from
any text, so a repair is only taken from a candidate that starts like JSON (``{``, ``[`` or
``"``), only when it keeps that type, and an empty result (``""``, ``{}``, ``[]``, ``null``) only
when a schema is given and accepts it. A candidate nested deeper than ``MAX_REPAIR_DEPTH``
(a model stuck repeating ``{``) is not repaired: that would take seconds and fit no schema.
When nothing fits, :class:`~runner._errors.AnswerError` lists why each step failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import json_repair
import jsonschema
import jsonschema.exceptions
import jsonschema.validators
from jsonschema.protocols import Validator

from ._errors import AnswerError, ConfigError
from ._files import read_text_file
from ._schema_refs import dangling_refs

STEPS = ("strict", "extracted", "repaired")
REASON_LIMIT = 200
MAX_CANDIDATES = 16  # balanced spans tried per answer; bounds the work on pathological text
MAX_REPAIR_DEPTH = 64  # deeper candidates are not repaired: json_repair would take seconds

_FENCE = re.compile(r"```[ \t]*(?:json5?|JSON5?)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_OPEN_FENCE = re.compile(r"```[ \t]*(?:json5?|JSON5?)?[ \t]*\r?\n?(.*)\Z", re.DOTALL)
_CLOSERS = {"{": "}", "[": "]"}
_EMPTY: tuple[Any, ...] = ("", {}, [], None)
_OPENERS: dict[str, type] = {"{": dict, "[": list, '"': str}


@dataclass(frozen=True)
class JsonAnswer:
    """An accepted JSON answer.

    Attributes:
        value: the decoded JSON value.
        step: the ladder step that produced it: ``strict``, ``extracted`` or ``repaired``.
    """

    value: Any
    step: str


class _Failed(Exception):
    """One candidate that did not parse (``schema`` false) or did not validate (internal)."""

    def __init__(self, message: str, *, schema: bool = False) -> None:
        super().__init__(message)
        self.schema = schema


def accept_json(text: str, validator: Validator | None) -> JsonAnswer:
    """Read a JSON value out of a model's answer.

    Args:
        text: the answer as generated.
        validator: the job's compiled schema, or ``None`` to accept any JSON value.

    Returns:
        The value and the step that produced it.

    Raises:
        AnswerError: no step produced a value that parses and validates; ``reasons`` has one
            line per step.
    """
    reasons: list[str] = []
    schema_failures: list[str] = []
    stripped = text.strip()

    def attempt(step: str, candidates: list[str], read: Callable[[str], Any]) -> JsonAnswer | None:
        failures: list[_Failed] = []
        for candidate in candidates:
            try:
                return JsonAnswer(_checked(read(candidate), validator), step)
            except _Failed as exc:
                failures.append(exc)
        # A schema failure says more than a parse failure of another candidate.
        failures.sort(key=lambda f: not f.schema)
        schema_failures.extend(_reason(step, f) for f in failures if f.schema)
        found = failures[0] if failures else _Failed("no fenced block or {...} / [...] found")
        reasons.append(_reason(step, found))
        return None

    fenced, spans, partial = _candidates(text)
    answer = (
        attempt("strict", [stripped], _loads)
        or attempt("extracted", [*fenced, *spans], _loads)
        or attempt("repaired", _unique([*fenced, *partial, *spans, stripped]), _repaired(validator))
    )
    if answer is not None:
        return answer
    if schema_failures:
        raise AnswerError(
            f"answer does not match the schema ({schema_failures[0]})", reasons=reasons
        )
    raise AnswerError(f"answer holds no valid JSON ({reasons[0]})", reasons=reasons)


def compile_schema(schema: dict[str, Any], *, source: str) -> Validator:
    """Check a JSON Schema and build its validator.

    Draft 2020-12 is used unless ``$schema`` names another draft. ``format`` is asserted
    (e.g. ``"format": "date"`` rejects ``"tomorrow"``).

    Args:
        schema: the schema.
        source: where it came from (a path or config key), for messages.

    Raises:
        ConfigError: the schema is not an object, names an unknown ``$schema``, is invalid,
            or has a ``$ref`` that does not resolve.
    """
    if not isinstance(schema, dict):
        raise ConfigError(f"{source}: a JSON Schema must be an object, got {type(schema).__name__}")
    cls: Any = jsonschema.Draft202012Validator
    if "$schema" in schema:
        unknown = object()
        cls = jsonschema.validators.validator_for(schema, default=cast(Any, unknown))
        if cls is unknown:
            raise ConfigError(f"{source}: unknown $schema {schema['$schema']!r}")
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = exc.json_path if exc.path else "$"
        raise ConfigError(
            f"{source}: invalid JSON Schema at {where}: {_clip(exc.message)}"
        ) from exc
    dangling = dangling_refs(schema)
    if dangling:
        raise ConfigError(f"{source}: $ref {dangling[0]!r} does not resolve within the schema")
    return cast(Validator, cls(schema, format_checker=cls.FORMAT_CHECKER))


def load_schema(path: Path) -> dict[str, Any]:
    """Read a JSON Schema file (not yet checked: see :func:`compile_schema`).

    Raises:
        ConfigError: the file is missing, unreadable, not JSON, or not a JSON object.
    """
    text = read_text_file(path, what="schema file")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: schema is not valid JSON: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: schema is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise ConfigError(f"{path}: a JSON Schema must be an object, got {type(schema).__name__}")
    return schema


# ------------------------------------------------------------------------ the steps


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Failed(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except (ValueError, RecursionError) as exc:  # e.g. nesting deeper than the stack
        raise _Failed(f"not JSON: {type(exc).__name__}") from exc


def _repaired(validator: Validator | None) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        expected = _OPENERS.get(text[:1])
        if expected is None:
            raise _Failed("not JSON: nothing that starts like a JSON object or array")
        if _deeper_than(text, MAX_REPAIR_DEPTH):
            # A model stuck repeating "{ {" writes thousands of levels; repairing that would
            # hold the engine's thread for seconds, and no schema answer is that deep.
            raise _Failed(f"not JSON: nested deeper than {MAX_REPAIR_DEPTH} levels")
        try:
            value = json_repair.loads(text)
        except (ValueError, TypeError, IndexError, KeyError, RecursionError) as exc:
            raise _Failed(f"not JSON: repair failed ({type(exc).__name__})") from exc
        if not isinstance(value, expected):
            # json_repair gave up on the structure and salvaged something else.
            raise _Failed(f"not JSON: repair turned {text[:1]!r}... into {type(value).__name__}")
        if value in _EMPTY and (validator is None or not validator.is_valid(value)):
            # json_repair's answer to prose; only a schema that allows it makes it an answer.
            raise _Failed("not JSON: repair produced only an empty value")
        return value

    return read


def _checked(value: Any, validator: Validator | None) -> Any:
    if validator is None:
        return value
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except RecursionError as exc:
        raise _Failed("schema: value nested too deeply to validate", schema=True) from exc
    if error is not None:
        raise _Failed(f"schema: {error.json_path}: {error.message}", schema=True)
    return value


def _candidates(text: str) -> tuple[list[str], list[str], list[str]]:
    """Fenced blocks, balanced spans, and unfinished spans (a truncated answer) in ``text``."""
    fenced = [m.group(1).strip() for m in _FENCE.finditer(text)]
    if not fenced:
        tail = _OPEN_FENCE.search(text)  # an answer cut off inside its fence
        partial_fence = [tail.group(1).strip()] if tail else []
    else:
        partial_fence = []
    spans: list[str] = []
    partial: list[str] = []
    for span, closed in _spans(text):
        (spans if closed else partial).append(span)
        if len(spans) + len(partial) >= MAX_CANDIDATES:
            break
    return fenced, spans, [*partial_fence, *partial]


def _spans(text: str) -> Iterator[tuple[str, bool]]:
    """Top-level ``{...}`` / ``[...]`` spans, skipping brackets inside JSON strings.

    Yields ``(span, True)`` for each balanced span, ``(span, False)`` for one that a wrong
    closer broke or the end of the text cut off. Quotes only count inside a span, so an
    apostrophe or quotation in the prose around it does not derail the scan.
    """
    start = -1
    stack: list[str] = []
    brackets = _Brackets(text, strings=False)
    for i, char in brackets:
        if start < 0:
            if char in _CLOSERS:
                start, stack = i, [_CLOSERS[char]]
                brackets.strings = True
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        else:
            matched = char == stack.pop()
            if matched and stack:
                continue
            yield text[start : i + 1], matched
            start = -1
            brackets.strings = False
    if start >= 0:
        yield text[start:], False


def _deeper_than(text: str, limit: int) -> bool:
    """Whether brackets outside JSON strings nest deeper than ``limit`` anywhere in ``text``."""
    depth = 0
    for _, char in _Brackets(text):
        if char in _CLOSERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth = max(0, depth - 1)
    return False


class _Brackets:
    """The brackets (``{ } [ ]``) of a text that are outside JSON strings, as
    ``(index, char)`` pairs.

    A ``"`` opens a string (escapes honoured) only while :attr:`strings` is true; a caller
    that finds quotes meaningless in places (the prose around a span) turns it off there,
    between two brackets.
    """

    def __init__(self, text: str, *, strings: bool = True) -> None:
        self.text = text
        self.strings = strings

    def __iter__(self) -> Iterator[tuple[int, str]]:
        in_string = escaped = False
        for i, char in enumerate(self.text):
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = self.strings
            elif char in "{}[]":
                yield i, char


def _unique(candidates: list[str]) -> list[str]:
    return list(dict.fromkeys(candidates))


def _reason(step: str, exc: _Failed) -> str:
    return f"{step}: {_clip(str(exc))}"


def _clip(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= REASON_LIMIT else line[: REASON_LIMIT - 1] + "…"
