"""``job.output.format: csv | parquet`` (runner/_table.py) and the ``latest_<job>`` link
(runner/_run_dir.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas
import pytest

from runner import _records
from runner._checks import check
from runner._config import (
    JobConfig,
    ModelConfig,
    OutputConfig,
    OutputFormat,
    OutputShape,
    RunConfig,
)
from runner._errors import ConfigError
from runner._output import output_filename, write_output
from runner._request import Api, Completion, GenerationRequest, Style
from runner._run_dir import link_latest
from runner._work import Work

ROOT = Path(__file__).resolve().parents[1]


def _work(index: int, title: str) -> Work:
    request = GenerationRequest(api=Api.textsynth, style=Style.chat, engine="e", prompt=title)
    return Work(id=f"id{index}", index=index, input={"title": title}, request=request, key="k")


def _ok(index: int, title: str, answer: Any) -> dict[str, Any]:
    return _records.ok(
        _work(index, title),
        answer=answer,
        step="strict",
        completion=Completion(text=json.dumps(answer), input_tokens=12, output_tokens=30),
        node="n1",
        seed=1,
        latency=0.5,
        attempts=1,
        seeds=[1],
        errors=[],
        text=None,
    )


def _failed(index: int, title: str) -> dict[str, Any]:
    return _records.failed(
        _work(index, title), error="no valid JSON", attempts=4, seeds=[1, 2], errors=[], text="x"
    )


def _results(tmp_path: Path) -> Path:
    """A results.jsonl out of input order: item 2 failed, item 3 unfinished, item 0 failed
    first and accepted on a later line."""
    rows = [
        _failed(0, "Heat"),
        _ok(1, "Alien", {"year": 1979, "genres": ["horror", "sf"], "director": {"name": "Scott"}}),
        _failed(2, "Up, again"),
        _ok(0, "Heat", {"year": 1995, "genres": [], "director": {"name": "Mann"}}),
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


COLUMNS = [
    "id",
    "index",
    "status",
    "input.title",
    "answer.year",
    "answer.genres",
    "answer.director.name",
    "node",
    "seed",
    "attempts",
    "input_tokens",
    "output_tokens",
    "finish_reason",
    "latency_s",
    "error",
]


def test_csv_loads_with_pandas_one_row_per_item_in_input_order_failed_ones_included(
    tmp_path: Path,
) -> None:
    output = OutputConfig(filename="films.json", format=OutputFormat.csv)
    path = write_output(tmp_path, _results(tmp_path), output, items=4)
    assert path == tmp_path / "films.csv"
    table = pandas.read_csv(path)
    assert list(table.columns) == COLUMNS
    assert list(table["index"]) == [0, 1, 2, 3]
    assert list(table["status"]) == ["ok", "ok", "failed", "unfinished"]
    assert list(table["input.title"].fillna("")) == ["Heat", "Alien", "Up, again", ""]
    assert list(table["answer.year"][:2]) == [1995, 1979]
    assert json.loads(table["answer.genres"][1]) == ["horror", "sf"]
    assert table["answer.director.name"][0] == "Mann"
    assert table["error"][2] == "no valid JSON" and pandas.isna(table["error"][0])


def test_parquet_loads_with_pandas_with_lists_as_lists(tmp_path: Path) -> None:
    output = OutputConfig(filename="films.json", format=OutputFormat.parquet)
    path = write_output(tmp_path, _results(tmp_path), output, items=4)
    assert path == tmp_path / "films.parquet"
    table = pandas.read_parquet(path)
    assert list(table.columns) == COLUMNS
    assert list(table["status"]) == ["ok", "ok", "failed", "unfinished"]
    assert list(table["answer.genres"][1]) == ["horror", "sf"]
    assert list(table["answer.genres"][0]) == []
    assert table["answer.year"][1] == 1979 and table["attempts"][2] == 4


def test_parquet_row_groups_keep_the_order_and_mixed_values_become_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runner._table.ROW_GROUP", 3)
    rows = [_ok(i, f"t{i}", {"v": i if i % 2 else [{"x": i}]}) for i in range(7)]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    output = OutputConfig(filename="out.parquet", format=OutputFormat.parquet)
    table = pandas.read_parquet(write_output(tmp_path, results, output, items=7))
    assert list(table["index"]) == list(range(7))
    assert list(table["answer.v"][:2]) == ['[{"x": 0}]', "1"]


def test_text_answers_are_one_answer_column(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(_ok(0, "Heat", "A heist.")) + "\n", encoding="utf-8")
    output = OutputConfig(filename="synopsis.csv", format=OutputFormat.csv)
    table = pandas.read_csv(write_output(tmp_path, results, output, items=1))
    assert table["answer"][0] == "A heist."


@pytest.mark.parametrize(
    ("filename", "fmt", "expected"),
    [
        ("a.json", OutputFormat.json, "a.json"),
        ("a.json", OutputFormat.csv, "a.csv"),
        ("a.json", OutputFormat.parquet, "a.parquet"),
        ("a.tsv", OutputFormat.csv, "a.tsv"),
    ],
)
def test_a_json_filename_takes_the_formats_extension(
    filename: str, fmt: OutputFormat, expected: str
) -> None:
    assert output_filename(OutputConfig(filename=filename, format=fmt)) == expected
    assert output_filename(OutputConfig(filename=filename, shape=OutputShape.none)) is None


def test_parquet_without_pyarrow_is_a_one_line_config_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    cfg = RunConfig(
        model=ModelConfig(name="m", engine="e"),
        job=JobConfig(
            name="j", output=OutputConfig(filename="j.json", format=OutputFormat.parquet)
        ),
    )
    cfg.job.input.path = "in.txt"
    with pytest.raises(ConfigError, match=r"ts-cluster-runner\[parquet\]") as caught:
        check(cfg)
    assert "\n" not in str(caught.value)


def test_the_latest_link_points_at_the_newest_run_after_two_runs(tmp_path: Path) -> None:
    runs = tmp_path / "outputs" / "runs"
    first = runs / "2026-12-05" / "10-00-00-000001_movie_details"
    second = runs / "2026-12-06" / "09-00-00-000002_movie_details"
    for run_dir in (first, second):
        run_dir.mkdir(parents=True)
        link = link_latest(run_dir)
    assert link == runs / "latest_movie_details"
    assert os.readlink(link) == "2026-12-06/09-00-00-000002_movie_details"
    assert link.resolve() == second.resolve()
    assert [p.name for p in runs.iterdir() if p.name.startswith(".")] == []


def test_no_latest_link_outside_the_default_layout(tmp_path: Path) -> None:
    assert link_latest(tmp_path / "today") is None


def test_no_latest_link_where_symlinks_are_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)
    run_dir = tmp_path / "2026-12-05" / "10-00-00_job"
    run_dir.mkdir(parents=True)
    assert link_latest(run_dir) is None
    assert list(tmp_path.iterdir()) == [tmp_path / "2026-12-05"]


@pytest.mark.model
def test_a_local_run_with_format_csv_writes_a_table_and_links_latest(tmp_path: Path) -> None:
    import subprocess

    films = tmp_path / "films.txt"
    films.write_text("Heat\nAlien\n", encoding="utf-8")
    run_dir = tmp_path / "runs" / "2026-12-05" / "10-00-00-000001_movie_details"
    args = [
        sys.executable,
        "-m",
        "runner",
        "job=movie_details",
        f"hydra.run.dir={run_dir}",
        f"journal_dir={tmp_path / 'journal'}",
        f"job.input.path={films}",
        "job.output.format=csv",
        "cluster.local.nodes=1",
        "progress=log",
    ]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pandas.read_csv(run_dir / "movie_details.csv")
    assert list(table["input.title"]) == ["Heat", "Alien"]
    assert list(table["status"]) == ["ok", "ok"]
    assert {"id", "index", "node", "seed", "latency_s", "error"} <= set(table.columns)
    assert any(c.startswith("answer.") for c in table.columns)
    assert (tmp_path / "runs" / "latest_movie_details").resolve() == run_dir.resolve()


def test_the_merge_writes_the_shards_format(tmp_path: Path) -> None:
    from runner._merge import Merge, Progress, ShardRun, write_merge
    from runner._report import ShardLine

    shard = tmp_path / "shard-0"
    shard.mkdir()
    _results(shard)
    output = {"filename": "films.json", "shape": "list", "key_field": None, "format": "csv"}
    line = ShardLine(0, 1, "shard", 4, 4, "f", "split", "j.jsonl", output)
    merge = Merge([ShardRun(shard, "films", line, {})], [Progress(ok=2, failed=1)], [], [])
    written = write_merge(merge, tmp_path / "merged")
    assert written == tmp_path / "merged" / "films.csv"
    assert list(pandas.read_csv(written)["status"]) == ["ok", "ok", "failed", "unfinished"]
