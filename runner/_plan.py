"""From a job's configuration to the stream of work items it asks for.

:func:`prepare` loads and checks everything a job needs before anything is sent: the
template, the system prompt, the JSON Schema and the input file. :meth:`JobPlan.scan` reads
every item once, renders its prompt and checks ids and output keys, so a bad line, a missing
variable, a duplicate id or a mapping key that is missing or repeats stops the run before the
first request. :meth:`JobPlan.work` then streams the same items again as
:class:`~runner._work.Work`, one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._acceptance import accept_text, first_passing, json_acceptor, refusing_truncated
from ._batch import BatchPlan
from ._choice import choice_acceptor, labels_of
from ._config import AnswerFormat, JobConfig, JobKind, RunConfig, Truncated
from ._errors import ConfigError
from ._inputs import item_metadata, read_items, scan_items
from ._jsonladder import load_schema
from ._output import check_keys
from ._paths import resolve_path, search_folders
from ._request import Choices, GenerationRequest
from ._sampling import sampling_params
from ._shard import Shard
from ._templates import PromptTemplate, load_template
from ._work import Acceptor, Work


@dataclass
class JobPlan:
    """A checked job, ready to stream its work items."""

    cfg: RunConfig
    template: PromptTemplate
    system: PromptTemplate | None
    input_path: Path
    schema: dict[str, Any] | None
    acceptor: Acceptor
    shard: Shard | None = None  # only this shard's items (runner/_shard.py); None: all

    @property
    def job(self) -> JobConfig:
        return self.cfg.job

    def _items(self) -> Iterator[Any]:
        spec = self.job.input
        return read_items(
            self.input_path,
            format=spec.format.value,
            id_field=spec.id_field,
            text_field=spec.text_field,
        )

    def scan(self) -> int:
        """Read every item once: check the file, the ids and every prompt. Returns the count
        (of the shard's items, for a shard)."""
        spec = self.job.input
        count = scan_items(
            self.input_path,
            format=spec.format.value,
            id_field=spec.id_field,
            text_field=spec.text_field,
        )
        check_keys(self._items, self.job.output, path=self.input_path)
        here = sum(1 for _ in self.work())  # renders every prompt: a missing variable fails here
        return count if self.shard is None else here

    def _choices(self, item: Any) -> Choices | None:
        """A choice job's labels for ``item`` (``job.choices``, or its ``choice_field``,
        checked here: a bad one stops the scan), or ``None`` for other jobs."""
        job = self.job
        if job.answer is not AnswerFormat.choice:
            return None
        labels = tuple(job.choices or ())
        if job.choice_field is not None:
            where = f"{self.input_path}:{item.line}: job.choice_field '{job.choice_field}'"
            labels = labels_of(item.data.get(job.choice_field), where=where)
        return Choices(labels, prefix=job.choice_prefix, normalise=job.choice_normalise)

    def work(self) -> Iterator[Work]:
        """Stream the job's work items (the shard's, for a shard), in input order."""
        model = self.cfg.model
        params = sampling_params(model, self.job)
        schema = self.schema if model.schema_decoding else None
        for item in self._items():
            prompt = self.template.render(item.data, item_label=item.id)
            system = self.system.render(item.data, item_label=item.id) if self.system else None
            choices = self._choices(item)
            request = GenerationRequest(
                api=model.api,
                style=model.style,
                engine=model.engine,
                prompt=prompt,
                system=system,
                params=params if choices is None else {},  # a choice samples nothing
                schema=schema,
                seed=self.job.seed,
                choices=choices,
            )
            key = request.key()
            if self.shard is None or self.shard.holds(key):
                where = f"{self.input_path}:{item.line}"
                metadata = item_metadata(item.data, self.job.metadata, where=where)
                yield Work(
                    id=item.id,
                    index=item.index,
                    input=item.data,
                    request=request,
                    key=key,
                    metadata=metadata,
                )


Plan = JobPlan | BatchPlan
"""A checked job of either kind that generates: templated (``JobPlan``) or an OpenAI Batch
file (:class:`~runner._batch.BatchPlan`)."""


def prepare(cfg: RunConfig, *, job_dir: Path | None = None) -> Plan:
    """Load and check the job's template, schema and input file; relative paths are looked
    up in :func:`search_folders` (``job_dir``: the folder of the job's YAML file).

    Raises:
        ConfigError: one line naming the file or key and what is wrong.
    """
    job = cfg.job
    folders = search_folders(cfg, job_dir=job_dir)
    if job.kind is JobKind.batch:  # an OpenAI Batch file: no template (runner/_batch.py)
        path = resolve_path(job.input.path, bases=folders, label="job.input.path")
        return BatchPlan(cfg, path)
    if not job.template:
        raise ConfigError(f"job '{job.name}': job.template is required for a generate job")
    template = load_template(resolve_path(job.template, bases=folders, label="job.template"))
    input_path = resolve_path(job.input.path, bases=folders, label="job.input.path")
    schema: dict[str, Any] | None = None
    acceptor: Acceptor = accept_text
    if job.answer is AnswerFormat.json:
        if not job.schema:
            raise ConfigError(f"job '{job.name}': a json job needs job.schema (a JSON Schema file)")
        schema_path = resolve_path(job.schema, bases=folders, label="job.schema")
        schema = load_schema(schema_path)
        acceptor = json_acceptor(schema, source=str(schema_path))
    elif job.answer is AnswerFormat.choice:
        acceptor = choice_acceptor(job.choice_normalise)
    elif job.schema:
        raise ConfigError(f"job '{job.name}': job.schema is set but job.answer is 'text'")
    if job.truncated is Truncated.reject:
        acceptor = refusing_truncated(acceptor)
    if job.candidates > 1:
        acceptor = first_passing(acceptor)
    system = PromptTemplate.from_string(job.system, name="job.system") if job.system else None
    return JobPlan(cfg, template, system, input_path, schema, acceptor)
