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
    cwd: Path = ROOT,
    config_dir: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "runner"]
    if config_dir is not None:  # flags before the overrides
        args += ["--config-dir", str(config_dir)]
    if multirun:
        args += ["-m", f"hydra.sweep.dir={tmp_path / run}"]
    else:
        args.append(f"hydra.run.dir={tmp_path / run}")
    args += [f"journal_dir={tmp_path / 'journal'}", "progress=off"]
    if node is not None:
        args += ["cluster=static", f"cluster.nodes=[{{address: '{node.address}'}}]"]
    args += list(overrides)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


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
        (["job=movie_details", "--bogus"], "unrecognized arguments: --bogus"),
        (["job=movie_details", "--cfg"], "argument --cfg/-c: expected one argument"),
        (
            ["job=movie_synopsis", "job.output.key_field=titel"],
            "job.output.key_field 'titel' is not a column of the input (columns: title)",
        ),
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


def test_a_repeated_mapping_key_is_refused_before_sending(
    tmp_path: Path, node: LoopbackNode
) -> None:
    films = tmp_path / "films.csv"
    films.write_text("id,title\n1,Heat\n2,Alien\n3,Heat\n")
    proc = cli(
        tmp_path,
        "job=movie_synopsis",
        f"job.input.path={films}",
        "job.input.format=csv",
        "job.input.id_field=id",
        node=node,
    )
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and f"{films}:4: key 'Heat'" in lines[0] and "repeats" in lines[0]
    assert not node.seen


def test_dry_run_renders_every_prompt_and_sends_no_item(tmp_path: Path, node: LoopbackNode) -> None:
    proc = cli(
        tmp_path, "job=movie_details", "dry_run=true", "preflight.probe_speed=never", node=node
    )
    assert proc.returncode == 0, proc.stderr
    assert "items: 20" in proc.stderr and "Forrest Gump" in proc.stderr
    assert node.address in proc.stderr
    assert not node.seen  # only the prompts' tokens were counted
    assert node.tokenized == 20
    assert "items: 20; " in proc.stderr and "prompt tokens" in proc.stderr
    assert (
        not list(tmp_path.glob("journal/*.jsonl")) and not (tmp_path / "run/results.jsonl").exists()
    )


def test_a_dry_run_without_the_pre_flight_asks_the_nodes_nothing(
    tmp_path: Path, node: LoopbackNode
) -> None:
    proc = cli(
        tmp_path,
        "job=movie_details",
        "dry_run=true",
        "preflight.probe_speed=never",
        "preflight.count_tokens=false",
        node=node,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Forrest Gump" in proc.stderr and "Estimate" not in proc.stderr
    assert not node.seen and node.tokenized == 0


def test_all_items_ok_exits_0_with_outputs(tmp_path: Path, node: LoopbackNode) -> None:
    proc = cli(tmp_path, "job=movie_details", node=node)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "run" / "movie_details.json").read_text())) == 20
    totals = report(tmp_path)["totals"]
    assert totals == {**totals, "items": 20, "ok": 20, "failed": 0, "reused": 0}
    assert sum(node.seen.values()) == 20


def test_with_journal_fsync_every_result_is_journaled_and_the_rerun_sends_nothing(
    tmp_path: Path, node: LoopbackNode
) -> None:
    proc = cli(tmp_path, "job=movie_details", "engine.journal_fsync=true", node=node)
    assert proc.returncode == 0, proc.stderr
    assert len(store_records(tmp_path)) == 20
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 20
    again = cli(tmp_path, "job=movie_details", "engine.journal_fsync=true", node=node, run="again")
    assert again.returncode == 0, again.stderr
    assert report(tmp_path, "again")["totals"]["reused"] == 20
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
    listed = json.loads((tmp_path / "run" / "movie_details.json").read_text())
    assert len(listed) == 20 and listed.count(None) == 1  # position i is always input i

    node.refuse = set()
    node.seen.clear()
    second = cli(tmp_path, "job=movie_details", node=node, run="again")
    assert second.returncode == 0, second.stderr
    assert list(node.seen) == [p for p in node.seen if "Titanic" in p] and len(node.seen) == 1
    totals = report(tmp_path, "again")["totals"]
    assert totals["reused"] == 19 and totals["ok"] == 20 and totals["requests_sent"] == 1
    assert len(json.loads((tmp_path / "again" / "movie_details.json").read_text())) == 20


