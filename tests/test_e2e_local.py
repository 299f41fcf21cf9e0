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
