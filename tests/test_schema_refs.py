"""A schema's ``$ref`` that leads nowhere is found before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest

from runner._errors import ConfigError
from runner._jsonladder import compile_schema
from runner._schema_refs import dangling_refs

DEFS = {"$defs": {"year": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("schema", "dangling"),
    [
        ({"properties": {"y": {"$ref": "#/$defs/year"}}} | DEFS, []),
        ({"items": {"$ref": "#"}}, []),
        ({"$id": "urn:x", "properties": {"y": {"$ref": "urn:x#/$defs/year"}}} | DEFS, []),
        ({"properties": {"y": {"$ref": "#/$defs/yaer"}}} | DEFS, ["#/$defs/yaer"]),
        ({"anyOf": [{"$ref": "other.json"}, {"$ref": "#/nothing"}]}, ["other.json", "#/nothing"]),
    ],
    ids=["defs", "self", "by-id", "misspelt", "other-document"],
)
def test_dangling_refs_are_the_ones_that_do_not_resolve(
    schema: dict[str, Any], dangling: list[str]
) -> None:
    assert dangling_refs(schema) == dangling


def test_a_job_schema_with_a_dangling_ref_is_a_config_error() -> None:
    schema = {"properties": {"year": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(ConfigError, match=r"s.json: \$ref '#/\$defs/missing' does not resolve"):
        compile_schema(schema, source="s.json")