def test_the_summary_names_the_failed_ids_and_where_their_records_are(
    tmp_path: Path, node: LoopbackNode
) -> None:
    node.refuse = {"Titanic", "Shrek"}
    proc = cli(tmp_path, "job=movie_details", "engine.max_attempts=1", node=node)
    assert proc.returncode == 1
    results = tmp_path / "run" / "results.jsonl"
    records = [json.loads(x) for x in results.read_text().splitlines()]
    failed = sorted(r["id"] for r in records if r["status"] == "failed")
    line = next(x for x in proc.stderr.splitlines() if "items failed" in x)
    assert line.startswith("2 items failed: ") and str(results) in line
    assert sorted(line.removeprefix("2 items failed: ").split(";")[0].split(", ")) == failed
    listed = json.loads((tmp_path / "run" / "movie_details.json").read_text())
    assert len(listed) == 20 and listed[FILMS.index("Titanic")] is None


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
    settings = [line.split(": ")[0].strip() for line in summary]
    assert settings == [
        "job=movie_synopsis engine.slots=1",
        "job=movie_synopsis engine.slots=2",
        "job=movie_details engine.slots=1",
        "job=movie_details engine.slots=2",
    ]


@pytest.mark.parametrize(
    ("runs", "settings"),
    [
        (
            [["job=a", "x=1", "cluster=local"], ["job=b", "x=1", "cluster=local"]],
            ["job=a", "job=b"],
        ),
        ([["job=a", "cluster=lab"], ["job=a", "cluster=local"]], ["cluster=lab", "cluster=local"]),
        ([["job=a"], ["job=a", "resume=false"]], ["", "resume=false"]),
        ([["job=a", "k=v=w"], ["job=a", "k=v"]], ["k=v=w", "k=v"]),
    ],
)
def test_a_sweep_names_each_run_by_the_overrides_that_differ(
    runs: list[list[str]], settings: list[str]
) -> None:
    from runner.__main__ import sweep_settings

    assert sweep_settings(runs) == settings


def _own_jobs(folder: Path, *, template: str = "products.j2") -> None:
    """A user's own folder: ``job/products.yaml`` and, beside it, its template, schema and
    input (in a subfolder), all named by relative paths."""
    (folder / "job" / "data").mkdir(parents=True)
    (folder / "job" / "products.yaml").write_text(
        "name: products\n"
        f"template: {template}\n"
        "input: {path: data/products.csv, id_field: sku}\n"
        "answer: json\n"
        "schema: products.schema.json\n"
        "output: {filename: products.json, shape: mapping, key_field: name}\n"
    )
    (folder / "job" / "products.j2").write_text('Describe the product "{{ name }}" as JSON.')
    (folder / "job" / "products.schema.json").write_text(
        json.dumps({"type": "object", "required": ["title"]})
    )
    (folder / "job" / "data" / "products.csv").write_text("sku,name\nA1,Kettle\nB2,Toaster\n")


def test_own_jobs_in_a_folder_of_their_own_run_from_anywhere(
    tmp_path: Path, node: LoopbackNode
) -> None:
    _own_jobs(tmp_path / "myjobs")
    (tmp_path / "elsewhere").mkdir()
    proc = cli(
        tmp_path,
        "job=products",
        node=node,
        cwd=tmp_path / "elsewhere",
        config_dir=Path("../myjobs"),
    )
    assert proc.returncode == 0, proc.stderr
    products = json.loads((tmp_path / "run" / "products.json").read_text())
    assert {name: answer["title"] for name, answer in products.items()} == {
        "Kettle": "Kettle",
        "Toaster": "Toaster",
    }


