"""Fixtures of the reliability suite: fake node processes, job kits, and the ledger.

The ledger collects one row per fault, bad input and runner-kill trial. With
``RELIABILITY_REPORT=path.json`` set, it is written there at the end of the session
(``docs/reliability.md`` is built from it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._realnode import real_node
from tests.reliability._harness import Cluster, Job, Ledger

__all__ = ["cluster", "job", "ledger", "real_node"]


@pytest.fixture(scope="session")
def ledger() -> Iterator[Ledger]:
    book = Ledger()
    yield book
    target = os.environ.get("RELIABILITY_REPORT")
    if target:
        Path(target).write_text(json.dumps(book.rows, indent=1) + "\n")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Fake node processes for one test; every one is killed when the test ends."""
    nodes = Cluster(tmp_path / "nodes")
    nodes.folder.mkdir()
    try:
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def job(tmp_path: Path) -> Job:
    """A movie_details job over 40 made-up titles."""
    return Job.create(tmp_path / "job", 40)
