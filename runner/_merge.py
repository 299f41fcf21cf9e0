"""Merging shards: the run directories of a job's shards → the job's one output and report.

:func:`find_shards` reads each shard's ``report.json`` (a folder that holds shard run
directories stands for all of them); :func:`check_shards` refuses shards that do not belong
together, a shard given twice, and — unless incomplete merges are allowed — a missing shard
or one whose items are not all accepted, naming each; :func:`merge_input` checks the input
file an incomplete OpenAI Batch merge names its lines without a result by; then
:func:`write_merge` writes, into the merge's own folder, ``results.jsonl`` (every shard's
records, shard by shard), the job's output built from it (:func:`runner._output.write_output`,
the file an unsharded run writes; an OpenAI Batch job's two files:
:func:`runner._batch_output.write_merged_batch_files`) and ``report.json`` (totals, per
shard, per node). Nothing is written before every check passed, every file is replaced
atomically and nothing in it depends on the time, so merging twice gives the same files; a
shard's own folder is never written to.

Every refusal is a one-line :class:`~runner._errors.ConfigError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ._batch_output import check_merge_input, write_merged_batch_files
from ._config import OutputConfig, OutputFormat, OutputShape
from ._errors import ConfigError, storage_errors
from ._files import replace_file
from ._journal import read_records
from ._output import write_output
from ._report import ShardLine, per_1m_tokens, round_cost, write_json
from ._shard import shard_of

_NONE, _FAILED, _OK = 0, 1, 2  # what the records say of an item index


@dataclass(frozen=True)
class ShardRun:
    """One shard's run directory, as its ``report.json`` describes it.

    Attributes:
        folder: the run directory (resolved).
        job: the job's name.
        shard: the report's ``shard`` section.
        report: the whole report.
    """

    folder: Path
    job: str
    shard: ShardLine
    report: dict[str, Any]

    @property
    def label(self) -> str:
        return f"shard {self.shard.index}/{self.shard.count} ({self.folder})"


@dataclass(frozen=True)
class Progress:
    """What a shard's ``results.jsonl`` holds: items accepted and failed (by index)."""

    ok: int
    failed: int

    def unfinished(self, items: int) -> int:
        return items - self.ok - self.failed


@dataclass(frozen=True)
class Merge:
    """Shards checked to belong together, ready to be written.

    Attributes:
        runs: one per shard present, by shard index.
        progress: what each of them holds, in the same order.
        missing: the indexes of the shards not given.
        problems: one line per shard that is missing or incomplete (empty: complete).
    """

    runs: list[ShardRun]
    progress: list[Progress]
    missing: list[int]
    problems: list[str]

    @property
    def first(self) -> ShardLine:
        return self.runs[0].shard


def find_shards(paths: Iterable[Path]) -> list[ShardRun]:
    """The shard runs of ``paths``: each a shard's run directory, or a folder whose
    subfolders are (other subfolders — an unsharded run, an earlier merge — are skipped).

    Raises:
        ConfigError: a path is missing, a run directory has no ``report.json`` (its run was
            killed before it ended), a report is not a shard's, or a folder holds no shard.
    """
    runs: list[ShardRun] = []
    for path in paths:
        folder = path.expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"{path}: no such run directory")
        if _is_run(folder):
            runs.append(_read_shard(folder, path))
            continue
        found = [_read_shard(sub, sub) for sub in sorted(folder.iterdir()) if _is_shard(sub)]
        if not found:
            raise ConfigError(f"{path}: neither a shard's run directory nor a folder of them")
        runs.extend(found)
    return runs


def _is_run(folder: Path) -> bool:
    return (folder / "report.json").is_file() or (folder / "results.jsonl").is_file()


def _is_shard(folder: Path) -> bool:
    """A subfolder that is a shard's run directory (or the remains of one: no report)."""
    if not folder.is_dir() or not _is_run(folder):
        return False
    report = _load_report(folder, folder) if (folder / "report.json").is_file() else None
    return report is None or "shard" in report


def _load_report(folder: Path, shown: Path) -> dict[str, Any] | None:
    path = folder / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{shown / 'report.json'}: cannot be read as JSON ({exc})") from None
    if not isinstance(report, dict):
        raise ConfigError(f"{shown / 'report.json'}: not a run's report")
    return report


def _read_shard(folder: Path, shown: Path) -> ShardRun:
    report = _load_report(folder, shown)
    if report is None:
        raise ConfigError(
            f"{shown}: no report.json: the run there did not end (killed?); run its shard "
            "again (the same command resumes it) and merge that run's directory"
        )
    section = report.get("shard")
    if not isinstance(section, dict):
        raise ConfigError(f"{shown}: report.json is not a shard's (no shard section)")
    names = {f.name for f in fields(ShardLine)}
    if set(section) != names:
        raise ConfigError(f"{shown}: report.json's shard section is not one this runner writes")
    return ShardRun(folder, str(report.get("job")), ShardLine(**section), report)


