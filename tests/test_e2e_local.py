"""End to end: ``python -m runner`` on the embedded local cluster with the real model.

The model's facts are often wrong: these tests assert structure and validity, never facts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.model


def runner(tmp_path: Path, *overrides: str, run: str = "run") -> subprocess.CompletedProcess[str]:
    """Run the CLI from the repository root into ``tmp_path/<run>``."""
    args = [
        sys.executable,
        "-m",
        "runner",
        f"hydra.run.dir={tmp_path / run}",
        f"journal_dir={tmp_path / 'journal'}",
        "progress=log",
        *overrides,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def details_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("details")
    return tmp, runner(tmp, "job=movie_details")


def test_movie_details_gives_a_schema_valid_object_for_every_film(
    details_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    tmp, proc = details_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    details = json.loads((tmp / "run" / "movie_details.json").read_text())
    schema = json.loads((ROOT / "prompts" / "movie_details.schema.json").read_text())
    assert len(details) == 20
    for obj in details:
        jsonschema.validate(obj, schema)


def test_movie_details_results_and_report_follow_the_contract(
    details_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    tmp, proc = details_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_jsonl(tmp / "run" / "results.jsonl")
    assert len(records) == 20 and len({r["id"] for r in records}) == 20
    for r in records:
        assert r["status"] == "ok"
        assert {"id", "input", "answer", "node", "attempts", "seed", "output_tokens"} <= set(r)
        assert r["repair"] in ("strict", "extracted", "repaired")
    report = json.loads((tmp / "run" / "report.json").read_text())
    assert report["totals"]["items"] == 20 and report["totals"]["ok"] == 20
    assert report["totals"]["requests_sent"] >= 20
    nodes = report["nodes"]
    assert len(nodes) == (os.cpu_count() or 1)
    assert all(n["requests"] > 0 and n["tokens_per_s"] > 0 for n in nodes.values()), nodes


def test_the_report_holds_the_pre_flight_estimate_counted_by_the_model_tokenizer(
    details_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    tmp, proc = details_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    estimate = json.loads((tmp / "run" / "report.json").read_text())["estimate"]
    assert estimate["items"] == 20 and estimate["not_counted"] is None, estimate
    assert estimate["too_long"] == 0 and estimate["context"] > 0
    # every prompt holds the job's instructions: many tokens each, the longest within context
    assert estimate["prompt_tokens"] >= 20 * 20
    assert 20 <= estimate["longest_prompt"] < estimate["context"]
    assert estimate["output_tokens_max"] >= 20


def test_a_dry_run_prints_the_estimate_and_sends_no_item(tmp_path: Path) -> None:
    proc = runner(tmp_path, "job=movie_details", "dry_run=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr  # the console is stderr, Hydra's log stdout
    assert "prompt tokens (longest" in out and "output tokens/s" in out, out[-3000:]
    assert "no item sent" in out
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_a_prompt_too_long_for_the_context_stops_the_run_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    titles = tmp_path / "titles.txt"
    titles.write_text("Alien\n" + " ".join(["word"] * 2100) + "\n")
    proc = runner(tmp_path, "job=movie_details", f"job.input.path={titles}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "do not fit the context" in line]
    assert len(errors) == 1 and "1 of 2 prompts" in errors[0], proc.stderr[-3000:]
    assert not (tmp_path / "run" / "results.jsonl").exists()
    assert not (tmp_path / "run" / "movie_details.json").exists()


def test_the_run_directory_holds_a_report_page_that_loads_in_a_browser(
    details_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    from tests._browser import distinct_colours, load

    tmp, proc = details_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp / "run" / "report.json").read_text())
    traces = read_jsonl(tmp / "run" / "requests.jsonl")
    assert len(traces) == report["totals"]["requests_sent"]
    assert {t["node"] for t in traces} == set(report["nodes"])
    shot = tmp / "report.png"
    assert load(tmp / "run" / "report.html", shot) == []
    assert distinct_colours(shot) > 8


def test_rerunning_the_same_command_reuses_every_result(
    details_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    tmp, first = details_run
    assert first.returncode == 0
    proc = runner(tmp, "job=movie_details", run="again")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp / "again" / "report.json").read_text())
    assert report["totals"]["reused"] == 20 and report["totals"]["requests_sent"] == 0
    assert len(json.loads((tmp / "again" / "movie_details.json").read_text())) == 20


def test_movie_synopsis_maps_every_film_to_a_synopsis(tmp_path: Path) -> None:
    proc = runner(tmp_path, "job=movie_synopsis", "job.max_tokens=48")
    assert proc.returncode == 0, proc.stderr[-3000:]
    synopses = json.loads((tmp_path / "run" / "movie_synopsis.json").read_text())
    films = (ROOT / "prompts" / "movies.txt").read_text().splitlines()
    assert list(synopses) == films
    assert all(isinstance(s, str) and s.strip() for s in synopses.values())


def test_probe_reports_every_local_node(tmp_path: Path) -> None:
    proc = runner(tmp_path, "job=probe")
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads((tmp_path / "run" / "probe.json").read_text())
    assert len(probe["nodes"]) == (os.cpu_count() or 1)
    for node in probe["nodes"]:
        assert node["reachable"] and node["engines"] == ["smollm2"]
        assert node["latency_s"] > 0


def test_openai_backend_runs_movie_details_on_llama_cpp_server(tmp_path: Path) -> None:
    proc = runner(tmp_path, "job=movie_details", "cluster=local_openai", "model=smollm2_openai")
    assert proc.returncode == 0, proc.stderr[-3000:]
    details = json.loads((tmp_path / "run" / "movie_details.json").read_text())
    assert len(details) == 20


def test_a_priced_real_node_gets_an_estimate_before_and_a_measured_cost_after(
    tmp_path: Path,
) -> None:
    from tests._realnode import running_node

    titles = tmp_path / "titles.txt"
    titles.write_text("Alien\nHeat\nJaws\n")
    with running_node(tmp_path / "node", n_parallel=2) as node:
        address = node.url.removeprefix("http://")
        common = (
            "job=movie_synopsis",
            f"job.input.path={titles}",
            "job.max_tokens=32",
            "cluster=static",
            f"cluster.nodes=[{{address: '{address}', price_per_hour: 3.6}}]",
        )
        dry = runner(tmp_path, *common, "dry_run=true", run="dry")
        assert dry.returncode == 0, dry.stderr[-3000:]
        # 3 items × 32 tokens at most, at the probed speed, at 3.6 an hour
        said = dry.stdout + dry.stderr
        assert "at most 96 output tokens" in said and "cost: at most" in said, said[-3000:]
        proc = runner(tmp_path, *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    (line,) = report["nodes"].values()
    assert line["price_per_hour"] == 3.6
    # a node is paid for the whole wall time: 3.6 an hour is 0.001 a second
    assert line["cost"] == pytest.approx(report["wall_time_s"] * 0.001, rel=0.05)
    tokens = report["totals"]["output_tokens"]
    assert report["totals"]["cost"] == line["cost"] and tokens > 0
    per_token = report["totals"]["cost_per_1m_output_tokens"]
    assert per_token == pytest.approx(line["cost"] / tokens * 1e6, rel=1e-3)
    assert report["estimate"]["output_tokens_max"] == 96