def test_a_missing_file_of_an_own_job_is_named_as_written(tmp_path: Path) -> None:
    _own_jobs(tmp_path / "myjobs", template="prompts/nope.j2")
    proc = cli(tmp_path, "job=products", cwd=tmp_path, config_dir=tmp_path / "myjobs")
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: job.template: prompts/nope.j2: file not found (looked in ")
    assert str(tmp_path / "myjobs" / "job") in lines[0]


def test_help_without_a_job_lists_the_groups_their_options_and_a_line_per_key(
    tmp_path: Path,
) -> None:
    _own_jobs(tmp_path / "myjobs")
    args = [sys.executable, "-m", "runner", "--config-dir", str(tmp_path / "myjobs"), "--help"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "job: film_genre, movie_details, movie_synopsis, openai_batch, probe, products" in lines
    assert "cluster: lab, local, local_openai, static" in lines
    keys = [line.split()[0] for line in lines if line.startswith("  ") and "=" in line.split()[0]]
    assert "engine.max_attempts=6" in keys and "job.output.shape=list" in keys
    assert len(keys) > 60


def test_a_run_whose_nodes_cannot_be_reached_stops_at_start_with_exit_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cli(
        tmp_path,
        "job=movie_details",
        "cluster=static",
        f"cluster.nodes=[{{address: '127.0.0.1:{port}'}}]",
    )
    assert proc.returncode == 3, proc.stderr
    assert f"error: no node answers: 127.0.0.1:{port} (http://127.0.0.1:{port}): " in proc.stderr
    assert not (tmp_path / "run" / "report.json").exists()  # nothing sent, nothing to report


# --------------------------------------------------------------------- hard edges (issue 11)


def store_records(tmp_path: Path, job: str = "movie_details") -> list[dict[str, Any]]:
    path = tmp_path / "journal" / f"{job}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_false_supersedes_so_the_store_keeps_one_accepted_record_per_key(
    tmp_path: Path, node: LoopbackNode
) -> None:
    assert cli(tmp_path, "job=movie_details", node=node).returncode == 0
    some = tmp_path / "some.txt"
    some.write_text("\n".join(FILMS[:5]) + "\n")
    again = cli(tmp_path, "job=movie_details", f"job.input.path={some}", "resume=false", node=node)
    assert again.returncode == 0, again.stderr
    records = store_records(tmp_path)
    keys = [r["key"] for r in records if r["status"] == "ok"]
    assert len(keys) == len(set(keys)) == 20  # the 5 redone replaced, the other 15 kept
    assert [r["input"]["title"] for r in records[-5:]] == FILMS[:5]  # the new ones, last


def test_a_second_runner_on_a_locked_job_exits_2_with_one_line_and_sends_nothing(
    tmp_path: Path, node: LoopbackNode
) -> None:
    import os

    from runner._lock import JobLock

    journal = tmp_path / "journal" / "movie_details.jsonl"
    with JobLock(journal):  # this test process plays the runner already at work
        proc = cli(tmp_path, "job=movie_details", node=node)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and str(journal) in lines[0] and f"pid {os.getpid()}" in lines[0]
    assert not node.seen and not (tmp_path / "run" / "results.jsonl").exists()


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", "{tmp}/abs", "x" * 201, "a b"])
def test_a_job_name_that_is_not_a_plain_file_name_is_refused(
    tmp_path: Path, node: LoopbackNode, name: str
) -> None:
    name = name.replace("{tmp}", str(tmp_path))  # an absolute name, kept inside the test's folder
    proc = cli(tmp_path / "deep" / "er", "job=movie_details", f"job.name='{name}'", node=node)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: job.name must be a plain file name")
    assert not node.seen
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".jsonl", ".lock")]


def test_a_config_error_is_printed_once(tmp_path: Path) -> None:
    proc = cli(tmp_path, "job=movie_details", "job.input.path=/nonexistent/films.txt")
    assert proc.returncode == 2
    assert (proc.stdout + proc.stderr).count("/nonexistent/films.txt") == 1, proc.stdout


def test_a_journal_folder_under_a_file_is_one_line_exit_5(
    tmp_path: Path, node: LoopbackNode
) -> None:
    (tmp_path / "file").write_text("")
    proc = cli(tmp_path, "job=movie_details", f"journal_dir={tmp_path / 'file' / 'j'}", node=node)
    assert proc.returncode == 5, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and f"{tmp_path / 'file' / 'j'}" in lines[0], lines
    assert "Traceback" not in proc.stderr + proc.stdout and not node.seen


def test_a_run_folder_under_a_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = cli(tmp_path, "job=movie_details", run="file/run")
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc)
    where = tmp_path / "file" / "run"
    assert lines == [f"error: {where}: Not a directory (while setting up the run directory)"]


def test_a_full_disk_mid_run_is_one_line_exit_5_and_stops_the_run(
    tmp_path: Path, node: LoopbackNode
) -> None:
    """The disk fills up as the first result is journaled (os.write raises ENOSPC)."""
    shim = (
        "import errno, os, runpy, sys, types\n"
        "import runner._journal as journal\n"
        "def full(fd, data):\n"
        "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "journal.os = types.SimpleNamespace(**{**vars(os), 'write': full})\n"
        "sys.argv = ['runner', *sys.argv[1:]]\n"
        "runpy.run_module('runner', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            shim,
            f"hydra.run.dir={tmp_path / 'run'}",
            f"journal_dir={tmp_path / 'journal'}",
            "progress=off",
            "job=movie_details",
            "cluster=static",
            f"cluster.nodes=[{{address: '{node.address}'}}]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 5, proc.stderr
    lines = error_lines(proc)
    assert lines == [
        f"error: {tmp_path / 'journal' / 'movie_details.jsonl'}: cannot write the journal: "
        "No space left on device; results journaled before are kept"
    ]
    assert sum(node.seen.values()) < 20  # it stopped instead of sending everything


def test_an_inventory_is_executed_once_per_run(tmp_path: Path, node: LoopbackNode) -> None:
    runs = tmp_path / "executions.txt"
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        f"with open({str(runs)!r}, 'a') as f:\n    f.write('x')\n"
        f"ts_servers = [('n1', {{'node_address': '127.0.0.1', 'node_port': {node.port}}})]\n"
    )
    proc = cli(tmp_path, "job=movie_synopsis", "cluster=lab", f"cluster.inventory={inventory}")
    assert proc.returncode == 0, proc.stderr
    assert runs.read_text() == "x"
