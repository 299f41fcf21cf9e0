"""The custom operations: facts in, commands out, one JSON file per case (pyinfra-testing).

``operations/<module>.<operation>/<case>.json`` cases run as pyinfra's prepare phase does
(nothing executes yet); ``executing/...`` cases run as its execute phase, where the checks
that need an installed node take place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyinfra_testing.operations import make_operation_tests

HERE = Path(__file__).resolve().parent
CASES = sorted(HERE.glob("operations/*/*.json")) + sorted(HERE.glob("executing/*/*.json"))


def _harness(folder: Path, *, executing: bool) -> Any:
    """pyinfra-testing's test case for one operation, with its fake state set up."""
    harness = make_operation_tests("deploy.operations", folder.name, folder)
    harness.setUpClass()
    harness.state.is_executing = executing
    return harness(methodName="_test")


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.parent.name}/{case.stem}")
def test_operation_yields_only_the_needed_commands(case: Path) -> None:
    harness = _harness(case.parent, executing=case.parent.parent.name == "executing")
    harness._test(case.stem, json.loads(case.read_text(encoding="utf-8")))


def test_every_operation_has_cases() -> None:
    """Each custom operation has at least one fixture, so none goes untested."""
    from deploy.operations import artifact, daemon, firewall, health, wheelhouse

    modules = {
        "artifact": artifact,
        "daemon": daemon,
        "firewall": firewall,
        "health": health,
        "wheelhouse": wheelhouse,
    }
    operations = {
        f"{name}.{attr}"
        for name, module in modules.items()
        for attr, value in vars(module).items()
        if hasattr(value, "_inner") and getattr(value, "__module__", "") == module.__name__
    }
    covered = {case.parent.name for case in CASES}
    assert len(operations) == 7
    assert operations <= covered
