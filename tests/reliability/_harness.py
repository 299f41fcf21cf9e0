"""What the reliability tests share: fake node processes, the CLI as a subprocess, a job kit,
and the invariants every fault must keep (each item exactly once, nothing journaled re-sent,
the consolidated output equal to the journal).

Every process started here is bounded in time and killed at teardown; all traffic goes to
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
NODE_READY_TIMEOUT = 10.0
CLI_TIMEOUT = 90.0

FAST_ENGINE = (
    "engine.connect_timeout=1",
    "engine.stall_timeout=1",
    "engine.request_timeout=5",
    "engine.probe_interval=0.2",
    "engine.probe_timeout=1",
    "engine.backoff_initial=0.05",
    "engine.backoff_max=0.5",
    "engine.no_node_timeout=20",
    "engine.retry_timeout=60",
)
"""Engine settings that make faults visible in a second instead of a minute."""


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: the repository importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(extra)
    return env


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file that parses (a torn last line is skipped, like the runner)."""
    if not path.exists():
        return []
    records = []
    for raw in path.read_bytes().splitlines():
        try:
            records.append(json.loads(raw))
        except ValueError:
            continue
    return records


class Ledger:
    """Rows of the reliability table: ``kind`` (fault, bad input, kill), ``case``, results."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, kind: str, case: str, **result: Any) -> None:
        self.rows.append({"kind": kind, "case": case, **result})


# ------------------------------------------------------------------------- fake nodes


class FakeNode:
    """A fake node process (``tests/reliability/fakenode.py``) that can die and come back.

    Args:
        folder: where its request log goes (shared by every incarnation).
        behaviour: its initial behaviour (see the fakenode module).
        api_key_env: make it require the Bearer key held by this environment variable.
        env: extra environment for the process.
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        *,
        behaviour: dict[str, Any] | None = None,
        api_key_env: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = folder / f"{name}.requests.jsonl"
        self.behaviour = behaviour or {}
        self.api_key_env = api_key_env
        self.env = env or {}
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.incarnations: list[int] = []  # pids, in start order

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> FakeNode:
        """Start (or restart, on the same port) and wait until it listens."""
        argv = [sys.executable, "-m", "tests.reliability.fakenode", "--port", str(self.port)]
        argv += ["--log", str(self.log_path), "--behaviour", json.dumps(self.behaviour)]
        if self.api_key_env:
            argv += ["--api-key-env", self.api_key_env]
        deadline = time.monotonic() + NODE_READY_TIMEOUT
        while True:
            with open(self.log_path.with_suffix(".stderr"), "ab") as stderr:
                process = subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=child_env(**self.env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                )
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.startswith("READY "):
                break
            process.kill()
            process.communicate()
            if time.monotonic() > deadline:  # e.g. the old port is not free again yet
                log = self.log_path.with_suffix(".stderr").read_text()[-500:]
                raise RuntimeError(f"fake node {self.name} did not start: {log}")
            time.sleep(0.1)
        self.process = process
        self.port = int(line.split()[1])
        self.incarnations.append(process.pid)
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL (a crash: no clean-up, connections reset)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.communicate(timeout=5)  # reaps it and closes its pipe

    def control(self, **behaviour: Any) -> None:
        """Change its behaviour while it runs."""
        httpx.post(f"{self.url}/_control", json=behaviour, timeout=2, trust_env=False)

    def requests(self) -> list[dict[str, Any]]:
        """Every generation request it logged, over all its incarnations."""
        return [r for r in read_jsonl(self.log_path) if "prompt" in r]

    def aborted(self) -> list[str]:
        """Prompts whose answer the client hung up on while it was being sent."""
        return [r["aborted"] for r in read_jsonl(self.log_path) if "aborted" in r]


@dataclass
class Cluster:
    """Fake nodes started for one test; all are killed at teardown."""

    folder: Path
    nodes: list[FakeNode] = field(default_factory=list)

    def add(self, name: str, **kwargs: Any) -> FakeNode:
        node = FakeNode(self.folder, name, **kwargs).start()
        self.nodes.append(node)
        return node

    def overrides(self, *, api_key_env: str | None = None) -> list[str]:
        """CLI overrides naming these nodes as a static cluster."""
        key = f", api_key_env: {api_key_env}" if api_key_env else ""
        listed = ", ".join(f"{{address: '{n.address}'{key}}}" for n in self.nodes)
        return ["cluster=static", f"cluster.nodes=[{listed}]"]

    def requests(self) -> list[dict[str, Any]]:
        return [r for n in self.nodes for r in n.requests()]

    def item_requests(self) -> Counter[str]:
        """Generation requests per item title (probes left out)."""
        return Counter(r["title"] for r in self.requests() if not r["probe"])

    def close(self) -> None:
        for node in self.nodes:
            node.kill()


# ------------------------------------------------------------------------- the job kit


TEMPLATES = {
    "movie_details": 'Give the details of the movie "{{ title }}".\n',
    "movie_synopsis": 'Write one short sentence about the movie "{{ title }}".\n',
}


