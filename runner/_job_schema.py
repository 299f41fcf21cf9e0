"""The job-side schemas: what to ask, from which input, and the output it makes (the ``job``
group).

Part of the configuration schema; :class:`runner._config.RunConfig` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from ._choices import AnswerFormat, InputFormat, JobKind, OutputFormat, OutputShape, Truncated
from ._request import ChoiceNormalise

MAX_CANDIDATES = 16  # the most answers one request may ask for (TextSynth's ``n``: 1..16)


@dataclass
class InputConfig:
    """A job's input file.

    Attributes:
        path: the input file; a relative path is looked up beside the job's file, then in
            the current directory, then in prompts_dir.
        format: lines, csv, jsonl, or auto (from the extension).
        id_field: the field holding each item's id; null → a hash of the item's content.
        text_field: the variable name of a line in lines files.
    """

    path: str = MISSING
    format: InputFormat = InputFormat.auto
    id_field: str | None = None
    text_field: str = "text"


@dataclass
class OutputConfig:
    """A job's consolidated output, written from results.jsonl at the end of the run.

    Attributes:
        filename: the output file in the run directory; null → none.
        shape: list (one entry per input item, in input order, null where it failed),
            mapping (key → answer) or none.
        key_field: for mapping: the input field whose values are the keys (unique, checked
            before the run); null → the item ids.
        format: json (as shape says), or csv or parquet: a table of one row per input item
            (a filename ending in .json gets .csv or .parquet instead).
    """

    filename: str | None = None
    shape: OutputShape = OutputShape.list
    key_field: str | None = None
    format: OutputFormat = OutputFormat.json


@dataclass
class JobConfig:
    """What to ask: a template, its inputs, and what a good answer looks like (the ``job``
    group).

    Attributes:
        name: names the output files and the journal.
        kind: generate (a prompt per item), probe (the node check), or batch (an OpenAI
            Batch input file: docs/batch.md).
        template: a Jinja2 file; relative: beside the job's file, the current directory,
            then prompts_dir.
        system: a system prompt (Jinja2 text), chat models only.
        input: the input file.
        answer: text, json (parsed, repaired, validated against schema), or choice (no
            generation: each label scored after the prompt, the likeliest kept).
        schema: a JSON Schema file for one answer (json jobs); looked up like template.
        choices: the labels of a choice job (at least 2, unique, non-empty).
        choice_field: instead of choices: the input field holding each item's labels (a
            list in JSONL, 'a|b|c' text in CSV or lines).
        choice_prefix: put between the prompt and each label (choice jobs).
        choice_normalise: a label's score: none (its summed log-probability) or tokens
            (divided by its token count).
        max_tokens: overrides the model's max_tokens.
        temperature: overrides the model's temperature.
        stop: overrides the model's stop strings.
        seed: base seed: content retry k of an item is sent with seed + k (seed + k *
            candidates with several candidates, so no seed is asked for twice).
        candidates: answers asked for in one request (``n``, 1..16; json jobs): the first
            that passes the JSON ladder and the schema is kept, and when none does the item
            is retried with the next seed.
        truncated: answers cut off by max_tokens: repair (keep them, JSON repaired) or
            reject (a content failure, retried with the next seed).
        output: the consolidated output.
        metadata: input fields copied untouched into each result record as ``metadata``
            (every item must have them).
        allow_prompt_truncation: run even when the pre-flight finds prompts that, with
            max_tokens, do not fit the model's context (the node drops their beginning);
            by default the run stops before sending anything (docs/preflight.md).
    """

    name: str = MISSING
    kind: JobKind = JobKind.generate
    template: str | None = None
    system: str | None = None
    input: InputConfig = field(default_factory=InputConfig)
    answer: AnswerFormat = AnswerFormat.text
    schema: str | None = None
    choices: list[str] | None = None
    choice_field: str | None = None
    choice_prefix: str = " "
    choice_normalise: ChoiceNormalise = ChoiceNormalise.none
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    seed: int = 1
    candidates: int = 1
    truncated: Truncated = Truncated.repair
    output: OutputConfig = field(default_factory=OutputConfig)
    metadata: list[str] = field(default_factory=list)
    allow_prompt_truncation: bool = False
