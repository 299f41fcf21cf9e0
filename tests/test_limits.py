"""A wide cluster gets the file descriptors it needs, or a warning naming the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")

PROBE = """
import logging, resource, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from runner._limits import ensure_descriptors
print(ensure_descriptors(int(sys.argv[1])))
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _run(connections: int, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-c", PROBE, str(connections)],
        capture_output=True, text=True, check=True, preexec_fn=limit, timeout=60,
    )  # fmt: skip


def _hard() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@pytest.mark.skipif(_hard() < 6000, reason="the hard open files limit is below 6,000 here")
def test_the_soft_limit_is_raised_for_a_thousand_nodes_of_four_slots() -> None:
    done = _run(5000, soft=1024, hard=6000)
    assert done.stdout.split() == ["5256", "5256"]
    assert "raised from 1024 to 5256" in done.stderr


def test_a_hard_limit_too_low_is_a_warning_with_the_command_that_fixes_it() -> None:
    done = _run(5000, soft=512, hard=1024)
    assert done.stdout.split() == ["1024", "1024"]
    assert "WARNING" in done.stderr
    assert "ulimit -n 5256" in done.stderr


def test_a_small_cluster_changes_nothing() -> None:
    done = _run(20, soft=1024, hard=1024)
    assert done.stdout.split() == ["1024", "1024"]
    assert done.stderr == ""
