"""Prompt templates: Jinja2 text checked like data.

A :class:`PromptTemplate` knows the names it uses, so a job can be checked against its input
before anything is sent, and rendering never turns a missing variable into an empty string
(``StrictUndefined``): it fails with one line naming every missing name.

Every failure is a :class:`~runner._errors.ConfigError` whose message is one line starting
with the template's name (its path, or a label such as ``system prompt``).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes

from ._errors import ConfigError
from ._files import read_text_file

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    trim_blocks=True,
)


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed Jinja2 template.

    Attributes:
        name: how messages call it (the file path, or a label for inline text).
        source: the template text.
        variables: the top-level names it reads (Jinja2 globals such as ``range`` excluded).
    """

    name: str
    source: str
    variables: frozenset[str]
    _ordered: tuple[str, ...] = field(repr=False, compare=False)
    _template: jinja2.Template = field(repr=False, compare=False)

    @classmethod
    def from_string(cls, source: str, *, name: str) -> PromptTemplate:
        """Parse template text.

        Args:
            source: the Jinja2 text.
            name: how error messages call it, e.g. ``conf/job/x.yaml: system``.

        Raises:
            ConfigError: the text is not a valid template (``name:line: template syntax
                error: ...``).
        """
        try:
            tree = _ENV.parse(source)
            template = _ENV.from_string(tree)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                f"{name}:{exc.lineno}: template syntax error: {_one_line(exc.message or str(exc))}"
            ) from exc
        undeclared = jinja2.meta.find_undeclared_variables(tree)
        ordered: dict[str, None] = {}  # first use first, for stable messages
        for node in tree.find_all(nodes.Name):
            if node.ctx == "load" and node.name in undeclared:
                ordered.setdefault(node.name)
        return cls(
            name=name,
            source=source,
            variables=frozenset(undeclared),
            _ordered=tuple(ordered),
            _template=template,
        )

    def missing(self, available: Container[str]) -> list[str]:
        """The names this template uses that ``available`` lacks, in order of first use."""
        return [name for name in self._ordered if name not in available]

    def check_variables(self, available: set[str] | frozenset[str]) -> None:
        """Check, before any item is rendered, that every name used will be provided.

        A template that guards an optional name with ``{% if x is defined %}`` still lists
        it; pass it in ``available`` if that is intended.

        Raises:
            ConfigError: naming every missing name and what is available.
        """
        missing = self.missing(available)
        if missing:
            offered = ", ".join(repr(n) for n in sorted(available)) or "none"
            raise ConfigError(
                f"{self.name}: uses variable(s) {_names(missing)} that the input does not "
                f"provide (available: {offered})"
            )

    def render(self, variables: Mapping[str, Any], *, item_label: str | None = None) -> str:
        """Render with ``variables``.

        Args:
            variables: the values, by name.
            item_label: the item's id, for the error message.

        Raises:
            ConfigError: a variable is missing (every missing name is listed) or the template
                failed while rendering.
        """
        where = f"{self.name}: item {item_label!r}" if item_label is not None else self.name
        try:
            return self._template.render(variables)
        except jinja2.UndefinedError as exc:
            missing = self.missing(variables)
            if missing:
                raise ConfigError(f"{where} has no variable(s) {_names(missing)}") from exc
            raise ConfigError(f"{where}: {_one_line(str(exc))}") from exc
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            # What a template expression can raise on bad values (e.g. ``{{ a + b }}`` with
            # a string and a number); anything else is a bug and keeps its traceback.
            raise ConfigError(f"{where}: template error: {_one_line(str(exc))}") from exc


def load_template(path: Path, *, label: str = "template") -> PromptTemplate:
    """Read and parse a Jinja2 template file.

    Args:
        path: the file (UTF-8).
        label: what the file is, for messages (``template``, ``system prompt``...).

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 or not a valid template.
    """
    source = read_text_file(path, what=f"{label} file")
    return PromptTemplate.from_string(source, name=str(path))


def render_string(
    text: str,
    variables: Mapping[str, Any],
    *,
    name: str = "inline template",
    item_label: str | None = None,
) -> str:
    """Parse and render a small inline template, e.g. a system prompt written in YAML.

    Raises:
        ConfigError: as :meth:`PromptTemplate.from_string` and :meth:`PromptTemplate.render`.
    """
    return PromptTemplate.from_string(text, name=name).render(variables, item_label=item_label)


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _one_line(text: str) -> str:
    return " ".join(text.split())
