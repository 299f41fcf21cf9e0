"""The custom facts: a command and a parser of its output, one JSON file per case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyinfra_testing.facts import make_fact_tests

HERE = Path(__file__).resolve().parent
CASES = sorted(HERE.glob("facts/*/*.json"))


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.parent.name}/{case.stem}")
def test_fact_command_and_parser(case: Path) -> None:
    harness_class = make_fact_tests("deploy", case.parent.name, case.parent)
    harness_class.setUpClass()
    harness_class(methodName="_test")._test(case.stem, json.loads(case.read_text("utf-8")))
