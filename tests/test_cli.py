"""The command line against a loopback node: exit codes, one-line errors, dry run, resume,
sweeps. No model needed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.loopback_node import LoopbackNode, loopback_node

ROOT = Path(__file__).resolve().parents[1]
FILMS = (ROOT / "prompts" / "movies.txt").read_text().splitlines()


@pytest.fixture
def node() -> Iterator[LoopbackNode]:
    with loopback_node() as n:
        yield n


def cli(
    tmp_path: Path,
    *overrides: str,
    node: LoopbackNode | None = None,
    run: str = "run",
    multirun: bool = False,
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "runner"]
    if multirun:
        args += ["-m", f"hydra.sweep.dir={tmp_path / run}"]
    else:
        args.append(f"hydra.run.dir={tmp_path / run}")
    args += [f"journal_dir={tmp_path / 'journal'}", "progress=off"]
    if node is not None:
        args += ["cluster=static", f"cluster.nodes=[{{address: '{node.address}'}}]"]
    args += list(overrides)
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def report(tmp_path: Path, run: str = "run") -> dict[str, Any]:
    return json.loads((tmp_path / run / "report.json").read_text())


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["job=movie_details", "engine.slotz=2"], "slotz"),
        (["job=movie_detials"], "movie_detials"),
        (["job=movie_details", "engine.slots=abc"], "engine.slots"),
        ([], "job"),
        (["job=movie_details", "engine.slots=0"], "engine.slots must be at least 1"),
        (["job=movie_details", "job.input.path=/nonexistent/films.txt"], "/nonexistent/films.txt"),
        (["job=movie_details", "job.template=nope.j2"], "nope.j2"),
        (["job=movie_details", "cluster=lab", "cluster.inventory=/nonexistent/inv.py"], "inv.py"),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_it(
    tmp_path: Path, overrides: list[str], fragment: str
) -> None:
    proc = cli(tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and fragment in lines[0]


def test_missing_template_variable_is_named_and_nothing_is_sent(
    tmp_path: Path, node: LoopbackNode
) -> None:
    template = tmp_path / "t.j2"
    template.write_text("Tell me about {{ title }} from {{ year }} by {{ director }}.")
    proc = cli(tmp_path, "job=movie_synopsis", f"job.template={template}", node=node)
    assert proc.returncode == 2
    assert "'director', 'year'" in proc.stderr or "'year', 'director'" in proc.stderr
    assert not node.seen


def test_duplicate_ids_are_refused_before_sending(tmp_path: Path, node: LoopbackNode) -> None:
    films = tmp_path / "films.csv"
    films.write_text("id,title\n1,Heat\n2,Alien\n1,Ran\n")
    proc = cli(
        tmp_path,
        "job=movie_synopsis",
        f"job.input.path={films}",
        "job.input.format=csv",
        "job.input.id_field=id",
        node=node,
    )
    assert proc.returncode == 2 and "duplicate id '1'" in proc.stderr
    assert not node.seen


def test_dry_run_renders_every_prompt_and_sends_nothing(tmp_path: Path, node: LoopbackNode) -> None:
    proc = cli(tmp_path, "job=movie_details", "dry_run=true", node=node)
    assert proc.returncode == 0, proc.stderr
    assert "items: 20" in proc.stderr and "Forrest Gump" in proc.stderr
    assert node.address in proc.stderr
    assert not node.seen


def test_all_items_ok_exits_0_with_outputs(tmp_path: Path, node: LoopbackNode) -> None:
    proc = cli(tmp_path, "job=movie_details", node=node)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "run" / "movie_details.json").read_text())) == 20
    totals = report(tmp_path)["totals"]
    assert totals == {**totals, "items": 20, "ok": 20, "failed": 0, "reused": 0}
    assert sum(node.seen.values()) == 20


def test_partial_failure_exits_1_and_a_rerun_sends_only_what_is_missing(
    tmp_path: Path, node: LoopbackNode
) -> None:
    node.refuse = {"Titanic"}
    first = cli(tmp_path, "job=movie_details", "engine.max_attempts=2", node=node)
    assert first.returncode == 1
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    failed = [r for r in records if r["status"] == "failed"]
    assert len(records) == 20 and len(failed) == 1
    assert failed[0]["input"] == {"title": "Titanic"} and "500" in failed[0]["error"]
    assert len(json.loads((tmp_path / "run" / "movie_details.json").read_text())) == 19

    node.refuse = set()
    node.seen.clear()
    second = cli(tmp_path, "job=movie_details", node=node, run="again")
    assert second.returncode == 0, second.stderr
    assert list(node.seen) == [p for p in node.seen if "Titanic" in p] and len(node.seen) == 1
    totals = report(tmp_path, "again")["totals"]
    assert totals["reused"] == 19 and totals["ok"] == 20 and totals["requests_sent"] == 1
    assert len(json.loads((tmp_path / "again" / "movie_details.json").read_text())) == 20


def test_editing_one_input_line_resends_only_that_item(tmp_path: Path, node: LoopbackNode) -> None:
    films = tmp_path / "films.txt"
    films.write_text("\n".join(FILMS) + "\n")
    assert cli(tmp_path, "job=movie_synopsis", f"job.input.path={films}", node=node).returncode == 0
    films.write_text("\n".join(["Heat" if f == "Shrek" else f for f in FILMS]) + "\n")
    node.seen.clear()
    proc = cli(tmp_path, "job=movie_synopsis", f"job.input.path={films}", node=node, run="edit")
    assert proc.returncode == 0
    assert len(node.seen) == 1 and "Heat" in next(iter(node.seen))
    synopses = json.loads((tmp_path / "edit" / "movie_synopsis.json").read_text())
    assert "Heat" in synopses and "Shrek" not in synopses and len(synopses) == 20


def test_resume_false_sends_everything_again(tmp_path: Path, node: LoopbackNode) -> None:
    assert cli(tmp_path, "job=movie_details", node=node).returncode == 0
    assert cli(tmp_path, "job=movie_details", "resume=false", node=node, run="b").returncode == 0
    assert set(node.seen.values()) == {2}


def test_a_sweep_runs_each_combination_in_its_own_directory(
    tmp_path: Path, node: LoopbackNode
) -> None:
    proc = cli(
        tmp_path,
        "job=movie_synopsis,movie_details",
        "engine.slots=1,2",
        "resume=false",
        node=node,
        multirun=True,
    )
    assert proc.returncode == 0, proc.stderr
    runs = sorted(p.parent.name for p in (tmp_path / "run").glob("*/report.json"))
    assert len(runs) == 4
    summary = proc.stdout[proc.stdout.index("Sweep summary:") :].splitlines()[1:]
    assert len(summary) == 4 and all("20/20 ok" in line for line in summary)


def test_unreachable_nodes_stop_the_run_with_exit_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cli(
        tmp_path,
        "job=movie_details",
        "cluster=static",
        f"cluster.nodes=[{{address: '127.0.0.1:{port}'}}]",
        "engine.no_node_timeout=2",
        "engine.probe_interval=0.5",
    )
    assert proc.returncode == 3, proc.stderr
    assert "no node could serve" in proc.stderr
    assert report(tmp_path)["stopped"].startswith("no node could serve")
