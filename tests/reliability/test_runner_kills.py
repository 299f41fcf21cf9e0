"""The runner itself dies: SIGKILL at random moments, then the same command again.

Two series of seeded random kills (``RELIABILITY_SEED`` changes the seed):

* a slow-ish node, so kills land during start-up, mid-request and between requests;
* an instant node and many tiny items, so the journals are written hundreds of times a
  second and kills land among (and, when the kernel lets them, inside) journal writes; after
  every other kill the journal's last line is also torn at a random byte, as a kill inside
  the write (or a power cut) would leave it.

After each kill: every journal line parses except torn ones, no item has two accepted
records, and nothing journaled before the killed run was sent during it. A final run must
answer every item exactly once without re-sending anything journaled.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability._harness import (
    FAST_ENGINE,
    Cluster,
    Job,
    Ledger,
    check_run,
    read_jsonl,
    stop_process,
    wait_for,
)

SEED = int(os.environ.get("RELIABILITY_SEED", "20261127"))


@dataclass(frozen=True)
class Series:
    name: str
    items: int
    behaviour: dict[str, float]
    slots: int
    kills: int
    in_run: tuple[float, float]  # kill this long after the node saw the run's first request
    tear: bool


STARTUP = (0.05, 1.5)  # every third kill: this long after the start (imports, checks, scan)
SERIES = [
    Series("slow node, kills anywhere", 80, {"chunk_delay": 0.01}, 4, 6, (0.0, 0.8), False),
    Series("instant node, kills among journal writes", 1000, {}, 8, 6, (0.05, 0.4), True),
]


def journal_lines(path: Path) -> tuple[int, int]:
    """(intact records, lines that do not parse) of a journal."""
    if not path.exists():
        return 0, 0
    raw = path.read_bytes().split(b"\n")
    lines = [line for line in raw if line]
    return len(read_jsonl(path)), len(lines) - len(read_jsonl(path))


def tear_last_line(path: Path, rng: random.Random) -> bool:
    """Cut the journal inside its last line; whether there was a line to cut."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rstrip(b"\n")
    if not end:
        return False
    start = end.rfind(b"\n") + 1
    cut = rng.randrange(start + 1, len(end))  # keep at least one byte, lose at least one
    path.write_bytes(data[:cut])
    return True


@pytest.mark.parametrize("series", SERIES, ids=lambda s: s.name.split(",")[0].replace(" ", "-"))
def test_killing_the_runner_at_random_moments_loses_and_duplicates_nothing(
    cluster: Cluster, tmp_path: Path, ledger: Ledger, series: Series
) -> None:
    rng = random.Random(f"{SEED}-{series.name}")
    job = Job.create(tmp_path / "job", series.items)
    cluster.add("node", behaviour=series.behaviour)
    overrides = [*cluster.overrides(), *FAST_ENGINE, f"engine.slots={series.slots}"]
    tears = 0
    landed_mid_run = 0
    for trial in range(series.kills):
        journaled = job.journaled_titles()
        sent_before = cluster.item_requests()
        size_before = job.store.stat().st_size if job.store.exists() else 0
        at_startup = trial % 3 == 1
        delay = rng.uniform(*(STARTUP if at_startup else series.in_run))
        process = job.start(f"kill-{trial}", *overrides)
        if not at_startup:  # wait (bounded) until the run sends its first request
            already = sum(sent_before.values())
            wait_for(
                lambda p=process, n=already: (
                    p.poll() is not None or sum(cluster.item_requests().values()) > n
                ),
                timeout=20,
            )
        time.sleep(delay)
        process.kill()
        stop_process(process)
        results = read_jsonl(job.run_dir(f"kill-{trial}") / "results.jsonl")
        fresh = [r for r in results if not r.get("reused")]
        mid_run = bool(fresh) and len(job.journaled_titles()) < series.items
        landed_mid_run += mid_run
        data = job.store.read_bytes() if job.store.exists() else b""
        torn_by_kill = len(data) != size_before and not data.endswith(b"\n")
        tore = series.tear and trial % 2 == 0 and tear_last_line(job.store, rng)
        tears += tore or torn_by_kill

        _, garbled = journal_lines(job.store)
        assert garbled <= tears, f"trial {trial}: {garbled} unreadable journal lines"
        keys = [r["key"] for r in read_jsonl(job.store) if r.get("status") == "ok"]
        assert len(keys) == len(set(keys)), f"trial {trial}: an item was accepted twice"
        sent = cluster.item_requests() - sent_before
        resent = sorted(t for t in sent if t in journaled)
        assert not resent, f"trial {trial}: journaled items sent again: {resent[:5]}"
        ledger.add(
            "kill",
            f"{series.name}: trial {trial}",
            kill_at=f"{'start' if at_startup else 'first request'} + {delay:.2f}s",
            mid_run=mid_run,
            torn=bool(tore or torn_by_kill),
            journaled_before=len(journaled),
            journaled_after=len(job.journaled_titles()),
            resent=len(resent),
        )

    journaled = job.journaled_titles()
    sent_before = cluster.item_requests()
    proc = job.run("final", *overrides)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sent = cluster.item_requests() - sent_before
    tally = check_run(job, "final", journaled_before=journaled, sent=sent, torn=tears)
    assert (tally.ok, tally.lost, tally.duplicated, tally.resent) == (series.items, 0, 0, 0)
    assert set(sent) == set(job.titles) - journaled  # every missing item, and only those
    assert landed_mid_run >= 1, "no kill landed while items were being journaled"
    ledger.add(
        "kill",
        f"{series.name}: final re-run",
        kills=series.kills,
        mid_run=landed_mid_run,
        torn=tears,
        **tally.row(),
    )
