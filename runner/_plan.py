"""From a job's configuration to the stream of work items it asks for.

:func:`prepare` loads and checks everything a job needs before anything is sent: the
template, the system prompt, the JSON Schema and the input file. :meth:`JobPlan.scan` reads
every item once, renders its prompt and checks ids and output keys, so a bad line, a missing
variable, a duplicate id or a mapping key that is missing or repeats stops the run before the
first request. :meth:`JobPlan.work` then streams the same items again as
:class:`~runner._engine.Work`, one at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import AnswerFormat, JobConfig, ModelConfig, RunConfig, Truncated
from ._errors import ConfigError
from ._inputs import read_items, scan_items
from ._jsonladder import accept_json, compile_schema, load_schema
from ._output import check_keys
from ._request import Completion, GenerationRequest
from ._templates import PromptTemplate, load_template
from ._work import Accepted, Acceptor, Work, accept_text, refusing_truncated

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(value: str, *, bases: Sequence[Path], label: str) -> Path:
    """A path from the config: absolute (``~`` expanded) as it is, else relative to the first
    of ``bases`` that holds it.

    Raises:
        ConfigError: no path, or none of ``bases`` holds it: one line with the path as the
            user wrote it and the folders searched.
    """
    if not value:
        raise ConfigError(f"{label}: no path given")
    path = Path(os.path.expanduser(value))
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return (base / path).resolve()
    searched = ", ".join(str(b) for b in dict.fromkeys(bases))
    raise ConfigError(f"{label}: {value}: file not found (looked in {searched})")


def search_folders(cfg: RunConfig, *, job_dir: Path | None = None) -> list[Path]:
    """Where a job's relative paths are looked up, in order: the folder of the job's YAML
    file (when known), the current directory, then the prompts directory."""
    folders = [job_dir] if job_dir is not None else []
    return [*folders, Path.cwd(), prompts_dir(cfg)]


def prompts_dir(cfg: RunConfig) -> Path:
    """The prompts directory: as configured, from the current directory or the project."""
    path = Path(os.path.expanduser(cfg.prompts_dir))
    if path.is_absolute() or path.exists():
        return path.resolve()
    return PROJECT_ROOT / path


def sampling_params(model: ModelConfig, job: JobConfig) -> dict[str, Any]:
    """The sampling parameters sent with every request of a job (job values win)."""
    params: dict[str, Any] = {
        "max_tokens": job.max_tokens if job.max_tokens is not None else model.max_tokens,
        "temperature": job.temperature if job.temperature is not None else model.temperature,
        "top_k": model.top_k,
        "top_p": model.top_p,
        "repetition_penalty": model.repetition_penalty,
    }
    stop = job.stop if job.stop is not None else model.stop
    if stop:
        params["stop"] = list(stop)
    return {k: v for k, v in params.items() if v is not None}


@dataclass
class JobPlan:
    """A checked job, ready to stream its work items."""

    cfg: RunConfig
    template: PromptTemplate
    system: PromptTemplate | None
    input_path: Path
    schema: dict[str, Any] | None
    acceptor: Acceptor

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
        """Read every item once: check the file, the ids and every prompt. Returns the count."""
        spec = self.job.input
        count = scan_items(
            self.input_path,
            format=spec.format.value,
            id_field=spec.id_field,
            text_field=spec.text_field,
        )
        check_keys(self._items, self.job.output, path=self.input_path)
        for work in self.work():  # renders every prompt: a missing variable fails here
            del work
        return count

    def work(self) -> Iterator[Work]:
        """Stream the job's work items, in input order."""
        model = self.cfg.model
        params = sampling_params(model, self.job)
        schema = self.schema if model.schema_decoding else None
        for item in self._items():
            prompt = self.template.render(item.data, item_label=item.id)
            system = self.system.render(item.data, item_label=item.id) if self.system else None
            request = GenerationRequest(
                api=model.api,
                style=model.style,
                engine=model.engine,
                prompt=prompt,
                system=system,
                params=params,
                schema=schema,
                seed=self.job.seed,
            )
            yield Work(
                id=item.id, index=item.index, input=item.data, request=request, key=request.key()
            )


def prepare(cfg: RunConfig, *, job_dir: Path | None = None) -> JobPlan:
    """Load and check the job's template, schema and input file; relative paths are looked
    up in :func:`search_folders` (``job_dir``: the folder of the job's YAML file).

    Raises:
        ConfigError: one line naming the file or key and what is wrong.
    """
    job = cfg.job
    folders = search_folders(cfg, job_dir=job_dir)
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
    elif job.schema:
        raise ConfigError(f"job '{job.name}': job.schema is set but job.answer is 'text'")
    if job.truncated is Truncated.reject:
        acceptor = refusing_truncated(acceptor)
    system = PromptTemplate.from_string(job.system, name="job.system") if job.system else None
    return JobPlan(cfg, template, system, input_path, schema, acceptor)


def json_acceptor(schema: dict[str, Any], *, source: str) -> Acceptor:
    """The acceptor of JSON jobs: the JSON ladder, then schema validation."""
    validator = compile_schema(schema, source=source)

    def accept(completion: Completion) -> Accepted:
        answer = accept_json(completion.text, validator)
        return Accepted(answer.value, answer.step)

    return accept