def check_shards(runs: list[ShardRun], *, allow_incomplete: bool = False) -> Merge:
    """Check that ``runs`` are the shards of one run of one job, each once; read each one's
    ``results.jsonl`` to see which items it holds.

    Raises:
        ConfigError: shards of different jobs, counts or work, a shard given twice, a
            result that is not of its shard; and, unless ``allow_incomplete``, missing
            shards or items not accepted. The message names them.
    """
    if not runs:
        raise ConfigError("no shard run directories given")
    first = runs[0]
    for run in runs[1:]:
        _same(first, run)
    by_index: dict[int, ShardRun] = {}
    for run in runs:
        twice = by_index.get(run.shard.index)
        if twice is not None:
            raise ConfigError(
                f"shard {run.shard.index}/{run.shard.count} is given twice: {twice.folder} and "
                f"{run.folder}: pass one run directory per shard (its latest run holds all its "
                "results, reused ones included)"
            )
        by_index[run.shard.index] = run
    count = first.shard.count
    ordered = [by_index[i] for i in sorted(by_index)]
    progress = [_progress(run) for run in ordered]
    missing = [i for i in range(count) if i not in by_index]
    problems = []
    if missing:
        problems.append(
            f"shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {count} "
            f"of job {first.job} missing (given: {', '.join(map(str, sorted(by_index)))})"
        )
    for run, held in zip(ordered, progress, strict=True):
        items = run.shard.items
        if held.ok < items:
            problems.append(
                f"{run.label}: {items - held.ok} of its {items} items not accepted "
                f"({held.failed} failed, {held.unfinished(items)} unfinished): run the shard "
                "again to resume"
            )
    if problems and not allow_incomplete:
        raise ConfigError(
            "not merged: " + "; ".join(problems) + " (or merge with --allow-incomplete)"
        )
    return Merge(ordered, progress, missing, problems)


def _same(first: ShardRun, run: ShardRun) -> None:
    a, b = first.shard, run.shard
    if first.job != run.job or a.count != b.count:
        raise ConfigError(
            f"{first.folder} is shard {a.index}/{a.count} of job {first.job}, but "
            f"{run.folder} is shard {b.index}/{b.count} of job {run.job}: not shards of one run"
        )
    if _work(a) != _work(b):
        raise ConfigError(
            f"{first.folder} and {run.folder} are shards of different work (the input, "
            "template, model, parameters or output differ): not shards of one run"
        )


def _work(line: ShardLine) -> tuple[Any, ...]:  # a batch input's path may vary by machine
    return line.fingerprint, line.job_items, {k: v for k, v in line.output.items() if k != "input"}


def _progress(run: ShardRun) -> Progress:
    """Count the shard's accepted and failed items, checking that each record is of it."""
    shard = run.shard
    state = bytearray(shard.job_items)
    path = run.folder / "results.jsonl"
    for record in _records(path):
        index, key = record.get("index"), record.get("key")
        if type(index) is not int or not 0 <= index < shard.job_items or not isinstance(key, str):
            continue  # not a record this runner wrote
        if shard_of(key, shard.count) != shard.index:
            raise ConfigError(
                f"{path}: item {record.get('id')} belongs to shard {shard_of(key, shard.count)}, "
                f"not {shard.index}: these results are not this shard's"
            )
        if record.get("status") == "ok":
            state[index] = _OK
        elif state[index] != _OK:
            state[index] = _FAILED
    return Progress(ok=state.count(_OK), failed=state.count(_FAILED))


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with storage_errors(path, "read the results"):
        for _, record in read_records(path):
            yield record


def default_out(runs: list[ShardRun]) -> Path:
    """Where a merge goes unless told: ``<job>_merged`` in the shards' common folder."""
    parents = [run.folder.parent for run in runs]
    common = parents[0]
    while not all(p == common or common in p.parents for p in parents):
        common = common.parent
    return common / f"{runs[0].job}_merged"


def check_out(out: Path, runs: list[ShardRun]) -> Path:
    """The merge's folder, resolved; refused when it is (or is in) a shard's run directory.

    Raises:
        ConfigError: naming the folder and the shard.
    """
    target = out.expanduser().resolve()
    for run in runs:
        if target == run.folder or run.folder in target.parents:
            raise ConfigError(
                f"--out {out}: inside {run.label}'s run directory: a merge never writes into a "
                "shard's own files; pick another folder"
            )
    report = _load_report(target, out) if target.is_dir() else None
    if report is not None and "shard" in report:
        raise ConfigError(f"--out {out}: holds a shard's run (report.json); pick another folder")
    return target


