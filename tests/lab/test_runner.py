"""The runner reads the inventory that deployed the nodes and spreads a job over them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._lab import Lab
from .conftest import OPEN_NODE_HOSTS, ROOT, OpenNodes


def test_movie_details_runs_on_both_deployed_nodes(
    lab: Lab, open_nodes: OpenNodes, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = lab.in_ctl(
        sys.executable,
        "-m",
        "runner",
        "job=movie_details",
        "cluster=lab",
        f"cluster.inventory={open_nodes.inventory}",
        f"hydra.run.dir={run_dir}",
        f"journal_dir={tmp_path / 'journal'}",
        "resume=false",
        "progress=log",
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    details = json.loads((run_dir / "movie_details.json").read_text())
    assert len(details) == 20
    report = json.loads((run_dir / "report.json").read_text())
    for host in OPEN_NODE_HOSTS:
        node = report["nodes"][host]
        assert node["requests"] > 0, report["nodes"]
        if "slots_from" in node:  # the inventory sets no slots: the runner asked the node
            assert (node["slots_from"], node["slots"]) == ("node", 2), node
