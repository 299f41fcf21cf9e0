"""``$ref`` references in a JSON Schema that lead nowhere.

A validator only follows a reference when an instance reaches it, and llama.cpp's grammar
converter turns one it cannot follow into no constraint at all: both fail late or silently.
:func:`dangling_refs` finds them up front, for the runner (before a job sends anything) and
for the open node (before it decodes with the schema). References are resolved against the
schema itself (``#``, ``#/$defs/x``, ``$id``-named subschemas); a reference to another
document is dangling, since nothing here fetches documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import referencing
import referencing.exceptions
import referencing.jsonschema


def dangling_refs(schema: Mapping[str, Any]) -> list[str]:
    """The ``$ref`` values of ``schema`` that do not resolve, in document order."""
    resource = referencing.jsonschema.specification_with(
        str(schema.get("$schema", "")), default=referencing.jsonschema.DRAFT202012
    ).create_resource(schema)
    resolver = referencing.Registry().with_resource("", resource).resolver()
    dangling = []
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            dangling.append(ref)
    return dangling


def _refs(schema: Any) -> list[str]:
    """Every ``$ref`` string in a schema, in document order."""
    found: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                found.append(ref)
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found