@dataclass
class Job:
    """A job on a file of made-up titles, with its own template: ``movie_details`` (JSON
    answers, a list) or ``movie_synopsis`` (text answers, a mapping title → answer)."""

    folder: Path
    titles: list[str]
    journal_dir: Path
    name: str = "movie_details"

    @classmethod
    def create(
        cls, folder: Path, count: int, *, prefix: str = "Film", name: str = "movie_details"
    ) -> Job:
        folder.mkdir(parents=True, exist_ok=True)
        titles = [f"{prefix} {i:04d}" for i in range(count)]
        (folder / "films.txt").write_text("".join(f"{t}\n" for t in titles))
        (folder / "prompt.j2").write_text(TEMPLATES[name])
        return cls(folder, titles, folder / "journal", name)

    @property
    def store(self) -> Path:
        return self.journal_dir / f"{self.name}.jsonl"

    @property
    def output(self) -> str:
        return f"{self.name}.json"

    def overrides(self) -> list[str]:
        return [
            f"job={self.name}",
            f"job.template={self.folder / 'prompt.j2'}",
            f"job.input.path={self.folder / 'films.txt'}",
            f"journal_dir={self.journal_dir}",
            "progress=off",
        ]

    def run_dir(self, run: str) -> Path:
        return self.folder / "runs" / run

    def argv(self, run: str, *overrides: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "runner",
            f"hydra.run.dir={self.run_dir(run)}",
            *self.overrides(),
            *overrides,
        ]

    def run(
        self,
        run: str,
        *overrides: str,
        timeout: float = CLI_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI to its end (bounded by ``timeout``)."""
        return subprocess.run(
            self.argv(run, *overrides),
            cwd=REPO,
            env=child_env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(
        self, run: str, *overrides: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start the CLI and return at once (for kills and Ctrl-C)."""
        return subprocess.Popen(
            self.argv(run, *overrides),
            cwd=REPO,
            env=child_env(**(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def journaled_titles(self) -> set[str]:
        """Titles with an accepted record in the resume journal now."""
        return {r["input"]["title"] for r in read_jsonl(self.store) if r.get("status") == "ok"}


# ------------------------------------------------------------------------- invariants


@dataclass
class Tally:
    """What became of a run's items."""

    items: int
    ok: int
    failed: int
    lost: int  # items without a record in results.jsonl
    duplicated: int  # extra records: results.jsonl lines or accepted journal lines per item
    resent: int | None = 0  # requests for items journaled before the run (None: not counted)

    def row(self) -> dict[str, int | None]:
        return {
            "items": self.items,
            "ok": self.ok,
            "failed": self.failed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "resent": self.resent,
        }


def check_run(
    job: Job,
    run: str,
    *,
    journaled_before: Iterable[str] = (),
    sent: Counter[str] | None = None,
    torn: int = 0,
) -> Tally:
    """Check a finished run's files against every invariant; return the tally.

    * every item has exactly one record in ``results.jsonl``: ``ok`` with an answer, or
      ``failed`` with a one-line reason;
    * every line of the resume journal parses (but ``torn`` lines cut on purpose), it holds at
      most one accepted record per item, and every ``ok`` record of the run is in it;
    * the consolidated output equals the accepted answers of ``results.jsonl``, in input order
      (a list has ``null`` where an item has none), and those equal the journal's;
    * ``sent`` (requests the nodes saw during the run, by title) holds no title journaled
      before the run (real nodes keep no such log: ``sent=None`` leaves ``resent`` uncounted).
    """
    run_dir = job.run_dir(run)
    records = read_jsonl(run_dir / "results.jsonl")
    per_item = Counter(r["input"]["title"] for r in records)
    assert set(per_item) <= set(job.titles), set(per_item) - set(job.titles)
    lost = sum(1 for t in job.titles if per_item[t] == 0)
    duplicated = sum(n - 1 for n in per_item.values() if n > 1)
    for r in records:
        assert r["status"] in ("ok", "failed"), r
        if r["status"] == "failed":
            assert r["error"] and "\n" not in r["error"], r
    raw = job.store.read_bytes() if job.store.exists() else b""
    lines = [line for line in raw.split(b"\n") if line.strip()]
    assert len(lines) - len(read_jsonl(job.store)) <= torn, "the journal has unreadable lines"
    store = [r for r in read_jsonl(job.store) if r.get("status") == "ok"]
    store_count = Counter(r["key"] for r in store)
    duplicated += sum(n - 1 for n in store_count.values() if n > 1)
    by_key = {r["key"]: r for r in store}
    ok = [r for r in records if r["status"] == "ok"]
    for r in ok:
        assert r["key"] in by_key, f"accepted but not journaled: {r['id']}"
        assert by_key[r["key"]]["answer"] == r["answer"]
    output = json.loads((run_dir / job.output).read_text())
    in_order = sorted(ok, key=lambda r: r["index"])
    if job.name == "movie_synopsis":  # a mapping title → answer
        expected: Any = {r["input"]["title"]: r["answer"] for r in in_order}
    else:  # a list: one entry per item, null where none was accepted
        answers = {r["index"]: r["answer"] for r in in_order}
        expected = [answers.get(i) for i in range(len(job.titles))]
    assert output == expected, "the consolidated output differs from the journal"
    before = set(journaled_before)
    resent = None if sent is None else sum(n for t, n in sent.items() if t in before)
    return Tally(
        items=len(job.titles),
        ok=len({r["input"]["title"] for r in ok}),
        failed=len({r["input"]["title"] for r in records if r["status"] == "failed"}),
        lost=lost,
        duplicated=duplicated,
        resent=resent,
    )


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def stop_process(process: subprocess.Popen[str]) -> None:
    """Kill a CLI process still running at teardown."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=10)
