"""``--help``'s key lines come from the schema's docstrings, one per key."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from runner._config import RunConfig
from runner._help import field_docs, key_lines


def _keys(schema: Any, prefix: str = "") -> list[str]:
    """Every leaf key of the schema, the reference the lines are checked against."""
    keys: list[str] = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            keys += _keys(kind, f"{prefix}{f.name}.")
            continue
        keys.append(f"{prefix}{f.name}")
        if typing.get_origin(kind) is list and dataclasses.is_dataclass(typing.get_args(kind)[0]):
            keys += _keys(typing.get_args(kind)[0], f"{prefix}{f.name}[].")
    return keys


def test_every_key_of_the_schema_has_one_line_with_a_description() -> None:
    lines = key_lines()
    keys = [line.split()[0].split("=")[0] for line in lines]
    assert keys == _keys(RunConfig)
    undocumented = [line.split()[0] for line in lines if len(line.split(maxsplit=1)) < 2]
    assert undocumented == []


def test_a_key_line_shows_its_default_its_description_and_its_choices() -> None:
    lines = {line.split()[0]: line for line in key_lines()}
    assert lines["job.output.shape=list"].endswith("[list | mapping | none]")
    assert "one entry per input item" in lines["job.output.shape=list"]
    assert lines["job.name=???"].split(maxsplit=1)[1] == "names the output files and the journal."
    assert "cluster.nodes[].address=???" in lines
    assert lines["job.truncated=repair"].endswith("[repair | reject]")


def test_attribute_descriptions_may_run_over_several_lines() -> None:
    class Example:
        """Something.

        Attributes:
            short: one line.
            long: a description
                that goes on.

        Note:
            not an attribute: ignored.
        """

    assert field_docs(Example) == {"short": "one line.", "long": "a description that goes on."}