def merge_input(merge: Merge, given: Path | None) -> Path | None:
    """The input file naming an OpenAI Batch merge's lines without a result: ``given``
    (``--input``), else the shards'; ``None`` when no line lacks one (or not a batch job).

    Raises:
        ConfigError: ``given`` for another kind of job; the file missing, unreadable or not
            the shards' (:func:`~runner._batch_output.check_merge_input`).
    """
    first = merge.first
    if first.output.get("kind") != "batch":
        if given is not None:
            raise ConfigError(f"--input {given}: job {merge.runs[0].job} is not a batch job")
        return None
    lacking = first.job_items - sum(p.ok + p.failed for p in merge.progress)
    if lacking == 0:
        return None
    path = (given or Path(str(first.output.get("input")))).expanduser().resolve()
    check_merge_input(path, fingerprint=first.output.get("input_fingerprint"), lacking=lacking)
    return path


def write_merge(merge: Merge, out: Path, *, source: Path | None = None) -> Path | None:
    """Write ``results.jsonl``, the job's output (a batch job's: its two batch files, every
    input line in one of them when ``source``, from :func:`merge_input`) and
    ``report.json`` into ``out``; returns the output file, if the job has one.

    Raises:
        StorageError: a file cannot be written (one line naming it).
    """
    first = merge.first
    results = out / "results.jsonl"
    with storage_errors(out, "write the merge"):
        with replace_file(results) as sink:
            for run in merge.runs:
                for record in _records(run.folder / "results.jsonl"):
                    sink.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
                    sink.write("\n")
        output = OutputConfig(
            filename=first.output.get("filename"),
            shape=OutputShape(first.output.get("shape") or "none"),
            key_field=first.output.get("key_field"),
            format=OutputFormat(first.output.get("format") or "json"),  # older shards: json
        )
        written = write_output(out, results, output, items=first.job_items)
        if first.output.get("kind") == "batch":  # an OpenAI Batch job: its two files
            model = str(first.output.get("model") or "")
            written = write_merged_batch_files(
                out, results, items=first.job_items, model=model, source=source
            )
        write_json(out / "report.json", merged_report(merge))
    return written


def merged_report(merge: Merge) -> dict[str, Any]:
    """The merge's ``report.json``: the job's totals, each shard's line, each node's sums."""
    first = merge.first
    ok = sum(p.ok for p in merge.progress)
    failed = sum(p.failed for p in merge.progress)

    def total(key: str) -> int:
        return sum(int(run.report.get("totals", {}).get(key) or 0) for run in merge.runs)

    nodes: dict[str, dict[str, Any]] = {}
    for run in merge.runs:
        for name, line in (run.report.get("nodes") or {}).items():
            node = nodes.setdefault(
                name,
                {"requests": 0, "successes": 0, "errors": 0, "output_tokens": 0, "shards": []},
            )
            for key in ("requests", "successes", "errors", "output_tokens"):
                node[key] += int(line.get(key) or 0)
            if line.get("cost") is not None:  # a priced node: paid for each shard's run
                node["cost"] = node.get("cost", 0.0) + float(line["cost"])
            node["shards"].append(run.shard.index)
    for node in nodes.values():
        if "cost" in node:
            node["cost"] = round_cost(node["cost"])
            node["cost_per_1m_output_tokens"] = per_1m_tokens(node["cost"], node["output_tokens"])
    costs = [float(node["cost"]) for node in nodes.values() if "cost" in node]
    run_cost = round_cost(sum(costs)) if costs else None
    output_tokens = total("output_tokens")
    cost_totals = (
        {
            "cost": run_cost,
            "cost_per_1m_output_tokens": per_1m_tokens(run_cost, output_tokens),
        }
        if run_cost is not None
        else {}
    )
    return {
        "job": merge.runs[0].job,
        "merged": {
            "shards": first.count,
            "fingerprint": first.fingerprint,
            "complete": not merge.problems,
            "missing": merge.missing,
            "problems": merge.problems,
            "from": [
                {
                    "shard": run.shard.index,
                    "dir": str(run.folder),
                    "items": run.shard.items,
                    "ok": held.ok,
                    "failed": held.failed,
                    "wall_time_s": run.report.get("wall_time_s"),
                    "stopped": run.report.get("stopped"),
                }
                for run, held in zip(merge.runs, merge.progress, strict=True)
            ],
        },
        "totals": {
            "items": first.job_items,
            "ok": ok,
            "failed": failed,
            "reused": total("reused"),
            "unfinished": first.job_items - ok - failed,
            "requests_sent": total("requests_sent"),
            "output_tokens": output_tokens,
            **cost_totals,
        },
        "wall_time_s": max(float(run.report.get("wall_time_s") or 0) for run in merge.runs),
        "nodes": dict(sorted(nodes.items())),
    }
